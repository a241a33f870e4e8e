//! The content handler: request → merged directives → pool spec → ready pool
//! (cached, else asked of the supervisor) → CGI params → relay.

use super::pool_request::{self, NotRun};
use super::relay::{Body, Role};
use super::req::{
    userdir_user, FileType, Req, Status, DECLINED, HANDLER_APP, HANDLER_METRICS, HANDLER_SCRIPT, HANDLER_STATUS, HANDLER_WRAPPER, HTTP_BAD_REQUEST,
    HTTP_FORBIDDEN, HTTP_INTERNAL_SERVER_ERROR, HTTP_NOT_FOUND, HTTP_REQUEST_ENTITY_TOO_LARGE, HTTP_SERVICE_UNAVAILABLE, OK,
};
use super::{log, runtime, status};
use crate::core::directives::{read_busy_page, DirConfig};
use crate::core::fastcgi::params::param_value_is_safe;
use crate::core::hostconfig::param_blocked;
use crate::core::identity::WrappedScript;
use crate::core::mapping::split_mount;
use crate::core::request::{AppKind, PoolInfo, PoolSpec};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

fn path(b: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(b))
}

fn refuse(r: Req<'_>, status: u32, why: &str) -> Status {
    r.log(log::ERR, format!("sufcgi: {why}").as_bytes());
    error_page(r, status as Status);
    status as Status
}

/// The body of an error sufcgi answers (`core::error_page`: what kind of
/// problem, and that the owner's SuFcgiLog and status page say more),
/// unless the host or the site has an `ErrorDocument` for it.
fn error_page(r: Req<'_>, status: Status) {
    let Some(page) = crate::core::error_page::page(status.clamp(0, 999) as u16) else { return };
    r.default_error_text(status, &page);
}

