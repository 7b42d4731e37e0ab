//! The CA's persistent state: which roots and intermediates exist, where their keys are, and
//! which one signs. Pure data with pure queries; `store` reads and writes it.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::key_backend::KeyAlgorithm;

pub const STATE_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthorityKind {
    /// A self-signed root made by esm, or imported with `--upstream-cert/--upstream-key`.
    Root,
    /// A signing CA under a root; the only kind that signs SVIDs.
    Intermediate,
}

/// SPIRE's life cycle: prepared (published, not yet signing) → active → retired (kept
/// published until everything it signed has expired, then pruned).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Prepared,
    Active,
    Retired,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authority {
    pub id: String,
    pub kind: AuthorityKind,
    pub status: Status,
    /// The root an intermediate chains to.
    pub parent: Option<String>,
    pub key_backend: String,
    pub key_id: String,
    pub algorithm: KeyAlgorithm,
    pub cert_pem: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub activated_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub retired_at: Option<OffsetDateTime>,
    /// True for a root imported from an upstream CA: esm never rotates it itself.
    #[serde(default)]
    pub upstream: bool,
}

impl Authority {
    pub fn lifetime(&self) -> time::Duration {
        self.not_after - self.not_before
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaState {
    pub version: u32,
    pub trust_domain: String,
    pub algorithm: KeyAlgorithm,
    /// Bumped whenever the set of published roots changes; the SPIFFE bundle's
    /// `spiffe_sequence`.
    pub bundle_sequence: u64,
    pub authorities: Vec<Authority>,
    /// The root ids last published, to notice when the set changes.
    #[serde(default)]
    pub published: Vec<String>,
}

impl CaState {
    pub fn get(&self, id: &str) -> Option<&Authority> {
        self.authorities.iter().find(|a| a.id == id)
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut Authority> {
        self.authorities.iter_mut().find(|a| a.id == id)
    }

    fn find(&self, kind: AuthorityKind, status: Status) -> Option<&Authority> {
        self.authorities
            .iter()
            .find(|a| a.kind == kind && a.status == status)
    }

    pub fn active_root(&self) -> Option<&Authority> {
        self.find(AuthorityKind::Root, Status::Active)
    }

    pub fn prepared_root(&self) -> Option<&Authority> {
        self.find(AuthorityKind::Root, Status::Prepared)
    }

    /// The intermediate that signs SVIDs now.
    pub fn active_intermediate(&self) -> Option<&Authority> {
        self.find(AuthorityKind::Intermediate, Status::Active)
    }

    /// A prepared intermediate; under the prepared root during a root rotation.
    pub fn prepared_intermediate(&self) -> Option<&Authority> {
        self.find(AuthorityKind::Intermediate, Status::Prepared)
    }

    /// The roots relying parties must trust now: every root that is prepared, active, or
    /// retired but still the anchor of an unexpired intermediate.
    pub fn published_roots(&self, now: OffsetDateTime) -> Vec<&Authority> {
        self.authorities
            .iter()
            .filter(|a| a.kind == AuthorityKind::Root && a.not_after > now)
            .filter(|a| a.status != Status::Retired || self.has_live_children(&a.id, now))
            .collect()
    }

    fn has_live_children(&self, root_id: &str, now: OffsetDateTime) -> bool {
        self.authorities
            .iter()
            .any(|c| c.parent.as_deref() == Some(root_id) && c.not_after > now)
    }

    /// Checks the invariants every stored state must hold, so a hand-edited or damaged file
    /// is refused instead of signing with the wrong key.
    pub fn check(&self) -> Result<(), String> {
        if self.version != STATE_VERSION {
            return Err(format!("unsupported state version {}", self.version));
        }
        esm_identity::spiffe_id::TrustDomain::parse(&self.trust_domain)
            .map_err(|e| e.to_string())?;
        for (kind, status) in [
            (AuthorityKind::Root, Status::Active),
            (AuthorityKind::Intermediate, Status::Active),
            (AuthorityKind::Root, Status::Prepared),
            (AuthorityKind::Intermediate, Status::Prepared),
        ] {
            let n = self
                .authorities
                .iter()
                .filter(|a| a.kind == kind && a.status == status)
                .count();
            if n > 1 {
                return Err(format!("{n} authorities are {kind:?}/{status:?}"));
            }
        }
        let root = self.active_root().ok_or("no active root")?;
        let int = self.active_intermediate().ok_or("no active intermediate")?;
        if int.parent.as_deref() != Some(root.id.as_str()) {
            return Err("the active intermediate is not under the active root".into());
        }
        for a in &self.authorities {
            if a.kind == AuthorityKind::Intermediate
                && a.parent.as_deref().and_then(|p| self.get(p)).is_none()
            {
                return Err(format!("intermediate {} has no root", a.id));
            }
        }
        Ok(())
    }
}
