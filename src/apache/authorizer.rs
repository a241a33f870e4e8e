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

use super::pool_request::{self, NotRun};
use super::relay::client::apply_headers;
use super::relay::{self, Captured, Role};
use super::req::{userdir_user, Req, Status, DECLINED, DONE, HTTP_BAD_REQUEST, HTTP_INTERNAL_SERVER_ERROR, HTTP_SERVICE_UNAVAILABLE, OK};
use super::{log, runtime};
use crate::core::authorizer::{verdict, Verdict, DROPPED_PARAMS};
use crate::core::directives::{AppDef, DirConfig};
use crate::core::fastcgi::cgi_headers::is_hop_by_hop;
use crate::core::fastcgi::params::param_value_is_safe;
use crate::core::hostconfig::param_blocked;
use crate::core::request::{AppKind, PoolSpec};

fn refuse(r: Req<'_>, status: u32, why: &str) -> Status {
    r.log(log::ERR, format!("sufcgi: authorizer: {why}").as_bytes());
    status as Status
}

/// The authorizer pool: an App-like pool of its own kind, so it never shares
/// workers with a responder pool of the same file.
fn pool_spec(generation: u64, vhost: u32, cfg: &DirConfig, def: &AppDef, uri: &[u8]) -> PoolSpec {
    PoolSpec::for_directory(generation, vhost, AppKind::Authorizer, def.program.clone(), def.args.clone(), def.dir.clone(), cfg, userdir_user(uri))
}

/// The authorizer's params (the request after map_to_storage). httpd builds
/// them into r->subprocess_env, which is restored afterwards: they describe
/// this request to the authorizer only.
fn params(r: Req<'_>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = r.with_env_restored(|| {
        // No path info: the authorizer is sent no PATH_TRANSLATED.
        r.add_cgi_vars_without_path_info();
        r.subprocess_env()
            .entries()
            .into_iter()
            .filter(|(k, _)| !DROPPED_PARAMS.contains(k))
            // `ServerSignature On` ends SERVER_SIGNATURE with "\n" (server-made
            // text, not request data): trimmed, as the handler does.
            .map(|(k, v)| (k.to_vec(), if k == b"SERVER_SIGNATURE" { v.trim_ascii_end() } else { v }.to_vec()))
            .collect()
    });
    pairs.push((b"CONTENT_LENGTH".to_vec(), b"0".to_vec()));
    if let Some(auth) = r.headers_in().get(b"Authorization") {
        pairs.retain(|(k, _)| k != b"HTTP_AUTHORIZATION");
        pairs.push((b"HTTP_AUTHORIZATION".to_vec(), auth.to_vec()));
        if !r.has_user() {
            if let Some((u, p)) = r.basic_auth() {
                pairs.retain(|(k, _)| k != b"REMOTE_USER" && k != b"REMOTE_PASSWD");
                pairs.push((b"REMOTE_USER".to_vec(), u.to_vec()));
                pairs.push((b"REMOTE_PASSWD".to_vec(), p.to_vec()));
            }
        }
    }
    pairs
}

/// The access_checker hook's body (the request in its access phase).
pub fn check(r: Req<'_>) -> Status {
    let Some(cfg) = r.dir_conf() else { return DECLINED };
    let Some(def) = cfg.authorizer() else { return DECLINED };
    let Some(rt) = runtime::get() else {
        return refuse(r, HTTP_SERVICE_UNAVAILABLE, "not available: httpd was not started as root");
    };
    let Some(&vhost) = r.server().and_then(|s| rt.vhosts.get(&s.key())) else {
        return refuse(r, HTTP_INTERNAL_SERVER_ERROR, "request for a server unknown to this configuration generation");
    };
    let uri = r.uri().unwrap_or(b"").to_vec();
    let spec = pool_spec(rt.generation, vhost, cfg, def, &uri);

    let mut owned = params(r);
    owned.retain(|(k, _)| !param_blocked(k, &rt.blocked_env));
    if let Some((k, _)) = owned.iter().find(|(k, v)| !param_value_is_safe(k) || !param_value_is_safe(v)) {
        return refuse(r, HTTP_BAD_REQUEST, &format!("refusing a request whose {} contains CR or LF", String::from_utf8_lossy(k)));
    }
    let pairs: Vec<(&[u8], &[u8])> = owned.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();

    let body = relay::Body::empty();
    match pool_request::run(r, &rt, &spec, &pairs, &body, Role::Authorizer, &|_| Ok(())) {
        Ok(outcome) => match &outcome.why {
            Some(why) => refuse(r, outcome.status as u32, why),
            None => judge(r, outcome.captured.unwrap_or_default(), &rt.blocked_env),
        },
        Err(NotRun::Busy { retry_after, why }) => {
            r.err_headers_out().set(b"Retry-After", retry_after.max(1).to_string().as_bytes());
            refuse(r, HTTP_SERVICE_UNAVAILABLE, &format!("503: {why}"))
        }
        Err(NotRun::Refused { status, retry_after, why }) => {
            if let Some(s) = retry_after {
                r.err_headers_out().set(b"Retry-After", s.to_string().as_bytes());
            }
            refuse(r, status, &why)
        }
    }
}

/// The app's answer applied (the request in its access phase; nothing was sent yet).
fn judge(r: Req<'_>, c: Captured, host_blocked: &[String]) -> Status {
    let (v, refused) = verdict(c.headers.as_ref(), host_blocked);
    for name in &refused {
        r.log(log::WARNING, format!("sufcgi: authorizer: ignoring Variable-{} (not a name it may set)", String::from_utf8_lossy(name)).as_bytes());
    }
    match v {
        Verdict::Invalid(why) => refuse(r, HTTP_INTERNAL_SERVER_ERROR, &why),
        Verdict::Allow(vars) => {
            for (k, val) in &vars {
                r.subprocess_env().set(k, val);
            }
            OK
        }
        Verdict::Deny => {
            let Some(h) = c.headers.as_ref() else { return HTTP_INTERNAL_SERVER_ERROR as Status };
            let status = h.status as Status;
            if r.is_subrequest() {
                // A subrequest (mod_dir, mod_include…) writes nothing of
                // its own: its status is all its caller looks at.
                return status;
            }
            if c.body_truncated {
                r.log(log::WARNING, format!("sufcgi: authorizer: response body cut at {} bytes", relay::MAX_CAPTURED_BODY).as_bytes());
            }
            if c.body.is_empty() && status >= 300 {
                // httpd's own error page (and the host's ErrorDocument),
                // which keeps only err_headers_out, plus Location.
                for (k, val) in &h.headers {
                    if !is_hop_by_hop(k) {
                        r.err_headers_out().add(k, val);
                    }
                }
                if let Some(loc) = &h.location {
                    r.headers_out().set(b"Location", loc);
                }
                return status;
            }
            // The app's own response, as it sent it; DONE ends the
            // request here without an error page.
            r.discard_body();
            apply_headers(r, h);
            if !c.body.is_empty() {
                r.write(&c.body);
            }
            DONE
        }
    }
}
