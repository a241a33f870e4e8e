//! Finding a worker for one request, for both servers: one state machine
//! that answers "claimed (how: idle, kept, taken over, pipelined, shared) /
//! wait until T / ask the supervisor again / refuse with this status", and
//! the rules for keeping a connection to a worker between requests. The
//! glue only adapts it: Apache sleeps on the pool's futex between steps,
//! lighttpd parks the request on its event loop (`Host::sleeps`).
//!
//! Order of preference, each a compare-and-swap in the scoreboard:
//! 1. a worker this process parked: its connection is still open (`Host::take_kept`);
//! 2. an idle worker, or (an app that multiplexes) a share of a busy one;
//! 3. a worker another process parked: taken over at once, the holder told to
//!    close its connection (`PoolSlot::take_over`; no worker ever idles
//!    behind a connection nobody uses);
//! 4. at the pool's maximum, a place in the backlog of a worker whose request
//!    began moments ago (pipelining; not where an event loop keeps its
//!    connections under load: the worker reads its kept connection, not its
//!    backlog — see `keepable`);
//! 5. else wait in the pool's bounded queue (the supervisor is nudged once if
//!    the pool may grow), and 503 when it is full or the wait too long.
//!
//! A request that has not waited yet does not take a worker that a waiting
//! one was woken for (`PoolSlot::newcomer_may_take`).

use crate::core::pool_link::{self, Site};
use crate::core::request::PoolInfo;
use crate::core::scoreboard::{pool_state, Claim, PoolSlot, Via};
use crate::core::sys;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Tries at a worker per request: a pool that went away (asked again), a
/// worker gone between claim and connect, a kept connection the app had
/// closed. Each makes progress (a fresh pool, another worker, a fresh
/// connection); more than this many in a row means the app is failing.
pub const MAX_TRIES: u32 = 4;

/// A connection is kept for the worker's next request only after a request
/// this small, with no body: the app then read all of it at once (libfcgi
/// reads 8 KiB at a time and drops what it buffered of a finished request),
/// so nothing of it is left to be taken for the start of the next one.
pub const KEEP_MAX_REQUEST: usize = 8192;

/// Longest single sleep: a lost wake-up costs at most this much.
const MAX_SLEEP: Duration = Duration::from_millis(500);
/// Longest first sleep of a request that deferred to waiting ones: normally
/// a release wakes it long before; this bounds what a leaked count costs.
const FIRST_NAP: Duration = Duration::from_millis(50);

/// An answer without the app. 503s come with `retry_after` and the pool's
/// busy page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub retry_after: Option<u32>,
    /// For the error log (never for the client).
    pub why: String,
}

impl Refusal {
    /// 503, counted in the pool's `rejected` (status page).
    fn busy(slot: &PoolSlot, retry_after: u32, why: String) -> Refusal {
        slot.rejected.fetch_add(1, Ordering::Relaxed);
        Refusal { status: 503, retry_after: Some(retry_after.max(1)), why }
    }

    /// No try reached a worker (`MAX_TRIES`).
    pub fn tries_exhausted() -> Refusal {
        Refusal { status: 502, retry_after: None, why: "no worker of the app could take the request".into() }
    }

    /// The worker exited with the request still in its backlog: the app
    /// never saw it (it is failing at start, or exited just then).
    pub fn never_accepted(slot: &PoolSlot) -> Refusal {
        Refusal::busy(slot, 1, "the worker exited before taking the request (is the app failing at start?)".into())
    }
}

/// What the dispatch decided for one step.
pub enum Step<'a> {
    /// Relay on this worker (`claim.via` says how to reach it).
    Claimed(Claim<'a>),
    /// Nothing free: step again at `until` or when woken. `seen` is the
    /// pool's futex value read before looking (Apache sleeps on it).
    Wait { until: Instant, seen: u32 },
    /// The pool was replaced or forgotten meanwhile: ask the supervisor
    /// again (`Dispatch::retry` first).
    Gone,
    /// Answer this.
    Refuse(Refusal),
}

/// What a server process brings to the dispatch.
pub trait Host {
    /// This process's doorbell (`Scoreboard::claim_doorbell`) when it keeps
    /// connections to workers; None when it never does.
    fn holder(&self) -> Option<u32>;
    /// Whether this request may take a worker now (lighttpd: it is first in
    /// this process's line for the pool).
    fn may_take(&self) -> bool {
        true
    }
    /// Whether a waiting request sleeps on the pool's futex (Apache; it then
    /// counts in `sleepers`) rather than being parked on an event loop.
    fn sleeps(&self) -> bool;
    /// Claim again a worker of `slot` this process parked (its connection
    /// stays with the host, for the request to use).
    fn take_kept<'a>(&self, slot: &'a PoolSlot, info: &PoolInfo) -> Option<Claim<'a>>;
}

