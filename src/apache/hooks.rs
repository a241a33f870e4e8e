//! Hook registration and the configuration-time hooks: start (or update) the
//! supervisor in the root parent, close what children must not hold, and route
//! requests to our handler in fixups.

use super::apr::bytes;
use super::config::{self, server_conf};
use crate::core::guard::guard;
use super::{authorizer, ffi, handler, log, runtime, watchdog};
use crate::core::hostconfig::{HostConfig, HostDirective, VhostConfig};
use crate::core::owner_limits::OwnerLimits;
use crate::core::request_cost::Wanted;
use crate::core::parking;
use crate::core::scoreboard::Scoreboard;
use crate::core::supervisor::{self, SupervisorHandle};
use crate::core::sys;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::raw::c_int;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::ptr;

pub const HANDLER_APP: &[u8] = b"sufcgi-app";
pub const HANDLER_WRAPPER: &[u8] = b"sufcgi-wrapper";
/// `AddHandler sufcgi-script`, `SetHandler sufcgi-status` and
/// `SetHandler sufcgi-metrics` (status.rs): the names lighttpd's
/// `.htaccess` reader knows too.
pub use crate::core::htaccess_file::{METRICS_HANDLER as HANDLER_METRICS, SCRIPT_HANDLER as HANDLER_SCRIPT, STATUS_HANDLER as HANDLER_STATUS};

pub unsafe extern "C" fn register_hooks(_p: *mut ffi::apr_pool_t) {
    // SAFETY: called by httpd while loading the module; the hook functions are
    // 'static and the predecessor/successor lists are null.
    unsafe {
        ffi::ap_hook_post_config(Some(post_config), ptr::null(), ptr::null(), ffi::APR_HOOK_MIDDLE as c_int);
        ffi::ap_hook_child_init(Some(child_init), ptr::null(), ptr::null(), ffi::APR_HOOK_MIDDLE as c_int);
        // Before mod_dir's fixup, which would otherwise look for index files
        // (or redirect) inside a directory that an app serves.
        ffi::ap_hook_fixups(Some(fixups), ptr::null(), ptr::null(), ffi::APR_HOOK_FIRST as c_int);
        ffi::ap_hook_handler(Some(handler::handler), ptr::null(), ptr::null(), ffi::APR_HOOK_MIDDLE as c_int);
        // SuFcgiAuthorizer: access_checker runs for every request, with or
        // without Require/AuthType, and its OK cannot override the host's own
        // access rules (see authorizer.rs).
        ffi::ap_hook_access_checker(Some(authorizer::access_checker), ptr::null(), ptr::null(), ffi::APR_HOOK_MIDDLE as c_int);
    }
}

fn lookup_user(name: &[u8]) -> Option<(u32, u32)> {
    sys::getpwnam(name).ok().flatten().map(|pw| (pw.uid, pw.gid))
}

fn lookup_group(name: &[u8]) -> Option<u32> {
    sys::getgrnam_gid(name).ok().flatten()
}

