//! What a server child asks the supervisor for: a pool able to serve one app.
//!
//! The child describes *what* to run (from the merged directives); the
//! supervisor decides *as whom* from its own host config and the filesystem,
//! and checks every file itself. Nothing in here is trusted for identity.

use crate::core::limits::Limits;
use crate::core::sys;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AppKind {
    /// `SuFcgiApp FILE [ARG…]`: one app serves a directory tree.
    App = 1,
    /// `SuFcgiWrapper COMMAND [ARG…] .EXT`: COMMAND serves every `*.EXT` script.
    Wrapper = 2,
    /// `AddHandler sufcgi-script`: the file itself is the app.
    Script = 3,
    /// `SuFcgiAuthorizer FILE [ARG…]`: an app in the FastCGI AUTHORIZER role
    /// guarding a directory tree. Its own kind, so it never shares a pool
    /// with a responder pool of the same file.
    Authorizer = 4,
}

/// A request for a ready pool. Encoded by `supervisor::protocol`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolSpec {
    /// HostConfig generation the child was forked with.
    pub generation: u64,
    /// Index into `HostConfig::vhosts`.
    pub vhost: u32,
    pub kind: AppKind,
    /// Absolute path of the program: the app file (App, Script, Authorizer) or
    /// the wrapper command (Wrapper).
    pub program: PathBuf,
    /// Arguments after the program (argv[1..]).
    pub args: Vec<Vec<u8>>,
    /// Directory the worker runs in: the configuring directory (App, Wrapper,
    /// Authorizer) or the script's directory (Script). Ownership is checked on it.
    pub workdir: PathBuf,
    /// The `.htaccess` files that configured this pool; each is ownership-checked.
    pub config_files: Vec<PathBuf>,
    /// `SuFcgiEnv` pairs, already validated by the directive parser; the
    /// supervisor re-validates against the host's blocklist.
    pub env: Vec<(Vec<u8>, Vec<u8>)>,
    /// Limits as the customer wrote them (defaults filled in); the supervisor
    /// clamps them to the host's ceilings.
    pub limits: Limits,
    /// `SuFcgiRestartFile` (absolute): touching it starts fresh workers.
    pub restart_file: Option<PathBuf>,
    /// `SuFcgiLog` as the customer wrote it (relative to `workdir`, `~/…`, or
    /// absolute): the supervisor resolves it, checks that the owner's own
    /// configuration names it, and opens it as the owner.
    pub log_file: Option<PathBuf>,
    /// For `~user` requests (mod_userdir): the user named in the URL. The
    /// supervisor accepts it only if `program` lies inside that user's home.
    pub userdir_user: Option<Vec<u8>>,
}

/// The supervisor's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolReply {
    Ready(PoolInfo),
    /// Nothing was spawned. `status` is the HTTP status to answer (403, 500, 503),
    /// `reason` goes to the error log (never to the client).
    Refused { status: u16, reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolInfo {
    /// Worker `i` listens on `worker_socket_path(socket_prefix, i)` (its fd 0).
    pub socket_prefix: PathBuf,
    /// Scoreboard slot of this pool and the slot's generation when assigned.
    pub slot: u32,
    pub slot_generation: u32,
    /// The identity the pool runs as; the child uses it to check scripts
    /// served through a wrapper (they must belong to the same owner).
    pub uid: u32,
    pub gid: u32,
    /// The limits in force (clamped to the host's ceilings).
    pub limits: Limits,
}

/// Worker `index`'s listening socket.
pub fn worker_socket_path(prefix: &Path, index: u32) -> PathBuf {
    let mut p = prefix.as_os_str().to_owned();
    p.push(format!(".{index}.sock"));
    PathBuf::from(p)
}

/// Non-blocking connect to worker `index`'s socket of the pool whose sockets
/// start with `prefix` (the path `worker_socket_path` names, built
/// in place: no allocation per request). ENOENT/ECONNREFUSED mean the pool is
/// gone (ask the supervisor again); EAGAIN means its backlog is full.
pub fn connect_worker(prefix: &Path, index: u32) -> io::Result<OwnedFd> {
    let mut digits = [0u8; 10];
    let mut at = digits.len();
    let mut n = index;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    sys::connect_unix_nonblocking(&[prefix.as_os_str().as_bytes(), b".", &digits[at..], b".sock"])
}

impl PoolSpec {
    /// The pool a request runs on: what to run (`program`, `args`, in
    /// `workdir`) and the directory configuration it was found in. The same
    /// for every server glue.
    #[allow(clippy::too_many_arguments)]
    pub fn for_directory(
        generation: u64,
        vhost: u32,
        kind: AppKind,
        program: PathBuf,
        args: Vec<Vec<u8>>,
        workdir: PathBuf,
        cfg: &crate::core::directives::DirConfig,
        userdir_user: Option<Vec<u8>>,
    ) -> PoolSpec {
        use crate::core::directives::DEFAULT_RESTART_FILE;
        let restart = workdir.join(cfg.restart_file.as_deref().unwrap_or(Path::new(DEFAULT_RESTART_FILE)));
        PoolSpec {
            generation,
            vhost,
            kind,
            program,
            args,
            config_files: cfg.sources.clone(),
            env: cfg.env.clone(),
            limits: cfg.limits.resolve(),
            restart_file: Some(restart),
            log_file: cfg.log_file.clone(),
            workdir,
            userdir_user,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_worker_reaches_the_socket_worker_socket_path_names() {
        let dir = std::env::temp_dir().join(format!("sufcgi-req-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let prefix = dir.join("0123456789abcdef");
        for index in [0, 7, 10, 4_294_967_295] {
            let path = worker_socket_path(&prefix, index);
            let _listener = sys::unix_listen(&path, 4, 0o600).unwrap();
            assert!(connect_worker(&prefix, index).is_ok(), "worker {index}");
            // No socket at the neighbouring index: not the same path.
            assert!(connect_worker(&prefix, index.wrapping_add(1)).is_err(), "worker {index} + 1");
            std::fs::remove_file(&path).unwrap();
        }
        let _ = std::fs::remove_dir(&dir);
    }
}
