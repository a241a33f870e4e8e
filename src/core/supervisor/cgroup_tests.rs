//! Unit tests of the cgroup manager (cgroup.rs) on a fake v1 tree (cgroup_fake.rs).

use super::super::cgroup_fake::FakeFs;
use super::*;
use std::rc::Rc;

fn v1_manager(mode: CgroupMode) -> (Rc<FakeFs>, Cgroups) {
    let fs = Rc::new(FakeFs::v1(&["cpu", "cpuacct", "memory", "pids", "freezer"]));
    let mounts: Vec<cgroup_fs::V1Mount> = ["cpu", "cpuacct", "memory", "pids", "freezer"]
        .iter()
        .map(|c| cgroup_fs::V1Mount { controllers: vec![c.to_string()], own_dir: fs.root.join(c) })
        .collect();
    let h = V1::open(fs.clone(), &mounts, "inst").unwrap();
    (fs, Cgroups::with(mode, Some(Box::new(h)), String::new()))
}

fn limits() -> OwnerLimits {
    OwnerLimits { cpu_weight: 100, cpu_max: 0, max_processes: 32, memory: 128 << 20 }
}

#[test]
fn worker_lifecycle_on_v1() {
    let (fs, mut c) = v1_manager(CgroupMode::On);
    let p = c.prepare(2001, b"a", &limits(), 64 << 20).unwrap();
    let g = p.group.clone().unwrap();
    assert_eq!(g.rel, format!("owner-2001/worker-{}.1", std::process::id()), "named after this supervisor");
    assert_eq!(p.join.len(), 5, "one per hierarchy");
    assert_eq!(p.nproc, 0, "pids.max holds, no RLIMIT_NPROC");
    let rel = g.rel.clone();
    let w = |c: &str| fs.root.join(c).join("sufcgi/inst").join(&rel);
    assert_eq!(fs.text(&w("memory").join("memory.limit_in_bytes")), (64u64 << 20).to_string());
    assert_eq!(fs.text(&fs.root.join("pids/sufcgi/inst/owner-2001/pids.max")), "32");
    assert!(c.kernel_memory());
    // The worker and a setsid()ed child of it; the worker is reaped, the child is not.
    for hier in ["cpuacct", "memory", "pids", "freezer"] {
        fs.add_proc(&w(hier), 900);
    }
    fs.add_proc(&fs.root.join("cpu/sufcgi/inst/owner-2001"), 900); // cpu: the owner's group
    fs.set(&w("cpuacct").join("cpuacct.usage"), "3000000");
    fs.set(&w("memory").join("memory.oom_control"), "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n");
    fs.set(&w("memory").join("memory.failcnt"), "1");
    let mut totals = PoolTotals::default();
    assert_eq!(c.pool_usage([&g].into_iter(), &totals).cpu_usec, Some(3000));
    let kill = c.worker_gone(g, &mut totals).unwrap();
    assert_eq!(kill.limit, "SuFcgiMemoryLimit 64 MiB");
    assert_eq!(totals, PoolTotals { cpu_usec: 3000, oom_kills: 1 });
    assert!(fs.signals.borrow().contains(&(900, libc::SIGKILL)), "what the worker left is killed");
    assert!(!w("pids").exists(), "and its group removed");
    assert_eq!(c.owner_oom_now(2001), Some(1), "v1: kills in removed worker groups still count for the owner");
    // The owner group stays a while, then goes; its figures are carried on.
    fs.set(&fs.root.join("cpuacct/sufcgi/inst/owner-2001/cpuacct.usage"), "5000000");
    c.tick(Instant::now());
    assert!(fs.root.join("pids/sufcgi/inst/owner-2001").exists());
    c.tick(Instant::now() + OWNER_LINGER + Duration::from_secs(1));
    assert!(!fs.root.join("pids/sufcgi/inst/owner-2001").exists());
    let u = c.owner_usage(2001, b"a".to_vec(), limits());
    assert_eq!((u.in_cgroup, u.cpu_usec, u.oom_kills, u.processes), (false, Some(5000), Some(1), Some(0)));
    assert_eq!(c.known_owners(), vec![2001]);
    c.shutdown();
    assert!(!fs.root.join("pids/sufcgi").exists(), "nothing left at the end");
}

#[test]
fn busy_groups_are_retried_and_shutdown_kills_everything() {
    let (fs, mut c) = v1_manager(CgroupMode::On);
    let g = c.prepare(7, b"u", &limits(), 0).unwrap().group.unwrap();
    let w = fs.root.join("freezer/sufcgi/inst").join(&g.rel);
    // A process the fake does not let die (as one stuck in the kernel).
    c.pending.push(g.clone());
    fs.add_proc(&w, 55);
    fs.signals.borrow_mut().clear();
    // SIGKILL removes it in the fake; the group goes on the next tick.
    c.tick(Instant::now());
    assert!(c.pending.is_empty(), "{:?}", c.pending);
    assert!(!w.exists());
    let g2 = c.prepare(7, b"u", &limits(), 0).unwrap().group.unwrap();
    let w2 = fs.root.join("freezer/sufcgi/inst").join(&g2.rel);
    fs.add_proc(&w2, 66);
    c.shutdown();
    assert!(fs.signals.borrow().contains(&(66, libc::SIGKILL)));
    assert!(!fs.root.join("freezer/sufcgi").exists());
}

