//! lighttpd: the status page. The host turns it on in lighttpd.conf
//! (`sufcgi.status = "enable"`, usually inside a `$HTTP["url"]` block): that
//! page lists every pool. A customer's `SetHandler sufcgi-status` in an
//! `.htaccess` lists only the pools of the owner the supervisor derives for
//! that directory, as under Apache. Here the two cannot be confused: the
//! host's setting comes only from lighttpd.conf. Nothing is spawned.

use super::req::{Header, Method, Req};
use super::runtime::Runtime;
use super::server::Handled;
use super::settings;
use crate::core::status_page::{format_of, render, Format, View};
use crate::core::supervisor::protocol::StatusReply;
use crate::core::supervisor::{supervisor_socket_path, Client};
use std::os::raw::c_int;
use std::path::PathBuf;

/// Whether the host's page answers this request.
pub fn host_page(req: Req, rt: &Runtime) -> bool {
    !rt.status_contexts.is_empty() && settings::status_enabled(req, &rt.status_contexts)
}

/// Answer the status page: every pool (`owner_dir` None, the host's page),
/// or the pools of the owner of `owner_dir` (a customer's page); as
/// Prometheus text for `metrics` (`SetHandler sufcgi-metrics`) or `?metrics`.
/// In handle_physical.
pub fn serve(req: Req, rt: &Runtime, owner_dir: Option<PathBuf>, metrics: bool) -> Handled {
    let method = req.method();
    if method != Method::Get && method != Method::Head {
        req.set_header(Header::Allow, b"Allow", b"GET, HEAD");
        return req.answer(405, "the status page answers GET only");
    }
    let context = settings::identity_context(req, &rt.identity_contexts) as usize;
    let Some(vhost) = rt.vhost_index.get(context).copied().flatten() else {
        return req.answer(503, "this host's owner or document root changed on reload; restart lighttpd to apply it");
    };
    let customer = owner_dir.is_some();
    // A connection of its own, as under Apache: status pages are rare.
    let reply = Client::connect(&supervisor_socket_path(&rt.socket_dir)).and_then(|mut c| c.status(rt.host.generation, vhost, owner_dir, None));
    let reply = match reply {
        Ok(r @ StatusReply::Pools { .. }) => r,
        Ok(StatusReply::Refused { status, reason }) => return req.answer(status as c_int, &format!("status page refused: {reason}")),
        Err(e) => return req.answer(503, &format!("status page: supervisor unreachable: {e}")),
    };
    let Some(view) = View::of(&reply, customer) else { return req.answer(500, "status page: no pools in the reply") };
    let format = if metrics { Format::Metrics } else { format_of(&req.query()) };
    let (body, ctype) = render(&view, format);
    req.set_header(Header::ContentType, b"Content-Type", ctype.as_bytes());
    req.set_header(Header::CacheControl, b"Cache-Control", b"no-store");
    req.set_header(Header::Other, b"X-Content-Type-Options", b"nosniff");
    req.set_status(200);
    if method != Method::Head {
        req.append_body(&body);
    }
    req.finish_body();
    Handled::FINISHED
}
