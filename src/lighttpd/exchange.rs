//! One request on lighttpd's event loop: collect the start of the body, find
//! a worker (claim, or wait in the pool's queue without blocking the loop),
//! connect, and relay FastCGI both ways as the sockets allow. lighttpd is
//! single-threaded: nothing here may block, except the supervisor round-trip
//! on a pool-cache miss (a local socket, answered without waiting for spawns).
//!
//! Stages: `Body` (read the body up to `PREFETCH` before holding a worker, so
//! a slow client never holds one), `Queue` (claim; else wait — see
//! waiters.rs), `Relay`. lighttpd calls `subrequest` again whenever the
//! request is scheduled (our fd's events, a waiter's turn, the timeout check).

use super::ffi;
use super::log;
use super::runtime::Runtime;
use super::shared_conn::{self, Shared};
use super::waiters;
use crate::core::fastcgi::cgi_headers::{is_hop_by_hop, CgiHeaders};
use crate::core::fastcgi::params::{self, param_value_is_safe};
use crate::core::authorizer::{basic_credentials, verdict, Captured, Verdict, DROPPED_PARAMS, MAX_CAPTURED_BODY};
use crate::core::fastcgi::record::{self, FCGI_AUTHORIZER, FCGI_RESPONDER, STDIN};
use crate::core::customer_note::AppStderr;
use crate::core::fastcgi::response::{Event, ResponseDecoder};
use super::observe;
use crate::core::directives::read_busy_page;
use crate::core::hostconfig::param_blocked;
use crate::core::identity::WrappedScript;
use crate::core::dispatch::{self, Dispatch, Ending, Host, Refusal, Step};
use crate::core::pool_link::{self, Fate, Pool, PoolError, Site};
use crate::core::request::{connect_worker, AppKind, PoolInfo, PoolSpec};
use crate::core::mux;
use crate::core::scoreboard::{Claim, Ended, PoolSlot, Via};
use std::cell::RefCell;
use std::os::fd::IntoRawFd;
use std::os::raw::{c_char, c_int, c_void};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

const REQUEST_ID: u16 = 1;
const MAX_RESPONSE_HEADERS: usize = 64 * 1024;
/// Body bytes collected before a worker is claimed (as under Apache).
const PREFETCH: i64 = 64 * 1024;
/// Reads per scheduling of one request: others get their turn in between.
const READS_PER_TURN: usize = 16;
const READ_CHUNK: usize = 65536;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
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

/// Where a request's records go.
enum Backend {
    /// A connection of its own, registered with lighttpd.
    Own { fd: c_int, fdn: *mut ffi::fdnode },
    /// This process's connection to the worker (shared_conn.rs): shared
    /// with the worker's other requests when the app multiplexes, kept from
    /// one request to the next when it does not.
    Shared(Shared),
}

struct Conn {
    claim: Claim<'static>,
    slot: &'static PoolSlot,
    pool: Arc<Pool>,
    backend: Backend,
    /// Its FastCGI request id (1 on a connection of its own).
    id: u16,
    /// Small and without a body (`dispatch::keepable`): its connection may
    /// be kept afterwards.
    keepable: bool,
    out: Vec<u8>,
    out_pos: usize,
    stdin_done: bool,
    /// The app stopped reading its input (it may still answer).
    input_closed: bool,
    dec: ResponseDecoder,
    got_bytes: bool,
    headers_done: bool,
    /// The app's stderr, logged line by line.
    stderr: AppStderr,
    /// An authorizer's answer, kept instead of sent.
    capture: Option<Captured>,
    last_io: Instant,
    deadline: Option<Instant>,
    /// X-Sendfile: what to send once the worker is free, with the app's headers.
    sendfile: Option<(crate::core::sendfile::Wanted, CgiHeaders)>,
    _slow: Option<crate::core::slow_watch::SlowWatch>,
}

pub struct Ctx {
    r: *mut ffi::request_st,
    con: *mut ffi::connection,
    rt: Arc<Runtime>,
    job: Job,
    stage: Stage,
    params: Vec<u8>,
    pool: Option<Arc<Pool>>,
    fresh: bool,
    checked: bool,
    /// Its way to a worker: queue place, deadline, tries.
    dispatch: Dispatch<'static>,
    conn: Option<Conn>,
    timed_out: bool,
    /// The backend socket reported an event since we last read it (no read
    /// is tried before: right after sending, it would only say EAGAIN).
    readable: bool,
    /// The request's authorizer let it through (`SuFcgiAuthorizer`): when
    /// lighttpd runs it again, it goes to its handler.
    authorized: bool,
    /// For `accesslog.format` (observe.rs).
    meter: Option<crate::core::request_cost::Meter>,
}

