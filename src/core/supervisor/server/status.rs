//! The status report (`Request::Status`): every pool, or only the pools of
//! the owner the supervisor itself derives for a customer's directory, with
//! their workers, counters, history and the owners' cgroup figures. Read-only.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::super::pools::Pool;
use super::super::protocol::{PoolState, PoolStatus, StatusReply, WorkerState, WorkerStatus};
use super::{rss_bytes, Server};
use crate::core::identity::{self, Refusal, System};
use crate::core::latency;
use crate::core::request::PoolSpec;
use crate::core::scoreboard::{worker_state, PoolSlot};
use crate::core::sys;

impl Server {
    /// Every pool, or (with `dir`) only the pools of the owner the supervisor
    /// would give workers in `dir` on that vhost: the same rules as for a
    /// pool, derived here, never taken from the child. Read-only.
    pub(super) fn status(&self, generation: u64, vhost: u32, dir: Option<PathBuf>, userdir_user: Option<Vec<u8>>) -> StatusReply {
        let only_uid = match dir {
            None => None,
            Some(dir) => match self.status_owner(generation, vhost, dir, userdir_user) {
                Ok(uid) => Some(uid),
                Err(r) => return StatusReply::Refused { status: r.status, reason: r.reason },
            },
        };
        let now = Instant::now();
        let mut pools: Vec<PoolStatus> =
            self.pools.pools().filter(|p| only_uid.is_none_or(|u| p.uid == u)).map(|p| self.pool_status(p, now)).collect();
        pools.extend(self.refused_status(only_uid));
        pools.sort_by(|a, b| (a.uid, &a.vhost, &a.program, &a.workdir).cmp(&(b.uid, &b.vhost, &b.program, &b.workdir)));
        let owners = self.owners_status(&pools, only_uid);
        let mut isolation = self.cgroups.isolation();
        isolation.slices = latency::state_text(self.short_slices(), latency::kernel_has_slices()).to_string();
        StatusReply::Pools { pools, truncated: false, isolation, owners }
    }

    /// The uid whose pools a customer's status page in `dir` may list.
    fn status_owner(&self, generation: u64, vhost: u32, dir: PathBuf, userdir_user: Option<Vec<u8>>) -> Result<u32, Refusal> {
        let cfg = self
            .configs
            .iter()
            .find(|c| c.generation == generation)
            .ok_or_else(|| Refusal::new(500, format!("unknown configuration generation {generation}")))?;
        let vh = cfg
            .vhosts
            .get(vhost as usize)
            .ok_or_else(|| Refusal::new(500, format!("unknown vhost index {vhost} in generation {generation}")))?;
        if !identity::is_normal_absolute(&dir) {
            return Err(Refusal::forbidden(format!("status directory {} is not a normalized absolute path", dir.display())));
        }
        // resolve_owner looks at the vhost, and for ~user URLs at whether
        // the path lies in that user's home: the directory stands in for a program.
        let probe = PoolSpec {
            generation,
            vhost,
            kind: crate::core::request::AppKind::App,
            program: dir.clone(),
            args: Vec::new(),
            workdir: dir.clone(),
            config_files: Vec::new(),
            env: Vec::new(),
            limits: cfg.ceilings,
            restart_file: None,
            log_file: None,
            userdir_user,
        };
        let owner = identity::resolve_owner(cfg, vh, &probe, &self.accounts, &System)?;
        // Only that owner's own directory shows that owner's pools.
        let st = sys::lstat(&dir).map_err(|e| Refusal::forbidden(format!("cannot lstat status directory {}: {e}", dir.display())))?;
        if !st.is_dir() || st.uid != owner.uid {
            return Err(Refusal::forbidden(format!(
                "status directory {} is not a directory owned by uid {} (the site owner)",
                dir.display(),
                owner.uid
            )));
        }
        Ok(owner.uid)
    }

    fn pool_status(&self, p: &Pool, now: Instant) -> PoolStatus {
        let slot = self.slot(p.slot);
        let load = |f: fn(&PoolSlot) -> u32| slot.map_or(0, f);
        let mut workers = Vec::with_capacity(p.workers.len() + p.draining.len());
        for (i, w) in p.workers.iter().enumerate() {
            let Some(w) = w else { continue };
            let ws = slot.and_then(|s| s.workers.get(i));
            let state = match ws.map(|ws| ws.load().1) {
                Some(worker_state::BUSY) => WorkerState::Busy,
                Some(worker_state::RETIRED) => WorkerState::Retired,
                _ => WorkerState::Idle,
            };
            workers.push(WorkerStatus {
                pid: w.pid as u32,
                state,
                requests: ws.map_or(0, |ws| ws.requests.load(Ordering::Acquire)),
                rss: rss_bytes(w.pid, self.page_size).unwrap_or(0),
                age_secs: now.saturating_duration_since(w.started).as_secs().min(u32::MAX as u64) as u32,
            });
        }
        for w in &p.draining {
            workers.push(WorkerStatus {
                pid: w.pid as u32,
                state: WorkerState::Stopping,
                requests: w.stopping.as_ref().map_or(0, |s| s.served),
                rss: rss_bytes(w.pid, self.page_size).unwrap_or(0),
                age_secs: now.saturating_duration_since(w.started).as_secs().min(u32::MAX as u64) as u32,
            });
        }
        let state = if p.retiring {
            PoolState::Retiring
        } else if p.backoff.active() {
            PoolState::Backoff
        } else {
            PoolState::Active
        };
        PoolStatus {
            uid: p.uid,
            gid: p.gid,
            user: p.user.clone(),
            vhost: p.vhost.clone(),
            kind: p.kind,
            program: p.program.clone(),
            workdir: p.workdir.clone(),
            state,
            max_workers: p.limits.max_workers,
            waiting: load(|s| s.waiting.load(Ordering::Acquire)),
            spawns: load(|s| s.spawns.load(Ordering::Acquire)),
            requests: slot.map_or(0, |s| s.requests.load(Ordering::Acquire)),
            rejected: load(|s| s.rejected.load(Ordering::Acquire)),
            per_worker: load(|s| s.per_worker.load(Ordering::Acquire)),
            stopped: p.stopped,
            workers,
            usage: self.pool_usage(p),
            history: self.pool_history(p, now),
        }
    }
}
