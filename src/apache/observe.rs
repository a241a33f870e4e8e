//! What one relayed request leaves for those who watch it: the request notes
//! for the host's access log (`core::request_cost`), the owner's log lines
//! (refusals, failures, FastCGI stderr: `core::customer_note`) and the slow
//! watch (`core::slow_watch`). `pool_request` calls these at its few
//! points; nothing here changes how the request is served.

use super::apr::{bytes, table_set};
use super::ffi;
use super::relay::Outcome;
use super::runtime::Runtime;
use crate::core::customer_note;
use crate::core::pool_link::Pool;
use crate::core::request::PoolSpec;
use crate::core::request_cost::{pool_name, Meter};
use crate::core::scoreboard::{Claim, PoolSlot, Via};
use crate::core::slow_watch::{self, SlowWatch};
use std::sync::atomic::Ordering;

/// A meter for the request's notes, if a log format uses them.
pub fn meter(rt: &Runtime, responder: bool) -> Option<Meter> {
    (responder && rt.notes.any).then(|| Meter::start(rt.notes))
}

/// A worker was claimed: note which, and watch the request if the pool has a slow log.
///
/// # Safety
/// `r` is the live request.
pub unsafe fn claimed(r: *mut ffi::request_rec, rt: &Runtime, pool: &Pool, slot: &PoolSlot, claim: &Claim<'_>, meter: &mut Option<Meter>) -> Option<SlowWatch> {
    if let Some(m) = meter.as_mut() {
        let pid = claim.worker().pid.load(Ordering::Acquire);
        m.claimed(pid, claim.via != Via::Shared && !claim.pipelined() && slot.requests_per_worker() <= 1);
    }
    if pool.info.limits.slow_log == 0 {
        return None;
    }
    // SAFETY: r is live; method and unparsed_uri are strings in its pool.
    let what = unsafe {
        let mut w = bytes((*r).method).unwrap_or(b"?").to_vec();
        w.push(b' ');
        w.extend_from_slice(bytes((*r).unparsed_uri).unwrap_or(b""));
        w
    };
    slow_watch::watch(&rt.socket_dir, &pool.info, (claim.index, claim.epoch), what)
}

/// The exchange ended: the app's stderr and any failure to the owner's log,
/// the notes to the request.
///
/// # Safety
/// `r` is the live request.
/// (`never_accepted`: the caller answers 503 and says so itself.)
#[allow(clippy::too_many_arguments)]
pub unsafe fn ended(r: *mut ffi::request_rec, rt: &Runtime, spec: &PoolSpec, pool: &Pool, worker: (u32, u32), outcome: &mut Outcome, meter: Option<Meter>, never_accepted: bool) {
    let site = rt.site();
    customer_note::stderr(&site, &pool.info, worker, &std::mem::take(&mut outcome.stderr));
    if let Some(why) = outcome.why.as_ref().filter(|_| !never_accepted) {
        // (A response cut after its headers went out is answered OK: it was a 502 at heart.)
        let status = if outcome.status >= 400 { outcome.status as u32 } else { ffi::HTTP_BAD_GATEWAY };
        customer_note::failed(&site, &pool.info, status, why);
    }
    if let Some(m) = meter {
        // SAFETY: r is live; its notes table copies names and values.
        unsafe {
            for (k, v) in m.finish(pool_name(spec.kind, &spec.program, &spec.workdir)) {
                table_set((*r).notes, k.as_bytes(), v.as_bytes());
            }
        }
    }
}

/// The request was refused (`status`) or turned away before it reached
/// the app: say why in the owner's log.
pub fn not_run(rt: &Runtime, pool: &Pool, status: u32, why: &str) {
    if status == ffi::HTTP_FORBIDDEN || status == ffi::HTTP_INTERNAL_SERVER_ERROR {
        customer_note::refused(&rt.site(), &pool.info, status, why);
    } else {
        customer_note::failed(&rt.site(), &pool.info, status, why);
    }
}
