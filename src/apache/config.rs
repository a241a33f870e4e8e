//! Directive table and per-directory / per-server configuration records.
//!
//! Customer directives are parsed by the shared `core::directives` model; this
//! file only adapts httpd's command interface to it and adds file and line to
//! every error, so a bad `.htaccess` line is a 500 whose log names both.

use super::apr::{bytes, pool_box};
use super::ffi;
use crate::core::guard::guard;
use super::log;
use crate::core::directives::{self, DirConfig, Directive};
use crate::core::hostconfig::HostConfig;
use crate::core::limits::Limits;
use crate::core::owner_limits::{self, CgroupMode, OwnerOverrides};
use crate::core::php_ini::{self, PhpDirective};
use std::ffi::{CStr, OsStr};
use std::os::raw::{c_char, c_int, c_void};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::ptr;

/// Host settings from server config. Global ones are read from the main server
/// only; `owner` is per vhost and deliberately not inherited by vhosts.
#[derive(Debug, Clone)]
pub struct ServerConf {
    pub owner: Option<(Vec<u8>, Option<Vec<u8>>)>,
    pub min_uid: Option<u32>,
    pub min_gid: Option<u32>,
    pub socket_dir: Option<PathBuf>,
    /// `SuFcgiCeiling NAME VALUE`, applied over the default ceilings.
    pub ceilings: Limits,
    pub max_workers_per_owner: Option<u32>,
    pub max_workers_total: Option<u32>,
    pub blocked_env: Vec<String>,
    /// `SuFcgiPhpForbid`: ini names (or `PREFIX.*`) customers may not set with
    /// `php_value`/`php_flag`, on top of `php_ini::BUILTIN_FORBIDDEN`. Per vhost,
    /// added to the main server's.
    pub php_forbid: Vec<Vec<u8>>,
    /// `SuFcgiCgroups` (main server only).
    pub cgroups: Option<CgroupMode>,
    /// `SuFcgiOwner*` limits set in this server record (the main server's
    /// are every owner's; a vhost's override them for its owners).
    pub owner_limits: OwnerOverrides,
    /// `SuFcgiRequestNotes auto|on|off`: None = auto (set them when a log
    /// format of the configuration mentions them).
    pub request_notes: Option<bool>,
}

impl Default for ServerConf {
    fn default() -> Self {
        ServerConf {
            owner: None,
            min_uid: None,
            min_gid: None,
            socket_dir: None,
            ceilings: Limits::DEFAULT_CEILINGS,
            max_workers_per_owner: None,
            max_workers_total: None,
            blocked_env: Vec::new(),
            php_forbid: Vec::new(),
            cgroups: None,
            owner_limits: OwnerOverrides::default(),
            request_notes: None,
        }
    }
}

#[derive(Clone, Copy)]
enum HostDirective {
    Owner,
    MinUid,
    MinGid,
    SocketDir,
    Ceiling,
    MaxWorkersPerOwner,
    MaxWorkersTotal,
    BlockEnv,
    PhpForbid,
    Cgroups,
    OwnerCpuWeight,
    OwnerCpuMax,
    OwnerMaxProcesses,
    OwnerMemory,
    RequestNotes,
}

