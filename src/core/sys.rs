//! Thin, checked wrappers over the libc calls the supervisor needs.
//!
//! Everything that touches raw file descriptors, credentials or the
//! passwd database goes through here so the `unsafe` stays in one place:
//! this file and its two parts, sys/socket.rs (Unix sockets) and
//! sys/users.rs (passwd and group lookups), re-exported below.
//! Functions marked "async-signal-safe" may be used between `fork` and
//! `execve`/`_exit`: they neither allocate nor take locks.

// libc's field and constant types differ between targets; the casts keep this portable.
#![allow(clippy::unnecessary_cast)]

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub mod sched;
mod socket;
mod users;

// Callers name every wrapper `sys::…`, whichever file holds it.
pub use socket::{
    connect_unix_nonblocking, discard, peek_nonblocking, peer_cred, recv_nonblocking, recv_with_uid, send_all,
    send_nonblocking, set_passcred, socketpair, unix_listen,
};
pub use users::{getgrnam_gid, getgrouplist, getpwnam, getpwuid, Passwd};

/// Turns a `-1` return into the current `errno`.
pub fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `cvt` that retries on `EINTR`.
pub fn cvt_retry<F: FnMut() -> libc::c_int>(mut f: F) -> io::Result<libc::c_int> {
    loop {
        match cvt(f()) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// A path or byte string as a C string; interior NUL is an `InvalidInput` error.
pub fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "embedded NUL byte"))
}

pub fn cpath(path: &Path) -> io::Result<CString> {
    cstring(path.as_os_str().as_bytes())
}

/// The parts of `struct stat` the identity checks look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStat {
    pub dev: u64,
    pub ino: u64,
    /// Type and permission bits (`st_mode`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u64,
    pub size: u64,
    /// Modification time in nanoseconds since the epoch (reload detection).
    pub mtime_ns: i64,
}

impl FileStat {
    fn from_raw(st: &libc::stat) -> FileStat {
        FileStat {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            mode: st.st_mode as u32,
            uid: st.st_uid,
            gid: st.st_gid,
            nlink: st.st_nlink as u64,
            size: st.st_size as u64,
            mtime_ns: (st.st_mtime as i64).saturating_mul(1_000_000_000).saturating_add(st.st_mtime_nsec as i64),
        }
    }
    fn file_type(&self) -> u32 {
        self.mode & libc::S_IFMT as u32
    }
    pub fn is_file(&self) -> bool {
        self.file_type() == libc::S_IFREG as u32
    }
    pub fn is_dir(&self) -> bool {
        self.file_type() == libc::S_IFDIR as u32
    }
    pub fn is_symlink(&self) -> bool {
        self.file_type() == libc::S_IFLNK as u32
    }
    pub fn is_socket(&self) -> bool {
        self.file_type() == libc::S_IFSOCK as u32
    }
}

/// `lstat(2)`: never follows a final symlink.
pub fn lstat(path: &Path) -> io::Result<FileStat> {
    let c = cpath(path)?;
    // SAFETY: zeroed `stat` is a valid out-buffer; `c` is NUL-terminated and outlives the call.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        cvt(libc::lstat(c.as_ptr(), &mut st))?;
        Ok(FileStat::from_raw(&st))
    }
}

pub fn fstat(fd: RawFd) -> io::Result<FileStat> {
    // SAFETY: zeroed `stat` is a valid out-buffer; a bad fd only yields EBADF.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        cvt(libc::fstat(fd, &mut st))?;
        Ok(FileStat::from_raw(&st))
    }
}

pub fn set_nonblocking(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: fcntl on an fd we were handed; errors are reported.
    unsafe {
        let flags = cvt(libc::fcntl(fd, libc::F_GETFL))?;
        let flags = if on { flags | libc::O_NONBLOCK } else { flags & !libc::O_NONBLOCK };
        cvt(libc::fcntl(fd, libc::F_SETFL, flags))?;
    }
    Ok(())
}

