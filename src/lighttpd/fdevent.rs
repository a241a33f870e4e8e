//! The thin safe layer over lighttpd's event handler (`fdevent`): a socket
//! or timer of ours watched by lighttpd's loop, whose events call a Rust
//! closure (through the panic guard), and the timerfd the waiters' poll
//! timer uses. lighttpd closes a watched descriptor itself once the watch
//! is closed.

use super::ffi;
use super::server::{log_to, Handled, Server};
use crate::core::guard::guard;
use std::cell::RefCell;
use std::io;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::raw::{c_int, c_void};
use std::rc::Rc;

/// What lighttpd reports for a watched descriptor.
#[derive(Clone, Copy)]
pub struct Events(c_int);

impl Events {
    /// Something to read, or the peer hung up or failed (a read tells which).
    pub fn readable(self) -> bool {
        self.0 & (ffi::FDEVENT_IN | ffi::FDEVENT_HUP | ffi::FDEVENT_ERR | ffi::FDEVENT_RDHUP) as c_int != 0
    }

    /// Room to write.
    pub fn writable(self) -> bool {
        self.0 & ffi::FDEVENT_OUT as c_int != 0
    }
}

struct Handler {
    errh: *mut ffi::log_error_st,
    on_event: RefCell<Box<dyn FnMut(Events)>>,
}

/// A descriptor registered with lighttpd's event handler. Closing it
/// (`close`, `close_now`) ends the registration; a Watch dropped without
/// that stays registered (and its closure alive), never dangling.
pub struct Watch {
    ev: *mut ffi::fdevents,
    fdn: *mut ffi::fdnode,
    fd: RawFd,
    handler: *const Handler,
}

impl Watch {
    /// Register `fd` (lighttpd closes it once the watch is closed) with the
    /// event handler of `srv`; `on_event` runs for each event reported for it.
    pub fn register(srv: Server, fd: OwnedFd, on_event: impl FnMut(Events) + 'static) -> Watch {
        let ev = srv.ev();
        let fd = fd.into_raw_fd();
        let handler = Rc::into_raw(Rc::new(Handler { errh: srv.errh(), on_event: RefCell::new(Box::new(on_event)) }));
        // SAFETY: ev is the server's live event handler; the node's context
        // is `handler`, alive until `close`/`close_now`, after which
        // lighttpd calls no handler of the node (sched_close clears it,
        // unregister frees the node). lighttpd's fdevent_register cannot
        // fail (it allocates with ck_calloc, which aborts instead).
        let fdn = unsafe { ffi::fdevent_register(ev, fd, Some(on_fd_event), handler as *mut c_void) };
        Watch { ev, fdn, fd, handler }
    }

    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// Wait for input (and the peer's hang-up), and for room to write when `write`.
    pub fn want(&self, write: bool) {
        let want = ffi::FDEVENT_IN | ffi::FDEVENT_RDHUP | if write { ffi::FDEVENT_OUT } else { 0 };
        self.set(want as c_int);
    }

    /// Wait for room to write when `write`, and for nothing else but a
    /// hang-up or an error (which epoll always reports).
    pub fn want_output_only(&self, write: bool) {
        self.set(if write { ffi::FDEVENT_OUT as c_int } else { 0 });
    }

    /// Wait for input only (a timer).
    pub fn want_input(&self) {
        self.set(ffi::FDEVENT_IN as c_int);
    }

    fn set(&self, events: c_int) {
        // SAFETY: fdn is registered on ev until the watch is closed, which
        // consumes it.
        unsafe { ffi::fdevent_fdnode_event_set(self.ev, self.fdn, events) };
    }

    /// Stop watching; lighttpd closes the descriptor at its loop's next turn.
    pub fn close(self) {
        // SAFETY: fdn is registered on ev; after this nothing refers to it
        // (lighttpd frees it when it closes the fd).
        unsafe {
            ffi::fdevent_fdnode_event_del(self.ev, self.fdn);
            ffi::fdevent_sched_close(self.ev, self.fdn);
        }
        self.free_handler();
    }

    /// Stop watching and close the descriptor now: the server is stopping
    /// (lighttpd frees its event handler only after its plugins' cleanup,
    /// and dispatches no event meanwhile, so the node can go at once).
    pub fn close_now(self) {
        // SAFETY: fdn is registered on ev, which is still live (above); the
        // fd is ours and registered nowhere else.
        unsafe {
            ffi::fdevent_fdnode_event_del(self.ev, self.fdn);
            ffi::fdevent_unregister(self.ev, self.fdn);
            libc::close(self.fd);
        }
        self.free_handler();
    }

    fn free_handler(self) {
        // SAFETY: the reference Rc::into_raw gave in `register`; lighttpd
        // holds the pointer no more (the node is closed). A handler running
        // now holds a reference of its own (on_fd_event).
        drop(unsafe { Rc::from_raw(self.handler) });
    }
}

/// lighttpd's fd handler for every Watch: run its closure (not while it
/// runs already: its events are seen again on the next turn).
unsafe extern "C" fn on_fd_event(ctx: *mut c_void, revents: c_int) -> ffi::handler_t {
    // SAFETY: ctx is the Handler `register` gave lighttpd, alive while the
    // node is registered (a closed node gets no events); this reference of
    // our own keeps it alive even if the closure closes its Watch.
    let h = unsafe {
        Rc::increment_strong_count(ctx as *const Handler);
        Rc::from_raw(ctx as *const Handler)
    };
    guard("fd event", (), |m| log_to(h.errh, m.as_bytes()), || {
        if let Ok(mut f) = h.on_event.try_borrow_mut() {
            f(Events(revents));
        }
    });
    Handled::FINISHED.raw()
}

/// A non-blocking, close-on-exec monotonic timerfd.
pub fn timerfd() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the result is checked.
    let fd = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Fire the timerfd every `ns` nanoseconds (0: stop it).
pub fn set_timer(fd: RawFd, ns: i64) {
    let spec = libc::itimerspec {
        it_interval: libc::timespec { tv_sec: 0, tv_nsec: ns },
        it_value: libc::timespec { tv_sec: 0, tv_nsec: ns },
    };
    // SAFETY: spec is a valid itimerspec; a bad fd only makes it fail.
    unsafe { libc::timerfd_settime(fd, 0, &spec, std::ptr::null_mut()) };
}

/// Drain a non-blocking timerfd's count.
pub fn drain_timer(fd: RawFd) {
    let mut n = [0u8; 8];
    // SAFETY: reading into a local buffer of its size.
    unsafe { libc::read(fd, n.as_mut_ptr() as *mut c_void, n.len()) };
}