impl HostDirective {
    const ALL: [(HostDirective, &'static CStr, &'static CStr); 15] = [
        (HostDirective::Owner, c"SuFcgiOwner", c"USER [GROUP] -- the identity this vhost's FastCGI workers run as"),
        (HostDirective::MinUid, c"SuFcgiMinUid", c"N -- lowest uid a worker may run as (default 1000)"),
        (HostDirective::MinGid, c"SuFcgiMinGid", c"N -- lowest gid a worker may run as (default 1000)"),
        (HostDirective::SocketDir, c"SuFcgiSocketDir", c"DIR -- directory for worker sockets (default: runtime dir/sufcgi)"),
        (HostDirective::Ceiling, c"SuFcgiCeiling", c"NAME VALUE -- highest value customers may set for SuFcgiNAME (MaxWorkers, MinWorkers, IdleTimeout, MaxRequests, QueueLimit, QueueTimeout, RequestTimeout, MemoryLimit, SlowLog; XSendfile on|off)"),
        (HostDirective::MaxWorkersPerOwner, c"SuFcgiMaxWorkersPerOwner", c"N -- live workers one owner may have in all (default 32)"),
        (HostDirective::MaxWorkersTotal, c"SuFcgiMaxWorkersTotal", c"N -- live workers on this server in all (default 512)"),
        (HostDirective::BlockEnv, c"SuFcgiBlockEnv", c"NAME... -- environment names customers may not set with SuFcgiEnv"),
        (HostDirective::PhpForbid, c"SuFcgiPhpForbid", c"NAME|PREFIX.*... -- PHP settings customers may not set with php_value/php_flag"),
        (HostDirective::Cgroups, c"SuFcgiCgroups", c"on|off|required -- a cgroup per owner for CPU, memory and processes (default on: where the server may create them)"),
        (HostDirective::OwnerCpuWeight, c"SuFcgiOwnerCpuWeight", c"N -- an owner's CPU share under contention, 1-10000 (default 100: all equal)"),
        (HostDirective::OwnerCpuMax, c"SuFcgiOwnerCpuMax", c"PERCENT|none -- at most this much CPU for all of an owner's processes (150% = 1.5 CPUs; default none)"),
        (HostDirective::OwnerMaxProcesses, c"SuFcgiOwnerMaxProcesses", c"N|none -- processes all of an owner's workers may have in all (default 512)"),
        (HostDirective::OwnerMemory, c"SuFcgiOwnerMemory", c"SIZE|none -- memory for all of an owner's processes (e.g. 2G; default none)"),
        (HostDirective::RequestNotes, c"SuFcgiRequestNotes", c"auto|on|off -- set the sufcgi-* request notes for LogFormat (auto: when a log format uses them)"),
    ];
}

/// httpd's command table must be a static C array that lives as long as the module.
#[repr(transparent)]
pub struct CommandTable(pub [ffi::command_rec; 37]);
// SAFETY: the table is immutable after initialisation and holds only pointers
// to 'static data (names, usage strings, functions).
unsafe impl Sync for CommandTable {}

const fn customer(d: Directive, name: &'static CStr, usage: &'static CStr) -> ffi::command_rec {
    // FileInfo: the same override class as AddHandler, which customers already have.
    customer_in(d, name, usage, ffi::OR_FILEINFO)
}

const fn customer_in(d: Directive, name: &'static CStr, usage: &'static CStr, classes: u32) -> ffi::command_rec {
    ffi::command_rec {
        name: name.as_ptr(),
        func: ffi::cmd_func { take_argv: Some(customer_directive) },
        cmd_data: d as usize as *mut c_void,
        req_override: (classes | ffi::ACCESS_CONF | ffi::RSRC_CONF) as c_int,
        args_how: ffi::cmd_how_TAKE_ARGV,
        errmsg: usage.as_ptr(),
    }
}

/// mod_php's directives, handled here only while mod_php is not loaded. Same
/// override classes as mod_php: `php_value`/`php_flag` need `AllowOverride
/// Options` in `.htaccess`; the admin forms are server config / `<Directory>` only.
const fn php(i: usize) -> ffi::command_rec {
    let d = PhpDirective::ALL[i];
    let (name, req_override, usage) = match d {
        PhpDirective::Value => (c"php_value", ffi::OR_OPTIONS, c"NAME VALUE -- PHP ini setting for this directory's SuFcgiWrapper php-cgi workers"),
        PhpDirective::Flag => (c"php_flag", ffi::OR_OPTIONS, c"NAME on|off -- PHP ini flag for this directory's SuFcgiWrapper php-cgi workers"),
        PhpDirective::AdminValue => (c"php_admin_value", ffi::ACCESS_CONF | ffi::RSRC_CONF, c"NAME VALUE -- PHP ini setting customers cannot override"),
        PhpDirective::AdminFlag => (c"php_admin_flag", ffi::ACCESS_CONF | ffi::RSRC_CONF, c"NAME on|off -- PHP ini flag customers cannot override"),
    };
    ffi::command_rec {
        name: name.as_ptr(),
        func: ffi::cmd_func { take_argv: Some(php_directive) },
        cmd_data: i as *mut c_void,
        req_override: req_override as c_int,
        args_how: ffi::cmd_how_TAKE_ARGV,
        errmsg: usage.as_ptr(),
    }
}

