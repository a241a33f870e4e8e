//! The supervisor as a program of its own. Forked from the server's root
//! parent, it would otherwise keep that parent's whole image (the parsed
//! configuration: 32 MiB with 5,000 vhosts) resident for as long as it runs.
//! So the forked child execs `sufcgi-supervisor`, installed beside the
//! module, with what it needs on fixed descriptors:
//!   3 the control channel (its first frame is the host configuration),
//!   4 the supervisor's listening socket,
//!   5 the scoreboard's memfd,
//! and the scoreboard's shape, the server's pid and the socket path on its
//! command line. Without that program (or when it is not root's alone) the
//! child runs the supervisor in place, as a plain fork.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::log::{log_error, log_warn};
use super::protocol::{self, FrameReader};
use crate::core::hostconfig::HostConfig;
use crate::core::scoreboard::{RawScoreboard, Scoreboard};
use crate::core::sys;

/// The program's file name, looked for in the module's own directory.
pub const PROGRAM_NAME: &str = "sufcgi-supervisor";

const CONTROL_FD: RawFd = 3;
const LISTENER_FD: RawFd = 4;
const SCOREBOARD_FD: RawFd = 5;

/// How long a new supervisor waits for its configuration.
const CONFIG_WAIT: Duration = Duration::from_secs(30);

/// What the forked child execs: the program and its whole command line,
/// built in the parent (nothing is allocated between fork and exec).
pub struct ExecPlan {
    program: CString,
    argv: Vec<CString>,
}

impl ExecPlan {
    /// The program beside the module that contains this code, if it is
    /// there and safe to run as root; `Err` says why not (for the log).
    pub fn find(server_pid: libc::pid_t, socket: &Path, sb: RawScoreboard) -> Result<ExecPlan, String> {
        let here = module_path().ok_or("cannot tell where the module was loaded from")?;
        let program = here.parent().map(|d| d.join(PROGRAM_NAME)).ok_or("the module path has no directory")?;
        check_program(&program)?;
        let c = |b: &[u8]| CString::new(b).map_err(|_| "a path contains a NUL byte".to_string());
        let argv = vec![
            c(program.as_os_str().as_bytes())?,
            c(b"--server-pid")?,
            c(server_pid.to_string().as_bytes())?,
            c(b"--socket")?,
            c(socket.as_os_str().as_bytes())?,
            c(b"--scoreboard")?,
            c(format!("{},{}", sb.slots, sb.workers).as_bytes())?,
            c(b"--protocol")?,
            c(protocol::VERSION.to_string().as_bytes())?,
        ];
        Ok(ExecPlan { program: c(program.as_os_str().as_bytes())?, argv })
    }

    /// In the forked child: puts the three descriptors in place and execs.
    /// Returns only if that failed.
    pub fn exec(&self, control: RawFd, listener: RawFd, scoreboard: RawFd) -> io::Error {
        if let Err(e) = sys::place_fds(&[control, listener, scoreboard], CONTROL_FD) {
            return e;
        }
        let mut argv: Vec<*const libc::c_char> = self.argv.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        // SAFETY: `program` and every argv string are NUL-terminated and
        // outlive the call; argv ends with a null pointer. The environment is
        // the server's own.
        unsafe { libc::execv(self.program.as_ptr(), argv.as_ptr()) };
        io::Error::last_os_error()
    }
}

/// The file this code was loaded from (the module; under `cargo test`, the test binary).
fn module_path() -> Option<PathBuf> {
    // SAFETY: dladdr only reads the loader's tables; `info` is a valid out-struct
    // and `dli_fname`, when set, is a NUL-terminated string owned by the loader.
    unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        if libc::dladdr(module_path as *const libc::c_void, &mut info) == 0 || info.dli_fname.is_null() {
            return None;
        }
        let p = PathBuf::from(OsStr::from_bytes(CStr::from_ptr(info.dli_fname).to_bytes()));
        p.is_absolute().then_some(p)
    }
}

