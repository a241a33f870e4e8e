//! The process manager: the periodic look at every pool, spawning workers
//! into free entries, stopping them (TERM, KILL after the grace), retiring
//! and forgetting pools. Whether to spawn or stop, and why, is
//! `worker_policy`'s to decide; this gathers its figures and acts.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::super::log::{log_error, log_notice};
use super::super::pools::{Pool, Stopping, Worker};
use super::super::spawn::{spawn_worker, Confinement};
use super::super::worker_policy::{self, Ceilings, Demand, InService, PoolFacts, Seen, StopReason};
use super::{customer, has_pending_connection, rss_bytes, signal_group, socket_identity, Server};
use crate::core::latency;
use crate::core::request::worker_socket_path;
use crate::core::scoreboard::{pool_state, worker_state};
use crate::core::sys;

/// A worker socket is claimed by one request at a time; the backlog only
/// holds the connection made while the worker is still starting.
const WORKER_BACKLOG: i32 = 16;

impl Server {
    pub(super) fn tick_interval(&self) -> std::time::Duration {
        worker_policy::tick_interval(self.pools.pools().any(|p| p.processes() > 0 || p.backoff.active() || p.retiring))
    }

    pub(super) fn tick(&mut self) {
        let now = Instant::now();
        let now_s = sys::monotonic_secs();
        for id in self.pools.ids() {
            let Some(pool) = self.pools.get_mut(id) else { continue };
            // Backoff over: try again.
            if pool.backoff.ends(now) {
                let slot_idx = pool.slot;
                if let Some(slot) = self.slot(slot_idx) {
                    if slot.state.load(Ordering::Acquire) == pool_state::BACKOFF {
                        slot.state.store(pool_state::ACTIVE, Ordering::Release);
                    }
                }
                self.spawn_into(id);
            }
            self.look_at_workers(id, now, now_s);
            self.reclassify(id, now);
            self.balance(id);
            let Some(pool) = self.pools.get(id) else { continue };
            if worker_policy::forget_pool(pool.processes(), pool.retiring, pool.empty_since, pool.backoff.active(), now) {
                self.forget_pool(id);
            }
        }
        self.cgroups.tick(now);
        self.customer_tick();
    }

    /// Stop what should stop (`worker_policy::stops`); escalate TERM to KILL
    /// after the grace period.
    pub(super) fn look_at_workers(&mut self, id: u64, now: Instant, now_s: u32) {
        let Some(pool) = self.pools.get(id) else { return };
        let Some(slot) = self.slot(pool.slot) else { return };
        // Where the kernel holds the limit (memory.max), it kills; else the watch.
        let memory_watch = pool.limits.memory_limit > 0 && !self.cgroups.kernel_memory();
        let to_kill: Vec<libc::pid_t> = pool
            .draining
            .iter()
            .filter(|w| w.stopping.as_ref().is_some_and(|st| worker_policy::kill_due(st.since, st.killed, now)))
            .map(|w| w.pid)
            .collect();
        let mut seen: Vec<(InService, libc::pid_t)> = Vec::with_capacity(pool.workers.len());
        for (i, w) in pool.workers.iter().enumerate() {
            let Some(w) = w else { continue };
            let ws = &slot.workers[i];
            let state = match ws.load().1 {
                worker_state::RETIRED => Seen::Retired,
                // A parked worker serves nothing: idle, for stopping it too
                // (its holder's kept connection then ends).
                worker_state::IDLE | worker_state::PARKED => Seen::Idle,
                _ => Seen::Busy,
            };
            let rss = if memory_watch && state != Seen::Retired { rss_bytes(w.pid, self.page_size) } else { None };
            let served = ws.requests.load(Ordering::Acquire);
            let idle_for = now_s.saturating_sub(ws.last_used.load(Ordering::Acquire));
            seen.push((InService { index: i as u32, seen: state, served, idle_for, rss }, w.pid));
        }
        let facts = PoolFacts { limits: pool.limits, retiring: pool.retiring, live: pool.live(), memory_watch };
        let workers: Vec<InService> = seen.iter().map(|(w, _)| *w).collect();
        let to_stop = worker_policy::stops(&facts, &workers);
        let limit = pool.limits.memory_limit;
        for s in to_stop.iter().filter(|s| s.reason == StopReason::Memory) {
            if let Some((w, pid)) = seen.iter().find(|(w, _)| w.index == s.index) {
                let rss = w.rss.unwrap_or(0);
                self.event(id, &format!("worker pid {pid} uses {} MiB, above SuFcgiMemoryLimit {} MiB", rss >> 20, limit >> 20));
            }
        }
        for pid in to_kill {
            let _ = signal_group(pid, libc::SIGKILL);
            self.cg_signal_pid(id, pid, libc::SIGKILL);
            if let Some(w) = self.pools.worker_mut(id, pid) {
                if let Some(st) = w.stopping.as_mut() {
                    st.killed = true;
                }
            }
        }
        for s in to_stop {
            self.stop_worker(id, s.index, s.reason, s.hard);
        }
    }

