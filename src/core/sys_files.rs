//! Opening files whose path someone else chose, without being fooled:
//! with another user's filesystem identity (the customer's log, opened by
//! the root supervisor as the customer), and beneath a directory without
//! following any symlink (`openat2`, for X-Sendfile). The syscall wrappers
//! only; the policies live with their callers.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use super::sys::{cpath, cstring, cvt};

/// Whose filesystem identity an open runs with: uid, gid and supplementary groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsIdentity {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<libc::gid_t>,
}

/// `open(2)` of `path` with `who`'s filesystem identity (fsuid, fsgid and
/// supplementary groups), so the kernel decides as it would for them: a
/// file they could not create or write cannot be reached, and a file made
/// anew is theirs. For a single-threaded root process (the supervisor):
/// the ids are set for this thread only and restored before returning.
pub fn open_as(path: &Path, flags: libc::c_int, mode: u32, who: &FsIdentity) -> io::Result<OwnedFd> {
    let c = cpath(path)?;
    let mut saved: Vec<libc::gid_t> = vec![0; 256];
    // SAFETY: `saved` has room for 256 gids; getgroups writes at most that.
    let n = unsafe { libc::getgroups(saved.len() as libc::c_int, saved.as_mut_ptr()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    saved.truncate(n as usize);
    let set_groups = |g: &[libc::gid_t]| -> io::Result<()> {
        // The raw syscall changes this thread only (glibc's setgroups would
        // signal every thread); the supervisor has just the one.
        // SAFETY: `g` is valid for `g.len()` gids.
        let rc = unsafe { libc::syscall(libc::SYS_setgroups, g.len() as libc::c_long, g.as_ptr()) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    set_groups(&who.groups)?;
    // SAFETY: setfsgid/setfsuid only change this thread's filesystem ids;
    // `c` is NUL-terminated and outlives the open; the ids are put back
    // whatever the open did.
    let (fd, err) = unsafe {
        libc::setfsgid(who.gid);
        libc::setfsuid(who.uid);
        let fd = libc::open(c.as_ptr(), flags | libc::O_CLOEXEC | libc::O_NOCTTY, mode as libc::c_uint);
        let err = io::Error::last_os_error();
        libc::setfsuid(0);
        libc::setfsgid(0);
        (fd, err)
    };
    let restored = set_groups(&saved);
    if fd < 0 {
        return Err(err);
    }
    // SAFETY: a freshly opened fd owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    restored?;
    Ok(fd)
}

/// `struct open_how` of openat2(2).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_NO_SYMLINKS: u64 = 0x04;
const RESOLVE_BENEATH: u64 = 0x08;

/// Opens `rel` (relative, read-only) beneath the directory `dir` without
/// following any symlink or `/proc` magic link on the way and without
/// leaving `dir` (`..` above it, an absolute path): `openat2` with
/// `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`. The
/// kernel resolves it in one step, so nothing renamed meanwhile can make it
/// follow a link. ENOSYS on kernels before 5.6 (callers refuse then).
pub fn open_beneath(dir: RawFd, rel: &[u8]) -> io::Result<OwnedFd> {
    let c = cstring(rel)?;
    let how = OpenHow {
        flags: (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_NOFOLLOW) as u64,
        mode: 0,
        resolve: RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: `c` is NUL-terminated and `how` a valid open_how of the size
    // passed; both outlive the call. The result is checked, then owned.
    let fd = unsafe { libc::syscall(libc::SYS_openat2, dir, c.as_ptr(), &how as *const OpenHow, std::mem::size_of::<OpenHow>()) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a freshly opened fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Opens a directory by its path for use as `open_beneath`'s base
/// (`O_PATH`: no read permission needed, nothing followed at the end).
pub fn open_dir_path(path: &Path) -> io::Result<OwnedFd> {
    let c = cpath(path)?;
    // SAFETY: `c` is NUL-terminated; the result is checked, then owned.
    let fd = cvt(unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC) })?;
    // SAFETY: a freshly opened fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The filesystem type (`f_type` of fstatfs) of what `fd` refers to.
pub fn fs_type(fd: &OwnedFd) -> io::Result<i64> {
    // SAFETY: zeroed statfs is a valid out-buffer; the fd is open.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        cvt(libc::fstatfs(fd.as_raw_fd(), &mut st))?;
        Ok(st.f_type as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn open_beneath_refuses_links_and_escapes() {
        let dir = std::env::temp_dir().join(format!("sufcgi-beneath-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/f.txt"), b"x").unwrap();
        symlink(dir.join("sub/f.txt"), dir.join("link")).unwrap();
        symlink("sub", dir.join("dirlink")).unwrap();
        let base = open_dir_path(&dir).unwrap();
        assert!(open_beneath(base.as_raw_fd(), b"sub/f.txt").is_ok());
        for bad in [&b"link"[..], b"dirlink/f.txt", b"../etc/passwd", b"/etc/passwd", b"sub/../../x"] {
            assert!(open_beneath(base.as_raw_fd(), bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let proc_fd = open_dir_path(Path::new(&format!("/proc/{}", std::process::id()))).unwrap();
        assert!(open_beneath(proc_fd.as_raw_fd(), b"exe").is_err(), "a magic link is not followed");
        assert!(fs_type(&proc_fd).unwrap() == libc::PROC_SUPER_MAGIC as _);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn open_as_keeps_and_restores_the_callers_ids() {
        // SAFETY: getegid cannot fail.
        let me = FsIdentity { uid: super::super::sys::geteuid(), gid: unsafe { libc::getegid() }, groups: vec![] };
        // Switching groups needs root: fail saying so rather than pass untested (CI runs as root).
        assert_eq!(me.uid, 0, "open_as_keeps_and_restores_the_callers_ids needs root");
        let p = std::env::temp_dir().join(format!("sufcgi-openas-{}", std::process::id()));
        let nobody = FsIdentity { uid: 65534, gid: 65534, groups: vec![65534] };
        // /proc/self/... is readable by anyone; a root-only directory is not writable as nobody.
        let d = std::env::temp_dir().join(format!("sufcgi-openas-dir-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let e = open_as(&d.join("x.log"), libc::O_WRONLY | libc::O_CREAT, 0o640, &nobody).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EACCES));
        // And afterwards this thread is root again.
        let f = open_as(&p, libc::O_WRONLY | libc::O_CREAT, 0o640, &me).unwrap();
        drop(f);
        assert_eq!(std::fs::metadata(&p).map(|m| std::os::unix::fs::MetadataExt::uid(&m)).unwrap(), 0);
        let mut g: Vec<libc::gid_t> = vec![0; 64];
        // SAFETY: g has room for 64 gids.
        let n = unsafe { libc::getgroups(64, g.as_mut_ptr()) };
        assert!(n >= 0 && !g[..n as usize].contains(&65534), "groups restored");
        let _ = std::fs::remove_file(&p);
        let _ = std::fs::remove_dir_all(&d);
    }
}
