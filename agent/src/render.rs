//! Turning a caller's request into secrets: resolve the names against its entries, follow
//! the shared SVIDs they stand for, and render Envoy `Secret`s with a version per resource.
//! Shared by SDS and the Workload API.

use esm_identity::SpiffeId;

use super::context::{AgentContext, Caller};
use super::entry::Entry;
use super::secrets::{self, resolve, Refusal, Want};
use super::subscriptions::{NotReady, Subscriptions, Svids};
use super::svid_cache::{Opener, SvidSpec};

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

/// The shared SVIDs `ids` stand for, each as the caller's first entry granting it says.
pub fn specs_for(ids: &[SpiffeId], entries: &[&Entry]) -> Vec<SvidSpec> {
    ids.iter()
        .map(|id| SvidSpec::for_entry(id, entries.iter().copied().find(|e| &e.spiffe_id == id)))
        .collect()
}

/// What a stream can answer now.
pub enum Rendering {
    Ready(Vec<Rendered>),
    /// Not yet: an SVID is still being issued, or the CA cannot issue now.
    Waiting(NotReady),
}

/// Follows the SVIDs of `specs` for `caller` on `subs` and returns them, or why not yet.
/// A refusal of the CA on principle refuses the caller.
pub fn svids_for(
    ctx: &AgentContext,
    caller: &Caller,
    specs: &[SvidSpec],
    subs: &mut Subscriptions,
    via: &'static str,
) -> Result<Result<Svids, NotReady>, Refusal> {
    let opener = Opener {
        actor: caller.actor.clone(),
        via,
    };
    subs.keep(&ctx.svids, specs, &opener);
    match subs.current() {
        Err(NotReady::Refused(why)) => {
            Err(Refusal::NotEntitled(format!("issuance refused: {why}")))
        }
        other => Ok(other),
    }
}

/// Resolves `names` for `caller`, follows the SVIDs they stand for, and renders the secrets.
pub fn render(
    ctx: &AgentContext,
    caller: &Caller,
    names: &[String],
    subs: &mut Subscriptions,
) -> Result<Rendering, Refusal> {
    let ca = ctx.ca.borrow().clone();
    // A shared snapshot of the entries; the caller's are borrowed from it, not copied.
    let all = ctx.entries.borrow().clone();
    let entries = caller.entries(&all);
    let wanted = resolve(names, &entries, &ca.trust_domain)?;
    let ids: Vec<_> = wanted
        .iter()
        .filter_map(|(_, w)| match w {
            Want::Svid(id) => Some(id.clone()),
            Want::Bundle => None,
        })
        .collect();
    let specs = specs_for(&ids, &entries);
    let svids = match svids_for(ctx, caller, &specs, subs, "sds")? {
        Ok(svids) => svids,
        Err(waiting) => return Ok(Rendering::Waiting(waiting)),
    };
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
                    .iter()
                    .map(|(_, s)| s)
                    .find(|s| s.spiffe_id == id)
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
    Ok(Rendering::Ready(out))
}

/// The version of a whole response: changes when any resource does.
pub fn version_of(rendered: &[Rendered]) -> String {
    let parts: Vec<&[u8]> = rendered
        .iter()
        .flat_map(|r| [r.name.as_bytes(), r.version.as_bytes()])
        .collect();
    short_hash(&parts)
}
