//! The file key backend: one PKCS#8 PEM file per key, created 0600 and never overwritten,
//! encrypted (PBES2, scrypt + AES-256-CBC) when a passphrase is configured.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pkcs8::der::pem::LineEnding;
use pkcs8::{EncryptedPrivateKeyInfo, PrivateKeyInfo, SecretDocument};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};

use super::{KeyAlgorithm, KeyBackend, KeyStore};
use crate::error::{Error, Result};

const BACKEND: &str = "file";
const PLAIN_LABEL: &str = "PRIVATE KEY";
const ENCRYPTED_LABEL: &str = "ENCRYPTED PRIVATE KEY";

/// A passphrase for encrypting key files. Its bytes are never printed.
#[derive(Clone)]
pub struct Passphrase(Vec<u8>);

impl Passphrase {
    pub fn new(p: impl Into<Vec<u8>>) -> Option<Self> {
        let p = p.into();
        (!p.is_empty()).then_some(Self(p))
    }
}

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(<redacted>)")
    }
}

/// Keys as files in one directory.
pub struct FileKeyStore {
    dir: PathBuf,
    passphrase: Option<Passphrase>,
}

impl FileKeyStore {
    pub fn new(dir: impl Into<PathBuf>, passphrase: Option<Passphrase>) -> Self {
        Self {
            dir: dir.into(),
            passphrase,
        }
    }

    fn path(&self, key_id: &str) -> Result<PathBuf> {
        let ok = !key_id.is_empty()
            && key_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(Error::Bug(format!("unsafe key id {key_id:?}")));
        }
        Ok(self.dir.join(format!("{key_id}.pem")))
    }

    fn write_new(&self, key_id: &str, pkcs8_der: &[u8]) -> Result<()> {
        let path = self.path(key_id)?;
        crate::store::create_private_dir(&self.dir)?;
        let pem = match &self.passphrase {
            Some(p) => {
                let info = PrivateKeyInfo::try_from(pkcs8_der).map_err(key_err)?;
                let enc = info.encrypt(rand_core::OsRng, &p.0).map_err(key_err)?;
                enc.to_pem(ENCRYPTED_LABEL, LineEnding::LF)
                    .map_err(key_err)?
            }
            None => SecretDocument::try_from(pkcs8_der)
                .map_err(key_err)?
                .to_pem(PLAIN_LABEL, LineEnding::LF)
                .map_err(key_err)?,
        };
        // Whole or not at all: a key cut short by a full disk would block the retry.
        esm_audit::durable_file::create_new(&path, pem.as_bytes(), 0o600).map_err(Error::io(&path))
    }

    fn read_pkcs8(&self, path: &Path) -> Result<SecretDocument> {
        let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
        let (label, doc) = SecretDocument::from_pem(&text).map_err(|e| Error::KeyBackend {
            backend: BACKEND,
            reason: format!("{}: not a PEM private key: {e}", path.display()),
        })?;
        match label {
            PLAIN_LABEL => Ok(doc),
            ENCRYPTED_LABEL => {
                let p = self.passphrase.as_ref().ok_or_else(|| {
                    Error::Config(format!(
                        "{} is encrypted: set the CA key passphrase (ESM_CA_KEY_PASSPHRASE)",
                        path.display()
                    ))
                })?;
                let enc = EncryptedPrivateKeyInfo::try_from(doc.as_bytes()).map_err(key_err)?;
                enc.decrypt(&p.0).map_err(|_| Error::KeyBackend {
                    backend: BACKEND,
                    reason: format!("{}: wrong passphrase", path.display()),
                })
            }
            other => Err(Error::KeyBackend {
                backend: BACKEND,
                reason: format!("{}: unexpected PEM label {other:?}", path.display()),
            }),
        }
    }
}

fn key_err(e: impl std::fmt::Display) -> Error {
    Error::KeyBackend {
        backend: BACKEND,
        reason: e.to_string(),
    }
}

