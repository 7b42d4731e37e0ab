//! `esm entry create|import|list|show|delete`: a client of the admin API on the admin
//! socket; `import` and `list` stream ([`admin_stream`]). The socket is 0600, so only the user running `esm serve` (or root) gets this far;
//! the server records each change with this process's uid, read from the socket by the
//! kernel, as the actor (the `x-esm-actor` header this client sends is only a note).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde_json::json;

use esm_agent::entry_import;

use super::admin_stream;
use crate::cli::EntryCommand;

/// A response larger than this is not one the admin API sends.
const MAX_RESPONSE: u64 = 64 << 20;
/// How long an import may go without a word from the server: a batch of
/// [`entry_import::BATCH`] entries takes well under a second to write and record.
const IMPORT_WAIT: Duration = Duration::from_secs(120);

/// One HTTP/1.1 exchange over the admin socket: (status, body).
fn call(
    socket: &std::path::Path,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    call_within(socket, method, path, body, Duration::from_secs(30))
}

/// [`call`], waiting at most `timeout` for the answer.
pub(super) fn call_within(
    socket: &std::path::Path,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<(u16, String)> {
    let body = body.unwrap_or("");
    let mut s = super::admin_stream::send_head(
        socket,
        method,
        path,
        "application/json",
        body.len(),
        timeout,
    )?;
    s.write_all(body.as_bytes())?;
    let mut raw = Vec::new();
    s.take(MAX_RESPONSE).read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("admin API: malformed response"))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("admin API: malformed status line"))?;
    Ok((status, body.to_owned()))
}

fn checked((status, body): (u16, String)) -> anyhow::Result<String> {
    match status {
        200..=299 => Ok(body),
        400 | 404 | 409 | 422 => Err(crate::exit::usage(body.trim().to_owned())),
        // Refused on principle (esm's own identity): a failure, not a typo.
        403 => Err(anyhow!("{}", body.trim())),
        _ => bail!("admin API answered {status}: {}", body.trim()),
    }
}

pub fn run(command: EntryCommand, env: &BTreeMap<String, String>) -> anyhow::Result<()> {
    let cfg_of = |c: &crate::cli::ConfigArgs| super::load(c, env);
    match command {
        EntryCommand::Create {
            spiffe_id,
            selectors,
            ttl,
            dns_names,
            config,
        } => {
            let cfg = cfg_of(&config)?;
            let ttl_secs = ttl
                .map(|t| esm_config::duration("--ttl", &t).map(|d| d.whole_seconds()))
                .transpose()?;
            let body = json!({
                "spiffe_id": spiffe_id, "selectors": selectors,
                "ttl_secs": ttl_secs, "dns_names": dns_names,
            })
            .to_string();
            let out = checked(call(
                &cfg.agent.admin_socket,
                "POST",
                "/v1/entries",
                Some(&body),
            )?)?;
            println!("{}", out.trim());
        }
        EntryCommand::Import { file, config } => {
            let cfg = cfg_of(&config)?;
            let body = read_import(&file)?;
            import(&cfg.agent.admin_socket, &body)?;
        }
        EntryCommand::List { config } => {
            let cfg = cfg_of(&config)?;
            list(&cfg.agent.admin_socket)?;
        }
        EntryCommand::Show { id, config } => {
            let cfg = cfg_of(&config)?;
            let out = checked(call(
                &cfg.agent.admin_socket,
                "GET",
                &format!("/v1/entries/{}", path_safe(&id)?),
                None,
            )?)?;
            println!("{}", out.trim());
        }
        EntryCommand::Delete { id, config } => {
            let cfg = cfg_of(&config)?;
            checked(call(
                &cfg.agent.admin_socket,
                "DELETE",
                &format!("/v1/entries/{}", path_safe(&id)?),
                None,
            )?)?;
            println!("deleted {id}");
        }
    }
    Ok(())
}

