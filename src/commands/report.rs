//! `esm report`: compliance reports from the audit store, and `esm report verify`.

use std::path::Path;

use anyhow::Context;
use esm_authz::policy_set::PolicySet;
use esm_authz::source::{PolicySource, SetSpec};
use esm_report::model::PolicyFact;
use esm_report::{Format, Framework, Params, Period, Request};

use crate::cli::{ReportArgs, ReportCommand, ReportFormat};
use crate::exit::usage;
use esm_config::Config;

/// A report handed to `verify` larger than this is not one esm wrote.
const MAX_REPORT: u64 = 256 << 20;

pub fn run(cfg: &Config, args: ReportArgs) -> anyhow::Result<()> {
    if let Some(ReportCommand::Verify { file, key }) = &args.command {
        return verify(cfg, file, key);
    }
    let (Some(framework), Some(from), Some(to), Some(out)) =
        (&args.framework, &args.from, &args.to, &args.out)
    else {
        return Err(usage(
            "esm report needs --framework, --from, --to and --out",
        ));
    };
    let period = Period::parse(from, to)?;
    let framework = load_framework(framework)?;
    let tolerance = humantime::parse_duration(&args.clock_tolerance)
        .map_err(|e| usage(format!("--clock-tolerance {:?}: {e}", args.clock_tolerance)))?;
    let params = Params {
        svid_max_ttl_secs: u64::try_from(cfg.ca.svid_max_ttl.whole_seconds()).ok(),
        clock_tolerance_ns: i64::try_from(tolerance.as_nanos()).unwrap_or(i64::MAX),
        checkpoint_every: cfg.audit.checkpoint_every,
        checkpoint_interval_ns: i64::try_from(cfg.audit.checkpoint_interval.as_nanos())
            .unwrap_or(i64::MAX),
        policies: policy_facts(cfg, &args.policies)?,
        ..Params::default()
    };
    let key = super::audit::public_key(cfg, &args.key).map_err(|e| usage(format!("{e:#}")))?;
    let req = Request {
        framework,
        period,
        params,
        store: crate::audit_store::redacted_url(&cfg.audit.url),
        esm_version: env!("CARGO_PKG_VERSION").to_owned(),
        now_ns: i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos())
            .unwrap_or(i64::MAX),
    };
    if let Some(path) = cfg.audit.url.strip_prefix("sqlite://") {
        // Opening would create an empty store; a report over nothing is a wrong path.
        if !Path::new(path).is_file() {
            return Err(usage(format!("audit store {path} does not exist")));
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = rt.block_on(async {
        // A store that is not a database is the operator's wrong path (exit 2); a server
        // that does not answer or a disk that fails is a run-time failure (exit 1).
        let db = crate::audit_store::open_db_to_read(cfg).await?;
        let r = esm_report::generate(&db, &key, &req).await;
        db.close().await;
        anyhow::Ok(r?)
    })?;
    let format = match args.format {
        ReportFormat::Md => Format::Md,
        ReportFormat::Html => Format::Html,
        ReportFormat::Json => Format::Json,
        ReportFormat::Oscal => Format::Oscal,
    };
    let text = esm_report::seal::sealed(&report, format)?;
    write_file(out, &text)?;
    let failed = report.summary.counts.get("failed").copied().unwrap_or(0);
    if !report.integrity.verified {
        anyhow::bail!(
            "report written to {}: the audit log does not verify ({})",
            out.display(),
            report.integrity.reason.as_deref().unwrap_or("unknown")
        );
    }
    if esm_report::fails(&report) {
        anyhow::bail!(
            "report written to {}: {failed} controls failed",
            out.display()
        );
    }
    eprintln!("report written to {}: no control failed", out.display());
    Ok(())
}

fn load_framework(name: &str) -> anyhow::Result<Framework> {
    if let Some(f) = Framework::builtin(name) {
        return Ok(f?);
    }
    let path = Path::new(name);
    if !path.is_file() {
        return Err(usage(format!(
            "--framework {name:?}: expected soc2, iso27001 or a framework file"
        )));
    }
    let text = super::read_text("--framework ", path, esm_report::framework::MAX_FILE as u64)?;
    Ok(Framework::parse(&text, &path.display().to_string())?)
}

/// Whole or not at all: a report cut short by a full disk must not pass for one.
fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = esm_audit::durable_file::Staged::create(path, 0o644)
        .map_err(|e| usage(format!("--out {}: {e}", path.display())))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.commit())
        .with_context(|| format!("writing {}", path.display()))
}

/// The configured policy sets and any `--policies` versions, each examined for whether it
/// refuses requests it does not grant: an empty input and a stranger asking for `/`.
fn policy_facts(cfg: &Config, extra: &[std::path::PathBuf]) -> anyhow::Result<Vec<PolicyFact>> {
    let mut facts: Vec<PolicyFact> = Vec::new();
    let mut push = |set: PolicySet, source: String| {
        if !facts.iter().any(|f| f.hash == set.hash) {
            facts.push(PolicyFact {
                deny_by_default: denies_by_default(&set),
                hash: set.hash,
                source,
            });
        }
    };
    for spec in &cfg.authz.sets {
        match esm_authz::reload::validate(spec) {
            Ok(set) => push(
                set,
                format!(
                    "policy set {} ({})",
                    spec.name,
                    spec.source.path().display()
                ),
            ),
            Err(e) => {
                tracing::warn!(policy.set = %spec.name, error = %e, "configured policy set not examined")
            }
        }
    }
    let rule = cfg
        .authz
        .sets
        .first()
        .map_or("data.envoy.authz.allow", |s| s.rule.as_str());
    for dir in extra {
        let spec = SetSpec::new("examined", PolicySource::from_path(dir.clone(), None), rule);
        let set = esm_authz::reload::validate(&spec)
            .map_err(|e| usage(format!("--policies {}: {e}", dir.display())))?;
        push(set, dir.display().to_string());
    }
    Ok(facts)
}

fn denies_by_default(set: &PolicySet) -> bool {
    const STRANGER: &str = r#"{"source":{"spiffe_id":"spiffe://esm-report.invalid/nobody","principal":"spiffe://esm-report.invalid/nobody"},"destination":{"spiffe_id":"spiffe://esm-report.invalid/nothing"},"attributes":{"request":{"http":{"method":"GET","path":"/","host":"nothing","headers":{}}}}}"#;
    ["{}", STRANGER].iter().all(|probe| {
        let Ok(input) = regorus::Value::from_json_str(probe) else {
            return false;
        };
        match set.eval(input) {
            // An error or an undefined result is a denial: esm fails closed.
            Ok(result) => !esm_authz::decision::from_result(&result).is_ok_and(|d| d.allowed),
            Err(_) => true,
        }
    })
}

fn verify(cfg: &Config, file: &Path, key: &crate::cli::PublicKeyArg) -> anyhow::Result<()> {
    let key = super::audit::public_key(cfg, key)?;
    let text = super::read_text("", file, MAX_REPORT)?;
    match esm_report::seal::verify(&text, &key)? {
        Ok(v) => {
            println!(
                "ok: {} is intact ({}), computed against the checkpoint at tree size {} signed by key {}",
                file.display(),
                v.digest,
                v.tree_size,
                v.key_id
            );
            Ok(())
        }
        Err(why) => anyhow::bail!("{}: {why}", file.display()),
    }
}
