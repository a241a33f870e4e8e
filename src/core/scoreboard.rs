//! Per-pool counters shared between the server children and the supervisor.
//!
//! The privileged parent maps it (anonymous, shared) before forking anything,
//! so every child and the supervisor see the same pages. Children count the
//! requests they have in flight; the supervisor publishes worker counts and
//! decides from both whether a spawn hint is worth a new worker.
//! Only atomics live here: no pointers, nothing a child could use to steer
//! the supervisor beyond a hint it re-checks anyway.

use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// One pool's counters; exactly one cache line.
#[repr(C, align(64))]
pub struct Slot {
    /// Bumped by the supervisor each time the slot is given to a new pool, so
    /// a hint for an older pool in the same slot is ignored.
    pub generation: AtomicU32,
    /// Requests children are relaying to the pool right now.
    pub inflight: AtomicU32,
    /// Live workers (maintained by the supervisor).
    pub workers: AtomicU32,
    /// The pool's clamped maximum (maintained by the supervisor).
    pub max_workers: AtomicU32,
    /// Requests ever entered (statistics).
    pub requests: AtomicU64,
    /// Workers ever spawned for the pool (statistics).
    pub spawns: AtomicU32,
    _pad: [u8; 36],
}

const _: () = assert!(std::mem::size_of::<Slot>() == 64);

/// Decrements the slot's `inflight` when the request is over.
pub struct InflightGuard<'a> {
    slot: &'a Slot,
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        // Saturating: a slot handed to a new pool keeps counting old guards down,
        // and must never wrap to 4 billion.
        let _ = self.slot.inflight.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| v.checked_sub(1));
    }
}

impl Slot {
    /// Child side: count one request in flight; the guard decrements on drop.
    /// Returns whether the pool looks saturated (inflight > workers && workers <
    /// max_workers), i.e. the caller should send a spawn hint.
    pub fn enter(&self) -> (InflightGuard<'_>, bool) {
        let inflight = self.inflight.fetch_add(1, Ordering::AcqRel).saturating_add(1);
        self.requests.fetch_add(1, Ordering::Relaxed);
        let workers = self.workers.load(Ordering::Acquire);
        let max = self.max_workers.load(Ordering::Acquire);
        (InflightGuard { slot: self }, inflight > workers && workers < max)
    }

    /// Supervisor side: whether the counters still ask for one more worker.
    pub fn wants_worker(&self) -> bool {
        let inflight = self.inflight.load(Ordering::Acquire);
        let workers = self.workers.load(Ordering::Acquire);
        inflight > workers && workers < self.max_workers.load(Ordering::Acquire)
    }
}

/// A shared anonymous mapping of `nslots` slots. The mapping is never unmapped:
/// it lives as long as the process (and its forks) that created it, across
/// module reloads; copies made with `from_raw` merely alias it.
pub struct Scoreboard {
    ptr: *mut Slot,
    nslots: u32,
}

// SAFETY: the mapping is only ever accessed through atomics, and it outlives
// every Scoreboard value (it is never unmapped).
unsafe impl Send for Scoreboard {}
// SAFETY: as above; `&Slot` only exposes atomics.
unsafe impl Sync for Scoreboard {}

impl Scoreboard {
    pub fn create(nslots: u32) -> io::Result<Scoreboard> {
        if nslots == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "scoreboard needs at least one slot"));
        }
        let len = (nslots as usize)
            .checked_mul(std::mem::size_of::<Slot>())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "scoreboard too large"))?;
        // SAFETY: anonymous shared mapping with no address hint; result checked against MAP_FAILED.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // Anonymous mappings are zero-filled, and all-zero atomics are valid zeros.
        Ok(Scoreboard { ptr: p as *mut Slot, nslots })
    }

    /// Rebuild from raw parts (the glue keeps ptr+len across Apache's module reload).
    ///
    /// # Safety
    /// `ptr` and `nslots` must come from `as_raw` of a Scoreboard made by `create`
    /// in this process or an ancestor it was forked from; the mapping must still exist.
    pub unsafe fn from_raw(ptr: *mut u8, nslots: u32) -> Scoreboard {
        Scoreboard { ptr: ptr as *mut Slot, nslots }
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

    pub fn slot(&self, index: u32) -> Option<&Slot> {
        if index >= self.nslots {
            return None;
        }
        // SAFETY: index < nslots, so the slot lies inside the live mapping; Slot is
        // made of atomics, so shared references across processes are sound.
        Some(unsafe { &*self.ptr.add(index as usize) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enter_exit_counts() {
        let sb = Scoreboard::create(4).unwrap();
        assert!(sb.slot(4).is_none());
        let s = sb.slot(1).unwrap();
        s.workers.store(1, Ordering::Release);
        s.max_workers.store(2, Ordering::Release);
        let (g1, sat1) = s.enter();
        assert!(!sat1, "1 in flight on 1 worker is not saturated");
        let (g2, sat2) = s.enter();
        assert!(sat2, "2 in flight on 1 of 2 workers is saturated");
        assert!(s.wants_worker());
        assert_eq!(s.inflight.load(Ordering::Acquire), 2);
        assert_eq!(s.requests.load(Ordering::Acquire), 2);
        drop(g1);
        drop(g2);
        assert_eq!(s.inflight.load(Ordering::Acquire), 0);
        s.workers.store(2, Ordering::Release);
        let (_g, _) = s.enter();
        let (_g2, sat) = s.enter();
        let (_g3, sat3) = s.enter();
        assert!(!sat && !sat3, "at max_workers nothing is saturated");
        // The other slots are untouched.
        assert_eq!(sb.slot(0).unwrap().requests.load(Ordering::Acquire), 0);
    }

    #[test]
    fn guard_saturates_at_zero() {
        let sb = Scoreboard::create(1).unwrap();
        let s = sb.slot(0).unwrap();
        let (g, _) = s.enter();
        s.inflight.store(0, Ordering::Release); // slot reset under a live guard
        drop(g);
        assert_eq!(s.inflight.load(Ordering::Acquire), 0);
    }

    #[test]
    fn shared_across_fork() {
        let sb = Scoreboard::create(2).unwrap();
        // SAFETY: the child only touches atomics and exits with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            sb.slot(1).unwrap().spawns.store(7, Ordering::Release);
            // SAFETY: leaving the forked test child without running destructors.
            unsafe { libc::_exit(0) };
        }
        let mut st = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut st, 0) };
        assert_eq!(sb.slot(1).unwrap().spawns.load(Ordering::Acquire), 7);
        let (p, n) = sb.as_raw();
        // SAFETY: same mapping, same process.
        let again = unsafe { Scoreboard::from_raw(p, n) };
        assert_eq!(again.slot(1).unwrap().spawns.load(Ordering::Acquire), 7);
    }
}
