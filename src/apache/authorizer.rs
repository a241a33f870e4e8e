//! `SuFcgiAuthorizer FILE`: the FastCGI AUTHORIZER role (FastCGI spec 6.3)
//! in httpd's access phase, so a customer's app can guard everything in its
//! tree — static files, other apps, CGI — before any handler runs.
//!
//! Phase: `access_checker` (RUN_ALL), the phase mod_fcgid uses for
//! `FcgidAccessChecker` and mod_fastcgi for `FastCgiAccessChecker`. It runs
//! for every request, whether or not any `Require`/`AuthType` is configured;
//! mod_fcgid's `FcgidAuthorizer` hooks `auth_checker` instead, which httpd
//! only reaches when authentication is required, so it could not guard a
//! plain tree. Being RUN_ALL, our OK never overrides the host's own access
//! rules (`Require all denied` still denies), unlike OK from the RUN_FIRST
//! `access_checker_ex`.
//!
//! The authorizer gets the request's CGI variables (no body, CONTENT_LENGTH
//! "0", no SCRIPT_NAME / PATH_INFO / PATH_TRANSLATED, as the spec says), plus
//! `HTTP_AUTHORIZATION` (httpd keeps it from CGI by default, but judging it is
//! an authorizer's job) and, for Basic credentials, `REMOTE_USER` /
//! `REMOTE_PASSWD` as the classic FastCGI authorizers expect.
//!
//! Its answer, as mod_authnz_fcgi and mod_fcgid treat it: 200 lets the
//! request through, and each `Variable-NAME: value` header becomes `NAME` in
//! the request's environment (subprocess_env) for later phases and apps;
//! other headers and the body of a 200 are ignored. `Variable-REMOTE_USER`
//! sets the environment variable only: like mod_authnz_fcgi (which sets
//! `r->user` only through the host's `UserExpr`), a customer's app does not
//! decide httpd's authenticated user. Any other status is the client's
//! answer: status, headers and body as the app sent them (an empty body with
//! a 3xx/4xx/5xx gets httpd's own error page, and `ErrorDocument`, with the
//! app's headers).

use super::apr::{bytes, table_entries, table_get, table_set};
use super::config::dir_conf;
use crate::core::guard::guard;
use super::handler::userdir_user;
use super::pool_request::{self, NotRun};
use super::relay::{self, Captured, Role};
use super::{ffi, log, runtime};
use crate::core::authorizer::{verdict, Verdict, DROPPED_PARAMS};
use crate::core::directives::{AppDef, DirConfig};
use crate::core::fastcgi::cgi_headers::is_hop_by_hop;
use crate::core::fastcgi::params::param_value_is_safe;
use crate::core::hostconfig::param_blocked;
use crate::core::request::{AppKind, PoolSpec};
use std::os::raw::{c_char, c_int};

/// The access_checker hook.
pub unsafe extern "C" fn access_checker(r: *mut ffi::request_rec) -> c_int {
    guard("the sufcgi authorizer", ffi::HTTP_INTERNAL_SERVER_ERROR as c_int, |m| log::request(r, log::ERR, m.as_bytes()), || {
        // SAFETY: httpd passes the live request in its access phase.
        unsafe { check(r) }
    })
}

fn refuse(r: *mut ffi::request_rec, status: u32, why: &str) -> c_int {
    log::request(r, log::ERR, format!("sufcgi: authorizer: {why}").as_bytes());
    status as c_int
}

/// The authorizer pool: an App-like pool of its own kind, so it never shares
/// workers with a responder pool of the same file.
fn pool_spec(generation: u64, vhost: u32, cfg: &DirConfig, def: &AppDef, uri: &[u8]) -> PoolSpec {
    PoolSpec::for_directory(generation, vhost, AppKind::Authorizer, def.program.clone(), def.args.clone(), def.dir.clone(), cfg, userdir_user(uri))
}

/// The authorizer's params. httpd builds them into r->subprocess_env, which is
/// restored afterwards: they describe this request to the authorizer only.
///
/// # Safety
/// `r` is the live request, after map_to_storage.
unsafe fn params(r: *mut ffi::request_rec) -> Vec<(Vec<u8>, Vec<u8>)> {
    // SAFETY: r is live; the copy lives in r->pool; every string read below is
    // owned by r->pool or its tables and copied out before the restore.
    unsafe {
        let rr = &mut *r;
        let saved = ffi::apr_table_copy(rr.pool, rr.subprocess_env);
        ffi::ap_add_common_vars(r);
        // With path info, ap_add_cgi_vars looks it up as a URI (a subrequest,
        // which would run this very hook) only to derive PATH_TRANSLATED,
        // which an authorizer is not sent: hide the path info meanwhile.
        let path_info = rr.path_info;
        rr.path_info = c"".as_ptr() as *mut c_char;
        ffi::ap_add_cgi_vars(r);
        rr.path_info = path_info;
        let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = table_entries(rr.subprocess_env)
            .into_iter()
            .filter(|(k, _)| !DROPPED_PARAMS.contains(k))
            // `ServerSignature On` ends SERVER_SIGNATURE with "\n" (server-made
            // text, not request data): trimmed, as the handler does.
            .map(|(k, v)| (k.to_vec(), if k == b"SERVER_SIGNATURE" { v.trim_ascii_end() } else { v }.to_vec()))
            .collect();
        rr.subprocess_env = saved;
        pairs.push((b"CONTENT_LENGTH".to_vec(), b"0".to_vec()));
        if let Some(auth) = table_get(rr.headers_in, b"Authorization") {
            pairs.retain(|(k, _)| k != b"HTTP_AUTHORIZATION");
            pairs.push((b"HTTP_AUTHORIZATION".to_vec(), auth.to_vec()));
            let (mut user, mut pw): (*const c_char, *const c_char) = (std::ptr::null(), std::ptr::null());
            if rr.user.is_null() && ffi::ap_get_basic_auth_components(r, &mut user, &mut pw) == 0 {
                if let (Some(u), Some(p)) = (bytes(user), bytes(pw)) {
                    pairs.retain(|(k, _)| k != b"REMOTE_USER" && k != b"REMOTE_PASSWD");
                    pairs.push((b"REMOTE_USER".to_vec(), u.to_vec()));
                    pairs.push((b"REMOTE_PASSWD".to_vec(), p.to_vec()));
                }
            }
        }
        pairs
    }
}

