use super::*;
use rcgen::{CertificateParams, KeyPair, SanType};

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

fn csr_with(sans: Vec<SanType>, tweak: impl FnOnce(&mut CertificateParams)) -> Vec<u8> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::default();
    p.subject_alt_names = sans;
    tweak(&mut p);
    p.serialize_request(&key).unwrap().der().to_vec()
}

fn uri(s: &str) -> SanType {
    SanType::URI(s.try_into().unwrap())
}

const WEB: &str = "spiffe://example.org/web";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn accepts_csr_with_the_granted_id_or_no_uri() {
    let v = validate(&csr_with(vec![uri(WEB)], |_| {}), &id(WEB)).unwrap();
    assert!(!v.key_is_rsa);
    validate(&csr_with(vec![], |_| {}), &id(WEB)).unwrap();
}

#[test]
fn accepts_pem_and_rsa_2048() {
    let v = validate(&fixture("csr_rsa2048.pem"), &id(WEB)).unwrap();
    assert!(v.key_is_rsa);
}

#[test]
fn rejects_csr_asking_for_a_different_spiffe_id() {
    let err = validate(
        &csr_with(vec![uri("spiffe://example.org/db")], |_| {}),
        &id(WEB),
    );
    assert!(
        matches!(err, Err(CsrError::DifferentSpiffeId { .. })),
        "{err:?}"
    );
}

#[test]
fn rejects_csr_with_two_uri_sans() {
    let csr = csr_with(vec![uri(WEB), uri("spiffe://example.org/db")], |_| {});
    assert_eq!(
        validate(&csr, &id(WEB)).unwrap_err(),
        CsrError::SeveralUriSans(2)
    );
}

#[test]
fn rejects_csr_asking_for_ca_rights() {
    let csr = csr_with(vec![uri(WEB)], |p| {
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained)
    });
    assert_eq!(validate(&csr, &id(WEB)).unwrap_err(), CsrError::AsksForCa);
    let csr = csr_with(vec![uri(WEB)], |p| {
        p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign]
    });
    assert_eq!(validate(&csr, &id(WEB)).unwrap_err(), CsrError::AsksForCa);
}

#[test]
fn rejects_weak_rsa_key() {
    assert_eq!(
        validate(&fixture("csr_rsa1024.pem"), &id(WEB)).unwrap_err(),
        CsrError::WeakRsaKey(1024)
    );
}

#[test]
fn rejects_unsupported_curve_and_key_type() {
    assert!(matches!(
        validate(&fixture("csr_secp256k1.pem"), &id(WEB)),
        Err(CsrError::UnsupportedCurve(c)) if c == "1.3.132.0.10"
    ));
    assert!(matches!(
        validate(&fixture("csr_ed25519.pem"), &id(WEB)),
        Err(CsrError::UnsupportedKeyType(_))
    ));
}

#[test]
fn rejects_csr_with_bad_signature() {
    let mut csr = csr_with(vec![uri(WEB)], |_| {});
    let n = csr.len();
    csr[n - 3] ^= 0x01;
    assert_eq!(
        validate(&csr, &id(WEB)).unwrap_err(),
        CsrError::BadSignature
    );
}

#[test]
fn rejects_malformed_truncated_oversized_and_non_csr_input() {
    let csr = csr_with(vec![uri(WEB)], |_| {});
    assert!(matches!(
        validate(&csr[..csr.len() / 2], &id(WEB)),
        Err(CsrError::Malformed(_))
    ));
    let mut trailing = csr.clone();
    trailing.push(0);
    assert!(matches!(
        validate(&trailing, &id(WEB)),
        Err(CsrError::Malformed(_))
    ));
    assert_eq!(validate(b"", &id(WEB)).unwrap_err(), CsrError::NotACsr);
    assert_eq!(validate(b"hello", &id(WEB)).unwrap_err(), CsrError::NotACsr);
    assert_eq!(
        validate(&[0xff, 0xfe, 0x00], &id(WEB)).unwrap_err(),
        CsrError::NotACsr
    );
    let pem_cert = "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";
    assert_eq!(
        validate(pem_cert.as_bytes(), &id(WEB)).unwrap_err(),
        CsrError::NotACsr
    );
    let big = vec![0x30; MAX_CSR_LEN + 1];
    assert_eq!(
        validate(&big, &id(WEB)).unwrap_err(),
        CsrError::TooLarge(MAX_CSR_LEN + 1)
    );
}

#[test]
fn counts_rsa_modulus_bits_exactly() {
    assert_eq!(bit_length(&[0x00, 0x80, 0x00]), 16);
    assert_eq!(bit_length(&[0x01, 0x00]), 9);
    assert_eq!(bit_length(&[]), 0);
    assert_eq!(bit_length(&[0, 0]), 0);
}

proptest::proptest! {
    #[test]
    fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
        let _ = validate(&bytes, &id(WEB));
    }

    #[test]
    fn never_accepts_a_mutated_csr_with_another_key(pos in 0usize..200, bit in 0u8..8) {
        let csr = csr_with(vec![uri(WEB)], |_| {});
        let mut m = csr.clone();
        let i = pos % m.len();
        m[i] ^= 1 << bit;
        if let Ok(v) = validate(&m, &id(WEB)) {
            // A flip that still verifies can only be in an unsigned part that does not
            // change the key.
            let orig = validate(&csr, &id(WEB)).unwrap();
            proptest::prop_assert_eq!(v.spki_der, orig.spki_der);
        }
    }
}
