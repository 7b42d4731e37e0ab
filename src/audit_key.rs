//! The audit checkpoint key of a data dir, wherever `audit.key_backend` keeps it.
//!
//! `file`: the Ed25519 key `audit/checkpoint.key`. `pkcs11` / `azure-key-vault`: a key made in
//! the token or vault of `[ca.pkcs11]` / `[ca.azure_key_vault]` the first time the log needs
//! one (at `esm init`); the data dir keeps only public material: `audit/checkpoint.pub` and
//! `audit/checkpoint-key.json`, which names the key in its backend. Verifying needs neither
//! the token nor the vault.
//!
//! A log keeps the key it was made with: its checkpoints verify under that one key, so a
//! changed `audit.key_backend` is refused rather than silently starting a second key.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use esm_audit::checkpoint::{load_public, Algorithm, CheckpointSigner, SigningKey};
use esm_audit::file_key::{write_new, KEY_FILE, PUBLIC_FILE};
use esm_ca::key_backend::checkpoint_key::{new_key_name, BackendCheckpointKey, CheckpointKeys};
use serde::{Deserialize, Serialize};

use crate::exit::usage;
use esm_config::key_backends::KeyBackendKind;
use esm_config::Config;

/// The file naming a checkpoint key held in a token or vault.
pub const REF_FILE: &str = "checkpoint-key.json";

/// What `audit/checkpoint-key.json` holds: public facts only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyRef {
    /// `pkcs11` or `azure-key-vault`.
    backend: String,
    /// The key's name in the token, or `NAME/VERSION` in the vault.
    backend_key_id: String,
    /// `ed25519` or `ecdsa-p256-sha256`.
    algorithm: String,
    /// The key id checkpoints carry (`ed25519:…`, `p256:…`).
    key_id: String,
}

