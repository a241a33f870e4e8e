//! What the cgroup code needs from the kernel, behind one trait so that the
//! same code runs on cgroupfs and, in unit tests, on a temporary directory
//! laid out like it (cgroup_fake.rs); and where the hierarchies are: the
//! server's own cgroup in each (`/proc/self/cgroup`) and the mounts
//! (`/proc/self/mountinfo`), parsed from their text.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::core::sys;

/// cgroupfs operations. Every write is one `write(2)`, as cgroupfs wants.
pub(super) trait CgFs {
    fn mkdir(&self, p: &Path) -> io::Result<()>;
    fn rmdir(&self, p: &Path) -> io::Result<()>;
    fn read(&self, p: &Path) -> io::Result<String>;
    fn write(&self, p: &Path, v: &str) -> io::Result<()>;
    /// `cgroup.procs` opened for writing, for a new process to join with "0".
    fn open_procs(&self, p: &Path) -> io::Result<OwnedFd>;
    /// Names of the child groups of `p`.
    fn subgroups(&self, p: &Path) -> io::Result<Vec<String>>;
    fn exists(&self, p: &Path) -> bool;
    fn signal(&self, pid: libc::pid_t, sig: libc::c_int) -> io::Result<()>;
    /// A short pause while the kernel finishes something (freezing).
    fn pause(&self) {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// The real thing.
pub(super) struct Kernel;

fn open_write(p: &Path, append: bool) -> io::Result<OwnedFd> {
    let c = sys::cpath(p)?;
    let flags = libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW | if append { libc::O_APPEND } else { libc::O_TRUNC };
    // SAFETY: `c` is a NUL-terminated path; the fd is owned below.
    let fd = unsafe { libc::open(c.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl CgFs for Kernel {
    fn mkdir(&self, p: &Path) -> io::Result<()> {
        sys::mkdir(p, 0o755)
    }

    fn rmdir(&self, p: &Path) -> io::Result<()> {
        let c = sys::cpath(p)?;
        // SAFETY: a NUL-terminated path.
        sys::cvt(unsafe { libc::rmdir(c.as_ptr()) }).map(|_| ())
    }

    fn read(&self, p: &Path) -> io::Result<String> {
        std::fs::read_to_string(p)
    }

    fn write(&self, p: &Path, v: &str) -> io::Result<()> {
        let fd = open_write(p, p.file_name().is_some_and(|n| n == "cgroup.procs"))?;
        // SAFETY: writing our own buffer to our own descriptor.
        let n = unsafe { libc::write(fd.as_raw_fd(), v.as_ptr() as *const libc::c_void, v.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n as usize != v.len() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, format!("short write to {}", p.display())));
        }
        Ok(())
    }

    fn open_procs(&self, p: &Path) -> io::Result<OwnedFd> {
        open_write(p, true)
    }

    fn subgroups(&self, p: &Path) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(p)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                if let Some(n) = e.file_name().to_str() {
                    out.push(n.to_string());
                }
            }
        }
        Ok(out)
    }

    fn exists(&self, p: &Path) -> bool {
        sys::lstat(p).is_ok()
    }

    fn signal(&self, pid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
        sys::kill(pid, sig)
    }
}

/// The pids listed in a `cgroup.procs` text.
pub(super) fn parse_pids(text: &str) -> Vec<libc::pid_t> {
    text.split_whitespace().filter_map(|w| w.parse().ok()).filter(|&p| p > 0).collect()
}

/// One line's value in a flat-keyed file (`cpu.stat`, `memory.events`,
/// `memory.oom_control`): `key value`.
pub(super) fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        (w.next() == Some(key)).then(|| w.next()?.parse().ok()).flatten()
    })
}

/// A file holding one number (`max` reads as None).
pub(super) fn number(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// One cgroup v1 hierarchy: its mount, the controllers it carries, and the
/// server's own group in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct V1Mount {
    pub controllers: Vec<String>,
    /// Where the server's own group is: mount point + own path.
    pub own_dir: PathBuf,
}

/// What `/proc/self/cgroup` and `/proc/self/mountinfo` say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Layout {
    /// The v2 (unified) hierarchy: mount point, and the server's own group there.
    pub v2: Option<(PathBuf, PathBuf)>,
    /// v1 hierarchies with a controller sufcgi uses.
    pub v1: Vec<V1Mount>,
}

/// v1 controllers sufcgi uses.
pub(super) const V1_CONTROLLERS: [&str; 5] = ["cpu", "cpuacct", "memory", "pids", "freezer"];

