//! Unix stream sockets: pairs, listening and connecting, the peer's and
//! each message's credentials, and sends that never raise SIGPIPE.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::{cvt, write_loop};

/// `socketpair(AF_UNIX, SOCK_STREAM)`, both ends close-on-exec.
pub fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a writable array of two ints.
    cvt(unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) })?;
    // SAFETY: socketpair succeeded, so both fds are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn sockaddr_un(path: &Path) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: sockaddr_un is plain old data; all-zero is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.is_empty() || bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "socket path too long or invalid"));
    }
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    Ok((addr, len as libc::socklen_t))
}

/// Creates a listening Unix stream socket at `path` with mode `mode` (via umask around bind).
/// The fd is close-on-exec and blocking. `path` must not exist.
pub fn unix_listen(path: &Path, backlog: i32, mode: u32) -> io::Result<OwnedFd> {
    let (addr, len) = sockaddr_un(path)?;
    // SAFETY: plain socket creation; the result is checked.
    let fd = cvt(unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `fd` was just created and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mask = (!mode) & 0o777;
    // SAFETY: umask only swaps the process's mask; restored right after bind. The
    // processes calling this (root parent at start-up, the supervisor) are single-threaded.
    let old = unsafe { libc::umask(mask as libc::mode_t) };
    // SAFETY: `addr` is a valid sockaddr_un of `len` bytes.
    let rc = unsafe { libc::bind(fd.as_raw_fd(), &addr as *const libc::sockaddr_un as *const libc::sockaddr, len) };
    // SAFETY: restores the previous mask.
    unsafe { libc::umask(old) };
    cvt(rc)?;
    // SAFETY: listening on a bound socket fd we own.
    cvt(unsafe { libc::listen(fd.as_raw_fd(), backlog) })?;
    Ok(fd)
}

/// `SO_PEERCRED` of a connected Unix socket: (pid, uid, gid).
pub fn peer_cred(fd: RawFd) -> io::Result<(i32, u32, u32)> {
    // SAFETY: ucred is plain data; getsockopt writes at most `len` bytes into it.
    unsafe {
        let mut cred: libc::ucred = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        cvt(libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut libc::ucred as *mut libc::c_void,
            &mut len,
        ))?;
        Ok((cred.pid, cred.uid, cred.gid))
    }
}

/// `send(2)` of all of `buf` with `MSG_NOSIGNAL`: a closed peer is an `EPIPE`
/// error, never a SIGPIPE in a host process that did not ignore it.
pub fn send_all(fd: RawFd, buf: &[u8]) -> io::Result<()> {
    // SAFETY: `b` is valid for `b.len()` bytes.
    write_loop(buf, |b| unsafe { libc::send(fd, b.as_ptr() as *const libc::c_void, b.len(), libc::MSG_NOSIGNAL) })
}

/// Turns on `SO_PASSCRED`: every `recv_with_uid` then learns the sender's uid
/// from the kernel, per message, unforgeable.
pub fn set_passcred(fd: RawFd) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: `one` is a valid int of the given size.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PASSCRED,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

/// `recvmsg` on a socket with `SO_PASSCRED`: bytes read and the sender's uid
/// (`None` if the kernel attached no credentials). On a stream socket the
/// kernel never merges bytes from senders with different credentials into one read.
pub fn recv_with_uid(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, Option<u32>)> {
    // u64 backing keeps the control buffer aligned for cmsghdr.
    let mut cbuf = [0u64; 16];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr() as *mut libc::c_void, iov_len: buf.len() };
    // SAFETY: msghdr points at `iov` and `cbuf`, both alive and sized as declared;
    // the CMSG_* walk stays inside `msg_controllen` as reported by the kernel.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = std::mem::size_of_val(&cbuf) as _;
        let n = libc::recvmsg(fd, &mut msg, libc::MSG_CMSG_CLOEXEC);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut uid = None;
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_CREDENTIALS {
                let cred = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::ucred);
                uid = Some(cred.uid);
            } else if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                // Nobody should pass us fds here: close them.
                let data = libc::CMSG_DATA(c) as *const libc::c_int;
                let count = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / std::mem::size_of::<libc::c_int>();
                for k in 0..count {
                    libc::close(std::ptr::read_unaligned(data.add(k)));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        Ok((n as usize, uid))
    }
}

