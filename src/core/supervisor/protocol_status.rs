//! The status report on the wire: pools with their workers, counters,
//! cgroup usage (protocol_usage) and history (protocol_customer), then the
//! isolation in force and the owners' figures. Framing: protocol_codec.

use std::io;
use std::path::PathBuf;

use super::protocol_codec::{encode_refused, kind_code, kind_from, open, Decoder, Encoder, ProtoError, MAX_FRAME, TAG_REPLY_REFUSED, TAG_REPLY_STATUS};
use super::protocol_customer::{get_history, put_history, PoolHistory};
use super::protocol_usage::{self as usage, Isolation, OwnerUsage, PoolUsage};
use crate::core::request::AppKind;

/// A pool's state on the status page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolState {
    Active = 1,
    /// Replaced by a newer version; its workers finish what they serve.
    Retiring = 2,
    /// Its workers crashed at start; no spawns until the backoff is over.
    Backoff = 3,
    /// Never started: the supervisor refused it (`history.last_refusal` says why).
    Refused = 4,
}

impl PoolState {
    pub fn name(self) -> &'static str {
        match self {
            PoolState::Active => "active",
            PoolState::Retiring => "retiring",
            PoolState::Backoff => "backoff",
            PoolState::Refused => "refused",
        }
    }
}

/// A worker's state on the status page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    Idle = 1,
    Busy = 2,
    /// Done serving; the supervisor is about to stop it.
    Retired = 3,
    /// Signalled to stop, not yet exited.
    Stopping = 4,
}

impl WorkerState {
    pub fn name(self) -> &'static str {
        match self {
            WorkerState::Idle => "idle",
            WorkerState::Busy => "busy",
            WorkerState::Retired => "retired",
            WorkerState::Stopping => "stopping",
        }
    }
}

/// Workers of a pool that ended, by why.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StopCounts {
    pub idle: u32,
    pub max_requests: u32,
    pub reload: u32,
    pub timeout: u32,
    pub memory: u32,
    /// Retired after a failed request (broken connection).
    pub retired: u32,
    /// Died on their own: killed by a signal or a non-zero exit status.
    pub crashed: u32,
    /// Exited on their own with status 0.
    pub exited: u32,
}

