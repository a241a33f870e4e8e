//! Shared memory between server children and the supervisor: one slot per
//! pool, one entry per worker. This is how a request finds an idle worker
//! without asking the supervisor: it claims the entry with a compare-and-swap,
//! connects to that worker's own socket, and releases the entry afterwards.
//!
//! The privileged parent maps it (anonymous, shared) before forking anything,
//! so every child and the supervisor see the same pages. Only atomics live
//! here: no pointers, nothing a child could use to steer the supervisor beyond
//! hints the supervisor re-checks. A worker entry packs (epoch, state) into one
//! word so a child can never release an entry that the supervisor has since
//! given to a new worker.

use crate::core::limits::MAX_POOL_WORKERS;
use crate::core::sys;
use std::io;
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

fn pack(epoch: u32, state: u32) -> u64 {
    ((epoch as u64) << 32) | state as u64
}

fn unpack(w: u64) -> (u32, u32) {
    ((w >> 32) as u32, w as u32)
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
}

const _: () = assert!(std::mem::size_of::<WorkerSlot>() == 32);

impl WorkerSlot {
    /// (epoch, state).
    pub fn load(&self) -> (u32, u32) {
        unpack(self.word.load(Ordering::Acquire))
    }

    /// Supervisor side: publish a new state unconditionally.
    pub fn set(&self, epoch: u32, state: u32) {
        self.word.store(pack(epoch, state), Ordering::Release);
    }

