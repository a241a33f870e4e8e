//! lighttpd: the status page. The host turns it on in lighttpd.conf
//! (`sufcgi.status = "enable"`, usually inside a `$HTTP["url"]` block): that
//! page lists every pool. A customer's `SetHandler sufcgi-status` in an
//! `.htaccess` lists only the pools of the owner the supervisor derives for
//! that directory, as under Apache. Here the two cannot be confused: the
//! host's setting comes only from lighttpd.conf. Nothing is spawned.

use super::route::{answer, buf};
use super::runtime::Runtime;
use super::{ffi, settings};
use crate::core::status_page::{format_of, render, Format, View};
use crate::core::supervisor::protocol::StatusReply;
use crate::core::supervisor::{supervisor_socket_path, Client};
use std::os::raw::{c_char, c_int};
use std::path::PathBuf;

/// Whether the host's page answers this request.
///
/// # Safety
/// `r` is the live request.
pub unsafe fn host_page(r: *mut ffi::request_st, rt: &Runtime) -> bool {
    // SAFETY: the caller's contract.
    !rt.status_contexts.is_empty() && unsafe { settings::status_enabled(r, &rt.status_contexts) }
}

/// Answer the status page: every pool (`owner_dir` None, the host's page),
/// or the pools of the owner of `owner_dir` (a customer's page); as
/// Prometheus text for `metrics` (`SetHandler sufcgi-metrics`) or `?metrics`.
///
/// # Safety
/// `r` is the live request, in handle_physical.
pub unsafe fn serve(r: *mut ffi::request_st, rt: &Runtime, owner_dir: Option<PathBuf>, metrics: bool) -> ffi::handler_t {
    // SAFETY: r is live for the whole call.
    unsafe {
        let rr = &mut *r;
        if rr.http_method != ffi::http_method_t_HTTP_METHOD_GET && rr.http_method != ffi::http_method_t_HTTP_METHOD_HEAD {
            let allow = b"GET, HEAD";
            ffi::http_header_response_set(r, ffi::http_header_e_HTTP_HEADER_ALLOW, c"Allow".as_ptr(), 5, allow.as_ptr() as *const c_char, allow.len() as u32);
            return answer(r, 405, "the status page answers GET only");
        }
        let context = settings::identity_context(r, &rt.identity_contexts) as usize;
        let Some(vhost) = rt.vhost_index.get(context).copied().flatten() else {
            return answer(r, 503, "this host's owner or document root changed on reload; restart lighttpd to apply it");
        };
        let customer = owner_dir.is_some();
        // A connection of its own, as under Apache: status pages are rare.
        let reply = Client::connect(&supervisor_socket_path(&rt.socket_dir)).and_then(|mut c| c.status(rt.host.generation, vhost, owner_dir, None));
        let reply = match reply {
            Ok(r @ StatusReply::Pools { .. }) => r,
            Ok(StatusReply::Refused { status, reason }) => return answer(r, status as c_int, &format!("status page refused: {reason}")),
            Err(e) => return answer(r, 503, &format!("status page: supervisor unreachable: {e}")),
        };
        let Some(view) = View::of(&reply, customer) else { return answer(r, 500, "status page: no pools in the reply") };
        let format = if metrics { Format::Metrics } else { format_of(buf(&rr.uri.query)) };
        let (body, ctype) = render(&view, format);
        let set = |id: ffi::http_header_e, k: &[u8], v: &[u8]| {
            ffi::http_header_response_set(r, id, k.as_ptr() as *const c_char, k.len() as u32, v.as_ptr() as *const c_char, v.len() as u32)
        };
        set(ffi::http_header_e_HTTP_HEADER_CONTENT_TYPE, b"Content-Type", ctype.as_bytes());
        set(ffi::http_header_e_HTTP_HEADER_CACHE_CONTROL, b"Cache-Control", b"no-store");
        set(ffi::http_header_e_HTTP_HEADER_OTHER, b"X-Content-Type-Options", b"nosniff");
        rr.http_status = 200;
        if rr.http_method != ffi::http_method_t_HTTP_METHOD_HEAD {
            ffi::http_chunk_append_mem(r, body.as_ptr() as *const c_char, body.len());
        }
        rr.resp_body_finished = 1;
        ffi::handler_t_HANDLER_FINISHED
    }
}
