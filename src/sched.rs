//! Scheduling of the store's threads and of the encoder's.
//!
//! A shard thread is woken for every read that misses the hot tier. Under
//! Linux's default policy the woken thread preempts the runtime thread
//! that woke it whenever they share a core: each cold read then costs two
//! context switches, and at 20k reads/s on one core those switches took
//! about a sixth of the CPU (`perf`: `finish_task_switch` and the wake-up
//! path). `SCHED_BATCH` keeps the same CPU share (the nice value is
//! untouched) but a woken batch thread never preempts: the runtime goes on
//! queueing commands until it waits, and the shard thread then serves the
//! whole queue in one turn. Measured with the server on one core, reads
//! at random over 200,000 pages (three rounds each, interleaved): 20.2k,
//! 23.6k, 22.2k req/s before, 23.7k, 26.2k, 27.5k after, p99 lower too; a
//! lone connection's latency did not change (it waits, so the woken thread
//! runs at once).

/// Puts the calling thread under `SCHED_BATCH`. Failure is harmless (the
/// thread keeps the default policy), so it is only logged.
#[cfg(target_os = "linux")]
pub fn batch_this_thread() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` outlives the call.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "SCHED_BATCH not set");
    }
}

#[cfg(not(target_os = "linux"))]
pub fn batch_this_thread() {}

/// The encoder's nice value. At nice 10 (a tenth of a busy core) its
/// first encodings of the misses in `bench/run.sh mix` took 9% of the
/// core that served the hits. Its work can wait (a page it has no time
/// for is stored as sent and encoded at a later hit, `proxy::recode`);
/// the hits cannot.
#[cfg(target_os = "linux")]
const NICE: libc::c_int = 19;

/// Puts the calling thread under `SCHED_BATCH` at nice 19: on a core the
/// server keeps busy it takes about 1.5% (a nice-19 thread's weight, 15,
/// against a default thread's 1024), and any core left idle. For work no
/// request waits for (`proxy::compress`'s encoder), which must not take a
/// core from the runtime serving hits, yet must not starve either
/// (`SCHED_IDLE` would, on a core the server keeps busy).
#[cfg(target_os = "linux")]
pub fn background_this_thread() {
    batch_this_thread();
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    // SAFETY: a thread id of this process; nice 19 only lowers priority.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, NICE) };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "nice 19 not set");
    }
}

#[cfg(not(target_os = "linux"))]
pub fn background_this_thread() {}

/// Puts the calling thread under `SCHED_IDLE`: it runs only on CPU time
/// nothing else wants. For work that may wait for good (re-encoding pages
/// already stored in a smaller coding). For good: an unprivileged thread
/// may leave `SCHED_IDLE` only as far as `RLIMIT_NICE` allows, 0 by
/// default.
#[cfg(target_os = "linux")]
pub fn idle_this_thread() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` outlives the call.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "SCHED_IDLE not set");
    }
}

#[cfg(not(target_os = "linux"))]
pub fn idle_this_thread() {}
