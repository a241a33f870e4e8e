//! May a pool start a worker, must one stop, and why: the supervisor's
//! decisions about workers, as pure functions over plain figures.
//!
//! mod_fcgid keeps "may I spawn / may I kill" (`fcgid_spawn_ctl.c`) apart
//! from its process manager; so does this file. The loop (`server.rs` and
//! `server/`) gathers the figures (scoreboard states, the clock, /proc) and
//! carries out what is decided here; nothing here reads a clock, a socket or
//! a process, so every decision is tested with hand-made inputs below.

use std::time::{Duration, Instant};

use super::protocol::StopCounts;
use crate::core::limits::Limits;

/// A worker that dies sooner than this after its start counts as a crash.
pub const CRASH_WINDOW: Duration = Duration::from_secs(1);
/// Longest pause between restarts of a crashing pool.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A pool that did not crash for this long starts its backoff over at 1 s.
pub const STREAK_RESET: Duration = Duration::from_secs(120);

/// A pool backs off only after this many crashes at start in a row (no
/// worker of it starting in between): one worker killed from outside (the
/// OOM killer, an admin's kill -9) just after its start is not a crash loop.
pub const CRASH_BURST: u32 = 3;

/// TERM, then KILL after this long (timeouts, reload, idle).
pub const STOP_GRACE: Duration = Duration::from_secs(3);
/// A worker this young with a connection still pending has not reached accept().
pub const STARTING_WINDOW: Duration = Duration::from_secs(30);
/// A pool with no worker for this long is forgotten (its slot is freed).
pub const FORGET_EMPTY_POOL: Duration = Duration::from_secs(600);
/// How often pools are looked at while any has workers or waiters.
pub const TICK: Duration = Duration::from_millis(250);
/// … and while none has.
pub const QUIET_TICK: Duration = Duration::from_secs(5);

/// 1 s, 2 s, 4 s … capped at 60 s, for the `streak`-th consecutive crash (1-based).
pub fn backoff_delay(streak: u32) -> Duration {
    let exp = streak.saturating_sub(1).min(6);
    Duration::from_secs(1u64 << exp).min(MAX_BACKOFF)
}

/// Whether a worker that exited on its own crashed at start: it died within
/// `CRASH_WINDOW` of its start without having taken a connection. One that
/// accepted a request has started, however soon it died.
pub fn crashed_at_start(lived: Duration, served: u32, accepted: bool) -> bool {
    lived < CRASH_WINDOW && served == 0 && !accepted
}

/// A young worker SIGKILLed by someone else (an admin, a script, the
/// kernel's OOM killer outside any memory limit of ours: `oom` is ours)
/// while another live worker of its pool has taken requests: the app
/// evidently starts, so this is no crash at start and no step towards a
/// back-off (the streak stays as it is). Under a server that keeps its
/// connections to workers a fresh worker may wait a while for its first
/// request, so "it took one" alone cannot tell. An app whose workers all
/// die at start has no such sibling and still backs off, whatever kills them.
pub fn killed_from_outside(signal: Option<i32>, oom: bool, sibling_started: bool) -> bool {
    signal == Some(libc::SIGKILL) && !oom && sibling_started
}

/// After the `streak`-th crash at start in a row: None to start another
/// worker at once, else how long the pool backs off.
pub fn crash_backoff(streak: u32) -> Option<Duration> {
    (streak >= CRASH_BURST).then(|| backoff_delay(streak - CRASH_BURST + 1))
}

/// Why the supervisor is stopping a worker (for the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Idle,
    MaxRequests,
    Reload,
    Timeout,
    Memory,
    Retired,
}

impl StopReason {
    pub fn text(self) -> &'static str {
        match self {
            StopReason::Idle => "idle",
            StopReason::MaxRequests => "max requests reached",
            StopReason::Reload => "reload: the app or its configuration changed",
            StopReason::Timeout => "request timeout",
            StopReason::Memory => "memory limit exceeded",
            StopReason::Retired => "retired after a failed request",
        }
    }

    /// One more worker stopped for this reason (for the status page).
    pub fn count_in(self, c: &mut StopCounts) {
        let n = match self {
            StopReason::Idle => &mut c.idle,
            StopReason::MaxRequests => &mut c.max_requests,
            StopReason::Reload => &mut c.reload,
            StopReason::Timeout => &mut c.timeout,
            StopReason::Memory => &mut c.memory,
            StopReason::Retired => &mut c.retired,
        };
        *n = n.saturating_add(1);
    }
}

// ---- crashes at start and the backoff ----

/// A pool's record of crashes at start (and failed forks), and its backoff.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backoff {
    /// Consecutive crashes at start; reset when a worker outlives the crash window.
    pub streak: u32,
    /// While backing off: when spawning may resume.
    pub restart_at: Option<Instant>,
    /// When the last crash at start happened; a long quiet spell resets the streak.
    pub last_crash: Option<Instant>,
}

