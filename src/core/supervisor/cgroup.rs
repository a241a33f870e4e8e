//! Per-owner cgroups: one customer cannot slow down, starve or outlive
//! another. The supervisor (root) makes, below the server's own group in
//! each hierarchy,
//!
//! ```text
//! …/sufcgi/<instance>/owner-<uid>/worker-<n>
//! ```
//!
//! (`<instance>`: the server's socket directory made a name, so that two
//! servers started from one cgroup — no systemd, the test suite — never
//! touch each other's groups). The owner group carries the host's
//! `SuFcgiOwner*` limits for all of that owner's processes; each worker's
//! group its `SuFcgiMemoryLimit`. A worker joins its group before it execs
//! (spawn.rs), so everything it starts is in there too, and a stopped
//! worker's group is killed as a whole and removed.
//!
//! One interface (`Hierarchy`, cgroup_hierarchy.rs), one type per
//! hierarchy (cgroup_v1.rs, cgroup_v2.rs). Without a usable hierarchy
//! (`SuFcgiCgroups off`, no delegation, a read-only cgroupfs) the fallback
//! is RLIMIT_NPROC from `SuFcgiOwnerMaxProcesses` and the supervisor's RSS
//! watch; the status page says which is in force.

use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::{Duration, Instant};

use super::cgroup_fs::{self, Kernel};
use super::cgroup_hierarchy::{GroupLimits, Hierarchy, Stats};
use super::cgroup_v1::V1;
use super::cgroup_v2::V2;
use super::log::{log_error, log_notice, log_warn};
use super::protocol_usage::{Isolation, OwnerUsage, PoolUsage};
use crate::core::owner_limits::{size_text, CgroupMode, OwnerLimits};

/// A worker's group, kept with the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct WorkerGroup {
    pub uid: u32,
    pub rel: String,
    /// Its `SuFcgiMemoryLimit` (0: none): for the log line if the kernel kills it.
    pub memory_limit: u64,
}

/// What a new worker needs from here.
#[derive(Debug)]
pub(super) struct Prepared {
    pub group: Option<WorkerGroup>,
    /// Written "0" into by the new process before it execs.
    pub join: Vec<OwnedFd>,
    /// RLIMIT_NPROC for the worker (0: none): the fallback without a pids controller.
    pub nproc: u32,
}

/// A pool's figures from workers that are gone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct PoolTotals {
    pub cpu_usec: u64,
    pub oom_kills: u64,
}

/// The kernel's OOM killer ended (a process of) a worker's group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MemoryKill {
    /// For the log: which limit, e.g. "SuFcgiMemoryLimit 64 MiB".
    pub limit: String,
}

struct OwnerGroup {
    limits: OwnerLimits,
    /// Worker groups of this owner (live, or waiting to be removed).
    workers: u32,
    empty_since: Option<Instant>,
    /// OOM kills in removed worker groups (v1 counts them there only).
    removed_oom: u64,
    /// OOM kills already reported in the log.
    oom_logged: u64,
}

/// An owner's figures from groups that are gone.
#[derive(Debug, Clone, Copy, Default)]
struct Carried {
    cpu_usec: u64,
    peak: u64,
    oom_kills: u64,
    throttled_usec: u64,
}

/// An owner group without workers for this long is removed (its figures carried on).
const OWNER_LINGER: Duration = Duration::from_secs(60);
/// How often owners' OOM kills are looked at (for a log line).
const OOM_LOOK: Duration = Duration::from_secs(2);
/// Longest wait for groups to empty at shutdown.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(3);

