//! Starts one worker: drops to the pool's identity and execs the program with
//! the pool's listening socket as fd 0 (FCGI_LISTENSOCK_FILENO).
//!
//! Everything that allocates (C strings, argv/envp arrays, the group list) is
//! prepared before the clone; the child only makes async-signal-safe calls and
//! ends in `execve` or `_exit(127)` with a short reason on stderr.

use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;
use std::path::Path;

use crate::core::identity::Owner;
use crate::core::sys;

/// The server's `RLIMIT_NOFILE` (soft, hard) from before the supervisor raised
/// its own soft limit for client connections; workers get it back.
pub static WORKER_NOFILE: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();

/// Fixed PATH for every worker.
pub const WORKER_PATH: &[u8] = b"/usr/local/bin:/usr/bin:/bin";

/// Everything a worker exec needs, built once per pool.
pub struct PreparedExec {
    program: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    workdir: CString,
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
    /// (dev, ino) of the program when the supervisor checked it: every spawn
    /// re-opens it and execs only that same file.
    expect: (u64, u64),
}

/// The worker environment: PATH, HOME, USER, LOGNAME, then the pool's pairs
/// (a pair naming one of the first four replaces it rather than duplicating it).
pub fn worker_env(owner: &Owner, env: &[(Vec<u8>, Vec<u8>)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (b"PATH".to_vec(), WORKER_PATH.to_vec()),
        (b"HOME".to_vec(), owner.home.clone()),
        (b"USER".to_vec(), owner.name.clone()),
        (b"LOGNAME".to_vec(), owner.name.clone()),
    ];
    for (k, v) in env {
        match out.iter_mut().find(|(ek, _)| ek == k) {
            Some(slot) => slot.1 = v.clone(),
            None => out.push((k.clone(), v.clone())),
        }
    }
    out
}

impl PreparedExec {
    pub fn new(
        program: &Path,
        args: &[Vec<u8>],
        workdir: &Path,
        env: &[(Vec<u8>, Vec<u8>)],
        owner: &Owner,
        groups: Vec<libc::gid_t>,
        expect: (u64, u64),
    ) -> io::Result<PreparedExec> {
        let program_c = sys::cpath(program)?;
        let mut argv = vec![program_c.clone()];
        for a in args {
            argv.push(sys::cstring(a)?);
        }
        let mut envp = Vec::new();
        for (k, v) in worker_env(owner, env) {
            let mut kv = k;
            kv.push(b'=');
            kv.extend_from_slice(&v);
            envp.push(sys::cstring(&kv)?);
        }
        Ok(PreparedExec {
            program: program_c,
            argv,
            envp,
            workdir: sys::cpath(workdir)?,
            uid: owner.uid,
            gid: owner.gid,
            groups,
            expect,
        })
    }
}

impl PreparedExec {
    /// Whether the program path still names the file that was checked (an
    /// edited or replaced app is a new version: its pool is retired rather
    /// than spawned again).
    pub fn still_same(&self) -> bool {
        use std::os::unix::ffi::OsStrExt;
        let path = Path::new(std::ffi::OsStr::from_bytes(self.program.as_bytes()));
        sys::lstat(path).is_ok_and(|st| (st.dev, st.ino) == self.expect)
    }
}

/// Writes `sufcgi: worker setup failed: <what> (errno N)` and `_exit(127)`.
/// Async-signal-safe: formats into a stack buffer.
fn child_fail(what: &[u8]) -> ! {
    // SAFETY: reading errno location is always valid.
    let errno = unsafe { *libc::__errno_location() };
    let mut buf = [0u8; 160];
    let mut n = 0;
    for part in [&b"sufcgi: worker setup failed: "[..], what, b" (errno "] {
        for &b in part {
            if n < buf.len() - 16 {
                buf[n] = b;
                n += 1;
            }
        }
    }
    let mut digits = [0u8; 12];
    let mut d = 0;
    let mut e = errno.unsigned_abs();
    loop {
        digits[d] = b'0' + (e % 10) as u8;
        d += 1;
        e /= 10;
        if e == 0 {
            break;
        }
    }
    while d > 0 {
        d -= 1;
        buf[n] = digits[d];
        n += 1;
    }
    buf[n] = b')';
    buf[n + 1] = b'\n';
    let _ = sys::write_all_fd(2, &buf[..n + 2]);
    // SAFETY: ending the new process without running the supervisor's
    // destructors or exit handlers (it shares the supervisor's memory).
    unsafe { libc::_exit(127) }
}