fn unescape_mount(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = (i + 3 < b.len() && b[i] == b'\\' && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)))
            .then(|| b[i + 1..i + 4].iter().fold(0u32, |v, c| v * 8 + (c - b'0') as u32))
            .filter(|&v| v <= 255);
        if let Some(v) = octal {
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The server's group seen from a mount whose root is `mount_root`.
fn below_mount(mount_point: &str, mount_root: &str, own: &str) -> Option<PathBuf> {
    let rel = if mount_root == "/" { own } else { own.strip_prefix(mount_root)? };
    if !rel.is_empty() && !rel.starts_with('/') {
        return None;
    }
    let rel = rel.trim_start_matches('/');
    let mut p = PathBuf::from(mount_point);
    if !rel.is_empty() {
        p.push(rel);
    }
    Some(p)
}

/// Combines `/proc/self/cgroup` (`ID:CONTROLLERS:PATH` lines, `0::PATH` for
/// v2) with the cgroup mounts in `/proc/self/mountinfo`.
pub(super) fn layout(proc_cgroup: &str, mountinfo: &str) -> Layout {
    let mut own_v2 = None;
    let mut own_v1: Vec<(Vec<String>, String)> = Vec::new();
    for l in proc_cgroup.lines() {
        let mut parts = l.splitn(3, ':');
        let (Some(id), Some(ctrl), Some(path)) = (parts.next(), parts.next(), parts.next()) else { continue };
        if id == "0" && ctrl.is_empty() {
            own_v2 = Some(path.to_string());
        } else if !ctrl.is_empty() {
            own_v1.push((ctrl.split(',').map(str::to_string).collect(), path.to_string()));
        }
    }
    let mut out = Layout::default();
    for l in mountinfo.lines() {
        let Some((left, right)) = l.split_once(" - ") else { continue };
        let f: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if f.len() < 5 || r.len() < 3 {
            continue;
        }
        let (root, point) = (unescape_mount(f[3]), unescape_mount(f[4]));
        match r[0] {
            "cgroup2" if out.v2.is_none() => {
                if let Some(own) = own_v2.as_deref().and_then(|o| below_mount(&point, &root, o)) {
                    out.v2 = Some((PathBuf::from(&point), own));
                }
            }
            "cgroup" => {
                let opts: Vec<&str> = r[2].split(',').collect();
                let ctrls: Vec<String> = V1_CONTROLLERS.iter().filter(|c| opts.contains(c)).map(|c| c.to_string()).collect();
                if ctrls.is_empty() || out.v1.iter().any(|m| m.controllers.iter().any(|c| ctrls.contains(c))) {
                    continue;
                }
                let own = own_v1.iter().find(|(cs, _)| ctrls.iter().all(|c| cs.contains(c))).map(|(_, p)| p.as_str());
                if let Some(own_dir) = own.and_then(|o| below_mount(&point, &root, o)) {
                    out.v1.push(V1Mount { controllers: ctrls, own_dir });
                }
            }
            _ => {}
        }
    }
    out
}

/// The layout of this process, from /proc.
pub(super) fn this_layout() -> io::Result<Layout> {
    let cg = std::fs::read_to_string("/proc/self/cgroup")?;
    let mi = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(layout(&cg, &mi))
}

/// The name of one server's groups below `sufcgi/`: its socket directory
/// (unique per running server: each has its own), `/` → `-`, anything but
/// `[A-Za-z0-9._-]` → `_`; a long one is cut to its last 100 bytes after a
/// hash of the whole, so it stays unique and within NAME_MAX.
pub fn instance_name(socket_dir: &Path) -> String {
    let raw = sys::path_bytes(socket_dir);
    let mut s: String = raw
        .iter()
        .skip_while(|&&b| b == b'/')
        .map(|&b| match b {
            b'/' => '-',
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-' => b as char,
            _ => '_',
        })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        s.insert(0, '_');
    }
    if s.len() > 100 {
        // FNV-1a 64 of the whole path, so two long paths with one tail differ.
        let h = raw.iter().fold(0xcbf29ce484222325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100000001b3));
        s = format!("{h:016x}-{}", &s[s.len() - 100..]);
    }
    s
}

