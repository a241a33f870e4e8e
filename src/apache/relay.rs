//! One FastCGI request over one connection to a pool socket: params out, the
//! request body streamed in STDIN records as it arrives, the response streamed
//! back to the client as it comes. Blocking httpd I/O on the client side,
//! poll() on the backend side, so neither direction can deadlock the other.

use super::apr::{pstr, table_add, table_set};
use super::{ffi, log};
pub use crate::core::authorizer::{Captured, MAX_CAPTURED_BODY};
use crate::core::fastcgi::cgi_headers::{is_hop_by_hop, CgiHeaders};
use crate::core::fastcgi::record::{self, FCGI_AUTHORIZER, FCGI_RESPONDER, STDIN};
use crate::core::customer_note::AppStderr;
use crate::core::dispatch::Ending;
use crate::core::fastcgi::response::{Event, ResponseDecoder};
use crate::core::fastcgi::params;
use crate::core::sys;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::raw::{c_char, c_int};
use std::time::Instant;

const REQUEST_ID: u16 = 1;
/// Response headers beyond this are a broken backend, not a reason to grow.
pub const MAX_RESPONSE_HEADERS: usize = 64 * 1024;
const CHUNK: usize = 65535;


/// Send what is pending in `out`. False when the app stopped reading (it may
/// already have answered): the caller keeps reading its response and sends
/// nothing more, so the pending bytes are dropped.
fn send_pending(fd: c_int, out: &mut Vec<u8>, pos: &mut usize) -> bool {
    match sys::send_nonblocking(fd, &out[*pos..]) {
        Ok(n) => {
            *pos += n;
            true
        }
        Err(_) => {
            out.clear();
            *pos = 0;
            false
        }
    }
}

thread_local! {
    /// The backend read buffer, kept per thread: a fresh 64 KiB zeroed
    /// buffer per request showed up in the profile.
    static BACKEND_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Put the app's CGI headers on the response.
///
/// # Safety
/// `r` is the live request being handled, before any body was sent.
pub unsafe fn apply_headers(r: *mut ffi::request_rec, h: &CgiHeaders) {
    // SAFETY: r is live; strings are copied into r->pool or the tables.
    unsafe {
        let rr = &mut *r;
        rr.status = h.status as c_int;
        if let Some(reason) = &h.reason {
            let mut line = format!("{} ", h.status).into_bytes();
            line.extend_from_slice(reason);
            rr.status_line = pstr(rr.pool, &line);
        }
        if let Some(ct) = &h.content_type {
            let c = pstr(rr.pool, ct);
            if !c.is_null() {
                ffi::ap_set_content_type(r, c);
            }
        }
        if let Some(loc) = &h.location {
            table_set(rr.headers_out, b"Location", loc);
        }
        for (k, v) in &h.headers {
            if is_hop_by_hop(k) {
                continue;
            }
            // Set-Cookie goes with err_headers_out so it survives error pages, as CGI does.
            if k.eq_ignore_ascii_case(b"set-cookie") {
                table_add(rr.err_headers_out, k, v);
            } else {
                table_add(rr.headers_out, k, v);
            }
        }
    }
}

/// What the handler returns: an HTTP status (httpd writes the error page) or OK.
pub type Status = c_int;

pub use crate::core::pool_link::Fate;

pub struct Outcome {
    pub status: Status,
    pub fate: Fate,
    /// Whether the app sent anything at all.
    pub answered: bool,
    /// Why it failed, for the log.
    pub why: Option<String>,
    /// `Role::Authorizer`: the app's answer, kept instead of sent (None for a responder).
    pub captured: Option<Captured>,
    /// The app ended the request unserved with this FastCGI protocol status
    /// (CANT_MPX_CONN, OVERLOADED, UNKNOWN_ROLE).
    pub refused: Option<u8>,
    /// The app's stderr lines (already in the error log), for its owner's log.
    pub stderr: Vec<Vec<u8>>,
    /// `X-Sendfile`: the file the app asked the server to send (its body was dropped).
    pub sendfile: Option<crate::core::sendfile::Wanted>,
    /// Own connection only: how it ended, for keeping it (`core::dispatch::may_keep`).
    pub ending: Ending,
    /// Own connection only: nothing of the request was taken (the app had
    /// closed the connection before it was sent).
    pub unsent: bool,
}

/// The FastCGI role a request is run in (BEGIN_REQUEST's role field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The response goes to the client as it comes.
    Responder,
    /// FastCGI spec 6.3: no body is sent, and the response is captured for
    /// the caller to judge (200 lets the request through; anything else is
    /// the client's answer).
    Authorizer,
}

