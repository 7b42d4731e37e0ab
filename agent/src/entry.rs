//! Registration entries: which SPIFFE ID a workload gets, decided by selectors. An entry
//! matches a caller when every one of its selectors is among the caller's (SPIRE's
//! "subset" match), so adding a selector to an entry only ever narrows it.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use esm_identity::SpiffeId;

/// At most this many selectors per entry, DNS names per entry, bytes per selector.
pub const MAX_SELECTORS: usize = 32;
pub const MAX_DNS_NAMES: usize = 32;
pub const MAX_SELECTOR_LEN: usize = 512;

/// `type:value`, e.g. `unix:uid:1000`, `unix:path:/usr/bin/envoy`, `spiffe:spiffe://td/x`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Selector(String);

impl Selector {
    /// Parses a selector. Known types are checked strictly; a typo would otherwise make an
    /// entry that silently never matches.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |why: &str| Error::Refused(format!("selector {s:?}: {why}"));
        if s.len() > MAX_SELECTOR_LEN {
            return Err(bad("too long"));
        }
        if s.chars().any(char::is_control) {
            return Err(bad("contains control characters"));
        }
        let (kind, value) = s
            .split_once(':')
            .ok_or_else(|| bad("expected type:value"))?;
        match kind {
            "unix" => {
                let (k, v) = value
                    .split_once(':')
                    .ok_or_else(|| bad("expected unix:uid:N, unix:gid:N or unix:path:/abs"))?;
                match k {
                    "uid" | "gid" => {
                        v.parse::<u32>().map_err(|_| bad("not a number"))?;
                    }
                    "path" if v.starts_with('/') => {}
                    "path" => return Err(bad("path must be absolute")),
                    _ => return Err(bad("unix selectors are uid, gid and path")),
                }
            }
            "spiffe" => {
                SpiffeId::parse(value)?;
            }
            _ => return Err(bad("unknown type (unix, spiffe)")),
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Selector {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Self::parse(&s)
    }
}

impl From<Selector> for String {
    fn from(s: Selector) -> Self {
        s.0
    }
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An entry's selectors: sorted, each once, in one allocation the size of what it holds.
/// (A `BTreeSet` allocates a whole node, some 300 bytes, for an entry's one or two
/// selectors: 30 MB of 100,000 entries.) Read as a JSON array, repeats dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct SelectorSet(Box<[Selector]>);

impl SelectorSet {
    pub fn iter(&self) -> std::slice::Iter<'_, Selector> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when every selector here is among `of`'s: the entry matches that caller.
    pub fn is_subset(&self, of: &BTreeSet<Selector>) -> bool {
        self.0.iter().all(|s| of.contains(s))
    }
}

impl FromIterator<Selector> for SelectorSet {
    fn from_iter<I: IntoIterator<Item = Selector>>(iter: I) -> Self {
        let set: BTreeSet<Selector> = iter.into_iter().collect();
        Self(set.into_iter().collect())
    }
}

impl<const N: usize> From<[Selector; N]> for SelectorSet {
    fn from(a: [Selector; N]) -> Self {
        a.into_iter().collect()
    }
}

impl From<BTreeSet<Selector>> for SelectorSet {
    fn from(s: BTreeSet<Selector>) -> Self {
        Self(s.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a SelectorSet {
    type Item = &'a Selector;
    type IntoIter = std::slice::Iter<'a, Selector>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl Serialize for SelectorSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter())
    }
}

impl<'de> Deserialize<'de> for SelectorSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        BTreeSet::<Selector>::deserialize(d).map(Self::from)
    }
}

/// One registration entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Random, assigned when the entry is created.
    pub id: String,
    pub spiffe_id: SpiffeId,
    pub selectors: SelectorSet,
    /// SVID lifetime in seconds; `None` takes the CA's default.
    pub ttl_secs: Option<u64>,
    pub dns_names: Vec<String>,
    /// RFC 3339.
    pub created_at: String,
}

/// What `esm entry create` sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewEntry {
    pub spiffe_id: SpiffeId,
    pub selectors: SelectorSet,
    #[serde(default)]
    pub ttl_secs: Option<u64>,
    #[serde(default)]
    pub dns_names: Vec<String>,
}

impl NewEntry {
    /// Checks the bounds an entry must keep, and that it grants no identity of esm's own:
    /// every way an entry comes into the store (create, import) passes through here.
    pub fn check(&self) -> Result<()> {
        if self.spiffe_id.is_reserved_for_esm() {
            return Err(Error::Reserved(self.spiffe_id.clone()));
        }
        if self.selectors.is_empty() {
            return Err(Error::Refused(
                "an entry needs at least one selector".into(),
            ));
        }
        if self.selectors.len() > MAX_SELECTORS {
            return Err(Error::Refused(format!(
                "more than {MAX_SELECTORS} selectors"
            )));
        }
        if self.dns_names.len() > MAX_DNS_NAMES {
            return Err(Error::Refused(format!(
                "more than {MAX_DNS_NAMES} DNS names"
            )));
        }
        for d in &self.dns_names {
            let ok = !d.is_empty()
                && d.len() <= 253
                && d.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '*')
                });
            if !ok {
                return Err(Error::Refused(format!("{d:?} is not a DNS name")));
            }
        }
        if self.ttl_secs == Some(0) {
            return Err(Error::Refused("ttl must be positive".into()));
        }
        Ok(())
    }
}

/// One line of `esm entry import`: an entry as `esm entry list` prints it, where `id` and
/// `created_at` may be left out (a new id and the time of the import are taken then).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportedEntry {
    #[serde(default)]
    pub id: Option<String>,
    pub spiffe_id: SpiffeId,
    pub selectors: SelectorSet,
    #[serde(default)]
    pub ttl_secs: Option<u64>,
    #[serde(default)]
    pub dns_names: Vec<String>,
    #[serde(default)]
    pub created_at: Option<String>,
}

impl ImportedEntry {
    /// What the entry grants, without the bookkeeping an import may carry over.
    pub fn new_entry(&self) -> NewEntry {
        NewEntry {
            spiffe_id: self.spiffe_id.clone(),
            selectors: self.selectors.clone(),
            ttl_secs: self.ttl_secs,
            dns_names: self.dns_names.clone(),
        }
    }

    /// [`NewEntry::check`], and a kept id must look like one esm makes (hex, at most 64).
    pub fn check(&self) -> Result<()> {
        self.new_entry().check()?;
        if let Some(id) = &self.id {
            if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(Error::Refused(format!("{id:?} is not an entry id")));
            }
        }
        if let Some(at) = &self.created_at {
            time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
                .map_err(|_| Error::Refused(format!("created_at {at:?} is not RFC 3339")))?;
        }
        Ok(())
    }
}

/// The entries whose selectors are all among `caller`'s.
pub fn matching<'a>(entries: &'a [Entry], caller: &BTreeSet<Selector>) -> Vec<&'a Entry> {
    entries
        .iter()
        .filter(|e| e.selectors.is_subset(caller))
        .collect()
}

/// The SPIFFE IDs `entries` grant, each once, in entry order: two entries may grant the same
/// ID with different selectors, and a workload must get that SVID once.
pub fn granted_ids<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Vec<SpiffeId> {
    let mut seen = BTreeSet::new();
    entries
        .into_iter()
        .filter(|e| seen.insert(&e.spiffe_id))
        .map(|e| e.spiffe_id.clone())
        .collect()
}

#[cfg(test)]
#[path = "entry_tests.rs"]
mod tests;
