//! Whether an app multiplexes (FastCGI spec 4.1): asked once per pool with
//! FCGI_GET_VALUES on a connection of its own, right after the pool's first
//! clean request (the app is then known to be up and in its accept loop),
//! on a thread of its own (`ask_later`): no response waits for it. Only an app
//! that answers `FCGI_MPXS_CONNS=1` is ever given several requests at once,
//! and then over one shared connection per server process
//! (`core::mux_conn`); every other app gets one request per connection, as
//! before.

use crate::core::fastcgi::params::{self, parse_name_values};
use crate::core::fastcgi::record::{RecordHeader, GET_VALUES_RESULT, HEADER_LEN, NULL_REQUEST_ID, UNKNOWN_TYPE};
use crate::core::request::connect_worker;
use crate::core::pool_link::Pool;
use crate::core::scoreboard::{PoolSlot, Scoreboard};
use crate::core::sys;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Most requests one multiplexing worker is given at once, whatever it
/// claims to take (flup answers FCGI_MAX_REQS with five times its file
/// limit): a worker that is stopped — timeout, memory — takes every request
/// on it down with it, so the share is kept small. The scoreboard's
/// per-worker counter holds up to 15 extra requests.
pub const MAX_SHARED: u32 = 8;

/// How long the probe waits for the answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// What an app said about itself in FCGI_GET_VALUES_RESULT.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// `FCGI_MPXS_CONNS=1`: several requests may share a connection.
    pub mpxs_conns: bool,
    /// `FCGI_MAX_REQS`: concurrent requests it accepts.
    pub max_reqs: Option<u32>,
    /// `FCGI_MAX_CONNS`: concurrent connections it accepts.
    pub max_conns: Option<u32>,
}

impl Capabilities {
    /// From a GET_VALUES_RESULT record's content. Lenient: a malformed body
    /// or value means "not said" (so: no multiplexing), never an error.
    pub fn from_values_result(content: &[u8]) -> Capabilities {
        let mut c = Capabilities::default();
        let Ok(pairs) = parse_name_values(content) else {
            return c;
        };
        let number = |v: &[u8]| std::str::from_utf8(v).ok().and_then(|s| s.trim().parse::<u32>().ok());
        for (name, value) in pairs {
            match name {
                b"FCGI_MPXS_CONNS" => c.mpxs_conns = number(value) == Some(1),
                b"FCGI_MAX_REQS" => c.max_reqs = number(value),
                b"FCGI_MAX_CONNS" => c.max_conns = number(value),
                _ => {}
            }
        }
        c
    }

    /// Requests one worker may be given at once: 1 unless it multiplexes,
    /// else what it accepts, at most `MAX_SHARED`.
    pub fn requests_per_worker(&self) -> u32 {
        if !self.mpxs_conns {
            return 1;
        }
        self.max_reqs.unwrap_or(MAX_SHARED).clamp(1, MAX_SHARED)
    }
}

/// Ask worker `index` of the pool at `prefix`, after a request of the pool
/// ended cleanly on it, and file the answer in the pool's scoreboard slot
/// (whose `per_worker` the caller set to 1, "being asked"). The worker is
/// not claimed for the question: a request that arrives meanwhile takes it
/// and waits in its backlog for the microseconds the answer takes (a
/// claimed worker would make it queue, or refuse it with SuFcgiQueueLimit
/// 0). An app that serves one connection at a time and is busy by then
/// answers late or not at all: it does not multiplex either. A worker gone
/// meanwhile (nothing to connect to) leaves the question to a later request.
pub fn ask(prefix: &Path, index: u32, slot: &PoolSlot) -> io::Result<Capabilities> {
    match probe(prefix, index, PROBE_TIMEOUT) {
        Ok(caps) => {
            slot.per_worker.store(caps.requests_per_worker(), Ordering::Release);
            slot.asked.store(1, Ordering::Release);
            Ok(caps)
        }
        Err(e) => {
            if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused) {
                slot.per_worker.store(0, Ordering::Release);
            } else {
                slot.asked.store(1, Ordering::Release);
            }
            Err(e)
        }
    }
}

