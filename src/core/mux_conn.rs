//! One connection to a multiplexing worker, shared by the requests a server
//! process runs on that worker at once (FastCGI spec 3.3: records of
//! different requests interleave, told apart by their request id).
//!
//! No extra thread: a request waiting for its answer that finds nobody
//! reading becomes the reader for one turn (leader/follower), files every
//! whole record it reads under its request id and wakes the others, who
//! wait on a condition variable. Writers hold a lock for whole records, so
//! records never interleave mid-record; a writer that has to wait for the
//! socket also reads when nobody else does, so an app blocked on writing
//! its answers cannot deadlock us. What is filed but not yet taken is
//! bounded (`MAX_BUFFERED`): past it nobody reads until the requests
//! holding it catch up. That is the only flow control FastCGI has on a
//! shared connection: a slow client slows its neighbours, memory stays flat.

use crate::core::fastcgi::record::{self, RecordHeader, END_REQUEST, FCGI_VERSION_1, HEADER_LEN, NULL_REQUEST_ID};
use crate::core::sys;
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

/// Bytes filed for requests and not yet taken, per connection.
pub const MAX_BUFFERED: usize = 1 << 20;
/// Bytes read in one reader turn.
const READ_CHUNK: usize = 64 * 1024;
/// A writer that is not the reader re-checks this often whether it should
/// read (the reader may have left with its request).
const WRITE_SLICE_MS: i32 = 20;

pub struct MuxConn {
    sock: OwnedFd,
    write: Mutex<()>,
    /// The reader's buffer (only the one reading takes it: never contended).
    read_buf: Mutex<Vec<u8>>,
    state: Mutex<State>,
    cv: Condvar,
}

#[derive(Default)]
struct State {
    /// A request is reading the socket for everyone.
    reading: bool,
    router: Router,
    /// Nothing more will be read or written: why (EOF, error, bad framing).
    closed: Option<String>,
}

#[derive(Default)]
struct Inbox {
    /// Whole records for this request, in order.
    bytes: Vec<u8>,
    /// The request left before its END_REQUEST: its records are dropped and
    /// its id is reused only once that END_REQUEST arrived.
    abandoned: bool,
}

/// The bookkeeping of a shared connection, without its I/O: which request
/// ids are open, and the records read for each. Used by `MuxConn` (threads)
/// and by the lighttpd plugin's event-loop connection alike.
#[derive(Default)]
pub struct Router {
    /// Bytes read but not yet a whole record.
    pending: Vec<u8>,
    /// Request ids in use on this connection.
    open: HashMap<u16, Inbox>,
    /// Sum of the inboxes' bytes.
    buffered: usize,
}

impl Router {
    /// A free request id (lowest first).
    pub fn open(&mut self) -> Option<u16> {
        let id = (1..=u16::MAX).find(|id| !self.open.contains_key(id))?;
        self.open.insert(id, Inbox::default());
        Some(id)
    }

    /// Bytes filed and not yet taken.
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// No request id is in use (abandoned ones included).
    pub fn is_idle(&self) -> bool {
        self.open.is_empty()
    }

    /// `id` is the only request id in use.
    pub fn only(&self, id: u16) -> bool {
        self.open.len() == 1 && self.open.contains_key(&id)
    }

    /// Everything read so far is whole records and `id`'s END_REQUEST is
    /// among those not yet taken: nothing more is due on the connection
    /// until a request is sent.
    pub fn answered(&self, id: u16) -> bool {
        self.pending.is_empty() && self.open.get(&id).is_some_and(|i| has_end_request(&i.bytes))
    }

    /// Take what was filed for `id`.
    pub fn take(&mut self, id: u16) -> Vec<u8> {
        let data = self.open.get_mut(&id).map(|i| std::mem::take(&mut i.bytes)).unwrap_or_default();
        self.buffered -= data.len();
        data
    }

    /// Request `id` is over for its caller; `finished`: its END_REQUEST was
    /// taken. True when the app must be told to abort it (it is kept,
    /// abandoned, until the app ends it).
    pub fn close(&mut self, id: u16, finished: bool) -> bool {
        let taken = self.take(id);
        let abort = !finished && !has_end_request(&taken) && self.open.contains_key(&id);
        match self.open.get_mut(&id) {
            Some(inbox) if abort => inbox.abandoned = true,
            _ => {
                self.open.remove(&id);
            }
        }
        abort
    }