impl KeyStore for FileKeyStore {
    fn backend_name(&self) -> &'static str {
        BACKEND
    }

    fn generate(&self, key_id: &str, alg: KeyAlgorithm) -> Result<Arc<dyn KeyBackend>> {
        let der = generate_pkcs8(alg)?;
        self.write_new(key_id, &der)?;
        Ok(Arc::new(FileKey::from_pkcs8(key_id, alg, &der)?))
    }

    fn load(&self, key_id: &str, alg: KeyAlgorithm) -> Result<Arc<dyn KeyBackend>> {
        let doc = self.read_pkcs8(&self.path(key_id)?)?;
        Ok(Arc::new(FileKey::from_pkcs8(key_id, alg, doc.as_bytes())?))
    }

    fn import_pkcs8(&self, key_id: &str, pkcs8_der: &[u8]) -> Result<Arc<dyn KeyBackend>> {
        let key = FileKey::detect(key_id, pkcs8_der)?;
        self.write_new(key_id, pkcs8_der)?;
        Ok(Arc::new(key))
    }

    fn custody(&self, key_id: &str) -> Result<serde_json::Value> {
        let path = self.path(key_id)?;
        let text = std::fs::read_to_string(&path).map_err(Error::io(&path))?;
        Ok(serde_json::json!({
            "backend": BACKEND,
            "key_id": key_id,
            "path": path.display().to_string(),
            "encrypted": text.contains(ENCRYPTED_LABEL),
            "extractable": true,
        }))
    }
}

/// Makes a fresh private key as unencrypted PKCS#8 DER.
pub fn generate_pkcs8(alg: KeyAlgorithm) -> Result<Vec<u8>> {
    let rng = SystemRandom::new();
    match alg {
        KeyAlgorithm::EcP256 | KeyAlgorithm::EcP384 => {
            let doc = EcdsaKeyPair::generate_pkcs8(ecdsa_alg(alg)?, &rng)
                .map_err(|_| key_err("ECDSA key generation failed"))?;
            Ok(doc.as_ref().to_vec())
        }
        KeyAlgorithm::Rsa3072 => {
            use rsa::pkcs8::EncodePrivateKey;
            let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 3072).map_err(key_err)?;
            Ok(key.to_pkcs8_der().map_err(key_err)?.as_bytes().to_vec())
        }
    }
}

fn ecdsa_alg(alg: KeyAlgorithm) -> Result<&'static signature::EcdsaSigningAlgorithm> {
    match alg {
        KeyAlgorithm::EcP256 => Ok(&signature::ECDSA_P256_SHA256_ASN1_SIGNING),
        KeyAlgorithm::EcP384 => Ok(&signature::ECDSA_P384_SHA384_ASN1_SIGNING),
        KeyAlgorithm::Rsa3072 => Err(Error::Bug("RSA is not ECDSA".into())),
    }
}

enum Inner {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// A key held in this process's memory, loaded from a file.
pub struct FileKey {
    key_id: String,
    alg: KeyAlgorithm,
    inner: Inner,
    rng: SystemRandom,
}

impl FileKey {
    pub fn from_pkcs8(key_id: &str, alg: KeyAlgorithm, der: &[u8]) -> Result<Self> {
        let rng = SystemRandom::new();
        let inner = if alg.is_rsa() {
            let k = RsaKeyPair::from_pkcs8(der).map_err(|e| key_err(format!("{key_id}: {e}")))?;
            if k.public().modulus_len() * 8 != 3072 {
                return Err(key_err(format!("{key_id}: RSA key is not 3072 bits")));
            }
            Inner::Rsa(k)
        } else {
            Inner::Ec(
                EcdsaKeyPair::from_pkcs8(ecdsa_alg(alg)?, der, &rng)
                    .map_err(|e| key_err(format!("{key_id}: not an {alg} key: {e}")))?,
            )
        };
        Ok(Self {
            key_id: key_id.to_owned(),
            alg,
            inner,
            rng,
        })
    }

    /// Loads a PKCS#8 key of whichever supported algorithm it is.
    pub fn detect(key_id: &str, der: &[u8]) -> Result<Self> {
        KeyAlgorithm::ALL
            .into_iter()
            .find_map(|alg| Self::from_pkcs8(key_id, alg, der).ok())
            .ok_or_else(|| {
                Error::Config(format!(
                    "key {key_id} is not an ECDSA P-256/P-384 or RSA-3072 PKCS#8 key"
                ))
            })
    }
}

impl KeyBackend for FileKey {
    fn key_id(&self) -> &str {
        &self.key_id
    }

    fn algorithm(&self) -> KeyAlgorithm {
        self.alg
    }

    fn public_key_raw(&self) -> &[u8] {
        match &self.inner {
            Inner::Ec(k) => k.public_key().as_ref(),
            Inner::Rsa(k) => k.public_key().as_ref(),
        }
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>> {
        match &self.inner {
            Inner::Ec(k) => k
                .sign(&self.rng, msg)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| key_err("ECDSA signing failed")),
            Inner::Rsa(k) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &self.rng, msg, &mut sig)
                    .map_err(|_| key_err("RSA signing failed"))?;
                Ok(sig)
            }
        }
    }
}

#[cfg(test)]
#[path = "file_tests.rs"]
mod tests;
