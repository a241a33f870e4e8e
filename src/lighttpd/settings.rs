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
}

const KEY_ORDER: [Key; 16] = [
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

fn buf_bytes(b: *const ffi::buffer) -> &'static [u8] {
    // SAFETY: lighttpd's config buffers live until the server frees its
    // configuration, after every request of this generation; `used` counts
    // the terminating NUL.
    unsafe {
        match b.as_ref() {
            Some(b) if !b.ptr.is_null() && b.used > 0 => std::slice::from_raw_parts(b.ptr as *const u8, b.used as usize - 1),
            _ => &[],
        }
    }
}

/// The strings of a config array (values of a list, or key => value pairs).
fn array_strings(a: *const ffi::array) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    // SAFETY: `a` is a config array lighttpd type-checked as holding strings
    // (T_CONFIG_ARRAY_VLIST / _KVSTRING); its elements are data_string.
    unsafe {
        let Some(a) = a.as_ref() else { return out };
        for i in 0..a.used as usize {
            let ds = *a.data.add(i) as *const ffi::data_string;
            if let Some(ds) = ds.as_ref() {
                out.push((buf_bytes(&ds.key).to_vec(), buf_bytes(&ds.value).to_vec()));
            }
        }
    }
    out
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
fn lookup_server_user(srv: &ffi::server) -> (u32, u32) {
    let name = buf_bytes(srv.srvconf.username);
    let group = buf_bytes(srv.srvconf.groupname);
    // SAFETY: plain syscalls.
    let mut ids = unsafe { (libc::geteuid(), libc::getegid()) };
    if let Some(pw) = Some(name).filter(|n| !n.is_empty()).and_then(|n| sys::getpwnam(n).ok().flatten()) {
        ids = (pw.uid, pw.gid);
    }
    if let Some(gid) = Some(group).filter(|g| !g.is_empty()).and_then(|g| sys::getgrnam_gid(g).ok().flatten()) {
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
///
/// # Safety
/// `srv` is the live server during start-up; `p_d` our plugin data.
pub unsafe fn read(srv: *mut ffi::server, p_d: *mut std::os::raw::c_void) -> Result<Settings, String> {
    let mut keys: Vec<ffi::config_plugin_keys_t> = KEY_ORDER
        .iter()
        .map(|&k| {
            let d = key_def(k);
            ffi::config_plugin_keys_t { k: d.0.as_ptr(), klen: d.0.to_bytes().len() as u8, ktype: d.1 as u8, scope: d.2 as u8 }
        })
        .collect();
    keys.push(ffi::config_plugin_keys_t { k: std::ptr::null(), klen: 0, ktype: ffi::config_values_type_t_T_CONFIG_UNSET as u8, scope: 0 });
    // SAFETY: the caller's contract; keys end with T_CONFIG_UNSET as lighttpd requires.
    let ok = unsafe { ffi::config_plugin_values_init(srv, p_d, keys.as_ptr(), c"mod_sufcgi".as_ptr()) };
    if ok == 0 {
        return Err("invalid sufcgi.* settings (see the lines above)".into());
    }
    // SAFETY: srv is live; it is not mutated while we read it.
    let s = unsafe { &*srv };
    let (server_uid, server_gid) = lookup_server_user(s);
    let mut host = HostConfig::new(PathBuf::from(DEFAULT_SOCKET_DIR), server_uid, server_gid);
    host.generation = 1;
    let mut php_forbid = Vec::new();
    let mut timeout_secs = DEFAULT_TIMEOUT_SECS;
    let mut ceilings: Limits = host.ceilings;
    // SAFETY: config_plugin_values_init filled p_d's cvlist as documented in
    // lighttpd's plugin_config.h: nconfig heads, each pointing at its values,
    // a value list ends with k_id -1.
    let ncontexts = unsafe { (*s.config_context).used as usize };
    let mut owner_of: Vec<Option<(u32, u32)>> = vec![None; ncontexts];
    let mut status_contexts = Vec::new();
    let mut sets_owner = vec![false; ncontexts];
    let mut limits_of: Vec<OwnerOverrides> = vec![OwnerOverrides::default(); ncontexts];
    // SAFETY: as above: p_d's cvlist, and the config contexts it indexes.
    unsafe {
        let p = &*(p_d as *const ffi::plugin_data_base);
        for i in 0..p.nconfig.max(0) as usize {
            let head = &*p.cvlist.add(i);
            if head.v.u2[1] == 0 {
                continue;
            }
            let ctx = head.k_id as usize;
            let mut cpv = p.cvlist.add(head.v.u2[0] as usize);
            while (*cpv).k_id >= 0 {
                let v = &*cpv;
                let Some(&key) = KEY_ORDER.get(v.k_id as usize) else { break };
                match key {
                    Key::Owner => {
                        if ctx < ncontexts {
                            owner_of[ctx] = Some(lookup_owner(buf_bytes(v.v.b))?);
                            sets_owner[ctx] = true;
                        }
                    }
                    Key::MinUid => host.min_uid = v.v.u,
                    Key::MinGid => host.min_gid = v.v.u,
                    Key::SocketDir => host.socket_dir = PathBuf::from(OsStr::from_bytes(buf_bytes(v.v.b))),
                    Key::MaxWorkersPerOwner => host.max_workers_per_owner = count(key, v.v.u)?,
                    Key::MaxWorkersTotal => host.max_workers_total = count(key, v.v.u)?,
                    Key::Ceiling => {
                        for (name, value) in array_strings(v.v.a) {
                            directives::set_ceiling(&mut ceilings, &name, &value).map_err(|e| format!("sufcgi.ceilings: {e}"))?;
                        }
                    }
                    Key::BlockEnv => {
                        host.blocked_env = array_strings(v.v.a).into_iter().map(|(_, v)| String::from_utf8_lossy(&v).into_owned()).collect()
                    }
                    Key::PhpForbid => php_forbid = array_strings(v.v.a).into_iter().map(|(_, v)| v).collect(),
                    Key::Timeout => timeout_secs = count(key, v.v.u)?,
                    Key::Status => status_contexts.push((ctx as u32, v.v.u != 0)),
                    Key::Cgroups => host.cgroups = CgroupMode::parse(buf_bytes(v.v.b)).map_err(|e| format!("sufcgi.cgroups: {e}"))?,
                    Key::OwnerCpuWeight | Key::OwnerCpuMax | Key::OwnerMaxProcesses | Key::OwnerMemory => {
                        let (name, value) = match key {
                            Key::OwnerCpuWeight => ("CpuWeight", v.v.u.to_string().into_bytes()),
                            Key::OwnerMaxProcesses if v.v.u == 0 => ("MaxProcesses", b"none".to_vec()),
                            Key::OwnerMaxProcesses => ("MaxProcesses", v.v.u.to_string().into_bytes()),
                            Key::OwnerCpuMax => ("CpuMax", buf_bytes(v.v.b).to_vec()),
                            _ => ("Memory", buf_bytes(v.v.b).to_vec()),
                        };
                        if ctx < ncontexts {
                            owner_limits::set_owner_limit(&mut limits_of[ctx], name.as_bytes(), &value)
                                .map_err(|e| format!("{}: {e}", key_def(key).0.to_string_lossy()))?;
                        }
                    }
                }
                cpv = cpv.add(1);
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
    for (u, slot) in docroot_of.iter_mut().enumerate() {
        // SAFETY: config_context holds `used` data_config pointers, each with
        // a value array; parents are earlier contexts of the same array.
        unsafe {
            let dc = *(*s.config_context).data.add(u) as *const ffi::data_config;
            let Some(dc) = dc.as_ref() else { continue };
            let key = c"server.document-root";
            let du = ffi::array_get_element_klen(dc.value, key.as_ptr(), key.to_bytes().len() as u32);
            if let Some(ds) = (du as *const ffi::data_string).as_ref() {
                if ds.type_ == ffi::data_type_t_TYPE_STRING {
                    *slot = Some(buf_bytes(&ds.value).to_vec());
                }
            }
            // mod_accesslog's format, to know whether the request environment is wanted.
            let fk = c"accesslog.format";
            let fu = ffi::array_get_element_klen(dc.value, fk.as_ptr(), fk.to_bytes().len() as u32);
            if let Some(ds) = (fu as *const ffi::data_string).as_ref() {
                if ds.type_ == ffi::data_type_t_TYPE_STRING {
                    formats.extend_from_slice(buf_bytes(&ds.value));
                }
            }
            parent_of[u] = dc.parent.as_ref().map(|p| p.context_ndx as usize);
            names[u] = if u == 0 { "global".into() } else { String::from_utf8_lossy(buf_bytes(&dc.key)).into_owned() };
        }
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
///
/// # Safety
/// `r` is the live request.
pub unsafe fn identity_context(r: *mut ffi::request_st, contexts: &[u32]) -> u32 {
    for &c in contexts.iter().rev() {
        // SAFETY: r is live; c is a context index of this configuration.
        if unsafe { ffi::config_check_cond(r, c as i32) } != 0 {
            return c;
        }
    }
    0
}

/// Whether the host's status page (`sufcgi.status = "enable"`) answers this
/// request: the last matching context that sets it decides.
///
/// # Safety
/// `r` is the live request.
pub unsafe fn status_enabled(r: *mut ffi::request_st, contexts: &[(u32, bool)]) -> bool {
    for &(c, on) in contexts.iter().rev() {
        // SAFETY: r is live; c is a context index of this configuration.
        if unsafe { ffi::config_check_cond(r, c as i32) } != 0 {
            return on;
        }
    }
    false
}
