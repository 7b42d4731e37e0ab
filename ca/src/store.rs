//! The CA's files in the data dir, and the only code that changes them.
//!
//! Layout under `DIR/ca/`: `state.json` (roots, intermediates, statuses — no key bytes),
//! `keys/` (the file backend's keys), `serials.jsonl` (one line per issued SVID) and `lock`.
//! Every change takes an exclusive `flock` on `lock`, re-reads the state, and replaces
//! `state.json` atomically (write, fsync, rename, fsync dir), so several `esm` processes on
//! one data dir never lose or tear an update.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::issuer::{IssuedSvid, SigningCa};
use crate::key_backend::{KeyAlgorithm, KeyBackend, KeyStore};
use crate::rotation::{due_step, RotationPolicy, Step};
use crate::state::{Authority, AuthorityKind, CaState, Status, STATE_VERSION};
use esm_identity::bundle::TrustBundle;
use esm_identity::spiffe_id::TrustDomain;

/// An upstream CA to put the signing intermediates under instead of a self-made root.
pub struct Upstream {
    pub cert_der: Vec<u8>,
    pub key_pkcs8_der: Vec<u8>,
}

pub struct InitOptions {
    pub trust_domain: TrustDomain,
    pub algorithm: KeyAlgorithm,
    pub upstream: Option<Upstream>,
}

pub struct CaStore {
    dir: PathBuf,
    /// Where roots are made.
    keys: Arc<dyn KeyStore>,
    /// Where signing (intermediate) CAs are made: the same store unless configured apart.
    signing_keys: Arc<dyn KeyStore>,
}

/// Holds the data dir's lock until dropped.
struct Locked(File);

