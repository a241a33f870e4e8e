//! The interface each cgroup hierarchy implements (cgroup_v1.rs, cgroup_v2.rs)
//! and the figures and limits that cross it. Its own file so that the
//! hierarchies depend on it, and cgroup.rs on them, never the other way.

use std::io;
use std::os::fd::OwnedFd;

use crate::core::owner_limits::OwnerLimits;

/// Figures of one group; None where the hierarchy has no such file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Stats {
    pub cpu_usec: Option<u64>,
    pub memory: Option<u64>,
    pub memory_peak: Option<u64>,
    pub processes: Option<u64>,
    /// Processes of the group ended by the OOM killer (v2: with its
    /// subgroups; v1: in this group only).
    pub oom_kills: Option<u64>,
    pub throttled_usec: Option<u64>,
    /// The group's own memory limit was reached at some point.
    pub limit_hit: bool,
}

/// What to write into a group (None: leave as is; Some(0): no limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct GroupLimits {
    pub cpu_weight: Option<u32>,
    pub cpu_max: Option<u32>,
    pub pids: Option<u32>,
    pub memory: Option<u64>,
}

impl GroupLimits {
    pub(super) fn owner(l: &OwnerLimits) -> GroupLimits {
        GroupLimits { cpu_weight: Some(l.cpu_weight), cpu_max: Some(l.cpu_max), pids: Some(l.max_processes), memory: Some(l.memory) }
    }
}

/// One cgroup hierarchy. Groups are named relative to the server's
/// instance directory (`""` is that directory itself).
pub(super) trait Hierarchy {
    /// `v1` or `v2`.
    fn name(&self) -> &'static str;
    fn controllers(&self) -> Vec<String>;
    /// The instance directory (each hierarchy's, for v1).
    fn location(&self) -> String;
    /// mkdir; `inner`: the group will have subgroups (v2 enables controllers for them).
    fn create(&self, rel: &str, inner: bool) -> io::Result<()>;
    fn set_limits(&self, rel: &str, l: &GroupLimits) -> Result<(), String>;
    /// Descriptors of the group's `cgroup.procs`, one per hierarchy, for a
    /// new process to write "0" into (it then is in the group).
    fn join_fds(&self, rel: &str) -> io::Result<Vec<OwnedFd>>;
    /// Signals every process in the group and its subgroups, race-free
    /// where the hierarchy allows (frozen meanwhile, or `cgroup.kill`).
    /// Returns how many processes there were.
    fn signal(&self, rel: &str, sig: libc::c_int) -> usize;
    fn populated(&self, rel: &str) -> bool;
    /// rmdir the group (subgroups first); false while one is busy.
    fn remove(&self, rel: &str) -> bool;
    fn stats(&self, rel: &str) -> Stats;
    fn children(&self, rel: &str) -> Vec<String>;
    /// Whether a parent's OOM-kill count includes its subgroups' (v2).
    fn oom_hierarchical(&self) -> bool;
    /// rmdir the instance directory and, if no other server's is left in
    /// it, `sufcgi`.
    fn close(&self);
}
