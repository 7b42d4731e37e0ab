//! Entra ID access tokens for the vault: a service principal's client secret (the
//! `AZURE_TENANT_ID`/`AZURE_CLIENT_ID`/`AZURE_CLIENT_SECRET` variables the Azure SDKs read) or
//! the VM's managed identity through IMDS. Tokens are cached until shortly before they expire.
//!
//! Nothing here derives `Debug`: the secret and the tokens must never reach a log line.

use std::fmt;
use std::time::{Duration, Instant};

use super::challenge::Challenge;

/// The client secret. Its bytes are never printed.
pub struct ClientSecret(String);

impl ClientSecret {
    pub fn new(s: String) -> Option<Self> {
        (!s.is_empty()).then_some(Self(s))
    }
    pub(super) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientSecret(<redacted>)")
    }
}

/// How esm proves who it is to Entra ID.
pub enum Credential {
    /// OAuth 2.0 client credentials at `{authority_host}/{tenant}/oauth2/v2.0/token`.
    ClientSecret {
        authority_host: String,
        tenant: String,
        client_id: String,
        secret: ClientSecret,
    },
    /// The instance metadata service; `client_id` picks a user-assigned identity.
    ManagedIdentity {
        endpoint: String,
        client_id: Option<String>,
    },
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ClientSecret {
                authority_host,
                tenant,
                client_id,
                ..
            } => write!(
                f,
                "ClientSecret {{ authority_host: {authority_host}, tenant: {tenant}, client_id: {client_id} }}"
            ),
            Self::ManagedIdentity { endpoint, client_id } => {
                write!(f, "ManagedIdentity {{ endpoint: {endpoint}, client_id: {client_id:?} }}")
            }
        }
    }
}

impl Credential {
    /// The method, URL and form body (or none) of a token request for `resource`.
    pub(super) fn token_request(&self, challenge: &Challenge) -> TokenRequest {
        match self {
            Self::ClientSecret {
                authority_host,
                tenant,
                client_id,
                secret,
            } => TokenRequest {
                url: format!(
                    "{}/{tenant}/oauth2/v2.0/token",
                    authority_host.trim_end_matches('/')
                ),
                form: Some(vec![
                    ("grant_type", "client_credentials".to_owned()),
                    ("client_id", client_id.clone()),
                    ("client_secret", secret.expose().to_owned()),
                    ("scope", challenge.scope()),
                ]),
                query: Vec::new(),
            },
            Self::ManagedIdentity {
                endpoint,
                client_id,
            } => {
                let mut query = vec![
                    ("api-version", "2018-02-01".to_owned()),
                    (
                        "resource",
                        challenge.resource.trim_end_matches('/').to_owned(),
                    ),
                ];
                if let Some(id) = client_id {
                    query.push(("client_id", id.clone()));
                }
                TokenRequest {
                    url: endpoint.clone(),
                    form: None,
                    query,
                }
            }
        }
    }

    /// The tenant a client secret is for; a managed identity has no say in it.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Self::ClientSecret { tenant, .. } => Some(tenant),
            Self::ManagedIdentity { .. } => None,
        }
    }
}

pub(super) struct TokenRequest {
    pub url: String,
    /// Client credentials: POSTed as `application/x-www-form-urlencoded`.
    pub form: Option<Vec<(&'static str, String)>>,
    /// IMDS: a GET with these query parameters and `Metadata: true`.
    pub query: Vec<(&'static str, String)>,
}

/// An access token. Its text is never printed.
pub struct AccessToken {
    secret: String,
    refresh_at: Instant,
}

impl AccessToken {
    pub fn new(secret: String, issued: Instant, lifetime: Duration) -> Self {
        Self {
            secret,
            refresh_at: issued + refresh_after(lifetime),
        }
    }
    pub fn bearer(&self) -> &str {
        &self.secret
    }
    pub fn fresh(&self, now: Instant) -> bool {
        now < self.refresh_at
    }
}

/// How long a token of `lifetime` is used: until five minutes before it expires, or for half
/// its life when it is shorter than ten minutes, so a clock skew or a slow request never sends
/// an expired token.
pub fn refresh_after(lifetime: Duration) -> Duration {
    let margin = Duration::from_secs(300).min(lifetime / 2);
    lifetime.saturating_sub(margin)
}

/// The token and its lifetime from a token endpoint's JSON. `expires_in` is a number from
/// Entra ID and a string from IMDS.
pub fn parse_token_response(body: &serde_json::Value) -> Result<(String, Duration), String> {
    let token = body
        .get("access_token")
        .and_then(|v| v.as_str())
        .filter(|t| !t.is_empty())
        .ok_or("the token response has no access_token")?;
    let secs = match body.get("expires_in") {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or("the token response has no valid expires_in")?;
    Ok((token.to_owned(), Duration::from_secs(secs)))
}
