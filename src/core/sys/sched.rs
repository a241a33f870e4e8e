//! The fair scheduler's per-thread slice (`sched_setattr`/`sched_getattr`,
//! Linux 6.12+: `sched_runtime` of a SCHED_OTHER/BATCH thread is its EEVDF
//! slice), and the scheduler statistics of `/proc/PID/task/TID/schedstat`.
//! What to set, and for whom, is `core::latency`'s.

use std::io;

/// `struct sched_attr` as of SCHED_ATTR_SIZE_VER0 (48 bytes); the kernel
/// accepts this size from every version that has the call.
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

const ATTR_SIZE: u32 = std::mem::size_of::<SchedAttr>() as u32;
const _: () = assert!(ATTR_SIZE == 48);

/// Policies the fair class runs (SCHED_OTHER, SCHED_BATCH, SCHED_IDLE).
fn fair(policy: u32) -> bool {
    matches!(policy as i32, libc::SCHED_OTHER | libc::SCHED_BATCH | libc::SCHED_IDLE)
}

fn getattr(tid: libc::pid_t) -> io::Result<SchedAttr> {
    let mut a = SchedAttr::default();
    // SAFETY: `a` is a writable sched_attr of ATTR_SIZE bytes, which is what
    // the size argument tells the kernel it may fill.
    let rc = unsafe { libc::syscall(libc::SYS_sched_getattr, tid, &mut a as *mut SchedAttr, ATTR_SIZE, 0u32) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(a)
}

/// Thread `tid`'s slice in nanoseconds (0 = the calling thread): `Some(0)`
/// on kernels before custom slices (they report no runtime for fair
/// threads), `None` for a thread outside the fair class.
pub fn slice_ns(tid: libc::pid_t) -> io::Result<Option<u64>> {
    let a = getattr(tid)?;
    Ok(fair(a.policy).then_some(a.runtime))
}

/// Set thread `tid`'s slice (0 = the calling thread; `ns` 0 = the kernel's
/// default; the kernel clamps others to 0.1–100 ms), keeping its policy and
/// nice value. A thread outside the fair class (real-time, deadline) is left
/// alone. Kernels before 6.12 accept the call and ignore the runtime.
/// Async-signal-safe (two raw syscalls): a child between clone and exec may call it.
pub fn set_slice_ns(tid: libc::pid_t, ns: u64) -> io::Result<()> {
    let mut a = getattr(tid)?;
    if !fair(a.policy) {
        return Ok(());
    }
    a.size = ATTR_SIZE;
    a.runtime = ns;
    a.flags = 0;
    // SAFETY: `a` is an initialised sched_attr of ATTR_SIZE bytes that the
    // kernel only reads.
    let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, tid, &a as *const SchedAttr, 0u32) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A thread's time on a CPU and waiting for one, in nanoseconds, from
/// `schedstat` ("<on cpu> <waiting on a runqueue> <timeslices>").
pub fn parse_schedstat(text: &[u8]) -> Option<(u64, u64)> {
    let s = std::str::from_utf8(text).ok()?;
    let mut it = s.split_ascii_whitespace();
    let run = it.next()?.parse().ok()?;
    let wait = it.next()?.parse().ok()?;
    Some((run, wait))
}

/// The threads of process `pid` (from `/proc/PID/task`).
pub fn threads(pid: libc::pid_t) -> io::Result<Vec<libc::pid_t>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        if let Some(t) = e?.file_name().to_str().and_then(|n| n.parse().ok()) {
            out.push(t);
        }
    }
    Ok(out)
}

/// Running + waiting nanoseconds of all of process `pid`'s threads now.
/// Most FastCGI workers have one thread: procfs counts a process's threads
/// in its task directory's link count, so those cost one read, no listing.
pub fn demand_ns(pid: libc::pid_t) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata(format!("/proc/{pid}/task"))?.nlink() == 3 {
        let text = std::fs::read(format!("/proc/{pid}/schedstat"))?;
        return parse_schedstat(&text).map(|(run, wait)| run.saturating_add(wait)).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidData));
    }
    let mut sum = 0u64;
    for t in threads(pid)? {
        // A thread that ended since the listing counts nothing.
        if let Ok(text) = std::fs::read(format!("/proc/{pid}/task/{t}/schedstat")) {
            if let Some((run, wait)) = parse_schedstat(&text) {
                sum = sum.saturating_add(run).saturating_add(wait);
            }
        }
    }
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedstat_lines() {
        assert_eq!(parse_schedstat(b"123456 789 12\n"), Some((123456, 789)));
        assert_eq!(parse_schedstat(b"0 0 0"), Some((0, 0)));
        assert_eq!(parse_schedstat(b"12"), None);
        assert_eq!(parse_schedstat(b"x 1 2"), None);
        assert_eq!(parse_schedstat(b""), None);
    }

    #[test]
    fn own_slice_round_trip() {
        // On a thread of its own: the slice is per thread.
        std::thread::spawn(|| {
            let before = slice_ns(0).expect("sched_getattr").expect("a fair thread");
            set_slice_ns(0, 300_000).expect("sched_setattr");
            let after = slice_ns(0).unwrap().unwrap();
            if before == 0 {
                assert_eq!(after, 0, "a kernel without custom slices reports none");
            } else {
                assert_eq!(after, 300_000);
                set_slice_ns(0, 0).unwrap();
                assert_eq!(slice_ns(0).unwrap().unwrap(), before, "0 gives the default back");
            }
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_single_threaded_process_is_read_in_one_go() {
        // A child that only sleeps: one thread, its demand is the one schedstat line.
        let mut c = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let pid = c.id() as libc::pid_t;
        let one = demand_ns(pid).unwrap();
        let (run, wait) = parse_schedstat(&std::fs::read(format!("/proc/{pid}/task/{pid}/schedstat")).unwrap()).unwrap();
        let _ = c.kill();
        let _ = c.wait();
        assert!(one <= run + wait, "{one} > {run} + {wait}");
        assert!(one > 0, "exec alone takes some CPU");
    }

    #[test]
    fn own_demand_grows() {
        let me = std::process::id() as libc::pid_t;
        let a = demand_ns(me).unwrap();
        let t = std::time::Instant::now();
        while t.elapsed() < std::time::Duration::from_millis(20) {
            std::hint::black_box(0u64);
        }
        assert!(demand_ns(me).unwrap() > a);
    }
}
