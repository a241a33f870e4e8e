//! The passwd and group databases, through the reentrant `get*_r` calls,
//! copied out of libc's buffers.

use std::ffi::CStr;
use std::io;

use super::cstring;

/// One passwd entry, copied out of libc's buffers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passwd {
    pub name: Vec<u8>,
    pub uid: u32,
    pub gid: u32,
    pub home: Vec<u8>,
}

/// Runs a `get*_r` lookup with a buffer for its strings, doubling the buffer
/// while it says ERANGE (up to 1 MiB). `attempt` returns the lookup's error
/// code, or what it made of the answer.
fn with_lookup_buffer<T>(mut attempt: impl FnMut(&mut [libc::c_char]) -> Result<T, libc::c_int>) -> io::Result<T> {
    let mut buf: Vec<libc::c_char> = vec![0; 1024];
    loop {
        match attempt(&mut buf) {
            Ok(v) => return Ok(v),
            Err(libc::ERANGE) if buf.len() < (1 << 20) => {
                let n = buf.len() * 2;
                buf.resize(n, 0);
            }
            Err(rc) => return Err(io::Error::from_raw_os_error(rc)),
        }
    }
}

fn getpw_with<F>(mut call: F) -> io::Result<Option<Passwd>>
where
    F: FnMut(*mut libc::passwd, *mut libc::c_char, usize, *mut *mut libc::passwd) -> libc::c_int,
{
    with_lookup_buffer(|buf| {
        // SAFETY: zeroed passwd is a valid out-struct; buf is writable for buf.len() bytes;
        // on success `result` points at `pw`, whose strings point into `buf` (both alive here).
        unsafe {
            let mut pw: libc::passwd = std::mem::zeroed();
            let mut result: *mut libc::passwd = std::ptr::null_mut();
            let rc = call(&mut pw, buf.as_mut_ptr(), buf.len(), &mut result);
            if rc != 0 {
                return Err(rc);
            }
            if result.is_null() {
                return Ok(None);
            }
            let cs = |p: *const libc::c_char| -> Vec<u8> {
                if p.is_null() {
                    Vec::new()
                } else {
                    CStr::from_ptr(p).to_bytes().to_vec()
                }
            };
            Ok(Some(Passwd { name: cs(pw.pw_name), uid: pw.pw_uid, gid: pw.pw_gid, home: cs(pw.pw_dir) }))
        }
    })
}

/// `getpwnam_r`; `Ok(None)` when there is no such user.
pub fn getpwnam(name: &[u8]) -> io::Result<Option<Passwd>> {
    let c = cstring(name)?;
    // SAFETY: forwarded pointers come from `getpw_with`, valid for the call.
    getpw_with(|pw, buf, len, res| unsafe { libc::getpwnam_r(c.as_ptr(), pw, buf, len, res) })
}

/// `getpwuid_r`; `Ok(None)` when there is no such uid.
pub fn getpwuid(uid: u32) -> io::Result<Option<Passwd>> {
    // SAFETY: forwarded pointers come from `getpw_with`, valid for the call.
    getpw_with(|pw, buf, len, res| unsafe { libc::getpwuid_r(uid, pw, buf, len, res) })
}

/// `getgrnam_r`: the gid of group `name`; `Ok(None)` when there is no such group.
pub fn getgrnam_gid(name: &[u8]) -> io::Result<Option<u32>> {
    let c = cstring(name)?;
    with_lookup_buffer(|buf| {
        // SAFETY: zeroed group is a valid out-struct; buf is writable for
        // buf.len() bytes; only gr_gid is read, on success.
        unsafe {
            let mut gr: libc::group = std::mem::zeroed();
            let mut result: *mut libc::group = std::ptr::null_mut();
            let rc = libc::getgrnam_r(c.as_ptr(), &mut gr, buf.as_mut_ptr(), buf.len(), &mut result);
            if rc != 0 {
                return Err(rc);
            }
            Ok((!result.is_null()).then_some(gr.gr_gid))
        }
    })
}

/// Supplementary groups of `name` (including `gid`), from the group database.
pub fn getgrouplist(name: &[u8], gid: u32) -> io::Result<Vec<libc::gid_t>> {
    let c = cstring(name)?;
    let mut n: libc::c_int = 32;
    loop {
        let mut groups: Vec<libc::gid_t> = vec![0; n as usize];
        let mut count = n;
        // SAFETY: `groups` has room for `count` entries; glibc updates `count` to the real size.
        let rc = unsafe { libc::getgrouplist(c.as_ptr(), gid, groups.as_mut_ptr(), &mut count) };
        if rc >= 0 {
            groups.truncate(count.max(0) as usize);
            return Ok(groups);
        }
        if count <= n {
            // glibc reports the needed size; if it did not grow, give up rather than loop.
            if n >= 65536 {
                return Err(io::Error::other("getgrouplist: too many groups"));
            }
            n *= 2;
        } else {
            n = count;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_lookup_by_name() {
        assert_eq!(getgrnam_gid(b"root").unwrap(), Some(0));
        assert_eq!(getgrnam_gid(b"sufcgi-no-such-group").unwrap(), None);
        assert!(getgrnam_gid(b"a\0b").is_err(), "a NUL in the name is an error, not a lookup");
    }
}
