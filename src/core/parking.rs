//! The connections one server process keeps to workers between requests,
//! where several processes share the workers (Apache's children; each may
//! run many request threads). The scoreboard says who holds what (`PARKED`,
//! `WorkerSlot::holder`): a request of this process claims its own parked
//! worker again without a connect; a request of another process that finds
//! no idle worker takes a parked one over and rings this process's doorbell.
//! A keeper thread per process answers the ring by closing the connection
//! the worker is reading, so the worker accepts the other process's at once,
//! and closes what stayed unused for `KEEP_IDLE`. A holder that died left
//! nothing open: a taken-over worker then waits for a connection already.
//!
//! Only while nobody waits for the pool: a waiting request is handed a freed
//! worker by a futex wake-up, and a worker that still reads a kept
//! connection would idle through that hand-over, where one that closed its
//! connection finds the next request in its backlog at once. So under load
//! requests are sent without FCGI_KEEP_CONN (`dispatch::keepable`), a kept
//! request that ends while others wait releases its worker to them, and
//! waiting requests queue in the workers' backlogs (pipelining).

use crate::core::request::PoolInfo;
use crate::core::scoreboard::{Claim, Ended, PoolSlot, Scoreboard};
use crate::core::sys;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// A parked connection nobody of this process used for this long is
/// closed: the worker is then idle for everyone without a hand-over.
pub const KEEP_IDLE: Duration = Duration::from_secs(2);

/// A connection to a worker, with what is still unread of the last answer
/// on it. The end of an answer on a connection that is kept is only peeked
/// at (MSG_PEEK) and read once the next request went out: reading it at once
/// would wake the worker, which is asleep in read(2) for the next request by
/// then, for nothing (the kernel wakes a sender whose data was consumed).
/// Dropping it reads what is unread first: closing a Unix socket over unread
/// bytes resets the worker's end instead of giving it a plain EOF.
pub struct KeptConn {
    fd: OwnedFd,
    unread: usize,
}

impl KeptConn {
    /// A connection with nothing left unread (a fresh one).
    pub fn new(fd: OwnedFd) -> KeptConn {
        KeptConn { fd, unread: 0 }
    }

    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Bytes of the last answer still unread on it.
    pub fn unread(&self) -> usize {
        self.unread
    }

    /// The last `n` bytes read were only peeked at: read them later.
    pub fn leave_unread(&mut self, n: usize) {
        self.unread = n;
    }

    /// The next request went out: read the last answer's end now (the
    /// worker is awake for the request). Ok(false): the app closed the
    /// connection meanwhile.
    pub fn request_sent(&mut self) -> io::Result<bool> {
        sys::discard(self.fd.as_raw_fd(), std::mem::take(&mut self.unread))
    }
}

impl Drop for KeptConn {
    fn drop(&mut self) {
        let _ = self.request_sent();
    }
}

/// A connection kept to worker `index` of pool slot `slot`.
struct Kept {
    slot: u32,
    slot_generation: u32,
    index: u32,
    /// The worker's word as parked: unchanged while it is ours.
    word: u64,
    conn: KeptConn,
    since: Instant,
}

struct Keeper {
    sb: Scoreboard,
    pid: u32,
    holder: u32,
    kept: Mutex<Vec<Kept>>,
    stopped: AtomicBool,
    /// The keeper sleeps without a deadline (nothing was kept): the next
    /// connection kept must wake it (set and cleared under `kept`'s lock).
    dozing: AtomicBool,
}

static KEEPER: OnceLock<Keeper> = OnceLock::new();

