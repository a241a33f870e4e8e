//! X-Sendfile, confined to the site's owner (`SuFcgiXSendfile on`): an app
//! answers with a header naming a file, the server sends that file itself
//! (its static-file code: ranges, conditional requests, HEAD) and the worker
//! is free at once. The app runs as the owner, but the server reads as its
//! own user, which may read what the owner may not (other customers' files
//! shared with the web server's group, its own configuration): so only a
//! regular file *owned by the owner*, below the owner's home or the vhost's
//! document root, reached without any symlink, is ever sent. The decision,
//! for both servers, is `open_confined`; it hands back the opened file, so
//! nothing can be swapped between the check and the sending.
//!
//! Why the server child opens it (as the web server's user) and not the
//! supervisor as the owner: see SECURITY.md (property 23).

use crate::core::fastcgi::cgi_headers::CgiHeaders;
use crate::core::identity::{is_normal_absolute, path_within};
use crate::core::sys::{self, FileStat};
use crate::core::sys_files::{fs_type, open_beneath, open_dir_path};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

/// Response headers that ask for it: mod_xsendfile's and lighttpd's names.
pub const HEADERS: [&[u8]; 2] = [b"x-sendfile", b"x-lighttpd-send-file"];
/// lighttpd's form with ranges (`X-Sendfile2: PATH START-END, …`), under lighttpd only.
pub const HEADER2: &[u8] = b"x-sendfile2";

pub fn is_sendfile_header(name: &[u8]) -> bool {
    HEADERS.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// What an app's response asked the server to send instead of its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    /// `X-Sendfile: PATH` (or `X-LIGHTTPD-send-file`).
    File(Vec<u8>),
    /// lighttpd's `X-Sendfile2: PATH RANGE, …` (under lighttpd only).
    Ranges(Vec<u8>),
}

/// Take the X-Sendfile request out of an app's headers (the client never
/// sees it), with the app's `Content-Length` (the file's length replaces
/// it). `ranges`: `X-Sendfile2` is understood too (lighttpd).
pub fn take_from(h: &mut CgiHeaders, ranges: bool) -> Option<Wanted> {
    let mut found = None;
    h.headers.retain(|(k, v)| {
        if is_sendfile_header(k) {
            found.get_or_insert_with(|| Wanted::File(v.clone()));
            false
        } else if ranges && k.eq_ignore_ascii_case(HEADER2) {
            found.get_or_insert_with(|| Wanted::Ranges(v.clone()));
            false
        } else {
            true
        }
    });
    if found.is_some() {
        h.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(b"content-length"));
    }
    found
}

/// A file that may be sent, opened.
#[derive(Debug)]
pub struct Confined {
    pub fd: OwnedFd,
    pub st: FileStat,
}

/// Filesystems whose "files" are the kernel's or other processes' state.
/// (The constants' type differs between architectures, hence the casts.)
#[allow(clippy::unnecessary_cast)]
fn is_pseudo_fs(t: i64) -> bool {
    [
        libc::PROC_SUPER_MAGIC as i64,
        libc::SYSFS_MAGIC as i64,
        libc::DEBUGFS_MAGIC as i64,
        libc::SECURITYFS_MAGIC as i64,
        libc::TRACEFS_MAGIC as i64,
        libc::CGROUP_SUPER_MAGIC as i64,
        libc::CGROUP2_SUPER_MAGIC as i64,
    ]
    .contains(&t)
}