/// What the new process needs, prepared before it exists: it must not allocate.
struct ChildArgs<'a> {
    exec: &'a PreparedExec,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    listen_fd: RawFd,
    dev_null: RawFd,
    stderr_fd: RawFd,
    data_limit: u64,
    parent: libc::pid_t,
    nofile: Option<(u64, u64)>,
    /// `cgroup.procs` of the worker's group in each hierarchy.
    join: &'a [RawFd],
    nproc: u64,
    slice_ns: u64,
}

/// Bytes of the new process's stack (it runs a few syscalls, then execs).
const CHILD_STACK: usize = 256 * 1024;

/// The stack the new process runs on until it execs: one for the
/// supervisor's life, reused (one child at a time: CLONE_VFORK suspends the
/// supervisor until the child has exec'd or exited), with a guard page.
fn child_stack() -> io::Result<*mut u8> {
    static STACK: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    if let Some(&top) = STACK.get() {
        return Ok(top as *mut u8);
    }
    let page = 4096;
    // SAFETY: a fresh private anonymous mapping; nothing else refers to it.
    let base = unsafe {
        libc::mmap(std::ptr::null_mut(), CHILD_STACK + page, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK, -1, 0)
    };
    if base == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the lowest page of our own mapping becomes the guard.
    if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let top = base as usize + page + CHILD_STACK;
    Ok(*STACK.get_or_init(|| top) as *mut u8)
}

/// How a new worker is held: its cgroup, or the fallback limits.
#[derive(Default)]
pub struct Confinement<'a> {
    /// `cgroup.procs` of the worker's group, one per hierarchy: the new
    /// process writes "0" into each first thing, so it is in its group
    /// before it execs and everything it starts is in there too.
    pub join: &'a [RawFd],
    /// RLIMIT_NPROC (0 = none): without a pids controller.
    pub nproc: u64,
    /// RLIMIT_DATA in bytes (0 = none): the hard backstop behind the
    /// supervisor's RSS watch, where no memory controller enforces the limit.
    pub data_limit: u64,
    /// The worker's scheduler slice in ns (0: leave the kernel's default);
    /// see core::latency.
    pub slice_ns: u64,
}

