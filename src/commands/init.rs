//! `esm init`: a new data dir with its configuration and CA.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use esm_ca::key_backend::KeyAlgorithm;
use esm_ca::store::{InitOptions, Upstream};
use esm_identity::TrustDomain;

use crate::cli::{InitArgs, KeyBackendArg};
use crate::exit::usage;
use esm_config::{default_toml, Config};

pub fn run(args: InitArgs, env: &BTreeMap<String, String>) -> anyhow::Result<()> {
    let td = TrustDomain::parse(&args.trust_domain)
        .map_err(|e| usage(format!("--trust-domain {:?}: {e}", args.trust_domain)))?;
    let algorithm = KeyAlgorithm::parse(&args.key_algorithm)
        .ok_or_else(|| usage(format!("--key-algorithm {:?}", args.key_algorithm)))?;
    let (backend, audit_backend, backend_toml) = backend_section(&args)?;
    // Read and check everything before writing anything.
    let upstream = match (&args.upstream_cert, &args.upstream_key) {
        (Some(c), Some(k)) => Some(read_upstream(c, k)?),
        _ => None,
    };
    let config_path = args.dir.join("esm.toml");
    if config_path.exists() {
        return Err(usage(format!(
            "{} already exists: this data dir is initialised",
            config_path.display()
        )));
    }
    let toml = default_toml(&td, algorithm, backend, audit_backend) + &backend_toml;
    // The key backends are reached (module loaded, token found, PIN checked) before the data
    // dir is touched: a wrong PIN or a missing token leaves nothing behind.
    let cfg = Config::parse(&toml, args.dir.clone(), env).map_err(|e| usage(e.chain()))?;
    let store = super::ca_store(&cfg, env)?;
    store.check_keys()?;
    crate::audit_key::check(&cfg, env)?;
    let created_dir = !args.dir.exists();
    let result = (|| {
        create_data_dir(&args.dir, created_dir)?;
        let now = time::OffsetDateTime::now_utc();
        let state = store.init(
            InitOptions {
                trust_domain: td.clone(),
                algorithm,
                upstream,
            },
            &cfg.rotation_policy(),
            now,
        )?;
        if let Some(esm_authz::source::PolicySource::Dir(dir)) =
            cfg.authz.sets.first().map(|s| &s.source)
        {
            write_default_policies(dir, &td)?;
        }
        // The audit log starts with its trust domain's birth; its key is made now too, and
        // where it is kept is part of that first event's custody record.
        let audit_key = crate::audit_key::open(&cfg, env)?;
        let mut custody = store.key_custody(&state)?;
        if let Some(roles) = custody.as_object_mut() {
            roles.insert("audit".into(), audit_key.custody());
        }
        let event = esm_ca::audit_events::ca_initialized(
            &state,
            &custody,
            &crate::audit_store::cli_actor(),
            now,
        );
        crate::audit_store::record_now_with(&cfg, audit_key, vec![event])?;
        write_owner_only(&config_path, toml.as_bytes())?;
        anyhow::Ok(state)
    })();
    let state = match result {
        Ok(s) => s,
        Err(e) => {
            if created_dir {
                let _ = std::fs::remove_dir_all(&args.dir);
            }
            return Err(e);
        }
    };
    let root = state.active_root().context("no root after init")?;
    let int = state
        .active_intermediate()
        .context("no intermediate after init")?;
    println!("initialised {} for trust domain {td}", args.dir.display());
    println!(
        "  root CA      {} ({}, until {})",
        root.id,
        root.algorithm,
        esm_ca::rfc3339(root.not_after)
    );
    println!(
        "  signing CA   {} (until {})",
        int.id,
        esm_ca::rfc3339(int.not_after)
    );
    println!("  {}", crate::audit_key::describe(&cfg));
    println!("  config       {}", config_path.display());
    Ok(())
}

/// The `key_backend` and `audit.key_backend` values for esm.toml and the tables those
/// backends need (one `[ca.pkcs11]` or `[ca.azure_key_vault]`, shared by the CA and the audit
/// key), from the flags.
fn backend_section(args: &InitArgs) -> anyhow::Result<(&'static str, &'static str, String)> {
    let chosen = [args.key_backend, args.audit_key_backend];
    let pkcs11_flags = args.pkcs11_module.is_some()
        || args.pkcs11_token.is_some()
        || args.pkcs11_pin_file.is_some();
    if pkcs11_flags && !chosen.contains(&KeyBackendArg::Pkcs11) {
        return Err(usage(
            "--pkcs11-module/--pkcs11-token/--pkcs11-pin-file need pkcs11 as --key-backend or --audit-key-backend",
        ));
    }
    if args.azure_vault_url.is_some() && !chosen.contains(&KeyBackendArg::AzureKeyVault) {
        return Err(usage(
            "--azure-vault-url goes with azure-key-vault as --key-backend or --audit-key-backend",
        ));
    }
    let mut tables = String::new();
    if chosen.contains(&KeyBackendArg::Pkcs11) {
        let (Some(module), Some(token)) = (&args.pkcs11_module, &args.pkcs11_token) else {
            return Err(usage(
                "pkcs11 as --key-backend or --audit-key-backend needs --pkcs11-module PATH and --pkcs11-token LABEL",
            ));
        };
        let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_owned());
        let pin_file = args.pkcs11_pin_file.as_deref().map(abs);
        tables += &esm_config::key_backends::pkcs11_toml(&abs(module), token, pin_file.as_deref());
    }
    if chosen.contains(&KeyBackendArg::AzureKeyVault) {
        let Some(url) = &args.azure_vault_url else {
            return Err(usage(
                "azure-key-vault as --key-backend or --audit-key-backend needs --azure-vault-url",
            ));
        };
        esm_ca::key_backend::azure_key_vault::vault_host(url)
            .map_err(|e| usage(format!("--azure-vault-url: {e}")))?;
        tables += &esm_config::azure_key_vault::toml_table(url);
    }
    Ok((name(args.key_backend), name(args.audit_key_backend), tables))
}

