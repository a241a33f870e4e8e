//! The supervisor's life under lighttpd, and what the request path reads.
//!
//! lighttpd runs `priv_defaults` as root at start, then drops privileges; on
//! a graceful restart (SIGUSR1) it frees and reloads every plugin and runs
//! all hooks again, unprivileged, in the same process. The plugin is linked
//! with `-z nodelete`, so these statics survive that reload: the supervisor
//! started at the first start keeps serving. It runs under a keeper
//! (core::supervisor::keeper): a root process, not lighttpd's child, that
//! restarts a supervisor that died and stops it when lighttpd exits.
//!
//! The supervisor takes host settings only from root, so an unprivileged
//! reload cannot change identities. After a reload each configuration
//! context is mapped onto the running supervisor's table by content (name,
//! owner, document root), never by position: contexts moved by an edit keep
//! working, and a context whose identity is new or changed is answered 503
//! (logged) until lighttpd is restarted. A change of the id floors or the
//! socket directory makes every sufcgi request 503 until then.

use super::server::{Plugin, Server};
use super::settings;
use crate::core::hostconfig::HostConfig;
use crate::core::scoreboard::Scoreboard;
use crate::core::supervisor::{self, SupervisorHandle};
use once_cell::sync::OnceCell;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Pools that can be live at once (lighttpd allows at most 4096 config
/// contexts, so more would not be reachable through distinct vhosts anyway).
const SCOREBOARD_SLOTS: u32 = 4096;

/// Process-lifetime: created once, shared with the supervisor and any
/// `server.max-worker` children.
static SCOREBOARD: OnceCell<Scoreboard> = OnceCell::new();

/// The scoreboard, once created (lighttpd was started as root).
pub fn scoreboard() -> Option<&'static Scoreboard> {
    SCOREBOARD.get()
}

struct Running {
    /// The keeper's pid, and our end of its lifeline.
    pid: libc::pid_t,
    _lifeline: OwnedFd,
    host: HostConfig,
}

/// The supervisor started at the first start (kept across reloads).
static RUNNING: Mutex<Option<Running>> = Mutex::new(None);

/// What one configuration generation's requests read.
pub struct Runtime {
    pub socket_dir: PathBuf,
    pub scoreboard: &'static Scoreboard,
    pub identity_contexts: Vec<u32>,
    /// Where the host's status page is on (see `settings::status_enabled`).
    pub status_contexts: Vec<(u32, bool)>,
    /// Per configuration context: its entry in the supervisor's vhost table
    /// (None: not known to the running supervisor, see the module comment).
    pub vhost_index: Vec<Option<u32>>,
    /// Per configuration context: the configured document root, and whether
    /// it has a configured owner.
    pub docroots: Vec<PathBuf>,
    pub has_owner: Vec<bool>,
    pub host: HostConfig,
    pub php_forbid: Vec<Vec<u8>>,
    /// Longest silence from an app (`sufcgi.timeout`).
    pub io_timeout: std::time::Duration,
    /// Why sufcgi requests cannot be served, if so (answered 503).
    pub unavailable: Option<String>,
    /// Which `sufcgi-*` request environment values `accesslog.format` uses.
    pub notes: crate::core::request_cost::Wanted,
}

static RUNTIME: Mutex<Option<Arc<Runtime>>> = Mutex::new(None);

