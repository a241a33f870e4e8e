//! The supervisor's pool table: pools by key, workers by pid, scoreboard slots.
//!
//! A pool owns up to `limits.max_workers` worker entries; entry `i` mirrors
//! scoreboard entry `i` of the pool's slot and has its own listening socket.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Instant;

use super::cgroup::{PoolTotals, WorkerGroup};
use super::protocol::{Encoder, StopCounts};
use super::spawn::PreparedExec;
use super::worker_policy::{Backoff, StopReason};
use crate::core::identity::{Checked, Owner};
use crate::core::limits::Limits;
use crate::core::owner_limits::OwnerLimits;
use crate::core::request::{AppKind, PoolInfo, PoolSpec};

pub struct Stopping {
    pub reason: StopReason,
    pub since: Instant,
    pub killed: bool,
    /// Requests it was given before it was taken out of service (its
    /// scoreboard entry may be reused meanwhile).
    pub served: u32,
}

/// A live worker process in entry `index` of its pool.
pub struct Worker {
    pub pid: libc::pid_t,
    pub epoch: u32,
    pub started: Instant,
    /// The supervisor's copy of the worker's listening socket: a pending
    /// connection on it means the worker has not reached accept() yet.
    pub listener: OwnedFd,
    pub socket_path: PathBuf,
    pub socket_id: (u64, u64),
    /// Read end of the worker's stderr pipe, and a partial line.
    pub stderr: Option<OwnedFd>,
    pub stderr_buf: Vec<u8>,
    pub stopping: Option<Stopping>,
    /// Its cgroup (None: the fallback, see cgroup.rs).
    pub cgroup: Option<WorkerGroup>,
    /// Whether it is CPU-bound, for its scheduler slice (core::latency).
    pub latency: crate::core::latency::Watch,
}

pub struct Pool {
    /// Canonical encoding of everything that makes the pool distinct.
    pub key: Vec<u8>,
    /// Which app this is, whatever its version or settings: a newer pool of
    /// the same lineage replaces this one (see `lineage_key`).
    pub lineage: Vec<u8>,
    pub id: u64,
    /// For logs: "uid U vhost PROGRAM".
    pub desc: String,
    pub uid: u32,
    pub gid: u32,
    pub socket_prefix: PathBuf,
    pub slot: u32,
    pub slot_generation: u32,
    pub limits: Limits,
    /// Entry index → worker (None = empty entry).
    pub workers: Vec<Option<Worker>>,
    /// Workers being stopped: out of their entries, so a replacement can
    /// start at once, but still counted against the owner's ceilings.
    pub draining: Vec<Worker>,
    pub exec: PreparedExec,
    /// `SuFcgiLog`: where this pool's lines go (opened as the owner, see customer_log.rs).
    pub log: Option<super::customer_log::LogTarget>,
    /// Crashes at start and the backoff they led to (worker_policy.rs decides).
    pub backoff: Backoff,
    /// Replaced by a newer version: stop workers as they go idle, then remove.
    pub retiring: bool,
    /// Since when the pool has had no worker (for forgetting unused pools).
    pub empty_since: Option<Instant>,
    /// For the status page: the owner's login name, the vhost's name, and
    /// what runs where as the child asked for it.
    pub user: Vec<u8>,
    pub vhost: String,
    pub kind: AppKind,
    pub program: PathBuf,
    pub workdir: PathBuf,
    /// Workers that ended, by reason.
    pub stopped: StopCounts,
    /// The owner's limits through this pool's vhost (`SuFcgiOwner*`).
    pub owner_limits: OwnerLimits,
    /// CPU time and OOM kills of its workers that are gone.
    pub cg_totals: PoolTotals,
}

impl Pool {
    pub fn info(&self) -> PoolInfo {
        PoolInfo {
            socket_prefix: self.socket_prefix.clone(),
            slot: self.slot,
            slot_generation: self.slot_generation,
            uid: self.uid,
            gid: self.gid,
            limits: self.limits,
        }
    }

    /// Workers in service (occupying an entry).
    pub fn live(&self) -> u32 {
        self.workers.iter().filter(|w| w.is_some()).count() as u32
    }

    /// Every process of the pool, including those being stopped.
    pub fn processes(&self) -> u32 {
        self.live() + self.draining.len() as u32
    }

    pub fn free_entry(&self) -> Option<u32> {
        self.workers.iter().position(|w| w.is_none()).map(|i| i as u32)
    }
}

