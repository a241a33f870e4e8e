//! One request on one pool: find the pool (cached, else asked of the
//! supervisor), get a worker (`core::dispatch`; waiting asleep on the pool's
//! futex), reach it (the connection this child kept, a fresh one, or the
//! shared one of a multiplexing app), relay, and give the worker back by how
//! the exchange ended (kept for the next request, released, or retired).
//! Shared by the content handler and the authorizer; what to answer when it
//! cannot run is left to the caller.

use super::relay::{self, Body, Fate, Outcome, Role};
use super::req::{Req, Status, HTTP_FORBIDDEN, HTTP_SERVICE_UNAVAILABLE};
use super::runtime::Runtime;
use super::server::Server;
use super::{log, observe, request_file};
use crate::core::dispatch::{self, Dispatch, Host, Refusal, Step};
use crate::core::fastcgi::record;
use crate::core::mux;
use crate::core::mux_conn::{self, MuxConn};
use crate::core::parking::{self, KeptConn};
use crate::core::pool_link::{self as link, Pool, PoolError};
use crate::core::request_cost::Meter;
use crate::core::request::{connect_worker, PoolInfo, PoolSpec};
use crate::core::scoreboard::{Claim, PoolSlot, Via};
use std::cell::RefCell;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why the request did not reach an app.
pub enum NotRun {
    /// Answer `status` (with `Retry-After` when given); log `why`.
    Refused { status: u32, retry_after: Option<u32>, why: String },
    /// The dispatch's 503 (overloaded, backing off, or the worker died
    /// before taking the request): with `Retry-After` and the busy page.
    Busy { retry_after: u32, why: String },
}

impl From<Refusal> for NotRun {
    fn from(r: Refusal) -> NotRun {
        match r.status {
            503 => NotRun::Busy { retry_after: r.retry_after.unwrap_or(5), why: r.why },
            status => NotRun::Refused { status: status as u32, retry_after: r.retry_after, why: r.why },
        }
    }
}

/// Vets a pool before use: Err is (status, reason).
pub type PoolCheck<'a> = &'a dyn Fn(&PoolInfo) -> Result<(), (u32, String)>;

/// This child as the dispatch sees it: its doorbell (when its keeper runs)
/// and the kept connection of the worker it just claimed again.
struct Child {
    holder: Option<u32>,
    kept: RefCell<Option<KeptConn>>,
}

impl Host for Child {
    fn holder(&self) -> Option<u32> {
        self.holder
    }
    fn sleeps(&self) -> bool {
        true
    }
    fn take_kept<'a>(&self, slot: &'a PoolSlot, info: &PoolInfo) -> Option<Claim<'a>> {
        let (claim, conn) = parking::take(slot, info)?;
        *self.kept.borrow_mut() = Some(conn);
        Some(claim)
    }
}

/// Step the dispatch until it decides, asleep on the pool's futex between steps.
fn worker_for<'a>(d: &mut Dispatch<'a>, rt: &Runtime, info: &PoolInfo, slot: &'a PoolSlot, child: &Child) -> Step<'a> {
    loop {
        match d.step(&rt.site(), info, slot, child) {
            Step::Wait { until, seen } => slot.wait_idle(seen, until),
            decided => return decided,
        }
    }
}

/// Bytes BEGIN_REQUEST, the params and the empty STDIN take at most.
fn request_len(pairs: &[(&[u8], &[u8])]) -> usize {
    pairs.iter().map(|(k, v)| k.len() + v.len() + 8).sum::<usize>() + 64
}

