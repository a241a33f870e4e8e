//! One FastCGI request relayed to an app: the client side (`client`: the
//! request body in, the app's response out, the statuses of failures) and
//! its two backends, which use it and never the other way round: a
//! connection of the request's own (`own`), or the connection this process
//! shares with its other requests to a multiplexing worker (`shared`).
//! Here: what both backends and their callers share.

pub mod client;
pub mod own;
pub mod shared;

use super::req::{Req, Status};
pub use crate::core::authorizer::{Captured, MAX_CAPTURED_BODY};
use crate::core::dispatch::Ending;
use crate::core::fastcgi::params;
use crate::core::fastcgi::record::{self, FCGI_AUTHORIZER, FCGI_RESPONDER, STDIN};
pub use crate::core::pool_link::Fate;
use std::time::Instant;

/// Response headers beyond this are a broken backend, not a reason to grow.
pub const MAX_RESPONSE_HEADERS: usize = 64 * 1024;
/// The most read from the client, or from the app, at once.
const CHUNK: usize = 65535;

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
    head: Vec<u8>,
    /// The whole body is in `head`.
    done: bool,
}

impl Body {
    /// No body at all: an authorizer gets only the empty STDIN record.
    pub fn empty() -> Body {
        Body { head: Vec::new(), done: true }
    }

    /// Read up to PREFETCH bytes (or all) of the body of `r` (in its handler
    /// phase). Err is the status to answer.
    pub fn prefetch(r: Req<'_>) -> Result<Body, Status> {
        r.setup_body()?;
        let mut done = !r.has_body();
        let mut head = Vec::new();
        while !done && head.len() < PREFETCH {
            let start = head.len();
            head.resize(start + CHUNK, 0);
            let n = r.read_body(&mut head[start..]);
            head.truncate(start + n.max(0) as usize);
            if n < 0 {
                return Err(super::req::HTTP_BAD_REQUEST as Status);
            }
            done = n == 0;
        }
        Ok(Body { head, done })
    }

    /// Nothing to send: no body at all.
    pub fn is_empty(&self) -> bool {
        self.done && self.head.is_empty()
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

impl Timeouts {
    /// Why an exchange that heard nothing in time was cut.
    fn why_timed_out(&self) -> String {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            "the request ran longer than SuFcgiRequestTimeout".to_string()
        } else {
            format!("the app sent nothing for {} s (Timeout)", self.io_ms / 1000)
        }
    }
}

/// BEGIN_REQUEST (`flags`), the params, what of the body was read before a
/// worker was claimed, and the end of STDIN when that was the whole body
/// (nearly every request): one send for the whole request. True when STDIN
/// was closed.
fn write_request_start(out: &mut Vec<u8>, id: u16, role: Role, flags: u8, pairs: &[(&[u8], &[u8])], body: &Body) -> bool {
    let role_code = if role == Role::Authorizer { FCGI_AUTHORIZER } else { FCGI_RESPONDER };
    record::write_begin_request(out, id, role_code, flags);
    params::write_params(out, id, pairs);
    record::write_stream(out, STDIN, id, &body.head);
    if body.done {
        record::write_stream_end(out, STDIN, id);
    }
    body.done
}