    /// Take worker `index` out of service (no request can claim it any more)
    /// and signal it: TERM (KILL after the grace period), or KILL at once.
    pub(super) fn stop_worker(&mut self, id: u64, index: u32, reason: StopReason, hard: bool) {
        let Some(pool) = self.pools.get(id) else { return };
        let mut served = 0;
        if let Some(slot) = self.slot(pool.slot) {
            let ws = &slot.workers[index as usize];
            served = ws.requests.load(Ordering::Acquire);
            // Whatever state it is in, move it to EMPTY with a new epoch, so a
            // request that still holds it cannot put it back.
            for _ in 0..8 {
                let (epoch, state) = ws.load();
                if state == worker_state::EMPTY || ws.retire_if(epoch, state).is_some() {
                    break;
                }
            }
        }
        let Some(w) = self.pools.get_mut(id).and_then(|p| p.workers.get_mut(index as usize)).and_then(|w| w.as_mut()) else {
            return;
        };
        let pid = w.pid;
        let sig = if hard { libc::SIGKILL } else { libc::SIGTERM };
        w.stopping = Some(Stopping { reason, since: Instant::now(), killed: hard, served });
        let _ = signal_group(pid, sig);
        self.cg_signal_pid(id, pid, sig);
        // Out of its entry: a replacement may start before it has exited.
        self.pools.drain(id, index);
        let detail = self.pools.get(id).map(|p| customer::stop_detail(reason, &p.limits)).unwrap_or_default();
        self.event(id, &format!("stopping worker pid {pid}: {detail}"));
    }

    pub(super) fn forget_pool(&mut self, id: u64) {
        self.forget_history(id);
        if let Some(pool) = self.pools.remove(id) {
            if let Some(slot) = self.slot(pool.slot) {
                slot.state.store(pool_state::FREE, Ordering::Release);
                // Cached references to this pool in server children now miss.
                slot.generation.fetch_add(1, Ordering::AcqRel);
                slot.notify_idle(i32::MAX);
            }
            log_notice!("pool {} removed ({})", pool.desc, if pool.retiring { "replaced by a newer version" } else { "unused" });
        }
    }

    /// Whether a worker of the pool has a connection it has not accepted yet:
    /// it is still starting, and waiting requests queue behind it.
    fn starting(&self, pool: &Pool) -> bool {
        let now = Instant::now();
        pool.workers
            .iter()
            .flatten()
            .any(|w| worker_policy::may_be_starting(now.saturating_duration_since(w.started)) && has_pending_connection(&w.listener))
    }

    /// Spawn what the pool needs now (`worker_policy::spawn_wanted`): up to
    /// its minimum, else one more worker for requests that are waiting.
    pub(super) fn balance(&mut self, id: u64) {
        if self.stopping {
            return;
        }
        loop {
            let Some(pool) = self.pools.get(id) else { return };
            let Some(slot) = self.slot(pool.slot) else { return };
            let demand = Demand {
                min_workers: pool.limits.min_workers,
                max_workers: pool.limits.max_workers,
                live: pool.live(),
                waiting: slot.waiting.load(Ordering::Acquire) as usize,
                idle: slot.workers[..pool.workers.len()].iter().filter(|w| matches!(w.load().1, worker_state::IDLE | worker_state::PARKED)).count(),
                starting: self.starting(pool),
                retiring: pool.retiring,
                backing_off: pool.backoff.active(),
            };
            if !worker_policy::spawn_wanted(&demand) || !self.spawn_into(id) {
                return;
            }
            if !demand.below_minimum() {
                return;
            }
        }
    }

