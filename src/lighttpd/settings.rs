//! The host's `sufcgi.*` settings in lighttpd.conf, and the identity table the
//! supervisor derives owners from.
//!
//! lighttpd has no virtual-host records: a "vhost" here is a configuration
//! context (the global scope, or a `$HTTP["host"] == …` block). A context that
//! sets `sufcgi.owner` or `server.document-root` is an identity context; the
//! supervisor's vhost table is indexed by context number, and a request uses
//! the last identity context whose condition matches it (lighttpd's own rule:
//! later matching blocks override earlier ones). Values a block does not set
//! are taken from its enclosing blocks.

use super::ffi;
use super::req::Req;
use super::server::{self, ConfigKey, Plugin, Server};
use crate::core::directives;
use crate::core::hostconfig::{HostConfig, VhostConfig};
use crate::core::limits::Limits;
use crate::core::owner_limits::{self, CgroupMode, OwnerLimits, OwnerOverrides};
use crate::core::sys;
use std::ffi::{CStr, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// Where the supervisor and pool sockets live unless `sufcgi.socket-dir` says otherwise.
pub const DEFAULT_SOCKET_DIR: &str = "/run/sufcgi-lighttpd";

/// The plugin's keys, in `KEYS` order (the index is lighttpd's k_id).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Key {
    Owner,
    MinUid,
    MinGid,
    SocketDir,
    MaxWorkersPerOwner,
    MaxWorkersTotal,
    Ceiling,
    BlockEnv,
    PhpForbid,
    Timeout,
    Status,
    Cgroups,
    OwnerCpuWeight,
    OwnerCpuMax,
    OwnerMaxProcesses,
    OwnerMemory,
    ShortSlices,
}

const KEY_ORDER: [Key; 17] = [
    Key::Owner,
    Key::MinUid,
    Key::MinGid,
    Key::SocketDir,
    Key::MaxWorkersPerOwner,
    Key::MaxWorkersTotal,
    Key::Ceiling,
    Key::BlockEnv,
    Key::PhpForbid,
    Key::Timeout,
    Key::Status,
    Key::Cgroups,
    Key::OwnerCpuWeight,
    Key::OwnerCpuMax,
    Key::OwnerMaxProcesses,
    Key::OwnerMemory,
    Key::ShortSlices,
];

/// Longest silence from an app before the exchange is cut (Apache's `Timeout`).
pub const DEFAULT_TIMEOUT_SECS: u32 = 60;

