//! Who may do what. [`token`]: the control API's bearer tokens (scopes, how a secret is made
//! and kept: only its hash is stored). [`limiter`]: how repeated failures from one address are
//! slowed down. [`signed`]: playback URLs signed for a path prefix, an expiry and a client.
//! Pure: randomness and time come from the caller.

pub mod cidr;
pub mod limiter;
pub mod signed;
pub mod token;

pub use cidr::{Cidr, client_address};
pub use limiter::FailureLimiter;
pub use signed::{Denied, PlaybackKeys, TOKEN_PARAM};
pub use token::{Scope, TokenSecret, bearer, token_hash, valid_token_name};
