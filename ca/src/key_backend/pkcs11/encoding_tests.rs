#![allow(clippy::unwrap_used)]
use super::*;

#[test]
fn raw_signature_with_high_bits_gets_padding_zeros() {
    let mut raw = vec![0x80; 32];
    raw.extend(vec![0x01; 32]);
    let der = ecdsa_raw_to_der(KeyAlgorithm::EcP256, &raw).unwrap();
    // SEQUENCE { INTEGER 00 80.., INTEGER 01.. }
    assert_eq!(&der[..5], &[0x30, 2 + 33 + 2 + 32, 0x02, 33, 0x00]);
    assert_eq!(der[5], 0x80);
    assert_eq!(&der[37..39], &[0x02, 32]);
    assert_eq!(der.len(), 2 + 69);
}

#[test]
fn raw_signature_with_leading_zeros_is_minimal() {
    let mut raw = vec![0; 48];
    raw[47] = 5;
    raw.extend(vec![0x7f; 48]);
    let der = ecdsa_raw_to_der(KeyAlgorithm::EcP384, &raw).unwrap();
    assert_eq!(&der[2..5], &[0x02, 1, 5]);
    assert_eq!(&der[5..7], &[0x02, 48]);
}

#[test]
fn refuses_a_signature_of_the_wrong_length() {
    assert!(ecdsa_raw_to_der(KeyAlgorithm::EcP256, &[1; 63]).is_none());
    assert!(ecdsa_raw_to_der(KeyAlgorithm::Rsa3072, &[1; 64]).is_none());
}

#[test]
fn ec_point_accepts_wrapped_and_bare_points() {
    let mut point = vec![0x04];
    point.extend(vec![7; 64]);
    let mut wrapped = vec![0x04, 65];
    wrapped.extend(&point);
    assert_eq!(ec_point(KeyAlgorithm::EcP256, &wrapped).unwrap(), point);
    assert_eq!(ec_point(KeyAlgorithm::EcP256, &point).unwrap(), point);
}

#[test]
fn ec_point_refuses_a_point_of_another_curve() {
    let mut p384 = vec![0x04, 97, 0x04];
    p384.extend(vec![7; 96]);
    assert!(ec_point(KeyAlgorithm::EcP256, &p384).is_none());
    assert!(ec_point(KeyAlgorithm::EcP384, &p384).is_some());
    // A compressed point is not what X.509 SPKI here carries.
    let mut compressed = vec![0x04, 33, 0x02];
    compressed.extend(vec![7; 32]);
    assert!(ec_point(KeyAlgorithm::EcP256, &compressed).is_none());
}

#[test]
fn key_ids_differ_per_ca_generation() {
    assert_ne!(key_cka_id("int-1-aa"), key_cka_id("int-2-aa"));
    assert_eq!(key_cka_id("int-1-aa").len(), 16);
    assert_eq!(key_label("root-1-ab"), "esm-root-1-ab");
}

#[test]
fn ed25519_point_with_or_without_its_octet_string() {
    let key = [7u8; 32];
    assert_eq!(ed25519_point(&key).unwrap(), key);
    let mut wrapped = vec![0x04, 32];
    wrapped.extend(key);
    assert_eq!(ed25519_point(&wrapped).unwrap(), key);
    // Another length, another tag, a length that does not cover the body.
    assert!(ed25519_point(&[7u8; 31]).is_none());
    wrapped[0] = 0x03;
    assert!(ed25519_point(&wrapped).is_none());
    wrapped[0] = 0x04;
    wrapped[1] = 33;
    assert!(ed25519_point(&wrapped).is_none());
    assert!(ed25519_point(&[]).is_none());
}
