#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;

fn root(alg: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
    let kp = rcgen::KeyPair::generate_for(alg).unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.self_signed(&kp).unwrap().der().to_vec()
}

fn bundle(roots_der: Vec<Vec<u8>>) -> TrustBundle {
    TrustBundle {
        trust_domain: TrustDomain::parse("example.org").unwrap(),
        sequence: 7,
        refresh_hint_secs: 300,
        roots_der,
    }
}

#[test]
fn spiffe_format_carries_each_root_as_an_x509_svid_jwk() {
    let b = bundle(vec![
        root(&rcgen::PKCS_ECDSA_P256_SHA256),
        root(&rcgen::PKCS_ECDSA_P384_SHA384),
    ]);
    let v = b.to_spiffe_json().unwrap();
    assert_eq!(v["spiffe_sequence"], 7);
    assert_eq!(v["spiffe_refresh_hint"], 300);
    let keys = v["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0]["crv"], "P-256");
    assert_eq!(keys[1]["crv"], "P-384");
    for k in keys {
        assert_eq!(k["use"], "x509-svid");
        assert_eq!(k["x5c"].as_array().unwrap().len(), 1);
    }
    assert_eq!(b.to_pem().matches("BEGIN CERTIFICATE").count(), 2);
}

#[test]
fn refuses_a_root_that_is_not_a_certificate() {
    for garbage in [vec![], b"not DER".to_vec(), vec![0x30; 4096]] {
        let err = bundle(vec![garbage]).to_spiffe_json().unwrap_err();
        assert!(matches!(err, Error::UnusableRoot(_)), "{err}");
    }
}

#[test]
fn pem_decodes_what_it_encodes_and_refuses_the_rest() {
    let text = crate::pem::encode("CERTIFICATE", b"\x30\x03\x02\x01\x01");
    let (label, der) = crate::pem::decode(&text).unwrap();
    assert_eq!(label, "CERTIFICATE");
    assert_eq!(der, b"\x30\x03\x02\x01\x01");
    for bad in ["", "-----BEGIN X-----", "plain text", &"A".repeat(100_000)] {
        assert!(matches!(crate::pem::decode(bad), Err(Error::NotPem(_))));
    }
}
