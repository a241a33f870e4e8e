//! Logging through lighttpd's error log. Messages are always passed as data
//! to a constant "%s" format, never as the format itself.

use super::ffi;
use std::ffi::CString;

fn c_message(msg: &[u8]) -> CString {
    // NUL bytes cannot pass through "%s": show them instead of truncating.
    let cleaned: Vec<u8> = msg.iter().map(|&b| if b == 0 { b'?' } else { b }).collect();
    CString::new(cleaned).unwrap_or_default()
}

/// Log `msg` to an error-log handle (server or request).
pub fn to(errh: *mut ffi::log_error_st, msg: &[u8]) {
    if errh.is_null() {
        return;
    }
    let m = c_message(msg);
    // SAFETY: errh is lighttpd's live log handle; file and format are
    // NUL-terminated statics and `m` outlives the call.
    unsafe { ffi::log_error(errh, c"mod_sufcgi".as_ptr(), 0, c"%s".as_ptr(), m.as_ptr()) };
}

/// Log against the server.
pub fn server(srv: *mut ffi::server, msg: &str) {
    // SAFETY: srv is the live server record lighttpd passed to the hook.
    let errh = unsafe { srv.as_ref().map_or(std::ptr::null_mut(), |s| s.errh) };
    to(errh, msg.as_bytes());
}

/// Log against a request (its conditional error log).
pub fn request(r: *mut ffi::request_st, msg: &[u8]) {
    // SAFETY: r is the live request lighttpd passed to the hook.
    let errh = unsafe { r.as_ref().map_or(std::ptr::null_mut(), |r| r.conf.errh as *mut ffi::log_error_st) };
    to(errh, msg);
}
