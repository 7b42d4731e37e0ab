//! What the ext_authz service counts for `/metrics`: plain atomics and histogram handles
//! that the binary reads at scrape time. Recording is a few relaxed atomic adds: the
//! decision path it measures takes 0.15 µs when the memo answers.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};

use esm_histogram::Histogram;

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    pub allowed: AtomicU64,
    pub denied: AtomicU64,
    /// Denied because the policy could not decide (input, evaluation, undefined, result).
    pub failed_closed: AtomicU64,
    /// Dry-run requests the policy would have denied.
    pub dry_run_would_deny: AtomicU64,
    /// Denied because the decision could not be recorded: the audit queue was full and the
    /// store fails closed, or (`sync`) its record was not committed.
    pub audit_refused: AtomicU64,
    pub eval_nanos: AtomicU64,
    /// Decisions answered from a set's decision memo.
    pub memoized: AtomicU64,
    /// Decisions evaluated on regorus' bytecode VM, and on its interpreter (a set the VM
    /// does not run: see the warning logged when it was loaded).
    pub evaluated_rvm: AtomicU64,
    pub evaluated_interpreter: AtomicU64,
    /// Decision latency by policy set, in the order the sets were first served. Locked only
    /// when a service is built and at scrape time; a Check holds its set's handle.
    latency: Mutex<Vec<(Arc<str>, Arc<SetLatency>)>>,
}

/// One policy set's decision latency, from the Check's arrival in the service to its
/// decision (in `sync` decision-log mode, to the record's commit), by
/// the result it is counted under in `esm_authz_decisions_total`.
#[derive(Debug, Default)]
pub struct SetLatency {
    pub allow: Histogram,
    pub deny: Histogram,
    pub fail_closed: Histogram,
    pub audit_refused: Histogram,
}

impl SetLatency {
    /// The histograms with their `result` label values, as `esm_authz_decisions_total`
    /// names them.
    pub fn by_result(&self) -> [(&'static str, &Histogram); 4] {
        [
            ("allow", &self.allow),
            ("deny", &self.deny),
            ("fail_closed", &self.fail_closed),
            ("audit_refused", &self.audit_refused),
        ]
    }
}

/// The `policy_set` label of Checks that named a set esm does not serve: the name they
/// sent is the client's, and a label made of it would let a client grow `/metrics`
/// without bound.
pub const UNSERVED_SET: &str = "";

impl Metrics {
    /// The latency handles of the set named `name`, made on first use: two services (the
    /// TCP and Unix listeners share one) serving a set record into the same histograms.
    pub fn set_latency(&self, name: &str) -> Arc<SetLatency> {
        let mut all = self.latency.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, l)) = all.iter().find(|(n, _)| &**n == name) {
            return l.clone();
        }
        let l = Arc::new(SetLatency::default());
        all.push((Arc::from(name), l.clone()));
        l
    }

    /// Every set's latency handles, by name.
    pub fn latencies(&self) -> Vec<(Arc<str>, Arc<SetLatency>)> {
        self.latency
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The one result a decision is counted under (`esm_authz_decisions_total{result}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counted {
    Allowed,
    /// The policy denied.
    Denied,
    /// The policy could not decide: denied by esm.
    FailedClosed,
    /// The decision could not be recorded (audit queue full and failing closed, or in
    /// `sync` mode not committed): denied by esm, whatever the policy said.
    AuditRefused,
}

/// A decision's result and the index of its set in the service's latency handles.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outcome {
    pub(crate) counted: Counted,
    pub(crate) set: usize,
    /// From the Check's arrival to its decision (the audit record queued after it).
    pub(crate) nanos: u64,
}

impl Outcome {
    /// The same set's decision, denied because its record was not committed.
    pub(crate) fn refused(self) -> Self {
        Self {
            counted: Counted::AuditRefused,
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_named_twice_shares_its_histograms() {
        let m = Metrics::default();
        let a = m.set_latency("default");
        let b = m.set_latency("default");
        m.set_latency("admin");
        assert!(Arc::ptr_eq(&a, &b));
        a.deny.observe_nanos(1_000);
        let all = m.latencies();
        let names: Vec<&str> = all.iter().map(|(n, _)| &**n).collect();
        assert_eq!(names, ["default", "admin"]);
        assert_eq!(all[0].1.deny.snapshot().count, 1);
    }
}
