//! The audit log's checkpoint key in the CA's key backends (`audit.key_backend`): made in the
//! token or the vault like the CA's keys and never leaving it, so that whoever holds the host
//! (root included) cannot take the key away and re-sign a rewritten log elsewhere or later.
//!
//! The algorithm is the best the backend has: Ed25519 in a PKCS#11 token that offers
//! `CKM_EDDSA` (as the file key), else ECDSA P-256 (Key Vault has no Ed25519). Verifiers need
//! only the public half, which esm keeps in the data dir (`audit/checkpoint.pub`).
//!
//! This adapts the backends to [`esm_audit::checkpoint::CheckpointSigner`]; the audit crate
//! knows nothing of PKCS#11 or Azure.

use std::sync::Arc;

use esm_audit::checkpoint::{Algorithm, CheckpointSigner, PublicKey};

use super::azure_key_vault::AzureKeyVaultStore;
use super::pkcs11::{Pkcs11Ed25519Key, Pkcs11KeyStore};
use super::{KeyAlgorithm, KeyBackend, KeyStore};
use crate::error::{Error, Result};

/// Where checkpoint keys are made and found.
pub enum CheckpointKeys {
    Pkcs11(Pkcs11KeyStore),
    AzureKeyVault(AzureKeyVaultStore),
}

/// How the backend signs for the key.
enum Held {
    /// ECDSA P-256 through the CA's key interface (DER signatures, SHA-256 digest).
    Ecdsa(Arc<dyn KeyBackend>),
    Ed25519(Arc<Pkcs11Ed25519Key>),
}

/// A checkpoint key in a token or a vault. Holds its public half only.
pub struct BackendCheckpointKey {
    held: Held,
    public: PublicKey,
    backend: &'static str,
    /// Reads the key's protection back from the backend, for the audit log.
    store: Arc<CheckpointKeys>,
}

fn public_key(alg: Algorithm, raw: &[u8], backend: &'static str) -> Result<PublicKey> {
    PublicKey::new(alg, raw.to_vec()).map_err(|e| Error::KeyBackend {
        backend,
        reason: e.to_string(),
    })
}

/// A name no key had before, for a new checkpoint key: `audit-checkpoint-<unix time>-<hex>`.
pub fn new_key_name(now: time::OffsetDateTime) -> Result<String> {
    crate::store::new_id("audit-checkpoint", now)
}

impl CheckpointKeys {
    pub fn backend_name(&self) -> &'static str {
        match self {
            Self::Pkcs11(s) => s.backend_name(),
            Self::AzureKeyVault(s) => s.backend_name(),
        }
    }

    /// Reaches the backend now (token login, vault access), before anything is written.
    pub fn check(&self) -> Result<()> {
        match self {
            Self::Pkcs11(s) => s.check(),
            Self::AzureKeyVault(s) => s.check(),
        }
    }

    /// The algorithm a new key gets here: Ed25519 where the backend can, else P-256.
    pub fn algorithm(&self) -> Result<Algorithm> {
        Ok(match self {
            Self::Pkcs11(s) if s.supports_ed25519()? => Algorithm::Ed25519,
            Self::Pkcs11(_) | Self::AzureKeyVault(_) => Algorithm::EcdsaP256,
        })
    }

    /// Makes a new checkpoint key under `name`. The key's id in the backend (what
    /// [`CheckpointKeys::load`] takes back) is [`BackendCheckpointKey::backend_key_id`]: the
    /// name for a token, `NAME/VERSION` for a vault.
    pub fn generate(self: &Arc<Self>, name: &str) -> Result<BackendCheckpointKey> {
        let alg = self.algorithm()?;
        let held = match (&**self, alg) {
            (Self::Pkcs11(s), Algorithm::Ed25519) => Held::Ed25519(s.generate_ed25519(name)?),
            (Self::Pkcs11(s), _) => Held::Ecdsa(s.generate(name, KeyAlgorithm::EcP256)?),
            (Self::AzureKeyVault(s), _) => Held::Ecdsa(s.generate(name, KeyAlgorithm::EcP256)?),
        };
        self.key(held)
    }

    /// Finds the checkpoint key `key_id` of algorithm `alg`.
    pub fn load(self: &Arc<Self>, key_id: &str, alg: Algorithm) -> Result<BackendCheckpointKey> {
        let held = match (&**self, alg) {
            (Self::Pkcs11(s), Algorithm::Ed25519) => Held::Ed25519(s.load_ed25519(key_id)?),
            (Self::Pkcs11(s), Algorithm::EcdsaP256) => {
                Held::Ecdsa(s.load(key_id, KeyAlgorithm::EcP256)?)
            }
            (Self::AzureKeyVault(s), Algorithm::EcdsaP256) => {
                Held::Ecdsa(s.load(key_id, KeyAlgorithm::EcP256)?)
            }
            (Self::AzureKeyVault(_), Algorithm::Ed25519) => {
                return Err(Error::Config(format!(
                    "checkpoint key {key_id}: Azure Key Vault has no Ed25519 keys"
                )))
            }
        };
        self.key(held)
    }

    fn key(self: &Arc<Self>, held: Held) -> Result<BackendCheckpointKey> {
        let backend = self.backend_name();
        let public = match &held {
            Held::Ecdsa(k) => public_key(Algorithm::EcdsaP256, k.public_key_raw(), backend)?,
            Held::Ed25519(k) => public_key(Algorithm::Ed25519, k.public_key_raw(), backend)?,
        };
        Ok(BackendCheckpointKey {
            held,
            public,
            backend,
            store: self.clone(),
        })
    }

    fn custody(&self, key_id: &str) -> Result<serde_json::Value> {
        match self {
            Self::Pkcs11(s) => s.custody(key_id),
            Self::AzureKeyVault(s) => s.custody(key_id),
        }
    }
}

impl BackendCheckpointKey {
    /// The key's id in its backend: what the data dir records to find it again.
    pub fn backend_key_id(&self) -> &str {
        match &self.held {
            Held::Ecdsa(k) => k.key_id(),
            Held::Ed25519(k) => k.key_id(),
        }
    }

    pub fn backend_name(&self) -> &'static str {
        self.backend
    }
}

impl CheckpointSigner for BackendCheckpointKey {
    fn public(&self) -> &PublicKey {
        &self.public
    }

    fn sign(&self, message: &[u8]) -> esm_audit::Result<Vec<u8>> {
        let signed = match &self.held {
            Held::Ecdsa(k) => k.sign(message),
            Held::Ed25519(k) => k.sign(message),
        };
        signed.map_err(|e| esm_audit::Error::KeyBackend(e.to_string()))
    }

    /// The backend's own account of the key (a token's attributes read back), with the
    /// checkpoint key's id and algorithm; a backend that cannot be read says so in `error`.
    fn custody(&self) -> serde_json::Value {
        let mut out = match self.store.custody(self.backend_key_id()) {
            Ok(serde_json::Value::Object(m)) => m,
            Ok(_) => serde_json::Map::new(),
            Err(e) => {
                let mut m = serde_json::Map::new();
                m.insert("error".into(), e.to_string().into());
                m
            }
        };
        out.insert("backend".into(), self.backend.into());
        out.insert("key_id".into(), self.public.id.clone().into());
        out.insert("backend_key_id".into(), self.backend_key_id().into());
        out.insert("algorithm".into(), self.public.algorithm.name().into());
        serde_json::Value::Object(out)
    }
}
