//! A server child's link to the supervisor: one connection per process, and a
//! per-process cache of pools already known to be ready, so the supervisor is
//! asked only on a cache miss (first request, changed config, dead pool).

use super::runtime::Runtime;
use crate::core::request::{PoolInfo, PoolReply, PoolSpec};
use crate::core::supervisor::{supervisor_socket_path, Client};
use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

/// A refusal is remembered briefly so a misconfigured app cannot turn every
/// request into a supervisor round-trip.
const REFUSAL_TTL: Duration = Duration::from_secs(1);

struct Link {
    pid: u32,
    client: Client,
}

static LINK: Mutex<Option<Link>> = Mutex::new(None);

enum Cached {
    Ready(PoolInfo),
    Refused { status: u16, reason: String, at: Instant },
}

static CACHE: once_cell::sync::Lazy<RwLock<HashMap<PoolSpec, Cached>>> = once_cell::sync::Lazy::new(|| RwLock::new(HashMap::new()));

pub enum PoolError {
    /// The supervisor refused: answer `status`, log `reason`.
    Refused { status: u16, reason: String },
    /// The supervisor could not be reached.
    Unavailable(String),
}

/// A ready pool for `spec`. `fresh` skips the cache (the cached pool's socket
/// turned out to be dead).
pub fn pool_for(rt: &Runtime, spec: &PoolSpec, fresh: bool) -> Result<PoolInfo, PoolError> {
    if !fresh {
        let cache = CACHE.read().unwrap_or_else(|e| e.into_inner());
        match cache.get(spec) {
            Some(Cached::Ready(info)) => return Ok(info.clone()),
            Some(Cached::Refused { status, reason, at }) if at.elapsed() < REFUSAL_TTL => {
                return Err(PoolError::Refused { status: *status, reason: reason.clone() })
            }
            _ => {}
        }
    }
    let reply = ask(rt, |c| c.ensure(spec)).map_err(|e| PoolError::Unavailable(format!("supervisor unreachable: {e}")))?;
    let mut cache = CACHE.write().unwrap_or_else(|e| e.into_inner());
    match reply {
        PoolReply::Ready(info) => {
            cache.insert(spec.clone(), Cached::Ready(info.clone()));
            Ok(info)
        }
        PoolReply::Refused { status, reason } => {
            cache.insert(spec.clone(), Cached::Refused { status, reason: reason.clone(), at: Instant::now() });
            Err(PoolError::Refused { status, reason })
        }
    }
}

/// Forget a pool whose socket is gone, so the next request asks again.
pub fn forget(spec: &PoolSpec) {
    CACHE.write().unwrap_or_else(|e| e.into_inner()).remove(spec);
}

/// Tell the supervisor a pool looks saturated (best effort, no reply).
pub fn spawn_hint(rt: &Runtime, slot: u32, slot_generation: u32) {
    let _ = ask(rt, |c| c.spawn_hint(slot, slot_generation));
}

/// Run `f` on this process' connection, reconnecting once if it broke (the
/// supervisor was restarted, or this process was forked from one that had a link).
fn ask<T>(rt: &Runtime, f: impl Fn(&mut Client) -> std::io::Result<T>) -> std::io::Result<T> {
    let mut guard = LINK.lock().unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id();
    for attempt in 0..2 {
        if guard.as_ref().map(|l| l.pid != pid).unwrap_or(true) || attempt > 0 {
            *guard = None;
            let client = Client::connect(&supervisor_socket_path(&rt.socket_dir))?;
            *guard = Some(Link { pid, client });
        }
        if let Some(link) = guard.as_mut() {
            match f(&mut link.client) {
                Ok(v) => return Ok(v),
                Err(e) if attempt == 0 => {
                    let _ = e;
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
    }
    Err(std::io::Error::other("supervisor link failed"))
}