/// Whether a process with doorbell `holder` keeps its connections to the
/// workers of `slot`: the app was asked whether it multiplexes (the question
/// goes on a connection of its own, which a worker reading a kept one would
/// leave in its backlog) and does not (a multiplexing app's connections are
/// shared instead).
pub fn keeps(slot: &PoolSlot, holder: Option<u32>) -> bool {
    holder.is_some() && slot.asked.load(Ordering::Acquire) != 0 && slot.requests_per_worker() == 1
}

/// Whether a request goes out with FCGI_KEEP_CONN, to keep its connection
/// afterwards: where this process keeps connections (`keeps`), without a
/// body and small (`KEEP_MAX_REQUEST`: everything is read at once, before
/// the response). And, where waiting requests sleep (Apache), only while
/// none waits: a sleeper is handed a freed worker by a wake-up, and a worker
/// reading a kept connection meanwhile would idle through it, where a
/// worker whose connection closed takes the next request from its backlog
/// at once. On an event loop (lighttpd) the hand-over costs no wake-up, and
/// keeping pays under load too.
pub fn keepable(slot: &PoolSlot, host: &dyn Host, bodiless: bool, request_len: usize) -> bool {
    keeps(slot, host.holder()) && bodiless && request_len <= KEEP_MAX_REQUEST && (!host.sleeps() || slot.waiting.load(Ordering::Acquire) == 0)
}

/// Whether a request goes out on the kept connection of the worker it
/// claimed again: only without a body. The app may have closed that
/// connection meanwhile, and a body cannot be sent twice; a request with a
/// body gets a fresh connection to the same worker.
pub fn uses_kept(bodiless: bool) -> bool {
    bodiless
}

/// How a keepable request's exchange ended, as far as its connection goes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ending {
    /// Clean FastCGI end (END_REQUEST, REQUEST_COMPLETE), nothing after it.
    pub complete: bool,
    /// No error on the exchange (client side included).
    pub clean: bool,
    /// Everything was sent, STDIN closed, and the app read it.
    pub all_sent: bool,
}

/// Whether the connection may carry the worker's next request.
pub fn may_keep(e: Ending) -> bool {
    e.complete && e.clean && e.all_sent
}

/// Whether a request whose kept connection ended before any answer may run
/// again on a fresh connection: it had no body, and either it never reached
/// the app (the send failed: the app had closed the connection) or running
/// it twice is harmless (an idempotent method). A request with a body, or a
/// POST the app may have read, is never sent twice.
pub fn may_run_again(via: Via, bodiless: bool, answered: bool, unsent: bool, idempotent: bool) -> bool {
    via == Via::Kept && bodiless && !answered && (unsent || idempotent)
}

/// Methods that may be repeated without changing the outcome (RFC 9110 9.2.2),
/// of those a request without a body carries.
pub fn idempotent(method: &[u8]) -> bool {
    matches!(method, b"GET" | b"HEAD" | b"OPTIONS" | b"TRACE")
}

/// One request's way to a worker: its place in the queue, whether it
/// sleeps, its tries. Dropping it gives everything back.
#[derive(Default)]
pub struct Dispatch<'a> {
    /// Counted in the pool's `waiting` (the queue limit).
    seat: Option<&'a PoolSlot>,
    /// Counted in the pool's `sleepers` (Apache).
    sleeping: Option<&'a PoolSlot>,
    deadline: Option<Instant>,
    nudged: bool,
    tries: u32,
}