/// FILE (`-`: standard input), every line checked here as the server will check it, so
/// that a bad line is named before anything is sent; the bytes are then sent as they are.
fn read_import(file: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let mut input: Box<dyn Read> = if file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(
            std::fs::File::open(file)
                .map_err(|e| crate::exit::usage(format!("{}: {e}", file.display())))?,
        )
    };
    let usage = |e: esm_agent::Error| crate::exit::usage(format!("{}: {e}", file.display()));
    // A line for one of esm's own identities is the server's to refuse: it records the
    // attempt, which a refusal here would keep out of the audit log.
    let check = |no: usize, line: &[u8]| match entry_import::parse_line(no, line) {
        Ok(item) => Ok(usize::from(item.is_some())),
        Err(esm_agent::Error::Reserved(_)) => Ok(1),
        Err(e) => Err(usage(e)),
    };
    let mut lines = entry_import::Lines::default();
    let (mut raw, mut buf, mut entries) = (Vec::new(), vec![0u8; 64 << 10], 0usize);
    loop {
        let n = input
            .read(&mut buf)
            .with_context(|| format!("reading {}", file.display()))?;
        if n == 0 {
            break;
        }
        let chunk = buf.get(..n).unwrap_or_default();
        for (no, line) in lines.push(chunk).map_err(usage)? {
            entries += check(no, &line)?;
        }
        raw.extend_from_slice(chunk);
    }
    if let Some((no, line)) = lines.finish() {
        entries += check(no, &line)?;
    }
    if entries == 0 {
        return Err(crate::exit::usage("no entries to import"));
    }
    Ok(raw)
}

/// Sends the import and follows its progress: a line per written batch (shown on stderr
/// when it is a terminal), then the outcome.
fn import(socket: &std::path::Path, body: &[u8]) -> anyhow::Result<()> {
    let (status, mut answer) =
        admin_stream::exchange(socket, "POST", "/v1/entries/import", body, IMPORT_WAIT)?;
    if !(200..300).contains(&status) {
        return checked((status, rest(&mut answer)?)).map(|_| ());
    }
    let tty = std::io::stderr().is_terminal();
    while let Some(line) = admin_stream::next_line(&mut answer)? {
        let v: serde_json::Value =
            serde_json::from_str(&line).context("admin API: import progress is not JSON")?;
        if let Some(e) = v.get("error") {
            if tty {
                eprintln!();
            }
            bail!(
                "import failed after {} of {} entries were written (importing the file again \
                 adds the rest): {}",
                v["written"],
                v["of"],
                e.as_str().unwrap_or_default()
            );
        }
        if let (Some(n), Some(of)) = (v.get("written"), v.get("of")) {
            if tty {
                eprint!("\rimported {n} of {of}");
            }
        } else if let (Some(n), Some(present)) = (v.get("imported"), v.get("present")) {
            if tty {
                eprintln!();
            }
            eprintln!("imported {n} entries ({present} already present)");
            return Ok(());
        }
    }
    bail!("admin API: the import answer ended without its outcome")
}

/// Prints every entry as a JSON line, as the server streams them.
fn list(socket: &std::path::Path) -> anyhow::Result<()> {
    let (status, mut answer) =
        admin_stream::exchange(socket, "GET", "/v1/entries", b"", Duration::from_secs(30))?;
    if !(200..300).contains(&status) {
        return checked((status, rest(&mut answer)?)).map(|_| ());
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    while let Some(line) = admin_stream::next_line(&mut answer)? {
        let v: serde_json::Value =
            serde_json::from_str(&line).context("admin API: an entry is not JSON")?;
        if v.get("id").is_none() {
            if let Some(e) = v.get("error") {
                out.flush()?;
                bail!("listing entries failed: {}", e.as_str().unwrap_or_default());
            }
        }
        writeln!(out, "{v}")?;
    }
    out.flush()?;
    Ok(())
}

/// The rest of an answer (an error message), bounded.
fn rest(answer: &mut admin_stream::Lines) -> anyhow::Result<String> {
    let mut text = Vec::new();
    answer.take(MAX_RESPONSE).read_to_end(&mut text)?;
    Ok(String::from_utf8_lossy(&text).into_owned())
}

/// Entry ids are hex; anything else would not be one and must not reach the URL.
fn path_safe(id: &str) -> anyhow::Result<&str> {
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(crate::exit::usage(format!("{id:?} is not an entry id")));
    }
    Ok(id)
}
