//! The directive table and its handlers: customer directives (into the
//! per-directory record), mod_php's directives, and the host's (into the
//! per-server record, `server_conf.rs`).
//!
//! Customer directives are parsed by the shared `core::directives` model; this
//! file only adapts httpd's command interface (`cmd.rs`) to it, which adds
//! file and line to every error, so a bad `.htaccess` line is a 500 whose log
//! names both.

use super::cmd::{self, Cmd, Command, CommandTable, Refusal, TakeArgv, ACCESS_CONF, OR_AUTHCFG, OR_FILEINFO, OR_OPTIONS, RSRC_CONF};
use super::server_conf::ServerConf;
use crate::core::directives::{self, DirConfig, Directive};
use crate::core::hostconfig::HostConfig;
use crate::core::owner_limits::{self, CgroupMode};
use crate::core::php_ini::{self, PhpDirective};
use std::ffi::{CStr, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

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
    ShortSlices,
}

impl HostDirective {
    const ALL: [(HostDirective, &'static CStr, &'static CStr); 16] = [
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
        (HostDirective::ShortSlices, c"SuFcgiShortSlices", c"on|off -- short scheduler slices for the server's threads and for workers that are not CPU-bound, so they preempt CPU-bound ones (default on; Linux 6.12+)"),
    ];
}

/// `SuFcgi*` customer directives, FileInfo: the same override class as
/// AddHandler, which customers already have.
const fn customer(d: Directive, name: &'static CStr, usage: &'static CStr) -> Command {
    customer_in(d, name, usage, OR_FILEINFO)
}

const fn customer_in(d: Directive, name: &'static CStr, usage: &'static CStr, classes: u32) -> Command {
    cmd::take_argv::<Customer>(name, usage, d as usize, classes | ACCESS_CONF | RSRC_CONF)
}

/// mod_php's directives, handled here only while mod_php is not loaded. Same
/// override classes as mod_php: `php_value`/`php_flag` need `AllowOverride
/// Options` in `.htaccess`; the admin forms are server config / `<Directory>` only.
const fn php(i: usize) -> Command {
    let d = PhpDirective::ALL[i];
    let (name, req_override, usage) = match d {
        PhpDirective::Value => (c"php_value", OR_OPTIONS, c"NAME VALUE -- PHP ini setting for this directory's SuFcgiWrapper php-cgi workers"),
        PhpDirective::Flag => (c"php_flag", OR_OPTIONS, c"NAME on|off -- PHP ini flag for this directory's SuFcgiWrapper php-cgi workers"),
        PhpDirective::AdminValue => (c"php_admin_value", ACCESS_CONF | RSRC_CONF, c"NAME VALUE -- PHP ini setting customers cannot override"),
        PhpDirective::AdminFlag => (c"php_admin_flag", ACCESS_CONF | RSRC_CONF, c"NAME on|off -- PHP ini flag customers cannot override"),
    };
    cmd::take_argv::<Php>(name, usage, i, req_override)
}

const fn host(i: usize) -> Command {
    let (d, name, usage) = HostDirective::ALL[i];
    cmd::take_argv::<Host>(name, usage, d as usize, RSRC_CONF)
}

pub static COMMANDS: CommandTable<38> = CommandTable([
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
    customer_in(Directive::Authorizer, c"SuFcgiAuthorizer", c"FILE [ARG...] | off -- a FastCGI authorizer app FILE must allow each request in this directory tree", OR_FILEINFO | OR_AUTHCFG),
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
    host(15),
    php(0),
    php(1),
    php(2),
    php(3),
    cmd::end(),
]);

fn directive_from_data(p: usize) -> Option<Directive> {
    Directive::ALL.into_iter().find(|d| *d as usize == p)
}

fn host_directive_from_data(p: usize) -> Option<HostDirective> {
    HostDirective::ALL.iter().map(|x| x.0).find(|d| *d as usize == p)
}

/// The `SuFcgi*` directives customers may use.
struct Customer;

impl TakeArgv for Customer {
    const WHAT: &'static str = "a SuFcgi directive";

    fn run(cmd: &mut Cmd<'_>, a: &[&[u8]]) -> Result<(), Refusal> {
        let Some(d) = directive_from_data(cmd.data()) else { return Err("unknown directive".to_string().into()) };
        let Some(path) = cmd.path() else {
            return Err(format!("{} belongs in a <Directory> section or an .htaccess file", d.name()).into());
        };
        let dir = PathBuf::from(OsStr::from_bytes(path));
        let source = cmd.source();
        let server = cmd.server();
        let host = server.and_then(|s| s.main_conf());
        let allowed = |n: &[u8]| env_allowed(host, n);
        if let (Directive::Wrapper, Some(_)) = (d, &source) {
            // Check before applying, so a refused line changes nothing.
            let mut probe = DirConfig::default();
            if directives::apply(&mut probe, d, a, &dir, None, &allowed).is_ok() {
                let forbidden = |n: &[u8]| php_forbidden(server.and_then(|s| s.conf()), n);
                if let Some(w) = probe.wrappers.first() {
                    directives::check_wrapper_php_args(w, &forbidden)?;
                }
            }
        }
        let Some(cfg) = cmd.dir_conf() else { return Err("module configuration missing".to_string().into()) };
        Ok(directives::apply(cfg, d, a, &dir, source.as_deref(), &allowed)?)
    }
}