/// A non-blocking, close-on-exec connect to the Unix stream socket at the
/// path made of `parts`, concatenated (built in place, no allocation).
pub fn connect_unix_nonblocking(parts: &[&[u8]]) -> io::Result<OwnedFd> {
    // SAFETY: sockaddr_un is plain data; zeroed is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let total: usize = parts.iter().map(|p| p.len()).sum();
    if total >= addr.sun_path.len() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "socket path too long"));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let mut at = 0;
    for p in parts {
        for (d, s) in addr.sun_path[at..at + p.len()].iter_mut().zip(p.iter()) {
            *d = *s as libc::c_char;
        }
        at += p.len();
    }
    let bytes_len = total;
    // SAFETY: plain socket(2) call; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket we own.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = (std::mem::size_of::<libc::sa_family_t>() + bytes_len + 1) as libc::socklen_t;
    // SAFETY: addr is initialised and len covers the family plus the path and its NUL.
    let rc = unsafe { libc::connect(fd, &addr as *const _ as *const libc::sockaddr, len) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(owned)
}

/// Send what a non-blocking socket takes now, without SIGPIPE: Ok(0) also
/// when it would block; Err when the peer stopped reading.
pub fn send_nonblocking(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: writing from a live buffer to a socket the caller owns.
    let n = unsafe { libc::send(fd, buf.as_ptr() as *const _, buf.len(), libc::MSG_NOSIGNAL) };
    if n >= 0 {
        return Ok(n as usize);
    }
    let e = io::Error::last_os_error();
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
        _ => Err(e),
    }
}

/// recv(2) into `buf`: Ok(0) at end of stream; Err(WouldBlock) when nothing
/// is there yet (non-blocking sockets).
pub fn recv_nonblocking(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    recv_flags(fd, buf, 0)
}

/// As `recv_nonblocking`, but the bytes stay in the socket (MSG_PEEK): the
/// next read returns them again.
pub fn peek_nonblocking(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    recv_flags(fd, buf, libc::MSG_PEEK)
}

/// Read and drop the next `n` bytes (ones peeked at before: they are there).
/// Ok(false) when fewer came (the peer went away meanwhile).
pub fn discard(fd: RawFd, mut n: usize) -> io::Result<bool> {
    let mut buf = [0u8; 4096];
    while n > 0 {
        let want = n.min(buf.len());
        match recv_flags(fd, &mut buf[..want], libc::MSG_DONTWAIT)? {
            0 => return Ok(false),
            got => n -= got,
        }
    }
    Ok(true)
}

fn recv_flags(fd: RawFd, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: reading into a live buffer of buf.len() bytes.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr() as *mut _, buf.len(), flags) };
    if n >= 0 {
        Ok(n as usize)
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn peeked_bytes_stay_until_discarded() {
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.write_all(b"answer").unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(peek_nonblocking(a.as_raw_fd(), &mut buf).unwrap(), 6);
        assert_eq!(peek_nonblocking(a.as_raw_fd(), &mut buf).unwrap(), 6, "still there");
        b.write_all(b"next").unwrap();
        assert!(discard(a.as_raw_fd(), 6).unwrap());
        assert_eq!(recv_nonblocking(a.as_raw_fd(), &mut buf).unwrap(), 4);
        assert_eq!(&buf[..4], b"next");
        // Fewer bytes than asked for: the peer closed.
        b.write_all(b"ab").unwrap();
        drop(b);
        assert!(!discard(a.as_raw_fd(), 3).unwrap());
    }
}
