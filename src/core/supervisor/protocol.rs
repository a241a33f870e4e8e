//! Wire format between server children, the privileged parent and the supervisor.
//!
//! A frame is `u32` little-endian payload length, then the payload:
//! `[VERSION, TAG, body…]`. Bodies use fixed-width little-endian integers,
//! `u32`-length-prefixed byte strings, `u32`-counted lists and a `0/1` byte
//! for options. Decoding is strict: every length is bounded by what is left,
//! trailing bytes are an error, and nothing panics on hostile input.

use std::io::{self, Read, Write};
use std::path::PathBuf;

use crate::core::hostconfig::{HostConfig, HostDirective, VhostConfig};
use crate::core::limits::Limits;
use crate::core::request::{AppKind, PoolInfo, PoolReply, PoolSpec};
use crate::core::sys;

use super::protocol_usage::{self as usage, Isolation, OwnerUsage, PoolUsage};

/// Bumped whenever a message's layout changes (2: pool status carries
/// requests per worker; 3: owner limits in the configuration, isolation and
/// usage in status replies; 4: notes, pool history, refused pools, slow-log
/// and X-Sendfile limits), so a supervisor left running from an older module
/// and a newer child refuse each other's frames instead of misreading them.
pub const VERSION: u8 = 4;
/// Largest payload accepted (and produced).
pub const MAX_FRAME: usize = 1 << 20;

const TAG_ENSURE: u8 = 1;
const TAG_NUDGE: u8 = 2;
const TAG_REPLY_READY: u8 = 3;
const TAG_REPLY_REFUSED: u8 = 4;
const TAG_CONFIG: u8 = 5;
const TAG_KILL: u8 = 6;
const TAG_STATUS: u8 = 7;
const TAG_REPLY_STATUS: u8 = 8;
const TAG_NOTE: u8 = 9;

use super::protocol_customer::{get_history, get_note, put_history, put_note, Note, PoolHistory};

/// Why a child asks the supervisor to stop the worker it was using.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillReason {
    /// `SuFcgiRequestTimeout` or the I/O timeout expired.
    Timeout = 1,
}

/// What a server child sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Ensure(Box<PoolSpec>),
    /// "Look at this pool": requests are waiting (spawn if allowed) or a
    /// worker was retired (stop it). One-way; the supervisor re-checks the
    /// scoreboard itself, so a hint can never do more than a re-check.
    Nudge { slot: u32, slot_generation: u32 },
    /// Stop the worker in entry `worker` if it still has `epoch` and is busy.
    Kill { slot: u32, slot_generation: u32, worker: u32, epoch: u32, reason: KillReason },
    /// The status page: every pool (`dir` None, the server-config page) or
    /// only those of the owner the supervisor itself derives for `dir` in
    /// `vhost` (a customer's page). Read-only: never spawns.
    /// `userdir_user` is the `~user` of the URL, checked like a pool's.
    Status { generation: u64, vhost: u32, dir: Option<PathBuf>, userdir_user: Option<Vec<u8>> },
    /// Something about one request for the pool owner's log (one-way; see
    /// `protocol_customer::Note`).
    Note(Box<Note>),
}

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtoError(pub &'static str);

impl std::fmt::Display for ProtoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed frame: {}", self.0)
    }
}

impl From<ProtoError> for io::Error {
    fn from(e: ProtoError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e.to_string())
    }
}

/// Builds one frame; `finish` fills in the length.
pub struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    pub fn new(tag: u8) -> Encoder {
        Encoder { buf: vec![0, 0, 0, 0, VERSION, tag] }
    }
    /// A bare encoder without frame header (used for pool keys).
    pub fn raw() -> Encoder {
        Encoder { buf: Vec::new() }
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u32(v.len() as u32);
        self.buf.extend_from_slice(v);
        self
    }
    pub fn path(&mut self, p: &std::path::Path) -> &mut Self {
        self.bytes(sys::path_bytes(p))
    }
    pub fn into_raw(self) -> Vec<u8> {
        self.buf
    }
    /// The finished frame, or an error if the payload exceeds `MAX_FRAME`.
    pub fn finish(mut self) -> io::Result<Vec<u8>> {
        let len = self.buf.len() - 4;
        if len > MAX_FRAME {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "frame exceeds the 1 MiB limit"));
        }
        self.buf[..4].copy_from_slice(&(len as u32).to_le_bytes());
        Ok(self.buf)
    }
}

