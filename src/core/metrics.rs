//! The status page as Prometheus text (exposition format 0.0.4, what a
//! stock Prometheus scrapes): `SetHandler sufcgi-metrics`, or `?metrics` on
//! the status page. Everything the page knows, with Prometheus' naming
//! rules: a `sufcgi_` prefix, base units (seconds, bytes), `_total` on
//! counters, one family per name with its HELP and TYPE.
//!
//! Pools are labelled `uid`, `user`, `vhost`, `kind`, `program`,
//! `directory`; a pool being replaced by a newer version and the new one
//! have the same labels, so their figures are summed (one series each).
//! Owners are labelled `uid`, `user`. Counters start at 0 with the
//! supervisor (and with each new version of a pool's app).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::core::status_view::{kind_name, lossy, path_text, View};
use crate::core::supervisor::protocol::WorkerState;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A label value: backslash, double quote and line feed escaped.
fn label(v: &str) -> String {
    let mut o = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o
}

fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}=\"{}\"", label(v))).collect();
    format!("{{{}}}", inner.join(","))
}

/// One metric family: its samples (label text, value) in order.
struct Family {
    help: &'static str,
    kind: &'static str,
    samples: Vec<(String, String)>,
}

#[derive(Default)]
struct Families {
    order: Vec<&'static str>,
    by_name: BTreeMap<&'static str, Family>,
}

impl Families {
    fn add(&mut self, name: &'static str, kind: &'static str, help: &'static str, labels: String, value: String) {
        if !self.by_name.contains_key(name) {
            self.order.push(name);
        }
        self.by_name.entry(name).or_insert(Family { help, kind, samples: Vec::new() }).samples.push((labels, value));
    }

    fn text(&self) -> String {
        let mut o = String::new();
        for name in &self.order {
            let f = &self.by_name[name];
            let _ = writeln!(o, "# HELP {name} {}", f.help);
            let _ = writeln!(o, "# TYPE {name} {}", f.kind);
            for (l, v) in &f.samples {
                let _ = writeln!(o, "{name}{l} {v}");
            }
        }
        o
    }
}

fn secs(usec: u64) -> String {
    format!("{:.6}", usec as f64 / 1e6)
}

/// What a pool's series add up to (summed over pools with the same labels).
#[derive(Default)]
struct PoolSums {
    requests: u64,
    rejected: u64,
    spawns: u64,
    waiting: u64,
    max_workers: u64,
    stops: BTreeMap<&'static str, u64>,
    workers: BTreeMap<&'static str, u64>,
    cpu_usec: Option<u64>,
    memory: Option<u64>,
    processes: Option<u64>,
    oom_kills: Option<u64>,
}

fn sum(a: &mut Option<u64>, b: Option<u64>) {
    if let Some(b) = b {
        *a = Some(a.unwrap_or(0).saturating_add(b));
    }
}

const WORKER_STATES: [WorkerState; 4] = [WorkerState::Idle, WorkerState::Busy, WorkerState::Retired, WorkerState::Stopping];