fn put_spec_parts(e: &mut Encoder, owner: &Owner, vhost_name: &str, spec: &PoolSpec, checked: &Checked) {
    e.u32(owner.uid).u32(owner.gid).bytes(vhost_name.as_bytes()).u8(spec.kind as u8);
    e.path(&checked.program).u64(checked.dev).u64(checked.ino);
    e.u32(spec.args.len() as u32);
    for a in &spec.args {
        e.bytes(a);
    }
    e.path(&spec.workdir);
    e.u32(spec.env.len() as u32);
    for (k, v) in &spec.env {
        e.bytes(k).bytes(v);
    }
    let l = &checked.limits;
    e.u32(l.max_workers).u32(l.min_workers).u32(l.idle_timeout).u32(l.max_requests);
    e.u32(l.queue_limit).u32(l.queue_timeout).u32(l.request_timeout).u64(l.memory_limit);
    e.u32(l.slow_log).u8(l.x_sendfile as u8);
    match &spec.log_file {
        Some(p) => e.u8(1).path(p),
        None => e.u8(0),
    };
}

/// The distinct identity of a pool (without its version): (uid, gid, vhost,
/// kind, program + dev/ino, args, workdir, env, limits, log file).
pub fn base_key(owner: &Owner, vhost_name: &str, spec: &PoolSpec, checked: &Checked) -> Vec<u8> {
    let mut e = Encoder::raw();
    put_spec_parts(&mut e, owner, vhost_name, spec, checked);
    e.into_raw()
}

/// "The same app": owner, vhost, kind, program path, working directory and
/// the configuring files. A pool created for the same lineage (the app file
/// was replaced, its .htaccess edited, its restart file touched) retires the
/// older one; two directories configured differently are different lineages,
/// so they never retire each other.
pub fn lineage_key(owner: &Owner, vhost_name: &str, spec: &PoolSpec) -> Vec<u8> {
    let mut e = Encoder::raw();
    e.u32(owner.uid).u32(owner.gid).bytes(vhost_name.as_bytes()).u8(spec.kind as u8);
    e.path(&spec.program).path(&spec.workdir);
    e.u32(spec.config_files.len() as u32);
    for c in &spec.config_files {
        e.path(c);
    }
    e.into_raw()
}

/// The base key plus the version (mtimes of the app, its configuration and
/// its restart file).
pub fn pool_key(base: &[u8], checked: &Checked) -> Vec<u8> {
    let mut k = base.to_vec();
    k.extend_from_slice(&checked.version.to_le_bytes());
    k
}

pub struct PoolTable {
    pools: HashMap<u64, Pool>,
    by_pid: HashMap<libc::pid_t, u64>,
    /// Lineage hash → the current (newest) pool of that lineage.
    by_lineage: HashMap<u64, u64>,
    slots: Vec<Option<u64>>,
    /// Keyed per supervisor run so nobody can precompute colliding keys.
    hasher: RandomState,
}

impl PoolTable {
    pub fn new(nslots: u32) -> PoolTable {
        PoolTable {
            pools: HashMap::new(),
            by_pid: HashMap::new(),
            by_lineage: HashMap::new(),
            slots: vec![None; nslots as usize],
            hasher: RandomState::new(),
        }
    }

