//! From check results to controls: pure. A control fails when any of its checks fails or
//! lacks evidence; when the log does not verify, every control that reads the log fails too.

use std::collections::BTreeMap;

use crate::checks::INTEGRITY_CHECK;
use crate::framework::Framework;
use crate::model::{CheckResult, ControlResult, Status, Summary};

pub fn controls(
    fw: &Framework,
    checks: &BTreeMap<String, CheckResult>,
    log_verified: bool,
) -> Vec<ControlResult> {
    fw.controls
        .iter()
        .map(|c| {
            let mut results: Vec<CheckResult> = c
                .checks
                .iter()
                .filter_map(|id| checks.get(id).cloned())
                .collect();
            // Every automated check reads the log: without its integrity, none stands.
            if !log_verified
                && !c.checks.is_empty()
                && !c.checks.iter().any(|k| k == INTEGRITY_CHECK)
            {
                if let Some(chain) = checks.get(INTEGRITY_CHECK) {
                    results.push(chain.clone());
                }
            }
            for (i, m) in c.manual.iter().enumerate() {
                results.push(CheckResult {
                    id: format!("manual.{}", i + 1),
                    description: m.clone(),
                    status: Status::Manual,
                    counts: BTreeMap::new(),
                    sample: Vec::new(),
                    exceptions: Vec::new(),
                });
            }
            ControlResult {
                id: c.id.clone(),
                title: c.title.clone(),
                statement: c.statement.clone(),
                status: combine(results.iter().map(|r| r.status)),
                checks: results,
            }
        })
        .collect()
}

/// Failed (or insufficient evidence, reported as failed) beats manual beats passed; all
/// not-applicable is not applicable.
pub fn combine(statuses: impl Iterator<Item = Status>) -> Status {
    let mut any = false;
    let mut all_na = true;
    let mut manual = false;
    for s in statuses {
        any = true;
        if s.fails() {
            return Status::Failed;
        }
        manual |= s == Status::Manual;
        all_na &= s == Status::NotApplicable;
    }
    if manual {
        Status::Manual
    } else if any && all_na {
        Status::NotApplicable
    } else {
        Status::Passed
    }
}

pub fn summary(controls: &[ControlResult]) -> Summary {
    let mut counts = BTreeMap::new();
    for s in [
        Status::Passed,
        Status::Failed,
        Status::NotApplicable,
        Status::InsufficientEvidence,
        Status::Manual,
    ] {
        counts.insert(s.as_str().to_owned(), 0);
    }
    for c in controls {
        *counts.entry(c.status.as_str().to_owned()).or_insert(0) += 1;
    }
    let failed = controls.iter().any(|c| c.status.fails());
    Summary {
        result: if failed { "fail" } else { "pass" }.into(),
        counts,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::checks::Tally;

    fn checks(statuses: &[(&str, Status)]) -> BTreeMap<String, CheckResult> {
        statuses
            .iter()
            .map(|(id, s)| (id.to_string(), Tally::default().result(id, *s)))
            .collect()
    }

    #[test]
    fn insufficient_evidence_fails_and_manual_does_not() {
        assert_eq!(
            combine([Status::Passed, Status::Manual].into_iter()),
            Status::Manual
        );
        assert_eq!(
            combine([Status::Manual, Status::InsufficientEvidence].into_iter()),
            Status::Failed
        );
        assert_eq!(
            combine([Status::NotApplicable, Status::NotApplicable].into_iter()),
            Status::NotApplicable
        );
        assert_eq!(
            combine([Status::NotApplicable, Status::Passed].into_iter()),
            Status::Passed
        );
    }

    #[test]
    fn broken_log_fails_every_control_that_reads_it() {
        let fw = Framework::builtin("iso27001").unwrap().unwrap();
        let mut all: Vec<(&str, Status)> = crate::checks::CATALOGUE
            .iter()
            .map(|(id, _)| (*id, Status::Passed))
            .collect();
        all.retain(|(id, _)| *id != INTEGRITY_CHECK);
        all.push((INTEGRITY_CHECK, Status::Failed));
        let c = controls(&fw, &checks(&all), false);
        assert!(c.iter().all(|c| c.status == Status::Failed), "{c:?}");
        let by_id = |id: &str| c.iter().find(|c| c.id == id).unwrap().clone();
        assert!(by_id("8.17").checks.iter().any(|k| k.id == INTEGRITY_CHECK));
        assert_eq!(summary(&c).result, "fail");
    }
}
