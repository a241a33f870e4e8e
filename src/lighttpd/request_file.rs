//! X-Sendfile under lighttpd: the file (or, for `X-Sendfile2`, the ranges
//! of files) an app named, checked and opened by `core::sendfile`, sent as
//! lighttpd sends a static file — Content-Type from its mimetype table,
//! ETag and Last-Modified, `http_response_handle_cachable` (304/412), the
//! opened descriptor as a file chunk (sendfile, bounded memory), the body
//! marked finished so lighttpd answers Range requests itself and drops the
//! body for HEAD. Never by path: what was checked is what is sent. The
//! worker was released before this runs. As lighttpd's own X-Sendfile,
//! the path is URL-decoded first.

use super::req::{Header, Req};
use super::server::Handled;
use crate::core::fastcgi::cgi_headers::CgiHeaders;
use crate::core::sendfile::{open_confined, parse_sendfile2, percent_decode, Confined, Wanted};
use crate::core::sys;
use std::os::fd::AsFd;
use std::path::Path;

/// Send what `wanted` names, with the app's `headers`, if every file is one
/// of `owner_uid`'s below their home or `docroot`. Err: the reason it was
/// refused (nothing was added to the response then). Nothing of the
/// response may have been produced yet.
pub fn serve(req: Req, wanted: &Wanted, headers: &CgiHeaders, owner_uid: u32, docroot: &Path) -> Result<(), String> {
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
    req.apply_cgi_headers(headers);
    let single = matches!(wanted, Wanted::File(_));
    if let (true, Some((c, _, _, path))) = (single, pieces.first()) {
        if headers.content_type.is_none() {
            let ct = req.mimetype(path).unwrap_or_else(|| b"application/octet-stream".to_vec());
            req.set_header(Header::ContentType, b"Content-Type", &ct);
        }
        if req.status() == 200 {
            req.set_etag_of(c.fd.as_fd());
            let mtime = c.st.mtime_ns.div_euclid(1_000_000_000);
            if req.answered_conditional(mtime) {
                return Ok(());
            }
        }
    }
    for (c, start, len, path) in pieces {
        if len > 0 {
            req.append_file(&path, c.fd, start, len);
        }
    }
    req.finish_body();
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
/// document root is the request's), or say why not. As `serve`.
pub fn finish(req: Req, (wanted, headers): (Wanted, CgiHeaders), owner_uid: u32) -> Result<Handled, String> {
    let docroot = sys::path_from_bytes(&req.doc_root()).to_path_buf();
    serve(req, &wanted, &headers, owner_uid, &docroot)?;
    req.backend_done();
    Ok(Handled::FINISHED)
}
