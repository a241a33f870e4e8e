//! The content handler: request → merged directives → pool spec → ready pool
//! (cached, else asked of the supervisor) → CGI params → relay.

use super::apr::{bytes, table_entries, table_set};
use super::config::{dir_conf, server_conf};
use super::guard::guard;
use super::hooks::{HANDLER_APP, HANDLER_SCRIPT, HANDLER_WRAPPER};
use super::link::{self, PoolError};
use super::{ffi, log, relay, runtime};
use crate::core::directives::DirConfig;
use crate::core::fastcgi::params::param_value_is_safe;
use crate::core::mapping::split_mount;
use crate::core::request::{AppKind, PoolInfo, PoolSpec};
use std::ffi::OsStr;
use std::os::raw::c_int;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub unsafe extern "C" fn handler(r: *mut ffi::request_rec) -> c_int {
    guard("the sufcgi handler", ffi::HTTP_INTERNAL_SERVER_ERROR as c_int, |m| log::request(r, log::ERR, m.as_bytes()), || {
        // SAFETY: httpd passes the live request to its handler phase.
        unsafe { handle(r) }
    })
}

fn path(b: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(b))
}

/// `/~alice/...` names the user whose home a mod_userdir URL maps into.
fn userdir_user(uri: &[u8]) -> Option<Vec<u8>> {
    let rest = uri.strip_prefix(b"/~")?;
    let end = rest.iter().position(|&c| c == b'/').unwrap_or(rest.len());
    (end > 0).then(|| rest[..end].to_vec())
}

fn refuse(r: *mut ffi::request_rec, status: u32, why: &str) -> c_int {
    log::request(r, log::ERR, format!("sufcgi: {why}").as_bytes());
    status as c_int
}

/// A script served through a wrapper runs with the pool owner's rights, so it
/// must be the owner's own file that nobody else can change.
fn check_wrapped_script(file: &Path, pool: &PoolInfo) -> Result<(), String> {
    let md = std::fs::symlink_metadata(file).map_err(|e| format!("cannot stat {}: {e}", file.display()))?;
    let mode = md.mode();
    if !md.file_type().is_file() {
        return Err(format!("{} is not a regular file", file.display()));
    }
    if md.uid() != pool.uid {
        return Err(format!("{} is owned by uid {}, not by the site owner (uid {})", file.display(), md.uid(), pool.uid));
    }
    if mode & 0o022 != 0 {
        return Err(format!("{} is writable by group or others", file.display()));
    }
    if mode & 0o6000 != 0 {
        return Err(format!("{} is setuid or setgid", file.display()));
    }
    Ok(())
}

