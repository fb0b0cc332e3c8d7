//! Contribution ingest. Every listener turns what a publisher sends into a stream of container
//! bytes (MPEG-TS or FLV) on an [`InputPort`]; pipelines subscribe to the port. A slow pipeline
//! never stalls a publisher: the port is a bounded broadcast and a lagging subscriber is told so.

pub mod flv;
mod hub;
mod registry;
pub mod rtmp;
pub mod srt;
mod tcp;
pub mod testsrc;
mod udp;

pub use channel::InputSpec;
pub use hub::{
    Busy, Container, InputEvent, InputId, InputPort, LiveSession, OffsetAgreement, Publisher,
    Relayed,
};
pub use registry::{InputRegistry, RegistryError, Relay};