/// rmdir a group and its subgroups, deepest first. False if one is busy.
pub(super) fn remove_tree<F: CgFs + ?Sized>(fs: &F, dir: &Path) -> bool {
    if !fs.exists(dir) {
        return true;
    }
    let mut all = true;
    for c in fs.subgroups(dir).unwrap_or_default() {
        all &= remove_tree(fs, &dir.join(c));
    }
    all && match fs.rmdir(dir) {
        Ok(()) => true,
        Err(e) => e.raw_os_error() == Some(libc::ENOENT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // This kind of machine: v1 controllers, each on its own mount, the
    // memory group of a session, and a v2 mount without controllers.
    const CGROUP: &str = "9:name=systemd:/\n8:pids:/\n6:freezer:/\n4:memory:/process_api/abc\n2:cpuacct:/\n1:cpu:/\n0::/\n";
    const MOUNTINFO: &str = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
        32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
        33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n\
        35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
        37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer\n\
        39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n\
        40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n\
        41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";

    #[test]
    fn hybrid_layout_of_this_kind_of_machine() {
        let l = layout(CGROUP, MOUNTINFO);
        assert_eq!(l.v2, Some((PathBuf::from("/sys/fs/cgroup/unified"), PathBuf::from("/sys/fs/cgroup/unified"))));
        let got: Vec<(Vec<String>, PathBuf)> = l.v1.iter().map(|m| (m.controllers.clone(), m.own_dir.clone())).collect();
        assert_eq!(
            got,
            vec![
                (vec!["cpu".to_string()], PathBuf::from("/sys/fs/cgroup/cpu")),
                (vec!["cpuacct".to_string()], PathBuf::from("/sys/fs/cgroup/cpuacct")),
                (vec!["memory".to_string()], PathBuf::from("/sys/fs/cgroup/memory/process_api/abc")),
                (vec!["freezer".to_string()], PathBuf::from("/sys/fs/cgroup/freezer")),
                (vec!["pids".to_string()], PathBuf::from("/sys/fs/cgroup/pids")),
            ]
        );
    }

    #[test]
    fn unified_layout_under_systemd_and_combined_v1_mounts() {
        let l = layout(
            "0::/system.slice/apache2.service\n",
            "25 1 0:23 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n",
        );
        assert_eq!(l.v2, Some((PathBuf::from("/sys/fs/cgroup"), PathBuf::from("/sys/fs/cgroup/system.slice/apache2.service"))));
        assert!(l.v1.is_empty());
        // cpu and cpuacct on one mount (Debian 10 style), and a container whose
        // mount root is its own group.
        let l = layout(
            "4:cpu,cpuacct:/system.slice/x.service\n3:memory:/docker/c1/inner\n0::/\n",
            "30 1 0:26 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
             31 1 0:27 /docker/c1 /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
             32 1 0:28 /other /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n",
        );
        assert_eq!(l.v2, None, "no v2 mount");
        assert_eq!(l.v1.len(), 2, "pids: the process is not in that mount's view: {:?}", l.v1);
        assert_eq!(l.v1[0].controllers, vec!["cpu".to_string(), "cpuacct".to_string()]);
        assert_eq!(l.v1[0].own_dir, PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/system.slice/x.service"));
        assert_eq!(l.v1[1].own_dir, PathBuf::from("/sys/fs/cgroup/memory/inner"));
        // A mount point with a space (mountinfo writes \040); junk lines are skipped.
        let l = layout("0::/a\n", "garbage\n1 2 3 / /mnt/cg\\040x rw - cgroup2 none rw\n");
        assert_eq!(l.v2, Some((PathBuf::from("/mnt/cg x"), PathBuf::from("/mnt/cg x/a"))));
        // A path that only shares a prefix with the mount root is not below it.
        assert_eq!(below_mount("/m", "/docker/c1", "/docker/c10/x"), None);
    }

    #[test]
    fn flat_files() {
        assert_eq!(parse_pids("12\n7\n\n"), vec![12, 7]);
        assert_eq!(keyed("usage_usec 123\nuser_usec 100\n", "usage_usec"), Some(123));
        assert_eq!(keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n", "oom_kill"), Some(3));
        assert_eq!(keyed("oom 1\n", "oom_kill"), None);
        assert_eq!(number("4096\n"), Some(4096));
        assert_eq!(number("max\n"), None);
    }

    #[test]
    fn instance_names() {
        assert_eq!(instance_name(Path::new("/run/apache2/sufcgi")), "run-apache2-sufcgi");
        assert_eq!(instance_name(Path::new("/tmp/x y/ä")), "tmp-x_y-__");
        assert_eq!(instance_name(Path::new("/")), "_");
        assert_eq!(instance_name(Path::new("/.hidden")), "_.hidden");
        let long = format!("/{}", "d/".repeat(100));
        let n = instance_name(Path::new(&long));
        assert_eq!(n.len(), 117);
        assert_ne!(n, instance_name(Path::new(&format!("/x{}", "d/".repeat(100)))));
    }
}
