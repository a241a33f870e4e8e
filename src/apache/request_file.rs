//! X-Sendfile under Apache: the file an app named (checked and opened by
//! `core::sendfile`) is sent the way httpd's own default handler sends a
//! static file (`Req::send_file`). The worker was released before this
//! runs. What it sends is the descriptor that was checked.

use super::req::{Req, Status};
use crate::core::sendfile::{open_confined, Wanted};
use crate::core::sys;
use std::path::Path;

/// Send the file `wanted` names, if it is one of `owner_uid`'s files below
/// their home or the document root (the request in its handler phase, no
/// byte of the response sent). Ok is the handler's return value; Err the
/// reason it was refused (the caller answers 403 and logs it).
pub fn serve(r: Req<'_>, wanted: &Wanted, owner_uid: u32) -> Result<Status, String> {
    let Wanted::File(path) = wanted else { return Err("X-Sendfile2 is understood under lighttpd only".into()) };
    let home = sys::getpwuid(owner_uid).ok().flatten().map(|pw| pw.home).unwrap_or_default();
    let docroot = r.document_root().unwrap_or(b"").to_vec();
    let roots: Vec<&Path> = [home.as_slice(), docroot.as_slice()].into_iter().filter(|b| !b.is_empty()).map(sys::path_from_bytes).collect();
    let file = open_confined(path, &roots, owner_uid)?;
    r.send_file(file.fd, path)
}
