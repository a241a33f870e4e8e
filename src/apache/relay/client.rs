//! The client side of one exchange, shared by both backends: the app's
//! response events applied to the request (headers, body written and
//! flushed, stderr logged, or all of it captured for an authorizer), the
//! request body read on into STDIN records, and the exchange concluded into
//! an `Outcome` with the status a failure is answered with.

use super::{Outcome, Role, Timeouts, CHUNK};
use crate::apache::log;
use crate::apache::req::{Req, Status, HTTP_BAD_GATEWAY, HTTP_BAD_REQUEST, HTTP_GATEWAY_TIME_OUT, HTTP_SERVICE_UNAVAILABLE, OK};
use crate::core::authorizer::Captured;
use crate::core::customer_note::AppStderr;
use crate::core::dispatch::Ending;
use crate::core::fastcgi::cgi_headers::{is_hop_by_hop, CgiHeaders};
use crate::core::fastcgi::record::{self, STDIN};
use crate::core::fastcgi::response::{Event, ResponseDecoder};
use crate::core::pool_link::Fate;

/// Why an exchange failed: the status to answer, the worker's fate, the log's reason.
pub(super) type Failure = (Status, Fate, String);

/// The client failed while its body was being read (`fate`: what that
/// says of the worker).
pub(super) fn body_failed(fate: Fate) -> Failure {
    (HTTP_BAD_REQUEST as Status, fate, "reading the request body from the client failed".into())
}

/// The app broke the exchange: bad framing, a failed read or poll.
pub(super) fn broken(why: String) -> Failure {
    (HTTP_BAD_GATEWAY as Status, Fate::Broken, why)
}

/// Nothing came from the app in time.
pub(super) fn timed_out(t: &Timeouts) -> Failure {
    (HTTP_GATEWAY_TIME_OUT as Status, Fate::TimedOut, t.why_timed_out())
}

/// Put the app's CGI headers on the response (before any body was sent).
pub fn apply_headers(r: Req<'_>, h: &CgiHeaders) {
    r.set_status(h.status as Status);
    if let Some(reason) = &h.reason {
        let mut line = format!("{} ", h.status).into_bytes();
        line.extend_from_slice(reason);
        r.set_status_line(&line);
    }
    if let Some(ct) = &h.content_type {
        r.set_content_type(ct);
    }
    if let Some(loc) = &h.location {
        r.headers_out().set(b"Location", loc);
    }
    for (k, v) in &h.headers {
        if is_hop_by_hop(k) {
            continue;
        }
        // Set-Cookie goes with err_headers_out so it survives error pages, as CGI does.
        if k.eq_ignore_ascii_case(b"set-cookie") {
            r.err_headers_out().add(k, v);
        } else {
            r.headers_out().add(k, v);
        }
    }
}

fn log_app_stderr(r: Req<'_>, line: &[u8]) {
    let mut msg = b"sufcgi: app stderr: ".to_vec();
    msg.extend_from_slice(line);
    r.log(log::ERR, &msg);
}

/// What the app's response events do to the request.
pub(super) struct Client<'r> {
    r: Req<'r>,
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
    /// Only requests with a body need a buffer for it.
    body_buf: Vec<u8>,
}

