#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::bundle::tests::{signatures, targz};
use crate::jwt::tests::EcSigner;
use crate::jwt::{self, NamedKey};

/// What the test bundle server answers, and what it was asked.
#[derive(Default)]
struct Served {
    status: u16,
    body: Vec<u8>,
    etag: Option<String>,
    /// Claimed length when it differs from the body's (a hostile server).
    content_length: Option<u64>,
    /// Each request's (If-None-Match, Authorization).
    seen: Vec<(Option<String>, Option<String>)>,
}

/// A one-thread HTTP/1.1 server on loopback: a 304 when If-None-Match matches the ETag,
/// else `status` with `body`. It serves until the test process ends.
fn server(served: Arc<Mutex<Served>>) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let (mut inm, mut auth) = (None, None);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                let value = || line.split_once(':').map(|(_, v)| v.trim().to_owned());
                if lower.starts_with("if-none-match:") {
                    inm = value();
                } else if lower.starts_with("authorization:") {
                    auth = value();
                }
            }
            let mut s = served.lock().unwrap();
            s.seen.push((inm.clone(), auth));
            let head = if inm.is_some() && inm == s.etag {
                "HTTP/1.1 304 Not Modified\r\ncontent-length: 0\r\n".to_owned()
            } else {
                let len = s.content_length.unwrap_or(s.body.len() as u64);
                let mut h = format!("HTTP/1.1 {} X\r\ncontent-length: {len}\r\n", s.status);
                if let Some(e) = &s.etag {
                    h.push_str(&format!("etag: {e}\r\n"));
                }
                h
            };
            let not_modified = head.starts_with("HTTP/1.1 304");
            let _ = conn.write_all(format!("{head}connection: close\r\n\r\n").as_bytes());
            if !not_modified {
                let _ = conn.write_all(&s.body);
            }
        }
    });
    format!("http://{addr}/bundles/authz.tar.gz")
}

const ALLOW: &str = "package envoy.authz\n\nimport rego.v1\n\ndefault allow := true\n";
const DENY: &str = "package envoy.authz\n\nimport rego.v1\n\ndefault allow := false\n";

