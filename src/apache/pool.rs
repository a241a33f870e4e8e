//! APR pools as the layer uses them: Rust values kept in a pool (dropped by
//! its cleanup), C strings copied into one and read out of httpd's records.

use super::ffi;
use std::ffi::CStr;
use std::os::raw::{c_char, c_void};
use std::ptr::{self, NonNull};

/// Borrow a C string as bytes; null becomes None.
///
/// # Safety
/// `p` is null or a NUL-terminated string that outlives `'a`.
pub(super) unsafe fn bytes<'a>(p: *const c_char) -> Option<&'a [u8]> {
    if p.is_null() {
        None
    } else {
        // SAFETY: per the contract above.
        Some(unsafe { CStr::from_ptr(p) }.to_bytes())
    }
}

/// An APR pool httpd handed a hook: the configuration pool, a process or
/// child pool. Those outlive every hook call that receives them and
/// everything this module keeps in them (which the pool's cleanup drops).
#[derive(Clone, Copy)]
pub struct Pool(NonNull<ffi::apr_pool_t>);

impl Pool {
    /// # Safety
    /// `p` is null or a pool httpd passed to the current hook.
    pub(super) unsafe fn from_raw(p: *mut ffi::apr_pool_t) -> Option<Pool> {
        NonNull::new(p).map(Pool)
    }

    pub(super) fn raw(self) -> *mut ffi::apr_pool_t {
        self.0.as_ptr()
    }

    /// Move `value` into memory whose lifetime is the pool's: the box is
    /// dropped by a pool cleanup, so Rust-owned data dies with the pool.
    /// The pointer is for httpd (a config record) or the caller's callbacks.
    pub fn keep<T: 'static>(self, value: T) -> *mut T {
        let raw = Box::into_raw(Box::new(value));
        // SAFETY: the pool is live (see Pool); `raw` stays valid until the
        // cleanup runs exactly once, when the pool is cleared or destroyed;
        // the child cleanup is the no-op so a forked process about to exec
        // does not free it twice.
        unsafe {
            ffi::apr_pool_cleanup_register(self.raw(), raw as *const c_void, Some(drop_box::<T>), Some(ffi::apr_pool_cleanup_null));
        }
        raw
    }

    /// A NUL-terminated copy of `v` in the pool (null if `v` holds a NUL).
    pub(super) fn pstr(self, v: &[u8]) -> *const c_char {
        if v.contains(&0) {
            return ptr::null();
        }
        // SAFETY: the pool is live; apr_pstrmemdup copies `len` bytes and appends a NUL.
        unsafe { ffi::apr_pstrmemdup(self.raw(), v.as_ptr() as *const c_char, v.len()) }
    }
}

unsafe extern "C" fn drop_box<T>(data: *mut c_void) -> ffi::apr_status_t {
    // SAFETY: registered only by `Pool::keep::<T>` with a pointer from Box::into_raw.
    drop(unsafe { Box::from_raw(data as *mut T) });
    0
}