    /// Move (epoch, from) → (epoch, to); false if anything changed meanwhile.
    pub fn transition(&self, epoch: u32, from: u32, to: u32) -> bool {
        self.word.compare_exchange(pack(epoch, from), pack(epoch, to), Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// Supervisor side: take an entry out of service (new epoch) if it is
    /// still in state `from`; returns the new epoch on success.
    pub fn retire_if(&self, epoch: u32, from: u32) -> Option<u32> {
        let next = epoch.wrapping_add(1);
        self.word
            .compare_exchange(pack(epoch, from), pack(next, EMPTY), Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| next)
    }
}

/// One pool: its limits as the supervisor clamped them, queue counters, and
/// its workers.
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
    _pad: [u32; 3],
    pub workers: [WorkerSlot; MAX_POOL_WORKERS as usize],
}

const _: () = assert!(std::mem::size_of::<PoolSlot>() == 64 + 32 * MAX_POOL_WORKERS as usize);

/// A worker claimed for one request. Dropping it without `release` or
/// `retire` retires the worker (the request did not end cleanly).
pub struct Claim<'a> {
    pool: &'a PoolSlot,
    pub index: u32,
    pub epoch: u32,
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
        if retiring || (max > 0 && served >= max) {
            w.transition(self.epoch, BUSY, RETIRED);
            return true;
        }
        w.last_used.store(sys::monotonic_secs(), Ordering::Release);
        if w.transition(self.epoch, BUSY, IDLE) {
            self.pool.notify_idle(1);
        }
        false
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
        (self.max_workers.load(Ordering::Acquire) as usize).min(MAX_POOL_WORKERS as usize)
    }

    /// Claim an idle worker, lowest index first (so high entries go idle and
    /// are reaped first).
    pub fn claim(&self) -> Option<Claim<'_>> {
        for (i, w) in self.workers[..self.worker_limit()].iter().enumerate() {
            let (epoch, state) = w.load();
            if state == IDLE && w.transition(epoch, IDLE, BUSY) {
                w.busy_since.store(sys::monotonic_secs(), Ordering::Release);
                return Some(Claim { pool: self, index: i as u32, epoch, done: false });
            }
        }
        None
    }

    /// Workers that exist (idle, busy, or finishing).
    pub fn live_workers(&self) -> u32 {
        self.workers[..MAX_POOL_WORKERS as usize].iter().filter(|w| w.load().1 != EMPTY).count() as u32
    }

    /// Wake up to `n` requests waiting for a worker.
    pub fn notify_idle(&self, n: i32) {
        self.idle_seq.fetch_add(1, Ordering::AcqRel);
        if self.waiting.load(Ordering::Acquire) > 0 {
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

    /// Sleep until a worker may have become idle (or `timeout`). Read
    /// `idle_seq` before the failed `claim` and pass it as `seen`, so a
    /// release in between is never missed.
    pub fn wait_idle(&self, seen: u32, timeout: Duration) {
        sys::futex_wait(&self.idle_seq, seen, timeout);
    }
}

/// The shared mapping. It is never unmapped: it lives as long as the process
/// (and its forks) that created it, across module reloads; copies made with
/// `from_raw` merely alias it.
pub struct Scoreboard {
    ptr: *mut PoolSlot,
    nslots: u32,
}

// SAFETY: the mapping is only ever accessed through atomics, and it outlives
// every Scoreboard value (it is never unmapped).
unsafe impl Send for Scoreboard {}
// SAFETY: as above; `&PoolSlot` only exposes atomics.
unsafe impl Sync for Scoreboard {}

impl Scoreboard {
    pub fn create(nslots: u32) -> io::Result<Scoreboard> {
        if nslots == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "scoreboard needs at least one slot"));
        }
        let len = (nslots as usize)
            .checked_mul(std::mem::size_of::<PoolSlot>())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "scoreboard too large"))?;
        // SAFETY: anonymous shared mapping with no address hint; result checked
        // against MAP_FAILED. Pages are only backed once touched, so unused
        // slots cost address space, not memory.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // Anonymous mappings are zero-filled, and all-zero atomics are valid zeros.
        Ok(Scoreboard { ptr: p as *mut PoolSlot, nslots })
    }

    /// Rebuild from raw parts (the glue keeps ptr+len across Apache's module reload).
    ///
    /// # Safety
    /// `ptr` and `nslots` must come from `as_raw` of a Scoreboard made by `create`
    /// in this process or an ancestor it was forked from; the mapping must still exist.
    pub unsafe fn from_raw(ptr: *mut u8, nslots: u32) -> Scoreboard {
        Scoreboard { ptr: ptr as *mut PoolSlot, nslots }
    }

    pub fn as_raw(&self) -> (*mut u8, u32) {
        (self.ptr as *mut u8, self.nslots)
    }

    pub fn len(&self) -> u32 {
        self.nslots
    }

    pub fn is_empty(&self) -> bool {
        self.nslots == 0
    }

    pub fn slot(&self, index: u32) -> Option<&PoolSlot> {
        if index >= self.nslots {
            return None;
        }
        // SAFETY: index < nslots, so the slot lies inside the live mapping;
        // PoolSlot is made of atomics, so shared references across processes are sound.
        Some(unsafe { &*self.ptr.add(index as usize) })
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
        let sb = Scoreboard::create(2).unwrap();
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
    fn dropped_claim_retires_the_worker() {
        let sb = Scoreboard::create(1).unwrap();
        let p = pool(&sb, 1);
        p.workers[0].set(4, IDLE);
        drop(p.claim().unwrap());
        assert_eq!(p.workers[0].load(), (4, RETIRED));
    }

    #[test]
    fn max_requests_recycles() {
        let sb = Scoreboard::create(1).unwrap();
        let p = pool(&sb, 1);
        p.max_requests.store(2, Ordering::Release);
        p.workers[0].set(1, IDLE);
        assert!(!p.claim().unwrap().release());
        assert!(p.claim().unwrap().release(), "second request reaches max_requests");
        assert_eq!(p.workers[0].load(), (1, RETIRED));
    }

    #[test]
    fn release_after_supervisor_replaced_the_worker_is_harmless() {
        let sb = Scoreboard::create(1).unwrap();
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
        let sb = Scoreboard::create(1).unwrap();
        let p = pool(&sb, 1);
        p.workers[0].set(1, IDLE);
        let c = p.claim().unwrap();
        p.state.store(pool_state::RETIRING, Ordering::Release);
        assert!(c.release());
        assert_eq!(p.workers[0].load(), (1, RETIRED));
    }

    #[test]
    fn supervisor_retire_if_only_takes_idle() {
        let sb = Scoreboard::create(1).unwrap();
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
    fn queue_is_bounded() {
        let sb = Scoreboard::create(1).unwrap();
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
        let sb = Scoreboard::create(1).unwrap();
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
        let sb = Scoreboard::create(3).unwrap();
        assert!(sb.slot(3).is_none());
        sb.slot(1).unwrap().spawns.store(7, Ordering::Release);
        assert_eq!(sb.slot(0).unwrap().spawns.load(Ordering::Acquire), 0);
        let (ptr, n) = sb.as_raw();
        // SAFETY: same mapping, same process.
        let again = unsafe { Scoreboard::from_raw(ptr, n) };
        assert_eq!(again.slot(1).unwrap().spawns.load(Ordering::Acquire), 7);
    }
}
