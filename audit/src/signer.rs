//! Who signs the log's statements (checkpoints, retention statements): a
//! [`CheckpointSigner`], one implementation per place the private key is kept. This crate
//! has the file key ([`crate::file_key`]); keys in an HSM or a vault are adapted by the crate
//! that talks to those backends, so this one knows nothing of PKCS#11 or Azure.
//!
//! [`SigningKey`] is the handle the writer and retention use: it checks every signature
//! against the key's public half before it is stored (a backend that signs with another key,
//! or garbles the signature, fails here rather than in a later `esm audit verify`), and it
//! signs off the async runtime when the backend may block.

use std::path::Path;
use std::sync::Arc;

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::file_key::FileKey;
use crate::merkle::Hash;
use crate::public_key::PublicKey;

/// A checkpoint key that can sign but whose private half need not be readable.
pub trait CheckpointSigner: Send + Sync {
    /// The public half, with its algorithm and id.
    fn public(&self) -> &PublicKey;
    /// Signs `message` as [`crate::public_key::Algorithm`] says for this key's algorithm.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>>;
    /// Where the private key is kept, for the audit log: at least `backend`, `key_id` and
    /// `algorithm`; a backend that can reads the key's protection back from where it lives.
    fn custody(&self) -> serde_json::Value;
    /// True when signing may wait on something outside the process (a token, a vault): the
    /// signature is then made on a blocking thread, never on an async worker.
    fn may_block(&self) -> bool {
        true
    }
}

/// The audit key as the writer holds it. Cheap to clone.
#[derive(Clone)]
pub struct SigningKey(Arc<dyn CheckpointSigner>);

impl SigningKey {
    pub fn new(signer: Arc<dyn CheckpointSigner>) -> Self {
        Self(signer)
    }

    /// The Ed25519 file key of `dir` (`checkpoint.key`), made on first use.
    pub fn load_or_create(dir: &Path) -> Result<Self> {
        Ok(Self::new(Arc::new(FileKey::load_or_create(dir)?)))
    }

    /// A key held only in memory, for tests and benchmarks.
    pub fn ephemeral() -> Result<Self> {
        Ok(Self::new(Arc::new(FileKey::ephemeral()?)))
    }

    pub fn public(&self) -> PublicKey {
        self.0.public().clone()
    }

    /// The key's id (its algorithm and a hash of its public half), recorded next to each
    /// signature.
    pub fn id(&self) -> &str {
        &self.0.public().id
    }

    pub fn custody(&self) -> serde_json::Value {
        self.0.custody()
    }

    /// Signs any statement of the log's; each kind of statement starts with its own first
    /// line, so one cannot pass for another. A signature that does not verify under the
    /// key's own public half is an error, never stored.
    pub(crate) fn sign_bytes(&self, message: &[u8]) -> Result<Vec<u8>> {
        let signature = self.0.sign(message)?;
        let public = self.0.public();
        if !public.verifies(&public.id, message, &signature) {
            return Err(Error::KeyBackend(format!(
                "the signature the key's backend returned does not verify under key {}",
                public.id
            )));
        }
        Ok(signature)
    }

    /// [`SigningKey::sign_bytes`] from async code: on a blocking thread when the backend may
    /// block, so that a slow HSM or vault never holds up an async worker.
    pub(crate) async fn sign_bytes_async(&self, message: Vec<u8>) -> Result<Vec<u8>> {
        if !self.0.may_block() {
            return self.sign_bytes(&message);
        }
        let key = self.clone();
        tokio::task::spawn_blocking(move || key.sign_bytes(&message))
            .await
            .map_err(|e| Error::Bug(format!("checkpoint signing thread: {e}")))?
    }

    /// A signed checkpoint. Blocks while the backend signs: async code uses
    /// [`SigningKey::sign_checkpoint`].
    pub fn sign(
        &self,
        tree_size: u64,
        root: Hash,
        last_hash: Hash,
        time_ns: i64,
    ) -> Result<Checkpoint> {
        let text = Checkpoint::signed_text(tree_size, &root, &last_hash, time_ns);
        let signature = self.sign_bytes(text.as_bytes())?;
        Ok(self.checkpoint(tree_size, root, last_hash, time_ns, signature))
    }

    /// [`SigningKey::sign`] from async code.
    pub async fn sign_checkpoint(
        &self,
        tree_size: u64,
        root: Hash,
        last_hash: Hash,
        time_ns: i64,
    ) -> Result<Checkpoint> {
        let text = Checkpoint::signed_text(tree_size, &root, &last_hash, time_ns);
        let signature = self.sign_bytes_async(text.into_bytes()).await?;
        Ok(self.checkpoint(tree_size, root, last_hash, time_ns, signature))
    }

    fn checkpoint(
        &self,
        tree_size: u64,
        root: Hash,
        last_hash: Hash,
        time_ns: i64,
        signature: Vec<u8>,
    ) -> Checkpoint {
        Checkpoint {
            tree_size,
            root,
            last_hash,
            time_ns,
            key_id: self.id().to_owned(),
            signature,
        }
    }
}
