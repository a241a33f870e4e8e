//! Short scheduler slices for what waits on a request (`SuFcgiShortSlices`,
//! lighttpd `sufcgi.short-slices`; on by default).
//!
//! Why: per-owner cgroups give every owner its share of the CPUs, but not a
//! prompt turn. A request of owner B wakes, in turn, a server thread, B's
//! worker and the server thread again; each can find a CPU running one of
//! owner A's CPU-bound workers, and Linux's fair scheduler (EEVDF) lets the
//! running task finish its slice (1.4–3 ms by default) before a task that
//! merely woke up — unless the woken task asks for a *shorter* slice than
//! the running one (Linux 6.12+ custom slices, `sched_setattr`'s runtime):
//! then it preempts at once. So the server's own threads run with a short
//! slice, and so does every worker until it shows itself CPU-bound; a
//! CPU-bound worker goes back to the kernel's default slice (and back to a
//! short one when it calms down). Shares are untouched: a slice decides
//! how soon, not how much. Kernels before 6.12 ignore the setting.

use crate::core::sys::sched;
use std::time::Instant;

/// The short slice: the kernel's minimum (0.1 ms). The default is the base
/// slice (0.7 ms on 6.18, 0.75 on 6.12) × (1 + log2 CPUs, at most 3): 1.4 ms
/// on 2 CPUs (read with `sched_getattr` here), 2.8 ms on 8 or more.
pub const SHORT_SLICE_NS: u64 = 100_000;
/// A worker that was running or waiting for a CPU for at least this share
/// of the time since the last look is CPU-bound…
pub const CPU_BOUND_PERCENT: u64 = 50;
/// …and one below this share is not any more (between the two it stays as it was).
pub const CALM_PERCENT: u64 = 20;
/// Looks closer together than this say too little to judge by.
const MIN_WINDOW_NS: u64 = 200_000_000;

/// Which slice a worker runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Mostly asleep, waiting for requests: the short slice.
    Interactive,
    /// Runnable most of the time: the kernel's default slice.
    CpuBound,
}

impl Class {
    pub fn slice_ns(self) -> u64 {
        match self {
            Class::Interactive => SHORT_SLICE_NS,
            Class::CpuBound => 0,
        }
    }
}

/// The class after a window of `window_ns` in which the worker was running
/// or runnable for `demand_ns`, with hysteresis.
pub fn classify(prev: Class, demand_ns: u64, window_ns: u64) -> Class {
    if window_ns == 0 {
        return prev;
    }
    let pct = demand_ns.saturating_mul(100) / window_ns;
    if pct >= CPU_BOUND_PERCENT {
        Class::CpuBound
    } else if pct < CALM_PERCENT {
        Class::Interactive
    } else {
        prev
    }
}

/// The supervisor's watch on one worker's demand.
#[derive(Debug, Clone, Copy)]
pub struct Watch {
    pub class: Class,
    last_demand: u64,
    last_at: Instant,
}

impl Watch {
    /// A worker spawned with the short slice.
    pub fn new(now: Instant) -> Watch {
        Watch { class: Class::Interactive, last_demand: 0, last_at: now }
    }

    /// Whether a look now would judge a long enough window.
    pub fn due(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last_at).as_nanos() as u64 >= MIN_WINDOW_NS
    }

    /// Fold in the worker's running + waiting total now (`demand_ns`, all its
    /// threads); `Some(class)` when its slice should change to the class's.
    /// A total that went down (a thread ended) starts a new window.
    pub fn observe(&mut self, demand_ns: u64, now: Instant) -> Option<Class> {
        let window = now.saturating_duration_since(self.last_at).as_nanos() as u64;
        if window < MIN_WINDOW_NS {
            return None;
        }
        let used = demand_ns.checked_sub(self.last_demand);
        self.last_demand = demand_ns;
        self.last_at = now;
        let next = classify(self.class, used?, window);
        (next != self.class).then(|| {
            self.class = next;
            next
        })
    }
}