/// Reads a payload; every accessor checks bounds.
pub struct Decoder<'a> {
    buf: &'a [u8],
}

impl<'a> Decoder<'a> {
    pub fn new(buf: &'a [u8]) -> Decoder<'a> {
        Decoder { buf }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        if self.buf.len() < n {
            return Err(ProtoError("truncated"));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    pub fn u8(&mut self) -> Result<u8, ProtoError> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16, ProtoError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    pub fn u32(&mut self) -> Result<u32, ProtoError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub fn u64(&mut self) -> Result<u64, ProtoError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    pub fn bytes(&mut self) -> Result<Vec<u8>, ProtoError> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    pub fn string(&mut self) -> Result<String, ProtoError> {
        String::from_utf8(self.bytes()?).map_err(|_| ProtoError("string is not UTF-8"))
    }
    pub fn path(&mut self) -> Result<PathBuf, ProtoError> {
        let b = self.bytes()?;
        if b.contains(&0) {
            return Err(ProtoError("path contains NUL"));
        }
        Ok(sys::path_from_bytes(&b).to_path_buf())
    }
    pub fn bool(&mut self) -> Result<bool, ProtoError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(ProtoError("bad boolean")),
        }
    }
    /// A list count; each element takes at least `min_elem` bytes, so the
    /// count can never make us allocate more than the frame justifies.
    pub fn count(&mut self, min_elem: usize) -> Result<usize, ProtoError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_elem.max(1)) > self.buf.len() {
            return Err(ProtoError("list count exceeds frame"));
        }
        Ok(n)
    }
    pub fn end(&self) -> Result<(), ProtoError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(ProtoError("trailing bytes"))
        }
    }
}

/// Splits off `[VERSION, TAG]` and checks the version.
fn open(payload: &[u8]) -> Result<(u8, Decoder<'_>), ProtoError> {
    let mut d = Decoder::new(payload);
    if d.u8()? != VERSION {
        return Err(ProtoError("unsupported protocol version"));
    }
    let tag = d.u8()?;
    Ok((tag, d))
}

fn kind_code(k: AppKind) -> u8 {
    k as u8
}

fn kind_from(code: u8) -> Result<AppKind, ProtoError> {
    match code {
        1 => Ok(AppKind::App),
        2 => Ok(AppKind::Wrapper),
        3 => Ok(AppKind::Script),
        4 => Ok(AppKind::Authorizer),
        _ => Err(ProtoError("unknown app kind")),
    }
}

fn put_spec(e: &mut Encoder, s: &PoolSpec) {
    e.u64(s.generation).u32(s.vhost).u8(kind_code(s.kind)).path(&s.program);
    e.u32(s.args.len() as u32);
    for a in &s.args {
        e.bytes(a);
    }
    e.path(&s.workdir);
    e.u32(s.config_files.len() as u32);
    for c in &s.config_files {
        e.path(c);
    }
    e.u32(s.env.len() as u32);
    for (k, v) in &s.env {
        e.bytes(k).bytes(v);
    }
    put_limits(e, &s.limits);
    put_opt_path(e, s.restart_file.as_deref());
    put_opt_path(e, s.log_file.as_deref());
    match &s.userdir_user {
        Some(u) => e.u8(1).bytes(u),
        None => e.u8(0),
    };
}

fn get_spec(d: &mut Decoder<'_>) -> Result<PoolSpec, ProtoError> {
    let generation = d.u64()?;
    let vhost = d.u32()?;
    let kind = kind_from(d.u8()?)?;
    let program = d.path()?;
    let n = d.count(4)?;
    let mut args = Vec::with_capacity(n);
    for _ in 0..n {
        args.push(d.bytes()?);
    }
    let workdir = d.path()?;
    let n = d.count(4)?;
    let mut config_files = Vec::with_capacity(n);
    for _ in 0..n {
        config_files.push(d.path()?);
    }
    let n = d.count(8)?;
    let mut env = Vec::with_capacity(n);
    for _ in 0..n {
        let k = d.bytes()?;
        let v = d.bytes()?;
        env.push((k, v));
    }
    let limits = get_limits(d)?;
    let restart_file = get_opt_path(d)?;
    let log_file = get_opt_path(d)?;
    let userdir_user = if d.bool()? { Some(d.bytes()?) } else { None };
    Ok(PoolSpec { generation, vhost, kind, program, args, workdir, config_files, env, limits, restart_file, log_file, userdir_user })
}

