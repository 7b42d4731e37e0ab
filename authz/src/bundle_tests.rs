#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;

use serde_json::json;

use super::*;
use crate::jwt::tests::EcSigner;

const POLICY: &str = "package envoy.authz\n\nimport rego.v1\n\ndefault allow := false\n";

/// A `.tar.gz` of `(name, bytes)` entries, written as `opa build` does (leading `/`).
fn targz(dir: &Path, entries: &[(&str, &[u8])]) -> std::path::PathBuf {
    let path = dir.join("bundle.tar.gz");
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&path).unwrap(),
        flate2::Compression::fast(),
    );
    let mut b = tar::Builder::new(gz);
    for (name, bytes) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        // Set the name bytes directly so hostile names reach the reader unchanged.
        let field = &mut h.as_old_mut().name;
        field[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        b.append(&h, *bytes).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap().flush().unwrap();
    path
}

fn signatures(s: &EcSigner, files: &[(&str, &[u8])]) -> Vec<u8> {
    let listed: Vec<_> = files
        .iter()
        .map(|(n, b)| {
            let mut canon = String::new();
            let hash_input = match serde_json::from_slice::<Json>(b) {
                Ok(v) if n.ends_with(".json") => {
                    canonical_json(&v, &mut canon);
                    canon.into_bytes()
                }
                _ => b.to_vec(),
            };
            json!({"name": n, "algorithm": "SHA-256",
                   "hash": hex::encode(ring::digest::digest(&ring::digest::SHA256, &hash_input))})
        })
        .collect();
    let token = s.sign(
        json!({"alg": "ES256", "kid": "bundle"}),
        json!({"files": listed, "scope": "write"}),
    );
    json!({"signatures": [token]}).to_string().into_bytes()
}

#[test]
fn reads_policies_data_and_manifest() {
    let d = tempfile::tempdir().unwrap();
    let p = targz(
        d.path(),
        &[
            (
                "/.manifest",
                br#"{"revision": "r42", "roots": ["envoy", "services"]}"#,
            ),
            ("/envoy/authz/policy.rego", POLICY.as_bytes()),
            ("/services/data.json", br#"{"a": 1}"#),
            ("/README.md", b"ignored"),
        ],
    );
    let b = read(&p, None).unwrap();
    assert_eq!(b.manifest.revision, "r42");
    assert!(!b.verified);
    let names: Vec<_> = b.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(names, ["envoy/authz/policy.rego", "services/data.json"]);
}

#[test]
fn refuses_files_outside_the_manifest_roots() {
    let d = tempfile::tempdir().unwrap();
    let p = targz(
        d.path(),
        &[
            ("/.manifest", br#"{"roots": ["services"]}"#),
            ("/envoy/authz/policy.rego", POLICY.as_bytes()),
        ],
    );
    let e = read(&p, None).unwrap_err().to_string();
    assert!(e.contains("outside the manifest's roots"), "{e}");
}

#[test]
fn refuses_hostile_archives() {
    let d = tempfile::tempdir().unwrap();
    let big = vec![b' '; MAX_FILE_LEN as usize + 1];
    for (entries, want) in [
        (vec![("../escape.rego", POLICY.as_bytes())], "unsafe path"),
        (vec![("/a/../../b.rego", POLICY.as_bytes())], "unsafe path"),
        (vec![("/p.rego", &big[..])], "larger than"),
        (
            vec![
                ("/p.rego", POLICY.as_bytes()),
                ("p.rego", POLICY.as_bytes()),
            ],
            "twice",
        ),
        (vec![("/p.rego", &[0xff, 0xfe][..])], "not UTF-8"),
        (vec![("/.manifest", &b"{\"roots\": 7}"[..])], ".manifest"),
    ] {
        let p = targz(d.path(), &entries);
        let e = read(&p, None).unwrap_err().to_string();
        assert!(e.contains(want), "{e} should contain {want}");
    }
    let p = d.path().join("garbage.tar.gz");
    std::fs::write(&p, b"\x1f\x8bnot really gzip").unwrap();
    assert!(read(&p, None).is_err());
    std::fs::write(&p, b"plain text").unwrap();
    assert!(read(&p, None).is_err());
}

#[test]
fn refuses_links() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("bundle.tar.gz");
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&path).unwrap(),
        flate2::Compression::fast(),
    );
    let mut b = tar::Builder::new(gz);
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "p.rego", "/etc/passwd").unwrap();
    b.into_inner().unwrap().finish().unwrap();
    let e = read(&path, None).unwrap_err().to_string();
    assert!(e.contains("only regular files"), "{e}");
}

#[test]
fn a_signed_bundle_verifies_and_any_change_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let s = EcSigner::new();
    let keys = jwt::parse_keys(&s.jwks("bundle")).unwrap();
    let files: [(&str, &[u8]); 2] = [
        ("envoy/authz/policy.rego", POLICY.as_bytes()),
        ("data.json", br#"{"z": 1, "a": "<&>"}"#),
    ];
    let sigs = signatures(&s, &files);
    let signed = |extra: &[(&str, &[u8])]| {
        let mut all = vec![(".signatures.json", &sigs[..])];
        all.extend(extra.iter().copied());
        targz(d.path(), &all)
    };
    let ok = read(&signed(&files), Some(&keys)).unwrap();
    assert!(ok.verified);
    assert_eq!(ok.files.len(), 2);

    let tampered: [(&str, &[u8]); 2] = [files[0], ("data.json", br#"{"z": 2, "a": "<&>"}"#)];
    let e = read(&signed(&tampered), Some(&keys))
        .unwrap_err()
        .to_string();
    assert!(e.contains("hash does not match"), "{e}");

    let extra: [(&str, &[u8]); 3] = [files[0], files[1], ("extra.rego", POLICY.as_bytes())];
    let e = read(&signed(&extra), Some(&keys)).unwrap_err().to_string();
    assert!(e.contains("not covered"), "{e}");

    let e = read(&signed(&files[..1]), Some(&keys))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing"), "{e}");

    let other = jwt::parse_keys(&EcSigner::new().jwks("bundle")).unwrap();
    let e = read(&signed(&files), Some(&other)).unwrap_err().to_string();
    assert!(e.contains("does not verify"), "{e}");

    let e = read(&targz(d.path(), &files), Some(&keys))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not signed"), "{e}");
}

#[test]
fn canonical_json_sorts_keys_and_escapes_like_go() {
    let mut out = String::new();
    canonical_json(
        &json!({"b": [1, {"d": null, "c": true}], "a": "<&>"}),
        &mut out,
    );
    assert_eq!(
        out,
        r#"{"a":"\u003c\u0026\u003e","b":[1,{"c":true,"d":null}]}"#
    );
}
