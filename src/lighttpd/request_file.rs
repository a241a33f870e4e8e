//! X-Sendfile under lighttpd: the file (or, for `X-Sendfile2`, the ranges
//! of files) an app named, checked and opened by `core::sendfile`, sent as
//! lighttpd sends a static file — Content-Type from its mimetype table,
//! ETag and Last-Modified, `http_response_handle_cachable` (304/412), the
//! opened descriptor as a file chunk (sendfile, bounded memory), the body
//! marked finished so lighttpd answers Range requests itself and drops the
//! body for HEAD. Never by path: what was checked is what is sent. The
//! worker was released before this runs. As lighttpd's own X-Sendfile,
//! the path is URL-decoded first.

use super::ffi;
use crate::core::fastcgi::cgi_headers::CgiHeaders;
use crate::core::sendfile::{open_confined, parse_sendfile2, percent_decode, Confined, Wanted};
use crate::core::sys;
use std::os::fd::{AsRawFd, IntoRawFd};
use std::os::raw::c_char;
use std::path::Path;

/// Send what `wanted` names, with the app's `headers`, if every file is one
/// of `owner_uid`'s below their home or `docroot`. Err: the reason it was
/// refused (nothing was added to the response then).
///
/// # Safety
/// `r` is the live request, nothing of its response produced yet.
pub unsafe fn serve(r: *mut ffi::request_st, wanted: &Wanted, headers: &CgiHeaders, owner_uid: u32, docroot: &Path) -> Result<(), String> {
    let home = sys::getpwuid(owner_uid).ok().flatten().map(|pw| pw.home).unwrap_or_default();
    let roots: Vec<&Path> = [sys::path_from_bytes(&home), docroot].into_iter().filter(|p| !p.as_os_str().is_empty()).collect();
    // Everything is checked and opened before anything is added.
    let pieces: Vec<(Confined, u64, u64, Vec<u8>)> = match wanted {
        Wanted::File(v) => {
            let path = percent_decode(v);
            let c = open_confined(&path, &roots, owner_uid)?;
            let len = c.st.size;
            vec![(c, 0, len, path)]
        }
        Wanted::Ranges(v) => {
            let mut out = Vec::new();
            for p in parse_sendfile2(v)? {
                let c = open_confined(&p.path, &roots, owner_uid)?;
                let end = p.end.unwrap_or(c.st.size.saturating_sub(1));
                if p.start > end || end >= c.st.size {
                    return Err(format!("X-Sendfile2 {}: range {}-{end} beyond its {} bytes", String::from_utf8_lossy(&p.path), p.start, c.st.size));
                }
                out.push((c, p.start, end - p.start + 1, p.path));
            }
            out
        }
    };
    // SAFETY: r is live; lighttpd copies header names and values, takes the
    // descriptors it is given (it closes them with the chunks), and its
    // scratch buffer is ours for the duration of the call.
    unsafe {
        super::exchange::apply_headers(r, headers);
        let rr = &mut *r;
        let single = matches!(wanted, Wanted::File(_));
        if let (true, Some((c, _, _, path))) = (single, pieces.first()) {
            if headers.content_type.is_none() {
                let ct = ffi::stat_cache_mimetype_by_ext(rr.conf.mimetypes, path.as_ptr() as *const c_char, path.len() as u32);
                let ct = ct.as_ref().filter(|b| b.used > 1 && !b.ptr.is_null()).map_or(&b"application/octet-stream"[..], |b| {
                    std::slice::from_raw_parts(b.ptr as *const u8, b.used as usize - 1)
                });
                ffi::http_header_response_set(r, ffi::http_header_e_HTTP_HEADER_CONTENT_TYPE, c"Content-Type".as_ptr(), 12, ct.as_ptr() as *const c_char, ct.len() as u32);
            }
            if rr.http_status == 200 {
                let mut st: libc::stat = std::mem::zeroed();
                if libc::fstat(c.fd.as_raw_fd(), &mut st) == 0 && rr.conf.etag_flags() != 0 {
                    let b = rr.tmp_buf;
                    ffi::http_etag_create(b, &st as *const libc::stat as *const _, rr.conf.etag_flags() as i32);
                    if (*b).used > 1 {
                        ffi::http_header_response_set(r, ffi::http_header_e_HTTP_HEADER_ETAG, c"ETag".as_ptr(), 4, (*b).ptr, (*b).used - 1);
                    }
                }
                let mtime = c.st.mtime_ns.div_euclid(1_000_000_000);
                let lmod = ffi::http_response_set_last_modified(r, mtime);
                if ffi::http_response_handle_cachable(r, lmod, mtime) == ffi::handler_t_HANDLER_FINISHED as i32 {
                    return Ok(());
                }
            }
        }
        for (c, start, len, path) in pieces {
            let b = rr.tmp_buf;
            ffi::buffer_copy_string_len(b, path.as_ptr() as *const c_char, path.len());
            if len > 0 {
                ffi::http_chunk_append_file_fd_range(r, b, c.fd.into_raw_fd(), start as i64, len as i64);
            }
        }
        rr.resp_body_finished = 1;
    }
    Ok(())
}

/// What the app's headers ask for: with `x_sendfile` on and an X-Sendfile
/// header among them, the request is kept in `into` (sent by `finish`) and
/// None returned; else the headers, to apply as usual.
pub fn intercept(x_sendfile: bool, mut h: CgiHeaders, into: &mut Option<(Wanted, CgiHeaders)>) -> Option<CgiHeaders> {
    if x_sendfile {
        if let Some(w) = crate::core::sendfile::take_from(&mut h, true) {
            *into = Some((w, h));
            return None;
        }
    }
    Some(h)
}

/// The exchange ended cleanly with an X-Sendfile request: send it (the
/// document root is the request's), or say why not.
///
/// # Safety
/// As `serve`.
pub unsafe fn finish(r: *mut ffi::request_st, (wanted, headers): (Wanted, CgiHeaders), owner_uid: u32) -> Result<ffi::handler_t, String> {
    // SAFETY: the caller's contract.
    unsafe {
        let docroot = sys::path_from_bytes(super::route::buf(&(*r).physical.doc_root)).to_path_buf();
        serve(r, &wanted, &headers, owner_uid, &docroot)?;
        ffi::http_response_backend_done(r);
    }
    Ok(ffi::handler_t_HANDLER_FINISHED)
}
