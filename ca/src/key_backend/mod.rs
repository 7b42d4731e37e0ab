//! Where CA keys live. Every signing operation goes through [`KeyBackend`], so a key held in a
//! PKCS#11 token or Azure Key Vault never has to leave it; one module per backend.
//!
//! Nothing here derives `Debug` on a type holding key bytes, and no key bytes are logged.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::Result;

pub mod azure_key_vault;
pub mod checkpoint_key;
pub mod file;
pub mod pkcs11;

/// The key algorithms the CA signs with. ECDSA P-256 is the default: it is what Envoy,
/// SPIRE and every SPIFFE library handle best and it signs fastest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum KeyAlgorithm {
    #[default]
    EcP256,
    EcP384,
    Rsa3072,
}

impl KeyAlgorithm {
    pub const ALL: [KeyAlgorithm; 3] = [Self::EcP256, Self::EcP384, Self::Rsa3072];

    pub fn name(self) -> &'static str {
        match self {
            Self::EcP256 => "ec-p256",
            Self::EcP384 => "ec-p384",
            Self::Rsa3072 => "rsa-3072",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == s)
    }

    /// The signature algorithm certificates signed with this key carry.
    pub(crate) fn rcgen(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            Self::EcP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Self::EcP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            Self::Rsa3072 => &rcgen::PKCS_RSA_SHA256,
        }
    }

    pub fn is_rsa(self) -> bool {
        matches!(self, Self::Rsa3072)
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A private key that can sign but need not be readable: the CA's only view of its keys.
pub trait KeyBackend: Send + Sync {
    /// The name under which the backend finds this key again (file name, token label,
    /// Key Vault key version). Safe to log and to store in the CA state.
    fn key_id(&self) -> &str;
    fn algorithm(&self) -> KeyAlgorithm;
    /// The raw subjectPublicKey: the uncompressed EC point, or the PKCS#1 RSAPublicKey.
    fn public_key_raw(&self) -> &[u8];
    /// Signs `msg` with the algorithm's hash (SHA-256 for P-256 and RSA, SHA-384 for P-384);
    /// ECDSA signatures are ASN.1 DER as X.509 wants them.
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>>;
}

/// Makes and finds keys of one backend. The CA names keys; the store decides where they go.
pub trait KeyStore: Send + Sync {
    /// `file`, `pkcs11`, `azure-key-vault`: recorded in the CA state next to each key id.
    fn backend_name(&self) -> &'static str;
    /// Makes a new key that never existed before under `key_id`.
    fn generate(&self, key_id: &str, alg: KeyAlgorithm) -> Result<Arc<dyn KeyBackend>>;
    /// Finds a key made earlier by [`KeyStore::generate`] or [`KeyStore::import_pkcs8`].
    fn load(&self, key_id: &str, alg: KeyAlgorithm) -> Result<Arc<dyn KeyBackend>>;
    /// Takes in an existing key (an upstream CA's), given as unencrypted PKCS#8 DER.
    fn import_pkcs8(&self, key_id: &str, pkcs8_der: &[u8]) -> Result<Arc<dyn KeyBackend>>;
    /// Reaches the backend now (module, token, login, vault) so that `esm init` fails before
    /// it writes anything. Backends that need nothing remote keep the default.
    fn check(&self) -> Result<()> {
        Ok(())
    }
    /// What the audit log says about where key `key_id` is kept: at least `backend` and
    /// `key_id`; a backend that can, reads the key's protection attributes back from where it
    /// lives (a token's `sensitive`/`extractable` flags) rather than restating its request.
    fn custody(&self, key_id: &str) -> Result<serde_json::Value> {
        Ok(serde_json::json!({ "backend": self.backend_name(), "key_id": key_id }))
    }
}

/// Adapts any [`KeyBackend`] to the certificate encoder.
pub(crate) struct Signer(pub Arc<dyn KeyBackend>);

impl rcgen::PublicKeyData for Signer {
    fn der_bytes(&self) -> &[u8] {
        self.0.public_key_raw()
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.0.algorithm().rcgen()
    }
}

impl rcgen::SigningKey for Signer {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.0.sign(msg).map_err(|e| {
            tracing::error!(key.id = self.0.key_id(), error = %e, "CA key failed to sign");
            rcgen::Error::RemoteKeyError
        })
    }
}

/// The SubjectPublicKeyInfo DER of a backend key.
pub fn spki_der(key: &Arc<dyn KeyBackend>) -> Vec<u8> {
    rcgen::PublicKeyData::subject_public_key_info(&Signer(key.clone()))
}

#[cfg(test)]
mod tests;