    /// Forks one worker into the pool's first free entry (within the ceilings).
    pub(super) fn spawn_into(&mut self, id: u64) -> bool {
        let ceilings = self.ceilings();
        let Some(pool) = self.pools.get(id) else { return false };
        let Some(index) = pool.free_entry() else { return false };
        if !pool.exec.still_same() {
            // The app was replaced since this pool was checked: a newer pool
            // takes over (requests waiting here ask again), nothing is spawned.
            if !pool.retiring {
                self.retire_pool(id);
            }
            return false;
        }
        if worker_policy::room_for_worker(ceilings, self.pools.owner_workers(pool.uid), self.pools.total_workers()).is_err() {
            return false;
        }
        let Some(cg) = self.confine_worker(id) else { return false };
        let Some(pool) = self.pools.get(id) else { return false };
        let path = worker_socket_path(&pool.socket_prefix, index);
        let _ = sys::unlink_if_exists(&path);
        let fds = sys::unix_listen(&path, WORKER_BACKLOG, 0o666)
            .map_err(|e| format!("cannot create worker socket {}: {e}", path.display()))
            .and_then(|l| sys::pipe().map(|p| (l, p)).map_err(|e| format!("cannot create a stderr pipe: {e}")));
        let (listener, (read_end, write_end)) = match fds {
            Ok(x) => x,
            Err(e) => {
                log_error!("{e}");
                if let Some(g) = cg.group {
                    self.cgroups.abandon(g);
                }
                return false;
            }
        };
        let socket_id = socket_identity(&path);
        let _ = sys::set_nonblocking(read_end.as_raw_fd(), true);
        let join: Vec<RawFd> = cg.join.iter().map(|f| f.as_raw_fd()).collect();
        let confine = Confinement {
            join: &join,
            nproc: cg.nproc as u64,
            data_limit: if self.cgroups.kernel_memory() { 0 } else { pool.limits.memory_limit.saturating_mul(2) },
            slice_ns: if self.short_slices() { latency::Class::Interactive.slice_ns() } else { 0 },
        };
        let spawned = spawn_worker(&pool.exec, listener.as_raw_fd(), self.dev_null.as_raw_fd(), write_end.as_raw_fd(), &confine);
        drop(write_end);
        drop(cg.join);
        let pid = match spawned {
            Ok(pid) => pid,
            Err(e) => {
                if let Some(g) = cg.group {
                    self.cgroups.abandon(g);
                }
                let Some(pool) = self.pools.get_mut(id) else { return false };
                let delay = pool.backoff.fork_failed(Instant::now());
                log_error!("cannot fork a worker for pool {}: {e}; retrying in {} s", pool.desc, delay.as_secs());
                return false;
            }
        };
        let slot_idx = pool.slot;
        let mut epoch = 0;
        if let Some(slot) = self.slot(slot_idx) {
            let ws = &slot.workers[index as usize];
            epoch = ws.load().0.wrapping_add(1);
            let now_s = sys::monotonic_secs();
            ws.pid.store(pid as u32, Ordering::Release);
            ws.requests.store(0, Ordering::Release);
            ws.started.store(now_s, Ordering::Release);
            ws.last_used.store(now_s, Ordering::Release);
            // Claimable at once: the socket already listens, so a request
            // that claims it waits in its backlog until the app accepts.
            ws.set(epoch, worker_state::IDLE);
            slot.spawns.fetch_add(1, Ordering::AcqRel);
        }
        let worker = Worker {
            pid,
            epoch,
            started: Instant::now(),
            listener,
            socket_path: path,
            socket_id,
            stderr: Some(read_end),
            stderr_buf: Vec::new(),
            stopping: None,
            cgroup: cg.group,
            latency: latency::Watch::new(Instant::now()),
        };
        self.pools.add_worker(id, index, worker);
        if let Some(p) = self.pools.get_mut(id) {
            p.empty_since = None;
        }
        self.event(id, &format!("spawned worker pid {pid} (entry {index})"));
        if let Some(slot) = self.slot(slot_idx) {
            slot.notify_idle(i32::MAX);
        }
        true
    }

    /// `SuFcgiShortSlices` of the newest configuration.
    pub(super) fn short_slices(&self) -> bool {
        self.configs.back().is_none_or(|c| c.short_slices)
    }

    /// Give a worker that turned CPU-bound the kernel's default slice, and
    /// one that calmed down the short one again (core::latency). With the
    /// setting off, every worker keeps (or gets back) the default.
    fn reclassify(&mut self, id: u64, now: Instant) {
        let on = self.short_slices();
        let Some(pool) = self.pools.get_mut(id) else { return };
        for w in pool.workers.iter_mut().flatten() {
            let change = if !on {
                (w.latency.class != latency::Class::CpuBound).then(|| {
                    w.latency.class = latency::Class::CpuBound;
                    latency::Class::CpuBound
                })
            } else if w.latency.due(now) {
                sys::sched::demand_ns(w.pid).ok().and_then(|d| w.latency.observe(d, now))
            } else {
                None
            };
            if let Some(class) = change {
                let _ = latency::apply(w.pid, class);
            }
        }
    }

    /// The host's ceilings, from the newest configuration (none without one).
    pub(super) fn ceilings(&self) -> Ceilings {
        match self.configs.back() {
            Some(c) => Ceilings { per_owner: c.max_workers_per_owner, total: c.max_workers_total },
            None => Ceilings { per_owner: 0, total: 0 },
        }
    }

    /// A newer version replaced this pool: idle workers stop now, busy ones
    /// when their request is done (children release them as retired).
    pub(super) fn retire_pool(&mut self, id: u64) {
        let Some(pool) = self.pools.get_mut(id) else { return };
        pool.retiring = true;
        let slot_idx = pool.slot;
        if let Some(slot) = self.slot(slot_idx) {
            slot.state.store(pool_state::RETIRING, Ordering::Release);
            slot.notify_idle(i32::MAX);
        }
        self.event(id, "replaced by a newer version; old workers finish their requests");
        self.look_at_workers(id, Instant::now(), sys::monotonic_secs());
    }
}