impl StopCounts {
    /// (JSON name, count), in a fixed order.
    pub fn named(&self) -> [(&'static str, u32); 8] {
        [
            ("idle", self.idle),
            ("max_requests", self.max_requests),
            ("reload", self.reload),
            ("timeout", self.timeout),
            ("memory", self.memory),
            ("retired", self.retired),
            ("crashed", self.crashed),
            ("exited", self.exited),
        ]
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerStatus {
    pub pid: u32,
    pub state: WorkerState,
    /// Requests given to it (0 once it is stopping).
    pub requests: u32,
    /// Resident set size in bytes (0 if unknown).
    pub rss: u64,
    pub age_secs: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStatus {
    pub uid: u32,
    pub gid: u32,
    /// The owner's login name (bytes, as in passwd).
    pub user: Vec<u8>,
    pub vhost: String,
    pub kind: AppKind,
    pub program: PathBuf,
    pub workdir: PathBuf,
    pub state: PoolState,
    pub max_workers: u32,
    /// Requests waiting in the pool's queue now.
    pub waiting: u32,
    pub spawns: u32,
    pub requests: u64,
    /// Requests answered 503 because the pool was overloaded.
    pub rejected: u32,
    /// Requests one worker is given at once: 0 not asked yet, 1, or more
    /// for an app that multiplexes (`core::mux`).
    pub per_worker: u32,
    pub stopped: StopCounts,
    pub workers: Vec<WorkerStatus>,
    /// What its workers' cgroups say (all None without cgroups).
    pub usage: PoolUsage,
    pub history: PoolHistory,
}

/// The supervisor's answer to `Request::Status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusReply {
    /// `truncated`: more pools (or owners) exist than fit in one frame.
    /// `owners`: the figures of every owner listed (cgroups), with the
    /// isolation in force.
    Pools { pools: Vec<PoolStatus>, truncated: bool, isolation: Isolation, owners: Vec<OwnerUsage> },
    Refused { status: u16, reason: String },
}

/// Bytes of one pool on the wire, to keep a status reply inside a frame.
fn put_pool_status(e: &mut Encoder, p: &PoolStatus) {
    e.u32(p.uid).u32(p.gid).bytes(&p.user).bytes(p.vhost.as_bytes()).u8(kind_code(p.kind));
    e.path(&p.program).path(&p.workdir).u8(p.state as u8);
    e.u32(p.max_workers).u32(p.waiting).u32(p.spawns).u64(p.requests).u32(p.rejected).u32(p.per_worker);
    for (_, n) in p.stopped.named() {
        e.u32(n);
    }
    e.u32(p.workers.len() as u32);
    for w in &p.workers {
        e.u32(w.pid).u8(w.state as u8).u32(w.requests).u64(w.rss).u32(w.age_secs);
    }
    usage::put_pool_usage(e, &p.usage);
    put_history(e, &p.history);
}

fn get_pool_status(d: &mut Decoder<'_>) -> Result<PoolStatus, ProtoError> {
    let uid = d.u32()?;
    let gid = d.u32()?;
    let user = d.bytes()?;
    let vhost = d.string()?;
    let kind = kind_from(d.u8()?)?;
    let program = d.path()?;
    let workdir = d.path()?;
    let state = match d.u8()? {
        1 => PoolState::Active,
        2 => PoolState::Retiring,
        3 => PoolState::Backoff,
        4 => PoolState::Refused,
        _ => return Err(ProtoError("unknown pool state")),
    };
    let max_workers = d.u32()?;
    let waiting = d.u32()?;
    let spawns = d.u32()?;
    let requests = d.u64()?;
    let rejected = d.u32()?;
    let per_worker = d.u32()?;
    let stopped = StopCounts {
        idle: d.u32()?,
        max_requests: d.u32()?,
        reload: d.u32()?,
        timeout: d.u32()?,
        memory: d.u32()?,
        retired: d.u32()?,
        crashed: d.u32()?,
        exited: d.u32()?,
    };
    let n = d.count(21)?;
    let mut workers = Vec::with_capacity(n);
    for _ in 0..n {
        let pid = d.u32()?;
        let state = match d.u8()? {
            1 => WorkerState::Idle,
            2 => WorkerState::Busy,
            3 => WorkerState::Retired,
            4 => WorkerState::Stopping,
            _ => return Err(ProtoError("unknown worker state")),
        };
        workers.push(WorkerStatus { pid, state, requests: d.u32()?, rss: d.u64()?, age_secs: d.u32()? });
    }
    let usage = usage::get_pool_usage(d)?;
    let history = get_history(d)?;
    Ok(PoolStatus {
        uid,
        gid,
        user,
        vhost,
        kind,
        program,
        workdir,
        state,
        max_workers,
        waiting,
        spawns,
        requests,
        rejected,
        per_worker,
        stopped,
        workers,
        usage,
        history,
    })
}

/// Pools beyond what fits in one frame are left out (`truncated`).
pub fn encode_status_reply(r: &StatusReply) -> io::Result<Vec<u8>> {
    match r {
        StatusReply::Pools { pools, truncated, isolation, owners } => {
            let mut cut = *truncated;
            // The owners (at most half the frame) and the isolation go after the pools.
            let mut tail = Encoder::raw();
            usage::put_isolation(&mut tail, isolation);
            let mut owners_body = Encoder::raw();
            let mut n_owners = 0u32;
            for o in owners {
                let mut one = Encoder::raw();
                usage::put_owner_usage(&mut one, o);
                let one = one.into_raw();
                if owners_body.encoded_len() + one.len() > MAX_FRAME / 2 {
                    cut = true;
                    break;
                }
                owners_body.append(&one);
                n_owners += 1;
            }
            tail.u32(n_owners);
            tail.append(&owners_body.into_raw());
            let tail = tail.into_raw();
            // Room for the header, the count, the flag and that tail.
            let budget = MAX_FRAME - 16 - tail.len();
            let mut body = Encoder::raw();
            let mut n = 0u32;
            for p in pools {
                let mut one = Encoder::raw();
                put_pool_status(&mut one, p);
                let one = one.into_raw();
                if body.encoded_len() + one.len() > budget {
                    cut = true;
                    break;
                }
                body.append(&one);
                n += 1;
            }
            let mut e = Encoder::new(TAG_REPLY_STATUS);
            e.u8(cut as u8).u32(n);
            e.append(&body.into_raw()).append(&tail);
            e.finish()
        }
        StatusReply::Refused { status, reason } => encode_refused(*status, reason),
    }
}

pub fn decode_status_reply(payload: &[u8]) -> Result<StatusReply, ProtoError> {
    let (tag, mut d) = open(payload)?;
    let r = match tag {
        TAG_REPLY_STATUS => {
            let truncated = d.bool()?;
            // A pool takes well over 64 bytes.
            let n = d.count(64)?;
            let mut pools = Vec::with_capacity(n);
            for _ in 0..n {
                pools.push(get_pool_status(&mut d)?);
            }
            let isolation = usage::get_isolation(&mut d)?;
            let n = d.count(usage::MIN_OWNER_BYTES)?;
            let mut owners = Vec::with_capacity(n);
            for _ in 0..n {
                owners.push(usage::get_owner_usage(&mut d)?);
            }
            StatusReply::Pools { pools, truncated, isolation, owners }
        }
        TAG_REPLY_REFUSED => StatusReply::Refused { status: d.u16()?, reason: d.string()? },
        _ => return Err(ProtoError("unexpected message tag")),
    };
    d.end()?;
    Ok(r)
}
