#![allow(clippy::unwrap_used)]
use super::*;
use ring::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING,
    ECDSA_P256_SHA256_FIXED_SIGNING,
};

fn rng() -> ring::rand::SystemRandom {
    ring::rand::SystemRandom::new()
}

fn ed25519() -> Ed25519KeyPair {
    let doc = Ed25519KeyPair::generate_pkcs8(&rng()).unwrap();
    Ed25519KeyPair::from_pkcs8(doc.as_ref()).unwrap()
}

fn p256() -> EcdsaKeyPair {
    let alg = &ECDSA_P256_SHA256_ASN1_SIGNING;
    let doc = EcdsaKeyPair::generate_pkcs8(alg, &rng()).unwrap();
    EcdsaKeyPair::from_pkcs8(alg, doc.as_ref(), &rng()).unwrap()
}

fn public_of(pair: &EcdsaKeyPair) -> PublicKey {
    PublicKey::new(Algorithm::EcdsaP256, pair.public_key().as_ref().to_vec()).unwrap()
}

#[test]
fn key_ids_name_the_algorithm() {
    let ed = PublicKey::ed25519(ed25519().public_key().as_ref().to_vec()).unwrap();
    let ec = public_of(&p256());
    assert!(ed.id.starts_with("ed25519:") && ed.id.len() == "ed25519:".len() + 16);
    assert!(ec.id.starts_with("p256:") && ec.id.len() == "p256:".len() + 16);
}

#[test]
fn every_text_form_reads_back_to_the_same_key() {
    let ed = PublicKey::ed25519(ed25519().public_key().as_ref().to_vec()).unwrap();
    let ec = public_of(&p256());
    for key in [&ed, &ec] {
        assert_eq!(&PublicKey::from_text(&key.to_text()).unwrap(), key);
        assert_eq!(&PublicKey::from_text(&key.to_pem()).unwrap(), key);
    }
    // Ed25519 text stays what esm always wrote (bare base64), and the prefixed form reads too.
    assert!(!ed.to_text().contains(':'));
    let prefixed = format!("ed25519:{}", ed.to_text());
    assert_eq!(PublicKey::from_text(&prefixed).unwrap(), ed);
    assert!(ec.to_text().starts_with("p256:"));
}

#[test]
fn pems_from_openssl_read() {
    // `openssl pkey -pubout` of an Ed25519 and of a P-256 key.
    let ed = "-----BEGIN PUBLIC KEY-----\n\
              MCowBQYDK2VwAyEAcxIxNIes8083LqrqXCMP2snA8mdo1K6LsYnobwXobf8=\n\
              -----END PUBLIC KEY-----\n";
    let k = PublicKey::from_text(ed).unwrap();
    assert_eq!(k.algorithm, Algorithm::Ed25519);
    assert_eq!(
        hex::encode(&k.bytes),
        "7312313487acf34f372eaaea5c230fdac9c0f26768d4ae8bb189e86f05e86dff"
    );
    let ec = "-----BEGIN PUBLIC KEY-----\n\
              MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEZDUIv4YKzB9HaBFd+bhWtYcaY2Rz\n\
              2rbAVCgpHPq9SZWqxu1vTp7TvdMrkcK7I1sIWEBKB8o+qFWp8mrtR8BzAQ==\n\
              -----END PUBLIC KEY-----\n";
    let k = PublicKey::from_text(ec).unwrap();
    assert_eq!(k.algorithm, Algorithm::EcdsaP256);
    assert_eq!(
        hex::encode(&k.bytes),
        "04643508bf860acc1f4768115df9b856b5871a636473dab6c05428291cfabd4995aac6ed6f4e9ed3bdd\
         32b91c2bb235b0858404a07ca3ea855a9f26aed47c07301"
    );
    assert_eq!(k.to_pem(), ec);
}

