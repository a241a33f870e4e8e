//! The supervisor's side of what a customer sees, called from the loop in
//! `server.rs` through small hooks: their log (`customer_log`), their pools'
//! history and the pools it refused (`history`, for the status page), notes
//! from server children about their requests, and slow-request entries
//! (`core::slowlog`).

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use super::super::customer_log::{self, CustomerLogs, LogTarget};
use super::super::history::{unix_now, History, RefusedKey, RefusedPools};
use super::super::justify;
use super::super::log::log_notice;
use super::super::pools::Pool;
use super::super::worker_policy::StopReason;
use super::super::protocol::{PoolState, PoolStatus};
use super::super::protocol_customer::{Note, NoteKind, PoolHistory, NO_WORKER};
use super::Server;
use crate::core::hostconfig::HostConfig;
use crate::core::identity::{self, Owner, Refusal, System};
use crate::core::limits::Limits;
use crate::core::request::PoolSpec;
use crate::core::sys;
use crate::core::sys_files::FsIdentity;

/// Everything customer-facing the supervisor keeps (behind a RefCell in
/// `Server`: lifecycle events are written from `&self` methods).
#[derive(Default)]
pub(in crate::core::supervisor) struct CustomerState {
    logs: CustomerLogs,
    refused: RefusedPools,
    histories: HashMap<u64, History>,
}

/// "memory limit exceeded (SuFcgiMemoryLimit 256 MiB)": why, and the limit in force.
pub(in crate::core::supervisor) fn stop_detail(reason: StopReason, l: &Limits) -> String {
    let limit = match reason {
        StopReason::Idle => format!(" (SuFcgiIdleTimeout {} s)", l.idle_timeout),
        StopReason::MaxRequests => format!(" (SuFcgiMaxRequests {})", l.max_requests),
        StopReason::Timeout if l.request_timeout > 0 => format!(" (SuFcgiRequestTimeout {} s, or the server's Timeout)", l.request_timeout),
        StopReason::Timeout => " (the server's Timeout)".to_string(),
        StopReason::Memory => format!(" (SuFcgiMemoryLimit {} MiB)", l.memory_limit >> 20),
        StopReason::Reload | StopReason::Retired => String::new(),
    };
    format!("{}{limit}", reason.text())
}

/// Whether `spec.log_file` is named by a `SuFcgiLog` line of the owner's
/// own configuration (read here, not taken from the child) or the host's.
fn log_backed_by_owner(cfg: &HostConfig, spec: &PoolSpec, uid: u32) -> bool {
    let mut texts = Vec::new();
    for f in &spec.config_files {
        if let Ok(t) = justify::read_config_file(f, uid) {
            texts.push((f.parent().map(Path::to_path_buf), t));
        }
    }
    let mut sources: Vec<justify::Source<'_>> =
        texts.iter().map(|(dir, t)| justify::Source { dir: dir.as_deref(), lines: crate::core::htaccess::parse(t) }).collect();
    sources.extend(cfg.host_directives.iter().map(justify::Source::from_host));
    justify::log_backed(spec, &sources)
}

impl Server {
    fn histories(&self, f: impl FnOnce(&mut HashMap<u64, History>)) {
        f(&mut self.customer.borrow_mut().histories);
    }

    /// Where `owner`'s lines for `spec` go (None without `SuFcgiLog`).
    pub(super) fn log_target(&self, spec: &PoolSpec, owner: &Owner) -> Option<LogTarget> {
        let written = spec.log_file.as_deref()?;
        let groups = self.accounts.groups(&owner.name, owner.gid).unwrap_or_else(|_| vec![owner.gid]);
        let path = customer_log::resolve(written, &spec.workdir, sys::path_from_bytes(&owner.home));
        Some(LogTarget { path, who: FsIdentity { uid: owner.uid, gid: owner.gid, groups } })
    }

