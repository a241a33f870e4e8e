//! What one relayed request leaves for those who watch it, under lighttpd:
//! the `sufcgi-*` request environment for `accesslog.format`'s `%{…}e`
//! (`core::request_cost`), the owner's log lines (refusals, failures,
//! FastCGI stderr: `core::customer_note`) and the slow watch
//! (`core::slow_watch`). exchange.rs calls these at its few points; nothing
//! here changes how the request is served.

use super::ffi;
use super::runtime;
use crate::core::customer_note;
use crate::core::pool_link::{Pool, Site};
use crate::core::request::PoolSpec;
use crate::core::request_cost::{pool_name, Meter};
use crate::core::scoreboard::{Claim, PoolSlot, Via};
use crate::core::slow_watch::{self, SlowWatch};
use std::os::raw::c_char;
use std::path::Path;
use std::sync::atomic::Ordering;

/// A meter for the request's environment, if a log format uses it.
pub fn meter(rt: &runtime::Runtime, responder: bool) -> Option<Meter> {
    (responder && rt.notes.any).then(|| Meter::start(rt.notes))
}

/// A worker was claimed: note which, and watch the request if the pool has a slow log.
///
/// # Safety
/// `r` is the live request.
pub unsafe fn claimed(r: *mut ffi::request_st, socket_dir: &Path, pool: &Pool, slot: &PoolSlot, claim: &Claim<'_>, meter: &mut Option<Meter>) -> Option<SlowWatch> {
    if let Some(m) = meter.as_mut() {
        let pid = claim.worker().pid.load(Ordering::Acquire);
        m.claimed(pid, claim.via != Via::Shared && !claim.pipelined() && slot.requests_per_worker() <= 1);
    }
    if pool.info.limits.slow_log == 0 {
        return None;
    }
    // SAFETY: r is live; its method, path and query are lighttpd's buffers.
    let what = unsafe {
        let rr = &*r;
        let mut w = ffi::http_method_buf(rr.http_method).as_ref().map_or(b"?".to_vec(), |b| super::route::buf(b).to_vec());
        w.push(b' ');
        w.extend_from_slice(super::route::buf(&rr.target));
        w
    };
    slow_watch::watch(socket_dir, &pool.info, (claim.index, claim.epoch), what)
}

/// The app's stderr lines of a request (logged already), for its owner's log.
pub fn stderr(pool: &Pool, worker: (u32, u32), lines: Vec<Vec<u8>>) {
    if lines.is_empty() {
        return;
    }
    if let Some(rt) = runtime::get() {
        let site = Site { socket_dir: &rt.socket_dir, scoreboard: rt.scoreboard };
        customer_note::stderr(&site, &pool.info, worker, &lines);
    }
}

/// The request was answered `status` without (a complete answer from) the app.
pub fn not_served(site: &Site<'_>, pool: &Pool, status: u32, why: &str) {
    if status == 403 || status == 500 {
        customer_note::refused(site, &pool.info, status, why);
    } else {
        customer_note::failed(site, &pool.info, status, why);
    }
}

/// The request's cost as its environment, for `accesslog.format`.
///
/// # Safety
/// `r` is the live request.
pub unsafe fn record(r: *mut ffi::request_st, spec: &PoolSpec, meter: Option<Meter>) {
    let Some(m) = meter else { return };
    for (k, v) in m.finish(pool_name(spec.kind, &spec.program, &spec.workdir)) {
        // SAFETY: r is live; lighttpd copies name and value.
        unsafe { ffi::http_header_env_set(r, k.as_ptr() as *const c_char, k.len() as u32, v.as_ptr() as *const c_char, v.len() as u32) };
    }
}

/// sufcgi's own body for an error it answers (`core::error_page`), unless
/// the host has lighttpd make its own (`server.errorfile-prefix`,
/// `server.error-handler`). A 503 always gets one of ours (lighttpd's would
/// drop Retry-After): the customer's `SuFcgiBusyPage` if given. True if the
/// body was set.
///
/// # Safety
/// `r` is the live request, nothing of its response produced.
pub unsafe fn error_page(r: *mut ffi::request_st, status: u16, busy_page: Option<Vec<u8>>) -> bool {
    // SAFETY: r is live; lighttpd copies the header and the body.
    unsafe {
        let rr = &mut *r;
        let host_pages = !rr.conf.errorfile_prefix.is_null() || !rr.conf.error_handler.is_null();
        let page = match busy_page {
            Some(p) => p,
            None if status == 503 || !host_pages => match crate::core::error_page::page(status) {
                Some(p) => p.into_bytes(),
                None => return false,
            },
            None => return false,
        };
        rr.http_status = status as i32;
        let ct = b"text/html; charset=utf-8";
        ffi::http_header_response_set(r, ffi::http_header_e_HTTP_HEADER_CONTENT_TYPE, c"Content-Type".as_ptr(), 12, ct.as_ptr() as *const c_char, ct.len() as u32);
        ffi::http_chunk_append_mem(r, page.as_ptr() as *const c_char, page.len());
        rr.resp_body_finished = 1;
    }
    true
}
