//! cgroup v1: every controller is its own hierarchy (cpu, cpuacct, memory,
//! pids and freezer are separate mounts on the machines CI runs on, or cpu
//! and cpuacct share one), so each group is made in each hierarchy, below
//! the server's own group there. v1 has no "no internal processes" rule and
//! no `cgroup.kill`: a group is killed race-free by freezing it (its
//! processes cannot fork or exit meanwhile, so no pid is reused), signalling
//! every member, and thawing it.
//!
//! The `cpu` hierarchy stops at the owner: a worker's level there would only
//! add a scheduling entity (the CPU share is the owner's), so a worker joins
//! its owner's group in it, as it does in v2, where the cpu controller is not
//! enabled below the owner. (cpuacct keeps the worker level: per-pool CPU time.)

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use super::cgroup_fs::{keyed, number, parse_pids, remove_tree, CgFs, V1Mount};
use super::cgroup_hierarchy::{GroupLimits, Hierarchy, Stats};

/// cfs period for `SuFcgiOwnerCpuMax` (the kernel's default).
const PERIOD_US: u64 = 100_000;
/// Polls of `freezer.state` (1 ms apart) before signalling anyway.
const FREEZE_POLLS: u32 = 200;

pub(super) struct V1<F: CgFs> {
    fs: F,
    /// Each hierarchy's controllers and the instance directory in it.
    dirs: Vec<(Vec<String>, PathBuf)>,
}

fn exists_ok(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        r => r,
    }
}

impl<F: CgFs> V1<F> {
    /// Makes `sufcgi/<instance>` below the server's group in each hierarchy
    /// that carries a controller sufcgi uses. Err: why v1 cannot be used.
    pub fn open(fs: F, mounts: &[V1Mount], instance: &str) -> Result<V1<F>, String> {
        let useful = |m: &V1Mount| m.controllers.iter().any(|c| matches!(c.as_str(), "cpu" | "memory" | "pids"));
        if !mounts.iter().any(useful) {
            return Err("no cgroup v1 hierarchy with a cpu, memory or pids controller is mounted".into());
        }
        let mut dirs = Vec::new();
        for m in mounts {
            let top = m.own_dir.join("sufcgi");
            let inst = top.join(instance);
            let made = exists_ok(fs.mkdir(&top)).and_then(|_| exists_ok(fs.mkdir(&inst)));
            if let Err(e) = made {
                let v1 = V1 { fs, dirs };
                v1.remove_tops(instance);
                return Err(format!("cannot create {}: {e}", inst.display()));
            }
            dirs.push((m.controllers.clone(), inst));
        }
        Ok(V1 { fs, dirs })
    }

    /// rmdir the instance and `sufcgi` directories (the latter stays while
    /// another server's instance is in it).
    fn remove_tops(&self, _instance: &str) {
        for (_, inst) in &self.dirs {
            let _ = self.fs.rmdir(inst);
            if let Some(top) = inst.parent() {
                let _ = self.fs.rmdir(top);
            }
        }
    }

    fn dir_of(&self, controller: &str) -> Option<&Path> {
        self.dirs.iter().find(|(c, _)| c.iter().any(|x| x == controller)).map(|(_, d)| d.as_path())
    }

    /// Where group `rel` is in hierarchy `i`: a worker's group is its owner's
    /// in a hierarchy that carries `cpu` alone (see the module comment).
    fn dir_in(&self, i: usize, rel: &str) -> PathBuf {
        let (ctrls, d) = &self.dirs[i];
        match rel.split_once('/') {
            Some((owner, _)) if ctrls.iter().all(|c| c == "cpu") => d.join(owner),
            _ => join(d, rel),
        }
    }

    fn at(&self, controller: &str, rel: &str, file: &str) -> Option<PathBuf> {
        self.dir_of(controller).map(|d| join(d, rel).join(file))
    }

    fn read_num(&self, controller: &str, rel: &str, file: &str) -> Option<u64> {
        number(&self.fs.read(&self.at(controller, rel, file)?).ok()?)
    }

    fn read_keyed(&self, controller: &str, rel: &str, file: &str, key: &str) -> Option<u64> {
        keyed(&self.fs.read(&self.at(controller, rel, file)?).ok()?, key)
    }

    /// Where the members and subgroups are listed: the freezer's hierarchy
    /// if there is one (every process is in every hierarchy alike), else one
    /// with a worker level (not cpu's alone).
    fn member_dir(&self) -> &Path {
        self.dir_of("freezer")
            .or_else(|| self.dirs.iter().find(|(c, _)| !c.iter().all(|x| x == "cpu")).map(|(_, d)| d.as_path()))
            .unwrap_or(&self.dirs[0].1)
    }

