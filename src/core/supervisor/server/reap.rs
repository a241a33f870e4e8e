//! Workers that ended: their scoreboard entries and sockets are cleared,
//! their end is logged and counted, and a crash at start feeds the pool's
//! backoff (`worker_policy::Backoff` decides; this carries it out).

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::super::log::log_error;
use super::super::pools::Worker;
use super::super::worker_policy::{self, CrashVerdict, StopReason, CRASH_BURST};
use super::{customer, has_pending_connection, unlink_ours, Server};
use crate::core::scoreboard::{pool_state, worker_state};
use crate::core::sys;

impl Server {
    pub(super) fn reap(&mut self) {
        loop {
            let (pid, how) = match sys::try_wait(-1) {
                Ok(Some(x)) => x,
                Ok(None) => break,
                Err(e) => {
                    log_error!("waitpid failed: {e}");
                    break;
                }
            };
            let Some((id, index, worker)) = self.pools.remove_worker(pid) else { continue };
            let clean = matches!(how, sys::ExitKind::Exited(0));
            let signal = match how {
                sys::ExitKind::Signaled(n) => Some(n),
                sys::ExitKind::Exited(_) => None,
            };
            self.worker_gone(id, index, worker, &how.to_string(), clean, signal);
        }
    }

    /// Bookkeeping after a worker of pool `id` exited (`index`: its entry,
    /// None if it was already draining).
    /// `clean`: it exited with status 0 (for the status page's counters);
    /// `signal`: the signal that ended it, if one did.
    pub(super) fn worker_gone(&mut self, id: u64, index: Option<u32>, mut worker: Worker, how: &str, clean: bool, signal: Option<i32>) {
        let now = Instant::now();
        self.drain_stderr(id, &mut worker);
        // The kernel's OOM killer ended it: a memory stop, even if the failed
        // request it was serving was noticed first ("retired").
        let oom = self.cg_worker_gone(id, &mut worker).filter(|_| worker_policy::oom_is_why(worker.stopping.as_ref().map(|s| s.reason)));
        if let (Some(st), Some(_)) = (worker.stopping.as_mut(), &oom) {
            st.reason = StopReason::Memory;
        }
        let mut served = 0;
        let mut accepted = false;
        let mut sibling_started = false;
        if let (Some(index), Some(slot)) = (index, self.pools.get(id).and_then(|p| self.slot(p.slot))) {
            let ws = &slot.workers[index as usize];
            served = ws.requests.load(Ordering::Acquire);
            // A connection still pending on its socket was never accepted:
            // say so before closing the socket resets it, so the request
            // that made it can tell "never reached the app" from a crash mid-request.
            let pending = has_pending_connection(&worker.listener);
            if pending {
                ws.unaccepted_epoch.store(worker.epoch, Ordering::Release);
            }
            // Given requests and none of them left waiting: it took one.
            accepted = ws.assigned() > 0 && !pending;
            sibling_started = slot.workers.iter().enumerate().any(|(i, w)| {
                i != index as usize && w.pid.load(Ordering::Acquire) != 0 && (w.requests.load(Ordering::Acquire) > 0 || w.assigned() > 0)
            });
            let (epoch, _) = ws.load();
            ws.set(epoch.wrapping_add(1), worker_state::EMPTY);
            ws.pid.store(0, Ordering::Release);
        }
        unlink_ours(&worker.socket_path, worker.socket_id);
        drop(worker.listener);
        let lived = now.saturating_duration_since(worker.started);
        let limits = self.pools.get(id).map(|p| p.limits).unwrap_or(crate::core::limits::Limits::DEFAULT);
        let exit = match (&worker.stopping, &oom) {
            (_, Some(m)) => format!("worker pid {} {how} after {} ms: the kernel ended it for memory ({})", worker.pid, lived.as_millis(), m.limit),
            (Some(st), None) => format!("worker pid {} stopped ({}): {how}", worker.pid, customer::stop_detail(st.reason, &limits)),
            (None, None) => format!("worker pid {} {how} after {} ms", worker.pid, lived.as_millis()),
        };
        self.event(id, &exit);
        self.record_exit(id, &exit);
        let stopping = self.stopping;
        let Some(pool) = self.pools.get_mut(id) else { return };
        worker_policy::counted(worker.stopping.as_ref().map(|s| s.reason), oom.is_some(), stopping, clean).count_in(&mut pool.stopped);
        if pool.processes() == 0 {
            pool.empty_since = Some(now);
        }
        if stopping || worker.stopping.is_some() {
            self.balance(id);
            return;
        }
        // A crash at start: dead before it took any connection. A worker
        // that accepted a request (however soon it was killed) or served and
        // then exited on its own is not one, nor one killed from outside
        // while a sibling serves.
        let verdict = if worker_policy::killed_from_outside(signal, oom.is_some(), sibling_started) {
            CrashVerdict::KilledFromOutside
        } else {
            pool.backoff.worker_ended(lived, served, accepted, now)
        };
        match verdict {
            CrashVerdict::Started | CrashVerdict::BackingOff | CrashVerdict::KilledFromOutside => {}
            // Not a burst yet: start another at once (balance, below).
            CrashVerdict::Restart { streak } => self.event(
                id,
                &format!(
                    "worker crashed within {} ms of its start, before taking a request; starting another ({streak} of {CRASH_BURST} such crashes in a row back the pool off)",
                    lived.as_millis()
                ),
            ),
            // A burst: one backoff step per crash, one log line per step.
            CrashVerdict::BackOff { delay } => {
                let (slot_idx, live) = (pool.slot, pool.live());
                if let Some(slot) = self.slot(slot_idx) {
                    if live == 0 {
                        slot.backoff_until.store(sys::monotonic_secs().saturating_add(delay.as_secs() as u32), Ordering::Release);
                        slot.state.store(pool_state::BACKOFF, Ordering::Release);
                    }
                }
                self.event(id, &format!("worker crashed within {} ms of its start; backing off, next start in {} s", lived.as_millis(), delay.as_secs()));
            }
        }
        // Waiters re-check: a worker may be needed, or the pool is backing off.
        if let Some(slot) = self.pools.get(id).and_then(|p| self.slot(p.slot)) {
            slot.notify_idle(i32::MAX);
        }
        self.balance(id);
    }
}
