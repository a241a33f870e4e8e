//! `SetHandler sufcgi-status`: the pools, their workers and counters, the
//! isolation in force and each owner's figures, as HTML, `?json` or
//! `?metrics` (Prometheus text; `SetHandler sufcgi-metrics` is that alone).
//!
//! Where the handler is set decides what the page shows. A URL no `.htaccess`
//! able to set a handler took part in (server config only) lists every pool;
//! otherwise the handler may come from a customer, so the supervisor is asked
//! for the pools of the owner *it* derives for the request's directory, with
//! the same rules it uses for workers there. Nothing is spawned.

use super::apr::{bytes, pstr, table_set};
use super::handler::userdir_user;
use super::{ffi, log, runtime};
use crate::core::status_page::{format_of, render, request_dir, Format, View};
use crate::core::supervisor::protocol::StatusReply;
use crate::core::supervisor::{supervisor_socket_path, Client};
use std::os::raw::c_int;

/// Whether an `.htaccess` file that could have set the handler (FileInfo
/// overrides: `SetHandler`, `AddHandler`, `RewriteRule [H=]`, or an
/// `AllowOverrideList`) was read for this request.
///
/// (httpd leaves `htaccess_result.override_list` uninitialised — its
/// `.htaccess` cache never fills it in — so it is never read here; an
/// `AllowOverrideList` in force for the request is seen in its merged core
/// directory configuration instead.)
///
/// # Safety
/// `r` is the live request.
unsafe fn customer_configurable(r: *const ffi::request_rec) -> bool {
    // SAFETY: r->htaccess is httpd's list of .htaccess results for this
    // request (pool-allocated, null-terminated); only its initialised fields
    // are read. The core module's slot of per_dir_config holds its
    // core_dir_config, as ap_get_core_module_config reads it.
    unsafe {
        let mut h = (*r).htaccess;
        let mut read_any = false;
        while let Some(e) = h.as_ref() {
            if !e.htaccess.is_null() {
                read_any = true;
                if e.override_ & ffi::OR_FILEINFO as c_int != 0 {
                    return true;
                }
            }
            h = e.next;
        }
        if !read_any {
            return false;
        }
        let idx = (*std::ptr::addr_of!(ffi::core_module)).module_index as usize;
        let core = *((*r).per_dir_config as *mut *mut ffi::core_dir_config).add(idx);
        core.as_ref().is_some_and(|c| !c.override_list.is_null() && ffi::apr_is_empty_table(c.override_list) == 0)
    }
}

/// # Safety
/// `r` is the live request in its handler phase, with `r->handler` =
/// sufcgi-status (or sufcgi-metrics: `metrics`).
pub unsafe fn handle(r: *mut ffi::request_rec, metrics: bool) -> c_int {
    // SAFETY: r is live for the whole call; strings read from it are owned by httpd.
    unsafe {
        let rr = &mut *r;
        rr.allowed |= 1 << ffi::M_GET;
        if rr.method_number != ffi::M_GET as c_int {
            return ffi::HTTP_METHOD_NOT_ALLOWED as c_int;
        }
        let Some(rt) = runtime::get() else {
            log::request(r, log::ERR, b"sufcgi: status not available: httpd was not started as root");
            return ffi::HTTP_SERVICE_UNAVAILABLE as c_int;
        };
        let Some(&vhost) = rt.vhosts.get(&(rr.server as usize)) else {
            log::request(r, log::ERR, b"sufcgi: status request for a server unknown to this configuration generation");
            return ffi::HTTP_INTERNAL_SERVER_ERROR as c_int;
        };
        let dir = customer_configurable(r).then(|| {
            request_dir(bytes(rr.filename).unwrap_or(b"/"), rr.finfo.filetype == ffi::apr_filetype_e_APR_DIR)
        });
        let customer = dir.is_some();
        let userdir = userdir_user(bytes(rr.uri).unwrap_or(b""));
        // A connection of its own: status pages are rare, and this keeps the
        // request path's shared link out of it.
        let reply = Client::connect(&supervisor_socket_path(&rt.socket_dir))
            .and_then(|mut c| c.status(rt.generation, vhost, dir, userdir));
        let reply = match reply {
            Ok(r @ StatusReply::Pools { .. }) => r,
            Ok(StatusReply::Refused { status, reason }) => {
                log::request(r, log::ERR, format!("sufcgi: status page refused: {reason}").as_bytes());
                return status as c_int;
            }
            Err(e) => {
                log::request(r, log::ERR, format!("sufcgi: status page: supervisor unreachable: {e}").as_bytes());
                table_set(rr.err_headers_out, b"Retry-After", b"5");
                return ffi::HTTP_SERVICE_UNAVAILABLE as c_int;
            }
        };
        let Some(view) = View::of(&reply, customer) else { return ffi::HTTP_INTERNAL_SERVER_ERROR as c_int };
        let format = if metrics { Format::Metrics } else { format_of(bytes(rr.args).unwrap_or(b"")) };
        let (body, ctype) = render(&view, format);
        ffi::ap_set_content_type(r, pstr(rr.pool, ctype.as_bytes()));
        table_set(rr.headers_out, b"Cache-Control", b"no-store");
        table_set(rr.headers_out, b"X-Content-Type-Options", b"nosniff");
        if rr.header_only == 0 {
            ffi::ap_rwrite(body.as_ptr() as *const _, body.len() as c_int, r);
        }
        ffi::OK as c_int
    }
}

