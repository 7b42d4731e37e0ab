//! The part of the input document a policy set can read ([`crate::input_reads`]) as a tree
//! the input builder walks: a field no path reaches is never built. A policy cannot tell
//! the difference (it cannot read what it has no reference to), and a request costs only
//! what its policy looks at.

use std::collections::BTreeMap;

use crate::input_reads::InputReads;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Projection {
    /// None: everything below this point.
    children: Option<BTreeMap<String, Projection>>,
}

static EVERYTHING: Projection = Projection { children: None };

impl Projection {
    /// The whole input.
    pub fn everything() -> &'static Self {
        &EVERYTHING
    }

    /// What `reads` can reach.
    pub fn of(reads: &InputReads) -> Self {
        let mut root = Self {
            children: Some(BTreeMap::new()),
        };
        for path in &reads.paths {
            root.add(path);
        }
        root
    }

    fn add(&mut self, path: &[String]) {
        let Some((first, rest)) = path.split_first() else {
            self.children = None;
            return;
        };
        let Some(children) = &mut self.children else {
            return;
        };
        let child = children.entry(first.clone()).or_insert_with(|| Self {
            children: Some(BTreeMap::new()),
        });
        child.add(rest);
    }

    /// The projection below `key`, or None when nothing under it is read.
    pub fn get(&self, key: &str) -> Option<&Self> {
        match &self.children {
            None => Some(self),
            Some(c) => c.get(key),
        }
    }

    pub fn wants(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// True when everything below this point is read.
    pub fn is_everything(&self) -> bool {
        self.children.is_none()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn reads(paths: &[&str]) -> InputReads {
        InputReads {
            paths: paths
                .iter()
                .map(|p| {
                    p.split('.')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .collect(),
            deterministic: true,
        }
    }

    #[test]
    fn only_read_paths_are_wanted_and_their_subtrees_whole() {
        let p = Projection::of(&reads(&["a.b", "c"]));
        assert!(p.wants("a") && p.wants("c") && !p.wants("d"));
        let a = p.get("a").unwrap();
        assert!(a.wants("b") && !a.wants("x"));
        assert!(!a.is_everything());
        let c = p.get("c").unwrap();
        assert!(c.is_everything() && c.get("any").unwrap().wants("thing"));
    }

    #[test]
    fn reading_the_whole_input_wants_everything() {
        let p = Projection::of(&reads(&["", "a.b"]));
        assert!(p.is_everything());
        assert!(Projection::of(&reads(&["a.b", ""])).is_everything());
    }

    #[test]
    fn a_set_that_reads_nothing_wants_nothing() {
        let p = Projection::of(&reads(&[]));
        assert!(!p.wants("attributes"));
    }
}
