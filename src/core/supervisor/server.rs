//! The supervisor's single-threaded event loop.
//!
//! It polls the control channel (config frames from the privileged parent;
//! EOF means the server stopped), a signalfd (SIGCHLD, SIGTERM, SIGINT), its
//! listening socket, the connected server children and the workers' stderr
//! pipes. Nothing here blocks except `poll` itself; a misbehaving client only
//! ever loses its own connection.
//!
//! What the loop does with each lives beside it in `server/`: the control
//! channel (`control`), children's requests (`clients`, pool creation in
//! `ensure`), the process manager (`workers`: spawning and stopping, `reap`:
//! exits and the crash backoff) carrying out what `worker_policy` decides,
//! the workers' stderr (`stderr`), the status report (`status`), the
//! customer's side (`customer`) and cgroups (`isolation`).

mod clients;
mod control;
mod customer;
mod ensure;
mod isolation;
mod reap;
mod status;
mod stderr;
mod workers;

use std::cell::RefCell;
use std::collections::{HashSet, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::accounts::CachedAccounts;
use super::cgroup::Cgroups;
use super::log::{log_error, log_notice, log_warn};
use super::pools::PoolTable;
use super::protocol::FrameReader;
use super::worker_policy::TICK;
use crate::core::hostconfig::HostConfig;
use crate::core::scoreboard::{pool_state, worker_state, PoolSlot, Scoreboard};
use crate::core::sys;

const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

pub(super) struct Server {
    configs: VecDeque<HostConfig>,
    socket_dir: PathBuf,
    control: Option<UnixStream>,
    control_reader: FrameReader,
    sigfd: OwnedFd,
    listener: UnixListener,
    listener_id: (u64, u64),
    listener_path: PathBuf,
    clients: Vec<clients::Conn>,
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

/// Whether a connection waits on a worker's listening socket: the worker
/// has not accepted it (yet).
fn has_pending_connection(listener: &OwnedFd) -> bool {
    sys::poll_fd(listener.as_raw_fd(), libc::POLLIN, 0).is_ok_and(|rev| rev & libc::POLLIN != 0)
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
        log_notice!("scheduler slices: {}", crate::core::latency::state_text(cfg.short_slices, crate::core::latency::kernel_has_slices()));
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
                fds.push(pfd(c.stream.as_raw_fd(), c.poll_events()));
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

    /// Resolve a (slot, generation) a child quoted to the pool it names.
    fn pool_of_slot(&self, slot: u32, slot_generation: u32) -> Option<u64> {
        let id = self.pools.slot_pool(slot)?;
        (self.pools.get(id)?.slot_generation == slot_generation).then_some(id)
    }

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
            let _ = sys::poll_fd(self.sigfd.as_raw_fd(), libc::POLLIN, left.as_millis().min(100) as i32 + 1);
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
                self.worker_gone(id, index, w, "killed", false, Some(libc::SIGKILL));
            }
        }
        // What workers started and left behind, and every group.
        self.cgroups.shutdown();
        unlink_ours(&self.listener_path, self.listener_id);
        log_notice!("supervisor stopped");
    }
}
