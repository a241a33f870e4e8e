//! `SuFcgiSlowLog`, the server side: a request that is still running after
//! the pool's threshold is reported once to the supervisor, which looks at
//! the worker from outside (`core::slowlog`) and writes the entry in the
//! owner's log. A watched request costs a lock and a vector push at start
//! and at end; one thread per server process (started on first use, after
//! fork) sleeps until the earliest deadline. Nothing here touches the
//! request path's I/O, so it works the same for both servers and every
//! relay. Pools without a slow log cost nothing.

use crate::core::customer_note;
use crate::core::request::PoolInfo;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

struct Entry {
    id: u64,
    started: Instant,
    due: Instant,
    socket_dir: PathBuf,
    pool: (u32, u32),
    worker: (u32, u32),
    what: Vec<u8>,
}

#[derive(Default)]
struct State {
    entries: Vec<Entry>,
    next_id: u64,
    /// The process whose thread watches (a forked child has none yet).
    thread_of: u32,
}

static STATE: Mutex<State> = Mutex::new(State { entries: Vec::new(), next_id: 0, thread_of: 0 });
static WAKE: Condvar = Condvar::new();

/// A request being watched; dropping it (the request ended) unwatches it.
pub struct SlowWatch(u64);

impl Drop for SlowWatch {
    fn drop(&mut self) {
        let mut st = STATE.lock().unwrap_or_else(|e| e.into_inner());
        st.entries.retain(|e| e.id != self.0);
    }
}

/// Watch the request `what` (method and URL) running on `worker` (entry,
/// epoch) of `info`'s pool, if the pool has a slow log.
pub fn watch(socket_dir: &std::path::Path, info: &PoolInfo, worker: (u32, u32), what: Vec<u8>) -> Option<SlowWatch> {
    let secs = info.limits.slow_log;
    if secs == 0 {
        return None;
    }
    let now = Instant::now();
    let due = now + Duration::from_secs(secs as u64);
    let mut st = STATE.lock().unwrap_or_else(|e| e.into_inner());
    let me = std::process::id();
    if st.thread_of != me {
        // Forked since (or first use): whatever was watched belonged to the parent.
        st.entries.clear();
        if std::thread::Builder::new().name("sufcgi-slowlog".into()).spawn(run).is_err() {
            return None;
        }
        st.thread_of = me;
    }
    st.next_id += 1;
    let id = st.next_id;
    let earliest = st.entries.iter().all(|e| e.due > due);
    st.entries.push(Entry { id, started: now, due, socket_dir: socket_dir.to_path_buf(), pool: (info.slot, info.slot_generation), worker, what });
    if earliest {
        WAKE.notify_one();
    }
    Some(SlowWatch(id))
}

fn run() {
    let mut st = STATE.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let now = Instant::now();
        match st.entries.iter().position(|e| e.due <= now) {
            Some(i) => {
                // Reported once: the entry leaves the list (its SlowWatch then finds nothing).
                let e = st.entries.swap_remove(i);
                drop(st);
                let elapsed = now.saturating_duration_since(e.started).as_millis().min(u32::MAX as u128) as u32;
                let _ = std::panic::catch_unwind(|| customer_note::slow(&e.socket_dir, e.pool, e.worker, elapsed, &e.what));
                st = STATE.lock().unwrap_or_else(|e| e.into_inner());
            }
            None => {
                let next = st.entries.iter().map(|e| e.due).min();
                st = match next {
                    Some(d) => WAKE.wait_timeout(st, d.saturating_duration_since(now)).map(|(g, _)| g).unwrap_or_else(|e| e.into_inner().0),
                    None => WAKE.wait(st).unwrap_or_else(|e| e.into_inner()),
                };
            }
        }
    }
}
