//! lighttpd: this process's one connection to a worker — shared by the
//! requests running on it when the app multiplexes, kept from one request to
//! the next when it does not. The event-loop twin of `core::mux_conn` (same
//! `Router`, no threads, nothing blocks). What is read is filed under its
//! request id and the requests that got records are scheduled; what requests
//! send goes out from one queue of whole records, so records never
//! interleave.
//!
//! When its last request leaves, the connection stays open for the worker's
//! next request if that request ended cleanly and left nothing behind (see
//! `leave`): the worker is PARKED in the scoreboard with this process's
//! doorbell (`core::dispatch`), and this process claims it again with
//! `take_parked`. Otherwise it closes (an abandoned request is aborted with
//! FCGI_ABORT_REQUEST first). lighttpd is one process, so a worker waiting
//! on a kept connection is only ever wanted by this process (exchange/
//! keeps connections only then). An idle kept connection that the app
//! closes, or that receives anything, is closed and forgotten; one unused
//! for `parking::KEEP_IDLE` is closed and its worker given back (`close_idle`).

use super::fdevent::{Events, Watch};
use super::req::Con;
use super::server::Server;
use crate::core::fastcgi::record;
use crate::core::mux_conn::{Key, Router};
use crate::core::parking::KEEP_IDLE;
use crate::core::request::PoolInfo;
use crate::core::scoreboard::{Claim, PoolSlot, Scoreboard};
use crate::core::sys;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::{Rc, Weak};
use std::time::Instant;

/// Reads per event: other connections get their turn in between.
const READS_PER_EVENT: usize = 16;
const READ_CHUNK: usize = 65536;

pub struct SharedConn {
    fd: RawFd,
    /// Its registration with lighttpd's event loop, until `shut`.
    watch: Option<Watch>,
    key: Key,
    router: Router,
    /// Whole records waiting to be sent, from every request on it.
    out: Vec<u8>,
    out_pos: usize,
    /// The lighttpd connection of each request on it, to schedule it.
    members: HashMap<u16, Con>,
    /// Nothing more will come or go (EOF, I/O error, bad framing): why.
    closed: Option<String>,
    /// Where reads land (kept: a fresh 64 KiB per event would show).
    read_buf: Vec<u8>,
    /// Kept with no request on it: the worker's word as parked, and since when.
    parked: Option<(u64, Instant)>,
    /// Bytes sent since its current request joined it.
    sent: usize,
    /// The end of the last answer, filed but left in the socket (peeked):
    /// read for real once the next request went out, or before closing —
    /// why, in `core::parking::KeptConn` (Apache's kept connections).
    deferred: usize,
}

pub type Shared = Rc<RefCell<SharedConn>>;

thread_local! {
    static SHARED: RefCell<HashMap<Key, Shared>> = RefCell::new(HashMap::new());
    /// (pid, doorbell) of this process, claimed on first use.
    static DOORBELL: Cell<Option<(u32, u32)>> = const { Cell::new(None) };
}

/// This process's doorbell (the holder its parked workers name), claimed in
/// the scoreboard the first time this process keeps a connection.
pub fn holder(sb: &Scoreboard) -> Option<u32> {
    let pid = sys::getpid() as u32;
    DOORBELL.with(|d| match d.get() {
        Some((p, n)) if p == pid => Some(n),
        _ => {
            let n = sb.claim_doorbell(pid)?;
            d.set(Some((pid, n)));
            Some(n)
        }
    })
}

/// Claim again a worker of `slot` whose connection this process kept.
/// Kept connections whose worker is no longer as it was parked (stopped by
/// the supervisor) are closed on the way.
pub fn take_parked<'a>(slot: &'a PoolSlot, info: &PoolInfo) -> Option<Claim<'a>> {
    let mut stale: Vec<(Key, Shared)> = Vec::new();
    let claim = SHARED.with(|m| {
        for (key, shared) in m.borrow().iter() {
            if key.0 != info.slot || key.1 != info.slot_generation {
                continue;
            }
            let mut s = shared.borrow_mut();
            let Some((word, _)) = s.parked else { continue };
            if let Some(c) = slot.take_parked(key.2, word) {
                s.parked = None;
                s.sent = 0;
                return Some(c);
            }
            if !slot.workers.get(key.2 as usize).is_some_and(|w| w.is_word(word)) {
                stale.push((*key, shared.clone()));
            }
        }
        None
    });
    for (key, shared) in stale {
        shared.borrow_mut().shut();
        forget(key, &shared);
    }
    claim
}

