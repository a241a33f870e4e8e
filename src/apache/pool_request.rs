//! One request on one pool: find the pool (cached, else asked of the
//! supervisor), claim a worker, connect, relay, and release or retire the
//! worker by how the exchange ended. Shared by the content handler and the
//! authorizer; what to answer when it cannot run is left to the caller.

use crate::core::pool_link::{self as link, PoolError};
use super::relay::{self, Body, Outcome, Role};
use super::runtime::Runtime;
use super::{dispatch, ffi, log};
use crate::core::request::{connect_worker, PoolInfo, PoolSpec};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Why the request did not reach an app.
pub enum NotRun {
    /// Answer `status` (with `Retry-After` when given); log `why`.
    Refused { status: u32, retry_after: Option<u32>, why: String },
    /// Overloaded, backing off, or the worker died before taking the
    /// request: 503 with `Retry-After`.
    Busy { retry_after: u32, why: String },
}

/// Vets a pool before use: Err is (status, reason).
pub type PoolCheck<'a> = &'a dyn Fn(&PoolInfo) -> Result<(), (u32, String)>;

/// Run `pairs` + `body` on a worker of `spec`'s pool. `check` vets the pool
/// once it is known (e.g. a wrapped script must be the pool owner's).
///
/// # Safety
/// `r` is the live request.
#[allow(clippy::too_many_arguments)]
pub unsafe fn run(
    r: *mut ffi::request_rec,
    rt: &Runtime,
    spec: &PoolSpec,
    pairs: &[(&[u8], &[u8])],
    body: &Body,
    role: Role,
    check: PoolCheck<'_>,
) -> Result<Outcome, NotRun> {
    let mut fresh = false;
    let mut checked = false;
    for _attempt in 0..4 {
        let pool = match link::pool_for(&rt.site(), spec, fresh) {
            Ok(p) => p,
            Err(PoolError::Refused { status, reason }) => {
                return Err(NotRun::Refused { status: status as u32, retry_after: (status == 503).then_some(5), why: reason })
            }
            Err(PoolError::Unavailable(why)) => {
                return Err(NotRun::Refused { status: ffi::HTTP_SERVICE_UNAVAILABLE, retry_after: Some(5), why })
            }
        };
        if !checked {
            check(&pool.info).map_err(|(status, why)| NotRun::Refused { status, retry_after: None, why })?;
            checked = true;
        }
        let Some(slot) = pool.slot(&rt.scoreboard) else {
            // Replaced or forgotten since we cached it: ask again.
            fresh = true;
            continue;
        };
        let claim = match dispatch::claim_worker(rt, &pool, slot) {
            Ok(c) => c,
            Err(dispatch::NoWorker::Gone) => {
                fresh = true;
                continue;
            }
            Err(dispatch::NoWorker::Busy { retry_after, why }) => {
                slot.rejected.fetch_add(1, Ordering::Relaxed);
                return Err(NotRun::Busy { retry_after, why });
            }
        };
        let _seat = dispatch::QueueSeat::new(slot, &claim);
        let sock = match connect_worker(&pool.info.socket_prefix, claim.index) {
            Ok(s) => s,
            Err(e) => {
                // The worker went away between claim and connect: take another.
                if claim.retire() {
                    link::nudge(&rt.site(), &pool.info);
                }
                log::request(r, log::INFO, format!("sufcgi: worker socket unusable ({e}); trying another worker").as_bytes());
                continue;
            }
        };
        slot.requests.fetch_add(1, Ordering::Relaxed);
        slot.inflight.fetch_add(1, Ordering::AcqRel);
        // A pipelined request starts when the one ahead of it ends, which
        // ends (or is stopped) within its own timeout: allow for both.
        let allowed = pool.info.limits.request_timeout as u64 * if claim.pipelined { 2 } else { 1 };
        let deadline = (allowed > 0).then(|| Instant::now() + Duration::from_secs(allowed));
        let timeouts = relay::Timeouts { io_ms: rt.io_timeout_ms, deadline };
        // SAFETY: r is live (the caller's contract).
        let outcome = unsafe { relay::exchange_as(r, sock, pairs, body, &timeouts, role) };
        slot.inflight.fetch_sub(1, Ordering::AcqRel);
        let never_accepted = link::settle(&rt.site(), &pool.info, claim, outcome.fate, outcome.answered);
        if never_accepted {
            return Err(NotRun::Busy { retry_after: 1, why: "the worker exited before taking the request (is the app failing at start?)".into() });
        }
        return Ok(outcome);
    }
    Err(NotRun::Refused { status: ffi::HTTP_BAD_GATEWAY, retry_after: None, why: "no worker of the app could take the request".into() })
}
