//! What one relayed request leaves for those who watch it: the request notes
//! for the host's access log (`core::request_cost`), the owner's log lines
//! (refusals, failures, FastCGI stderr: `core::customer_note`) and the slow
//! watch (`core::slow_watch`). `pool_request` calls these at its few
//! points; nothing here changes how the request is served.

use super::relay::Outcome;
use super::req::{Req, HTTP_BAD_GATEWAY, HTTP_FORBIDDEN, HTTP_INTERNAL_SERVER_ERROR};
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
pub fn claimed(r: Req<'_>, rt: &Runtime, pool: &Pool, slot: &PoolSlot, claim: &Claim<'_>, meter: &mut Option<Meter>) -> Option<SlowWatch> {
    if let Some(m) = meter.as_mut() {
        let pid = claim.worker().pid.load(Ordering::Acquire);
        m.claimed(pid, claim.via != Via::Shared && !claim.pipelined() && slot.requests_per_worker() <= 1);
    }
    if pool.info.limits.slow_log == 0 {
        return None;
    }
    let mut what = r.method().unwrap_or(b"?").to_vec();
    what.push(b' ');
    what.extend_from_slice(r.unparsed_uri().unwrap_or(b""));
    slow_watch::watch(&rt.socket_dir, &pool.info, (claim.index, claim.epoch), what)
}

/// The exchange ended: the app's stderr and any failure to the owner's log,
/// the notes to the request.
/// (`never_accepted`: the caller answers 503 and says so itself.)
#[allow(clippy::too_many_arguments)]
pub fn ended(r: Req<'_>, rt: &Runtime, spec: &PoolSpec, pool: &Pool, worker: (u32, u32), outcome: &mut Outcome, meter: Option<Meter>, never_accepted: bool) {
    let site = rt.site();
    customer_note::stderr(&site, &pool.info, worker, &std::mem::take(&mut outcome.stderr));
    if let Some(why) = outcome.why.as_ref().filter(|_| !never_accepted) {
        // (A response cut after its headers went out is answered OK: it was a 502 at heart.)
        let status = if outcome.status >= 400 { outcome.status as u32 } else { HTTP_BAD_GATEWAY };
        customer_note::failed(&site, &pool.info, status, why);
    }
    if let Some(m) = meter {
        for (k, v) in m.finish(pool_name(spec.kind, &spec.program, &spec.workdir)) {
            r.notes().set(k.as_bytes(), v.as_bytes());
        }
    }
}

/// The request was refused (`status`) or turned away before it reached
/// the app: say why in the owner's log.
pub fn not_run(rt: &Runtime, pool: &Pool, status: u32, why: &str) {
    if status == HTTP_FORBIDDEN || status == HTTP_INTERNAL_SERVER_ERROR {
        customer_note::refused(&rt.site(), &pool.info, status, why);
    } else {
        customer_note::failed(&rt.site(), &pool.info, status, why);
    }
}
