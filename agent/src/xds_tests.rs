#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;
use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::rpc::Status as RpcStatus;

fn rendered(items: &[(&str, &str)]) -> Vec<Rendered> {
    items
        .iter()
        .map(|(name, version)| Rendered {
            name: (*name).into(),
            version: (*version).into(),
            secret: Any {
                type_url: SECRET_TYPE.into(),
                value: format!("{name}@{version}").into_bytes(),
            },
        })
        .collect()
}

fn sotw_req(names: &[&str], nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        resource_names: names.iter().map(|s| s.to_string()).collect(),
        type_url: SECRET_TYPE.into(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

fn nack(mut r: DiscoveryRequest, why: &str) -> DiscoveryRequest {
    r.error_detail = Some(RpcStatus {
        code: 3,
        message: why.into(),
        ..Default::default()
    });
    r
}

/// A SotW stream that has answered its first request for `names`; returns the nonce.
fn served(s: &mut Sotw, names: &[&str]) -> String {
    assert!(s.request(sotw_req(names, "")).unwrap().wants_answer());
    s.respond(rendered(&[("default", "v1")]), true)
        .unwrap()
        .nonce
}

#[test]
fn sotw_first_request_is_answered_with_a_fresh_nonce() {
    let mut s = Sotw::default();
    assert_eq!(s.names(), None);
    let got = s.request(sotw_req(&["default"], "")).unwrap();
    assert_eq!(got, Received::Subscribe { nack: None });
    assert_eq!(s.names().unwrap(), ["default"]);
    let r = s.respond(rendered(&[("default", "v1")]), true).unwrap();
    assert_eq!(r.nonce, "1");
    assert_eq!(r.type_url, SECRET_TYPE);
    assert_eq!(r.resources.len(), 1);
    assert!(!r.version_info.is_empty());
}

#[test]
fn sotw_ack_of_the_last_response_is_not_answered() {
    let mut s = Sotw::default();
    let nonce = served(&mut s, &["default"]);
    let got = s.request(sotw_req(&["default"], &nonce)).unwrap();
    assert_eq!(got, Received::Ack);
    assert!(!got.wants_answer());
    // Nothing changed since: a push is not made either.
    assert!(s.respond(rendered(&[("default", "v1")]), false).is_none());
}

#[test]
fn sotw_nack_is_reported_and_the_same_version_never_pushed_again() {
    let mut s = Sotw::default();
    let nonce = served(&mut s, &["default"]);
    let got = s
        .request(nack(sotw_req(&["default"], &nonce), "bad cert"))
        .unwrap();
    assert_eq!(
        got,
        Received::Nack {
            detail: "bad cert".into()
        }
    );
    assert_eq!(got.nack(), Some("bad cert"));
    assert!(s.respond(rendered(&[("default", "v1")]), false).is_none());
    // A new version is pushed.
    let r = s.respond(rendered(&[("default", "v2")]), false).unwrap();
    assert_eq!(r.nonce, "2");
}

#[test]
fn sotw_stale_nonce_is_ignored_even_with_new_names() {
    let mut s = Sotw::default();
    let first = served(&mut s, &["default"]);
    let second = s
        .respond(rendered(&[("default", "v2")]), false)
        .unwrap()
        .nonce;
    assert_ne!(first, second);
    assert_eq!(
        s.request(sotw_req(&["ROOTCA"], &first)).unwrap(),
        Received::Stale
    );
    assert_eq!(s.names().unwrap(), ["default"], "names unchanged");
    assert_eq!(
        s.request(sotw_req(&["default"], "garbage")).unwrap(),
        Received::Stale
    );
}

#[test]
fn sotw_new_names_with_the_current_nonce_are_answered_even_if_unchanged() {
    let mut s = Sotw::default();
    let nonce = served(&mut s, &["default"]);
    let got = s.request(sotw_req(&["default", "ROOTCA"], &nonce)).unwrap();
    assert!(got.wants_answer());
    let r = s.respond(rendered(&[("default", "v1")]), true).unwrap();
    assert_ne!(r.nonce, nonce);
    // A NACK that also changes names: reported, and answered.
    let got = s
        .request(nack(sotw_req(&["ROOTCA"], &r.nonce), "no"))
        .unwrap();
    assert_eq!(got.nack(), Some("no"));
    assert!(got.wants_answer());
}

#[test]
fn sotw_first_request_of_a_reconnect_with_an_old_nonce_is_stale() {
    // Envoy reconnecting opens a new stream whose first request may carry the version and
    // nonce it had: with no response sent on this stream, that nonce is stale.
    let mut s = Sotw::default();
    let mut again = sotw_req(&["default"], "7");
    again.version_info = "abc".into();
    assert_eq!(s.request(again).unwrap(), Received::Stale);
    assert!(s
        .request(sotw_req(&["default"], ""))
        .unwrap()
        .wants_answer());
    assert_eq!(s.respond(rendered(&[]), true).unwrap().nonce, "1");
}

#[test]
fn sotw_push_only_when_the_rendering_changes() {
    let mut s = Sotw::default();
    served(&mut s, &["default"]);
    assert!(s.respond(rendered(&[("default", "v1")]), false).is_none());
    assert!(s.respond(rendered(&[("default", "v2")]), false).is_some());
    assert!(s.respond(rendered(&[("default", "v2")]), false).is_none());
}

#[test]
fn refuses_another_resource_type() {
    let mut r = sotw_req(&["default"], "");
    r.type_url = "type.googleapis.com/envoy.config.cluster.v3.Cluster".into();
    assert_eq!(Sotw::default().request(r), Err(WrongType));
    let d = DeltaDiscoveryRequest {
        type_url: "x".into(),
        ..Default::default()
    };
    assert_eq!(Delta::default().request(d), Err(WrongType));
    // An empty type is this stream's type (later requests may leave it out).
    assert!(Sotw::default().request(sotw_req(&[], "")).is_ok());
}

fn delta_req(sub: &[&str], unsub: &[&str], nonce: &str) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: SECRET_TYPE.into(),
        resource_names_subscribe: sub.iter().map(|s| s.to_string()).collect(),
        resource_names_unsubscribe: unsub.iter().map(|s| s.to_string()).collect(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

fn names(r: &DeltaDiscoveryResponse) -> Vec<&str> {
    r.resources.iter().map(|x| x.name.as_str()).collect()
}

#[test]
fn delta_add_sends_only_the_new_resource() {
    let mut d = Delta::default();
    assert!(d
        .request(delta_req(&["ROOTCA"], &[], ""))
        .unwrap()
        .wants_answer());
    assert_eq!(d.names().unwrap(), ["ROOTCA"]);
    let r = d.respond(rendered(&[("ROOTCA", "b1")])).unwrap();
    assert_eq!(names(&r), ["ROOTCA"]);
    let got = d.request(delta_req(&["web"], &[], &r.nonce)).unwrap();
    assert!(got.wants_answer());
    let r2 = d
        .respond(rendered(&[("ROOTCA", "b1"), ("web", "s1")]))
        .unwrap();
    assert_eq!(names(&r2), ["web"]);
    assert!(r2.removed_resources.is_empty());
    assert_ne!(r2.nonce, r.nonce);
}

#[test]
fn delta_remove_is_named_and_unsubscribe_is_quiet() {
    let mut d = Delta::default();
    d.request(delta_req(&["ROOTCA", "web"], &[], "")).unwrap();
    d.respond(rendered(&[("ROOTCA", "b1"), ("web", "s1")]))
        .unwrap();
    // The entry granting `web` went away: its removal is sent.
    let r = d.respond(rendered(&[("ROOTCA", "b1")])).unwrap();
    assert!(r.resources.is_empty());
    assert_eq!(r.removed_resources, ["web"]);
    // The client unsubscribing: nothing to send (it knows).
    assert!(d
        .request(delta_req(&[], &["ROOTCA"], &r.nonce))
        .unwrap()
        .wants_answer());
    assert!(d.respond(rendered(&[])).is_none());
    assert_eq!(d.names().unwrap(), ["web"]);
}

#[test]
fn delta_ack_and_nack_without_changes_ask_for_nothing() {
    let mut d = Delta::default();
    d.request(delta_req(&["ROOTCA"], &[], "")).unwrap();
    let r = d.respond(rendered(&[("ROOTCA", "b1")])).unwrap();
    assert_eq!(
        d.request(delta_req(&[], &[], &r.nonce)).unwrap(),
        Received::Ack
    );
    let mut n = delta_req(&[], &[], &r.nonce);
    n.error_detail = Some(RpcStatus {
        message: "rejected".into(),
        ..Default::default()
    });
    assert_eq!(
        d.request(n).unwrap(),
        Received::Nack {
            detail: "rejected".into()
        }
    );
    // The rejected version is not sent again; a new one is.
    assert!(d.respond(rendered(&[("ROOTCA", "b1")])).is_none());
    assert_eq!(
        names(&d.respond(rendered(&[("ROOTCA", "b2")])).unwrap()),
        ["ROOTCA"]
    );
}

#[test]
fn delta_resubscribe_keeps_what_the_client_already_holds() {
    let mut d = Delta::default();
    let mut first = delta_req(&["ROOTCA", "web"], &[], "");
    first.initial_resource_versions = [("ROOTCA".to_string(), "b1".to_string())].into();
    assert!(d.request(first).unwrap().wants_answer());
    let r = d
        .respond(rendered(&[("ROOTCA", "b1"), ("web", "s1")]))
        .unwrap();
    assert_eq!(names(&r), ["web"], "ROOTCA b1 is held already");
}

#[test]
fn delta_first_request_without_names_is_a_wildcard() {
    let mut d = Delta::default();
    assert!(d.request(delta_req(&[], &[], "")).unwrap().wants_answer());
    assert_eq!(d.names().unwrap(), Vec::<String>::new());
}

#[test]
fn delta_resubscribe_after_unsubscribe_sends_the_resource_again() {
    let mut d = Delta::default();
    d.request(delta_req(&["ROOTCA"], &[], "")).unwrap();
    let r = d.respond(rendered(&[("ROOTCA", "b1")])).unwrap();
    d.request(delta_req(&[], &["ROOTCA"], &r.nonce)).unwrap();
    assert!(d.respond(rendered(&[])).is_none());
    assert!(d
        .request(delta_req(&["ROOTCA"], &[], &r.nonce))
        .unwrap()
        .wants_answer());
    let again = d.respond(rendered(&[("ROOTCA", "b1")])).unwrap();
    assert_eq!(
        names(&again),
        ["ROOTCA"],
        "the client dropped it, so it is sent"
    );
}

#[test]
fn sotw_resubscribe_to_earlier_names_is_answered() {
    let mut s = Sotw::default();
    let n1 = served(&mut s, &["default"]);
    assert!(s
        .request(sotw_req(&["ROOTCA"], &n1))
        .unwrap()
        .wants_answer());
    let n2 = s
        .respond(rendered(&[("ROOTCA", "b1")]), true)
        .unwrap()
        .nonce;
    assert!(s
        .request(sotw_req(&["default"], &n2))
        .unwrap()
        .wants_answer());
    let r = s.respond(rendered(&[("default", "v1")]), true).unwrap();
    assert_eq!(r.resources.len(), 1);
}
