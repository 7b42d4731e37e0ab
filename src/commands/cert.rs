//! `esm cert issue`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use esm_ca::audit_events;
use esm_ca::csr::MAX_CSR_LEN;
use esm_ca::issuer::{issue as issue_svid, LeafKey, SvidRequest};
use esm_identity::SpiffeId;

use crate::cli::IssueArgs;
use crate::exit::usage;
use esm_config::{duration, Config};

pub fn issue(cfg: &Config, env: &BTreeMap<String, String>, args: IssueArgs) -> anyhow::Result<()> {
    let id = SpiffeId::parse(&args.spiffe_id)
        .map_err(|e| usage(format!("--spiffe-id {:?}: {e}", args.spiffe_id)))?;
    let ttl = args
        .ttl
        .as_deref()
        .map(|t| duration("--ttl", t).map_err(|e| usage(e.to_string())))
        .transpose()?;
    let actor = crate::audit_store::cli_actor();
    let key = match &args.csr {
        None => LeafKey::Generate,
        Some(path) => match esm_ca::csr::validate(
            &super::read_at_most("--csr ", path, MAX_CSR_LEN as u64)?,
            &id,
        ) {
            Ok(csr) => LeafKey::Csr(csr),
            Err(e) => {
                // A refused CSR is evidence too; the refusal is what the caller sees either way.
                let now = time::OffsetDateTime::now_utc();
                let event = audit_events::svid_refused(id.as_str(), &actor, &e.to_string(), now);
                if let Err(rec) = crate::audit_store::record_now(cfg, env, vec![event]) {
                    tracing::error!(error = %rec, "could not record the refused CSR");
                }
                return Err(e.into());
            }
        },
    };
    let store = super::ca_store(cfg, env)?;
    let state = store.load()?;
    let ca = store.signing_ca(&state)?;
    let now = time::OffsetDateTime::now_utc();
    let svid = match issue_svid(
        &ca,
        &cfg.issuance_policy(),
        SvidRequest {
            spiffe_id: &id,
            ttl,
            dns_names: &args.dns_names,
            key,
        },
        now,
    ) {
        Ok(svid) => svid,
        Err(e @ esm_ca::Error::Reserved(_)) => {
            // Someone asked for esm's own identity: worth a record, not only a message.
            let event = audit_events::svid_refused(id.as_str(), &actor, &e.to_string(), now);
            if let Err(rec) = crate::audit_store::record_now(cfg, env, vec![event]) {
                tracing::error!(error = %rec, "could not record the refused issuance");
            }
            return Err(e.into());
        }
        Err(e) => return Err(e.into()),
    };
    let bundle = store.bundle(&state, now)?;
    // Durable evidence first: an SVID that exists must be in the log.
    let seq = crate::audit_store::record_now(
        cfg,
        env,
        vec![audit_events::svid_issued(&svid, &actor, "cli", now)],
    )?;

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    write_atomic(
        &args.out.join("svid.pem"),
        svid.chain_pem().as_bytes(),
        0o644,
    )?;
    if let Some(k) = &svid.private_key {
        write_atomic(&args.out.join("svid.key"), k.to_pem().as_bytes(), 0o600)?;
    }
    write_atomic(
        &args.out.join("bundle.pem"),
        bundle.to_pem().as_bytes(),
        0o644,
    )?;
    store.record_issued(&svid, now)?;
    println!(
        "issued {} serial {} valid until {} → {} (audit seq {})",
        svid.spiffe_id,
        svid.serial_hex,
        esm_ca::rfc3339(svid.not_after),
        args.out.display(),
        seq.first().copied().unwrap_or_default()
    );
    Ok(())
}

/// Writes next to the target and renames over it, so a reader never sees half a file.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    esm_audit::durable_file::replace(path, bytes, mode)
        .with_context(|| format!("writing {}", path.display()))
}
