//! Logging through httpd's error log. Messages are always passed as data to a
//! constant "%s" format, never as the format itself.

use super::ffi;
use std::ffi::CString;
use std::os::raw::c_int;

pub use ffi::{APLOG_ERR as ERR, APLOG_INFO as INFO, APLOG_WARNING as WARNING};

fn module_index() -> c_int {
    // SAFETY: httpd writes module_index once when it loads the module, before any
    // hook or directive handler can run; afterwards it is only read.
    unsafe { (*std::ptr::addr_of!(super::module::sufcgi_module)).module_index }
}

/// NUL bytes cannot pass through "%s"; show them instead of truncating silently.
fn c_message(msg: &[u8]) -> CString {
    let cleaned: Vec<u8> = msg.iter().map(|&b| if b == 0 { b'?' } else { b }).collect();
    CString::new(cleaned).unwrap_or_default()
}

/// Log against a server (`s` may be null: the main server's log).
pub fn server(s: *const ffi::server_rec, level: u32, msg: &str) {
    let m = c_message(msg.as_bytes());
    // SAFETY: file and format are NUL-terminated statics, `m` outlives the call,
    // and ap_log_error_ accepts a null server (it then uses the main server).
    unsafe {
        ffi::ap_log_error_(
            c"mod_sufcgi".as_ptr(),
            0,
            module_index(),
            level as c_int,
            0,
            s,
            c"%s".as_ptr(),
            m.as_ptr(),
        )
    }
}

/// Log against a request (adds the client address, like httpd's own messages).
pub fn request(r: *const ffi::request_rec, level: u32, msg: &[u8]) {
    let m = c_message(msg);
    // SAFETY: `r` is the live request httpd handed to the current hook; the
    // strings are NUL-terminated and outlive the call.
    unsafe {
        ffi::ap_log_rerror_(
            c"mod_sufcgi".as_ptr(),
            0,
            module_index(),
            level as c_int,
            0,
            r,
            c"%s".as_ptr(),
            m.as_ptr(),
        )
    }
}