impl<'a> Dispatch<'a> {
    pub fn new() -> Dispatch<'a> {
        Dispatch::default()
    }

    /// The queue deadline once the request waits (lighttpd checks it).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Count a failed try (the pool was gone, the worker's socket unusable,
    /// the kept connection closed); false when no try is left.
    pub fn retry(&mut self) -> bool {
        self.tries += 1;
        self.tries < MAX_TRIES
    }

    /// One step for a request of the pool `info` describes, in `slot`.
    pub fn step(&mut self, site: &Site<'_>, info: &PoolInfo, slot: &'a PoolSlot, host: &dyn Host) -> Step<'a> {
        // Checked before claiming: while this request waited, the slot may
        // have been given to another pool, whose workers are not ours.
        if slot.generation.load(Ordering::Acquire) != info.slot_generation {
            self.leave(true);
            return Step::Gone;
        }
        let seen = slot.idle_seq.load(Ordering::Acquire);
        let may = host.may_take();
        let my_turn = may && (self.sleeping.is_some() || slot.newcomer_may_take());
        let keeps = keeps(slot, host.holder());
        if my_turn {
            if let Some(c) = self.first_free(site, info, slot, host, keeps) {
                return self.claimed(c);
            }
        }
        let limits = &info.limits;
        match slot.state.load(Ordering::Acquire) {
            pool_state::BACKOFF => {
                let left = slot.backoff_until.load(Ordering::Acquire).saturating_sub(sys::monotonic_secs()).max(1);
                self.leave(true);
                return Step::Refuse(Refusal::busy(slot, left, format!("the app keeps crashing at start; next try in {left} s")));
            }
            pool_state::ACTIVE => {}
            _ => {
                self.leave(true);
                return Step::Gone;
            }
        }
        if self.seat.is_none() {
            if !slot.enter_queue() {
                // A full queue answers 503 at once, but not while a worker
                // is free: a newcomer that deferred to the sleepers takes it.
                if may && !my_turn {
                    if let Some(c) = self.first_free(site, info, slot, host, keeps) {
                        return self.claimed(c);
                    }
                }
                self.leave(true);
                let why = format!("all {} workers busy and {} requests already waiting (SuFcgiQueueLimit)", limits.max_workers, limits.queue_limit);
                return Step::Refuse(Refusal::busy(slot, 5, why));
            }
            self.seat = Some(slot);
            self.deadline = Some(Instant::now() + Duration::from_secs(limits.queue_timeout as u64));
        }
        if slot.live_workers() >= limits.max_workers {
            // At its maximum the pool cannot grow: queue in a busy worker's
            // backlog rather than wait until one is released. Only one
            // request per worker at a time (a multiplexing app shares
            // instead), and not where an event loop keeps connections even
            // under load (`keepable`): the worker reads its kept connection,
            // not its backlog.
            if my_turn && slot.requests_per_worker() == 1 && (!keeps || host.sleeps()) {
                if let Some(c) = slot.enqueue() {
                    return self.claimed(c);
                }
            }
        } else if !self.nudged {
            // Someone is waiting and the pool may grow: the supervisor decides
            // whether to start a worker. At its maximum there is nothing to ask.
            pool_link::nudge(site, info);
            self.nudged = true;
        }
        let now = Instant::now();
        let deadline = self.deadline.unwrap_or(now);
        if now >= deadline {
            self.leave(true);
            let why = format!("no worker became free within {} s (SuFcgiQueueTimeout)", limits.queue_timeout);
            return Step::Refuse(Refusal::busy(slot, 5, why));
        }
        let mut until = deadline.min(now + MAX_SLEEP);
        if host.sleeps() && self.sleeping.is_none() {
            if !my_turn {
                until = until.min(now + FIRST_NAP);
            }
            slot.begin_sleeping();
            self.sleeping = Some(slot);
        }
        Step::Wait { until, seen }
    }

    fn first_free(&self, site: &Site<'_>, info: &PoolInfo, slot: &'a PoolSlot, host: &dyn Host, keeps: bool) -> Option<Claim<'a>> {
        if keeps {
            if let Some(c) = host.take_kept(slot, info) {
                return Some(c);
            }
        }
        if let Some(c) = slot.claim().or_else(|| slot.share()) {
            return Some(c);
        }
        let (c, holder) = slot.take_over()?;
        site.scoreboard.ring(holder);
        Some(c)
    }

    fn claimed(&mut self, c: Claim<'a>) -> Step<'a> {
        if let Some(s) = self.sleeping.take() {
            s.end_sleeping();
        }
        // A pipelined request keeps its place in the queue until its exchange ends.
        if !c.pipelined() {
            if let Some(s) = self.seat.take() {
                s.leave_queue();
            }
            self.deadline = None;
        }
        Step::Claimed(c)
    }

    /// The exchange of a pipelined request ended (or it was given up): its
    /// place in the queue is free.
    pub fn exchange_over(&mut self) {
        self.leave(false);
    }

    /// Out of the queue and the sleepers; `gave_up`: without a worker, so a
    /// wake-up it may have been sent for a free worker is passed on (or that
    /// worker would idle while newcomers defer to the sleepers).
    fn leave(&mut self, gave_up: bool) {
        if let Some(s) = self.sleeping.take() {
            s.end_sleeping();
            if gave_up {
                s.notify_idle(1);
            }
        }
        if let Some(s) = self.seat.take() {
            s.leave_queue();
        }
        self.deadline = None;
        self.nudged = false;
    }
}

impl Drop for Dispatch<'_> {
    fn drop(&mut self) {
        self.leave(true);
    }
}

#[cfg(test)]
mod tests;
