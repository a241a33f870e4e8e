//! The isolation part of the supervisor protocol: the owner limits in the
//! host configuration frame, and what the status reply says about cgroups
//! (which isolation is in force, per-owner and per-pool usage). Same
//! encoding rules as protocol.rs; a figure the hierarchy cannot give is
//! `None` on the wire (a 0 byte), never a made-up 0.

use super::protocol_codec::{Decoder, Encoder, ProtoError};
use crate::core::owner_limits::{CgroupMode, OwnerLimits, OwnerOverrides};

/// Which isolation holds an owner's processes, for the status page.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Isolation {
    pub mode: CgroupMode,
    /// `v1`, `v2`, or `none` (the fallback: RLIMIT_NPROC and the RSS watch).
    pub hierarchy: String,
    /// Controllers in use, e.g. `cpu`, `cpuacct`, `memory`, `pids`, `freezer`.
    pub controllers: Vec<String>,
    /// Where the groups are (the first hierarchy's instance directory).
    pub location: String,
    /// Why cgroups are not (fully) in use; empty when they are.
    pub note: String,
    /// The scheduler slices in force (`core::latency::state_text`).
    pub slices: String,
}

impl Isolation {
    pub fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
}

/// One owner's figures. Counters are since the supervisor started.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OwnerUsage {
    pub uid: u32,
    pub user: Vec<u8>,
    pub limits: OwnerLimits,
    /// The owner has a cgroup now (it has workers).
    pub in_cgroup: bool,
    pub cpu_usec: Option<u64>,
    pub memory: Option<u64>,
    pub memory_peak: Option<u64>,
    pub processes: Option<u64>,
    /// Processes the kernel's OOM killer ended in the owner's groups.
    pub oom_kills: Option<u64>,
    /// Time the owner's processes could not run because of `SuFcgiOwnerCpuMax`.
    pub throttled_usec: Option<u64>,
}

/// A pool's share of its owner's figures: the sum over its workers' groups
/// (CPU and OOM kills include workers already gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolUsage {
    pub cpu_usec: Option<u64>,
    pub memory: Option<u64>,
    pub processes: Option<u64>,
    pub oom_kills: Option<u64>,
}

fn put_opt(e: &mut Encoder, v: Option<u64>) {
    match v {
        Some(v) => e.u8(1).u64(v),
        None => e.u8(0),
    };
}

fn get_opt(d: &mut Decoder<'_>) -> Result<Option<u64>, ProtoError> {
    Ok(if d.bool()? { Some(d.u64()?) } else { None })
}

fn put_opt32(e: &mut Encoder, v: Option<u32>) {
    match v {
        Some(v) => e.u8(1).u32(v),
        None => e.u8(0),
    };
}

fn get_opt32(d: &mut Decoder<'_>) -> Result<Option<u32>, ProtoError> {
    Ok(if d.bool()? { Some(d.u32()?) } else { None })
}

pub fn put_mode(e: &mut Encoder, m: CgroupMode) {
    e.u8(m as u8);
}

pub fn get_mode(d: &mut Decoder<'_>) -> Result<CgroupMode, ProtoError> {
    CgroupMode::from_code(d.u8()?).ok_or(ProtoError("unknown cgroup mode"))
}

pub fn put_owner_limits(e: &mut Encoder, l: &OwnerLimits) {
    e.u32(l.cpu_weight).u32(l.cpu_max).u32(l.max_processes).u64(l.memory);
}

pub fn get_owner_limits(d: &mut Decoder<'_>) -> Result<OwnerLimits, ProtoError> {
    Ok(OwnerLimits { cpu_weight: d.u32()?, cpu_max: d.u32()?, max_processes: d.u32()?, memory: d.u64()? })
}

pub fn put_overrides(e: &mut Encoder, o: &OwnerOverrides) {
    put_opt32(e, o.cpu_weight);
    put_opt32(e, o.cpu_max);
    put_opt32(e, o.max_processes);
    put_opt(e, o.memory);
}

pub fn get_overrides(d: &mut Decoder<'_>) -> Result<OwnerOverrides, ProtoError> {
    Ok(OwnerOverrides { cpu_weight: get_opt32(d)?, cpu_max: get_opt32(d)?, max_processes: get_opt32(d)?, memory: get_opt(d)? })
}

pub fn put_isolation(e: &mut Encoder, i: &Isolation) {
    put_mode(e, i.mode);
    e.bytes(i.hierarchy.as_bytes());
    e.u32(i.controllers.len() as u32);
    for c in &i.controllers {
        e.bytes(c.as_bytes());
    }
    e.bytes(i.location.as_bytes()).bytes(i.note.as_bytes()).bytes(i.slices.as_bytes());
}

pub fn get_isolation(d: &mut Decoder<'_>) -> Result<Isolation, ProtoError> {
    let mode = get_mode(d)?;
    let hierarchy = d.string()?;
    let n = d.count(4)?;
    let mut controllers = Vec::with_capacity(n);
    for _ in 0..n {
        controllers.push(d.string()?);
    }
    Ok(Isolation { mode, hierarchy, controllers, location: d.string()?, note: d.string()?, slices: d.string()? })
}

pub fn put_owner_usage(e: &mut Encoder, o: &OwnerUsage) {
    e.u32(o.uid).bytes(&o.user);
    put_owner_limits(e, &o.limits);
    e.u8(o.in_cgroup as u8);
    for v in [o.cpu_usec, o.memory, o.memory_peak, o.processes, o.oom_kills, o.throttled_usec] {
        put_opt(e, v);
    }
}

/// Smallest encoded owner: uid, empty name, limits, flag and six absent figures.
pub const MIN_OWNER_BYTES: usize = 4 + 4 + 20 + 1 + 6;

