//! Making new CA authorities: a self-made root, an intermediate signed by a root, or an
//! upstream CA imported as the root. Each gets a fresh key from the store that will hold it
//! and starts `Prepared`; `apply` in `store.rs` decides when it becomes active.

use std::sync::Arc;

use time::{Duration, OffsetDateTime};

use super::{cert_der, CaStore, Upstream};
use crate::authority::{make_intermediate, make_root, NewCaCert};
use crate::error::{Error, Result};
use crate::issuer::hex;
use crate::key_backend::{spki_der, KeyAlgorithm, KeyBackend};
use crate::rotation::RotationPolicy;
use crate::state::{Authority, AuthorityKind, CaState, Status};
use esm_identity::spiffe_id::TrustDomain;

impl CaStore {
    pub(super) fn new_root(
        &self,
        td: &TrustDomain,
        alg: KeyAlgorithm,
        policy: &RotationPolicy,
        now: OffsetDateTime,
    ) -> Result<Authority> {
        let id = new_id("root", now)?;
        let key = self.keys.generate(&id, alg)?;
        let cert = make_root(td, &key, now, policy.root_ttl)?;
        Ok(self.authority(id, AuthorityKind::Root, None, &key, cert))
    }

    pub(super) fn new_intermediate(
        &self,
        state: &CaState,
        root_id: &str,
        policy: &RotationPolicy,
        now: OffsetDateTime,
    ) -> Result<Authority> {
        let root = state
            .get(root_id)
            .ok_or_else(|| Error::Bug(format!("no root {root_id}")))?;
        // Capped by a root about to expire, an intermediate would be too short-lived to use.
        if root.not_after - now < policy.intermediate_ttl.min(Duration::minutes(10)) {
            return Err(Error::Refused(format!(
                "root {root_id} expires at {}: too soon to sign a new intermediate",
                crate::rfc3339(root.not_after)
            )));
        }
        let td = TrustDomain::parse(&state.trust_domain)?;
        let id = new_id("int", now)?;
        let key = self.signing_keys.generate(&id, policy.key_algorithm)?;
        let root_key = self.load_key(root)?;
        let cert = make_intermediate(
            &td,
            &key,
            &cert_der(root)?,
            &root_key,
            root.not_after,
            now,
            policy.intermediate_ttl,
        )?;
        Ok(self.authority(id, AuthorityKind::Intermediate, Some(root_id), &key, cert))
    }

    pub(super) fn authority(
        &self,
        id: String,
        kind: AuthorityKind,
        parent: Option<&str>,
        key: &Arc<dyn KeyBackend>,
        cert: NewCaCert,
    ) -> Authority {
        Authority {
            id,
            kind,
            status: Status::Prepared,
            parent: parent.map(str::to_owned),
            key_backend: match kind {
                AuthorityKind::Root => self.keys.backend_name(),
                AuthorityKind::Intermediate => self.signing_keys.backend_name(),
            }
            .to_owned(),
            key_id: key.key_id().to_owned(),
            algorithm: key.algorithm(),
            cert_pem: esm_identity::pem::encode("CERTIFICATE", &cert.der),
            not_before: cert.not_before,
            not_after: cert.not_after,
            activated_at: None,
            retired_at: None,
            upstream: false,
        }
    }

    pub(super) fn import_upstream(&self, up: Upstream, now: OffsetDateTime) -> Result<Authority> {
        use x509_parser::prelude::{FromDer, X509Certificate};
        let bad = |m: String| Error::Config(format!("upstream CA: {m}"));
        let (_, cert) = X509Certificate::from_der(&up.cert_der)
            .map_err(|e| bad(format!("certificate does not parse: {e}")))?;
        if !cert.is_ca() {
            return Err(bad(
                "certificate is not a CA (basicConstraints CA:false)".into()
            ));
        }
        let not_before = cert.validity().not_before.to_datetime();
        let not_after = cert.validity().not_after.to_datetime();
        if not_after <= now {
            return Err(bad(format!("certificate expired at {not_after}")));
        }
        let id = new_id("root", now)?;
        let key = self.keys.import_pkcs8(&id, &up.key_pkcs8_der)?;
        if spki_der(&key) != cert.public_key().raw {
            return Err(bad("the key does not belong to the certificate".into()));
        }
        Ok(Authority {
            upstream: true,
            not_before,
            not_after,
            ..self.authority(
                id,
                AuthorityKind::Root,
                None,
                &key,
                NewCaCert {
                    der: up.cert_der.clone(),
                    not_before,
                    not_after,
                },
            )
        })
    }
}

pub(crate) fn new_id(prefix: &str, now: OffsetDateTime) -> Result<String> {
    let mut r = [0u8; 3];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut r)
        .map_err(|_| Error::Bug("system random number generator failed".into()))?;
    let ts = now.unix_timestamp();
    Ok(format!("{prefix}-{ts}-{}", hex(&r)))
}
