//! The registration entries as the agent serves them: the list, and an index on selectors
//! so that attesting a caller looks at the few entries that could match it instead of
//! every entry (a scan of 100,000 subset checks takes milliseconds on every stream open and
//! every answer). Built whole on each change: changes are rare (an admin's command), reads
//! are on every request.

use std::collections::{BTreeSet, HashMap};

use super::entry::{Entry, Selector};

/// The entries in store order, with each entry filed under one of its selectors.
#[derive(Debug, Default)]
pub struct EntrySet {
    entries: Vec<Entry>,
    /// Entry positions by selector. Each entry is filed once, under its selector shared
    /// with the fewest other entries: an entry matches only callers holding all of its
    /// selectors, so it is found under any one of them, and the rarest keeps every
    /// posting list short even when thousands of entries share a `unix:gid`.
    by_selector: HashMap<Selector, Vec<u32>>,
}

impl EntrySet {
    pub fn new(entries: Vec<Entry>) -> Self {
        let mut count: HashMap<&Selector, u32> = HashMap::new();
        for s in entries.iter().flat_map(|e| &e.selectors) {
            *count.entry(s).or_default() += 1;
        }
        let mut by_selector: HashMap<Selector, Vec<u32>> = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            // An entry has at least one selector (NewEntry::check); one read back from a
            // store without any matches nobody, and is filed nowhere.
            let Some(key) = e.selectors.iter().min_by_key(|s| count.get(s).copied()) else {
                continue;
            };
            // Positions fit: the store holds at most MAX_ENTRIES.
            let at = u32::try_from(i).unwrap_or(u32::MAX);
            by_selector.entry(key.clone()).or_default().push(at);
        }
        Self {
            entries,
            by_selector,
        }
    }

    /// Every entry, in store order.
    pub fn all(&self) -> &[Entry] {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries whose selectors are all among `caller`'s, in store order: the same as
    /// [`super::entry::matching`] over [`EntrySet::all`], looking only at the entries
    /// filed under the caller's own selectors.
    pub fn matching(&self, caller: &BTreeSet<Selector>) -> Vec<&Entry> {
        let mut hits: Vec<u32> = caller
            .iter()
            .filter_map(|s| self.by_selector.get(s))
            .flatten()
            .copied()
            .filter(|&i| {
                self.entries
                    .get(i as usize)
                    .is_some_and(|e| e.selectors.is_subset(caller))
            })
            .collect();
        // Each entry is filed once, so no duplicates; only the order is to restore.
        hits.sort_unstable();
        hits.iter()
            .filter_map(|&i| self.entries.get(i as usize))
            .collect()
    }
}

impl From<Vec<Entry>> for EntrySet {
    fn from(entries: Vec<Entry>) -> Self {
        Self::new(entries)
    }
}

#[cfg(test)]
#[path = "entry_index_tests.rs"]
mod tests;