fn put_limits(e: &mut Encoder, l: &Limits) {
    e.u32(l.max_workers)
        .u32(l.min_workers)
        .u32(l.idle_timeout)
        .u32(l.max_requests)
        .u32(l.queue_limit)
        .u32(l.queue_timeout)
        .u32(l.request_timeout)
        .u64(l.memory_limit)
        .u32(l.slow_log)
        .u8(l.x_sendfile as u8);
}

fn get_limits(d: &mut Decoder<'_>) -> Result<Limits, ProtoError> {
    Ok(Limits {
        max_workers: d.u32()?,
        min_workers: d.u32()?,
        idle_timeout: d.u32()?,
        max_requests: d.u32()?,
        queue_limit: d.u32()?,
        queue_timeout: d.u32()?,
        request_timeout: d.u32()?,
        memory_limit: d.u64()?,
        slow_log: d.u32()?,
        x_sendfile: d.bool()?,
    })
}

fn put_opt_path(e: &mut Encoder, p: Option<&std::path::Path>) {
    match p {
        Some(p) => e.u8(1).path(p),
        None => e.u8(0),
    };
}

fn get_opt_path(d: &mut Decoder<'_>) -> Result<Option<PathBuf>, ProtoError> {
    Ok(if d.bool()? { Some(d.path()?) } else { None })
}

pub fn encode_request(r: &Request) -> io::Result<Vec<u8>> {
    match r {
        Request::Ensure(spec) => {
            let mut e = Encoder::new(TAG_ENSURE);
            put_spec(&mut e, spec);
            e.finish()
        }
        Request::Nudge { slot, slot_generation } => {
            let mut e = Encoder::new(TAG_NUDGE);
            e.u32(*slot).u32(*slot_generation);
            e.finish()
        }
        Request::Kill { slot, slot_generation, worker, epoch, reason } => {
            let mut e = Encoder::new(TAG_KILL);
            e.u32(*slot).u32(*slot_generation).u32(*worker).u32(*epoch).u8(*reason as u8);
            e.finish()
        }
        Request::Status { generation, vhost, dir, userdir_user } => {
            let mut e = Encoder::new(TAG_STATUS);
            e.u64(*generation).u32(*vhost);
            put_opt_path(&mut e, dir.as_deref());
            match userdir_user {
                Some(u) => e.u8(1).bytes(u),
                None => e.u8(0),
            };
            e.finish()
        }
        Request::Note(n) => {
            let mut e = Encoder::new(TAG_NOTE);
            put_note(&mut e, n);
            e.finish()
        }
    }
}

pub fn decode_request(payload: &[u8]) -> Result<Request, ProtoError> {
    let (tag, mut d) = open(payload)?;
    let r = match tag {
        TAG_ENSURE => Request::Ensure(Box::new(get_spec(&mut d)?)),
        TAG_NUDGE => Request::Nudge { slot: d.u32()?, slot_generation: d.u32()? },
        TAG_KILL => Request::Kill {
            slot: d.u32()?,
            slot_generation: d.u32()?,
            worker: d.u32()?,
            epoch: d.u32()?,
            reason: match d.u8()? {
                1 => KillReason::Timeout,
                _ => return Err(ProtoError("unknown kill reason")),
            },
        },
        TAG_STATUS => Request::Status {
            generation: d.u64()?,
            vhost: d.u32()?,
            dir: get_opt_path(&mut d)?,
            userdir_user: if d.bool()? { Some(d.bytes()?) } else { None },
        },
        TAG_NOTE => Request::Note(Box::new(get_note(&mut d)?)),
        _ => return Err(ProtoError("unexpected message tag")),
    };
    d.end()?;
    Ok(r)
}

