//! Code packages: zips stored by checksum in object storage (object_store), and the checks
//! every package passes before it is stored ([`package`]).
//!
//! Where ([`CodeStoreConfig`]): a local directory (`<data_dir>/code`, the default), or an S3
//! bucket (AWS or any S3-compatible server), which every controller and node of a cluster
//! reads. Keys are `[<prefix>/]code/<checksum>.zip` either way.

pub mod package;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};

use crate::config::CodeStoreConfig;

#[derive(Debug, thiserror::Error)]
pub enum CodeStoreError {
    #[error("code package {0} not found")]
    NotFound(String),
    #[error("code storage unavailable: {0}")]
    Unavailable(#[from] object_store::Error),
    #[error("creating the code directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("codestore.url: {0}")]
    BadUrl(String),
}

/// Content-addressed: the same zip uploaded twice is stored once.
#[derive(Clone)]
pub struct CodeStore {
    store: Arc<dyn ObjectStore>,
    /// Where the packages are, for logs (no credentials).
    location: String,
}

fn key(checksum: &str) -> ObjectPath {
    ObjectPath::from(format!("code/{checksum}.zip"))
}

impl CodeStore {
    /// The store `cfg` names: empty url = `<data_dir>/code`; `s3://bucket[/prefix]` = S3. An S3
    /// bucket is listed once, so a wrong bucket, endpoint or key stops the start instead of
    /// failing every upload.
    pub async fn open(cfg: &CodeStoreConfig, data_dir: &Path) -> Result<Self, CodeStoreError> {
        let url = cfg.url.trim();
        if url.is_empty() {
            return Self::local(&data_dir.join("code"));
        }
        let s = Self::s3(cfg)?;
        // A listing, not a HEAD: S3 answers a HEAD in a missing bucket with a bare 404, the same
        // as for a missing object, so only a list tells that the bucket is not there.
        s.store.list_with_delimiter(Some(&ObjectPath::from("code"))).await?;
        Ok(s)
    }

    pub fn local(dir: &Path) -> Result<Self, CodeStoreError> {
        std::fs::create_dir_all(dir)?;
        Ok(Self { store: Arc::new(LocalFileSystem::new_with_prefix(dir)?), location: dir.display().to_string() })
    }

    /// An S3 bucket (no request is made yet).
    pub fn s3(cfg: &CodeStoreConfig) -> Result<Self, CodeStoreError> {
        let rest = cfg
            .url
            .trim()
            .strip_prefix("s3://")
            .ok_or_else(|| CodeStoreError::BadUrl("expected empty (a local directory) or s3://bucket[/prefix]".into()))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_matches('/');
        if bucket.is_empty() {
            return Err(CodeStoreError::BadUrl("the bucket name is missing: s3://bucket[/prefix]".into()));
        }
        // object_store retries for up to 3 minutes by default; a request waiting on a dead
        // endpoint should fail (503) within the configured deadline instead.
        let retry = RetryConfig { backoff: BackoffConfig::default(), max_retries: 3, retry_timeout: cfg.timeout() };
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(&cfg.region)
            .with_allow_http(cfg.allow_http)
            .with_virtual_hosted_style_request(cfg.virtual_hosted_style)
            .with_retry(retry)
            .with_client_options(ClientOptions::new().with_timeout(cfg.timeout()).with_allow_http(cfg.allow_http));
        if !cfg.endpoint.is_empty() {
            b = b.with_endpoint(&cfg.endpoint);
        }
        if !cfg.access_key_id.is_empty() {
            b = b.with_access_key_id(&cfg.access_key_id).with_secret_access_key(&cfg.secret_access_key);
        }
        let s3 = b.build()?;
        let location = format!("s3://{bucket}/{prefix}");
        let store: Arc<dyn ObjectStore> =
            if prefix.is_empty() { Arc::new(s3) } else { Arc::new(PrefixStore::new(s3, prefix)) };
        Ok(Self { store, location })
    }

    pub fn location(&self) -> &str {
        &self.location
    }

    pub async fn put(&self, checksum: &str, zip: Bytes) -> Result<(), CodeStoreError> {
        self.store.put(&key(checksum), PutPayload::from_bytes(zip)).await?;
        Ok(())
    }

    pub async fn get(&self, checksum: &str) -> Result<Bytes, CodeStoreError> {
        match self.store.get(&key(checksum)).await {
            Ok(r) => Ok(r.bytes().await?),
            Err(object_store::Error::NotFound { .. }) => Err(CodeStoreError::NotFound(checksum.to_string())),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn delete(&self, checksum: &str) -> Result<(), CodeStoreError> {
        match self.store.delete(&key(checksum)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
