//! OPA bundles: a `.tar.gz` of `.rego` files, `data.json` / `data.yaml` files, an optional
//! `.manifest` (revision, roots) and an optional `.signatures.json`, as `opa build` writes
//! them. With a verification key configured, a bundle is only accepted when its signature
//! verifies and lists every file with its hash, so a bundle server or a disk that is not
//! trusted cannot change the policy.
//!
//! Reading is bounded (compressed and uncompressed size, entry count, file size); links,
//! absolute paths and `..` are refused rather than skipped.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use serde_json::Value as Json;

use crate::error::{Error, Result};
use crate::jwt::{self, NamedKey};
use crate::policy_set::{SourceFile, MAX_FILES, MAX_FILE_LEN};

/// A bundle archive larger than this is refused before it is opened.
pub const MAX_BUNDLE_LEN: u64 = 64 << 20;
/// Uncompressed, all entries together: a gzip bomb stops here.
pub const MAX_UNPACKED: u64 = 64 << 20;
/// A manifest revision longer than this is refused.
pub const MAX_REVISION: usize = 256;
const MAX_ENTRIES: usize = 4 * MAX_FILES;

/// What `.manifest` says about the bundle.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    pub revision: String,
    /// Data paths (`a/b`) the bundle owns; empty means all of `data`.
    pub roots: Vec<String>,
}

/// The files of a bundle, in the same form a policy directory is read into.
#[derive(Debug, Clone, PartialEq)]
pub struct Bundle {
    pub files: Vec<SourceFile>,
    pub manifest: Manifest,
    /// Whether a signature was checked (false when no key is configured).
    pub verified: bool,
}

