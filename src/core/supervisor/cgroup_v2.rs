//! cgroup v2 (the unified hierarchy; Debian 12, Ubuntu 22.04+, RHEL 9): one
//! tree, controllers enabled per level in `cgroup.subtree_control`. The
//! kernel's "no internal processes" rule: a group (other than the root)
//! that enables controllers for its children cannot hold processes. So the
//! server's own processes (the server, its children, this supervisor) move
//! into a leaf `<own>/server` first, then controllers are enabled for
//! `<own>/sufcgi/…`. Under systemd the server's group is the service's and
//! needs `Delegate=yes` (the packages' drop-ins) for this to be ours.
//!
//! The root of the hierarchy is a parameter: unit tests run this same code
//! on a temporary directory laid out like cgroupfs (cgroup_fake.rs), as CI
//! machines have no v2 controllers.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use super::cgroup_fs::{keyed, number, parse_pids, remove_tree, CgFs};
use super::cgroup_hierarchy::{GroupLimits, Hierarchy, Stats};

const PERIOD_US: u64 = 100_000;
/// The leaf the server's own processes move into.
pub(super) const SERVER_LEAF: &str = "server";
/// Controllers sufcgi enables (in this order).
const WANTED: [&str; 3] = ["cpu", "memory", "pids"];
/// Rounds of moving the server's processes before enabling controllers
/// (a process forked meanwhile lands in the old group: EBUSY, go again).
const MOVE_ROUNDS: u32 = 8;
const FREEZE_POLLS: u32 = 200;

pub(super) struct V2<F: CgFs> {
    fs: F,
    /// `<own>/sufcgi/<instance>`.
    inst: PathBuf,
    /// The controllers enabled for the groups below.
    controllers: Vec<String>,
    /// `cgroup.kill` (Linux 5.14+).
    has_kill: bool,
}

fn exists_ok(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        r => r,
    }
}

fn join(dir: &Path, rel: &str) -> PathBuf {
    if rel.is_empty() {
        dir.to_path_buf()
    } else {
        dir.join(rel)
    }
}

impl<F: CgFs> V2<F> {
    /// `mount`: where the v2 hierarchy is mounted; `own`: the server's group
    /// (from /proc/self/cgroup). Err: why v2 cannot be used.
    pub fn open(fs: F, mount: &Path, own: &Path, instance: &str) -> Result<V2<F>, String> {
        // A supervisor started again after a crash already sits in the leaf
        // the first one made: its parent is the server's group.
        let mut base = own.to_path_buf();
        if own != mount && own.file_name().is_some_and(|n| n == SERVER_LEAF) {
            if let Some(parent) = own.parent() {
                let ours = fs.exists(&parent.join("sufcgi"))
                    || fs.read(&parent.join("cgroup.subtree_control")).is_ok_and(|s| !s.trim().is_empty());
                if ours {
                    base = parent.to_path_buf();
                }
            }
        }
        let have = fs.read(&base.join("cgroup.controllers")).map_err(|e| format!("cannot read {}/cgroup.controllers: {e}", base.display()))?;
        let have: Vec<&str> = have.split_whitespace().collect();
        let offered: Vec<&str> = WANTED.iter().copied().filter(|c| have.contains(c)).collect();
        if offered.is_empty() {
            return Err(format!(
                "the cgroup v2 group {} offers no cpu, memory or pids controller (not delegated to the server)",
                base.display()
            ));
        }
        if base != mount {
            Self::move_server_into_leaf(&fs, &base, &offered)?;
        }
        let enabled = enable(&fs, &base, &offered);
        if enabled.is_empty() {
            return Err(format!("cannot enable {} in {}/cgroup.subtree_control", offered.join(", "), base.display()));
        }
        let top = base.join("sufcgi");
        let inst = top.join(instance);
        for d in [&top, &inst] {
            exists_ok(fs.mkdir(d)).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
        }
        let on_top = enable(&fs, &top, &enabled);
        let controllers = enable(&fs, &inst, &on_top);
        let has_kill = fs.exists(&inst.join("cgroup.kill"));
        Ok(V2 { fs, inst, controllers, has_kill })
    }

