//! What an SDS caller gets: resource names resolved against the caller's registration
//! entries, and Envoy `Secret`s built from SVIDs and the trust bundle. Pure: no I/O, so every
//! rule about names and entitlements is tested without a socket.

use envoy_types::pb::envoy::config::core::v3::{data_source::Specifier, DataSource};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    secret, CertificateValidationContext, Secret, TlsCertificate,
};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;

use super::entry::{granted_ids, Entry};
use esm_ca::issuer::IssuedSvid;
use esm_identity::{SpiffeId, TrustDomain};

pub const SECRET_TYPE: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
/// The caller's one SVID (exactly one entry must match).
pub const DEFAULT: &str = "default";
/// The own trust bundle as a validation context.
pub const ROOTCA: &str = "ROOTCA";
/// Every trust bundle known (the own one until federation exists).
pub const ALL: &str = "ALL";
/// More resource names than this in one request is refused.
pub const MAX_NAMES: usize = 64;

/// What a resource name stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    /// The SVID of this entry's SPIFFE ID (index into the caller's entries).
    Svid(SpiffeId),
    /// The trust bundle.
    Bundle,
}

/// Why a request is refused; each maps to a gRPC status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Malformed (too many names, unknown type): InvalidArgument.
    Invalid(String),
    /// The caller is not entitled (no or several entries for `default`, a SPIFFE ID no entry
    /// grants): PermissionDenied.
    NotEntitled(String),
}

impl Refusal {
    pub fn status(&self) -> tonic::Status {
        match self {
            Self::Invalid(m) => tonic::Status::invalid_argument(m.clone()),
            Self::NotEntitled(m) => tonic::Status::permission_denied(m.clone()),
        }
    }
}

/// Resolves `names` for a caller whose matching entries are `entries`. No names means
/// everything the caller may have: each entry's SVID by SPIFFE ID, and `ROOTCA`.
pub fn resolve(
    names: &[String],
    entries: &[&Entry],
    td: &TrustDomain,
) -> Result<Vec<(String, Want)>, Refusal> {
    if names.len() > MAX_NAMES {
        return Err(Refusal::Invalid(format!(
            "{} resource names; at most {MAX_NAMES}",
            names.len()
        )));
    }
    if names.is_empty() {
        let mut out: Vec<_> = granted_ids(entries.iter().copied())
            .into_iter()
            .map(|id| (id.to_string(), Want::Svid(id)))
            .collect();
        out.push((ROOTCA.into(), Want::Bundle));
        return Ok(out);
    }
    let td_name = format!("spiffe://{td}");
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let want = match name.as_str() {
            DEFAULT => match entries {
                [one] => Want::Svid(one.spiffe_id.clone()),
                [] => {
                    return Err(Refusal::NotEntitled(
                        "no registration entry matches this workload".into(),
                    ))
                }
                many => {
                    return Err(Refusal::NotEntitled(format!(
                        "{} entries match this workload; ask for a SPIFFE ID, not default",
                        many.len()
                    )))
                }
            },
            ROOTCA | ALL => Want::Bundle,
            n if n == td_name || n == td.as_str() => Want::Bundle,
            n if n.starts_with("spiffe://") => {
                let id = SpiffeId::parse(n)
                    .map_err(|e| Refusal::Invalid(format!("resource {n:?}: {e}")))?;
                if !entries.iter().any(|e| e.spiffe_id == id) {
                    return Err(Refusal::NotEntitled(format!(
                        "no registration entry of this workload grants {id}"
                    )));
                }
                Want::Svid(id)
            }
            other => {
                return Err(Refusal::NotEntitled(format!(
                    "unknown resource {:?}",
                    other.chars().take(128).collect::<String>()
                )))
            }
        };
        out.push((name.clone(), want));
    }
    Ok(out)
}

fn inline(bytes: String) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(Specifier::InlineBytes(bytes.into_bytes())),
        ..Default::default()
    })
}

/// A TLS certificate secret: the SVID chain and its private key (inline, never on disk).
pub fn tls_secret(name: &str, svid: &IssuedSvid) -> Secret {
    Secret {
        name: name.to_owned(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: inline(svid.chain_pem()),
            private_key: svid.private_key.as_ref().and_then(|k| inline(k.to_pem())),
            ..Default::default()
        })),
    }
}

/// A validation context secret holding the trust bundle's roots.
pub fn bundle_secret(name: &str, bundle_pem: &str) -> Secret {
    Secret {
        name: name.to_owned(),
        r#type: Some(secret::Type::ValidationContext(
            CertificateValidationContext {
                trusted_ca: inline(bundle_pem.to_owned()),
                ..Default::default()
            },
        )),
    }
}

pub fn to_any(s: &Secret) -> Any {
    Any {
        type_url: SECRET_TYPE.into(),
        value: s.encode_to_vec(),
    }
}

#[cfg(test)]
#[path = "secrets_tests.rs"]
mod tests;
