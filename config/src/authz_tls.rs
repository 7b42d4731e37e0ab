//! `authz.tls` and `authz.allowed_spiffe_ids`: the ext_authz TCP listener over mutual TLS,
//! and the SPIFFE IDs of the Envoys allowed to call it.

use std::net::SocketAddr;

use esm_identity::{SpiffeId, TrustDomain};

use crate::Error;

const TLS: &str = "authz.tls";
const ALLOWED: &str = "authz.allowed_spiffe_ids";

/// The ext_authz TCP listener's mutual TLS: esm presents `spiffe://<td>/esm/authz`, and a
/// caller must present an SVID of the trust domain whose SPIFFE ID is listed (any, when
/// the list is empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthzTls {
    pub allowed_spiffe_ids: Vec<SpiffeId>,
}

/// Checks the two keys as written; `listen` is `authz.listen`, which TLS needs.
pub(crate) fn parse(
    tls: bool,
    allowed: &[String],
    listen: Option<SocketAddr>,
) -> crate::Result<Option<AuthzTls>> {
    let mut ids = Vec::with_capacity(allowed.len());
    for text in allowed {
        let id =
            SpiffeId::parse(text).map_err(|e| Error::bad_value(ALLOWED, format!("{text:?}"), e))?;
        if id.is_trust_domain_id() {
            return Err(Error::bad_value(
                ALLOWED,
                format!("{text:?}"),
                "a trust domain's own ID names no Envoy: give the SPIFFE ID with its path",
            ));
        }
        if id.is_reserved_for_esm() {
            return Err(Error::bad_value(
                ALLOWED,
                format!("{text:?}"),
                esm_identity::spiffe_id::RESERVED_WHY,
            ));
        }
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    if !tls {
        if !ids.is_empty() {
            return Err(Error::rule(
                ALLOWED,
                format!("{ALLOWED} is set but {TLS} is false: nothing would check the list"),
            ));
        }
        return Ok(None);
    }
    if listen.is_none() {
        return Err(Error::rule(
            TLS,
            format!("{TLS} is true but authz.listen is empty: mutual TLS is for the TCP listener"),
        ));
    }
    Ok(Some(AuthzTls {
        allowed_spiffe_ids: ids,
    }))
}

/// Every allowed SPIFFE ID must be of `trust_domain`: the listener admits only SVIDs that
/// chain to this CA's bundle, so an ID of another trust domain could never call.
pub(crate) fn check_trust_domain(
    tls: Option<&AuthzTls>,
    trust_domain: &TrustDomain,
) -> crate::Result<()> {
    let ids = tls.map_or(&[][..], |t| t.allowed_spiffe_ids.as_slice());
    match ids.iter().find(|id| id.trust_domain() != trust_domain) {
        Some(id) => Err(Error::bad_value(
            ALLOWED,
            format!("{:?}", id.as_str()),
            format!("not of the trust domain {trust_domain}"),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
#[path = "authz_tls_tests.rs"]
mod tests;
