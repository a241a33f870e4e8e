use super::*;
use std::time::Duration;

fn pool(sb: &Scoreboard, max: u32) -> &PoolSlot {
    let p = sb.slot(0).unwrap();
    p.max_workers.store(max, Ordering::Release);
    p.queue_limit.store(2, Ordering::Release);
    p.state.store(pool_state::ACTIVE, Ordering::Release);
    p
}

#[test]
fn claim_release_cycle() {
    let sb = Scoreboard::create(2, 8).unwrap();
    let p = pool(&sb, 2);
    assert!(p.claim().is_none(), "no worker yet");
    p.workers[0].set(1, IDLE);
    p.workers[1].set(1, IDLE);
    let a = p.claim().unwrap();
    let b = p.claim().unwrap();
    assert_eq!((a.index, b.index), (0, 1));
    assert!(p.claim().is_none(), "both busy");
    assert_eq!(p.live_workers(), 2);
    assert!(!a.release());
    assert_eq!(p.workers[0].load(), (1, IDLE));
    assert_eq!(p.workers[0].requests.load(Ordering::Acquire), 1);
    assert!(b.retire());
    assert_eq!(p.workers[1].load(), (1, RETIRED));
    assert_eq!(p.claim().unwrap().index, 0);
}

#[test]
fn a_multiplexing_pool_shares_busy_workers_up_to_its_share() {
    let sb = Scoreboard::create(1, 8).unwrap();
    let p = pool(&sb, 2);
    p.workers[0].set(1, IDLE);
    p.workers[1].set(1, IDLE);
    let a = p.claim().unwrap();
    assert!(p.share().is_none(), "not asked yet: one request per worker");
    p.per_worker.store(1, Ordering::Release);
    assert!(p.share().is_none(), "does not multiplex");
    p.per_worker.store(3, Ordering::Release);
    let b = p.claim().unwrap();
    // Two busy workers, two more requests each, least loaded first.
    let shares: Vec<_> = (0..4).map(|_| p.share().unwrap()).collect();
    assert_eq!(shares.iter().map(|c| c.index).collect::<Vec<_>>(), [0, 1, 0, 1]);
    assert!(shares.iter().all(|c| c.via == Via::Shared));
    assert!(p.share().is_none(), "each worker has its three");
    assert_eq!(p.free_places(), 0);
    // A release gives back a share; the worker stays busy while it has others.
    assert!(!a.release());
    assert_eq!(p.workers[0].load(), (1, BUSY));
    assert_eq!(p.free_places(), 1);
    assert_eq!(p.share().unwrap().index, 0);
    // max_requests holds for shares too.
    p.max_requests.store(4, Ordering::Release);
    assert!(p.share().is_none());
    drop((b, shares));
}

#[test]
fn dropped_claim_retires_the_worker() {
    let sb = Scoreboard::create(1, 8).unwrap();
    let p = pool(&sb, 1);
    p.workers[0].set(4, IDLE);
    drop(p.claim().unwrap());
    assert_eq!(p.workers[0].load(), (4, RETIRED));
}

#[test]
fn max_requests_recycles() {
    let sb = Scoreboard::create(1, 8).unwrap();
    let p = pool(&sb, 1);
    p.max_requests.store(2, Ordering::Release);
    p.workers[0].set(1, IDLE);
    assert!(!p.claim().unwrap().release());
    assert!(p.claim().unwrap().release(), "second request reaches max_requests");
    assert_eq!(p.workers[0].load(), (1, RETIRED));
}

#[test]
fn release_after_supervisor_replaced_the_worker_is_harmless() {
    let sb = Scoreboard::create(1, 8).unwrap();
    let p = pool(&sb, 1);
    p.workers[0].set(1, IDLE);
    let c = p.claim().unwrap();
    // The worker died; the supervisor spawned a new one in the same entry.
    p.workers[0].set(2, IDLE);
    c.release();
    assert_eq!(p.workers[0].load(), (2, IDLE), "the new worker's entry is untouched");
}

