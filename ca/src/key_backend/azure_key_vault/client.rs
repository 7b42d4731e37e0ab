//! A small blocking client for the Key Vault keys REST API: the challenge, the token, bounded
//! retries and one-line errors. Blocking because [`crate::key_backend::KeyBackend`] is.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::auth::{parse_token_response, AccessToken, Credential};
use super::challenge::{self, Challenge};
use super::retry;
use super::BACKEND;
use crate::error::{Error, Result};

/// The REST API version esm speaks. 7.5 is generally available and documented.
pub const API_VERSION: &str = "7.5";
/// The largest response esm reads; a key bundle is a few kilobytes.
const MAX_BODY: u64 = 256 * 1024;

#[derive(Default)]
struct AuthState {
    challenge: Option<Challenge>,
    token: Option<AccessToken>,
}

/// One vault, one identity.
pub struct VaultClient {
    agent: ureq::Agent,
    vault_url: String,
    vault_host: String,
    credential: Credential,
    verify_resource: bool,
    auth: Mutex<AuthState>,
}

impl fmt::Debug for VaultClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VaultClient({})", self.vault_url)
    }
}

/// A request to the vault: `POST /keys/NAME/create`, `GET /keys/NAME/VERSION`, …
pub struct Call<'a> {
    pub method: &'static str,
    pub path: String,
    pub body: Option<Value>,
    /// The key name the request is about, for the error messages.
    pub key: &'a str,
}

struct Reply {
    status: u16,
    www_authenticate: Option<String>,
    retry_after: Option<String>,
    body: String,
}

fn fail(reason: String) -> Error {
    Error::KeyBackend {
        backend: BACKEND,
        reason,
    }
}

impl VaultClient {
    pub fn new(
        vault_url: &str,
        vault_host: String,
        credential: Credential,
        verify_resource: bool,
        roots: Option<Vec<ureq::tls::Certificate<'static>>>,
    ) -> Self {
        let tls = ureq::tls::TlsConfig::builder().root_certs(match roots {
            Some(certs) => ureq::tls::RootCerts::new_with_certs(&certs),
            None => ureq::tls::RootCerts::WebPki,
        });
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // A bearer token must never follow a redirect to another host.
            .max_redirects(0)
            .timeout_connect(Some(Duration::from_secs(5)))
            .timeout_global(Some(Duration::from_secs(30)))
            .tls_config(tls.build())
            .build();
        Self {
            agent: ureq::Agent::new_with_config(config),
            vault_url: vault_url.trim_end_matches('/').to_owned(),
            vault_host,
            credential,
            verify_resource,
            auth: Mutex::new(AuthState::default()),
        }
    }

    pub fn vault_url(&self) -> &str {
        &self.vault_url
    }

    /// Sends `call`, answering the challenge and retrying throttling and server failures.
    pub fn call(&self, call: &Call<'_>) -> Result<Value> {
        self.call_inner(call, false)?
            .ok_or_else(|| Error::Bug("a 404 passed as success".into()))
    }

    /// Like [`VaultClient::call`], but a 404 (no such key) is `None` rather than an error.
    pub fn call_maybe(&self, call: &Call<'_>) -> Result<Option<Value>> {
        self.call_inner(call, true)
    }

