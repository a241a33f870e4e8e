//! Shared memory between server children and the supervisor: one slot per
//! pool, one entry per worker. This is how a request finds an idle worker
//! without asking the supervisor: it claims the entry with a compare-and-swap,
//! connects to that worker's own socket, and releases the entry afterwards.
//!
//! The privileged parent maps it (a memfd, shared) before forking anything,
//! so every child and the supervisor (which maps the same memfd after its
//! exec) see the same pages. Only atomics live
//! here: no pointers, nothing a child could use to steer the supervisor beyond
//! hints the supervisor re-checks. A worker entry packs (epoch, state) into one
//! word so a child can never release an entry that the supervisor has since
//! given to a new worker.

use crate::core::limits::MAX_POOL_WORKERS;
use crate::core::sys;
use std::io;
use std::os::fd::{AsRawFd, IntoRawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Pool slot states.
pub mod pool_state {
    pub const FREE: u32 = 0;
    pub const ACTIVE: u32 = 1;
    /// Replaced by a newer version (reload): finish what runs, then stop.
    pub const RETIRING: u32 = 2;
    /// Crashing at start: answer 503 until `backoff_until`.
    pub const BACKOFF: u32 = 3;
}

/// Worker entry states.
pub mod worker_state {
    pub const EMPTY: u32 = 0;
    /// Listening and free: a child may claim it.
    pub const IDLE: u32 = 1;
    /// Claimed by a child for one request.
    pub const BUSY: u32 = 2;
    /// Done serving (recycled, retiring pool, broken connection): the
    /// supervisor stops it.
    pub const RETIRED: u32 = 3;
}

use worker_state::*;

// A worker entry's word: epoch (32 bits) | assigned (24) | queued (4) | state (4).
// `assigned` counts the requests given to this epoch (claims and pipelined
// connections), so SuFcgiMaxRequests is enforced when a request is given to
// the worker, exactly, in the same compare-and-swap. `queued` counts the
// connections waiting in the worker's own backlog behind the request it serves.
const STATE_BITS: u32 = 4;
const QUEUED_BITS: u32 = 4;
const STATE_MASK: u64 = (1 << STATE_BITS) - 1;
const QUEUED_MASK: u64 = (1 << QUEUED_BITS) - 1;
const ASSIGNED_SHIFT: u32 = STATE_BITS + QUEUED_BITS;
const ASSIGNED_MAX: u32 = (1 << (32 - ASSIGNED_SHIFT)) - 1;

/// At most this many requests wait in one worker's backlog behind the one it
/// serves (pipelining; see `PoolSlot::enqueue`).
pub const PIPELINE_DEPTH: u32 = 2;
/// Only pipeline behind a request that began this recently: a request queued
/// in a worker's backlog cannot move to another worker, so it must not sit
/// behind a slow one.
pub const PIPELINE_WINDOW_MS: u32 = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Word {
    epoch: u32,
    assigned: u32,
    queued: u32,
    state: u32,
}

impl Word {
    fn pack(self) -> u64 {
        ((self.epoch as u64) << 32)
            | ((self.assigned.min(ASSIGNED_MAX) as u64) << ASSIGNED_SHIFT)
            | ((self.queued as u64 & QUEUED_MASK) << STATE_BITS)
            | (self.state as u64 & STATE_MASK)
    }

    fn unpack(w: u64) -> Word {
        Word {
            epoch: (w >> 32) as u32,
            assigned: ((w as u32) >> ASSIGNED_SHIFT),
            queued: ((w >> STATE_BITS) & QUEUED_MASK) as u32,
            state: (w & STATE_MASK) as u32,
        }
    }
}

fn pack(epoch: u32, state: u32) -> u64 {
    Word { epoch, assigned: 0, queued: 0, state }.pack()
}

/// Milliseconds on the monotonic clock, wrapping (only differences are used).
pub fn monotonic_ms() -> u32 {
    // SAFETY: timespec is plain data; clock_gettime writes it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid clock id and a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).wrapping_mul(1000).wrapping_add(ts.tv_nsec as u64 / 1_000_000) as u32
}

/// One worker of a pool.
#[repr(C)]
pub struct WorkerSlot {
    word: AtomicU64,
    pub pid: AtomicU32,
    /// Requests this worker has served.
    pub requests: AtomicU32,
    /// `monotonic_secs` when it last became idle (idle reaping).
    pub last_used: AtomicU32,
    /// `monotonic_secs` when it was spawned.
    pub started: AtomicU32,
    /// `monotonic_secs` when the current request began (timeouts, status).
    pub busy_since: AtomicU32,
    /// Set by the supervisor to the epoch of a worker that exited with a
    /// connection it never accepted: that request never reached the app.
    pub unaccepted_epoch: AtomicU32,
    /// `monotonic_ms` when the request it serves now began (pipelining only
    /// queues behind a request that began recently).
    pub current_since_ms: AtomicU32,
    _pad: [u32; 7],
}

const _: () = assert!(std::mem::size_of::<WorkerSlot>() == 64);

impl WorkerSlot {
    fn word(&self) -> Word {
        Word::unpack(self.word.load(Ordering::Acquire))
    }

    fn cas(&self, from: Word, to: Word) -> bool {
        self.word.compare_exchange(from.pack(), to.pack(), Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// (epoch, state).
    pub fn load(&self) -> (u32, u32) {
        let w = self.word();
        (w.epoch, w.state)
    }

    /// Requests waiting in this worker's backlog behind the one it serves.
    pub fn queued(&self) -> u32 {
        self.word().queued
    }

    /// Requests given to this epoch of the entry so far (claims, shares and
    /// pipelined connections).
    pub fn assigned(&self) -> u32 {
        self.word().assigned
    }

    /// Supervisor side: publish a new state unconditionally (counters reset).
    pub fn set(&self, epoch: u32, state: u32) {
        self.word.store(pack(epoch, state), Ordering::Release);
    }

    /// Move (epoch, from) → (epoch, to), keeping the counters; false if the
    /// epoch or state changed meanwhile.
    pub fn transition(&self, epoch: u32, from: u32, to: u32) -> bool {
        loop {
            let w = self.word();
            if w.epoch != epoch || w.state != from {
                return false;
            }
            if self.cas(w, Word { state: to, ..w }) {
                return true;
            }
        }
    }

    /// Supervisor side: take an entry out of service (new epoch) if it is
    /// still in state `from`; returns the new epoch on success.
    pub fn retire_if(&self, epoch: u32, from: u32) -> Option<u32> {
        let next = epoch.wrapping_add(1);
        loop {
            let w = self.word();
            if w.epoch != epoch || w.state != from {
                return None;
            }
            if self.cas(w, Word { epoch: next, assigned: 0, queued: 0, state: EMPTY }) {
                return Some(next);
            }
        }
    }
}

/// One pool: its limits as the supervisor clamped them, queue counters, and
/// its workers. The worker entries are a slice as long as the host's
/// MaxWorkers ceiling at the scoreboard's creation, not `MAX_POOL_WORKERS`:
/// a pool's pages are touched by every process that serves it, so 5,000
/// pools cost 5,000 × (64 + 64 × ceiling) bytes rather than 5,000 pages.
#[repr(C, align(64))]
pub struct PoolSlot {
    /// Bumped each time the slot is given to a pool: cached references to an
    /// older pool in the same slot are detected and dropped.
    pub generation: AtomicU32,
    pub state: AtomicU32,
    pub max_workers: AtomicU32,
    pub max_requests: AtomicU32,
    pub queue_limit: AtomicU32,
    /// Requests waiting for a worker right now.
    pub waiting: AtomicU32,
    /// Futex word: bumped whenever a worker becomes claimable.
    pub idle_seq: AtomicU32,
    /// While in BACKOFF: `monotonic_secs` when spawning resumes.
    pub backoff_until: AtomicU32,
    /// Requests relayed (statistics).
    pub requests: AtomicU64,
    /// Workers spawned (statistics).
    pub spawns: AtomicU32,
    /// Requests answered 503 because the queue was full or timed out.
    pub rejected: AtomicU32,
    /// Requests being relayed right now.
    pub inflight: AtomicU32,
    /// Requests of `waiting` that have slept at least once and still look
    /// for a worker. While any do, a newcomer does not take a worker or a
    /// backlog place ahead of them (see `newcomer_may_take`).
    pub sleepers: AtomicU32,
    /// Requests one worker may be given at once (`core::mux`): 0 until a
    /// server process asked the app (FCGI_GET_VALUES), 1 when it does not
    /// multiplex (or is being asked), up to `mux::MAX_SHARED` when it does.
    pub per_worker: AtomicU32,
    /// 1 once the question behind `per_worker` was answered (or timed out):
    /// `per_worker` 1 also means "being asked".
    pub asked: AtomicU32,
    pub workers: [WorkerSlot],
}

/// Bytes of a slot before its worker entries.
const SLOT_HEADER: usize = 64;

/// A worker claimed for one request. Dropping it without `release` or
/// `retire` retires the worker (the request did not end cleanly).
pub struct Claim<'a> {
    pool: &'a PoolSlot,
    pub index: u32,
    pub epoch: u32,
    /// Connected behind another request in the worker's backlog (see
    /// `PoolSlot::enqueue`): it starts when that one ends.
    pub pipelined: bool,
    /// Runs beside the worker's other requests on a shared connection (see
    /// `PoolSlot::share`).
    pub shared: bool,
    done: bool,
}

impl Claim<'_> {
    pub fn worker(&self) -> &WorkerSlot {
        &self.pool.workers[self.index as usize]
    }

    /// The request ended cleanly and the connection is closed: the worker
    /// serves the next request, unless it reached `max_requests` or its pool
    /// is retiring. Returns true when the supervisor should look at the pool
    /// (a worker was retired).
    pub fn release(mut self) -> bool {
        self.done = true;
        let w = self.worker();
        let served = w.requests.fetch_add(1, Ordering::AcqRel).saturating_add(1);
        let max = self.pool.max_requests.load(Ordering::Acquire);
        let retiring = self.pool.state.load(Ordering::Acquire) != pool_state::ACTIVE;
        w.last_used.store(sys::monotonic_secs(), Ordering::Release);
        loop {
            let cur = w.word();
            if cur.epoch != self.epoch || cur.state != BUSY {
                // The supervisor took the entry meanwhile: nothing to give back.
                return false;
            }
            if cur.queued > 0 {
                // The next connection in its backlog is the worker's request
                // now: it stays busy, nobody waits for a wake-up.
                if w.cas(cur, Word { queued: cur.queued - 1, ..cur }) {
                    w.current_since_ms.store(monotonic_ms(), Ordering::Release);
                    w.busy_since.store(sys::monotonic_secs(), Ordering::Release);
                    // Its backlog has a free place again: a sleeping waiter may take it.
                    self.pool.notify_idle(1);
                    return false;
                }
                continue;
            }
            if retiring || (max > 0 && served >= max) {
                if w.cas(cur, Word { state: RETIRED, ..cur }) {
                    return true;
                }
                continue;
            }
            if w.cas(cur, Word { state: IDLE, ..cur }) {
                self.pool.notify_idle(1);
                return false;
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
    fn worker_limit(&self) -> usize {
        (self.max_workers.load(Ordering::Acquire) as usize).min(self.workers.len())
    }

    /// Claim an idle worker, lowest index first (so high entries go idle and
    /// are reaped first).
    pub fn claim(&self) -> Option<Claim<'_>> {
        let max = self.max_requests.load(Ordering::Acquire);
        for (i, w) in self.workers[..self.worker_limit()].iter().enumerate() {
            let cur = w.word();
            if cur.state != IDLE || (max > 0 && cur.assigned >= max) {
                continue;
            }
            let next = Word { state: BUSY, assigned: cur.assigned.saturating_add(1), queued: 0, ..cur };
            if w.cas(cur, next) {
                w.busy_since.store(sys::monotonic_secs(), Ordering::Release);
                w.current_since_ms.store(monotonic_ms(), Ordering::Release);
                return Some(Claim { pool: self, index: i as u32, epoch: cur.epoch, pipelined: false, shared: false, done: false });
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
        let max = self.max_requests.load(Ordering::Acquire);
        let now = monotonic_ms();
        loop {
            let mut best: Option<(usize, Word, u32)> = None;
            for (i, w) in self.workers[..self.worker_limit()].iter().enumerate() {
                let cur = w.word();
                if cur.state != BUSY || cur.queued >= PIPELINE_DEPTH || cur.assigned >= ASSIGNED_MAX {
                    continue;
                }
                if max > 0 && cur.assigned >= max {
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
            let next = Word { assigned: cur.assigned + 1, queued: cur.queued + 1, ..cur };
            if self.workers[i].cas(cur, next) {
                return Some(Claim { pool: self, index: i as u32, epoch: cur.epoch, pipelined: true, shared: false, done: false });
            }
            // It changed under us (released, or someone else queued): look again.
        }
    }

    /// Requests one worker may be given at once (1 until the app was asked).
    pub fn requests_per_worker(&self) -> u32 {
        self.per_worker.load(Ordering::Acquire).clamp(1, QUEUED_MASK as u32 + 1)
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
        let max = self.max_requests.load(Ordering::Acquire);
        loop {
            let mut best: Option<(usize, Word)> = None;
            for (i, w) in self.workers[..self.worker_limit()].iter().enumerate() {
                let cur = w.word();
                if cur.state != BUSY || cur.queued >= extra || cur.assigned >= ASSIGNED_MAX || (max > 0 && cur.assigned >= max) {
                    continue;
                }
                if best.is_none_or(|(_, b)| cur.queued < b.queued) {
                    best = Some((i, cur));
                }
            }
            let (i, cur) = best?;
            let next = Word { assigned: cur.assigned + 1, queued: cur.queued + 1, ..cur };
            if self.workers[i].cas(cur, next) {
                return Some(Claim { pool: self, index: i as u32, epoch: cur.epoch, pipelined: false, shared: true, done: false });
            }
        }
    }

    /// Workers that exist (idle, busy, or finishing).
    pub fn live_workers(&self) -> u32 {
        self.workers[..self.worker_limit()].iter().filter(|w| w.load().1 != EMPTY).count() as u32
    }

    /// Wake up to `n` requests waiting for a worker.
    ///
    /// Only sleepers (`begin_sleeping`, then `wait_idle`) block on the futex,
    /// so without any the wake-up syscall is skipped (a parked lighttpd
    /// request never sleeps). SeqCst on `idle_seq` here and on `sleepers` in
    /// `begin_sleeping` orders the two: either this sees the new sleeper, or
    /// the sleeper's `futex_wait` sees `idle_seq` moved past what it read
    /// and does not block.
    pub fn notify_idle(&self, n: i32) {
        self.idle_seq.fetch_add(1, Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            sys::futex_wake(&self.idle_seq, n);
        }
    }

    /// Join the queue: false when it is full (the caller answers 503).
    pub fn enter_queue(&self) -> bool {
        let limit = self.queue_limit.load(Ordering::Acquire);
        let prev = self.waiting.fetch_add(1, Ordering::AcqRel);
        if prev >= limit {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    pub fn leave_queue(&self) {
        let _ = self.waiting.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| v.checked_sub(1));
    }

    /// The fairness rule: a request that has not waited yet may take a
    /// worker (claim or backlog place) only when it cannot take one a
    /// sleeping request was woken for, that is when the pool has more free
    /// places than requests sleep in its queue. Otherwise the release that
    /// woke the oldest sleeper would often be taken by a newcomer (barging),
    /// and the sleeper would sleep again: that, not throughput, made the
    /// tail. A count above `waiting` is stale (the slot was given to a new
    /// pool, which resets `waiting` only), not a queue, and is ignored.
    pub fn newcomer_may_take(&self) -> bool {
        let sleepers = self.sleepers.load(Ordering::Acquire);
        sleepers == 0 || sleepers > self.waiting.load(Ordering::Acquire) || self.free_places() > sleepers
    }

    /// Places a request could take right now: idle workers, and free places
    /// in the backlogs `enqueue` would use (or the shares `share` would give).
    fn free_places(&self) -> u32 {
        let max = self.max_requests.load(Ordering::Acquire);
        let now = monotonic_ms();
        let extra = self.requests_per_worker() - 1;
        let mut n = 0;
        for w in &self.workers[..self.worker_limit()] {
            let cur = w.word();
            if max > 0 && cur.assigned >= max {
                continue;
            }
            if cur.state == IDLE {
                n += 1;
            } else if cur.state == BUSY && extra > 0 {
                n += extra.saturating_sub(cur.queued);
            } else if cur.state == BUSY
                && cur.queued < PIPELINE_DEPTH
                && now.wrapping_sub(w.current_since_ms.load(Ordering::Acquire)) < PIPELINE_WINDOW_MS
            {
                n += PIPELINE_DEPTH - cur.queued;
            }
        }
        n
    }

    /// The request is about to sleep for the first time (it is in the queue).
    pub fn begin_sleeping(&self) {
        self.sleepers.fetch_add(1, Ordering::SeqCst);
    }

    /// The request stopped looking for a worker (got one, or gave up).
    pub fn end_sleeping(&self) {
        let _ = self.sleepers.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| v.checked_sub(1));
    }

    /// Sleep until a worker may have become idle (or `timeout`). Read
    /// `idle_seq` before the failed `claim` and pass it as `seen`, so a
    /// release in between is never missed.
    pub fn wait_idle(&self, seen: u32, timeout: Duration) {
        sys::futex_wait(&self.idle_seq, seen, timeout);
    }
}

/// The shared mapping. It is never unmapped: it lives as long as the process
/// (and its forks) that created it, across module reloads; copies made with
/// `from_raw` or `clone` merely alias it.
#[derive(Clone)]
pub struct Scoreboard {
    base: *mut u8,
    raw: RawScoreboard,
}

/// What it takes to find the scoreboard again: in Apache's process record
/// across module reloads, and (fd and shape) on the exec'd supervisor's
/// command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawScoreboard {
    pub ptr: *mut u8,
    pub slots: u32,
    /// Worker entries per slot.
    pub workers: u32,
    /// The memfd behind the mapping (close-on-exec; the supervisor gets a copy).
    pub fd: i32,
}

// SAFETY: the mapping is only ever accessed through atomics, and it outlives
// every Scoreboard value (it is never unmapped).
unsafe impl Send for Scoreboard {}
// SAFETY: as above; `&PoolSlot` only exposes atomics.
unsafe impl Sync for Scoreboard {}

impl Scoreboard {
    /// A fresh, zeroed scoreboard of `slots` pools of up to `workers` workers
    /// each (clamped to 1..=MAX_POOL_WORKERS).
    pub fn create(slots: u32, workers: u32) -> io::Result<Scoreboard> {
        let workers = workers.clamp(1, MAX_POOL_WORKERS);
        let len = Self::byte_len(slots, workers)?;
        let fd = sys::memfd_sized(c"sufcgi-scoreboard", len as u64)?;
        let sb = Self::map(fd.as_raw_fd(), slots, workers, len)?;
        // The fd is kept for the life of the process, like the mapping.
        let _ = fd.into_raw_fd();
        Ok(sb)
    }

    /// Maps the scoreboard another process created (the exec'd supervisor),
    /// checking that the memfd is as large as its shape says.
    pub fn attach(fd: i32, slots: u32, workers: u32) -> io::Result<Scoreboard> {
        if workers == 0 || workers > MAX_POOL_WORKERS {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "scoreboard: bad worker count"));
        }
        let len = Self::byte_len(slots, workers)?;
        if sys::fstat(fd)?.size != len as u64 || !sys::size_sealed(fd) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "scoreboard: size does not match its shape, or is not sealed"));
        }
        Self::map(fd, slots, workers, len)
    }

    fn byte_len(slots: u32, workers: u32) -> io::Result<usize> {
        if slots == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "scoreboard needs at least one slot"));
        }
        (slots as usize)
            .checked_mul(Self::stride_of(workers))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "scoreboard too large"))
    }

    fn stride_of(workers: u32) -> usize {
        SLOT_HEADER + workers as usize * std::mem::size_of::<WorkerSlot>()
    }

    fn map(fd: i32, slots: u32, workers: u32, len: usize) -> io::Result<Scoreboard> {
        // SAFETY: a shared mapping of `len` bytes of our own memfd with no
        // address hint; result checked against MAP_FAILED. Pages are only
        // backed once touched, so unused slots cost address space, not memory.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_NORESERVE,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // A new memfd reads as zeros, and all-zero atomics are valid zeros.
        Ok(Scoreboard { base: p as *mut u8, raw: RawScoreboard { ptr: p as *mut u8, slots, workers, fd } })
    }

    /// Rebuild from raw parts (the glue keeps them across Apache's module reload).
    ///
    /// # Safety
    /// `raw` must come from `as_raw` of a Scoreboard made by `create` or
    /// `attach` in this process or an ancestor it was forked from; the
    /// mapping must still exist.
    pub unsafe fn from_raw(raw: RawScoreboard) -> Scoreboard {
        Scoreboard { base: raw.ptr, raw }
    }

    pub fn as_raw(&self) -> RawScoreboard {
        self.raw
    }

    pub fn len(&self) -> u32 {
        self.raw.slots
    }

    pub fn is_empty(&self) -> bool {
        self.raw.slots == 0
    }

    /// Worker entries per slot: the most workers any pool can have.
    pub fn worker_capacity(&self) -> u32 {
        self.raw.workers
    }

    /// What to tell the host when its MaxWorkers ceiling outgrew the
    /// scoreboard (raised by a graceful restart; the mapping is sized once).
    pub fn capacity_note(&self, ceiling: u32) -> Option<String> {
        let want = ceiling.min(MAX_POOL_WORKERS);
        (want > self.raw.workers).then(|| {
            format!(
                "SuFcgiCeiling MaxWorkers {ceiling}: pools keep at most {} workers each until the server is fully restarted (the scoreboard is sized at start)",
                self.raw.workers
            )
        })
    }

    pub fn slot(&self, index: u32) -> Option<&PoolSlot> {
        if index >= self.raw.slots {
            return None;
        }
        let stride = Self::stride_of(self.raw.workers);
        // SAFETY: index < slots, so the slot's `stride` bytes lie inside the
        // live mapping, which is 64-byte aligned (page-aligned base, stride a
        // multiple of 64). The slice-to-DST cast carries the number of worker
        // entries as the slot's length. PoolSlot is made of atomics, so shared
        // references across processes are sound.
        Some(unsafe {
            let first = self.base.add(index as usize * stride) as *const WorkerSlot;
            &*(std::ptr::slice_from_raw_parts(first, self.raw.workers as usize) as *const PoolSlot)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(shares.iter().all(|c| c.shared && !c.pipelined));
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
        assert!(queued.iter().all(|c| c.pipelined && c.index == 0 && c.epoch == 1));
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
                p.wait_idle(seen, Duration::from_secs(5));
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
}
