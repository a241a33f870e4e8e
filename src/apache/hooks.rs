//! The configuration-time hooks (their entry points are in entry.rs): start
//! (or update) the supervisor in the root parent, close what children must
//! not hold, and route requests to our handler in fixups.

use super::pool::Pool;
use super::req::{FileType, Req, Status, APP_HANDLER, DECLINED, HANDLER_METRICS, HANDLER_SCRIPT, HANDLER_STATUS, HTTP_INTERNAL_SERVER_ERROR, OK, WRAPPER_HANDLER};
use super::server::{self, ConfNode, Server};
use super::{log, runtime, watchdog};
use crate::core::guard::guard;
use crate::core::hostconfig::{HostConfig, HostDirective, VhostConfig};
use crate::core::latency;
use crate::core::owner_limits::OwnerLimits;
use crate::core::parking;
use crate::core::request_cost::Wanted;
use crate::core::scoreboard::Scoreboard;
use crate::core::supervisor::{self, SupervisorHandle};
use crate::core::sys;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

fn lookup_user(name: &[u8]) -> Option<(u32, u32)> {
    sys::getpwnam(name).ok().flatten().map(|pw| (pw.uid, pw.gid))
}

fn lookup_group(name: &[u8]) -> Option<u32> {
    sys::getgrnam_gid(name).ok().flatten()
}

/// The vhost table the supervisor derives identities from (`s`: the main
/// server of a fully read configuration). Also returns each server_rec's
/// index in the table: vhosts without SuFcgi directives share the main
/// server's config record, so the index cannot be stored there.
fn host_config(pconf: Pool, s: Server, generation: u64) -> Result<(HostConfig, HashMap<usize, u32>), String> {
    let main = s.conf().cloned().unwrap_or_default();
    let socket_dir = match &main.socket_dir {
        Some(d) => d.clone(),
        None => PathBuf::from(OsStr::from_bytes(&pconf.runtime_dir(c"sufcgi").ok_or("no runtime directory")?)),
    };
    let (user, group) = server::unixd_ids();
    let mut hc = HostConfig::new(socket_dir, user, group);
    hc.generation = generation;
    if let Some(v) = main.min_uid {
        hc.min_uid = v;
    }
    if let Some(v) = main.min_gid {
        hc.min_gid = v;
    }
    hc.ceilings = main.ceilings;
    if let Some(v) = main.max_workers_per_owner {
        hc.max_workers_per_owner = v;
    }
    if let Some(v) = main.max_workers_total {
        hc.max_workers_total = v;
    }
    hc.blocked_env = main.blocked_env.clone();
    hc.cgroups = main.cgroups.unwrap_or_default();
    hc.short_slices = main.short_slices.unwrap_or(true);
    hc.owner_limits = OwnerLimits::DEFAULT.with(&main.owner_limits);
    collect_host_directives(ConfNode::tree(), None, &mut hc.host_directives);

    let mut srv = Some(s);
    let mut index = 0u32;
    let mut indices = HashMap::new();
    while let Some(this) = srv {
        let conf = this.conf().ok_or("module configuration missing")?;
        indices.insert(this.key(), index);
        let owner = match &conf.owner {
            None => None,
            Some((user, group)) => {
                let (uid, mut gid) = lookup_user(user).ok_or_else(|| format!("SuFcgiOwner: no such user '{}'", String::from_utf8_lossy(user)))?;
                if let Some(g) = group {
                    gid = lookup_group(g).ok_or_else(|| format!("SuFcgiOwner: no such group '{}'", String::from_utf8_lossy(g)))?;
                }
                Some((uid, gid))
            }
        };
        let mut vh = VhostConfig::new(this.name(), owner, PathBuf::from(OsStr::from_bytes(this.document_root())));
        vh.owner_overrides = conf.owner_limits;
        hc.vhosts.push(vh);
        index += 1;
        srv = this.next();
    }
    Ok((hc, indices))
}