    /// Add bytes read from the app and file every whole record under its
    /// request id; `filed` is told each id that got records. Err: the
    /// connection is unusable (bad version, a record for an id not open).
    pub fn feed(&mut self, bytes: &[u8], mut filed: impl FnMut(u16)) -> Result<(), String> {
        self.pending.extend_from_slice(bytes);
        let pending = std::mem::take(&mut self.pending);
        let mut at = 0;
        let mut result = Ok(());
        while pending.len() - at >= HEADER_LEN {
            let h = header_at(&pending, at);
            if h.version != FCGI_VERSION_1 {
                result = Err(format!("the app sent a record of FastCGI version {}", h.version));
                break;
            }
            let total = HEADER_LEN + h.content_len as usize + h.padding_len as usize;
            if pending.len() - at < total {
                break;
            }
            if h.request_id != NULL_REQUEST_ID {
                match self.open.get_mut(&h.request_id) {
                    Some(inbox) if inbox.abandoned => {
                        if h.rtype == END_REQUEST {
                            self.open.remove(&h.request_id);
                        }
                    }
                    Some(inbox) => {
                        inbox.bytes.extend_from_slice(&pending[at..at + total]);
                        self.buffered += total;
                        filed(h.request_id);
                    }
                    None => {
                        result = Err(format!("the app sent a record for request id {}, which is not open on this connection", h.request_id));
                        break;
                    }
                }
            }
            // Management records (id 0): nothing is asked on a shared connection.
            at += total;
        }
        self.pending = pending;
        self.pending.drain(..at);
        result
    }
}

/// What `recv` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Recv {
    /// Whole records of this request (any number, in order).
    Data(Vec<u8>),
    /// The connection ended (EOF, I/O error, bad framing): why.
    Closed(String),
    TimedOut,
}

/// Why a send failed.
#[derive(Debug, PartialEq, Eq)]
pub enum SendError {
    TimedOut,
    Closed(String),
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether `bytes` (whole records) hold an END_REQUEST.
fn has_end_request(bytes: &[u8]) -> bool {
    let mut at = 0;
    while bytes.len() - at >= HEADER_LEN {
        let h = header_at(bytes, at);
        if h.rtype == END_REQUEST {
            return true;
        }
        at += HEADER_LEN + h.content_len as usize + h.padding_len as usize;
    }
    false
}

fn header_at(b: &[u8], at: usize) -> RecordHeader {
    RecordHeader::parse(&[b[at], b[at + 1], b[at + 2], b[at + 3], b[at + 4], b[at + 5], b[at + 6], b[at + 7]])
}

impl MuxConn {
    pub fn new(sock: OwnedFd) -> MuxConn {
        MuxConn { sock, write: Mutex::new(()), read_buf: Mutex::new(Vec::new()), state: Mutex::new(State::default()), cv: Condvar::new() }
    }

    /// A free request id on this connection (lowest first), or None when it
    /// is closed.
    pub fn open(&self) -> Option<u16> {
        let mut st = lock(&self.state);
        if st.closed.is_some() {
            return None;
        }
        st.router.open()
    }

    /// Whether nothing more can go over this connection.
    pub fn is_closed(&self) -> bool {
        lock(&self.state).closed.is_some()
    }

    fn fail(&self, why: String) {
        let mut st = lock(&self.state);
        st.closed.get_or_insert(why);
        drop(st);
        self.cv.notify_all();
    }

    /// Become the reader if nobody is and less than `limit` bytes are filed.
    fn try_lead(&self, limit: usize) -> bool {
        let mut st = lock(&self.state);
        if st.reading || st.closed.is_some() || st.router.buffered() >= limit {
            return false;
        }
        st.reading = true;
        true
    }

    /// Give the reader role back without reading.
    fn stop_leading(&self) {
        lock(&self.state).reading = false;
        self.cv.notify_all();
    }

