//! Requests waiting for a worker, without blocking lighttpd's loop.
//!
//! Under Apache a waiting thread sleeps on the pool's futex; here a waiting
//! request is parked in a per-pool line and rescheduled: at once when a
//! request of this process releases a worker of that pool (the common case:
//! one lighttpd process serves every request), and otherwise by a short
//! periodic timer (workers freed by another process, or newly spawned by the
//! supervisor). Only the head of a line may claim, so the line is served in
//! order; each successful claim gives the next one its turn.

use super::fdevent::{self, Watch};
use super::req::Con;
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};

/// How often parked requests look again for a worker freed elsewhere.
const POLL_NS: i64 = 2_000_000;

struct Waiter {
    ctx: usize,
    con: Con,
}

/// Created on first use: requests are served only after lighttpd's own
/// forks (daemon, `server.max-worker`), so it belongs to the process using it.
struct Timer {
    watch: Watch,
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

/// Park `ctx` (once) at the end of `slot`'s line; `con` is its request's
/// connection (the request leaves the line before it ends: `remove`).
pub fn add(slot: u32, ctx: usize, con: Con) {
    LINES.with(|l| {
        let mut l = l.borrow_mut();
        let q = l.entry(slot).or_default();
        if !q.iter().any(|w| w.ctx == ctx) {
            q.push_back(Waiter { ctx, con });
        }
    });
    arm(con);
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
        con.schedule();
    }
}

fn on_tick() {
    TIMER.with(|t| {
        if let Some(t) = t.borrow().as_ref() {
            fdevent::drain_timer(t.watch.fd());
        }
    });
    let fronts: Vec<Con> = LINES.with(|l| l.borrow().values().filter_map(|q| q.front().map(|w| w.con)).collect());
    for con in &fronts {
        con.schedule();
    }
    if fronts.is_empty() {
        TIMER.with(|t| {
            if let Some(t) = t.borrow_mut().as_mut() {
                fdevent::set_timer(t.watch.fd(), 0);
                t.armed = false;
            }
        });
    }
}

/// Start the poll timer of this process (created on first use, registered
/// with lighttpd's event loop).
fn arm(con: Con) {
    TIMER.with(|t| {
        let mut t = t.borrow_mut();
        if t.is_none() {
            let Ok(fd) = fdevent::timerfd() else { return };
            let watch = Watch::register(con.server(), fd, |_| on_tick());
            watch.want_input();
            *t = Some(Timer { watch, armed: false });
        }
        if let Some(x) = t.as_mut() {
            if !x.armed {
                fdevent::set_timer(x.watch.fd(), POLL_NS);
                x.armed = true;
            }
        }
    });
}
