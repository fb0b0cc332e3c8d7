use std::path::{Component, Path};

use bytes::Bytes;

use crate::{DirStore, Result, S3Store, StoreError};

/// Where segment and header bytes live: a local directory (embedded) or an S3-compatible
/// bucket (scale-out). Keys are relative paths (`live/{channel}/{rendition}/{n}.m4s`); a blob
/// is visible whole or not at all, and the catalog lists it only once `put` returned.
#[derive(Debug, Clone)]
pub enum BlobStore {
    Dir(DirStore),
    S3(S3Store),
}

impl BlobStore {
    pub async fn put(&self, key: &str, bytes: &Bytes) -> Result<()> {
        match self {
            Self::Dir(d) => d.put(key, bytes).await,
            Self::S3(s) => s.put(key, bytes).await,
        }
    }

    pub async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        match self {
            Self::Dir(d) => d.get(key).await,
            Self::S3(s) => s.get(key).await,
        }
    }

    /// Deleting what is not there succeeds.
    pub async fn delete(&self, key: &str) -> Result<()> {
        match self {
            Self::Dir(d) => d.delete(key).await,
            Self::S3(s) => s.delete(key).await,
        }
    }

    /// Every blob under `prefix`, sorted by key; leftovers of interrupted writes included, so
    /// that a repair can remove them.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Blob>> {
        match self {
            Self::Dir(d) => d.list(prefix).await,
            Self::S3(s) => s.list(prefix).await,
        }
    }

    /// For logs and status: the directory or `s3://bucket/prefix`.
    pub fn describe(&self) -> String {
        match self {
            Self::Dir(d) => d.root().display().to_string(),
            Self::S3(s) => s.name().to_string(),
        }
    }
}

impl From<DirStore> for BlobStore {
    fn from(dir: DirStore) -> Self {
        Self::Dir(dir)
    }
}

impl From<S3Store> for BlobStore {
    fn from(s3: S3Store) -> Self {
        Self::S3(s3)
    }
}

/// A stored blob as a listing sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub key: String,
    /// Bytes.
    pub size: u64,
}

/// Keys come from channel and rendition names; refuse anything that could leave the root.
pub(crate) fn check_key(key: &str) -> Result<()> {
    let safe = !key.is_empty()
        && Path::new(key)
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
    if safe {
        Ok(())
    } else {
        Err(StoreError::BadKey(key.to_string()))
    }
}