pub fn open_dev_null(flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: literal NUL-terminated path; result checked.
    let fd = cvt(unsafe { libc::open(c"/dev/null".as_ptr(), flags | libc::O_CLOEXEC) })?;
    // SAFETY: freshly opened fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An anonymous shared-memory file of `len` bytes (close-on-exec), for
/// mappings that must outlive an exec in another process. Its size is
/// sealed: a process that inherits the fd (a server child) cannot shrink it
/// under another's mapping, which would make that process fault (SIGBUS).
pub fn memfd_sized(name: &std::ffi::CStr, len: u64) -> io::Result<OwnedFd> {
    // SAFETY: NUL-terminated name; result checked.
    let fd = cvt(unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) })?;
    // SAFETY: freshly created fd owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: plain syscall on our own fd.
    cvt_retry(|| unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) })?;
    // SAFETY: F_ADD_SEALS on our own memfd.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL) })?;
    Ok(fd)
}

/// Whether a memfd's size is sealed (see `memfd_sized`).
pub fn size_sealed(fd: RawFd) -> bool {
    // SAFETY: F_GET_SEALS only reads.
    let seals = unsafe { libc::fcntl(fd, libc::F_GET_SEALS) };
    seals >= 0 && seals & libc::F_SEAL_SHRINK != 0
}

/// Places `fds[i]` at descriptor `i + first` (without close-on-exec), for a
/// child about to exec. Async-signal-safe: it first moves every source above
/// the targets, so a source that sits on another's target is never lost.
pub fn place_fds(fds: &[RawFd], first: RawFd) -> io::Result<()> {
    let above = first + fds.len() as RawFd;
    let mut moved = [0 as RawFd; 8];
    if fds.len() > moved.len() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "too many descriptors"));
    }
    for (i, &fd) in fds.iter().enumerate() {
        // SAFETY: F_DUPFD_CLOEXEC on a caller-owned fd; result checked.
        moved[i] = cvt(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, above) })?;
    }
    for (i, &fd) in moved[..fds.len()].iter().enumerate() {
        // SAFETY: dup2 onto a fixed number clears close-on-exec there.
        cvt(unsafe { libc::dup2(fd, first + i as RawFd) })?;
        // SAFETY: our own temporary copy.
        unsafe { libc::close(fd) };
    }
    Ok(())
}

/// Closes every fd >= `from` except those in `keep`. Async-signal-safe.
pub fn close_fds_except(from: RawFd, keep: &[RawFd]) {
    // `keep` is tiny; walk the gaps between kept fds in ascending order without allocating.
    let mut lo = from;
    loop {
        let next_keep = keep.iter().copied().filter(|&k| k >= lo).min();
        match next_keep {
            Some(k) => {
                if k > lo {
                    close_range(lo, k - 1);
                }
                lo = k + 1;
            }
            None => {
                close_range(lo, RawFd::MAX);
                return;
            }
        }
    }
}

/// Closes fds in `lo..=hi`. Async-signal-safe; falls back to a close loop on old kernels.
fn close_range(lo: RawFd, hi: RawFd) {
    // SAFETY: close_range only closes descriptors; invalid ranges fail with EINVAL.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, lo as libc::c_uint, hi as libc::c_uint, 0 as libc::c_uint) };
    if rc == 0 {
        return;
    }
    // SAFETY: rlimit is plain data; all zeroes is a valid value.
    let mut rl: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: getrlimit writes into a local struct.
    let max = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } == 0 && rl.rlim_cur != libc::RLIM_INFINITY {
        rl.rlim_cur.min(1 << 20) as RawFd
    } else {
        65536
    };
    let top = hi.min(max);
    let mut fd = lo;
    while fd <= top {
        // SAFETY: closing an fd number; EBADF for unused numbers is harmless.
        unsafe { libc::close(fd) };
        fd += 1;
    }
}

/// Restores every signal to its default disposition and empties the mask.
/// Async-signal-safe (sigaction/sigprocmask only).
pub fn reset_signals() {
    // SAFETY: a zeroed sigaction with SIG_DFL is valid; SIGKILL/SIGSTOP just fail with EINVAL.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut sa.sa_mask);
        for sig in 1..65 {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

pub fn ignore_signal(sig: libc::c_int) {
    // SAFETY: installing SIG_IGN has no memory-safety requirements.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = libc::SIG_IGN;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, std::ptr::null_mut());
    }
}

/// Blocks `sigs` and returns a non-blocking, close-on-exec signalfd for them.
pub fn signalfd(sigs: &[libc::c_int]) -> io::Result<OwnedFd> {
    // SAFETY: sigset manipulation on a local; signalfd result is checked and then owned.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in sigs {
            libc::sigaddset(&mut set, s);
        }
        cvt(libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()))?;
        let fd = cvt(libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC))?;
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// Reads one pending signal number from a signalfd; `None` when none is pending.
pub fn read_signalfd(fd: RawFd) -> io::Result<Option<u32>> {
    // SAFETY: signalfd_siginfo is plain data; read writes at most its size.
    unsafe {
        let mut info: libc::signalfd_siginfo = std::mem::zeroed();
        let n = libc::read(
            fd,
            &mut info as *mut libc::signalfd_siginfo as *mut libc::c_void,
            std::mem::size_of::<libc::signalfd_siginfo>(),
        );
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
                _ => Err(e),
            };
        }
        if n as usize != std::mem::size_of::<libc::signalfd_siginfo>() {
            return Ok(None);
        }
        Ok(Some(info.ssi_signo))
    }
}