/// After a clean request of a pool whose app was not asked yet: the first
/// process to get here asks it, on a short-lived thread of its own, so that
/// no response waits for the question (an app that ignores it costs
/// `PROBE_TIMEOUT`, a simple responder may); the others meanwhile give one
/// request per worker, as to any app. `report` gets the answer (for the log).
pub fn ask_later(scoreboard: &Scoreboard, pool: &Arc<Pool>, worker: u32, report: impl FnOnce(io::Result<Capabilities>) + Send + 'static) {
    let Some(slot) = pool.slot(scoreboard) else { return };
    if slot.per_worker.load(Ordering::Acquire) != 0 || slot.per_worker.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire).is_err() {
        return;
    }
    let (sb, asking) = (scoreboard.clone(), pool.clone());
    let spawned = sys::with_signals_blocked(|| {
        std::thread::Builder::new().name("sufcgi-mux-probe".into()).spawn(move || {
            if let Some(slot) = asking.slot(&sb) {
                report(ask(&asking.info.socket_prefix, worker, slot));
            }
        })
    });
    if spawned.is_err() {
        // No thread: a later request asks.
        slot.per_worker.store(0, Ordering::Release);
    }
}

/// Ask worker `index` of the pool at `prefix` what it can do. The answer is
/// the first GET_VALUES_RESULT; UNKNOWN_TYPE (it does not know the question)
/// or a closed connection mean nothing was said. Err on timeout or I/O failure.
pub fn probe(prefix: &Path, index: u32, timeout: Duration) -> io::Result<Capabilities> {
    let deadline = Instant::now() + timeout;
    let sock = connect_worker(prefix, index)?;
    let fd = sock.as_raw_fd();
    let mut out = Vec::with_capacity(64);
    params::write_get_values(&mut out, &[b"FCGI_MAX_CONNS", b"FCGI_MAX_REQS", b"FCGI_MPXS_CONNS"]);
    if out[6] == 0 {
        // Padded although the content is 48 bytes (any padding is legal):
        // libfcgi 2.4 reads on when a record ends exactly where its buffer
        // does, before it sees the record is over; asked unpadded after a
        // request, it waits for more bytes instead of answering (seen here:
        // tests/test_mux.py asks a libfcgi app and php-cgi).
        out[6] = 8;
        out.extend_from_slice(&[0; 8]);
    }
    let mut sent = 0;
    while sent < out.len() {
        sys::wait_fd(fd, libc::POLLOUT, deadline)?;
        sent += sys::send_nonblocking(fd, &out[sent..])?;
    }
    let mut buf: Vec<u8> = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    loop {
        // Whole records at the front of `buf`.
        while buf.len() >= HEADER_LEN {
            let h = RecordHeader::parse(&[buf[0], buf[1], buf[2], buf[3], buf[4], buf[5], buf[6], buf[7]]);
            let total = HEADER_LEN + h.content_len as usize + h.padding_len as usize;
            if buf.len() < total {
                break;
            }
            if h.request_id == NULL_REQUEST_ID && h.rtype == GET_VALUES_RESULT {
                return Ok(Capabilities::from_values_result(&buf[HEADER_LEN..HEADER_LEN + h.content_len as usize]));
            }
            if h.request_id == NULL_REQUEST_ID && h.rtype == UNKNOWN_TYPE {
                return Ok(Capabilities::default());
            }
            buf.drain(..total);
        }
        if buf.len() > 64 * 1024 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "no GET_VALUES_RESULT in 64 KiB of answer"));
        }
        sys::wait_fd(fd, libc::POLLIN, deadline)?;
        match sys::recv_nonblocking(fd, &mut chunk) {
            Ok(0) => return Ok(Capabilities::default()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flup_multiplexed_answer() {
        // FCGI_MAX_CONNS=1024, FCGI_MAX_REQS=5120, FCGI_MPXS_CONNS=1, as
        // flup's threaded server with multiplexed=True sends them.
        let mut c = vec![14, 4];
        c.extend_from_slice(b"FCGI_MAX_CONNS1024");
        c.extend_from_slice(&[13, 4]);
        c.extend_from_slice(b"FCGI_MAX_REQS5120");
        c.extend_from_slice(&[15, 1]);
        c.extend_from_slice(b"FCGI_MPXS_CONNS1");
        let caps = Capabilities::from_values_result(&c);
        assert_eq!(caps, Capabilities { mpxs_conns: true, max_reqs: Some(5120), max_conns: Some(1024) });
        assert_eq!(caps.requests_per_worker(), MAX_SHARED);
    }

    #[test]
    fn no_multiplexing_unless_said_so() {
        let mut c = vec![15, 1];
        c.extend_from_slice(b"FCGI_MPXS_CONNS0");
        assert_eq!(Capabilities::from_values_result(&c).requests_per_worker(), 1);
        assert_eq!(Capabilities::from_values_result(b"").requests_per_worker(), 1);
        // A value that is not exactly 1, a truncated body: not said.
        let mut c = vec![15, 3];
        c.extend_from_slice(b"FCGI_MPXS_CONNSyes");
        assert_eq!(Capabilities::from_values_result(&c).requests_per_worker(), 1);
        assert_eq!(Capabilities::from_values_result(&[15, 1, b'F']).requests_per_worker(), 1);
    }

    #[test]
    fn share_follows_max_reqs() {
        let mut c = vec![15, 1];
        c.extend_from_slice(b"FCGI_MPXS_CONNS1");
        c.extend_from_slice(&[13, 1]);
        c.extend_from_slice(b"FCGI_MAX_REQS3");
        assert_eq!(Capabilities::from_values_result(&c).requests_per_worker(), 3);
        let mut c = vec![15, 1];
        c.extend_from_slice(b"FCGI_MPXS_CONNS1");
        c.extend_from_slice(&[13, 1]);
        c.extend_from_slice(b"FCGI_MAX_REQS0");
        assert_eq!(Capabilities::from_values_result(&c).requests_per_worker(), 1);
    }

    /// A worker socket answering the probe with hand-written bytes.
    fn serve_once(answer: &'static [u8]) -> (std::path::PathBuf, std::thread::JoinHandle<Vec<u8>>) {
        let dir = std::env::temp_dir().join(format!("sufcgi-mux-{}-{}", std::process::id(), answer.len()));
        std::fs::create_dir_all(&dir).unwrap();
        let prefix = dir.join("p");
        let path = crate::core::request::worker_socket_path(&prefix, 0);
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let t = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut c, _) = listener.accept().unwrap();
            let mut q = vec![0u8; 8];
            c.read_exact(&mut q).unwrap();
            let len = u16::from_be_bytes([q[4], q[5]]) as usize + q[6] as usize;
            q.resize(8 + len, 0);
            c.read_exact(&mut q[8..]).unwrap();
            c.write_all(answer).unwrap();
            q
        });
        (prefix, t)
    }

    #[test]
    fn probe_asks_the_three_names_and_reads_the_answer() {
        // A stray STDERR record first (skipped), then the result: content
        // [15,1]"FCGI_MPXS_CONNS1" (18 bytes) and 6 bytes of padding.
        const ANSWER: &[u8] = &[
            1, 7, 0, 1, 0, 2, 6, 0, b'h', b'i', 0, 0, 0, 0, 0, 0, //
            1, 10, 0, 0, 0, 18, 6, 0, 15, 1, b'F', b'C', b'G', b'I', b'_', b'M', b'P', b'X', b'S', b'_', b'C', b'O', b'N', b'N',
            b'S', b'1', 0, 0, 0, 0, 0, 0,
        ];
        let (prefix, t) = serve_once(ANSWER);
        let caps = probe(&prefix, 0, Duration::from_secs(5)).unwrap();
        assert!(caps.mpxs_conns);
        let q = t.join().unwrap();
        // version 1, GET_VALUES, id 0, 48 bytes and 8 of padding; the three
        // names with empty values.
        assert_eq!(&q[..8], &[1, 9, 0, 0, 0, 48, 8, 0]);
        assert_eq!(q.len(), 8 + 48 + 8);
        let content_len = u16::from_be_bytes([q[4], q[5]]) as usize;
        let mut want = vec![14, 0];
        want.extend_from_slice(b"FCGI_MAX_CONNS");
        want.extend_from_slice(&[13, 0]);
        want.extend_from_slice(b"FCGI_MAX_REQS");
        want.extend_from_slice(&[15, 0]);
        want.extend_from_slice(b"FCGI_MPXS_CONNS");
        assert_eq!(&q[8..8 + content_len], &want[..]);
    }

    #[test]
    fn unknown_type_answer_means_no_multiplexing() {
        const ANSWER: &[u8] = &[1, 11, 0, 0, 0, 8, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0];
        let (prefix, t) = serve_once(ANSWER);
        assert_eq!(probe(&prefix, 0, Duration::from_secs(5)).unwrap(), Capabilities::default());
        t.join().unwrap();
    }
}
