//! Claiming a worker for one request, and giving it back: an idle worker, a
//! place in a busy one's backlog (pipelining), a share of a multiplexing
//! one, a worker this process parked (its kept connection), or one another
//! process parked (taken over). Every way goes through one compare-and-swap
//! on the worker's word, which also counts the request against
//! `max_requests`, so SuFcgiMaxRequests holds whichever way it was given.

use super::worker_state::*;
use super::{monotonic_ms, pool_state, PoolSlot, WorkerSlot, Word, ASSIGNED_MAX, PIPELINE_DEPTH, PIPELINE_WINDOW_MS};
use crate::core::sys;
use std::sync::atomic::Ordering;

/// How a claimed request reaches its worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// An idle worker: a connection of its own, accepted at once.
    Idle,
    /// Connected behind another request in a busy worker's backlog
    /// (`PoolSlot::enqueue`): it starts when that one ends.
    Pipelined,
    /// Beside the worker's other requests on a shared connection (`PoolSlot::share`).
    Shared,
    /// On the connection this process kept to the worker (`PoolSlot::take_parked`).
    Kept,
    /// A worker another process had parked (`PoolSlot::take_over`): a
    /// connection of its own, accepted once the holder closed its own.
    TakenOver,
}

/// A worker claimed for one request. Dropping it without `release`, `park`,
/// `give_back` or `retire` retires the worker (the request did not end cleanly).
pub struct Claim<'a> {
    pool: &'a PoolSlot,
    pub index: u32,
    pub epoch: u32,
    pub via: Via,
    done: bool,
}

/// What ending a request made of its worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Idle, or serving the next request in its backlog.
    Free,
    /// Retired (SuFcgiMaxRequests reached, pool retiring): the supervisor stops it.
    Retired,
    /// Parked; this is its word now, which must be unchanged for the holder
    /// to claim it again (`PoolSlot::take_parked`) or give it back (`PoolSlot::unpark`).
    Parked(u64),
    /// The supervisor took the entry meanwhile: nothing to give back.
    Lost,
}

impl Claim<'_> {
    pub fn worker(&self) -> &WorkerSlot {
        &self.pool.workers[self.index as usize]
    }

    pub fn pipelined(&self) -> bool {
        self.via == Via::Pipelined
    }

    /// The request ended cleanly and the connection is closed: the worker
    /// serves the next request, unless it reached `max_requests` or its pool
    /// is retiring. Returns true when the supervisor should look at the pool
    /// (a worker was retired).
    pub fn release(self) -> bool {
        self.end(None, true) == Ended::Retired
    }

    /// The request ended cleanly and process `holder` keeps its connection:
    /// the worker is PARKED (unless a request waits in its backlog, it
    /// reached `max_requests` or its pool is retiring: then as `release`).
    pub fn park(self, holder: u32) -> Ended {
        self.end(Some(holder), true)
    }

    /// The request never reached the app (the kept connection it went out
    /// on was closed before it was answered): the worker is free again and
    /// neither this request nor its place under `max_requests` counts.
    pub fn give_back(self) -> bool {
        self.end(None, false) == Ended::Retired
    }

    fn end(mut self, park: Option<u32>, served: bool) -> Ended {
        self.done = true;
        let w = self.worker();
        let served_n = if served { w.requests.fetch_add(1, Ordering::AcqRel).saturating_add(1) } else { w.requests.load(Ordering::Acquire) };
        let max = self.pool.max_requests.load(Ordering::Acquire);
        let retiring = self.pool.state.load(Ordering::Acquire) != pool_state::ACTIVE;
        w.last_used.store(sys::monotonic_secs(), Ordering::Release);
        loop {
            let cur = w.word();
            if cur.epoch != self.epoch || cur.state != BUSY {
                return Ended::Lost;
            }
            let assigned = if served { cur.assigned } else { cur.assigned.saturating_sub(1) };
            if cur.queued > 0 {
                // The next connection in its backlog is the worker's request
                // now (or, multiplexing, a share ended): it stays busy,
                // nobody waits for a wake-up.
                if w.cas(cur, Word { queued: cur.queued - 1, assigned, ..cur }) {
                    w.current_since_ms.store(monotonic_ms(), Ordering::Release);
                    w.busy_since.store(sys::monotonic_secs(), Ordering::Release);
                    // Its backlog has a free place again: a sleeping waiter may take it.
                    self.pool.notify_idle(1);
                    return Ended::Free;
                }
                continue;
            }
            if retiring || (max > 0 && served_n >= max) {
                if w.cas(cur, Word { state: RETIRED, assigned, ..cur }) {
                    return Ended::Retired;
                }
                continue;
            }
            if let Some(holder) = park {
                // Only this process has the entry BUSY: nobody else writes `holder` now.
                w.holder.store(holder, Ordering::Release);
                let next = Word { state: PARKED, assigned, ..cur };
                if w.cas(cur, next) {
                    return Ended::Parked(next.pack());
                }
                continue;
            }
            if w.cas(cur, Word { state: IDLE, assigned, ..cur }) {
                self.pool.notify_idle(1);
                return Ended::Free;
            }
        }
    }

    /// The worker must not serve again (timeout, protocol error, broken
    /// connection): the supervisor stops it. Returns true (nudge the supervisor).
    pub fn retire(mut self) -> bool {
        self.done = true;
        self.worker().transition(self.epoch, BUSY, RETIRED);
        true
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.worker().transition(self.epoch, BUSY, RETIRED);
        }
    }
}

