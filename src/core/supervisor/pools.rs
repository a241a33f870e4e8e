//! The supervisor's pool table: pools by key, workers by pid, scoreboard slots.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::protocol::Encoder;
use super::spawn::PreparedExec;
use crate::core::identity::{Checked, Owner};
use crate::core::request::{PoolInfo, PoolSpec};

/// A worker that dies sooner than this after its start counts as a crash.
pub const CRASH_WINDOW: Duration = Duration::from_secs(1);
/// Longest pause between restarts of a crashing pool.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A pool that did not crash for this long starts its backoff over at 1 s.
pub const STREAK_RESET: Duration = Duration::from_secs(120);

/// 1 s, 2 s, 4 s … capped at 60 s, for the `streak`-th consecutive crash (1-based).
pub fn backoff_delay(streak: u32) -> Duration {
    let exp = streak.saturating_sub(1).min(6);
    Duration::from_secs(1u64 << exp).min(MAX_BACKOFF)
}

pub struct Worker {
    pub pid: libc::pid_t,
    pub started: Instant,
}

pub struct Pool {
    /// Canonical encoding of everything that makes the pool distinct.
    pub key: Vec<u8>,
    pub id: u64,
    /// For logs: "uid U vhost PROGRAM".
    pub desc: String,
    pub uid: u32,
    pub gid: u32,
    pub socket_path: PathBuf,
    /// The listening socket; `None` while a crashing pool is backing off.
    pub listener: Option<OwnedFd>,
    /// (dev, ino) of the bound socket file, so only our own file is unlinked.
    pub socket_id: (u64, u64),
    /// Scoreboard slot, or `u32::MAX` when the scoreboard was full.
    pub slot: u32,
    pub slot_generation: u32,
    pub max_workers: u32,
    /// How many workers the pool should have (grows with spawn hints).
    pub target: u32,
    pub workers: Vec<Worker>,
    pub exec: PreparedExec,
    /// Consecutive backoff steps; reset when a worker outlives the crash window.
    pub crash_streak: u32,
    /// When the next restart is due while backing off.
    pub restart_at: Option<Instant>,
    /// When the last backoff step began; a long quiet spell resets the streak.
    pub last_crash: Option<Instant>,
}

impl Pool {
    pub fn info(&self) -> PoolInfo {
        PoolInfo {
            socket_path: self.socket_path.clone(),
            slot: self.slot,
            slot_generation: self.slot_generation,
            uid: self.uid,
            gid: self.gid,
            max_workers: self.max_workers,
        }
    }
    pub fn live(&self) -> u32 {
        self.workers.len() as u32
    }
}

/// The distinct identity of a pool: (uid, gid, vhost, kind, program + dev/ino,
/// args, workdir, env, max_workers).
pub fn pool_key(owner: &Owner, vhost_name: &str, spec: &PoolSpec, checked: &Checked) -> Vec<u8> {
    let mut e = Encoder::raw();
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
    e.u32(checked.max_workers);
    e.into_raw()
}

pub struct PoolTable {
    pools: HashMap<u64, Pool>,
    by_pid: HashMap<libc::pid_t, u64>,
    slots: Vec<Option<u64>>,
    /// Keyed per supervisor run so nobody can precompute colliding keys.
    hasher: RandomState,
}

impl PoolTable {
    pub fn new(nslots: u32) -> PoolTable {
        PoolTable {
            pools: HashMap::new(),
            by_pid: HashMap::new(),
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
        for w in &pool.workers {
            self.by_pid.insert(w.pid, pool.id);
        }
        self.pools.insert(pool.id, pool);
    }

    pub fn add_worker(&mut self, id: u64, pid: libc::pid_t, started: Instant) {
        if let Some(p) = self.pools.get_mut(&id) {
            p.workers.push(Worker { pid, started });
            self.by_pid.insert(pid, id);
        }
    }

    /// Forgets a reaped worker; returns its pool id and start time.
    pub fn remove_worker(&mut self, pid: libc::pid_t) -> Option<(u64, Worker)> {
        let id = self.by_pid.remove(&pid)?;
        let pool = self.pools.get_mut(&id)?;
        let idx = pool.workers.iter().position(|w| w.pid == pid)?;
        Some((id, pool.workers.swap_remove(idx)))
    }

    pub fn owner_workers(&self, uid: u32) -> u32 {
        self.pools.values().filter(|p| p.uid == uid).map(|p| p.live()).sum()
    }

    pub fn total_workers(&self) -> u32 {
        self.by_pid.len() as u32
    }

    pub fn all_pids(&self) -> Vec<libc::pid_t> {
        self.by_pid.keys().copied().collect()
    }

    /// The earliest pending restart.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pools.values().filter_map(|p| p.restart_at).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_steps() {
        let secs: Vec<u64> = (1..=9).map(|s| backoff_delay(s).as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff_delay(0).as_secs(), 1);
        assert_eq!(backoff_delay(u32::MAX).as_secs(), 60);
    }

    #[test]
    fn keys_differ_by_every_part() {
        use crate::core::request::AppKind;
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
            max_workers: 2,
            userdir_user: None,
        };
        let c = Checked { program: "/a/app".into(), dev: 1, ino: 2, max_workers: 2 };
        let base = pool_key(&o, "v", &s, &c);
        let o2 = Owner { uid: 1002, ..o.clone() };
        assert_ne!(base, pool_key(&o2, "v", &s, &c));
        assert_ne!(base, pool_key(&o, "w", &s, &c));
        assert_ne!(base, pool_key(&o, "v", &PoolSpec { args: vec![b"x".to_vec()], ..s.clone() }, &c));
        assert_ne!(base, pool_key(&o, "v", &s, &Checked { ino: 3, ..c.clone() }));
        assert_ne!(base, pool_key(&o, "v", &PoolSpec { env: vec![(b"A".to_vec(), b"".to_vec())], ..s.clone() }, &c));
        // config_files and generation don't split pools.
        assert_eq!(base, pool_key(&o, "v", &PoolSpec { generation: 9, config_files: vec!["/x".into()], ..s.clone() }, &c));
        let t = PoolTable::new(2);
        assert_eq!(t.id_of(&base), t.id_of(&base));
        assert_eq!(t.free_slot(), Some(0));
    }
}
