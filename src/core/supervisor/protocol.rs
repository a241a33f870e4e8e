//! Wire format between server children, the privileged parent and the
//! supervisor: what a child asks (`Request`), the supervisor's answer about
//! a pool (`PoolReply`) and the host configuration the parent sends.
//!
//! Framing and the primitives every message uses are in protocol_codec;
//! the status report is protocol_status, its isolation and usage figures
//! protocol_usage, notes and pool history protocol_customer. The codec's
//! and the status report's public items are re-exported here, so
//! `protocol::VERSION`, `protocol::StatusReply` … name them as before.

use std::io;
use std::path::PathBuf;

use crate::core::hostconfig::{HostConfig, HostDirective, VhostConfig};
use crate::core::limits::Limits;
use crate::core::request::{PoolInfo, PoolReply, PoolSpec};

use super::protocol_codec::{
    encode_refused, kind_code, kind_from, open, TAG_CONFIG, TAG_ENSURE, TAG_KILL, TAG_NOTE, TAG_NUDGE, TAG_REPLY_READY, TAG_REPLY_REFUSED, TAG_STATUS,
};
pub use super::protocol_codec::{read_payload, write_frame, Decoder, Encoder, FrameReader, ProtoError, MAX_FRAME, VERSION};
use super::protocol_customer::{get_note, put_note, Note};
pub use super::protocol_status::{
    decode_status_reply, encode_status_reply, PoolState, PoolStatus, StatusReply, StopCounts, WorkerState, WorkerStatus,
};
use super::protocol_usage as usage;

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
        PoolReply::Refused { status, reason } => encode_refused(*status, reason),
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
    e.u8(c.short_slices as u8);
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
    let short_slices = d.bool()?;
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
        short_slices,
    })
}

#[cfg(test)]
#[path = "protocol_tests.rs"]
mod tests;