/// The content handler's body (the request in its handler phase).
pub fn handle(r: Req<'_>) -> Status {
    let kind = match r.handler() {
        Some(HANDLER_APP) => AppKind::App,
        Some(HANDLER_WRAPPER) => AppKind::Wrapper,
        Some(HANDLER_SCRIPT) => AppKind::Script,
        Some(HANDLER_STATUS) => return status::handle(r, false),
        Some(HANDLER_METRICS) => return status::handle(r, true),
        _ => return DECLINED,
    };
    let Some(rt) = runtime::get() else {
        return refuse(r, HTTP_SERVICE_UNAVAILABLE, "not available: httpd was not started as root");
    };
    let empty = DirConfig::default();
    let cfg = r.dir_conf().unwrap_or(&empty);
    let filename = r.filename().unwrap_or(b"").to_vec();
    let path_info = r.path_info().unwrap_or(b"").to_vec();
    let uri = r.uri().unwrap_or(b"").to_vec();
    let is_file = r.file_type() == FileType::Regular;

    // AcceptPathInfo Off, as mod_cgi and mod_fcgid honour it: a URL that
    // names more than the file is not found. (httpd's own split, before an
    // app's mount point takes the rest of the URL as PATH_INFO.)
    if r.path_info_rejected() && !path_info.is_empty() {
        r.log(log::INFO, b"sufcgi: AcceptPathInfo off disallows the path info of this URL");
        return HTTP_NOT_FOUND as Status;
    }
    // (program, args, workdir) and the CGI variables this mode decides.
    let mut overrides: Vec<(&[u8], Vec<u8>)> = Vec::new();
    // The script a wrapper serves, checked once its pool's owner is known.
    let mut wrapped: Option<WrappedScript> = None;
    let (program, args, workdir) = match kind {
        AppKind::App => {
            let Some(def) = cfg.app() else { return DECLINED };
            let mut full = filename.clone();
            full.extend_from_slice(&path_info);
            let dir = def.dir.as_os_str().as_bytes();
            // SCRIPT_NAME is the mount point and PATH_INFO the rest: give
            // httpd that path info, so ap_add_cgi_vars derives SCRIPT_NAME
            // and PATH_TRANSLATED exactly as for any CGI request.
            if let Some((_, info)) = split_mount(&uri, &full, dir) {
                r.set_path_info(&info);
            }
            overrides.push((b"SCRIPT_FILENAME", def.program.as_os_str().as_bytes().to_vec()));
            (def.program.clone(), def.args.clone(), def.dir.clone())
        }
        AppKind::Wrapper => {
            if !is_file {
                return HTTP_NOT_FOUND as Status;
            }
            let Some(w) = cfg.wrapper_for(&filename) else { return DECLINED };
            let script = WrappedScript::new(path(&filename), w);
            let workdir = w.workdir_for(&script.file);
            wrapped = Some(script);
            (w.command.clone(), cfg.wrapper_args(w), workdir)
        }
        AppKind::Script => {
            if !is_file {
                return HTTP_NOT_FOUND as Status;
            }
            let p = path(&filename);
            let dir = p.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
            (p, Vec::new(), dir)
        }
        // Authorizers run in the access phase (authorizer.rs), never as a handler.
        AppKind::Authorizer => return DECLINED,
    };
    let Some(&vhost) = r.server().and_then(|s| rt.vhosts.get(&s.key())) else {
        return refuse(r, HTTP_INTERNAL_SERVER_ERROR, "request for a server unknown to this configuration generation");
    };
    let spec = PoolSpec::for_directory(rt.generation, vhost, kind, program, args, workdir, cfg, userdir_user(&uri));

    // The CGI environment httpd builds for mod_cgi, mod_proxy_fcgi and mod_fcgid.
    r.add_cgi_vars();
    let env = r.subprocess_env();
    for (k, v) in &overrides {
        env.set(k, v);
    }
    // One pass: blocked names are dropped first (they are never sent, so
    // they are not checked), then every name and value sent is checked.
    let mut pairs = env.entries();
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
        return refuse(r, HTTP_BAD_REQUEST, &format!("refusing a request whose {} contains CR or LF", String::from_utf8_lossy(k)));
    }
    // A body that is too large is refused before any worker is started.
    let limit = r.limit_req_body();
    if limit > 0 {
        let declared = r.headers_in().get(b"Content-Length").and_then(|v| std::str::from_utf8(v).ok().and_then(|s| s.trim().parse::<i64>().ok()));
        if declared.is_some_and(|n| n > limit) {
            return refuse(r, HTTP_REQUEST_ENTITY_TOO_LARGE, "request body larger than LimitRequestBody");
        }
    }

    let body = match Body::prefetch(r) {
        Ok(b) => b,
        Err(status) => return refuse(r, status as u32, "reading the request body from the client failed"),
    };
    let check = |info: &PoolInfo| -> Result<(), (u32, String)> {
        match &wrapped {
            Some(script) => script.check(info.uid).map_err(|why| (HTTP_FORBIDDEN, format!("refusing to run a script: {why}"))),
            None => Ok(()),
        }
    };
    match pool_request::run(r, &rt, &spec, &pairs, &body, Role::Responder, &check) {
        Ok(outcome) => {
            if let Some(why) = &outcome.why {
                r.log(log::ERR, format!("sufcgi: {why}").as_bytes());
            }
            if outcome.status >= 400 {
                error_page(r, outcome.status);
            }
            outcome.status
        }
        Err(NotRun::Busy { retry_after, why }) => busy(r, cfg, retry_after, &why),
        Err(NotRun::Refused { status, retry_after, why }) => {
            if let Some(s) = retry_after {
                r.err_headers_out().set(b"Retry-After", s.to_string().as_bytes());
            }
            refuse(r, status, &why)
        }
    }
}

/// 503 for an overloaded or backing-off app: `Retry-After`, and the
/// customer's `SuFcgiBusyPage` as the body when there is one.
fn busy(r: Req<'_>, cfg: &DirConfig, retry_after: u32, why: &str) -> Status {
    r.log(log::WARNING, format!("sufcgi: 503: {why}").as_bytes());
    r.err_headers_out().set(b"Retry-After", retry_after.max(1).to_string().as_bytes());
    if let Some(page) = cfg.busy_page.as_deref().and_then(read_busy_page) {
        r.set_status(HTTP_SERVICE_UNAVAILABLE as Status);
        r.set_content_type(b"text/html; charset=utf-8");
        r.headers_out().set(b"Retry-After", retry_after.max(1).to_string().as_bytes());
        r.write(&page);
        return OK;
    }
    error_page(r, HTTP_SERVICE_UNAVAILABLE as Status);
    HTTP_SERVICE_UNAVAILABLE as Status
}
