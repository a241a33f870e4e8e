//! `SetHandler sufcgi-status`: the pools, their workers and counters, the
//! isolation in force and each owner's figures, as HTML, `?json` or
//! `?metrics` (Prometheus text; `SetHandler sufcgi-metrics` is that alone).
//!
//! Where the handler is set decides what the page shows. A URL no `.htaccess`
//! able to set a handler took part in (server config only) lists every pool;
//! otherwise the handler may come from a customer, so the supervisor is asked
//! for the pools of the owner *it* derives for the request's directory, with
//! the same rules it uses for workers there. Nothing is spawned.

use super::req::{userdir_user, FileType, Req, Status, HTTP_INTERNAL_SERVER_ERROR, HTTP_METHOD_NOT_ALLOWED, HTTP_SERVICE_UNAVAILABLE, OK};
use super::{log, runtime};
use crate::core::status_page::{format_of, render, request_dir, Format, View};
use crate::core::supervisor::protocol::StatusReply;
use crate::core::supervisor::{supervisor_socket_path, Client};

/// The status page of `r` (handler phase, `r->handler` = sufcgi-status, or
/// sufcgi-metrics: `metrics`). Whether a customer could have set the
/// handler: `Req::customer_configurable`.
pub fn handle(r: Req<'_>, metrics: bool) -> Status {
    r.allow_get();
    if !r.is_get() {
        return HTTP_METHOD_NOT_ALLOWED as Status;
    }
    let Some(rt) = runtime::get() else {
        r.log(log::ERR, b"sufcgi: status not available: httpd was not started as root");
        return HTTP_SERVICE_UNAVAILABLE as Status;
    };
    let Some(&vhost) = r.server().and_then(|s| rt.vhosts.get(&s.key())) else {
        r.log(log::ERR, b"sufcgi: status request for a server unknown to this configuration generation");
        return HTTP_INTERNAL_SERVER_ERROR as Status;
    };
    let dir = r.customer_configurable().then(|| request_dir(r.filename().unwrap_or(b"/"), r.file_type() == FileType::Directory));
    let customer = dir.is_some();
    let userdir = userdir_user(r.uri().unwrap_or(b""));
    // A connection of its own: status pages are rare, and this keeps the
    // request path's shared link out of it.
    let reply = Client::connect(&supervisor_socket_path(&rt.socket_dir)).and_then(|mut c| c.status(rt.generation, vhost, dir, userdir));
    let reply = match reply {
        Ok(r @ StatusReply::Pools { .. }) => r,
        Ok(StatusReply::Refused { status, reason }) => {
            r.log(log::ERR, format!("sufcgi: status page refused: {reason}").as_bytes());
            return status as Status;
        }
        Err(e) => {
            r.log(log::ERR, format!("sufcgi: status page: supervisor unreachable: {e}").as_bytes());
            r.err_headers_out().set(b"Retry-After", b"5");
            return HTTP_SERVICE_UNAVAILABLE as Status;
        }
    };
    let Some(view) = View::of(&reply, customer) else { return HTTP_INTERNAL_SERVER_ERROR as Status };
    let format = if metrics { Format::Metrics } else { format_of(r.args().unwrap_or(b"")) };
    let (body, ctype) = render(&view, format);
    r.set_content_type(ctype.as_bytes());
    r.headers_out().set(b"Cache-Control", b"no-store");
    r.headers_out().set(b"X-Content-Type-Options", b"nosniff");
    if !r.header_only() {
        r.write(&body);
    }
    OK
}