/// What a worker's own end (the supervisor did not stop it) means for its pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashVerdict {
    /// It had started: not a crash at start (the streak is over).
    Started,
    /// Killed from outside beside a serving sibling (`killed_from_outside`):
    /// no crash at start, the streak as it was.
    KilledFromOutside,
    /// A crash at start while the pool is backing off already: nothing changes.
    BackingOff,
    /// The `streak`-th crash at start in a row, not yet a burst: start another at once.
    Restart { streak: u32 },
    /// A burst: no start for `delay` (until `Backoff::restart_at`).
    BackOff { delay: Duration },
}

impl Backoff {
    pub fn active(&self) -> bool {
        self.restart_at.is_some()
    }

    /// A worker of the pool exited on its own at `now` after `lived`, having
    /// been given `served` requests (`accepted`: it took a connection).
    pub fn worker_ended(&mut self, lived: Duration, served: u32, accepted: bool, now: Instant) -> CrashVerdict {
        if !crashed_at_start(lived, served, accepted) {
            self.streak = 0;
            return CrashVerdict::Started;
        }
        if self.restart_at.is_some() {
            return CrashVerdict::BackingOff;
        }
        if self.last_crash.is_some_and(|t| now.saturating_duration_since(t) > STREAK_RESET) {
            self.streak = 0;
        }
        self.last_crash = Some(now);
        self.streak = self.streak.saturating_add(1);
        match crash_backoff(self.streak) {
            None => CrashVerdict::Restart { streak: self.streak },
            Some(delay) => {
                self.restart_at = Some(now + delay);
                CrashVerdict::BackOff { delay }
            }
        }
    }

    /// Forking a worker failed at `now`: one backoff step more; how long.
    pub fn fork_failed(&mut self, now: Instant) -> Duration {
        self.streak = self.streak.saturating_add(1);
        let delay = backoff_delay(self.streak);
        self.restart_at = Some(now + delay);
        delay
    }

    /// Whether the backoff is over at `now`; if so it ends here (spawning resumes).
    pub fn ends(&mut self, now: Instant) -> bool {
        let over = self.restart_at.is_some_and(|t| t <= now);
        if over {
            self.restart_at = None;
        }
        over
    }

    /// A request for a pool with `live` workers: while it backs off with none
    /// left, it is refused, saying in how many seconds (rounded up) it starts again.
    pub fn refusal_secs(&self, live: u32, now: Instant) -> Option<u64> {
        let t = self.restart_at?;
        (live == 0).then(|| t.saturating_duration_since(now).as_secs() + 1)
    }
}

// ---- how a worker's end is counted ----

/// How an ended worker counts on the status page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    Stopped(StopReason),
    /// Died on its own: a signal or a non-zero exit status.
    Crashed,
    /// Exited on its own with status 0.
    Exited,
    /// Ended in the supervisor's shutdown: not counted.
    Not,
}

/// Whether the kernel's OOM kill of a worker is why it ended: unless the
/// supervisor was stopping it for another reason than a failed request
/// (that failed request was the OOM kill, noticed first).
pub fn oom_is_why(stopped_for: Option<StopReason>) -> bool {
    stopped_for.is_none_or(|r| r == StopReason::Retired)
}

/// `stopped_for`: why the supervisor was stopping it, if it was; `oom`: the
/// kernel ended it for memory (and `oom_is_why`); `shutting_down`: the
/// supervisor is stopping; `clean`: it exited with status 0.
pub fn counted(stopped_for: Option<StopReason>, oom: bool, shutting_down: bool, clean: bool) -> Counted {
    match stopped_for {
        Some(_) if oom => Counted::Stopped(StopReason::Memory),
        Some(r) => Counted::Stopped(r),
        None if oom => Counted::Stopped(StopReason::Memory),
        None if shutting_down => Counted::Not,
        None if clean => Counted::Exited,
        None => Counted::Crashed,
    }
}

impl Counted {
    pub fn count_in(self, c: &mut StopCounts) {
        match self {
            Counted::Stopped(r) => r.count_in(c),
            Counted::Crashed => c.crashed = c.crashed.saturating_add(1),
            Counted::Exited => c.exited = c.exited.saturating_add(1),
            Counted::Not => {}
        }
    }
}

// ---- which workers to stop ----

/// A worker in service, as its scoreboard entry shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Done serving (recycled, retiring pool, broken connection).
    Retired,
    /// Idle, or parked (a server process keeps a connection to it, but it
    /// serves nothing: stopping it ends that kept connection).
    Idle,
    /// Serving.
    Busy,
}

/// One worker in service (in entry `index`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InService {
    pub index: u32,
    pub seen: Seen,
    /// Requests given to it.
    pub served: u32,
    /// Seconds since it was last used.
    pub idle_for: u32,
    /// Its resident set, where the memory watch measured it.
    pub rss: Option<u64>,
}

/// The pool, for `stops`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolFacts {
    pub limits: Limits,
    /// Replaced by a newer version.
    pub retiring: bool,
    /// Workers in service.
    pub live: u32,
    /// The supervisor watches RSS (a memory limit the kernel does not hold).
    pub memory_watch: bool,
}

