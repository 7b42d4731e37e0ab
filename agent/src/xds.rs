//! The xDS protocol state of one SDS stream, without I/O: a request goes in and says whether
//! to answer; rendered resources go in and a response comes out, or nothing when the client
//! already has them. Both flavours are here: state of the world ([`Sotw`]) and incremental
//! ([`Delta`]).
//!
//! The rules (Envoy's xDS protocol): every response carries a fresh nonce. In SotW, a request
//! echoing an older nonce than the last response's is stale and ignored; one echoing the last
//! nonce with the same names is an ACK, or a NACK when it carries `error_detail`, and is not
//! answered; new names are answered at once. A NACKed version is never sent again: a push
//! happens only when what is rendered changes. In delta, the client's subscriptions change by
//! what it subscribes and unsubscribes, and a response carries only the resources whose
//! version it does not have, plus the names of those that went away.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
};

use super::render::{version_of, Rendered};
use super::secrets::SECRET_TYPE;

/// What a request asks of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// It answers an older response than the last one sent: ignored.
    Stale,
    /// It accepts the last response and asks for nothing new.
    Ack,
    /// It rejects the last response (Envoy's `error_detail`) and asks for nothing new.
    Nack { detail: String },
    /// It asks for resources (a first request, or a change of names): render and answer.
    /// `nack` is set when it also rejected the last response.
    Subscribe { nack: Option<String> },
}

impl Received {
    /// True when the stream must render and answer.
    pub fn wants_answer(&self) -> bool {
        matches!(self, Self::Subscribe { .. })
    }

    /// Envoy's reason for rejecting the last response, if it did.
    pub fn nack(&self) -> Option<&str> {
        match self {
            Self::Nack { detail } | Self::Subscribe { nack: Some(detail) } => Some(detail),
            _ => None,
        }
    }
}

/// A request for another resource type than secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrongType;

impl std::fmt::Display for WrongType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "this stream serves {SECRET_TYPE}")
    }
}

fn check_type(type_url: &str) -> Result<(), WrongType> {
    if type_url.is_empty() || type_url == SECRET_TYPE {
        Ok(())
    } else {
        Err(WrongType)
    }
}

/// One state-of-the-world stream.
#[derive(Debug, Default)]
pub struct Sotw {
    names: Option<Vec<String>>,
    nonce: u64,
    last_nonce: String,
    last_version: String,
}

impl Sotw {
    /// The names subscribed; `None` until the first request.
    pub fn names(&self) -> Option<&[String]> {
        self.names.as_deref()
    }

    /// Takes in a request.
    pub fn request(&mut self, req: DiscoveryRequest) -> Result<Received, WrongType> {
        check_type(&req.type_url)?;
        let same = self.names.as_ref() == Some(&req.resource_names);
        let nack = req.error_detail.map(|e| e.message);
        if !req.response_nonce.is_empty() {
            if req.response_nonce != self.last_nonce {
                return Ok(Received::Stale);
            }
            if same {
                return Ok(match nack {
                    Some(detail) => Received::Nack { detail },
                    None => Received::Ack,
                });
            }
        }
        self.names = Some(req.resource_names);
        Ok(Received::Subscribe { nack })
    }

    /// The response for what the names render to now: always when `asked` (a request wants
    /// an answer), otherwise only when it differs from the last one sent.
    pub fn respond(&mut self, rendered: Vec<Rendered>, asked: bool) -> Option<DiscoveryResponse> {
        let version = version_of(&rendered);
        if !asked && version == self.last_version {
            return None;
        }
        self.nonce += 1;
        self.last_nonce = self.nonce.to_string();
        self.last_version.clone_from(&version);
        Some(DiscoveryResponse {
            version_info: version,
            resources: rendered.into_iter().map(|r| r.secret).collect(),
            type_url: SECRET_TYPE.into(),
            nonce: self.last_nonce.clone(),
            ..Default::default()
        })
    }
}

/// One incremental (delta) stream.
#[derive(Debug, Default)]
pub struct Delta {
    subscribed: Option<BTreeSet<String>>,
    /// What the client holds: name → version.
    sent: BTreeMap<String, String>,
    nonce: u64,
}

impl Delta {
    /// The names subscribed, in order; `None` until the first request. Empty means every
    /// resource the caller may have (a wildcard subscription).
    pub fn names(&self) -> Option<Vec<String>> {
        self.subscribed
            .as_ref()
            .map(|s| s.iter().cloned().collect())
    }

    /// Takes in a request. The first one also says which versions the client already holds
    /// (after a reconnect), so those are not sent again.
    pub fn request(&mut self, req: DeltaDiscoveryRequest) -> Result<Received, WrongType> {
        check_type(&req.type_url)?;
        let nack = req.error_detail.map(|e| e.message);
        let first = self.subscribed.is_none();
        let subs = self.subscribed.get_or_insert_with(|| {
            self.sent.extend(req.initial_resource_versions);
            BTreeSet::new()
        });
        let mut changed = false;
        for n in req.resource_names_subscribe {
            changed |= subs.insert(n);
        }
        for n in &req.resource_names_unsubscribe {
            changed |= subs.remove(n);
            self.sent.remove(n);
        }
        Ok(match (first || changed, nack) {
            (true, nack) => Received::Subscribe { nack },
            (false, Some(detail)) => Received::Nack { detail },
            (false, None) => Received::Ack,
        })
    }

    /// The response for what the subscribed names render to now: the resources whose
    /// version the client does not hold and the names it holds that are gone; `None` when
    /// there are neither.
    pub fn respond(&mut self, rendered: Vec<Rendered>) -> Option<DeltaDiscoveryResponse> {
        let system_version_info = version_of(&rendered);
        let now: BTreeSet<&str> = rendered.iter().map(|r| r.name.as_str()).collect();
        let removed: Vec<String> = self
            .sent
            .keys()
            .filter(|k| !now.contains(k.as_str()))
            .cloned()
            .collect();
        let changed: Vec<Rendered> = rendered
            .into_iter()
            .filter(|r| self.sent.get(&r.name) != Some(&r.version))
            .collect();
        if changed.is_empty() && removed.is_empty() {
            return None;
        }
        for n in &removed {
            self.sent.remove(n);
        }
        let resources = changed
            .into_iter()
            .map(|r| {
                self.sent.insert(r.name.clone(), r.version.clone());
                Resource {
                    name: r.name,
                    version: r.version,
                    resource: Some(r.secret),
                    ..Default::default()
                }
            })
            .collect();
        self.nonce += 1;
        Some(DeltaDiscoveryResponse {
            system_version_info,
            resources,
            removed_resources: removed,
            type_url: SECRET_TYPE.into(),
            nonce: self.nonce.to_string(),
            ..Default::default()
        })
    }
}

#[cfg(test)]
#[path = "xds_tests.rs"]
mod tests;