const fn host(i: usize) -> ffi::command_rec {
    let (d, name, usage) = HostDirective::ALL[i];
    ffi::command_rec {
        name: name.as_ptr(),
        func: ffi::cmd_func { take_argv: Some(host_directive) },
        cmd_data: d as usize as *mut c_void,
        req_override: ffi::RSRC_CONF as c_int,
        args_how: ffi::cmd_how_TAKE_ARGV,
        errmsg: usage.as_ptr(),
    }
}

const fn end() -> ffi::command_rec {
    ffi::command_rec {
        name: ptr::null(),
        func: ffi::cmd_func { take_argv: None },
        cmd_data: ptr::null_mut(),
        req_override: 0,
        args_how: 0,
        errmsg: ptr::null(),
    }
}

pub static COMMANDS: CommandTable = CommandTable([
    customer(Directive::App, c"SuFcgiApp", c"FILE [ARG...] | off -- serve this directory tree with the FastCGI app FILE"),
    customer(Directive::Wrapper, c"SuFcgiWrapper", c"COMMAND [ARG...] .EXT -- run existing *.EXT files through COMMAND"),
    customer(Directive::Env, c"SuFcgiEnv", c"NAME VALUE -- extra environment variable for the workers"),
    customer(Directive::MaxWorkers, c"SuFcgiMaxWorkers", c"N -- at most N worker processes for this app"),
    customer(Directive::MinWorkers, c"SuFcgiMinWorkers", c"N -- worker processes kept running even when idle"),
    customer(Directive::IdleTimeout, c"SuFcgiIdleTimeout", c"SECONDS -- idle workers above the minimum stop after this long"),
    customer(Directive::MaxRequests, c"SuFcgiMaxRequests", c"N -- a worker is replaced after serving N requests (0: never)"),
    customer(Directive::QueueLimit, c"SuFcgiQueueLimit", c"N -- requests that may wait for a busy app before 503"),
    customer(Directive::QueueTimeout, c"SuFcgiQueueTimeout", c"SECONDS -- longest wait for a worker before 503"),
    customer(Directive::BusyPage, c"SuFcgiBusyPage", c"FILE -- the page sent with 503 when the app is overloaded"),
    customer(Directive::RequestTimeout, c"SuFcgiRequestTimeout", c"SECONDS -- a longer request gets 504 and its worker is replaced"),
    customer(Directive::MemoryLimit, c"SuFcgiMemoryLimit", c"SIZE -- a worker using more memory (e.g. 256M) is stopped"),
    customer(Directive::RestartFile, c"SuFcgiRestartFile", c"PATH -- touching this file restarts the app's workers"),
    customer(Directive::Log, c"SuFcgiLog", c"FILE -- the app's stderr and lifecycle events go to this file"),
    // FileInfo, as mod_fcgid's FcgidAuthorizer/FcgidAccessChecker; AuthConfig
    // too, the class hosts grant for access control (either one suffices).
    customer_in(Directive::Authorizer, c"SuFcgiAuthorizer", c"FILE [ARG...] | off -- a FastCGI authorizer app FILE must allow each request in this directory tree", ffi::OR_FILEINFO | ffi::OR_AUTHCFG),
    customer(Directive::SlowLog, c"SuFcgiSlowLog", c"SECONDS -- a request still running after this long gets an entry in SuFcgiLog saying where the app is blocked (0: off)"),
    customer(Directive::XSendfile, c"SuFcgiXSendfile", c"on|off -- an X-Sendfile response header makes the server send that file of yours itself"),
    host(0),
    host(1),
    host(2),
    host(3),
    host(4),
    host(5),
    host(6),
    host(7),
    host(8),
    host(9),
    host(10),
    host(11),
    host(12),
    host(13),
    host(14),
    php(0),
    php(1),
    php(2),
    php(3),
    end(),
]);

fn directive_from_data(p: *mut c_void) -> Option<Directive> {
    Directive::ALL.into_iter().find(|d| *d as usize == p as usize)
}

fn host_directive_from_data(p: *mut c_void) -> Option<HostDirective> {
    HostDirective::ALL.iter().map(|x| x.0).find(|d| *d as usize == p as usize)
}

