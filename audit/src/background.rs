//! The writer is background work: evidence must keep up on average (its queue is bounded
//! and a full queue fails closed), but no single batch should take a core from the threads
//! that answer Envoy. On an edge box with two cores, a writer at normal priority that hashes
//! and inserts a few hundred decisions at once delays the proxy's own worker, which shows up
//! as tail latency on every request. A higher nice value lets the scheduler run the request
//! path first and the writer in the gaps; CFS still gives it a share (about a tenth of a
//! busy core at nice 10), so it is never starved outright.
//!
//! A nice value alone does not stop a batch from holding its core: the scheduler lets a
//! running thread finish its slice (milliseconds) before a woken request thread gets the
//! core, and a request whose answer is due meanwhile waits — that was the p99 of audited
//! decisions through Envoy (1.5× the no-op's). So the writer also gives way every
//! [`GIVE_WAY_EVERY`] events of a batch ([`give_way`]): a woken request thread runs then,
//! and the batch goes on when it is done. The writer's total CPU is the same.

/// How many events of a batch the writer makes, links or inserts before it gives way: a few
/// tens of microseconds of work, against one `sched_yield` (well under a microsecond).
pub const GIVE_WAY_EVERY: usize = 64;

/// Called with the index of each event of a batch: every [`GIVE_WAY_EVERY`]th, lets the
/// scheduler run another thread that is waiting for this core, if one is.
pub fn give_way(i: usize) {
    if i % GIVE_WAY_EVERY == GIVE_WAY_EVERY - 1 {
        std::thread::yield_now();
    }
}

/// Lowers the calling thread's priority to `nice` (0 leaves it); threads it spawns inherit
/// the value. Best effort: a refusal is logged.
pub fn lower_current_thread(nice: i32) {
    if nice == 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        // On Linux the nice value belongs to a thread, so this leaves the rest of esm alone.
        let tid = rustix::thread::gettid();
        if let Err(e) = rustix::process::setpriority_process(Some(tid), nice) {
            tracing::debug!(error = %e, nice, "audit writer priority not lowered");
        }
    }
}
