//! The supervisor's single-threaded event loop.
//!
//! It polls the control channel (config frames from the privileged parent;
//! EOF means the server stopped), a signalfd (SIGCHLD, SIGTERM, SIGINT), its
//! listening socket and the connected server children. Nothing here blocks
//! except `poll` itself; a misbehaving client only ever loses its own connection.

use std::collections::{HashSet, VecDeque};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::log::{log_error, log_notice, log_warn};
use super::pools::{backoff_delay, pool_key, Pool, PoolTable, CRASH_WINDOW, STREAK_RESET};
use super::protocol::{self, FrameReader, Request};
use super::spawn::{spawn_worker, PreparedExec};
use crate::core::hostconfig::HostConfig;
use crate::core::identity::{self, Refusal, System};
use crate::core::request::{PoolInfo, PoolReply, PoolSpec};
use crate::core::scoreboard::Scoreboard;
use crate::core::sys;

/// Configurations kept for children forked before a graceful restart.
const KEEP_GENERATIONS: usize = 4;
const MAX_CLIENTS: usize = 8192;
const MAX_OUTBUF: usize = 1 << 20;
const POOL_BACKLOG: i32 = 1024;
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Bound on remembered refusal reasons (each is logged once).
const MAX_LOGGED_REFUSALS: usize = 4096;

struct Conn {
    stream: UnixStream,
    reader: FrameReader,
    out: Vec<u8>,
}

pub(super) struct Server {
    configs: VecDeque<HostConfig>,
    socket_dir: PathBuf,
    control: Option<UnixStream>,
    control_reader: FrameReader,
    sigfd: OwnedFd,
    listener: UnixListener,
    listener_id: (u64, u64),
    listener_path: PathBuf,
    clients: Vec<Conn>,
    pools: PoolTable,
    sb: Scoreboard,
    dev_null: OwnedFd,
    logged_refusals: HashSet<String>,
    stopping: bool,
}

/// Entry point of the forked supervisor: never returns.
pub(super) fn run(cfg: HostConfig, sb: Scoreboard, control: OwnedFd, listener: OwnedFd, listener_path: PathBuf) -> ! {
    let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        match Server::new(cfg, sb, control, listener, listener_path) {
            Ok(mut s) => {
                s.run();
                0
            }
            Err(e) => {
                log_error!("supervisor failed to start: {e}");
                1
            }
        }
    })) {
        Ok(c) => c,
        Err(_) => {
            log_error!("supervisor panicked; shutting down");
            70
        }
    };
    // SAFETY: leaving the forked supervisor without running the parent's atexit handlers.
    unsafe { libc::_exit(code) }
}

fn is_would_block(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted)
}

fn socket_identity(path: &Path) -> (u64, u64) {
    sys::lstat(path).map(|s| (s.dev, s.ino)).unwrap_or((0, 0))
}

/// Unlinks `path` only if it is still the socket we bound.
fn unlink_ours(path: &Path, id: (u64, u64)) {
    if let Ok(st) = sys::lstat(path) {
        if st.is_socket() && (st.dev, st.ino) == id {
            let _ = sys::unlink_if_exists(path);
        }
    }
}

impl Server {
    fn new(
        cfg: HostConfig,
        sb: Scoreboard,
        control: OwnedFd,
        listener: OwnedFd,
        listener_path: PathBuf,
    ) -> io::Result<Server> {
        let sigfd = sys::signalfd(&[libc::SIGCHLD, libc::SIGTERM, libc::SIGINT])?;
        let control = UnixStream::from(control);
        control.set_nonblocking(true)?;
        sys::set_passcred(control.as_raw_fd())?;
        let listener = UnixListener::from(listener);
        listener.set_nonblocking(true)?;
        let nslots = sb.len();
        let mut configs = VecDeque::new();
        let socket_dir = cfg.socket_dir.clone();
        configs.push_back(cfg);
        Ok(Server {
            configs,
            socket_dir,
            control: Some(control),
            control_reader: FrameReader::new(),
            sigfd,
            listener,
            listener_id: socket_identity(&listener_path),
            listener_path,
            clients: Vec::new(),
            pools: PoolTable::new(nslots),
            sb,
            dev_null: sys::open_dev_null(libc::O_WRONLY)?,
            logged_refusals: HashSet::new(),
            stopping: false,
        })
    }

