//! The root parent watches the supervisor as one of httpd's "other children"
//! (as mod_cgid does with its daemon): if the supervisor dies, the MPM's
//! maintenance loop tells us and we start a new one, so requests keep working.

use crate::core::guard::guard;
use super::{ffi, hooks, log, runtime};
use std::os::raw::{c_int, c_void};
use std::ptr;

struct Watch {
    proc_: ffi::apr_proc_t,
    pconf: *mut ffi::apr_pool_t,
    server: *mut ffi::server_rec,
}

/// Register the supervisor `pid` for this generation. The registration is
/// tied to `pconf`, so a restart drops it and the next post_config registers again.
///
/// # Safety
/// Parent only, at config time; `pconf` and `s` live for the whole generation.
pub unsafe fn watch(pconf: *mut ffi::apr_pool_t, s: *mut ffi::server_rec, pid: libc::pid_t) {
    // SAFETY: the Watch lives in pconf (dropped by its cleanup) and APR keeps
    // only the pointer we pass; pconf outlives the registration by construction.
    unsafe {
        let w = super::apr::pool_box(pconf, Watch { proc_: ffi::apr_proc_t { pid, ..Default::default() }, pconf, server: s });
        ffi::apr_proc_other_child_register(&mut (*w).proc_, Some(maintenance), w as *mut c_void, ptr::null_mut(), pconf);
    }
}

unsafe extern "C" fn maintenance(reason: c_int, data: *mut c_void, _status: c_int) {
    let w = data as *mut Watch;
    guard("the supervisor watchdog", (), |m| log::server(ptr::null(), log::ERR, m), || {
        let reason = reason as u32;
        if reason != ffi::APR_OC_REASON_DEATH && reason != ffi::APR_OC_REASON_LOST {
            return;
        }
        // SAFETY: `w` is the Watch registered above, alive until pconf is
        // cleared; the MPM calls us from the single-threaded parent.
        unsafe {
            let (pconf, s, pid) = ((*w).pconf, (*w).server, (*w).proc_.pid);
            ffi::apr_proc_other_child_unregister(w as *mut c_void);
            log::server(s, log::ERR, &format!("sufcgi: the supervisor (pid {pid}) died; starting a new one"));
            let Some(persist) = runtime::persist((*(*s).process).pool) else { return };
            if persist.supervisor_pid == pid {
                if persist.control_fd >= 0 {
                    libc::close(persist.control_fd);
                }
                persist.supervisor_pid = 0;
                persist.control_fd = -1;
            }
            if let Err(e) = hooks::ensure_supervisor(pconf, s) {
                log::server(s, log::ERR, &format!("sufcgi: cannot restart the supervisor: {e}"));
            }
        }
    })
}
