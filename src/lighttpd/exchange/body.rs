//! The request body: the start of it collected before a worker is held (a
//! slow client never holds one), then moved from lighttpd's body queue
//! into STDIN records as the app takes them.

use super::ctx::Ctx;
use crate::core::fastcgi::record::{self, STDIN};
use crate::lighttpd::server::Handled;
use std::cell::RefCell;

/// Body bytes collected before a worker is claimed (as under Apache).
const PREFETCH: i64 = 64 * 1024;

thread_local! {
    /// Where body bytes lighttpd spooled to a file are read into (kept: a
    /// fresh zeroed 64 KiB per request showed in the profile).
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Ok(true) once enough of the body is in to claim a worker.
pub(super) fn collect(c: &Ctx) -> Result<bool, Handled> {
    let req = c.req;
    if req.body_received() != req.body_length() {
        let rc = req.read_body().ok_or(Handled::ERROR)?;
        if rc != Handled::GO_ON {
            return if rc == Handled::WAIT_FOR_EVENT { Ok(false) } else { Err(rc) };
        }
    }
    if req.body_length() < 0 {
        // Streaming a chunked body: FastCGI needs CONTENT_LENGTH up front.
        return Err(req.body_read_error(411));
    }
    let have = req.body_received();
    Ok(have >= req.body_length() || have >= PREFETCH)
}

/// Move body bytes from lighttpd's request-body queue into STDIN records
/// (once the previous ones are sent). True when it added any.
pub(super) fn fill_stdin(c: &mut Ctx) -> Result<bool, String> {
    let req = c.req;
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
    let mut budget = 4 * 65535usize;
    let mut scratch = SCRATCH.with(|b| std::mem::take(&mut *b.borrow_mut()));
    scratch.resize(65535, 0);
    while budget > 0 {
        let pending = req.body_received() - req.body_taken();
        if pending <= 0 {
            break;
        }
        let want = (pending as usize).min(scratch.len()).min(budget);
        let (out, id) = (&mut conn.out, conn.id);
        match req.drain_body(&mut scratch[..want], |bytes| record::write_stream(out, STDIN, id, bytes)) {
            Ok(0) => break,
            Ok(n) => budget -= n,
            Err(()) => {
                SCRATCH.with(|b| *b.borrow_mut() = scratch);
                return Err("reading the request body (buffered by lighttpd) failed".into());
            }
        }
    }
    SCRATCH.with(|b| *b.borrow_mut() = scratch);
    if req.body_taken() == req.body_length() {
        record::write_stream_end(&mut conn.out, STDIN, conn.id);
        conn.stdin_done = true;
    }
    Ok(conn.out.len() > before)
}