thread_local! {
    /// Live exchanges of this process, for the once-a-second timeout check.
    static LIVE: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Where body bytes lighttpd spooled to a file are read into (kept: a
    /// fresh zeroed 64 KiB per request showed in the profile).
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Schedule the request's connection for processing (lighttpd's static
/// inline `joblist_append`, which the binary does not export).
///
/// # Safety
/// `con` is a live connection; lighttpd's loop runs on this thread.
pub unsafe fn schedule(con: *mut ffi::connection) {
    // SAFETY: the caller's contract; log_con_jqueue is lighttpd's job list
    // head (a sentinel-terminated list), only touched on this thread.
    unsafe {
        if (*con).jqnext.is_null() {
            (*con).jqnext = ffi::log_con_jqueue;
            ffi::log_con_jqueue = con;
        }
    }
}

impl Ctx {
    pub fn new(r: *mut ffi::request_st, rt: Arc<Runtime>, job: Job) -> Box<Ctx> {
        // SAFETY: r is the live request being routed.
        let con = unsafe { (*r).con };
        let meter = observe::meter(&rt, job.kind != AppKind::Authorizer);
        let ctx = Box::new(Ctx {
            r,
            con,
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
            readable: false,
            authorized: false,
            meter,
        });
        LIVE.with(|l| l.borrow_mut().push(&*ctx as *const Ctx as usize));
        ctx
    }

    fn site(&self) -> Site<'_> {
        Site { socket_dir: &self.rt.socket_dir, scoreboard: self.rt.scoreboard }
    }

    fn is_authorizer(&self) -> bool {
        self.job.kind == AppKind::Authorizer
    }

    pub fn authorized(&self) -> bool {
        self.authorized
    }
}

/// Our Ctx for `r` (null if we did not take it), at our plugin slot `id`.
///
/// # Safety
/// `r` is the live request; `id` our plugin id.
pub unsafe fn ctx_of(r: *mut ffi::request_st, id: usize) -> *mut Ctx {
    // SAFETY: plugin_ctx has one entry per loaded plugin; ours is at our id.
    unsafe { *(*r).plugin_ctx.add(id) as *mut Ctx }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        let me = self as *const Ctx as usize;
        LIVE.with(|l| l.borrow_mut().retain(|&p| p != me));
        waiters::remove(me);
        if let Some(conn) = self.conn.take() {
            // The request was cut short (client gone, server stopping): the
            // worker may be mid-answer, so it is not given to anyone else —
            // unless it multiplexes: it is told to abort that request and
            // serves the others on, as long as the connection is sound.
            let aborted_cleanly = matches!(&conn.backend, Backend::Shared(s) if s.borrow().closed().is_none());
            let fate = if conn.dec.is_done() || aborted_cleanly { Fate::Clean } else { Fate::Broken };
            let answered = conn.got_bytes;
            let (left, pool) = close_conn(self.r, self.con, conn, None);
            if let Left::Settle(claim) = left {
                pool_link::settle(&self.site(), &pool.info, claim, fate, answered);
            }
        }
    }
}

/// What is left to do for the worker once its connection is closed or kept.
enum Left {
    /// Settle it by how the exchange ended.
    Settle(Claim<'static>),
    /// Parked with the kept connection, or released when it could not be
    /// (`nudge`: it retired).
    Done { nudge: bool },
}

/// Unregister and close the backend socket (or leave the connection to the
/// worker: kept, its worker parked, when `keep` names this process's
/// doorbell and nothing else is on it), log what is left of the app's
/// stderr; say what is left to settle.
fn close_conn(r: *mut ffi::request_st, con: *mut ffi::connection, mut conn: Conn, keep: Option<u32>) -> (Left, Arc<Pool>) {
    conn.stderr.flush(|line| log_app_stderr(r, line));
    observe::stderr(&conn.pool, (conn.claim.index, conn.claim.epoch), conn.stderr.take());
    conn.slot.inflight.fetch_sub(1, Ordering::AcqRel);
    let Conn { claim, pool, backend, id, dec, .. } = conn;
    let left = match backend {
        // SAFETY: con is live while its request is; fdn was registered on its
        // server's event handler, which closes the fd once unregistered.
        Backend::Own { fd, fdn } => unsafe {
            let ev = (*(*con).srv).ev;
            if !fdn.is_null() {
                ffi::fdevent_fdnode_event_del(ev, fdn);
                ffi::fdevent_sched_close(ev, fdn);
            } else {
                libc::close(fd);
            }
            Left::Settle(claim)
        },
        Backend::Shared(s) => match keep.filter(|_| shared_conn::may_keep(&s, id)) {
            Some(holder) => match claim.park(holder) {
                Ended::Parked(word) => {
                    shared_conn::leave(&s, id, true, Some(word));
                    Left::Done { nudge: false }
                }
                ended => {
                    shared_conn::leave(&s, id, true, None);
                    Left::Done { nudge: ended == Ended::Retired }
                }
            },
            None => {
                shared_conn::leave(&s, id, dec.is_done(), None);
                Left::Settle(claim)
            }
        },
    };
    (left, pool)
}

/// No body goes to the app (none, or an authorizer, which is never sent one).
fn bodiless(r: *mut ffi::request_st, kind: AppKind) -> bool {
    // SAFETY: r is the live request.
    kind == AppKind::Authorizer || unsafe { (*r).reqbody_length == 0 }
}

fn idempotent(r: *mut ffi::request_st) -> bool {
    // SAFETY: r is the live request.
    let m = unsafe { (*r).http_method };
    matches!(m, ffi::http_method_t_HTTP_METHOD_GET | ffi::http_method_t_HTTP_METHOD_HEAD | ffi::http_method_t_HTTP_METHOD_OPTIONS)
}

/// The fd handler: let lighttpd schedule the request, whose turn reads and
/// writes what the socket allows (non-blocking either way).
unsafe extern "C" fn on_backend_event(ctx: *mut c_void, revents: c_int) -> ffi::handler_t {
    // SAFETY: ctx is the Ctx registered with this fd; it unregisters the fd
    // before it is dropped.
    unsafe {
        let c = &mut *(ctx as *mut Ctx);
        if revents & (ffi::FDEVENT_IN | ffi::FDEVENT_HUP | ffi::FDEVENT_ERR | ffi::FDEVENT_RDHUP) as c_int != 0 {
            c.readable = true;
        }
        schedule(c.con);
    }
    ffi::handler_t_HANDLER_FINISHED
}

/// Once a second: flag exchanges whose app went silent or ran out of time,
/// and queued requests past their queue timeout; close kept connections
/// unused for a while.
pub fn check_timeouts() {
    if let Some(sb) = super::runtime::scoreboard() {
        shared_conn::close_idle(sb);
    }
    let now = Instant::now();
    let live: Vec<usize> = LIVE.with(|l| l.borrow().clone());
    for p in live {
        // SAFETY: LIVE holds only Ctx values not yet dropped (Drop removes them).
        let c = unsafe { &mut *(p as *mut Ctx) };
        let due = match (&c.conn, c.dispatch.deadline()) {
            (Some(conn), _) => now.duration_since(conn.last_io) >= c.rt.io_timeout || conn.deadline.is_some_and(|d| now >= d),
            (None, Some(d)) => now >= d,
            _ => false,
        };
        if due {
            c.timed_out = c.conn.is_some();
            // SAFETY: the request's connection is live while its Ctx is.
            unsafe { schedule(c.con) };
        }
    }
}

/// Answer an error (or busy) status without a response from the app.
fn refuse(c: &mut Ctx, status: c_int, retry_after: Option<u32>, why: &str) -> ffi::handler_t {
    log::request(c.r, format!("sufcgi: {why}").as_bytes());
    if let Some(p) = c.pool.clone() {
        observe::not_served(&c.site(), &p, status as u32, why);
    }
    // SAFETY: c.r is the live request; header names and values are copied.
    unsafe {
        let r = &mut *c.r;
        if let Some(s) = retry_after {
            let v = s.max(1).to_string();
            let k = b"Retry-After";
            ffi::http_header_response_set(c.r, ffi::http_header_e_HTTP_HEADER_OTHER, k.as_ptr() as *const c_char, k.len() as u32, v.as_ptr() as *const c_char, v.len() as u32);
        }
        let busy_page = (status == 503).then(|| c.job.busy_page.as_deref().and_then(read_busy_page)).flatten();
        if observe::error_page(c.r, status as u16, busy_page) {
            return ffi::handler_t_HANDLER_FINISHED;
        }
        r.http_status = status;
        r.handler_module = std::ptr::null();
    }
    ffi::handler_t_HANDLER_FINISHED
}

/// lighttpd's handle_subrequest for our requests.
///
/// # Safety
/// `c.r` is the live request this Ctx belongs to.
pub unsafe fn subrequest(c: &mut Ctx) -> ffi::handler_t {
    loop {
        match c.stage {
            Stage::Body => {
                // (An authorizer is not sent the body: it stays for the handler.)
                // SAFETY: the caller's contract.
                match if c.is_authorizer() { Ok(true) } else { unsafe { collect_body(c) } } {
                    Ok(true) => {}
                    Ok(false) => return ffi::handler_t_HANDLER_WAIT_FOR_EVENT,
                    Err(rc) => return rc,
                }
                // SAFETY: as above.
                if let Err(rc) = unsafe { build_params(c) } {
                    return rc;
                }
                c.stage = Stage::Queue;
            }
            Stage::Queue => match find_worker(c) {
                Found::Wait => return ffi::handler_t_HANDLER_WAIT_FOR_EVENT,
                Found::Done(rc) => return rc,
                Found::Worker => c.stage = Stage::Relay,
            },
            // SAFETY: as above.
            Stage::Relay => return unsafe { relay(c) },
        }
    }
}

/// Ok(true) once enough of the body is in to claim a worker.
unsafe fn collect_body(c: &mut Ctx) -> Result<bool, ffi::handler_t> {
    // SAFETY: c.r and its connection are live.
    unsafe {
        let r = &mut *c.r;
        if r.reqbody_queue.bytes_in != r.reqbody_length {
            let read = (*c.con).reqbody_read.ok_or(ffi::handler_t_HANDLER_ERROR)?;
            let rc = read(c.r);
            if rc != ffi::handler_t_HANDLER_GO_ON {
                return if rc == ffi::handler_t_HANDLER_WAIT_FOR_EVENT { Ok(false) } else { Err(rc) };
            }
        }
        if r.reqbody_length < 0 {
            // Streaming a chunked body: FastCGI needs CONTENT_LENGTH up front.
            return Err(ffi::http_response_reqbody_read_error(c.r, 411));
        }
        let have = r.reqbody_queue.bytes_in;
        Ok(have >= r.reqbody_length || have >= PREFETCH)
    }
}

/// Where http_cgi_headers' pairs go: encoded at once (no per-pair
/// allocation), minus blocked names and the ones our mapping decides.
struct ParamSink<'a> {
    nv: Vec<u8>,
    overrides: &'a [(&'static [u8], Vec<u8>)],
    blocked: &'a [String],
    /// Names left out (an authorizer's: `authorizer::DROPPED_PARAMS`).
    dropped: &'a [&'a [u8]],
    /// REMOTE_USER came from lighttpd (mod_auth authenticated the request).
    has_remote_user: bool,
    /// The first name whose name or value carries CR or LF.
    unsafe_name: Option<Vec<u8>>,
}

