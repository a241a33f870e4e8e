use super::*;
use crate::core::limits::Limits;
use crate::core::scoreboard::{worker_state, Ended, Scoreboard};
use std::cell::RefCell;
use std::path::{Path, PathBuf};

/// A server process as the dispatch sees it, its parked workers in a list.
struct TestHost {
    holder: Option<u32>,
    sleeps: bool,
    may: bool,
    parked: RefCell<Vec<(u32, u64)>>,
}

impl TestHost {
    fn apache(holder: Option<u32>) -> TestHost {
        TestHost { holder, sleeps: true, may: true, parked: RefCell::new(Vec::new()) }
    }
}

impl Host for TestHost {
    fn holder(&self) -> Option<u32> {
        self.holder
    }
    fn may_take(&self) -> bool {
        self.may
    }
    fn sleeps(&self) -> bool {
        self.sleeps
    }
    fn take_kept<'a>(&self, slot: &'a PoolSlot, _info: &PoolInfo) -> Option<Claim<'a>> {
        let mut parked = self.parked.borrow_mut();
        let at = parked.iter().position(|&(i, w)| slot.workers[i as usize].is_word(w))?;
        let (i, w) = parked.remove(at);
        slot.take_parked(i, w)
    }
}

fn info(max_workers: u32, queue_limit: u32, queue_timeout: u32) -> PoolInfo {
    PoolInfo {
        socket_prefix: PathBuf::from("/nonexistent/sufcgi-test"),
        slot: 0,
        slot_generation: 1,
        uid: 2001,
        gid: 2001,
        limits: Limits { max_workers, queue_limit, queue_timeout, ..Limits::DEFAULT },
    }
}

fn pool<'a>(sb: &'a Scoreboard, i: &PoolInfo, workers: u32) -> &'a PoolSlot {
    let p = sb.slot(0).unwrap();
    p.generation.store(1, Ordering::Release);
    p.state.store(pool_state::ACTIVE, Ordering::Release);
    p.max_workers.store(i.limits.max_workers, Ordering::Release);
    p.queue_limit.store(i.limits.queue_limit, Ordering::Release);
    for w in &p.workers[..workers as usize] {
        w.set(1, worker_state::IDLE);
    }
    p
}

fn site(sb: &Scoreboard) -> Site<'_> {
    Site { socket_dir: Path::new("/nonexistent"), scoreboard: sb }
}

fn claimed<'a>(s: Step<'a>) -> Claim<'a> {
    match s {
        Step::Claimed(c) => c,
        Step::Wait { .. } => panic!("waits"),
        Step::Gone => panic!("gone"),
        Step::Refuse(r) => panic!("refused: {r:?}"),
    }
}

fn waits(s: &Step<'_>) -> bool {
    matches!(s, Step::Wait { .. })
}

fn keeping(p: &PoolSlot) {
    p.per_worker.store(1, Ordering::Release);
    p.asked.store(1, Ordering::Release);
}

#[test]
fn an_idle_worker_else_the_queue() {
    let sb = Scoreboard::create(1, 8).unwrap();
    let i = info(2, 10, 60);
    let p = pool(&sb, &i, 2);
    let host = TestHost::apache(None);
    let (mut a, mut b, mut c) = (Dispatch::new(), Dispatch::new(), Dispatch::new());
    let ca = claimed(a.step(&site(&sb), &i, p, &host));
    assert_eq!((ca.index, ca.via), (0, Via::Idle));
    let cb = claimed(b.step(&site(&sb), &i, p, &host));
    assert_eq!(cb.index, 1);
    // Both requests began long ago: no backlog to queue in either.
    for w in &p.workers[..2] {
        w.current_since_ms.store(crate::core::scoreboard::monotonic_ms().wrapping_sub(1000), Ordering::Release);
    }
    assert!(waits(&c.step(&site(&sb), &i, p, &host)));
    assert_eq!(p.waiting.load(Ordering::Acquire), 1, "it waits in the queue");
    assert_eq!(p.sleepers.load(Ordering::Acquire), 1, "Apache sleeps on the futex");
    assert!(!ca.release());
    let cc = claimed(c.step(&site(&sb), &i, p, &host));
    assert_eq!(cc.index, 0);
    assert_eq!((p.waiting.load(Ordering::Acquire), p.sleepers.load(Ordering::Acquire)), (0, 0), "out of the queue with its worker");
    drop((cb, cc));
}

