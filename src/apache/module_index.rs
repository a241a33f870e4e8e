//! Our module's index into httpd's per-server and per-directory config
//! vectors, which is also the module tag of our log lines.
//!
//! httpd writes the index into the module record (module.rs) when it loads
//! the module. That record names the callbacks above the safe layer, so the
//! layer does not name it: it finds the record as httpd's modules find each
//! other's, by name (`ap_find_linked_module`), once per loaded image.

use super::ffi;
use std::ffi::CStr;
use std::os::raw::{c_int, c_void};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

/// The record's `name` (what `__FILE__` is for a C module).
pub const NAME: &CStr = c"mod_sufcgi.c";

/// The index httpd gave the module, or -1 before it was loaded (for the
/// log: APLOG_NO_MODULE).
pub fn module_index() -> c_int {
    static RECORD: AtomicPtr<ffi::module> = AtomicPtr::new(ptr::null_mut());
    let mut m = RECORD.load(Ordering::Acquire);
    if m.is_null() {
        // SAFETY: ap_find_linked_module only walks httpd's module list, which
        // changes only while the single-threaded parent reads configuration;
        // NAME is a static NUL-terminated string.
        m = unsafe { ffi::ap_find_linked_module(NAME.as_ptr()) };
        if m.is_null() {
            return -1;
        }
        RECORD.store(m, Ordering::Release);
    }
    // SAFETY: m is our own module record (a static of this loaded image);
    // httpd writes module_index once when it loads the module, before any
    // hook or directive handler can run, and afterwards only reads it.
    unsafe { (*m).module_index }
}

/// Our record in a module config vector (null when there is none).
///
/// # Safety
/// `v` is null or a live per-server or per-directory config vector.
pub unsafe fn slot(v: *mut ffi::ap_conf_vector_t) -> *mut c_void {
    let idx = module_index();
    if v.is_null() || idx < 0 {
        return ptr::null_mut();
    }
    // SAFETY: a config vector is an array of void* indexed by module_index
    // (ap_get_module_config is that cast in httpd), and it holds a slot for
    // every loaded module.
    unsafe { *(v as *mut *mut c_void).add(idx as usize) }
}