/// mod_php's module names (`__FILE__` of its module record) across PHP versions.
const MOD_PHP_NAMES: [&CStr; 4] = [c"mod_php.c", c"mod_php8.c", c"mod_php7.c", c"mod_php5.c"];

/// Whether the vhost (merged with the main server) or the built-in list forbids `name`.
fn php_forbidden(conf: Option<&ServerConf>, name: &[u8]) -> bool {
    php_ini::is_forbidden(name, conf.map(|c| c.php_forbid.as_slice()).unwrap_or(&[]))
}

/// `php_value`, `php_flag` and their admin forms.
struct Php;

impl TakeArgv for Php {
    const WHAT: &'static str = "a php_* directive";

    fn run(cmd: &mut Cmd<'_>, a: &[&[u8]]) -> Result<(), Refusal> {
        if MOD_PHP_NAMES.iter().any(|n| cmd::module_loaded(n)) {
            return Err(Refusal::Decline);
        }
        let Some(d) = PhpDirective::ALL.get(cmd.data()).copied() else { return Err("unknown directive".to_string().into()) };
        let source = cmd.source();
        // cmd->server is the request's vhost while an .htaccess is read.
        let conf = cmd.server().and_then(|s| s.conf());
        let forbidden = |n: &[u8]| php_forbidden(conf, n);
        let Some(cfg) = cmd.dir_conf() else { return Err("module configuration missing".to_string().into()) };
        Ok(directives::apply_php(cfg, d, a, source.as_deref(), &forbidden)?)
    }
}

fn env_allowed(host: Option<&ServerConf>, name: &[u8]) -> bool {
    let mut probe = HostConfig::new(PathBuf::new(), 0, 0);
    if let Some(h) = host {
        probe.blocked_env = h.blocked_env.clone();
    }
    probe.env_allowed(name)
}

/// The host's `SuFcgi*` directives (server config only).
struct Host;

impl TakeArgv for Host {
    const WHAT: &'static str = "a SuFcgi host directive";

    fn run(cmd: &mut Cmd<'_>, a: &[&[u8]]) -> Result<(), Refusal> {
        let Some(d) = host_directive_from_data(cmd.data()) else { return Err("unknown directive".to_string().into()) };
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
            cmd.check_global_only().map_err(Refusal::Httpd)?;
        }
        let Some(conf) = cmd.server_conf_mut() else { return Err("module configuration missing".to_string().into()) };
        Ok(apply_host(d, &name, conf, a)?)
    }
}

/// Apply host directive `d` (called `name`) with arguments `a` to `conf`.
fn apply_host(d: HostDirective, name: &str, conf: &mut ServerConf, a: &[&[u8]]) -> Result<(), String> {
    let count = |min: u32, max: u32| -> Result<u32, String> {
        match a {
            [v] => directives::parse_count(v, min, max).map_err(|e| format!("{name}: {e}")),
            _ => Err(format!("{name} takes exactly one number")),
        }
    };
    match d {
        HostDirective::Owner => match a {
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
        HostDirective::Ceiling => match a {
            [n, v] => directives::set_ceiling(&mut conf.ceilings, n, v).map_err(|e| format!("{name}: {e}")),
            _ => Err(format!("{name} takes NAME VALUE, e.g. SuFcgiCeiling MaxWorkers 8")),
        },
        HostDirective::MaxWorkersPerOwner => count(1, 100_000).map(|n| conf.max_workers_per_owner = Some(n)),
        HostDirective::MaxWorkersTotal => count(1, 1_000_000).map(|n| conf.max_workers_total = Some(n)),
        HostDirective::SocketDir => match a {
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
        HostDirective::Cgroups => match a {
            [v] => CgroupMode::parse(v).map(|m| conf.cgroups = Some(m)).map_err(|e| format!("{name}: {e}")),
            _ => Err(format!("{name} takes on, off or required")),
        },
        HostDirective::OwnerCpuWeight | HostDirective::OwnerCpuMax | HostDirective::OwnerMaxProcesses | HostDirective::OwnerMemory => {
            match a {
                [v] => {
                    let limit = name.strip_prefix("SuFcgiOwner").unwrap_or(name).to_string();
                    owner_limits::set_owner_limit(&mut conf.owner_limits, limit.as_bytes(), v).map_err(|e| format!("{name}: {e}"))
                }
                _ => Err(format!("{name} takes one value")),
            }
        }
        HostDirective::RequestNotes => match a {
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
        HostDirective::ShortSlices => directives::one_flag(name, a).map(|on| conf.short_slices = Some(on)),
        HostDirective::BlockEnv => {
            if a.is_empty() {
                Err(format!("{name} takes one or more names"))
            } else {
                for n in a {
                    conf.blocked_env.push(String::from_utf8_lossy(n).into_owned());
                }
                Ok(())
            }
        }
    }
}