fn bad(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Bundle {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// `/a/./b.rego` → `a/b.rego`; `..`, empty names and NUL are refused.
fn clean_name(raw: &str) -> Option<String> {
    let mut parts = Vec::new();
    for p in raw.split('/') {
        match p {
            "" | "." => {}
            ".." => return None,
            p if p.contains('\0') || p.contains('\\') => return None,
            p => parts.push(p),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Reads and, when `key` is given, verifies the bundle at `path`.
pub fn read(path: &Path, key: Option<&[NamedKey]>) -> Result<Bundle> {
    let meta = std::fs::metadata(path).map_err(Error::io(path))?;
    if meta.len() > MAX_BUNDLE_LEN {
        return Err(bad(path, format!("larger than {MAX_BUNDLE_LEN} bytes")));
    }
    let file = std::fs::File::open(path).map_err(Error::io(path))?;
    read_from(file, path, key)
}

/// As [`read`], from the bytes of a bundle (`.tar.gz`); `path` names it in errors.
pub fn read_from(file: impl Read, path: &Path, key: Option<&[NamedKey]>) -> Result<Bundle> {
    let gz = flate2::read::GzDecoder::new(file.take(MAX_BUNDLE_LEN)).take(MAX_UNPACKED + 1);
    let mut archive = tar::Archive::new(gz);
    let mut raw: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut total = 0u64;
    let entries = archive.entries().map_err(|e| bad(path, e))?;
    for (i, entry) in entries.enumerate() {
        if i >= MAX_ENTRIES {
            return Err(bad(path, format!("more than {MAX_ENTRIES} entries")));
        }
        let mut entry = entry.map_err(|e| bad(path, format!("not a tar.gz: {e}")))?;
        let kind = entry.header().entry_type();
        let name_bytes = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&name_bytes).into_owned();
        if kind.is_dir() {
            continue;
        }
        if !kind.is_file() {
            return Err(bad(path, format!("{name}: only regular files are allowed")));
        }
        let clean = clean_name(&name).ok_or_else(|| bad(path, format!("{name}: unsafe path")))?;
        let size = entry.size();
        if size > MAX_FILE_LEN {
            return Err(bad(
                path,
                format!("{clean}: larger than {MAX_FILE_LEN} bytes"),
            ));
        }
        total += size;
        if total > MAX_UNPACKED {
            return Err(bad(
                path,
                format!("unpacks to more than {MAX_UNPACKED} bytes"),
            ));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| bad(path, format!("{clean}: {e}")))?;
        if raw.insert(clean.clone(), bytes).is_some() {
            return Err(bad(path, format!("{clean} appears twice")));
        }
    }
    let verified = match key {
        Some(keys) => {
            verify_signatures(path, &raw, keys)?;
            true
        }
        None => false,
    };
    let manifest = match raw.get(".manifest") {
        Some(m) => parse_manifest(m).map_err(|e| bad(path, format!(".manifest: {e}")))?,
        None => Manifest::default(),
    };
    let mut files = Vec::new();
    for (name, bytes) in raw {
        let base = name.rsplit('/').next().unwrap_or(&name);
        let wanted =
            base.ends_with(".rego") || matches!(base, "data.json" | "data.yaml" | "data.yml");
        if !wanted {
            continue;
        }
        if files.len() >= MAX_FILES {
            return Err(bad(path, format!("more than {MAX_FILES} policy files")));
        }
        let text = String::from_utf8(bytes).map_err(|_| bad(path, format!("{name}: not UTF-8")))?;
        if let Some(why) = outside_roots(&name, &text, &manifest.roots) {
            return Err(bad(path, format!("{name}: {why}")));
        }
        files.push(SourceFile { path: name, text });
    }
    Ok(Bundle {
        files,
        manifest,
        verified,
    })
}

fn parse_manifest(bytes: &[u8]) -> std::result::Result<Manifest, String> {
    let v: Json = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let revision = match v.get("revision") {
        None => String::new(),
        // It is copied into every decision record and a metrics label.
        Some(Json::String(s)) if s.len() > MAX_REVISION => {
            return Err(format!("revision is longer than {MAX_REVISION} bytes"))
        }
        Some(Json::String(s)) => s.clone(),
        Some(_) => return Err("revision is not a string".into()),
    };
    let roots = match v.get("roots") {
        None => Vec::new(),
        Some(Json::Array(a)) => a
            .iter()
            .map(|r| r.as_str().map(|s| s.trim_matches('/').to_owned()))
            .collect::<Option<Vec<_>>>()
            .ok_or("roots must be strings")?,
        Some(_) => return Err("roots is not an array".into()),
    };
    Ok(Manifest { revision, roots })
}

/// The package path of a policy module, from regorus' own parser: the package as the policy
/// set will compile it, not a line that happens to read `package …` (inside a raw string, or
/// after a real `package` clause split over lines). The set is compiled as Rego v1, else v0;
/// the package clause reads the same in both (only whether a module parses differs), so v0
/// is tried only for a module that is not v1.
fn package_path(name: &str, text: &str) -> std::result::Result<Vec<String>, String> {
    let mut first_error = None;
    for v0 in [false, true] {
        let mut engine = regorus::Engine::new();
        engine.set_rego_v0(v0);
        let parsed = engine
            .add_policy(name.to_owned(), text.to_owned())
            .and_then(|_| engine.get_policy_package_components());
        match parsed.map(|mut p| p.pop()) {
            Ok(Some(package)) => return Ok(package.components),
            Ok(None) => {}
            Err(e) => {
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    Err(first_error.unwrap_or_else(|| "no package".into()))
}

/// Whether `path` (data path components) lies at or under one of `roots` (`a/b`).
fn path_under(path: &[String], roots: &[String]) -> bool {
    roots.iter().any(|r| {
        let root: Vec<&str> = r.split('/').collect();
        root.len() <= path.len() && root.iter().zip(path).all(|(a, b)| *a == b)
    })
}

/// Why a file writes outside the manifest's roots, if it does: a data file to its folder's
/// path, a policy to its package's.
fn outside_roots(name: &str, text: &str, roots: &[String]) -> Option<String> {
    if roots.is_empty() || roots.iter().any(String::is_empty) {
        return None;
    }
    if name.ends_with(".rego") {
        return match package_path(name, text) {
            Ok(p) => (!path_under(&p, roots)).then(|| {
                format!(
                    "its package {} is outside the manifest's roots",
                    p.join(".")
                )
            }),
            Err(e) => Some(format!(
                "its package cannot be read to check the manifest's roots: {e}"
            )),
        };
    }
    let dir: Vec<String> = match name.rsplit_once('/') {
        Some((d, _)) => d.split('/').map(str::to_owned).collect(),
        None => Vec::new(),
    };
    (!path_under(&dir, roots)).then(|| "it is outside the manifest's roots".to_owned())
}

/// The hashes a file's signed `hash` may be. OPA signs JSON files over their canonical form
/// ([`crate::bundle_json`]) and everything else over its bytes; the bytes of a JSON file are
/// also accepted, since they bind its content at least as tightly. A JSON file that has no
/// canonical form (malformed, or a key twice) can only match by its bytes.
fn file_hashes(name: &str, bytes: &[u8], alg: &'static ring::digest::Algorithm) -> Vec<String> {
    let digest = |b: &[u8]| hex::encode(ring::digest::digest(alg, b).as_ref());
    let mut out = vec![digest(bytes)];
    if name.ends_with(".json") || name == ".manifest" {
        if let Ok(canon) = crate::bundle_json::canonical(bytes) {
            out.push(digest(canon.as_bytes()));
        }
    }
    out
}

fn verify_signatures(
    path: &Path,
    raw: &BTreeMap<String, Vec<u8>>,
    keys: &[NamedKey],
) -> Result<()> {
    let sigs = raw.get(".signatures.json").ok_or_else(|| {
        bad(
            path,
            "not signed (.signatures.json missing) and a key is configured",
        )
    })?;
    let doc: Json =
        serde_json::from_slice(sigs).map_err(|e| bad(path, format!(".signatures.json: {e}")))?;
    let tokens = doc
        .get("signatures")
        .and_then(Json::as_array)
        .filter(|a| a.len() == 1)
        .ok_or_else(|| bad(path, ".signatures.json: expected exactly one signature"))?;
    let token = tokens[0]
        .as_str()
        .ok_or_else(|| bad(path, ".signatures.json: signature is not a string"))?;
    let t = jwt::decode(token).map_err(|e| bad(path, format!("signature: {e}")))?;
    let alg = t.alg().to_owned();
    if !jwt::verify_any(&t, &alg, keys).map_err(|e| bad(path, format!("signature: {e}")))? {
        return Err(bad(
            path,
            "signature does not verify with the configured key",
        ));
    }
    let listed = t
        .payload
        .get("files")
        .and_then(Json::as_array)
        .ok_or_else(|| bad(path, "signature: no files list"))?;
    let mut seen = std::collections::BTreeSet::new();
    for f in listed {
        let name = f
            .get("name")
            .and_then(Json::as_str)
            .and_then(clean_name)
            .ok_or_else(|| bad(path, "signature: a file without a valid name"))?;
        let want = f.get("hash").and_then(Json::as_str).unwrap_or_default();
        let alg = match f
            .get("algorithm")
            .and_then(Json::as_str)
            .unwrap_or("SHA-256")
        {
            "SHA-256" => &ring::digest::SHA256,
            "SHA-384" => &ring::digest::SHA384,
            "SHA-512" => &ring::digest::SHA512,
            other => return Err(bad(path, format!("signature: unsupported hash {other}"))),
        };
        let bytes = raw
            .get(&name)
            .ok_or_else(|| bad(path, format!("signed file {name} is missing")))?;
        if !file_hashes(&name, bytes, alg).iter().any(|h| h == want) {
            return Err(bad(
                path,
                format!("{name}: hash does not match the signature"),
            ));
        }
        seen.insert(name);
    }
    if let Some(extra) = raw
        .keys()
        .find(|n| n.as_str() != ".signatures.json" && !seen.contains(*n))
    {
        return Err(bad(
            path,
            format!("{extra} is not covered by the signature"),
        ));
    }
    Ok(())
}

#[cfg(test)]
#[path = "bundle_tests.rs"]
pub(crate) mod tests;
