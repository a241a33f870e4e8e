//! The plugin record lighttpd loads (`server.modules += ( "mod_sufcgi" )`)
//! and its hooks. Every hook goes through the panic guard, with the
//! request, server and plugin handles made once here (req.rs, server.rs).

use super::ffi;
use super::req::Req;
use super::server::{self, Handled, Plugin, Server};
use super::{exchange, route, runtime, shared_conn};
use crate::core::guard::guard;
use std::os::raw::{c_int, c_void};

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

unsafe extern "C" fn init() -> *mut c_void {
    guard("init", std::ptr::null_mut(), |_| {}, server::new_plugin_data)
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

/// A server hook: `f` with the server and our plugin, through the guard.
///
/// # Safety
/// `srv` and `p_d` are as lighttpd passes them to a hook.
unsafe fn server_hook(what: &str, on_panic: Handled, srv: *mut ffi::server, p_d: *mut c_void, f: impl FnOnce(Server, Plugin) -> Handled) -> ffi::handler_t {
    // SAFETY: the caller's contract.
    let (Some(srv), Some(p)) = (unsafe { Server::from_raw(srv) }, unsafe { Plugin::from_raw(p_d) }) else { return on_panic.raw() };
    guard(what, on_panic, |m| srv.log(m), || f(srv, p)).raw()
}

/// A request hook: `f` with the request and our plugin, through the guard.
///
/// # Safety
/// `r` and `p_d` are as lighttpd passes them to a request hook.
unsafe fn request_hook(what: &str, on_panic: Handled, r: *mut ffi::request_st, p_d: *mut c_void, f: impl FnOnce(Req, Plugin) -> Handled) -> ffi::handler_t {
    // SAFETY: the caller's contract.
    let (Some(req), Some(p)) = (unsafe { Req::from_raw(r) }, unsafe { Plugin::from_raw(p_d) }) else { return on_panic.raw() };
    guard(what, on_panic, |m| req.log(m.as_bytes()), || f(req, p)).raw()
}

/// `priv_defaults`: read the settings, start or adopt the supervisor.
fn configure(srv: Server, p: Plugin) -> Handled {
    match runtime::configure(srv, p) {
        Ok(()) => Handled::GO_ON,
        Err(e) => {
            srv.log(&format!("sufcgi: {e}"));
            Handled::ERROR
        }
    }
}

unsafe extern "C" fn priv_defaults(srv: *mut ffi::server, p_d: *mut c_void) -> ffi::handler_t {
    // SAFETY: lighttpd calls this once per (re)load, single-threaded, with
    // its server and our plugin data.
    unsafe { server_hook("priv_defaults", Handled::ERROR, srv, p_d, configure) }
}

unsafe extern "C" fn handle_physical(r: *mut ffi::request_st, p_d: *mut c_void) -> ffi::handler_t {
    // SAFETY: lighttpd passes the live request and our plugin data.
    unsafe { request_hook("handle_physical", Handled::ERROR, r, p_d, route::physical) }
}

unsafe extern "C" fn handle_subrequest_start(r: *mut ffi::request_st, p_d: *mut c_void) -> ffi::handler_t {
    // SAFETY: as handle_physical.
    unsafe { request_hook("handle_subrequest_start", Handled::ERROR, r, p_d, route::subrequest_start) }
}

unsafe extern "C" fn handle_subrequest(r: *mut ffi::request_st, p_d: *mut c_void) -> ffi::handler_t {
    // SAFETY: as handle_physical.
    unsafe { request_hook("handle_subrequest", Handled::ERROR, r, p_d, exchange::subrequest) }
}

unsafe extern "C" fn handle_request_reset(r: *mut ffi::request_st, p_d: *mut c_void) -> ffi::handler_t {
    // SAFETY: as handle_physical.
    unsafe { request_hook("handle_request_reset", Handled::GO_ON, r, p_d, exchange::reset) }
}

/// `handle_trigger`, once a second.
fn trigger(_: Server, _: Plugin) -> Handled {
    exchange::check_timeouts();
    Handled::GO_ON
}

unsafe extern "C" fn handle_trigger(srv: *mut ffi::server, p_d: *mut c_void) -> ffi::handler_t {
    // SAFETY: as priv_defaults.
    unsafe { server_hook("handle_trigger", Handled::GO_ON, srv, p_d, trigger) }
}

/// The entry point lighttpd looks up after dlopen().
///
/// # Safety
/// Called by lighttpd with its plugin record.
#[no_mangle]
pub unsafe extern "C" fn mod_sufcgi_plugin_init(p: *mut ffi::plugin) -> c_int {
    guard("plugin_init", -1, |_| {}, || {
        // SAFETY: lighttpd passes a plugin record to fill in.
        let Some(p) = (unsafe { p.as_mut() }) else { return -1 };
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
