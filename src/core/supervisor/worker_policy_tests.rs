//! The worker policy's decisions, each from hand-made figures (the
//! integration tests in tests/test_lifecycle.py see the same from outside).

use std::time::{Duration, Instant};

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn backoff_steps() {
    let secs: Vec<u64> = (1..=9).map(|s| backoff_delay(s).as_secs()).collect();
    assert_eq!(secs, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
    assert_eq!(backoff_delay(0).as_secs(), 1);
    assert_eq!(backoff_delay(u32::MAX).as_secs(), 60);
}

#[test]
fn only_a_burst_of_crashes_at_start_backs_off() {
    assert!(crashed_at_start(ms(80), 0, false), "died before taking any connection");
    assert!(!crashed_at_start(ms(80), 0, true), "killed while serving its first request: it had started");
    assert!(!crashed_at_start(ms(80), 1, false), "it served");
    assert!(!crashed_at_start(CRASH_WINDOW, 0, false), "it lived past the window");
    let steps: Vec<Option<u64>> = (1..=6).map(|s| crash_backoff(s).map(|d| d.as_secs())).collect();
    assert_eq!(steps, vec![None, None, Some(1), Some(2), Some(4), Some(8)]);
}

#[test]
fn stop_reasons_are_counted_apart() {
    let mut c = StopCounts::default();
    for r in [StopReason::Idle, StopReason::MaxRequests, StopReason::Reload, StopReason::Timeout, StopReason::Memory, StopReason::Retired] {
        r.count_in(&mut c);
    }
    StopReason::Memory.count_in(&mut c);
    assert_eq!(c, StopCounts { idle: 1, max_requests: 1, reload: 1, timeout: 1, memory: 2, retired: 1, crashed: 0, exited: 0 });
}

#[test]
fn a_burst_of_crashes_at_start_backs_the_pool_off() {
    // test_lifecycle: a crashing app answers 503 "backing off" after the burst.
    let t0 = Instant::now();
    let mut b = Backoff::default();
    assert_eq!(b.worker_ended(ms(5), 0, false, t0), CrashVerdict::Restart { streak: 1 });
    assert_eq!(b.worker_ended(ms(5), 0, false, t0 + ms(10)), CrashVerdict::Restart { streak: 2 });
    assert!(!b.active());
    assert_eq!(b.worker_ended(ms(5), 0, false, t0 + ms(20)), CrashVerdict::BackOff { delay: secs(1) });
    assert_eq!(b.restart_at, Some(t0 + ms(20) + secs(1)));
    assert!(b.active());
    // While it backs off, a crash (of a worker still draining) changes nothing.
    assert_eq!(b.worker_ended(ms(5), 0, false, t0 + ms(30)), CrashVerdict::BackingOff);
    assert_eq!((b.streak, b.restart_at), (3, Some(t0 + ms(20) + secs(1))));
    // Requests are refused meanwhile, saying when (rounded up), unless a worker still serves.
    assert_eq!(b.refusal_secs(0, t0 + ms(520)), Some(1));
    assert_eq!(b.refusal_secs(1, t0 + ms(520)), None);
    // Not over yet; then over: spawning resumes, and the next crash doubles the pause.
    assert!(!b.ends(t0 + ms(500)));
    assert!(b.active());
    assert!(b.ends(t0 + ms(20) + secs(1)));
    assert!(!b.active());
    assert_eq!(b.refusal_secs(0, t0), None);
    assert_eq!(b.worker_ended(ms(5), 0, false, t0 + secs(2)), CrashVerdict::BackOff { delay: secs(2) });
    assert_eq!(b.last_crash, Some(t0 + secs(2)));
}

#[test]
fn a_worker_killed_from_outside_after_accepting_a_request_is_no_crash_at_start() {
    // test_lifecycle: kill -9 of a worker serving its first request, twice in
    // a row, never backs the pool off.
    let t0 = Instant::now();
    let mut b = Backoff { streak: 2, last_crash: Some(t0), restart_at: None };
    assert_eq!(b.worker_ended(ms(80), 0, true, t0 + ms(100)), CrashVerdict::Started);
    assert_eq!(b.streak, 0, "a worker that started ends the streak");
    assert!(!b.active());
    // One that served (and so started) ends it too, as does one past the window.
    let mut b = Backoff { streak: 2, ..Backoff::default() };
    assert_eq!(b.worker_ended(ms(80), 1, false, t0), CrashVerdict::Started);
    let mut b = Backoff { streak: 2, ..Backoff::default() };
    assert_eq!(b.worker_ended(CRASH_WINDOW, 0, false, t0), CrashVerdict::Started);
    assert_eq!(b.streak, 0);
}

#[test]
fn a_fresh_worker_killed_from_outside_beside_a_serving_one_is_no_crash_at_start() {
    // test_lifecycle's kill storm under lighttpd: a fresh worker waits for
    // its first request while a kept connection serves on another; kill -9s
    // of such workers must not add up to a back-off.
    assert!(killed_from_outside(Some(libc::SIGKILL), false, true));
    assert!(!killed_from_outside(Some(libc::SIGKILL), false, false), "no worker of the pool ever started: it may be the app");
    assert!(!killed_from_outside(Some(libc::SIGKILL), true, true), "our memory limit: a memory stop, counted as such");
    assert!(!killed_from_outside(Some(libc::SIGSEGV), false, true), "the app crashed");
    assert!(!killed_from_outside(None, false, true), "it exited");
}

#[test]
fn a_long_quiet_spell_starts_the_streak_over() {
    let t0 = Instant::now();
    let mut b = Backoff { streak: 2, last_crash: Some(t0), restart_at: None };
    // Within STREAK_RESET: the third in a row backs off.
    let mut within = b;
    assert_eq!(within.worker_ended(ms(5), 0, false, t0 + STREAK_RESET), CrashVerdict::BackOff { delay: secs(1) });
    // Longer: it is the first again.
    assert_eq!(b.worker_ended(ms(5), 0, false, t0 + STREAK_RESET + ms(1)), CrashVerdict::Restart { streak: 1 });
}

#[test]
fn a_failed_fork_backs_off_one_step_more() {
    let t0 = Instant::now();
    let mut b = Backoff::default();
    assert_eq!(b.fork_failed(t0), secs(1));
    assert_eq!(b.restart_at, Some(t0 + secs(1)));
    assert_eq!(b.fork_failed(t0), secs(2));
    assert_eq!(b.fork_failed(t0), secs(4));
    assert_eq!(b.streak, 3);
    assert_eq!(b.last_crash, None, "a failed fork is no crash of a worker");
}

#[test]
fn how_an_ended_worker_counts() {
    use StopReason::*;
    // Stopped by the supervisor: its reason, unless the kernel's OOM killer got there.
    assert_eq!(counted(Some(Idle), false, false, true), Counted::Stopped(Idle));
    assert_eq!(counted(Some(Timeout), false, true, false), Counted::Stopped(Timeout));
    assert_eq!(counted(Some(Retired), true, false, false), Counted::Stopped(Memory));
    assert_eq!(counted(None, true, false, false), Counted::Stopped(Memory));
    assert_eq!(counted(None, true, true, false), Counted::Stopped(Memory));
    // On its own: exited or crashed, except in the supervisor's own shutdown.
    assert_eq!(counted(None, false, false, true), Counted::Exited);
    assert_eq!(counted(None, false, false, false), Counted::Crashed);
    assert_eq!(counted(None, false, true, false), Counted::Not);
    // An OOM kill is why only if nothing else was: a failed request is how it showed.
    assert!(oom_is_why(None));
    assert!(oom_is_why(Some(Retired)));
    for r in [Idle, MaxRequests, Reload, Timeout, Memory] {
        assert!(!oom_is_why(Some(r)), "{r:?}");
    }
    let mut c = StopCounts::default();
    for k in [Counted::Crashed, Counted::Exited, Counted::Exited, Counted::Not, Counted::Stopped(Reload)] {
        k.count_in(&mut c);
    }
    assert_eq!(c, StopCounts { crashed: 1, exited: 2, reload: 1, ..StopCounts::default() });
}

fn facts(limits: Limits, live: u32) -> PoolFacts {
    PoolFacts { limits, retiring: false, live, memory_watch: false }
}

fn worker(index: u32, seen: Seen, served: u32, idle_for: u32) -> InService {
    InService { index, seen, served, idle_for, rss: None }
}

fn stop(index: u32, reason: StopReason) -> Stop {
    Stop { index, reason, hard: false }
}

#[test]
fn idle_workers_beyond_the_minimum_stop_after_the_idle_timeout() {
    // test_lifecycle: idle workers are stopped after SuFcgiIdleTimeout; SuFcgiMinWorkers stay.
    let l = Limits { idle_timeout: 10, min_workers: 1, ..Limits::DEFAULT };
    let ws = [worker(0, Seen::Idle, 3, 10), worker(1, Seen::Idle, 3, 60), worker(2, Seen::Idle, 3, 9)];
    assert_eq!(stops(&facts(l, 3), &ws), vec![stop(0, StopReason::Idle), stop(1, StopReason::Idle)]);
    // Counting down: with two, the minimum of one keeps the second.
    assert_eq!(stops(&facts(l, 2), &ws[..2]), vec![stop(0, StopReason::Idle)]);
    assert_eq!(stops(&facts(l, 1), &ws[1..2]), vec![], "the minimum stays");
    // A busy worker is never idle, however long since it was last used.
    assert_eq!(stops(&facts(l, 2), &[worker(0, Seen::Busy, 1, 999), worker(1, Seen::Busy, 1, 999)]), vec![]);
    // Without a minimum the last one goes too (the pool scales to zero).
    let l0 = Limits { min_workers: 0, ..l };
    assert_eq!(stops(&facts(l0, 1), &ws[1..2]), vec![stop(1, StopReason::Idle)]);
}

#[test]
fn retired_workers_stop_for_max_requests_a_failed_request_or_a_reload() {
    // test_lifecycle: SuFcgiMaxRequests recycles the worker every N requests.
    let l = Limits { max_requests: 5, ..Limits::DEFAULT };
    let ws = [worker(0, Seen::Retired, 5, 0), worker(1, Seen::Retired, 2, 0), worker(2, Seen::Busy, 4, 0)];
    assert_eq!(stops(&facts(l, 3), &ws), vec![stop(0, StopReason::MaxRequests), stop(1, StopReason::Retired)]);
    // No SuFcgiMaxRequests: retired means a failed request.
    let unlimited = Limits { max_requests: 0, ..l };
    assert_eq!(stops(&facts(unlimited, 1), &ws[..1]), vec![stop(0, StopReason::Retired)]);
    // A retiring pool stops its retired and idle workers as a reload; busy ones finish.
    let retiring = PoolFacts { retiring: true, ..facts(l, 3) };
    let ws = [worker(0, Seen::Retired, 5, 0), worker(1, Seen::Idle, 0, 0), worker(2, Seen::Busy, 1, 0)];
    assert_eq!(stops(&retiring, &ws), vec![stop(0, StopReason::Reload), stop(1, StopReason::Reload)]);
}

#[test]
fn the_memory_watch_kills_a_worker_over_its_limit() {
    let l = Limits { memory_limit: 64 << 20, idle_timeout: 300, ..Limits::DEFAULT };
    let at = |index, seen, rss| InService { rss: Some(rss), ..worker(index, seen, 1, 0) };
    let ws = [at(0, Seen::Busy, 65 << 20), at(1, Seen::Idle, 64 << 20), at(2, Seen::Idle, 200 << 20)];
    let watched = PoolFacts { memory_watch: true, ..facts(l, 3) };
    let hard = |index| Stop { index, reason: StopReason::Memory, hard: true };
    assert_eq!(stops(&watched, &ws), vec![hard(0), hard(2)]);
    // Where the kernel holds the limit (memory.max) the supervisor does not watch.
    assert_eq!(stops(&facts(l, 3), &ws), vec![]);
    // Unmeasured (gone from /proc) is not over; no limit, no watch.
    assert_eq!(stops(&watched, &[worker(0, Seen::Busy, 1, 0)]), vec![]);
    assert_eq!(stops(&PoolFacts { limits: Limits { memory_limit: 0, ..l }, ..watched }, &ws), vec![]);
    // An idle worker stopped for idleness is not also killed for memory.
    let idle = PoolFacts { limits: Limits { idle_timeout: 0, ..l }, ..watched };
    assert_eq!(stops(&idle, &ws[2..]), vec![stop(2, StopReason::Idle)]);
}

#[test]
fn term_becomes_kill_after_the_grace() {
    let t0 = Instant::now();
    assert!(!kill_due(t0, false, t0 + STOP_GRACE - ms(1)));
    assert!(kill_due(t0, false, t0 + STOP_GRACE));
    assert!(!kill_due(t0, true, t0 + STOP_GRACE * 2), "already killed");
}

fn demand() -> Demand {
    Demand { min_workers: 0, max_workers: 4, live: 1, waiting: 0, idle: 0, starting: false, retiring: false, backing_off: false }
}

#[test]
fn workers_start_for_the_minimum_and_for_waiting_requests() {
    assert!(!spawn_wanted(&demand()), "nothing waits");
    let below = Demand { min_workers: 2, ..demand() };
    assert!(below.below_minimum() && spawn_wanted(&below));
    assert!(spawn_wanted(&Demand { starting: true, ..below }), "the minimum does not wait for a starting worker");
    // More waiting than idle: one more (even with one idle for a moment, as under lighttpd).
    assert!(spawn_wanted(&Demand { waiting: 2, idle: 1, ..demand() }));
    assert!(!spawn_wanted(&Demand { waiting: 1, idle: 1, ..demand() }));
    // One at a time while a worker is starting, never beyond the pool's maximum.
    assert!(!spawn_wanted(&Demand { waiting: 3, starting: true, ..demand() }));
    assert!(!spawn_wanted(&Demand { waiting: 9, live: 4, ..demand() }));
    // Never for a retiring pool or one backing off.
    assert!(!spawn_wanted(&Demand { retiring: true, ..below }));
    assert!(!spawn_wanted(&Demand { backing_off: true, waiting: 3, ..below }));
    assert!(may_be_starting(STARTING_WINDOW) && !may_be_starting(STARTING_WINDOW + ms(1)));
}

#[test]
fn the_host_ceilings_bound_workers_per_owner_and_in_all() {
    // test_lifecycle / test_security: SuFcgiMaxWorkersPerOwner and SuFcgiMaxWorkersTotal.
    let c = Ceilings { per_owner: 2, total: 5 };
    assert_eq!(room_for_worker(c, 1, 4), Ok(()));
    assert_eq!(room_for_worker(c, 2, 3), Err(Full::Owner(2)));
    assert_eq!(room_for_worker(c, 1, 5), Err(Full::Total(5)));
    assert_eq!(room_for_worker(c, 3, 9), Err(Full::Owner(2)), "the owner's ceiling is said first");
    assert_eq!(room_for_worker(Ceilings { per_owner: 0, total: 0 }, 0, 0), Err(Full::Owner(0)), "no configuration: no workers");
}

#[test]
fn a_pool_fits_the_scoreboard() {
    let l = fit_scoreboard(Limits { max_workers: 40, min_workers: 20, ..Limits::DEFAULT }, 16);
    assert_eq!((l.max_workers, l.min_workers), (16, 16));
    let l = fit_scoreboard(Limits { max_workers: 4, min_workers: 9, ..Limits::DEFAULT }, 16);
    assert_eq!((l.max_workers, l.min_workers), (4, 4));
    let l = fit_scoreboard(Limits { max_workers: 4, min_workers: 1, ..Limits::DEFAULT }, 16);
    assert_eq!((l.max_workers, l.min_workers, l.idle_timeout), (4, 1, Limits::DEFAULT.idle_timeout));
}

#[test]
fn empty_pools_are_forgotten() {
    let t0 = Instant::now();
    let later = t0 + FORGET_EMPTY_POOL;
    assert!(forget_pool(0, true, None, false, t0), "retiring: at once");
    assert!(forget_pool(0, false, Some(t0), false, later));
    assert!(!forget_pool(0, false, Some(t0), false, later - ms(1)));
    assert!(!forget_pool(0, false, None, false, later));
    assert!(!forget_pool(1, true, Some(t0), false, later), "it still has a process");
    assert!(!forget_pool(0, true, Some(t0), true, later), "it backs off");
    assert_eq!((tick_interval(true), tick_interval(false)), (TICK, QUIET_TICK));
}