/// Bytes of the body read before a worker is claimed.
pub const PREFETCH: usize = 64 * 1024;

/// The start of the request body, read before a worker is claimed: a client
/// that sends its body slowly holds an httpd thread, never a worker (httpd's
/// `Timeout` — and mod_reqtimeout where loaded — cut a stalled body).
pub struct Body {
    pub(super) head: Vec<u8>,
    /// The whole body is in `head`.
    pub(super) done: bool,
}

impl Body {
    /// No body at all: an authorizer gets only the empty STDIN record.
    pub fn empty() -> Body {
        Body { head: Vec::new(), done: true }
    }

    /// Read up to PREFETCH bytes (or all) of the body. Err is the status to answer.
    ///
    /// # Safety
    /// `r` is the live request in its handler phase.
    pub unsafe fn prefetch(r: *mut ffi::request_rec) -> Result<Body, Status> {
        // SAFETY: r is live; this sets up httpd's (dechunked) body reading.
        let rc = unsafe { ffi::ap_setup_client_block(r, ffi::REQUEST_CHUNKED_DECHUNK as c_int) };
        if rc != ffi::OK as c_int {
            return Err(rc);
        }
        // SAFETY: as above.
        let mut done = unsafe { ffi::ap_should_client_block(r) } == 0;
        let mut head = Vec::new();
        while !done && head.len() < PREFETCH {
            let start = head.len();
            head.resize(start + CHUNK, 0);
            // SAFETY: head has CHUNK writable bytes from `start`; httpd fills at most that.
            let n = unsafe { ffi::ap_get_client_block(r, head[start..].as_mut_ptr() as *mut c_char, CHUNK as _) };
            head.truncate(start + n.max(0) as usize);
            if n < 0 {
                return Err(ffi::HTTP_BAD_REQUEST as Status);
            }
            done = n == 0;
        }
        Ok(Body { head, done })
    }
}

pub struct Timeouts {
    /// Longest silence on the backend connection (httpd's `Timeout`).
    pub io_ms: i32,
    /// `SuFcgiRequestTimeout`, as a deadline.
    pub deadline: Option<Instant>,
    /// `SuFcgiXSendfile` in force for the pool.
    pub x_sendfile: bool,
}

/// Why an exchange that heard nothing in time was cut.
pub(super) fn timed_out_why(t: &Timeouts) -> String {
    if t.deadline.is_some_and(|d| Instant::now() >= d) {
        "the request ran longer than SuFcgiRequestTimeout".to_string()
    } else {
        format!("the app sent nothing for {} s (Timeout)", t.io_ms / 1000)
    }
}

fn log_app_stderr(r: *mut ffi::request_rec, line: &[u8]) {
    let mut msg = b"sufcgi: app stderr: ".to_vec();
    msg.extend_from_slice(line);
    log::request(r, log::ERR, &msg);
}

/// The client side of one exchange: what the app's response events do to
/// the request.
pub(super) struct Exchange {
    r: *mut ffi::request_rec,
    headers_sent: bool,
    pub(super) client_gone: bool,
    pub(super) wrote_body: bool,
    stderr: AppStderr,
    end_protocol_status: Option<u8>,
    /// Some in the authorizer role: headers and body are kept here, never sent.
    capture: Option<Captured>,
    /// Whether an `X-Sendfile` header is obeyed, and the one that was.
    x_sendfile: bool,
    sendfile: Option<crate::core::sendfile::Wanted>,
}

