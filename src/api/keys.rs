//! Access keys. Checking an HMAC signature needs the secret in clear, so secrets cannot be
//! hashed: they are sealed with ChaCha20-Poly1305 under a master key kept beside the database
//! (`<data_dir>/master.key`, mode 0600) and cached in memory once opened. A secret is never
//! logged and never printed but once, when it is created.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::RwLock;

use chacha20poly1305::aead::Aead;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce};
use hmac::Mac;

use crate::store::{Store, StoreError};

const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("master key file {path}: {source}")]
    MasterKey { path: String, source: std::io::Error },
    #[error("access key {0} cannot be opened with this master key")]
    Unseal(String),
}

pub struct Keyring {
    store: Store,
    cipher: ChaCha20Poly1305,
    master: [u8; 32],
    cache: RwLock<HashMap<String, String>>,
}

/// A new key pair, shown to the user once.
pub struct NewKey {
    pub access_key_id: String,
    pub access_key_secret: String,
}

fn random_string(alphabet: &[u8], len: usize) -> String {
    (0..len).map(|_| alphabet[rand::random_range(0..alphabet.len())] as char).collect()
}

/// Read `<data_dir>/master.key`, creating it (0600) on first start.
pub fn load_or_create_master_key(data_dir: &Path) -> Result<[u8; 32], KeyError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join("master.key");
    let err = |source| KeyError::MasterKey { path: path.display().to_string(), source };
    match std::fs::read_to_string(&path) {
        Ok(s) => {
            let bytes = hex::decode(s.trim()).map_err(|e| err(std::io::Error::other(e)))?;
            bytes.try_into().map_err(|_| err(std::io::Error::other("expected 64 hex characters")))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key: [u8; 32] = rand::random();
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).map_err(err)?;
            f.write_all(hex::encode(key).as_bytes()).and_then(|_| f.sync_all()).map_err(err)?;
            Ok(key)
        }
        Err(e) => Err(err(e)),
    }
}

impl Keyring {
    pub fn new(store: Store, master: [u8; 32]) -> Self {
        let cipher = ChaCha20Poly1305::new(&master.into());
        Self { store, cipher, master, cache: RwLock::new(HashMap::new()) }
    }

    /// The secret of an access key, or None if there is no such key.
    pub async fn secret(&self, access_key_id: &str) -> Result<Option<String>, KeyError> {
        if let Some(s) = self.cache.read().expect("key cache lock").get(access_key_id) {
            return Ok(Some(s.clone()));
        }
        let Some(sealed) = self.store.get_access_key(access_key_id).await? else {
            return Ok(None);
        };
        let secret = self.unseal(access_key_id, &sealed)?;
        self.cache.write().expect("key cache lock").insert(access_key_id.to_string(), secret.clone());
        Ok(Some(secret))
    }

    pub async fn create(&self, description: &str) -> Result<NewKey, KeyError> {
        const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let key = NewKey {
            access_key_id: format!("NB{}", random_string(UPPER, 22)),
            access_key_secret: random_string(ALNUM, 40),
        };
        let sealed = self.seal(&key.access_key_id, &key.access_key_secret);
        self.store.insert_access_key(&key.access_key_id, &sealed, description, &crate::model::now_iso()).await?;
        Ok(key)
    }

    pub async fn count(&self) -> Result<i64, KeyError> {
        Ok(self.store.count_access_keys().await?)
    }

    /// A key for signing things the server hands out (code download URLs), derived from the
    /// master key so it survives restarts without another file.
    pub fn derived_key(&self, purpose: &str) -> [u8; 32] {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.master).expect("any key length");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }

    fn seal(&self, id: &str, secret: &str) -> Vec<u8> {
        let nonce_bytes: [u8; NONCE_LEN] = rand::random();
        // The key id is bound in as associated data: a sealed secret moved to another row
        // does not open.
        let payload = chacha20poly1305::aead::Payload { msg: secret.as_bytes(), aad: id.as_bytes() };
        let ct = self.cipher.encrypt(&Nonce::from(nonce_bytes), payload).expect("encryption of a short secret");
        [nonce_bytes.as_slice(), &ct].concat()
    }

    fn unseal(&self, id: &str, sealed: &[u8]) -> Result<String, KeyError> {
        let fail = || KeyError::Unseal(id.to_string());
        if sealed.len() < NONCE_LEN {
            return Err(fail());
        }
        let (n, ct) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = n.try_into().map_err(|_| fail())?;
        let payload = chacha20poly1305::aead::Payload { msg: ct, aad: id.as_bytes() };
        let pt = self.cipher.decrypt(&Nonce::from(nonce), payload).map_err(|_| fail())?;
        String::from_utf8(pt).map_err(|_| fail())
    }
}