struct KeyDef(&'static CStr, u32, u32);

fn key_def(k: Key) -> KeyDef {
    use ffi::config_scope_type_t_T_CONFIG_SCOPE_CONNECTION as CONN;
    use ffi::config_scope_type_t_T_CONFIG_SCOPE_SERVER as SRV;
    match k {
        Key::Owner => KeyDef(c"sufcgi.owner", ffi::config_values_type_t_T_CONFIG_STRING, CONN),
        Key::MinUid => KeyDef(c"sufcgi.min-uid", ffi::config_values_type_t_T_CONFIG_INT, SRV),
        Key::MinGid => KeyDef(c"sufcgi.min-gid", ffi::config_values_type_t_T_CONFIG_INT, SRV),
        Key::SocketDir => KeyDef(c"sufcgi.socket-dir", ffi::config_values_type_t_T_CONFIG_STRING, SRV),
        Key::MaxWorkersPerOwner => KeyDef(c"sufcgi.max-workers-per-owner", ffi::config_values_type_t_T_CONFIG_INT, SRV),
        Key::MaxWorkersTotal => KeyDef(c"sufcgi.max-workers-total", ffi::config_values_type_t_T_CONFIG_INT, SRV),
        Key::Ceiling => KeyDef(c"sufcgi.ceilings", ffi::config_values_type_t_T_CONFIG_ARRAY_KVSTRING, SRV),
        Key::BlockEnv => KeyDef(c"sufcgi.block-env", ffi::config_values_type_t_T_CONFIG_ARRAY_VLIST, SRV),
        Key::PhpForbid => KeyDef(c"sufcgi.php-forbid", ffi::config_values_type_t_T_CONFIG_ARRAY_VLIST, SRV),
        Key::Timeout => KeyDef(c"sufcgi.timeout", ffi::config_values_type_t_T_CONFIG_INT, SRV),
        Key::Status => KeyDef(c"sufcgi.status", ffi::config_values_type_t_T_CONFIG_BOOL, CONN),
        Key::Cgroups => KeyDef(c"sufcgi.cgroups", ffi::config_values_type_t_T_CONFIG_STRING, SRV),
        // Per block, as SuFcgiOwner* per vhost: a block's value is its owners'.
        Key::OwnerCpuWeight => KeyDef(c"sufcgi.owner-cpu-weight", ffi::config_values_type_t_T_CONFIG_INT, CONN),
        Key::OwnerCpuMax => KeyDef(c"sufcgi.owner-cpu-max", ffi::config_values_type_t_T_CONFIG_STRING, CONN),
        Key::OwnerMaxProcesses => KeyDef(c"sufcgi.owner-max-processes", ffi::config_values_type_t_T_CONFIG_INT, CONN),
        Key::OwnerMemory => KeyDef(c"sufcgi.owner-memory", ffi::config_values_type_t_T_CONFIG_STRING, CONN),
        Key::ShortSlices => KeyDef(c"sufcgi.short-slices", ffi::config_values_type_t_T_CONFIG_BOOL, SRV),
    }
}

/// Everything the host configured, resolved by the privileged process.
pub struct Settings {
    pub host: HostConfig,
    pub php_forbid: Vec<Vec<u8>>,
    /// `sufcgi.timeout`: seconds of app silence that end an exchange.
    pub timeout_secs: u32,
    /// Identity contexts, ascending (see the module comment).
    pub identity_contexts: Vec<u32>,
    /// Contexts that set `sufcgi.status` (the host's status page), ascending,
    /// with the value set.
    pub status_contexts: Vec<(u32, bool)>,
    /// What the contexts' `accesslog.format` use of the `sufcgi-*` values.
    pub notes: crate::core::request_cost::Wanted,
}

fn lookup_owner(spec: &[u8]) -> Result<(u32, u32), String> {
    let (user, group) = match spec.iter().position(|&c| c == b':') {
        Some(i) => (&spec[..i], Some(&spec[i + 1..])),
        None => (spec, None),
    };
    let shown = String::from_utf8_lossy(spec);
    let pw = sys::getpwnam(user)
        .map_err(|e| format!("sufcgi.owner \"{shown}\": {e}"))?
        .ok_or_else(|| format!("sufcgi.owner \"{shown}\": no such user"))?;
    let mut gid = pw.gid;
    if let Some(g) = group {
        gid = sys::getgrnam_gid(g)
            .map_err(|e| format!("sufcgi.owner \"{shown}\": {e}"))?
            .ok_or_else(|| format!("sufcgi.owner \"{shown}\": no such group"))?;
    }
    Ok((pw.uid, gid))
}

/// lighttpd's `server.username` / `server.groupname` as ids (our own when unset).
fn lookup_server_user(srv: Server) -> (u32, u32) {
    let (name, group) = srv.user_and_group();
    let mut ids = server::process_ids();
    if let Some(pw) = Some(name).filter(|n| !n.is_empty()).and_then(|n| sys::getpwnam(&n).ok().flatten()) {
        ids = (pw.uid, pw.gid);
    }
    if let Some(gid) = Some(group).filter(|g| !g.is_empty()).and_then(|g| sys::getgrnam_gid(&g).ok().flatten()) {
        ids.1 = gid;
    }
    ids
}

fn count(k: Key, v: u32) -> Result<u32, String> {
    if v == 0 && matches!(k, Key::MaxWorkersPerOwner | Key::MaxWorkersTotal | Key::Timeout) {
        return Err(format!("{} must be at least 1", key_def(k).0.to_string_lossy()));
    }
    Ok(v)
}

/// Register the keys with lighttpd (type checks, "unknown key" bookkeeping)
/// and read them, with each context's document root, into `Settings`.
/// During start-up (`priv_defaults`).
pub fn read(srv: Server, p: Plugin) -> Result<Settings, String> {
    let keys: Vec<ConfigKey> = KEY_ORDER
        .iter()
        .map(|&k| {
            let d = key_def(k);
            ConfigKey { name: d.0, ktype: d.1, scope: d.2 }
        })
        .collect();
    if !p.register_keys(srv, &keys) {
        return Err("invalid sufcgi.* settings (see the lines above)".into());
    }
    let (server_uid, server_gid) = lookup_server_user(srv);
    let mut host = HostConfig::new(PathBuf::from(DEFAULT_SOCKET_DIR), server_uid, server_gid);
    host.generation = 1;
    let mut php_forbid = Vec::new();
    let mut timeout_secs = DEFAULT_TIMEOUT_SECS;
    let mut ceilings: Limits = host.ceilings;
    let contexts = srv.config_contexts();
    let ncontexts = contexts.len();
    let mut owner_of: Vec<Option<(u32, u32)>> = vec![None; ncontexts];
    let mut status_contexts = Vec::new();
    let mut sets_owner = vec![false; ncontexts];
    let mut limits_of: Vec<OwnerOverrides> = vec![OwnerOverrides::default(); ncontexts];
    for v in p.config_values() {
        let ctx = v.context;
        let Some(&key) = KEY_ORDER.get(v.key) else { continue };
        match key {
            Key::Owner => {
                if ctx < ncontexts {
                    owner_of[ctx] = Some(lookup_owner(v.bytes())?);
                    sets_owner[ctx] = true;
                }
            }
            Key::MinUid => host.min_uid = v.int(),
            Key::MinGid => host.min_gid = v.int(),
            Key::SocketDir => host.socket_dir = PathBuf::from(OsStr::from_bytes(v.bytes())),
            Key::MaxWorkersPerOwner => host.max_workers_per_owner = count(key, v.int())?,
            Key::MaxWorkersTotal => host.max_workers_total = count(key, v.int())?,
            Key::Ceiling => {
                for (name, value) in v.strings() {
                    directives::set_ceiling(&mut ceilings, &name, &value).map_err(|e| format!("sufcgi.ceilings: {e}"))?;
                }
            }
            Key::BlockEnv => host.blocked_env = v.strings().into_iter().map(|(_, v)| String::from_utf8_lossy(&v).into_owned()).collect(),
            Key::PhpForbid => php_forbid = v.strings().into_iter().map(|(_, v)| v).collect(),
            Key::Timeout => timeout_secs = count(key, v.int())?,
            Key::Status => status_contexts.push((ctx as u32, v.int() != 0)),
            Key::Cgroups => host.cgroups = CgroupMode::parse(v.bytes()).map_err(|e| format!("sufcgi.cgroups: {e}"))?,
            Key::ShortSlices => host.short_slices = v.int() != 0,
            Key::OwnerCpuWeight | Key::OwnerCpuMax | Key::OwnerMaxProcesses | Key::OwnerMemory => {
                let (name, value) = match key {
                    Key::OwnerCpuWeight => ("CpuWeight", v.int().to_string().into_bytes()),
                    Key::OwnerMaxProcesses if v.int() == 0 => ("MaxProcesses", b"none".to_vec()),
                    Key::OwnerMaxProcesses => ("MaxProcesses", v.int().to_string().into_bytes()),
                    Key::OwnerCpuMax => ("CpuMax", v.bytes().to_vec()),
                    _ => ("Memory", v.bytes().to_vec()),
                };
                if ctx < ncontexts {
                    owner_limits::set_owner_limit(&mut limits_of[ctx], name.as_bytes(), &value)
                        .map_err(|e| format!("{}: {e}", key_def(key).0.to_string_lossy()))?;
                }
            }
        }
    }
    host.ceilings = ceilings;
    if !host.socket_dir.is_absolute() {
        return Err(format!("sufcgi.socket-dir {} is not an absolute path", host.socket_dir.display()));
    }

    // One vhost entry per context, with values inherited from enclosing blocks.
    let mut identity_contexts = Vec::new();
    let mut docroot_of: Vec<Option<Vec<u8>>> = vec![None; ncontexts];
    let mut parent_of: Vec<Option<usize>> = vec![None; ncontexts];
    let mut names: Vec<String> = vec![String::new(); ncontexts];
    let mut formats: Vec<u8> = Vec::new();
    for (u, (slot, dc)) in docroot_of.iter_mut().zip(&contexts).enumerate() {
        if !dc.present {
            continue;
        }
        *slot = dc.document_root.clone();
        // mod_accesslog's format, to know whether the request environment is wanted.
        if let Some(f) = &dc.accesslog_format {
            formats.extend_from_slice(f);
        }
        parent_of[u] = dc.parent;
        names[u] = if u == 0 { "global".into() } else { String::from_utf8_lossy(&dc.key).into_owned() };
        if u > 0 && (slot.is_some() || sets_owner[u]) {
            identity_contexts.push(u as u32);
        }
    }
    for (u, name) in names.iter().enumerate() {
        let inherit = |table: &dyn Fn(usize) -> bool| {
            let mut at = Some(u);
            while let Some(c) = at {
                if table(c) {
                    return Some(c);
                }
                at = parent_of.get(c).copied().flatten().filter(|&p| p < c);
            }
            None
        };
        let owner = inherit(&|c| sets_owner[c]).and_then(|c| owner_of[c]);
        // Each limit from the innermost block that sets it (the global
        // scope's are the server's, host.owner_limits).
        let mut overrides = OwnerOverrides::default();
        let mut at = Some(u);
        while let Some(c) = at.filter(|&c| c > 0) {
            let o = &limits_of[c];
            overrides.cpu_weight = overrides.cpu_weight.or(o.cpu_weight);
            overrides.cpu_max = overrides.cpu_max.or(o.cpu_max);
            overrides.max_processes = overrides.max_processes.or(o.max_processes);
            overrides.memory = overrides.memory.or(o.memory);
            at = parent_of.get(c).copied().flatten().filter(|&p| p < c);
        }
        let docroot = inherit(&|c| docroot_of[c].is_some()).and_then(|c| docroot_of[c].clone()).unwrap_or_default();
        let mut vh = VhostConfig::new(name.clone(), owner, PathBuf::from(OsStr::from_bytes(&docroot)));
        vh.owner_overrides = overrides;
        host.vhosts.push(vh);
    }
    host.owner_limits = OwnerLimits::DEFAULT.with(&limits_of.first().copied().unwrap_or_default());
    status_contexts.sort_unstable();
    let notes = crate::core::request_cost::Wanted::from_formats(&formats);
    Ok(Settings { host, php_forbid, timeout_secs, identity_contexts, status_contexts, notes })
}

/// The identity context (supervisor vhost index) a request falls under.
pub fn identity_context(req: Req, contexts: &[u32]) -> u32 {
    contexts.iter().rev().copied().find(|&c| req.matches_context(c)).unwrap_or(0)
}

/// Whether the host's status page (`sufcgi.status = "enable"`) answers this
/// request: the last matching context that sets it decides.
pub fn status_enabled(req: Req, contexts: &[(u32, bool)]) -> bool {
    contexts.iter().rev().find(|&&(c, _)| req.matches_context(c)).is_some_and(|&(_, on)| on)
}