    pub fn id_of(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    pub fn get(&self, id: u64) -> Option<&Pool> {
        self.pools.get(&id)
    }

    pub fn get_mut(&mut self, id: u64) -> Option<&mut Pool> {
        self.pools.get_mut(&id)
    }

    pub fn ids(&self) -> Vec<u64> {
        self.pools.keys().copied().collect()
    }

    pub fn pools(&self) -> impl Iterator<Item = &Pool> {
        self.pools.values()
    }

    /// The current pool of a lineage, if any.
    pub fn current_of_lineage(&self, lineage: &[u8]) -> Option<u64> {
        self.by_lineage.get(&self.id_of(lineage)).copied()
    }

    /// A free scoreboard slot index, if any.
    pub fn free_slot(&self) -> Option<u32> {
        self.slots.iter().position(|s| s.is_none()).map(|i| i as u32)
    }

    pub fn slot_pool(&self, slot: u32) -> Option<u64> {
        self.slots.get(slot as usize).copied().flatten()
    }

    pub fn insert(&mut self, pool: Pool) {
        if let Some(s) = self.slots.get_mut(pool.slot as usize) {
            *s = Some(pool.id);
        }
        let lineage = self.id_of(&pool.lineage);
        self.by_lineage.insert(lineage, pool.id);
        self.pools.insert(pool.id, pool);
    }

    /// Forget a pool that has no workers left; frees its slot.
    pub fn remove(&mut self, id: u64) -> Option<Pool> {
        let pool = self.pools.remove(&id)?;
        if let Some(s) = self.slots.get_mut(pool.slot as usize) {
            if *s == Some(id) {
                *s = None;
            }
        }
        let lineage = self.id_of(&pool.lineage);
        if self.by_lineage.get(&lineage) == Some(&id) {
            self.by_lineage.remove(&lineage);
        }
        Some(pool)
    }

    pub fn add_worker(&mut self, id: u64, index: u32, worker: Worker) {
        if let Some(p) = self.pools.get_mut(&id) {
            if let Some(e) = p.workers.get_mut(index as usize) {
                self.by_pid.insert(worker.pid, id);
                *e = Some(worker);
            }
        }
    }

    /// Move the worker in entry `index` to the pool's draining list.
    pub fn drain(&mut self, id: u64, index: u32) {
        if let Some(p) = self.pools.get_mut(&id) {
            if let Some(w) = p.workers.get_mut(index as usize).and_then(Option::take) {
                p.draining.push(w);
            }
        }
    }

    /// Forgets a reaped worker; returns its pool id, its entry index (None if
    /// it was draining) and its record.
    pub fn remove_worker(&mut self, pid: libc::pid_t) -> Option<(u64, Option<u32>, Worker)> {
        let id = self.by_pid.remove(&pid)?;
        let pool = self.pools.get_mut(&id)?;
        if let Some(i) = pool.workers.iter().position(|w| w.as_ref().is_some_and(|w| w.pid == pid)) {
            let w = pool.workers[i].take()?;
            return Some((id, Some(i as u32), w));
        }
        let i = pool.draining.iter().position(|w| w.pid == pid)?;
        Some((id, None, pool.draining.swap_remove(i)))
    }

    /// Worker processes of one owner, not counting pools that are winding down.
    pub fn owner_workers(&self, uid: u32) -> u32 {
        self.pools.values().filter(|p| p.uid == uid && !p.retiring).map(|p| p.processes()).sum()
    }

    pub fn total_workers(&self) -> u32 {
        self.by_pid.len() as u32
    }

    /// Worker `pid` of pool `id`, in service or draining.
    pub fn worker_mut(&mut self, id: u64, pid: libc::pid_t) -> Option<&mut Worker> {
        let p = self.pools.get_mut(&id)?;
        p.workers.iter_mut().flatten().chain(p.draining.iter_mut()).find(|w| w.pid == pid)
    }

    pub fn pool_of_pid(&self, pid: libc::pid_t) -> Option<u64> {
        self.by_pid.get(&pid).copied()
    }

    pub fn all_pids(&self) -> Vec<libc::pid_t> {
        self.by_pid.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_by_every_part() {
        let o = Owner { uid: 1001, gid: 1001, name: b"a".to_vec(), home: b"/home/a".to_vec() };
        let s = PoolSpec {
            generation: 0,
            vhost: 0,
            kind: AppKind::App,
            program: "/a/app".into(),
            args: vec![],
            workdir: "/a".into(),
            config_files: vec![],
            env: vec![],
            limits: Limits::DEFAULT,
            restart_file: None,
            log_file: None,
            userdir_user: None,
        };
        let c = Checked { program: "/a/app".into(), dev: 1, ino: 2, version: 7, limits: Limits::DEFAULT };
        let base = base_key(&o, "v", &s, &c);
        let o2 = Owner { uid: 1002, ..o.clone() };
        assert_ne!(base, base_key(&o2, "v", &s, &c));
        assert_ne!(base, base_key(&o, "w", &s, &c));
        assert_ne!(base, base_key(&o, "v", &PoolSpec { args: vec![b"x".to_vec()], ..s.clone() }, &c));
        assert_ne!(base, base_key(&o, "v", &s, &Checked { ino: 3, ..c.clone() }));
        assert_ne!(base, base_key(&o, "v", &PoolSpec { env: vec![(b"A".to_vec(), b"".to_vec())], ..s.clone() }, &c));
        let more = Checked { limits: Limits { max_workers: 9, ..Limits::DEFAULT }, ..c.clone() };
        assert_ne!(base, base_key(&o, "v", &s, &more));
        // config_files and generation don't split pools; the version splits keys, not bases.
        assert_eq!(base, base_key(&o, "v", &PoolSpec { generation: 9, config_files: vec!["/x".into()], ..s.clone() }, &c));
        let newer = Checked { version: 8, ..c.clone() };
        assert_eq!(base, base_key(&o, "v", &s, &newer));
        assert_ne!(pool_key(&base, &c), pool_key(&base, &newer));
        // Lineage: same app whatever its settings; other config files = other lineage.
        let lin = lineage_key(&o, "v", &s);
        assert_eq!(lin, lineage_key(&o, "v", &PoolSpec { env: vec![(b"A".to_vec(), b"1".to_vec())], ..s.clone() }));
        assert_ne!(lin, lineage_key(&o, "v", &PoolSpec { config_files: vec!["/a/sub/.htaccess".into()], ..s.clone() }));
        assert_ne!(lin, lineage_key(&o, "v", &PoolSpec { program: "/a/other".into(), ..s.clone() }));
        let t = PoolTable::new(2);
        assert_eq!(t.id_of(&base), t.id_of(&base));
        assert_eq!(t.free_slot(), Some(0));
    }
}
