//! Turning a caller's request into secrets: resolve the names against its entries, issue
//! what is missing or due (recording each issuance), and render Envoy `Secret`s with a
//! version per resource. Shared by SDS and the Workload API.

use std::sync::atomic::Ordering;

use super::context::{AgentContext, Caller};
use super::secrets::{self, resolve, Refusal, Want};
use super::svid_set::SvidSet;

/// One rendered resource: its name, its version and the encoded secret.
pub struct Rendered {
    pub name: String,
    pub version: String,
    pub secret: envoy_types::pb::google::protobuf::Any,
}

fn short_hash(parts: &[&[u8]]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(&(p.len() as u64).to_be_bytes());
        ctx.update(p);
    }
    hex_prefix(ctx.finish().as_ref())
}

fn hex_prefix(b: &[u8]) -> String {
    esm_ca::issuer::hex(&b[..8])
}

/// Issues what `svids` lacks of `ids` (or holds past its refresh time), and records each
/// issuance: the SDS and Workload API paths share it.
pub fn ensure_svids(
    ctx: &AgentContext,
    caller: &Caller,
    ids: &[esm_identity::SpiffeId],
    entries: &[super::entry::Entry],
    ca: &esm_ca::material::CaMaterial,
    svids: &mut SvidSet,
    via: &str,
) -> Result<(), Refusal> {
    let now = time::OffsetDateTime::now_utc();
    let issued = svids
        .ensure(ids, entries, ca, ctx, now)
        .map_err(|e| Refusal::NotEntitled(format!("issuance failed: {e}")))?;
    for svid in issued {
        ctx.metrics.svids_issued.fetch_add(1, Ordering::Relaxed);
        tracing::info!(spiffe.id = %svid.spiffe_id, serial = %svid.serial_hex, caller = %caller.actor, via, "SVID issued");
        if let Some(sink) = &ctx.audit {
            let e = esm_ca::evidence::svid_issued(&svid, &caller.actor, via, now);
            if let Err(err) = sink.try_append(e) {
                tracing::warn!(error = %err, "SVID issuance not recorded");
            }
        }
    }
    Ok(())
}

/// Resolves `names` for `caller`, issues what is missing or due, and renders the secrets.
pub fn render(
    ctx: &AgentContext,
    caller: &Caller,
    names: &[String],
    svids: &mut SvidSet,
) -> Result<Vec<Rendered>, Refusal> {
    let ca = ctx.ca.borrow().clone();
    let entries = caller.entries(&ctx.entries.borrow());
    let refs: Vec<_> = entries.iter().collect();
    let wanted = resolve(names, &refs, &ca.trust_domain)?;
    let ids: Vec<_> = wanted
        .iter()
        .filter_map(|(_, w)| match w {
            Want::Svid(id) => Some(id.clone()),
            Want::Bundle => None,
        })
        .collect();
    ensure_svids(ctx, caller, &ids, &entries, &ca, svids, "sds")?;
    let bundle_version = short_hash(&[ca.bundle_pem.as_bytes()]);
    let mut out = Vec::with_capacity(wanted.len());
    for (name, want) in wanted {
        let (version, secret) = match want {
            Want::Bundle => (
                bundle_version.clone(),
                secrets::bundle_secret(&name, &ca.bundle_pem),
            ),
            Want::Svid(id) => {
                let svid = svids
                    .get(&id)
                    .ok_or_else(|| Refusal::NotEntitled(format!("no SVID for {id}")))?;
                (svid.serial_hex.clone(), secrets::tls_secret(&name, svid))
            }
        };
        out.push(Rendered {
            secret: secrets::to_any(&secret),
            name,
            version,
        });
    }
    Ok(out)
}

/// The version of a whole response: changes when any resource does.
pub fn version_of(rendered: &[Rendered]) -> String {
    let parts: Vec<&[u8]> = rendered
        .iter()
        .flat_map(|r| [r.name.as_bytes(), r.version.as_bytes()])
        .collect();
    short_hash(&parts)
}