    /// A lifecycle event: to the error log, and to the pool's `SuFcgiLog` if it has one.
    pub(super) fn event(&self, id: u64, msg: &str) {
        let Some(pool) = self.pools.get(id) else { return };
        log_notice!("pool {}: {msg}", pool.desc);
        self.customer_line(id, "event", msg.as_bytes());
    }

    /// A line in pool `id`'s customer log, if it has one; true if written there.
    pub(super) fn customer_line(&self, id: u64, category: &'static str, text: &[u8]) -> bool {
        let Some(t) = self.pools.get(id).and_then(|p| p.log.as_ref()) else { return false };
        self.customer.borrow_mut().logs.write(t, category, text);
        true
    }

    /// A worker of pool `id` ended (`text`: how, and why it was stopped).
    pub(super) fn record_exit(&self, id: u64, text: &str) {
        self.histories(|h| h.entry(id).or_default().exited(text));
    }

    /// A line of a worker's stderr: kept for the page, and written to the
    /// customer's log (else the error log).
    pub(super) fn customer_stderr(&self, id: u64, pid: libc::pid_t, line: &[u8]) {
        self.histories(|h| h.entry(id).or_default().stderr_line(line));
        let mut text = format!("[pid {pid}] ").into_bytes();
        text.extend_from_slice(line);
        if !self.customer_line(id, "stderr", &text) {
            if let Some(p) = self.pools.get(id) {
                log_notice!("pool {} worker pid {pid} stderr: {}", p.desc, String::from_utf8_lossy(line));
            }
        }
    }

    pub(super) fn forget_history(&self, id: u64) {
        self.histories(|h| {
            h.remove(&id);
        });
    }

    /// A server child's note about a request of one of its pools.
    pub(super) fn handle_note(&mut self, n: &Note) {
        let Some(id) = self.pool_of_slot(n.slot, n.slot_generation) else { return };
        let Some(pool) = self.pools.get(id) else { return };
        let pid = (n.worker != NO_WORKER)
            .then(|| {
                let live = pool.workers.get(n.worker as usize).and_then(|w| w.as_ref()).filter(|w| w.epoch == n.epoch);
                live.or_else(|| pool.draining.iter().find(|w| w.epoch == n.epoch)).map(|w| w.pid)
            })
            .flatten();
        match n.kind {
            NoteKind::Stderr => {
                // (Without a customer log the child has logged these already.)
                let has_log = pool.log.is_some();
                for line in n.text.split(|&b| b == b'\n') {
                    self.histories(|h| h.entry(id).or_default().stderr_line(line));
                    if has_log {
                        let mut text = match pid {
                            Some(p) => format!("[pid {p}] [FastCGI] ").into_bytes(),
                            None => b"[FastCGI] ".to_vec(),
                        };
                        text.extend_from_slice(line);
                        self.customer_line(id, "stderr", &text);
                    }
                }
            }
            NoteKind::Refused | NoteKind::Failed => {
                let why = String::from_utf8_lossy(&n.text).into_owned();
                self.histories(|h| h.entry(id).or_default().refused(n.status, &why));
                if let Some(t) = pool.log.clone() {
                    let category = if n.kind == NoteKind::Refused { "refused" } else { "error" };
                    self.customer.borrow_mut().logs.write_folded(&t, category, format!("{}: {why}", n.status).as_bytes());
                }
            }
            NoteKind::Slow => {
                let threshold = pool.limits.slow_log;
                let where_ = match pid {
                    Some(p) => format!("worker pid {p}, {}", crate::core::slowlog::describe(p, self.page_size)),
                    None => "its worker is gone".to_string(),
                };
                let mut text = n.text.clone();
                text.extend_from_slice(
                    format!(" still running after {:.1} s (SuFcgiSlowLog {threshold} s): {where_}", n.elapsed_ms as f64 / 1000.0).as_bytes(),
                );
                if !self.customer_line(id, "slow", &text) {
                    log_notice!("pool {}: slow request: {}", pool.desc, String::from_utf8_lossy(&text));
                }
            }
        }
    }

