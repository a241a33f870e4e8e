//! One request on lighttpd's event loop: collect the start of the body, find
//! a worker (claim, or wait in the pool's queue without blocking the loop),
//! connect, and relay FastCGI both ways as the sockets allow. lighttpd is
//! single-threaded: nothing here may block, except the supervisor round-trip
//! on a pool-cache miss (a local socket, answered without waiting for spawns).
//!
//! Stages: `Body` (read the body up to a prefetch before holding a worker,
//! so a slow client never holds one: body.rs, then the params: params.rs),
//! `Queue` (claim; else wait — claim.rs, waiters.rs), `Relay` (relay.rs;
//! an authorizer's verdict: authorizer.rs). lighttpd calls `subrequest`
//! again whenever the request is scheduled (our fd's events, a waiter's
//! turn, the timeout check). The context the stages share is ctx.rs; the
//! worker connection conn.rs. Dependencies point one way: this file ->
//! claim, relay -> authorizer, body, params -> ctx -> conn.

mod authorizer;
mod body;
mod claim;
mod conn;
mod ctx;
mod params;
mod relay;

use crate::lighttpd::req::Req;
use crate::lighttpd::runtime::Runtime;
use crate::lighttpd::server::{Handled, Plugin};
use claim::Found;
use ctx::{Ctx, Exchange, Stage};
use std::sync::Arc;

pub use ctx::{check_timeouts, Job};

/// Hang a new exchange for `job` on the request (what an authorizer left
/// there, having let the request through, is done with).
pub fn start(req: Req, p: Plugin, rt: Arc<Runtime>, job: Job) {
    req.set_ctx(p, Exchange::new(req, rt, job));
}

/// The request's authorizer let it through (it runs again, for its handler).
pub fn authorized(req: Req, p: Plugin) -> bool {
    req.ctx::<Exchange>(p).is_some_and(|ex| ex.0.try_borrow().is_ok_and(|c| c.authorized))
}

/// lighttpd's handle_subrequest for our requests.
pub fn subrequest(req: Req, p: Plugin) -> Handled {
    let Some(ex) = req.ctx::<Exchange>(p) else { return Handled::GO_ON };
    let rc = match ex.0.try_borrow_mut() {
        Ok(mut c) => run(&mut c),
        Err(_) => return Handled::ERROR,
    };
    if rc == Handled::FINISHED || rc == Handled::ERROR {
        // Done with it: settle the worker now, not at connection reset.
        req.clear_ctx::<Exchange>(p);
    }
    rc
}

/// lighttpd's handle_request_reset: the exchange is dropped (its worker
/// settled if it still held one).
pub fn reset(req: Req, p: Plugin) -> Handled {
    req.clear_ctx::<Exchange>(p);
    Handled::GO_ON
}

/// The stages, as far as the request can go now.
fn run(c: &mut Ctx) -> Handled {
    loop {
        match c.stage {
            Stage::Body => {
                // (An authorizer is not sent the body: it stays for the handler.)
                match if c.is_authorizer() { Ok(true) } else { body::collect(c) } {
                    Ok(true) => {}
                    Ok(false) => return Handled::WAIT_FOR_EVENT,
                    Err(rc) => return rc,
                }
                if let Err(rc) = params::build(c) {
                    return rc;
                }
                c.stage = Stage::Queue;
            }
            Stage::Queue => match claim::find_worker(c) {
                Found::Wait => return Handled::WAIT_FOR_EVENT,
                Found::Done(rc) => return rc,
                Found::Worker => c.stage = Stage::Relay,
            },
            // (None: it runs again on a fresh connection, relay.rs.)
            Stage::Relay => {
                if let Some(rc) = relay::relay(c) {
                    return rc;
                }
            }
        }
    }
}