/// A worker to take out of service: TERM (KILL later), or KILL at once (`hard`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stop {
    pub index: u32,
    pub reason: StopReason,
    pub hard: bool,
}

/// What should stop now: retired workers, idle ones beyond the minimum or of
/// a retiring pool, ones over their memory limit.
pub fn stops(pool: &PoolFacts, workers: &[InService]) -> Vec<Stop> {
    let l = &pool.limits;
    let mut live = pool.live;
    let mut out = Vec::new();
    let mut stop = |index, reason, hard| {
        out.push(Stop { index, reason, hard });
    };
    for w in workers {
        if w.seen == Seen::Retired {
            let reason = if pool.retiring {
                StopReason::Reload
            } else if l.max_requests > 0 && w.served >= l.max_requests {
                StopReason::MaxRequests
            } else {
                StopReason::Retired
            };
            stop(w.index, reason, false);
            live -= 1;
            continue;
        }
        if w.seen == Seen::Idle {
            if pool.retiring {
                stop(w.index, StopReason::Reload, false);
                live -= 1;
                continue;
            }
            if live > l.min_workers && w.idle_for >= l.idle_timeout {
                stop(w.index, StopReason::Idle, false);
                live -= 1;
                continue;
            }
        }
        if pool.memory_watch && l.memory_limit > 0 && w.rss.is_some_and(|rss| rss > l.memory_limit) {
            stop(w.index, StopReason::Memory, true);
            live -= 1;
        }
    }
    out
}

/// Whether a worker asked to stop at `since` gets KILL now.
pub fn kill_due(since: Instant, killed: bool, now: Instant) -> bool {
    !killed && now.saturating_duration_since(since) >= STOP_GRACE
}

// ---- when to start workers ----

/// A pool's demand for workers, for `spawn_wanted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Demand {
    pub min_workers: u32,
    pub max_workers: u32,
    /// Workers in service.
    pub live: u32,
    /// Requests waiting for a worker.
    pub waiting: usize,
    /// Workers idle (or parked) now.
    pub idle: usize,
    /// A worker is still starting (has a connection it has not accepted).
    pub starting: bool,
    pub retiring: bool,
    pub backing_off: bool,
}

impl Demand {
    pub fn below_minimum(&self) -> bool {
        self.live < self.min_workers
    }
}

/// Whether to start a worker now: below the minimum, or more requests
/// waiting than idle workers to take them (not "none idle": where requests
/// are handed a released worker at once, as lighttpd's event loop does, a
/// worker is idle for moments between them, and a pool looked at then would
/// never grow), within the pool's maximum and one at a time while a worker
/// is starting. Never for a retiring pool or one backing off.
pub fn spawn_wanted(d: &Demand) -> bool {
    if d.retiring || d.backing_off {
        return false;
    }
    d.below_minimum() || (d.waiting > d.idle && d.live < d.max_workers && !d.starting)
}

/// Whether a worker this old with a connection pending may still be starting.
pub fn may_be_starting(age: Duration) -> bool {
    age <= STARTING_WINDOW
}

/// The host's ceilings on worker processes (`SuFcgiMaxWorkersPerOwner`, `SuFcgiMaxWorkersTotal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ceilings {
    pub per_owner: u32,
    pub total: u32,
}

/// A ceiling that leaves no room for another worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The owner has `per_owner` workers.
    Owner(u32),
    /// The server has `total` workers.
    Total(u32),
}

/// Whether one more worker fits: the owner's processes (those of retiring
/// pools not counted) and all of the server's.
pub fn room_for_worker(c: Ceilings, owner_workers: u32, total_workers: u32) -> Result<(), Full> {
    if owner_workers >= c.per_owner {
        return Err(Full::Owner(c.per_owner));
    }
    if total_workers >= c.total {
        return Err(Full::Total(c.total));
    }
    Ok(())
}

/// A new pool's limits within the scoreboard: it has room for the ceiling it
/// was created with (see `Scoreboard::capacity_note` for a ceiling raised since).
pub fn fit_scoreboard(mut l: Limits, worker_capacity: u32) -> Limits {
    l.max_workers = l.max_workers.min(worker_capacity);
    l.min_workers = l.min_workers.min(l.max_workers);
    l
}

// ---- a pool's own end ----

/// Whether a pool with no process left is forgotten (its slot freed): a
/// retiring one at once, an unused one after `FORGET_EMPTY_POOL`; never
/// while it backs off (it would lose its backoff).
pub fn forget_pool(processes: u32, retiring: bool, empty_since: Option<Instant>, backing_off: bool, now: Instant) -> bool {
    processes == 0 && (retiring || empty_since.is_some_and(|t| now.saturating_duration_since(t) >= FORGET_EMPTY_POOL)) && !backing_off
}

/// How long until the next look at the pools (`busy`: any has processes,
/// backs off or retires).
pub fn tick_interval(busy: bool) -> Duration {
    if busy {
        TICK
    } else {
        QUIET_TICK
    }
}

#[cfg(test)]
#[path = "worker_policy_tests.rs"]
mod tests;