    /// The supervisor refused `spec`: remember it for the owner's status
    /// page and say so in their log, if the owner (as the supervisor
    /// derives it) has one their own configuration names.
    pub(super) fn note_refusal(&self, spec: &PoolSpec, r: &Refusal) {
        let Some(cfg) = self.configs.iter().find(|c| c.generation == spec.generation) else { return };
        let Some(vh) = cfg.vhosts.get(spec.vhost as usize) else { return };
        // No owner (root, below the minimum ids, unknown): the host's business alone.
        let Ok(owner) = identity::resolve_owner(cfg, vh, spec, &self.accounts, &System) else { return };
        let target = if log_backed_by_owner(cfg, spec, owner.uid) { self.log_target(spec, &owner) } else { None };
        let key = RefusedKey { uid: owner.uid, vhost: vh.name.clone(), kind: spec.kind, program: spec.program.clone(), workdir: spec.workdir.clone() };
        let mut c = self.customer.borrow_mut();
        c.refused.record(key, owner.gid, owner.name.clone(), r.status, &r.reason, target.as_ref().map(|t| t.path.clone()));
        if let Some(t) = target {
            c.logs.write_folded(&t, "refused", format!("{}: {}", r.status, r.reason).as_bytes());
        }
    }

    /// `spec` got a pool: it is no refused pool any more.
    pub(super) fn pool_started(&self, spec: &PoolSpec, uid: u32) {
        let Some(vh) = self.configs.iter().find(|c| c.generation == spec.generation).and_then(|c| c.vhosts.get(spec.vhost as usize)) else { return };
        let key = RefusedKey { uid, vhost: vh.name.clone(), kind: spec.kind, program: spec.program.clone(), workdir: spec.workdir.clone() };
        self.customer.borrow_mut().refused.forget(&key);
    }

    pub(super) fn pool_history(&self, p: &Pool, now: Instant) -> PoolHistory {
        let c = self.customer.borrow();
        let h = c.histories.get(&p.id);
        let backoff_until = p.backoff.restart_at.map_or(0, |t| unix_now() + t.saturating_duration_since(now).as_secs() + 1);
        PoolHistory {
            last_refusal: h.and_then(|h| h.last_refusal.clone()),
            last_exit: h.and_then(|h| h.last_exit.clone()),
            stderr: h.map(|h| h.stderr_tail()).unwrap_or_default(),
            backoff_until,
            log_file: p.log.as_ref().map(|t| t.path.display().to_string()),
            log_error: p.log.as_ref().and_then(|t| c.logs.error(&t.path)),
        }
    }

    /// Refused pools for the status page (of one owner, or all).
    pub(super) fn refused_status(&self, only_uid: Option<u32>) -> Vec<PoolStatus> {
        let c = self.customer.borrow();
        c.refused
            .iter()
            .filter(|(k, _)| only_uid.is_none_or(|u| k.uid == u))
            .map(|(k, r)| PoolStatus {
                uid: k.uid,
                gid: r.gid,
                user: r.user.clone(),
                vhost: k.vhost.clone(),
                kind: k.kind,
                program: k.program.clone(),
                workdir: k.workdir.clone(),
                state: PoolState::Refused,
                max_workers: 0,
                waiting: 0,
                spawns: 0,
                requests: 0,
                rejected: 0,
                per_worker: 0,
                stopped: Default::default(),
                workers: Vec::new(),
                usage: Default::default(),
                history: PoolHistory {
                    last_refusal: Some(r.last.clone()),
                    log_file: r.log_file.as_ref().map(|p| p.display().to_string()),
                    log_error: r.log_file.as_ref().and_then(|p| c.logs.error(p)),
                    ..PoolHistory::default()
                },
            })
            .collect()
    }

    pub(super) fn customer_tick(&self) {
        let mut c = self.customer.borrow_mut();
        c.logs.tick();
        c.refused.expire();
    }
}