    fn call_inner(&self, call: &Call<'_>, absent_ok: bool) -> Result<Option<Value>> {
        let url = format!("{}{}?api-version={API_VERSION}", self.vault_url, call.path);
        let mut attempt = 0u32;
        let mut answered_challenge = false;
        loop {
            let token = self.cached_token();
            let sent = self.send_vault(call, &url, token.as_deref());
            let reply = match sent {
                Ok(r) => r,
                Err(e) => {
                    attempt += 1;
                    match retry::delay(attempt, None, now_unix()) {
                        Some(d) => {
                            tracing::warn!(vault.url = %self.vault_url, error = %e, retry.in_ms = d.as_millis() as u64, "Key Vault unreachable; retrying");
                            std::thread::sleep(d);
                            continue;
                        }
                        None => {
                            return Err(fail(format!(
                                "cannot reach Key Vault {} ({} {}, key {}): {e}",
                                self.vault_url, call.method, call.path, call.key
                            )))
                        }
                    }
                }
            };
            tracing::debug!(vault.url = %self.vault_url, http.method = call.method, http.path = %call.path, http.status = reply.status, "Key Vault reply");
            match reply.status {
                404 if absent_ok => return Ok(None),
                200..=299 => {
                    return serde_json::from_str(&reply.body).map(Some).map_err(|e| {
                        fail(format!(
                            "Key Vault {} sent a reply that is not JSON for key {}: {e}",
                            self.vault_url, call.key
                        ))
                    })
                }
                401 if !answered_challenge => {
                    answered_challenge = true;
                    self.answer_challenge(reply.www_authenticate.as_deref(), token.is_some())?;
                }
                s if retry::is_retryable(s) => {
                    attempt += 1;
                    match retry::delay(attempt, reply.retry_after.as_deref(), now_unix()) {
                        Some(d) => {
                            tracing::warn!(vault.url = %self.vault_url, http.status = s, retry.in_ms = d.as_millis() as u64, "Key Vault throttled or failed; retrying");
                            std::thread::sleep(d);
                        }
                        None => return Err(self.status_error(call, &reply, attempt)),
                    }
                }
                _ => return Err(self.status_error(call, &reply, attempt + 1)),
            }
        }
    }

    fn status_error(&self, call: &Call<'_>, reply: &Reply, attempts: u32) -> Error {
        let said = service_message(&reply.body);
        let hint = match reply.status {
            401 => " (the vault refused the token: check the tenant and the identity)",
            403 => " (grant the identity get, create and sign on keys, e.g. the Key Vault Crypto Officer role)",
            404 => " (no such key, or a wrong vault URL)",
            429 | 500..=599 => " (gave up after retrying)",
            _ => "",
        };
        let tries = if attempts > 1 {
            format!(" after {attempts} attempts")
        } else {
            String::new()
        };
        fail(format!(
            "Key Vault {} answered {} to {} {} for key {}{tries}: {said}{hint}",
            self.vault_url, reply.status, call.method, call.path, call.key
        ))
    }

    fn cached_token(&self) -> Option<String> {
        let mut auth = self.auth.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = auth.token.as_ref().is_some_and(|t| t.fresh(Instant::now()));
        if fresh {
            return auth.token.as_ref().map(|t| t.bearer().to_owned());
        }
        auth.token = None;
        let challenge = auth.challenge.clone()?;
        drop(auth);
        match self.fetch_token(&challenge) {
            Ok(t) => {
                let bearer = t.bearer().to_owned();
                self.auth.lock().unwrap_or_else(|p| p.into_inner()).token = Some(t);
                Some(bearer)
            }
            Err(e) => {
                // Sent without a token, the request gets a 401 whose challenge fetches again
                // and reports this error.
                tracing::warn!(vault.url = %self.vault_url, error = %e, "access token refresh failed");
                None
            }
        }
    }

    /// Takes in a 401's challenge: checks it, then fetches a token for it.
    fn answer_challenge(&self, header: Option<&str>, had_token: bool) -> Result<()> {
        let ch = header.and_then(challenge::parse).ok_or_else(|| {
            fail(format!(
                "Key Vault {} answered 401 without a usable Bearer challenge",
                self.vault_url
            ))
        })?;
        if self.verify_resource
            && !challenge::resource_matches_vault(&ch.resource, &self.vault_host)
        {
            return Err(fail(format!(
                "Key Vault {} asked for a token for {}, which is not the vault's domain: refused",
                self.vault_url, ch.resource
            )));
        }
        if let Some(t) = self.credential.tenant() {
            if !t.eq_ignore_ascii_case(&ch.tenant) {
                return Err(fail(format!(
                    "Key Vault {} belongs to tenant {}, but AZURE_TENANT_ID is {t}",
                    self.vault_url, ch.tenant
                )));
            }
        }
        if had_token {
            tracing::info!(vault.url = %self.vault_url, "Key Vault refused the cached token; fetching a new one");
        }
        let token = self.fetch_token(&ch)?;
        let mut auth = self.auth.lock().unwrap_or_else(|p| p.into_inner());
        auth.challenge = Some(ch);
        auth.token = Some(token);
        Ok(())
    }