    /// No internal processes: everything in `base` moves to `base/server`,
    /// until enabling a controller there no longer fails with EBUSY.
    fn move_server_into_leaf(fs: &F, base: &Path, offered: &[&str]) -> Result<(), String> {
        let leaf = base.join(SERVER_LEAF);
        exists_ok(fs.mkdir(&leaf)).map_err(|e| format!("cannot create {}: {e}", leaf.display()))?;
        for _ in 0..MOVE_ROUNDS {
            let procs = fs.read(&base.join("cgroup.procs")).map_err(|e| format!("cannot read {}/cgroup.procs: {e}", base.display()))?;
            for pid in parse_pids(&procs) {
                match fs.write(&leaf.join("cgroup.procs"), &pid.to_string()) {
                    Ok(()) => {}
                    // Exited meanwhile.
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                    Err(e) => return Err(format!("cannot move pid {pid} into {}: {e}", leaf.display())),
                }
            }
            match fs.write(&base.join("cgroup.subtree_control"), &format!("+{}", offered[0])) {
                Ok(()) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => continue,
                Err(e) => return Err(format!("cannot enable {} in {}: {e}", offered[0], base.display())),
            }
        }
        Err(format!("processes kept appearing in {} while moving them into {}", base.display(), leaf.display()))
    }

    fn file(&self, rel: &str, f: &str) -> PathBuf {
        join(&self.inst, rel).join(f)
    }

    fn read(&self, rel: &str, f: &str) -> Option<String> {
        self.fs.read(&self.file(rel, f)).ok()
    }

    fn members(&self, dir: &Path) -> Vec<libc::pid_t> {
        let mut out = parse_pids(&self.fs.read(&dir.join("cgroup.procs")).unwrap_or_default());
        for c in self.fs.subgroups(dir).unwrap_or_default() {
            out.extend(self.members(&dir.join(c)));
        }
        out
    }
}

/// Enables each of `want` for the children of `dir` (one write each, so one
/// refused controller does not cost the others); returns those enabled.
fn enable<F: CgFs>(fs: &F, dir: &Path, want: &[impl AsRef<str>]) -> Vec<String> {
    let already = fs.read(&dir.join("cgroup.subtree_control")).unwrap_or_default();
    want.iter()
        .map(|c| c.as_ref())
        .filter(|c| already.split_whitespace().any(|a| a == *c) || fs.write(&dir.join("cgroup.subtree_control"), &format!("+{c}")).is_ok())
        .map(str::to_string)
        .collect()
}

