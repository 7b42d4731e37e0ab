//! The registration entries as the agent serves them: the list, and an index on selectors
//! so that attesting a caller looks at the few entries that could match it instead of
//! every entry (a scan of 100,000 subset checks takes milliseconds on every stream open and
//! every answer). Built whole on each change: changes are rare (an admin's command), reads
//! are on every request.

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasher, RandomState};

use super::entry::{Entry, Selector};

/// The entries in store order, with each entry filed under one of its selectors.
#[derive(Debug, Default)]
pub struct EntrySet {
    entries: Vec<Entry>,
    /// (hash of a selector, entry position), sorted. Each entry is filed once, under its
    /// selector shared with the fewest other entries: an entry matches only callers
    /// holding all of its selectors, so it is found under any one of them, and the rarest
    /// keeps every run short even when thousands of entries share a `unix:gid`. Hashes
    /// rather than selectors, in one flat array: 16 bytes an entry and no allocation per
    /// selector; a collision only adds a candidate, which the subset check drops.
    by_selector: Vec<(u64, u32)>,
    hasher: RandomState,
}

impl EntrySet {
    pub fn new(entries: Vec<Entry>) -> Self {
        let mut count: HashMap<&Selector, u32> = HashMap::new();
        for s in entries.iter().flat_map(|e| &e.selectors) {
            *count.entry(s).or_default() += 1;
        }
        let hasher = RandomState::new();
        let mut by_selector = Vec::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            // An entry has at least one selector (NewEntry::check); one read back from a
            // store without any matches nobody, and is filed nowhere.
            let Some(key) = e.selectors.iter().min_by_key(|s| count.get(s).copied()) else {
                continue;
            };
            // Positions fit: the store holds at most MAX_ENTRIES.
            let at = u32::try_from(i).unwrap_or(u32::MAX);
            by_selector.push((hasher.hash_one(key), at));
        }
        drop(count);
        by_selector.sort_unstable();
        let mut entries = entries;
        entries.shrink_to_fit();
        Self {
            entries,
            by_selector,
            hasher,
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
            .flat_map(|s| self.filed_under(s))
            .filter(|&i| {
                self.entries
                    .get(i as usize)
                    .is_some_and(|e| e.selectors.is_subset(caller))
            })
            .collect();
        // Each entry is filed once, so no duplicates (two caller selectors with the same
        // hash would list one run twice); the order is to restore.
        hits.sort_unstable();
        hits.dedup();
        hits.iter()
            .filter_map(|&i| self.entries.get(i as usize))
            .collect()
    }
}

impl EntrySet {
    /// The positions of the entries filed under `selector` (and under any selector whose
    /// hash is the same).
    fn filed_under(&self, selector: &Selector) -> impl Iterator<Item = u32> + '_ {
        let h = self.hasher.hash_one(selector);
        let from = self.by_selector.partition_point(|&(k, _)| k < h);
        self.by_selector
            .get(from..)
            .unwrap_or_default()
            .iter()
            .take_while(move |&&(k, _)| k == h)
            .map(|&(_, i)| i)
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
