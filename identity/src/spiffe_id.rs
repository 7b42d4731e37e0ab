//! SPIFFE IDs and trust domain names, parsed exactly as the SPIFFE-ID specification says.
//!
//! Parsing is strict on purpose: a SPIFFE ID is compared byte for byte by every verifier in
//! the mesh (Envoy SAN matchers, policies, registration entries), so anything a lenient URI
//! parser would normalise (case, percent-encoding, dot segments) is refused instead.

use std::fmt;

const SCHEME: &str = "spiffe://";
/// The specification caps the trust domain name at 255 bytes.
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;
/// The specification caps the whole URI at 2048 bytes.
pub const MAX_SPIFFE_ID_LEN: usize = 2048;
/// The path under which esm names its own identities (`/esm/agent`, the agent's TCP
/// listener; `/esm/authz`, the ext_authz port over mutual TLS). No registration entry or `cert issue` may grant one: a workload holding it
/// could pose as esm to every Envoy that checks the agent's SPIFFE ID.
pub const RESERVED_PATH: &str = "/esm";
/// Why an identity under [`RESERVED_PATH`] is refused, as every crate that refuses one says.
pub const RESERVED_WHY: &str =
    "SPIFFE IDs under /esm are esm's own identities and are never granted to a workload";

/// Why a string is not a SPIFFE ID or trust domain; the message is shown to users as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpiffeIdError {
    #[error("SPIFFE ID is empty")]
    Empty,
    #[error("SPIFFE ID is longer than {MAX_SPIFFE_ID_LEN} bytes")]
    TooLong,
    #[error("scheme is missing or invalid: a SPIFFE ID starts with \"spiffe://\"")]
    WrongScheme,
    #[error("trust domain is missing")]
    MissingTrustDomain,
    #[error("trust domain is longer than {MAX_TRUST_DOMAIN_LEN} bytes")]
    TrustDomainTooLong,
    #[error("trust domain must not contain a port")]
    Port,
    #[error("trust domain must not contain user info")]
    UserInfo,
    #[error(
        "trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores"
    )]
    BadTrustDomainChar,
    #[error("SPIFFE ID must not have a query")]
    Query,
    #[error("SPIFFE ID must not have a fragment")]
    Fragment,
    #[error("path cannot contain empty segments")]
    EmptySegment,
    #[error("path cannot contain dot segments")]
    DotSegment,
    #[error("path cannot have a trailing slash")]
    TrailingSlash,
    #[error(
        "path segment characters are limited to letters, numbers, dots, dashes, and underscores"
    )]
    BadPathChar,
}

/// A trust domain name such as `example.org`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Parses a bare trust domain name (`example.org`) or the trust domain of a SPIFFE ID
    /// (`spiffe://example.org/...`).
    pub fn parse(s: &str) -> Result<Self, SpiffeIdError> {
        if s.starts_with(SCHEME) || s.contains("://") {
            return SpiffeId::parse(s).map(|id| id.trust_domain().clone());
        }
        validate_trust_domain(s)?;
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The trust domain's own SPIFFE ID, `spiffe://<td>`, which signing CAs carry.
    pub fn id(&self) -> SpiffeId {
        SpiffeId {
            uri: format!("{SCHEME}{}", self.0),
            td_len: self.0.len(),
            trust_domain: self.clone(),
        }
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustDomain({})", self.0)
    }
}

/// A SPIFFE ID: `spiffe://<trust domain>[/<segment>...]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    uri: String,
    td_len: usize,
    trust_domain: TrustDomain,
}

impl SpiffeId {
    pub fn parse(s: &str) -> Result<Self, SpiffeIdError> {
        let td_len = Self::check(s)?;
        let td = &s[SCHEME.len()..SCHEME.len() + td_len];
        Ok(Self {
            uri: s.to_owned(),
            td_len,
            trust_domain: TrustDomain(td.to_owned()),
        })
    }

    /// Checks `s` as [`SpiffeId::parse`] does, without keeping it: for a hot path that only
    /// needs to know (the ext_authz server reading a peer's principal). Returns the length of
    /// the trust domain name.
    pub fn check(s: &str) -> Result<usize, SpiffeIdError> {
        if s.is_empty() {
            return Err(SpiffeIdError::Empty);
        }
        if s.len() > MAX_SPIFFE_ID_LEN {
            return Err(SpiffeIdError::TooLong);
        }
        let rest = s.strip_prefix(SCHEME).ok_or(SpiffeIdError::WrongScheme)?;
        let td_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let td = &rest[..td_end];
        validate_trust_domain(td)?;
        validate_path(&rest[td_end..])?;
        Ok(td.len())
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The path, empty for a trust domain's own ID, else starting with `/`.
    pub fn path(&self) -> &str {
        &self.uri[SCHEME.len() + self.td_len..]
    }

    /// True for `spiffe://td` without a path: the ID of the trust domain, not of a workload.
    pub fn is_trust_domain_id(&self) -> bool {
        self.path().is_empty()
    }

    /// True for `spiffe://<td>/esm` and every ID under it, in any trust domain: esm's own
    /// identities, which are never granted to a workload.
    pub fn is_reserved_for_esm(&self) -> bool {
        self.path()
            .strip_prefix(RESERVED_PATH)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    pub fn as_str(&self) -> &str {
        &self.uri
    }
}

/// Written and read as its URI string; reading checks it like [`SpiffeId::parse`].
impl serde::Serialize for SpiffeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for SpiffeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({})", self.uri)
    }
}

impl std::str::FromStr for SpiffeId {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

fn validate_trust_domain(td: &str) -> Result<(), SpiffeIdError> {
    if td.is_empty() {
        return Err(SpiffeIdError::MissingTrustDomain);
    }
    if td.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(SpiffeIdError::TrustDomainTooLong);
    }
    if td.contains('@') {
        return Err(SpiffeIdError::UserInfo);
    }
    if td.contains(':') {
        return Err(SpiffeIdError::Port);
    }
    if !td
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(SpiffeIdError::BadTrustDomainChar);
    }
    Ok(())
}

fn validate_path(path: &str) -> Result<(), SpiffeIdError> {
    if path.contains('?') {
        return Err(SpiffeIdError::Query);
    }
    if path.contains('#') {
        return Err(SpiffeIdError::Fragment);
    }
    if path.is_empty() {
        return Ok(());
    }
    // The caller split at the first '/', '?' or '#', and the last two are refused above.
    let segments = path[1..].split('/');
    let n = path[1..].split('/').count();
    for (i, seg) in segments.enumerate() {
        if seg.is_empty() {
            return Err(if i + 1 == n {
                SpiffeIdError::TrailingSlash
            } else {
                SpiffeIdError::EmptySegment
            });
        }
        if seg == "." || seg == ".." {
            return Err(SpiffeIdError::DotSegment);
        }
        if !seg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        {
            return Err(SpiffeIdError::BadPathChar);
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "spiffe_id_tests.rs"]
mod tests;
