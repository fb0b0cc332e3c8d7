//! The durable state of a node: segment bytes in a [`DirStore`] and the [`Catalog`] that
//! indexes them. A segment is listed in the catalog only after its bytes are stored, and once
//! listed its bytes never change.

mod catalog;
mod dir;
mod harvests;

pub use catalog::{Catalog, ChannelRow, HeaderRow, InitRow, SegmentRow};
pub use dir::DirStore;
pub use harvests::HarvestRow;

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
    #[error("catalog: {0}")]
    Catalog(#[from] sqlx::Error),
    #[error("catalog migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
