//! A child asks for a pool (`Request::Ensure`): the supervisor derives the
//! owner itself, checks the program and that someone configured it, and
//! hands out the pool, creating it (a scoreboard slot, its first worker)
//! the first time. A refusal is a status and a reason, logged once.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::super::log::log_error;
use super::super::pools::{base_key, lineage_key, pool_key, Pool};
use super::super::spawn::PreparedExec;
use super::super::worker_policy::{self, Backoff, Full};
use super::super::{justify, php};
use super::Server;
use crate::core::identity::{self, Refusal, System};
use crate::core::request::{PoolInfo, PoolReply, PoolSpec};
use crate::core::scoreboard::{pool_state, worker_state};

/// Bound on remembered refusal reasons (each is logged once).
const MAX_LOGGED_REFUSALS: usize = 4096;

impl Server {
    pub(super) fn ensure(&mut self, spec: &PoolSpec) -> PoolReply {
        match self.try_ensure(spec) {
            Ok(info) => {
                self.pool_started(spec, info.uid);
                PoolReply::Ready(info)
            }
            Err(r) => {
                self.note_refusal(spec, &r);
                if self.logged_refusals.len() >= MAX_LOGGED_REFUSALS {
                    self.logged_refusals.clear();
                }
                if self.logged_refusals.insert(r.reason.clone()) {
                    log_error!("refused pool for {}: {}", spec.program.display(), r.reason);
                }
                PoolReply::Refused { status: r.status, reason: r.reason }
            }
        }
    }

