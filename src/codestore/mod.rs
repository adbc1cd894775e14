//! Code packages: zips stored by checksum in object storage (object_store; a local directory
//! by default), and the checks every package passes before it is stored ([`package`]).

pub mod package;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

#[derive(Debug, thiserror::Error)]
pub enum CodeStoreError {
    #[error("code package {0} not found")]
    NotFound(String),
    #[error("code storage unavailable: {0}")]
    Unavailable(#[from] object_store::Error),
    #[error("creating the code directory: {0}")]
    Io(#[from] std::io::Error),
}

/// Content-addressed: the same zip uploaded twice is stored once.
#[derive(Clone)]
pub struct CodeStore {
    store: Arc<dyn ObjectStore>,
}

fn key(checksum: &str) -> ObjectPath {
    ObjectPath::from(format!("code/{checksum}.zip"))
}

impl CodeStore {
    pub fn local(dir: &Path) -> Result<Self, CodeStoreError> {
        std::fs::create_dir_all(dir)?;
        Ok(Self { store: Arc::new(LocalFileSystem::new_with_prefix(dir)?) })
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
