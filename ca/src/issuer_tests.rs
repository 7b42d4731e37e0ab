#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use super::*;
use crate::key_backend::file::FileKeyStore;
use crate::rotation::RotationPolicy;
use crate::store::{CaStore, InitOptions};

const AGENT: &str = "spiffe://example.org/esm/agent";

fn signing_ca(dir: &std::path::Path) -> SigningCa {
    let store = CaStore::new(
        dir.join("ca"),
        Arc::new(FileKeyStore::new(dir.join("ca/keys"), None)),
    );
    let state = store
        .init(
            InitOptions {
                trust_domain: TrustDomain::parse("example.org").unwrap(),
                algorithm: KeyAlgorithm::EcP256,
                upstream: None,
            },
            &RotationPolicy::default(),
            OffsetDateTime::now_utc(),
        )
        .unwrap();
    store.signing_ca(&state).unwrap()
}

fn ask(ca: &SigningCa, id: &str, key: LeafKey) -> Result<IssuedSvid> {
    let id = SpiffeId::parse(id).unwrap();
    issue(
        ca,
        &IssuancePolicy::default(),
        SvidRequest {
            spiffe_id: &id,
            ttl: None,
            dns_names: &[],
            key,
        },
        OffsetDateTime::now_utc(),
    )
}

fn uri_sans(der: &[u8]) -> Vec<String> {
    use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).unwrap();
    cert.extensions()
        .iter()
        .filter_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => Some(san),
            _ => None,
        })
        .flat_map(|san| san.general_names.iter())
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some((*u).to_owned()),
            _ => None,
        })
        .collect()
}

#[test]
fn refuses_esm_own_identities_to_a_workload() {
    let dir = tempfile::tempdir().unwrap();
    let ca = signing_ca(dir.path());
    for id in [
        AGENT,
        "spiffe://example.org/esm",
        "spiffe://example.org/esm/x/y",
    ] {
        let err = ask(&ca, id, LeafKey::Generate).err();
        assert!(
            matches!(&err, Some(Error::Reserved(r)) if r.as_str() == id),
            "{id}: {err:?}"
        );
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("reserved") && msg.contains(id), "{msg}");
    }
    // A look-alike outside /esm is an ordinary workload ID.
    ask(&ca, "spiffe://example.org/esmx/agent", LeafKey::Generate).unwrap();
}

#[test]
fn refuses_esm_agent_identity_asked_for_with_a_matching_csr() {
    let dir = tempfile::tempdir().unwrap();
    let ca = signing_ca(dir.path());
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::default();
    p.subject_alt_names = vec![SanType::URI(AGENT.try_into().unwrap())];
    let csr = p.serialize_request(&key).unwrap().der().to_vec();
    // The CSR itself is well formed and names exactly the ID asked for...
    let valid = crate::csr::validate(&csr, &SpiffeId::parse(AGENT).unwrap()).unwrap();
    // ...and is still refused: the ID is esm's own.
    let err = ask(&ca, AGENT, LeafKey::Csr(valid)).err();
    assert!(matches!(err, Some(Error::Reserved(_))), "{err:?}");
}

#[test]
fn issues_the_agents_own_svid_through_the_crate_private_path() {
    let dir = tempfile::tempdir().unwrap();
    let ca = signing_ca(dir.path());
    let svid = issue_own(
        &ca,
        &IssuancePolicy::default(),
        OwnIdentity::Agent,
        OffsetDateTime::now_utc(),
    )
    .unwrap();
    assert_eq!(svid.spiffe_id.as_str(), AGENT);
    assert_eq!(uri_sans(&svid.cert_der), [AGENT]);
    assert!(svid.private_key.is_some());
}
