use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig};
use serde::Deserialize;

use crate::blobs::{Blob, check_key};
use crate::{Result, StoreError};

/// Where blobs go on an S3-compatible store. Fields left out fall back to the standard AWS
/// environment variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
/// `AWS_ENDPOINT_URL`…).
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub bucket: String,
    /// `http(s)://host:port` of an S3-compatible server; AWS when absent.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Prepended to every key, so that several nodes or tests can share a bucket.
    #[serde(default)]
    pub prefix: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
}

/// Everything but the secret key, which no log line or panic message may show.
impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("prefix", &self.prefix)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "redacted"),
            )
            .finish()
    }
}

/// The largest blob read back whole: far above any segment, header or VOD manifest, so that a
/// foreign object under our prefix cannot make the node buffer without bound.
const MAX_BLOB_BYTES: u64 = 32 << 20;

/// Blobs as objects in an S3-compatible bucket. A PUT is atomic: an object is visible whole
/// or not at all, once the request completed.
#[derive(Debug, Clone)]
pub struct S3Store {
    bucket: Arc<AmazonS3>,
    prefix: String,
    name: String,
}

impl S3Store {
    pub fn open(config: &S3Config) -> Result<Self> {
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&config.bucket)
            // A stalled store must surface as an error within a pipeline's delivery timeout
            // (10 s), not hold a segment's publication for the default minutes of retries.
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 2,
                retry_timeout: Duration::from_secs(6),
            })
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(2))
                    .with_timeout(Duration::from_secs(8)),
            );
        let endpoint = config.endpoint.clone().or_else(|| {
            ["AWS_ENDPOINT_URL", "AWS_ENDPOINT"]
                .into_iter()
                .find_map(|name| std::env::var(name).ok())
        });
        if let Some(endpoint) = &endpoint {
            // Self-hosted stores are addressed by path, and often over plain HTTP on a LAN.
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        if let Some(region) = &config.region {
            builder = builder.with_region(region);
        }
        if let Some(id) = &config.access_key_id {
            builder = builder.with_access_key_id(id);
        }
        if let Some(secret) = &config.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        let bucket = builder
            .build()
            .map_err(|e| StoreError::Config(format!("S3 bucket `{}`: {e}", config.bucket)))?;
        let prefix = config.prefix.trim_matches('/').to_string();
        let name = format!("s3://{}/{prefix}", config.bucket);
        Ok(Self {
            bucket: Arc::new(bucket),
            prefix,
            name,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub async fn put(&self, key: &str, bytes: &Bytes) -> Result<()> {
        let path = self.path(key)?;
        self.bucket
            .put(&path, bytes.clone().into())
            .await
            .map_err(|e| s3_error(key, e))?;
        Ok(())
    }

    pub async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let path = self.path(key)?;
        let found = match self.bucket.get(&path).await {
            Ok(found) => found,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(s3_error(key, e)),
        };
        if found.meta.size > MAX_BLOB_BYTES {
            return Err(StoreError::TooLarge {
                key: key.to_string(),
                bytes: found.meta.size,
            });
        }
        Ok(Some(found.bytes().await.map_err(|e| s3_error(key, e))?))
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        match self.bucket.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(s3_error(key, e)),
        }
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<Blob>> {
        let path = self.path(prefix)?;
        let ours = format!("{}/", self.prefix);
        let mut blobs: Vec<Blob> = self
            .bucket
            .list(Some(&path))
            .try_filter_map(|meta| {
                let key = meta.location.to_string();
                let key = if self.prefix.is_empty() {
                    Some(key)
                } else {
                    key.strip_prefix(&ours).map(str::to_string)
                };
                std::future::ready(Ok(key.map(|key| Blob {
                    key,
                    size: meta.size,
                })))
            })
            .try_collect()
            .await
            .map_err(|e| s3_error(prefix, e))?;
        blobs.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(blobs)
    }

    fn path(&self, key: &str) -> Result<Path> {
        check_key(key)?;
        let full = if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        };
        Path::parse(&full).map_err(|_| StoreError::BadKey(key.to_string()))
    }
}

fn s3_error(key: &str, source: object_store::Error) -> StoreError {
    StoreError::S3 {
        key: key.to_string(),
        source: Box::new(source),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_key_never_prints() {
        let config = S3Config {
            bucket: "b".into(),
            secret_access_key: Some("s3-secret-value".into()),
            access_key_id: Some("GK123".into()),
            ..Default::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3-secret-value"), "{shown}");
        assert!(
            shown.contains("GK123") && shown.contains("redacted"),
            "{shown}"
        );
    }
}
