//! How many new versions of each policy set hot reload accepted and refused, for
//! `/metrics`: a refusal means the old policy keeps serving while someone believes the new
//! one is live. Kept process-wide, as the listeners' counters are, because the reload
//! tasks start where the servers do and the exposition is elsewhere.

use std::sync::{Mutex, PoisonError};

/// Per set: (name, accepted, refused).
static COUNTS: Mutex<Vec<(String, u64, u64)>> = Mutex::new(Vec::new());

/// Accepted and refused reloads of one policy set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadCounts {
    pub set: String,
    pub accepted: u64,
    pub refused: u64,
}

/// Counts one reload of `set`: a version that replaced the serving one, or one refused.
/// A refused version is counted once, however many polls see it again.
pub fn count(set: &str, accepted: bool) {
    let mut all = COUNTS.lock().unwrap_or_else(PoisonError::into_inner);
    let i = match all.iter().position(|(n, _, _)| n == set) {
        Some(i) => i,
        None => {
            all.push((set.to_owned(), 0, 0));
            all.len() - 1
        }
    };
    if let Some((_, a, r)) = all.get_mut(i) {
        *(if accepted { a } else { r }) += 1;
    }
}

/// Per set: (name, hash, revision) of the version serving.
static SERVING: Mutex<Vec<(String, String, String)>> = Mutex::new(Vec::new());

/// Records the version of `set` that serves now (at start and after each accepted reload),
/// for `/metrics`' `esm_authz_policy_info`.
pub fn serving(set: &str, hash: &str, revision: &str) {
    let mut all = SERVING.lock().unwrap_or_else(PoisonError::into_inner);
    let entry = (set.to_owned(), hash.to_owned(), revision.to_owned());
    match all.iter_mut().find(|(n, _, _)| n == set) {
        Some(e) => *e = entry,
        None => all.push(entry),
    }
}

/// (set, hash, revision) of every set serving.
pub fn serving_now() -> Vec<(String, String, String)> {
    SERVING
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// Every set that has been reloaded or refused since the process started.
pub fn counts() -> Vec<ReloadCounts> {
    COUNTS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .map(|(set, accepted, refused)| ReloadCounts {
            set: set.clone(),
            accepted: *accepted,
            refused: *refused,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_and_refused_reloads_are_counted_per_set() {
        count("reload-counts-test-a", true);
        count("reload-counts-test-a", false);
        count("reload-counts-test-a", false);
        count("reload-counts-test-b", true);
        let all = counts();
        let a = all.iter().find(|c| c.set == "reload-counts-test-a");
        let b = all.iter().find(|c| c.set == "reload-counts-test-b");
        assert_eq!(a.map(|c| (c.accepted, c.refused)), Some((1, 2)));
        assert_eq!(b.map(|c| (c.accepted, c.refused)), Some((1, 0)));
    }
}