#[test]
fn pipelining_keeps_its_place_in_the_queue_until_the_exchange_ends() {
    let sb = Scoreboard::create(1, 8).unwrap();
    let i = info(1, 10, 60);
    let p = pool(&sb, &i, 1);
    let host = TestHost::apache(None);
    let mut a = Dispatch::new();
    let ca = claimed(a.step(&site(&sb), &i, p, &host));
    let mut b = Dispatch::new();
    let cb = claimed(b.step(&site(&sb), &i, p, &host));
    assert_eq!((cb.index, cb.via), (0, Via::Pipelined), "behind the request that began just now");
    assert_eq!(p.waiting.load(Ordering::Acquire), 1, "a pipelined request counts as waiting");
    b.exchange_over();
    assert_eq!(p.waiting.load(Ordering::Acquire), 0);
    drop((ca, cb));
}

#[test]
fn a_full_queue_and_a_long_wait_are_503s_counted_as_rejected() {
    let sb = Scoreboard::create(1, 8).unwrap();
    let i = info(1, 1, 60);
    let p = pool(&sb, &i, 1);
    keeping(p); // (an event loop that keeps connections pipelines nothing: the queue is the only place)
    let mut host = TestHost::apache(Some(1));
    host.sleeps = false;
    let mut a = Dispatch::new();
    let _ca = claimed(a.step(&site(&sb), &i, p, &host));
    let mut b = Dispatch::new();
    assert!(waits(&b.step(&site(&sb), &i, p, &host)));
    let mut c = Dispatch::new();
    match c.step(&site(&sb), &i, p, &host) {
        Step::Refuse(r) => {
            assert_eq!((r.status, r.retry_after), (503, Some(5)));
            assert!(r.why.contains("SuFcgiQueueLimit"), "{}", r.why);
        }
        _ => panic!("a full queue is a 503"),
    }
    assert_eq!(p.rejected.load(Ordering::Acquire), 1);
    assert_eq!(p.waiting.load(Ordering::Acquire), 1, "the refused request left no count behind");
    drop(b);
    assert_eq!((p.waiting.load(Ordering::Acquire), p.sleepers.load(Ordering::Acquire)), (0, 0), "dropping a waiting request gives its place back");
    // SuFcgiQueueTimeout 0: past the deadline at once.
    let i0 = info(1, 1, 0);
    let mut d = Dispatch::new();
    match d.step(&site(&sb), &i0, p, &host) {
        Step::Refuse(r) => assert!(r.why.contains("SuFcgiQueueTimeout"), "{}", r.why),
        _ => panic!("a wait past SuFcgiQueueTimeout is a 503"),
    }
    assert_eq!(p.rejected.load(Ordering::Acquire), 2);
    assert_eq!(Refusal::never_accepted(p).status, 503);
    assert_eq!(p.rejected.load(Ordering::Acquire), 3, "a request the worker never took is one too");
}

#[test]
fn backoff_and_gone() {
    let sb = Scoreboard::create(1, 8).unwrap();
    let i = info(1, 10, 60);
    let p = pool(&sb, &i, 0);
    let host = TestHost::apache(None);
    p.state.store(pool_state::BACKOFF, Ordering::Release);
    p.backoff_until.store(sys::monotonic_secs() + 7, Ordering::Release);
    match Dispatch::new().step(&site(&sb), &i, p, &host) {
        Step::Refuse(r) => {
            assert_eq!(r.status, 503);
            assert!(matches!(r.retry_after, Some(6..=7)), "{:?}", r.retry_after);
        }
        _ => panic!("backing off is a 503"),
    }
    assert_eq!(p.rejected.load(Ordering::Acquire), 1);
    p.state.store(pool_state::RETIRING, Ordering::Release);
    assert!(matches!(Dispatch::new().step(&site(&sb), &i, p, &host), Step::Gone));
    // A request waiting in the queue when the slot goes to another pool.
    p.state.store(pool_state::ACTIVE, Ordering::Release);
    let mut d = Dispatch::new();
    assert!(waits(&d.step(&site(&sb), &i, p, &host)), "no worker yet: it waits (and nudges)");
    assert_eq!(p.waiting.load(Ordering::Acquire), 1);
    p.generation.store(2, Ordering::Release);
    assert!(matches!(d.step(&site(&sb), &i, p, &host), Step::Gone));
    assert_eq!((p.waiting.load(Ordering::Acquire), p.sleepers.load(Ordering::Acquire)), (0, 0), "it left the old pool's queue");
    assert!((1..MAX_TRIES).all(|_| d.retry()) && !d.retry(), "MAX_TRIES tries in all");
}