    fn run(&mut self) {
        log_notice!("supervisor started (socket dir {})", self.socket_dir.display());
        while !self.stopping {
            let timeout = match self.pools.next_deadline() {
                Some(t) => {
                    let ms = t.saturating_duration_since(Instant::now()).as_millis();
                    ms.min(60_000) as i32 + 1
                }
                None => -1,
            };
            let mut fds: Vec<libc::pollfd> = Vec::with_capacity(3 + self.clients.len());
            let pfd = |fd: RawFd, events: i16| libc::pollfd { fd, events, revents: 0 };
            fds.push(pfd(self.sigfd.as_raw_fd(), libc::POLLIN));
            fds.push(pfd(self.control.as_ref().map_or(-1, |c| c.as_raw_fd()), libc::POLLIN));
            fds.push(pfd(self.listener.as_raw_fd(), libc::POLLIN));
            for c in &self.clients {
                let ev = if c.out.is_empty() { libc::POLLIN } else { libc::POLLIN | libc::POLLOUT };
                fds.push(pfd(c.stream.as_raw_fd(), ev));
            }
            // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs.
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    log_error!("poll failed: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
                continue;
            }
            if fds[0].revents != 0 {
                self.handle_signals();
            }
            if fds[1].revents != 0 {
                self.handle_control();
            }
            // Clients first (their indices match `fds[3..]`), then new ones.
            self.handle_clients(&fds[3..]);
            if fds[2].revents != 0 {
                self.accept_clients();
            }
            self.run_due_restarts();
        }
        self.shutdown();
    }

    // ---- signals and children ----

    fn handle_signals(&mut self) {
        loop {
            match sys::read_signalfd(self.sigfd.as_raw_fd()) {
                Ok(Some(sig)) if sig == libc::SIGCHLD as u32 => self.reap(),
                Ok(Some(sig)) => {
                    log_notice!("supervisor received signal {sig}; shutting down");
                    self.stopping = true;
                }
                Ok(None) => break,
                Err(e) => {
                    log_error!("reading signalfd failed: {e}");
                    break;
                }
            }
        }
        // SIGCHLDs coalesce: always sweep.
        self.reap();
    }

    fn reap(&mut self) {
        loop {
            let (pid, how) = match sys::try_wait(-1) {
                Ok(Some(x)) => x,
                Ok(None) => break,
                Err(e) => {
                    log_error!("waitpid failed: {e}");
                    break;
                }
            };
            let Some((id, worker)) = self.pools.remove_worker(pid) else { continue };
            let now = Instant::now();
            let stopping = self.stopping;
            let Some(pool) = self.pools.get_mut(id) else { continue };
            if let Some(slot) = self.sb.slot(pool.slot) {
                slot.workers.store(pool.live(), Ordering::Release);
            }
            if stopping {
                continue;
            }
            let lived = now.saturating_duration_since(worker.started);
            if lived >= CRASH_WINDOW {
                log_notice!("worker pid {pid} of pool {} {how}", pool.desc);
                pool.crash_streak = 0;
                if pool.restart_at.is_none() {
                    self.fill_pool(id);
                }
                continue;
            }
            // A crash. One backoff step per burst of crashes; one log line per step.
            if pool.restart_at.is_none() {
                if pool.last_crash.is_some_and(|t| now.saturating_duration_since(t) > STREAK_RESET) {
                    pool.crash_streak = 0;
                }
                pool.last_crash = Some(now);
                pool.crash_streak = pool.crash_streak.saturating_add(1);
                let delay = backoff_delay(pool.crash_streak);
                pool.restart_at = Some(now + delay);
                log_error!(
                    "worker pid {pid} of pool {} {how} within {} ms of its start; restarting in {} s",
                    pool.desc,
                    lived.as_millis(),
                    delay.as_secs()
                );
            }
            if pool.workers.is_empty() && pool.listener.is_some() {
                // Nobody would ever accept: let queued and new connections fail fast.
                pool.listener = None;
                unlink_ours(&pool.socket_path, pool.socket_id);
            }
        }
    }

    /// Spawns workers until the pool has its target count (within the ceilings).
    fn fill_pool(&mut self, id: u64) {
        let (per_owner, total) = self.ceilings();
        loop {
            let Some(pool) = self.pools.get(id) else { return };
            if pool.live() >= pool.target || pool.listener.is_none() {
                return;
            }
            if self.pools.owner_workers(pool.uid) >= per_owner || self.pools.total_workers() >= total {
                return;
            }
            if !self.spawn_one(id) {
                return;
            }
        }
    }

