//! The event loop's hooks into per-owner cgroups (../cgroup.rs does the
//! work): a new worker's confinement, what a reaped worker's group says,
//! signals to whole groups, limits after a graceful restart, and the
//! status page's figures.

use std::collections::HashMap;

use super::super::cgroup::{MemoryKill, Prepared};
use super::super::pools::{Pool, Worker};
use super::super::protocol::PoolStatus;
use super::super::protocol_usage::{OwnerUsage, PoolUsage};
use super::Server;
use crate::core::owner_limits::OwnerLimits;

impl Server {
    /// The cgroup (or fallback limits) for a new worker of pool `id`; None:
    /// it must not start (`SuFcgiCgroups required` and no group), logged.
    pub(super) fn confine_worker(&mut self, id: u64) -> Option<Prepared> {
        let pool = self.pools.get(id)?;
        let (uid, user, limits, memory) = (pool.uid, pool.user.clone(), pool.owner_limits, pool.limits.memory_limit);
        match self.cgroups.prepare(uid, &user, &limits, memory) {
            Ok(p) => Some(p),
            Err(why) => {
                self.event(id, &format!("no worker started: {why}"));
                None
            }
        }
    }

    /// A worker was reaped: its group's remnants are killed and the group
    /// removed. Some: the kernel's OOM killer ended (a process of) it.
    pub(super) fn cg_worker_gone(&mut self, id: u64, worker: &mut Worker) -> Option<MemoryKill> {
        let g = worker.cgroup.take()?;
        let mut totals = self.pools.get(id).map(|p| p.cg_totals).unwrap_or_default();
        let kill = self.cgroups.worker_gone(g, &mut totals);
        if let Some(p) = self.pools.get_mut(id) {
            p.cg_totals = totals;
        }
        kill
    }

    /// Everything in the cgroup of worker `pid` of pool `id` gets `sig` too
    /// (what it started, `setsid()` or not).
    pub(super) fn cg_signal_pid(&self, id: u64, pid: libc::pid_t, sig: libc::c_int) {
        let Some(p) = self.pools.get(id) else { return };
        if let Some(g) = p.workers.iter().flatten().chain(p.draining.iter()).find(|w| w.pid == pid).and_then(|w| w.cgroup.as_ref()) {
            self.cgroups.signal(g, sig);
        }
    }

    pub(super) fn cg_signal_pid_any(&self, pid: libc::pid_t, sig: libc::c_int) {
        if let Some(id) = self.pools.pool_of_pid(pid) {
            self.cg_signal_pid(id, pid, sig);
        }
    }

    /// After a graceful restart: each pool's owner limits through its vhost
    /// in the new configuration, applied to the owner's group.
    pub(super) fn refresh_owner_limits(&mut self) {
        let Some(cfg) = self.configs.back() else { return };
        let mut changed: HashMap<u32, OwnerLimits> = HashMap::new();
        for id in self.pools.ids() {
            let Some(p) = self.pools.get(id) else { continue };
            let Some(vh) = cfg.vhosts.iter().find(|v| v.name == p.vhost) else { continue };
            let now = cfg.owner_limits.with(&vh.owner_overrides);
            if now != p.owner_limits {
                changed.insert(p.uid, now);
                if let Some(p) = self.pools.get_mut(id) {
                    p.owner_limits = now;
                }
            }
        }
        for (uid, l) in changed {
            self.cgroups.update_limits(uid, &l);
        }
    }

    pub(super) fn pool_usage(&self, p: &Pool) -> PoolUsage {
        let groups = p.workers.iter().flatten().chain(p.draining.iter()).filter_map(|w| w.cgroup.as_ref());
        self.cgroups.pool_usage(groups, &p.cg_totals)
    }

    /// The owners of the listed pools (the server view: and every owner
    /// with figures), with their usage.
    pub(super) fn owners_status(&self, pools: &[PoolStatus], only_uid: Option<u32>) -> Vec<OwnerUsage> {
        let mut uids: Vec<u32> = pools.iter().map(|p| p.uid).collect();
        if only_uid.is_none() {
            uids.extend(self.cgroups.known_owners());
        }
        uids.sort_unstable();
        uids.dedup();
        uids.retain(|u| only_uid.is_none_or(|o| o == *u));
        uids.into_iter()
            .map(|uid| {
                let pool = self.pools.pools().find(|p| p.uid == uid);
                let limits = pool.map_or(OwnerLimits::DEFAULT, |p| p.owner_limits);
                let user = pools.iter().find(|p| p.uid == uid).map(|p| p.user.clone()).or_else(|| pool.map(|p| p.user.clone())).unwrap_or_default();
                self.cgroups.owner_usage(uid, user, limits)
            })
            .collect()
    }
}