fn lock(m: &Mutex<Vec<Kept>>) -> MutexGuard<'_, Vec<Kept>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Start keeping connections in this process: claim a doorbell and start
/// the keeper thread (all signals blocked in it: they stay the server's).
/// Call once, in each server child (never in a parent that forks children:
/// a thread does not survive fork). `log` reports what the thread runs into.
pub fn start(sb: Scoreboard, log: Box<dyn Fn(&str) + Send + Sync>) -> std::io::Result<u32> {
    let pid = sys::getpid() as u32;
    if KEEPER.get().is_some() {
        return Err(std::io::Error::other("already keeping connections"));
    }
    let holder = sb.claim_doorbell(pid).ok_or_else(|| std::io::Error::other("no doorbell free in the scoreboard"))?;
    if KEEPER.set(Keeper { sb, pid, holder, kept: Mutex::new(Vec::new()), stopped: AtomicBool::new(false), dozing: AtomicBool::new(false) }).is_err() {
        return Err(std::io::Error::other("already keeping connections"));
    }
    let spawned = sys::with_signals_blocked(|| std::thread::Builder::new().name("sufcgi-keeper".into()).spawn(move || keeper_thread(log)));
    if let Err(e) = spawned {
        stop();
        return Err(e);
    }
    Ok(holder)
}

/// This process's doorbell, while it keeps connections.
pub fn holder() -> Option<u32> {
    KEEPER.get().filter(|k| !k.stopped.load(Ordering::Acquire)).map(|k| k.holder)
}

/// Claim again a worker of `slot` this process parked, with its connection.
pub fn take<'a>(slot: &'a PoolSlot, info: &PoolInfo) -> Option<(Claim<'a>, KeptConn)> {
    let k = KEEPER.get()?;
    let mut kept = lock(&k.kept);
    let mut i = 0;
    while i < kept.len() {
        let e = &kept[i];
        if e.slot != info.slot || e.slot_generation != info.slot_generation {
            i += 1;
            continue;
        }
        if let Some(c) = slot.take_parked(e.index, e.word) {
            let e = kept.swap_remove(i);
            return Some((c, e.conn));
        }
        if !slot.workers.get(e.index as usize).is_some_and(|w| w.is_word(e.word)) {
            // Taken over, or stopped by the supervisor: ours no more.
            drop(kept.swap_remove(i));
            continue;
        }
        i += 1;
    }
    None
}

/// A kept request ended cleanly on `fd`: keep the connection for this
/// process's next request to the worker, parked; or, when requests wait for
/// the pool, close it and release the worker to them. Returns true when the
/// supervisor should look at the pool (a worker retired).
pub fn park(slot: &PoolSlot, info: &PoolInfo, claim: Claim<'_>, conn: KeptConn) -> bool {
    let k = match KEEPER.get() {
        Some(k) if !k.stopped.load(Ordering::Acquire) && slot.waiting.load(Ordering::Acquire) == 0 => k,
        _ => {
            drop(conn);
            return claim.release();
        }
    };
    let index = claim.index;
    let mut kept = lock(&k.kept);
    match claim.park(k.holder) {
        Ended::Parked(word) => {
            kept.push(Kept { slot: info.slot, slot_generation: info.slot_generation, index, word, conn, since: Instant::now() });
            let wake_keeper = k.dozing.swap(false, Ordering::AcqRel);
            drop(kept);
            if wake_keeper {
                // Its first connection to watch: it must close it when idle.
                k.sb.ring(k.holder);
            }
            false
        }
        Ended::Retired => true,
        Ended::Free | Ended::Lost => false,
    }
}

/// Give every parked worker back and stop keeping (the process exits).
pub fn stop() {
    let Some(k) = KEEPER.get() else { return };
    k.stopped.store(true, Ordering::Release);
    let all: Vec<Kept> = lock(&k.kept).drain(..).collect();
    for e in all {
        let (slot, index, word) = (e.slot, e.index, e.word);
        drop(e.conn);
        if let Some(s) = k.sb.slot(slot) {
            s.unpark(index, word);
        }
    }
    k.sb.release_doorbell(k.holder, k.pid);
}

