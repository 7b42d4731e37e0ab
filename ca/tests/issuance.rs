//! End-to-end CA behaviour on a real data dir: init, issue, verify with webpki, rotate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use esm_ca::issuer::{issue, IssuancePolicy, LeafKey, SvidRequest};
use esm_ca::key_backend::file::FileKeyStore;
use esm_ca::key_backend::KeyAlgorithm;
use esm_ca::rotation::{RotationPolicy, Step};
use esm_ca::store::{CaStore, InitOptions};
use esm_ca::Error;
use esm_identity::{SpiffeId, TrustDomain};
use rustls_pki_types::{CertificateDer, UnixTime};
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};

fn store(dir: &std::path::Path) -> CaStore {
    CaStore::new(
        dir.join("ca"),
        Arc::new(FileKeyStore::new(dir.join("ca/keys"), None)),
    )
}

fn init(dir: &std::path::Path, alg: KeyAlgorithm, now: OffsetDateTime) -> CaStore {
    let s = store(dir);
    s.init(
        InitOptions {
            trust_domain: TrustDomain::parse("example.org").unwrap(),
            algorithm: alg,
            upstream: None,
        },
        &RotationPolicy::default(),
        now,
    )
    .unwrap();
    s
}

fn issue_for(s: &CaStore, id: &str, now: OffsetDateTime) -> esm_ca::issuer::IssuedSvid {
    let state = s.load().unwrap();
    let ca = s.signing_ca(&state).unwrap();
    let id = SpiffeId::parse(id).unwrap();
    issue(
        &ca,
        &IssuancePolicy::default(),
        SvidRequest {
            spiffe_id: &id,
            ttl: None,
            dns_names: &[],
            key: LeafKey::Generate,
        },
        now,
    )
    .unwrap()
}

/// Verifies the SVID's chain against the bundle as webpki would for a TLS server and a TLS
/// client, at `at`.
fn verify(
    s: &CaStore,
    svid: &esm_ca::issuer::IssuedSvid,
    at: OffsetDateTime,
) -> Result<(), webpki::Error> {
    let state = s.load().unwrap();
    let bundle = s.bundle(&state, at).unwrap();
    let anchors: Vec<_> = bundle
        .roots_der
        .iter()
        .map(|d| {
            webpki::anchor_from_trusted_cert(&CertificateDer::from(d.as_slice()))
                .unwrap()
                .to_owned()
        })
        .collect();
    let leaf = CertificateDer::from(svid.cert_der.as_slice());
    let ee = webpki::EndEntityCert::try_from(&leaf).unwrap();
    let inter = [CertificateDer::from(svid.intermediate_der.clone())];
    let t = UnixTime::since_unix_epoch(std::time::Duration::from_secs(at.unix_timestamp() as u64));
    for usage in [
        webpki::KeyUsage::server_auth(),
        webpki::KeyUsage::client_auth(),
    ] {
        ee.verify_for_usage(ALGS, &anchors, &inter, t, usage, None, None)?;
    }
    Ok(())
}

const ALGS: &[&dyn rustls_pki_types::SignatureVerificationAlgorithm] = &[
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
    webpki::ring::RSA_PKCS1_2048_8192_SHA256,
];

fn uri_sans(der: &[u8]) -> Vec<String> {
    let (_, cert) = X509Certificate::from_der(der).unwrap();
    let mut out = vec![];
    for ext in cert.extensions() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
            for n in &san.general_names {
                if let GeneralName::URI(u) = n {
                    out.push(u.to_string());
                }
            }
        }
    }
    out
}

#[test]
fn issued_svid_verifies_as_client_and_server_and_reads_back_its_id() {
    for alg in [KeyAlgorithm::EcP256, KeyAlgorithm::EcP384] {
        let dir = tempfile::tempdir().unwrap();
        let now = now_s();
        let s = init(dir.path(), alg, now);
        let svid = issue_for(&s, "spiffe://example.org/ns/prod/web", now);
        verify(&s, &svid, now).unwrap();
        assert_eq!(
            uri_sans(&svid.cert_der),
            ["spiffe://example.org/ns/prod/web"]
        );
        assert_eq!(svid.serial_hex.len(), 32);
        assert_eq!(svid.not_after - now, Duration::hours(1));
        assert!(svid.not_before < now);
        let (_, cert) = X509Certificate::from_der(&svid.cert_der).unwrap();
        assert!(!cert.is_ca());
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && !ku.key_cert_sign() && !ku.key_encipherment());
    }
}

#[test]
fn rsa_ca_signs_verifiable_svids() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_s();
    let s = init(dir.path(), KeyAlgorithm::Rsa3072, now);
    let svid = issue_for(&s, "spiffe://example.org/rsa", now);
    verify(&s, &svid, now).unwrap();
}

