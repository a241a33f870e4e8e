//! The content handler: request → merged directives → pool spec → ready pool
//! (cached, else asked of the supervisor) → CGI params → relay.

use super::apr::{self, bytes, table_entries, table_set};
use super::config::dir_conf;
use crate::core::guard::guard;
use super::hooks::{HANDLER_APP, HANDLER_METRICS, HANDLER_SCRIPT, HANDLER_STATUS, HANDLER_WRAPPER};
use super::pool_request::{self, NotRun};
use super::{ffi, log, relay, runtime};
use crate::core::directives::{read_busy_page, DirConfig};
use crate::core::fastcgi::params::param_value_is_safe;
use crate::core::hostconfig::param_blocked;
use crate::core::mapping::split_mount;
use crate::core::identity::WrappedScript;
use crate::core::request::{AppKind, PoolInfo, PoolSpec};
use std::ffi::OsStr;
use std::os::raw::c_int;
use std::os::unix::ffi::OsStrExt;
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
pub(super) fn userdir_user(uri: &[u8]) -> Option<Vec<u8>> {
    let rest = uri.strip_prefix(b"/~")?;
    let end = rest.iter().position(|&c| c == b'/').unwrap_or(rest.len());
    (end > 0).then(|| rest[..end].to_vec())
}

fn refuse(r: *mut ffi::request_rec, status: u32, why: &str) -> c_int {
    log::request(r, log::ERR, format!("sufcgi: {why}").as_bytes());
    error_page(r, status as c_int);
    status as c_int
}