impl<'r> Client<'r> {
    pub(super) fn new(r: Req<'r>, role: Role, t: &Timeouts) -> Client<'r> {
        let capture = (role == Role::Authorizer).then(Captured::default);
        let x_sendfile = t.x_sendfile && role == Role::Responder;
        Client { r, headers_sent: false, client_gone: false, wrote_body: false, stderr: AppStderr::default(), end_protocol_status: None, capture, x_sendfile, sendfile: None, body_buf: Vec::new() }
    }

    pub(super) fn on_event(&mut self, ev: Event<'_>) {
        let Some(ev) = Captured::pass(self.capture.as_mut(), ev) else { return };
        match ev {
            Event::Headers(mut h) => {
                if self.x_sendfile {
                    // The server sends the file once the worker is free (pool_request.rs).
                    self.sendfile = crate::core::sendfile::take_from(&mut h, false);
                }
                apply_headers(self.r, &h);
                self.headers_sent = self.sendfile.is_none();
            }
            Event::Body(b) => {
                if self.client_gone || b.is_empty() || self.sendfile.is_some() {
                    return;
                }
                if self.r.write(b) < 0 {
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

    /// Feed `bytes` from the app to the decoder and on to the client. Err
    /// is the failure to report.
    pub(super) fn feed(&mut self, dec: &mut ResponseDecoder, bytes: &[u8]) -> Result<(), Failure> {
        dec.feed(bytes, &mut |ev: Event<'_>| self.on_event(ev)).map_err(|e| broken(format!("the app sent malformed FastCGI: {e}")))
    }

    /// Push what was written to the client now (streaming); a client that
    /// is gone is noted.
    pub(super) fn flush(&mut self) {
        if self.r.flush() < 0 {
            self.client_gone = true;
        }
    }

    /// Read the next piece of the request body from the client into STDIN
    /// records for request `id` in `out` (the end of STDIN once the body is
    /// over). Ok(true) when it was over; Err when the client failed.
    pub(super) fn next_stdin(&mut self, out: &mut Vec<u8>, id: u16) -> Result<bool, ()> {
        self.body_buf.resize(CHUNK, 0);
        let n = self.r.read_body(&mut self.body_buf);
        if n < 0 {
            return Err(());
        }
        if n == 0 {
            record::write_stream_end(out, STDIN, id);
            return Ok(true);
        }
        record::write_stream(out, STDIN, id, &self.body_buf[..n as usize]);
        Ok(false)
    }

    fn flush_stderr(&mut self) {
        let r = self.r;
        self.stderr.flush(|line| log_app_stderr(r, line));
    }

    /// The outcome of an exchange that ended: the app's stderr flushed to
    /// the log, the decoder's verdict (a stream that ended without
    /// END_REQUEST is a broken backend), a refused request (END_REQUEST with
    /// another protocol status than REQUEST_COMPLETE) told apart, and a
    /// response already under way cut off rather than completed with an
    /// error page.
    pub(super) fn conclude(mut self, dec: &ResponseDecoder, mut failure: Option<Failure>, got_bytes: bool) -> Outcome {
        self.flush_stderr();
        if failure.is_none() && !self.client_gone {
            if let Err(e) = dec.finish() {
                let why = if got_bytes { format!("the app's response ended early: {e}") } else { "the app closed the connection without answering".to_string() };
                failure = Some(broken(why));
            }
        }
        let mut refused = None;
        if let Some(ps) = self.end_protocol_status {
            if ps != record::REQUEST_COMPLETE && !self.headers_sent {
                refused = Some(ps);
                failure = Some((HTTP_SERVICE_UNAVAILABLE as Status, Fate::Clean, format!("the app refused the request (FastCGI protocol status {ps})")));
            }
        }
        let captured = self.capture.take();
        let stderr = self.stderr.take();
        let sendfile = self.sendfile.take();
        match failure {
            None => Outcome { status: OK, fate: Fate::Clean, answered: true, why: None, captured, refused, stderr, sendfile, ending: Ending::default(), unsent: false },
            Some((status, fate, why)) => {
                if self.headers_sent {
                    // Too late for an error page: make sure the client sees a
                    // truncated response rather than a complete-looking one.
                    self.r.cut_connection();
                    Outcome { status: OK, fate, answered: got_bytes, why: Some(why), captured, refused, stderr, sendfile: None, ending: Ending::default(), unsent: false }
                } else {
                    Outcome { status, fate, answered: got_bytes, why: Some(why), captured, refused, stderr, sendfile: None, ending: Ending::default(), unsent: false }
                }
            }
        }
    }
}
