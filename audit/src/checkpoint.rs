//! Signed checkpoints: the Merkle root over every event so far, signed with the audit
//! Ed25519 key. A third party that keeps one can later check the log was only appended to.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::merkle::Hash;

/// A checkpoint as stored and exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub tree_size: u64,
    #[serde(with = "hex_hash")]
    pub root: Hash,
    /// The hash of event `tree_size`, so verification can continue the chain from here.
    #[serde(with = "hex_hash")]
    pub last_hash: Hash,
    pub time_ns: i64,
    pub key_id: String,
    #[serde(with = "hex_bytes")]
    pub signature: Vec<u8>,
}

impl Checkpoint {
    /// The text that is signed, in the spirit of a transparency-log signed note.
    pub fn signed_text(tree_size: u64, root: &Hash, last_hash: &Hash, time_ns: i64) -> String {
        format!(
            "esm audit checkpoint v1\n{tree_size}\n{}\n{}\n{time_ns}\n",
            STANDARD.encode(root),
            hex::encode(last_hash)
        )
    }

    pub fn verify(&self, key: &PublicKey) -> bool {
        key.verifies(
            &self.key_id,
            Self::signed_text(self.tree_size, &self.root, &self.last_hash, self.time_ns).as_bytes(),
            &self.signature,
        )
    }
}

/// The audit signing key. No `Debug`; the key bytes never leave this struct.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub bytes: Vec<u8>,
    pub id: String,
}

impl PublicKey {
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        let id = key_id(&bytes);
        Self { bytes, id }
    }

    /// Reads the base64 text `checkpoint.pub` holds.
    pub fn from_text(text: &str) -> Result<Self> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|e| Error::Config(format!("audit public key is not base64: {e}")))?;
        if bytes.len() != 32 {
            return Err(Error::Config(
                "audit public key is not an Ed25519 key".into(),
            ));
        }
        Ok(Self::from_bytes(bytes))
    }

    pub fn to_text(&self) -> String {
        format!("{}\n", STANDARD.encode(&self.bytes))
    }

    /// Whether `signature` over `message` was made by this key, named `key_id`.
    pub(crate) fn verifies(&self, key_id: &str, message: &[u8], signature: &[u8]) -> bool {
        key_id == self.id
            && UnparsedPublicKey::new(&ED25519, &self.bytes)
                .verify(message, signature)
                .is_ok()
    }
}

fn key_id(public: &[u8]) -> String {
    hex::encode(&ring::digest::digest(&ring::digest::SHA256, public).as_ref()[..8])
}

impl SigningKey {
    /// Loads `dir/checkpoint.key`, making it (0600) and `checkpoint.pub` on first use.
    pub fn load_or_create(dir: &Path) -> Result<Self> {
        let path = dir.join("checkpoint.key");
        let pkcs8 = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let rng = ring::rand::SystemRandom::new();
                let doc = Ed25519KeyPair::generate_pkcs8(&rng)
                    .map_err(|_| Error::Bug("Ed25519 key generation failed".into()))?;
                write_new(&path, doc.as_ref(), 0o600)?;
                doc.as_ref().to_vec()
            }
            Err(e) => return Err(Error::io(&path)(e)),
        };
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8)
            .map_err(|e| Error::Config(format!("{}: not an Ed25519 key: {e}", path.display())))?;
        let id = key_id(pair.public_key().as_ref());
        let key = Self { pair, id };
        let pub_path = dir.join("checkpoint.pub");
        if !pub_path.exists() {
            write_new(&pub_path, key.public().to_text().as_bytes(), 0o644)?;
        }
        Ok(key)
    }

    /// A key held only in memory, for tests and benchmarks.
    pub fn ephemeral() -> Result<Self> {
        let rng = ring::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| Error::Bug("Ed25519 key generation failed".into()))?;
        let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref())
            .map_err(|_| Error::Bug("fresh Ed25519 key does not load".into()))?;
        let id = key_id(pair.public_key().as_ref());
        Ok(Self { pair, id })
    }

    pub fn public(&self) -> PublicKey {
        PublicKey {
            bytes: self.pair.public_key().as_ref().to_vec(),
            id: self.id.clone(),
        }
    }

    /// The key's id (a hash of its public half), recorded next to each signature.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Signs any statement of the log's (checkpoints, retention statements); each kind of
    /// statement starts with its own first line, so one cannot pass for another.
    pub(crate) fn sign_bytes(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }

    pub fn sign(&self, tree_size: u64, root: Hash, last_hash: Hash, time_ns: i64) -> Checkpoint {
        let text = Checkpoint::signed_text(tree_size, &root, &last_hash, time_ns);
        Checkpoint {
            tree_size,
            root,
            last_hash,
            time_ns,
            key_id: self.id.clone(),
            signature: self.sign_bytes(text.as_bytes()),
        }
    }
}

/// Reads the public key from `dir/checkpoint.pub`.
pub fn load_public(dir: &Path) -> Result<PublicKey> {
    let path: PathBuf = dir.join("checkpoint.pub");
    let text = std::fs::read_to_string(&path).map_err(Error::io(&path))?;
    PublicKey::from_text(&text)
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    if let Some(parent) = path.parent() {
        crate::key_dir::create_private_dir(parent)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, mode);
    let mut f = opts.open(path).map_err(Error::io(path))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(Error::io(path))
}

pub(crate) mod hex_hash {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(h: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(h))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let v = hex::decode(&s).map_err(serde::de::Error::custom)?;
        v.try_into()
            .map_err(|_| serde::de::Error::custom("expected 32 bytes"))
    }
}

pub(crate) mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(h: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(h))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        hex::decode(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_checkpoint_verifies_and_any_change_breaks_it() {
        let k = SigningKey::ephemeral().unwrap();
        let cp = k.sign(10, [1; 32], [2; 32], 5);
        assert!(cp.verify(&k.public()));
        for tamper in [
            |c: &mut Checkpoint| c.tree_size += 1,
            |c: &mut Checkpoint| c.root[0] ^= 1,
            |c: &mut Checkpoint| c.last_hash[0] ^= 1,
            |c: &mut Checkpoint| c.time_ns += 1,
            |c: &mut Checkpoint| c.signature[0] ^= 1,
        ] {
            let mut c = cp.clone();
            tamper(&mut c);
            assert!(!c.verify(&k.public()));
        }
        let other = SigningKey::ephemeral().unwrap();
        assert!(!cp.verify(&other.public()));
    }

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
            let m = std::fs::metadata(dir.path().join("checkpoint.key")).unwrap();
            assert_eq!(m.permissions().mode() & 0o777, 0o600);
        }
        std::fs::write(dir.path().join("checkpoint.key"), b"junk").unwrap();
        assert!(matches!(
            SigningKey::load_or_create(dir.path()),
            Err(Error::Config(_))
        ));
    }

    #[test]
    fn checkpoint_json_round_trips() {
        let k = SigningKey::ephemeral().unwrap();
        let cp = k.sign(3, [7; 32], [8; 32], 9);
        let back: Checkpoint = serde_json::from_str(&serde_json::to_string(&cp).unwrap()).unwrap();
        assert_eq!(back, cp);
    }
}
