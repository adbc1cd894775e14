//! Unpacked code packages on the node, one directory per checksum, shared by every instance
//! of every function with that code. A package is unpacked into a temp directory and renamed
//! into place, so a racing start either sees nothing or the whole tree.

use std::path::{Path, PathBuf};

use crate::codestore::package::{self, Limits};
use crate::codestore::{CodeStore, CodeStoreError};

#[derive(Debug, thiserror::Error)]
pub enum CodeCacheError {
    #[error(transparent)]
    Store(#[from] CodeStoreError),
    #[error("unpacking code {checksum}: {source}")]
    Unpack { checksum: String, source: package::PackageError },
    #[error("unpack task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

#[derive(Clone)]
pub struct CodeCache {
    dir: PathBuf,
    store: CodeStore,
    limits: Limits,
}

impl CodeCache {
    pub fn new(dir: PathBuf, store: CodeStore, limits: Limits) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        // Its paths become bind mounts, which Docker takes only as absolute paths (a relative one
        // is read as a volume name): `--data-dir ./data` must work.
        let dir = std::path::absolute(&dir)?;
        Ok(Self { dir, store, limits })
    }

    /// Host path of the unpacked code, unpacking it on first use.
    pub async fn ensure(&self, checksum: &str) -> Result<PathBuf, CodeCacheError> {
        // Checksums are decimal digits (we compute them), so they are safe path components.
        debug_assert!(checksum.chars().all(|c| c.is_ascii_digit()));
        let dest = self.dir.join(checksum);
        if tokio::fs::try_exists(&dest).await.unwrap_or(false) {
            return Ok(dest);
        }
        let zip = self.store.get(checksum).await?;
        let tmp = self.dir.join(format!(".tmp-{checksum}-{}", uuid::Uuid::new_v4().simple()));
        let (limits, d, t) = (self.limits, dest.clone(), tmp.clone());
        let sum = checksum.to_string();
        tokio::task::spawn_blocking(move || -> Result<(), CodeCacheError> {
            let res = package::unpack(&zip, &t, limits).map_err(|source| CodeCacheError::Unpack { checksum: sum, source });
            if res.is_ok() && std::fs::rename(&t, &d).is_ok() {
                return Ok(());
            }
            // Lost a race to another unpack of the same package, or failed: drop ours.
            let _ = std::fs::remove_dir_all(&t);
            res
        })
        .await??;
        Ok(dest)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
