//! For servers that drop root for good after start-up (lighttpd): nobody
//! privileged would be left to restart a supervisor that died. The keeper is
//! that somebody — a small root process, detached from the server (lighttpd
//! waits for all its own children before a graceful restart), that runs the
//! supervisor as its child, starts a new one when it dies (as Apache's root
//! parent does), and stops it when the server exits: the server holds the
//! write end of the keeper's lifeline pipe, which reads EOF then.

use super::log::{log_error, log_notice};
use super::{bind, start, start_on, Listener, SupervisorHandle};
use crate::core::hostconfig::HostConfig;
use crate::core::scoreboard::Scoreboard;
use crate::core::sys;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// How long the keeper lets a stopping supervisor reap its workers.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// A supervisor that dies sooner than this after its start counts as failing.
const STABLE: Duration = Duration::from_secs(10);

/// The server's reference to its keeper.
pub struct Keeper {
    pub pid: libc::pid_t,
    /// Closing it (the server exiting) stops the keeper and the supervisor.
    pub lifeline: OwnedFd,
}

/// Fork the keeper from the privileged, single-threaded server process.
pub fn start_keeper(cfg: &HostConfig, scoreboard: &Scoreboard) -> io::Result<Keeper> {
    // Bound here so that a bad socket directory (or a planted file at the
    // socket path) fails the server's start, as under Apache.
    let first = bind(cfg)?;
    let (life_rd, life_wr) = sys::pipe()?;
    let (pid_rd, pid_wr) = sys::pipe()?;
    let sb = scoreboard.clone();
    let cfg = cfg.clone();
    // SAFETY: the caller guarantees a single-threaded process; the children
    // run only our code and leave through `_exit`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        drop(life_wr);
        drop(pid_rd);
        // SAFETY: still single-threaded (a fresh fork of such a process).
        let keeper = unsafe { libc::fork() };
        if keeper != 0 {
            let _ = sys::write_all_fd(pid_wr.as_raw_fd(), &keeper.to_ne_bytes());
            // SAFETY: leaving the intermediate child without the server's atexit handlers.
            unsafe { libc::_exit(0) };
        }
        drop(pid_wr);
        keep(cfg, sb, life_rd, first);
    }
    drop(first);
    drop(life_rd);
    drop(pid_wr);
    let mut st = 0;
    // SAFETY: reaping the intermediate child we just forked.
    let _ = sys::cvt_retry(|| unsafe { libc::waitpid(pid, &mut st, 0) });
    let mut buf = [0u8; std::mem::size_of::<libc::pid_t>()];
    sys::read_exact_fd(pid_rd.as_raw_fd(), &mut buf).map_err(|e| io::Error::new(e.kind(), format!("the keeper did not start: {e}")))?;
    Ok(Keeper { pid: libc::pid_t::from_ne_bytes(buf), lifeline: life_wr })
}

/// Whether the server is gone (its end of the lifeline closed), waiting up to `ms`.
fn server_gone(lifeline: &OwnedFd, ms: i32) -> bool {
    let mut p = libc::pollfd { fd: lifeline.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd.
    let rc = unsafe { libc::poll(&mut p, 1, ms) };
    rc > 0 && p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0
}

fn keep(cfg: HostConfig, sb: Scoreboard, lifeline: OwnedFd, first: Listener) -> ! {
    sys::reset_signals();
    // The server's own restart signals are not for us.
    for sig in [libc::SIGHUP, libc::SIGUSR1, libc::SIGUSR2, libc::SIGWINCH, libc::SIGPIPE, libc::SIGINT] {
        sys::ignore_signal(sig);
    }
    // The scoreboard's memfd stays: every supervisor this keeper starts maps it.
    sys::close_fds_except(3, &[lifeline.as_raw_fd(), first.fd.as_raw_fd(), sb.as_raw().fd]);
    let mut first = Some(first);
    let mut failures: u32 = 0;
    loop {
        let started = match first.take() {
            Some(l) => start_on(&cfg, &sb, l),
            None => start(&cfg, &sb),
        };
        let h: SupervisorHandle = match started {
            Ok(h) => h,
            Err(e) => {
                log_error!("keeper: cannot start the supervisor: {e}; trying again");
                if server_gone(&lifeline, 1000) {
                    // SAFETY: leaving the keeper.
                    unsafe { libc::_exit(0) };
                }
                continue;
            }
        };
        log_notice!("supervisor started, pid {}", h.pid());
        let started = Instant::now();
        loop {
            if server_gone(&lifeline, 200) {
                log_notice!("keeper: the server exited; stopping the supervisor");
                let _ = h.shutdown(STOP_GRACE);
                // SAFETY: leaving the keeper.
                unsafe { libc::_exit(0) };
            }
            if !h.is_alive() {
                break;
            }
        }
        failures = if started.elapsed() < STABLE { failures.saturating_add(1) } else { 0 };
        let pause = Duration::from_millis(100u64 << failures.min(5)).min(Duration::from_secs(3));
        log_error!("keeper: supervisor pid {} exited; starting a new one in {} ms", h.pid(), pause.as_millis());
        if server_gone(&lifeline, pause.as_millis() as i32) {
            // SAFETY: leaving the keeper.
            unsafe { libc::_exit(0) };
        }
    }
}
