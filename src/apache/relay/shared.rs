//! One FastCGI request over a connection it shares with this process's other
//! requests to the same multiplexing worker (`core::mux_conn`). The same
//! client side as `own::exchange` (events, error statuses, outcome); only
//! the backend side differs: its own request id, FCGI_KEEP_CONN (the
//! connection outlives each request), whole records sent under the
//! connection's write lock, and its answer taken from the records the
//! connection filed under its id.
//!
//! What fails the connection (EOF, bad framing, a send that timed out)
//! fails every request on it; what fails one request (the client's body,
//! the client going away) aborts only that one (FCGI_ABORT_REQUEST) and
//! leaves the worker serving the others.

use super::client::{self, Client, Failure};
use super::{write_request_start, Body, Outcome, Role, Timeouts, MAX_RESPONSE_HEADERS};
use crate::apache::req::Req;
use crate::core::fastcgi::record::FCGI_KEEP_CONN;
use crate::core::fastcgi::response::ResponseDecoder;
use crate::core::mux_conn::{MuxConn, Recv, SendError};
use crate::core::pool_link::Fate;
use std::time::{Duration, Instant};

/// The sooner of the next silence limit and the request's deadline.
fn next_deadline(t: &Timeouts) -> Instant {
    let io = Instant::now() + Duration::from_millis(t.io_ms.max(0) as u64);
    t.deadline.map_or(io, |d| d.min(io))
}

fn send_failure(e: SendError, t: &Timeouts) -> Failure {
    match e {
        SendError::TimedOut => client::timed_out(t),
        SendError::Closed(why) => client::broken(why),
    }
}

/// Feed records of this request to the decoder and the client. Err is the
/// failure to report.
fn deliver(ex: &mut Client<'_>, dec: &mut ResponseDecoder, bytes: &[u8]) -> Result<(), Failure> {
    ex.feed(dec, bytes)?;
    if ex.wrote_body && !ex.client_gone && !dec.is_done() {
        // What the connection filed so far goes out now (streaming).
        ex.flush();
    }
    Ok(())
}

/// Run one request of `r` on `conn` in `role` (see `own::exchange`).
pub fn exchange(r: Req<'_>, conn: &MuxConn, pairs: &[(&[u8], &[u8])], body: &Body, t: &Timeouts, role: Role) -> Outcome {
    let mut ex = Client::new(r, role, t);
    let Some(id) = conn.open() else {
        let dec = ResponseDecoder::new(0, MAX_RESPONSE_HEADERS);
        return ex.conclude(&dec, Some(client::broken("the shared connection to the app closed".to_string())), false);
    };
    let mut dec = ResponseDecoder::new(id, MAX_RESPONSE_HEADERS).for_authorizer(role == Role::Authorizer);
    let mut got_bytes = false;
    let mut failure: Option<Failure> = None;

    let mut out: Vec<u8> = Vec::with_capacity(16 * 1024 + body.head.len());
    let mut body_done = write_request_start(&mut out, id, role, FCGI_KEEP_CONN, pairs, body);
    if let Err(e) = conn.send(&out, next_deadline(t)) {
        failure = Some(send_failure(e, t));
    }
    // The rest of the body, a record at a time, taking this request's
    // answer in between (an app may answer before it has read everything).
    while failure.is_none() && !body_done {
        out.clear();
        match ex.next_stdin(&mut out, id) {
            Err(()) => {
                // The client's fault: this request is aborted, the worker serves on.
                failure = Some(client::body_failed(Fate::Clean));
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
            if let Err(f) = deliver(&mut ex, &mut dec, &bytes) {
                failure = Some(f);
            }
        }
    }
    while failure.is_none() && !dec.is_done() && !ex.client_gone {
        match conn.recv(id, next_deadline(t)) {
            Recv::Data(bytes) => {
                got_bytes = true;
                if let Err(f) = deliver(&mut ex, &mut dec, &bytes) {
                    failure = Some(f);
                }
            }
            // The decoder tells a cut-off answer from a complete one.
            Recv::Closed(_) => break,
            Recv::TimedOut => failure = Some(client::timed_out(t)),
        }
    }
    conn.close_request(id, dec.is_done());
    ex.conclude(&dec, failure, got_bytes)
}
