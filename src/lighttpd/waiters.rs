//! Requests waiting for a worker, without blocking lighttpd's loop.
//!
//! Under Apache a waiting thread sleeps on the pool's futex; here a waiting
//! request is parked in a per-pool line and rescheduled: at once when a
//! request of this process releases a worker of that pool (the common case:
//! one lighttpd process serves every request), and otherwise by a short
//! periodic timer (workers freed by another process, or newly spawned by the
//! supervisor). Only the head of a line may claim, so the line is served in
//! order; each successful claim gives the next one its turn.

use super::exchange::schedule;
use super::ffi;
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::os::raw::{c_int, c_void};

/// How often parked requests look again for a worker freed elsewhere.
const POLL_NS: i64 = 2_000_000;

struct Waiter {
    ctx: usize,
    con: *mut ffi::connection,
}

/// Created on first use: requests are served only after lighttpd's own
/// forks (daemon, `server.max-worker`), so it belongs to the process using it.
struct Timer {
    fd: c_int,
    armed: bool,
}

thread_local! {
    static LINES: RefCell<HashMap<u32, VecDeque<Waiter>>> = RefCell::new(HashMap::new());
    static TIMER: RefCell<Option<Timer>> = const { RefCell::new(None) };
}

/// Whether `ctx` may claim a worker of `slot` now (nobody of this process is ahead of it).
pub fn may_claim(slot: u32, ctx: usize) -> bool {
    LINES.with(|l| l.borrow().get(&slot).and_then(|q| q.front()).is_none_or(|w| w.ctx == ctx))
}

/// Park `ctx` (once) at the end of `slot`'s line.
pub fn add(slot: u32, ctx: usize, con: *mut ffi::connection) {
    LINES.with(|l| {
        let mut l = l.borrow_mut();
        let q = l.entry(slot).or_default();
        if !q.iter().any(|w| w.ctx == ctx) {
            q.push_back(Waiter { ctx, con });
        }
    });
    // SAFETY: con is the live connection of a request being handled.
    unsafe { arm((*con).srv) };
}

/// Take `ctx` out of whatever line it is in.
pub fn remove(ctx: usize) {
    LINES.with(|l| {
        let mut l = l.borrow_mut();
        l.retain(|_, q| {
            q.retain(|w| w.ctx != ctx);
            !q.is_empty()
        });
    });
}

/// Give the head of `slot`'s line its turn.
pub fn wake_front(slot: u32) {
    let con = LINES.with(|l| l.borrow().get(&slot).and_then(|q| q.front()).map(|w| w.con));
    if let Some(con) = con {
        // SAFETY: a parked request's connection is live (Drop of its Ctx removes it).
        unsafe { schedule(con) };
    }
}

fn set_timer(fd: c_int, ns: i64) {
    let spec = libc::itimerspec {
        it_interval: libc::timespec { tv_sec: 0, tv_nsec: ns },
        it_value: libc::timespec { tv_sec: 0, tv_nsec: ns },
    };
    // SAFETY: fd is our timerfd; spec is a valid itimerspec.
    unsafe { libc::timerfd_settime(fd, 0, &spec, std::ptr::null_mut()) };
}

unsafe extern "C" fn on_tick(_ctx: *mut c_void, _revents: c_int) -> ffi::handler_t {
    TIMER.with(|t| {
        if let Some(t) = t.borrow().as_ref() {
            let mut n = [0u8; 8];
            // SAFETY: draining our own non-blocking timerfd into a local buffer.
            unsafe { libc::read(t.fd, n.as_mut_ptr() as *mut c_void, n.len()) };
        }
    });
    let fronts: Vec<*mut ffi::connection> = LINES.with(|l| l.borrow().values().filter_map(|q| q.front().map(|w| w.con)).collect());
    for con in &fronts {
        // SAFETY: as in wake_front.
        unsafe { schedule(*con) };
    }
    if fronts.is_empty() {
        TIMER.with(|t| {
            if let Some(t) = t.borrow_mut().as_mut() {
                set_timer(t.fd, 0);
                t.armed = false;
            }
        });
    }
    ffi::handler_t_HANDLER_FINISHED
}

/// Start the poll timer of this process (created on first use, registered
/// with lighttpd's event loop).
unsafe fn arm(srv: *mut ffi::server) {
    TIMER.with(|t| {
        let mut t = t.borrow_mut();
        if t.is_none() {
            // SAFETY: plain syscall; the result is checked.
            let fd = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) };
            if fd < 0 {
                return;
            }
            // SAFETY: srv is the live server; the handler needs no context.
            unsafe {
                let ev = (*srv).ev;
                let fdn = ffi::fdevent_register(ev, fd, Some(on_tick), std::ptr::null_mut());
                if fdn.is_null() {
                    libc::close(fd);
                    return;
                }
                ffi::fdevent_fdnode_event_set(ev, fdn, ffi::FDEVENT_IN as c_int);
            }
            *t = Some(Timer { fd, armed: false });
        }
        if let Some(x) = t.as_mut() {
            if !x.armed {
                set_timer(x.fd, POLL_NS);
                x.armed = true;
            }
        }
    });
}