fn name(kind: KeyBackendArg) -> &'static str {
    match kind {
        KeyBackendArg::File => "file",
        KeyBackendArg::Pkcs11 => "pkcs11",
        KeyBackendArg::AzureKeyVault => "azure-key-vault",
    }
}

/// The data dir: made 0711 when `esm init` creates it (whatever the umask), so that a
/// workload of another uid can reach `agent.sock` in it; an existing dir keeps its mode,
/// with a warning when that keeps other users out. What is inside is owner-only on its own.
fn create_data_dir(dir: &Path, created: bool) -> anyhow::Result<()> {
    use crate::data_dir_modes::DATA_DIR_MODE;
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if !created {
        if let Some(f) = crate::data_dir_modes::seen(dir) {
            for w in crate::data_dir_modes::findings(Some(&f), &[]) {
                tracing::warn!("{w}");
            }
        }
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DATA_DIR_MODE)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DATA_DIR_MODE))
        .with_context(|| format!("setting the mode of {}", dir.display()))
}

/// Writes a new file readable by the owner only (the config may hold a database password).
fn write_owner_only(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    esm_audit::durable_file::create_new(path, bytes, 0o600)
        .with_context(|| format!("writing {}", path.display()))
}

fn read_upstream(cert: &Path, key: &Path) -> anyhow::Result<Upstream> {
    let read =
        |p: &Path| std::fs::read_to_string(p).map_err(|e| usage(format!("{}: {e}", p.display())));
    let (label, cert_der) = pkcs8_pem(&read(cert)?)
        .map_err(|e| usage(format!("--upstream-cert {}: {e}", cert.display())))?;
    if label != "CERTIFICATE" {
        return Err(usage(format!(
            "--upstream-cert {}: not a PEM certificate",
            cert.display()
        )));
    }
    let (label, key_der) = pkcs8_pem(&read(key)?)
        .map_err(|e| usage(format!("--upstream-key {}: {e}", key.display())))?;
    if label != "PRIVATE KEY" {
        return Err(usage(format!(
            "--upstream-key {}: expected an unencrypted PKCS#8 \"PRIVATE KEY\" (convert with `openssl pkcs8 -topk8 -nocrypt`), found {label:?}",
            key.display()
        )));
    }
    Ok(Upstream {
        cert_der,
        key_pkcs8_der: key_der,
    })
}

fn pkcs8_pem(text: &str) -> anyhow::Result<(String, Vec<u8>)> {
    // The first PEM block only; a chain file's further certificates are ignored.
    let start = text.find("-----BEGIN ").context("no PEM block")?;
    let end_marker = text[start..]
        .find("-----END ")
        .context("unterminated PEM block")?;
    let end = text[start + end_marker..]
        .find("\n")
        .map(|i| start + end_marker + i + 1)
        .unwrap_or(text.len());
    let (label, der) = esm_identity::pem::decode(&text[start..end])?;
    Ok((label, der))
}

/// The repo's default zero-trust policy set, with its example identities moved into this
/// trust domain so its own tests keep passing.
const DEFAULT_POLICIES: [(&str, &str); 3] = [
    (
        "zero_trust.rego",
        include_str!("../../policies/default/zero_trust.rego"),
    ),
    (
        "zero_trust_test.rego",
        include_str!("../../policies/default/zero_trust_test.rego"),
    ),
    (
        "data.json",
        include_str!("../../policies/default/data.json"),
    ),
];

fn write_default_policies(dir: &Path, td: &TrustDomain) -> anyhow::Result<()> {
    esm_ca::store::create_private_dir(dir)?;
    for (name, text) in DEFAULT_POLICIES {
        let text = text.replace("spiffe://example.org/", &format!("spiffe://{td}/"));
        let path = dir.join(name);
        write_owner_only(&path, text.as_bytes())?;
    }
    Ok(())
}