impl Drop for Locked {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

impl CaStore {
    /// `ca_dir` is `DIR/ca`; `keys` is the configured key backend.
    pub fn new(ca_dir: impl Into<PathBuf>, keys: Arc<dyn KeyStore>) -> Self {
        Self {
            dir: ca_dir.into(),
            signing_keys: keys.clone(),
            keys,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    fn lock(&self, exclusive: bool) -> Result<Locked> {
        create_private_dir(&self.dir)?;
        let path = self.dir.join("lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(Error::io(&path))?;
        if exclusive { f.lock() } else { f.lock_shared() }.map_err(Error::io(&path))?;
        Ok(Locked(f))
    }

    pub fn is_initialized(&self) -> bool {
        self.state_path().exists()
    }

    /// Makes the root (or takes in the upstream one) and the first intermediate.
    pub fn init(
        &self,
        opts: InitOptions,
        policy: &RotationPolicy,
        now: OffsetDateTime,
    ) -> Result<CaState> {
        let _lock = self.lock(true)?;
        if self.is_initialized() {
            return Err(Error::AlreadyInitialized(self.dir.clone()));
        }
        let td = opts.trust_domain;
        let policy = &RotationPolicy {
            key_algorithm: opts.algorithm,
            ..*policy
        };
        let mut state = CaState {
            version: STATE_VERSION,
            trust_domain: td.to_string(),
            algorithm: opts.algorithm,
            bundle_sequence: 1,
            authorities: Vec::new(),
            published: Vec::new(),
        };
        let root = match opts.upstream {
            None => self.new_root(&td, opts.algorithm, policy, now)?,
            Some(up) => self.import_upstream(up, now)?,
        };
        let root_id = root.id.clone();
        state.authorities.push(Authority {
            status: Status::Active,
            activated_at: Some(now),
            ..root
        });
        let int = self.new_intermediate(&state, &root_id, policy, now)?;
        state.authorities.push(Authority {
            status: Status::Active,
            activated_at: Some(now),
            ..int
        });
        state.published = published_ids(&state, now);
        state.check().map_err(Error::Bug)?;
        self.write_state(&state)?;
        tracing::info!(trust_domain = %td, ca.algorithm = %opts.algorithm, "CA initialised");
        Ok(state)
    }

    /// Reads the state; refuses a damaged one.
    pub fn load(&self) -> Result<CaState> {
        let _lock = self.lock(false)?;
        self.read_state()
    }

    fn read_state(&self) -> Result<CaState> {
        let path = self.state_path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotInitialized(
                    self.dir.parent().unwrap_or(&self.dir).to_path_buf(),
                ))
            }
            Err(e) => return Err(Error::io(&path)(e)),
        };
        let state: CaState = serde_json::from_slice(&bytes).map_err(|e| Error::CorruptState {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        state
            .check()
            .map_err(|reason| Error::CorruptState { path, reason })?;
        Ok(state)
    }

    fn write_state(&self, state: &CaState) -> Result<()> {
        let path = self.state_path();
        let json = serde_json::to_vec_pretty(state).map_err(|e| Error::Bug(e.to_string()))?;
        esm_audit::durable_file::replace(&path, &json, 0o600).map_err(Error::io(&path))
    }

    fn load_key(&self, a: &Authority) -> Result<Arc<dyn KeyBackend>> {
        self.store_for(a)?.load(&a.key_id, a.algorithm)
    }

    /// The active intermediate, ready to sign.
    pub fn signing_ca(&self, state: &CaState) -> Result<SigningCa> {
        let a = state
            .active_intermediate()
            .ok_or_else(|| Error::Bug("no active intermediate".into()))?;
        SigningCa::new(
            a.id.clone(),
            TrustDomain::parse(&state.trust_domain)?,
            cert_der(a)?,
            a.not_after,
            self.load_key(a)?,
        )
    }

    /// The roots relying parties must trust at `now`.
    pub fn bundle(&self, state: &CaState, now: OffsetDateTime) -> Result<TrustBundle> {
        Ok(TrustBundle {
            trust_domain: TrustDomain::parse(&state.trust_domain)?,
            sequence: state.bundle_sequence,
            refresh_hint_secs: 300,
            roots_der: state
                .published_roots(now)
                .into_iter()
                .map(cert_der)
                .collect::<Result<_>>()?,
        })
    }

    /// Applies every rotation step due at `now` (or just `force`, due or not) under the
    /// lock; returns what was done.
    pub fn rotate(
        &self,
        policy: &RotationPolicy,
        now: OffsetDateTime,
        force: Option<Step>,
    ) -> Result<(CaState, Vec<Step>)> {
        let _lock = self.lock(true)?;
        let mut state = self.read_state()?;
        let mut done = Vec::new();
        state.algorithm = policy.key_algorithm;
        if let Some(step) = force {
            self.apply(&mut state, step, policy, now)?;
            done.push(step);
        } else {
            // Bounded: each step changes what is due; four covers a full root + intermediate
            // rotation that was overdue while nothing ran.
            while let Some(step) = due_step(&state, now, policy) {
                if done.len() >= 4 {
                    break;
                }
                self.apply(&mut state, step, policy, now)?;
                done.push(step);
            }
        }
        let published = published_ids(&state, now);
        let bundle_changed = published != state.published;
        if bundle_changed {
            state.published = published;
            state.bundle_sequence += 1;
        }
        if !done.is_empty() || bundle_changed {
            state.check().map_err(Error::Bug)?;
            self.write_state(&state)?;
        }
        Ok((state, done))
    }

    fn apply(
        &self,
        state: &mut CaState,
        step: Step,
        policy: &RotationPolicy,
        now: OffsetDateTime,
    ) -> Result<()> {
        let refuse = |m: &str| Err(Error::Refused(m.to_owned()));
        match step {
            Step::PrepareIntermediate => {
                if state.prepared_intermediate().is_some() {
                    return refuse("an intermediate is already prepared; activate it first");
                }
                let root = state.active_root().map(|r| r.id.clone());
                let root = root.ok_or_else(|| Error::Bug("no active root".into()))?;
                let int = self.new_intermediate(state, &root, policy, now)?;
                tracing::info!(ca.id = %int.id, "prepared a new intermediate signing CA");
                state.authorities.push(int);
            }
            Step::ActivateIntermediate => {
                let Some(next) = state.prepared_intermediate().map(|a| a.id.clone()) else {
                    return refuse("no prepared intermediate to activate");
                };
                retire_active(state, AuthorityKind::Intermediate, now);
                activate(state, &next, now);
                tracing::info!(ca.id = %next, "activated intermediate signing CA");
            }
            Step::PrepareRoot => {
                if state.prepared_root().is_some() {
                    return refuse("a root is already prepared; activate it first");
                }
                let td = TrustDomain::parse(&state.trust_domain)?;
                let root = self.new_root(&td, policy.key_algorithm, policy, now)?;
                tracing::info!(ca.id = %root.id, "prepared a new root; published in the bundle");
                state.authorities.push(root);
            }
            Step::ActivateRoot => {
                let Some(next) = state.prepared_root().map(|a| a.id.clone()) else {
                    return refuse("no prepared root to activate");
                };
                // A prepared intermediate under the old root never signed; retire it with it.
                if let Some(p) = state.prepared_intermediate().map(|a| a.id.clone()) {
                    if let Some(a) = state.get_mut(&p) {
                        a.status = Status::Retired;
                        a.retired_at = Some(now);
                    }
                }
                let int = self.new_intermediate(state, &next, policy, now)?;
                retire_active(state, AuthorityKind::Root, now);
                retire_active(state, AuthorityKind::Intermediate, now);
                activate(state, &next, now);
                let int_id = int.id.clone();
                state.authorities.push(int);
                activate(state, &int_id, now);
                tracing::info!(ca.id = %next, "activated new root and its first intermediate");
            }
        }
        Ok(())
    }

    /// Appends an issued SVID to the serial log (not its key).
    pub fn record_issued(&self, svid: &IssuedSvid, now: OffsetDateTime) -> Result<()> {
        let _lock = self.lock(true)?;
        let path = self.dir.join("serials.jsonl");
        let line = serde_json::json!({
            "serial": svid.serial_hex,
            "spiffe_id": svid.spiffe_id.as_str(),
            "not_before": crate::rfc3339(svid.not_before),
            "not_after": crate::rfc3339(svid.not_after),
            "signed_by": svid.signed_by,
            "issued_at": crate::rfc3339(now),
        });
        // A line cut short by a full disk is taken back, so the next starts clean.
        esm_audit::durable_file::append(&path, format!("{line}\n").as_bytes(), 0o600)
            .map_err(Error::io(&path))
    }
}

fn published_ids(state: &CaState, now: OffsetDateTime) -> Vec<String> {
    state
        .published_roots(now)
        .iter()
        .map(|a| a.id.clone())
        .collect()
}

fn retire_active(state: &mut CaState, kind: AuthorityKind, now: OffsetDateTime) {
    for a in &mut state.authorities {
        if a.kind == kind && a.status == Status::Active {
            a.status = Status::Retired;
            a.retired_at = Some(now);
        }
    }
}

fn activate(state: &mut CaState, id: &str, now: OffsetDateTime) {
    if let Some(a) = state.get_mut(id) {
        a.status = Status::Active;
        a.activated_at = Some(now);
    }
}

/// The DER of an authority's certificate as stored.
pub fn cert_der(a: &Authority) -> Result<Vec<u8>> {
    esm_identity::pem::decode(&a.cert_pem)
        .map(|(_, der)| der)
        .map_err(|e| Error::CorruptState {
            path: PathBuf::from("state.json"),
            reason: format!("certificate of {}: {e}", a.id),
        })
}

/// Creates `dir` (and its parents) readable by the owner only: it holds CA keys and state.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir).map_err(Error::io(dir))
}

#[path = "store_mint.rs"]
mod mint;
pub(crate) use mint::new_id;

#[path = "store_keys.rs"]
mod keys;
