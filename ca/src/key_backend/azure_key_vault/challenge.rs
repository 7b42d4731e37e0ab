//! The Key Vault authentication challenge: a request without a token is answered 401 with
//! `WWW-Authenticate: Bearer authorization="https://login.microsoftonline.com/<tenant>",
//! resource="https://vault.azure.net"`. The vault, not esm, says which tenant it belongs to and
//! which audience its tokens must carry (sovereign clouds and managed HSM differ), so esm reads
//! both from the challenge instead of guessing them.

/// What a vault's 401 asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The tenant id (or name) taken from the last path segment of the authority.
    pub tenant: String,
    /// The audience, e.g. `https://vault.azure.net`; the token scope is this + `/.default`.
    pub resource: String,
}

impl Challenge {
    /// The OAuth 2.0 scope to ask the token endpoint for.
    pub fn scope(&self) -> String {
        format!("{}/.default", self.resource.trim_end_matches('/'))
    }
}

/// Parses a `WWW-Authenticate` header value. `None` when it is not a Bearer challenge with an
/// authority and a resource (or scope) that esm can use.
pub fn parse(header: &str) -> Option<Challenge> {
    let rest = header.trim_start();
    let scheme_end = rest.find(char::is_whitespace)?;
    if !rest[..scheme_end].eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = params(&rest[scheme_end..]);
    let get = |k: &str| {
        params
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    };
    let authority = get("authorization").or_else(|| get("authorization_uri"))?;
    let resource = match get("resource") {
        Some(r) => r.to_owned(),
        // Newer services send `scope="https://vault.azure.net/.default"` instead.
        None => get("scope")?.trim_end_matches("/.default").to_owned(),
    };
    let tenant = authority
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|t| !t.is_empty() && !t.contains(':'))?;
    if !resource.starts_with("https://") || !tenant.bytes().all(tenant_byte) {
        return None;
    }
    Some(Challenge {
        tenant: tenant.to_owned(),
        resource,
    })
}

fn tenant_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_'
}

/// `k1="v1", k2=v2` into pairs; quoted values may hold commas.
fn params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim_start_matches([' ', ',']);
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim().to_owned();
        let after = &rest[eq + 1..];
        let (value, tail) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (after[..end].trim(), &after[end..]),
                None => (after.trim(), ""),
            }
        };
        out.push((key, value.to_owned()));
        rest = tail.trim_start_matches([' ', ',']);
    }
    out
}

/// Whether the challenge's audience belongs to the vault: its host must be the vault host or a
/// parent domain of it (`vault.azure.net` for `myvault.vault.azure.net`). Without this check a
/// vault URL that points somewhere else could ask for a token for any other Azure service
/// (Resource Manager, Graph) and receive it.
pub fn resource_matches_vault(resource: &str, vault_host: &str) -> bool {
    let Some(host) = resource
        .strip_prefix("https://")
        .map(|r| r.split(['/', ':']).next().unwrap_or(""))
    else {
        return false;
    };
    let host = host.to_ascii_lowercase();
    let vault = vault_host.to_ascii_lowercase();
    !host.is_empty()
        && (vault == host
            || vault
                .strip_suffix(host.as_str())
                .is_some_and(|p| p.ends_with('.')))
}