pub fn encode_reply(r: &PoolReply) -> io::Result<Vec<u8>> {
    match r {
        PoolReply::Ready(i) => {
            let mut e = Encoder::new(TAG_REPLY_READY);
            e.path(&i.socket_prefix).u32(i.slot).u32(i.slot_generation).u32(i.uid).u32(i.gid);
            put_limits(&mut e, &i.limits);
            e.finish()
        }
        PoolReply::Refused { status, reason } => {
            let mut e = Encoder::new(TAG_REPLY_REFUSED);
            // Reasons are log text; keep them well inside a frame.
            let mut end = reason.len().min(4096);
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            e.u16(*status).bytes(&reason.as_bytes()[..end]);
            e.finish()
        }
    }
}

pub fn decode_reply(payload: &[u8]) -> Result<PoolReply, ProtoError> {
    let (tag, mut d) = open(payload)?;
    let r = match tag {
        TAG_REPLY_READY => PoolReply::Ready(PoolInfo {
            socket_prefix: d.path()?,
            slot: d.u32()?,
            slot_generation: d.u32()?,
            uid: d.u32()?,
            gid: d.u32()?,
            limits: get_limits(&mut d)?,
        }),
        TAG_REPLY_REFUSED => PoolReply::Refused { status: d.u16()?, reason: d.string()? },
        _ => return Err(ProtoError("unexpected message tag")),
    };
    d.end()?;
    Ok(r)
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
                if owners_body.buf.len() + one.len() > MAX_FRAME / 2 {
                    cut = true;
                    break;
                }
                owners_body.buf.extend_from_slice(&one);
                n_owners += 1;
            }
            tail.u32(n_owners);
            tail.buf.extend_from_slice(&owners_body.buf);
            // Room for the header, the count, the flag and that tail.
            let budget = MAX_FRAME - 16 - tail.buf.len();
            let mut body = Encoder::raw();
            let mut n = 0u32;
            for p in pools {
                let mut one = Encoder::raw();
                put_pool_status(&mut one, p);
                let one = one.into_raw();
                if body.buf.len() + one.len() > budget {
                    cut = true;
                    break;
                }
                body.buf.extend_from_slice(&one);
                n += 1;
            }
            let mut e = Encoder::new(TAG_REPLY_STATUS);
            e.u8(cut as u8).u32(n);
            e.buf.extend_from_slice(&body.buf);
            e.buf.extend_from_slice(&tail.buf);
            e.finish()
        }
        StatusReply::Refused { status, reason } => encode_reply(&PoolReply::Refused { status: *status, reason: reason.clone() }),
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

pub fn encode_config(c: &HostConfig) -> io::Result<Vec<u8>> {
    let mut e = Encoder::new(TAG_CONFIG);
    e.u64(c.generation)
        .u32(c.min_uid)
        .u32(c.min_gid)
        .u32(c.max_workers_per_owner)
        .u32(c.max_workers_total)
        .path(&c.socket_dir)
        .u32(c.server_uid)
        .u32(c.server_gid);
    put_limits(&mut e, &c.ceilings);
    e.u32(c.blocked_env.len() as u32);
    for b in &c.blocked_env {
        e.bytes(b.as_bytes());
    }
    e.u32(c.vhosts.len() as u32);
    for v in &c.vhosts {
        e.bytes(v.name.as_bytes());
        match v.owner {
            Some((u, g)) => e.u8(1).u32(u).u32(g),
            None => e.u8(0),
        };
        e.path(&v.document_root);
        usage::put_overrides(&mut e, &v.owner_overrides);
    }
    e.u32(c.host_directives.len() as u32);
    for h in &c.host_directives {
        put_opt_path(&mut e, h.dir.as_deref());
        e.bytes(&h.name);
        e.u32(h.args.len() as u32);
        for a in &h.args {
            e.bytes(a);
        }
    }
    usage::put_mode(&mut e, c.cgroups);
    usage::put_owner_limits(&mut e, &c.owner_limits);
    e.finish()
}

