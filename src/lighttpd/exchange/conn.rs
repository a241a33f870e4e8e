//! A request's connection to its worker while the exchange runs: a socket
//! of its own watched by lighttpd, or its place on this process's shared
//! connection (shared_conn.rs); and how it ends (closed, or kept with its
//! worker parked).

use crate::core::customer_note::AppStderr;
use crate::core::authorizer::Captured;
use crate::core::fastcgi::cgi_headers::CgiHeaders;
use crate::core::fastcgi::response::ResponseDecoder;
use crate::core::pool_link::Pool;
use crate::core::scoreboard::{Claim, Ended, PoolSlot};
use crate::lighttpd::fdevent::Watch;
use crate::lighttpd::observe;
use crate::lighttpd::req::Req;
use crate::lighttpd::shared_conn::{self, Shared};
use std::os::fd::RawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// Where a request's records go.
pub(super) enum Backend {
    /// A connection of its own, registered with lighttpd.
    Own { fd: RawFd, watch: Watch },
    /// This process's connection to the worker (shared_conn.rs): shared
    /// with the worker's other requests when the app multiplexes, kept from
    /// one request to the next when it does not.
    Shared(Shared),
}

pub(super) struct Conn {
    pub(super) claim: Claim<'static>,
    pub(super) slot: &'static PoolSlot,
    pub(super) pool: Arc<Pool>,
    pub(super) backend: Backend,
    /// Its FastCGI request id (1 on a connection of its own).
    pub(super) id: u16,
    /// Small and without a body (`dispatch::keepable`): its connection may
    /// be kept afterwards.
    pub(super) keepable: bool,
    pub(super) out: Vec<u8>,
    pub(super) out_pos: usize,
    pub(super) stdin_done: bool,
    /// The app stopped reading its input (it may still answer).
    pub(super) input_closed: bool,
    pub(super) dec: ResponseDecoder,
    pub(super) got_bytes: bool,
    pub(super) headers_done: bool,
    /// The app's stderr, logged line by line.
    pub(super) stderr: AppStderr,
    /// An authorizer's answer, kept instead of sent.
    pub(super) capture: Option<Captured>,
    pub(super) last_io: Instant,
    pub(super) deadline: Option<Instant>,
    /// X-Sendfile: what to send once the worker is free, with the app's headers.
    pub(super) sendfile: Option<(crate::core::sendfile::Wanted, CgiHeaders)>,
    pub(super) _slow: Option<crate::core::slow_watch::SlowWatch>,
}

/// What is left to do for the worker once its connection is closed or kept.
pub(super) enum Left {
    /// Settle it by how the exchange ended.
    Settle(Claim<'static>),
    /// Parked with the kept connection, or released when it could not be
    /// (`nudge`: it retired).
    Done { nudge: bool },
}

pub(super) fn log_app_stderr(req: Req, line: &[u8]) {
    let mut msg = b"sufcgi: app stderr: ".to_vec();
    msg.extend_from_slice(line);
    req.log(&msg);
}

/// Unregister and close the backend socket (or leave the connection to the
/// worker: kept, its worker parked, when `keep` names this process's
/// doorbell and nothing else is on it), log what is left of the app's
/// stderr; say what is left to settle.
pub(super) fn close(req: Req, mut conn: Conn, keep: Option<u32>) -> (Left, Arc<Pool>) {
    conn.stderr.flush(|line| log_app_stderr(req, line));
    observe::stderr(&conn.pool, (conn.claim.index, conn.claim.epoch), conn.stderr.take());
    conn.slot.inflight.fetch_sub(1, Ordering::AcqRel);
    let Conn { claim, pool, backend, id, dec, .. } = conn;
    let left = match backend {
        // lighttpd closes the fd once it is unregistered.
        Backend::Own { watch, .. } => {
            watch.close();
            Left::Settle(claim)
        }
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
