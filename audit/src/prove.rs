//! Inclusion and consistency proofs against signed checkpoints, as self-contained JSON a
//! third party can check with only the audit public key.

use serde::{Deserialize, Serialize};

use crate::checkpoint::{hex_hash, Checkpoint, PublicKey};
use crate::error::{Error, Result};
use crate::merkle::{self, Hash};
use crate::store::{Db, StoredCheckpoint};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProof {
    pub seq: u64,
    #[serde(with = "hex_hash")]
    pub event_hash: Hash,
    pub checkpoint: Checkpoint,
    #[serde(with = "hex_hashes")]
    pub path: Vec<Hash>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyProof {
    pub old: Checkpoint,
    pub new: Checkpoint,
    #[serde(with = "hex_hashes")]
    pub path: Vec<Hash>,
}

/// Why a proof does not hold.
fn invalid(what: &str) -> Error {
    Error::Tampered(crate::Tampered {
        seq: 0,
        reason: format!("proof does not verify: {what}"),
    })
}

impl InclusionProof {
    pub fn verify(&self, key: &PublicKey) -> Result<()> {
        if !self.checkpoint.verify(key) {
            return Err(invalid("checkpoint signature"));
        }
        let ok = self.seq >= 1
            && merkle::verify_inclusion(
                self.seq - 1,
                self.checkpoint.tree_size,
                &self.event_hash,
                &self.path,
                &self.checkpoint.root,
            );
        ok.then_some(()).ok_or_else(|| invalid("audit path"))
    }
}

impl ConsistencyProof {
    pub fn verify(&self, key: &PublicKey) -> Result<()> {
        if !self.old.verify(key) || !self.new.verify(key) {
            return Err(invalid("checkpoint signature"));
        }
        merkle::verify_consistency(
            self.old.tree_size,
            self.new.tree_size,
            &self.old.root,
            &self.new.root,
            &self.path,
        )
        .then_some(())
        .ok_or_else(|| invalid("the new log does not extend the old one"))
    }
}

/// Every event hash from 1 to `size`; needs the log from its start.
async fn leaves(db: &Db, size: u64) -> Result<Vec<Hash>> {
    if let Some(first) = db.first_seq().await?.filter(|f| *f > 1) {
        return Err(Error::Config(format!(
            "events up to {} were removed by retention; proofs need the log from its start",
            first - 1
        )));
    }
    let mut out = Vec::with_capacity(size as usize);
    let mut after = 0;
    while after < size {
        let chunk = db.hashes(after, size.min(after + 1_000_000)).await?;
        let Some(&(last, _)) = chunk.last() else {
            break;
        };
        for (seq, h) in chunk {
            if seq != out.len() as u64 + 1 {
                return Err(invalid(&format!("event {} is missing", out.len() + 1)));
            }
            out.push(h);
        }
        after = last;
    }
    if out.len() as u64 != size {
        return Err(invalid(&format!(
            "log has {} events, checkpoint says {size}",
            out.len()
        )));
    }
    Ok(out)
}

fn checkpoint_at(all: &[StoredCheckpoint], size: u64) -> Result<Checkpoint> {
    all.iter()
        .find(|c| c.checkpoint.tree_size == size)
        .map(|c| c.checkpoint.clone())
        .ok_or_else(|| Error::Config(format!("there is no checkpoint at tree size {size}")))
}

/// Proves event `seq` is in the log, against the first checkpoint that covers it.
pub async fn prove_inclusion(db: &Db, seq: u64) -> Result<InclusionProof> {
    let all = db.checkpoints().await?;
    let cp = all
        .iter()
        .map(|c| &c.checkpoint)
        .find(|c| c.tree_size >= seq && seq >= 1)
        .cloned()
        .ok_or_else(|| Error::Config(format!("no checkpoint covers event {seq} yet")))?;
    let leaves = leaves(db, cp.tree_size).await?;
    let index = (seq - 1) as usize;
    Ok(InclusionProof {
        seq,
        event_hash: leaves[index],
        path: merkle::inclusion_proof(index, &leaves),
        checkpoint: cp,
    })
}

/// Proves the log at checkpoint `new` (default: the latest) extends the one at `old`.
pub async fn prove_consistency(db: &Db, old: u64, new: Option<u64>) -> Result<ConsistencyProof> {
    let all = db.checkpoints().await?;
    let new_size = match new {
        Some(n) => n,
        None => all
            .last()
            .map(|c| c.checkpoint.tree_size)
            .ok_or_else(|| Error::Config("there are no checkpoints yet".into()))?,
    };
    if old > new_size {
        return Err(Error::Config(format!(
            "old size {old} is after new size {new_size}"
        )));
    }
    let old_cp = checkpoint_at(&all, old)?;
    let new_cp = checkpoint_at(&all, new_size)?;
    let leaves = leaves(db, new_size).await?;
    Ok(ConsistencyProof {
        path: merkle::consistency_proof(old as usize, &leaves),
        old: old_cp,
        new: new_cp,
    })
}

mod hex_hashes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[[u8; 32]], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(hex::encode))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<[u8; 32]>, D::Error> {
        Vec::<String>::deserialize(d)?
            .into_iter()
            .map(|s| {
                hex::decode(&s)
                    .ok()
                    .and_then(|v| v.try_into().ok())
                    .ok_or_else(|| serde::de::Error::custom("expected 32-byte hex hashes"))
            })
            .collect()
    }
}