pub fn render(v: &View<'_>) -> Vec<u8> {
    let mut f = Families::default();
    let i = v.isolation;
    f.add(
        "sufcgi_isolation_info",
        "gauge",
        "Which isolation holds owners' processes (1 for the one in force).",
        labels(&[("mode", i.mode.name()), ("hierarchy", &i.hierarchy), ("controllers", &i.controllers.join(","))]),
        "1".into(),
    );
    f.add("sufcgi_status_truncated", "gauge", "1 if more pools or owners exist than the supervisor sent.", String::new(), (v.truncated as u8).to_string());

    let mut pools: BTreeMap<Vec<String>, PoolSums> = BTreeMap::new();
    for p in v.pools {
        let key = vec![
            p.uid.to_string(),
            lossy(&p.user).into_owned(),
            p.vhost.clone(),
            kind_name(p.kind).to_string(),
            path_text(&p.program).into_owned(),
            path_text(&p.workdir).into_owned(),
        ];
        let s = pools.entry(key).or_default();
        s.requests += p.requests;
        s.rejected += p.rejected as u64;
        s.spawns += p.spawns as u64;
        s.waiting += p.waiting as u64;
        s.max_workers += p.max_workers as u64;
        for (reason, n) in p.stopped.named() {
            *s.stops.entry(reason).or_default() += n as u64;
        }
        for st in WORKER_STATES {
            *s.workers.entry(st.name()).or_default() += p.workers.iter().filter(|w| w.state == st).count() as u64;
        }
        sum(&mut s.cpu_usec, p.usage.cpu_usec);
        sum(&mut s.memory, p.usage.memory);
        sum(&mut s.processes, p.usage.processes);
        sum(&mut s.oom_kills, p.usage.oom_kills);
    }
    const POOL_LABELS: [&str; 6] = ["uid", "user", "vhost", "kind", "program", "directory"];
    for (key, s) in &pools {
        let base: Vec<(&str, &str)> = POOL_LABELS.iter().copied().zip(key.iter().map(String::as_str)).collect();
        let l = labels(&base);
        f.add("sufcgi_pool_requests_total", "counter", "Requests relayed to the pool.", l.clone(), s.requests.to_string());
        f.add("sufcgi_pool_rejected_requests_total", "counter", "Requests answered 503 because the pool was overloaded.", l.clone(), s.rejected.to_string());
        f.add("sufcgi_pool_spawns_total", "counter", "Workers started.", l.clone(), s.spawns.to_string());
        f.add("sufcgi_pool_waiting_requests", "gauge", "Requests waiting in the pool's queue.", l.clone(), s.waiting.to_string());
        f.add("sufcgi_pool_max_workers", "gauge", "The pool's worker limit in force.", l.clone(), s.max_workers.to_string());
        for (reason, n) in &s.stops {
            let mut with = base.clone();
            with.push(("reason", reason));
            f.add("sufcgi_pool_worker_stops_total", "counter", "Workers that ended, by reason.", labels(&with), n.to_string());
        }
        for (state, n) in &s.workers {
            let mut with = base.clone();
            with.push(("state", state));
            f.add("sufcgi_pool_workers", "gauge", "Worker processes by state.", labels(&with), n.to_string());
        }
        if let Some(u) = s.cpu_usec {
            f.add("sufcgi_pool_cpu_seconds_total", "counter", "CPU time of the pool's workers and everything they started (cgroups).", l.clone(), secs(u));
        }
        if let Some(b) = s.memory {
            f.add("sufcgi_pool_memory_bytes", "gauge", "Memory of the pool's worker cgroups now (page cache included).", l.clone(), b.to_string());
        }
        if let Some(n) = s.processes {
            f.add("sufcgi_pool_processes", "gauge", "Processes in the pool's worker cgroups now.", l.clone(), n.to_string());
        }
        if let Some(n) = s.oom_kills {
            f.add("sufcgi_pool_oom_kills_total", "counter", "Processes of the pool's workers ended by the kernel's OOM killer.", l.clone(), n.to_string());
        }
    }

    for o in v.owners {
        let user = lossy(&o.user);
        let uid = o.uid.to_string();
        let l = labels(&[("uid", &uid), ("user", &user)]);
        f.add("sufcgi_owner_in_cgroup", "gauge", "1 if the owner has a cgroup now (it has workers).", l.clone(), (o.in_cgroup as u8).to_string());
        f.add("sufcgi_owner_cpu_weight", "gauge", "The owner's CPU weight (SuFcgiOwnerCpuWeight).", l.clone(), o.limits.cpu_weight.to_string());
        if o.limits.cpu_max > 0 {
            f.add("sufcgi_owner_cpu_limit_cpus", "gauge", "CPUs the owner may use at most (SuFcgiOwnerCpuMax).", l.clone(), format!("{:.2}", o.limits.cpu_max as f64 / 100.0));
        }
        if o.limits.max_processes > 0 {
            f.add("sufcgi_owner_processes_limit", "gauge", "Processes the owner may have (SuFcgiOwnerMaxProcesses).", l.clone(), o.limits.max_processes.to_string());
        }
        if o.limits.memory > 0 {
            f.add("sufcgi_owner_memory_limit_bytes", "gauge", "Memory of all the owner's processes at most (SuFcgiOwnerMemory).", l.clone(), o.limits.memory.to_string());
        }
        if let Some(u) = o.cpu_usec {
            f.add("sufcgi_owner_cpu_seconds_total", "counter", "CPU time of all the owner's processes.", l.clone(), secs(u));
        }
        if let Some(u) = o.throttled_usec {
            f.add("sufcgi_owner_cpu_throttled_seconds_total", "counter", "Time the owner's processes were held back by SuFcgiOwnerCpuMax.", l.clone(), secs(u));
        }
        if let Some(b) = o.memory {
            f.add("sufcgi_owner_memory_bytes", "gauge", "Memory of all the owner's processes now (page cache included).", l.clone(), b.to_string());
        }
        if let Some(b) = o.memory_peak {
            f.add("sufcgi_owner_memory_peak_bytes", "gauge", "Highest memory of the owner's processes seen.", l.clone(), b.to_string());
        }
        if let Some(n) = o.processes {
            f.add("sufcgi_owner_processes", "gauge", "Processes of the owner now.", l.clone(), n.to_string());
        }
        if let Some(n) = o.oom_kills {
            f.add("sufcgi_owner_oom_kills_total", "counter", "Processes of the owner ended by the kernel's OOM killer.", l.clone(), n.to_string());
        }
    }
    f.text().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::owner_limits::{CgroupMode, OwnerLimits};
    use crate::core::request::AppKind;
    use crate::core::supervisor::protocol::{PoolState, PoolStatus, StopCounts, WorkerStatus};
    use crate::core::supervisor::protocol_usage::{Isolation, OwnerUsage, PoolUsage};

    fn pool(program: &str, requests: u64, state: PoolState) -> PoolStatus {
        PoolStatus {
            uid: 2001,
            gid: 2001,
            user: b"al\"ice".to_vec(),
            vhost: "a.test:80".into(),
            kind: AppKind::App,
            program: program.into(),
            workdir: "/home/a/www/app".into(),
            state,
            max_workers: 4,
            waiting: 1,
            spawns: 2,
            requests,
            rejected: 3,
            per_worker: 1,
            stopped: StopCounts { idle: 1, memory: 2, ..Default::default() },
            workers: vec![WorkerStatus { pid: 9, state: WorkerState::Busy, requests: 1, rss: 0, age_secs: 1 }],
            usage: PoolUsage { cpu_usec: Some(1_500_000), memory: Some(4096), processes: Some(2), oom_kills: Some(1) },
            history: Default::default(),
        }
    }

    #[test]
    fn families_labels_and_sums() {
        let pools = vec![pool("/home/a/www/app/app.py", 10, PoolState::Retiring), pool("/home/a/www/app/app.py", 5, PoolState::Active), pool("/x\n\\y", 1, PoolState::Active)];
        let owners = vec![OwnerUsage {
            uid: 2001,
            user: b"alice".to_vec(),
            limits: OwnerLimits { cpu_weight: 100, cpu_max: 150, max_processes: 512, memory: 0 },
            in_cgroup: true,
            cpu_usec: Some(2_000_000),
            memory: Some(1 << 20),
            memory_peak: None,
            processes: Some(3),
            oom_kills: Some(1),
            throttled_usec: Some(250),
        }];
        let iso = Isolation { mode: CgroupMode::On, hierarchy: "v1".into(), controllers: vec!["cpu".into(), "memory".into()], ..Default::default() };
        let text = String::from_utf8(render(&View { pools: &pools, owners: &owners, isolation: &iso, customer: false, truncated: false })).unwrap();
        let l = r#"{uid="2001",user="al\"ice",vhost="a.test:80",kind="app",program="/home/a/www/app/app.py",directory="/home/a/www/app"}"#;
        assert!(text.contains(&format!("sufcgi_pool_requests_total{l} 15\n")), "the two versions of one app are one series:\n{text}");
        assert!(text.contains(&format!("sufcgi_pool_cpu_seconds_total{l} 3.000000\n")));
        assert!(text.contains(r#"program="/x\n\\y""#), "escaped:\n{text}");
        assert!(text.contains(r#"sufcgi_pool_worker_stops_total{uid="2001",user="al\"ice",vhost="a.test:80",kind="app",program="/home/a/www/app/app.py",directory="/home/a/www/app",reason="memory"} 4"#));
        assert!(text.contains(r#",state="busy"} 2"#));
        assert!(text.contains("sufcgi_isolation_info{mode=\"on\",hierarchy=\"v1\",controllers=\"cpu,memory\"} 1\n"));
        assert!(text.contains("sufcgi_owner_cpu_limit_cpus{uid=\"2001\",user=\"alice\"} 1.50\n"));
        assert!(text.contains("sufcgi_owner_cpu_throttled_seconds_total{uid=\"2001\",user=\"alice\"} 0.000250\n"));
        assert!(!text.contains("sufcgi_owner_memory_peak_bytes"), "unknown figures are left out, not 0");
        assert!(!text.contains("sufcgi_owner_memory_limit_bytes"), "no limit, no series");
        // One HELP and one TYPE per family, its samples together.
        let mut seen = std::collections::HashSet::new();
        let mut current = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap().to_string();
                assert!(seen.insert(name.clone()), "{name} twice");
                current = name;
            } else if !line.starts_with('#') {
                assert!(line.starts_with(&current), "{line} outside its family {current}");
            }
        }
        assert_eq!(text.matches("# HELP sufcgi_pool_requests_total ").count(), 1);
    }
}
