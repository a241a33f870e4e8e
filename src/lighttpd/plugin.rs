//! The plugin record lighttpd loads (`server.modules += ( "mod_sufcgi" )`)
//! and its hooks. Every hook goes through the panic guard.

use super::exchange::{self, ctx_of};
use super::{ffi, log, route, runtime, shared_conn};
use crate::core::guard::guard;
use std::os::raw::{c_int, c_void};

/// What lighttpd keeps for us: only its own `PLUGIN_DATA` header (our state
/// lives in statics that survive reloads). lighttpd frees it with free().
#[repr(C)]
struct PluginData {
    base: ffi::plugin_data_base,
}

/// lighttpd's `LIGHTTPD_VERSION_ID` for the headers we were built against.
const VERSION_ID: usize = {
    let s = env!("SUFCGI_LIGHTTPD_VERSION_ID").as_bytes();
    let mut v = 0usize;
    let mut i = 0;
    while i < s.len() {
        v = v * 10 + (s[i] - b'0') as usize;
        i += 1;
    }
    v
};

fn data(p_d: *mut c_void) -> &'static PluginData {
    // SAFETY: lighttpd passes back the record `init` returned, alive until cleanup.
    unsafe { &*(p_d as *const PluginData) }
}

unsafe extern "C" fn init() -> *mut c_void {
    // calloc: lighttpd frees the record (and the cvlist it points to) itself.
    // SAFETY: a plain allocation, zeroed, of the record's size.
    unsafe { libc::calloc(1, std::mem::size_of::<PluginData>()) }
}

unsafe extern "C" fn cleanup(_p_d: *mut c_void) {
    // Connections kept open to workers: closed before lighttpd frees its
    // event handler (a reload starts with none).
    guard("cleanup", (), |_| {}, || {
        if let Some(sb) = runtime::scoreboard() {
            shared_conn::close_all(sb);
        }
    })
}

unsafe extern "C" fn priv_defaults(srv: *mut ffi::server, p_d: *mut c_void) -> ffi::handler_t {
    guard("priv_defaults", ffi::handler_t_HANDLER_ERROR, |m| log::server(srv, m), || {
        // SAFETY: lighttpd calls this once per (re)load, single-threaded.
        match unsafe { runtime::configure(srv, p_d) } {
            Ok(()) => ffi::handler_t_HANDLER_GO_ON,
            Err(e) => {
                log::server(srv, &format!("sufcgi: {e}"));
                ffi::handler_t_HANDLER_ERROR
            }
        }
    })
}

fn slot_id(p_d: *mut c_void) -> usize {
    data(p_d).base.id.max(0) as usize
}

unsafe extern "C" fn handle_physical(r: *mut ffi::request_st, p_d: *mut c_void) -> ffi::handler_t {
    guard("handle_physical", ffi::handler_t_HANDLER_ERROR, |m| log::request(r, m.as_bytes()), || {
        // SAFETY: lighttpd passes the live request.
        unsafe { route::physical(r, data(p_d).base.self_, slot_id(p_d)) }
    })
}

unsafe extern "C" fn handle_subrequest_start(r: *mut ffi::request_st, p_d: *mut c_void) -> ffi::handler_t {
    guard("handle_subrequest_start", ffi::handler_t_HANDLER_ERROR, |m| log::request(r, m.as_bytes()), || {
        // SAFETY: lighttpd passes the live request.
        unsafe { route::subrequest_start(r, data(p_d).base.self_, slot_id(p_d)) }
    })
}

unsafe extern "C" fn handle_subrequest(r: *mut ffi::request_st, p_d: *mut c_void) -> ffi::handler_t {
    guard("handle_subrequest", ffi::handler_t_HANDLER_ERROR, |m| log::request(r, m.as_bytes()), || {
        let id = slot_id(p_d);
        // SAFETY: lighttpd passes the live request; the Ctx stays ours until reset.
        unsafe {
            let c = ctx_of(r, id);
            if c.is_null() {
                return ffi::handler_t_HANDLER_GO_ON;
            }
            let rc = exchange::subrequest(&mut *c);
            if rc == ffi::handler_t_HANDLER_FINISHED || rc == ffi::handler_t_HANDLER_ERROR {
                // Done with it: settle the worker now, not at connection reset.
                *(*r).plugin_ctx.add(id) = std::ptr::null_mut();
                drop(Box::from_raw(c));
            }
            rc
        }
    })
}

unsafe extern "C" fn handle_request_reset(r: *mut ffi::request_st, p_d: *mut c_void) -> ffi::handler_t {
    guard("handle_request_reset", ffi::handler_t_HANDLER_GO_ON, |m| log::request(r, m.as_bytes()), || {
        let id = slot_id(p_d);
        // SAFETY: as handle_subrequest; the Ctx is dropped exactly once.
        unsafe {
            let c = ctx_of(r, id);
            if !c.is_null() {
                *(*r).plugin_ctx.add(id) = std::ptr::null_mut();
                drop(Box::from_raw(c));
            }
        }
        ffi::handler_t_HANDLER_GO_ON
    })
}

unsafe extern "C" fn handle_trigger(srv: *mut ffi::server, _p_d: *mut c_void) -> ffi::handler_t {
    guard("handle_trigger", ffi::handler_t_HANDLER_GO_ON, |m| log::server(srv, m), || {
        exchange::check_timeouts();
        ffi::handler_t_HANDLER_GO_ON
    })
}

/// The entry point lighttpd looks up after dlopen().
///
/// # Safety
/// Called by lighttpd with its plugin record.
#[no_mangle]
pub unsafe extern "C" fn mod_sufcgi_plugin_init(p: *mut ffi::plugin) -> c_int {
    guard("plugin_init", -1, |_| {}, || {
        // SAFETY: lighttpd passes a plugin record to fill in.
        let p = unsafe { &mut *p };
        p.version = VERSION_ID;
        p.name = c"sufcgi".as_ptr();
        p.init = Some(init);
        p.cleanup = Some(cleanup);
        p.priv_defaults = Some(priv_defaults);
        p.handle_physical = Some(handle_physical);
        p.handle_subrequest_start = Some(handle_subrequest_start);
        p.handle_subrequest = Some(handle_subrequest);
        p.handle_request_reset = Some(handle_request_reset);
        p.handle_trigger = Some(handle_trigger);
        0
    })
}