#[test]
fn hostile_public_key_text_is_refused() {
    let ec = public_of(&p256());
    let mut no_04 = ec.bytes.clone();
    no_04[0] = 0x02;
    let rsa_spki_pem = "-----BEGIN PUBLIC KEY-----\nMFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBAL\n-----END PUBLIC KEY-----\n";
    for text in [
        String::new(),
        "not base64 !!".into(),
        STANDARD.encode([1u8; 31]),
        STANDARD.encode([1u8; 33]),
        format!("p256:{}", STANDARD.encode(&ec.bytes[..64])),
        format!("p256:{}", STANDARD.encode(&no_04)),
        format!("ed25519:{}", STANDARD.encode(&ec.bytes)),
        format!("rsa:{}", STANDARD.encode([1u8; 32])),
        "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n".into(),
        "-----BEGIN CERTIFICATE-----\nMCowBQYDK2VwAyEA\n-----END CERTIFICATE-----\n".into(),
        rsa_spki_pem.into(),
        "A".repeat(MAX_TEXT + 1),
    ] {
        assert!(
            matches!(PublicKey::from_text(&text), Err(Error::Config(_))),
            "{text:?}"
        );
    }
}

#[test]
fn p256_signatures_verify_only_under_their_key_and_id() {
    let pair = p256();
    let key = public_of(&pair);
    let sig = pair.sign(&rng(), b"msg").unwrap();
    assert!(key.verifies(&key.id, b"msg", sig.as_ref()));
    assert!(!key.verifies(&key.id, b"msh", sig.as_ref()));
    let other = public_of(&p256());
    assert!(!other.verifies(&other.id, b"msg", sig.as_ref()));
    // Raw r‖s is not the DER signature the algorithm specifies.
    let fixed = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng())
            .unwrap()
            .as_ref(),
        &rng(),
    )
    .unwrap();
    let fixed_key =
        PublicKey::new(Algorithm::EcdsaP256, fixed.public_key().as_ref().to_vec()).unwrap();
    let raw = fixed.sign(&rng(), b"msg").unwrap();
    assert!(!fixed_key.verifies(&fixed_key.id, b"msg", raw.as_ref()));
}

#[test]
fn a_signature_under_another_algorithms_id_is_refused() {
    // The same bytes read as an Ed25519 key and as the tail of a P-256 point: ids differ by
    // algorithm, and an id naming the other algorithm is refused before any signature check.
    let ed_pair = ed25519();
    let ed = PublicKey::ed25519(ed_pair.public_key().as_ref().to_vec()).unwrap();
    let ec_pair = p256();
    let ec = public_of(&ec_pair);
    let ed_sig = ed_pair.sign(b"msg");
    let ec_sig = ec_pair.sign(&rng(), b"msg").unwrap();
    // An Ed25519 signature labelled with the P-256 key's id, and the other way round.
    assert!(!ec.verifies(&ec.id, b"msg", ed_sig.as_ref()));
    assert!(!ed.verifies(&ec.id, b"msg", ed_sig.as_ref()));
    assert!(!ed.verifies(&ed.id, b"msg", ec_sig.as_ref()));
    assert!(!ec.verifies(&ed.id, b"msg", ec_sig.as_ref()));
    // An id with the right hash but the other algorithm's prefix.
    let hash = ec.id.strip_prefix("p256:").unwrap();
    assert!(!ec.verifies(&format!("ed25519:{hash}"), b"msg", ec_sig.as_ref()));
    assert!(!ec.verifies(hash, b"msg", ec_sig.as_ref()));
}

#[test]
fn checkpoints_from_before_prefixed_ids_still_verify_for_ed25519_only() {
    let ed_pair = ed25519();
    let ed = PublicKey::ed25519(ed_pair.public_key().as_ref().to_vec()).unwrap();
    let legacy = ed.id.strip_prefix("ed25519:").unwrap();
    let sig = ed_pair.sign(b"msg");
    assert!(ed.names(legacy) && ed.verifies(legacy, b"msg", sig.as_ref()));
    let ec = public_of(&p256());
    assert!(!ec.names(ec.id.strip_prefix("p256:").unwrap()));
}
