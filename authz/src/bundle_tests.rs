#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;

use serde_json::json;

use super::*;
use crate::jwt::tests::EcSigner;

const POLICY: &str = "package envoy.authz\n\nimport rego.v1\n\ndefault allow := false\n";

/// A `.tar.gz` of `(name, bytes)` entries, written as `opa build` does (leading `/`).
pub(crate) fn targz(dir: &Path, entries: &[(&str, &[u8])]) -> std::path::PathBuf {
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

pub(crate) fn signatures(s: &EcSigner, files: &[(&str, &[u8])]) -> Vec<u8> {
    let listed: Vec<_> = files
        .iter()
        .map(|(n, b)| {
            let hash_input = match crate::bundle_json::canonical(b) {
                Ok(canon) if n.ends_with(".json") => canon.into_bytes(),
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

/// A `.signatures.json` listing `(name, hash hex)` as given: the hashes are what OPA writes,
/// computed here by hand rather than by the code under test.
fn signatures_listing(s: &EcSigner, listed: &[(&str, String)]) -> Vec<u8> {
    let files: Vec<_> = listed
        .iter()
        .map(|(n, h)| json!({"name": n, "algorithm": "SHA-256", "hash": h}))
        .collect();
    let token = s.sign(
        json!({"alg": "ES256", "kid": "bundle"}),
        json!({"files": files}),
    );
    json!({"signatures": [token]}).to_string().into_bytes()
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, b).as_ref())
}

#[test]
fn no_two_number_texts_share_a_file_hash() {
    for (a, b) in [
        ("1", "1.0"),
        ("1.0", "1.00"),
        ("1e2", "100.0"),
        ("100", "1e2"),
        (
            "123456789012345678901234567890",
            "123456789012345678901234567000",
        ),
        ("12345678901234567890", "12345678901234567000"),
        ("0.1", "0.10000000000000001"),
    ] {
        let (a, b) = (format!("{{\"n\": {a}}}"), format!("{{\"n\": {b}}}"));
        let ha = file_hashes("data.json", a.as_bytes(), &ring::digest::SHA256);
        let hb = file_hashes("data.json", b.as_bytes(), &ring::digest::SHA256);
        assert!(
            ha.iter().all(|h| !hb.contains(h)),
            "{a} and {b} share a hash"
        );
    }
}

#[test]
fn a_signed_number_cannot_be_swapped_for_another_text_of_it() {
    let d = tempfile::tempdir().unwrap();
    let s = EcSigner::new();
    let keys = jwt::parse_keys(&s.jwks("bundle")).unwrap();
    // What OPA hashes for {"limit": 123456789012345678901234567890, "a": 1.0}: keys sorted,
    // no whitespace, the numbers as written.
    let opa_canonical = br#"{"a":1.0,"limit":123456789012345678901234567890}"#;
    let sigs = signatures_listing(
        &s,
        &[
            ("envoy/authz/policy.rego", sha256_hex(POLICY.as_bytes())),
            ("data.json", sha256_hex(opa_canonical)),
        ],
    );
    let bundle = |data: &[u8]| {
        targz(
            d.path(),
            &[
                ("/.signatures.json", &sigs[..]),
                ("/envoy/authz/policy.rego", POLICY.as_bytes()),
                ("/data.json", data),
            ],
        )
    };
    let signed = br#"{"limit": 123456789012345678901234567890, "a": 1.0}"#;
    assert!(read(&bundle(signed), Some(&keys)).unwrap().verified);
    for swapped in [
        &br#"{"limit": 123456789012345678901234567000, "a": 1.0}"#[..],
        br#"{"limit": 1.2345678901234568e29, "a": 1.0}"#,
        br#"{"limit": 123456789012345678901234567890, "a": 1}"#,
        br#"{"limit": 123456789012345678901234567890, "a": 1.00}"#,
        br#"{"limit": 123456789012345678901234567890, "a": 1.0, "a": 1.0}"#,
    ] {
        let e = read(&bundle(swapped), Some(&keys)).unwrap_err().to_string();
        assert!(e.contains("hash does not match"), "{e}");
    }
}

const ALLOWED_ROOTS: &[u8] = br#"{"roots": ["allowed"]}"#;

#[test]
fn the_roots_check_reads_the_package_rego_compiles_not_a_line_that_looks_like_one() {
    let d = tempfile::tempdir().unwrap();
    // Each module's real package is outside the roots; a line that reads like an allowed
    // package sits in a raw string after it.
    for module in [
        "package\n\tevil.authz\n\nimport rego.v1\n\nnote := `\npackage allowed.x\n`\n\nallow := true\n",
        "package\tevil\n\nnote := `\npackage allowed.x\n`\n",
        "package# the path is on the next line\nevil.authz\nnote := `\npackage allowed.x\n`\n",
        "package evil[\"authz\"]\nnote := `\npackage allowed.x\n`\n",
    ] {
        let p = targz(
            d.path(),
            &[
                ("/.manifest", ALLOWED_ROOTS),
                ("/allowed/x/policy.rego", module.as_bytes()),
            ],
        );
        let e = read(&p, None).unwrap_err().to_string();
        assert!(e.contains("outside the manifest's roots"), "{module:?}: {e}");
    }
    // The other way round: a real package inside the roots is accepted whatever its strings say.
    for module in [
        "package allowed.x\n\nnote := `\npackage evil\n`\n",
        "package\n  allowed.x\n",
        "package allowed[\"x\"].y\n",
        "package allowed\n",
    ] {
        let p = targz(
            d.path(),
            &[
                ("/.manifest", ALLOWED_ROOTS),
                ("/p.rego", module.as_bytes()),
            ],
        );
        assert_eq!(read(&p, None).unwrap().files.len(), 1, "{module:?}");
    }
    // A root is matched by whole components: "allowedx" is not under "allowed".
    let p = targz(
        d.path(),
        &[
            ("/.manifest", ALLOWED_ROOTS),
            ("/p.rego", b"package allowedx\n"),
        ],
    );
    assert!(read(&p, None).is_err());
    // A module whose package cannot be read is refused when roots are set.
    let p = targz(
        d.path(),
        &[
            ("/.manifest", ALLOWED_ROOTS),
            ("/p.rego", b"no package here\npackage allowed.x\n"),
        ],
    );
    let e = read(&p, None).unwrap_err().to_string();
    assert!(e.contains("cannot be read"), "{e}");
}

#[test]
fn refuses_a_revision_too_long_to_put_in_every_record() {
    let d = tempfile::tempdir().unwrap();
    let manifest = format!(r#"{{"revision": "{}"}}"#, "r".repeat(MAX_REVISION + 1));
    let p = targz(
        d.path(),
        &[
            ("/envoy/authz/policy.rego", POLICY.as_bytes()),
            ("/.manifest", manifest.as_bytes()),
        ],
    );
    let e = read(&p, None).unwrap_err().to_string();
    assert!(e.contains("revision is longer than 256 bytes"), "{e}");
}