    /// Forks one worker for pool `id`; on failure schedules a backoff.
    fn spawn_one(&mut self, id: u64) -> bool {
        let dev_null = self.dev_null.as_raw_fd();
        let Some(pool) = self.pools.get_mut(id) else { return false };
        let Some(listener) = pool.listener.as_ref() else { return false };
        match spawn_worker(&pool.exec, listener.as_raw_fd(), dev_null) {
            Ok(pid) => {
                let slot = pool.slot;
                self.pools.add_worker(id, pid, Instant::now());
                if let (Some(s), Some(p)) = (self.sb.slot(slot), self.pools.get(id)) {
                    s.workers.store(p.live(), Ordering::Release);
                    s.spawns.fetch_add(1, Ordering::AcqRel);
                }
                true
            }
            Err(e) => {
                pool.crash_streak = pool.crash_streak.saturating_add(1);
                let delay = backoff_delay(pool.crash_streak);
                pool.restart_at = Some(Instant::now() + delay);
                log_error!("cannot fork a worker for pool {}: {e}; retrying in {} s", pool.desc, delay.as_secs());
                false
            }
        }
    }

    fn run_due_restarts(&mut self) {
        let now = Instant::now();
        let due: Vec<u64> = self
            .pools
            .ids()
            .into_iter()
            .filter(|id| self.pools.get(*id).and_then(|p| p.restart_at).is_some_and(|t| t <= now))
            .collect();
        for id in due {
            let Some(pool) = self.pools.get_mut(id) else { continue };
            pool.restart_at = None;
            if pool.listener.is_none() {
                let _ = sys::unlink_if_exists(&pool.socket_path);
                match sys::unix_listen(&pool.socket_path, POOL_BACKLOG, 0o666) {
                    Ok(fd) => {
                        pool.listener = Some(fd);
                        pool.socket_id = socket_identity(&pool.socket_path);
                    }
                    Err(e) => {
                        pool.crash_streak = pool.crash_streak.saturating_add(1);
                        let delay = backoff_delay(pool.crash_streak);
                        pool.restart_at = Some(now + delay);
                        log_error!("cannot recreate socket of pool {}: {e}; retrying in {} s", pool.desc, delay.as_secs());
                        continue;
                    }
                }
            }
            if pool.target == 0 {
                pool.target = 1;
            }
            self.fill_pool(id);
        }
    }

    fn ceilings(&self) -> (u32, u32) {
        match self.configs.back() {
            Some(c) => (c.max_workers_per_owner, c.max_workers_total),
            None => (0, 0),
        }
    }

    // ---- control channel ----

    fn handle_control(&mut self) {
        let Some(ctl) = self.control.as_ref() else { return };
        let fd = ctl.as_raw_fd();
        let me = sys::geteuid();
        let mut buf = [0u8; 65536];
        loop {
            match sys::recv_with_uid(fd, &mut buf) {
                Ok((0, _)) => {
                    log_notice!("control channel closed (server stopped); shutting down");
                    self.control = None;
                    self.stopping = true;
                    return;
                }
                // Only the privileged parent may configure us; server children that
                // inherited the fd and dropped privileges are ignored.
                Ok((n, Some(uid))) if uid == 0 || uid == me => self.control_reader.push(&buf[..n]),
                Ok((n, uid)) => {
                    log_error!("ignored {n} bytes on the control channel from uid {uid:?}");
                }
                Err(e) if is_would_block(&e) => break,
                Err(e) => {
                    log_error!("control channel read failed: {e}; shutting down");
                    self.control = None;
                    self.stopping = true;
                    return;
                }
            }
        }
        loop {
            match self.control_reader.next_payload() {
                Ok(Some(p)) => match protocol::decode_config(&p) {
                    Ok(cfg) => self.install_config(cfg),
                    Err(e) => log_error!("bad config frame from the server: {e}"),
                },
                Ok(None) => break,
                Err(e) => {
                    log_error!("control channel: {e}; shutting down");
                    self.control = None;
                    self.stopping = true;
                    return;
                }
            }
        }
    }

    fn install_config(&mut self, cfg: HostConfig) {
        if cfg.socket_dir != self.socket_dir {
            log_warn!(
                "SuFcgiSocketDir changed to {}; the supervisor keeps {} until a full restart",
                cfg.socket_dir.display(),
                self.socket_dir.display()
            );
        }
        log_notice!("configuration generation {} installed ({} vhosts)", cfg.generation, cfg.vhosts.len());
        self.configs.retain(|c| c.generation != cfg.generation);
        self.configs.push_back(cfg);
        while self.configs.len() > KEEP_GENERATIONS {
            self.configs.pop_front();
        }
    }

    // ---- clients ----