#[test]
fn a_parked_worker_of_this_process_comes_first_then_idle_then_taken_over() {
    let sb = Scoreboard::create(1, 8).unwrap();
    let i = info(3, 10, 60);
    let p = pool(&sb, &i, 3);
    keeping(p);
    let me = TestHost::apache(sb.claim_doorbell(100));
    let other = TestHost::apache(sb.claim_doorbell(200));
    assert_eq!((me.holder, other.holder), (Some(1), Some(2)));
    // The other process parks worker 0; this one parks worker 2.
    let c0 = claimed(Dispatch::new().step(&site(&sb), &i, p, &other));
    let _c1 = claimed(Dispatch::new().step(&site(&sb), &i, p, &me));
    let c2 = claimed(Dispatch::new().step(&site(&sb), &i, p, &me));
    assert_eq!((c0.index, c2.index), (0, 2));
    let Ended::Parked(w0) = c0.park(2) else { panic!("parked") };
    let Ended::Parked(w2) = c2.park(1) else { panic!("parked") };
    other.parked.borrow_mut().push((0, w0));
    me.parked.borrow_mut().push((2, w2));
    assert_eq!(p.workers[0].load().1, worker_state::PARKED);
    // This process takes its own parked worker: no connect.
    let k = claimed(Dispatch::new().step(&site(&sb), &i, p, &me));
    assert_eq!((k.index, k.via), (2, Via::Kept));
    // Nothing idle, nothing of its own: the other process's parked worker is
    // taken over and its holder told.
    let rings = sb.doorbell(2).unwrap().ring.load(Ordering::Acquire);
    let t = claimed(Dispatch::new().step(&site(&sb), &i, p, &me));
    assert_eq!((t.index, t.via), (0, Via::TakenOver));
    assert_eq!(sb.doorbell(2).unwrap().ring.load(Ordering::Acquire), rings + 1, "the holder's doorbell rang");
    assert!(other.take_kept(p, &i).is_none(), "the holder cannot claim it again");
    drop((k, t));
}

#[test]
fn an_event_loop_that_keeps_connections_pipelines_nothing() {
    let sb = Scoreboard::create(1, 8).unwrap();
    let i = info(1, 10, 60);
    let p = pool(&sb, &i, 1);
    keeping(p);
    let mut host = TestHost::apache(sb.claim_doorbell(100));
    host.sleeps = false;
    let _a = claimed(Dispatch::new().step(&site(&sb), &i, p, &host));
    let mut b = Dispatch::new();
    assert!(waits(&b.step(&site(&sb), &i, p, &host)), "it waits for the worker instead of its backlog");
    // Where waiting requests sleep, they queue in the busy worker's backlog.
    let apache = TestHost::apache(sb.claim_doorbell(101));
    let c = claimed(Dispatch::new().step(&site(&sb), &i, p, &apache));
    assert_eq!(c.via, Via::Pipelined);
    // A multiplexing app shares instead.
    drop(b);
    p.per_worker.store(3, Ordering::Release);
    let d = claimed(Dispatch::new().step(&site(&sb), &i, p, &host));
    assert_eq!(d.via, Via::Shared);
}