/// Directives a pool may be configured by, as the host wrote them in server
/// config, with their enclosing `<Directory>`: the supervisor accepts what
/// they configure without a customer file (see core::supervisor::justify).
fn collect_host_directives(mut node: Option<ConfNode>, dir: Option<&PathBuf>, out: &mut Vec<HostDirective>) {
    const NAMES: &[&str] = &["SuFcgiApp", "SuFcgiAuthorizer", "SuFcgiWrapper", "SuFcgiEnv", "SuFcgiLog", "php_value", "php_flag", "php_admin_value", "php_admin_flag"];
    while let Some(d) = node {
        let name = d.name();
        let args = crate::core::htaccess::words(d.args());
        if name.eq_ignore_ascii_case(b"<Directory") {
            let inner = args.first().map(|a| a.strip_suffix(b">").unwrap_or(a).to_vec());
            let path = inner.map(|p| PathBuf::from(OsStr::from_bytes(&p)));
            collect_host_directives(d.first_child(), path.as_ref(), out);
        } else if name.starts_with(b"<") {
            // Other sections (<VirtualHost>, <IfModule>, <DirectoryMatch>…):
            // their contents keep the enclosing directory, if any.
            let keep = if name.eq_ignore_ascii_case(b"<DirectoryMatch") { None } else { dir };
            collect_host_directives(d.first_child(), keep, out);
        } else if NAMES.iter().any(|n| n.as_bytes().eq_ignore_ascii_case(name)) {
            out.push(HostDirective { dir: dir.cloned(), name: name.to_vec(), args });
        }
        node = d.next();
    }
}

/// The arguments of every log-format directive in the configuration
/// (mod_log_config's), concatenated: what `SuFcgiRequestNotes auto` looks at.
fn log_formats(mut node: Option<ConfNode>, out: &mut Vec<u8>) {
    const NAMES: &[&str] = &["LogFormat", "CustomLog", "TransferLog", "GlobalLog", "ErrorLogFormat"];
    while let Some(d) = node {
        if NAMES.iter().any(|n| n.as_bytes().eq_ignore_ascii_case(d.name())) {
            out.extend_from_slice(d.args());
            out.push(b'\n');
        }
        log_formats(d.first_child(), out);
        node = d.next();
    }
}

/// Which request notes this configuration's logs use (`SuFcgiRequestNotes`;
/// `s`: the main server of a fully read configuration).
fn notes_wanted(s: Server) -> Wanted {
    match s.conf().and_then(|c| c.request_notes) {
        Some(true) => Wanted::ALL,
        Some(false) => Wanted::default(),
        None => {
            let mut text = Vec::new();
            log_formats(ConfNode::tree(), &mut text);
            Wanted::from_formats(&text)
        }
    }
}

/// The post_config hook's body: in the single-threaded parent with a
/// complete configuration; `s` is the main server.
pub fn post_config(pconf: Pool, s: Server) -> Status {
    // The first of httpd's two start-up passes only checks the config:
    // forking a supervisor there would leak one.
    if server::pre_config_pass() {
        return OK;
    }
    if let Err(e) = ensure_supervisor(pconf, s) {
        s.log(log::ERR, &format!("sufcgi: {e}"));
        return HTTP_INTERNAL_SERVER_ERROR as Status;
    }
    OK
}

