//! Unit tests only: a temporary directory laid out like cgroupfs, with the
//! kernel's rules that shape the design emulated on its files — interface
//! files appear on mkdir (per controller, v2: as the parent's
//! `cgroup.subtree_control` enables them), rmdir refuses a group with
//! processes or children (EBUSY), a v2 group with processes cannot enable
//! controllers for children and one with enabled controllers cannot take
//! processes (no internal processes), `cgroup.kill` empties a subtree, and
//! a SIGKILLed pid leaves every group. CI machines have no v2 controllers:
//! this is where the v2 code path is exercised.

use std::cell::RefCell;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::cgroup_fs::{parse_pids, CgFs};

pub(super) struct FakeFs {
    pub root: PathBuf,
    /// v1: (mount directory, controllers); empty for a v2 tree.
    v1_mounts: Vec<(PathBuf, Vec<&'static str>)>,
    /// v2: the mount (the root group, exempt from no-internal-processes).
    v2_mount: Option<PathBuf>,
    pub signals: RefCell<Vec<(libc::pid_t, libc::c_int)>>,
}

fn errno(e: libc::c_int) -> io::Error {
    io::Error::from_raw_os_error(e)
}

impl FakeFs {
    fn tmp(tag: &str) -> PathBuf {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let d = std::env::temp_dir().join(format!("sufcgi-fakecg-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A v2 tree: the root offers `controllers`; `own` (e.g.
    /// `system.slice/apache2.service`) exists with `pids` in it and has the
    /// controllers delegated.
    pub fn v2(controllers: &[&str], own: &str, pids: &[libc::pid_t]) -> FakeFs {
        let root = Self::tmp("v2");
        let fs = FakeFs { root: root.clone(), v1_mounts: Vec::new(), v2_mount: Some(root.clone()), signals: RefCell::new(Vec::new()) };
        fs.put(&root, "cgroup.controllers", &controllers.join(" "));
        fs.put(&root, "cgroup.subtree_control", "");
        fs.put(&root, "cgroup.procs", "");
        let mut at = root.clone();
        for part in own.split('/').filter(|p| !p.is_empty()) {
            std::fs::write(at.join("cgroup.subtree_control"), controllers.join(" ")).unwrap();
            at.push(part);
            fs.mkdir(&at).unwrap();
        }
        let text: String = pids.iter().map(|p| format!("{p}\n")).collect();
        std::fs::write(at.join("cgroup.procs"), text).unwrap();
        fs
    }

    /// A v1 layout: one mount per controller below the root, named after it.
    pub fn v1(controllers: &[&'static str]) -> FakeFs {
        let root = Self::tmp("v1");
        let mut fs = FakeFs { root: root.clone(), v1_mounts: Vec::new(), v2_mount: None, signals: RefCell::new(Vec::new()) };
        for c in controllers {
            let m = root.join(c);
            std::fs::create_dir_all(&m).unwrap();
            std::fs::write(m.join("cgroup.procs"), "").unwrap();
            fs.v1_mounts.push((m, vec![*c]));
        }
        fs
    }

    fn put(&self, dir: &Path, name: &str, v: &str) {
        std::fs::write(dir.join(name), v).unwrap();
    }

    pub fn text(&self, p: &Path) -> String {
        std::fs::read_to_string(p).unwrap_or_default()
    }

    pub fn procs(&self, group: &Path) -> Vec<libc::pid_t> {
        parse_pids(&self.text(&group.join("cgroup.procs")))
    }

    /// A process appears in `group` (as a fork inside it would).
    pub fn add_proc(&self, group: &Path, pid: libc::pid_t) {
        let mut t = self.text(&group.join("cgroup.procs"));
        t.push_str(&format!("{pid}\n"));
        std::fs::write(group.join("cgroup.procs"), t).unwrap();
    }

    /// Sets a figure the kernel would keep (memory.current, cpu.stat…).
    pub fn set(&self, file: &Path, v: &str) {
        std::fs::write(file, v).unwrap();
    }

    /// The mount a path belongs to and its controllers (v2: the parent's subtree_control).
    fn v1_controllers(&self, p: &Path) -> Option<&[&'static str]> {
        self.v1_mounts.iter().find(|(m, _)| p.starts_with(m)).map(|(_, c)| c.as_slice())
    }

    fn hierarchy_root(&self, p: &Path) -> PathBuf {
        match &self.v2_mount {
            Some(m) => m.clone(),
            None => self.v1_mounts.iter().find(|(m, _)| p.starts_with(m)).map(|(m, _)| m.clone()).unwrap_or_else(|| self.root.clone()),
        }
    }

    fn groups_below(&self, p: &Path) -> Vec<PathBuf> {
        let mut out = vec![p.to_path_buf()];
        if let Ok(rd) = std::fs::read_dir(p) {
            for e in rd.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    out.extend(self.groups_below(&e.path()));
                }
            }
        }
        out
    }

    fn remove_pid_everywhere(&self, top: &Path, pid: libc::pid_t) {
        for g in self.groups_below(top) {
            let f = g.join("cgroup.procs");
            let before = self.procs(&g);
            if before.contains(&pid) {
                let t: String = before.iter().filter(|&&p| p != pid).map(|p| format!("{p}\n")).collect();
                std::fs::write(f, t).unwrap();
            }
        }
    }

    /// v2: a controller enabled in the parent shows up in the child.
    fn v2_controller_files(&self, p: &Path, c: &str) {
        match c {
            "cpu" => {
                self.put(p, "cpu.weight", "100");
                self.put(p, "cpu.max", "max 100000");
                self.put(p, "cpu.stat", "usage_usec 0\nuser_usec 0\nsystem_usec 0\nnr_throttled 0\nthrottled_usec 0\n");
            }
            "memory" => {
                for (f, v) in [("memory.max", "max"), ("memory.current", "0"), ("memory.peak", "0"), ("memory.swap.max", "max")] {
                    self.put(p, f, v);
                }
                self.put(p, "memory.events", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n");
            }
            "pids" => {
                self.put(p, "pids.max", "max");
                self.put(p, "pids.current", "0");
            }
            _ => {}
        }
    }

    fn enabled(&self, dir: &Path) -> Vec<String> {
        self.text(&dir.join("cgroup.subtree_control")).split_whitespace().map(str::to_string).collect()
    }
}

impl Drop for FakeFs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

impl CgFs for FakeFs {
    fn mkdir(&self, p: &Path) -> io::Result<()> {
        if p.exists() {
            return Err(errno(libc::EEXIST));
        }
        std::fs::create_dir(p)?;
        self.put(p, "cgroup.procs", "");
        if self.v2_mount.is_some() {
            let parent = p.parent().unwrap_or(p);
            let on = self.enabled(parent);
            self.put(p, "cgroup.controllers", &on.join(" "));
            self.put(p, "cgroup.subtree_control", "");
            self.put(p, "cgroup.events", "populated 0\nfrozen 0\n");
            self.put(p, "cgroup.freeze", "0");
            self.put(p, "cgroup.kill", "");
            self.put(p, "cpu.stat", "usage_usec 0\nuser_usec 0\nsystem_usec 0\n");
            for c in on {
                self.v2_controller_files(p, &c);
            }
        } else {
            for c in self.v1_controllers(p).unwrap_or(&[]) {
                let files: &[(&str, &str)] = match *c {
                    "cpu" => &[("cpu.shares", "1024"), ("cpu.cfs_quota_us", "-1"), ("cpu.cfs_period_us", "100000"), ("cpu.stat", "nr_periods 0\nnr_throttled 0\nthrottled_time 0\n")],
                    "cpuacct" => &[("cpuacct.usage", "0")],
                    "memory" => &[
                        ("memory.limit_in_bytes", "9223372036854771712"),
                        ("memory.memsw.limit_in_bytes", "9223372036854771712"),
                        ("memory.usage_in_bytes", "0"),
                        ("memory.max_usage_in_bytes", "0"),
                        ("memory.failcnt", "0"),
                        ("memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n"),
                    ],
                    "pids" => &[("pids.max", "max"), ("pids.current", "0")],
                    "freezer" => &[("freezer.state", "THAWED")],
                    _ => &[],
                };
                for (f, v) in files {
                    self.put(p, f, v);
                }
            }
        }
        Ok(())
    }

    fn rmdir(&self, p: &Path) -> io::Result<()> {
        if !p.is_dir() {
            return Err(errno(libc::ENOENT));
        }
        let has_children = std::fs::read_dir(p)?.flatten().any(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false));
        if has_children || !self.procs(p).is_empty() {
            return Err(errno(libc::EBUSY));
        }
        std::fs::remove_dir_all(p)
    }

    fn read(&self, p: &Path) -> io::Result<String> {
        std::fs::read_to_string(p)
    }

    fn write(&self, p: &Path, v: &str) -> io::Result<()> {
        if !p.is_file() {
            // cgroupfs: no such interface file (controller not enabled here).
            return Err(errno(libc::ENOENT));
        }
        let dir = p.parent().unwrap_or(p);
        let is_root = self.v2_mount.as_deref() == Some(dir);
        match p.file_name().and_then(|n| n.to_str()).unwrap_or("") {
            "cgroup.procs" => {
                let pid: libc::pid_t = v.trim().parse().map_err(|_| errno(libc::EINVAL))?;
                if pid == 0 {
                    // "The writer": not known here (the clone child writes it, tested for real).
                    return Err(errno(libc::EINVAL));
                }
                if self.v2_mount.is_some() && !is_root && !self.enabled(dir).is_empty() {
                    return Err(errno(libc::EBUSY));
                }
                self.remove_pid_everywhere(&self.hierarchy_root(p), pid);
                self.add_proc(dir, pid);
            }
            "cgroup.subtree_control" => {
                let have: Vec<String> = self.text(&dir.join("cgroup.controllers")).split_whitespace().map(str::to_string).collect();
                let mut on = self.enabled(dir);
                for w in v.split_whitespace() {
                    let (plus, name) = match w.split_at(1) {
                        ("+", n) => (true, n),
                        ("-", n) => (false, n),
                        _ => return Err(errno(libc::EINVAL)),
                    };
                    if !have.iter().any(|h| h == name) {
                        return Err(errno(libc::ENOENT));
                    }
                    if plus && !is_root && !self.procs(dir).is_empty() {
                        return Err(errno(libc::EBUSY));
                    }
                    on.retain(|c| c != name);
                    if plus {
                        on.push(name.to_string());
                        // Existing children get the controller's files.
                        for e in std::fs::read_dir(dir)?.flatten() {
                            if e.file_type()?.is_dir() {
                                let child = e.path();
                                let mut cs: Vec<String> = self.text(&child.join("cgroup.controllers")).split_whitespace().map(str::to_string).collect();
                                if !cs.iter().any(|c| c == name) {
                                    cs.push(name.to_string());
                                    self.put(&child, "cgroup.controllers", &cs.join(" "));
                                    self.v2_controller_files(&child, name);
                                }
                            }
                        }
                    }
                }
                std::fs::write(p, on.join(" "))?;
            }
            "cgroup.kill" => {
                for g in self.groups_below(dir) {
                    for pid in self.procs(&g) {
                        self.signals.borrow_mut().push((pid, libc::SIGKILL));
                    }
                    std::fs::write(g.join("cgroup.procs"), "")?;
                }
            }
            "cgroup.freeze" => {
                std::fs::write(p, v.trim())?;
                let frozen = v.trim() == "1";
                for g in self.groups_below(dir) {
                    let populated = !self.procs(&g).is_empty() as u8;
                    std::fs::write(g.join("cgroup.events"), format!("populated {populated}\nfrozen {}\n", frozen as u8))?;
                }
            }
            _ => std::fs::write(p, v.trim())?,
        }
        Ok(())
    }

    fn open_procs(&self, p: &Path) -> io::Result<OwnedFd> {
        let f = std::fs::OpenOptions::new().append(true).open(p)?;
        use std::os::fd::IntoRawFd;
        // SAFETY: a fresh descriptor we own.
        Ok(unsafe { OwnedFd::from_raw_fd(f.into_raw_fd()) })
    }

    fn subgroups(&self, p: &Path) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(p)?.flatten() {
            if e.file_type()?.is_dir() {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        out.sort();
        Ok(out)
    }

    fn exists(&self, p: &Path) -> bool {
        p.exists()
    }

    fn signal(&self, pid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
        self.signals.borrow_mut().push((pid, sig));
        if sig == libc::SIGKILL {
            // Gone once thawed (at once here).
            for (m, _) in &self.v1_mounts {
                self.remove_pid_everywhere(m, pid);
            }
            if let Some(m) = &self.v2_mount {
                self.remove_pid_everywhere(m, pid);
            }
        }
        Ok(())
    }

    fn pause(&self) {}
}

impl<T: CgFs> CgFs for std::rc::Rc<T> {
    fn mkdir(&self, p: &Path) -> io::Result<()> {
        (**self).mkdir(p)
    }
    fn rmdir(&self, p: &Path) -> io::Result<()> {
        (**self).rmdir(p)
    }
    fn read(&self, p: &Path) -> io::Result<String> {
        (**self).read(p)
    }
    fn write(&self, p: &Path, v: &str) -> io::Result<()> {
        (**self).write(p, v)
    }
    fn open_procs(&self, p: &Path) -> io::Result<OwnedFd> {
        (**self).open_procs(p)
    }
    fn subgroups(&self, p: &Path) -> io::Result<Vec<String>> {
        (**self).subgroups(p)
    }
    fn exists(&self, p: &Path) -> bool {
        (**self).exists(p)
    }
    fn signal(&self, pid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
        (**self).signal(pid, sig)
    }
    fn pause(&self) {
        (**self).pause()
    }
}