    /// One reader turn (the caller leads): wait up to `wait_ms` for bytes,
    /// file the whole records, hand the role back and wake everyone.
    fn read_turn(&self, wait_ms: i32) {
        let fd = self.sock.as_raw_fd();
        let mut buf = self.read_buf.lock().unwrap_or_else(|e| e.into_inner());
        buf.resize(READ_CHUNK, 0);
        let got = match sys::poll_fd(fd, libc::POLLIN, wait_ms) {
            Ok(0) => Ok(None),
            Ok(_) => match sys::recv_nonblocking(fd, &mut buf) {
                Ok(0) => Err("the app closed the connection".to_string()),
                Ok(n) => Ok(Some(n)),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => Ok(None),
                Err(e) => Err(format!("reading from the app failed: {e}")),
            },
            Err(e) => Err(format!("poll on the app socket failed: {e}")),
        };
        let mut st = lock(&self.state);
        st.reading = false;
        match got {
            Ok(Some(n)) => {
                if let Err(why) = st.router.feed(&buf[..n], |_| {}) {
                    st.closed.get_or_insert(why);
                }
            }
            Ok(None) => {}
            Err(why) => {
                st.closed.get_or_insert(why);
            }
        }
        drop(st);
        self.cv.notify_all();
    }

    /// Send `bytes` (whole records) before `deadline`. A failure closes the
    /// connection for everyone: a record may have gone out in part.
    ///
    /// While the socket is full the sender reads for everyone, up to twice
    /// `MAX_BUFFERED` (an app may answer before it reads on); past that the
    /// app is not reading and the send times out. Callers streaming a body
    /// send it a record at a time and take their own answer in between.
    pub fn send(&self, bytes: &[u8], deadline: Instant) -> Result<(), SendError> {
        let _w = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let fd = self.sock.as_raw_fd();
        let mut pos = 0;
        loop {
            if let Some(why) = lock(&self.state).closed.clone() {
                return Err(SendError::Closed(why));
            }
            match sys::send_nonblocking(fd, &bytes[pos..]) {
                Ok(n) => pos += n,
                Err(e) => {
                    let why = format!("sending to the app failed: {e}");
                    self.fail(why.clone());
                    return Err(SendError::Closed(why));
                }
            }
            if pos == bytes.len() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.fail("a send to the app timed out".into());
                return Err(SendError::TimedOut);
            }
            let leading = self.try_lead(2 * MAX_BUFFERED);
            let wait = sys::ms_until(deadline).min(if leading { i32::MAX } else { WRITE_SLICE_MS });
            let events = libc::POLLOUT | if leading { libc::POLLIN } else { 0 };
            let rev = sys::poll_fd(fd, events, wait).unwrap_or(libc::POLLERR);
            if leading {
                if rev & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                    // Reads what is there (poll said so) without waiting.
                    self.read_turn(0);
                } else {
                    self.stop_leading();
                }
            }
        }
    }

    /// Wait for records of request `id` until `deadline` (a deadline already
    /// past takes what is filed without reading).
    pub fn recv(&self, id: u16, deadline: Instant) -> Recv {
        loop {
            let mut st = lock(&self.state);
            let was_full = st.router.buffered() >= MAX_BUFFERED;
            let data = st.router.take(id);
            if !data.is_empty() {
                drop(st);
                if was_full {
                    // Room again: someone may read now.
                    self.cv.notify_all();
                }
                return Recv::Data(data);
            }
            if let Some(why) = &st.closed {
                return Recv::Closed(why.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return Recv::TimedOut;
            }
            if !st.reading && st.router.buffered() < MAX_BUFFERED {
                st.reading = true;
                drop(st);
                self.read_turn(sys::ms_until(deadline));
                continue;
            }
            let (_st, _) = self.cv.wait_timeout(st, deadline - now).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Request `id` is over for us. `finished`: its END_REQUEST was taken.
    /// Otherwise the app is told to abort it (FCGI_ABORT_REQUEST) and its id
    /// stays in use until the app ends it.
    pub fn close_request(&self, id: u16, finished: bool) {
        let mut st = lock(&self.state);
        let abort = st.router.close(id, finished) && st.closed.is_none();
        drop(st);
        self.cv.notify_all();
        if abort {
            let mut rec = Vec::with_capacity(HEADER_LEN);
            record::write_abort_request(&mut rec, id);
            let _ = self.send(&rec, Instant::now() + Duration::from_secs(1));
        }
    }
}

/// Where a worker's shared connection is found: (pool slot, slot generation,
/// worker index, worker epoch), so a new worker never gets an old one's.
pub type Key = (u32, u32, u32, u32);

static SHARED: Mutex<Option<HashMap<Key, Weak<MuxConn>>>> = Mutex::new(None);

/// This process's shared connection to a worker, opened with `connect` when
/// there is none (or it closed). It lives as long as a request holds it.
pub fn shared(key: Key, connect: impl FnOnce() -> io::Result<OwnedFd>) -> io::Result<Arc<MuxConn>> {
    let mut map = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    let map = map.get_or_insert_with(HashMap::new);
    if let Some(conn) = map.get(&key).and_then(Weak::upgrade) {
        if !conn.is_closed() {
            return Ok(conn);
        }
    }
    map.retain(|_, w| w.strong_count() > 0);
    let conn = Arc::new(MuxConn::new(connect()?));
    map.insert(key, Arc::downgrade(&conn));
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    fn pair() -> (Arc<MuxConn>, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        (Arc::new(MuxConn::new(OwnedFd::from(a))), b)
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    // Hand-written records: STDOUT "hi" for id 1, STDOUT "yo" for id 2,
    // END_REQUEST for id 2, END_REQUEST for id 1.
    const OUT1: [u8; 16] = [1, 6, 0, 1, 0, 2, 6, 0, b'h', b'i', 0, 0, 0, 0, 0, 0];
    const OUT2: [u8; 16] = [1, 6, 0, 2, 0, 2, 6, 0, b'y', b'o', 0, 0, 0, 0, 0, 0];
    const END2: [u8; 16] = [1, 3, 0, 2, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    const END1: [u8; 16] = [1, 3, 0, 1, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

    #[test]
    fn interleaved_records_reach_their_requests() {
        let (conn, mut app) = pair();
        assert_eq!(conn.open(), Some(1));
        assert_eq!(conn.open(), Some(2));
        // One write holding both requests' records, the second record split
        // across two reads.
        let mut bytes = OUT1.to_vec();
        bytes.extend_from_slice(&OUT2);
        bytes.extend_from_slice(&END2);
        bytes.extend_from_slice(&END1[..5]);
        app.write_all(&bytes).unwrap();
        let mut two = Vec::new();
        two.extend_from_slice(&OUT2);
        two.extend_from_slice(&END2);
        assert_eq!(conn.recv(2, soon()), Recv::Data(two));
        conn.close_request(2, true);
        assert_eq!(conn.recv(1, soon()), Recv::Data(OUT1.to_vec()));
        app.write_all(&END1[5..]).unwrap();
        assert_eq!(conn.recv(1, soon()), Recv::Data(END1.to_vec()));
        conn.close_request(1, true);
        // Both ids are free again.
        assert_eq!(conn.open(), Some(1));
    }

    #[test]
    fn answered_once_the_end_request_is_whole_and_nothing_is_partial() {
        let mut r = Router::default();
        let id = r.open().unwrap();
        assert!(!r.answered(id), "nothing read yet");
        r.feed(&OUT1, |_| {}).unwrap();
        assert!(!r.answered(id), "output, but no END_REQUEST");
        r.feed(&END1[..9], |_| {}).unwrap();
        assert!(!r.answered(id), "END_REQUEST only begun");
        r.feed(&END1[9..], |_| {}).unwrap();
        assert!(r.answered(id));
        // Taken by its request: nothing filed holds it any more.
        assert!(!r.take(id).is_empty());
        assert!(!r.answered(id));
        assert!(!r.answered(2), "an id not open is never answered");
    }

    #[test]
    fn a_waiting_request_gets_records_another_one_read() {
        let (conn, mut app) = pair();
        let (a, b) = (conn.open().unwrap(), conn.open().unwrap());
        let c2 = conn.clone();
        let waiter = std::thread::spawn(move || c2.recv(b, soon()));
        std::thread::sleep(Duration::from_millis(50));
        let mut bytes = OUT1.to_vec();
        bytes.extend_from_slice(&OUT2);
        app.write_all(&bytes).unwrap();
        // Whoever reads, each gets its own record.
        assert_eq!(conn.recv(a, soon()), Recv::Data(OUT1.to_vec()));
        assert_eq!(waiter.join().unwrap(), Recv::Data(OUT2.to_vec()));
    }

    #[test]
    fn a_record_for_an_id_not_open_closes_the_connection() {
        let (conn, mut app) = pair();
        let id = conn.open().unwrap();
        app.write_all(&OUT2).unwrap();
        assert!(matches!(conn.recv(id, soon()), Recv::Closed(why) if why.contains("request id 2")));
        assert_eq!(conn.open(), None);
    }

    #[test]
    fn a_bad_version_closes_the_connection() {
        let (conn, mut app) = pair();
        let id = conn.open().unwrap();
        let mut bad = OUT1;
        bad[0] = 9;
        app.write_all(&bad).unwrap();
        assert!(matches!(conn.recv(id, soon()), Recv::Closed(why) if why.contains("version 9")));
    }

    #[test]
    fn eof_after_data_gives_the_data_first() {
        let (conn, mut app) = pair();
        let id = conn.open().unwrap();
        app.write_all(&OUT1).unwrap();
        drop(app);
        assert_eq!(conn.recv(id, soon()), Recv::Data(OUT1.to_vec()));
        assert!(matches!(conn.recv(id, soon()), Recv::Closed(_)));
    }

    #[test]
    fn management_records_are_skipped() {
        let (conn, mut app) = pair();
        let id = conn.open().unwrap();
        // GET_VALUES_RESULT (type 10) for id 0 with empty content, then data.
        app.write_all(&[1, 10, 0, 0, 0, 0, 0, 0]).unwrap();
        app.write_all(&OUT1).unwrap();
        assert_eq!(conn.recv(id, soon()), Recv::Data(OUT1.to_vec()));
    }

    #[test]
    fn times_out_without_data() {
        let (conn, _app) = pair();
        let id = conn.open().unwrap();
        assert_eq!(conn.recv(id, Instant::now() + Duration::from_millis(30)), Recv::TimedOut);
    }

    #[test]
    fn an_abandoned_request_is_aborted_and_its_id_kept_until_it_ends() {
        let (conn, mut app) = pair();
        let id = conn.open().unwrap();
        assert_eq!(id, 1);
        conn.close_request(id, false);
        // The app is told: FCGI_ABORT_REQUEST (type 2) for id 1, no content.
        let mut rec = [0u8; 8];
        app.read_exact(&mut rec).unwrap();
        assert_eq!(rec, [1, 2, 0, 1, 0, 0, 0, 0]);
        // The id is not reused while the app may still answer for it.
        assert_eq!(conn.open(), Some(2));
        // Its late records are dropped; its END_REQUEST frees the id.
        let mut late = OUT1.to_vec();
        late.extend_from_slice(&END1);
        late.extend_from_slice(&OUT2);
        app.write_all(&late).unwrap();
        assert_eq!(conn.recv(2, soon()), Recv::Data(OUT2.to_vec()));
        assert_eq!(conn.open(), Some(1));
    }

    #[test]
    fn send_writes_whole_records_while_reading_for_the_others() {
        // The app writes a large answer and only then reads: the sender must
        // read meanwhile (it leads), or both sides would block.
        let (conn, mut app) = pair();
        let id = conn.open().unwrap();
        let answer_len = 512 * 1024;
        let mut big = Vec::new();
        record::write_stream(&mut big, record::STDIN, id, &vec![b'y'; 2 * 1024 * 1024]);
        let big_len = big.len();
        let writer = std::thread::spawn(move || {
            let content = vec![b'x'; 65528];
            let mut out = Vec::new();
            let mut sent = 0;
            while sent < answer_len {
                out.clear();
                record::write_stream(&mut out, record::STDOUT, 1, &content);
                app.write_all(&out).unwrap();
                sent += content.len();
            }
            let mut got = vec![0u8; big_len];
            app.read_exact(&mut got).unwrap();
            got
        });
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(conn.send(&big, soon()), Ok(()));
        let got = writer.join().unwrap();
        assert_eq!(got, big);
        let mut filed = 0;
        while let Recv::Data(d) = conn.recv(id, Instant::now() + Duration::from_millis(200)) {
            filed += d.len();
        }
        assert!(filed >= answer_len, "{filed}");
    }

    #[test]
    fn shared_gives_one_connection_per_key_while_held() {
        let key = (7, 1, 0, 3);
        let (a, _pa) = UnixStream::pair().unwrap();
        let first = shared(key, || Ok(OwnedFd::from(a))).unwrap();
        let again = shared(key, || panic!("must not connect again")).unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        drop((first, again));
        let (b, _pb) = UnixStream::pair().unwrap();
        let fresh = shared(key, || Ok(OwnedFd::from(b))).unwrap();
        assert_eq!(fresh.open(), Some(1));
    }
}