/// The body of an error sufcgi answers (`core::error_page`: what kind of
/// problem, and that the owner's SuFcgiLog and status page say more),
/// unless the host or the site has an `ErrorDocument` for it.
pub(super) fn error_page(r: *mut ffi::request_rec, status: c_int) {
    let Some(page) = crate::core::error_page::page(status.clamp(0, 999) as u16) else { return };
    let Ok(text) = std::ffi::CString::new(page) else { return };
    // SAFETY: r is live; ap_custom_response copies the text into r's pool,
    // and the index is httpd's own for a status it knows.
    unsafe {
        let idx = ffi::ap_index_of_response(status);
        if ffi::ap_response_code_string(r, idx).is_null() {
            ffi::ap_custom_response(r, status, text.as_ptr());
        }
    }
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
            Some(HANDLER_STATUS) => return super::status::handle(r, false),
            Some(HANDLER_METRICS) => return super::status::handle(r, true),
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

        // AcceptPathInfo Off, as mod_cgi and mod_fcgid honour it: a URL that
        // names more than the file is not found. (httpd's own split, before an
        // app's mount point takes the rest of the URL as PATH_INFO.)
        if rr.used_path_info == ffi::AP_REQ_REJECT_PATH_INFO as c_int && !path_info.is_empty() {
            log::request(r, log::INFO, b"sufcgi: AcceptPathInfo off disallows the path info of this URL");
            return ffi::HTTP_NOT_FOUND as c_int;
        }
        // (program, args, workdir) and the CGI variables this mode decides.
        let mut overrides: Vec<(&[u8], Vec<u8>)> = Vec::new();
        // The script a wrapper serves, checked once its pool's owner is known.
        let mut wrapped: Option<WrappedScript> = None;
        let (program, args, workdir) = match kind {
            AppKind::App => {
                let Some(def) = cfg.app() else { return ffi::DECLINED };
                let mut full = filename.clone();
                full.extend_from_slice(&path_info);
                let dir = def.dir.as_os_str().as_bytes();
                // SCRIPT_NAME is the mount point and PATH_INFO the rest: give
                // httpd that path info, so ap_add_cgi_vars derives SCRIPT_NAME
                // and PATH_TRANSLATED exactly as for any CGI request.
                if let Some((_, info)) = split_mount(&uri, &full, dir) {
                    rr.path_info = super::apr::pstr(rr.pool, &info) as *mut _;
                }
                overrides.push((b"SCRIPT_FILENAME", def.program.as_os_str().as_bytes().to_vec()));
                (def.program.clone(), def.args.clone(), def.dir.clone())
            }
            AppKind::Wrapper => {
                if !is_file {
                    return ffi::HTTP_NOT_FOUND as c_int;
                }
                let Some(w) = cfg.wrapper_for(&filename) else { return ffi::DECLINED };
                let script = WrappedScript::new(path(&filename), w);
                let workdir = w.workdir_for(&script.file);
                wrapped = Some(script);
                (w.command.clone(), cfg.wrapper_args(w), workdir)
            }
            AppKind::Script => {
                if !is_file {
                    return ffi::HTTP_NOT_FOUND as c_int;
                }
                let p = path(&filename);
                let dir = p.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
                (p, Vec::new(), dir)
            }
            // Authorizers run in the access phase (authorizer.rs), never as a handler.
            AppKind::Authorizer => return ffi::DECLINED,
        };
        let Some(&vhost) = rt.vhosts.get(&(rr.server as usize)) else {
            return refuse(r, ffi::HTTP_INTERNAL_SERVER_ERROR, "request for a server unknown to this configuration generation");
        };
        let spec = PoolSpec::for_directory(rt.generation, vhost, kind, program, args, workdir, cfg, userdir_user(&uri));

        // The CGI environment httpd builds for mod_cgi, mod_proxy_fcgi and mod_fcgid.
        ffi::ap_add_common_vars(r);
        ffi::ap_add_cgi_vars(r);
        for (k, v) in &overrides {
            table_set(rr.subprocess_env, k, v);
        }
        // One pass: blocked names are dropped first (they are never sent, so
        // they are not checked), then every name and value sent is checked.
        let mut pairs = table_entries(rr.subprocess_env);
        let mut unsafe_name: Option<&[u8]> = None;
        pairs.retain_mut(|(k, v)| {
            if unsafe_name.is_some() || param_blocked(k, &rt.blocked_env) {
                return false;
            }
            // `ServerSignature On` (Debian's default) makes httpd end SERVER_SIGNATURE
            // with "\n": server-made text, not request data, so trim it before the check.
            if *k == b"SERVER_SIGNATURE" {
                *v = v.trim_ascii_end();
            }
            if !param_value_is_safe(k) || !param_value_is_safe(v) {
                unsafe_name = Some(*k);
            }
            true
        });
        if let Some(k) = unsafe_name {
            return refuse(r, ffi::HTTP_BAD_REQUEST, &format!("refusing a request whose {} contains CR or LF", String::from_utf8_lossy(k)));
        }
        // A body that is too large is refused before any worker is started.
        let limit = ffi::ap_get_limit_req_body(r);
        if limit > 0 {
            let declared = apr::table_get(rr.headers_in, b"Content-Length")
                .and_then(|v| std::str::from_utf8(v).ok().and_then(|s| s.trim().parse::<i64>().ok()));
            if declared.is_some_and(|n| n > limit) {
                return refuse(r, ffi::HTTP_REQUEST_ENTITY_TOO_LARGE, "request body larger than LimitRequestBody");
            }
        }

        let body = match relay::Body::prefetch(r) {
            Ok(b) => b,
            Err(status) => return refuse(r, status as u32, "reading the request body from the client failed"),
        };
        let check = |info: &PoolInfo| -> Result<(), (u32, String)> {
            match &wrapped {
                Some(script) => script.check(info.uid).map_err(|why| (ffi::HTTP_FORBIDDEN, format!("refusing to run a script: {why}"))),
                None => Ok(()),
            }
        };
        match pool_request::run(r, &rt, &spec, &pairs, &body, relay::Role::Responder, &check) {
            Ok(outcome) => {
                if let Some(why) = &outcome.why {
                    log::request(r, log::ERR, format!("sufcgi: {why}").as_bytes());
                }
                if outcome.status >= 400 {
                    error_page(r, outcome.status);
                }
                outcome.status
            }
            Err(NotRun::Busy { retry_after, why }) => busy(r, cfg, retry_after, &why),
            Err(NotRun::Refused { status, retry_after, why }) => {
                if let Some(s) = retry_after {
                    table_set(rr.err_headers_out, b"Retry-After", s.to_string().as_bytes());
                }
                refuse(r, status, &why)
            }
        }
    }
}

/// 503 for an overloaded or backing-off app: `Retry-After`, and the
/// customer's `SuFcgiBusyPage` as the body when there is one.
fn busy(r: *mut ffi::request_rec, cfg: &DirConfig, retry_after: u32, why: &str) -> c_int {
    log::request(r, log::WARNING, format!("sufcgi: 503: {why}").as_bytes());
    // SAFETY: r is the live request; strings are copied by APR.
    unsafe {
        let rr = &mut *r;
        table_set(rr.err_headers_out, b"Retry-After", retry_after.max(1).to_string().as_bytes());
        if let Some(page) = cfg.busy_page.as_deref().and_then(read_busy_page) {
            rr.status = ffi::HTTP_SERVICE_UNAVAILABLE as c_int;
            ffi::ap_set_content_type(r, c"text/html; charset=utf-8".as_ptr());
            table_set(rr.headers_out, b"Retry-After", retry_after.max(1).to_string().as_bytes());
            ffi::ap_rwrite(page.as_ptr() as *const _, page.len() as c_int, r);
            return ffi::OK as c_int;
        }
    }
    error_page(r, ffi::HTTP_SERVICE_UNAVAILABLE as c_int);
    ffi::HTTP_SERVICE_UNAVAILABLE as c_int
}