/// Run `pairs` + `body` on a worker of `spec`'s pool. `check` vets the pool
/// once it is known (e.g. a wrapped script must be the pool owner's).
#[allow(clippy::too_many_arguments)]
pub fn run(
    r: Req<'_>,
    rt: &Runtime,
    spec: &PoolSpec,
    pairs: &[(&[u8], &[u8])],
    body: &Body,
    role: Role,
    check: PoolCheck<'_>,
) -> Result<Outcome, NotRun> {
    let mut fresh = false;
    let mut checked = false;
    let child = Child { holder: parking::holder(), kept: RefCell::new(None) };
    let bodiless = body.is_empty();
    let idempotent = dispatch::idempotent(r.method().unwrap_or(b""));
    let mut d = Dispatch::new();
    let mut meter = observe::meter(rt, role == Role::Responder);
    loop {
        let pool = match link::pool_for(&rt.site(), spec, fresh) {
            Ok(p) => p,
            Err(PoolError::Refused { status, reason }) => {
                return Err(NotRun::Refused { status: status as u32, retry_after: (status == 503).then_some(5), why: reason })
            }
            Err(PoolError::Unavailable(why)) => return Err(NotRun::Refused { status: HTTP_SERVICE_UNAVAILABLE, retry_after: Some(5), why }),
        };
        if !checked {
            check(&pool.info).map_err(|(status, why)| {
                observe::not_run(rt, &pool, status, &why);
                NotRun::Refused { status, retry_after: None, why }
            })?;
            checked = true;
        }
        // Replaced or forgotten since we cached it (or while we waited): ask again.
        let found = pool.slot(&rt.scoreboard).map(|slot| (worker_for(&mut d, rt, &pool.info, slot, &child), slot));
        let (claim, slot) = match found {
            Some((Step::Claimed(c), slot)) => (c, slot),
            Some((Step::Refuse(refusal), _)) => return Err(turned_away(rt, &pool, refusal)),
            _ => {
                if !d.retry() {
                    return Err(turned_away(rt, &pool, Refusal::tries_exhausted()));
                }
                fresh = true;
                continue;
            }
        };
        let kept = child.kept.borrow_mut().take();
        let try_ = Try { spec, claim, kept, bodiless, idempotent };
        match exchange(r, rt, &pool, slot, try_, pairs, body, role, &child, &mut meter) {
            Tried::Done(outcome) => return Ok(outcome),
            Tried::Refused(refusal) => return Err(turned_away(rt, &pool, refusal)),
            Tried::Again => {
                if !d.retry() {
                    return Err(turned_away(rt, &pool, Refusal::tries_exhausted()));
                }
            }
        }
    }
}

/// A refusal after the pool was known: said in the owner's log too.
fn turned_away(rt: &Runtime, pool: &Pool, refusal: Refusal) -> NotRun {
    observe::not_run(rt, pool, refusal.status as u32, &refusal.why);
    refusal.into()
}

/// One try at a claimed worker: what `exchange` needs besides the request.
struct Try<'a, 's> {
    spec: &'s PoolSpec,
    claim: Claim<'a>,
    /// The connection this child kept to the claimed worker, if any.
    kept: Option<KeptConn>,
    bodiless: bool,
    idempotent: bool,
}

/// How one try at a worker went.
enum Tried {
    Done(Outcome),
    Refused(Refusal),
    /// Nothing reached the app: try again (another worker, or a fresh connection).
    Again,
}

/// The backend side of one request.
enum Conn {
    Own(KeptConn),
    Shared(Arc<MuxConn>),
}

