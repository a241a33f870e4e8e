//! Thin safe helpers over APR pools, strings and tables.

use super::ffi;
use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_void};

/// Move `value` into memory whose lifetime is the APR pool `p`: the box is
/// dropped by a pool cleanup, so Rust-owned data dies with the pool.
///
/// # Safety
/// `p` must be a live APR pool.
pub unsafe fn pool_box<T>(p: *mut ffi::apr_pool_t, value: T) -> *mut T {
    let raw = Box::into_raw(Box::new(value));
    // SAFETY: `raw` stays valid until the cleanup runs exactly once, when the
    // pool is cleared or destroyed; the child cleanup is the no-op so a forked
    // process about to exec does not free it twice.
    unsafe {
        ffi::apr_pool_cleanup_register(p, raw as *const c_void, Some(drop_box::<T>), Some(ffi::apr_pool_cleanup_null));
    }
    raw
}

unsafe extern "C" fn drop_box<T>(data: *mut c_void) -> ffi::apr_status_t {
    // SAFETY: registered only by `pool_box::<T>` with a pointer from Box::into_raw.
    drop(unsafe { Box::from_raw(data as *mut T) });
    0
}

/// Borrow a C string as bytes; null becomes None.
///
/// # Safety
/// `p` is null or a NUL-terminated string that outlives `'a`.
pub unsafe fn bytes<'a>(p: *const c_char) -> Option<&'a [u8]> {
    if p.is_null() {
        None
    } else {
        // SAFETY: per the contract above.
        Some(unsafe { CStr::from_ptr(p) }.to_bytes())
    }
}

/// A NUL-terminated copy of `v` in pool `p` (or null if `v` holds a NUL).
///
/// # Safety
/// `p` must be a live APR pool.
pub unsafe fn pstr(p: *mut ffi::apr_pool_t, v: &[u8]) -> *const c_char {
    if v.contains(&0) {
        return std::ptr::null();
    }
    // SAFETY: apr_pstrmemdup copies `len` bytes and appends a NUL.
    unsafe { ffi::apr_pstrmemdup(p, v.as_ptr() as *const c_char, v.len()) }
}

/// Iterate an apr_table_t as (key, value) byte slices.
///
/// # Safety
/// `t` must be a live table not modified while the returned vector is used.
pub unsafe fn table_entries<'a>(t: *const ffi::apr_table_t) -> Vec<(&'a [u8], &'a [u8])> {
    if t.is_null() {
        return Vec::new();
    }
    // SAFETY: apr_table_elts is a cast in APR: a table begins with its
    // apr_array_header_t of apr_table_entry_t.
    let arr = unsafe { &*(t as *const ffi::apr_array_header_t) };
    let mut out = Vec::with_capacity(arr.nelts.max(0) as usize);
    let elts = arr.elts as *const ffi::apr_table_entry_t;
    for i in 0..arr.nelts.max(0) as usize {
        // SAFETY: i < nelts, and elts holds nelts entries.
        let e = unsafe { &*elts.add(i) };
        // SAFETY: keys and values are NUL-terminated strings in the table's pool.
        if let (Some(k), Some(v)) = unsafe { (bytes(e.key), bytes(e.val)) } {
            out.push((k, v));
        }
    }
    out
}

/// Add a header/env pair; APR copies both strings.
///
/// # Safety
/// `t` must be a live table.
pub unsafe fn table_add(t: *mut ffi::apr_table_t, k: &[u8], v: &[u8]) {
    if let (Ok(k), Ok(v)) = (CString::new(k), CString::new(v)) {
        // SAFETY: apr_table_add copies key and value into the table's pool.
        unsafe { ffi::apr_table_add(t, k.as_ptr(), v.as_ptr()) };
    }
}

/// Set (replace) a pair; APR copies both strings.
///
/// # Safety
/// `t` must be a live table.
pub unsafe fn table_set(t: *mut ffi::apr_table_t, k: &[u8], v: &[u8]) {
    if let (Ok(k), Ok(v)) = (CString::new(k), CString::new(v)) {
        // SAFETY: apr_table_set copies key and value into the table's pool.
        unsafe { ffi::apr_table_set(t, k.as_ptr(), v.as_ptr()) };
    }
}

/// A table value by key (case-insensitive, as APR compares).
///
/// # Safety
/// `t` must be a live table; the result lives as long as the entry.
pub unsafe fn table_get<'a>(t: *const ffi::apr_table_t, k: &[u8]) -> Option<&'a [u8]> {
    let k = CString::new(k).ok()?;
    // SAFETY: apr_table_get returns a pointer into the table or null.
    unsafe { bytes(ffi::apr_table_get(t, k.as_ptr())) }
}

/// Append bucket `e` to brigade `bb` (APR's `APR_BRIGADE_INSERT_TAIL`
/// macro, which bindgen cannot see: the ring's sentinel is the brigade's
/// list head viewed as a bucket, as APR_RING_SENTINEL computes it).
///
/// # Safety
/// `bb` is a live brigade and `e` a live bucket in no brigade.
pub unsafe fn brigade_insert_tail(bb: *mut ffi::apr_bucket_brigade, e: *mut ffi::apr_bucket) {
    // SAFETY: per the contract; the offsets are those of the C structs, so
    // `sentinel` aliases `bb->list` exactly as the macros do, and only its
    // `link` field is ever touched.
    unsafe {
        let sentinel = (std::ptr::addr_of_mut!((*bb).list) as *mut u8).sub(std::mem::offset_of!(ffi::apr_bucket, link)) as *mut ffi::apr_bucket;
        let last = (*bb).list.prev;
        (*e).link.next = sentinel;
        (*e).link.prev = last;
        (*last).link.next = e;
        (*bb).list.prev = e;
    }
}
