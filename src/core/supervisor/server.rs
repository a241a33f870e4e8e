//! The supervisor's single-threaded event loop.
//!
//! It polls the control channel (config frames from the privileged parent;
//! EOF means the server stopped), a signalfd (SIGCHLD, SIGTERM, SIGINT), its
//! listening socket and the connected server children. Nothing here blocks
//! except `poll` itself; a misbehaving client only ever loses its own connection.

mod customer;

use std::cell::RefCell;
use std::collections::{HashSet, VecDeque};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::accounts::CachedAccounts;
use super::cgroup::Cgroups;
use super::log::{log_error, log_notice, log_warn};
use super::pools::{backoff_delay, base_key, crash_backoff, crashed_at_start, lineage_key, pool_key, Pool, PoolTable, StopReason, Stopping, Worker, CRASH_BURST, STREAK_RESET};
use super::protocol::{self, FrameReader, KillReason, PoolState, PoolStatus, Request, StatusReply, WorkerState, WorkerStatus};
use super::spawn::{spawn_worker, Confinement, PreparedExec};
use crate::core::hostconfig::HostConfig;
use crate::core::identity::{self, Refusal, System};
use crate::core::request::{worker_socket_path, PoolInfo, PoolReply, PoolSpec};
use crate::core::scoreboard::{pool_state, worker_state, PoolSlot, Scoreboard};
use crate::core::sys;

/// Configurations kept for children forked before a graceful restart.
const KEEP_GENERATIONS: usize = 4;
const MAX_CLIENTS: usize = 8192;
const MAX_OUTBUF: usize = 1 << 20;
/// A worker socket is claimed by one request at a time; the backlog only
/// holds the connection made while the worker is still starting.
const WORKER_BACKLOG: i32 = 16;
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// TERM, then KILL after this long (timeouts, reload, idle).
const STOP_GRACE: Duration = Duration::from_secs(3);
/// How often pools are looked at while any has workers or waiters.
const TICK: Duration = Duration::from_millis(250);
/// A worker this young with a connection still pending has not reached accept().
const STARTING_WINDOW: Duration = Duration::from_secs(30);
/// A pool with no worker for this long is forgotten (its slot is freed).
const FORGET_EMPTY_POOL: Duration = Duration::from_secs(600);
/// Longest stderr line passed on; the rest of a longer line is dropped.
const MAX_STDERR_LINE: usize = 4096;
/// Bound on remembered refusal reasons (each is logged once).
const MAX_LOGGED_REFUSALS: usize = 4096;