/// Open `path` (as the app wrote it: absolute) for sending, if it is a
/// regular file of `owner_uid` below one of `roots` (the owner's home, the
/// vhost's document root), reached from that root without following any
/// symlink. Err is the reason, for the logs (the client gets a 403).
pub fn open_confined(path: &[u8], roots: &[&Path], owner_uid: u32) -> Result<Confined, String> {
    let shown = String::from_utf8_lossy(path).into_owned();
    if path.is_empty() || path.contains(&0) {
        return Err("X-Sendfile names no file".into());
    }
    let p = sys::path_from_bytes(path);
    if !is_normal_absolute(p) {
        return Err(format!("X-Sendfile {shown}: not an absolute path without . or .. components"));
    }
    let Some(root) = roots.iter().find(|r| path_within(r, p)) else {
        return Err(format!("X-Sendfile {shown}: not below the site owner's home or the document root"));
    };
    let rel = p.strip_prefix(root).map_err(|_| format!("X-Sendfile {shown}: not below {}", root.display()))?;
    let base = open_dir_path(root).map_err(|e| format!("X-Sendfile {shown}: cannot open {}: {e}", root.display()))?;
    // The root itself must be the owner's or the host's (a customer cannot
    // point their document root at someone else's tree).
    let bst = sys::fstat(base.as_raw_fd()).map_err(|e| format!("X-Sendfile {shown}: {e}"))?;
    if bst.uid != owner_uid && bst.uid != 0 {
        return Err(format!("X-Sendfile {shown}: {} belongs to uid {}, not to the site owner", root.display(), bst.uid));
    }
    let fd = open_beneath(base.as_raw_fd(), sys::path_bytes(rel)).map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) | Some(libc::EXDEV) => format!("X-Sendfile {shown}: a symlink on the way (not followed)"),
        Some(libc::ENOSYS) => format!("X-Sendfile {shown}: this kernel has no openat2 (5.6 or later needed)"),
        _ => format!("X-Sendfile {shown}: {e}"),
    })?;
    let st = sys::fstat(fd.as_raw_fd()).map_err(|e| format!("X-Sendfile {shown}: {e}"))?;
    if !st.is_file() {
        return Err(format!("X-Sendfile {shown}: not a regular file"));
    }
    if st.uid != owner_uid {
        return Err(format!("X-Sendfile {shown}: owned by uid {}, not by the site owner (uid {owner_uid})", st.uid));
    }
    if fs_type(&fd).map_or(true, is_pseudo_fs) {
        return Err(format!("X-Sendfile {shown}: not a file on a real filesystem"));
    }
    Ok(Confined { fd, st })
}

/// `%XX` decoding (lighttpd URL-decodes X-Sendfile paths; so do we there).
pub fn percent_decode(v: &[u8]) -> Vec<u8> {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'%' && i + 2 < v.len() {
            if let (Some(a), Some(b)) = (hex(v[i + 1]), hex(v[i + 2])) {
                out.push(a << 4 | b);
                i += 3;
                continue;
            }
        }
        out.push(v[i]);
        i += 1;
    }
    out
}

/// One piece of an `X-Sendfile2` answer: a (URL-encoded) path and a byte
/// range, `END` inclusive, None for "to the end".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub path: Vec<u8>,
    pub start: u64,
    pub end: Option<u64>,
}