/// How a child ended, as `waitpid` told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    Exited(i32),
    Signaled(i32),
}

impl std::fmt::Display for ExitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitKind::Exited(s) => write!(f, "exited with status {s}"),
            ExitKind::Signaled(s) => write!(f, "killed by signal {s}"),
        }
    }
}

/// `waitpid(pid, WNOHANG)`: `Ok(None)` when nothing (more) has exited.
pub fn try_wait(pid: libc::pid_t) -> io::Result<Option<(libc::pid_t, ExitKind)>> {
    let mut status: libc::c_int = 0;
    // SAFETY: `status` is a valid out-int.
    let rc = cvt_retry(|| unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) });
    match rc {
        Ok(0) => Ok(None),
        Ok(p) => {
            let kind = if libc::WIFSIGNALED(status) {
                ExitKind::Signaled(libc::WTERMSIG(status))
            } else {
                ExitKind::Exited(libc::WEXITSTATUS(status))
            };
            Ok(Some((p, kind)))
        }
        Err(e) if e.raw_os_error() == Some(libc::ECHILD) => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn kill(pid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: kill has no memory-safety requirements.
    cvt(unsafe { libc::kill(pid, sig) }).map(|_| ())
}

/// `prctl(PR_SET_PDEATHSIG)`. Async-signal-safe.
pub fn set_parent_death_signal(sig: libc::c_int) -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    cvt(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) }).map(|_| ())
}

/// Unlinks `path` itself (never what a symlink points at); a missing path is fine.
pub fn unlink_if_exists(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Opens a directory without following a final symlink (`O_DIRECTORY|O_NOFOLLOW`).
pub fn open_dir_nofollow(path: &Path) -> io::Result<OwnedFd> {
    let c = cpath(path)?;
    // SAFETY: `c` is NUL-terminated; result checked and then owned.
    let fd = cvt(unsafe {
        libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
    })?;
    // SAFETY: freshly opened fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn fchown(fd: RawFd, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: integer arguments only.
    cvt(unsafe { libc::fchown(fd, uid, gid) }).map(|_| ())
}

pub fn fchmod(fd: RawFd, mode: u32) -> io::Result<()> {
    // SAFETY: integer arguments only.
    cvt(unsafe { libc::fchmod(fd, mode as libc::mode_t) }).map(|_| ())
}

pub fn mkdir(path: &Path, mode: u32) -> io::Result<()> {
    let c = cpath(path)?;
    // SAFETY: `c` is NUL-terminated.
    cvt(unsafe { libc::mkdir(c.as_ptr(), mode as libc::mode_t) }).map(|_| ())
}

/// Calls `op` on what is left of `buf` until all of it is written, retrying
/// EINTR. Async-signal-safe: no allocation.
fn write_loop(mut buf: &[u8], mut op: impl FnMut(&[u8]) -> isize) -> io::Result<()> {
    while !buf.is_empty() {
        let n = op(buf);
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// Writes all of `buf` to `fd`; async-signal-safe (used for child error messages too).
pub fn write_all_fd(fd: RawFd, buf: &[u8]) -> io::Result<()> {
    // SAFETY: `b` is valid for `b.len()` bytes.
    write_loop(buf, |b| unsafe { libc::write(fd, b.as_ptr() as *const libc::c_void, b.len()) })
}

/// Fills `buf` from `fd`; an early EOF is `UnexpectedEof`.
pub fn read_exact_fd(fd: RawFd, buf: &mut [u8]) -> io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: the destination is the unfilled tail of `buf`.
        let n = unsafe { libc::read(fd, buf[got..].as_mut_ptr() as *mut libc::c_void, buf.len() - got) };
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed early"));
        }
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        got += n as usize;
    }
    Ok(())
}

