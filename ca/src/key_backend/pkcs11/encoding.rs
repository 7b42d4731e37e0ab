//! The byte formats PKCS#11 and X.509 disagree on, as pure functions: ECDSA signatures come
//! back from a token as raw `r‖s` but certificates carry ASN.1 DER, and `CKA_EC_POINT` is
//! the uncompressed point wrapped in a DER OCTET STRING (some modules omit the wrapper).

use crate::key_backend::KeyAlgorithm;

/// DER of the named-curve OID a token wants in `CKA_EC_PARAMS`.
pub fn ec_params(alg: KeyAlgorithm) -> Option<&'static [u8]> {
    match alg {
        // 1.2.840.10045.3.1.7 (prime256v1)
        KeyAlgorithm::EcP256 => Some(&[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]),
        // 1.3.132.0.34 (secp384r1)
        KeyAlgorithm::EcP384 => Some(&[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22]),
        KeyAlgorithm::Rsa3072 => None,
    }
}

/// Length of one coordinate (and of `r`, `s`) on the curve.
pub fn field_len(alg: KeyAlgorithm) -> Option<usize> {
    match alg {
        KeyAlgorithm::EcP256 => Some(32),
        KeyAlgorithm::EcP384 => Some(48),
        KeyAlgorithm::Rsa3072 => None,
    }
}

/// The uncompressed point `04‖X‖Y` out of `CKA_EC_POINT`, with or without its OCTET STRING
/// wrapper; `None` for anything that is not a point of the expected curve.
pub fn ec_point(alg: KeyAlgorithm, attr: &[u8]) -> Option<Vec<u8>> {
    let point_len = 1 + 2 * field_len(alg)?;
    let point = if attr.len() == point_len && attr[0] == 0x04 {
        attr
    } else {
        let (tag, body) = (attr.first()?, der_body(attr.get(1..)?)?);
        if *tag != 0x04 {
            return None;
        }
        body
    };
    (point.len() == point_len && point[0] == 0x04).then(|| point.to_vec())
}

/// `CKA_EC_PARAMS` of an Ed25519 key: the DER of id-Ed25519 (1.3.101.112, RFC 8410), as
/// PKCS#11 3.0 lets a token be asked for it.
pub const ED25519_PARAMS: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];

/// The 32-byte Ed25519 public key out of an Edwards key's `CKA_EC_POINT`, with or without its
/// OCTET STRING wrapper.
pub fn ed25519_point(attr: &[u8]) -> Option<Vec<u8>> {
    if attr.len() == 32 {
        return Some(attr.to_vec());
    }
    let (tag, body) = (attr.first()?, der_body(attr.get(1..)?)?);
    (*tag == 0x04 && body.len() == 32).then(|| body.to_vec())
}

/// The content of a DER TLV whose tag was already read: checks the length covers it exactly.
fn der_body(len_and_body: &[u8]) -> Option<&[u8]> {
    let first = *len_and_body.first()?;
    let (len, rest) = match first {
        0..=0x7f => (first as usize, &len_and_body[1..]),
        0x81 => (*len_and_body.get(1)? as usize, len_and_body.get(2..)?),
        0x82 => (
            (*len_and_body.get(1)? as usize) << 8 | *len_and_body.get(2)? as usize,
            len_and_body.get(3..)?,
        ),
        _ => return None,
    };
    (rest.len() == len).then_some(rest)
}

fn der_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else if len <= 0xff {
        out.extend([0x81, len as u8]);
    } else {
        out.extend([0x82, (len >> 8) as u8, len as u8]);
    }
}

/// A non-negative INTEGER: leading zeros stripped, one 0x00 put back when the top bit is set.
fn der_uint(out: &mut Vec<u8>, be: &[u8]) {
    let start = be.iter().position(|&b| b != 0).unwrap_or(be.len());
    let mut v = be[start..].to_vec();
    if v.first().is_none_or(|&b| b & 0x80 != 0) {
        v.insert(0, 0);
    }
    out.push(0x02);
    der_len(out, v.len());
    out.extend(v);
}

/// `r‖s` (PKCS#11's CKM_ECDSA output) → `ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }`.
pub fn ecdsa_raw_to_der(alg: KeyAlgorithm, raw: &[u8]) -> Option<Vec<u8>> {
    let n = field_len(alg)?;
    if raw.len() != 2 * n {
        return None;
    }
    let mut body = Vec::with_capacity(2 * n + 6);
    der_uint(&mut body, &raw[..n]);
    der_uint(&mut body, &raw[n..]);
    let mut out = vec![0x30];
    der_len(&mut out, body.len());
    out.extend(body);
    Some(out)
}

/// The token label of a CA key: readable in `pkcs11-tool --list-objects`, one per key id.
pub fn key_label(key_id: &str) -> String {
    format!("esm-{key_id}")
}

/// `CKA_ID` of a CA key: the first 16 bytes of SHA-256 over its key id, so a key is found by
/// a fixed-size id that differs per CA generation.
pub fn key_cka_id(key_id: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, key_id.as_bytes()).as_ref()[..16].to_vec()
}

#[cfg(test)]
#[path = "encoding_tests.rs"]
mod tests;