impl ParamSink<'_> {
    fn add(&mut self, k: &[u8], v: &[u8]) {
        if param_blocked(k, self.blocked) {
            return;
        }
        self.has_remote_user |= k == b"REMOTE_USER";
        if self.unsafe_name.is_none() && (!param_value_is_safe(k) || !param_value_is_safe(v)) {
            self.unsafe_name = Some(k.to_vec());
        }
        params::write_name_value(&mut self.nv, k, v);
    }
}

unsafe extern "C" fn collect_param(vdata: *mut c_void, k: *const c_char, klen: usize, v: *const c_char, vlen: usize) -> c_int {
    // SAFETY: vdata is the ParamSink passed to http_cgi_headers below; k and
    // v are valid for klen/vlen bytes for the duration of the call.
    unsafe {
        let sink = &mut *(vdata as *mut ParamSink<'_>);
        let key = std::slice::from_raw_parts(k as *const u8, klen);
        let val = if vlen == 0 { &[][..] } else { std::slice::from_raw_parts(v as *const u8, vlen) };
        if !sink.overrides.iter().any(|(o, _)| *o == key) && !sink.dropped.contains(&key) {
            sink.add(key, val);
        }
    }
    0
}

/// Blank (for the moment) the value of every request header whose name has a
/// byte other than a letter, digit or '-'; returns what to restore.
unsafe fn hide_odd_headers(r: *mut ffi::request_st) -> Vec<(*mut ffi::buffer, u32)> {
    let mut hidden = Vec::new();
    // SAFETY: the caller's contract; rqst_headers holds `used` data_string pointers.
    unsafe {
        let a = &(*r).rqst_headers;
        for i in 0..a.used as usize {
            let ds = *a.data.add(i) as *mut ffi::data_string;
            let Some(d) = ds.as_mut() else { continue };
            let key = if d.key.ptr.is_null() || d.key.used < 1 { &[][..] } else { std::slice::from_raw_parts(d.key.ptr as *const u8, d.key.used as usize - 1) };
            if key.iter().any(|&ch| !(ch.is_ascii_alphanumeric() || ch == b'-')) {
                hidden.push((&mut d.value as *mut ffi::buffer, d.value.used));
                d.value.used = 0;
            }
        }
    }
    hidden
}

/// A request header's value (copied), if present.
///
/// # Safety
/// `r` is the live request.
unsafe fn request_header(r: *mut ffi::request_st, id: ffi::http_header_e, name: &[u8]) -> Option<Vec<u8>> {
    // SAFETY: the caller's contract; lighttpd returns its own buffer or null.
    unsafe {
        let b = ffi::http_header_request_get(r, id, name.as_ptr() as *const c_char, name.len() as u32);
        let b = b.as_ref()?;
        if b.ptr.is_null() || b.used < 1 {
            return None;
        }
        Some(std::slice::from_raw_parts(b.ptr as *const u8, b.used as usize - 1).to_vec())
    }
}

/// The CGI environment lighttpd builds for mod_fastcgi, with our mapping's
/// overrides, minus blocked names; encoded once as BEGIN_REQUEST + PARAMS.
unsafe fn build_params(c: &mut Ctx) -> Result<(), ffi::handler_t> {
    let authorizer = c.is_authorizer();
    let dropped: &[&[u8]] = if authorizer { DROPPED_PARAMS } else { &[] };
    let mut sink = ParamSink { nv: Vec::with_capacity(2048), overrides: &c.job.overrides, blocked: &c.rt.host.blocked_env, dropped, has_remote_user: false, unsafe_name: None };
    let mut opts = ffi::http_cgi_opts { authorizer: authorizer as _, break_scriptfilename_for_php: 0, docroot: std::ptr::null(), strip_request_uri: std::ptr::null() };
    // lighttpd maps both `X-Foo` and `X_Foo` to HTTP_X_FOO, so a client could
    // shadow a header a proxy set (or forge CONTENT_TYPE with `Content_Type`).
    // As Apache does, headers whose names are not letters, digits and '-' are
    // left out: hidden from http_cgi_headers (it skips blank values) for the
    // duration of the call.
    // SAFETY: c.r is live and single-threaded lighttpd does not look at the
    // headers meanwhile; every hidden value is restored before returning.
    let hidden = unsafe { hide_odd_headers(c.r) };
    // SAFETY: c.r is live; the callback only appends to `sink`.
    unsafe { ffi::http_cgi_headers(c.r, &mut opts, Some(collect_param), &mut sink as *mut _ as *mut c_void) };
    for (b, used) in hidden {
        // SAFETY: restoring the lengths saved above on the same live buffers.
        unsafe { (*b).used = used };
    }
    for (k, v) in c.job.overrides.iter() {
        // An empty PATH_INFO / PATH_TRANSLATED is left out, as lighttpd does.
        if v.is_empty() && (*k == b"PATH_INFO" || *k == b"PATH_TRANSLATED") {
            continue;
        }
        sink.add(k, v);
    }
    if authorizer {
        // As under Apache: no body (CONTENT_LENGTH 0), and Basic credentials
        // decoded as the classic FastCGI authorizers expect them.
        sink.add(b"CONTENT_LENGTH", b"0");
        // SAFETY: c.r is live; the header value is copied out at once.
        let auth = unsafe { request_header(c.r, ffi::http_header_e_HTTP_HEADER_AUTHORIZATION, b"Authorization") };
        if let Some((user, pw)) = auth.as_deref().and_then(basic_credentials).filter(|_| !sink.has_remote_user) {
            sink.add(b"REMOTE_USER", &user);
            sink.add(b"REMOTE_PASSWD", &pw);
        }
    }
    if let Some(k) = sink.unsafe_name.take() {
        let why = format!("refusing a request whose {} contains CR or LF", String::from_utf8_lossy(&k));
        return Err(refuse(c, 400, None, &why));
    }
    let mut out = Vec::with_capacity(sink.nv.len() + 64);
    let role = if authorizer { FCGI_AUTHORIZER } else { FCGI_RESPONDER };
    record::write_begin_request(&mut out, REQUEST_ID, role, 0);
    let mut w = record::StreamWriter::new(&mut out, record::PARAMS, REQUEST_ID);
    w.push(&sink.nv);
    w.finish();
    record::write_stream_end(&mut out, record::PARAMS, REQUEST_ID);
    c.params = out;
    Ok(())
}

enum Found {
    Worker,
    Wait,
    Done(ffi::handler_t),
}

/// lighttpd as the dispatch sees it: one process whose waiting requests
/// are parked in its own line (`waiters`), never asleep.
struct Plugin {
    holder: Option<u32>,
    /// The request is first in this process's line for the pool.
    may: bool,
}

impl Host for Plugin {
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

/// This process's doorbell when it keeps connections to workers: only
/// while lighttpd runs as one process (`server.max-worker` 0), since a
/// worker reading a connection kept by one lighttpd process would wait for
/// that process while others queue (nobody here answers a doorbell).
fn holder(c: &Ctx) -> Option<u32> {
    // SAFETY: the connection and its server are live.
    let single = unsafe { (*(*c.con).srv).srvconf.max_worker == 0 };
    single.then(|| shared_conn::holder(c.rt.scoreboard)).flatten()
}

fn find_worker(c: &mut Ctx) -> Found {
    if let Some(why) = c.rt.unavailable.clone().or_else(|| c.job.stale.clone()) {
        return Found::Done(refuse(c, 503, Some(5), &why));
    }
    let me = c as *const Ctx as usize;
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
                    return Found::Done(refuse(c, status as c_int, (status == 503).then_some(5), &reason))
                }
                Err(PoolError::Unavailable(why)) => return Found::Done(refuse(c, 503, Some(5), &why)),
            },
        };
        if !c.checked {
            if let Some(Err(why)) = c.job.script.as_ref().map(|s| s.check(pool.info.uid)) {
                return Found::Done(refuse(c, 403, None, &format!("refusing to run a script: {why}")));
            }
            c.checked = true;
        }
        let plugin = Plugin { holder: holder(c), may: waiters::may_claim(pool.info.slot, me) };
        let step = match pool.slot(c.rt.scoreboard) {
            Some(slot) => {
                let site = Site { socket_dir: &c.rt.socket_dir, scoreboard: c.rt.scoreboard };
                Some((c.dispatch.step(&site, &pool.info, slot, &plugin), slot))
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
            Some((Step::Refuse(r), _)) => return Found::Done(refused(c, r)),
            Some((Step::Gone, _)) | None => {
                waiters::remove(me);
                c.fresh = true;
            }
        }
        if !c.dispatch.retry() {
            return Found::Done(refused(c, Refusal::tries_exhausted()));
        }
    }
}

