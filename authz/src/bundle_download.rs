//! Downloading a policy bundle from a bundle server, as OPA's bundle service does: a `GET`
//! with `If-None-Match` so that an unchanged bundle costs a `304` and no body, an optional
//! bearer token, and TLS to roots the operator names. A bundle is kept only once it is
//! verified (signature), compiles and passes its own tests, and it is written to disk
//! atomically with its `ETag`, so a restart while the server is down enforces the last good
//! one instead of nothing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::bundle::MAX_BUNDLE_LEN;
use crate::error::{Error, Result};

/// Where a policy set's bundle comes from and where its last good copy is kept.
#[derive(Clone)]
pub struct RemoteBundle {
    /// `http://` or `https://` URL of the bundle (`.tar.gz`).
    pub url: String,
    /// Sent as `Authorization: Bearer …`; never logged.
    pub token: Option<String>,
    /// Roots for an `https://` server; None: the public WebPKI roots.
    pub roots: Option<Vec<ureq::tls::Certificate<'static>>>,
    /// Each poll waits a random time between these (OPA's `min_delay_seconds` and
    /// `max_delay_seconds`), so a fleet of edge boxes does not poll in step.
    pub poll_min: Duration,
    pub poll_max: Duration,
    /// The last good bundle (`<data dir>/bundles/<set>.tar.gz`); its ETag is beside it.
    pub persisted: PathBuf,
}

impl std::fmt::Debug for RemoteBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteBundle")
            .field("url", &self.url_for_log())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("roots", &self.roots.as_ref().map(Vec::len))
            .field("poll_min", &self.poll_min)
            .field("poll_max", &self.poll_max)
            .field("persisted", &self.persisted)
            .finish()
    }
}

/// What one poll of the server gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Fetched {
    /// `304`: the bundle with the ETag sent is still current.
    NotModified,
    /// `200`: a bundle, and the ETag to send next time (when the server gave one).
    Bundle {
        bytes: Vec<u8>,
        etag: Option<String>,
    },
}

impl RemoteBundle {
    /// The URL without user info or query, which may carry credentials: what logs and
    /// audit records name.
    pub fn url_for_log(&self) -> String {
        let (scheme, rest) = self.url.split_once("://").unwrap_or(("", &self.url));
        let rest = rest.split(['?', '#']).next().unwrap_or_default();
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let host = authority.rsplit('@').next().unwrap_or_default();
        format!("{scheme}://{host}{path}")
    }

    /// The client polls share: bounded in time, no redirects (a token must not follow one
    /// to another host), statuses read rather than raised as errors.
    pub fn agent(&self) -> ureq::Agent {
        let roots = match &self.roots {
            Some(certs) => ureq::tls::RootCerts::new_with_certs(certs),
            None => ureq::tls::RootCerts::WebPki,
        };
        let tls = ureq::tls::TlsConfig::builder().root_certs(roots).build();
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(Duration::from_secs(5)))
            .timeout_global(Some(Duration::from_secs(60)))
            .tls_config(tls)
            .build();
        ureq::Agent::new_with_config(config)
    }

    fn server_error(&self, reason: impl std::fmt::Display) -> Error {
        Error::BundleServer {
            url: self.url_for_log(),
            reason: reason.to_string(),
        }
    }

    /// One `GET` (blocking): `etag` is the ETag of the bundle already held.
    pub fn fetch(&self, agent: &ureq::Agent, etag: Option<&str>) -> Result<Fetched> {
        let mut req = agent.get(&self.url);
        if let Some(t) = &self.token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        if let Some(e) = etag {
            req = req.header("If-None-Match", e);
        }
        let mut resp = req.call().map_err(|e| self.server_error(e))?;
        match resp.status().as_u16() {
            304 => Ok(Fetched::NotModified),
            200 => {
                let etag = resp
                    .headers()
                    .get("etag")
                    .and_then(|v| v.to_str().ok())
                    .filter(|v| !v.is_empty() && v.len() <= 256)
                    .map(str::to_owned);
                let bytes = resp
                    .body_mut()
                    .with_config()
                    .limit(MAX_BUNDLE_LEN)
                    .read_to_vec()
                    .map_err(|e| self.server_error(e))?;
                Ok(Fetched::Bundle { bytes, etag })
            }
            s => Err(self.server_error(format!("answered HTTP {s}"))),
        }
    }

    fn etag_path(&self) -> PathBuf {
        let mut p = self.persisted.clone().into_os_string();
        p.push(".etag");
        p.into()
    }

    /// The ETag of the persisted bundle, when both are on disk.
    pub fn persisted_etag(&self) -> Option<String> {
        if !self.persisted.exists() {
            return None;
        }
        let text = std::fs::read_to_string(self.etag_path()).ok()?;
        let t = text.trim();
        (!t.is_empty() && t.len() <= 256).then(|| t.to_owned())
    }

    /// Replaces the persisted bundle with `bytes` (already verified) and records its ETag:
    /// each file is written beside its target, synced and renamed over it, so a crash
    /// leaves the old bundle or the new one, never a part of one.
    pub fn persist(&self, bytes: &[u8], etag: Option<&str>) -> Result<()> {
        let dir = self.persisted.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
        // The old ETag goes first and the new one last: after a crash in between, no ETag
        // names a bundle other than the one on disk, and the next poll downloads again.
        match std::fs::remove_file(self.etag_path()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io(self.etag_path())(e))
            }
            _ => {}
        }
        write_atomically(&self.persisted, bytes)?;
        if let Some(e) = etag {
            write_atomically(&self.etag_path(), e.as_bytes())?;
        }
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(Error::io(dir))
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.to_path_buf().into_os_string();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    if let Err(e) = written {
        // A full disk leaves no part of a bundle behind.
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(&tmp)(e));
    }
    std::fs::rename(&tmp, path).map_err(Error::io(path))
}

/// How long to wait before the next poll: a uniform draw (`unit` in 0..1) between the
/// bounds after a poll that reached the server; after `failures` polls in a row that did
/// not, 1 s doubling each time, never past `max` — a server back from an outage is seen
/// within seconds, and an unreachable one is not hammered.
pub fn next_poll(min: Duration, max: Duration, failures: u32, unit: f64) -> Duration {
    let max = max.max(min);
    if failures > 0 {
        let backoff = Duration::from_secs(1u64 << (failures - 1).min(16));
        return backoff.min(max);
    }
    let unit = if unit.is_finite() {
        unit.clamp(0.0, 1.0)
    } else {
        0.0
    };
    min + (max - min).mul_f64(unit)
}

/// The certificates of a PEM file of roots for an `https://` bundle server; a file with none
/// is refused, as a wrong path would be.
pub fn parse_roots(
    pem: &[u8],
) -> std::result::Result<Vec<ureq::tls::Certificate<'static>>, String> {
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => return Err(format!("not PEM: {e}")),
        }
    }
    if certs.is_empty() {
        return Err("no CERTIFICATE in it".into());
    }
    Ok(certs)
}
