//! One request on one pool: find the pool (cached, else asked of the
//! supervisor), claim a worker, connect, relay, and release or retire the
//! worker by how the exchange ended. Shared by the content handler and the
//! authorizer; what to answer when it cannot run is left to the caller.

use crate::core::pool_link::{self as link, PoolError};
use super::relay::{self, Body, Outcome, Role};
use super::runtime::Runtime;
use super::{dispatch, ffi, log, observe};
use super::relay_shared;
use crate::core::fastcgi::record;
use crate::core::mux;
use crate::core::mux_conn::{self, MuxConn};
use crate::core::request::{connect_worker, PoolInfo, PoolSpec};
use crate::core::scoreboard::PoolSlot;
use std::os::fd::OwnedFd;
use std::sync::Arc;
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
    let mut meter = observe::meter(rt, role == Role::Responder);
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
            check(&pool.info).map_err(|(status, why)| {
                observe::not_run(rt, &pool, status, &why);
                NotRun::Refused { status, retry_after: None, why }
            })?;
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
                observe::not_run(rt, &pool, ffi::HTTP_SERVICE_UNAVAILABLE, &why);
                return Err(NotRun::Busy { retry_after, why });
            }
        };
        let _seat = dispatch::QueueSeat::new(slot, &claim);
        // A multiplexing app's requests share this process's connection to
        // the worker; every other app gets a connection per request.
        let conn = if claim.shared || slot.requests_per_worker() > 1 {
            let key = (pool.info.slot, pool.info.slot_generation, claim.index, claim.epoch);
            mux_conn::shared(key, || connect_worker(&pool.info.socket_prefix, claim.index)).map(Conn::Shared)
        } else {
            connect_worker(&pool.info.socket_prefix, claim.index).map(Conn::Own)
        };
        let conn = match conn {
            Ok(c) => c,
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
        let timeouts = relay::Timeouts { io_ms: rt.io_timeout_ms, deadline, x_sendfile: pool.info.limits.x_sendfile };
        // SAFETY: r is live (the caller's contract).
        let slow = unsafe { observe::claimed(r, rt, &pool, slot, &claim, &mut meter) };
        let mut outcome = match &conn {
            // SAFETY: r is live (the caller's contract).
            Conn::Own(sock) => unsafe { relay::exchange_as(r, sock, pairs, body, &timeouts, role) },
            // SAFETY: as above.
            Conn::Shared(mc) => unsafe { relay_shared::exchange_shared(r, mc, pairs, body, &timeouts, role) },
        };
        drop(conn);
        drop(slow);
        let (worker, epoch) = (claim.index, claim.epoch);
        slot.inflight.fetch_sub(1, Ordering::AcqRel);
        let never_accepted = link::settle(&rt.site(), &pool.info, claim, outcome.fate, outcome.answered);
        // SAFETY: r is live.
        unsafe { observe::ended(r, rt, spec, &pool, (worker, epoch), &mut outcome, meter.take(), never_accepted) };
        if never_accepted {
            let why = "the worker exited before taking the request (is the app failing at start?)";
            observe::not_run(rt, &pool, ffi::HTTP_SERVICE_UNAVAILABLE, why);
            return Err(NotRun::Busy { retry_after: 1, why: why.into() });
        }
        if let Some(wanted) = outcome.sendfile.take() {
            // The worker is free already (settled above): httpd sends the file.
            // SAFETY: r is live and nothing of the response was sent.
            match unsafe { super::request_file::serve(r, &wanted, pool.info.uid) } {
                Ok(status) => outcome.status = status,
                Err(why) => {
                    observe::not_run(rt, &pool, ffi::HTTP_FORBIDDEN, &why);
                    (outcome.status, outcome.why) = (ffi::HTTP_FORBIDDEN as relay::Status, Some(why));
                }
            }
        }
        if outcome.refused == Some(record::CANT_MPX_CONN) {
            // It said it multiplexes, then refused to: believe the refusal.
            slot.per_worker.store(1, Ordering::Release);
        } else if outcome.fate == relay::Fate::Clean && outcome.refused.is_none() {
            // SAFETY: r is live.
            unsafe { ask_about_multiplexing(r, &pool.info, slot, worker) };
        }
        return Ok(outcome);
    }
    Err(NotRun::Refused { status: ffi::HTTP_BAD_GATEWAY, retry_after: None, why: "no worker of the app could take the request".into() })
}

/// The backend side of one request.
enum Conn {
    Own(OwnedFd),
    Shared(Arc<MuxConn>),
}

/// After the pool's first clean request, ask its app once whether it
/// multiplexes (`core::mux`): the worker that just answered is up. The
/// answer is the pool's, in the scoreboard, for every server process; the
/// first process to get here asks, the others meanwhile give one request per
/// worker, as to any app.
///
/// # Safety
/// `r` is the live request, its exchange over.
unsafe fn ask_about_multiplexing(r: *mut ffi::request_rec, info: &PoolInfo, slot: &PoolSlot, worker: u32) {
    if slot.per_worker.load(Ordering::Acquire) != 0 || slot.per_worker.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire).is_err() {
        return;
    }
    // (Not flushed first: httpd would then send the response chunked rather
    // than with its length, and the question takes microseconds.)
    match mux::ask(&info.socket_prefix, worker, slot) {
        Ok(caps) if caps.requests_per_worker() > 1 => {
            let msg = format!(
                "sufcgi: the app multiplexes (FCGI_MPXS_CONNS=1, FCGI_MAX_REQS={}): up to {} requests per worker share a connection",
                caps.max_reqs.map_or("unset".into(), |m| m.to_string()),
                caps.requests_per_worker()
            );
            log::request(r, log::INFO, msg.as_bytes());
        }
        Ok(_) => {}
        Err(e) => log::request(r, log::INFO, format!("sufcgi: the app did not answer FCGI_GET_VALUES ({e}); one request per connection").as_bytes()),
    }
}