/// Answer the dispatch's refusal (a 503 with the busy page).
fn refused(c: &mut Ctx, r: Refusal) -> ffi::handler_t {
    match r.status {
        503 => busy(c, r.retry_after.unwrap_or(5), &r.why),
        status => refuse(c, status as c_int, r.retry_after, &r.why),
    }
}

fn busy(c: &mut Ctx, retry_after: u32, why: &str) -> ffi::handler_t {
    refuse(c, 503, Some(retry_after), &format!("503: {why}"))
}

/// Connect to the claimed worker and register the socket with lighttpd; or
/// join this process's connection to it (a multiplexing app's, or one kept
/// from the worker's last request).
fn connect(c: &mut Ctx, claim: Claim<'static>, slot: &'static PoolSlot, pool: Arc<Pool>) -> Result<(), ()> {
    // SAFETY: the connection and its server are live.
    let ev = unsafe { (*(*c.con).srv).ev };
    let plugin = Plugin { holder: holder(c), may: true };
    let keeps = dispatch::keeps(slot, plugin.holder);
    let keepable = dispatch::keepable(slot, &plugin, bodiless(c.r, c.job.kind), c.params.len() + record::HEADER_LEN);
    let key = (pool.info.slot, pool.info.slot_generation, claim.index, claim.epoch);
    if claim.via == Via::Kept && !dispatch::uses_kept(bodiless(c.r, c.job.kind)) {
        // A request with a body goes out on a fresh connection (joined below).
        shared_conn::close(key);
    }
    // A pipelined or taken-over request has a connection of its own: the
    // worker accepts it from its backlog.
    let joins = matches!(claim.via, Via::Shared | Via::Kept) || slot.requests_per_worker() > 1 || (keeps && matches!(claim.via, Via::Idle | Via::TakenOver));
    let backend = if joins {
        // SAFETY: c.con is the request's live connection, ev its server's.
        unsafe { shared_conn::join(key, ev, c.con, || connect_worker(&pool.info.socket_prefix, claim.index)) }.map(|(s, id)| (Backend::Shared(s), id))
    } else {
        connect_worker(&pool.info.socket_prefix, claim.index).map(|sock| (Backend::Own { fd: sock.into_raw_fd(), fdn: std::ptr::null_mut() }, REQUEST_ID))
    };
    let (mut backend, id) = match backend {
        Ok(b) => b,
        Err(e) => {
            // The worker went away between claim and connect: take another.
            if claim.retire() {
                pool_link::nudge(&c.site(), &pool.info);
            }
            log::request(c.r, format!("sufcgi: worker socket unusable ({e}); trying another worker").as_bytes());
            return Err(());
        }
    };
    slot.requests.fetch_add(1, Ordering::Relaxed);
    slot.inflight.fetch_add(1, Ordering::AcqRel);
    // A pipelined request starts when the one ahead of it ends, which ends
    // (or is stopped) within its own timeout: allow for both.
    let allowed = pool.info.limits.request_timeout as u64 * if claim.pipelined() { 2 } else { 1 };
    let mut registered = true;
    if let Backend::Own { fd, fdn } = &mut backend {
        // SAFETY: ev is live; the handler's ctx is this Ctx, which
        // unregisters the fd before it is dropped.
        unsafe {
            *fdn = ffi::fdevent_register(ev, *fd, Some(on_backend_event), c as *mut Ctx as *mut c_void);
            if !fdn.is_null() {
                ffi::fdevent_fdnode_event_set(ev, *fdn, (ffi::FDEVENT_IN | ffi::FDEVENT_RDHUP) as c_int);
            }
        }
        registered = !fdn.is_null();
    }
    // SAFETY: c.r is live.
    let slow = unsafe { observe::claimed(c.r, &c.rt.socket_dir, &pool, slot, &claim, &mut c.meter) };
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
    if registered {
        Ok(())
    } else {
        Err(())
    }
}

