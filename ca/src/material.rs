//! What the CA publishes: its state, the signing CA ready to sign, and the trust bundle, as
//! one value on one `watch` channel ([`crate::rotator`] sends it). The agent issues through
//! it and serves its bundle; the admin endpoints read its state. Nobody outside this crate
//! re-reads the CA's files to follow a rotation.

use std::sync::Arc;

use esm_identity::{TrustBundle, TrustDomain};
use time::OffsetDateTime;

use crate::error::Result;
use crate::issuer::{
    issue, issue_own, IssuancePolicy, IssuedSvid, OwnIdentity, SigningCa, SvidRequest,
};
use crate::state::CaState;
use crate::store::CaStore;

/// One published generation of the CA. Cheap to share: receivers hold an `Arc` of it.
pub struct CaMaterial {
    /// The state it was built from.
    pub state: CaState,
    pub trust_domain: TrustDomain,
    /// The active intermediate with its key loaded; shared with the previous generation when
    /// only the bundle changed, so a root being prepared does not reload a key from an HSM.
    pub signing: Arc<SigningCa>,
    /// The roots relying parties must trust, as built at publication.
    pub bundle: TrustBundle,
    /// The same roots as PEM: what SDS sends Envoy.
    pub bundle_pem: String,
}

impl CaMaterial {
    /// Builds the material of `state` at `now`, loading the signing key.
    pub fn load(store: &CaStore, state: &CaState, now: OffsetDateTime) -> Result<Self> {
        Self::build(store, state, now, None)
    }

    /// [`CaMaterial::load`], keeping `previous`'s signing CA when its intermediate is still
    /// the active one.
    pub fn next(
        store: &CaStore,
        state: &CaState,
        now: OffsetDateTime,
        previous: &CaMaterial,
    ) -> Result<Self> {
        Self::build(store, state, now, Some(previous))
    }

    fn build(
        store: &CaStore,
        state: &CaState,
        now: OffsetDateTime,
        previous: Option<&CaMaterial>,
    ) -> Result<Self> {
        let bundle = store.bundle(state, now)?;
        let active = state.active_intermediate().map(|a| a.id.as_str());
        let signing = match previous {
            Some(p)
                if Some(p.signing.id.as_str()) == active
                    && p.trust_domain == bundle.trust_domain =>
            {
                p.signing.clone()
            }
            _ => Arc::new(store.signing_ca(state)?),
        };
        Ok(Self {
            state: state.clone(),
            trust_domain: bundle.trust_domain.clone(),
            bundle_pem: bundle.to_pem(),
            bundle,
            signing,
        })
    }

    /// The roots, DER: what the Workload API sends.
    pub fn bundle_der(&self) -> &[Vec<u8>] {
        &self.bundle.roots_der
    }

    /// Issues a workload's SVID under this generation (see [`issue`]). Signing may block on a
    /// key backend (an HSM, a vault): call it off the async workers.
    pub fn issue(
        &self,
        policy: &IssuancePolicy,
        req: SvidRequest<'_>,
        now: OffsetDateTime,
    ) -> Result<IssuedSvid> {
        issue(&self.signing, policy, req, now)
    }

    /// Issues the SVID one of esm's own listeners presents (`spiffe://<td>/esm/agent`,
    /// `spiffe://<td>/esm/authz`). The one way to a reserved identity outside this crate: it
    /// takes published material, which only the CA makes, and names no SPIFFE ID a caller
    /// could choose.
    pub fn issue_own_svid(
        &self,
        policy: &IssuancePolicy,
        who: OwnIdentity,
        now: OffsetDateTime,
    ) -> Result<IssuedSvid> {
        issue_own(&self.signing, policy, who, now)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::key_backend::file::FileKeyStore;
    use crate::key_backend::KeyAlgorithm;
    use crate::rotation::{RotationPolicy, Step};
    use crate::store::InitOptions;

    fn store(dir: &std::path::Path) -> CaStore {
        let store = CaStore::new(
            dir.join("ca"),
            Arc::new(FileKeyStore::new(dir.join("ca/keys"), None)),
        );
        let init = InitOptions {
            trust_domain: TrustDomain::parse("example.org").unwrap(),
            algorithm: KeyAlgorithm::EcP256,
            upstream: None,
        };
        store
            .init(init, &RotationPolicy::default(), OffsetDateTime::now_utc())
            .unwrap();
        store
    }

    #[test]
    fn a_new_bundle_keeps_the_loaded_signing_ca_and_a_new_intermediate_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let now = OffsetDateTime::now_utc();
        let policy = RotationPolicy::default();
        let first = CaMaterial::load(&s, &s.load().unwrap(), now).unwrap();
        assert_eq!(first.bundle_der().len(), 1);

        let (state, _) = s.rotate(&policy, now, Some(Step::PrepareRoot)).unwrap();
        let second = CaMaterial::next(&s, &state, now, &first).unwrap();
        assert!(Arc::ptr_eq(&first.signing, &second.signing));
        assert_eq!(second.bundle_der().len(), 2);
        assert_ne!(first.bundle_pem, second.bundle_pem);

        let (state, _) = s.rotate(&policy, now, Some(Step::ActivateRoot)).unwrap();
        let third = CaMaterial::next(&s, &state, now, &second).unwrap();
        assert!(!Arc::ptr_eq(&second.signing, &third.signing));
        assert_ne!(second.signing.id, third.signing.id);
    }

    #[test]
    fn esms_own_svids_name_the_reserved_identity_of_each_listener() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let now = OffsetDateTime::now_utc();
        let m = CaMaterial::load(&s, &s.load().unwrap(), now).unwrap();
        let p = IssuancePolicy::default();
        let agent = m.issue_own_svid(&p, OwnIdentity::Agent, now).unwrap();
        assert_eq!(agent.spiffe_id.as_str(), "spiffe://example.org/esm/agent");
        let authz = m.issue_own_svid(&p, OwnIdentity::Authz, now).unwrap();
        assert_eq!(authz.spiffe_id.as_str(), "spiffe://example.org/esm/authz");
    }
}