pub(super) struct Cgroups {
    mode: CgroupMode,
    h: Option<Box<dyn Hierarchy>>,
    /// Why cgroups are not (fully) in use.
    note: String,
    owners: HashMap<u32, OwnerGroup>,
    /// Worker groups whose rmdir found them busy: tried again on each tick.
    pending: Vec<WorkerGroup>,
    /// Worker groups of live workers.
    live: HashSet<String>,
    carried: HashMap<u32, Carried>,
    /// Worker groups are `worker-<this supervisor's pid>.<n>`: a server
    /// started again at once (same socket directory, so the same instance)
    /// gets a new supervisor while the old one still stops its workers, and
    /// neither may take the other's groups for its own.
    worker_prefix: String,
    next_worker: u64,
    next_oom_look: Instant,
    /// Owners whose group could not be made (logged once each).
    failed_owners: HashMap<u32, String>,
    /// Owners' login names, for the figures of owners without pools.
    names: HashMap<u32, Vec<u8>>,
}

fn owner_rel(uid: u32) -> String {
    format!("owner-{uid}")
}

fn add(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.saturating_add(b)),
        (x, None) | (None, x) => x,
    }
}

impl Cgroups {
    /// Detects the hierarchy this process is in (logged), cleans up groups a
    /// supervisor that died left behind, and is ready for workers.
    pub fn open(mode: CgroupMode, socket_dir: &Path) -> Cgroups {
        if mode == CgroupMode::Off {
            let c = Cgroups::with(mode, None, "SuFcgiCgroups off".into());
            log_notice!("cgroups: not used (SuFcgiCgroups off); {}", c.fallback_text());
            return c;
        }
        let instance = cgroup_fs::instance_name(socket_dir);
        let (h, note) = match cgroup_fs::this_layout() {
            Ok(layout) => match detect(&layout, &instance) {
                Ok(h) => (Some(h), String::new()),
                Err(why) => (None, why),
            },
            Err(e) => (None, format!("cannot read /proc/self/cgroup or mountinfo: {e}")),
        };
        let mut c = Cgroups::with(mode, h, note);
        match &c.h {
            Some(h) => {
                log_notice!("cgroups: {} ({}); owner groups in {}", h.name(), h.controllers().join(", "), h.location());
                let (groups, procs) = c.clean_up();
                if groups > 0 {
                    log_warn!("cgroups: removed {groups} group(s) left by an earlier supervisor ({procs} process(es) in them killed)");
                }
            }
            None if mode == CgroupMode::Required => {
                log_error!("cgroups: none usable ({}); SuFcgiCgroups required: every pool is answered 503", c.note)
            }
            None => log_warn!("cgroups: none usable ({}); {}", c.note, c.fallback_text()),
        }
        c.note_missing();
        c
    }

    /// On a given hierarchy (or none, with why).
    pub fn with(mode: CgroupMode, h: Option<Box<dyn Hierarchy>>, note: String) -> Cgroups {
        Cgroups {
            mode,
            h,
            note,
            owners: HashMap::new(),
            pending: Vec::new(),
            live: HashSet::new(),
            carried: HashMap::new(),
            worker_prefix: format!("worker-{}.", crate::core::sys::getpid()),
            next_worker: 1,
            next_oom_look: Instant::now() + OOM_LOOK,
            failed_owners: HashMap::new(),
            names: HashMap::new(),
        }
    }