impl Exchange {
    pub(super) fn new(r: *mut ffi::request_rec, role: Role, t: &Timeouts) -> Exchange {
        let capture = (role == Role::Authorizer).then(Captured::default);
        let x_sendfile = t.x_sendfile && role == Role::Responder;
        Exchange { r, headers_sent: false, client_gone: false, wrote_body: false, stderr: AppStderr::default(), end_protocol_status: None, capture, x_sendfile, sendfile: None }
    }

    /// # Safety
    /// `self.r` is the live request.
    pub(super) unsafe fn on_event(&mut self, ev: Event<'_>) {
        let Some(ev) = Captured::pass(self.capture.as_mut(), ev) else { return };
        match ev {
            Event::Headers(mut h) => {
                if self.x_sendfile {
                    // The server sends the file once the worker is free (handler.rs).
                    self.sendfile = crate::core::sendfile::take_from(&mut h, false);
                }
                // SAFETY: headers come before any body bytes.
                unsafe { apply_headers(self.r, &h) };
                self.headers_sent = self.sendfile.is_none();
            }
            Event::Body(b) => {
                if self.client_gone || b.is_empty() || self.sendfile.is_some() {
                    return;
                }
                // SAFETY: r is live; ap_rwrite copies the bytes into its brigade.
                let n = unsafe { ffi::ap_rwrite(b.as_ptr() as *const _, b.len() as c_int, self.r) };
                if n < 0 {
                    self.client_gone = true;
                } else {
                    self.wrote_body = true;
                }
            }
            Event::Stderr(b) => {
                let r = self.r;
                self.stderr.push(b, |line| log_app_stderr(r, line));
            }
            Event::End { protocol_status, .. } => self.end_protocol_status = Some(protocol_status),
        }
    }

    fn flush_stderr(&mut self) {
        let r = self.r;
        self.stderr.flush(|line| log_app_stderr(r, line));
    }
}

/// BEGIN_REQUEST (`flags`), the params, what of the body was read before a
/// worker was claimed, and the end of STDIN when that was the whole body
/// (nearly every request): one send for the whole request. True when STDIN
/// was closed.
pub(super) fn write_request_start(out: &mut Vec<u8>, id: u16, role: Role, flags: u8, pairs: &[(&[u8], &[u8])], body: &Body) -> bool {
    let role_code = if role == Role::Authorizer { FCGI_AUTHORIZER } else { FCGI_RESPONDER };
    record::write_begin_request(out, id, role_code, flags);
    params::write_params(out, id, pairs);
    record::write_stream(out, STDIN, id, &body.head);
    if body.done {
        record::write_stream_end(out, STDIN, id);
    }
    body.done
}

/// Read the next piece of the request body from the client into STDIN
/// records for request `id` in `out` (the end of STDIN once the body is
/// over). Ok(true) when it was over; Err when the client failed.
///
/// # Safety
/// `r` is the live request in its handler phase, its body being read.
pub(super) unsafe fn next_stdin(r: *mut ffi::request_rec, client_buf: &mut Vec<u8>, out: &mut Vec<u8>, id: u16) -> Result<bool, ()> {
    client_buf.resize(CHUNK, 0);
    // SAFETY: client_buf is CHUNK bytes long; httpd fills at most that.
    let n = unsafe { ffi::ap_get_client_block(r, client_buf.as_mut_ptr() as *mut c_char, CHUNK as _) };
    if n < 0 {
        return Err(());
    }
    if n == 0 {
        record::write_stream_end(out, STDIN, id);
        return Ok(true);
    }
    record::write_stream(out, STDIN, id, &client_buf[..n as usize]);
    Ok(false)
}

