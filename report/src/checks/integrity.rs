//! The log itself: gaps, checkpoint schedule, the order of event times, and the result of
//! verifying the chain (computed by the stream, which walks the chain as it reads).

use super::{Ev, Tally};
use crate::model::{CheckResult, Status};
use crate::period::{rfc3339, NS_PER_SEC};

/// The writer batches up to 8,192 events and checkpoints after a batch; a commit, a CLI
/// process starting its writer, and the interval timer all add a little.
const MAX_BATCH: u64 = 8_192;
const SCHEDULE_SLACK_NS: i64 = 30 * NS_PER_SEC;

pub struct AuditChecks {
    every: u64,
    interval_ns: i64,
    gaps: Tally,
    gap_records: u64,
    schedule: Tally,
    /// In-period events not yet covered by a checkpoint: how many, the first, the earliest time.
    pending: u64,
    pending_first: Option<(u64, i64)>,
    checkpoints: u64,
    events: u64,
}

impl AuditChecks {
    pub fn new(every: u64, interval_ns: i64) -> Self {
        Self {
            every,
            interval_ns,
            gaps: Tally::default(),
            gap_records: 0,
            schedule: Tally::default(),
            pending: 0,
            pending_first: None,
            checkpoints: 0,
            events: 0,
        }
    }

    pub fn observe(&mut self, e: &Ev<'_>) {
        self.events += 1;
        if e.kind == esm_audit::kind::AUDIT_GAP {
            self.gap_records += 1;
            self.gaps
                .except_with(Some(e.seq), || format!("audit gap: {}", e.reason));
        }
        self.pending += 1;
        match &mut self.pending_first {
            Some((_, t)) => *t = (*t).min(e.time_ns),
            None => self.pending_first = Some((e.seq, e.time_ns)),
        }
    }

    /// A checkpoint covering every event observed so far (called in tree order).
    pub fn checkpoint(&mut self, tree_size: u64, time_ns: i64) {
        let Some((first, earliest)) = self.pending_first.take() else {
            return;
        };
        self.checkpoints += 1;
        self.schedule.support(tree_size);
        let limit = self.every + MAX_BATCH;
        if self.pending > limit {
            self.schedule.except_with(
                Some(tree_size),
                || format!(
                    "checkpoint at {tree_size} came after {} events (seq {first} on), more than {limit}",
                    self.pending
                ),
            );
        }
        let waited = time_ns - earliest;
        if waited > self.interval_ns + SCHEDULE_SLACK_NS {
            self.schedule.except_with(
                Some(first),
                || format!(
                    "events from seq {first} ({}) waited {}s for the checkpoint at {tree_size}; the interval is {}s",
                    rfc3339(earliest),
                    waited / NS_PER_SEC,
                    self.interval_ns / NS_PER_SEC
                ),
            );
        }
        self.pending = 0;
    }

    /// `now_ns`: when the report was made; events younger than one interval may still wait.
    pub fn finish(mut self, now_ns: i64) -> Vec<CheckResult> {
        if let Some((first, earliest)) = self.pending_first {
            if now_ns - earliest > self.interval_ns + SCHEDULE_SLACK_NS {
                self.schedule.except_with(Some(first), || {
                    format!(
                        "{} events from seq {first} are covered by no signed checkpoint",
                        self.pending
                    )
                });
            } else {
                self.schedule.count("awaiting_checkpoint");
            }
        }
        self.schedule.add("checkpoints", self.checkpoints);
        self.gaps.add("events", self.events);
        self.gaps.add("gap_records", self.gap_records);
        let n = self.events;
        vec![
            self.schedule.judged("audit.checkpoints_on_schedule", n),
            self.gaps.judged("audit.no_gaps", n),
        ]
    }
}

/// `audit.chain_verifies`: from the stream's walk.
pub fn chain_result(
    verified: bool,
    reason: Option<&str>,
    events: u64,
    sample: Vec<u64>,
) -> CheckResult {
    let mut t = Tally::default();
    t.add("events_verified", events);
    for s in sample {
        t.support(s);
    }
    if let Some(r) = reason {
        t.except(None, r.to_owned());
    }
    let status = if verified {
        Status::Passed
    } else {
        Status::Failed
    };
    t.result(super::INTEGRITY_CHECK, status)
}

pub struct ClockCheck {
    tolerance_ns: i64,
    latest: Option<(u64, i64)>,
    t: Tally,
    events: u64,
}

impl ClockCheck {
    pub fn new(tolerance_ns: i64) -> Self {
        Self {
            tolerance_ns,
            latest: None,
            t: Tally::default(),
            events: 0,
        }
    }

    pub fn observe(&mut self, e: &Ev<'_>) {
        self.events += 1;
        match self.latest {
            Some((seq, t)) if e.time_ns < t - self.tolerance_ns => {
                self.t.except_with(Some(e.seq), || {
                    format!(
                        "seq {} at {} is {}s before seq {seq} at {}",
                        e.seq,
                        rfc3339(e.time_ns),
                        (t - e.time_ns) / NS_PER_SEC,
                        rfc3339(t)
                    )
                });
            }
            Some((_, t)) if e.time_ns <= t => {}
            _ => self.latest = Some((e.seq, e.time_ns)),
        }
    }

    pub fn finish(mut self) -> CheckResult {
        self.t.add("events", self.events);
        if let Some((seq, _)) = self.latest {
            self.t.support(seq);
        }
        let n = self.events;
        self.t.judged("clock.in_order", n)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::checks::test_events::ev;

    #[test]
    fn gap_record_is_an_exception() {
        let mut a = AuditChecks::new(10, 60 * NS_PER_SEC);
        a.observe(&ev(1, 0, "svid.issued", "{}"));
        let mut g = ev(2, 1, "audit.gap", "{}");
        g.reason = "3 events dropped";
        a.observe(&g);
        a.checkpoint(2, 2 * NS_PER_SEC);
        let r = a.finish(10 * NS_PER_SEC);
        assert_eq!(r[0].status, Status::Passed);
        assert_eq!(r[1].status, Status::Failed);
        assert_eq!(r[1].exceptions[0].seq, Some(2));
    }

    #[test]
    fn late_or_missing_checkpoints_are_exceptions() {
        let mut a = AuditChecks::new(10, 60 * NS_PER_SEC);
        a.observe(&ev(1, 0, "x", "{}"));
        a.checkpoint(1, 3600 * NS_PER_SEC);
        a.observe(&ev(2, 3700, "x", "{}"));
        let r = a.finish(3700 * NS_PER_SEC + 10 * NS_PER_SEC);
        assert_eq!(r[0].status, Status::Failed);
        assert_eq!(r[0].exceptions.len(), 1);
        let mut a = AuditChecks::new(10, 60 * NS_PER_SEC);
        a.observe(&ev(1, 0, "x", "{}"));
        let r = a.finish(3600 * NS_PER_SEC);
        assert_eq!(r[0].status, Status::Failed);
    }

    #[test]
    fn time_going_back_beyond_tolerance_is_an_exception() {
        let mut c = ClockCheck::new(2 * NS_PER_SEC);
        c.observe(&ev(1, 100, "x", "{}"));
        c.observe(&ev(2, 99, "x", "{}"));
        c.observe(&ev(3, 90, "x", "{}"));
        c.observe(&ev(4, 101, "x", "{}"));
        let r = c.finish();
        assert_eq!(r.status, Status::Failed);
        assert_eq!(r.exceptions.len(), 1);
        assert_eq!(r.exceptions[0].seq, Some(3));
    }
}