/// `PATH START-[END], PATH START-[END], …` (lighttpd's X-Sendfile2).
pub fn parse_sendfile2(v: &[u8]) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    for part in v.split(|&c| c == b',') {
        let part = part.trim_ascii();
        if part.is_empty() {
            continue;
        }
        let sp = part.iter().rposition(|&c| c == b' ').ok_or("X-Sendfile2: a path without a range")?;
        let (path, range) = (part[..sp].trim_ascii(), &part[sp + 1..]);
        let dash = range.iter().position(|&c| c == b'-').ok_or("X-Sendfile2: a range without '-'")?;
        let num = |b: &[u8]| std::str::from_utf8(b).ok().and_then(|s| s.parse::<u64>().ok());
        let start = num(&range[..dash]).ok_or("X-Sendfile2: a bad range start")?;
        let end = if dash + 1 == range.len() { None } else { Some(num(&range[dash + 1..]).ok_or("X-Sendfile2: a bad range end")?) };
        if end.is_some_and(|e| e < start) || path.is_empty() {
            return Err("X-Sendfile2: an empty path or range".into());
        }
        out.push(Piece { path: percent_decode(path), start, end });
    }
    if out.is_empty() {
        return Err("X-Sendfile2 names no file".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, MetadataExt};

    fn tree() -> (std::path::PathBuf, u32) {
        let d = std::env::temp_dir().join(format!("sufcgi-sendfile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("www/files")).unwrap();
        std::fs::write(d.join("www/files/a.bin"), b"hello").unwrap();
        symlink(d.join("www/files/a.bin"), d.join("www/link.bin")).unwrap();
        symlink(d.join("www/files"), d.join("www/dirlink")).unwrap();
        let uid = std::fs::metadata(&d).unwrap().uid();
        (d, uid)
    }

    #[test]
    fn only_the_owners_files_below_a_root_without_symlinks() {
        let (d, uid) = tree();
        let www = d.join("www");
        let roots = [www.as_path()];
        let ok = open_confined(format!("{}/files/a.bin", www.display()).as_bytes(), &roots, uid).unwrap();
        assert_eq!(ok.st.size, 5);
        let no = |p: String, want: &str| {
            let e = open_confined(p.as_bytes(), &roots, uid).unwrap_err();
            assert!(e.contains(want), "{p}: {e}");
        };
        no(format!("{}/link.bin", www.display()), "symlink");
        no(format!("{}/dirlink/a.bin", www.display()), "symlink");
        no(format!("{}/files/../../x", www.display()), ". or ..");
        no("/etc/passwd".into(), "not below");
        no(format!("{}2/files/a.bin", www.display()), "not below");
        no(format!("{}/files", www.display()), "not a regular file");
        no(format!("{}/files/a.bin", www.display()).replace("a.bin", "none"), "No such file");
        // Someone else's file (here: uid+1 is not its owner).
        let e = open_confined(format!("{}/files/a.bin", www.display()).as_bytes(), &roots, uid + 1).unwrap_err();
        assert!(e.contains("not to the site owner") || e.contains("not by the site owner"), "{e}");
        // /proc is never below a root, and never a real filesystem anyway.
        let e = open_confined(b"/proc/self/environ", &[Path::new("/proc")], 0).unwrap_err();
        assert!(e.contains("symlink") || e.contains("real filesystem") || e.contains("owned by"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn the_request_is_taken_out_of_the_headers() {
        let mut h = CgiHeaders::status_only(200);
        h.headers = vec![(b"X-SendFile".to_vec(), b"/a".to_vec()), (b"Content-Length".to_vec(), b"3".to_vec()), (b"X-Other".to_vec(), b"1".to_vec())];
        let mut plain = h.clone();
        assert_eq!(take_from(&mut h, false), Some(Wanted::File(b"/a".to_vec())));
        assert_eq!(h.headers, vec![(b"X-Other".to_vec(), b"1".to_vec())]);
        plain.headers.remove(0);
        assert_eq!(take_from(&mut plain, true), None);
        assert_eq!(plain.headers.len(), 2, "nothing asked: Content-Length stays");
        let mut two = CgiHeaders::status_only(206);
        two.headers = vec![(b"X-Sendfile2".to_vec(), b"/a 0-1".to_vec())];
        assert_eq!(take_from(&mut two.clone(), false), None);
        assert_eq!(take_from(&mut two, true), Some(Wanted::Ranges(b"/a 0-1".to_vec())));
    }

    #[test]
    fn sendfile2_values() {
        assert_eq!(
            parse_sendfile2(b"/a/b%20c 0-99, /d 100-").unwrap(),
            vec![Piece { path: b"/a/b c".to_vec(), start: 0, end: Some(99) }, Piece { path: b"/d".to_vec(), start: 100, end: None }]
        );
        for bad in [&b""[..], b"/a", b"/a 5", b"/a x-1", b"/a 9-3", b" 0-1"] {
            assert!(parse_sendfile2(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(percent_decode(b"%2Fx%zz%4"), b"/x%zz%4");
    }
}
