//! The durable state of a node: segment bytes in a [`BlobStore`] (a directory or an
//! S3-compatible bucket) and the [`Catalog`] that indexes them (SQLite or PostgreSQL). A
//! segment is listed in the catalog only after its bytes are stored, and once listed its bytes
//! never change.

mod blobs;
mod catalog;
mod cluster;
mod dir;
mod harvests;
mod s3;
mod tokens;

pub use blobs::{Blob, BlobStore};
pub use catalog::{Backend, Catalog, ChannelRow, HeaderRow, InitRow, SegmentRow, redact};
pub use cluster::{FencedListing, LeaseRow, ListingListener, NodeInfo, NodeRow};
pub use dir::DirStore;
pub use harvests::HarvestRow;
pub use s3::{S3Config, S3Store};
pub use tokens::TokenRow;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("blob store I/O on `{key}`: {source}")]
    Io {
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("blob key `{0}` is not a safe relative path")]
    BadKey(String),
    #[error("object store on `{key}`: {source}")]
    S3 {
        key: String,
        #[source]
        source: Box<object_store::Error>,
    },
    #[error("blob `{key}` is {bytes} bytes, more than a blob may be")]
    TooLarge { key: String, bytes: u64 },
    #[error("{0}")]
    Config(String),
    #[error("catalog: {0}")]
    Catalog(#[from] sqlx::Error),
    #[error("catalog migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