pub fn decode_config(payload: &[u8]) -> Result<HostConfig, ProtoError> {
    let (tag, mut d) = open(payload)?;
    if tag != TAG_CONFIG {
        return Err(ProtoError("unexpected message tag"));
    }
    let generation = d.u64()?;
    let min_uid = d.u32()?;
    let min_gid = d.u32()?;
    let max_workers_per_owner = d.u32()?;
    let max_workers_total = d.u32()?;
    let socket_dir = d.path()?;
    let server_uid = d.u32()?;
    let server_gid = d.u32()?;
    let ceilings = get_limits(&mut d)?;
    let n = d.count(4)?;
    let mut blocked_env = Vec::with_capacity(n);
    for _ in 0..n {
        blocked_env.push(d.string()?);
    }
    let n = d.count(9)?;
    let mut vhosts = Vec::with_capacity(n);
    for _ in 0..n {
        let name = d.string()?;
        let owner = if d.bool()? { Some((d.u32()?, d.u32()?)) } else { None };
        let document_root = d.path()?;
        let owner_overrides = usage::get_overrides(&mut d)?;
        vhosts.push(VhostConfig { name, owner, document_root, owner_overrides });
    }
    let n = d.count(9)?;
    let mut host_directives = Vec::with_capacity(n);
    for _ in 0..n {
        let dir = get_opt_path(&mut d)?;
        let name = d.bytes()?;
        let m = d.count(4)?;
        let mut args = Vec::with_capacity(m);
        for _ in 0..m {
            args.push(d.bytes()?);
        }
        host_directives.push(HostDirective { dir, name, args });
    }
    let cgroups = usage::get_mode(&mut d)?;
    let owner_limits = usage::get_owner_limits(&mut d)?;
    d.end()?;
    Ok(HostConfig {
        generation,
        min_uid,
        min_gid,
        ceilings,
        max_workers_per_owner,
        max_workers_total,
        socket_dir,
        server_uid,
        server_gid,
        blocked_env,
        vhosts,
        host_directives,
        cgroups,
        owner_limits,
    })
}

/// Accumulates bytes from a non-blocking stream and yields whole payloads.
#[derive(Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    pub fn new() -> FrameReader {
        FrameReader::default()
    }
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }
    /// The next complete payload, `Ok(None)` if more bytes are needed, or an
    /// error for an oversized frame (the connection should then be dropped).
    pub fn next_payload(&mut self) -> Result<Option<Vec<u8>>, ProtoError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > MAX_FRAME {
            return Err(ProtoError("frame too large"));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let payload = self.buf[4..4 + len].to_vec();
        self.buf.drain(..4 + len);
        Ok(Some(payload))
    }
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

/// Blocking read of one payload.
pub fn read_payload<R: Read>(r: &mut R) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(ProtoError("frame too large").into());
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Ok(payload)
}

