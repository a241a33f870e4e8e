//! Finding the request a worker: the dispatch (`core::dispatch`) adapted
//! to lighttpd's loop — a waiting request is parked in this process's line
//! (waiters.rs), never asleep — and connecting to the worker it claimed.

use super::conn::{Backend, Conn};
use super::ctx::{Ctx, REQUEST_ID};
use crate::core::authorizer::Captured;
use crate::core::customer_note::AppStderr;
use crate::core::dispatch::{self, Host, Refusal, Step};
use crate::core::fastcgi::record;
use crate::core::fastcgi::response::ResponseDecoder;
use crate::core::pool_link::{self, Pool, PoolError, Site};
use crate::core::request::{connect_worker, PoolInfo};
use crate::core::scoreboard::{Claim, PoolSlot, Via};
use crate::lighttpd::fdevent::Watch;
use crate::lighttpd::server::Handled;
use crate::lighttpd::{observe, shared_conn, waiters};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::raw::c_int;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

const MAX_RESPONSE_HEADERS: usize = 64 * 1024;

pub(super) enum Found {
    Worker,
    Wait,
    Done(Handled),
}

/// lighttpd as the dispatch sees it: one process whose waiting requests
/// are parked in its own line (`waiters`), never asleep.
struct Lighttpd {
    holder: Option<u32>,
    /// The request is first in this process's line for the pool.
    may: bool,
}

impl Host for Lighttpd {
    fn holder(&self) -> Option<u32> {
        self.holder
    }
    fn may_take(&self) -> bool {
        self.may
    }
    fn sleeps(&self) -> bool {
        false
    }
    fn take_kept<'a>(&self, slot: &'a PoolSlot, info: &PoolInfo) -> Option<Claim<'a>> {
        shared_conn::take_parked(slot, info)
    }
}

pub(super) fn find_worker(c: &mut Ctx) -> Found {
    if let Some(why) = c.rt.unavailable.clone().or_else(|| c.job.stale.clone()) {
        return Found::Done(c.refuse(503, Some(5), &why));
    }
    let me = c.key;
    loop {
        let pool = match c.pool.clone().filter(|_| !c.fresh) {
            Some(p) => p,
            None => match pool_link::pool_for(&c.site(), &c.job.spec, c.fresh) {
                Ok(p) => {
                    c.fresh = false;
                    c.pool = Some(p.clone());
                    p
                }
                Err(PoolError::Refused { status, reason }) => {
                    return Found::Done(c.refuse(status as c_int, (status == 503).then_some(5), &reason))
                }
                Err(PoolError::Unavailable(why)) => return Found::Done(c.refuse(503, Some(5), &why)),
            },
        };
        if !c.checked {
            if let Some(Err(why)) = c.job.script.as_ref().map(|s| s.check(pool.info.uid)) {
                return Found::Done(c.refuse(403, None, &format!("refusing to run a script: {why}")));
            }
            c.checked = true;
        }
        let host = Lighttpd { holder: c.holder(), may: waiters::may_claim(pool.info.slot, me) };
        let step = match pool.slot(c.rt.scoreboard) {
            Some(slot) => {
                let site = Site { socket_dir: &c.rt.socket_dir, scoreboard: c.rt.scoreboard };
                Some((c.dispatch.step(&site, &pool.info, slot, &host), slot))
            }
            None => None,
        };
        match step {
            Some((Step::Claimed(claim), slot)) => {
                waiters::remove(me);
                // The next in line may find a worker too (several became free).
                waiters::wake_front(pool.info.slot);
                if connect(c, claim, slot, pool).is_ok() {
                    return Found::Worker;
                }
            }
            Some((Step::Wait { .. }, _)) => {
                waiters::add(pool.info.slot, me, c.con);
                return Found::Wait;
            }
            Some((Step::Refuse(r), _)) => return Found::Done(c.refused(r)),
            Some((Step::Gone, _)) | None => {
                waiters::remove(me);
                c.fresh = true;
            }
        }
        if !c.dispatch.retry() {
            return Found::Done(c.refused(Refusal::tries_exhausted()));
        }
    }
}