/// Close this process's connection to the worker `key` names, if it is kept
/// with no request on it (its worker was claimed again for a request that
/// goes out on a fresh connection).
pub fn close(key: Key) {
    let Some(shared) = SHARED.with(|m| m.borrow().get(&key).cloned()) else { return };
    if !shared.borrow().members.is_empty() {
        return;
    }
    shared.borrow_mut().shut();
    forget(key, &shared);
}

/// Close kept connections unused for `KEEP_IDLE` and give their workers
/// back (once a second, from the timeout check).
pub fn close_idle(sb: &Scoreboard) {
    let now = Instant::now();
    let idle: Vec<(Key, Shared)> = SHARED.with(|m| {
        m.borrow().iter().filter(|(_, s)| s.borrow().parked.is_some_and(|(_, since)| now.duration_since(since) >= KEEP_IDLE)).map(|(k, s)| (*k, s.clone())).collect()
    });
    for (key, shared) in idle {
        unpark(sb, key, &shared);
        forget(key, &shared);
    }
}

/// Close a kept connection, then give its worker back if it is still as parked.
fn unpark(sb: &Scoreboard, key: Key, shared: &Shared) {
    let mut s = shared.borrow_mut();
    let parked = s.parked.take();
    s.shut();
    if let (Some((word, _)), Some(slot)) = (parked, sb.slot(key.0).filter(|p| p.generation.load(std::sync::atomic::Ordering::Acquire) == key.1)) {
        slot.unpark(key.2, word);
    }
}

/// Whether request `id` is alone on the connection and nothing is pending:
/// its worker may be parked with the connection when it leaves.
pub fn may_keep(shared: &Shared, id: u16) -> bool {
    let s = shared.borrow();
    s.closed.is_none() && s.pending_out() == 0 && s.members.len() == 1 && s.members.contains_key(&id) && s.router.only(id)
}

/// A request id on this process's connection to the worker `key` names,
/// opened with `connect` when there is none (or it closed).
///
/// `con` is the request's connection (it leaves before it ends: `leave`).
pub fn join(key: Key, srv: Server, con: Con, connect: impl FnOnce() -> io::Result<OwnedFd>) -> io::Result<(Shared, u16)> {
    // (A kept connection still parked is not this request's: its worker was
    // claimed another way, so it was given back meanwhile.)
    let existing = SHARED.with(|m| m.borrow().get(&key).filter(|s| s.borrow().closed.is_none() && s.borrow().parked.is_none()).cloned());
    let shared = match existing {
        Some(s) => s,
        None => {
            let sock = connect()?;
            let shared = Rc::new(RefCell::new(SharedConn {
                fd: sock.as_raw_fd(),
                watch: None,
                key,
                router: Router::default(),
                out: Vec::new(),
                out_pos: 0,
                members: HashMap::new(),
                closed: None,
                read_buf: Vec::new(),
                parked: None,
                sent: 0,
                deferred: 0,
            }));
            // The registry keeps the connection alive; its events reach it
            // while it is there.
            let weak = Rc::downgrade(&shared);
            let watch = Watch::register(srv, sock, move |ev| on_event(&weak, ev));
            watch.want(false);
            shared.borrow_mut().watch = Some(watch);
            SHARED.with(|m| m.borrow_mut().insert(key, shared.clone()));
            shared
        }
    };
    let id = {
        let mut s = shared.borrow_mut();
        let id = s.router.open().ok_or_else(|| io::Error::other("no request id free on the shared connection"))?;
        s.members.insert(id, con);
        id
    };
    Ok((shared, id))
}