fn read_ref(dir: &Path) -> anyhow::Result<Option<KeyRef>> {
    let path = dir.join(REF_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let text = crate::commands::read_text("", &path, 4096)?;
    serde_json::from_str(&text)
        .map(Some)
        .with_context(|| format!("{}: not a checkpoint key reference", path.display()))
}

/// The token or vault the audit key is configured in.
fn keys(
    cfg: &Config,
    env: &BTreeMap<String, String>,
    kind: KeyBackendKind,
) -> anyhow::Result<Arc<CheckpointKeys>> {
    Ok(Arc::new(match kind {
        KeyBackendKind::Pkcs11 => CheckpointKeys::Pkcs11(crate::commands::pkcs11_store(cfg, env)?),
        KeyBackendKind::AzureKeyVault => {
            CheckpointKeys::AzureKeyVault(crate::commands::azure_key_vault(cfg, env)?)
        }
        KeyBackendKind::File => anyhow::bail!("the file audit key has no key store"),
    }))
}

/// Reaches the audit key's backend now (login, vault access): `esm init` fails before it
/// writes anything.
pub fn check(cfg: &Config, env: &BTreeMap<String, String>) -> anyhow::Result<()> {
    match cfg.ca.key_backends.audit {
        KeyBackendKind::File => Ok(()),
        kind => Ok(keys(cfg, env, kind)?.check()?),
    }
}

/// The data dir's checkpoint key, made in the configured backend on first use. Blocks on
/// the token or vault: async callers open it on a blocking thread.
pub fn open(cfg: &Config, env: &BTreeMap<String, String>) -> anyhow::Result<SigningKey> {
    let dir = cfg.audit_dir();
    let kind = cfg.ca.key_backends.audit;
    let reference = read_ref(&dir)?;
    if kind == KeyBackendKind::File {
        if let Some(r) = reference {
            return Err(usage(format!(
                "this audit log's checkpoint key {} is in {} ({}); audit.key_backend = \"file\" cannot sign for it",
                r.key_id, r.backend, r.backend_key_id
            )));
        }
        return Ok(SigningKey::load_or_create(&dir)?);
    }
    let keys = keys(cfg, env, kind)?;
    let key = match reference {
        Some(r) => load(&dir, &keys, kind, &r)?,
        None => create(&dir, &keys, kind)?,
    };
    Ok(SigningKey::new(Arc::new(key)))
}

fn load(
    dir: &Path,
    keys: &Arc<CheckpointKeys>,
    kind: KeyBackendKind,
    r: &KeyRef,
) -> anyhow::Result<BackendCheckpointKey> {
    if r.backend != kind.name() {
        return Err(usage(format!(
            "this audit log's checkpoint key {} is in {}, but audit.key_backend = {:?}",
            r.key_id,
            r.backend,
            kind.name()
        )));
    }
    let alg = Algorithm::parse(&r.algorithm).with_context(|| {
        format!(
            "{}: unknown algorithm {:?}",
            dir.join(REF_FILE).display(),
            r.algorithm
        )
    })?;
    let key = keys.load(&r.backend_key_id, alg)?;
    let recorded = load_public(dir)?;
    if &recorded != key.public() || recorded.id != r.key_id {
        anyhow::bail!(
            "{} ({}) is not the public half of checkpoint key {} in {}: the file was replaced, or the {} holds another key under that name",
            dir.join(PUBLIC_FILE).display(),
            recorded.id,
            key.public().id,
            r.backend_key_id,
            r.backend
        );
    }
    Ok(key)
}

/// Makes the key and records it: the public half first, the reference last, so a reference
/// always names a key whose public half is on disk.
fn create(
    dir: &Path,
    keys: &Arc<CheckpointKeys>,
    kind: KeyBackendKind,
) -> anyhow::Result<BackendCheckpointKey> {
    if dir.join(KEY_FILE).exists() {
        return Err(usage(format!(
            "this audit log is signed by the file key {}; a log's checkpoint key cannot move to {} \
             (its checkpoints would no longer verify under one key): keep audit.key_backend = \"file\", \
             or start a new data dir with `esm init --audit-key-backend {}`",
            dir.join(KEY_FILE).display(),
            kind.name(),
            kind.name()
        )));
    }
    if dir.join(PUBLIC_FILE).exists() {
        return Err(usage(format!(
            "{} exists but {} names no key: restore {} (or the data dir) from a backup",
            dir.join(PUBLIC_FILE).display(),
            REF_FILE,
            REF_FILE
        )));
    }
    let key = keys.generate(&new_key_name(time::OffsetDateTime::now_utc())?)?;
    let public = key.public().clone();
    write_new(&dir.join(PUBLIC_FILE), public.to_text().as_bytes(), 0o644)?;
    let r = KeyRef {
        backend: kind.name().to_owned(),
        backend_key_id: key.backend_key_id().to_owned(),
        algorithm: public.algorithm.name().to_owned(),
        key_id: public.id.clone(),
    };
    let text = serde_json::to_string_pretty(&r)? + "\n";
    write_new(&dir.join(REF_FILE), text.as_bytes(), 0o644)?;
    tracing::info!(audit.key_id = %public.id, key.backend = kind.name(), key.backend_id = key.backend_key_id(), "audit checkpoint key made");
    Ok(key)
}

/// `esm ca show`'s line for the audit key: where it is and which it is, from public files.
pub fn describe(cfg: &Config) -> String {
    let dir = cfg.audit_dir();
    let id = load_public(&dir).ok().map(|k| k.id);
    let place = match read_ref(&dir).ok().flatten() {
        Some(r) => format!("{} {}", r.backend, r.backend_key_id),
        None => match cfg.ca.key_backends.audit {
            KeyBackendKind::File => format!("file ({})", dir.join(KEY_FILE).display()),
            other => other.name().to_owned(),
        },
    };
    match id {
        Some(id) => format!("audit key     {place} ({id})"),
        None => format!("audit key     {place}"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_key_reference_round_trips_and_refuses_unknown_fields() {
        let r = KeyRef {
            backend: "pkcs11".into(),
            backend_key_id: "audit-checkpoint-1-ab".into(),
            algorithm: "ed25519".into(),
            key_id: "ed25519:0011223344556677".into(),
        };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<KeyRef>(&text).unwrap(), r);
        let extra = text.replace('}', r#","private_key":"x"}"#);
        assert!(serde_json::from_str::<KeyRef>(&extra).is_err());
    }

    #[test]
    fn a_file_log_refuses_a_reference_to_a_backend_key() {
        let d = tempfile::tempdir().unwrap();
        let text = esm_config::default_toml(
            &esm_identity::TrustDomain::parse("example.org").unwrap(),
            esm_ca::key_backend::KeyAlgorithm::EcP256,
            "file",
            "file",
        );
        let cfg = Config::parse(&text, d.path().to_owned(), &BTreeMap::new()).unwrap();
        let dir = cfg.audit_dir();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(REF_FILE),
            r#"{"backend":"pkcs11","backend_key_id":"k","algorithm":"ed25519","key_id":"ed25519:00"}"#,
        )
        .unwrap();
        let e = open(&cfg, &BTreeMap::new()).err().unwrap().to_string();
        assert!(e.contains("cannot sign for it"), "{e}");
        assert!(!dir.join(KEY_FILE).exists());
    }
}
