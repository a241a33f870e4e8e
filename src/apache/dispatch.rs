//! Finding a worker for one request: claim an idle one from the scoreboard,
//! or wait in the pool's bounded queue (asleep on a futex, woken when a worker
//! is released or spawned), or give up at once with 503 when the queue is full.
//! httpd's threads may block, so waiting here is fine; the supervisor is only
//! told (one-way) that someone is waiting.
//!
//! When the pool is at its maximum and no worker is idle, a request may
//! instead take a place in the backlog of a busy worker whose request began
//! moments ago (`PoolSlot::enqueue`): it connects and sends at once, and the
//! worker finds it ready when it finishes. It still counts as waiting (the
//! queue limit holds) until its exchange ends: see `QueueSeat`. An app that
//! multiplexes is never pipelined: a busy worker of it takes a share of its
//! requests at once instead (`PoolSlot::share`).

use crate::core::pool_link::{self as link, Pool};
use super::runtime::Runtime;
use crate::core::scoreboard::{pool_state, Claim, PoolSlot};
use crate::core::sys;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

pub enum NoWorker {
    /// The pool was replaced or forgotten meanwhile: ask the supervisor again.
    Gone,
    /// Answer 503 with `Retry-After: retry_after`.
    Busy { retry_after: u32, why: String },
}

/// Longest single sleep: a lost wake-up costs at most this much.
const MAX_SLEEP: Duration = Duration::from_millis(500);
/// Longest first sleep of a request that deferred to sleeping ones.
const FIRST_NAP: Duration = Duration::from_millis(50);

pub fn claim_worker<'a>(rt: &Runtime, pool: &Pool, slot: &'a PoolSlot) -> Result<Claim<'a>, NoWorker> {
    let limits = &pool.info.limits;
    let deadline = Instant::now() + Duration::from_secs(limits.queue_timeout as u64);
    let mut queued = false;
    let mut nudged = false;
    // Counted in `PoolSlot::sleepers` once it has slept: from then on it may
    // take a worker ahead of newcomers (`PoolSlot::newcomer_may_take`).
    let mut sleeper = false;
    let result = loop {
        let seen = slot.idle_seq.load(Ordering::Acquire);
        // Checked before claiming: while this request slept, the slot may
        // have been given to another pool, whose workers are not ours.
        if slot.generation.load(Ordering::Acquire) != pool.info.slot_generation {
            break Err(NoWorker::Gone);
        }
        let my_turn = sleeper || slot.newcomer_may_take();
        if my_turn {
            // An idle worker, else (a multiplexing app) a share of a busy one.
            if let Some(c) = slot.claim().or_else(|| slot.share()) {
                break Ok(c);
            }
        }
        match slot.state.load(Ordering::Acquire) {
            pool_state::BACKOFF => {
                let until = slot.backoff_until.load(Ordering::Acquire);
                let left = until.saturating_sub(sys::monotonic_secs()).max(1);
                break Err(NoWorker::Busy { retry_after: left, why: format!("the app keeps crashing at start; next try in {left} s") });
            }
            pool_state::ACTIVE => {}
            _ => break Err(NoWorker::Gone),
        }
        if !queued {
            if !slot.enter_queue() {
                // A full queue answers 503 at once, but not while a worker
                // is free: a newcomer that deferred to the sleepers takes it.
                if !my_turn {
                    if let Some(c) = slot.claim().or_else(|| slot.share()) {
                        break Ok(c);
                    }
                }
                break Err(NoWorker::Busy {
                    retry_after: 5,
                    why: format!("all {} workers busy and {} requests already waiting (SuFcgiQueueLimit)", limits.max_workers, limits.queue_limit),
                });
            }
            queued = true;
        }
        let live = slot.live_workers();
        if live >= limits.max_workers {
            // At its maximum the pool cannot grow: queue in a busy worker's
            // backlog rather than sleep until one is released.
            if my_turn && slot.requests_per_worker() == 1 {
                if let Some(c) = slot.enqueue() {
                    break Ok(c);
                }
            }
        } else if !nudged {
            // Someone is waiting and the pool may grow: the supervisor decides
            // whether to start a worker. At its maximum there is nothing to ask.
            link::nudge(&rt.site(), &pool.info);
            nudged = true;
        }
        let now = Instant::now();
        if now >= deadline {
            break Err(NoWorker::Busy {
                retry_after: 5,
                why: format!("no worker became free within {} s (SuFcgiQueueTimeout)", limits.queue_timeout),
            });
        }
        let mut nap = (deadline - now).min(MAX_SLEEP);
        if !sleeper {
            if !my_turn {
                // Deferred to older requests: normally a release wakes it long
                // before this; the cap bounds what a leaked count could cost.
                nap = nap.min(FIRST_NAP);
            }
            slot.begin_sleeping();
            sleeper = true;
        }
        slot.wait_idle(seen, nap);
    };
    if sleeper {
        slot.end_sleeping();
        if result.is_err() {
            // It may have been woken for a free worker it will not take:
            // pass the wake-up on, or that worker would idle while newcomers
            // defer to the sleepers.
            slot.notify_idle(1);
        }
    }
    if queued && !matches!(&result, Ok(c) if c.pipelined) {
        slot.leave_queue();
    }
    result
}

/// A pipelined request's place in the pool's queue (`PoolSlot::waiting`): it
/// is given up when the exchange ends, whatever way it ends.
pub struct QueueSeat<'a>(Option<&'a PoolSlot>);

impl<'a> QueueSeat<'a> {
    pub fn new(slot: &'a PoolSlot, claim: &Claim<'_>) -> QueueSeat<'a> {
        QueueSeat(claim.pipelined.then_some(slot))
    }
}

impl Drop for QueueSeat<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.0 {
            slot.leave_queue();
        }
    }
}