    fn accept_clients(&mut self) {
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if is_would_block(&e) => return,
                Err(e) => {
                    log_error!("accept on the supervisor socket failed: {e}");
                    return;
                }
            };
            let server_uid = self.configs.back().map_or(0, |c| c.server_uid);
            match sys::peer_cred(stream.as_raw_fd()) {
                Ok((_, uid, _)) if uid == server_uid || uid == 0 => {}
                Ok((pid, uid, _)) => {
                    log_warn!("refused supervisor connection from pid {pid} uid {uid} (not the server uid {server_uid})");
                    continue;
                }
                Err(e) => {
                    log_warn!("cannot read peer credentials: {e}");
                    continue;
                }
            }
            if self.clients.len() >= MAX_CLIENTS {
                log_warn!("too many supervisor connections; refusing one");
                continue;
            }
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            self.clients.push(Conn { stream, reader: FrameReader::new(), out: Vec::new() });
        }
    }

    fn handle_clients(&mut self, polled: &[libc::pollfd]) {
        let mut keep = vec![true; self.clients.len()];
        for (i, pfd) in polled.iter().enumerate() {
            if i >= self.clients.len() || pfd.revents == 0 {
                continue;
            }
            keep[i] = self.service_client(i, pfd.revents);
        }
        let mut i = 0;
        self.clients.retain(|_| {
            let k = keep.get(i).copied().unwrap_or(true);
            i += 1;
            k
        });
    }

    /// Reads, answers and flushes one client; `false` drops it.
    fn service_client(&mut self, i: usize, revents: i16) -> bool {
        if revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            let mut buf = [0u8; 16384];
            let mut eof = false;
            loop {
                match self.clients[i].stream.read(&mut buf) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => {
                        self.clients[i].reader.push(&buf[..n]);
                        if self.clients[i].reader.buffered() > protocol::MAX_FRAME + 4 {
                            break;
                        }
                    }
                    Err(e) if is_would_block(&e) => break,
                    Err(_) => return false,
                }
            }
            loop {
                let payload = match self.clients[i].reader.next_payload() {
                    Ok(Some(p)) => p,
                    Ok(None) => break,
                    Err(e) => {
                        log_warn!("dropping a supervisor client: {e}");
                        return false;
                    }
                };
                let req = match protocol::decode_request(&payload) {
                    Ok(r) => r,
                    Err(e) => {
                        log_warn!("dropping a supervisor client: {e}");
                        return false;
                    }
                };
                match req {
                    Request::Ensure(spec) => {
                        let reply = self.ensure(&spec);
                        match protocol::encode_reply(&reply) {
                            Ok(f) => self.clients[i].out.extend_from_slice(&f),
                            Err(e) => {
                                log_error!("cannot encode a reply: {e}");
                                return false;
                            }
                        }
                        if self.clients[i].out.len() > MAX_OUTBUF {
                            return false;
                        }
                    }
                    Request::SpawnHint { slot, slot_generation } => self.spawn_hint(slot, slot_generation),
                }
            }
            if eof {
                // Best effort flush of what was answered, then drop.
                let c = &mut self.clients[i];
                let _ = c.stream.write(&c.out);
                return false;
            }
        }
        let c = &mut self.clients[i];
        while !c.out.is_empty() {
            match c.stream.write(&c.out) {
                Ok(0) => return false,
                Ok(n) => {
                    c.out.drain(..n);
                }
                Err(e) if is_would_block(&e) => break,
                Err(_) => return false,
            }
        }
        true
    }

    // ---- requests ----

    fn ensure(&mut self, spec: &PoolSpec) -> PoolReply {
        match self.try_ensure(spec) {
            Ok(info) => PoolReply::Ready(info),
            Err(r) => {
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
        let owner = identity::resolve_owner(cfg, vhost, spec, &System, &System)?;
        let checked = identity::check_spec(cfg, spec, &owner, &System)?;
        let key = pool_key(&owner, &vhost.name, spec, &checked);
        let desc = format!("uid {} {} {}", owner.uid, vhost.name, checked.program.display());

        let id = self.pools.id_of(&key);
        if let Some(pool) = self.pools.get(id) {
            if pool.key != key {
                return Err(Refusal::new(500, format!("pool key collision for {desc}")));
            }
            if pool.listener.is_none() {
                return Err(Refusal::new(503, format!("pool {} is backing off after its workers crashed", pool.desc)));
            }
            if pool.live() == 0 && pool.restart_at.is_none() {
                // Emptied while a ceiling blocked its refill: try again now.
                self.fill_pool(id);
            }
            return self.pools.get(id).map(|p| p.info()).ok_or_else(|| Refusal::new(500, "pool vanished"));
        }

        let (per_owner, total) = self.ceilings();
        if self.pools.owner_workers(owner.uid) >= per_owner {
            return Err(Refusal::new(503, format!("uid {} already has {per_owner} workers", owner.uid)));
        }
        if self.pools.total_workers() >= total {
            return Err(Refusal::new(503, format!("the server already has {total} workers")));
        }

        let exec = PreparedExec::new(&checked.program, &spec.args, &spec.workdir, &spec.env, &owner)
            .map_err(|e| Refusal::new(500, format!("cannot prepare worker for {desc}: {e}")))?;
        let socket_path = self.socket_dir.join(format!("{id:016x}.sock"));
        let _ = sys::unlink_if_exists(&socket_path);
        let listener = sys::unix_listen(&socket_path, POOL_BACKLOG, 0o666)
            .map_err(|e| Refusal::new(500, format!("cannot create socket {}: {e}", socket_path.display())))?;
        let socket_id = socket_identity(&socket_path);

        let (slot, slot_generation) = match self.pools.free_slot().and_then(|s| self.sb.slot(s).map(|sl| (s, sl))) {
            Some((s, sl)) => {
                let g = sl.generation.fetch_add(1, Ordering::AcqRel).wrapping_add(1);
                sl.workers.store(0, Ordering::Release);
                sl.max_workers.store(checked.max_workers, Ordering::Release);
                (s, g)
            }
            None => {
                log_warn!("scoreboard full: pool {desc} gets no slot (no spawn hints)");
                (u32::MAX, 0)
            }
        };

        self.pools.insert(Pool {
            key,
            id,
            desc: desc.clone(),
            uid: owner.uid,
            gid: owner.gid,
            socket_path,
            listener: Some(listener),
            socket_id,
            slot,
            slot_generation,
            max_workers: checked.max_workers,
            target: 1,
            workers: Vec::new(),
            exec,
            crash_streak: 0,
            restart_at: None,
            last_crash: None,
        });
        if !self.spawn_one(id) {
            return Err(Refusal::new(503, format!("cannot start a worker for pool {desc}")));
        }
        log_notice!("pool {desc} started (slot {slot}, max {} workers)", checked.max_workers);
        self.pools.get(id).map(|p| p.info()).ok_or_else(|| Refusal::new(500, "pool vanished"))
    }

    fn spawn_hint(&mut self, slot: u32, slot_generation: u32) {
        let Some(id) = self.pools.slot_pool(slot) else { return };
        let Some(sl) = self.sb.slot(slot) else { return };
        let (per_owner, total) = self.ceilings();
        let Some(pool) = self.pools.get(id) else { return };
        if pool.slot_generation != slot_generation || pool.listener.is_none() || pool.restart_at.is_some() {
            return;
        }
        let inflight = sl.inflight.load(Ordering::Acquire);
        let live = pool.live();
        if inflight <= live || live >= pool.max_workers {
            return;
        }
        if self.pools.owner_workers(pool.uid) >= per_owner || self.pools.total_workers() >= total {
            return;
        }
        if let Some(p) = self.pools.get_mut(id) {
            p.target = (live + 1).min(p.max_workers);
        }
        self.spawn_one(id);
    }

    // ---- shutdown ----

    fn shutdown(&mut self) {
        self.stopping = true;
        let pids = self.pools.all_pids();
        for &pid in &pids {
            // Each worker leads its own session/process group (setsid).
            if sys::kill(-pid, libc::SIGTERM).is_err() {
                let _ = sys::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while self.pools.total_workers() > 0 {
            self.reap();
            if self.pools.total_workers() == 0 {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let mut pfd = libc::pollfd { fd: self.sigfd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(100) as i32 + 1) };
            while let Ok(Some(_)) = sys::read_signalfd(self.sigfd.as_raw_fd()) {}
        }
        for pid in self.pools.all_pids() {
            log_warn!("worker pid {pid} ignored SIGTERM; killing it");
            if sys::kill(-pid, libc::SIGKILL).is_err() {
                let _ = sys::kill(pid, libc::SIGKILL);
            }
            let mut st = 0;
            // SAFETY: waiting for our own child; `st` is a valid out-int.
            let _ = sys::cvt_retry(|| unsafe { libc::waitpid(pid, &mut st, 0) });
            let _ = self.pools.remove_worker(pid);
        }
        for p in self.pools.pools() {
            unlink_ours(&p.socket_path, p.socket_id);
        }
        unlink_ours(&self.listener_path, self.listener_id);
        log_notice!("supervisor stopped");
    }
}
