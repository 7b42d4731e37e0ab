//! Who is on the other end of an mTLS connection: the SPIFFE ID of its client certificate,
//! the SPIFFE IDs a listener admits, and what each listener refused, for `/metrics`.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use esm_identity::{SpiffeId, TrustDomain};
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};

/// The one URI SAN of a client certificate, as a SPIFFE ID; `None` for anything else.
pub fn peer_spiffe_id(cert: &[u8]) -> Option<SpiffeId> {
    let (_, cert) = X509Certificate::from_der(cert).ok()?;
    let mut uris = cert
        .extensions()
        .iter()
        .filter_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => Some(
                san.general_names
                    .iter()
                    .filter_map(|g| match g {
                        GeneralName::URI(u) => Some(u.to_string()),
                        _ => None,
                    })
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        });
    let all: Vec<String> = uris.next()?;
    match all.as_slice() {
        [one] => SpiffeId::parse(one).ok(),
        _ => None,
    }
}

/// What tonic sees of a TLS connection: the peer's SPIFFE ID.
#[derive(Debug, Clone)]
pub struct PeerSpiffeId(pub Option<SpiffeId>);

/// The SPIFFE IDs a listener admits in the handshake, among the SVIDs of its trust domain:
/// those listed, or every one when the list is empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedPeers {
    ids: BTreeSet<SpiffeId>,
}

impl AllowedPeers {
    /// Exactly `ids`; none means any SVID of the trust domain.
    pub fn new(ids: impl IntoIterator<Item = SpiffeId>) -> Self {
        Self {
            ids: ids.into_iter().collect(),
        }
    }

    /// Whether a client certificate naming `id` (`None`: not exactly one SPIFFE ID) is
    /// admitted by a listener of `trust_domain`.
    pub fn admits(&self, id: Option<&SpiffeId>, trust_domain: &TrustDomain) -> bool {
        match id {
            Some(id) if id.trust_domain() == trust_domain => {
                self.ids.is_empty() || self.ids.contains(id)
            }
            _ => false,
        }
    }
}

/// One listener's refusals.
#[derive(Debug, Default)]
pub struct Refusals {
    /// Handshakes that did not complete: no certificate, one that does not chain to the
    /// bundle, a client that does not speak TLS, or too slow; and the peers below.
    handshakes_failed: AtomicU64,
    /// Valid SVIDs whose SPIFFE ID the listener does not admit (a subset of the above).
    peers_refused: AtomicU64,
}

/// A copy of one listener's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RefusalCounts {
    pub handshakes_failed: u64,
    pub peers_refused: u64,
}

impl Refusals {
    pub(crate) fn handshake_failed(&self) {
        self.handshakes_failed.fetch_add(1, Relaxed);
    }

    pub(crate) fn peer_refused(&self) {
        self.peers_refused.fetch_add(1, Relaxed);
    }

    pub fn counts(&self) -> RefusalCounts {
        RefusalCounts {
            handshakes_failed: self.handshakes_failed.load(Relaxed),
            peers_refused: self.peers_refused.load(Relaxed),
        }
    }
}

/// Every live mTLS listener's counters, by name: the listeners start deep in the servers
/// and `/metrics` is elsewhere, so they meet here (as the bounded listeners' counters do).
static REGISTRY: Mutex<Vec<(&'static str, Weak<Refusals>)>> = Mutex::new(Vec::new());

/// Counters for a new listener named `name`, listed by [`refusal_counts`] while it lives.
pub(crate) fn register(name: &'static str) -> Arc<Refusals> {
    let r = Arc::new(Refusals::default());
    let mut all = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
    all.retain(|(_, m)| m.strong_count() > 0);
    all.push((name, Arc::downgrade(&r)));
    r
}

/// The counters of every live mTLS listener, summed by name.
pub fn refusal_counts() -> Vec<(&'static str, RefusalCounts)> {
    let all = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
    let mut out: Vec<(&'static str, RefusalCounts)> = Vec::new();
    for (name, r) in all.iter() {
        let Some(r) = r.upgrade() else { continue };
        let c = r.counts();
        match out.iter_mut().find(|(n, _)| n == name) {
            Some((_, sum)) => {
                sum.handshakes_failed += c.handshakes_failed;
                sum.peers_refused += c.peers_refused;
            }
            None => out.push((name, c)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn cert_with(uris: &[&str]) -> Vec<u8> {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.subject_alt_names = uris
            .iter()
            .map(|u| rcgen::SanType::URI((*u).try_into().unwrap()))
            .collect();
        p.self_signed(&kp).unwrap().der().to_vec()
    }

    #[test]
    fn a_client_certificate_names_exactly_one_spiffe_id() {
        let one = cert_with(&["spiffe://example.org/a"]);
        assert_eq!(
            peer_spiffe_id(&one).unwrap().as_str(),
            "spiffe://example.org/a"
        );
        assert!(peer_spiffe_id(&cert_with(&[])).is_none());
        assert!(peer_spiffe_id(&cert_with(&[
            "spiffe://example.org/a",
            "spiffe://example.org/b"
        ]))
        .is_none());
        assert!(peer_spiffe_id(&cert_with(&["https://example.org/a"])).is_none());
        assert!(peer_spiffe_id(b"garbage").is_none());
    }

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap()
    }

    #[test]
    fn a_listed_spiffe_id_is_admitted_and_every_other_refused() {
        let td = TrustDomain::parse("example.org").unwrap();
        let envoy = id("spiffe://example.org/ns/edge/sa/envoy");
        let allowed = AllowedPeers::new([envoy.clone()]);
        assert!(allowed.admits(Some(&envoy), &td));
        assert!(!allowed.admits(Some(&id("spiffe://example.org/ns/edge/sa/other")), &td));
        // A prefix of an allowed ID, or the trust domain's own ID, is another ID.
        assert!(!allowed.admits(Some(&id("spiffe://example.org/ns/edge/sa")), &td));
        assert!(!allowed.admits(Some(&id("spiffe://example.org")), &td));
        assert!(!allowed.admits(None, &td));
    }

    #[test]
    fn an_empty_list_admits_every_svid_of_the_trust_domain_and_no_other() {
        let td = TrustDomain::parse("example.org").unwrap();
        let any = AllowedPeers::default();
        assert!(any.admits(Some(&id("spiffe://example.org/anything")), &td));
        assert!(!any.admits(Some(&id("spiffe://other.org/anything")), &td));
        assert!(!any.admits(None, &td));
        // A listed ID of another trust domain is still of another trust domain.
        let foreign = AllowedPeers::new([id("spiffe://other.org/envoy")]);
        assert!(!foreign.admits(Some(&id("spiffe://other.org/envoy")), &td));
    }

    #[test]
    fn refusals_are_summed_by_listener_name_while_the_listener_lives() {
        let a = register("test_listener_sum");
        let b = register("test_listener_sum");
        a.handshake_failed();
        b.handshake_failed();
        b.peer_refused();
        let sum = |name| {
            refusal_counts()
                .into_iter()
                .find(|(n, _)| *n == name)
                .map(|(_, c)| c)
        };
        assert_eq!(
            sum("test_listener_sum"),
            Some(RefusalCounts {
                handshakes_failed: 2,
                peers_refused: 1
            })
        );
        drop((a, b));
        assert_eq!(sum("test_listener_sum"), None);
    }
}