impl PoolSlot {
    fn claimed(&self, i: usize, cur: Word, via: Via) -> Claim<'_> {
        if matches!(via, Via::Idle | Via::Kept | Via::TakenOver) {
            let w = &self.workers[i];
            w.busy_since.store(sys::monotonic_secs(), Ordering::Release);
            w.current_since_ms.store(monotonic_ms(), Ordering::Release);
        }
        Claim { pool: self, index: i as u32, epoch: cur.epoch, via, done: false }
    }

    /// Whether one more request may be given to a worker whose word is `cur`
    /// (`assigned` saturates; only requests beside the current one need it exact).
    fn may_assign(&self, cur: Word) -> bool {
        let max = self.max_requests.load(Ordering::Acquire);
        max == 0 || cur.assigned < max
    }

    /// Claim an idle worker, lowest index first (so high entries go idle and
    /// are reaped first).
    pub fn claim(&self) -> Option<Claim<'_>> {
        for (i, w) in self.workers[..self.worker_limit()].iter().enumerate() {
            let cur = w.word();
            if cur.state != IDLE || !self.may_assign(cur) {
                continue;
            }
            if w.cas(cur, Word { state: BUSY, assigned: cur.assigned.saturating_add(1), queued: 0, ..cur }) {
                return Some(self.claimed(i, cur, Via::Idle));
            }
        }
        None
    }

    /// No worker is idle: take a place in the backlog of a busy one, behind
    /// the request it serves (at most `PIPELINE_DEPTH` deep). The caller
    /// connects and sends its whole request at once, so the worker finds it
    /// ready the moment it finishes, without a wake-up round trip through the
    /// releasing request. Only behind a request that began less than
    /// `PIPELINE_WINDOW_MS` ago (a queued request cannot move to another
    /// worker), and never past the worker's `max_requests`: `assigned` is
    /// bumped in the same compare-and-swap. Prefers the worker whose
    /// request began first (likely to finish first).
    pub fn enqueue(&self) -> Option<Claim<'_>> {
        let now = monotonic_ms();
        loop {
            let mut best: Option<(usize, Word, u32)> = None;
            for (i, w) in self.workers[..self.worker_limit()].iter().enumerate() {
                let cur = w.word();
                if cur.state != BUSY || cur.queued >= PIPELINE_DEPTH || cur.assigned >= ASSIGNED_MAX || !self.may_assign(cur) {
                    continue;
                }
                let age = now.wrapping_sub(w.current_since_ms.load(Ordering::Acquire));
                if age >= PIPELINE_WINDOW_MS {
                    continue;
                }
                let better = match best {
                    None => true,
                    Some((_, b, bage)) => (cur.queued, u32::MAX - age) < (b.queued, u32::MAX - bage),
                };
                if better {
                    best = Some((i, cur, age));
                }
            }
            let (i, cur, _) = best?;
            if self.workers[i].cas(cur, Word { assigned: cur.assigned + 1, queued: cur.queued + 1, ..cur }) {
                return Some(self.claimed(i, cur, Via::Pipelined));
            }
            // It changed under us (released, or someone else queued): look again.
        }
    }

    /// No worker is idle and the app multiplexes: run beside the requests a
    /// busy worker already serves, on its shared connection. The share
    /// counts in `queued` (a multiplexing pool never pipelines, so the
    /// counter has one meaning per pool) and in `assigned`, so
    /// `max_requests` holds. Takes the least loaded worker.
    pub fn share(&self) -> Option<Claim<'_>> {
        let extra = self.requests_per_worker() - 1;
        if extra == 0 {
            return None;
        }
        loop {
            let mut best: Option<(usize, Word)> = None;
            for (i, w) in self.workers[..self.worker_limit()].iter().enumerate() {
                let cur = w.word();
                if cur.state != BUSY || cur.queued >= extra || cur.assigned >= ASSIGNED_MAX || !self.may_assign(cur) {
                    continue;
                }
                if best.is_none_or(|(_, b)| cur.queued < b.queued) {
                    best = Some((i, cur));
                }
            }
            let (i, cur) = best?;
            if self.workers[i].cas(cur, Word { assigned: cur.assigned + 1, queued: cur.queued + 1, ..cur }) {
                return Some(self.claimed(i, cur, Via::Shared));
            }
        }
    }

    /// Claim worker `index` again on the connection this process kept to
    /// it, if it is still as this process parked it (`word`, from `Claim::park`).
    pub fn take_parked(&self, index: u32, word: u64) -> Option<Claim<'_>> {
        let i = index as usize;
        let cur = Word::unpack(word);
        if i >= self.worker_limit() || cur.state != PARKED || !self.may_assign(cur) {
            return None;
        }
        let w = &self.workers[i];
        w.cas(cur, Word { state: BUSY, assigned: cur.assigned.saturating_add(1), ..cur }).then(|| self.claimed(i, cur, Via::Kept))
    }

    /// No worker is idle: take one that a process parked (the one parked
    /// longest). Returns the claim and the holder's doorbell, to be rung so
    /// that it closes its connection; meanwhile the caller's connection waits
    /// in the worker's backlog. A holder that died left nothing open: the
    /// worker is already waiting for a connection.
    pub fn take_over(&self) -> Option<(Claim<'_>, u32)> {
        loop {
            let mut best: Option<(usize, Word, u32)> = None;
            for (i, w) in self.workers[..self.worker_limit()].iter().enumerate() {
                let cur = w.word();
                if cur.state != PARKED || !self.may_assign(cur) {
                    continue;
                }
                let since = w.last_used.load(Ordering::Acquire);
                if best.is_none_or(|(_, _, s)| since < s) {
                    best = Some((i, cur, since));
                }
            }
            let (i, cur, _) = best?;
            let w = &self.workers[i];
            // Read before the swap: the holder is only rewritten by whoever has it BUSY.
            let holder = w.holder.load(Ordering::Acquire);
            if w.cas(cur, Word { state: BUSY, assigned: cur.assigned.saturating_add(1), ..cur }) {
                return Some((self.claimed(i, cur, Via::TakenOver), holder));
            }
        }
    }

    /// The holder gives a parked worker back (it closed the connection: idle
    /// too long, or it exits): idle, if it is still as it was parked.
    pub fn unpark(&self, index: u32, word: u64) -> bool {
        let cur = Word::unpack(word);
        let Some(w) = self.workers.get(index as usize) else { return false };
        if cur.state != PARKED || !w.cas(cur, Word { state: IDLE, ..cur }) {
            return false;
        }
        self.notify_idle(1);
        true
    }
}
