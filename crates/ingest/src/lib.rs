//! Contribution ingest. Every listener turns what a publisher sends into a stream of container
//! bytes (MPEG-TS or FLV) on an [`InputPort`]; pipelines subscribe to the port. A slow pipeline
//! never stalls a publisher: the port is a bounded broadcast and a lagging subscriber is told so.

mod hub;
pub mod testsrc;

pub use hub::{Container, InputEvent, InputId, InputPort, Publisher, Busy};
pub use channel::InputSpec;
