//! The relay once a worker is claimed: the body out as STDIN, the response
//! in (from its own socket, or what the shared connection filed for it)
//! through the response sink onto lighttpd's response, a request run again
//! on a fresh connection when a kept one had closed, and the end of the
//! exchange: the worker settled or kept, the response completed.

use super::authorizer;
use super::body::fill_stdin;
use super::conn::{self, log_app_stderr, Backend, Conn, Left};
use super::ctx::{Ctx, Stage};
use super::params;
use crate::core::authorizer::Captured;
use crate::core::customer_note::AppStderr;
use crate::core::dispatch::{self, Ending, Refusal};
use crate::core::fastcgi::cgi_headers::CgiHeaders;
use crate::core::fastcgi::record;
use crate::core::fastcgi::response::Event;
use crate::core::mux;
use crate::core::pool_link::{self, Fate};
use crate::core::sys;
use crate::lighttpd::req::Req;
use crate::lighttpd::server::Handled;
use crate::lighttpd::{observe, request_file, waiters};
use std::cell::RefCell;
use std::os::raw::c_int;
use std::time::Instant;

/// Reads per scheduling of one request: others get their turn in between.
const READS_PER_TURN: usize = 16;
const READ_CHUNK: usize = 65536;

thread_local! {
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Where the app's response goes: lighttpd's response, or (an authorizer's)
/// kept for its verdict.
struct Sink<'a> {
    req: Req,
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
                let Some(h) = request_file::intercept(self.x_sendfile, h, self.sendfile) else { return };
                self.req.apply_cgi_headers(&h);
                self.headers_done = true;
            }
            Event::Body(b) => {
                if !b.is_empty() && !self.append_failed && self.sendfile.is_none() {
                    self.append_failed = !self.req.append_body(b);
                }
            }
            Event::Stderr(b) => {
                let req = self.req;
                self.stderr.push(b, |line| log_app_stderr(req, line));
            }
            Event::End { protocol_status, .. } => self.end_status = Some(protocol_status),
        }
    }
}