// The loop's cgroup hooks (cgroup.rs does the work).
mod isolation;

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
    page_size: u64,
    next_tick: Instant,
    logged_refusals: HashSet<String>,
    /// Owners' passwd entries and groups (accounts.rs).
    accounts: CachedAccounts,
    /// Customer logs, pool histories, refused pools (server/customer.rs).
    customer: RefCell<customer::CustomerState>,
    stopping: bool,
    /// Per-owner cgroups, or the fallback.
    cgroups: Cgroups,
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
        // SAFETY: plain sysconf call.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
        let control = UnixStream::from(control);
        control.set_nonblocking(true)?;
        sys::set_passcred(control.as_raw_fd())?;
        let listener = UnixListener::from(listener);
        listener.set_nonblocking(true)?;
        let nslots = sb.len();
        let cgroups = Cgroups::open(cfg.cgroups, &cfg.socket_dir);
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
            page_size: page,
            next_tick: Instant::now() + TICK,
            logged_refusals: HashSet::new(),
            accounts: CachedAccounts::default(),
            customer: RefCell::default(),
            stopping: false,
            cgroups,
        })
    }

    /// A supervisor that replaces a dead one inherits its scoreboard: every
    /// pool in it is gone (its workers died with it). Mark them so, so that
    /// cached references miss and waiting requests wake up and ask again.
    fn reset_scoreboard(&self) {
        // Slots are handed out lowest first, so the used ones (generation > 0)
        // form a prefix; stopping at the first never-used slot keeps the rest
        // of the mapping untouched (no pages faulted in).
        for i in 0..self.sb.len() {
            let Some(slot) = self.slot(i) else { break };
            if slot.generation.load(Ordering::Acquire) == 0 {
                break;
            }
            if slot.state.load(Ordering::Acquire) == pool_state::FREE {
                continue;
            }
            slot.state.store(pool_state::FREE, Ordering::Release);
            slot.generation.fetch_add(1, Ordering::AcqRel);
            for ws in slot.workers.iter() {
                let (epoch, _) = ws.load();
                ws.set(epoch.wrapping_add(1), worker_state::EMPTY);
            }
            slot.notify_idle(i32::MAX);
        }
    }

    fn run(&mut self) {
        self.reset_scoreboard();
        log_notice!("supervisor started (socket dir {})", self.socket_dir.display());
        while !self.stopping {
            let timeout = self.next_tick.saturating_duration_since(Instant::now()).as_millis().min(60_000) as i32 + 1;
            let mut fds: Vec<libc::pollfd> = Vec::with_capacity(3 + self.clients.len());
            let pfd = |fd: RawFd, events: i16| libc::pollfd { fd, events, revents: 0 };
            fds.push(pfd(self.sigfd.as_raw_fd(), libc::POLLIN));
            fds.push(pfd(self.control.as_ref().map_or(-1, |c| c.as_raw_fd()), libc::POLLIN));
            fds.push(pfd(self.listener.as_raw_fd(), libc::POLLIN));
            let pipes = self.stderr_fds();
            for &(fd, _, _) in &pipes {
                fds.push(pfd(fd, libc::POLLIN));
            }
            let first_client = fds.len();
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
            for (k, &(_, id, pid)) in pipes.iter().enumerate() {
                if fds[3 + k].revents != 0 {
                    self.read_stderr(id, pid);
                }
            }
            if fds[0].revents != 0 {
                self.handle_signals();
            }
            if fds[1].revents != 0 {
                self.handle_control();
            }
            // Clients first (their indices match the polled slice), then new ones.
            self.handle_clients(&fds[first_client..]);
            if fds[2].revents != 0 {
                self.accept_clients();
            }
            if Instant::now() >= self.next_tick {
                self.tick();
                self.next_tick = Instant::now() + self.tick_interval();
            }
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

    fn slot(&self, index: u32) -> Option<&PoolSlot> {
        self.sb.slot(index)
    }

    /// A lifecycle event: to the error log, and to the pool's `SuFcgiLog` if it has one.
    fn event(&self, id: u64, msg: &str) {
        let Some(pool) = self.pools.get(id) else { return };
        log_notice!("pool {}: {msg}", pool.desc);
        self.customer_line(id, "event", msg.as_bytes());
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
            let Some((id, index, worker)) = self.pools.remove_worker(pid) else { continue };
            let clean = matches!(how, sys::ExitKind::Exited(0));
            self.worker_gone(id, index, worker, &how.to_string(), clean);
        }
    }

    /// Bookkeeping after a worker of pool `id` exited (`index`: its entry,
    /// None if it was already draining).
    /// `clean`: it exited with status 0 (for the status page's counters).
    fn worker_gone(&mut self, id: u64, index: Option<u32>, mut worker: Worker, how: &str, clean: bool) {
        let now = Instant::now();
        self.drain_stderr(id, &mut worker);
        // The kernel's OOM killer ended it: a memory stop, even if the failed
        // request it was serving was noticed first ("retired").
        let oom = self.cg_worker_gone(id, &mut worker).filter(|_| worker.stopping.as_ref().is_none_or(|s| s.reason == StopReason::Retired));
        if let (Some(st), Some(_)) = (worker.stopping.as_mut(), &oom) {
            st.reason = StopReason::Memory;
        }
        let mut served = 0;
        let mut accepted = false;
        if let (Some(index), Some(slot)) = (index, self.pools.get(id).and_then(|p| self.slot(p.slot))) {
            let ws = &slot.workers[index as usize];
            served = ws.requests.load(Ordering::Acquire);
            // A connection still pending on its socket was never accepted:
            // say so before closing the socket resets it, so the request
            // that made it can tell "never reached the app" from a crash mid-request.
            let mut p = libc::pollfd { fd: worker.listener.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd, zero timeout.
            let pending = unsafe { libc::poll(&mut p, 1, 0) } > 0 && p.revents & libc::POLLIN != 0;
            if pending {
                ws.unaccepted_epoch.store(worker.epoch, Ordering::Release);
            }
            // Given requests and none of them left waiting: it took one.
            accepted = ws.assigned() > 0 && !pending;
            let (epoch, _) = ws.load();
            ws.set(epoch.wrapping_add(1), worker_state::EMPTY);
            ws.pid.store(0, Ordering::Release);
        }
        unlink_ours(&worker.socket_path, worker.socket_id);
        drop(worker.listener);
        let lived = now.saturating_duration_since(worker.started);
        let limits = self.pools.get(id).map(|p| p.limits).unwrap_or(crate::core::limits::Limits::DEFAULT);
        let exit = match (&worker.stopping, &oom) {
            (_, Some(m)) => format!("worker pid {} {how} after {} ms: the kernel ended it for memory ({})", worker.pid, lived.as_millis(), m.limit),
            (Some(st), None) => format!("worker pid {} stopped ({}): {how}", worker.pid, customer::stop_detail(st.reason, &limits)),
            (None, None) => format!("worker pid {} {how} after {} ms", worker.pid, lived.as_millis()),
        };
        self.event(id, &exit);
        self.record_exit(id, &exit);
        let stopping = self.stopping;
        let Some(pool) = self.pools.get_mut(id) else { return };
        match &worker.stopping {
            Some(st) => st.reason.count_in(&mut pool.stopped),
            None if oom.is_some() => StopReason::Memory.count_in(&mut pool.stopped),
            None if stopping => {}
            None if clean => pool.stopped.exited = pool.stopped.exited.saturating_add(1),
            None => pool.stopped.crashed = pool.stopped.crashed.saturating_add(1),
        }
        if pool.processes() == 0 {
            pool.empty_since = Some(now);
        }
        if stopping || worker.stopping.is_some() {
            self.balance(id);
            return;
        }
        // A crash at start: dead before it took any connection. A worker
        // that accepted a request (however soon it was killed) or served and
        // then exited on its own is not one.
        if !crashed_at_start(lived, served, accepted) {
            pool.crash_streak = 0;
        } else if pool.restart_at.is_none() {
            if pool.last_crash.is_some_and(|t| now.saturating_duration_since(t) > STREAK_RESET) {
                pool.crash_streak = 0;
            }
            pool.last_crash = Some(now);
            pool.crash_streak = pool.crash_streak.saturating_add(1);
            let streak = pool.crash_streak;
            match crash_backoff(streak) {
                // Not a burst yet: start another at once (balance, below).
                None => self.event(id, &format!(
                    "worker crashed within {} ms of its start, before taking a request; starting another ({streak} of {CRASH_BURST} such crashes in a row back the pool off)",
                    lived.as_millis()
                )),
                // A burst: one backoff step per crash, one log line per step.
                Some(delay) => {
                    pool.restart_at = Some(now + delay);
                    let (slot_idx, live) = (pool.slot, pool.live());
                    if let Some(slot) = self.slot(slot_idx) {
                        if live == 0 {
                            slot.backoff_until.store(sys::monotonic_secs().saturating_add(delay.as_secs() as u32), Ordering::Release);
                            slot.state.store(pool_state::BACKOFF, Ordering::Release);
                        }
                    }
                    self.event(id, &format!("worker crashed within {} ms of its start; backing off, next start in {} s", lived.as_millis(), delay.as_secs()));
                }
            }
        }
        // Waiters re-check: a worker may be needed, or the pool is backing off.
        if let Some(slot) = self.pools.get(id).and_then(|p| self.slot(p.slot)) {
            slot.notify_idle(i32::MAX);
        }
        self.balance(id);
    }

    // ---- worker stderr ----

    fn stderr_fds(&self) -> Vec<(RawFd, u64, u32)> {
        let mut v = Vec::new();
        for p in self.pools.pools() {
            for w in p.workers.iter().flatten().chain(p.draining.iter()) {
                if let Some(fd) = w.stderr.as_ref() {
                    v.push((fd.as_raw_fd(), p.id, w.pid as u32));
                }
            }
        }
        v
    }

    fn read_stderr(&mut self, id: u64, pid: u32) {
        let mut lines = Vec::new();
        if let Some(w) = self.worker_by_pid_mut(id, pid as libc::pid_t) {
            collect_stderr(w, &mut lines);
        }
        self.emit_stderr(id, pid as libc::pid_t, &lines);
    }

    fn drain_stderr(&mut self, id: u64, w: &mut Worker) {
        let mut lines = Vec::new();
        collect_stderr(w, &mut lines);
        if !w.stderr_buf.is_empty() {
            lines.push(std::mem::take(&mut w.stderr_buf));
        }
        self.emit_stderr(id, w.pid, &lines);
    }

    fn emit_stderr(&self, id: u64, pid: libc::pid_t, lines: &[Vec<u8>]) {
        for l in lines {
            self.customer_stderr(id, pid, l);
        }
    }

    // ---- the periodic look at every pool ----

    fn tick_interval(&self) -> Duration {
        let busy = self.pools.pools().any(|p| p.processes() > 0 || p.restart_at.is_some() || p.retiring);
        if busy {
            TICK
        } else {
            Duration::from_secs(5)
        }
    }

    fn tick(&mut self) {
        let now = Instant::now();
        let now_s = sys::monotonic_secs();
        for id in self.pools.ids() {
            let Some(pool) = self.pools.get(id) else { continue };
            // Backoff over: try again.
            if pool.restart_at.is_some_and(|t| t <= now) {
                let slot_idx = pool.slot;
                if let Some(p) = self.pools.get_mut(id) {
                    p.restart_at = None;
                }
                if let Some(slot) = self.slot(slot_idx) {
                    if slot.state.load(Ordering::Acquire) == pool_state::BACKOFF {
                        slot.state.store(pool_state::ACTIVE, Ordering::Release);
                    }
                }
                self.spawn_into(id);
            }
            self.look_at_workers(id, now, now_s);
            self.balance(id);
            let Some(pool) = self.pools.get(id) else { continue };
            let forget = pool.processes() == 0
                && (pool.retiring || pool.empty_since.is_some_and(|t| now.saturating_duration_since(t) >= FORGET_EMPTY_POOL))
                && pool.restart_at.is_none();
            if forget {
                self.forget_pool(id);
            }
        }
        self.cgroups.tick(now);
        self.customer_tick();
    }

    /// Stop what should stop: retired workers, idle ones beyond the minimum
    /// or of a retiring pool, ones over their memory limit; escalate TERM to
    /// KILL after the grace period.
    fn look_at_workers(&mut self, id: u64, now: Instant, now_s: u32) {
        let Some(pool) = self.pools.get(id) else { return };
        let Some(slot) = self.slot(pool.slot) else { return };
        let limits = pool.limits;
        let retiring = pool.retiring;
        let mut live = pool.live();
        let mut to_stop: Vec<(u32, StopReason, bool)> = Vec::new();
        let mut to_kill: Vec<libc::pid_t> = Vec::new();
        for w in &pool.draining {
            if let Some(st) = &w.stopping {
                if !st.killed && now.saturating_duration_since(st.since) >= STOP_GRACE {
                    to_kill.push(w.pid);
                }
            }
        }
        for (i, w) in pool.workers.iter().enumerate() {
            let Some(w) = w else { continue };
            let ws = &slot.workers[i];
            let (_, state) = ws.load();
            if state == worker_state::RETIRED {
                let served = ws.requests.load(Ordering::Acquire);
                let reason = if retiring {
                    StopReason::Reload
                } else if limits.max_requests > 0 && served >= limits.max_requests {
                    StopReason::MaxRequests
                } else {
                    StopReason::Retired
                };
                to_stop.push((i as u32, reason, false));
                live -= 1;
                continue;
            }
            // A parked worker serves nothing: idle, for stopping it too (its
            // holder's kept connection then ends).
            if state == worker_state::IDLE || state == worker_state::PARKED {
                if retiring {
                    to_stop.push((i as u32, StopReason::Reload, false));
                    live -= 1;
                    continue;
                }
                let idle_for = now_s.saturating_sub(ws.last_used.load(Ordering::Acquire));
                if live > limits.min_workers && idle_for >= limits.idle_timeout {
                    to_stop.push((i as u32, StopReason::Idle, false));
                    live -= 1;
                    continue;
                }
            }
            // Where the kernel holds the limit (memory.max), it kills; else the watch.
            if limits.memory_limit > 0 && !self.cgroups.kernel_memory() {
                if let Some(rss) = rss_bytes(w.pid, self.page_size) {
                    if rss > limits.memory_limit {
                        to_stop.push((i as u32, StopReason::Memory, true));
                        live -= 1;
                        self.event(id, &format!("worker pid {} uses {} MiB, above SuFcgiMemoryLimit {} MiB", w.pid, rss >> 20, limits.memory_limit >> 20));
                    }
                }
            }
        }
        for pid in to_kill {
            let _ = signal_group(pid, libc::SIGKILL);
            self.cg_signal_pid(id, pid, libc::SIGKILL);
            if let Some(w) = self.worker_by_pid_mut(id, pid) {
                if let Some(st) = w.stopping.as_mut() {
                    st.killed = true;
                }
            }
        }
        for (i, reason, hard) in to_stop {
            self.stop_worker(id, i, reason, hard);
        }
    }

    fn worker_by_pid_mut(&mut self, id: u64, pid: libc::pid_t) -> Option<&mut Worker> {
        let p = self.pools.get_mut(id)?;
        p.workers.iter_mut().flatten().chain(p.draining.iter_mut()).find(|w| w.pid == pid)
    }

    /// Take worker `index` out of service (no request can claim it any more)
    /// and signal it: TERM (KILL after the grace period), or KILL at once.
    fn stop_worker(&mut self, id: u64, index: u32, reason: StopReason, hard: bool) {
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

    fn forget_pool(&mut self, id: u64) {
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
        pool.workers.iter().flatten().any(|w| {
            if now.saturating_duration_since(w.started) > STARTING_WINDOW {
                return false;
            }
            let mut p = libc::pollfd { fd: w.listener.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd, zero timeout.
            unsafe { libc::poll(&mut p, 1, 0) > 0 && p.revents & libc::POLLIN != 0 }
        })
    }

    /// Spawn what the pool needs now: its minimum, or one more worker for
    /// requests that are waiting (one at a time while a worker is starting).
    fn balance(&mut self, id: u64) {
        if self.stopping {
            return;
        }
        loop {
            let Some(pool) = self.pools.get(id) else { return };
            if pool.retiring || pool.restart_at.is_some() {
                return;
            }
            let Some(slot) = self.slot(pool.slot) else { return };
            let live = pool.live();
            let below_min = live < pool.limits.min_workers;
            // More requests waiting than idle workers to take them. (Not "none
            // idle": where requests are handed a released worker at once, as
            // lighttpd's event loop does, a worker is idle for moments
            // between them, and a pool looked at then would never grow.)
            let waiting = slot.waiting.load(Ordering::Acquire) as usize;
            let idle = slot.workers[..pool.workers.len()].iter().filter(|w| matches!(w.load().1, worker_state::IDLE | worker_state::PARKED)).count();
            let wanted = below_min || (waiting > idle && live < pool.limits.max_workers && !self.starting(pool));
            if !wanted || !self.spawn_into(id) {
                return;
            }
            if !below_min {
                return;
            }
        }
    }

    /// Forks one worker into the pool's first free entry (within the ceilings).
    fn spawn_into(&mut self, id: u64) -> bool {
        let (per_owner, total) = self.ceilings();
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
        if self.pools.owner_workers(pool.uid) >= per_owner || self.pools.total_workers() >= total {
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
                pool.crash_streak = pool.crash_streak.saturating_add(1);
                let delay = backoff_delay(pool.crash_streak);
                pool.restart_at = Some(Instant::now() + delay);
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
        self.refresh_owner_limits();
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
                    Request::Nudge { slot, slot_generation } => self.nudge(slot, slot_generation),
                    Request::Kill { slot, slot_generation, worker, epoch, reason } => {
                        self.kill(slot, slot_generation, worker, epoch, reason)
                    }
                    Request::Note(n) => self.handle_note(&n),
                    Request::Status { generation, vhost, dir, userdir_user } => {
                        let reply = self.status(generation, vhost, dir, userdir_user);
                        match protocol::encode_status_reply(&reply) {
                            Ok(f) => self.clients[i].out.extend_from_slice(&f),
                            Err(e) => {
                                log_error!("cannot encode a status reply: {e}");
                                return false;
                            }
                        }
                        if self.clients[i].out.len() > MAX_OUTBUF + protocol::MAX_FRAME {
                            return false;
                        }
                    }
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
            texts.push((f.parent().map(Path::to_path_buf), super::justify::read_config_file(f, owner.uid).map_err(Refusal::forbidden)?));
        }
        let mut sources: Vec<super::justify::Source<'_>> =
            texts.iter().map(|(dir, t)| super::justify::Source { dir: dir.as_deref(), lines: crate::core::htaccess::parse(t) }).collect();
        sources.extend(cfg.host_directives.iter().map(super::justify::Source::from_host));
        super::justify::justify(spec, &sources).map_err(|e| Refusal::forbidden(format!("refusing a pool nobody configured: {e}")))?;
        let (env, limits) = super::php::take_over_recycling(&checked.program, &spec.env, checked.limits);
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
            if let Some(t) = pool.restart_at {
                if pool.live() == 0 {
                    let secs = t.saturating_duration_since(Instant::now()).as_secs() + 1;
                    return Err(Refusal::new(503, format!("pool {} is backing off after its workers crashed (next start in {secs} s)", pool.desc)));
                }
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
        let (per_owner, total) = self.ceilings();
        if self.pools.owner_workers(owner.uid) >= per_owner {
            return Err(Refusal::new(503, format!("uid {} already has {per_owner} workers", owner.uid)));
        }
        if self.pools.total_workers() >= total {
            return Err(Refusal::new(503, format!("the server already has {total} workers")));
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
        let mut limits = checked.limits;
        // The scoreboard has room for the ceiling it was created with (see
        // `Scoreboard::capacity_note` for a ceiling raised since).
        limits.max_workers = limits.max_workers.min(self.sb.worker_capacity());
        limits.min_workers = limits.min_workers.min(limits.max_workers);
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
            crash_streak: 0,
            restart_at: None,
            last_crash: None,
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

    /// A newer version replaced this pool: idle workers stop now, busy ones
    /// when their request is done (children release them as retired).
    fn retire_pool(&mut self, id: u64) {
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

    /// Resolve a (slot, generation) a child quoted to the pool it names.
    fn pool_of_slot(&self, slot: u32, slot_generation: u32) -> Option<u64> {
        let id = self.pools.slot_pool(slot)?;
        (self.pools.get(id)?.slot_generation == slot_generation).then_some(id)
    }

    fn nudge(&mut self, slot: u32, slot_generation: u32) {
        let Some(id) = self.pool_of_slot(slot, slot_generation) else { return };
        self.look_at_workers(id, Instant::now(), sys::monotonic_secs());
        self.balance(id);
    }

    fn kill(&mut self, slot: u32, slot_generation: u32, index: u32, epoch: u32, reason: KillReason) {
        let Some(id) = self.pool_of_slot(slot, slot_generation) else { return };
        let matches = self
            .pools
            .get(id)
            .and_then(|p| p.workers.get(index as usize))
            .and_then(|w| w.as_ref())
            .is_some_and(|w| w.epoch == epoch);
        if matches {
            let why = match reason {
                KillReason::Timeout => StopReason::Timeout,
            };
            self.stop_worker(id, index, why, false);
        }
        self.balance(id);
    }

    // ---- the status page ----

    /// Every pool, or (with `dir`) only the pools of the owner the supervisor
    /// would give workers in `dir` on that vhost: the same rules as for a
    /// pool, derived here, never taken from the child. Read-only.
    fn status(&self, generation: u64, vhost: u32, dir: Option<PathBuf>, userdir_user: Option<Vec<u8>>) -> StatusReply {
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
        StatusReply::Pools { pools, truncated: false, isolation: self.cgroups.isolation(), owners }
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
        } else if p.restart_at.is_some() {
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

    // ---- shutdown ----

    fn shutdown(&mut self) {
        self.stopping = true;
        let pids = self.pools.all_pids();
        for &pid in &pids {
            let _ = signal_group(pid, libc::SIGTERM);
            self.cg_signal_pid_any(pid, libc::SIGTERM);
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
            let _ = signal_group(pid, libc::SIGKILL);
            self.cg_signal_pid_any(pid, libc::SIGKILL);
            let mut st = 0;
            // SAFETY: waiting for our own child; `st` is a valid out-int.
            let _ = sys::cvt_retry(|| unsafe { libc::waitpid(pid, &mut st, 0) });
            if let Some((id, index, w)) = self.pools.remove_worker(pid) {
                self.worker_gone(id, index, w, "killed", false);
            }
        }
        // What workers started and left behind, and every group.
        self.cgroups.shutdown();
        unlink_ours(&self.listener_path, self.listener_id);
        log_notice!("supervisor stopped");
    }
}

/// Signal a worker's process group (it leads one: setsid), or just the worker.
/// Only pids this supervisor forked are ever passed here.
fn signal_group(pid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
    sys::kill(-pid, sig).or_else(|_| sys::kill(pid, sig))
}

/// Resident set size of `pid`, from /proc/PID/statm.
fn rss_bytes(pid: libc::pid_t, page: u64) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page)
}

/// Complete lines read from a worker's stderr pipe (non-blocking).
fn collect_stderr(w: &mut Worker, out: &mut Vec<Vec<u8>>) {
    let Some(fd) = w.stderr.as_ref() else { return };
    let mut buf = [0u8; 8192];
    loop {
        // SAFETY: reading into a stack buffer from our own pipe fd.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
        if n == 0 {
            w.stderr = None;
            break;
        }
        if n < 0 {
            break;
        }
        for &b in &buf[..n as usize] {
            if b == b'\n' {
                out.push(std::mem::take(&mut w.stderr_buf));
            } else if w.stderr_buf.len() < MAX_STDERR_LINE {
                w.stderr_buf.push(b);
            }
        }
        if out.len() > 256 {
            break;
        }
    }
}