    fn fallback_text(&self) -> &'static str {
        "owners' processes are capped with RLIMIT_NPROC (SuFcgiOwnerMaxProcesses), memory by the supervisor's RSS watch, no CPU share"
    }

    /// A hierarchy without some controller: say what is not enforced.
    fn note_missing(&mut self) {
        let Some(h) = &self.h else { return };
        let have = h.controllers();
        let missing: Vec<&str> = ["cpu", "memory", "pids"].into_iter().filter(|c| !have.iter().any(|h| h == c)).collect();
        if !missing.is_empty() {
            self.note = format!("no {} controller", missing.join(", "));
            log_warn!("cgroups: {}: {}", self.note, "the fallback applies for it (pids: RLIMIT_NPROC, memory: the RSS watch)");
        }
    }

    fn has(&self, controller: &str) -> bool {
        self.h.as_ref().is_some_and(|h| h.controllers().iter().any(|c| c == controller))
    }

    /// CPU time is counted: v2 always (cpu.stat), v1 with cpuacct.
    fn cpu_counted(&self) -> bool {
        self.h.as_ref().is_some_and(|h| h.name() == "v2") || self.has("cpuacct")
    }

    /// The kernel enforces memory limits: no RSS watch, no RLIMIT_DATA.
    pub fn kernel_memory(&self) -> bool {
        self.has("memory")
    }

    pub fn isolation(&self) -> Isolation {
        Isolation {
            mode: self.mode,
            hierarchy: self.h.as_ref().map_or("none", |h| h.name()).to_string(),
            controllers: self.h.as_ref().map(|h| h.controllers()).unwrap_or_default(),
            location: self.h.as_ref().map(|h| h.location()).unwrap_or_default(),
            note: self.note.clone(),
            slices: String::new(),
        }
    }

    /// Kills what is in the instance directory and removes its groups.
    fn clean_up(&mut self) -> (usize, usize) {
        let Some(h) = &self.h else { return (0, 0) };
        let stale = h.children("");
        if stale.is_empty() {
            return (0, 0);
        }
        let mut procs = 0;
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        loop {
            procs += h.signal("", libc::SIGKILL);
            let gone = h.children("").iter().all(|c| h.remove(c));
            if gone || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for c in h.children("") {
            log_error!("cgroups: cannot remove {}/{c}: it still has processes", h.location());
        }
        (stale.len(), procs)
    }

    /// Refusal text for `SuFcgiCgroups required` when the owner's group
    /// cannot be made (None: fine, or cgroups are optional).
    pub fn required_refusal(&mut self, uid: u32, limits: &OwnerLimits) -> Option<String> {
        if self.mode != CgroupMode::Required {
            return None;
        }
        if self.h.is_none() {
            return Some(format!("SuFcgiCgroups required, but no cgroup hierarchy is usable: {}", self.note));
        }
        self.owner_group(uid, limits).err().map(|e| format!("SuFcgiCgroups required, but {e}"))
    }

    /// The owner's group, made (and its limits applied) if needed.
    fn owner_group(&mut self, uid: u32, limits: &OwnerLimits) -> Result<(), String> {
        let Some(h) = &self.h else { return Err("no cgroup hierarchy".into()) };
        let rel = owner_rel(uid);
        match self.owners.get_mut(&uid) {
            Some(g) if g.limits == *limits => return Ok(()),
            Some(g) => {
                h.set_limits(&rel, &GroupLimits::owner(limits)).map_err(|e| format!("cannot apply the limits of uid {uid}: {e}"))?;
                log_notice!("cgroups: uid {uid}: {}", limits.describe());
                g.limits = *limits;
                return Ok(());
            }
            None => {}
        }
        let made = h.create(&rel, true).map_err(|e| format!("cannot create the cgroup of uid {uid} in {}: {e}", h.location()));
        let made = made.and_then(|_| h.set_limits(&rel, &GroupLimits::owner(limits)).map_err(|e| format!("cannot limit the cgroup of uid {uid}: {e}")));
        if let Err(e) = made {
            h.remove(&rel);
            return Err(e);
        }
        self.owners.insert(uid, OwnerGroup { limits: *limits, workers: 0, empty_since: Some(Instant::now()), removed_oom: 0, oom_logged: 0 });
        Ok(())
    }

    /// A group for a new worker of `uid`, or the fallback. Err only under
    /// `SuFcgiCgroups required`.
    pub fn prepare(&mut self, uid: u32, user: &[u8], limits: &OwnerLimits, memory_limit: u64) -> Result<Prepared, String> {
        if self.names.get(&uid).is_none_or(|n| n != user) {
            self.names.insert(uid, user.to_vec());
        }
        let nproc = if self.has("pids") { 0 } else { limits.max_processes };
        let fallback = Prepared { group: None, join: Vec::new(), nproc };
        if self.h.is_none() {
            return match self.mode {
                CgroupMode::Required => Err(format!("SuFcgiCgroups required, but no cgroup hierarchy is usable: {}", self.note)),
                _ => Ok(fallback),
            };
        }
        let made = self.owner_group(uid, limits).and_then(|_| self.worker_group(uid, memory_limit));
        match made {
            Ok((group, join)) => {
                self.failed_owners.remove(&uid);
                Ok(Prepared { group: Some(group), join, nproc })
            }
            Err(e) if self.mode == CgroupMode::Required => Err(e),
            Err(e) => {
                if self.failed_owners.insert(uid, e.clone()).is_none() {
                    log_error!("cgroups: {e}; uid {uid}'s workers start without one (RLIMIT_NPROC {})", limits.max_processes);
                }
                Ok(Prepared { nproc: limits.max_processes, ..fallback })
            }
        }
    }

    fn worker_group(&mut self, uid: u32, memory_limit: u64) -> Result<(WorkerGroup, Vec<OwnedFd>), String> {
        let Some(h) = &self.h else { return Err("no cgroup hierarchy".into()) };
        let rel = format!("{}/{}{}", owner_rel(uid), self.worker_prefix, self.next_worker);
        self.next_worker += 1;
        let made = h.create(&rel, false).map_err(|e| format!("cannot create cgroup {rel}: {e}"));
        let made = made.and_then(|_| {
            if memory_limit > 0 && self.has("memory") {
                h.set_limits(&rel, &GroupLimits { memory: Some(memory_limit), ..Default::default() })?;
            }
            h.join_fds(&rel).map_err(|e| format!("cannot open {rel}/cgroup.procs: {e}"))
        });
        match made {
            Ok(fds) => {
                if let Some(o) = self.owners.get_mut(&uid) {
                    o.workers += 1;
                    o.empty_since = None;
                }
                self.live.insert(rel.clone());
                Ok((WorkerGroup { uid, rel, memory_limit }, fds))
            }
            Err(e) => {
                h.remove(&rel);
                Err(e)
            }
        }
    }

    /// Signals everything in a worker's group (TERM with the worker, KILL
    /// when it is killed).
    pub fn signal(&self, g: &WorkerGroup, sig: libc::c_int) {
        if let Some(h) = &self.h {
            h.signal(&g.rel, sig);
        }
    }

    /// The worker has been reaped: kill what it left in its group, fold its
    /// figures into the pool's, remove the group. Some if the kernel's OOM
    /// killer ended a process of it.
    pub fn worker_gone(&mut self, g: WorkerGroup, totals: &mut PoolTotals) -> Option<MemoryKill> {
        self.live.remove(&g.rel);
        let h = self.h.as_ref()?;
        let st = h.stats(&g.rel);
        if h.populated(&g.rel) {
            h.signal(&g.rel, libc::SIGKILL);
        }
        let oom = st.oom_kills.unwrap_or(0);
        totals.cpu_usec = totals.cpu_usec.saturating_add(st.cpu_usec.unwrap_or(0));
        totals.oom_kills = totals.oom_kills.saturating_add(oom);
        let owner_limit = self.owners.get(&g.uid).map_or(0, |o| o.limits.memory);
        if !h.oom_hierarchical() {
            if let Some(o) = self.owners.get_mut(&g.uid) {
                o.removed_oom = o.removed_oom.saturating_add(oom);
            }
        }
        let kill = (oom > 0).then(|| MemoryKill {
            limit: if (st.limit_hit && g.memory_limit > 0) || owner_limit == 0 {
                format!("SuFcgiMemoryLimit {}", size_text(g.memory_limit))
            } else {
                format!("SuFcgiOwnerMemory {} (all processes of uid {})", size_text(owner_limit), g.uid)
            },
        });
        if h.remove(&g.rel) {
            self.worker_removed(g.uid);
        } else {
            self.pending.push(g);
        }
        kill
    }

    fn worker_removed(&mut self, uid: u32) {
        if let Some(o) = self.owners.get_mut(&uid) {
            o.workers = o.workers.saturating_sub(1);
            if o.workers == 0 {
                o.empty_since = Some(Instant::now());
            }
        }
    }

    /// A worker that never started: its group goes.
    pub fn abandon(&mut self, g: WorkerGroup) {
        let mut t = PoolTotals::default();
        self.worker_gone(g, &mut t);
    }

    /// Busy groups again, owners without workers, OOM kills for the log.
    pub fn tick(&mut self, now: Instant) {
        let Some(h) = &self.h else { return };
        let mut removed = Vec::new();
        for g in std::mem::take(&mut self.pending) {
            if h.populated(&g.rel) {
                h.signal(&g.rel, libc::SIGKILL);
            }
            if h.remove(&g.rel) {
                removed.push(g.uid);
            } else {
                self.pending.push(g);
            }
        }
        for uid in removed {
            self.worker_removed(uid);
        }
        let idle: Vec<u32> = self
            .owners
            .iter()
            .filter(|(_, o)| o.workers == 0 && o.empty_since.is_some_and(|t| now.saturating_duration_since(t) >= OWNER_LINGER))
            .map(|(&u, _)| u)
            .collect();
        for uid in idle {
            self.remove_owner(uid);
        }
        if now >= self.next_oom_look {
            self.next_oom_look = now + OOM_LOOK;
            self.log_owner_oom();
        }
    }

    fn log_owner_oom(&mut self) {
        let uids: Vec<u32> = self.owners.keys().copied().collect();
        for uid in uids {
            let Some(n) = self.owner_oom_now(uid) else { continue };
            let Some(o) = self.owners.get_mut(&uid) else { continue };
            if n > o.oom_logged {
                log_warn!(
                    "cgroups: uid {uid}: the kernel's OOM killer ended {} process(es) ({} in all; owner limits: {})",
                    n - o.oom_logged,
                    n,
                    o.limits.describe()
                );
                o.oom_logged = n;
            }
        }
    }

    /// OOM kills in the owner's live groups (not counting removed owner groups).
    fn owner_oom_now(&self, uid: u32) -> Option<u64> {
        let h = self.h.as_ref()?;
        let o = self.owners.get(&uid)?;
        let rel = owner_rel(uid);
        let own = h.stats(&rel).oom_kills;
        if h.oom_hierarchical() {
            return own;
        }
        let workers = h.children(&rel).iter().map(|w| h.stats(&format!("{rel}/{w}")).oom_kills).fold(own, add);
        add(workers, Some(o.removed_oom))
    }

    fn remove_owner(&mut self, uid: u32) {
        let Some(h) = &self.h else { return };
        let rel = owner_rel(uid);
        let st = h.stats(&rel);
        let oom = self.owner_oom_now(uid).unwrap_or(0);
        if !h.remove(&rel) {
            return;
        }
        self.owners.remove(&uid);
        let c = self.carried.entry(uid).or_default();
        c.cpu_usec = c.cpu_usec.saturating_add(st.cpu_usec.unwrap_or(0));
        c.peak = c.peak.max(st.memory_peak.unwrap_or(0));
        c.oom_kills = c.oom_kills.saturating_add(oom);
        c.throttled_usec = c.throttled_usec.saturating_add(st.throttled_usec.unwrap_or(0));
    }

    /// New limits for an owner whose group exists (a graceful restart changed them).
    pub fn update_limits(&mut self, uid: u32, limits: &OwnerLimits) {
        if self.owners.contains_key(&uid) {
            if let Err(e) = self.owner_group(uid, limits) {
                log_error!("cgroups: {e}");
            }
        }
    }

    /// Owners with figures (a group now, or carried from earlier ones).
    pub fn known_owners(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.owners.keys().chain(self.carried.keys()).copied().collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The applied limits of an owner with a group.
    pub fn limits_of(&self, uid: u32) -> Option<OwnerLimits> {
        self.owners.get(&uid).map(|o| o.limits)
    }

    pub fn owner_usage(&self, uid: u32, mut user: Vec<u8>, limits: OwnerLimits) -> OwnerUsage {
        if user.is_empty() {
            user = self.names.get(&uid).cloned().unwrap_or_default();
        }
        let mut u = OwnerUsage { uid, user, limits: self.limits_of(uid).unwrap_or(limits), ..Default::default() };
        let Some(h) = &self.h else { return u };
        let c = self.carried.get(&uid).copied().unwrap_or_default();
        let live = self.owners.contains_key(&uid);
        let st = if live { h.stats(&owner_rel(uid)) } else { Stats::default() };
        let has = |c: &str| self.has(c);
        u.in_cgroup = live;
        if self.cpu_counted() {
            u.cpu_usec = Some(c.cpu_usec.saturating_add(st.cpu_usec.unwrap_or(0)));
        }
        if has("cpu") {
            u.throttled_usec = Some(c.throttled_usec.saturating_add(st.throttled_usec.unwrap_or(0)));
        }
        if has("memory") {
            u.memory = Some(st.memory.unwrap_or(0));
            u.memory_peak = Some(c.peak.max(st.memory_peak.unwrap_or(0)));
            u.oom_kills = Some(c.oom_kills.saturating_add(if live { self.owner_oom_now(uid).unwrap_or(0) } else { 0 }));
        }
        if has("pids") {
            u.processes = Some(st.processes.unwrap_or(0));
        }
        u
    }

    /// A pool's figures: its live workers' groups plus what its gone workers left.
    pub fn pool_usage<'a>(&self, groups: impl Iterator<Item = &'a WorkerGroup>, totals: &PoolTotals) -> PoolUsage {
        let Some(h) = &self.h else { return PoolUsage::default() };
        let mut u = PoolUsage {
            cpu_usec: self.cpu_counted().then_some(totals.cpu_usec),
            memory: self.has("memory").then_some(0),
            processes: self.has("pids").then_some(0),
            oom_kills: self.has("memory").then_some(totals.oom_kills),
        };
        for g in groups {
            let st = h.stats(&g.rel);
            if u.cpu_usec.is_some() {
                u.cpu_usec = add(u.cpu_usec, st.cpu_usec);
            }
            if u.memory.is_some() {
                u.memory = add(u.memory, st.memory);
                u.oom_kills = add(u.oom_kills, st.oom_kills);
            }
            if u.processes.is_some() {
                u.processes = add(u.processes, st.processes);
            }
        }
        u
    }

    /// Server stop: the processes in this supervisor's groups are killed and
    /// its groups removed (not those of a successor already started for the
    /// same server: see `worker_prefix`), then the instance directory if it
    /// is empty.
    pub fn shutdown(&mut self) {
        let Some(h) = &self.h else { return };
        let mut groups: Vec<String> = self.live.drain().chain(self.pending.drain(..).map(|g| g.rel)).collect();
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        loop {
            for g in &groups {
                if h.populated(g) {
                    h.signal(g, libc::SIGKILL);
                }
            }
            groups.retain(|g| !h.remove(g));
            if groups.is_empty() || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !groups.is_empty() {
            log_error!("cgroups: could not remove {} in {} (processes left in them)", groups.join(", "), h.location());
        }
        // An owner group a successor uses is busy: it stays, as it should.
        for uid in self.owners.keys() {
            h.remove(&owner_rel(*uid));
        }
        self.owners.clear();
        if h.children("").is_empty() {
            h.close();
        }
    }
}

/// The hierarchy to use: v2 where it offers controllers to the server,
/// else v1 where it has them mounted, else none (with why).
fn detect(layout: &cgroup_fs::Layout, instance: &str) -> Result<Box<dyn Hierarchy>, String> {
    let mut why = Vec::new();
    if let Some((mount, own)) = &layout.v2 {
        match V2::open(Kernel, mount, own, instance) {
            Ok(h) => return Ok(Box::new(h)),
            Err(e) => why.push(e),
        }
    }
    if !layout.v1.is_empty() {
        match V1::open(Kernel, &layout.v1, instance) {
            Ok(h) => return Ok(Box::new(h)),
            Err(e) => why.push(e),
        }
    }
    if why.is_empty() {
        why.push("no cgroup hierarchy is mounted".into());
    }
    Err(why.join("; "))
}

#[cfg(test)]
#[path = "cgroup_tests.rs"]
mod tests;