#[test]
fn retiring_pool_retires_on_release() {
    let sb = Scoreboard::create(1, 8).unwrap();
    let p = pool(&sb, 1);
    p.workers[0].set(1, IDLE);
    let c = p.claim().unwrap();
    p.state.store(pool_state::RETIRING, Ordering::Release);
    assert!(c.release());
    assert_eq!(p.workers[0].load(), (1, RETIRED));
}

#[test]
fn supervisor_retire_if_only_takes_idle() {
    let sb = Scoreboard::create(1, 8).unwrap();
    let p = pool(&sb, 1);
    p.workers[0].set(7, IDLE);
    let c = p.claim().unwrap();
    assert_eq!(p.workers[0].retire_if(7, IDLE), None, "busy workers are not reaped");
    c.release();
    assert_eq!(p.workers[0].retire_if(7, IDLE), Some(8));
    assert_eq!(p.workers[0].load(), (8, EMPTY));
    assert!(p.claim().is_none());
}

#[test]
fn pipelined_request_takes_over_the_worker() {
    let sb = Scoreboard::create(1, 8).unwrap();
    let p = pool(&sb, 1);
    p.workers[0].set(1, IDLE);
    assert!(p.enqueue().is_none(), "an idle worker is claimed, not queued behind");
    let a = p.claim().unwrap();
    let queued: Vec<_> = (0..PIPELINE_DEPTH).map(|_| p.enqueue().unwrap()).collect();
    assert!(queued.iter().all(|c| c.pipelined() && c.index == 0 && c.epoch == 1));
    assert!(p.enqueue().is_none(), "at most PIPELINE_DEPTH requests queue behind a worker");
    assert!(!a.release());
    assert_eq!(p.workers[0].load(), (1, BUSY), "handed over to a queued request");
    assert_eq!(p.workers[0].queued(), PIPELINE_DEPTH - 1);
    assert!(p.claim().is_none());
    for c in queued {
        assert!(!c.release());
    }
    assert_eq!(p.workers[0].load(), (1, IDLE));
    assert_eq!(p.workers[0].requests.load(Ordering::Acquire), 1 + PIPELINE_DEPTH);
}

#[test]
fn pipelining_never_exceeds_max_requests() {
    let sb = Scoreboard::create(1, 8).unwrap();
    let p = pool(&sb, 1);
    p.max_requests.store(2, Ordering::Release);
    p.workers[0].set(1, IDLE);
    let a = p.claim().unwrap();
    let b = p.enqueue().unwrap();
    assert!(!a.release());
    assert!(p.enqueue().is_none(), "both of its 2 requests are given out");
    assert!(b.release(), "the second request retires it");
    assert_eq!(p.workers[0].load(), (1, RETIRED));
}

#[test]
fn no_pipelining_behind_an_old_request() {
    let sb = Scoreboard::create(1, 8).unwrap();
    let p = pool(&sb, 1);
    p.workers[0].set(1, IDLE);
    let _a = p.claim().unwrap();
    let old = monotonic_ms().wrapping_sub(PIPELINE_WINDOW_MS + 1);
    p.workers[0].current_since_ms.store(old, Ordering::Release);
    assert!(p.enqueue().is_none());
}

#[test]
fn supervisor_stop_clears_a_pipelined_worker() {
    let sb = Scoreboard::create(1, 8).unwrap();
    let p = pool(&sb, 1);
    p.workers[0].set(3, IDLE);
    let a = p.claim().unwrap();
    let b = p.enqueue().unwrap();
    assert_eq!(p.workers[0].retire_if(3, BUSY), Some(4));
    assert_eq!(p.workers[0].load(), (4, EMPTY));
    assert!(!a.release());
    assert!(b.retire());
    assert_eq!(p.workers[0].load(), (4, EMPTY), "old claims cannot touch the new epoch");
}