fn keeper_thread(log: Box<dyn Fn(&str) + Send + Sync>) {
    let Some(k) = KEEPER.get() else { return };
    let Some(bell) = k.sb.doorbell(k.holder) else { return };
    while !k.stopped.load(Ordering::Acquire) {
        let seen = bell.ring.load(Ordering::SeqCst);
        let next = crate::core::guard::guard("the keeper thread", None, |m| log(m), || Some(sweep(k)));
        let Some(next) = next else {
            // A bug in the sweep: stop keeping rather than strand a worker.
            stop();
            return;
        };
        let wait = next.map_or(Duration::from_secs(60), |t| t.saturating_duration_since(Instant::now()));
        sys::futex_wait(&bell.ring, seen, wait.max(Duration::from_millis(1)));
    }
}

/// Close what is ours no more (taken over: its worker waits for the other
/// process's connection) and what stayed unused for KEEP_IDLE; the soonest
/// time the rest will have.
fn sweep(k: &Keeper) -> Option<Instant> {
    let now = Instant::now();
    let mut next: Option<Instant> = None;
    let mut kept = lock(&k.kept);
    k.dozing.store(false, Ordering::Release);
    let mut i = 0;
    while i < kept.len() {
        let e = &kept[i];
        let slot = k.sb.slot(e.slot).filter(|s| s.generation.load(Ordering::Acquire) == e.slot_generation);
        let ours = slot.is_some_and(|s| s.workers.get(e.index as usize).is_some_and(|w| w.is_word(e.word)));
        let idle_until = e.since + KEEP_IDLE;
        if ours && now < idle_until {
            next = Some(next.map_or(idle_until, |n| n.min(idle_until)));
            i += 1;
            continue;
        }
        let e = kept.swap_remove(i);
        let (index, word) = (e.index, e.word);
        // Closed first: the worker is back in accept() when anyone claims it.
        drop(e.conn);
        if let (true, Some(s)) = (ours, slot) {
            s.unpark(index, word);
        }
    }
    // Nothing left to close when idle: the next connection kept wakes it.
    k.dozing.store(next.is_none(), Ordering::Release);
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::limits::Limits;
    use crate::core::scoreboard::{pool_state, worker_state, Via};
    use std::os::fd::AsRawFd;
    use std::path::PathBuf;

    fn eof_within(fd: &OwnedFd, secs: u64) -> bool {
        let end = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < end {
            let mut b = [0u8; 8];
            // SAFETY: reading into a local buffer from our own socket.
            let n = unsafe { libc::recv(fd.as_raw_fd(), b.as_mut_ptr() as *mut _, b.len(), libc::MSG_DONTWAIT) };
            if n == 0 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    /// What the app reads on its end once our end is gone, after we
    /// peeked at its answer: through a `KeptConn` (`kept`) or a plain close.
    fn app_reads_after_close(kept: bool) -> io::Result<usize> {
        let (ours, app) = sys::socketpair().unwrap();
        sys::send_all(app.as_raw_fd(), b"answer").unwrap();
        let mut b = [0u8; 16];
        assert_eq!(sys::peek_nonblocking(ours.as_raw_fd(), &mut b).unwrap(), 6);
        if kept {
            let mut conn = KeptConn::new(ours);
            conn.leave_unread(6);
            drop(conn);
        } else {
            drop(ours);
        }
        sys::recv_nonblocking(app.as_raw_fd(), &mut b)
    }

    #[test]
    fn an_answer_peeked_at_is_read_before_the_connection_closes() {
        // The app sees a plain end of stream, not a reset.
        assert_eq!(app_reads_after_close(true).unwrap(), 0);
        // (Which is what closing over the unread answer would give it.)
        assert_eq!(app_reads_after_close(false).unwrap_err().raw_os_error(), Some(libc::ECONNRESET));
    }

    #[test]
    fn the_end_of_an_answer_is_read_once_the_next_request_went_out() {
        let (ours, app) = sys::socketpair().unwrap();
        sys::send_all(app.as_raw_fd(), b"end").unwrap();
        let mut conn = KeptConn::new(ours);
        conn.leave_unread(3);
        sys::send_all(conn.fd().as_raw_fd(), b"next request").unwrap();
        sys::send_all(app.as_raw_fd(), b"answer").unwrap();
        assert!(conn.request_sent().unwrap());
        let mut b = [0u8; 16];
        let n = sys::recv_nonblocking(conn.fd().as_raw_fd(), &mut b).unwrap();
        assert_eq!(&b[..n], b"answer", "only the new answer is left");
        assert_eq!(conn.unread, 0, "read once");
    }

    /// One test: the keeper is one per process.
    #[test]
    fn kept_parked_taken_over_and_closed_when_idle() {
        let sb = Scoreboard::create(1, 4).unwrap();
        let p = sb.slot(0).unwrap();
        p.generation.store(1, Ordering::Release);
        p.state.store(pool_state::ACTIVE, Ordering::Release);
        p.max_workers.store(2, Ordering::Release);
        p.queue_limit.store(10, Ordering::Release);
        p.workers[0].set(1, worker_state::IDLE);
        p.workers[1].set(1, worker_state::IDLE);
        let info = PoolInfo { socket_prefix: PathBuf::from("/nonexistent"), slot: 0, slot_generation: 1, uid: 1, gid: 1, limits: Limits::DEFAULT };
        let holder = start(sb.clone(), Box::new(|m| eprintln!("{m}"))).unwrap();
        assert_eq!(super::holder(), Some(holder));

        // Parked with this process; claimed again with the same connection.
        let (ours, app) = sys::socketpair().unwrap();
        assert!(!park(p, &info, p.claim().unwrap(), KeptConn::new(ours)));
        assert_eq!(p.workers[0].load().1, worker_state::PARKED);
        let (c, conn) = take(p, &info).unwrap();
        assert_eq!(c.via, Via::Kept);
        sys::send_all(conn.fd().as_raw_fd(), b"x").unwrap();
        let mut b = [0u8; 1];
        sys::read_exact_fd(app.as_raw_fd(), &mut b).unwrap();
        assert!(take(p, &info).is_none(), "claimed once");

        // Another process takes it over and rings: the keeper closes ours,
        // the worker sees EOF and would accept the other's connection.
        assert!(!park(p, &info, c, conn));
        let (t, rung) = p.take_over().unwrap();
        assert_eq!(rung, holder);
        sb.ring(rung);
        assert!(eof_within(&app, 10), "the keeper closed the taken-over connection");
        assert!(take(p, &info).is_none());
        drop(t);

        // Unused for KEEP_IDLE: closed, and the worker idle for everyone.
        let (ours, app) = sys::socketpair().unwrap();
        let c = p.claim().unwrap();
        assert_eq!(c.index, 1);
        assert!(!park(p, &info, c, KeptConn::new(ours)));
        assert!(eof_within(&app, 10), "closed after KEEP_IDLE");
        assert_eq!(p.workers[1].load().1, worker_state::IDLE);

        // Requests wait for the pool: released to them at once, not parked.
        let (ours, app) = sys::socketpair().unwrap();
        let c = p.claim().unwrap();
        assert!(p.enter_queue());
        assert!(!park(p, &info, c, KeptConn::new(ours)));
        assert_eq!(p.workers[1].load().1, worker_state::IDLE);
        assert!(eof_within(&app, 1));
        p.leave_queue();
        let (ours, _app) = sys::socketpair().unwrap();
        assert!(!park(p, &info, p.claim().unwrap(), KeptConn::new(ours)));
        assert_eq!(p.workers[1].load().1, worker_state::PARKED);

        // The process exits: every parked worker given back, the doorbell too.
        stop();
        assert_eq!(p.workers[1].load().1, worker_state::IDLE);
        assert_eq!(super::holder(), None);
        assert_eq!(sb.doorbell(holder).unwrap().pid.load(Ordering::Acquire), 0);
    }
}
