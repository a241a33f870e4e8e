//! The root parent watches the supervisor as one of httpd's "other children"
//! (as mod_cgid does with its daemon): if the supervisor dies, the MPM's
//! maintenance loop tells us and we start a new one, so requests keep working.

use super::log;
use super::pool::Pool;
use super::server::{self, Server};

/// Register the supervisor `pid` for this generation: when it dies,
/// `restart` (the start-up's own `ensure_supervisor`) starts a new one. The
/// registration is tied to `pconf`, so a restart drops it and the next
/// post_config registers again. Parent only, at config time.
pub fn watch(pconf: Pool, s: Server, pid: libc::pid_t, restart: fn(Pool, Server) -> Result<(), String>) {
    server::watch_child(pconf, pid, "the supervisor watchdog", move |pid| {
        s.log(log::ERR, &format!("sufcgi: the supervisor (pid {pid}) died; starting a new one"));
        let Some(record) = s.process_record() else { return };
        let mut persist = record.get();
        if persist.supervisor_pid == pid {
            record.close_control();
            persist = record.get();
            persist.supervisor_pid = 0;
            record.set(persist);
        }
        if let Err(e) = restart(pconf, s) {
            s.log(log::ERR, &format!("sufcgi: cannot restart the supervisor: {e}"));
        }
    });
}
