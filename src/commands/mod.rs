//! One module per subcommand; each loads what it needs and calls into the crates.

mod admin_stream;
mod agent;
mod audit;
mod audit_tail;
mod authz_tls;
mod ca;
mod cert;
mod entry;
mod init;
mod key_backends;
mod policy;
mod report;
mod serve;
mod serve_reload;

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::Context;

use crate::cli::{BundleCommand, BundleFormat, CaCommand, CertCommand, Cli, Command, ConfigArgs};
use crate::exit::usage;
use esm_config::Config;

pub fn run(cli: Cli, env: &BTreeMap<String, String>) -> anyhow::Result<()> {
    match cli.command {
        Command::Init(args) => init::run(args, env),
        Command::Serve { config } => serve::run(config.path(), load(&config, env)?, env),
        Command::Cert {
            command: CertCommand::Issue(args),
        } => {
            let cfg = load(&args.config, env)?;
            cert::issue(&cfg, env, args)
        }
        Command::Bundle {
            command: BundleCommand::Show { format, config },
        } => bundle_show(&load(&config, env)?, env, format),
        Command::Ca { command } => match command {
            CaCommand::Rotate { step, root, config } => {
                ca::rotate(&load(&config, env)?, env, step, root)
            }
            CaCommand::Show { config } => ca::show(&load(&config, env)?, env),
        },
        Command::Policy { command } => policy::run(command),
        Command::Audit { command } => {
            audit::run(&load(audit_config_args(&command), env)?, env, command)
        }
        Command::Entry { command } => entry::run(command, env),
        Command::Report(args) => {
            let cfg = load(&args.config, env)?;
            report::run(&cfg, args)
        }
    }
}

fn audit_config_args(c: &crate::cli::AuditCommand) -> &ConfigArgs {
    use crate::cli::AuditCommand as A;
    match c {
        A::Verify { config, .. }
        | A::Export { config, .. }
        | A::Tail { config, .. }
        | A::Prove { config, .. }
        | A::Consistency { config, .. }
        | A::VerifyProof { config, .. }
        | A::Retain { config, .. }
        | A::Key { config, .. } => config,
    }
}

fn load(args: &ConfigArgs, env: &BTreeMap<String, String>) -> anyhow::Result<Config> {
    let config = Config::load(&args.path(), env).map_err(|e| usage(e.chain()))?;
    crate::logging::set_format(config.telemetry.log_format);
    Ok(config)
}

pub use key_backends::{ca_store, pkcs11_store};

/// The Key Vault store of an azure-key-vault configuration (nothing sent yet).
pub fn azure_key_vault(
    cfg: &Config,
    env: &BTreeMap<String, String>,
) -> anyhow::Result<esm_ca::key_backend::azure_key_vault::AzureKeyVaultStore> {
    let akv = cfg
        .ca
        .azure_key_vault
        .as_ref()
        .context("no [ca.azure_key_vault] table")?;
    Ok(esm_ca::key_backend::azure_key_vault::AzureKeyVaultStore::new(akv, env)?)
}

fn bundle_show(
    cfg: &Config,
    env: &BTreeMap<String, String>,
    format: BundleFormat,
) -> anyhow::Result<()> {
    let store = ca_store(cfg, env)?;
    let state = store.load()?;
    let bundle = store.bundle(&state, time::OffsetDateTime::now_utc())?;
    let text = match format {
        BundleFormat::Pem => bundle.to_pem(),
        BundleFormat::Spiffe => {
            let mut s = serde_json::to_string_pretty(&bundle.to_spiffe_json()?)?;
            s.push('\n');
            s
        }
    };
    std::io::stdout()
        .write_all(text.as_bytes())
        .context("writing to stdout")
}

/// Reads at most one byte more than `max` of `path`, so a caller can refuse a huge file
/// without reading it all. `label` (e.g. `"--csr "`) starts the message of a file that does
/// not open.
pub fn read_at_most(label: &str, path: &std::path::Path, max: u64) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let f =
        std::fs::File::open(path).map_err(|e| usage(format!("{label}{}: {e}", path.display())))?;
    let mut buf = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(buf)
}

/// A UTF-8 text file of at most `max` bytes; anything else is the caller's error.
pub fn read_text(label: &str, path: &std::path::Path, max: u64) -> anyhow::Result<String> {
    let buf = read_at_most(label, path, max)?;
    if buf.len() as u64 > max {
        return Err(usage(format!(
            "{label}{}: larger than {max} bytes",
            path.display()
        )));
    }
    String::from_utf8(buf).map_err(|_| usage(format!("{label}{}: not UTF-8 text", path.display())))
}
