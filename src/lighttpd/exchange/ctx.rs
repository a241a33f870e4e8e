//! One request's exchange as it is kept between lighttpd's calls: what it
//! needs (`Job`), where it stands (`Stage`), its context (`Ctx`, hung on the
//! request's plugin slot), the live list the once-a-second timeout check
//! walks, and answering the request without the app (`refuse`).

use super::conn::{self, Backend, Conn, Left};
use crate::core::directives::read_busy_page;
use crate::core::dispatch::{Dispatch, Refusal};
use crate::core::identity::WrappedScript;
use crate::core::pool_link::{self, Fate, Pool, Site};
use crate::core::request::{AppKind, PoolSpec};
use crate::core::request_cost::Meter;
use crate::lighttpd::observe;
use crate::lighttpd::req::{Con, Header, Method, Req};
use crate::lighttpd::runtime::Runtime;
use crate::lighttpd::server::Handled;
use crate::lighttpd::{shared_conn, waiters};
use std::cell::{Cell, RefCell};
use std::os::raw::c_int;
use std::path::PathBuf;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Instant;

/// The FastCGI request id on a connection of its own.
pub(super) const REQUEST_ID: u16 = 1;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    Body,
    Queue,
    Relay,
}

/// What a request needs to run, decided when it was routed.
pub struct Job {
    pub kind: AppKind,
    pub spec: PoolSpec,
    /// The script a wrapper serves (checked against the pool's owner).
    pub script: Option<WrappedScript>,
    pub busy_page: Option<PathBuf>,
    /// CGI variables this request's mapping decides (SuFcgiApp mounts).
    pub overrides: Vec<(&'static [u8], Vec<u8>)>,
    /// Why this request's vhost cannot be served until a restart, if so.
    pub stale: Option<String>,
}

pub(super) struct Ctx {
    pub(super) req: Req,
    pub(super) con: Con,
    /// Which exchange this is (its place in LIVE and in the waiters' lines).
    pub(super) key: usize,
    pub(super) rt: Arc<Runtime>,
    pub(super) job: Job,
    pub(super) stage: Stage,
    pub(super) params: Vec<u8>,
    pub(super) pool: Option<Arc<Pool>>,
    pub(super) fresh: bool,
    pub(super) checked: bool,
    /// Its way to a worker: queue place, deadline, tries.
    pub(super) dispatch: Dispatch<'static>,
    pub(super) conn: Option<Conn>,
    pub(super) timed_out: bool,
    /// The backend socket reported an event since we last read it (no read
    /// is tried before: right after sending, it would only say EAGAIN). Set
    /// by the socket's event handler.
    pub(super) readable: Rc<Cell<bool>>,
    /// The request's authorizer let it through (`SuFcgiAuthorizer`): when
    /// lighttpd runs it again, it goes to its handler.
    pub(super) authorized: bool,
    /// For `accesslog.format` (observe.rs).
    pub(super) meter: Option<Meter>,
}

/// What our plugin slot holds: the request's exchange.
pub struct Exchange(pub(super) RefCell<Ctx>);

thread_local! {
    /// Live exchanges of this process, for the once-a-second timeout check.
    static LIVE: RefCell<Vec<(usize, Weak<Exchange>)>> = const { RefCell::new(Vec::new()) };
}

impl Exchange {
    /// A new exchange for `job`, in the live list.
    pub(super) fn new(req: Req, rt: Arc<Runtime>, job: Job) -> Rc<Exchange> {
        let meter = observe::meter(&rt, job.kind != AppKind::Authorizer);
        let ex = Rc::new(Exchange(RefCell::new(Ctx {
            req,
            con: req.con(),
            key: 0,
            rt,
            job,
            stage: Stage::Body,
            params: Vec::new(),
            pool: None,
            fresh: false,
            checked: false,
            dispatch: Dispatch::new(),
            conn: None,
            timed_out: false,
            readable: Rc::new(Cell::new(false)),
            authorized: false,
            meter,
        })));
        let key = Rc::as_ptr(&ex) as usize;
        ex.0.borrow_mut().key = key;
        LIVE.with(|l| l.borrow_mut().push((key, Rc::downgrade(&ex))));
        ex
    }
}

impl Ctx {
    pub(super) fn site(&self) -> Site<'_> {
        Site { socket_dir: &self.rt.socket_dir, scoreboard: self.rt.scoreboard }
    }