/// Run one request on connected socket `sock` in `role`. An authorizer gets
/// no body (pass `Body::empty()`) and its response comes back in
/// `Outcome::captured`; nothing is written to the client. `flags`: the
/// BEGIN_REQUEST flags (FCGI_KEEP_CONN to keep the connection afterwards).
///
/// # Safety
/// `r` is the live request (handler phase for a responder; any phase after
/// map_to_storage for an authorizer).
#[allow(clippy::too_many_arguments)]
pub unsafe fn exchange_as(r: *mut ffi::request_rec, sock: &OwnedFd, pairs: &[(&[u8], &[u8])], body: &Body, t: &Timeouts, role: Role, flags: u8) -> Outcome {
    let fd = sock.as_raw_fd();
    let mut out: Vec<u8> = Vec::with_capacity(16 * 1024 + body.head.len());
    let mut stdin_closed = write_request_start(&mut out, REQUEST_ID, role, flags, pairs, body);
    let mut unsent = false;
    let mut body_done = body.done;
    let mut out_pos = 0usize;
    let mut backend_closed_input = false;
    let mut got_bytes = false;
    // Only requests with a body need a client buffer.
    let mut client_buf: Vec<u8> = Vec::new();
    let mut backend_buf = BACKEND_BUF.with(|b| std::mem::take(&mut *b.borrow_mut()));
    backend_buf.resize(CHUNK + 8, 0);
    let mut dec = ResponseDecoder::new(REQUEST_ID, MAX_RESPONSE_HEADERS).for_authorizer(role == Role::Authorizer);
    let mut ex = Exchange::new(r, role, t);
    let mut failure: Option<(Status, Fate, String)> = None;

    loop {
        if out_pos == out.len() && !stdin_closed && !backend_closed_input {
            out.clear();
            out_pos = 0;
            if body_done {
                record::write_stream_end(&mut out, STDIN, REQUEST_ID);
                stdin_closed = true;
            } else {
                // SAFETY: r is live.
                match unsafe { next_stdin(r, &mut client_buf, &mut out, REQUEST_ID) } {
                    Err(()) => {
                        failure = Some((ffi::HTTP_BAD_REQUEST as Status, Fate::Broken, "reading the request body from the client failed".into()));
                        break;
                    }
                    Ok(ended) => {
                        body_done = ended;
                        stdin_closed = ended;
                    }
                }
            }
        }
        // Write first, poll only for what the socket did not take (usually
        // the whole request goes in one send, without a poll).
        if out_pos < out.len() && !backend_closed_input {
            let first = out_pos == 0 && !got_bytes;
            backend_closed_input = !send_pending(fd, &mut out, &mut out_pos);
            unsent |= first && backend_closed_input;
            if out_pos == out.len() && !stdin_closed && !backend_closed_input {
                continue;
            }
        }
        let want_write = out_pos < out.len() && !backend_closed_input;
        let events = libc::POLLIN | if want_write { libc::POLLOUT } else { 0 };
        let mut wait = t.io_ms;
        if let Some(d) = t.deadline {
            wait = wait.min(sys::ms_until(d));
        }
        let rev = match sys::poll_fd(fd, events, wait) {
            Ok(0) => {
                failure = Some((ffi::HTTP_GATEWAY_TIME_OUT as Status, Fate::TimedOut, timed_out_why(t)));
                break;
            }
            Ok(rev) => rev,
            Err(e) => {
                failure = Some((ffi::HTTP_BAD_GATEWAY as Status, Fate::Broken, format!("poll on the app socket failed: {e}")));
                break;
            }
        };
        if want_write && rev & libc::POLLOUT != 0 {
            backend_closed_input = !send_pending(fd, &mut out, &mut out_pos);
        }
        if rev & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            // SAFETY: reading into our own buffer from our own socket.
            let n = unsafe { libc::recv(fd, backend_buf.as_mut_ptr() as *mut _, backend_buf.len(), 0) };
            if n == 0 {
                break;
            }
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                failure = Some((ffi::HTTP_BAD_GATEWAY as Status, Fate::Broken, format!("reading from the app failed: {e}")));
                break;
            }
            got_bytes = true;
            let n = n as usize;
            let mut sink = |ev: Event<'_>| {
                // SAFETY: r is live for the whole exchange.
                unsafe { ex.on_event(ev) }
            };
            if let Err(e) = dec.feed(&backend_buf[..n], &mut sink) {
                failure = Some((ffi::HTTP_BAD_GATEWAY as Status, Fate::Broken, format!("the app sent malformed FastCGI: {e}")));
                break;
            }
            if ex.client_gone {
                break;
            }
            // A short read means the socket is drained for now: push what we
            // have to the client instead of waiting for more (streaming).
            if ex.wrote_body && n < backend_buf.len() && !dec.is_done() {
                // SAFETY: r is live.
                if unsafe { ffi::ap_rflush(r) } < 0 {
                    ex.client_gone = true;
                    break;
                }
            }
            if dec.is_done() {
                break;
            }
        }
    }
    BACKEND_BUF.with(|b| *b.borrow_mut() = backend_buf);
    let client_gone = ex.client_gone;
    let all_sent = stdin_closed && out_pos == out.len() && !backend_closed_input;
    let clean = failure.is_none() && !client_gone;
    // SAFETY: r is live (the caller's contract).
    let mut outcome = unsafe { conclude(r, ex, &dec, failure, got_bytes) };
    outcome.ending = Ending { complete: dec.is_done() && outcome.refused.is_none(), clean: clean && outcome.why.is_none(), all_sent };
    outcome.unsent = unsent;
    outcome
}