/// Connect to the claimed worker and register the socket with lighttpd; or
/// join this process's connection to it (a multiplexing app's, or one kept
/// from the worker's last request).
fn connect(c: &mut Ctx, claim: Claim<'static>, slot: &'static PoolSlot, pool: Arc<Pool>) -> Result<(), ()> {
    let srv = c.con.server();
    let host = Lighttpd { holder: c.holder(), may: true };
    let keeps = dispatch::keeps(slot, host.holder);
    let keepable = dispatch::keepable(slot, &host, c.bodiless(), c.params.len() + record::HEADER_LEN);
    let key = (pool.info.slot, pool.info.slot_generation, claim.index, claim.epoch);
    if claim.via == Via::Kept && !dispatch::uses_kept(c.bodiless()) {
        // A request with a body goes out on a fresh connection (joined below).
        shared_conn::close(key);
    }
    // A pipelined or taken-over request has a connection of its own: the
    // worker accepts it from its backlog.
    let joins = matches!(claim.via, Via::Shared | Via::Kept) || slot.requests_per_worker() > 1 || (keeps && matches!(claim.via, Via::Idle | Via::TakenOver));
    let joined = if joins {
        shared_conn::join(key, srv, c.con, || connect_worker(&pool.info.socket_prefix, claim.index)).map(|(s, id)| (Joined::Shared(s), id))
    } else {
        connect_worker(&pool.info.socket_prefix, claim.index).map(|sock| (Joined::Own(sock), REQUEST_ID))
    };
    let (joined, id) = match joined {
        Ok(b) => b,
        Err(e) => {
            // The worker went away between claim and connect: take another.
            if claim.retire() {
                pool_link::nudge(&c.site(), &pool.info);
            }
            c.req.log(format!("sufcgi: worker socket unusable ({e}); trying another worker").as_bytes());
            return Err(());
        }
    };
    slot.requests.fetch_add(1, Ordering::Relaxed);
    slot.inflight.fetch_add(1, Ordering::AcqRel);
    // A pipelined request starts when the one ahead of it ends, which ends
    // (or is stopped) within its own timeout: allow for both.
    let allowed = pool.info.limits.request_timeout as u64 * if claim.pipelined() { 2 } else { 1 };
    let backend = match joined {
        Joined::Own(sock) => {
            let fd = sock.as_raw_fd();
            let (readable, con) = (c.readable.clone(), c.con);
            // Its events let lighttpd schedule the request, whose turn reads
            // and writes what the socket allows (non-blocking either way).
            // The watch is closed before the request ends (conn::close).
            let watch = Watch::register(srv, sock, move |ev| {
                if ev.readable() {
                    readable.set(true);
                }
                con.schedule();
            });
            watch.want(false);
            Backend::Own { fd, watch }
        }
        Joined::Shared(s) => Backend::Shared(s),
    };
    let slow = observe::claimed(c.req, &c.rt.socket_dir, &pool, slot, &claim, &mut c.meter);
    let mut out = std::mem::take(&mut c.params);
    if matches!(backend, Backend::Shared(_)) {
        // Params were encoded for request 1 on a connection of its own.
        record::retarget(&mut out, id, record::FCGI_KEEP_CONN);
    }
    c.conn = Some(Conn {
        claim,
        slot,
        pool,
        backend,
        id,
        keepable,
        out,
        out_pos: 0,
        stdin_done: false,
        input_closed: false,
        dec: ResponseDecoder::new(id, MAX_RESPONSE_HEADERS).for_authorizer(c.is_authorizer()),
        got_bytes: false,
        headers_done: false,
        stderr: AppStderr::default(),
        capture: c.is_authorizer().then(Captured::default),
        last_io: Instant::now(),
        deadline: (allowed > 0).then(|| Instant::now() + Duration::from_secs(allowed)),
        sendfile: None,
        _slow: slow,
    });
    Ok(())
}

/// The connection a claim got, before it is watched.
enum Joined {
    Own(OwnedFd),
    Shared(shared_conn::Shared),
}