/// The arguments of a TAKE_ARGV directive as byte slices.
///
/// # Safety
/// `argv` holds `argc` NUL-terminated strings that outlive `'a`.
unsafe fn args<'a>(argc: c_int, argv: *const *mut c_char) -> Vec<&'a [u8]> {
    (0..argc.max(0) as usize)
        // SAFETY: per the contract: argv[i] for i < argc is a valid string.
        .filter_map(|i| unsafe { bytes(*argv.add(i)) })
        .collect()
}

/// An error string in the command's pool, as httpd expects from a handler.
///
/// # Safety
/// `cmd` is the live cmd_parms of the directive being processed.
unsafe fn cmd_error(cmd: *mut ffi::cmd_parms, msg: &str) -> *const c_char {
    // SAFETY: cmd->directive is the directive being processed (set by httpd).
    let line = unsafe { (*cmd).directive.as_ref() }.map(|d| d.line_num).unwrap_or(0);
    // httpd prefixes .htaccess errors with the file name but not the line, and
    // server-config errors with both; naming the line ourselves covers both.
    // SAFETY: cmd->pool is live for the duration of the directive.
    let in_htaccess = unsafe { (*cmd).pool == (*cmd).temp_pool };
    let text = if in_htaccess { format!("line {line}: {msg}") } else { msg.to_string() };
    // SAFETY: cmd->pool is live; pstr copies.
    unsafe { super::apr::pstr((*cmd).pool, text.replace('\0', "?").as_bytes()) }
}

unsafe extern "C" fn customer_directive(
    cmd: *mut ffi::cmd_parms,
    mconfig: *mut c_void,
    argc: c_int,
    argv: *const *mut c_char,
) -> *const c_char {
    guard("a SuFcgi directive", c"sufcgi: internal error while parsing a directive".as_ptr(), |m| log::server(ptr::null(), log::ERR, m), || {
        // SAFETY: httpd passes the cmd_parms of this directive, our own dir
        // config record (created by create_dir_config) and argc/argv.
        unsafe {
            let Some(d) = directive_from_data((*(*cmd).cmd).cmd_data) else {
                return cmd_error(cmd, "unknown directive");
            };
            let cfg = &mut *(mconfig as *mut DirConfig);
            let Some(path) = bytes((*cmd).path) else {
                return cmd_error(cmd, &format!("{} belongs in a <Directory> section or an .htaccess file", d.name()));
            };
            let dir = PathBuf::from(OsStr::from_bytes(path));
            let in_htaccess = (*cmd).pool == (*cmd).temp_pool;
            let source = if in_htaccess {
                (*cmd).directive.as_ref().and_then(|dv| bytes(dv.filename)).map(|f| PathBuf::from(OsStr::from_bytes(f)))
            } else {
                None
            };
            let host = main_server_conf((*cmd).server);
            let allowed = |n: &[u8]| env_allowed(host, n);
            let a = args(argc, argv);
            if let (Directive::Wrapper, Some(_)) = (d, &source) {
                // Check before applying, so a refused line changes nothing.
                let mut probe = DirConfig::default();
                if directives::apply(&mut probe, d, &a, &dir, None, &allowed).is_ok() {
                    let forbidden = |n: &[u8]| php_forbidden(server_conf((*cmd).server), n);
                    if let Some(w) = probe.wrappers.first() {
                        if let Err(e) = directives::check_wrapper_php_args(w, &forbidden) {
                            return cmd_error(cmd, &e);
                        }
                    }
                }
            }
            match directives::apply(cfg, d, &a, &dir, source.as_deref(), &allowed) {
                Ok(()) => ptr::null(),
                Err(e) => cmd_error(cmd, &e),
            }
        }
    })
}

/// httpd's DECLINE_CMD ("\a\b", compared with strcmp): let the next module
/// with a directive of this name handle it.
const DECLINE_CMD: &CStr = c"\x07\x08";

/// mod_php's module names (`__FILE__` of its module record) across PHP versions.
const MOD_PHP_NAMES: [&CStr; 4] = [c"mod_php.c", c"mod_php8.c", c"mod_php7.c", c"mod_php5.c"];