#[test]
fn newcomers_do_not_overtake_sleepers() {
    let sb = Scoreboard::create(1, 8).unwrap();
    let p = pool(&sb, 1);
    p.workers[0].set(1, IDLE);
    assert!(p.newcomer_may_take(), "nobody waits");
    let a = p.claim().unwrap();
    // Its request began long ago: no place in its backlog either.
    p.workers[0].current_since_ms.store(monotonic_ms().wrapping_sub(PIPELINE_WINDOW_MS + 1), Ordering::Release);
    // Another request finds no worker, queues and sleeps.
    assert!(p.enter_queue());
    p.begin_sleeping();
    assert!(!p.newcomer_may_take(), "a newcomer queues behind the sleeper");
    assert!(!a.release());
    assert!(!p.newcomer_may_take(), "the released worker is the sleeper's to take");
    let b = p.claim().unwrap();
    p.end_sleeping();
    p.leave_queue();
    assert!(p.newcomer_may_take(), "no sleeper left");
    b.release();
    // More free places than sleepers: a newcomer takes one nobody was woken for.
    p.max_workers.store(2, Ordering::Release);
    p.workers[1].set(1, IDLE);
    assert!(p.enter_queue());
    p.begin_sleeping();
    assert!(p.newcomer_may_take(), "two idle workers, one sleeper");
    let c = p.claim().unwrap();
    assert!(p.newcomer_may_take(), "the busy worker's backlog has free places");
    p.workers[0].current_since_ms.store(monotonic_ms().wrapping_sub(PIPELINE_WINDOW_MS + 1), Ordering::Release);
    assert!(!p.newcomer_may_take(), "one idle worker left, for the sleeper");
    p.end_sleeping();
    p.leave_queue();
    c.release();
    // A stale count (the slot was reassigned: `waiting` reset) blocks nobody.
    p.sleepers.store(3, Ordering::Release);
    assert!(p.newcomer_may_take());
    p.end_sleeping();
    p.end_sleeping();
    p.end_sleeping();
    p.end_sleeping();
    assert_eq!(p.sleepers.load(Ordering::Acquire), 0, "never wraps below zero");
}

#[test]
fn queue_is_bounded() {
    let sb = Scoreboard::create(1, 8).unwrap();
    let p = pool(&sb, 1);
    assert!(p.enter_queue());
    assert!(p.enter_queue());
    assert!(!p.enter_queue(), "queue_limit 2");
    p.leave_queue();
    assert!(p.enter_queue());
    p.leave_queue();
    p.leave_queue();
    p.leave_queue();
    assert_eq!(p.waiting.load(Ordering::Acquire), 0, "never wraps below zero");
}

#[test]
fn waiter_is_woken_by_release_in_another_process() {
    let sb = Scoreboard::create(1, 8).unwrap();
    let p = pool(&sb, 1);
    p.workers[0].set(1, IDLE);
    let held = p.claim().unwrap();
    // SAFETY: the child only touches atomics and exits with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let p = sb.slot(0).unwrap();
        assert!(p.enter_queue());
        let start = std::time::Instant::now();
        p.begin_sleeping();
        let got = loop {
            let seen = p.idle_seq.load(Ordering::Acquire);
            if let Some(c) = p.claim() {
                break Some(c);
            }
            if start.elapsed() > Duration::from_secs(10) {
                break None;
            }
            p.wait_idle(seen, std::time::Instant::now() + Duration::from_secs(5));
        };
        p.end_sleeping();
        p.leave_queue();
        let code = if got.map(|c| c.release()).is_some() { 0 } else { 1 };
        // SAFETY: leaving the forked test child without running destructors.
        unsafe { libc::_exit(code) };
    }
    while p.waiting.load(Ordering::Acquire) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    held.release();
    let mut st = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    assert!(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0, "the waiter got the worker");
}

