use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::blobs::{Blob, check_key};
use crate::{Result, StoreError};

/// Blobs as files under a root directory. Writes are atomic and durable: a temporary file is
/// written, fsynced and renamed into place, so a reader never sees a partial blob.
#[derive(Debug, Clone)]
pub struct DirStore {
    root: PathBuf,
}

impl DirStore {
    pub async fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        tokio::fs::create_dir_all(&root)
            .await
            .map_err(|source| StoreError::Io {
                key: root.display().to_string(),
                source,
            })?;
        Ok(Self { root })
    }

    pub async fn put(&self, key: &str, bytes: &Bytes) -> Result<()> {
        let path = self.path(key)?;
        let bytes = bytes.clone();
        // One blocking task for the whole write: tokio's File would report a failed write
        // (ENOSPC) only to a later flush, and sync_data does not ask, so a truncated file
        // could be renamed into place.
        let written = tokio::task::spawn_blocking(move || write_atomically(&path, &bytes)).await;
        written
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
            .map_err(|source| StoreError::Io {
                key: key.to_string(),
                source,
            })
    }

    pub async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        match tokio::fs::read(self.path(key)?).await {
            Ok(bytes) => Ok(Some(Bytes::from(bytes))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Io {
                key: key.to_string(),
                source,
            }),
        }
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        match tokio::fs::remove_file(self.path(key)?).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StoreError::Io {
                key: key.to_string(),
                source: e,
            }),
            _ => Ok(()),
        }
    }

    /// Every blob under `prefix` (a directory), recursively; temporary files of interrupted
    /// writes included, so that a repair can remove them.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Blob>> {
        let io = |source| StoreError::Io {
            key: prefix.to_string(),
            source,
        };
        let mut blobs = Vec::new();
        let mut pending = vec![self.path(prefix)?];
        while let Some(dir) = pending.pop() {
            let mut entries = match tokio::fs::read_dir(&dir).await {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io(e)),
            };
            while let Some(entry) = entries.next_entry().await.map_err(io)? {
                let path = entry.path();
                let meta = entry.metadata().await.map_err(io)?;
                if meta.is_dir() {
                    pending.push(path);
                } else if let Ok(rel) = path.strip_prefix(&self.root) {
                    blobs.push(Blob {
                        key: rel.to_string_lossy().into_owned(),
                        size: meta.len(),
                    });
                }
            }
        }
        blobs.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(blobs)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        check_key(key)?;
        Ok(self.root.join(key))
    }
}

/// Writes `bytes` to a temporary file beside `path`, fsyncs it, renames it into place and
/// fsyncs the directory, so that the blob is whole after a crash or a power cut. A failed
/// write leaves nothing behind.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let written = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_data()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}