pub fn get_owner_usage(d: &mut Decoder<'_>) -> Result<OwnerUsage, ProtoError> {
    Ok(OwnerUsage {
        uid: d.u32()?,
        user: d.bytes()?,
        limits: get_owner_limits(d)?,
        in_cgroup: d.bool()?,
        cpu_usec: get_opt(d)?,
        memory: get_opt(d)?,
        memory_peak: get_opt(d)?,
        processes: get_opt(d)?,
        oom_kills: get_opt(d)?,
        throttled_usec: get_opt(d)?,
    })
}

pub fn put_pool_usage(e: &mut Encoder, u: &PoolUsage) {
    for v in [u.cpu_usec, u.memory, u.processes, u.oom_kills] {
        put_opt(e, v);
    }
}

pub fn get_pool_usage(d: &mut Decoder<'_>) -> Result<PoolUsage, ProtoError> {
    Ok(PoolUsage { cpu_usec: get_opt(d)?, memory: get_opt(d)?, processes: get_opt(d)?, oom_kills: get_opt(d)? })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(f: impl FnOnce(&mut Encoder)) -> Vec<u8> {
        let mut e = Encoder::raw();
        f(&mut e);
        e.into_raw()
    }

    #[test]
    fn hand_written_owner_usage() {
        let mut want: Vec<u8> = vec![0xd1, 0x07, 0, 0]; // uid 2001
        want.extend_from_slice(&[2, 0, 0, 0, b'a', b'l']); // user
        want.extend_from_slice(&[100, 0, 0, 0, 150, 0, 0, 0, 0, 2, 0, 0]); // weight 100, cpu max 150%, 512 processes
        want.extend_from_slice(&[0, 0, 0, 0x20, 0, 0, 0, 0]); // memory 512 MiB
        want.push(1); // in a cgroup
        want.extend_from_slice(&[1, 0x40, 0x42, 0x0f, 0, 0, 0, 0, 0]); // cpu 1 s = 1,000,000 µs
        want.push(0); // memory unknown
        want.extend_from_slice(&[1, 0, 0, 0, 0x10, 0, 0, 0, 0]); // peak 256 MiB
        want.extend_from_slice(&[1, 3, 0, 0, 0, 0, 0, 0, 0]); // 3 processes
        want.extend_from_slice(&[1, 2, 0, 0, 0, 0, 0, 0, 0]); // 2 OOM kills
        want.push(0); // throttling unknown
        let o = OwnerUsage {
            uid: 2001,
            user: b"al".to_vec(),
            limits: OwnerLimits { cpu_weight: 100, cpu_max: 150, max_processes: 512, memory: 512 << 20 },
            in_cgroup: true,
            cpu_usec: Some(1_000_000),
            memory: None,
            memory_peak: Some(256 << 20),
            processes: Some(3),
            oom_kills: Some(2),
            throttled_usec: None,
        };
        assert_eq!(raw(|e| put_owner_usage(e, &o)), want);
        let mut d = Decoder::new(&want);
        assert_eq!(get_owner_usage(&mut d).unwrap(), o);
        d.end().unwrap();
        for n in 0..want.len() {
            assert!(get_owner_usage(&mut Decoder::new(&want[..n])).is_err(), "truncated at {n}");
        }
        let mut bad = want.clone();
        bad[4 + 6 + 20] = 2; // in_cgroup must be 0 or 1
        assert!(get_owner_usage(&mut Decoder::new(&bad)).is_err());
        assert!(raw(|e| put_owner_usage(e, &OwnerUsage::default())).len() == MIN_OWNER_BYTES);
    }

    #[test]
    fn hand_written_isolation_and_overrides() {
        let mut want: Vec<u8> = vec![3]; // required
        want.extend_from_slice(&[2, 0, 0, 0, b'v', b'1']);
        want.extend_from_slice(&[2, 0, 0, 0, 3, 0, 0, 0, b'c', b'p', b'u', 4, 0, 0, 0, b'p', b'i', b'd', b's']);
        want.extend_from_slice(&[2, 0, 0, 0, b'/', b's']);
        want.extend_from_slice(&[0, 0, 0, 0]);
        want.extend_from_slice(&[5, 0, 0, 0, b's', b'h', b'o', b'r', b't']);
        let i = Isolation {
            mode: CgroupMode::Required,
            hierarchy: "v1".into(),
            controllers: vec!["cpu".into(), "pids".into()],
            location: "/s".into(),
            note: String::new(),
            slices: "short".into(),
        };
        assert_eq!(raw(|e| put_isolation(e, &i)), want);
        assert_eq!(get_isolation(&mut Decoder::new(&want)).unwrap(), i);
        assert!(i.has("pids") && !i.has("memory"));
        let mut bad = want.clone();
        bad[0] = 9;
        assert!(get_isolation(&mut Decoder::new(&bad)).is_err(), "unknown mode");

        let o = OwnerOverrides { cpu_weight: None, cpu_max: Some(50), max_processes: None, memory: Some(1 << 30) };
        let want: Vec<u8> = vec![0, 1, 50, 0, 0, 0, 0, 1, 0, 0, 0, 0x40, 0, 0, 0, 0];
        assert_eq!(raw(|e| put_overrides(e, &o)), want);
        assert_eq!(get_overrides(&mut Decoder::new(&want)).unwrap(), o);
        let u = PoolUsage { cpu_usec: Some(5), memory: None, processes: Some(1), oom_kills: Some(0) };
        let b = raw(|e| put_pool_usage(e, &u));
        assert_eq!(b, vec![1, 5, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(get_pool_usage(&mut Decoder::new(&b)).unwrap(), u);
    }
}