/// # Safety
/// `r` is the live request in its handler phase.
unsafe fn handle(r: *mut ffi::request_rec) -> c_int {
    // SAFETY: r is live for the whole call; every pointer read from it is owned
    // by httpd for at least the request's lifetime.
    unsafe {
        let rr = &mut *r;
        let kind = match bytes(rr.handler) {
            Some(HANDLER_APP) => AppKind::App,
            Some(HANDLER_WRAPPER) => AppKind::Wrapper,
            Some(HANDLER_SCRIPT) => AppKind::Script,
            _ => return ffi::DECLINED,
        };
        let Some(rt) = runtime::get() else {
            return refuse(r, ffi::HTTP_SERVICE_UNAVAILABLE, "not available: httpd was not started as root");
        };
        let empty = DirConfig::default();
        let cfg = dir_conf(r).unwrap_or(&empty);
        let filename = bytes(rr.filename).unwrap_or(b"").to_vec();
        let path_info = bytes(rr.path_info).unwrap_or(b"").to_vec();
        let uri = bytes(rr.uri).unwrap_or(b"").to_vec();
        let is_file = rr.finfo.filetype == ffi::apr_filetype_e_APR_REG;

        // (program, args, workdir) and the CGI variables this mode decides.
        let mut overrides: Vec<(&[u8], Vec<u8>)> = Vec::new();
        let (program, args, workdir) = match kind {
            AppKind::App => {
                let Some(def) = cfg.app() else { return ffi::DECLINED };
                let mut full = filename.clone();
                full.extend_from_slice(&path_info);
                let dir = def.dir.as_os_str().as_bytes();
                let (script_name, info) = split_mount(&uri, &full, dir).unwrap_or_else(|| (Vec::new(), uri.clone()));
                overrides.push((b"SCRIPT_NAME", script_name));
                overrides.push((b"SCRIPT_FILENAME", def.program.as_os_str().as_bytes().to_vec()));
                if info.is_empty() {
                    overrides.push((b"PATH_INFO", Vec::new()));
                } else {
                    let mut translated = dir.strip_suffix(b"/").unwrap_or(dir).to_vec();
                    translated.extend_from_slice(&info);
                    overrides.push((b"PATH_TRANSLATED", translated));
                    overrides.push((b"PATH_INFO", info));
                }
                (def.program.clone(), def.args.clone(), def.dir.clone())
            }
            AppKind::Wrapper => {
                if !is_file {
                    return ffi::HTTP_NOT_FOUND as c_int;
                }
                let Some(w) = cfg.wrapper_for(&filename) else { return ffi::DECLINED };
                (w.command.clone(), w.args.clone(), w.dir.clone())
            }
            AppKind::Script => {
                if !is_file {
                    return ffi::HTTP_NOT_FOUND as c_int;
                }
                let p = path(&filename);
                let dir = p.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
                (p, Vec::new(), dir)
            }
        };
        let vhost = server_conf(rr.server).map(|c| c.vhost_index).unwrap_or(0);
        let spec = PoolSpec {
            generation: rt.generation,
            vhost,
            kind,
            program,
            args,
            workdir,
            config_files: cfg.sources.clone(),
            env: cfg.env.clone(),
            max_workers: cfg.max_workers.unwrap_or(crate::core::hostconfig::DEFAULT_MAX_WORKERS),
            userdir_user: userdir_user(&uri),
        };

        // The CGI environment httpd builds for mod_cgi, mod_proxy_fcgi and mod_fcgid.
        ffi::ap_add_common_vars(r);
        ffi::ap_add_cgi_vars(r);
        for (k, v) in &overrides {
            if k == b"PATH_INFO" && v.is_empty() {
                super::apr::table_unset(rr.subprocess_env, b"PATH_TRANSLATED");
            }
            table_set(rr.subprocess_env, k, v);
        }
        let pairs = table_entries(rr.subprocess_env);
        if let Some((k, _)) = pairs.iter().find(|(k, v)| !param_value_is_safe(k) || !param_value_is_safe(v)) {
            return refuse(r, ffi::HTTP_BAD_REQUEST, &format!("refusing a request whose {} contains CR or LF", String::from_utf8_lossy(k)));
        }

        let mut checked_script = false;
        for attempt in 0..2 {
            let pool = match link::pool_for(&rt, &spec, attempt > 0) {
                Ok(p) => p,
                Err(PoolError::Refused { status, reason }) => {
                    if status == 503 {
                        table_set(rr.err_headers_out, b"Retry-After", b"5");
                    }
                    return refuse(r, status as u32, &reason);
                }
                Err(PoolError::Unavailable(why)) => {
                    table_set(rr.err_headers_out, b"Retry-After", b"5");
                    return refuse(r, ffi::HTTP_SERVICE_UNAVAILABLE, &why);
                }
            };
            if kind == AppKind::Wrapper && !checked_script {
                if let Err(why) = check_wrapped_script(&path(&filename), &pool) {
                    return refuse(r, ffi::HTTP_FORBIDDEN, &format!("refusing to run a script: {why}"));
                }
                checked_script = true;
            }
            match relay::connect(&pool.socket_path) {
                Ok(sock) => {
                    let slot = rt.scoreboard.slot(pool.slot);
                    let entered = slot.map(|s| s.enter());
                    if let Some((_, true)) = &entered {
                        link::spawn_hint(&rt, pool.slot, pool.slot_generation);
                    }
                    let status = relay::exchange(r, sock, &pairs, rt.io_timeout_ms);
                    drop(entered);
                    return status;
                }
                Err(e) if attempt == 0 && matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ECONNREFUSED)) => {
                    // The pool went away (idle, crashed, replaced): ask again.
                    link::forget(&spec);
                    continue;
                }
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                    table_set(rr.err_headers_out, b"Retry-After", b"5");
                    return refuse(r, ffi::HTTP_SERVICE_UNAVAILABLE, "the app's queue is full");
                }
                Err(e) => return refuse(r, ffi::HTTP_BAD_GATEWAY, &format!("cannot connect to the app's socket: {e}")),
            }
        }
        refuse(r, ffi::HTTP_BAD_GATEWAY, "the app's pool could not be reached")
    }
}
