//! The writer is background work: evidence must keep up on average (its queue is bounded
//! and a full queue fails closed), but no single batch should take a core from the threads
//! that answer Envoy. On an edge box with two cores, a writer at normal priority that hashes
//! and inserts a few hundred decisions at once delays the proxy's own worker, which shows up
//! as tail latency on every request. A higher nice value lets the scheduler run the request
//! path first and the writer in the gaps; CFS still gives it a share (about a tenth of a
//! busy core at nice 10), so it is never starved outright.

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
