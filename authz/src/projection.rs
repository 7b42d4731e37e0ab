//! The part of the input document a policy set can read ([`crate::input_reads`]) as a tree
//! the input builder walks: a field no path reaches is never built. A policy cannot tell
//! the difference (it cannot read what it has no reference to), and a request costs only
//! what its policy looks at.
//!
//! Each node also holds its own name as a regorus string, made once with the set: the
//! input's keys are then shared, not allocated for every request.

use std::collections::BTreeMap;

use regorus::Value;

use crate::input_reads::InputReads;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Projection {
    /// None: everything below this point.
    children: Option<BTreeMap<String, Projection>>,
    /// The key this node is under in its parent (Null at the root).
    name: Value,
}

static EVERYTHING: Projection = Projection {
    children: None,
    name: Value::Null,
};

impl Projection {
    /// The whole input.
    pub fn everything() -> &'static Self {
        &EVERYTHING
    }

    /// What `reads` can reach.
    pub fn of(reads: &InputReads) -> Self {
        let mut root = Self {
            children: Some(BTreeMap::new()),
            name: Value::Null,
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
            name: Value::from(first.as_str()),
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

    /// `key` as an input key: this node's own name when it is the node of `key` (shared),
    /// else a new string (below a point where everything is read).
    pub fn key(&self, key: &str) -> Value {
        match &self.name {
            Value::String(s) if **s == *key => self.name.clone(),
            _ => Value::from(key),
        }
    }

    /// The keys read below this point with their nodes; None when everything is.
    pub fn children(&self) -> Option<impl Iterator<Item = (&str, &Self)>> {
        Some(self.children.as_ref()?.iter().map(|(k, p)| (k.as_str(), p)))
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
        InputReads::of_paths(paths)
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
    fn keys_of_read_nodes_are_shared_and_others_are_made() {
        let p = Projection::of(&reads(&["a.b", "c"]));
        let a = p.get("a").unwrap();
        let (Value::String(k1), Value::String(k2)) = (a.key("a"), a.key("a")) else {
            panic!("not strings");
        };
        assert!(regorus::Rc::ptr_eq(&k1, &k2));
        // Under `c` everything is read: its children's names are made for each use.
        let c = p.get("c").unwrap().get("x").unwrap();
        assert_eq!(c.key("x"), Value::from("x"));
        assert!(Projection::everything().children().is_none());
        let names: Vec<&str> = a.children().unwrap().map(|(k, _)| k).collect();
        assert_eq!(names, ["b"]);
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
