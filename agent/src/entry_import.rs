//! `esm entry import`: JSON lines in, a plan out, with no I/O. Every line is read and
//! checked, and the whole file set against the store, before anything is written: a file
//! with one bad line changes nothing, so a failed import is fixed and run again rather than
//! cleaned up. Entries already in the store (the same SPIFFE ID and selectors) are left as
//! they are, which makes importing the same file twice a no-op.

use std::collections::{HashMap, HashSet};

use super::entry::{Entry, ImportedEntry};
use super::entry_store::MAX_ENTRIES;
use crate::error::{Error, Result};

/// The longest line taken: an entry at every bound (32 selectors of 512 bytes, 32 DNS
/// names) is under 25 KiB of JSON; a longer line is not an entry.
pub const MAX_LINE: usize = 64 << 10;

/// The most an import reads in all: 100,000 ordinary entries are about 15 MiB.
pub const MAX_IMPORT_BYTES: u64 = 128 << 20;

/// Rows written per transaction: big enough that commits do not dominate, small enough
/// that a transaction never holds the store for long.
pub const BATCH: usize = 2000;

fn at_line(n: usize, why: impl std::fmt::Display) -> Error {
    Error::Refused(format!("line {n}: {why}"))
}

/// Cuts a byte stream into numbered lines, refusing one longer than [`MAX_LINE`] as soon
/// as it is, and a stream longer than [`MAX_IMPORT_BYTES`]: neither is held whole.
#[derive(Debug)]
pub struct Lines {
    partial: Vec<u8>,
    /// Lines completed so far.
    done: usize,
    total: u64,
    limit: u64,
}

impl Default for Lines {
    fn default() -> Self {
        Self::with_limit(MAX_IMPORT_BYTES)
    }
}

impl Lines {
    /// At most `limit` bytes in all.
    pub fn with_limit(limit: u64) -> Self {
        Self {
            partial: Vec::new(),
            done: 0,
            total: 0,
            limit,
        }
    }

    /// Takes the next bytes; returns the lines they complete, numbered from 1.
    pub fn push(&mut self, mut chunk: &[u8]) -> Result<Vec<(usize, Vec<u8>)>> {
        self.total = self.total.saturating_add(chunk.len() as u64);
        if self.total > self.limit {
            return Err(Error::Refused(format!(
                "more than {} bytes to import",
                self.limit
            )));
        }
        let mut out = Vec::new();
        while let Some(nl) = chunk.iter().position(|&b| b == b'\n') {
            let (line, rest) = chunk.split_at(nl);
            self.take(line)?;
            self.done += 1;
            out.push((self.done, std::mem::take(&mut self.partial)));
            chunk = rest.get(1..).unwrap_or_default();
        }
        self.take(chunk)?;
        Ok(out)
    }

    /// The last line, when the stream does not end with a newline.
    pub fn finish(mut self) -> Option<(usize, Vec<u8>)> {
        (!self.partial.is_empty()).then(|| (self.done + 1, std::mem::take(&mut self.partial)))
    }

    fn take(&mut self, bytes: &[u8]) -> Result<()> {
        if self.partial.len() + bytes.len() > MAX_LINE {
            return Err(at_line(
                self.done + 1,
                format!("longer than {} KiB", MAX_LINE >> 10),
            ));
        }
        self.partial.extend_from_slice(bytes);
        Ok(())
    }
}

/// One line: `None` when blank. Refused, naming the line, when it is not UTF-8, not one
/// JSON object of the entry's fields, or not an entry esm would create.
pub fn parse_line(n: usize, raw: &[u8]) -> Result<Option<ImportedEntry>> {
    if raw.len() > MAX_LINE {
        return Err(at_line(n, format!("longer than {} KiB", MAX_LINE >> 10)));
    }
    let text = std::str::from_utf8(raw).map_err(|e| at_line(n, format!("not UTF-8 ({e})")))?;
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if !text.starts_with('{') {
        return Err(at_line(n, "not a JSON object"));
    }
    let item: ImportedEntry = serde_json::from_str(text).map_err(|e| at_line(n, e))?;
    item.check().map_err(|e| match e {
        Error::Refused(m) => at_line(n, m),
        other => other,
    })?;
    Ok(Some(item))
}

/// What an import will do.
#[derive(Debug, Default)]
pub struct ImportPlan {
    /// The entries to write, in file order.
    pub added: Vec<Entry>,
    /// Lines naming an entry the store (or an earlier line) already has.
    pub present: usize,
}

/// Sets the checked lines of a file against the store's `existing` entries: new entries
/// get an id (kept when given) and a creation time (kept when given, else `now`); an
/// entry already there is counted, not added. Refused whole when a kept id names another
/// entry, or when the store would hold more than [`MAX_ENTRIES`].
pub fn plan(
    existing: &[Entry],
    lines: Vec<(usize, ImportedEntry)>,
    now: &str,
    mut new_id: impl FnMut() -> Result<String>,
) -> Result<ImportPlan> {
    let mut by_key: HashMap<(&str, Vec<&str>), &str> = HashMap::new();
    for e in existing {
        by_key.insert(key(e.spiffe_id.as_str(), &e.selectors), &e.id);
    }
    let mut ids: HashSet<String> = existing.iter().map(|e| e.id.clone()).collect();
    let mut seen: HashSet<(String, Vec<String>)> = HashSet::new();
    let mut out = ImportPlan::default();
    for (n, item) in lines {
        let k = key(item.spiffe_id.as_str(), &item.selectors);
        if let Some(&id) = by_key.get(&k) {
            if item.id.as_deref().is_some_and(|given| given != id) {
                return Err(at_line(
                    n,
                    format!("this SPIFFE ID and these selectors are entry {id} already"),
                ));
            }
            out.present += 1;
            continue;
        }
        let owned = (
            k.0.to_owned(),
            k.1.iter().map(|s| (*s).to_owned()).collect(),
        );
        if !seen.insert(owned) {
            out.present += 1;
            continue;
        }
        let id = match item.id {
            Some(id) if ids.contains(&id) => {
                return Err(at_line(n, format!("entry id {id} exists")));
            }
            Some(id) => id,
            None => new_id()?,
        };
        ids.insert(id.clone());
        out.added.push(Entry {
            id,
            spiffe_id: item.spiffe_id,
            selectors: item.selectors,
            ttl_secs: item.ttl_secs,
            dns_names: item.dns_names,
            created_at: item.created_at.unwrap_or_else(|| now.to_owned()),
        });
    }
    if existing.len() + out.added.len() > MAX_ENTRIES {
        return Err(Error::Refused(format!(
            "{} new entries on top of {} would pass the limit of {MAX_ENTRIES}",
            out.added.len(),
            existing.len()
        )));
    }
    Ok(out)
}

fn key<'a>(spiffe: &'a str, selectors: &'a super::entry::SelectorSet) -> (&'a str, Vec<&'a str>) {
    (spiffe, selectors.iter().map(|s| s.as_str()).collect())
}

#[cfg(test)]
#[path = "entry_import_tests.rs"]
mod tests;
