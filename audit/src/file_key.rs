//! The file checkpoint key (`audit.key_backend = "file"`, the default): an Ed25519 key in
//! `DIR/audit/checkpoint.key` (PKCS#8, mode 0600), its public half in `checkpoint.pub`.
//! Whoever can read the file can sign as the log; a key in an HSM or vault cannot be read.

use std::path::{Path, PathBuf};

use ring::signature::{Ed25519KeyPair, KeyPair};

use crate::error::{Error, Result};
use crate::public_key::PublicKey;
use crate::signer::CheckpointSigner;

/// The private key file's name in the audit key directory.
pub const KEY_FILE: &str = "checkpoint.key";
/// The public key file's name; public material, kept next to the log.
pub const PUBLIC_FILE: &str = "checkpoint.pub";

/// No `Debug`; the key bytes never leave this struct.
pub struct FileKey {
    pair: Ed25519KeyPair,
    public: PublicKey,
    path: Option<PathBuf>,
}

impl FileKey {
    /// Loads `dir/checkpoint.key`, making it (0600) and `checkpoint.pub` on first use.
    pub fn load_or_create(dir: &Path) -> Result<Self> {
        let path = dir.join(KEY_FILE);
        let pkcs8 = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // A log's checkpoints verify under the one key it was made with: a public
                // half on disk with no private half is a lost (or deleted) key, and a new
                // key would sign checkpoints that no longer verify under `checkpoint.pub`.
                let pub_path = dir.join(PUBLIC_FILE);
                if pub_path.exists() {
                    return Err(Error::Config(format!(
                        "{} is missing but {} names this log's checkpoint key: restore the key \
                         from a backup (esm does not make a new key for a log that has one)",
                        path.display(),
                        pub_path.display()
                    )));
                }
                let doc = generate()?;
                write_new(&path, doc.as_ref(), 0o600)?;
                doc.as_ref().to_vec()
            }
            Err(e) => return Err(Error::io(&path)(e)),
        };
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8)
            .map_err(|e| Error::Config(format!("{}: not an Ed25519 key: {e}", path.display())))?;
        let key = Self::from_pair(pair, Some(path.clone()))?;
        let pub_path = dir.join(PUBLIC_FILE);
        if !pub_path.exists() {
            write_new(&pub_path, key.public.to_text().as_bytes(), 0o644)?;
        } else if crate::checkpoint::load_public(dir)? != key.public {
            // A swapped private key would sign checkpoints that fail verification only
            // when someone next runs it: refuse it now, naming both files.
            return Err(Error::Config(format!(
                "{} is not the private half of {}: restore the key this log was made with",
                path.display(),
                pub_path.display()
            )));
        }
        Ok(key)
    }

    /// A key held only in memory, for tests and benchmarks.
    pub fn ephemeral() -> Result<Self> {
        let doc = generate()?;
        let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref())
            .map_err(|_| Error::Bug("fresh Ed25519 key does not load".into()))?;
        Self::from_pair(pair, None)
    }

    fn from_pair(pair: Ed25519KeyPair, path: Option<PathBuf>) -> Result<Self> {
        let public = PublicKey::ed25519(pair.public_key().as_ref().to_vec())?;
        Ok(Self { pair, public, path })
    }
}

fn generate() -> Result<ring::pkcs8::Document> {
    Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
        .map_err(|_| Error::Bug("Ed25519 key generation failed".into()))
}

impl CheckpointSigner for FileKey {
    fn public(&self) -> &PublicKey {
        &self.public
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        Ok(self.pair.sign(message).as_ref().to_vec())
    }

    fn custody(&self) -> serde_json::Value {
        serde_json::json!({
            "backend": "file",
            "key_id": self.public.id,
            "algorithm": self.public.algorithm.name(),
            "path": self.path.as_ref().map(|p| p.display().to_string()),
            "extractable": true,
        })
    }

    fn may_block(&self) -> bool {
        false
    }
}

/// Writes a file that must not exist yet, with `mode`, whole or not at all
/// ([`crate::durable_file`]); the directory is made owner-only first.
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    if let Some(parent) = path.parent() {
        crate::key_dir::create_private_dir(parent)?;
    }
    crate::durable_file::create_new(path, bytes, mode).map_err(Error::io(path))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::checkpoint::{load_public, SigningKey};

    #[test]
    fn key_files_are_made_once_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let a = SigningKey::load_or_create(dir.path()).unwrap();
        let b = SigningKey::load_or_create(dir.path()).unwrap();
        assert_eq!(a.public(), b.public());
        assert_eq!(load_public(dir.path()).unwrap(), a.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let m = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap();
            assert_eq!(m.permissions().mode() & 0o777, 0o600);
        }
        std::fs::write(dir.path().join(KEY_FILE), b"junk").unwrap();
        assert!(matches!(
            SigningKey::load_or_create(dir.path()),
            Err(Error::Config(_))
        ));
    }

    #[test]
    fn refuses_to_make_a_new_key_for_a_log_whose_key_was_deleted() {
        let dir = tempfile::tempdir().unwrap();
        SigningKey::load_or_create(dir.path()).unwrap();
        std::fs::remove_file(dir.path().join(KEY_FILE)).unwrap();
        let err = SigningKey::load_or_create(dir.path()).err().unwrap();
        assert!(matches!(err, Error::Config(_)), "{err}");
        assert!(err.to_string().contains("restore the key"), "{err}");
        assert!(
            !dir.path().join(KEY_FILE).exists(),
            "no new key was written"
        );
    }

    #[test]
    fn refuses_a_private_key_that_is_not_the_recorded_public_half() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        SigningKey::load_or_create(dir.path()).unwrap();
        SigningKey::load_or_create(other.path()).unwrap();
        std::fs::copy(other.path().join(KEY_FILE), dir.path().join(KEY_FILE)).unwrap();
        let err = SigningKey::load_or_create(dir.path()).err().unwrap();
        assert!(err.to_string().contains("not the private half"), "{err}");
    }

    #[test]
    fn the_file_key_says_it_is_a_readable_ed25519_file() {
        let dir = tempfile::tempdir().unwrap();
        let k = SigningKey::load_or_create(dir.path()).unwrap();
        let c = k.custody();
        assert_eq!(c["backend"], "file");
        assert_eq!(c["algorithm"], "ed25519");
        assert_eq!(c["key_id"], k.id());
        assert_eq!(c["extractable"], true);
        assert!(k.id().starts_with("ed25519:"), "{}", k.id());
    }
}
