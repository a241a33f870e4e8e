//! What the host decides for each owner as a whole (all of an owner's
//! workers and everything they start): CPU share and cap, processes, memory,
//! and whether cgroups are used at all. Host directives only (server config
//! or vhost; lighttpd: `sufcgi.owner-*` settings); the parsers live here so
//! both servers accept exactly the same values.

use crate::core::directives::parse_count;
use crate::core::limits::parse_size;

/// `SuFcgiCgroups on|off|required`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CgroupMode {
    /// Use cgroups where the supervisor can create them, else the fallback
    /// (RLIMIT_NPROC, supervisor's RSS watch) and one log line saying so.
    #[default]
    On = 1,
    /// Never: the fallback only.
    Off = 2,
    /// A pool whose owner cgroup cannot be made answers 503.
    Required = 3,
}

impl CgroupMode {
    pub fn name(self) -> &'static str {
        match self {
            CgroupMode::On => "on",
            CgroupMode::Off => "off",
            CgroupMode::Required => "required",
        }
    }

    pub fn from_code(c: u8) -> Option<CgroupMode> {
        match c {
            1 => Some(CgroupMode::On),
            2 => Some(CgroupMode::Off),
            3 => Some(CgroupMode::Required),
            _ => None,
        }
    }

    pub fn parse(v: &[u8]) -> Result<CgroupMode, String> {
        match v.to_ascii_lowercase().as_slice() {
            b"on" => Ok(CgroupMode::On),
            b"off" => Ok(CgroupMode::Off),
            b"required" => Ok(CgroupMode::Required),
            _ => Err(format!("'{}' is not on, off or required", String::from_utf8_lossy(v))),
        }
    }
}

/// An owner's limits as they are applied. 0 means "none" for `cpu_max`,
/// `max_processes` and `memory`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OwnerLimits {
    /// `SuFcgiOwnerCpuWeight`: share under contention, 1–10000 (cpu.weight;
    /// v1 cpu.shares = weight × 1024 / 100).
    pub cpu_weight: u32,
    /// `SuFcgiOwnerCpuMax`: percent of one CPU (150 = 1.5 CPUs).
    pub cpu_max: u32,
    /// `SuFcgiOwnerMaxProcesses`: pids.max, or RLIMIT_NPROC without cgroups.
    pub max_processes: u32,
    /// `SuFcgiOwnerMemory`: memory.max in bytes.
    pub memory: u64,
}

impl OwnerLimits {
    /// Safe with nothing but the LoadModule line: equal shares, 512 processes.
    pub const DEFAULT: OwnerLimits = OwnerLimits { cpu_weight: 100, cpu_max: 0, max_processes: 512, memory: 0 };

    /// These limits with a vhost's own settings over them.
    pub fn with(&self, o: &OwnerOverrides) -> OwnerLimits {
        OwnerLimits {
            cpu_weight: o.cpu_weight.unwrap_or(self.cpu_weight),
            cpu_max: o.cpu_max.unwrap_or(self.cpu_max),
            max_processes: o.max_processes.unwrap_or(self.max_processes),
            memory: o.memory.unwrap_or(self.memory),
        }
    }

    /// For logs and the status page: `weight 100, cpu max 150%, 512 processes, memory 1024 MiB`.
    pub fn describe(&self) -> String {
        let mut s = format!("weight {}", self.cpu_weight);
        if self.cpu_max > 0 {
            s.push_str(&format!(", cpu max {}%", self.cpu_max));
        }
        match self.max_processes {
            0 => s.push_str(", processes unlimited"),
            n => s.push_str(&format!(", {n} processes")),
        }
        if self.memory > 0 {
            s.push_str(&format!(", memory {}", size_text(self.memory)));
        }
        s
    }
}

impl Default for OwnerLimits {
    fn default() -> Self {
        OwnerLimits::DEFAULT
    }
}

/// What one vhost sets itself (None: the server's value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct OwnerOverrides {
    pub cpu_weight: Option<u32>,
    pub cpu_max: Option<u32>,
    pub max_processes: Option<u32>,
    pub memory: Option<u64>,
}

/// `512 MiB`, `2 GiB`, or bytes when not a whole MiB.
pub fn size_text(b: u64) -> String {
    if b >= 1 << 30 && b.is_multiple_of(1 << 30) {
        format!("{} GiB", b >> 30)
    } else if b.is_multiple_of(1 << 20) {
        format!("{} MiB", b >> 20)
    } else {
        format!("{b} bytes")
    }
}

const NONE_WORDS: [&[u8]; 3] = [b"none", b"off", b"unlimited"];

fn is_none(v: &[u8]) -> bool {
    NONE_WORDS.iter().any(|w| v.eq_ignore_ascii_case(w))
}

/// Highest `SuFcgiOwnerCpuMax`: 1024 CPUs.
pub const MAX_CPU_PERCENT: u32 = 102_400;
/// Smallest `SuFcgiOwnerMemory`: below this an app cannot even start.
pub const MIN_OWNER_MEMORY: u64 = 4 << 20;