    fn fetch_token(&self, ch: &Challenge) -> Result<AccessToken> {
        let req = self.credential.token_request(ch);
        let mut attempt = 0u32;
        loop {
            let issued = Instant::now();
            let sent = match &req.form {
                Some(form) => self
                    .agent
                    .post(&req.url)
                    .send_form(form.iter().map(|(k, v)| (*k, v.as_str()))),
                None => {
                    let mut b = self.agent.get(&req.url).header("Metadata", "true");
                    for (k, v) in &req.query {
                        b = b.query(*k, v);
                    }
                    b.call()
                }
            };
            let (status, retry_after, body) = match sent.and_then(read_reply) {
                Ok(r) => (r.status, r.retry_after, r.body),
                Err(e) => (0, None, e.to_string()),
            };
            if status == 200 {
                let json: Value = serde_json::from_str(&body)
                    .map_err(|_| fail(format!("token endpoint {} sent no JSON", req.url)))?;
                let (token, lifetime) = parse_token_response(&json)
                    .map_err(|e| fail(format!("token endpoint {}: {e}", req.url)))?;
                tracing::debug!(
                    token.lifetime_s = lifetime.as_secs(),
                    "access token obtained"
                );
                return Ok(AccessToken::new(token, issued, lifetime));
            }
            attempt += 1;
            let again = status == 0 || retry::is_retryable(status);
            match retry::delay(attempt, retry_after.as_deref(), now_unix()).filter(|_| again) {
                Some(d) => std::thread::sleep(d),
                None if status == 0 => {
                    return Err(fail(format!(
                        "cannot reach token endpoint {}: {body}",
                        req.url
                    )))
                }
                None => {
                    return Err(fail(format!(
                        "token endpoint {} answered {status}: {}",
                        req.url,
                        service_message(&body)
                    )))
                }
            }
        }
    }

    fn send_vault(
        &self,
        call: &Call<'_>,
        url: &str,
        token: Option<&str>,
    ) -> std::result::Result<Reply, ureq::Error> {
        let auth = token.map(|t| format!("Bearer {t}"));
        let resp = if call.method == "POST" {
            let mut b = self
                .agent
                .post(url)
                .header("Content-Type", "application/json");
            if let Some(a) = &auth {
                b = b.header("Authorization", a);
            }
            let text = call.body.as_ref().map(Value::to_string).unwrap_or_default();
            b.send(text.as_bytes())?
        } else {
            let mut b = self.agent.get(url);
            if let Some(a) = &auth {
                b = b.header("Authorization", a);
            }
            b.call()?
        };
        read_reply(resp)
    }
}

fn read_reply(mut resp: http::Response<ureq::Body>) -> std::result::Result<Reply, ureq::Error> {
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let www_authenticate = header("www-authenticate");
    let retry_after = header("retry-after");
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(MAX_BODY)
        .read_to_string()?;
    Ok(Reply {
        status,
        www_authenticate,
        retry_after,
        body,
    })
}

/// What the service said, on one line: `code: message` from its error JSON, or the start of
/// the body.
pub fn service_message(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let err = parsed.as_ref().and_then(|v| v.get("error"));
    let text = match err {
        Some(Value::Object(o)) => {
            let code = o.get("code").and_then(Value::as_str).unwrap_or("");
            let msg = o.get("message").and_then(Value::as_str).unwrap_or("");
            format!("{code}: {msg}")
        }
        // OAuth errors: {"error": "invalid_client", "error_description": "..."}.
        Some(Value::String(code)) => {
            let desc = parsed
                .as_ref()
                .and_then(|v| v.get("error_description"))
                .and_then(Value::as_str)
                .unwrap_or("");
            format!("{code}: {desc}")
        }
        _ if body.trim().is_empty() => "(empty body)".to_owned(),
        _ => body.to_owned(),
    };
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    one_line.trim().to_owned()
}

fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}
