//! A server process's link to the supervisor: one connection per process, and
//! a per-process cache of pools already known to be ready, so the supervisor
//! is asked only on a cache miss (first request, changed config or code, a
//! pool that went away). Edits are noticed here: the files that define a
//! pool's version are stat'ed at most once a second per pool. Shared by the
//! server glues; `Site` says where this server's supervisor and scoreboard are.

use crate::core::scoreboard::Scoreboard;
use crate::core::request::{PoolInfo, PoolReply, PoolSpec};
use crate::core::scoreboard::{pool_state, PoolSlot};
use crate::core::supervisor::protocol::KillReason;
use crate::core::supervisor::{supervisor_socket_path, Client};
use crate::core::sys;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// A refusal is remembered briefly so a misconfigured app cannot turn every
/// request into a supervisor round-trip.
const REFUSAL_TTL: Duration = Duration::from_secs(1);

struct Link {
    pid: u32,
    client: Client,
}

static LINK: Mutex<Option<Link>> = Mutex::new(None);

/// Where this server's supervisor listens and the scoreboard it shares.
pub struct Site<'a> {
    pub socket_dir: &'a std::path::Path,
    pub scoreboard: &'a Scoreboard,
}

/// A ready pool as this process knows it.
pub struct Pool {
    pub info: PoolInfo,
    /// Files whose modification means a new version (fresh workers).
    watch: Vec<PathBuf>,
    stamp: u64,
    checked_at: AtomicU32,
}

impl Pool {
    /// The pool's scoreboard slot, if it still belongs to this pool.
    pub fn slot<'a>(&self, sb: &'a Scoreboard) -> Option<&'a PoolSlot> {
        let s = sb.slot(self.info.slot)?;
        let current = s.generation.load(Ordering::Acquire) == self.info.slot_generation;
        let usable = matches!(s.state.load(Ordering::Acquire), pool_state::ACTIVE | pool_state::BACKOFF);
        (current && usable).then_some(s)
    }

    /// Whether a watched file changed since the pool was created (checked at
    /// most once a second).
    fn outdated(&self) -> bool {
        let now = sys::monotonic_secs();
        let last = self.checked_at.load(Ordering::Relaxed);
        if now == last || self.checked_at.compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed).is_err() {
            return false;
        }
        stamp(&self.watch) != self.stamp
    }
}

fn stamp(files: &[PathBuf]) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for f in files {
        let m = std::fs::symlink_metadata(f).map(|m| (m.mtime(), m.mtime_nsec(), m.ino())).unwrap_or((0, 0, 0));
        for v in [m.0, m.1, m.2 as i64] {
            for b in v.to_le_bytes() {
                h ^= b as u64;
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
    h
}

enum Cached {
    Ready(Arc<Pool>),
    Refused { status: u16, reason: String, at: Instant },
}

static CACHE: once_cell::sync::Lazy<RwLock<HashMap<PoolSpec, Cached>>> = once_cell::sync::Lazy::new(|| RwLock::new(HashMap::new()));

pub enum PoolError {
    /// The supervisor refused: answer `status`, log `reason`.
    Refused { status: u16, reason: String },
    /// The supervisor could not be reached.
    Unavailable(String),
}

/// A ready pool for `spec`. `fresh` skips the cache (the cached pool turned
/// out to be gone). `watch` lists the files whose edits mean fresh workers.
pub fn pool_for(site: &Site<'_>, spec: &PoolSpec, watch: &[PathBuf], fresh: bool) -> Result<Arc<Pool>, PoolError> {
    if !fresh {
        let cache = CACHE.read().unwrap_or_else(|e| e.into_inner());
        match cache.get(spec) {
            Some(Cached::Ready(p)) if p.slot(site.scoreboard).is_some() && !p.outdated() => return Ok(p.clone()),
            Some(Cached::Refused { status, reason, at }) if at.elapsed() < REFUSAL_TTL => {
                return Err(PoolError::Refused { status: *status, reason: reason.clone() })
            }
            _ => {}
        }
    }
    // Stamp before asking, so an edit racing with the supervisor's own check
    // is seen again on the next look.
    let st = stamp(watch);
    let reply = ask(site.socket_dir, |c| c.ensure(spec)).map_err(|e| PoolError::Unavailable(format!("supervisor unreachable: {e}")))?;
    let mut cache = CACHE.write().unwrap_or_else(|e| e.into_inner());
    match reply {
        PoolReply::Ready(info) => {
            let p = Arc::new(Pool { info, watch: watch.to_vec(), stamp: st, checked_at: AtomicU32::new(sys::monotonic_secs()) });
            cache.insert(spec.clone(), Cached::Ready(p.clone()));
            Ok(p)
        }
        PoolReply::Refused { status, reason } => {
            cache.insert(spec.clone(), Cached::Refused { status, reason: reason.clone(), at: Instant::now() });
            Err(PoolError::Refused { status, reason })
        }
    }
}

/// Ask the supervisor to look at a pool (best effort, no reply).
pub fn nudge(socket_dir: &std::path::Path, info: &PoolInfo) {
    let _ = ask(socket_dir, |c| c.nudge(info.slot, info.slot_generation));
}

/// Ask the supervisor to stop the worker a timed-out request was using.
pub fn kill(socket_dir: &std::path::Path, info: &PoolInfo, worker: u32, epoch: u32) {
    let _ = ask(socket_dir, |c| c.kill(info.slot, info.slot_generation, worker, epoch, KillReason::Timeout));
}

/// Run `f` on this process' connection, reconnecting once if it broke (the
/// supervisor was restarted, or this process was forked from one that had a link).
fn ask<T>(socket_dir: &std::path::Path, f: impl Fn(&mut Client) -> std::io::Result<T>) -> std::io::Result<T> {
    let mut guard = LINK.lock().unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id();
    let mut last_err = None;
    for attempt in 0..2 {
        if attempt > 0 || guard.as_ref().map(|l| l.pid != pid).unwrap_or(true) {
            *guard = None;
            let client = Client::connect(&supervisor_socket_path(socket_dir))?;
            *guard = Some(Link { pid, client });
        }
        if let Some(link) = guard.as_mut() {
            match f(&mut link.client) {
                Ok(v) => return Ok(v),
                Err(e) => last_err = Some(e),
            }
        }
    }
    Err(last_err.unwrap_or_else(|| std::io::Error::other("supervisor link failed")))
}