/// Give every thread of process `pid` the class's slice. Threads that start
/// later inherit the slice of the thread that starts them.
pub fn apply(pid: libc::pid_t, class: Class) -> std::io::Result<()> {
    for t in sched::threads(pid)? {
        // A thread that has just ended is no error.
        let _ = sched::set_slice_ns(t, class.slice_ns());
    }
    Ok(())
}

/// For the server's process, before it starts its threads (Apache's
/// child_init; lighttpd at configuration): every thread it starts inherits
/// the slice. `on` false puts the default back (a graceful restart that
/// turned the setting off).
pub fn server_process(on: bool) -> std::io::Result<()> {
    sched::set_slice_ns(0, if on { SHORT_SLICE_NS } else { 0 })
}

/// The status page's words for the slices in force.
pub fn state_text(on: bool, kernel_has_slices: bool) -> &'static str {
    match (on, kernel_has_slices) {
        (false, _) => "kernel default (SuFcgiShortSlices off)",
        (true, true) => "short for the server and for workers that are not CPU-bound",
        (true, false) => "kernel default (this kernel has no custom slices; Linux 6.12+ does)",
    }
}

/// What the status page and the start-up log say: whether this kernel
/// honours custom slices (it reports a fair thread's slice).
pub fn kernel_has_slices() -> bool {
    matches!(sched::slice_ns(0), Ok(Some(n)) if n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MS: u64 = 1_000_000;

    #[test]
    fn hysteresis() {
        use Class::*;
        assert_eq!(classify(Interactive, 600 * MS, 1000 * MS), CpuBound);
        assert_eq!(classify(Interactive, 500 * MS, 1000 * MS), CpuBound, "50 % is CPU-bound");
        assert_eq!(classify(Interactive, 300 * MS, 1000 * MS), Interactive, "between: unchanged");
        assert_eq!(classify(CpuBound, 300 * MS, 1000 * MS), CpuBound, "between: unchanged");
        assert_eq!(classify(CpuBound, 199 * MS, 1000 * MS), Interactive);
        assert_eq!(classify(CpuBound, 0, 0), CpuBound, "no window: unchanged");
        // Runnable on two CPUs' worth of threads: still just CPU-bound.
        assert_eq!(classify(Interactive, 2000 * MS, 1000 * MS), CpuBound);
    }

    #[test]
    fn watch_changes_once_per_transition() {
        let t0 = Instant::now();
        let mut w = Watch::new(t0);
        assert_eq!(w.class, Class::Interactive);
        // First look: 250 ms of which 240 ms runnable (a burner).
        assert_eq!(w.observe(240 * MS, t0 + Duration::from_millis(250)), Some(Class::CpuBound));
        assert_eq!(w.observe(480 * MS, t0 + Duration::from_millis(500)), None, "still burning: no change");
        // Too soon to judge: nothing, and the window goes on.
        assert_eq!(w.observe(481 * MS, t0 + Duration::from_millis(510)), None);
        // Calm: 5 ms in 250 ms.
        assert_eq!(w.observe(485 * MS, t0 + Duration::from_millis(750)), Some(Class::Interactive));
        // A thread ended: the total went down; a new window, no verdict.
        assert_eq!(w.observe(10 * MS, t0 + Duration::from_millis(1000)), None);
        assert_eq!(w.class, Class::Interactive);
        assert_eq!(w.observe(250 * MS, t0 + Duration::from_millis(1250)), Some(Class::CpuBound));
    }

    #[test]
    fn state_words() {
        assert!(state_text(false, true).contains("SuFcgiShortSlices off"));
        assert!(state_text(true, true).starts_with("short"));
        assert!(state_text(true, false).contains("Linux 6.12+"));
    }

    #[test]
    fn slices_of_classes() {
        assert_eq!(Class::Interactive.slice_ns(), SHORT_SLICE_NS);
        assert_eq!(Class::CpuBound.slice_ns(), 0, "the kernel's default");
    }
}