/// Start the supervisor, or hand the running one this generation's vhost
/// table; then publish the runtime the request path reads and watch the
/// supervisor's life. Also run by the watchdog after the supervisor died.
/// Parent only, at config time (or from the MPM's maintenance callback).
pub fn ensure_supervisor(pconf: Pool, s: Server) -> Result<(), String> {
    let generation = server::config_generation();
    let (hc, vhosts) = host_config(pconf, s, generation)?;
    runtime::set(None);
    if sys::geteuid() != 0 {
        s.log(log::WARNING, "sufcgi: httpd was not started as root, so workers cannot run as their owners; sufcgi requests will be answered 503");
        return Ok(());
    }
    let record = s.process_record().ok_or("cannot allocate the process record")?;
    // The mapping lives for the whole process (never unmapped), shared by
    // every generation's children and the supervisor.
    let scoreboard = record.scoreboard(|| {
        Scoreboard::create(runtime::SCOREBOARD_SLOTS, hc.ceilings.max_workers).map_err(|e| format!("cannot create the scoreboard: {e}"))
    })?;
    let mut persist = record.get();
    if let Some(note) = scoreboard.capacity_note(hc.ceilings.max_workers) {
        s.log(log::WARNING, &format!("sufcgi: {note}"));
    }

    let mut updated = false;
    if persist.supervisor_pid > 0 {
        let h = SupervisorHandle::from_raw(persist.supervisor_pid, persist.control_fd);
        updated = h.is_alive() && h.send_config(&hc).is_ok();
        let (pid, fd) = h.into_raw();
        persist.supervisor_pid = pid;
        persist.control_fd = fd;
        record.set(persist);
        if !updated {
            record.close_control();
            persist = record.get();
        }
    }
    if !updated {
        let h = supervisor::start(&hc, &scoreboard).map_err(|e| format!("cannot start the supervisor: {e}"))?;
        let (pid, fd) = h.into_raw();
        persist.supervisor_pid = pid;
        persist.control_fd = fd;
        record.set(persist);
        s.log(log::INFO, &format!("sufcgi: supervisor started, pid {pid}"));
    }
    watchdog::watch(pconf, s, persist.supervisor_pid, ensure_supervisor);
    let io_timeout_ms = (s.timeout_us() / 1000).clamp(1000, i32::MAX as i64) as i32;
    runtime::set(Some(runtime::Runtime {
        generation,
        socket_dir: hc.socket_dir.clone(),
        scoreboard,
        io_timeout_ms,
        vhosts,
        blocked_env: hc.blocked_env.clone(),
        notes: notes_wanted(s),
    }));
    Ok(())
}

/// The child_init hook's body: runs in each new child; the process pool is
/// live and the process record was created by the parent before forking.
pub fn child_init(pchild: Pool, s: Server) {
    // Only the parent may send configuration: a child (possibly
    // compromised later) must not hold the control channel.
    if let Some(record) = s.process_record() {
        record.close_control();
    }
    // Before the MPM starts this child's threads: they inherit the slice
    // (core::latency says why).
    let short = s.conf().and_then(|c| c.short_slices).unwrap_or(true);
    if let Err(e) = latency::server_process(short) {
        s.log(log::WARNING, &format!("sufcgi: cannot set this child's scheduler slice: {e}"));
    }
    // Connections to workers are kept per child, with a keeper thread of
    // its own (started here, in the child: a thread does not survive
    // fork). The child pool's cleanup gives every parked worker back
    // when the child exits; the thread never holds the child up.
    if let Some(rt) = runtime::get() {
        match parking::start(rt.scoreboard.clone(), Box::new(|m| log::main(log::ERR, m))) {
            Ok(_) => {
                pchild.keep(StopKeeping);
            }
            Err(e) => s.log(log::WARNING, &format!("sufcgi: this child keeps no connections to workers: {e}")),
        }
    }
}

/// Dropped by the child pool's cleanup (the child exits): parked workers
/// are given back to everyone.
struct StopKeeping;

impl Drop for StopKeeping {
    fn drop(&mut self) {
        guard("the child's exit", (), |m| log::main(log::ERR, m), parking::stop);
    }
}

/// The fixups hook's body. Route requests: an app owns its whole directory
/// tree; otherwise a wrapper extension or `AddHandler sufcgi-script` picks
/// the handler.
pub fn fixups(r: Req<'_>) -> Status {
    let Some(cfg) = r.dir_conf() else { return DECLINED };
    // A status page inside an app's tree stays a status page.
    if matches!(r.handler(), Some(HANDLER_STATUS | HANDLER_METRICS)) {
        return DECLINED;
    }
    if cfg.app().is_some() {
        r.set_handler(APP_HANDLER);
        // The app answers for directories too: keep mod_dir and
        // mod_autoindex from redirecting or listing them.
        r.forget_directory();
        return DECLINED;
    }
    if r.handler() == Some(HANDLER_SCRIPT) {
        return DECLINED;
    }
    if r.file_type() == FileType::Regular {
        if let Some(name) = r.filename() {
            if cfg.wrapper_for(name).is_some() {
                r.set_handler(WRAPPER_HANDLER);
            }
        }
    }
    DECLINED
}
