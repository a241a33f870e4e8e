//! The privileged supervisor: forked from the server's root parent, it
//! decides identities, checks files, and spawns/reaps per-pool workers.
//!
//! `start` prepares the socket directory and the supervisor socket in the
//! parent (so errors are reported synchronously), then forks. The child
//! execs the `sufcgi-supervisor` program (see exec.rs) or, without it, runs
//! `server::run` in place; either way its first message on the control
//! channel is the host configuration. The parent keeps a `SupervisorHandle`:
//! closing its control fd (dropping the handle) stops the supervisor.

mod accounts;
mod cgroup;
#[cfg(test)]
mod cgroup_fake;
pub mod cgroup_fs;
mod cgroup_hierarchy;
mod cgroup_v1;
mod cgroup_v2;
pub mod client;
mod customer_log;
pub mod exec;
mod history;
mod keeper;
pub mod log;
mod justify;
mod php;
mod pools;
pub mod protocol;
mod protocol_codec;
mod protocol_status;
pub mod protocol_usage;
pub mod protocol_customer;
mod server;
mod spawn;
mod worker_policy;

#[cfg(test)]
mod tests;

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::core::hostconfig::HostConfig;
use crate::core::scoreboard::Scoreboard;
use crate::core::sys;

pub use client::Client;
pub use keeper::{start_keeper, Keeper};

/// The supervisor's listening socket inside the socket directory.
pub fn supervisor_socket_path(socket_dir: &Path) -> PathBuf {
    socket_dir.join("supervisor.sock")
}

/// Creates (0750 root:`server_gid`) or verifies the socket directory.
/// Refuses a symlink or a directory not owned by root; ownership and mode are
/// fixed through an `O_NOFOLLOW` fd, never through the path.
pub fn prepare_socket_dir(dir: &Path, server_gid: u32) -> io::Result<()> {
    if !dir.is_absolute() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("socket dir {} is not absolute", dir.display())));
    }
    match sys::lstat(dir) {
        Ok(st) if st.is_symlink() => {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("socket dir {} is a symlink", dir.display()),
            ))
        }
        Ok(st) if !st.is_dir() => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("socket dir {} is not a directory", dir.display()),
            ))
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => match sys::mkdir(dir, 0o750) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("cannot create socket dir {}: {e}", dir.display()))),
        },
        Err(e) => return Err(e),
    }
    let fd = sys::open_dir_nofollow(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot open socket dir {}: {e}", dir.display())))?;
    let st = sys::fstat(fd.as_raw_fd())?;
    if st.uid != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("socket dir {} is owned by uid {}, not root", dir.display(), st.uid),
        ));
    }
    // The directory is the gate for the 0666 sockets inside it: enforce it every time.
    sys::fchown(fd.as_raw_fd(), 0, server_gid)?;
    sys::fchmod(fd.as_raw_fd(), 0o750)?;
    Ok(())
}

/// Unlinks every `*.sock` socket left in `dir` by an earlier run (the links
/// themselves; nothing is followed).
fn remove_stale_sockets(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "sock") {
            if let Ok(st) = sys::lstat(&path) {
                if st.is_socket() {
                    let _ = sys::unlink_if_exists(&path);
                }
            }
        }
    }
    Ok(())
}

/// Fork the supervisor from the privileged (root) parent. Must not be called
/// from a multi-threaded process. It dies with the parent (Apache's root
/// parent, or the keeper under lighttpd).
pub fn start(cfg: &HostConfig, scoreboard: &Scoreboard) -> io::Result<SupervisorHandle> {
    start_on(cfg, scoreboard, bind(cfg)?)
}

/// The supervisor's listening socket, bound (with its directory checked)
/// before the supervisor is forked, so that errors reach the server's start.
pub struct Listener {
    pub(super) fd: OwnedFd,
    path: PathBuf,
}