    pub(super) fn is_authorizer(&self) -> bool {
        self.job.kind == AppKind::Authorizer
    }

    /// No body goes to the app (none, or an authorizer, which is never sent one).
    pub(super) fn bodiless(&self) -> bool {
        self.is_authorizer() || self.req.body_length() == 0
    }

    pub(super) fn idempotent(&self) -> bool {
        matches!(self.req.method(), Method::Get | Method::Head | Method::Options)
    }

    /// This process's doorbell when it keeps connections to workers: only
    /// while lighttpd runs as one process (`server.max-worker` 0), since a
    /// worker reading a connection kept by one lighttpd process would wait
    /// for that process while others queue (nobody here answers a doorbell).
    pub(super) fn holder(&self) -> Option<u32> {
        self.con.server().single_process().then(|| shared_conn::holder(self.rt.scoreboard)).flatten()
    }

    /// Answer an error (or busy) status without a response from the app.
    pub(super) fn refuse(&mut self, status: c_int, retry_after: Option<u32>, why: &str) -> Handled {
        self.req.log(format!("sufcgi: {why}").as_bytes());
        if let Some(p) = self.pool.clone() {
            observe::not_served(&self.site(), &p, status as u32, why);
        }
        if let Some(s) = retry_after {
            let v = s.max(1).to_string();
            self.req.set_header(Header::Other, b"Retry-After", v.as_bytes());
        }
        let busy_page = (status == 503).then(|| self.job.busy_page.as_deref().and_then(read_busy_page)).flatten();
        if observe::error_page(self.req, status as u16, busy_page) {
            return Handled::FINISHED;
        }
        self.req.set_status(status);
        self.req.release_handler();
        Handled::FINISHED
    }

    /// Answer the dispatch's refusal (a 503 with the busy page).
    pub(super) fn refused(&mut self, r: Refusal) -> Handled {
        match r.status {
            503 => self.busy(r.retry_after.unwrap_or(5), &r.why),
            status => self.refuse(status as c_int, r.retry_after, &r.why),
        }
    }

    fn busy(&mut self, retry_after: u32, why: &str) -> Handled {
        self.refuse(503, Some(retry_after), &format!("503: {why}"))
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        let me = self.key;
        LIVE.with(|l| l.borrow_mut().retain(|(k, _)| *k != me));
        waiters::remove(me);
        if let Some(conn) = self.conn.take() {
            // The request was cut short (client gone, server stopping): the
            // worker may be mid-answer, so it is not given to anyone else —
            // unless it multiplexes: it is told to abort that request and
            // serves the others on, as long as the connection is sound.
            let aborted_cleanly = matches!(&conn.backend, Backend::Shared(s) if s.borrow().closed().is_none());
            let fate = if conn.dec.is_done() || aborted_cleanly { Fate::Clean } else { Fate::Broken };
            let answered = conn.got_bytes;
            let (left, pool) = conn::close(self.req, conn, None);
            if let Left::Settle(claim) = left {
                pool_link::settle(&self.site(), &pool.info, claim, fate, answered);
            }
        }
    }
}

/// Once a second: flag exchanges whose app went silent or ran out of time,
/// and queued requests past their queue timeout; close kept connections
/// unused for a while.
pub fn check_timeouts() {
    if let Some(sb) = crate::lighttpd::runtime::scoreboard() {
        shared_conn::close_idle(sb);
    }
    let now = Instant::now();
    let live: Vec<Weak<Exchange>> = LIVE.with(|l| l.borrow().iter().map(|(_, w)| w.clone()).collect());
    for ex in live.iter().filter_map(Weak::upgrade) {
        let Ok(mut c) = ex.0.try_borrow_mut() else { continue };
        let due = match (&c.conn, c.dispatch.deadline()) {
            (Some(conn), _) => now.duration_since(conn.last_io) >= c.rt.io_timeout || conn.deadline.is_some_and(|d| now >= d),
            (None, Some(d)) => now >= d,
            _ => false,
        };
        if due {
            c.timed_out = c.conn.is_some();
            c.con.schedule();
        }
    }
}