/// `RLIMIT_NOFILE` as (soft, hard).
pub fn nofile_limit() -> io::Result<(u64, u64)> {
    // SAFETY: getrlimit writes into a local struct.
    unsafe {
        let mut rl: libc::rlimit = std::mem::zeroed();
        cvt(libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl))?;
        Ok((rl.rlim_cur as u64, rl.rlim_max as u64))
    }
}

/// Sets the soft `RLIMIT_NOFILE`, keeping the hard limit. Async-signal-safe.
pub fn set_nofile_soft(soft: u64, hard: u64) -> io::Result<()> {
    let rl = libc::rlimit { rlim_cur: soft as libc::rlim_t, rlim_max: hard as libc::rlim_t };
    // SAFETY: setrlimit reads a local struct.
    cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) }).map(|_| ())
}

/// `getpid()`.
pub fn getpid() -> libc::pid_t {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::getpid() }
}

pub fn geteuid() -> u32 {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::geteuid() }
}

/// Path bytes helper.
pub fn path_bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

pub fn path_from_bytes(b: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(b))
}

/// Seconds of CLOCK_MONOTONIC: the same clock in every process on the host,
/// so children and the supervisor can compare timestamps in shared memory.
pub fn monotonic_secs() -> u32 {
    // SAFETY: timespec is plain data; clock_gettime writes it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid clock id and a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u32
}

/// Block until `word` is woken or no longer holds `expected`, at most `timeout`.
/// A shared (not process-private) futex: it works on MAP_SHARED memory across
/// processes. Spurious returns are possible; callers re-check their condition.
pub fn futex_wait(word: &std::sync::atomic::AtomicU32, expected: u32, timeout: std::time::Duration) {
    let ts = libc::timespec { tv_sec: timeout.as_secs() as libc::time_t, tv_nsec: timeout.subsec_nanos() as libc::c_long };
    // SAFETY: `word` is a valid, aligned u32 for the duration of the call; the
    // kernel only reads it and the timeout.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT, expected, &ts as *const libc::timespec, 0usize, 0u32);
    }
}

/// Wake up to `n` waiters blocked in `futex_wait` on `word`.
pub fn futex_wake(word: &std::sync::atomic::AtomicU32, n: i32) {
    // SAFETY: as futex_wait; FUTEX_WAKE does not dereference beyond the word.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, n, 0usize, 0usize, 0u32);
    }
}

/// Run `f` (a thread spawn) with every signal blocked in the calling
/// thread, so a thread it starts never takes the server's signals.
pub fn with_signals_blocked<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: sigset_t is plain data, filled by sigfillset; pthread_sigmask
    // only swaps this thread's mask, restored below.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let r = f();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        r
    }
}

/// Whether process `pid` exists (kill(pid, 0); EPERM: it does, as another user).
pub fn pid_alive(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    pid > 0 && (unsafe { libc::kill(pid, 0) } == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}

/// poll(2) on one fd, retried on EINTR: the returned events, 0 on timeout.
pub fn poll_fd(fd: RawFd, events: i16, timeout_ms: i32) -> io::Result<i16> {
    let mut p = libc::pollfd { fd, events, revents: 0 };
    loop {
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut p, 1, timeout_ms) };
        if rc >= 0 {
            return Ok(if rc == 0 { 0 } else { p.revents });
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Milliseconds from now to `deadline`, for poll (0 once it passed).
pub fn ms_until(deadline: std::time::Instant) -> i32 {
    deadline.saturating_duration_since(std::time::Instant::now()).as_millis().min(i32::MAX as u128) as i32
}

/// Wait until `fd` has one of `events` (or an error/hangup), at most until
/// `deadline`: Err(TimedOut) then.
pub fn wait_fd(fd: RawFd, events: i16, deadline: std::time::Instant) -> io::Result<i16> {
    loop {
        let rev = poll_fd(fd, events, ms_until(deadline))?;
        if rev != 0 {
            return Ok(rev);
        }
        if std::time::Instant::now() >= deadline {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"));
        }
    }
}

/// A close-on-exec pipe: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid out-array of two ints.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}