/// The outcome of an exchange that ended: the app's stderr flushed to the
/// log, the decoder's verdict (a stream that ended without END_REQUEST is a
/// broken backend), a refused request (END_REQUEST with another protocol
/// status than REQUEST_COMPLETE) told apart, and a response already under
/// way cut off rather than completed with an error page.
///
/// # Safety
/// `r` is the live request of `ex`.
pub(super) unsafe fn conclude(r: *mut ffi::request_rec, mut ex: Exchange, dec: &ResponseDecoder, mut failure: Option<(Status, Fate, String)>, got_bytes: bool) -> Outcome {
    ex.flush_stderr();
    if failure.is_none() && !ex.client_gone {
        if let Err(e) = dec.finish() {
            let why = if got_bytes { format!("the app's response ended early: {e}") } else { "the app closed the connection without answering".to_string() };
            failure = Some((ffi::HTTP_BAD_GATEWAY as Status, Fate::Broken, why));
        }
    }
    let mut refused = None;
    if let Some(ps) = ex.end_protocol_status {
        if ps != record::REQUEST_COMPLETE && !ex.headers_sent {
            refused = Some(ps);
            failure = Some((ffi::HTTP_SERVICE_UNAVAILABLE as Status, Fate::Clean, format!("the app refused the request (FastCGI protocol status {ps})")));
        }
    }
    let captured = ex.capture.take();
    let stderr = ex.stderr.take();
    let sendfile = ex.sendfile.take();
    match failure {
        None => Outcome { status: ffi::OK as Status, fate: Fate::Clean, answered: true, why: None, captured, refused, stderr, sendfile, ending: Ending::default(), unsent: false },
        Some((status, fate, why)) => {
            if ex.headers_sent {
                // Too late for an error page: make sure the client sees a
                // truncated response rather than a complete-looking one.
                // SAFETY: r and its connection are live.
                unsafe {
                    (*(*r).connection).keepalive = ffi::ap_conn_keepalive_e_AP_CONN_CLOSE;
                    (*(*r).connection).aborted = 1;
                }
                Outcome { status: ffi::OK as Status, fate, answered: got_bytes, why: Some(why), captured, refused, stderr, sendfile: None, ending: Ending::default(), unsent: false }
            } else {
                Outcome { status, fate, answered: got_bytes, why: Some(why), captured, refused, stderr, sendfile: None, ending: Ending::default(), unsent: false }
            }
        }
    }
}