#[test]
fn leftovers_of_a_dead_supervisor_are_cleaned_up() {
    let (fs, mut c) = v1_manager(CgroupMode::On);
    let g = c.prepare(9, b"u", &limits(), 0).unwrap().group.unwrap();
    for hier in ["cpuacct", "memory", "pids", "freezer"] {
        fs.add_proc(&fs.root.join(hier).join("sufcgi/inst").join(&g.rel), 4242);
    }
    fs.add_proc(&fs.root.join("cpu/sufcgi/inst/owner-9"), 4242);
    drop(c); // killed: no shutdown
    let mounts: Vec<cgroup_fs::V1Mount> = ["cpu", "cpuacct", "memory", "pids", "freezer"]
        .iter()
        .map(|c| cgroup_fs::V1Mount { controllers: vec![c.to_string()], own_dir: fs.root.join(c) })
        .collect();
    let h = V1::open(fs.clone(), &mounts, "inst").unwrap();
    let mut again = Cgroups::with(CgroupMode::On, Some(Box::new(h)), String::new());
    assert_eq!(again.clean_up(), (1, 1));
    assert!(fs.signals.borrow().contains(&(4242, libc::SIGKILL)));
    assert!(!fs.root.join("pids/sufcgi/inst/owner-9").exists());
}

#[test]
fn a_stopping_supervisor_leaves_its_successors_groups_alone() {
    // The server started again at once: the new supervisor has a worker of
    // uid 7 while the old one (same instance) still stops its own.
    let (fs, mut old) = v1_manager(CgroupMode::On);
    let g_old = old.prepare(7, b"u", &limits(), 0).unwrap().group.unwrap();
    let mounts: Vec<cgroup_fs::V1Mount> = ["cpu", "cpuacct", "memory", "pids", "freezer"]
        .iter()
        .map(|c| cgroup_fs::V1Mount { controllers: vec![c.to_string()], own_dir: fs.root.join(c) })
        .collect();
    let mut new = Cgroups::with(CgroupMode::On, Some(Box::new(V1::open(fs.clone(), &mounts, "inst").unwrap())), String::new());
    new.worker_prefix = "worker-99999.".into();
    let g_new = new.prepare(7, b"u", &limits(), 0).unwrap().group.unwrap();
    assert_ne!(g_old.rel, g_new.rel);
    fs.add_proc(&fs.root.join("freezer/sufcgi/inst").join(&g_new.rel), 321);
    old.shutdown();
    assert!(!fs.signals.borrow().contains(&(321, libc::SIGKILL)), "the successor's worker was killed");
    assert!(fs.root.join("freezer/sufcgi/inst").join(&g_new.rel).exists());
    assert!(!fs.root.join("freezer/sufcgi/inst").join(&g_old.rel).exists());
    // The old one removed nothing the new one needs; had it removed the
    // (empty) instance directory, the next owner group makes it again.
    new.shutdown();
    assert!(!fs.root.join("pids/sufcgi").exists());
    let mut third = Cgroups::with(CgroupMode::On, Some(Box::new(V1::open(fs.clone(), &mounts, "inst").unwrap())), String::new());
    super::super::cgroup_fs::CgFs::rmdir(&*fs, &fs.root.join("pids/sufcgi/inst")).unwrap();
    assert!(third.prepare(8, b"u", &limits(), 0).unwrap().group.is_some(), "instance directory made again");
    third.shutdown();
}

#[test]
fn fallback_and_required() {
    let mut off = Cgroups::with(CgroupMode::Off, None, "SuFcgiCgroups off".into());
    let p = off.prepare(5, b"u", &limits(), 64 << 20).unwrap();
    assert!(p.group.is_none() && p.join.is_empty());
    assert_eq!(p.nproc, 32, "RLIMIT_NPROC from SuFcgiOwnerMaxProcesses");
    assert!(!off.kernel_memory());
    assert_eq!(off.isolation().hierarchy, "none");
    assert_eq!(off.required_refusal(5, &limits()), None);
    let u = off.owner_usage(5, b"x".to_vec(), limits());
    assert_eq!((u.cpu_usec, u.memory, u.processes), (None, None, None));

    let mut req = Cgroups::with(CgroupMode::Required, None, "cgroupfs is read-only".into());
    assert!(req.prepare(5, b"u", &limits(), 0).unwrap_err().contains("cgroupfs is read-only"));
    assert!(req.required_refusal(5, &limits()).unwrap().contains("required"));

    // Required, and the owner group cannot be made (here: a cpu weight the
    // kernel refuses, as without write access to the hierarchy).
    let (fs, mut c) = v1_manager(CgroupMode::Required);
    std::fs::create_dir_all(fs.root.join("cpu/sufcgi/inst/owner-8")).unwrap(); // a group whose files are missing
    let e = c.required_refusal(8, &limits()).unwrap();
    assert!(e.contains("cannot limit the cgroup of uid 8"), "{e}");
    // With cgroups `on` the same owner falls back to RLIMIT_NPROC instead.
    let (fs, mut on) = v1_manager(CgroupMode::On);
    std::fs::create_dir_all(fs.root.join("cpu/sufcgi/inst/owner-8")).unwrap();
    let p = on.prepare(8, b"u", &limits(), 0).unwrap();
    assert!(p.group.is_none());
    assert_eq!(p.nproc, 32);
}

#[test]
fn limits_follow_a_graceful_restart() {
    let (fs, mut c) = v1_manager(CgroupMode::On);
    c.prepare(3, b"u", &limits(), 0).unwrap();
    let more = OwnerLimits { cpu_weight: 400, cpu_max: 50, ..limits() };
    c.update_limits(3, &more);
    assert_eq!(fs.text(&fs.root.join("cpu/sufcgi/inst/owner-3/cpu.shares")), "4096");
    assert_eq!(fs.text(&fs.root.join("cpu/sufcgi/inst/owner-3/cpu.cfs_quota_us")), "50000");
    assert_eq!(c.limits_of(3), Some(more));
    c.update_limits(4, &more); // no group: nothing to do
    assert_eq!(c.limits_of(4), None);
}