fn mod_php_loaded() -> bool {
    // SAFETY: ap_find_linked_module only walks httpd's module list, which is
    // stable while configuration is being read (this runs in a directive handler).
    MOD_PHP_NAMES.iter().any(|n| unsafe { !ffi::ap_find_linked_module(n.as_ptr()).is_null() })
}

/// Whether the vhost (merged with the main server) or the built-in list forbids `name`.
fn php_forbidden(conf: Option<&ServerConf>, name: &[u8]) -> bool {
    php_ini::is_forbidden(name, conf.map(|c| c.php_forbid.as_slice()).unwrap_or(&[]))
}

unsafe extern "C" fn php_directive(
    cmd: *mut ffi::cmd_parms,
    mconfig: *mut c_void,
    argc: c_int,
    argv: *const *mut c_char,
) -> *const c_char {
    guard("a php_* directive", c"sufcgi: internal error while parsing a directive".as_ptr(), |m| log::server(ptr::null(), log::ERR, m), || {
        if mod_php_loaded() {
            return DECLINE_CMD.as_ptr();
        }
        // SAFETY: httpd passes the cmd_parms of this directive, our own dir
        // config record (created by create_dir_config) and argc/argv.
        unsafe {
            let Some(d) = PhpDirective::ALL.get((*(*cmd).cmd).cmd_data as usize).copied() else {
                return cmd_error(cmd, "unknown directive");
            };
            let cfg = &mut *(mconfig as *mut DirConfig);
            let in_htaccess = (*cmd).pool == (*cmd).temp_pool;
            let source = if in_htaccess {
                (*cmd).directive.as_ref().and_then(|dv| bytes(dv.filename)).map(|f| PathBuf::from(OsStr::from_bytes(f)))
            } else {
                None
            };
            // cmd->server is the request's vhost while an .htaccess is read.
            let conf = server_conf((*cmd).server);
            let forbidden = |n: &[u8]| php_forbidden(conf, n);
            match directives::apply_php(cfg, d, &args(argc, argv), source.as_deref(), &forbidden) {
                Ok(()) => ptr::null(),
                Err(e) => cmd_error(cmd, &e),
            }
        }
    })
}

fn env_allowed(host: Option<&ServerConf>, name: &[u8]) -> bool {
    let mut probe = HostConfig::new(PathBuf::new(), 0, 0);
    if let Some(h) = host {
        probe.blocked_env = h.blocked_env.clone();
    }
    probe.env_allowed(name)
}