/// Root runs it: it must be a regular, executable file that only root can
/// change, in a directory only root can change (as suexec checks itself).
fn check_program(path: &Path) -> Result<(), String> {
    let st = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    use std::os::unix::fs::MetadataExt;
    if !st.is_file() || st.mode() & 0o100 == 0 {
        return Err(format!("{} is not an executable file", path.display()));
    }
    let unsafe_owner = |m: &std::fs::Metadata| m.uid() != 0 || m.mode() & 0o022 != 0;
    if unsafe_owner(&st) {
        return Err(format!("{} is not owned by root or is writable by others", path.display()));
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    let dst = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if unsafe_owner(&dst) {
        return Err(format!("{} is not owned by root or is writable by others", dir.display()));
    }
    Ok(())
}

/// Waits for the first frame on the control channel (sent by the root
/// parent right after the fork) and decodes the host configuration in it.
pub fn read_initial_config(control: RawFd) -> io::Result<HostConfig> {
    let deadline = Instant::now() + CONFIG_WAIT;
    let mut reader = FrameReader::new();
    let mut buf = vec![0u8; 65536];
    loop {
        if let Some(p) = reader.next_payload()? {
            return protocol::decode_config(&p).map_err(io::Error::from);
        }
        if sys::wait_fd(control, libc::POLLIN, deadline)? == 0 {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "no configuration from the server"));
        }
        match sys::recv_with_uid(control, &mut buf) {
            Ok((0, _)) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the control channel")),
            Ok((n, Some(0))) => reader.push(&buf[..n]),
            Ok((_, uid)) => return Err(io::Error::new(io::ErrorKind::PermissionDenied, format!("configuration from uid {uid:?}, not root"))),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// What the command line says.
struct Args {
    /// The module's `protocol::VERSION`: a program from another build
    /// (a package upgraded under a running server) says so and stops.
    protocol: u8,
    server_pid: libc::pid_t,
    socket: PathBuf,
    slots: u32,
    workers: u32,
}

fn parse_args(args: &[std::ffi::OsString]) -> Option<Args> {
    let mut server_pid = None;
    let mut socket = None;
    let mut shape = None;
    let mut protocol = None;
    let mut it = args.iter().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next()?;
        match flag.as_bytes() {
            b"--server-pid" => server_pid = value.to_str()?.parse().ok(),
            b"--socket" => socket = Some(PathBuf::from(value)),
            b"--protocol" => protocol = value.to_str()?.parse().ok(),
            b"--scoreboard" => {
                let (s, w) = value.to_str()?.split_once(',')?;
                shape = Some((s.parse().ok()?, w.parse().ok()?));
            }
            _ => return None,
        }
    }
    let (slots, workers) = shape?;
    Some(Args { protocol: protocol?, server_pid: server_pid?, socket: socket?, slots, workers })
}

/// `sufcgi-supervisor`'s main: only ever started by the module.
pub fn main() -> i32 {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let Some(a) = parse_args(&args) else {
        eprintln!("{PROGRAM_NAME}: started by the sufcgi module (mod_sufcgi.so), not by hand");
        return 2;
    };
    let fail = |what: String| -> i32 {
        log_error!("supervisor start failed: {what}");
        1
    };
    if a.protocol != protocol::VERSION {
        return fail(format!(
            "this {PROGRAM_NAME} speaks supervisor protocol {}, the module {}: they are from different builds (restart the server after an upgrade)",
            protocol::VERSION,
            a.protocol
        ));
    }
    // Both survive exec, but a server that died in between leaves us orphaned.
    if sys::set_parent_death_signal(libc::SIGTERM).is_err() {
        return fail("prctl(PR_SET_PDEATHSIG)".into());
    }
    // SAFETY: getppid cannot fail.
    if unsafe { libc::getppid() } != a.server_pid {
        return fail("the server exited during start-up".into());
    }
    for fd in [CONTROL_FD, LISTENER_FD, SCOREBOARD_FD] {
        if sys::fstat(fd).is_err() {
            return fail(format!("descriptor {fd} is not open"));
        }
        // Never handed on to a worker.
        // SAFETY: F_SETFD on an open descriptor.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    // SAFETY: the three descriptors were placed by `ExecPlan::exec` for us
    // alone (checked open above); each is owned once from here on.
    let (control, listener) = unsafe { (OwnedFd::from_raw_fd(CONTROL_FD), OwnedFd::from_raw_fd(LISTENER_FD)) };
    let sb = match Scoreboard::attach(SCOREBOARD_FD, a.slots, a.workers) {
        Ok(sb) => sb,
        Err(e) => return fail(format!("cannot map the scoreboard: {e}")),
    };
    let cfg = match read_initial_config(control.as_raw_fd()) {
        Ok(c) => c,
        Err(e) => return fail(format!("{e}")),
    };
    super::raise_nofile();
    super::server::run(cfg, sb, control, listener, a.socket)
}

/// Logs once per process why the supervisor runs in place.
pub fn note_in_place(why: &str) {
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
        log_warn!("supervisor runs inside a copy of the server ({why}); install {PROGRAM_NAME} beside the module to save that memory");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn args(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn command_line() {
        let a = parse_args(&args(&[PROGRAM_NAME, "--server-pid", "42", "--socket", "/run/s/supervisor.sock", "--scoreboard", "8192,16", "--protocol", "2"])).unwrap();
        assert_eq!((a.server_pid, a.slots, a.workers, a.protocol), (42, 8192, 16, 2));
        assert_eq!(a.socket, Path::new("/run/s/supervisor.sock"));
        assert!(parse_args(&args(&[PROGRAM_NAME])).is_none(), "nothing given");
        assert!(parse_args(&args(&[PROGRAM_NAME, "--server-pid", "42", "--socket", "/s", "--protocol", "2"])).is_none(), "no shape");
        assert!(parse_args(&args(&[PROGRAM_NAME, "--server-pid", "42", "--socket", "/s", "--scoreboard", "1,1"])).is_none(), "no protocol");
        assert!(parse_args(&args(&[PROGRAM_NAME, "--server-pid", "x", "--socket", "/s", "--scoreboard", "1,1", "--protocol", "2"])).is_none());
        assert!(parse_args(&args(&[PROGRAM_NAME, "--bogus", "1"])).is_none());
        assert!(parse_args(&args(&[PROGRAM_NAME, "--scoreboard", "1;1", "--server-pid", "1", "--socket", "/s", "--protocol", "2"])).is_none());
    }

    #[test]
    fn unsafe_programs_are_refused() {
        let dir = std::env::temp_dir().join(format!("sufcgi-exec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(PROGRAM_NAME);
        std::fs::write(&p, b"#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(check_program(&p).unwrap_err().contains("not an executable"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o757)).unwrap();
        assert!(check_program(&p).is_err(), "writable by others");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(check_program(&p).unwrap_err().contains(&dir.display().to_string()), "a directory others can change");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        if sys::geteuid() == 0 {
            assert_eq!(check_program(&p), Ok(()));
        } else {
            assert!(check_program(&p).is_err(), "not root's");
        }
        assert!(check_program(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