/// Request `id` leaves; `finished`: it took its END_REQUEST. The last one
/// out closes the connection unless `parked` (the worker was parked with
/// it: its word) and nothing is left on it: no request id open (an
/// abandoned one waits for its END_REQUEST), nothing unsent (`may_keep`).
pub fn leave(shared: &Shared, id: u16, finished: bool, parked: Option<u64>) {
    let mut s = shared.borrow_mut();
    s.members.remove(&id);
    if s.router.close(id, finished) && s.closed.is_none() && !s.members.is_empty() {
        let mut rec = Vec::with_capacity(8);
        record::write_abort_request(&mut rec, id);
        s.queue(&rec);
    }
    let kept = parked.is_some() && s.closed.is_none() && s.router.is_idle() && s.pending_out() == 0;
    if kept {
        s.parked = parked.map(|w| (w, Instant::now()));
    }
    if s.members.is_empty() && !kept {
        s.shut();
        let key = s.key;
        drop(s);
        forget(key, shared);
    }
}

/// Take the connection out of the registry (if it is still the one there).
fn forget(key: Key, shared: &Shared) {
    SHARED.with(|m| {
        let mut m = m.borrow_mut();
        if m.get(&key).is_some_and(|cur| Rc::ptr_eq(cur, shared)) {
            m.remove(&key);
        }
    });
}

/// Close every connection (lighttpd stops or reloads: its event handler is
/// about to go, and with it every fd registered on it) and give the parked
/// workers back. Only kept, idle connections are left by then: requests end
/// before the server does.
pub fn close_all(sb: &Scoreboard) {
    let all: Vec<(Key, Shared)> = SHARED.with(|m| m.borrow_mut().drain().collect());
    for (key, shared) in all {
        let mut s = shared.borrow_mut();
        let parked = s.parked.take();
        let deferred = std::mem::take(&mut s.deferred);
        if let Some(w) = s.watch.take() {
            let _ = sys::discard(w.fd(), deferred);
            w.close_now();
        }
        s.closed.get_or_insert_with(|| "server stopping".into());
        if let (Some((word, _)), Some(slot)) = (parked, sb.slot(key.0).filter(|p| p.generation.load(std::sync::atomic::Ordering::Acquire) == key.1)) {
            slot.unpark(key.2, word);
        }
    }
}

impl SharedConn {
    /// Queue whole records and send what the socket takes now.
    pub fn queue(&mut self, records: &[u8]) {
        if self.closed.is_some() {
            return;
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        }
        self.out.extend_from_slice(records);
        self.flush();
    }