    fn try_ensure(&mut self, spec: &PoolSpec) -> Result<PoolInfo, Refusal> {
        let cfg = self
            .configs
            .iter()
            .find(|c| c.generation == spec.generation)
            .ok_or_else(|| Refusal::new(500, format!("unknown configuration generation {}", spec.generation)))?;
        let vhost = cfg
            .vhosts
            .get(spec.vhost as usize)
            .ok_or_else(|| Refusal::new(500, format!("unknown vhost index {} in generation {}", spec.vhost, cfg.generation)))?;
        let owner = identity::resolve_owner(cfg, vhost, spec, &self.accounts, &System)?;
        let mut checked = identity::check_spec(cfg, spec, &owner, &System)?;
        // What runs must be what the owner (or the host) configured, not
        // merely what a server child asked for.
        let mut texts = Vec::with_capacity(spec.config_files.len());
        for f in &spec.config_files {
            texts.push((f.parent().map(Path::to_path_buf), justify::read_config_file(f, owner.uid).map_err(Refusal::forbidden)?));
        }
        let mut sources: Vec<justify::Source<'_>> =
            texts.iter().map(|(dir, t)| justify::Source { dir: dir.as_deref(), lines: crate::core::htaccess::parse(t) }).collect();
        sources.extend(cfg.host_directives.iter().map(justify::Source::from_host));
        justify::justify(spec, &sources).map_err(|e| Refusal::forbidden(format!("refusing a pool nobody configured: {e}")))?;
        let (env, limits) = php::take_over_recycling(&checked.program, &spec.env, checked.limits);
        checked.limits = limits;
        let base = base_key(&owner, &vhost.name, spec, &checked);
        let key = pool_key(&base, &checked);
        let desc = format!("uid {} {} {}", owner.uid, vhost.name, checked.program.display());
        let vhost_name = vhost.name.clone();

        let id = self.pools.id_of(&key);
        if let Some(pool) = self.pools.get(id) {
            if pool.key != key {
                return Err(Refusal::new(500, format!("pool key collision for {desc}")));
            }
            if let Some(secs) = pool.backoff.refusal_secs(pool.live(), Instant::now()) {
                return Err(Refusal::new(503, format!("pool {} is backing off after its workers crashed (next start in {secs} s)", pool.desc)));
            }
            if pool.live() == 0 {
                // Scaled to zero: this request starts it again.
                self.spawn_into(id);
            }
            return self.pools.get(id).map(|p| p.info()).ok_or_else(|| Refusal::new(500, "pool vanished"));
        }

        let owner_limits = cfg.owner_limits.with(&vhost.owner_overrides);
        if let Some(why) = self.cgroups.required_refusal(owner.uid, &owner_limits) {
            return Err(Refusal::new(503, why));
        }
        match worker_policy::room_for_worker(self.ceilings(), self.pools.owner_workers(owner.uid), self.pools.total_workers()) {
            Ok(()) => {}
            Err(Full::Owner(per_owner)) => return Err(Refusal::new(503, format!("uid {} already has {per_owner} workers", owner.uid))),
            Err(Full::Total(total)) => return Err(Refusal::new(503, format!("the server already has {total} workers"))),
        }
        let groups = self.accounts.groups(&owner.name, owner.gid).map_err(|e| Refusal::new(500, format!("cannot look up the groups of {}: {e}", String::from_utf8_lossy(&owner.name))))?;
        let exec = PreparedExec::new(&checked.program, &spec.args, &spec.workdir, &env, &owner, groups, (checked.dev, checked.ino))
            .map_err(|e| Refusal::new(500, format!("cannot prepare worker for {desc}: {e}")))?;
        let Some(slot_idx) = self.pools.free_slot() else {
            return Err(Refusal::new(503, "too many pools on this server (scoreboard full)"));
        };
        let Some(slot) = self.slot(slot_idx) else {
            return Err(Refusal::new(500, "scoreboard slot out of range"));
        };
        let limits = worker_policy::fit_scoreboard(checked.limits, self.sb.worker_capacity());
        let slot_generation = slot.generation.fetch_add(1, Ordering::AcqRel).wrapping_add(1);
        // Only the entries this pool can use are reset (and so touched):
        // nobody looks past max_workers, and untouched shared pages cost nothing.
        for ws in slot.workers[..limits.max_workers as usize].iter() {
            let (epoch, _) = ws.load();
            ws.set(epoch.wrapping_add(1), worker_state::EMPTY);
        }
        slot.max_workers.store(limits.max_workers, Ordering::Release);
        slot.max_requests.store(limits.max_requests, Ordering::Release);
        slot.queue_limit.store(limits.queue_limit, Ordering::Release);
        slot.waiting.store(0, Ordering::Release);
        slot.sleepers.store(0, Ordering::Release);
        slot.per_worker.store(0, Ordering::Release);
        slot.asked.store(0, Ordering::Release);
        slot.inflight.store(0, Ordering::Release);
        slot.backoff_until.store(0, Ordering::Release);
        slot.state.store(pool_state::ACTIVE, Ordering::Release);

        // A newer version of the same app: the old pool finishes what it runs.
        let lineage = lineage_key(&owner, &vhost.name, spec);
        if let Some(old) = self.pools.current_of_lineage(&lineage) {
            if old != id {
                self.retire_pool(old);
            }
        }
        let log = self.log_target(spec, &owner);
        self.pools.insert(Pool {
            key,
            lineage,
            id,
            desc: desc.clone(),
            uid: owner.uid,
            gid: owner.gid,
            socket_prefix: self.socket_dir.join(format!("{id:016x}")),
            slot: slot_idx,
            slot_generation,
            limits,
            workers: (0..limits.max_workers).map(|_| None).collect(),
            draining: Vec::new(),
            exec,
            log,
            backoff: Backoff::default(),
            retiring: false,
            empty_since: None,
            user: owner.name.clone(),
            vhost: vhost_name,
            kind: spec.kind,
            program: spec.program.clone(),
            workdir: spec.workdir.clone(),
            stopped: Default::default(),
            owner_limits,
            cg_totals: Default::default(),
        });
        self.event(id, &format!("created (slot {slot_idx}, max {} workers, min {})", limits.max_workers, limits.min_workers));
        if !self.spawn_into(id) {
            self.forget_pool(id);
            return Err(Refusal::new(503, format!("cannot start a worker for pool {desc}")));
        }
        self.balance(id);
        self.pools.get(id).map(|p| p.info()).ok_or_else(|| Refusal::new(500, "pool vanished"))
    }
}
