//! PEM text, the form every file esm writes for people and Envoy takes.

use crate::error::{Error, Result};

pub fn encode(label: &str, der: &[u8]) -> String {
    pkcs8::der::pem::encode_string(label, pkcs8::der::pem::LineEnding::LF, der).unwrap_or_default()
}

/// Decodes one PEM block into its label and DER.
pub fn decode(text: &str) -> Result<(String, Vec<u8>)> {
    pkcs8::der::pem::decode_vec(text.trim().as_bytes())
        .map(|(label, der)| (label.to_owned(), der))
        .map_err(|e| Error::NotPem(e.to_string()))
}