/// Move body bytes from lighttpd's request-body queue into STDIN records
/// (once the previous ones are sent). True when it added any.
unsafe fn fill_stdin(c: &mut Ctx) -> Result<bool, String> {
    // SAFETY: c.r is live; chunkqueue calls operate on its own body queue.
    unsafe {
        let r = &mut *c.r;
        let authorizer = c.is_authorizer();
        let Some(conn) = c.conn.as_mut() else { return Ok(false) };
        if authorizer {
            // No body for an authorizer: the empty STDIN, once.
            if conn.stdin_done {
                return Ok(false);
            }
            record::write_stream_end(&mut conn.out, STDIN, conn.id);
            conn.stdin_done = true;
            return Ok(true);
        }
        // Appended behind what is still pending while that is small (the
        // params: BEGIN_REQUEST, PARAMS and a short body go in one send).
        if conn.stdin_done || conn.input_closed || conn.out.len() - conn.out_pos >= 65536 {
            return Ok(false);
        }
        if conn.out_pos == conn.out.len() {
            conn.out.clear();
            conn.out_pos = 0;
        }
        let before = conn.out.len();
        let cq = &mut r.reqbody_queue as *mut ffi::chunkqueue;
        let mut budget = 4 * 65535usize;
        // peek_data copies file chunks (bodies lighttpd spooled to disk) into
        // this buffer; memory chunks it hands out by reference.
        let mut scratch = SCRATCH.with(|b| std::mem::take(&mut *b.borrow_mut()));
        scratch.resize(65535, 0);
        while budget > 0 {
            let pending = (*cq).bytes_in - (*cq).bytes_out;
            if pending <= 0 {
                break;
            }
            let mut want = (pending as usize).min(scratch.len()).min(budget) as u32;
            let mut data: *mut c_char = scratch.as_mut_ptr() as *mut c_char;
            if ffi::chunkqueue_peek_data(cq, &mut data, &mut want, r.conf.errh as *mut _) != 0 || data.is_null() {
                SCRATCH.with(|b| *b.borrow_mut() = scratch);
                return Err("reading the request body (buffered by lighttpd) failed".into());
            }
            if want == 0 {
                break;
            }
            let bytes = std::slice::from_raw_parts(data as *const u8, want as usize);
            record::write_stream(&mut conn.out, STDIN, conn.id, bytes);
            ffi::chunkqueue_mark_written(cq, want as i64);
            budget -= want as usize;
        }
        SCRATCH.with(|b| *b.borrow_mut() = scratch);
        if (*cq).bytes_out == r.reqbody_length {
            record::write_stream_end(&mut conn.out, STDIN, conn.id);
            conn.stdin_done = true;
        }
        Ok(conn.out.len() > before)
    }
}