/// Reach the claimed worker, relay, and settle it.
#[allow(clippy::too_many_arguments)]
fn exchange(
    r: Req<'_>,
    rt: &Runtime,
    pool: &Arc<Pool>,
    slot: &PoolSlot,
    try_: Try<'_, '_>,
    pairs: &[(&[u8], &[u8])],
    body: &Body,
    role: Role,
    child: &Child,
    meter: &mut Option<Meter>,
) -> Tried {
    let Try { spec, claim, kept, bodiless, idempotent } = try_;
    let info = &pool.info;
    // A request with a body never goes out on a kept connection, which the
    // app may have closed meanwhile: it could not be sent again.
    let kept = kept.filter(|_| dispatch::uses_kept(bodiless));
    // A multiplexing app's requests share this process's connection to the
    // worker; any other app gets a connection of its own (kept from this
    // child's last request to the worker, or fresh).
    let conn = match (claim.via, kept) {
        (Via::Kept, Some(k)) => Ok(Conn::Own(k)),
        (via, _) if via == Via::Shared || slot.requests_per_worker() > 1 => {
            let key = (info.slot, info.slot_generation, claim.index, claim.epoch);
            mux_conn::shared(key, || connect_worker(&info.socket_prefix, claim.index)).map(Conn::Shared)
        }
        _ => connect_worker(&info.socket_prefix, claim.index).map(|fd| Conn::Own(KeptConn::new(fd))),
    };
    let mut conn = match conn {
        Ok(c) => c,
        Err(e) => {
            // The worker went away between claim and connect: take another.
            if claim.retire() {
                link::nudge(&rt.site(), info);
            }
            r.log(log::INFO, format!("sufcgi: worker socket unusable ({e}); trying another worker").as_bytes());
            return Tried::Again;
        }
    };
    slot.requests.fetch_add(1, Ordering::Relaxed);
    slot.inflight.fetch_add(1, Ordering::AcqRel);
    // A pipelined request starts when the one ahead of it ends, which ends
    // (or is stopped) within its own timeout: allow for both.
    let allowed = info.limits.request_timeout as u64 * if claim.pipelined() { 2 } else { 1 };
    let deadline = (allowed > 0).then(|| Instant::now() + Duration::from_secs(allowed));
    let timeouts = relay::Timeouts { io_ms: rt.io_timeout_ms, deadline, x_sendfile: info.limits.x_sendfile };
    let keep = matches!(conn, Conn::Own(_)) && dispatch::keepable(slot, child, bodiless, request_len(pairs));
    let slow = observe::claimed(r, rt, pool, slot, &claim, meter);
    let mut outcome = match &mut conn {
        Conn::Own(kc) => relay::own::exchange(r, kc, pairs, body, &timeouts, role, if keep { record::FCGI_KEEP_CONN } else { 0 }),
        Conn::Shared(mc) => relay::shared::exchange(r, mc, pairs, body, &timeouts, role),
    };
    drop(slow);
    slot.inflight.fetch_sub(1, Ordering::AcqRel);
    if dispatch::may_run_again(claim.via, bodiless, outcome.answered, outcome.unsent, idempotent) && outcome.fate != Fate::Clean {
        // The app had closed the connection this child kept before it took
        // the request: nothing of it ran. The worker is free; try again.
        drop(conn);
        if claim.give_back() {
            link::nudge(&rt.site(), info);
        }
        return Tried::Again;
    }
    let (worker, epoch) = (claim.index, claim.epoch);
    let never_accepted = match conn {
        Conn::Own(kc) if keep && outcome.fate == Fate::Clean && dispatch::may_keep(outcome.ending) => {
            if parking::park(slot, info, claim, kc) {
                link::nudge(&rt.site(), info);
            }
            false
        }
        conn => {
            drop(conn);
            link::settle(&rt.site(), info, claim, outcome.fate, outcome.answered)
        }
    };
    observe::ended(r, rt, spec, pool, (worker, epoch), &mut outcome, meter.take(), never_accepted);
    if never_accepted {
        return Tried::Refused(Refusal::never_accepted(slot));
    }
    if let Some(wanted) = outcome.sendfile.take() {
        // The worker is free already (kept or settled above): httpd sends the file.
        match request_file::serve(r, &wanted, info.uid) {
            Ok(status) => outcome.status = status,
            Err(why) => {
                observe::not_run(rt, pool, HTTP_FORBIDDEN, &why);
                (outcome.status, outcome.why) = (HTTP_FORBIDDEN as Status, Some(why));
            }
        }
    }
    if outcome.refused == Some(record::CANT_MPX_CONN) {
        // It said it multiplexes, then refused to: believe the refusal.
        slot.per_worker.store(1, Ordering::Release);
    } else if outcome.fate == Fate::Clean && outcome.refused.is_none() {
        // The request's server lives as long as this generation's children.
        let server = r.server();
        mux::ask_later(&rt.scoreboard, pool, worker, move |answer| report_multiplexing(server, answer));
    }
    Tried::Done(outcome)
}

/// Log what the app said about multiplexing (`mux::ask_later`'s thread).
fn report_multiplexing(s: Option<Server>, answer: std::io::Result<mux::Capabilities>) {
    let log = |msg: &str| match s {
        Some(s) => s.log(log::INFO, msg),
        None => log::main(log::INFO, msg),
    };
    match answer {
        Ok(caps) if caps.requests_per_worker() > 1 => {
            let msg = format!(
                "sufcgi: the app multiplexes (FCGI_MPXS_CONNS=1, FCGI_MAX_REQS={}): up to {} requests per worker share a connection",
                caps.max_reqs.map_or("unset".into(), |m| m.to_string()),
                caps.requests_per_worker()
            );
            log(&msg);
        }
        Ok(_) => {}
        Err(e) => log(&format!("sufcgi: the app did not answer FCGI_GET_VALUES ({e}); one request per connection")),
    }
}
