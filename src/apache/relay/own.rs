//! One FastCGI request over a connection of its own to a pool socket:
//! params out, the request body streamed in STDIN records as it arrives,
//! the response streamed back to the client as it comes. Blocking httpd I/O
//! on the client side, poll() on the backend side, so neither direction can
//! deadlock the other.

use super::client::{self, Client, Failure};
use super::{write_request_start, Body, Outcome, Role, Timeouts, CHUNK, MAX_RESPONSE_HEADERS};
use crate::apache::req::Req;
use crate::core::dispatch::Ending;
use crate::core::fastcgi::record::{self, STDIN};
use crate::core::fastcgi::response::ResponseDecoder;
use crate::core::parking::KeptConn;
use crate::core::pool_link::Fate;
use crate::core::sys;
use std::io;
use std::os::fd::AsRawFd;
use std::os::raw::c_int;

const REQUEST_ID: u16 = 1;

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

/// Once the request went out (`sent_some`), or could not because the app
/// closed the kept connection (`closed`), the end of the last answer still
/// unread on it is read: it must never be taken for this request's answer.
/// False when that failed although the request went out.
fn read_last_answer(sock: &mut KeptConn, sent_some: bool, closed: bool) -> bool {
    if !sent_some && !closed {
        return true;
    }
    matches!(sock.request_sent(), Ok(true)) || !sent_some
}

thread_local! {
    /// The backend read buffer, kept per thread: a fresh 64 KiB zeroed
    /// buffer per request showed up in the profile.
    static BACKEND_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Run one request of `r` on connected socket `sock` in `role`. An
/// authorizer gets no body (pass `Body::empty()`) and its response comes
/// back in `Outcome::captured`; nothing is written to the client. `flags`:
/// the BEGIN_REQUEST flags (FCGI_KEEP_CONN to keep the connection
/// afterwards: the end of the answer is then left unread on `sock`, see
/// `KeptConn`).
pub fn exchange(r: Req<'_>, sock: &mut KeptConn, pairs: &[(&[u8], &[u8])], body: &Body, t: &Timeouts, role: Role, flags: u8) -> Outcome {
    let fd = sock.fd().as_raw_fd();
    let keep = flags & record::FCGI_KEEP_CONN != 0;
    let mut out: Vec<u8> = Vec::with_capacity(16 * 1024 + body.head.len());
    let mut stdin_closed = write_request_start(&mut out, REQUEST_ID, role, flags, pairs, body);
    let mut unsent = false;
    let mut body_done = body.done;
    let mut out_pos = 0usize;
    let mut backend_closed_input = false;
    let mut got_bytes = false;
    let mut backend_buf = BACKEND_BUF.with(|b| std::mem::take(&mut *b.borrow_mut()));
    backend_buf.resize(CHUNK + 8, 0);
    let mut dec = ResponseDecoder::new(REQUEST_ID, MAX_RESPONSE_HEADERS).for_authorizer(role == Role::Authorizer);
    let mut ex = Client::new(r, role, t);
    let mut failure: Option<Failure> = None;

    loop {
        if out_pos == out.len() && !stdin_closed && !backend_closed_input {
            out.clear();
            out_pos = 0;
            if body_done {
                record::write_stream_end(&mut out, STDIN, REQUEST_ID);
                stdin_closed = true;
            } else {
                match ex.next_stdin(&mut out, REQUEST_ID) {
                    Err(()) => {
                        failure = Some(client::body_failed(Fate::Broken));
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
            if !read_last_answer(sock, out_pos > 0, backend_closed_input) {
                failure = Some(client::broken("reading the end of the last answer on the kept connection failed".into()));
                break;
            }
            if out_pos == out.len() && !stdin_closed && !backend_closed_input {
                continue;
            }
        }
        let want_write = out_pos < out.len() && !backend_closed_input;
        // (Not readable for this request while the last answer's end is there.)
        let events = if sock.unread() == 0 { libc::POLLIN } else { 0 } | if want_write { libc::POLLOUT } else { 0 };
        let mut wait = t.io_ms;
        if let Some(d) = t.deadline {
            wait = wait.min(sys::ms_until(d));
        }
        let rev = match sys::poll_fd(fd, events, wait) {
            Ok(0) => {
                failure = Some(client::timed_out(t));
                break;
            }
            Ok(rev) => rev,
            Err(e) => {
                failure = Some(client::broken(format!("poll on the app socket failed: {e}")));
                break;
            }
        };
        if want_write && rev & libc::POLLOUT != 0 {
            backend_closed_input = !send_pending(fd, &mut out, &mut out_pos);
            if !read_last_answer(sock, out_pos > 0, backend_closed_input) {
                failure = Some(client::broken("reading the end of the last answer on the kept connection failed".into()));
                break;
            }
        }
        if rev & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            let read = if keep { sys::peek_nonblocking(fd, &mut backend_buf) } else { sys::recv_nonblocking(fd, &mut backend_buf) };
            let n = match read {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    failure = Some(client::broken(format!("reading from the app failed: {e}")));
                    break;
                }
            };
            got_bytes = true;
            if let Err(f) = ex.feed(&mut dec, &backend_buf[..n]) {
                failure = Some(f);
                break;
            }
            if keep {
                // Peeked: the end of the answer stays unread until the next
                // request went out; anything before it is read now.
                sock.leave_unread(n);
                if !dec.is_done() {
                    if let Err(e) = sock.request_sent() {
                        failure = Some(client::broken(format!("reading from the app failed: {e}")));
                        break;
                    }
                }
            }
            if ex.client_gone {
                break;
            }
            // A short read means the socket is drained for now: push what we
            // have to the client instead of waiting for more (streaming).
            if ex.wrote_body && n < backend_buf.len() && !dec.is_done() {
                ex.flush();
                if ex.client_gone {
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
    let mut outcome = ex.conclude(&dec, failure, got_bytes);
    outcome.ending = Ending { complete: dec.is_done() && outcome.refused.is_none(), clean: clean && outcome.why.is_none(), all_sent };
    outcome.unsent = unsent;
    outcome
}