/// Send what the socket takes now. On a shared connection the records join
/// its queue while that is short (whole records: they never interleave).
fn send_pending(conn: &mut Conn) {
    let fd = match &conn.backend {
        Backend::Own { fd, .. } => *fd,
        Backend::Shared(s) => {
            let mut s = s.borrow_mut();
            if conn.out_pos < conn.out.len() && s.pending_out() < 65536 {
                s.queue(&conn.out[conn.out_pos..]);
                conn.out_pos = conn.out.len();
                conn.last_io = Instant::now();
            }
            return;
        }
    };
    while conn.out_pos < conn.out.len() && !conn.input_closed {
        let buf = &conn.out[conn.out_pos..];
        // SAFETY: writing from a live buffer to our own socket.
        let n = unsafe { libc::send(fd, buf.as_ptr() as *const c_void, buf.len(), libc::MSG_NOSIGNAL) };
        if n > 0 {
            conn.out_pos += n as usize;
            conn.last_io = Instant::now();
            continue;
        }
        let e = std::io::Error::last_os_error();
        match e.kind() {
            std::io::ErrorKind::Interrupted => continue,
            std::io::ErrorKind::WouldBlock => break,
            // The app stopped reading (it may already have answered): keep
            // reading its response, send nothing more.
            _ => {
                conn.input_closed = true;
                conn.out.clear();
                conn.out_pos = 0;
            }
        }
    }
}

/// Put the app's CGI headers on lighttpd's response.
pub(super) unsafe fn apply_headers(r: *mut ffi::request_st, h: &CgiHeaders) {
    // SAFETY: r is live and no response bytes were produced yet; lighttpd
    // copies names and values.
    unsafe {
        let insert = |id: ffi::http_header_e, k: &[u8], v: &[u8]| {
            ffi::http_header_response_insert(r, id, k.as_ptr() as *const c_char, k.len() as u32, v.as_ptr() as *const c_char, v.len() as u32)
        };
        if let Some(ct) = &h.content_type {
            insert(ffi::http_header_e_HTTP_HEADER_CONTENT_TYPE, b"Content-Type", ct);
        }
        if let Some(loc) = &h.location {
            insert(ffi::http_header_e_HTTP_HEADER_LOCATION, b"Location", loc);
        }
        for (k, v) in &h.headers {
            // Content-Length too: lighttpd frames the body itself.
            if is_hop_by_hop(k) || k.eq_ignore_ascii_case(b"content-length") {
                continue;
            }
            insert(ffi::http_header_hkey_get(k.as_ptr() as *const c_char, k.len()), k, v);
        }
        (*r).http_status = h.status as c_int;
        (*r).resp_body_started = 1;
    }
}

fn log_app_stderr(r: *mut ffi::request_st, line: &[u8]) {
    let mut msg = b"sufcgi: app stderr: ".to_vec();
    msg.extend_from_slice(line);
    log::request(r, &msg);
}

struct Sink<'a> {
    r: *mut ffi::request_st,
    headers_done: bool,
    append_failed: bool,
    /// `SuFcgiXSendfile` in force, and what the app asked to have sent.
    x_sendfile: bool,
    sendfile: &'a mut Option<(crate::core::sendfile::Wanted, CgiHeaders)>,
    stderr: &'a mut AppStderr,
    end_status: Option<u8>,
    /// Some for an authorizer: its headers and body are kept, never sent.
    capture: Option<&'a mut Captured>,
}

impl Sink<'_> {

    fn on_event(&mut self, ev: Event<'_>) {
        let Some(ev) = Captured::pass(self.capture.as_deref_mut(), ev) else { return };
        match ev {
            Event::Headers(h) => {
                // X-Sendfile: kept for `finish`, the app's body is dropped.
                let Some(h) = super::request_file::intercept(self.x_sendfile, h, self.sendfile) else { return };
                // SAFETY: the request is live and headers come first.
                unsafe { apply_headers(self.r, &h) };
                self.headers_done = true;
            }
            Event::Body(b) => {
                if !b.is_empty() && !self.append_failed && self.sendfile.is_none() {
                    // SAFETY: lighttpd copies the bytes into the response queue.
                    self.append_failed = unsafe { ffi::http_chunk_append_mem(self.r, b.as_ptr() as *const c_char, b.len()) } != 0;
                }
            }
            Event::Stderr(b) => {
                let r = self.r;
                self.stderr.push(b, |line| log_app_stderr(r, line));
            }
            Event::End { protocol_status, .. } => self.end_status = Some(protocol_status),
        }
    }
}

