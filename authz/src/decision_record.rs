//! The audit record of one decision: who (source SPIFFE ID or address), what (method and
//! path, or `connect` for the network filter), outcome, and why.
//!
//! "Who" is the caller the policy saw: the source principal Envoy verified, or — with
//! `authz.xfcc` and no principal — the SPIFFE ID in `x-forwarded-client-cert`, the one the
//! policy read as `input.source.spiffe_id`. Only then the peer that forwarded it (its
//! principal, else its address) goes into the details as `forwarded_by`, so neither is lost.
//! The forwarded ID is found by the view's own reading ([`View::source_spiffe_id`]), so the
//! record cannot name a caller the policy did not see. A request refused before its policy
//! ran (an input it could not be given) names only its peer: no policy saw any caller.
//!
//! The request thread copies the few fields the record needs ([`DecisionRecord`]) and hands
//! them to the audit writer, which makes the event on its own thread
//! ([`esm_audit::writer::LazyEvent`]). The record depends only on the request and the
//! decision, never on how the decision was reached: a memo hit and a fresh evaluation of
//! the same request write the same record.

use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::CheckRequest;
use envoy_types::pb::envoy::config::core::v3::address::Address;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::Peer;
use esm_audit::writer::LazyEvent;
use esm_audit::{kind, Event, Outcome};
use time::OffsetDateTime;

use crate::check::{CheckOptions, Checked, Failure};
use crate::policy_set::PolicySet;
use crate::view::{spiffe_id_of, View};

/// What a decision's record is made of, copied from the request and the decision.
pub struct DecisionRecord {
    time: OffsetDateTime,
    allowed: bool,
    actor: String,
    /// With `authz.xfcc` and no SPIFFE principal: the forwarded SPIFFE ID the policy saw
    /// (at most 2,048 bytes, as every SPIFFE ID), not the header it came in.
    forwarded: Option<String>,
    subject: String,
    /// `METHOD host`, or None for the network filter.
    action: Option<String>,
    correlation_id: String,
    /// The path without its query.
    path: Option<String>,
    failure: Option<(&'static str, String)>,
    dry_run: bool,
    policy_allowed: bool,
    status: Option<u16>,
    set_name: Arc<str>,
    set: Option<Arc<PolicySet>>,
}

/// The caller or callee: its principal, else its address.
fn peer_name(p: Option<&Peer>) -> String {
    let Some(p) = p else {
        return String::new();
    };
    if !p.principal.is_empty() {
        return p.principal.clone();
    }
    match p.address.as_ref().and_then(|a| a.address.as_ref()) {
        Some(Address::SocketAddress(s)) => s.address.clone(),
        _ => String::new(),
    }
}

impl DecisionRecord {
    /// The record of `c`, the decision on `req` by the set named `set_name` (`set`: None
    /// when esm serves no set of that name) under `opts`.
    pub fn of(
        req: &CheckRequest,
        c: &Checked,
        set_name: Arc<str>,
        set: Option<Arc<PolicySet>>,
        opts: &CheckOptions,
    ) -> Self {
        let attrs = req.attributes.as_ref();
        let http = attrs
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref());
        let source = attrs.and_then(|a| a.source.as_ref());
        let forwarded = (opts.input.xfcc
            && spiffe_id_of(source.map_or("", |p| &p.principal)).is_none()
            && !matches!(c.failure, Some((Failure::Input, _))))
        .then(|| forwarded_caller(req, opts))
        .flatten();
        let action = http.map(|h| {
            let mut a = String::with_capacity(h.method.len() + 1 + h.host.len());
            a.push_str(&h.method);
            a.push(' ');
            a.push_str(&h.host);
            a
        });
        Self {
            time: OffsetDateTime::now_utc(),
            allowed: c.decision.allowed,
            actor: peer_name(source),
            forwarded,
            subject: peer_name(attrs.and_then(|a| a.destination.as_ref())),
            action,
            correlation_id: http
                .and_then(|h| h.headers.get("x-request-id"))
                .cloned()
                .unwrap_or_default(),
            path: http.map(|h| h.path.split('?').next().unwrap_or_default().to_owned()),
            failure: c.failure.as_ref().map(|(f, r)| (f.as_str(), r.clone())),
            dry_run: opts.dry_run,
            policy_allowed: c.policy_allowed,
            status: (!c.decision.allowed)
                .then_some(c.decision.http_status)
                .flatten(),
            set_name,
            set,
        }
    }

    pub fn into_event(mut self) -> Event {
        let outcome = if self.allowed {
            Outcome::Allow
        } else {
            Outcome::Deny
        };
        let mut e = Event::new(kind::AUTHZ_DECISION, outcome);
        e.time = self.time;
        let forwarded_by = self
            .forwarded
            .map(|id| std::mem::replace(&mut self.actor, id))
            // A peer on a Unix socket has neither principal nor address: nothing to name.
            .filter(|peer| !peer.is_empty());
        e.actor = self.actor;
        e.subject = self.subject;
        e.action = self.action.unwrap_or_else(|| "connect".into());
        e.correlation_id = self.correlation_id;
        if let Some((f, reason)) = &self.failure {
            e.reason = format!("fail closed ({f}): {reason}");
        } else if self.dry_run && !self.policy_allowed {
            e.reason = "dry-run: the policy would deny".into();
        }
        let set = self.set.as_deref();
        // Keys in byte order: the stored text is written once, not built and re-sorted.
        let mut details = esm_audit::FlatObject::new().bool("dry_run", self.dry_run);
        if let Some(peer) = &forwarded_by {
            details = details.str("forwarded_by", peer);
        }
        details = details
            .opt_str("path", self.path.as_deref())
            .opt_str("policy.hash", set.map(|s| s.hash.as_str()));
        // Only a set read from a bundle has a revision; a directory's records stay as short.
        if let Some(r) = set.map(|s| s.revision.as_str()).filter(|r| !r.is_empty()) {
            details = details.str("policy.revision", r);
        }
        e.details = details
            .opt_str("policy.rule", set.map(|s| s.rule.as_str()))
            .str("policy.set", &self.set_name)
            .bool("policy_allowed", self.policy_allowed)
            .opt_u64("status", self.status.map(u64::from))
            .into();
        e
    }
}

/// The caller `req` forwards in `x-forwarded-client-cert`, read as the policy's view reads
/// it (`headers`, else Envoy's raw `header_map`). Only asked when the request has no SPIFFE
/// principal, so the view's source ID is the forwarded one.
fn forwarded_caller(req: &CheckRequest, opts: &CheckOptions) -> Option<String> {
    let view = View::of(req).ok()?;
    view.source_spiffe_id(&opts.input).map(str::to_owned)
}

impl LazyEvent for DecisionRecord {
    fn into_event(self: Box<Self>) -> Event {
        DecisionRecord::into_event(*self)
    }
}

/// The audit record of `c`, the decision on `req` by the set named `set_name` under `opts`,
/// as the writer makes it.
pub fn decision_event(
    req: &CheckRequest,
    c: &Checked,
    set_name: &str,
    set: Option<Arc<PolicySet>>,
    opts: &CheckOptions,
) -> Event {
    DecisionRecord::of(req, c, Arc::from(set_name), set, opts).into_event()
}
