//! `esm entry create|import|list|show|delete`: a client of the admin API on the admin
//! socket. The socket is 0600, so only the user running `esm serve` (or root) gets this far;
//! the server records each change with this process's uid, read from the socket by the
//! kernel, as the actor (the `x-esm-actor` header this client sends is only a note).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde_json::json;

use crate::cli::EntryCommand;

/// A response larger than this is not one the admin API sends.
const MAX_RESPONSE: u64 = 64 << 20;
/// An import file larger than this is a mistake (the admin API takes 2 MiB of JSON).
const MAX_IMPORT: u64 = 2 << 20;

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
    let mut s = UnixStream::connect(socket).map_err(|e| {
        crate::exit::usage(format!(
            "admin socket {}: {e} (is `esm serve` running for this data dir?)",
            socket.display()
        ))
    })?;
    s.set_read_timeout(Some(timeout))?;
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: esm\r\nconnection: close\r\nx-esm-actor: {}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        crate::evidence::cli_actor(),
        body.len()
    );
    s.write_all(req.as_bytes())?;
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
                .map(|t| crate::config::duration("--ttl", &t).map(|d| d.whole_seconds()))
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
            let text = super::read_text("", &file, MAX_IMPORT)?;
            let body = import_body(&text)?;
            let out = checked(call(
                &cfg.agent.admin_socket,
                "POST",
                "/v1/entries/import",
                Some(&body),
            )?)?;
            let added: Vec<serde_json::Value> =
                serde_json::from_str(&out).context("admin API: entries are not JSON")?;
            for e in &added {
                println!("{e}");
            }
            eprintln!("imported {} entries", added.len());
        }
        EntryCommand::List { config } => {
            let cfg = cfg_of(&config)?;
            let out = checked(call(&cfg.agent.admin_socket, "GET", "/v1/entries", None)?)?;
            let entries: Vec<serde_json::Value> =
                serde_json::from_str(&out).context("admin API: entries are not JSON")?;
            for e in entries {
                println!("{e}");
            }
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

/// JSON lines (blank lines skipped) into the JSON array the admin API takes; a line that is
/// not a JSON object is the caller's error, named by its number.
fn import_body(text: &str) -> anyhow::Result<String> {
    let mut items = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| crate::exit::usage(format!("line {}: {e}", n + 1)))?;
        if !v.is_object() {
            return Err(crate::exit::usage(format!(
                "line {}: not a JSON object",
                n + 1
            )));
        }
        items.push(v);
    }
    if items.is_empty() {
        return Err(crate::exit::usage("no entries to import"));
    }
    Ok(serde_json::Value::Array(items).to_string())
}

/// Entry ids are hex; anything else would not be one and must not reach the URL.
fn path_safe(id: &str) -> anyhow::Result<&str> {
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(crate::exit::usage(format!("{id:?} is not an entry id")));
    }
    Ok(id)
}