/// Pump the exchange: body out, response in; finish when the app is done.
unsafe fn relay(c: &mut Ctx) -> ffi::handler_t {
    if c.timed_out {
        let why = match c.conn.as_ref().and_then(|k| k.deadline) {
            Some(d) if Instant::now() >= d => format!("the app did not answer within {} s (SuFcgiRequestTimeout)", c.pool.as_ref().map_or(0, |p| p.info.limits.request_timeout)),
            _ => format!("the app sent nothing for {} s (sufcgi.timeout)", c.rt.io_timeout.as_secs()),
        };
        return finish(c, Fate::TimedOut, 504, Some(why));
    }
    // More of a streamed body may have arrived.
    // SAFETY: c.r and its connection are live.
    unsafe {
        let r = &mut *c.r;
        if r.reqbody_queue.bytes_in != r.reqbody_length && !c.is_authorizer() {
            if let Some(read) = (*c.con).reqbody_read {
                let rc = read(c.r);
                if rc != ffi::handler_t_HANDLER_GO_ON && rc != ffi::handler_t_HANDLER_WAIT_FOR_EVENT {
                    return finish(c, Fate::Broken, 400, Some("reading the request body from the client failed".into()));
                }
            }
        }
    }
    // Body out: refill and send until the socket is full or nothing is left for now.
    // (A first fill before sending, so a short body goes out with the params.)
    // SAFETY: as above.
    if let Err(why) = unsafe { fill_stdin(c) } {
        return finish(c, Fate::Broken, 500, Some(why));
    }
    loop {
        let Some(conn) = c.conn.as_mut() else { return ffi::handler_t_HANDLER_ERROR };
        send_pending(conn);
        if conn.out_pos < conn.out.len() {
            break;
        }
        // SAFETY: as above.
        match unsafe { fill_stdin(c) } {
            Ok(true) => {}
            Ok(false) => break,
            Err(why) => return finish(c, Fate::Broken, 500, Some(why)),
        }
    }
    let Some(conn) = c.conn.as_mut() else { return ffi::handler_t_HANDLER_ERROR };

    let x_sendfile = conn.pool.info.limits.x_sendfile && conn.capture.is_none();
    let mut sink = Sink { r: c.r, headers_done: conn.headers_done, append_failed: false, x_sendfile, sendfile: &mut conn.sendfile, stderr: &mut conn.stderr, end_status: None, capture: conn.capture.as_mut() };
    let mut failure: Option<(c_int, Fate, String)> = None;
    let mut eof = false;
    let mut buf = READ_BUF.with(|b| std::mem::take(&mut *b.borrow_mut()));
    buf.resize(READ_CHUNK, 0);
    let (fd, turns) = match &conn.backend {
        Backend::Own { fd, .. } => (*fd, if std::mem::take(&mut c.readable) { READS_PER_TURN } else { 0 }),
        Backend::Shared(s) => {
            // What the shared connection filed for this request.
            let mut s = s.borrow_mut();
            let data = s.take(conn.id);
            if !data.is_empty() {
                conn.got_bytes = true;
                conn.last_io = Instant::now();
                if let Err(e) = conn.dec.feed(&data, &mut |ev| sink.on_event(ev)) {
                    failure = Some((502, Fate::Broken, format!("the app sent malformed FastCGI: {e}")));
                }
            } else if s.closed().is_some() {
                eof = true;
            }
            (-1, 0)
        }
    };
    for _ in 0..turns {
        // SAFETY: reading into our own buffer from our own socket.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr() as *mut c_void, buf.len(), 0) };
        if n == 0 {
            eof = true;
            break;
        }
        if n < 0 {
            let e = std::io::Error::last_os_error();
            match e.kind() {
                std::io::ErrorKind::WouldBlock => break,
                std::io::ErrorKind::Interrupted => continue,
                _ => {
                    failure = Some((502, Fate::Broken, format!("reading from the app failed: {e}")));
                    break;
                }
            }
        }
        conn.got_bytes = true;
        conn.last_io = Instant::now();
        if let Err(e) = conn.dec.feed(&buf[..n as usize], &mut |ev| sink.on_event(ev)) {
            failure = Some((502, Fate::Broken, format!("the app sent malformed FastCGI: {e}")));
            break;
        }
        if conn.dec.is_done() || (n as usize) < buf.len() {
            break;
        }
    }
    READ_BUF.with(|b| *b.borrow_mut() = buf);
    conn.headers_done = sink.headers_done;
    if sink.append_failed && failure.is_none() {
        failure = Some((500, Fate::Broken, "storing the response failed (lighttpd temp files?)".into()));
    }
    if let Some(ps) = sink.end_status {
        if ps != record::REQUEST_COMPLETE && !conn.headers_done {
            failure = Some((503, Fate::Clean, format!("the app refused the request (FastCGI protocol status {ps})")));
        }
    }
    if let Some((status, fate, why)) = failure {
        return finish(c, fate, status, Some(why));
    }
    if conn.dec.is_done() {
        return finish(c, Fate::Clean, 200, None);
    }
    if eof {
        // A kept connection the app closed before it took the request: the
        // request runs again on a fresh one if it may (`dispatch::may_run_again`).
        let unsent = matches!(&conn.backend, Backend::Shared(s) if s.borrow().unsent());
        if dispatch::may_run_again(conn.claim.via, bodiless(c.r, c.job.kind), conn.got_bytes, unsent, idempotent(c.r)) {
            // SAFETY: the caller's contract.
            return unsafe { again_on_a_fresh_connection(c) };
        }
        let why = match conn.dec.finish() {
            Err(e) if conn.got_bytes => format!("the app's response ended early: {e}"),
            _ => "the app closed the connection without answering".to_string(),
        };
        return finish(c, Fate::Broken, 502, Some(why));
    }
    // Wait for the socket: readable always, writable while input is pending.
    // (A shared connection schedules its requests itself.)
    if let Backend::Own { fdn, .. } = &conn.backend {
        let want = ffi::FDEVENT_IN | ffi::FDEVENT_RDHUP | if conn.out_pos < conn.out.len() && !conn.input_closed { ffi::FDEVENT_OUT } else { 0 };
        // SAFETY: fdn is registered on this connection's server.
        unsafe { ffi::fdevent_fdnode_event_set((*(*c.con).srv).ev, *fdn, want as c_int) };
    }
    ffi::handler_t_HANDLER_WAIT_FOR_EVENT
}

