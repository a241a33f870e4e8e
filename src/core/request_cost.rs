//! What one relayed request cost, for the host's access log: how long it
//! waited for a worker, which worker served it, that worker's CPU time for
//! it (where that is known: a worker serving one request at a time), and
//! which pool. Apache gets them as request notes (`%{sufcgi-queue-ms}n`…),
//! lighttpd as request environment (`%{sufcgi-queue-ms}e` in
//! `accesslog.format`). Both servers' glue use this; they only store the pairs.
//!
//! Nothing is measured unless a log format asks for it (`Wanted`): the
//! servers decide that once, from their configuration.

use crate::core::request::AppKind;
use std::path::Path;
use std::time::Instant;

pub const QUEUE_MS: &str = "sufcgi-queue-ms";
pub const WORKER_PID: &str = "sufcgi-worker-pid";
pub const WORKER_CPU_MS: &str = "sufcgi-worker-cpu-ms";
pub const POOL: &str = "sufcgi-pool";

/// What the host's log formats use: any note at all, and the CPU time
/// (two reads of /proc per request, so only when asked for).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wanted {
    pub any: bool,
    pub cpu: bool,
}

impl Wanted {
    pub const ALL: Wanted = Wanted { any: true, cpu: true };

    /// What a log format string (or several, concatenated) refers to.
    pub fn from_formats(text: &[u8]) -> Wanted {
        let has = |n: &str| text.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n.as_bytes()));
        Wanted { any: has("sufcgi-"), cpu: has(WORKER_CPU_MS) }
    }
}

/// `app:/home/a/www/app/app.py`, `wrapper:/home/a/www` (the directory whose
/// configuration runs the command), `script:/home/a/www/x.fcgi`.
pub fn pool_name(kind: AppKind, program: &Path, workdir: &Path) -> String {
    match kind {
        AppKind::App => format!("app:{}", program.display()),
        AppKind::Wrapper => format!("wrapper:{}", workdir.display()),
        AppKind::Script => format!("script:{}", program.display()),
        AppKind::Authorizer => format!("authorizer:{}", program.display()),
    }
}

/// How a worker's CPU time is read: a single-threaded worker (php-cgi,
/// libfcgi, Perl's FCGI) from its scheduler statistics, in nanoseconds; a
/// threaded one (every thread's time counts) from `/proc/PID/stat`, in
/// clock ticks (10 ms on most kernels).
#[derive(Clone, Copy)]
enum Clock {
    Schedstat,
    Ticks,
}

impl Clock {
    /// procfs counts a process's threads in its task directory's link count.
    fn of(pid: u32) -> Option<Clock> {
        use std::os::unix::fs::MetadataExt;
        let threads = std::fs::metadata(format!("/proc/{pid}/task")).ok()?.nlink().saturating_sub(2);
        Some(if threads == 1 { Clock::Schedstat } else { Clock::Ticks })
    }

    /// CPU time used so far, in nanoseconds.
    fn read(self, pid: u32) -> Option<u64> {
        match self {
            Clock::Schedstat => std::fs::read_to_string(format!("/proc/{pid}/schedstat")).ok()?.split_whitespace().next()?.parse().ok(),
            Clock::Ticks => {
                let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                let ticks = crate::core::slowlog::parse_stat(&s)?.1;
                // SAFETY: sysconf has no memory-safety requirements.
                let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
                Some(ticks.saturating_mul(1_000_000_000) / hz)
            }
        }
    }
}

/// One request, measured from its start to its end.
pub struct Meter {
    wanted: Wanted,
    started: Instant,
    queue_ms: Option<u64>,
    pid: u32,
    cpu_before: Option<(Clock, u64)>,
}

impl Meter {
    pub fn start(wanted: Wanted) -> Meter {
        Meter { wanted, started: Instant::now(), queue_ms: None, pid: 0, cpu_before: None }
    }

    /// A worker was claimed. `alone`: it serves only this request meanwhile
    /// (not shared, not queued behind another), so its CPU time is ours.
    pub fn claimed(&mut self, pid: u32, alone: bool) {
        self.queue_ms = Some(self.started.elapsed().as_millis() as u64);
        self.pid = pid;
        if self.wanted.cpu && alone && pid != 0 {
            self.cpu_before = Clock::of(pid).and_then(|c| Some((c, c.read(pid)?)));
        }
    }

    /// The values for the log, once the exchange ended.
    pub fn finish(&self, pool: String) -> Vec<(&'static str, String)> {
        let mut out = Vec::with_capacity(4);
        if let Some(q) = self.queue_ms {
            out.push((QUEUE_MS, q.to_string()));
            out.push((WORKER_PID, self.pid.to_string()));
        }
        if let Some((clock, before)) = self.cpu_before {
            if let Some(after) = clock.read(self.pid) {
                let ns = after.saturating_sub(before);
                out.push((WORKER_CPU_MS, format!("{}.{:03}", ns / 1_000_000, ns / 1000 % 1000)));
            }
        }
        out.push((POOL, pool));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_say_what_they_use() {
        assert_eq!(Wanted::from_formats(b"%h %l %u %t \"%r\" %>s %b"), Wanted::default());
        assert_eq!(Wanted::from_formats(b"%h %{sufcgi-queue-ms}n %{SUFCGI-POOL}n"), Wanted { any: true, cpu: false });
        assert_eq!(Wanted::from_formats(b"%{sufcgi-worker-cpu-ms}n"), Wanted::ALL);
    }

    #[test]
    fn a_meter_reports_queue_pid_cpu_and_pool() {
        let mut m = Meter::start(Wanted::ALL);
        m.claimed(std::process::id(), true);
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        let v = m.finish(pool_name(AppKind::Wrapper, Path::new("/usr/bin/php-cgi"), Path::new("/home/a/www")));
        let names: Vec<&str> = v.iter().map(|(k, _)| *k).collect();
        assert_eq!(names, [QUEUE_MS, WORKER_PID, WORKER_CPU_MS, POOL]);
        assert_eq!(v[1].1, std::process::id().to_string());
        assert_eq!(v[3].1, "wrapper:/home/a/www");
        let mut shared = Meter::start(Wanted::ALL);
        shared.claimed(std::process::id(), false);
        assert!(shared.finish(String::new()).iter().all(|(k, _)| *k != WORKER_CPU_MS), "not known for a shared worker");
    }
}
