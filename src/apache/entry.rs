//! Every `extern "C"` function httpd calls, apart from the directive
//! handlers (cmd.rs) and the watchdog's callback (server.rs): hook
//! registration, the request and start-up hooks, and the configuration
//! records' constructors and mergers. Each makes the raw arguments safe
//! handles and runs the safe body under the one panic guard.

use super::pool::Pool;
use super::req::{self, Status, DECLINED, HTTP_INTERNAL_SERVER_ERROR};
use super::server::Server;
use super::server_conf::ServerConf;
use super::{authorizer, ffi, handler, hooks, log};
use crate::core::directives::{self, DirConfig};
use crate::core::guard::guard;
use std::os::raw::{c_char, c_int, c_void};
use std::ptr;

pub unsafe extern "C" fn register_hooks(_p: *mut ffi::apr_pool_t) {
    // SAFETY: called by httpd while loading the module; the hook functions are
    // 'static and the predecessor/successor lists are null.
    unsafe {
        ffi::ap_hook_post_config(Some(post_config), ptr::null(), ptr::null(), ffi::APR_HOOK_MIDDLE as c_int);
        ffi::ap_hook_child_init(Some(child_init), ptr::null(), ptr::null(), ffi::APR_HOOK_MIDDLE as c_int);
        // Before mod_dir's fixup, which would otherwise look for index files
        // (or redirect) inside a directory that an app serves.
        ffi::ap_hook_fixups(Some(fixups), ptr::null(), ptr::null(), ffi::APR_HOOK_FIRST as c_int);
        ffi::ap_hook_handler(Some(handler), ptr::null(), ptr::null(), ffi::APR_HOOK_MIDDLE as c_int);
        // SuFcgiAuthorizer: access_checker runs for every request, with or
        // without Require/AuthType, and its OK cannot override the host's own
        // access rules (see authorizer.rs).
        ffi::ap_hook_access_checker(Some(access_checker), ptr::null(), ptr::null(), ffi::APR_HOOK_MIDDLE as c_int);
    }
}

const ON_PANIC: Status = HTTP_INTERNAL_SERVER_ERROR as Status;

unsafe extern "C" fn handler(r: *mut ffi::request_rec) -> c_int {
    // SAFETY: httpd passes the live request to its handler phase.
    unsafe { req::hook(r, "the sufcgi handler", ON_PANIC, handler::handle) }
}

unsafe extern "C" fn access_checker(r: *mut ffi::request_rec) -> c_int {
    // SAFETY: httpd passes the live request in its access phase.
    unsafe { req::hook(r, "the sufcgi authorizer", ON_PANIC, authorizer::check) }
}

unsafe extern "C" fn fixups(r: *mut ffi::request_rec) -> c_int {
    // SAFETY: httpd passes the live request in its fixups phase.
    unsafe { req::hook(r, "fixups", DECLINED, hooks::fixups) }
}

/// Log a panic against `s` (the main server's log when there is none).
fn log_to(s: Option<Server>) -> impl FnOnce(&str) {
    move |m| match s {
        Some(s) => s.log(log::ERR, m),
        None => log::main(log::ERR, m),
    }
}

unsafe extern "C" fn post_config(pconf: *mut ffi::apr_pool_t, _plog: *mut ffi::apr_pool_t, _ptemp: *mut ffi::apr_pool_t, s: *mut ffi::server_rec) -> c_int {
    // SAFETY: httpd runs post_config in the single-threaded parent with a
    // complete configuration; `s` is the main server, pconf its pool.
    let (pconf, s) = unsafe { (Pool::from_raw(pconf), Server::from_raw(s)) };
    guard("post_config", ON_PANIC, log_to(s), || match (pconf, s) {
        (Some(pconf), Some(s)) => hooks::post_config(pconf, s),
        _ => ON_PANIC,
    })
}

unsafe extern "C" fn child_init(pchild: *mut ffi::apr_pool_t, s: *mut ffi::server_rec) {
    // SAFETY: runs in each new child with its live process pool and the main server.
    let (pchild, s) = unsafe { (Pool::from_raw(pchild), Server::from_raw(s)) };
    guard("child_init", (), log_to(s), || {
        if let (Some(pchild), Some(s)) = (pchild, s) {
            hooks::child_init(pchild, s)
        }
    })
}

/// A new record in `p`, for httpd to hand back (null if there is no pool).
fn record<T: 'static>(p: Option<Pool>, value: impl FnOnce() -> T) -> *mut c_void {
    p.map_or(ptr::null_mut(), |p| p.keep(value()) as *mut c_void)
}

pub unsafe extern "C" fn create_dir_config(p: *mut ffi::apr_pool_t, _dir: *mut c_char) -> *mut c_void {
    // SAFETY: httpd passes a live pool that outlives the record.
    let p = unsafe { Pool::from_raw(p) };
    guard("create_dir_config", ptr::null_mut(), |m| log::main(log::ERR, m), || record(p, DirConfig::default))
}

pub unsafe extern "C" fn merge_dir_config(p: *mut ffi::apr_pool_t, base: *mut c_void, add: *mut c_void) -> *mut c_void {
    // SAFETY: both records were created by create_dir_config (or a previous
    // merge) and live at least as long as `p`.
    let (p, base, add) = unsafe { (Pool::from_raw(p), &*(base as *const DirConfig), &*(add as *const DirConfig)) };
    guard("merge_dir_config", ptr::null_mut(), |m| log::main(log::ERR, m), || record(p, || directives::merge(base, add)))
}

pub unsafe extern "C" fn create_server_config(p: *mut ffi::apr_pool_t, _s: *mut ffi::server_rec) -> *mut c_void {
    // SAFETY: httpd passes the live configuration pool.
    let p = unsafe { Pool::from_raw(p) };
    guard("create_server_config", ptr::null_mut(), |m| log::main(log::ERR, m), || record(p, ServerConf::default))
}

pub unsafe extern "C" fn merge_server_config(p: *mut ffi::apr_pool_t, base: *mut c_void, add: *mut c_void) -> *mut c_void {
    // SAFETY: both records come from create_server_config in a live pool.
    let (p, base, add) = unsafe { (Pool::from_raw(p), &*(base as *const ServerConf), &*(add as *const ServerConf)) };
    guard("merge_server_config", ptr::null_mut(), |m| log::main(log::ERR, m), || record(p, || ServerConf::merge(base, add)))
}