/// The app closed the kept connection this request went out on before it
/// answered anything (an app that does not keep connections, or a worker on
/// its way out): give the worker back and run the request again, on a fresh
/// connection. Only requests without a body: nothing of theirs was consumed.
///
/// # Safety
/// `c.r` and its connection are live.
unsafe fn again_on_a_fresh_connection(c: &mut Ctx) -> ffi::handler_t {
    let Some(conn) = c.conn.take() else { return ffi::handler_t_HANDLER_ERROR };
    let (left, pool) = close_conn(c.r, c.con, conn, None);
    if let Left::Settle(claim) = left {
        if claim.give_back() {
            pool_link::nudge(&c.site(), &pool.info);
        }
    }
    waiters::wake_front(pool.info.slot);
    if !c.dispatch.retry() {
        return refused(c, Refusal::tries_exhausted());
    }
    // SAFETY: the caller's contract.
    if let Err(rc) = unsafe { build_params(c) } {
        return rc;
    }
    c.stage = Stage::Queue;
    // SAFETY: the caller's contract.
    unsafe { subrequest(c) }
}

/// Settle the worker by how the exchange ended and complete the response.
fn finish(c: &mut Ctx, fate: Fate, status: c_int, why: Option<String>) -> ffi::handler_t {
    let holder = holder(c);
    let Some(mut conn) = c.conn.take() else { return ffi::handler_t_HANDLER_ERROR };
    let captured = conn.capture.take();
    let sendfile = conn.sendfile.take();
    let why = why.map(|w| if c.is_authorizer() { format!("authorizer: {w}") } else { w });
    let headers_done = conn.headers_done;
    let answered = conn.got_bytes;
    // The pool's first clean request makes its app be asked whether it multiplexes.
    let ask = fate == Fate::Clean && matches!(conn.backend, Backend::Own { .. });
    // Kept for the worker's next request when this one left nothing behind on it.
    let ending = Ending { complete: conn.dec.is_done(), clean: fate == Fate::Clean && why.is_none(), all_sent: conn.stdin_done && !conn.input_closed && conn.out_pos == conn.out.len() };
    let keep = holder.filter(|_| conn.keepable && dispatch::may_keep(ending));
    let worker = conn.claim.index;
    let slot = conn.slot;
    let (left, pool) = close_conn(c.r, c.con, conn, keep);
    let never_accepted = match left {
        Left::Settle(claim) => pool_link::settle(&c.site(), &pool.info, claim, fate, answered),
        Left::Done { nudge } => {
            if nudge {
                pool_link::nudge(&c.site(), &pool.info);
            }
            false
        }
    };
    c.dispatch.exchange_over();
    if ask && !never_accepted {
        // On a thread of its own: never on lighttpd's event loop.
        mux::ask_later(c.rt.scoreboard, &pool, worker, |_| {});
    }
    // A worker of this pool may be free now: the next waiter's turn.
    waiters::wake_front(pool.info.slot);
    // SAFETY: c.r is live.
    unsafe { observe::record(c.r, &c.job.spec, c.meter.take()) };
    if never_accepted {
        return refused(c, Refusal::never_accepted(slot));
    }
    if let (Some(wanted), None) = (sendfile, &why) {
        // The worker is free already: lighttpd sends the file.
        // SAFETY: c.r is live, nothing of the response was produced.
        return unsafe { super::request_file::finish(c.r, wanted, pool.info.uid) }.unwrap_or_else(|why| refuse(c, 403, None, &why));
    }
    if let (Some(captured), None) = (captured, &why) {
        return judge(c, captured);
    }
    // SAFETY: c.r is live.
    unsafe {
        match why {
            None => ffi::http_response_backend_done(c.r),
            Some(why) if headers_done => {
                log::request(c.r, format!("sufcgi: {why}").as_bytes());
                observe::not_served(&c.site(), &pool, 502, &why);
                // Too late for an error page: cut the response so the client
                // sees it truncated rather than complete-looking.
                ffi::http_response_backend_error(c.r);
            }
            Some(why) => {
                let retry = (status == 503).then_some(5);
                return refuse(c, status, retry, &why);
            }
        }
    }
    ffi::handler_t_HANDLER_FINISHED
}

/// An authorizer's answer (`core::authorizer`, as under Apache): 200 lets
/// the request through — its `Variable-NAME`s join the request's
/// environment and lighttpd runs the request again, which now goes to its
/// handler (static file, app) — anything else is the client's answer, as
/// the app sent it.
fn judge(c: &mut Ctx, captured: Captured) -> ffi::handler_t {
    let (v, refused) = verdict(captured.headers.as_ref(), &c.rt.host.blocked_env);
    for name in &refused {
        log::request(c.r, format!("sufcgi: authorizer: ignoring Variable-{} (not a name it may set)", String::from_utf8_lossy(name)).as_bytes());
    }
    // SAFETY: c.r is live; nothing of the response was produced yet.
    unsafe {
        match v {
            Verdict::Invalid(why) => refuse(c, 500, None, &format!("authorizer: {why}")),
            Verdict::Allow(vars) => {
                for (k, val) in &vars {
                    ffi::http_header_env_set(c.r, k.as_ptr() as *const c_char, k.len() as u32, val.as_ptr() as *const c_char, val.len() as u32);
                }
                // lighttpd's own bound on a request going round (mod_fastcgi's too).
                (*c.r).loops_per_request += 1;
                if (*c.r).loops_per_request > 5 {
                    return refuse(c, 500, None, "authorizer: too many loops while processing the request");
                }
                c.authorized = true;
                // As mod_fastcgi's authorizers: the physical path is reset
                // too, so lighttpd maps the request afresh (an app tree is
                // claimed in handle_physical) and no handler is left.
                ffi::http_response_reset(c.r);
                ffi::handler_t_HANDLER_COMEBACK
            }
            Verdict::Deny => {
                let Some(h) = captured.headers.as_ref() else { return refuse(c, 500, None, "authorizer: no answer") };
                if captured.body_truncated {
                    log::request(c.r, format!("sufcgi: authorizer: response body cut at {MAX_CAPTURED_BODY} bytes").as_bytes());
                }
                apply_headers(c.r, h);
                if !captured.body.is_empty() {
                    ffi::http_chunk_append_mem(c.r, captured.body.as_ptr() as *const c_char, captured.body.len());
                }
                ffi::http_response_backend_done(c.r);
                ffi::handler_t_HANDLER_FINISHED
            }
        }
    }
}
