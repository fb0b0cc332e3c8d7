//! API tokens. A token is `sct_` and 43 characters of base64url (32 random bytes): long enough
//! that a fast hash is all a stored one needs (as with GitHub's and Stripe's keys), so the
//! catalog keeps SHA-256 of it and a stolen catalog reveals no working token.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const PREFIX: &str = "sct_";

/// What a token may do; each scope includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Lists, status, events, alignment, nodes.
    Read,
    /// Channels, harvests, drains, faults (where the node allows them).
    Operator,
    /// Everything, tokens included.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Operator => "operator",
            Scope::Admin => "admin",
        }
    }

    /// Whether a token of this scope may do what needs `needed`.
    pub fn allows(self, needed: Scope) -> bool {
        self >= needed
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Scope::Read),
            "operator" => Ok(Scope::Operator),
            "admin" => Ok(Scope::Admin),
            other => Err(format!("scope `{other}`: expected read, operator or admin")),
        }
    }
}

/// A token's secret, as shown once to whoever created it. Its `Debug` is redacted.
pub struct TokenSecret(String);

impl TokenSecret {
    /// A new token from 32 random bytes (the caller's CSPRNG).
    pub fn from_random(random: [u8; 32]) -> Self {
        Self(format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(random)))
    }

    /// A token given by an operator (config, environment), if it is strong enough: at least
    /// 32 characters, printable ASCII.
    pub fn given(text: &str) -> Result<Self, String> {
        if text.len() < 32 || !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(
                "an API token must be at least 32 printable ASCII characters \
                        (`steadycast token generate` makes one)"
                    .into(),
            );
        }
        Ok(Self(text.to_string()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> String {
        token_hash(&self.0)
    }
}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSecret(…)")
    }
}

/// The hash the catalog keeps of a presented token: SHA-256, hex.
pub fn token_hash(presented: &str) -> String {
    let digest = Sha256::digest(presented.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The token of an `Authorization` header value: `Bearer <token>` (the scheme in any case).
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.len() <= 256)
        .then_some(token)
}

/// Token names are for people and audit lines: 1 to 64 of `a-z0-9._-`.
pub fn valid_token_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "token name `{name}`: 1 to 64 characters of a-z, 0-9, `.`, `_` and `-`"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_include_the_ones_below() {
        assert!(Scope::Admin.allows(Scope::Operator));
        assert!(Scope::Operator.allows(Scope::Read));
        assert!(!Scope::Read.allows(Scope::Operator));
        assert!(!Scope::Operator.allows(Scope::Admin));
        assert_eq!("operator".parse(), Ok(Scope::Operator));
        assert!("root".parse::<Scope>().is_err());
    }

    #[test]
    fn a_token_is_shown_once_and_kept_as_a_hash() {
        let token = TokenSecret::from_random([7; 32]);
        assert!(token.expose().starts_with("sct_"));
        assert_eq!(token.expose().len(), 4 + 43);
        assert_eq!(token.hash().len(), 64);
        assert_ne!(token.hash(), TokenSecret::from_random([8; 32]).hash());
        assert!(!format!("{token:?}").contains(token.expose()));
        assert!(TokenSecret::given("short").is_err());
        assert!(TokenSecret::given(&"x".repeat(32)).is_ok());
        assert!(TokenSecret::given(&format!("{} ", "x".repeat(32))).is_err());
    }

    #[test]
    fn bearer_headers() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearer"), None);
        assert_eq!(bearer(&format!("Bearer {}", "a".repeat(300))), None);
    }

    /// Any `Authorization` header yields a bounded token taken from it, or nothing.
    #[test]
    fn fuzz_bearer() {
        let words = &["Bearer", "bearer", "BEARER", "Basic", " ", "\t", "\u{a0}"];
        fuzzing::Target::new("bearer").words(words).run(|data| {
            let header = String::from_utf8_lossy(data);
            if let Some(token) = bearer(&header) {
                assert!(!token.is_empty() && token.len() <= 256 && header.contains(token));
                assert_eq!(token_hash(token).len(), 64);
            }
        });
    }

    #[test]
    fn token_names() {
        assert!(valid_token_name("ci-deploy.2").is_ok());
        assert!(valid_token_name("").is_err());
        assert!(valid_token_name("Admin").is_err());
        assert!(valid_token_name("a b").is_err());
    }
}