#[test]
fn slots_are_separate_and_aliases_share() {
    let sb = Scoreboard::create(3, 8).unwrap();
    assert!(sb.slot(3).is_none());
    assert_eq!(sb.worker_capacity(), 8);
    let s0 = sb.slot(0).unwrap();
    assert_eq!((s0.workers.len(), std::mem::size_of_val(s0)), (8, 64 + 8 * 64));
    sb.slot(1).unwrap().spawns.store(7, Ordering::Release);
    assert_eq!(s0.spawns.load(Ordering::Acquire), 0);
    // The last worker entry of one slot ends where the next slot begins.
    s0.workers[7].set(9, IDLE);
    assert_eq!(sb.slot(1).unwrap().generation.load(Ordering::Acquire), 0);
    assert_eq!(sb.slot(1).unwrap().workers[0].load(), (0, EMPTY));
    // SAFETY: same mapping, same process.
    let again = unsafe { Scoreboard::from_raw(sb.as_raw()) };
    assert_eq!(again.slot(1).unwrap().spawns.load(Ordering::Acquire), 7);
    // A second mapping of the memfd (what the exec'd supervisor makes) shares the pages.
    let raw = sb.as_raw();
    let other = Scoreboard::attach(raw.fd, 3, 8).unwrap();
    assert_ne!(other.as_raw().ptr, raw.ptr);
    assert_eq!(other.slot(1).unwrap().spawns.load(Ordering::Acquire), 7);
    assert_eq!(other.slot(0).unwrap().workers[7].load(), (9, IDLE));
    other.slot(2).unwrap().rejected.store(3, Ordering::Release);
    assert_eq!(sb.slot(2).unwrap().rejected.load(Ordering::Acquire), 3);
    assert!(Scoreboard::attach(raw.fd, 3, 4).is_err(), "a shape that does not match the size");
    assert!(Scoreboard::attach(raw.fd, 3, 0).is_err());
    // Nobody who inherits the fd can change its size under a mapping.
    // SAFETY: ftruncate on our own fd; the seal makes it fail.
    assert_eq!(unsafe { libc::ftruncate(raw.fd, 0) }, -1, "shrinking a sealed scoreboard");
    // SAFETY: as above.
    assert_eq!(unsafe { libc::ftruncate(raw.fd, 1 << 30) }, -1, "growing a sealed scoreboard");
}

#[test]
fn capacity_follows_the_ceiling() {
    let sb = Scoreboard::create(1, 4).unwrap();
    assert_eq!(sb.slot(0).unwrap().workers.len(), 4);
    assert!(sb.capacity_note(4).is_none());
    assert!(sb.capacity_note(2).is_none());
    assert!(sb.capacity_note(16).unwrap().contains("at most 4 workers"));
    let p = sb.slot(0).unwrap();
    p.max_workers.store(16, Ordering::Release);
    for w in &p.workers {
        w.set(1, IDLE);
    }
    let claims: Vec<_> = (0..4).map(|_| p.claim().unwrap()).collect();
    assert!(p.claim().is_none(), "a max_workers above the capacity reads as the capacity");
    drop(claims);
    assert_eq!(Scoreboard::create(1, 1000).unwrap().worker_capacity(), MAX_POOL_WORKERS);
}

#[test]
fn a_parked_worker_is_its_holders_again_or_anyones_taken_over() {
    let sb = Scoreboard::create(1, 8).unwrap();
    let p = pool(&sb, 2);
    p.workers[0].set(1, IDLE);
    let a = p.claim().unwrap();
    let Ended::Parked(word) = a.park(7) else { panic!("parked") };
    assert_eq!(p.workers[0].load(), (1, PARKED));
    assert_eq!(p.workers[0].holder.load(Ordering::Acquire), 7);
    assert_eq!(p.workers[0].requests.load(Ordering::Acquire), 1, "the request counts as served");
    assert!(p.claim().is_none(), "a parked worker is not idle");
    assert_eq!(p.live_workers(), 1);
    assert!(p.newcomer_may_take() && p.free_places() == 1, "but it is a free place");
    // Its holder claims it again on the kept connection.
    let k = p.take_parked(0, word).unwrap();
    assert_eq!(k.via, Via::Kept);
    assert!(p.take_parked(0, word).is_none(), "once");
    let Ended::Parked(word) = k.park(7) else { panic!("parked again") };
    // Another process takes it over: the holder's word is stale from then on.
    let (t, holder) = p.take_over().unwrap();
    assert_eq!((t.index, t.via, holder), (0, Via::TakenOver, 7));
    assert!(!p.workers[0].is_word(word));
    assert!(p.take_parked(0, word).is_none(), "the holder cannot take it back");
    assert!(!p.unpark(0, word), "nor give it back");
    assert!(!t.release());
    assert_eq!(p.workers[0].load(), (1, IDLE));
    assert_eq!(p.workers[0].requests.load(Ordering::Acquire), 3);
}