/// # Safety
/// `r` is the live request in its access phase.
unsafe fn check(r: *mut ffi::request_rec) -> c_int {
    // SAFETY: r is live for the whole call; every pointer read from it is
    // owned by httpd for at least the request's lifetime.
    unsafe {
        let Some(cfg) = dir_conf(r) else { return ffi::DECLINED };
        let Some(def) = cfg.authorizer() else { return ffi::DECLINED };
        let rr = &mut *r;
        let Some(rt) = runtime::get() else {
            return refuse(r, ffi::HTTP_SERVICE_UNAVAILABLE, "not available: httpd was not started as root");
        };
        let Some(&vhost) = rt.vhosts.get(&(rr.server as usize)) else {
            return refuse(r, ffi::HTTP_INTERNAL_SERVER_ERROR, "request for a server unknown to this configuration generation");
        };
        let uri = bytes(rr.uri).unwrap_or(b"").to_vec();
        let spec = pool_spec(rt.generation, vhost, cfg, def, &uri);

        let mut owned = params(r);
        owned.retain(|(k, _)| !param_blocked(k, &rt.blocked_env));
        if let Some((k, _)) = owned.iter().find(|(k, v)| !param_value_is_safe(k) || !param_value_is_safe(v)) {
            return refuse(r, ffi::HTTP_BAD_REQUEST, &format!("refusing a request whose {} contains CR or LF", String::from_utf8_lossy(k)));
        }
        let pairs: Vec<(&[u8], &[u8])> = owned.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();

        let body = relay::Body::empty();
        match pool_request::run(r, &rt, &spec, &pairs, &body, Role::Authorizer, &|_| Ok(())) {
            Ok(outcome) => match &outcome.why {
                Some(why) => refuse(r, outcome.status as u32, why),
                None => judge(r, outcome.captured.unwrap_or_default(), &rt.blocked_env),
            },
            Err(NotRun::Busy { retry_after, why }) => {
                table_set(rr.err_headers_out, b"Retry-After", retry_after.max(1).to_string().as_bytes());
                refuse(r, ffi::HTTP_SERVICE_UNAVAILABLE, &format!("503: {why}"))
            }
            Err(NotRun::Refused { status, retry_after, why }) => {
                if let Some(s) = retry_after {
                    table_set(rr.err_headers_out, b"Retry-After", s.to_string().as_bytes());
                }
                refuse(r, status, &why)
            }
        }
    }
}

/// # Safety
/// `r` is the live request in its access phase; nothing was sent yet.
unsafe fn judge(r: *mut ffi::request_rec, c: Captured, host_blocked: &[String]) -> c_int {
    let (v, refused) = verdict(c.headers.as_ref(), host_blocked);
    for name in &refused {
        log::request(r, log::WARNING, format!("sufcgi: authorizer: ignoring Variable-{} (not a name it may set)", String::from_utf8_lossy(name)).as_bytes());
    }
    // SAFETY: r is live; table and pool writes copy their data.
    unsafe {
        let rr = &mut *r;
        match v {
            Verdict::Invalid(why) => refuse(r, ffi::HTTP_INTERNAL_SERVER_ERROR, &why),
            Verdict::Allow(vars) => {
                for (k, val) in &vars {
                    table_set(rr.subprocess_env, k, val);
                }
                ffi::OK as c_int
            }
            Verdict::Deny => {
                let Some(h) = c.headers.as_ref() else { return ffi::HTTP_INTERNAL_SERVER_ERROR as c_int };
                let status = h.status as c_int;
                if !rr.main.is_null() {
                    // A subrequest (mod_dir, mod_include…) writes nothing of
                    // its own: its status is all its caller looks at.
                    return status;
                }
                if c.body_truncated {
                    log::request(r, log::WARNING, format!("sufcgi: authorizer: response body cut at {} bytes", relay::MAX_CAPTURED_BODY).as_bytes());
                }
                if c.body.is_empty() && status >= 300 {
                    // httpd's own error page (and the host's ErrorDocument),
                    // which keeps only err_headers_out, plus Location.
                    for (k, val) in &h.headers {
                        if !is_hop_by_hop(k) {
                            super::apr::table_add(rr.err_headers_out, k, val);
                        }
                    }
                    if let Some(loc) = &h.location {
                        table_set(rr.headers_out, b"Location", loc);
                    }
                    return status;
                }
                // The app's own response, as it sent it; DONE ends the
                // request here without an error page.
                ffi::ap_discard_request_body(r);
                relay::apply_headers(r, h);
                if !c.body.is_empty() {
                    ffi::ap_rwrite(c.body.as_ptr() as *const _, c.body.len() as c_int, r);
                }
                ffi::DONE
            }
        }
    }
}
