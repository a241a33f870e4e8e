//! X-Sendfile under Apache: the file an app named (checked and opened by
//! `core::sendfile`) is sent the way httpd's own default handler sends a
//! static file — finfo, Last-Modified, ETag, Content-Length,
//! `ap_meets_conditions` (304/412), a file bucket and EOS in one brigade
//! (so the byterange filter answers Range requests and the core output
//! filter uses sendfile), no body for HEAD. The worker was released before
//! this runs. What it sends is the descriptor that was checked, handed to
//! APR (`apr_file_dup`, so the file's lifetime follows the bucket even when
//! the event MPM sets it aside after the request pool is gone).

use super::apr::{bytes, brigade_insert_tail, pstr};
use super::ffi;
use crate::core::sendfile::{open_confined, Wanted};
use crate::core::sys;
use std::os::fd::AsRawFd;
use std::os::raw::c_int;
use std::path::Path;

/// Send the file `wanted` names, if it is one of `owner_uid`'s files below
/// their home or the document root. Ok is the handler's return value; Err
/// the reason it was refused (the caller answers 403 and logs it).
///
/// # Safety
/// `r` is the live request in its handler phase, no byte of the response sent.
pub unsafe fn serve(r: *mut ffi::request_rec, wanted: &Wanted, owner_uid: u32) -> Result<c_int, String> {
    let Wanted::File(path) = wanted else { return Err("X-Sendfile2 is understood under lighttpd only".into()) };
    let home = sys::getpwuid(owner_uid).ok().flatten().map(|pw| pw.home).unwrap_or_default();
    // SAFETY: r is live; the document root is a string of the server's config.
    let docroot = unsafe { bytes(ffi::ap_document_root(r)) }.unwrap_or(b"").to_vec();
    let roots: Vec<&Path> = [home.as_slice(), docroot.as_slice()].into_iter().filter(|b| !b.is_empty()).map(sys::path_from_bytes).collect();
    let file = open_confined(path, &roots, owner_uid)?;
    // SAFETY: r, its pool and connection are live; every APR object made
    // here lives in r->pool (the file's descriptor is APR's own dup).
    unsafe {
        let rr = &mut *r;
        let mut raw: ffi::apr_os_file_t = file.fd.as_raw_fd();
        let mut borrowed: *mut ffi::apr_file_t = std::ptr::null_mut();
        let flags = (ffi::APR_FOPEN_READ | ffi::APR_FOPEN_SENDFILE_ENABLED) as i32;
        if ffi::apr_os_file_put(&mut borrowed, &mut raw, flags, rr.pool) != 0 {
            return Err("X-Sendfile: APR could not take the file".into());
        }
        let mut f: *mut ffi::apr_file_t = std::ptr::null_mut();
        if ffi::apr_file_dup(&mut f, borrowed, rr.pool) != 0 || f.is_null() {
            return Err("X-Sendfile: APR could not take the file".into());
        }
        drop(file.fd);
        if ffi::apr_file_info_get(&mut rr.finfo, ffi::APR_FINFO_NORM as i32, f) != 0 {
            return Err("X-Sendfile: cannot stat the file".into());
        }
        rr.filename = pstr(rr.pool, path) as *mut _;
        if rr.content_type.is_null() {
            // mod_mime's answer for the file's name, as for a static file
            // (the handler it may pick is not ours to change now).
            let handler = rr.handler;
            ffi::ap_run_type_checker(r);
            rr.handler = handler;
        }
        ffi::ap_update_mtime(r, rr.finfo.mtime);
        ffi::ap_set_last_modified(r);
        ffi::ap_set_etag(r);
        ffi::ap_set_accept_ranges(r);
        ffi::ap_set_content_length(r, rr.finfo.size);
        let rc = ffi::ap_meets_conditions(r);
        if rc != ffi::OK as c_int {
            return Ok(rc);
        }
        let c = rr.connection;
        let bb = ffi::apr_brigade_create(rr.pool, (*c).bucket_alloc);
        if rr.header_only == 0 && rr.finfo.size > 0 {
            ffi::apr_brigade_insert_file(bb, f, 0, rr.finfo.size, rr.pool);
        }
        brigade_insert_tail(bb, ffi::apr_bucket_eos_create((*c).bucket_alloc));
        let rv = ffi::ap_pass_brigade(rr.output_filters, bb);
        if rv != 0 && (*c).aborted == 0 {
            return Ok(ffi::HTTP_INTERNAL_SERVER_ERROR as c_int);
        }
        Ok(ffi::OK as c_int)
    }
}