#[test]
fn svid_from_csr_carries_the_csr_key_only() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_s();
    let s = init(dir.path(), KeyAlgorithm::EcP256, now);
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap();
    let id = SpiffeId::parse("spiffe://example.org/csr").unwrap();
    let validated = esm_ca::csr::validate(csr.der(), &id).unwrap();
    let state = s.load().unwrap();
    let ca = s.signing_ca(&state).unwrap();
    let svid = issue(
        &ca,
        &IssuancePolicy::default(),
        SvidRequest {
            spiffe_id: &id,
            ttl: Some(Duration::minutes(5)),
            dns_names: &[],
            key: LeafKey::Csr(validated),
        },
        now,
    )
    .unwrap();
    assert!(svid.private_key.is_none());
    let (_, cert) = X509Certificate::from_der(&svid.cert_der).unwrap();
    assert_eq!(
        cert.public_key().raw,
        rcgen::PublicKeyData::subject_public_key_info(&key)
    );
    verify(&s, &svid, now).unwrap();
}

#[test]
fn ttl_is_capped_by_max_ttl_and_by_the_signing_ca() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_s();
    let s = init(dir.path(), KeyAlgorithm::EcP256, now);
    let state = s.load().unwrap();
    let ca = s.signing_ca(&state).unwrap();
    let id = SpiffeId::parse("spiffe://example.org/x").unwrap();
    let req = |ttl| SvidRequest {
        spiffe_id: &id,
        ttl: Some(ttl),
        dns_names: &[],
        key: LeafKey::Generate,
    };
    let p = IssuancePolicy::default();
    let svid = issue(&ca, &p, req(Duration::days(30)), now).unwrap();
    assert_eq!(svid.not_after - now, p.max_ttl);
    let late = ca.not_after - Duration::minutes(3);
    let svid = issue(&ca, &p, req(Duration::hours(1)), late).unwrap();
    assert_eq!(svid.not_after, ca.not_after);
    let err = issue(
        &ca,
        &p,
        req(Duration::hours(1)),
        ca.not_after + Duration::seconds(1),
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("expired"), "{err}");
    assert!(issue(&ca, &p, req(Duration::ZERO), now).is_err());
}

#[test]
fn refuses_foreign_trust_domain_and_bare_trust_domain_id() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_s();
    let s = init(dir.path(), KeyAlgorithm::EcP256, now);
    let state = s.load().unwrap();
    let ca = s.signing_ca(&state).unwrap();
    for bad in ["spiffe://other.org/web", "spiffe://example.org"] {
        let id = SpiffeId::parse(bad).unwrap();
        let r = issue(
            &ca,
            &IssuancePolicy::default(),
            SvidRequest {
                spiffe_id: &id,
                ttl: None,
                dns_names: &[],
                key: LeafKey::Generate,
            },
            now,
        );
        assert!(matches!(r, Err(Error::Refused(_))), "{bad}");
    }
}

#[test]
fn old_svids_verify_after_intermediate_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_s();
    let s = init(dir.path(), KeyAlgorithm::EcP256, now);
    let p = RotationPolicy::default();
    // Nothing is due yet.
    assert!(s.rotate(&p, now, None).unwrap().1.is_empty());
    // At half life a successor is prepared; at five sixths it takes over.
    let (_, done) = s.rotate(&p, now + Duration::days(4), None).unwrap();
    assert_eq!(done, [Step::PrepareIntermediate]);
    let t = now + Duration::days(6);
    let old = issue_for(&s, "spiffe://example.org/a", t - Duration::minutes(10));
    let (state, done) = s.rotate(&p, t, None).unwrap();
    assert_eq!(done, [Step::ActivateIntermediate]);
    let new = issue_for(&s, "spiffe://example.org/a", t);
    assert_ne!(old.signed_by, new.signed_by);
    assert_eq!(state.active_intermediate().unwrap().id, new.signed_by);
    verify(&s, &old, t + Duration::minutes(1)).unwrap();
    verify(&s, &new, t + Duration::minutes(1)).unwrap();
}

#[test]
fn root_rotation_publishes_both_roots_and_old_svids_keep_verifying() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_s();
    let s = init(dir.path(), KeyAlgorithm::EcP256, now);
    let old = issue_for(&s, "spiffe://example.org/a", now);
    let p = RotationPolicy::default();
    let seq0 = s.load().unwrap().bundle_sequence;
    let (state, _) = s.rotate(&p, now, Some(Step::PrepareRoot)).unwrap();
    assert_eq!(s.bundle(&state, now).unwrap().roots_der.len(), 2);
    assert!(state.bundle_sequence > seq0);
    let (state, _) = s.rotate(&p, now, Some(Step::ActivateRoot)).unwrap();
    let new = issue_for(&s, "spiffe://example.org/a", now);
    assert_eq!(s.bundle(&state, now).unwrap().roots_der.len(), 2);
    verify(&s, &old, now).unwrap();
    verify(&s, &new, now).unwrap();
    // Once the old intermediate has expired, the old root leaves the bundle.
    let later = now + Duration::days(8);
    assert_eq!(s.bundle(&state, later).unwrap().roots_der.len(), 1);
    let json = s.bundle(&state, now).unwrap().to_spiffe_json().unwrap();
    assert_eq!(json["keys"].as_array().unwrap().len(), 2);
    assert_eq!(json["keys"][0]["use"], "x509-svid");
    assert_eq!(json["keys"][0]["crv"], "P-256");
}