/// The host's owner directives by name (without the `SuFcgiOwner` prefix,
/// any case): `CpuWeight`, `CpuMax`, `MaxProcesses`, `Memory`.
/// `none` (or `off`, `unlimited`) switches a cap off (not for the weight).
pub fn set_owner_limit(o: &mut OwnerOverrides, name: &[u8], v: &[u8]) -> Result<(), String> {
    match name.to_ascii_lowercase().as_slice() {
        b"cpuweight" => o.cpu_weight = Some(parse_count(v, 1, 10_000)?),
        b"cpumax" => o.cpu_max = Some(parse_cpu_max(v)?),
        b"maxprocesses" => o.max_processes = Some(if is_none(v) { 0 } else { parse_count(v, 1, 4_194_304)? }),
        b"memory" => {
            o.memory = Some(if is_none(v) {
                0
            } else {
                let b = parse_size(v)?;
                if b < MIN_OWNER_MEMORY {
                    return Err(format!("'{}' is below the smallest owner memory, 4M", String::from_utf8_lossy(v)));
                }
                b
            })
        }
        _ => return Err(format!("unknown owner limit '{}'", String::from_utf8_lossy(name))),
    }
    Ok(())
}

/// `150%` (or `150`): percent of one CPU; `none` for no cap.
pub fn parse_cpu_max(v: &[u8]) -> Result<u32, String> {
    if is_none(v) {
        return Ok(0);
    }
    let digits = v.strip_suffix(b"%").unwrap_or(v);
    parse_count(digits, 1, MAX_CPU_PERCENT)
        .map_err(|_| format!("'{}' is not a percentage of one CPU between 1% and {MAX_CPU_PERCENT}% (e.g. 150%)", String::from_utf8_lossy(v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(CgroupMode::parse(b"ON"), Ok(CgroupMode::On));
        assert_eq!(CgroupMode::parse(b"required"), Ok(CgroupMode::Required));
        assert_eq!(CgroupMode::parse(b"off"), Ok(CgroupMode::Off));
        assert!(CgroupMode::parse(b"yes").is_err());
        for m in [CgroupMode::On, CgroupMode::Off, CgroupMode::Required] {
            assert_eq!(CgroupMode::from_code(m as u8), Some(m));
        }
        assert_eq!(CgroupMode::from_code(0), None);
        assert_eq!(CgroupMode::default(), CgroupMode::On);
    }

    #[test]
    fn owner_directives() {
        let mut o = OwnerOverrides::default();
        set_owner_limit(&mut o, b"CpuWeight", b"250").unwrap();
        set_owner_limit(&mut o, b"cpumax", b"150%").unwrap();
        set_owner_limit(&mut o, b"MaxProcesses", b"64").unwrap();
        set_owner_limit(&mut o, b"Memory", b"512M").unwrap();
        assert_eq!(o, OwnerOverrides { cpu_weight: Some(250), cpu_max: Some(150), max_processes: Some(64), memory: Some(512 << 20) });
        set_owner_limit(&mut o, b"CpuMax", b"none").unwrap();
        set_owner_limit(&mut o, b"Memory", b"Unlimited").unwrap();
        set_owner_limit(&mut o, b"MaxProcesses", b"off").unwrap();
        assert_eq!((o.cpu_max, o.memory, o.max_processes), (Some(0), Some(0), Some(0)));
        assert_eq!(parse_cpu_max(b"75"), Ok(75));
        for bad in [&b"0"[..], b"0%", b"-5%", b"1.5", b"%", b"200000%"] {
            assert!(parse_cpu_max(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert!(set_owner_limit(&mut o, b"CpuWeight", b"0").is_err());
        assert!(set_owner_limit(&mut o, b"CpuWeight", b"10001").is_err());
        assert!(set_owner_limit(&mut o, b"CpuWeight", b"none").is_err(), "a weight cannot be switched off");
        assert!(set_owner_limit(&mut o, b"Memory", b"1M").is_err(), "too small to start anything");
        assert!(set_owner_limit(&mut o, b"Memory", b"lots").is_err());
        assert!(set_owner_limit(&mut o, b"Frobs", b"1").is_err());
    }

    #[test]
    fn vhost_values_override_the_servers() {
        let server = OwnerLimits { cpu_weight: 200, cpu_max: 100, max_processes: 100, memory: 1 << 30 };
        assert_eq!(server.with(&OwnerOverrides::default()), server);
        let v = OwnerOverrides { cpu_max: Some(0), memory: Some(256 << 20), ..Default::default() };
        assert_eq!(server.with(&v), OwnerLimits { cpu_weight: 200, cpu_max: 0, max_processes: 100, memory: 256 << 20 });
        assert_eq!(OwnerLimits::default().describe(), "weight 100, 512 processes");
        assert_eq!(server.describe(), "weight 200, cpu max 100%, 100 processes, memory 1 GiB");
        assert_eq!(size_text(3 << 20), "3 MiB");
        assert_eq!(size_text(1000), "1000 bytes");
    }
}