pub fn write_frame<W: Write>(w: &mut W, frame: &[u8]) -> io::Result<()> {
    w.write_all(frame)?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::owner_limits::{CgroupMode, OwnerLimits};

    fn sample_spec() -> PoolSpec {
        PoolSpec {
            generation: 7,
            vhost: 2,
            kind: AppKind::Wrapper,
            program: "/usr/bin/php-cgi".into(),
            args: vec![b"-d".to_vec(), b"x=\xff".to_vec()],
            workdir: "/home/a/www".into(),
            config_files: vec!["/home/a/www/.htaccess".into(), "/home/a/.htaccess".into()],
            env: vec![(b"A".to_vec(), b"1".to_vec()), (b"B".to_vec(), Vec::new())],
            limits: Limits { max_workers: 3, ..Limits::DEFAULT },
            restart_file: Some("/home/a/www/tmp/restart.txt".into()),
            log_file: None,
            userdir_user: Some(b"alice".to_vec()),
        }
    }

    fn payload(frame: &[u8]) -> &[u8] {
        let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
        assert_eq!(frame.len(), 4 + len);
        &frame[4..]
    }

    #[test]
    fn request_round_trip() {
        for r in [
            Request::Ensure(Box::new(sample_spec())),
            Request::Ensure(Box::new(PoolSpec { userdir_user: None, args: vec![], ..sample_spec() })),
            Request::Nudge { slot: 5, slot_generation: 9 },
            Request::Note(Box::new(Note {
                slot: 1,
                slot_generation: 2,
                kind: super::super::protocol_customer::NoteKind::Stderr,
                status: 0,
                worker: 3,
                epoch: 4,
                elapsed_ms: 0,
                text: b"PHP Warning: x\nsecond".to_vec(),
            })),
        ] {
            let f = encode_request(&r).unwrap();
            assert_eq!(decode_request(payload(&f)).unwrap(), r);
        }
    }

    #[test]
    fn reply_round_trip() {
        for r in [
            PoolReply::Ready(PoolInfo {
                socket_prefix: "/run/sufcgi/00ff".into(),
                slot: 1,
                slot_generation: 2,
                uid: 1001,
                gid: 1002,
                limits: Limits::DEFAULT,
            }),
            PoolReply::Refused { status: 403, reason: "nope".into() },
        ] {
            let f = encode_reply(&r).unwrap();
            assert_eq!(decode_reply(payload(&f)).unwrap(), r);
        }
    }

    #[test]
    fn config_round_trip() {
        let mut c = HostConfig::new("/run/sufcgi".into(), 33, 33);
        c.generation = 12;
        c.cgroups = CgroupMode::Required;
        c.owner_limits = OwnerLimits { cpu_weight: 300, cpu_max: 250, max_processes: 0, memory: 1 << 30 };
        c.blocked_env = vec!["SECRET".into()];
        c.vhosts.push(VhostConfig::new("a:80".into(), Some((1001, 1001)), "/srv/a".into()));
        c.vhosts.push(VhostConfig::new("b:443".into(), None, "/srv/b".into()));
        c.vhosts[1].owner_overrides.memory = Some(64 << 20);
        let f = encode_config(&c).unwrap();
        assert_eq!(decode_config(payload(&f)).unwrap(), c);
    }

    #[test]
    fn hand_written_spawn_hint_frame() {
        let frame: &[u8] = &[
            10, 0, 0, 0, // payload length
            VERSION, TAG_NUDGE, // header
            3, 0, 0, 0, // slot
            0x01, 0x01, 0, 0, // generation 257
        ];
        assert_eq!(encode_request(&Request::Nudge { slot: 3, slot_generation: 257 }).unwrap(), frame);
        assert_eq!(decode_request(&frame[4..]).unwrap(), Request::Nudge { slot: 3, slot_generation: 257 });
    }

    #[test]
    fn hand_written_refused_frame() {
        let frame: &[u8] = &[VERSION, TAG_REPLY_REFUSED, 0x93, 0x01, 2, 0, 0, 0, b'n', b'o'];
        assert_eq!(decode_reply(frame).unwrap(), PoolReply::Refused { status: 403, reason: "no".into() });
    }

    #[test]
    fn hand_written_status_request_frame() {
        let frame: &[u8] = &[
            26, 0, 0, 0, // payload length
            VERSION, TAG_STATUS, // header
            5, 0, 0, 0, 0, 0, 0, 0, // generation 5
            2, 0, 0, 0, // vhost 2
            1, 6, 0, 0, 0, b'/', b'h', b'o', b'm', b'e', b'/', // dir Some("/home/")
            0, // no userdir user
        ];
        let r = Request::Status { generation: 5, vhost: 2, dir: Some("/home/".into()), userdir_user: None };
        assert_eq!(encode_request(&r).unwrap(), frame);
        assert_eq!(decode_request(&frame[4..]).unwrap(), r);
        let all = Request::Status { generation: 1, vhost: 0, dir: None, userdir_user: Some(b"al\xffce".to_vec()) };
        assert_eq!(decode_request(payload(&encode_request(&all).unwrap())).unwrap(), all);
    }

    fn sample_pool_status() -> PoolStatus {
        PoolStatus {
            uid: 2401,
            gid: 2401,
            user: b"alice".to_vec(),
            vhost: "a.test:80".into(),
            kind: AppKind::App,
            program: "/home/a/www/app/app.py".into(),
            workdir: "/home/a/www/app".into(),
            state: PoolState::Backoff,
            max_workers: 4,
            waiting: 1,
            spawns: 9,
            requests: 1 << 33,
            rejected: 3,
            per_worker: 8,
            stopped: StopCounts { idle: 1, max_requests: 2, reload: 3, timeout: 4, memory: 5, retired: 6, crashed: 7, exited: 8 },
            workers: vec![
                WorkerStatus { pid: 100, state: WorkerState::Busy, requests: 7, rss: 12 << 20, age_secs: 30 },
                WorkerStatus { pid: 101, state: WorkerState::Stopping, requests: 0, rss: 0, age_secs: 1 },
            ],
            usage: PoolUsage { cpu_usec: Some(1500), memory: Some(9 << 20), processes: Some(3), oom_kills: None },
            history: PoolHistory {
                last_exit: Some(super::super::protocol_customer::Happened { at: 5, status: 0, text: "pid 9 exited with status 1".into() }),
                stderr: vec!["warning".into()],
                ..PoolHistory::default()
            },
        }
    }

    #[test]
    fn hand_written_status_reply_frame() {
        let mut p: Vec<u8> = vec![VERSION, TAG_REPLY_STATUS, 0, 1, 0, 0, 0];
        p.extend_from_slice(&[0x61, 0x09, 0, 0, 0x61, 0x09, 0, 0]); // uid, gid 2401
        p.extend_from_slice(&[1, 0, 0, 0, b'u']); // user
        p.extend_from_slice(&[3, 0, 0, 0, b'v', b':', b'1']); // vhost
        p.push(2); // kind: wrapper
        p.extend_from_slice(&[2, 0, 0, 0, b'/', b'p']); // program
        p.extend_from_slice(&[2, 0, 0, 0, b'/', b'w']); // workdir
        p.push(2); // state: retiring
        for v in [4u32, 0, 1] {
            p.extend_from_slice(&v.to_le_bytes()); // max_workers, waiting, spawns
        }
        p.extend_from_slice(&5u64.to_le_bytes()); // requests
        p.extend_from_slice(&0u32.to_le_bytes()); // rejected
        p.extend_from_slice(&1u32.to_le_bytes()); // requests per worker
        for v in 1u32..=8 {
            p.extend_from_slice(&v.to_le_bytes()); // stop counts
        }
        p.extend_from_slice(&1u32.to_le_bytes()); // one worker
        p.extend_from_slice(&77u32.to_le_bytes());
        p.push(1); // idle
        p.extend_from_slice(&5u32.to_le_bytes());
        p.extend_from_slice(&4096u64.to_le_bytes());
        p.extend_from_slice(&12u32.to_le_bytes());
        let worker_state_at = p.len() - 21 + 4;
        p.extend_from_slice(&[0, 1, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // usage: cpu unknown, 7 bytes, the rest unknown
        p.extend_from_slice(&[0u8; 16]); // empty history (protocol_customer)
        p.extend_from_slice(&[2, 4, 0, 0, 0, b'n', b'o', b'n', b'e', 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, b'o', b'f', b'f']); // isolation
        p.extend_from_slice(&1u32.to_le_bytes()); // one owner
        p.extend_from_slice(&2401u32.to_le_bytes());
        p.extend_from_slice(&[1, 0, 0, 0, b'u']);
        for v in [100u32, 0, 512] {
            p.extend_from_slice(&v.to_le_bytes());
        }
        p.extend_from_slice(&0u64.to_le_bytes());
        p.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0]); // not in a cgroup, no figures
        let want = StatusReply::Pools {
            pools: vec![PoolStatus {
                uid: 2401,
                gid: 2401,
                user: b"u".to_vec(),
                vhost: "v:1".into(),
                kind: AppKind::Wrapper,
                program: "/p".into(),
                workdir: "/w".into(),
                state: PoolState::Retiring,
                max_workers: 4,
                waiting: 0,
                spawns: 1,
                requests: 5,
                rejected: 0,
                per_worker: 1,
                stopped: StopCounts { idle: 1, max_requests: 2, reload: 3, timeout: 4, memory: 5, retired: 6, crashed: 7, exited: 8 },
                workers: vec![WorkerStatus { pid: 77, state: WorkerState::Idle, requests: 5, rss: 4096, age_secs: 12 }],
                usage: PoolUsage { memory: Some(7), ..Default::default() },
                history: PoolHistory::default(),
            }],
            truncated: false,
            isolation: Isolation { mode: CgroupMode::Off, hierarchy: "none".into(), note: "off".into(), ..Default::default() },
            owners: vec![OwnerUsage { uid: 2401, user: b"u".to_vec(), ..Default::default() }],
        };
        assert_eq!(decode_status_reply(&p).unwrap(), want);
        assert_eq!(payload(&encode_status_reply(&want).unwrap()), &p[..]);
        // Every truncation fails cleanly; so do trailing bytes and a bad state.
        for n in 0..p.len() {
            assert!(decode_status_reply(&p[..n]).is_err(), "truncated at {n}");
        }
        let mut t = p.clone();
        t.push(0);
        assert!(decode_status_reply(&t).is_err());
        let mut bad = p.clone();
        bad[worker_state_at] = 9;
        assert!(decode_status_reply(&bad).is_err());
    }

    #[test]
    fn status_reply_round_trip_and_truncation() {
        for r in [
            StatusReply::Pools {
                pools: vec![sample_pool_status(), sample_pool_status()],
                truncated: false,
                isolation: Isolation { hierarchy: "v2".into(), controllers: vec!["memory".into()], ..Default::default() },
                owners: vec![OwnerUsage { uid: 1, cpu_usec: Some(2), ..Default::default() }; 3],
            },
            StatusReply::Pools { pools: vec![], truncated: true, isolation: Isolation::default(), owners: vec![] },
            StatusReply::Refused { status: 403, reason: "not yours".into() },
        ] {
            let f = encode_status_reply(&r).unwrap();
            assert_eq!(decode_status_reply(payload(&f)).unwrap(), r);
        }
        // More pools than a frame holds: a prefix, marked truncated.
        let big = PoolStatus { program: PathBuf::from(format!("/{}", "x".repeat(60_000))), ..sample_pool_status() };
        let owners = vec![OwnerUsage { user: vec![b'o'; 100], ..Default::default() }; 20_000];
        let f = encode_status_reply(&StatusReply::Pools { pools: vec![big; 40], truncated: false, isolation: Isolation::default(), owners }).unwrap();
        assert!(f.len() <= MAX_FRAME + 4);
        match decode_status_reply(payload(&f)).unwrap() {
            StatusReply::Pools { pools, truncated, owners, .. } => {
                assert!(!owners.is_empty() && owners.len() < 20_000, "owners are cut at half a frame");
                assert!(truncated);
                assert!(!pools.is_empty() && pools.len() < 40);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn malformed_frames_are_errors() {
        let good = encode_request(&Request::Ensure(Box::new(sample_spec()))).unwrap();
        let p = payload(&good);
        // Every truncation fails cleanly.
        for n in 0..p.len() {
            assert!(decode_request(&p[..n]).is_err(), "truncated at {n}");
        }
        // Trailing garbage, wrong version, unknown tag, bad kind.
        let mut t = p.to_vec();
        t.push(0);
        assert!(decode_request(&t).is_err());
        assert!(decode_request(&[VERSION + 1, TAG_NUDGE, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(decode_request(&[VERSION, 99]).is_err());
        let mut k = p.to_vec();
        k[2 + 8 + 4] = 9;
        assert!(decode_request(&k).is_err());
        // Huge list count cannot allocate.
        let mut e = Encoder::new(TAG_ENSURE);
        e.u64(0).u32(0).u8(1).bytes(b"/x").u32(u32::MAX);
        let f = e.finish().unwrap();
        assert!(decode_request(payload(&f)).is_err());
        // Replies: unknown tag; requests tag is not a reply.
        assert!(decode_reply(&[VERSION, TAG_ENSURE]).is_err());
        assert!(decode_config(&[VERSION, TAG_NUDGE]).is_err());
    }

    #[test]
    fn frame_reader_splits_and_bounds() {
        let a = encode_request(&Request::Nudge { slot: 1, slot_generation: 2 }).unwrap();
        let b = encode_request(&Request::Ensure(Box::new(sample_spec()))).unwrap();
        let mut all = a.clone();
        all.extend_from_slice(&b);
        let mut r = FrameReader::new();
        for chunk in all.chunks(3) {
            r.push(chunk);
        }
        assert_eq!(decode_request(&r.next_payload().unwrap().unwrap()).unwrap(), Request::Nudge { slot: 1, slot_generation: 2 });
        assert!(matches!(decode_request(&r.next_payload().unwrap().unwrap()).unwrap(), Request::Ensure(_)));
        assert_eq!(r.next_payload().unwrap(), None);
        let mut big = FrameReader::new();
        big.push(&((MAX_FRAME as u32) + 1).to_le_bytes());
        assert!(big.next_payload().is_err());
        let mut cur = std::io::Cursor::new(b.clone());
        assert_eq!(read_payload(&mut cur).unwrap(), payload(&b));
    }
}
