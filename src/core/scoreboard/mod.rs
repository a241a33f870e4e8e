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
//!
//! A server process may keep its connection to a worker between requests
//! (`PARKED`, `core::dispatch`): the entry says which process holds it, and
//! any other process may take the worker over at once, ringing the holder's
//! doorbell (`Doorbell`, a futex word per process after the slots) so that
//! it closes the connection the worker is reading. Claiming lives in
//! claim.rs.

mod claim;
pub use claim::{Claim, Ended, Via};

use crate::core::limits::MAX_POOL_WORKERS;
use crate::core::sys;
use std::io;
use std::os::fd::{AsRawFd, IntoRawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

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
    /// Serving nothing, but a server process (`WorkerSlot::holder`) keeps a
    /// connection open to it, which the worker reads for its next request.
    /// That process claims it again without a connect; any other may take
    /// it over (`PoolSlot::take_over`) and has the holder close it. To the
    /// supervisor it is idle.
    pub const PARKED: u32 = 4;
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
    /// While PARKED: the doorbell number (`Scoreboard::doorbell`) of the
    /// process holding the connection. Written before the entry becomes
    /// PARKED, by the only process that has it BUSY.
    pub holder: AtomicU32,
    _pad: [u32; 6],
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

    /// Whether the entry is exactly as `word` (from `Claim::park`) says.
    pub fn is_word(&self, word: u64) -> bool {
        self.word.load(Ordering::Acquire) == word
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
    /// Requests answered 503 by the dispatch (`core::dispatch`): the queue
    /// was full or timed out, or the app is backing off.
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

impl PoolSlot {
    fn worker_limit(&self) -> usize {
        (self.max_workers.load(Ordering::Acquire) as usize).min(self.workers.len())
    }

    /// Requests one worker may be given at once (1 until the app was asked).
    pub fn requests_per_worker(&self) -> u32 {
        self.per_worker.load(Ordering::Acquire).clamp(1, QUEUED_MASK as u32 + 1)
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
            if cur.state == IDLE || cur.state == PARKED {
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

    /// Sleep until a worker may have become idle (or `until`). Read
    /// `idle_seq` before the failed `claim` and pass it as `seen`, so a
    /// release in between is never missed.
    pub fn wait_idle(&self, seen: u32, until: Instant) {
        sys::futex_wait(&self.idle_seq, seen, until.saturating_duration_since(Instant::now()));
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

    /// The slots, then the doorbells.
    fn byte_len(slots: u32, workers: u32) -> io::Result<usize> {
        if slots == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "scoreboard needs at least one slot"));
        }
        (slots as usize)
            .checked_mul(Self::stride_of(workers))
            .and_then(|n| n.checked_add(DOORBELLS as usize * std::mem::size_of::<Doorbell>()))
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

    /// Doorbell `n` (1-based, as `WorkerSlot::holder` names it).
    pub fn doorbell(&self, n: u32) -> Option<&Doorbell> {
        if n == 0 || n > DOORBELLS {
            return None;
        }
        let at = self.raw.slots as usize * Self::stride_of(self.raw.workers) + (n as usize - 1) * std::mem::size_of::<Doorbell>();
        // SAFETY: byte_len put DOORBELLS doorbells right after the slots, so
        // this one lies inside the mapping, 4-byte aligned (the slots' end is
        // 64-byte aligned, a doorbell 8 bytes); it is made of atomics.
        Some(unsafe { &*(self.base.add(at) as *const Doorbell) })
    }

    /// A doorbell for process `pid`, which keeps connections: a free one,
    /// else one whose process is gone (it died without giving it back). None
    /// when all are taken (that process then keeps no connections).
    pub fn claim_doorbell(&self, pid: u32) -> Option<u32> {
        // A free one (or one a dead process with our pid left) first: taking
        // over a dead process's costs a kill(2) per entry looked at.
        for pass in 0..2 {
            for n in 1..=DOORBELLS {
                let bell = self.doorbell(n)?;
                let cur = bell.pid.load(Ordering::Acquire);
                let free = cur == 0 || cur == pid || (pass == 1 && !sys::pid_alive(cur as libc::pid_t));
                if free && bell.pid.compare_exchange(cur, pid, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                    return Some(n);
                }
            }
        }
        None
    }

    /// Process `pid` gives doorbell `n` back (it exits).
    pub fn release_doorbell(&self, n: u32, pid: u32) {
        if let Some(bell) = self.doorbell(n) {
            let _ = bell.pid.compare_exchange(pid, 0, Ordering::AcqRel, Ordering::Acquire);
        }
    }

    /// Tell the holder of doorbell `n` that a worker it parked was taken over.
    pub fn ring(&self, n: u32) {
        if let Some(bell) = self.doorbell(n) {
            bell.ring.fetch_add(1, Ordering::SeqCst);
            sys::futex_wake(&bell.ring, 1);
        }
    }
}

/// Doorbells: as many server processes can keep connections at once (a
/// process claims one when it starts; prefork children and the children of
/// an older generation during a graceful restart count too).
pub const DOORBELLS: u32 = 4096;

/// A server process's doorbell: rung by a process that took over a worker
/// it parked, so its keeper closes the connection that worker is reading.
#[repr(C)]
pub struct Doorbell {
    /// The process it belongs to (0: free).
    pub pid: AtomicU32,
    /// Futex word, bumped by each ring.
    pub ring: AtomicU32,
}

#[cfg(test)]
mod tests;
