use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use tokio::io::AsyncWriteExt;

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
        let io = |source| StoreError::Io {
            key: key.to_string(),
            source,
        };
        let dir = path.parent().unwrap_or(&self.root);
        tokio::fs::create_dir_all(dir).await.map_err(io)?;
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        let mut file = tokio::fs::File::create(&tmp).await.map_err(io)?;
        file.write_all(bytes).await.map_err(io)?;
        file.sync_data().await.map_err(io)?;
        drop(file);
        tokio::fs::rename(&tmp, &path).await.map_err(io)?;
        Ok(())
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

    /// Every key under `prefix` (a directory), recursively; temporary files of interrupted
    /// writes included, so that a repair can remove them.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let io = |source| StoreError::Io {
            key: prefix.to_string(),
            source,
        };
        let mut keys = Vec::new();
        let mut pending = vec![self.path(prefix)?];
        while let Some(dir) = pending.pop() {
            let mut entries = match tokio::fs::read_dir(&dir).await {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io(e)),
            };
            while let Some(entry) = entries.next_entry().await.map_err(io)? {
                let path = entry.path();
                if entry.file_type().await.map_err(io)?.is_dir() {
                    pending.push(path);
                } else if let Ok(rel) = path.strip_prefix(&self.root) {
                    keys.push(rel.to_string_lossy().into_owned());
                }
            }
        }
        keys.sort();
        Ok(keys)
    }

    /// Keys come from channel and rendition names; refuse anything that could leave the root.
    fn path(&self, key: &str) -> Result<PathBuf> {
        let rel = Path::new(key);
        let safe = !key.is_empty() && rel.components().all(|c| matches!(c, Component::Normal(_)));
        if !safe {
            return Err(StoreError::BadKey(key.to_string()));
        }
        Ok(self.root.join(rel))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_get_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::open(dir.path()).await.unwrap();
        let bytes = Bytes::from_static(b"moof");
        store.put("live/demo/360p/1.m4s", &bytes).await.unwrap();
        assert_eq!(
            store.get("live/demo/360p/1.m4s").await.unwrap(),
            Some(bytes)
        );
        assert_eq!(store.get("live/demo/360p/2.m4s").await.unwrap(), None);
        store.delete("live/demo/360p/1.m4s").await.unwrap();
        store.delete("live/demo/360p/1.m4s").await.unwrap();
        assert_eq!(store.get("live/demo/360p/1.m4s").await.unwrap(), None);
        // No temporary file is left behind.
        let left: Vec<_> = std::fs::read_dir(dir.path().join("live/demo/360p"))
            .unwrap()
            .collect();
        assert!(left.is_empty());
    }

    #[tokio::test]
    async fn lists_keys_under_a_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::open(dir.path()).await.unwrap();
        for key in ["live/a/x/1.m4s", "live/a/y/init-a.mp4", "live/b/x/1.m4s"] {
            store.put(key, &Bytes::from_static(b"x")).await.unwrap();
        }
        assert_eq!(
            store.list("live/a").await.unwrap(),
            ["live/a/x/1.m4s", "live/a/y/init-a.mp4"]
        );
        assert!(store.list("live/none").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn refuses_keys_that_escape_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::open(dir.path()).await.unwrap();
        for key in ["../x", "/etc/passwd", "a/../../b", ""] {
            assert!(
                matches!(store.get(key).await, Err(StoreError::BadKey(_))),
                "{key}"
            );
        }
    }
}