/// The vhost table the supervisor derives identities from.
///
/// # Safety
/// `s` is the main server of a fully read configuration.
/// Also returns each server_rec's index in the table: vhosts without SuFcgi
/// directives share the main server's config record, so the index cannot be
/// stored there.
unsafe fn host_config(
    pconf: *mut ffi::apr_pool_t,
    s: *mut ffi::server_rec,
    generation: u64,
) -> Result<(HostConfig, HashMap<usize, u32>), String> {
    // SAFETY: s and its chain are live for the whole generation.
    unsafe {
        let main = server_conf(s).cloned().unwrap_or_default();
        let socket_dir = match &main.socket_dir {
            Some(d) => d.clone(),
            None => {
                let p = ffi::ap_runtime_dir_relative(pconf, c"sufcgi".as_ptr());
                PathBuf::from(OsStr::from_bytes(bytes(p).ok_or("no runtime directory")?))
            }
        };
        let mut hc = HostConfig::new(socket_dir, ffi::ap_unixd_config.user_id, ffi::ap_unixd_config.group_id);
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
        hc.owner_limits = OwnerLimits::DEFAULT.with(&main.owner_limits);
        collect_host_directives(ffi::ap_conftree, None, &mut hc.host_directives);

        let core_index = (*ptr::addr_of!(ffi::core_module)).module_index as usize;
        let mut srv = s;
        let mut index = 0u32;
        let mut indices = HashMap::new();
        while !srv.is_null() {
            let conf = server_conf(srv).ok_or("module configuration missing")?;
            indices.insert(srv as usize, index);
            let owner = match &conf.owner {
                None => None,
                Some((user, group)) => {
                    let (uid, mut gid) = lookup_user(user)
                        .ok_or_else(|| format!("SuFcgiOwner: no such user '{}'", String::from_utf8_lossy(user)))?;
                    if let Some(g) = group {
                        gid = lookup_group(g)
                            .ok_or_else(|| format!("SuFcgiOwner: no such group '{}'", String::from_utf8_lossy(g)))?;
                    }
                    Some((uid, gid))
                }
            };
            let core = *((*srv).module_config as *mut *mut ffi::core_server_config).add(core_index);
            let docroot = core.as_ref().and_then(|c| bytes(c.ap_document_root)).unwrap_or(b"");
            let name = vhost_name(srv);
            let mut vh = VhostConfig::new(name, owner, PathBuf::from(OsStr::from_bytes(docroot)));
            vh.owner_overrides = conf.owner_limits;
            hc.vhosts.push(vh);
            index += 1;
            srv = (*srv).next;
        }
        Ok((hc, indices))
    }
}

/// `ServerName:port` for log lines and the status page: the port of the
/// ServerName, else the one the vhost listens on, else none (`*:*`).
///
/// # Safety
/// `srv` is a server_rec of a fully read configuration.
unsafe fn vhost_name(srv: *const ffi::server_rec) -> String {
    // SAFETY: the caller's contract; `addrs` is null or a list httpd built.
    unsafe {
        let host = String::from_utf8_lossy(bytes((*srv).server_hostname).unwrap_or(b"")).into_owned();
        let listened = (*srv).addrs.as_ref().map_or(0, |a| a.host_port);
        match (*srv).port {
            0 if listened == 0 => host,
            0 => format!("{host}:{listened}"),
            port => format!("{host}:{port}"),
        }
    }
}

/// Directives a pool may be configured by, as the host wrote them in server
/// config, with their enclosing `<Directory>`: the supervisor accepts what
/// they configure without a customer file (see core::supervisor::justify).
///
/// # Safety
/// `node` is null or a node of httpd's live configuration tree.
unsafe fn collect_host_directives(mut node: *const ffi::ap_directive_t, dir: Option<&PathBuf>, out: &mut Vec<HostDirective>) {
    const NAMES: &[&str] = &["SuFcgiApp", "SuFcgiAuthorizer", "SuFcgiWrapper", "SuFcgiEnv", "SuFcgiLog", "php_value", "php_flag", "php_admin_value", "php_admin_flag"];
    // SAFETY: the tree is complete and immutable once configuration is read.
    unsafe {
        while let Some(d) = node.as_ref() {
            let name = bytes(d.directive).unwrap_or(b"");
            let args = crate::core::htaccess::words(bytes(d.args).unwrap_or(b""));
            if name.eq_ignore_ascii_case(b"<Directory") {
                let inner = args.first().map(|a| a.strip_suffix(b">").unwrap_or(a).to_vec());
                let path = inner.map(|p| PathBuf::from(OsStr::from_bytes(&p)));
                collect_host_directives(d.first_child, path.as_ref(), out);
            } else if name.starts_with(b"<") {
                // Other sections (<VirtualHost>, <IfModule>, <DirectoryMatch>…):
                // their contents keep the enclosing directory, if any.
                let keep = if name.eq_ignore_ascii_case(b"<DirectoryMatch") { None } else { dir };
                collect_host_directives(d.first_child, keep, out);
            } else if NAMES.iter().any(|n| n.as_bytes().eq_ignore_ascii_case(name)) {
                out.push(HostDirective { dir: dir.cloned(), name: name.to_vec(), args });
            }
            node = d.next;
        }
    }
}