impl<F: CgFs> Hierarchy for V2<F> {
    fn name(&self) -> &'static str {
        "v2"
    }

    fn controllers(&self) -> Vec<String> {
        self.controllers.clone()
    }

    fn location(&self) -> String {
        self.inst.display().to_string()
    }

    fn create(&self, rel: &str, inner: bool) -> io::Result<()> {
        if !rel.contains('/') && !self.fs.exists(&self.inst) {
            // An earlier supervisor of this server, stopping, removed the
            // (then empty) instance directory meanwhile.
            if let Some(top) = self.inst.parent() {
                exists_ok(self.fs.mkdir(top))?;
                enable(&self.fs, top, &self.controllers);
            }
            exists_ok(self.fs.mkdir(&self.inst))?;
            enable(&self.fs, &self.inst, &self.controllers);
        }
        let d = join(&self.inst, rel);
        exists_ok(self.fs.mkdir(&d))?;
        if inner {
            // Per-worker memory.max and process counts.
            let per_worker: Vec<&String> = self.controllers.iter().filter(|c| *c == "memory" || *c == "pids").collect();
            enable(&self.fs, &d, &per_worker);
        }
        Ok(())
    }

    fn set_limits(&self, rel: &str, l: &GroupLimits) -> Result<(), String> {
        let mut failed = Vec::new();
        let mut put = |c: &str, file: &str, v: String| {
            if self.controllers.iter().any(|x| x == c) {
                if let Err(e) = self.fs.write(&self.file(rel, file), &v) {
                    failed.push(format!("{file} = {v}: {e}"));
                }
            }
        };
        if let Some(w) = l.cpu_weight {
            put("cpu", "cpu.weight", w.to_string());
        }
        if let Some(pct) = l.cpu_max {
            let quota = if pct == 0 { "max".to_string() } else { (pct as u64 * PERIOD_US / 100).to_string() };
            put("cpu", "cpu.max", format!("{quota} {PERIOD_US}"));
        }
        if let Some(n) = l.pids {
            put("pids", "pids.max", if n == 0 { "max".into() } else { n.to_string() });
        }
        if let Some(b) = l.memory {
            put("memory", "memory.max", if b == 0 { "max".into() } else { b.to_string() });
        }
        if failed.is_empty() {
            // Swap counts against nothing in memory.max: a capped group gets
            // none, so it is stopped at its cap rather than swapping past it.
            if let Some(b) = l.memory {
                let swap = self.file(rel, "memory.swap.max");
                if self.fs.exists(&swap) {
                    let _ = self.fs.write(&swap, if b == 0 { "max" } else { "0" });
                }
            }
            Ok(())
        } else {
            Err(failed.join("; "))
        }
    }

    fn join_fds(&self, rel: &str) -> io::Result<Vec<OwnedFd>> {
        Ok(vec![self.fs.open_procs(&self.file(rel, "cgroup.procs"))?])
    }

    fn signal(&self, rel: &str, sig: libc::c_int) -> usize {
        let dir = join(&self.inst, rel);
        if sig == libc::SIGKILL && self.has_kill {
            let n = self.members(&dir).len();
            if self.fs.write(&dir.join("cgroup.kill"), "1").is_ok() {
                return n;
            }
        }
        let freeze = dir.join("cgroup.freeze");
        let froze = self.fs.write(&freeze, "1").is_ok();
        if froze {
            let _ = (0..FREEZE_POLLS).any(|_| {
                let done = self.fs.read(&dir.join("cgroup.events")).is_ok_and(|t| keyed(&t, "frozen") == Some(1));
                if !done {
                    self.fs.pause();
                }
                done
            });
        }
        let pids = self.members(&dir);
        for &p in &pids {
            let _ = self.fs.signal(p, sig);
        }
        if froze {
            let _ = self.fs.write(&freeze, "0");
        }
        pids.len()
    }

    fn populated(&self, rel: &str) -> bool {
        match self.read(rel, "cgroup.events").and_then(|t| keyed(&t, "populated")) {
            Some(n) => n > 0 || !self.members(&join(&self.inst, rel)).is_empty(),
            None => !self.members(&join(&self.inst, rel)).is_empty(),
        }
    }

    fn remove(&self, rel: &str) -> bool {
        remove_tree(&self.fs, &join(&self.inst, rel))
    }

    fn stats(&self, rel: &str) -> Stats {
        let cpu = self.read(rel, "cpu.stat");
        let events = self.read(rel, "memory.events");
        Stats {
            cpu_usec: cpu.as_deref().and_then(|t| keyed(t, "usage_usec")),
            memory: self.read(rel, "memory.current").and_then(|t| number(&t)),
            memory_peak: self.read(rel, "memory.peak").and_then(|t| number(&t)),
            processes: self.read(rel, "pids.current").and_then(|t| number(&t)),
            oom_kills: events.as_deref().and_then(|t| keyed(t, "oom_kill")),
            throttled_usec: cpu.as_deref().and_then(|t| keyed(t, "throttled_usec")),
            limit_hit: events.as_deref().and_then(|t| keyed(t, "oom")).is_some_and(|n| n > 0),
        }
    }

    fn children(&self, rel: &str) -> Vec<String> {
        self.fs.subgroups(&join(&self.inst, rel)).unwrap_or_default()
    }

    fn oom_hierarchical(&self) -> bool {
        true
    }

    fn close(&self) {
        let _ = self.fs.rmdir(&self.inst);
        if let Some(top) = self.inst.parent() {
            let _ = self.fs.rmdir(top);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::cgroup_fake::FakeFs;
    use super::*;
    use std::rc::Rc;

    const SVC: &str = "system.slice/apache2.service";

    #[test]
    fn server_processes_move_into_a_leaf_before_controllers_are_enabled() {
        let fs = Rc::new(FakeFs::v2(&["cpuset", "cpu", "io", "memory", "pids"], SVC, &[300, 301, 302]));
        let own = fs.root.join(SVC);
        let v2 = V2::open(fs.clone(), &fs.root, &own, "run-apache2-sufcgi").unwrap();
        assert_eq!(fs.procs(&own), Vec::<i32>::new(), "the service group holds no process any more");
        assert_eq!(fs.procs(&own.join("server")), vec![300, 301, 302]);
        assert_eq!(fs.text(&own.join("cgroup.subtree_control")), "cpu memory pids");
        assert_eq!(fs.text(&own.join("sufcgi/cgroup.subtree_control")), "cpu memory pids");
        assert_eq!(fs.text(&own.join("sufcgi/run-apache2-sufcgi/cgroup.subtree_control")), "cpu memory pids");
        assert_eq!(v2.controllers(), vec!["cpu", "memory", "pids"]);
        assert!(v2.has_kill);

        v2.create("owner-2001", true).unwrap();
        v2.create("owner-2001/worker-1", false).unwrap();
        let owner = own.join("sufcgi/run-apache2-sufcgi/owner-2001");
        assert_eq!(fs.text(&owner.join("cgroup.subtree_control")), "memory pids", "workers get memory.max and pids");
        v2.set_limits("owner-2001", &GroupLimits { cpu_weight: Some(50), cpu_max: Some(150), pids: Some(100), memory: Some(1 << 30) }).unwrap();
        assert_eq!(fs.text(&owner.join("cpu.weight")), "50");
        assert_eq!(fs.text(&owner.join("cpu.max")), "150000 100000");
        assert_eq!(fs.text(&owner.join("pids.max")), "100");
        assert_eq!(fs.text(&owner.join("memory.max")), "1073741824");
        assert_eq!(fs.text(&owner.join("memory.swap.max")), "0");
        v2.set_limits("owner-2001/worker-1", &GroupLimits { memory: Some(64 << 20), ..Default::default() }).unwrap();
        assert_eq!(fs.text(&owner.join("worker-1/memory.max")), (64u64 << 20).to_string());
        v2.set_limits("owner-2001", &GroupLimits { cpu_max: Some(0), pids: Some(0), memory: Some(0), ..Default::default() }).unwrap();
        assert_eq!(fs.text(&owner.join("cpu.max")), "max 100000");
        assert_eq!((fs.text(&owner.join("pids.max")).as_str(), fs.text(&owner.join("memory.max")).as_str()), ("max", "max"));
        // A worker group has no cpu files: a cpu weight there is not ours to set.
        assert!(v2.set_limits("owner-2001/worker-1", &GroupLimits { cpu_weight: Some(5), ..Default::default() }).is_err());
        assert_eq!(v2.join_fds("owner-2001/worker-1").unwrap().len(), 1);
        // The kernel would refuse a process in the owner group (it enables controllers).
        assert!(fs.write(&owner.join("cgroup.procs"), "77").is_err());
    }

    #[test]
    fn cgroup_kill_then_remove_and_figures() {
        let fs = Rc::new(FakeFs::v2(&["cpu", "memory", "pids"], SVC, &[1]));
        let own = fs.root.join(SVC);
        let v2 = V2::open(fs.clone(), &fs.root, &own, "i").unwrap();
        v2.create("owner-5", true).unwrap();
        v2.create("owner-5/worker-2", false).unwrap();
        let w = own.join("sufcgi/i/owner-5/worker-2");
        fs.write(&w.join("cgroup.procs"), "400").unwrap();
        fs.write(&w.join("cgroup.procs"), "401").unwrap();
        assert!(v2.populated("owner-5/worker-2"));
        assert!(!v2.remove("owner-5"), "busy");
        assert_eq!(v2.signal("owner-5", libc::SIGKILL), 2);
        assert_eq!(*fs.signals.borrow(), vec![(400, libc::SIGKILL), (401, libc::SIGKILL)], "cgroup.kill ends the whole subtree");
        assert!(!v2.populated("owner-5/worker-2"));
        // Other signals: frozen, each member signalled, thawed.
        fs.write(&w.join("cgroup.procs"), "402").unwrap();
        assert_eq!(v2.signal("owner-5/worker-2", libc::SIGTERM), 1);
        assert_eq!(fs.text(&w.join("cgroup.freeze")), "0");
        assert_eq!(fs.signals.borrow().last(), Some(&(402, libc::SIGTERM)));
        fs.signal(402, libc::SIGKILL).unwrap();
        fs.set(&w.join("cpu.stat"), "usage_usec 1234\nuser_usec 1000\nsystem_usec 234\n");
        fs.set(&w.join("memory.current"), "8192");
        fs.set(&w.join("memory.events"), "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n");
        fs.set(&w.join("pids.current"), "2");
        let s = v2.stats("owner-5/worker-2");
        assert_eq!(
            s,
            Stats { cpu_usec: Some(1234), memory: Some(8192), memory_peak: Some(0), processes: Some(2), oom_kills: Some(1), throttled_usec: None, limit_hit: true }
        );
        assert!(v2.remove("owner-5"));
        assert!(!own.join("sufcgi/i/owner-5").exists());
        v2.close();
        assert!(!own.join("sufcgi").exists());
        assert!(own.join("server").exists(), "the server's own processes stay in their leaf");
    }

    #[test]
    fn restart_in_the_leaf_root_group_and_refusals() {
        let fs = Rc::new(FakeFs::v2(&["memory", "pids"], SVC, &[10, 11]));
        let own = fs.root.join(SVC);
        drop(V2::open(fs.clone(), &fs.root, &own, "i").unwrap());
        // The next supervisor finds itself in `server`: the same base, no nesting.
        let again = V2::open(fs.clone(), &fs.root, &own.join("server"), "i").unwrap();
        assert_eq!(again.location(), own.join("sufcgi/i").display().to_string());
        assert_eq!(again.controllers(), vec!["memory", "pids"], "cpu was not offered");
        assert!(!own.join("server/server").exists());

        // A server in the root group (a container without systemd): nothing moves.
        let fs = Rc::new(FakeFs::v2(&["cpu", "pids"], "", &[]));
        fs.add_proc(&fs.root, 1);
        let v2 = V2::open(fs.clone(), &fs.root, &fs.root, "i").unwrap();
        assert_eq!(fs.procs(&fs.root), vec![1]);
        assert!(!fs.root.join("server").exists());
        assert_eq!(v2.controllers(), vec!["cpu", "pids"]);

        // No controller delegated (this machine's /sys/fs/cgroup/unified).
        let fs = Rc::new(FakeFs::v2(&["hugetlb"], "x.service", &[5]));
        let e = V2::open(fs.clone(), &fs.root, &fs.root.join("x.service"), "i").err().unwrap();
        assert!(e.contains("offers no cpu, memory or pids controller"), "{e}");
        assert!(!fs.root.join("x.service/server").exists(), "nothing was moved for nothing");
    }
}