#[test]
fn a_newcomer_defers_to_a_sleeper() {
    let sb = Scoreboard::create(1, 8).unwrap();
    let i = info(1, 10, 60);
    let p = pool(&sb, &i, 1);
    keeping(p);
    let host = TestHost::apache(sb.claim_doorbell(100));
    let a = claimed(Dispatch::new().step(&site(&sb), &i, p, &host));
    // Its request began long ago: no backlog to queue in.
    p.workers[0].current_since_ms.store(crate::core::scoreboard::monotonic_ms().wrapping_sub(1000), Ordering::Release);
    let mut sleeper = Dispatch::new();
    assert!(waits(&sleeper.step(&site(&sb), &i, p, &host)));
    assert!(!a.release());
    let mut newcomer = Dispatch::new();
    assert!(waits(&newcomer.step(&site(&sb), &i, p, &host)), "the released worker is the sleeper's");
    let c = claimed(sleeper.step(&site(&sb), &i, p, &host));
    assert_eq!(c.index, 0);
    // lighttpd's requests never sleep: its own line orders them (`may_take`).
    let mut lt = TestHost::apache(None);
    lt.sleeps = false;
    lt.may = false;
    let mut parked = Dispatch::new();
    assert!(waits(&parked.step(&site(&sb), &i, p, &lt)));
    drop(newcomer);
    assert_eq!(p.sleepers.load(Ordering::Acquire), 0, "a parked request is no sleeper");
    drop(c);
}

#[test]
fn keep_rules() {
    let sb = Scoreboard::create(1, 8).unwrap();
    let i = info(1, 10, 60);
    let p = pool(&sb, &i, 1);
    keeping(p);
    let apache = TestHost::apache(Some(1));
    let mut lighttpd = TestHost::apache(Some(1));
    lighttpd.sleeps = false;
    assert!(keepable(p, &apache, true, KEEP_MAX_REQUEST));
    assert!(!keepable(p, &apache, true, KEEP_MAX_REQUEST + 1), "too large to be read at once");
    assert!(!keepable(p, &apache, false, 100), "a body");
    assert!(!keepable(p, &TestHost::apache(None), true, 100), "this process keeps nothing");
    assert!(p.enter_queue());
    assert!(!keepable(p, &apache, true, 100), "requests wait: they are handed the worker by a wake-up");
    assert!(keepable(p, &lighttpd, true, 100), "on an event loop the hand-over is free");
    p.leave_queue();
    let ok = Ending { complete: true, clean: true, all_sent: true };
    assert!(may_keep(ok));
    assert!(!may_keep(Ending { complete: false, ..ok }));
    assert!(!may_keep(Ending { clean: false, ..ok }));
    assert!(!may_keep(Ending { all_sent: false, ..ok }));
    // Again on a fresh connection: only what went out on a kept one, had no
    // body, got no answer, and either never reached the app or is idempotent.
    assert!(may_run_again(Via::Kept, true, false, false, true));
    assert!(may_run_again(Via::Kept, true, false, true, false), "a POST that never reached the app");
    assert!(!may_run_again(Via::Kept, true, false, false, false), "a POST the app may have read");
    assert!(!may_run_again(Via::Kept, false, false, true, true), "a body");
    assert!(!may_run_again(Via::Kept, true, true, false, true), "part of an answer came");
    assert!(!may_run_again(Via::Idle, true, false, false, true), "a fresh connection");
    assert!(idempotent(b"GET") && idempotent(b"HEAD") && !idempotent(b"POST") && !idempotent(b"PATCH"));
    assert!(uses_kept(true) && !uses_kept(false), "a body goes out on a fresh connection");
}

#[test]
fn keeping_needs_the_question_answered_and_no_multiplexing() {
    let sb = Scoreboard::create(1, 8).unwrap();
    let i = info(1, 10, 60);
    let p = pool(&sb, &i, 1);
    assert!(!keeps(p, Some(1)), "not asked yet");
    p.per_worker.store(1, Ordering::Release);
    assert!(!keeps(p, Some(1)), "being asked");
    p.asked.store(1, Ordering::Release);
    assert!(keeps(p, Some(1)));
    assert!(!keeps(p, None), "a process without a doorbell");
    p.per_worker.store(4, Ordering::Release);
    assert!(!keeps(p, Some(1)), "a multiplexing app shares its connections instead");
}