/// Starts one worker. Returns its pid (also its process group and session
/// id). `listen_fd` becomes the worker's fd 0, `dev_null` its fd 1 and
/// `stderr_fd` its fd 2; every other fd is closed.
///
/// The worker joins its cgroup from inside the new process rather than with
/// `clone3(CLONE_INTO_CGROUP)`: that needs the raw clone3 syscall with
/// CLONE_VM returning on a fresh stack (glibc has no wrapper for it), and
/// joining before anything else runs gives the same guarantee on v1 and v2.
///
/// The process is made as posix_spawn makes it: clone with CLONE_VM |
/// CLONE_VFORK on a stack of its own, so the supervisor's address space
/// (with what it inherited from the server's parent, tens of MiB on a big
/// host) is not copied for a process that execs a moment later; the
/// supervisor waits meanwhile. Must be called from a single-threaded process
/// (the supervisor).
pub fn spawn_worker(
    exec: &PreparedExec,
    listen_fd: RawFd,
    dev_null: RawFd,
    stderr_fd: RawFd,
    confine: &Confinement<'_>,
) -> io::Result<libc::pid_t> {
    // Pointer arrays are built before the clone: the child must not allocate.
    let mut argv: Vec<*const libc::c_char> = exec.argv.iter().map(|c| c.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = exec.envp.iter().map(|c| c.as_ptr()).collect();
    envp.push(std::ptr::null());
    let args = ChildArgs {
        exec,
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        listen_fd,
        dev_null,
        stderr_fd,
        data_limit: confine.data_limit,
        parent: sys::getpid(),
        nofile: WORKER_NOFILE.get().copied(),
        join: confine.join,
        nproc: confine.nproc,
        slice_ns: confine.slice_ns,
    };
    let stack = child_stack()?;
    // SAFETY: `child_main` only makes async-signal-safe calls on `args`,
    // which outlives the call (CLONE_VFORK: clone returns once the child
    // has exec'd or exited), and runs on its own stack; signals stay
    // blocked (the supervisor's mask) until the child resets them.
    let pid = unsafe {
        libc::clone(child_main, stack as *mut libc::c_void, libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD, &args as *const ChildArgs<'_> as *mut libc::c_void)
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(pid)
}

/// The new process, until it execs the worker (or `_exit`s through
/// `child_fail`). It shares the supervisor's memory (CLONE_VM): it writes
/// only to its own stack.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: arg is the ChildArgs spawn_worker passed, alive while the
    // supervisor waits for this process to exec.
    let a = unsafe { &*(arg as *const ChildArgs<'_>) };
    let exec = a.exec;
    // SAFETY: (the whole block) async-signal-safe syscalls on fds and buffers
    // prepared before the clone; every failure ends in `child_fail`, which `_exit`s.
    unsafe {
        // Into the cgroup before anything else: every process this one
        // starts is born there (pid 0 = the writer).
        for &fd in a.join {
            if libc::write(fd, b"0".as_ptr() as *const libc::c_void, 1) != 1 {
                child_fail(b"join the worker's cgroup");
            }
        }
        if libc::setsid() < 0 {
            child_fail(b"setsid");
        }
        if sys::set_parent_death_signal(libc::SIGKILL).is_err() {
            child_fail(b"prctl(PR_SET_PDEATHSIG)");
        }
        // The supervisor may have died before prctl.
        if libc::getppid() != a.parent {
            child_fail(b"supervisor exited");
        }
        sys::reset_signals();
        // Inherited by the app's threads; an old kernel ignores it, and a
        // failure only leaves the default slice.
        if a.slice_ns > 0 {
            let _ = sys::sched::set_slice_ns(0, a.slice_ns);
        }

        if a.listen_fd == 0 {
            let fl = libc::fcntl(0, libc::F_GETFD);
            if fl < 0 || libc::fcntl(0, libc::F_SETFD, fl & !libc::FD_CLOEXEC) < 0 {
                child_fail(b"fcntl(fd 0)");
            }
        } else if libc::dup2(a.listen_fd, 0) < 0 {
            child_fail(b"dup2(listen socket, 0)");
        }
        if a.dev_null != 1 && libc::dup2(a.dev_null, 1) < 0 {
            child_fail(b"dup2(/dev/null, 1)");
        }
        if a.stderr_fd >= 0 && a.stderr_fd != 2 && libc::dup2(a.stderr_fd, 2) < 0 {
            child_fail(b"dup2(stderr pipe, 2)");
        }
        if a.data_limit > 0 {
            let rl = libc::rlimit { rlim_cur: a.data_limit as libc::rlim_t, rlim_max: a.data_limit as libc::rlim_t };
            if libc::setrlimit(libc::RLIMIT_DATA, &rl) < 0 {
                child_fail(b"setrlimit(RLIMIT_DATA)");
            }
        }
        sys::close_fds_except(3, &[]);
        if let Some((soft, hard)) = a.nofile {
            if sys::set_nofile_soft(soft, hard).is_err() {
                child_fail(b"setrlimit(RLIMIT_NOFILE)");
            }
        }

        if libc::setgroups(exec.groups.len(), exec.groups.as_ptr()) < 0 {
            child_fail(b"setgroups");
        }
        if a.nproc > 0 {
            // Counted per real uid at fork: caps a fork loop even without a
            // pids controller (and is checked again at this setresuid).
            let rl = libc::rlimit { rlim_cur: a.nproc as libc::rlim_t, rlim_max: a.nproc as libc::rlim_t };
            if libc::setrlimit(libc::RLIMIT_NPROC, &rl) < 0 {
                child_fail(b"setrlimit(RLIMIT_NPROC)");
            }
        }
        if libc::setresgid(exec.gid, exec.gid, exec.gid) < 0 {
            child_fail(b"setresgid");
        }
        if libc::setresuid(exec.uid, exec.uid, exec.uid) < 0 {
            child_fail(b"setresuid");
        }
        let (mut r, mut e, mut s) = (0, 0, 0);
        if libc::getresuid(&mut r, &mut e, &mut s) < 0 || r != exec.uid || e != exec.uid || s != exec.uid {
            child_fail(b"uid did not change");
        }
        let (mut rg, mut eg, mut sg) = (0, 0, 0);
        if libc::getresgid(&mut rg, &mut eg, &mut sg) < 0 || rg != exec.gid || eg != exec.gid || sg != exec.gid {
            child_fail(b"gid did not change");
        }
        // Privileges must be gone for good.
        if exec.uid != 0 && libc::setresuid(0, 0, 0) == 0 {
            child_fail(b"could regain root");
        }
        // The kernel clears the parent-death signal when credentials change,
        // so the one set above is gone: set it again, and re-check the race.
        if sys::set_parent_death_signal(libc::SIGKILL).is_err() {
            child_fail(b"prctl(PR_SET_PDEATHSIG) after setresuid");
        }
        if libc::getppid() != a.parent {
            child_fail(b"supervisor exited");
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) < 0 {
            child_fail(b"prctl(PR_SET_NO_NEW_PRIVS)");
        }
        if libc::chdir(exec.workdir.as_ptr()) < 0 {
            child_fail(b"chdir");
        }
        // What runs is what was checked: open the program (as the owner, not
        // following a symlink) and compare it with the checked file. A binary
        // is then exec'd through that very descriptor. A script's interpreter
        // opens the script again by its path (as every CGI runner does), so
        // for scripts this narrows the window to the exec itself.
        let fd = libc::open(exec.program.as_ptr(), libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_CLOEXEC);
        if fd < 0 {
            child_fail(b"open(program)");
        }
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) < 0 {
            child_fail(b"fstat(program)");
        }
        let same = (st.st_dev as u64, st.st_ino as u64) == exec.expect;
        let mode = st.st_mode as u32;
        let owner_ok = st.st_uid == exec.uid || st.st_uid == 0;
        if !same || mode & libc::S_IFMT != libc::S_IFREG || mode & 0o6022 != 0 || !owner_ok {
            child_fail(b"the program changed since it was checked");
        }
        let mut magic = [0u8; 2];
        let script = libc::pread(fd, magic.as_mut_ptr() as *mut libc::c_void, 2, 0) == 2 && magic == *b"#!";
        if script {
            libc::execve(exec.program.as_ptr(), a.argv, a.envp);
        } else {
            libc::syscall(libc::SYS_execveat, fd, c"".as_ptr(), a.argv, a.envp, libc::AT_EMPTY_PATH);
        }
        child_fail(b"execve")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_order_and_override() {
        let o = Owner { uid: 1001, gid: 1001, name: b"a".to_vec(), home: b"/home/a".to_vec() };
        let env = worker_env(&o, &[(b"X".to_vec(), b"1".to_vec()), (b"HOME".to_vec(), b"/srv".to_vec())]);
        let names: Vec<&[u8]> = env.iter().map(|(k, _)| k.as_slice()).collect();
        assert_eq!(names, vec![&b"PATH"[..], b"HOME", b"USER", b"LOGNAME", b"X"]);
        assert_eq!(env[1].1, b"/srv");
        assert_eq!(env[0].1, WORKER_PATH);
    }
}