    fn members(&self, dir: &Path) -> Vec<libc::pid_t> {
        let mut out = parse_pids(&self.fs.read(&dir.join("cgroup.procs")).unwrap_or_default());
        for c in self.fs.subgroups(dir).unwrap_or_default() {
            out.extend(self.members(&dir.join(c)));
        }
        out
    }

    /// memory.limit_in_bytes, and memsw (memory + swap) to the same value
    /// where the kernel has it, so a capped group cannot swap past its cap.
    /// The kernel wants limit ≤ memsw at every step, hence the order.
    fn set_memory(&self, rel: &str, bytes: u64) -> io::Result<()> {
        let Some(dir) = self.dir_of("memory").map(|d| join(d, rel)) else { return Ok(()) };
        let v = if bytes == 0 { "-1".to_string() } else { bytes.to_string() };
        let (limit, memsw) = (dir.join("memory.limit_in_bytes"), dir.join("memory.memsw.limit_in_bytes"));
        let has_memsw = self.fs.exists(&memsw);
        match self.fs.write(&limit, &v) {
            Ok(()) => {}
            // Raising (or unsetting) above the current memsw: memsw first.
            Err(e) if has_memsw && e.raw_os_error() == Some(libc::EINVAL) => {
                self.fs.write(&memsw, &v)?;
                self.fs.write(&limit, &v)?;
            }
            Err(e) => return Err(e),
        }
        if has_memsw {
            let _ = self.fs.write(&memsw, &v);
        }
        Ok(())
    }
}

fn join(dir: &Path, rel: &str) -> PathBuf {
    if rel.is_empty() {
        dir.to_path_buf()
    } else {
        dir.join(rel)
    }
}

