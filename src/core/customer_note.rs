//! What a server child tells the supervisor for the pool owner's log: its
//! refusals and failed requests (with the reason the customer needs), and
//! the app's FastCGI stderr. The child never opens a customer's file (it is
//! the web server's user); the supervisor writes the line as the owner, to
//! the file that pool's own configuration names. Shared by both servers.
//!
//! Notes go one-way on the link the child already has. A child sends at
//! most `NOTES_PER_SECOND` of them (bursts of `NOTE_BURST`), so a flood of
//! stderr or of refusals cannot keep the single-threaded supervisor busy;
//! the supervisor has its own per-owner budget for the file.

use crate::core::fastcgi::response::StderrLines;
use crate::core::pool_link::{self, Site};
use crate::core::request::PoolInfo;
use crate::core::supervisor::protocol_customer::{Note, NoteKind, MAX_NOTE_TEXT, NO_WORKER};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

pub const NOTES_PER_SECOND: f64 = 100.0;
pub const NOTE_BURST: f64 = 200.0;
/// Stderr lines of one request kept for the supervisor (the rest is in the
/// server's error log, as every line is).
const STDERR_LINES_PER_REQUEST: usize = 64;

static BUCKET: Mutex<Option<(f64, Instant)>> = Mutex::new(None);

fn allowed() -> bool {
    let mut g = BUCKET.lock().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    let (tokens, last) = g.get_or_insert((NOTE_BURST, now));
    *tokens = (*tokens + now.saturating_duration_since(*last).as_secs_f64() * NOTES_PER_SECOND).min(NOTE_BURST);
    *last = now;
    if *tokens >= 1.0 {
        *tokens -= 1.0;
        true
    } else {
        false
    }
}

/// (slot, slot generation): which pool a note is about.
type PoolRef = (u32, u32);

fn send(socket_dir: &Path, pool: PoolRef, kind: NoteKind, status: u16, worker: Option<(u32, u32)>, elapsed_ms: u32, text: &[u8]) {
    if !allowed() {
        return;
    }
    let (worker, epoch) = worker.unwrap_or((NO_WORKER, 0));
    let text = text[..text.len().min(MAX_NOTE_TEXT)].to_vec();
    let n = Note { slot: pool.0, slot_generation: pool.1, kind, status, worker, epoch, elapsed_ms, text };
    pool_link::note(socket_dir, &n);
}

fn pool_ref(info: &PoolInfo) -> PoolRef {
    (info.slot, info.slot_generation)
}

/// The server refused a request of this pool before it reached the app.
pub fn refused(site: &Site<'_>, info: &PoolInfo, status: u32, why: &str) {
    send(site.socket_dir, pool_ref(info), NoteKind::Refused, status.min(999) as u16, None, 0, why.as_bytes());
}

/// A request of this pool failed (502, 504) or was turned away (503).
pub fn failed(site: &Site<'_>, info: &PoolInfo, status: u32, why: &str) {
    send(site.socket_dir, pool_ref(info), NoteKind::Failed, status.min(999) as u16, None, 0, why.as_bytes());
}

/// A request of pool (slot, generation) is still running after `SuFcgiSlowLog`.
pub fn slow(socket_dir: &Path, pool: (u32, u32), worker: (u32, u32), elapsed_ms: u32, what: &[u8]) {
    send(socket_dir, pool, NoteKind::Slow, 0, Some(worker), elapsed_ms, what);
}

/// The FastCGI stderr lines of one request, for the owner's log (they are
/// in the server's error log already).
pub fn stderr(site: &Site<'_>, info: &PoolInfo, worker: (u32, u32), lines: &[Vec<u8>]) {
    if lines.is_empty() {
        return;
    }
    let mut text = Vec::new();
    for l in lines {
        if !text.is_empty() {
            text.push(b'\n');
        }
        text.extend_from_slice(l);
        if text.len() >= MAX_NOTE_TEXT {
            break;
        }
    }
    send(site.socket_dir, pool_ref(info), NoteKind::Stderr, 0, Some(worker), 0, &text);
}

/// An exchange's stderr: each line goes to the server's error log as it
/// completes (`emit`), and the first lines are kept for the owner's log.
#[derive(Default)]
pub struct AppStderr {
    lines: StderrLines,
    kept: Vec<Vec<u8>>,
    dropped: usize,
}

fn keep(kept: &mut Vec<Vec<u8>>, dropped: &mut usize, l: &[u8]) {
    if kept.len() < STDERR_LINES_PER_REQUEST {
        kept.push(l.to_vec());
    } else {
        *dropped += 1;
    }
}

impl AppStderr {
    pub fn push(&mut self, bytes: &[u8], mut emit: impl FnMut(&[u8])) {
        let (kept, dropped) = (&mut self.kept, &mut self.dropped);
        self.lines.push(bytes, |l| {
            emit(l);
            keep(kept, dropped, l);
        });
    }

    pub fn flush(&mut self, mut emit: impl FnMut(&[u8])) {
        let (kept, dropped) = (&mut self.kept, &mut self.dropped);
        self.lines.flush(|l| {
            emit(l);
            keep(kept, dropped, l);
        });
    }

    /// The lines kept so far (taken), and a line saying how many were not.
    pub fn take(&mut self) -> Vec<Vec<u8>> {
        let mut out = std::mem::take(&mut self.kept);
        let n = std::mem::take(&mut self.dropped);
        if n > 0 {
            out.push(format!("({n} more stderr lines of this request are in the server's error log)").into_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_is_logged_and_kept() {
        let mut s = AppStderr::default();
        let mut logged = Vec::new();
        s.push(b"PHP Warning: a\nPHP Fat", |l| logged.push(l.to_vec()));
        s.flush(|l| logged.push(l.to_vec()));
        assert_eq!(logged, vec![b"PHP Warning: a".to_vec(), b"PHP Fat".to_vec()]);
        assert_eq!(s.take(), logged);
        assert!(s.take().is_empty());
        for i in 0..100 {
            s.push(format!("{i}\n").as_bytes(), |_| {});
        }
        let kept = s.take();
        assert_eq!(kept.len(), STDERR_LINES_PER_REQUEST + 1);
        assert_eq!(kept.last().unwrap(), b"(36 more stderr lines of this request are in the server's error log)");
    }

    #[test]
    fn the_bucket_runs_dry() {
        let n = (0..1000).filter(|_| allowed()).count();
        assert!((NOTE_BURST as usize..NOTE_BURST as usize + 50).contains(&n), "{n}");
    }
}
