//! One FastCGI request over a connection it shares with this process's other
//! requests to the same multiplexing worker (`core::mux_conn`). The same
//! client side as `relay::exchange_as` (events, error statuses, outcome);
//! only the backend side differs: its own request id, FCGI_KEEP_CONN (the
//! connection outlives each request), whole records sent under the
//! connection's write lock, and its answer taken from the records the
//! connection filed under its id.
//!
//! What fails the connection (EOF, bad framing, a send that timed out)
//! fails every request on it; what fails one request (the client's body,
//! the client going away) aborts only that one (FCGI_ABORT_REQUEST) and
//! leaves the worker serving the others.

use super::ffi;
use super::relay::{conclude, next_stdin, timed_out_why, write_request_start, Body, Exchange, Fate, Outcome, Role, Status, Timeouts, MAX_RESPONSE_HEADERS};
use crate::core::fastcgi::record::FCGI_KEEP_CONN;
use crate::core::fastcgi::response::{Event, ResponseDecoder};
use crate::core::mux_conn::{MuxConn, Recv, SendError};
use std::time::{Duration, Instant};

/// The sooner of the next silence limit and the request's deadline.
fn next_deadline(t: &Timeouts) -> Instant {
    let io = Instant::now() + Duration::from_millis(t.io_ms.max(0) as u64);
    t.deadline.map_or(io, |d| d.min(io))
}

fn send_failure(e: SendError, t: &Timeouts) -> (Status, Fate, String) {
    match e {
        SendError::TimedOut => (ffi::HTTP_GATEWAY_TIME_OUT as Status, Fate::TimedOut, timed_out_why(t)),
        SendError::Closed(why) => (ffi::HTTP_BAD_GATEWAY as Status, Fate::Broken, why),
    }
}

/// Feed records of this request to the decoder and the client. Err is the
/// failure to report.
///
/// # Safety
/// `r` (inside `ex`) is the live request.
unsafe fn deliver(r: *mut ffi::request_rec, ex: &mut Exchange, dec: &mut ResponseDecoder, bytes: &[u8]) -> Result<(), (Status, Fate, String)> {
    let mut sink = |ev: Event<'_>| {
        // SAFETY: r is live for the whole exchange.
        unsafe { ex.on_event(ev) }
    };
    dec.feed(bytes, &mut sink).map_err(|e| (ffi::HTTP_BAD_GATEWAY as Status, Fate::Broken, format!("the app sent malformed FastCGI: {e}")))?;
    if ex.wrote_body && !ex.client_gone && !dec.is_done() {
        // What the connection filed so far goes out now (streaming).
        // SAFETY: r is live.
        if unsafe { ffi::ap_rflush(r) } < 0 {
            ex.client_gone = true;
        }
    }
    Ok(())
}

/// Run one request on `conn` in `role` (see `relay::exchange_as`).
///
/// # Safety
/// As `relay::exchange_as`.
pub unsafe fn exchange_shared(r: *mut ffi::request_rec, conn: &MuxConn, pairs: &[(&[u8], &[u8])], body: &Body, t: &Timeouts, role: Role) -> Outcome {
    let mut ex = Exchange::new(r, role, t);
    let Some(id) = conn.open() else {
        let dec = ResponseDecoder::new(0, MAX_RESPONSE_HEADERS);
        let failure = Some((ffi::HTTP_BAD_GATEWAY as Status, Fate::Broken, "the shared connection to the app closed".to_string()));
        // SAFETY: r is live (the caller's contract).
        return unsafe { conclude(r, ex, &dec, failure, false) };
    };
    let mut dec = ResponseDecoder::new(id, MAX_RESPONSE_HEADERS).for_authorizer(role == Role::Authorizer);
    let mut got_bytes = false;
    let mut failure: Option<(Status, Fate, String)> = None;

    let mut out: Vec<u8> = Vec::with_capacity(16 * 1024 + body.head.len());
    let mut body_done = write_request_start(&mut out, id, role, FCGI_KEEP_CONN, pairs, body);
    if let Err(e) = conn.send(&out, next_deadline(t)) {
        failure = Some(send_failure(e, t));
    }
    // The rest of the body, a record at a time, taking this request's
    // answer in between (an app may answer before it has read everything).
    let mut client_buf: Vec<u8> = Vec::new();
    while failure.is_none() && !body_done {
        out.clear();
        // SAFETY: r is live.
        match unsafe { next_stdin(r, &mut client_buf, &mut out, id) } {
            Err(()) => {
                // The client's fault: this request is aborted, the worker serves on.
                failure = Some((ffi::HTTP_BAD_REQUEST as Status, Fate::Clean, "reading the request body from the client failed".into()));
                break;
            }
            Ok(ended) => body_done = ended,
        }
        if let Err(e) = conn.send(&out, next_deadline(t)) {
            failure = Some(send_failure(e, t));
            break;
        }
        if let Recv::Data(bytes) = conn.recv(id, Instant::now()) {
            got_bytes = true;
            // SAFETY: r is live.
            if let Err(f) = unsafe { deliver(r, &mut ex, &mut dec, &bytes) } {
                failure = Some(f);
            }
        }
    }
    while failure.is_none() && !dec.is_done() && !ex.client_gone {
        match conn.recv(id, next_deadline(t)) {
            Recv::Data(bytes) => {
                got_bytes = true;
                // SAFETY: r is live.
                if let Err(f) = unsafe { deliver(r, &mut ex, &mut dec, &bytes) } {
                    failure = Some(f);
                }
            }
            // The decoder tells a cut-off answer from a complete one.
            Recv::Closed(_) => break,
            Recv::TimedOut => failure = Some((ffi::HTTP_GATEWAY_TIME_OUT as Status, Fate::TimedOut, timed_out_why(t))),
        }
    }
    conn.close_request(id, dec.is_done());
    // SAFETY: r is live.
    unsafe { conclude(r, ex, &dec, failure, got_bytes) }
}