#[test]
fn parking_follows_the_release_rules() {
    let sb = Scoreboard::create(1, 8).unwrap();
    let p = pool(&sb, 1);
    p.workers[0].set(1, IDLE);
    // The holder gives it back idle.
    let Ended::Parked(word) = p.claim().unwrap().park(1) else { panic!("parked") };
    assert!(p.unpark(0, word));
    assert_eq!(p.workers[0].load(), (1, IDLE));
    // A request in its backlog: the worker is that request's, not parked.
    let a = p.claim().unwrap();
    let b = p.enqueue().unwrap();
    assert_eq!(a.park(1), Ended::Free);
    assert_eq!(p.workers[0].load(), (1, BUSY));
    // Its last allowed request: retired, not parked.
    p.max_requests.store(4, Ordering::Release);
    assert_eq!(b.park(1), Ended::Parked(p.workers[0].word.load(Ordering::Acquire)));
    let word = p.workers[0].word.load(Ordering::Acquire);
    assert_eq!(p.take_parked(0, word).unwrap().park(1), Ended::Retired, "its 4th request");
    assert_eq!(p.workers[0].load(), (1, RETIRED));
    // A retiring pool: retired, not parked.
    p.workers[0].set(2, IDLE);
    p.max_requests.store(0, Ordering::Release);
    let c = p.claim().unwrap();
    p.state.store(pool_state::RETIRING, Ordering::Release);
    assert_eq!(c.park(1), Ended::Retired);
    // The supervisor stops a parked worker: the holder's word is stale.
    p.state.store(pool_state::ACTIVE, Ordering::Release);
    p.workers[0].set(3, IDLE);
    let Ended::Parked(word) = p.claim().unwrap().park(1) else { panic!() };
    assert_eq!(p.workers[0].retire_if(3, PARKED), Some(4));
    assert!(p.take_parked(0, word).is_none() && !p.unpark(0, word) && p.take_over().is_none());
}

#[test]
fn give_back_counts_nothing() {
    let sb = Scoreboard::create(1, 8).unwrap();
    let p = pool(&sb, 1);
    p.max_requests.store(1, Ordering::Release);
    p.workers[0].set(1, IDLE);
    let c = p.claim().unwrap();
    assert!(p.claim().is_none());
    assert!(!c.give_back(), "its one request is still to come");
    assert_eq!(p.workers[0].requests.load(Ordering::Acquire), 0);
    assert!(p.claim().unwrap().release(), "and it comes");
}

#[test]
fn doorbells() {
    let sb = Scoreboard::create(2, 4).unwrap();
    let a = sb.claim_doorbell(1000).unwrap();
    let b = sb.claim_doorbell(1001).unwrap();
    assert_ne!(a, b);
    assert_eq!(sb.claim_doorbell(1000), Some(a), "a pid's own stale doorbell is its again");
    sb.release_doorbell(b, 1001);
    assert_eq!(sb.doorbell(b).unwrap().pid.load(Ordering::Acquire), 0);
    assert!(sb.doorbell(0).is_none() && sb.doorbell(DOORBELLS + 1).is_none());
    // All taken by live processes (this one): none left.
    for n in 1..=DOORBELLS {
        sb.doorbell(n).unwrap().pid.store(std::process::id(), Ordering::Release);
    }
    assert_eq!(sb.claim_doorbell(1002), None);
    // One of a dead process: taken over.
    sb.doorbell(9).unwrap().pid.store(i32::MAX as u32 - 7, Ordering::Release);
    assert_eq!(sb.claim_doorbell(1002), Some(9));
    // The doorbells lie after the slots, apart from them.
    let before = sb.doorbell(1).unwrap().ring.load(Ordering::Acquire);
    sb.ring(1);
    assert_eq!(sb.doorbell(1).unwrap().ring.load(Ordering::Acquire), before + 1);
    assert_eq!(sb.slot(1).unwrap().workers[3].load(), (0, EMPTY));
}
