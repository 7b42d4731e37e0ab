//! Where the writer picks the log up: the tail event (or the retention anchor), the Merkle
//! frontier rebuilt from the latest checkpoint, and the one key the log verifies under.

use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::hash_chain::GENESIS;
use crate::merkle::{Frontier, Hash};
use crate::store::WriteTx;

/// The end of the log as the writer extends it.
pub(crate) struct Chain {
    pub(crate) seq: u64,
    pub(crate) hash: Hash,
    pub(crate) frontier: Frontier,
    pub(crate) since_checkpoint: u64,
    pub(crate) last_checkpoint: Instant,
    /// When the newest signed checkpoint was made (Unix ns), 0 with none yet.
    pub(crate) last_checkpoint_ns: i64,
}

/// The newest event, or — when retention removed every event — the checkpoint it kept,
/// whose `last_hash` the chain continues from.
pub(crate) fn tail_or_anchor(
    tail: Option<(u64, Hash)>,
    latest: Option<&crate::store::StoredCheckpoint>,
) -> (u64, Hash) {
    match (tail, latest) {
        (Some(t), _) => t,
        (None, Some(cp)) => (cp.checkpoint.tree_size, cp.checkpoint.last_hash),
        (None, None) => (0, GENESIS),
    }
}

/// Reads the tail and rebuilds the Merkle frontier from the latest checkpoint, refusing a
/// signing key other than the one that checkpoint was signed with.
pub(crate) async fn load_chain(tx: &mut WriteTx, key_id: &str) -> Result<Chain> {
    let latest = tx.latest_checkpoint().await?;
    same_key(latest.as_ref(), key_id)?;
    let (seq, hash) = tail_or_anchor(tx.tail().await?, latest.as_ref());
    let last_checkpoint_ns = latest.as_ref().map_or(0, |cp| cp.checkpoint.time_ns);
    let (base, mut frontier) = match latest {
        Some(cp) => {
            let f =
                Frontier::from_bytes(cp.checkpoint.tree_size, &cp.frontier).ok_or_else(|| {
                    Error::Tampered(crate::Tampered {
                        seq: cp.checkpoint.tree_size,
                        reason: "checkpoint frontier is malformed".into(),
                    })
                })?;
            (cp.checkpoint.tree_size, f)
        }
        None => (0, Frontier::default()),
    };
    for h in tx.hashes_after(base).await? {
        frontier.push(&h);
    }
    if frontier.size() != seq {
        return Err(Error::Tampered(crate::Tampered {
            seq: frontier.size() + 1,
            reason: format!("log ends at {seq} but its events count {}", frontier.size()),
        }));
    }
    Ok(Chain {
        seq,
        hash,
        since_checkpoint: seq - base,
        frontier,
        last_checkpoint: Instant::now(),
        last_checkpoint_ns,
    })
}

/// A log verifies under the one key it was made with. A writer started with another (the
/// key file deleted and remade, a key swapped in a token) would append checkpoints that
/// only fail when someone next verifies; it is refused before anything is written.
fn same_key(latest: Option<&crate::store::StoredCheckpoint>, key_id: &str) -> Result<()> {
    match latest {
        Some(cp) if cp.checkpoint.key_id != key_id => Err(Error::Config(format!(
            "this audit log is signed by checkpoint key {} (checkpoint {}), but the key \
             configured is {key_id}: restore the log's key; a log cannot change keys",
            cp.checkpoint.key_id, cp.checkpoint.tree_size
        ))),
        _ => Ok(()),
    }
}