pub fn bind(cfg: &HostConfig) -> io::Result<Listener> {
    prepare_socket_dir(&cfg.socket_dir, cfg.server_gid)?;
    remove_stale_sockets(&cfg.socket_dir)?;
    let path = supervisor_socket_path(&cfg.socket_dir);
    let fd = sys::unix_listen(&path, 1024, 0o666)?;
    Ok(Listener { fd, path })
}

/// `start` on an already bound listener.
pub fn start_on(cfg: &HostConfig, scoreboard: &Scoreboard, bound: Listener) -> io::Result<SupervisorHandle> {
    let Listener { fd: listener, path } = bound;
    let (parent_end, child_end) = sys::socketpair()?;
    // Before fork, so even the first frame carries the sender's credentials.
    sys::set_passcred(child_end.as_raw_fd())?;
    let frame = protocol::encode_config(cfg)?;
    let parent_pid = sys::getpid();
    let plan = exec::ExecPlan::find(parent_pid, &path, scoreboard.as_raw()).map_err(|why| exec::note_in_place(&why)).ok();
    let sb = scoreboard.clone();

    // SAFETY: the caller guarantees a single-threaded process; the child only
    // runs our own code and leaves through exec or `_exit`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let e = io::Error::last_os_error();
        let _ = sys::unlink_if_exists(&path);
        return Err(e);
    }
    if pid == 0 {
        drop(parent_end);
        let sb_fd = sb.as_raw().fd;
        become_supervisor(parent_pid, &[child_end.as_raw_fd(), listener.as_raw_fd(), sb_fd]);
        if let Some(plan) = plan {
            let e = plan.exec(child_end.as_raw_fd(), listener.as_raw_fd(), sb_fd);
            log::log(log::Level::Error, format_args!("cannot exec the supervisor program: {e}; running it in place"));
        }
        let cfg = match exec::read_initial_config(child_end.as_raw_fd()) {
            Ok(c) => c,
            Err(e) => {
                log::log(log::Level::Error, format_args!("supervisor start failed: {e}"));
                // SAFETY: leaving the forked child.
                unsafe { libc::_exit(1) }
            }
        };
        raise_nofile();
        server::run(cfg, sb, child_end, listener, path);
    }
    drop(child_end);
    drop(listener);
    let handle = SupervisorHandle { pid, control: Some(parent_end), detached: false };
    if let Some(fd) = handle.control.as_ref() {
        if let Err(e) = sys::send_all(fd.as_raw_fd(), &frame) {
            let _ = handle.shutdown(Duration::from_secs(1));
            return Err(io::Error::new(e.kind(), format!("the supervisor did not take its configuration: {e}")));
        }
    }
    Ok(handle)
}

/// Process hygiene for the freshly forked supervisor (runs in the child,
/// before any exec): signals, parent death, and only `keep` left open.
fn become_supervisor(parent_pid: libc::pid_t, keep: &[RawFd]) {
    // Inherited server signal handlers must not run here.
    sys::reset_signals();
    // The server signals its whole process group on restart (HUP, USR1, WINCH):
    // the supervisor survives restarts and learns about them over the control
    // channel. Ignored signals stay ignored across exec.
    for sig in [libc::SIGHUP, libc::SIGUSR1, libc::SIGUSR2, libc::SIGWINCH, libc::SIGPIPE] {
        sys::ignore_signal(sig);
    }
    let fail = |what: &str| -> ! {
        log::log(log::Level::Error, format_args!("supervisor setup failed: {what}"));
        // SAFETY: leaving the forked child.
        unsafe { libc::_exit(1) }
    };
    if sys::set_parent_death_signal(libc::SIGTERM).is_err() {
        fail("prctl(PR_SET_PDEATHSIG)");
    }
    // SAFETY: getppid cannot fail.
    if unsafe { libc::getppid() } != parent_pid {
        fail("server exited during start-up");
    }
    // Never let the server's listening sockets (or anything else) reach a worker.
    sys::close_fds_except(3, keep);
    match sys::open_dev_null(libc::O_RDONLY) {
        // SAFETY: dup2 onto fd 0; `null` is a valid open fd.
        Ok(null) => unsafe {
            libc::dup2(null.as_raw_fd(), 0);
        },
        Err(_) => fail("open /dev/null"),
    }
}