/// Pump the exchange: body out, response in; finish when the app is done.
/// None: the request runs again (`Stage::Queue`, its params rebuilt).
pub(super) fn relay(c: &mut Ctx) -> Option<Handled> {
    if c.timed_out {
        let why = match c.conn.as_ref().and_then(|k| k.deadline) {
            Some(d) if Instant::now() >= d => format!("the app did not answer within {} s (SuFcgiRequestTimeout)", c.pool.as_ref().map_or(0, |p| p.info.limits.request_timeout)),
            _ => format!("the app sent nothing for {} s (sufcgi.timeout)", c.rt.io_timeout.as_secs()),
        };
        return Some(finish(c, Fate::TimedOut, 504, Some(why)));
    }
    // More of a streamed body may have arrived.
    if c.req.body_received() != c.req.body_length() && !c.is_authorizer() {
        if let Some(rc) = c.req.read_body() {
            if rc != Handled::GO_ON && rc != Handled::WAIT_FOR_EVENT {
                return Some(finish(c, Fate::Broken, 400, Some("reading the request body from the client failed".into())));
            }
        }
    }
    // Body out: refill and send until the socket is full or nothing is left for now.
    // (A first fill before sending, so a short body goes out with the params.)
    if let Err(why) = fill_stdin(c) {
        return Some(finish(c, Fate::Broken, 500, Some(why)));
    }
    loop {
        let Some(conn) = c.conn.as_mut() else { return Some(Handled::ERROR) };
        send_pending(conn);
        if conn.out_pos < conn.out.len() {
            break;
        }
        match fill_stdin(c) {
            Ok(true) => {}
            Ok(false) => break,
            Err(why) => return Some(finish(c, Fate::Broken, 500, Some(why))),
        }
    }
    let (bodiless, idempotent) = (c.bodiless(), c.idempotent());
    let Some(conn) = c.conn.as_mut() else { return Some(Handled::ERROR) };

    let x_sendfile = conn.pool.info.limits.x_sendfile && conn.capture.is_none();
    let mut sink = Sink { req: c.req, headers_done: conn.headers_done, append_failed: false, x_sendfile, sendfile: &mut conn.sendfile, stderr: &mut conn.stderr, end_status: None, capture: conn.capture.as_mut() };
    let mut failure: Option<(c_int, Fate, String)> = None;
    let mut eof = false;
    let mut buf = READ_BUF.with(|b| std::mem::take(&mut *b.borrow_mut()));
    buf.resize(READ_CHUNK, 0);
    let (fd, turns) = match &conn.backend {
        Backend::Own { fd, .. } => (*fd, if c.readable.replace(false) { READS_PER_TURN } else { 0 }),
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
        let n = match sys::recv_nonblocking(fd, &mut buf) {
            Ok(0) => {
                eof = true;
                break;
            }
            Ok(n) => n,
            Err(e) => match e.kind() {
                std::io::ErrorKind::WouldBlock => break,
                std::io::ErrorKind::Interrupted => continue,
                _ => {
                    failure = Some((502, Fate::Broken, format!("reading from the app failed: {e}")));
                    break;
                }
            },
        };
        conn.got_bytes = true;
        conn.last_io = Instant::now();
        if let Err(e) = conn.dec.feed(&buf[..n], &mut |ev| sink.on_event(ev)) {
            failure = Some((502, Fate::Broken, format!("the app sent malformed FastCGI: {e}")));
            break;
        }
        if conn.dec.is_done() || n < buf.len() {
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
        return Some(finish(c, fate, status, Some(why)));
    }
    if conn.dec.is_done() {
        return Some(finish(c, Fate::Clean, 200, None));
    }
    if eof {
        // A kept connection the app closed before it took the request: the
        // request runs again on a fresh one if it may (`dispatch::may_run_again`).
        let unsent = matches!(&conn.backend, Backend::Shared(s) if s.borrow().unsent());
        if dispatch::may_run_again(conn.claim.via, bodiless, conn.got_bytes, unsent, idempotent) {
            return again_on_a_fresh_connection(c);
        }
        let why = match conn.dec.finish() {
            Err(e) if conn.got_bytes => format!("the app's response ended early: {e}"),
            _ => "the app closed the connection without answering".to_string(),
        };
        return Some(finish(c, Fate::Broken, 502, Some(why)));
    }
    // Wait for the socket: readable always, writable while input is pending.
    // (A shared connection schedules its requests itself.)
    if let Backend::Own { watch, .. } = &conn.backend {
        watch.want(conn.out_pos < conn.out.len() && !conn.input_closed);
    }
    Some(Handled::WAIT_FOR_EVENT)
}

/// The app closed the kept connection this request went out on before it
/// answered anything (an app that does not keep connections, or a worker on
/// its way out): give the worker back and run the request again, on a fresh
/// connection. Only requests without a body: nothing of theirs was consumed.
fn again_on_a_fresh_connection(c: &mut Ctx) -> Option<Handled> {
    let Some(conn) = c.conn.take() else { return Some(Handled::ERROR) };
    let (left, pool) = conn::close(c.req, conn, None);
    if let Left::Settle(claim) = left {
        if claim.give_back() {
            pool_link::nudge(&c.site(), &pool.info);
        }
    }
    waiters::wake_front(pool.info.slot);
    if !c.dispatch.retry() {
        return Some(c.refused(Refusal::tries_exhausted()));
    }
    if let Err(rc) = params::build(c) {
        return Some(rc);
    }
    c.stage = Stage::Queue;
    None
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
        match sys::send_nonblocking(fd, &conn.out[conn.out_pos..]) {
            // The socket is full (or the send was interrupted): its event says when to go on.
            Ok(0) => break,
            Ok(n) => {
                conn.out_pos += n;
                conn.last_io = Instant::now();
            }
            // The app stopped reading (it may already have answered): keep
            // reading its response, send nothing more.
            Err(_) => {
                conn.input_closed = true;
                conn.out.clear();
                conn.out_pos = 0;
            }
        }
    }
}

/// Settle the worker by how the exchange ended and complete the response.
pub(super) fn finish(c: &mut Ctx, fate: Fate, status: c_int, why: Option<String>) -> Handled {
    let holder = c.holder();
    let Some(mut conn) = c.conn.take() else { return Handled::ERROR };
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
    let (left, pool) = conn::close(c.req, conn, keep);
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
    observe::record(c.req, &c.job.spec, c.meter.take());
    if never_accepted {
        return c.refused(Refusal::never_accepted(slot));
    }
    if let (Some(wanted), None) = (sendfile, &why) {
        // The worker is free already: lighttpd sends the file.
        return request_file::finish(c.req, wanted, pool.info.uid).unwrap_or_else(|why| c.refuse(403, None, &why));
    }
    if let (Some(captured), None) = (captured, &why) {
        return authorizer::judge(c, captured);
    }
    match why {
        None => c.req.backend_done(),
        Some(why) if headers_done => {
            c.req.log(format!("sufcgi: {why}").as_bytes());
            observe::not_served(&c.site(), &pool, 502, &why);
            // Too late for an error page: cut the response so the client
            // sees it truncated rather than complete-looking.
            c.req.backend_error();
        }
        Some(why) => {
            let retry = (status == 503).then_some(5);
            return c.refuse(status, retry, &why);
        }
    }
    Handled::FINISHED
}