    /// Bytes queued and not yet sent.
    pub fn pending_out(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// What was filed for request `id`.
    pub fn take(&mut self, id: u16) -> Vec<u8> {
        self.router.take(id)
    }

    pub fn closed(&self) -> Option<&str> {
        self.closed.as_deref()
    }

    /// It closed before anything of its current request was sent: the app
    /// had hung up on it (nothing of that request reached the app).
    pub fn unsent(&self) -> bool {
        self.closed.is_some() && self.sent == 0
    }

    fn close_with(&mut self, why: String) {
        self.closed.get_or_insert(why);
        self.schedule_members();
        if self.members.is_empty() {
            // A kept connection the app closed (or sent something on): the
            // caller of the event handler takes it out of the registry.
            self.shut();
        }
    }

    fn schedule_members(&self) {
        for con in self.members.values() {
            con.schedule();
        }
    }

    fn set_events(&self, out: bool) {
        if let Some(w) = &self.watch {
            if self.deferred > 0 {
                // Unread bytes keep it readable: only a hang-up is news.
                w.want_output_only(out);
            } else {
                w.want(out);
            }
        }
    }

    /// Read the deferred end of the last answer (its records were filed).
    fn consume_deferred(&mut self) {
        let n = std::mem::take(&mut self.deferred);
        if n == 0 {
            return;
        }
        match sys::discard(self.fd, n) {
            Ok(true) => {}
            Ok(false) => self.close_with("the app closed the connection".into()),
            Err(e) => self.close_with(format!("reading from the app failed: {e}")),
        }
    }

    /// The lone request on it, if it is alone and has sent everything: its
    /// answer's end may be left in the socket (`deferred`).
    fn lone_request(&self) -> Option<u16> {
        let (&id, _) = self.members.iter().next().filter(|_| self.members.len() == 1)?;
        (self.deferred == 0 && self.pending_out() == 0 && self.router.only(id)).then_some(id)
    }

    fn flush(&mut self) {
        let from = self.out_pos;
        while self.out_pos < self.out.len() {
            match sys::send_nonblocking(self.fd, &self.out[self.out_pos..]) {
                Ok(0) => break,
                Ok(n) => {
                    self.out_pos += n;
                    self.sent += n;
                }
                Err(e) => {
                    self.close_with(format!("sending to the app failed: {e}"));
                    return;
                }
            }
        }
        if self.out_pos > from {
            // The next request is on its way: the worker is awake for it.
            self.consume_deferred();
        }
        self.set_events(self.out_pos < self.out.len());
    }

    fn read(&mut self) {
        // A hang-up while the end of the last answer waits in the socket.
        self.consume_deferred();
        let mut buf = std::mem::take(&mut self.read_buf);
        buf.resize(READ_CHUNK, 0);
        let mut filed: Vec<u16> = Vec::new();
        for _ in 0..READS_PER_EVENT {
            if self.closed.is_some() {
                break;
            }
            let lone = self.lone_request();
            let got = if lone.is_some() { sys::peek_nonblocking(self.fd, &mut buf) } else { sys::recv_nonblocking(self.fd, &mut buf) };
            match got {
                Ok(0) => {
                    self.close_with("the app closed the connection".into());
                    break;
                }
                Ok(n) => {
                    if let Err(why) = self.router.feed(&buf[..n], |id| filed.push(id)) {
                        self.close_with(why);
                        break;
                    }
                    if let Some(id) = lone {
                        if self.router.answered(id) {
                            // All of its answer: leave the bytes where they are.
                            self.deferred = n;
                            self.set_events(false);
                            break;
                        }
                        self.deferred = n;
                        self.consume_deferred();
                    }
                    if n < buf.len() {
                        break;
                    }
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => break,
                Err(e) => {
                    self.close_with(format!("reading from the app failed: {e}"));
                    break;
                }
            }
        }
        self.read_buf = buf;
        filed.dedup();
        for id in filed {
            if let Some(con) = self.members.get(&id) {
                con.schedule();
            }
        }
    }

    /// Unregister and close the socket (lighttpd closes it). What is unread
    /// is read first: closing over it would reset the worker's end.
    fn shut(&mut self) {
        let Some(w) = self.watch.take() else { return };
        // (The fd is open until the watch closes it.)
        let _ = sys::discard(self.fd, std::mem::take(&mut self.deferred));
        w.close();
        self.closed.get_or_insert_with(|| "closed".into());
    }
}

/// Its events: send what is queued, file what arrived.
fn on_event(weak: &Weak<RefCell<SharedConn>>, ev: Events) {
    let Some(cell) = weak.upgrade() else { return };
    let Ok(mut s) = cell.try_borrow_mut() else { return };
    if ev.writable() {
        s.flush();
        if s.pending_out() == 0 {
            // Room again: requests with more body to send go on.
            s.schedule_members();
        }
    }
    if ev.readable() {
        s.read();
    }
    if s.closed.is_some() && s.members.is_empty() {
        // An idle kept connection that ended: out of the registry.
        let key = s.key;
        drop(s);
        let ours = SHARED.with(|m| {
            let mut m = m.borrow_mut();
            if m.get(&key).is_some_and(|cur| Rc::ptr_eq(cur, &cell)) {
                m.remove(&key)
            } else {
                None
            }
        });
        drop(ours);
    }
}