pub fn get() -> Option<Arc<Runtime>> {
    RUNTIME.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Host-wide settings that identities depend on.
fn same_floors(a: &HostConfig, b: &HostConfig) -> bool {
    a.min_uid == b.min_uid && a.min_gid == b.min_gid && a.socket_dir == b.socket_dir
}

/// Each of `new`'s contexts as an entry of the running table (`old`): the
/// same position when its identity is equal there, else the first equal
/// entry. (Owner limits changed by a reload take effect at the next
/// restart, with the other host settings; they do not make a context 503.)
fn map_contexts(old: &HostConfig, new: &HostConfig) -> Vec<Option<u32>> {
    new.vhosts
        .iter()
        .enumerate()
        .map(|(u, v)| {
            if old.vhosts.get(u).is_some_and(|o| o.same_identity(v)) {
                return Some(u as u32);
            }
            old.vhosts.iter().position(|o| o.same_identity(v)).map(|i| i as u32)
        })
        .collect()
}

/// Start the supervisor (first start, as root) or adopt the running one
/// (reload), and publish this generation's runtime. From `priv_defaults`.
pub fn configure(srv: Server, p: Plugin) -> Result<(), String> {
    let st = settings::read(srv, p)?;
    let preflight = srv.preflight();
    let mut unavailable = None;
    let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
    if preflight {
        // `lighttpd -tt` checks the configuration only: fork nothing.
        return Ok(());
    }
    // lighttpd's one event loop relays every request: it gets the short
    // slice (core::latency), on every (re)load as configured.
    if let Err(e) = crate::core::latency::server_process(st.host.short_slices) {
        srv.log(&format!("sufcgi: cannot set the server's scheduler slice: {e}"));
    }
    let alive = running.as_ref().is_some_and(|r| SupervisorHandle::from_detached(r.pid).is_alive());
    if let Some(r) = running.as_ref().filter(|_| alive) {
        if !same_floors(&r.host, &st.host) {
            let why = "sufcgi.min-uid, sufcgi.min-gid or sufcgi.socket-dir changed on reload; restart lighttpd to apply them".to_string();
            srv.log(&format!("sufcgi: {why}; sufcgi requests are answered 503 until then"));
            unavailable = Some(why);
        }
        let unknown: Vec<&str> = map_contexts(&r.host, &st.host)
            .iter()
            .zip(&st.host.vhosts)
            .filter(|(m, _)| m.is_none())
            .map(|(_, v)| v.name.as_str())
            .collect();
        if !unknown.is_empty() {
            srv.log(&format!(
                "sufcgi: owners or document roots changed on reload for {}; their sufcgi requests are answered 503 until lighttpd is restarted",
                unknown.join(", ")
            ));
        }
    } else {
        if crate::core::sys::geteuid() != 0 {
            let why = if running.is_some() {
                "the supervisor keeper exited and lighttpd no longer runs as root to restart it; restart lighttpd"
            } else {
                "lighttpd was not started as root, so workers cannot run as their owners"
            };
            srv.log(&format!("sufcgi: {why}; sufcgi requests will be answered 503"));
            unavailable = Some(why.to_string());
        } else {
            let sb = SCOREBOARD
                .get_or_try_init(|| Scoreboard::create(SCOREBOARD_SLOTS, st.host.ceilings.max_workers))
                .map_err(|e| format!("cannot create the scoreboard: {e}"))?;
            if let Some(note) = sb.capacity_note(st.host.ceilings.max_workers) {
                srv.log(&format!("sufcgi: {note}"));
            }
            let k = supervisor::start_keeper(&st.host, sb).map_err(|e| format!("cannot start the supervisor: {e}"))?;
            let pid = k.pid;
            // An earlier start's lifeline is closed with it.
            drop(running.take());
            srv.log(&format!("sufcgi: supervisor keeper started, pid {pid}"));
            *running = Some(Running { pid, _lifeline: k.lifeline, host: st.host.clone() });
        }
    }
    let host = running.as_ref().map(|r| r.host.clone()).unwrap_or_else(|| st.host.clone());
    let vhost_index = map_contexts(&host, &st.host);
    drop(running);
    let Some(scoreboard) = SCOREBOARD.get() else {
        *RUNTIME.lock().unwrap_or_else(|e| e.into_inner()) = None;
        return Ok(());
    };
    let rt = Runtime {
        socket_dir: host.socket_dir.clone(),
        scoreboard,
        identity_contexts: st.identity_contexts,
        status_contexts: st.status_contexts,
        vhost_index,
        docroots: st.host.vhosts.iter().map(|v| v.document_root.clone()).collect(),
        has_owner: st.host.vhosts.iter().map(|v| v.owner.is_some()).collect(),
        host,
        php_forbid: st.php_forbid,
        io_timeout: std::time::Duration::from_secs(st.timeout_secs as u64),
        unavailable,
        notes: st.notes,
    };
    *RUNTIME.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(rt));
    Ok(())
}