/// A bundle with one policy and a manifest naming `revision`, signed by `signer` when given.
fn bundle_bytes(
    dir: &std::path::Path,
    rego: &str,
    revision: &str,
    signer: Option<&EcSigner>,
) -> Vec<u8> {
    let manifest = format!(r#"{{"revision": "{revision}"}}"#);
    let files: Vec<(&str, &[u8])> = vec![
        ("envoy/authz/policy.rego", rego.as_bytes()),
        (".manifest", manifest.as_bytes()),
    ];
    let sigs = signer.map(|s| signatures(s, &files));
    let mut all = files.clone();
    if let Some(s) = &sigs {
        all.push((".signatures.json", s));
    }
    std::fs::read(targz(dir, &all)).unwrap()
}

fn spec(url: &str, persisted: PathBuf, keys: Option<Vec<NamedKey>>) -> SetSpec {
    let remote = RemoteBundle {
        url: url.to_owned(),
        token: Some("s3cret".into()),
        roots: None,
        poll_min: Duration::from_millis(50),
        poll_max: Duration::from_millis(100),
        persisted: persisted.clone(),
    };
    let mut s = SetSpec::new(
        "default",
        PolicySource::Bundle {
            path: persisted,
            keys,
        },
        "data.envoy.authz.allow",
    );
    s.remote = Some(Arc::new(remote));
    s
}

fn persisted_revision(s: &SetSpec) -> String {
    crate::reload::validate(s).unwrap().revision
}

#[test]
fn an_etag_304_keeps_the_bundle_and_a_new_revision_is_taken() {
    let d = tempfile::tempdir().unwrap();
    let served = Arc::new(Mutex::new(Served {
        status: 200,
        body: bundle_bytes(d.path(), ALLOW, "r1", None),
        etag: Some("\"r1\"".into()),
        ..Served::default()
    }));
    let s = spec(
        &server(served.clone()),
        d.path().join("b/default.tar.gz"),
        None,
    );
    let remote = s.remote.clone().unwrap();
    let agent = remote.agent();

    let first = poll_once(&s, &remote, &agent, None);
    assert_eq!(first.polled, Polled::New, "{:?}", first.error);
    assert_eq!(first.etag.as_deref(), Some("\"r1\""));
    assert_eq!(persisted_revision(&s), "r1");
    assert_eq!(remote.persisted_etag().as_deref(), Some("\"r1\""));

    let again = poll_once(&s, &remote, &agent, first.etag);
    assert_eq!(again.polled, Polled::NotModified);
    assert_eq!(persisted_revision(&s), "r1");

    {
        let mut srv = served.lock().unwrap();
        srv.body = bundle_bytes(d.path(), DENY, "r2", None);
        srv.etag = Some("\"r2\"".into());
    }
    let next = poll_once(&s, &remote, &agent, again.etag);
    assert_eq!(next.polled, Polled::New);
    assert_eq!(persisted_revision(&s), "r2");
    let seen = served.lock().unwrap().seen.clone();
    assert_eq!(seen[0], (None, Some("Bearer s3cret".into())));
    assert_eq!(seen[1].0.as_deref(), Some("\"r1\""));
    assert_eq!(seen[2].0.as_deref(), Some("\"r1\""));
}

#[test]
fn a_bundle_with_a_bad_signature_is_refused_and_the_last_good_one_kept() {
    let d = tempfile::tempdir().unwrap();
    let good = EcSigner::new();
    let keys = jwt::parse_keys(&good.jwks("bundle")).unwrap();
    let served = Arc::new(Mutex::new(Served {
        status: 200,
        body: bundle_bytes(d.path(), ALLOW, "r1", Some(&good)),
        etag: Some("a".into()),
        ..Served::default()
    }));
    let s = spec(
        &server(served.clone()),
        d.path().join("default.tar.gz"),
        Some(keys),
    );
    let remote = s.remote.clone().unwrap();
    let agent = remote.agent();
    assert_eq!(poll_once(&s, &remote, &agent, None).polled, Polled::New);

    {
        let mut srv = served.lock().unwrap();
        srv.body = bundle_bytes(d.path(), DENY, "evil", Some(&EcSigner::new()));
        srv.etag = Some("b".into());
    }
    let p = poll_once(&s, &remote, &agent, Some("a".into()));
    assert_eq!(p.polled, Polled::Refused);
    // The refused bundle's ETag is sent next, so it is not downloaded and refused again.
    assert_eq!(p.etag.as_deref(), Some("b"));
    let err = p.error.unwrap();
    assert!(err.to_string().contains("does not verify"), "{err}");
    assert_eq!(persisted_revision(&s), "r1");
    assert_eq!(remote.persisted_etag().as_deref(), Some("a"));
    let e = refused_event(&s, &remote, &err);
    assert_eq!(e.outcome, esm_audit::Outcome::Failure);
    assert_eq!(e.actor, remote.url_for_log());
    let details = e.details.to_value();
    assert_eq!(details["changed.via"], "esm:bundle-service");

    {
        let mut srv = served.lock().unwrap();
        srv.body = bundle_bytes(d.path(), DENY, "unsigned", None);
        srv.etag = Some("c".into());
    }
    let p = poll_once(&s, &remote, &agent, Some("b".into()));
    assert_eq!(p.polled, Polled::Refused);
    assert!(p.error.unwrap().to_string().contains("not signed"));
}

#[test]
fn hostile_or_failing_servers_leave_the_persisted_bundle_alone() {
    let d = tempfile::tempdir().unwrap();
    let served = Arc::new(Mutex::new(Served {
        status: 200,
        body: bundle_bytes(d.path(), ALLOW, "r1", None),
        ..Served::default()
    }));
    let s = spec(
        &server(served.clone()),
        d.path().join("default.tar.gz"),
        None,
    );
    let remote = s.remote.clone().unwrap();
    let agent = remote.agent();
    assert_eq!(poll_once(&s, &remote, &agent, None).polled, Polled::New);
    // No ETag from the server: none is kept, and every poll downloads.
    assert_eq!(remote.persisted_etag(), None);

    // (status, body, claimed length, outcome, what the error says)
    type Case = (u16, Vec<u8>, Option<u64>, Polled, &'static str);
    let cases: Vec<Case> = vec![
        (500, b"oops".to_vec(), None, Polled::Failed, "HTTP 500"),
        (404, Vec::new(), None, Polled::Failed, "HTTP 404"),
        (200, b"not a gzip".to_vec(), None, Polled::Refused, "bundle"),
        (
            200,
            b"\x1f\x8b\x08\x00".to_vec(),
            None,
            Polled::Refused,
            "bundle",
        ),
        // A body cut short of its length, and one longer than any bundle may be.
        (
            200,
            vec![0x1f; 100],
            Some(1000),
            Polled::Failed,
            "bundle server",
        ),
        (
            200,
            vec![0u8; (crate::bundle::MAX_BUNDLE_LEN + 1) as usize],
            None,
            Polled::Failed,
            "bundle server",
        ),
    ];
    for (status, body, content_length, want, says) in cases {
        {
            let mut srv = served.lock().unwrap();
            srv.status = status;
            srv.body = body;
            srv.content_length = content_length;
        }
        let p = poll_once(&s, &remote, &agent, None);
        let err = p.error.map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(p.polled, want, "HTTP {status}: {err}");
        assert!(err.contains(says), "HTTP {status}: {err}");
        assert_eq!(persisted_revision(&s), "r1");
    }
}

#[test]
fn a_first_start_without_server_or_persisted_bundle_says_both() {
    let d = tempfile::tempdir().unwrap();
    // A port nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let s = spec(
        &format!("http://127.0.0.1:{port}/b.tar.gz"),
        d.path().join("default.tar.gz"),
        None,
    );
    let e = first_download(&s).unwrap_err().to_string();
    assert!(e.contains("no bundle persisted at"), "{e}");
    assert!(e.contains(&format!("127.0.0.1:{port}")), "{e}");

    // With a persisted bundle, start does not wait for the server.
    std::fs::write(
        d.path().join("default.tar.gz"),
        bundle_bytes(d.path(), ALLOW, "kept", None),
    )
    .unwrap();
    first_download(&s).unwrap();
    assert_eq!(persisted_revision(&s), "kept");
}

#[tokio::test]
async fn the_service_persists_a_new_revision_and_wakes_the_reload() {
    let d = tempfile::tempdir().unwrap();
    let served = Arc::new(Mutex::new(Served {
        status: 200,
        body: bundle_bytes(d.path(), ALLOW, "r1", None),
        etag: Some("1".into()),
        ..Served::default()
    }));
    let s = spec(
        &server(served.clone()),
        d.path().join("default.tar.gz"),
        None,
    );
    let (_spec_tx, spec_rx) = watch::channel(Arc::new(s.clone()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let woken = Arc::new(Notify::new());
    let task = tokio::spawn(run(spec_rx, woken.clone(), None, stop_rx));
    tokio::time::timeout(Duration::from_secs(10), woken.notified())
        .await
        .expect("first bundle");
    assert_eq!(persisted_revision(&s), "r1");
    {
        let mut srv = served.lock().unwrap();
        srv.body = bundle_bytes(d.path(), DENY, "r2", None);
        srv.etag = Some("2".into());
    }
    tokio::time::timeout(Duration::from_secs(10), woken.notified())
        .await
        .expect("second bundle");
    assert_eq!(persisted_revision(&s), "r2");
    let _ = stop_tx.send(true);
    task.await.unwrap();
    let c = counts().into_iter().find(|c| c.set == "default").unwrap();
    assert!(c.new >= 2 && c.last_success_unix > 0, "{c:?}");
}

#[test]
fn logged_urls_carry_no_credentials() {
    let r = |url: &str| RemoteBundle {
        url: url.into(),
        token: None,
        roots: None,
        poll_min: Duration::ZERO,
        poll_max: Duration::ZERO,
        persisted: PathBuf::new(),
    };
    assert_eq!(
        r("https://user:pw@bundles.example:8443/a/b.tar.gz?sig=x#f").url_for_log(),
        "https://bundles.example:8443/a/b.tar.gz"
    );
    assert_eq!(r("http://h").url_for_log(), "http://h");
    let shown = format!(
        "{:?}",
        RemoteBundle {
            token: Some("s3cret".into()),
            ..r("http://h/x")
        }
    );
    assert!(!shown.contains("s3cret"), "{shown}");
}

#[test]
fn polls_spread_between_the_bounds_and_back_off_after_failures() {
    let (min, max) = (Duration::from_secs(60), Duration::from_secs(120));
    assert_eq!(next_poll(min, max, 0, 0.0), min);
    assert_eq!(next_poll(min, max, 0, 1.0), max);
    assert_eq!(next_poll(min, max, 0, 0.5), Duration::from_secs(90));
    assert_eq!(next_poll(min, max, 0, f64::NAN), min);
    assert_eq!(next_poll(min, max, 1, 0.5), Duration::from_secs(1));
    assert_eq!(next_poll(min, max, 3, 0.5), Duration::from_secs(4));
    assert_eq!(next_poll(min, max, 40, 0.5), max);
    // Bounds given the wrong way round still wait at least `min`.
    assert_eq!(next_poll(max, min, 0, 0.0), max);
}

/// A CA and a server certificate for 127.0.0.1 it signed: (CA PEM, server rustls config).
fn tls_server_config() -> (String, Arc<rustls::ServerConfig>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".into()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    (ca.pem(), Arc::new(config))
}

/// One TLS connection at a time: reads the request head, answers 200 with `body`.
fn tls_server(config: Arc<rustls::ServerConfig>, body: Vec<u8>) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(tcp) = conn else { continue };
            let Ok(server) = rustls::ServerConnection::new(config.clone()) else {
                continue;
            };
            let mut tls = rustls::StreamOwned::new(server, tcp);
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match std::io::Read::read(&mut tls, &mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            if !head.ends_with(b"\r\n\r\n") {
                continue;
            }
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = tls.write_all(reply.as_bytes());
            let _ = tls.write_all(&body);
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    format!("https://{addr}/b.tar.gz")
}

#[test]
fn an_https_server_is_trusted_only_under_the_configured_roots() {
    let d = tempfile::tempdir().unwrap();
    let (ca_pem, config) = tls_server_config();
    let url = tls_server(config, bundle_bytes(d.path(), ALLOW, "tls", None));
    let with_roots = |pem: &str| {
        let mut s = spec(&url, d.path().join("default.tar.gz"), None);
        let mut remote = (**s.remote.as_ref().unwrap()).clone();
        remote.roots = Some(parse_roots(pem.as_bytes()).unwrap());
        s.remote = Some(Arc::new(remote));
        s
    };
    let (other_ca, _) = tls_server_config();
    let s = with_roots(&other_ca);
    let r = s.remote.clone().unwrap();
    let p = poll_once(&s, &r, &r.agent(), None);
    assert_eq!(p.polled, Polled::Failed, "{:?}", p.error);
    assert!(!d.path().join("default.tar.gz").exists());

    let s = with_roots(&ca_pem);
    let r = s.remote.clone().unwrap();
    let p = poll_once(&s, &r, &r.agent(), None);
    assert_eq!(p.polled, Polled::New, "{:?}", p.error);
    assert_eq!(persisted_revision(&s), "tls");
    assert!(parse_roots(b"not pem").is_err());
}