impl<F: CgFs> Hierarchy for V1<F> {
    fn name(&self) -> &'static str {
        "v1"
    }

    fn controllers(&self) -> Vec<String> {
        let mut v: Vec<String> = self.dirs.iter().flat_map(|(c, _)| c.iter().cloned()).collect();
        v.sort_by_key(|c| super::cgroup_fs::V1_CONTROLLERS.iter().position(|k| k == c));
        v
    }

    fn location(&self) -> String {
        self.dirs.iter().map(|(_, d)| d.display().to_string()).collect::<Vec<_>>().join(", ")
    }

    fn create(&self, rel: &str, _inner: bool) -> io::Result<()> {
        for i in 0..self.dirs.len() {
            if !rel.contains('/') {
                // An earlier supervisor of this server, stopping, may have
                // removed the (then empty) instance directory meanwhile.
                let inst = &self.dirs[i].1;
                if let Some(top) = inst.parent() {
                    exists_ok(self.fs.mkdir(top))?;
                }
                exists_ok(self.fs.mkdir(inst))?;
            }
            exists_ok(self.fs.mkdir(&self.dir_in(i, rel)))?;
        }
        Ok(())
    }

    fn set_limits(&self, rel: &str, l: &GroupLimits) -> Result<(), String> {
        let mut failed = Vec::new();
        let mut put = |c: &str, file: &str, v: String| {
            if let Some(p) = self.at(c, rel, file) {
                if let Err(e) = self.fs.write(&p, &v) {
                    failed.push(format!("{} = {v}: {e}", p.display()));
                }
            }
        };
        if let Some(w) = l.cpu_weight {
            // cpu.weight 100 is cpu.shares 1024 (as systemd maps them).
            put("cpu", "cpu.shares", (w as u64 * 1024 / 100).max(2).to_string());
        }
        if let Some(pct) = l.cpu_max {
            put("cpu", "cpu.cfs_period_us", PERIOD_US.to_string());
            put("cpu", "cpu.cfs_quota_us", if pct == 0 { "-1".into() } else { (pct as u64 * PERIOD_US / 100).to_string() });
        }
        if let Some(n) = l.pids {
            put("pids", "pids.max", if n == 0 { "max".into() } else { n.to_string() });
        }
        if let Some(b) = l.memory {
            if let Err(e) = self.set_memory(rel, b) {
                failed.push(format!("memory limit {b}: {e}"));
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed.join("; "))
        }
    }

    fn join_fds(&self, rel: &str) -> io::Result<Vec<OwnedFd>> {
        (0..self.dirs.len()).map(|i| self.fs.open_procs(&self.dir_in(i, rel).join("cgroup.procs"))).collect()
    }

    fn signal(&self, rel: &str, sig: libc::c_int) -> usize {
        // Not frozen in time (a member in uninterruptible sleep) or no
        // freezer: signalled all the same; callers look again (populated).
        let freezer = self.at("freezer", rel, "freezer.state");
        if let Some(f) = freezer.as_ref().filter(|f| self.fs.write(f, "FROZEN").is_ok()) {
            let _ = (0..FREEZE_POLLS).any(|_| {
                let done = self.fs.read(f).is_ok_and(|s| s.trim() == "FROZEN");
                if !done {
                    self.fs.pause();
                }
                done
            });
        }
        let pids = self.members(&join(self.member_dir(), rel));
        for &p in &pids {
            let _ = self.fs.signal(p, sig);
        }
        if let Some(f) = freezer {
            let _ = self.fs.write(&f, "THAWED");
        }
        pids.len()
    }

    fn populated(&self, rel: &str) -> bool {
        !self.members(&join(self.member_dir(), rel)).is_empty()
    }

    fn remove(&self, rel: &str) -> bool {
        let mut all = true;
        for (ctrls, d) in &self.dirs {
            // A worker has no group of its own in the cpu hierarchy (its owner's stays).
            if rel.contains('/') && ctrls.iter().all(|c| c == "cpu") {
                continue;
            }
            all &= remove_tree(&self.fs, &join(d, rel));
        }
        all
    }

    fn stats(&self, rel: &str) -> Stats {
        Stats {
            cpu_usec: self.read_num("cpuacct", rel, "cpuacct.usage").map(|ns| ns / 1000),
            memory: self.read_num("memory", rel, "memory.usage_in_bytes"),
            memory_peak: self.read_num("memory", rel, "memory.max_usage_in_bytes"),
            processes: self.read_num("pids", rel, "pids.current"),
            oom_kills: self.read_keyed("memory", rel, "memory.oom_control", "oom_kill"),
            throttled_usec: self.read_keyed("cpu", rel, "cpu.stat", "throttled_time").map(|ns| ns / 1000),
            limit_hit: self.read_num("memory", rel, "memory.failcnt").is_some_and(|n| n > 0),
        }
    }

    fn children(&self, rel: &str) -> Vec<String> {
        self.fs.subgroups(&join(self.member_dir(), rel)).unwrap_or_default()
    }

    fn oom_hierarchical(&self) -> bool {
        false
    }

    fn close(&self) {
        for (_, d) in &self.dirs {
            let _ = self.fs.rmdir(d);
            if let Some(top) = d.parent() {
                let _ = self.fs.rmdir(top);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::cgroup_fake::FakeFs;
    use super::*;
    use std::rc::Rc;

    fn open(fs: &Rc<FakeFs>, ctrls: &[&str]) -> V1<Rc<FakeFs>> {
        let mounts: Vec<V1Mount> = ctrls
            .iter()
            .map(|c| V1Mount { controllers: vec![c.to_string()], own_dir: fs.root.join(c).join(if *c == "memory" { "session/x" } else { "" }) })
            .collect();
        for m in &mounts {
            std::fs::create_dir_all(&m.own_dir).unwrap();
        }
        V1::open(fs.clone(), &mounts, "inst").unwrap()
    }

    #[test]
    fn groups_in_every_hierarchy_below_the_servers_own_group() {
        let fs = Rc::new(FakeFs::v1(&["cpu", "cpuacct", "memory", "pids", "freezer"]));
        let v1 = open(&fs, &["cpu", "cpuacct", "memory", "pids", "freezer"]);
        assert_eq!(v1.controllers(), vec!["cpu", "cpuacct", "memory", "pids", "freezer"]);
        v1.create("owner-2001", true).unwrap();
        v1.create("owner-2001/worker-1", false).unwrap();
        for c in ["cpuacct", "pids", "freezer"] {
            assert!(fs.root.join(c).join("sufcgi/inst/owner-2001/worker-1/cgroup.procs").is_file(), "{c}");
        }
        assert!(!fs.root.join("cpu/sufcgi/inst/owner-2001/worker-1").exists(), "the cpu hierarchy stops at the owner");
        assert!(fs.root.join("memory/session/x/sufcgi/inst/owner-2001/worker-1/memory.limit_in_bytes").is_file());
        let l = GroupLimits { cpu_weight: Some(200), cpu_max: Some(150), pids: Some(64), memory: Some(256 << 20) };
        v1.set_limits("owner-2001", &l).unwrap();
        let o = |c: &str, f: &str| fs.text(&fs.root.join(c).join(if c == "memory" { "session/x/" } else { "" }).join("sufcgi/inst/owner-2001").join(f));
        assert_eq!(o("cpu", "cpu.shares"), "2048");
        assert_eq!((o("cpu", "cpu.cfs_period_us").as_str(), o("cpu", "cpu.cfs_quota_us").as_str()), ("100000", "150000"));
        assert_eq!(o("pids", "pids.max"), "64");
        assert_eq!(o("memory", "memory.limit_in_bytes"), (256u64 << 20).to_string());
        assert_eq!(o("memory", "memory.memsw.limit_in_bytes"), (256u64 << 20).to_string());
        v1.set_limits("owner-2001", &GroupLimits { cpu_weight: Some(1), cpu_max: Some(0), pids: Some(0), memory: Some(0) }).unwrap();
        assert_eq!((o("cpu", "cpu.shares").as_str(), o("cpu", "cpu.cfs_quota_us").as_str(), o("pids", "pids.max").as_str()), ("10", "-1", "max"));
        assert_eq!(o("memory", "memory.limit_in_bytes"), "-1");
        // One join descriptor per hierarchy (cpu: the owner's group).
        assert_eq!(v1.join_fds("owner-2001/worker-1").unwrap().len(), 5);
        assert!(v1.remove("owner-2001/worker-1"));
        assert!(fs.root.join("cpu/sufcgi/inst/owner-2001").exists(), "a worker's removal leaves its owner's cpu group");
        assert!(!fs.root.join("pids/sufcgi/inst/owner-2001/worker-1").exists());
    }

    #[test]
    fn freeze_kill_thaw_then_remove() {
        let fs = Rc::new(FakeFs::v1(&["memory", "pids", "freezer"]));
        let v1 = open(&fs, &["memory", "pids", "freezer"]);
        v1.create("owner-7", true).unwrap();
        v1.create("owner-7/worker-3", false).unwrap();
        let w = fs.root.join("freezer/sufcgi/inst/owner-7/worker-3");
        for pid in [101, 102] {
            for c in ["memory/session/x", "pids", "freezer"] {
                fs.add_proc(&fs.root.join(c).join("sufcgi/inst/owner-7/worker-3"), pid);
            }
        }
        assert!(v1.populated("owner-7/worker-3"));
        assert!(!v1.remove("owner-7/worker-3"), "busy while it has processes");
        assert_eq!(v1.signal("owner-7/worker-3", libc::SIGKILL), 2);
        assert_eq!(*fs.signals.borrow(), vec![(101, libc::SIGKILL), (102, libc::SIGKILL)]);
        assert_eq!(fs.text(&w.join("freezer.state")), "THAWED", "thawed again");
        assert!(!v1.populated("owner-7/worker-3"));
        assert!(v1.remove("owner-7"), "subgroups first, then the owner");
        assert!(!fs.root.join("pids/sufcgi/inst/owner-7").exists());
        // The instance and sufcgi directories go at the end.
        v1.close();
        assert!(!fs.root.join("pids/sufcgi").exists());
        assert!(!fs.root.join("memory/session/x/sufcgi").exists());
    }

    #[test]
    fn figures_and_refusals() {
        let fs = Rc::new(FakeFs::v1(&["cpu", "cpuacct", "memory", "pids"]));
        let v1 = open(&fs, &["cpu", "cpuacct", "memory", "pids"]);
        v1.create("owner-9", true).unwrap();
        let d = |c: &str| fs.root.join(c).join(if c == "memory" { "session/x/" } else { "" }).join("sufcgi/inst/owner-9");
        fs.set(&d("cpuacct").join("cpuacct.usage"), "2500000000");
        fs.set(&d("memory").join("memory.usage_in_bytes"), "1048576");
        fs.set(&d("memory").join("memory.max_usage_in_bytes"), "4194304");
        fs.set(&d("memory").join("memory.oom_control"), "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n");
        fs.set(&d("memory").join("memory.failcnt"), "5");
        fs.set(&d("pids").join("pids.current"), "3");
        fs.set(&d("cpu").join("cpu.stat"), "nr_periods 9\nnr_throttled 4\nthrottled_time 7000000\n");
        let s = v1.stats("owner-9");
        assert_eq!(
            s,
            Stats { cpu_usec: Some(2_500_000), memory: Some(1 << 20), memory_peak: Some(4 << 20), processes: Some(3), oom_kills: Some(2), throttled_usec: Some(7000), limit_hit: true }
        );
        // Without a freezer the members are signalled all the same.
        fs.add_proc(&d("cpuacct"), 55); // listed where workers have a level (not cpu alone)
        assert_eq!(v1.signal("owner-9", libc::SIGTERM), 1);
        let no_useful = [V1Mount { controllers: vec!["freezer".into()], own_dir: fs.root.join("freezer") }];
        assert!(V1::open(fs.clone(), &no_useful, "i").is_err());
        let unwritable = [V1Mount { controllers: vec!["pids".into()], own_dir: fs.root.join("pids/nonexistent/deeper") }];
        let e = V1::open(fs.clone(), &unwritable, "i").err().unwrap();
        assert!(e.contains("cannot create"), "{e}");
    }
}