unsafe extern "C" fn host_directive(
    cmd: *mut ffi::cmd_parms,
    _mconfig: *mut c_void,
    argc: c_int,
    argv: *const *mut c_char,
) -> *const c_char {
    guard("a SuFcgi host directive", c"sufcgi: internal error while parsing a directive".as_ptr(), |m| log::server(ptr::null(), log::ERR, m), || {
        // SAFETY: httpd passes this directive's cmd_parms and argc/argv; the
        // server's module config holds our ServerConf (create_server_config).
        unsafe {
            let Some(d) = host_directive_from_data((*(*cmd).cmd).cmd_data) else {
                return cmd_error(cmd, "unknown directive");
            };
            let a = args(argc, argv);
            let name = HostDirective::ALL.iter().find(|x| x.0 as usize == d as usize).map(|x| x.1.to_string_lossy()).unwrap_or_default();
            let global = !matches!(
                d,
                HostDirective::Owner
                    | HostDirective::PhpForbid
                    | HostDirective::OwnerCpuWeight
                    | HostDirective::OwnerCpuMax
                    | HostDirective::OwnerMaxProcesses
                    | HostDirective::OwnerMemory
            );
            if global {
                let err = ffi::ap_check_cmd_context(cmd, ffi::GLOBAL_ONLY as _);
                if !err.is_null() {
                    return err;
                }
            }
            let Some(conf) = server_conf_mut((*cmd).server) else {
                return cmd_error(cmd, "module configuration missing");
            };
            let count = |min: u32, max: u32| -> Result<u32, String> {
                match a.as_slice() {
                    [v] => directives::parse_count(v, min, max).map_err(|e| format!("{name}: {e}")),
                    _ => Err(format!("{name} takes exactly one number")),
                }
            };
            let r: Result<(), String> = match d {
                HostDirective::Owner => match a.as_slice() {
                    [u] => {
                        conf.owner = Some((u.to_vec(), None));
                        Ok(())
                    }
                    [u, g] => {
                        conf.owner = Some((u.to_vec(), Some(g.to_vec())));
                        Ok(())
                    }
                    _ => Err(format!("{name} takes USER [GROUP]")),
                },
                HostDirective::MinUid => count(1, u32::MAX - 1).map(|n| conf.min_uid = Some(n)),
                HostDirective::MinGid => count(1, u32::MAX - 1).map(|n| conf.min_gid = Some(n)),
                HostDirective::Ceiling => match a.as_slice() {
                    [n, v] => directives::set_ceiling(&mut conf.ceilings, n, v).map_err(|e| format!("{name}: {e}")),
                    _ => Err(format!("{name} takes NAME VALUE, e.g. SuFcgiCeiling MaxWorkers 8")),
                },
                HostDirective::MaxWorkersPerOwner => count(1, 100_000).map(|n| conf.max_workers_per_owner = Some(n)),
                HostDirective::MaxWorkersTotal => count(1, 1_000_000).map(|n| conf.max_workers_total = Some(n)),
                HostDirective::SocketDir => match a.as_slice() {
                    [p] if p.starts_with(b"/") => {
                        conf.socket_dir = Some(PathBuf::from(OsStr::from_bytes(p)));
                        Ok(())
                    }
                    _ => Err(format!("{name} takes one absolute directory path")),
                },
                HostDirective::PhpForbid => {
                    if a.is_empty() {
                        Err(format!("{name} takes one or more PHP setting names"))
                    } else {
                        a.iter().try_for_each(|n| {
                            php_ini::check_forbid_pattern(n).map_err(|e| format!("{name}: {e}"))?;
                            conf.php_forbid.push(n.to_vec());
                            Ok(())
                        })
                    }
                }
                HostDirective::Cgroups => match a.as_slice() {
                    [v] => CgroupMode::parse(v).map(|m| conf.cgroups = Some(m)).map_err(|e| format!("{name}: {e}")),
                    _ => Err(format!("{name} takes on, off or required")),
                },
                HostDirective::OwnerCpuWeight | HostDirective::OwnerCpuMax | HostDirective::OwnerMaxProcesses | HostDirective::OwnerMemory => {
                    match a.as_slice() {
                        [v] => {
                            let limit = name.strip_prefix("SuFcgiOwner").unwrap_or(&name).to_string();
                            owner_limits::set_owner_limit(&mut conf.owner_limits, limit.as_bytes(), v).map_err(|e| format!("{name}: {e}"))
                        }
                        _ => Err(format!("{name} takes one value")),
                    }
                }
                HostDirective::RequestNotes => match a.as_slice() {
                    [v] if v.eq_ignore_ascii_case(b"auto") => {
                        conf.request_notes = None;
                        Ok(())
                    }
                    [v] if v.eq_ignore_ascii_case(b"on") => {
                        conf.request_notes = Some(true);
                        Ok(())
                    }
                    [v] if v.eq_ignore_ascii_case(b"off") => {
                        conf.request_notes = Some(false);
                        Ok(())
                    }
                    _ => Err(format!("{name} takes auto, on or off")),
                },
                HostDirective::BlockEnv => {
                    if a.is_empty() {
                        Err(format!("{name} takes one or more names"))
                    } else {
                        for n in &a {
                            conf.blocked_env.push(String::from_utf8_lossy(n).into_owned());
                        }
                        Ok(())
                    }
                }
            };
            match r {
                Ok(()) => ptr::null(),
                Err(e) => cmd_error(cmd, &e),
            }
        }
    })
}

pub unsafe extern "C" fn create_dir_config(p: *mut ffi::apr_pool_t, _dir: *mut c_char) -> *mut c_void {
    guard("create_dir_config", ptr::null_mut(), |m| log::server(ptr::null(), log::ERR, m), || {
        // SAFETY: httpd passes a live pool that outlives the record.
        unsafe { pool_box(p, DirConfig::default()) as *mut c_void }
    })
}