/// One fd per server child: lift the soft limit to the hard one (workers get
/// the server's original limit back). In the process that runs the
/// supervisor, after any exec.
fn raise_nofile() {
    if let Ok((soft, hard)) = sys::nofile_limit() {
        let _ = spawn::WORKER_NOFILE.set((soft, hard));
        let want = hard.min(1 << 20);
        if want > soft {
            let _ = sys::set_nofile_soft(want, hard);
        }
    }
}

/// The parent's reference to a running supervisor.
pub struct SupervisorHandle {
    pid: libc::pid_t,
    control: Option<OwnedFd>,
    /// Not our child (a keeper, see keeper.rs): it cannot be waited for.
    detached: bool,
}

impl SupervisorHandle {
    pub fn from_raw(pid: libc::pid_t, control_fd: RawFd) -> SupervisorHandle {
        // SAFETY: the glue hands back exactly what `into_raw` gave it; the fd is
        // open and owned by nobody else.
        let control = if control_fd >= 0 { Some(unsafe { OwnedFd::from_raw_fd(control_fd) }) } else { None };
        SupervisorHandle { pid, control, detached: false }
    }

    /// A process that is not our child (a keeper), known by pid only, to ask whether it still runs.
    pub fn from_detached(pid: libc::pid_t) -> SupervisorHandle {
        SupervisorHandle { pid, control: None, detached: true }
    }

    pub fn into_raw(mut self) -> (libc::pid_t, RawFd) {
        let fd = self.control.take().map_or(-1, |f| f.into_raw_fd());
        (self.pid, fd)
    }

    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// Whether the supervisor process still runs. Reaps it if it exited; a pid
    /// already reaped by someone else (e.g. the server's own reaper) counts as gone.
    pub fn is_alive(&self) -> bool {
        if self.detached {
            // EPERM: it exists but runs as root and we no longer do.
            return match sys::kill(self.pid, 0) {
                Ok(()) => true,
                Err(e) => e.raw_os_error() == Some(libc::EPERM),
            };
        }
        let mut st = 0;
        // SAFETY: `st` is a valid out-int; WNOHANG never blocks.
        let rc = sys::cvt_retry(|| unsafe { libc::waitpid(self.pid, &mut st, libc::WNOHANG) });
        matches!(rc, Ok(0))
    }

    /// Graceful restart: the parent sends the new generation's config over the control channel.
    pub fn send_config(&self, cfg: &HostConfig) -> io::Result<()> {
        let fd = self
            .control
            .as_ref()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "supervisor control channel closed"))?;
        let frame = protocol::encode_config(cfg)?;
        sys::send_all(fd.as_raw_fd(), &frame)
    }

    /// Closes the control channel (the supervisor then stops its workers and
    /// exits) and waits up to `timeout` for it, SIGKILLing it after that.
    pub fn shutdown(mut self, timeout: Duration) -> io::Result<()> {
        self.control = None;
        let deadline = Instant::now() + timeout;
        loop {
            let mut st = 0;
            // SAFETY: `st` is a valid out-int; WNOHANG never blocks.
            match sys::cvt_retry(|| unsafe { libc::waitpid(self.pid, &mut st, libc::WNOHANG) }) {
                Ok(0) => {}
                Ok(_) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::ECHILD) => return Ok(()),
                Err(e) => return Err(e),
            }
            if Instant::now() >= deadline {
                let _ = sys::kill(self.pid, libc::SIGKILL);
                let mut st = 0;
                // SAFETY: waiting for our own child after SIGKILL.
                let _ = sys::cvt_retry(|| unsafe { libc::waitpid(self.pid, &mut st, 0) });
                return Err(io::Error::new(io::ErrorKind::TimedOut, "supervisor did not stop in time; killed"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