/// The arguments of every log-format directive in the configuration
/// (mod_log_config's), concatenated: what `SuFcgiRequestNotes auto` looks at.
///
/// # Safety
/// `node` is null or a node of httpd's live configuration tree.
unsafe fn log_formats(mut node: *const ffi::ap_directive_t, out: &mut Vec<u8>) {
    const NAMES: &[&str] = &["LogFormat", "CustomLog", "TransferLog", "GlobalLog", "ErrorLogFormat"];
    // SAFETY: the tree is complete and immutable once configuration is read.
    unsafe {
        while let Some(d) = node.as_ref() {
            let name = bytes(d.directive).unwrap_or(b"");
            if NAMES.iter().any(|n| n.as_bytes().eq_ignore_ascii_case(name)) {
                out.extend_from_slice(bytes(d.args).unwrap_or(b""));
                out.push(b'\n');
            }
            log_formats(d.first_child, out);
            node = d.next;
        }
    }
}

/// Which request notes this configuration's logs use (`SuFcgiRequestNotes`).
///
/// # Safety
/// `s` is the main server of a fully read configuration.
unsafe fn notes_wanted(s: *mut ffi::server_rec) -> Wanted {
    // SAFETY: the caller's contract.
    match unsafe { server_conf(s) }.and_then(|c| c.request_notes) {
        Some(true) => Wanted::ALL,
        Some(false) => Wanted::default(),
        None => {
            let mut text = Vec::new();
            // SAFETY: ap_conftree is httpd's complete tree at post_config.
            unsafe { log_formats(ffi::ap_conftree, &mut text) };
            Wanted::from_formats(&text)
        }
    }
}

unsafe extern "C" fn post_config(
    pconf: *mut ffi::apr_pool_t,
    _plog: *mut ffi::apr_pool_t,
    _ptemp: *mut ffi::apr_pool_t,
    s: *mut ffi::server_rec,
) -> c_int {
    guard("post_config", ffi::HTTP_INTERNAL_SERVER_ERROR as c_int, |m| log::server(s, log::ERR, m), || {
        // SAFETY: httpd runs post_config in the single-threaded parent with a
        // complete configuration; `s` is the main server.
        unsafe {
            // The first of httpd's two start-up passes only checks the config:
            // forking a supervisor there would leak one.
            if ffi::ap_state_query(ffi::AP_SQ_MAIN_STATE as c_int) == ffi::AP_SQ_MS_CREATE_PRE_CONFIG as c_int {
                return ffi::OK as c_int;
            }
            if let Err(e) = ensure_supervisor(pconf, s) {
                log::server(s, log::ERR, &format!("sufcgi: {e}"));
                return ffi::HTTP_INTERNAL_SERVER_ERROR as c_int;
            }
            ffi::OK as c_int
        }
    })
}