pub unsafe extern "C" fn merge_dir_config(p: *mut ffi::apr_pool_t, base: *mut c_void, add: *mut c_void) -> *mut c_void {
    guard("merge_dir_config", ptr::null_mut(), |m| log::server(ptr::null(), log::ERR, m), || {
        // SAFETY: both records were created by create_dir_config (or a previous
        // merge) and live at least as long as `p`.
        unsafe {
            let merged = directives::merge(&*(base as *const DirConfig), &*(add as *const DirConfig));
            pool_box(p, merged) as *mut c_void
        }
    })
}

pub unsafe extern "C" fn create_server_config(p: *mut ffi::apr_pool_t, _s: *mut ffi::server_rec) -> *mut c_void {
    guard("create_server_config", ptr::null_mut(), |m| log::server(ptr::null(), log::ERR, m), || {
        // SAFETY: httpd passes the live configuration pool.
        unsafe { pool_box(p, ServerConf::default()) as *mut c_void }
    })
}

pub unsafe extern "C" fn merge_server_config(p: *mut ffi::apr_pool_t, base: *mut c_void, add: *mut c_void) -> *mut c_void {
    guard("merge_server_config", ptr::null_mut(), |m| log::server(ptr::null(), log::ERR, m), || {
        // SAFETY: both records come from create_server_config in a live pool.
        unsafe {
            let base = &*(base as *const ServerConf);
            let add = &*(add as *const ServerConf);
            // Globals live in the main server's record; the owner is per vhost.
            let mut merged = ServerConf { owner: add.owner.clone(), owner_limits: add.owner_limits, ..base.clone() };
            // SuFcgiPhpForbid is per vhost, on top of the main server's.
            merged.php_forbid.extend(add.php_forbid.iter().filter(|n| !base.php_forbid.contains(n)).cloned());
            pool_box(p, merged) as *mut c_void
        }
    })
}

/// Our record in a module config vector.
///
/// # Safety
/// `v` must be a live per-server or per-dir config vector.
pub unsafe fn module_config(v: *mut ffi::ap_conf_vector_t) -> *mut c_void {
    if v.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: a config vector is an array of void* indexed by module_index
    // (ap_get_module_config is that cast in httpd); module_index is set at load.
    unsafe {
        let idx = (*ptr::addr_of!(super::module::sufcgi_module)).module_index;
        if idx < 0 {
            return ptr::null_mut();
        }
        *(v as *mut *mut c_void).add(idx as usize)
    }
}

/// # Safety
/// `s` must be a live server_rec.
pub unsafe fn server_conf<'a>(s: *const ffi::server_rec) -> Option<&'a ServerConf> {
    // SAFETY: s is live; our slot holds a ServerConf allocated in pconf.
    unsafe { s.as_ref().and_then(|s| (module_config(s.module_config) as *const ServerConf).as_ref()) }
}

/// # Safety
/// `s` must be a live server_rec, and no other reference to its ServerConf may be alive.
pub unsafe fn server_conf_mut<'a>(s: *mut ffi::server_rec) -> Option<&'a mut ServerConf> {
    // SAFETY: as server_conf; exclusivity is the caller's promise (config time).
    unsafe { s.as_ref().and_then(|s| (module_config(s.module_config) as *mut ServerConf).as_mut()) }
}

/// The main server's record (host-wide settings).
///
/// # Safety
/// `s` must be a live server_rec.
pub unsafe fn main_server_conf<'a>(s: *const ffi::server_rec) -> Option<&'a ServerConf> {
    // SAFETY: ap_server_conf is the main server once configuration has been
    // read; before that (while parsing) the server being configured stands in.
    unsafe {
        let main = if ffi::ap_server_conf.is_null() { s } else { ffi::ap_server_conf as *const ffi::server_rec };
        server_conf(main)
    }
}

/// The merged per-directory record for a request (None when nothing configured it).
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn dir_conf<'a>(r: *const ffi::request_rec) -> Option<&'a DirConfig> {
    // SAFETY: r is live; our slot of per_dir_config holds a DirConfig or null.
    unsafe { r.as_ref().and_then(|r| (module_config(r.per_dir_config) as *const DirConfig).as_ref()) }
}
