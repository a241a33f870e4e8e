//! Logging through httpd's error log. Messages are always passed as data to a
//! constant "%s" format, never as the format itself. The request and server
//! handles (`Req::log`, `Server::log`) go through here; `main` logs against
//! the main server.

use super::ffi;
use super::module_index::module_index;
use std::ffi::CString;
use std::os::raw::c_int;

pub use ffi::{APLOG_ERR as ERR, APLOG_INFO as INFO, APLOG_WARNING as WARNING};

/// NUL bytes cannot pass through "%s"; show them instead of truncating silently.
fn c_message(msg: &[u8]) -> CString {
    let cleaned: Vec<u8> = msg.iter().map(|&b| if b == 0 { b'?' } else { b }).collect();
    CString::new(cleaned).unwrap_or_default()
}

/// Log against the main server (no server or request at hand).
pub fn main(level: u32, msg: &str) {
    // SAFETY: ap_log_error_ accepts a null server (it then uses the main server).
    unsafe { server(std::ptr::null(), level, msg) }
}

/// Log against a server (`s` may be null: the main server's log).
///
/// # Safety
/// `s` is null or a server_rec of the live configuration.
pub(super) unsafe fn server(s: *const ffi::server_rec, level: u32, msg: &str) {
    let m = c_message(msg.as_bytes());
    // SAFETY: file and format are NUL-terminated statics, `m` outlives the
    // call, and `s` is null or live (the caller's contract).
    unsafe { ffi::ap_log_error_(c"mod_sufcgi".as_ptr(), 0, module_index(), level as c_int, 0, s, c"%s".as_ptr(), m.as_ptr()) }
}

/// Log against a request (adds the client address, like httpd's own messages).
///
/// # Safety
/// `r` is the live request of the current hook.
pub(super) unsafe fn request(r: *const ffi::request_rec, level: u32, msg: &[u8]) {
    let m = c_message(msg);
    // SAFETY: `r` is live (the caller's contract); the strings are
    // NUL-terminated and outlive the call.
    unsafe { ffi::ap_log_rerror_(c"mod_sufcgi".as_ptr(), 0, module_index(), level as c_int, 0, r, c"%s".as_ptr(), m.as_ptr()) }
}