#[test]
fn forced_steps_in_the_wrong_order_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_s();
    let s = init(dir.path(), KeyAlgorithm::EcP256, now);
    let p = RotationPolicy::default();
    assert!(matches!(
        s.rotate(&p, now, Some(Step::ActivateIntermediate)),
        Err(Error::Refused(_))
    ));
    assert!(matches!(
        s.rotate(&p, now, Some(Step::ActivateRoot)),
        Err(Error::Refused(_))
    ));
    s.rotate(&p, now, Some(Step::PrepareIntermediate)).unwrap();
    assert!(matches!(
        s.rotate(&p, now, Some(Step::PrepareIntermediate)),
        Err(Error::Refused(_))
    ));
}

#[test]
fn init_twice_is_refused_and_uninitialised_dir_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        store(dir.path()).load(),
        Err(Error::NotInitialized(_))
    ));
    let now = now_s();
    let s = init(dir.path(), KeyAlgorithm::EcP256, now);
    let again = s.init(
        InitOptions {
            trust_domain: TrustDomain::parse("example.org").unwrap(),
            algorithm: KeyAlgorithm::EcP256,
            upstream: None,
        },
        &RotationPolicy::default(),
        now,
    );
    assert!(matches!(again, Err(Error::AlreadyInitialized(_))));
}

#[test]
fn damaged_state_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_s();
    let s = init(dir.path(), KeyAlgorithm::EcP256, now);
    let path = dir.path().join("ca/state.json");
    std::fs::write(&path, "{ not json").unwrap();
    assert!(matches!(s.load(), Err(Error::CorruptState { .. })));
    std::fs::write(&path, r#"{"version":1,"trust_domain":"example.org","algorithm":"ec-p256","bundle_sequence":1,"authorities":[]}"#).unwrap();
    assert!(matches!(s.load(), Err(Error::CorruptState { .. })));
}

#[test]
fn upstream_ca_anchors_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_s();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    p.not_before = now - Duration::days(1);
    p.not_after = now + Duration::days(3650);
    let up = p.self_signed(&key).unwrap();
    let s = store(dir.path());
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let wrong = s.init(
        InitOptions {
            trust_domain: TrustDomain::parse("example.org").unwrap(),
            algorithm: KeyAlgorithm::EcP256,
            upstream: Some(esm_ca::store::Upstream {
                cert_der: up.der().to_vec(),
                key_pkcs8_der: other.serialize_der(),
            }),
        },
        &RotationPolicy::default(),
        now,
    );
    assert!(matches!(wrong, Err(Error::Config(_))), "{:?}", wrong.err());
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let state = s
        .init(
            InitOptions {
                trust_domain: TrustDomain::parse("example.org").unwrap(),
                algorithm: KeyAlgorithm::EcP256,
                upstream: Some(esm_ca::store::Upstream {
                    cert_der: up.der().to_vec(),
                    key_pkcs8_der: key.serialize_der(),
                }),
            },
            &RotationPolicy::default(),
            now,
        )
        .unwrap();
    assert!(state.active_root().unwrap().upstream);
    assert_eq!(
        s.bundle(&state, now).unwrap().roots_der,
        [up.der().to_vec()]
    );
    let svid = issue_for(&s, "spiffe://example.org/up", now);
    verify(&s, &svid, now).unwrap();
}

#[test]
fn concurrent_rotations_and_issuance_on_one_data_dir_keep_the_state_whole() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_s();
    init(dir.path(), KeyAlgorithm::EcP256, now);
    let p = RotationPolicy::default();
    let threads: Vec<_> = (0..6)
        .map(|i| {
            let path = dir.path().to_path_buf();
            std::thread::spawn(move || {
                let s = store(&path);
                for _ in 0..5 {
                    if i % 2 == 0 {
                        let _ = s.rotate(&p, now, Some(Step::PrepareIntermediate));
                        let _ = s.rotate(&p, now, Some(Step::ActivateIntermediate));
                    } else {
                        let svid = issue_for(&s, "spiffe://example.org/c", now);
                        s.record_issued(&svid, now).unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let s = store(dir.path());
    let state = s.load().unwrap();
    state.check().unwrap();
    let log = std::fs::read_to_string(dir.path().join("ca/serials.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 15);
    for line in log.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap();
    }
}

/// Certificates hold whole seconds.
fn now_s() -> OffsetDateTime {
    esm_ca::authority::whole_seconds(OffsetDateTime::now_utc())
}