/// Start the supervisor, or hand the running one this generation's vhost
/// table; then publish the runtime the request path reads and watch the
/// supervisor's life. Also used by the watchdog after the supervisor died.
///
/// # Safety
/// Parent only, at config time (or from the MPM's maintenance callback).
pub unsafe fn ensure_supervisor(pconf: *mut ffi::apr_pool_t, s: *mut ffi::server_rec) -> Result<(), String> {
    // SAFETY: the caller guarantees the single-threaded parent and a live
    // configuration; every pointer below comes from it.
    unsafe {
        let generation = ffi::ap_state_query(ffi::AP_SQ_CONFIG_GEN as c_int).max(0) as u64;
        let (hc, vhosts) = host_config(pconf, s, generation)?;
        runtime::set(None);
        if libc::geteuid() != 0 {
            log::server(s, log::WARNING, "sufcgi: httpd was not started as root, so workers cannot run as their owners; sufcgi requests will be answered 503");
            return Ok(());
        }
        let persist = runtime::persist((*(*s).process).pool).ok_or("cannot allocate the process record")?;
        let raw = match persist.scoreboard {
            Some(raw) => raw,
            None => {
                let sb = Scoreboard::create(runtime::SCOREBOARD_SLOTS, hc.ceilings.max_workers)
                    .map_err(|e| format!("cannot create the scoreboard: {e}"))?;
                persist.scoreboard = Some(sb.as_raw());
                sb.as_raw()
            }
        };
        // The mapping lives for the whole process (never unmapped), shared by
        // every generation's children and the supervisor.
        let scoreboard = Scoreboard::from_raw(raw);
        if let Some(note) = scoreboard.capacity_note(hc.ceilings.max_workers) {
            log::server(s, log::WARNING, &format!("sufcgi: {note}"));
        }

        let mut updated = false;
        if persist.supervisor_pid > 0 {
            let h = SupervisorHandle::from_raw(persist.supervisor_pid, persist.control_fd);
            updated = h.is_alive() && h.send_config(&hc).is_ok();
            let (pid, fd) = h.into_raw();
            persist.supervisor_pid = pid;
            persist.control_fd = fd;
            if !updated && fd >= 0 {
                libc::close(fd);
                persist.control_fd = -1;
            }
        }
        if !updated {
            let h = supervisor::start(&hc, &scoreboard).map_err(|e| format!("cannot start the supervisor: {e}"))?;
            let (pid, fd) = h.into_raw();
            persist.supervisor_pid = pid;
            persist.control_fd = fd;
            log::server(s, log::INFO, &format!("sufcgi: supervisor started, pid {pid}"));
        }
        watchdog::watch(pconf, s, persist.supervisor_pid);
        let io_timeout_ms = ((*s).timeout / 1000).clamp(1000, i32::MAX as i64) as i32;
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
}

unsafe extern "C" fn child_init(pchild: *mut ffi::apr_pool_t, s: *mut ffi::server_rec) {
    guard("child_init", (), |m| log::server(s, log::ERR, m), || {
        // SAFETY: runs in each new child; the process pool is live and the
        // Persist record was created by the parent before forking.
        unsafe {
            // Only the parent may send configuration: a child (possibly
            // compromised later) must not hold the control channel.
            if let Some(p) = runtime::persist((*(*s).process).pool) {
                if p.control_fd >= 0 {
                    libc::close(p.control_fd);
                    p.control_fd = -1;
                }
            }
        }
        // Connections to workers are kept per child, with a keeper thread of
        // its own (started here, in the child: a thread does not survive
        // fork). The child pool's cleanup gives every parked worker back
        // when the child exits; the thread never holds the child up.
        if let Some(rt) = runtime::get() {
            match parking::start(rt.scoreboard.clone(), Box::new(|m| log::server(ptr::null(), log::ERR, m))) {
                Ok(_) => {
                    // SAFETY: pchild is the child's live process pool.
                    unsafe { super::apr::pool_box(pchild, StopKeeping) };
                }
                Err(e) => log::server(s, log::WARNING, &format!("sufcgi: this child keeps no connections to workers: {e}")),
            }
        }
    })
}

/// Dropped by the child pool's cleanup (the child exits): parked workers
/// are given back to everyone.
struct StopKeeping;

impl Drop for StopKeeping {
    fn drop(&mut self) {
        guard("the child's exit", (), |m| log::server(ptr::null(), log::ERR, m), parking::stop);
    }
}

/// Route requests: an app owns its whole directory tree; otherwise a wrapper
/// extension or `AddHandler sufcgi-script` picks the handler.
unsafe extern "C" fn fixups(r: *mut ffi::request_rec) -> c_int {
    guard("fixups", ffi::DECLINED, |m| log::request(r, log::ERR, m.as_bytes()), || {
        // SAFETY: httpd passes the live request in its fixups phase.
        unsafe {
            let Some(cfg) = config::dir_conf(r) else { return ffi::DECLINED };
            let rr = &mut *r;
            // A status page inside an app's tree stays a status page.
            if matches!(bytes(rr.handler), Some(HANDLER_STATUS | HANDLER_METRICS)) {
                return ffi::DECLINED;
            }
            if cfg.app().is_some() {
                rr.handler = c"sufcgi-app".as_ptr();
                // The app answers for directories too: keep mod_dir and
                // mod_autoindex from redirecting or listing them.
                if rr.finfo.filetype == ffi::apr_filetype_e_APR_DIR {
                    rr.finfo.filetype = ffi::apr_filetype_e_APR_NOFILE;
                }
                return ffi::DECLINED;
            }
            if bytes(rr.handler) == Some(HANDLER_SCRIPT) {
                return ffi::DECLINED;
            }
            if rr.finfo.filetype == ffi::apr_filetype_e_APR_REG {
                if let Some(name) = bytes(rr.filename) {
                    if cfg.wrapper_for(name).is_some() {
                        rr.handler = c"sufcgi-wrapper".as_ptr();
                    }
                }
            }
            ffi::DECLINED
        }
    })
}
