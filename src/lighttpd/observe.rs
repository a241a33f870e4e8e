//! What one relayed request leaves for those who watch it, under lighttpd:
//! the `sufcgi-*` request environment for `accesslog.format`'s `%{…}e`
//! (`core::request_cost`), the owner's log lines (refusals, failures,
//! FastCGI stderr: `core::customer_note`) and the slow watch
//! (`core::slow_watch`). exchange/ calls these at its few points; nothing
//! here changes how the request is served.

use super::req::{Header, Req};
use super::runtime;
use crate::core::customer_note;
use crate::core::pool_link::{Pool, Site};
use crate::core::request::PoolSpec;
use crate::core::request_cost::{pool_name, Meter};
use crate::core::scoreboard::{Claim, PoolSlot, Via};
use crate::core::slow_watch::{self, SlowWatch};
use std::path::Path;
use std::sync::atomic::Ordering;

/// A meter for the request's environment, if a log format uses it.
pub fn meter(rt: &runtime::Runtime, responder: bool) -> Option<Meter> {
    (responder && rt.notes.any).then(|| Meter::start(rt.notes))
}

/// A worker was claimed: note which, and watch the request if the pool has a slow log.
pub fn claimed(req: Req, socket_dir: &Path, pool: &Pool, slot: &PoolSlot, claim: &Claim<'_>, meter: &mut Option<Meter>) -> Option<SlowWatch> {
    if let Some(m) = meter.as_mut() {
        let pid = claim.worker().pid.load(Ordering::Acquire);
        m.claimed(pid, claim.via != Via::Shared && !claim.pipelined() && slot.requests_per_worker() <= 1);
    }
    if pool.info.limits.slow_log == 0 {
        return None;
    }
    let mut what = req.method_name();
    what.push(b' ');
    what.extend_from_slice(&req.target());
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
pub fn record(req: Req, spec: &PoolSpec, meter: Option<Meter>) {
    let Some(m) = meter else { return };
    for (k, v) in m.finish(pool_name(spec.kind, &spec.program, &spec.workdir)) {
        req.set_env(k.as_bytes(), v.as_bytes());
    }
}

/// sufcgi's own body for an error it answers (`core::error_page`), unless
/// the host has lighttpd make its own (`server.errorfile-prefix`,
/// `server.error-handler`). A 503 always gets one of ours (lighttpd's would
/// drop Retry-After): the customer's `SuFcgiBusyPage` if given. True if the
/// body was set. Nothing of the response may have been produced.
pub fn error_page(req: Req, status: u16, busy_page: Option<Vec<u8>>) -> bool {
    let page = match busy_page {
        Some(p) => p,
        None if status == 503 || !req.host_error_pages() => match crate::core::error_page::page(status) {
            Some(p) => p.into_bytes(),
            None => return false,
        },
        None => return false,
    };
    req.set_status(status as i32);
    req.set_header(Header::ContentType, b"Content-Type", b"text/html; charset=utf-8");
    req.append_body(&page);
    req.finish_body();
    true
}
