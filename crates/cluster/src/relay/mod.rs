//! The input relay: a pipeline node takes its input from whichever ingest node a publisher
//! is connected to. The ingest node serves one session per request (`serve`), the pipeline
//! node feeds it into its own input port as if the publisher were there (`pull`); both ends
//! authenticate with the cluster's credential. Bounded end to end: the relay reads the port
//! as its client takes the bytes, and a client a port's capacity behind is cut off.

mod pull;
mod serve;
pub mod wire;

pub use pull::{IngestNodes, pull};
pub use serve::router;
