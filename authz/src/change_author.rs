//! Who changed a hot-reloaded policy set. The reload itself is done by esm's file watcher,
//! but an auditor (SOC 2 CC8.1, ISO 27001 8.32) asks *who* made the change, as Vault or
//! SPIRE name the user behind an API call. For a policy directory the only trace the
//! change leaves is the owner of the files it wrote; for a bundle it is the owner of the
//! bundle file. A change that only removed files leaves no owner behind: it is recorded as
//! `uid:unknown`, which the report counts as unattributed, never guessed.
//!
//! The diff and the actor are pure functions; [`owners`] is the one place that reads file
//! metadata.

use std::collections::{BTreeMap, BTreeSet};

use crate::policy_set::SourceFile;
use crate::source::PolicySource;

/// The watcher's marker, kept in the event's details (`changed.via`) beside the person.
pub const WATCHER: &str = "esm:policy-reload";

/// What fetched a bundle from its server; such a change is attributed to the server's URL.
pub const BUNDLE_SERVICE: &str = "esm:bundle-service";

/// The actor of a change nobody can be named for.
pub const UNKNOWN: &str = "uid:unknown";

/// At most this many paths are named in an event; the rest are counted.
pub const MAX_NAMED: usize = 32;

/// What differs between the set in force and the one read.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Diff {
    /// Paths (relative to the set's root) new or with other content.
    pub written: Vec<String>,
    /// Paths gone.
    pub removed: Vec<String>,
}

/// The files of `after` that are new or changed against `before`, and those removed.
/// `before` unknown (nothing accepted yet): every file counts as written.
pub fn diff(before: Option<&[SourceFile]>, after: &[SourceFile]) -> Diff {
    let Some(before) = before else {
        return Diff {
            written: after.iter().map(|f| f.path.clone()).collect(),
            removed: Vec::new(),
        };
    };
    let old: BTreeMap<&str, &str> = before
        .iter()
        .map(|f| (f.path.as_str(), f.text.as_str()))
        .collect();
    let new: BTreeSet<&str> = after.iter().map(|f| f.path.as_str()).collect();
    Diff {
        written: after
            .iter()
            .filter(|f| old.get(f.path.as_str()) != Some(&f.text.as_str()))
            .map(|f| f.path.clone())
            .collect(),
        removed: before
            .iter()
            .filter(|f| !new.contains(f.path.as_str()))
            .map(|f| f.path.clone())
            .collect(),
    }
}

/// The actor named for a change whose written files are owned by `owners`: `uid:N`, or
/// `uid:N,uid:M` for several users, or [`UNKNOWN`] when no owner is known.
pub fn actor(owners: &BTreeSet<u32>) -> String {
    if owners.is_empty() {
        return UNKNOWN.to_owned();
    }
    owners
        .iter()
        .map(|u| format!("uid:{u}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The owners of the files `diff` wrote: for a directory, each written file's owner; for a
/// bundle, the bundle file's owner (whoever replaced it). A file gone again by now (or a
/// platform without owners) names nobody.
pub fn owners(source: &PolicySource, diff: &Diff) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    if diff.written.is_empty() {
        return out;
    }
    match source {
        PolicySource::Bundle { path, .. } => {
            out.extend(owner(path));
        }
        PolicySource::Dir(root) => {
            for rel in &diff.written {
                out.extend(owner(&root.join(rel)));
            }
        }
    }
    out
}

#[cfg(unix)]
fn owner(path: &std::path::Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.uid())
}

#[cfg(not(unix))]
fn owner(_: &std::path::Path) -> Option<u32> {
    None
}

/// The first [`MAX_NAMED`] paths, for an event's details.
pub fn named(paths: &[String]) -> &[String] {
    &paths[..paths.len().min(MAX_NAMED)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(path: &str, text: &str) -> SourceFile {
        SourceFile {
            path: path.into(),
            text: text.into(),
        }
    }

    #[test]
    fn diff_names_written_and_removed_files_only() {
        let before = [f("a.rego", "1"), f("b.rego", "2"), f("data.json", "{}")];
        let after = [f("a.rego", "1"), f("b.rego", "3"), f("c.rego", "4")];
        let d = diff(Some(&before), &after);
        assert_eq!(d.written, vec!["b.rego", "c.rego"]);
        assert_eq!(d.removed, vec!["data.json"]);
    }

    #[test]
    fn diff_without_a_known_before_counts_every_file_written() {
        let d = diff(None, &[f("a.rego", "1")]);
        assert_eq!(d.written, vec!["a.rego"]);
        assert!(d.removed.is_empty());
    }

    #[test]
    fn removal_only_change_names_no_one() {
        let d = diff(
            Some(&[f("a.rego", "1"), f("b.rego", "2")]),
            &[f("a.rego", "1")],
        );
        assert!(d.written.is_empty());
        let o = owners(&PolicySource::Dir("/nonexistent".into()), &d);
        assert_eq!(actor(&o), UNKNOWN);
    }

    #[test]
    fn actor_names_each_owner_once_in_order() {
        assert_eq!(actor(&BTreeSet::from([1000])), "uid:1000");
        assert_eq!(actor(&BTreeSet::from([1001, 0, 1001])), "uid:0,uid:1001");
    }

    #[test]
    fn a_written_file_gone_again_names_no_owner() {
        let d = Diff {
            written: vec!["../../nope/x.rego".into()],
            removed: vec![],
        };
        assert!(owners(&PolicySource::Dir("/nonexistent".into()), &d).is_empty());
    }

    #[cfg(unix)]
    #[test]
    fn owner_of_a_written_file_is_read_from_the_file() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("p.rego"), "package x").unwrap_or_else(|e| panic!("{e}"));
        let me = std::fs::metadata(dir.path())
            .map(|m| m.uid())
            .unwrap_or_else(|e| panic!("{e}"));
        let d = diff(None, &[f("p.rego", "package x")]);
        let o = owners(&PolicySource::Dir(dir.path().into()), &d);
        assert_eq!(actor(&o), format!("uid:{me}"));
    }

    #[test]
    fn named_caps_the_paths_listed() {
        let many: Vec<String> = (0..100).map(|i| format!("{i}.rego")).collect();
        assert_eq!(named(&many).len(), MAX_NAMED);
        assert_eq!(named(&many[..3]).len(), 3);
    }
}
