//! A server process's link to the supervisor: one connection per process, and
//! a per-process cache of pools already known to be ready, so the supervisor
//! is asked only on a cache miss (first request, changed config or code, a
//! pool that went away). Edits are noticed here: the files that define a
//! pool's version are stat'ed at most once a second per pool. Shared by the
//! server glues; `Site` says where this server's supervisor and scoreboard are.

use crate::core::request::{AppKind, PoolInfo, PoolReply, PoolSpec};
use crate::core::scoreboard::{pool_state, Claim, PoolSlot, Scoreboard};
use crate::core::supervisor::protocol::KillReason;
use crate::core::supervisor::{supervisor_socket_path, Client};
use crate::core::sys;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
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
    pub socket_dir: &'a Path,
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

/// What the once-a-second look compares: content (mtime, inode) and what
/// the supervisor's checks judge (mode, owner), so a file made writable by
/// others is noticed and refused as soon as one made anew would be.
fn stamp(files: &[PathBuf]) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for f in files {
        let m = std::fs::symlink_metadata(f)
            .map(|m| [m.mtime(), m.mtime_nsec(), m.ino() as i64, m.mode() as i64, m.uid() as i64])
            .unwrap_or_default();
        for v in m {
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

/// Specs by `spec_hash`; a bucket holds more than one spec only on a hash
/// collision (entries are told apart by `PoolSpec`'s own equality).
type Cache = HashMap<u64, Vec<(PoolSpec, Cached)>, BuildHasherDefault<Prehashed>>;

static CACHE: once_cell::sync::Lazy<RwLock<Cache>> = once_cell::sync::Lazy::new(|| RwLock::new(HashMap::default()));

/// A fast non-cryptographic hash (FxHash's multiply-rotate, 8 bytes a step)
/// for the cache, which is looked up on every request. `PoolSpec`'s derived
/// `Hash` with the default SipHash cost ~4,800 instructions a request in the
/// profile, most of it in `Path::hash`, which walks path components; this
/// hashes the paths' bytes. Keys come from the server's own configuration
/// and files, not from request data an attacker could shape into collisions
/// (and a collision only costs a comparison).
#[derive(Default)]
struct Fx(u64);

impl Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]));
        }
        for &b in chunks.remainder() {
            self.add(b as u64);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.add(v);
    }
    fn write_usize(&mut self, v: usize) {
        self.add(v as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

impl Fx {
    fn add(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn bytes(&mut self, b: &[u8]) {
        self.write_usize(b.len());
        self.write(b);
    }
    fn path(&mut self, p: &Path) {
        self.bytes(p.as_os_str().as_bytes());
    }
}

/// The cache's hash of a spec: every field, paths as bytes. The pattern
/// names every field (no `..`), so a field added to `PoolSpec` fails to
/// compile here until it is hashed too.
fn spec_hash(spec: &PoolSpec) -> u64 {
    let PoolSpec { generation, vhost, kind, program, args, workdir, config_files, env, limits, restart_file, log_file, userdir_user } = spec;
    let mut h = Fx::default();
    h.write_u64(*generation);
    h.write_u64(*vhost as u64);
    kind.hash(&mut h);
    h.path(program);
    h.write_usize(args.len());
    for a in args {
        h.bytes(a);
    }
    h.path(workdir);
    h.write_usize(config_files.len());
    for f in config_files {
        h.path(f);
    }
    h.write_usize(env.len());
    for (k, v) in env {
        h.bytes(k);
        h.bytes(v);
    }
    limits.hash(&mut h);
    for p in [restart_file, log_file] {
        match p {
            Some(p) => h.path(p),
            None => h.write_usize(usize::MAX),
        }
    }
    match userdir_user {
        Some(u) => h.bytes(u),
        None => h.write_usize(usize::MAX),
    }
    h.finish()
}

/// The map's hasher for keys that are already hashes.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | b as u64;
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// Files whose modification means a new version of the pool (fresh
/// workers): the configuring `.htaccess` files, the program (not for a
/// wrapper: wrapped scripts are re-read by their interpreter anyway) and
/// the restart file. Only needed when a pool is (re)cached.
fn watch_files(spec: &PoolSpec) -> Vec<PathBuf> {
    let mut watch: Vec<PathBuf> = spec.config_files.clone();
    if spec.kind != AppKind::Wrapper {
        watch.push(spec.program.clone());
    }
    watch.extend(spec.restart_file.iter().cloned());
    watch
}

pub enum PoolError {
    /// The supervisor refused: answer `status`, log `reason`.
    Refused { status: u16, reason: String },
    /// The supervisor could not be reached.
    Unavailable(String),
}

/// A ready pool for `spec`. `fresh` skips the cache (the cached pool turned
/// out to be gone).
pub fn pool_for(site: &Site<'_>, spec: &PoolSpec, fresh: bool) -> Result<Arc<Pool>, PoolError> {
    let key = spec_hash(spec);
    if !fresh {
        let cache = CACHE.read().unwrap_or_else(|e| e.into_inner());
        let found = cache.get(&key).and_then(|bucket| bucket.iter().find(|(s, _)| s == spec)).map(|(_, c)| c);
        match found {
            Some(Cached::Ready(p)) if p.slot(site.scoreboard).is_some() && !p.outdated() => return Ok(p.clone()),
            Some(Cached::Refused { status, reason, at }) if at.elapsed() < REFUSAL_TTL => {
                return Err(PoolError::Refused { status: *status, reason: reason.clone() })
            }
            _ => {}
        }
    }
    // Stamp before asking, so an edit racing with the supervisor's own check
    // is seen again on the next look.
    let watch = watch_files(spec);
    let st = stamp(&watch);
    let reply = ask(site.socket_dir, |c| c.ensure(spec)).map_err(|e| PoolError::Unavailable(format!("supervisor unreachable: {e}")))?;
    let (entry, result) = match reply {
        PoolReply::Ready(info) => {
            let p = Arc::new(Pool { info, watch, stamp: st, checked_at: AtomicU32::new(sys::monotonic_secs()) });
            (Cached::Ready(p.clone()), Ok(p))
        }
        PoolReply::Refused { status, reason } => {
            (Cached::Refused { status, reason: reason.clone(), at: Instant::now() }, Err(PoolError::Refused { status, reason }))
        }
    };
    let mut cache = CACHE.write().unwrap_or_else(|e| e.into_inner());
    let bucket = cache.entry(key).or_default();
    match bucket.iter_mut().find(|(s, _)| s == spec) {
        Some((_, c)) => *c = entry,
        None => bucket.push((spec.clone(), entry)),
    }
    result
}

/// What became of a worker connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// The request ended as FastCGI says: the worker can serve again.
    Clean,
    /// Protocol error, early close, failed I/O: the worker must not serve again.
    Broken,
    /// No answer in time: 504, and the worker is stopped.
    TimedOut,
}

/// Give the worker back, or have it stopped, by how its exchange ended.
/// `answered`: the app sent anything at all. True when the worker exited with
/// the connection still in its backlog: the app never saw the request (it is
/// failing at start, or exited on its own just then), which is
/// "unavailable", not a bad answer.
pub fn settle(site: &Site<'_>, info: &PoolInfo, claim: Claim<'_>, fate: Fate, answered: bool) -> bool {
    let (index, epoch) = (claim.index, claim.epoch);
    let never_accepted = fate == Fate::Broken && !answered && claim.worker().unaccepted_epoch.load(Ordering::Acquire) == epoch;
    match fate {
        Fate::Clean => {
            if claim.release() {
                nudge(site, info);
            }
        }
        Fate::Broken => {
            claim.retire();
            nudge(site, info);
        }
        Fate::TimedOut => {
            claim.retire();
            kill(site, info, index, epoch);
        }
    }
    never_accepted
}

/// Ask the supervisor to look at a pool (best effort, no reply).
pub fn nudge(site: &Site<'_>, info: &PoolInfo) {
    let _ = ask(site.socket_dir, |c| c.nudge(info.slot, info.slot_generation));
}

/// Ask the supervisor to stop the worker a timed-out request was using.
pub fn kill(site: &Site<'_>, info: &PoolInfo, worker: u32, epoch: u32) {
    let _ = ask(site.socket_dir, |c| c.kill(info.slot, info.slot_generation, worker, epoch, KillReason::Timeout));
}

/// Send a note for the pool owner's log (best effort, no reply; see
/// `core::customer_note`, which decides what is sent).
pub fn note(socket_dir: &Path, n: &crate::core::supervisor::protocol_customer::Note) {
    let _ = ask(socket_dir, |c| c.note(n));
}

/// Run `f` on this process' connection, reconnecting once if it broke (the
/// supervisor was restarted, or this process was forked from one that had a link).
fn ask<T>(socket_dir: &Path, f: impl Fn(&mut Client) -> std::io::Result<T>) -> std::io::Result<T> {
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

#[cfg(test)]
mod tests {
    use super::stamp;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_file_stamp_changes_with_the_mode_not_only_the_content() {
        let dir = std::env::temp_dir().join(format!("sufcgi-stamp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join(".htaccess");
        std::fs::write(&f, "SuFcgiApp app.py\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let files = vec![f.clone()];
        let before = stamp(&files);
        assert_eq!(stamp(&files), before, "nothing changed");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o664)).unwrap();
        let writable = stamp(&files);
        assert_ne!(writable, before, "made group-writable");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(stamp(&files), before, "back as it was");
        std::fs::remove_file(&f).unwrap();
        assert_ne!(stamp(&files), before, "gone");
        let _ = std::fs::remove_dir(&dir);
    }
}
