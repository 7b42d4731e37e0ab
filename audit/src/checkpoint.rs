//! Signed checkpoints: the Merkle root over every event so far, signed with the audit key
//! (Ed25519 or ECDSA P-256, see [`crate::public_key`]). A third party that keeps one can later
//! check the log was only appended to.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::merkle::Hash;
pub use crate::public_key::{Algorithm, PublicKey};
pub use crate::signer::{CheckpointSigner, SigningKey};

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

/// Reads the public key from `dir/checkpoint.pub`.
pub fn load_public(dir: &Path) -> Result<PublicKey> {
    let path: PathBuf = dir.join(crate::file_key::PUBLIC_FILE);
    let text = std::fs::read_to_string(&path).map_err(Error::io(&path))?;
    PublicKey::from_text(&text)
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
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn signed_checkpoint_verifies_and_any_change_breaks_it() {
        let k = SigningKey::ephemeral().unwrap();
        let cp = k.sign(10, [1; 32], [2; 32], 5).unwrap();
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
    fn checkpoint_json_round_trips() {
        let k = SigningKey::ephemeral().unwrap();
        let cp = k.sign(3, [7; 32], [8; 32], 9).unwrap();
        let back: Checkpoint = serde_json::from_str(&serde_json::to_string(&cp).unwrap()).unwrap();
        assert_eq!(back, cp);
    }
}
