//! The command line: every subcommand and argument of `esm`, with the help text `esm
//! <command> --help` prints. Each subcommand is run by its module in `src/commands/`; how the
//! parts fit together is in `docs/architecture.md`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "esm",
    version,
    about = "Edge Service Mesh: SPIFFE workload CA, Envoy ext_authz and tamper-evident audit"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Where the configuration is: `--config FILE`, else `--dir DIR`/esm.toml, else
// `./esm-data/esm.toml`. (A plain comment: clap would take a doc comment here as the about
// text of any subcommand that flattens this and has none of its own.)
#[derive(Debug, Args, Clone)]
pub struct ConfigArgs {
    /// The configuration file to load; takes precedence over --dir. Without either,
    /// ./esm-data/esm.toml is used.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The data dir made by `esm init`: its esm.toml is loaded, and paths in it are relative
    /// to it.
    #[arg(long, global = true, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

impl ConfigArgs {
    pub fn path(&self) -> PathBuf {
        match (&self.config, &self.dir) {
            (Some(c), _) => c.clone(),
            (None, Some(d)) => d.join("esm.toml"),
            (None, None) => PathBuf::from("esm-data").join("esm.toml"),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a data dir: esm.toml, the root CA and the first signing CA.
    Init(InitArgs),
    /// Run the server: the CA and its rotation, SDS and the Workload API on the agent
    /// socket, the ext_authz gRPC server, the audit writer and the admin endpoints.
    ///
    /// Runs until SIGTERM or Ctrl-C, then drains open connections and signs a final audit
    /// checkpoint. SIGHUP reloads esm.toml. The admin endpoints are /healthz, /readyz and
    /// /metrics on admin.listen, and the admin socket that `esm entry` talks to.
    Serve {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Issue X509-SVIDs from the signing CA, outside the agent socket.
    Cert {
        #[command(subcommand)]
        command: CertCommand,
    },
    /// The trust bundle: the root certificates workloads verify SVIDs against.
    Bundle {
        #[command(subcommand)]
        command: BundleCommand,
    },
    /// The CA: rotate the signing CA or the root, show the roots and intermediates.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Rego policies: validate, run their tests, evaluate an input.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// The tamper-evident audit log: verify, export, tail, proofs, retention.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Registration entries (SPIFFE ID + selectors), through the running server's admin
    /// socket.
    Entry {
        #[command(subcommand)]
        command: EntryCommand,
    },
    /// Compliance reports (SOC 2, ISO/IEC 27001 or your own framework file) computed from
    /// the audit store over a period; `esm report verify FILE` checks one.
    ///
    /// Writes the report to --out, then exits 0 when no control failed, 1 when a control
    /// failed or the audit log does not verify (the report is written either way), 2 on a
    /// usage or configuration error.
    Report(ReportArgs),
}

/// `esm report --framework … --from … --to … --out …`; exit 1 when any control fails.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ReportArgs {
    #[command(subcommand)]
    pub command: Option<ReportCommand>,
    /// soc2, iso27001, or a framework TOML file of your own.
    #[arg(long, required = true)]
    pub framework: Option<String>,
    /// Start of the period (RFC 3339, or a date: its midnight UTC).
    #[arg(long, value_name = "DATE", required = true)]
    pub from: Option<String>,
    /// End of the period (RFC 3339, or a date: the end of that day UTC).
    #[arg(long, value_name = "DATE", required = true)]
    pub to: Option<String>,
    /// The report's format: Markdown, HTML, JSON, or OSCAL assessment results (JSON). Each
    /// carries a seal that `esm report verify` checks.
    #[arg(long, value_enum, default_value_t = ReportFormat::Md)]
    pub format: ReportFormat,
    /// The file to write the report to; it is replaced whole or not at all.
    #[arg(long, value_name = "FILE", required = true)]
    pub out: Option<PathBuf>,
    /// More policy versions (directories or bundles) to examine for deny-by-default, beyond
    /// the configured ones: e.g. the versions in force earlier in the period.
    #[arg(long = "policies", value_name = "DIR")]
    pub policies: Vec<PathBuf>,
    /// Event times may go backwards by this much before it is an exception.
    #[arg(long, default_value = "2s", value_name = "DURATION")]
    pub clock_tolerance: String,
    #[command(flatten)]
    pub key: PublicKeyArg,
    #[command(flatten)]
    pub config: ConfigArgs,
}

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Check that a report was not edited: exit 0 when FILE's digest matches its content
    /// and its checkpoint signature verifies under the audit key; 1 when it does not.
    Verify {
        /// The report to check, as `esm report` wrote it (any --format).
        file: PathBuf,
        #[command(flatten)]
        key: PublicKeyArg,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ReportFormat {
    Md,
    Html,
    Json,
    Oscal,
}

#[derive(Debug, Subcommand)]
pub enum EntryCommand {
    /// Grant a SPIFFE ID to workloads with all of the given selectors; prints the new
    /// entry (with its id) as JSON.
    Create {
        /// The SPIFFE ID to grant, e.g. spiffe://example.org/web. IDs under /esm are esm's
        /// own and refused.
        #[arg(long, value_name = "ID")]
        spiffe_id: String,
        /// unix:uid:N, unix:gid:N, unix:path:/abs/exe or spiffe:ID; repeat for more.
        #[arg(long = "selector", required = true)]
        selectors: Vec<String>,
        /// SVID lifetime, e.g. 10m (default: the CA's svid_default_ttl).
        #[arg(long, value_name = "DURATION")]
        ttl: Option<String>,
        /// A DNS name to add as a SAN to the SVIDs this entry grants, for clients that check
        /// host names; repeat for more.
        #[arg(long = "dns-name", value_name = "NAME")]
        dns_names: Vec<String>,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Create the entries of FILE (`-`: standard input), JSON lines as `esm entry list`
    /// prints them (`id` and `created_at` may be left out). Every line is checked before
    /// any is written; entries already present are left alone, so importing twice is
    /// harmless. Progress goes to stderr when it is a terminal.
    Import {
        /// The JSON Lines file to import, or `-` for standard input.
        file: PathBuf,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Every entry, as JSON lines.
    List {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// One entry, as JSON.
    Show {
        /// The entry's id (hex), as `create` and `list` print it.
        id: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Delete an entry: its SPIFFE ID is no longer issued to the workloads it matched (SVIDs
    /// already issued stay valid until they expire).
    Delete {
        /// The entry's id (hex), as `create` and `list` print it.
        id: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The SPIFFE trust domain, e.g. example.org.
    #[arg(long)]
    pub trust_domain: String,
    /// The data dir to create.
    #[arg(long, default_value = "esm-data")]
    pub dir: PathBuf,
    /// Where CA keys are kept.
    #[arg(long, value_enum, default_value_t = KeyBackendArg::File)]
    pub key_backend: KeyBackendArg,
    /// Where the audit checkpoint key is kept: a file in the data dir (default), or the
    /// token / vault of --pkcs11-module/--pkcs11-token or --azure-vault-url, where nobody on
    /// this host can copy it to re-sign a rewritten log.
    #[arg(long, value_enum, default_value_t = KeyBackendArg::File)]
    pub audit_key_backend: KeyBackendArg,
    /// With azure-key-vault as --key-backend or --audit-key-backend: the vault,
    /// https://NAME.vault.azure.net.
    #[arg(long, value_name = "URL")]
    pub azure_vault_url: Option<String>,
    /// Key algorithm of the root and signing CAs.
    #[arg(long, default_value = "ec-p256", value_parser = ["ec-p256", "ec-p384", "rsa-3072"])]
    pub key_algorithm: String,
    /// An upstream CA certificate (PEM) to sign the intermediates instead of a new root.
    #[arg(long, requires = "upstream_key", value_name = "FILE")]
    pub upstream_cert: Option<PathBuf>,
    /// The upstream CA's private key (PKCS#8 PEM, unencrypted).
    #[arg(long, requires = "upstream_cert", value_name = "FILE")]
    pub upstream_key: Option<PathBuf>,
    /// With pkcs11 as --key-backend or --audit-key-backend: the PKCS#11 module (shared
    /// library) to load.
    #[arg(long, value_name = "PATH")]
    pub pkcs11_module: Option<PathBuf>,
    /// With pkcs11 as --key-backend or --audit-key-backend: the label of the token to keep
    /// the keys in.
    #[arg(long, value_name = "LABEL")]
    pub pkcs11_token: Option<String>,
    /// With pkcs11: a file holding the user PIN, when ESM_PKCS11_PIN is not set. Its path
    /// (not the PIN) is written to esm.toml.
    #[arg(long, value_name = "FILE")]
    pub pkcs11_pin_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum KeyBackendArg {
    File,
    Pkcs11,
    AzureKeyVault,
}

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Issue an X509-SVID: writes svid.pem (leaf + intermediate), svid.key (when esm made
    /// the key) and bundle.pem into --out.
    Issue(IssueArgs),
}

#[derive(Debug, Args)]
pub struct IssueArgs {
    /// The SPIFFE ID to certify, e.g. spiffe://example.org/web: in this trust domain, with a
    /// path, and not under /esm (esm's own IDs).
    #[arg(long, value_name = "ID")]
    pub spiffe_id: String,
    /// Lifetime, e.g. 1h or 90s; capped by ca.svid_max_ttl and the signing CA's life.
    #[arg(long, value_name = "DURATION")]
    pub ttl: Option<String>,
    /// Sign this PKCS#10 CSR (PEM or DER) instead of making a key.
    #[arg(long, value_name = "FILE")]
    pub csr: Option<PathBuf>,
    /// Also add this DNS SAN (repeatable).
    #[arg(long = "dns-name", value_name = "NAME")]
    pub dns_names: Vec<String>,
    /// The directory to write svid.pem, svid.key (mode 0600) and bundle.pem into; created
    /// if missing, and files already there are replaced.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    #[command(flatten)]
    pub config: ConfigArgs,
}

#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Print the trust bundle to stdout.
    Show {
        /// pem: the root certificates, for a TLS trust store; spiffe: the SPIFFE bundle
        /// format (a JWK set with its sequence number), e.g. for federation.
        #[arg(long, value_enum, default_value_t = BundleFormat::Pem)]
        format: BundleFormat,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum BundleFormat {
    Pem,
    Spiffe,
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Rotate the signing CA (or, with --root, the root): with no step, apply whatever the
    /// schedule says is due now.
    Rotate {
        /// Do this step now instead of what the schedule says is due: prepare publishes a
        /// successor, activate makes the prepared one sign. Required with --root.
        #[arg(value_enum)]
        step: Option<RotateStep>,
        /// Rotate the root instead of the intermediate.
        #[arg(long)]
        root: bool,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// List the roots and intermediates with their status and validity.
    Show {
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum RotateStep {
    /// Make a successor and publish it; it does not sign yet.
    Prepare,
    /// The prepared successor starts signing; the old one retires.
    Activate,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute every hash, link, Merkle root and checkpoint signature; exit 1 naming the
    /// first bad sequence number.
    Verify {
        /// Start at the last checkpoint at or before this sequence number (faster).
        #[arg(long, value_name = "SEQ")]
        from: Option<u64>,
        /// Verify this JSON Lines export offline instead of the database.
        #[arg(long, value_name = "FILE", conflicts_with = "from")]
        export: Option<PathBuf>,
        #[command(flatten)]
        key: PublicKeyArg,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Write events as JSON Lines, with their hashes (and, unfiltered, the checkpoints).
    Export {
        /// The output format; JSON Lines is the only one, and what `verify --export` reads.
        #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
        format: ExportFormat,
        /// Events at or after this instant (RFC 3339, or a date: 2026-11-01).
        #[arg(long, value_name = "DATE")]
        from: Option<String>,
        /// Events before this instant (RFC 3339, or a date).
        #[arg(long, value_name = "DATE")]
        to: Option<String>,
        /// Only events of this kind, e.g. svid.issued.
        #[arg(long)]
        kind: Option<String>,
        /// Write here instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Print the newest events: one readable line each on a terminal, JSON Lines (as
    /// `export` writes them) with --json or when stdout is a pipe or a file.
    Tail {
        /// How many of the newest events to print first.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: u64,
        /// Keep printing new events as they are committed.
        #[arg(short, long)]
        follow: bool,
        /// JSON Lines even on a terminal.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Print an inclusion proof (JSON) of event SEQ against the first checkpoint covering it.
    Prove {
        /// The sequence number of the event to prove; a checkpoint must already cover it.
        seq: u64,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Print a consistency proof (JSON) between the checkpoints at tree sizes OLD and NEW
    /// (default: the latest).
    Consistency {
        /// The tree size of the earlier checkpoint, e.g. one a verifier kept from before.
        old: u64,
        /// The tree size of the later checkpoint (default: the latest checkpoint).
        new: Option<u64>,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Check a proof printed by `prove` or `consistency`, with only the public key.
    VerifyProof {
        /// The proof file (JSON); whether it is an inclusion or a consistency proof is read
        /// from its content.
        file: PathBuf,
        #[command(flatten)]
        key: PublicKeyArg,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Remove events up to the last checkpoint signed before DATE. A retention statement
    /// signed with the checkpoint key is appended first; `verify` accepts the shortened log
    /// only with it, continuing from that checkpoint.
    Retain {
        /// Remove events covered by checkpoints signed before this instant (RFC 3339, or a
        /// date: its midnight UTC).
        #[arg(long, value_name = "DATE")]
        before: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Print the audit public key (`checkpoint.pub` text: base64 Ed25519, or `p256:` and the
    /// base64 point), to keep outside this machine; --pem prints it as a PEM public key.
    Key {
        /// Print a PEM public key (SubjectPublicKeyInfo) instead of the checkpoint.pub text.
        #[arg(long)]
        pem: bool,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

// The key checkpoints are verified with: a copy kept elsewhere is the strong check, since
// whoever can rewrite the data dir can also replace `audit/checkpoint.pub` there. (A plain
// comment, as on ConfigArgs.)
#[derive(Debug, Args)]
pub struct PublicKeyArg {
    /// The audit public key file (default: DIR/audit/checkpoint.pub): what `esm audit key`
    /// prints, or a PEM public key (Ed25519 or P-256), e.g. read from the HSM or vault itself.
    #[arg(long = "public-key", value_name = "FILE")]
    pub public_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ExportFormat {
    Jsonl,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Parse and compile a policy directory or OPA bundle (.tar.gz) for the decision rule,
    /// and run its Rego tests, as `serve` does before it serves a policy.
    Check {
        /// A directory of .rego files, or an OPA bundle (.tar.gz or .tgz).
        dir: PathBuf,
        /// The decision rule to compile for, as a data path.
        #[arg(long, default_value = "data.envoy.authz.allow")]
        rule: String,
    },
    /// Run every test_* rule of a policy directory or bundle and report pass/fail, like
    /// `opa test`; exit 1 when any fails or there are none.
    Test {
        /// A directory of .rego files, or an OPA bundle (.tar.gz or .tgz).
        dir: PathBuf,
        /// Print passing tests too.
        #[arg(short, long)]
        verbose: bool,
    },
    /// Evaluate the decision rule for an input document (JSON) and print the result and the
    /// decision (allow or deny; an error or undefined result is a deny).
    Eval {
        /// A directory of .rego files, or an OPA bundle (.tar.gz or .tgz).
        dir: PathBuf,
        /// The input document, a JSON file: what `input` is in the policy, as ext_authz
        /// builds it from Envoy's CheckRequest.
        #[arg(long, value_name = "FILE")]
        input: PathBuf,
        /// The decision rule to evaluate, as a data path.
        #[arg(long, default_value = "data.envoy.authz.allow")]
        rule: String,
    },
}

#[cfg(test)]
#[path = "cli_tests.rs"]
mod tests;
