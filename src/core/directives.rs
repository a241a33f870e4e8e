//! The customer directive model: parsing and validating values, and inheritance
//! down the directory tree. Shared by the Apache glue (which gets tokens from
//! httpd's parser) and the lighttpd glue (which reads `.htaccess` itself).

use crate::core::limits::{parse_size, Limits, MAX_POOL_WORKERS};
use crate::core::php_ini::{self, PhpDirective, PhpSetting};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Upper bound for worker counts written in `.htaccess`; the host ceiling clamps further.
pub const MAX_WORKERS_LIMIT: u32 = MAX_POOL_WORKERS;
/// Upper bound for any number of seconds written in `.htaccess`.
pub const MAX_SECONDS: u32 = 86_400;
/// Default `SuFcgiRestartFile`, relative to the app directory.
pub const DEFAULT_RESTART_FILE: &str = "tmp/restart.txt";

/// Limits as written; unset fields inherit, then default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitSettings {
    pub max_workers: Option<u32>,
    pub min_workers: Option<u32>,
    pub idle_timeout: Option<u32>,
    pub max_requests: Option<u32>,
    pub queue_limit: Option<u32>,
    pub queue_timeout: Option<u32>,
    pub request_timeout: Option<u32>,
    pub memory_limit: Option<u64>,
    pub slow_log: Option<u32>,
    pub x_sendfile: Option<bool>,
}

impl LimitSettings {
    fn merge(&self, add: &LimitSettings) -> LimitSettings {
        LimitSettings {
            max_workers: add.max_workers.or(self.max_workers),
            min_workers: add.min_workers.or(self.min_workers),
            idle_timeout: add.idle_timeout.or(self.idle_timeout),
            max_requests: add.max_requests.or(self.max_requests),
            queue_limit: add.queue_limit.or(self.queue_limit),
            queue_timeout: add.queue_timeout.or(self.queue_timeout),
            request_timeout: add.request_timeout.or(self.request_timeout),
            memory_limit: add.memory_limit.or(self.memory_limit),
            slow_log: add.slow_log.or(self.slow_log),
            x_sendfile: add.x_sendfile.or(self.x_sendfile),
        }
    }

    /// The settings with defaults filled in (not yet clamped: the supervisor does that).
    pub fn resolve(&self) -> Limits {
        let d = Limits::DEFAULT;
        Limits {
            max_workers: self.max_workers.unwrap_or(d.max_workers),
            min_workers: self.min_workers.unwrap_or(d.min_workers),
            idle_timeout: self.idle_timeout.unwrap_or(d.idle_timeout),
            max_requests: self.max_requests.unwrap_or(d.max_requests),
            queue_limit: self.queue_limit.unwrap_or(d.queue_limit),
            queue_timeout: self.queue_timeout.unwrap_or(d.queue_timeout),
            request_timeout: self.request_timeout.unwrap_or(d.request_timeout),
            memory_limit: self.memory_limit.unwrap_or(d.memory_limit),
            slow_log: self.slow_log.unwrap_or(d.slow_log),
            x_sendfile: self.x_sendfile.unwrap_or(d.x_sendfile),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppDef {
    /// The directory whose tree the app serves (where the directive was written).
    pub dir: PathBuf,
    /// Absolute path of the app file (inside `dir`).
    pub program: PathBuf,
    pub args: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppSetting {
    /// `SuFcgiApp off`: this subtree is Apache's again.
    Off,
    On(AppDef),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wrapper {
    /// Including the dot, e.g. `.php`.
    pub ext: Vec<u8>,
    pub command: PathBuf,
    pub args: Vec<Vec<u8>>,
    /// Directory where the directive was written: the pool's working directory.
    pub dir: PathBuf,
}

impl Wrapper {
    /// Whether the host wrote the directive in a wildcard `<Directory>`
    /// (`/home/*/www`): there is no one directory it was written in.
    fn is_wildcard(&self) -> bool {
        self.dir.as_os_str().as_bytes().iter().any(|c| matches!(c, b'*' | b'?' | b'['))
    }

    /// The pool's working directory for `script`: where the directive was
    /// written, or for a wildcard `<Directory>` the script's own directory.
    pub fn workdir_for(&self, script: &Path) -> PathBuf {
        if self.is_wildcard() {
            script.parent().map(Path::to_path_buf).unwrap_or_default()
        } else {
            self.dir.clone()
        }
    }

    /// The directory whose configuration wrapped `script`: `dir`, or for a
    /// wildcard `<Directory>` the directory it matched on the script's path
    /// (as many leading components as the pattern has; httpd's wildcards
    /// never match a `/`).
    pub fn config_dir_for(&self, script: &Path) -> PathBuf {
        if !self.is_wildcard() {
            return self.dir.clone();
        }
        let depth = self.dir.components().count();
        script.components().take(depth).collect()
    }
}

/// Merged per-directory settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirConfig {
    pub app: Option<AppSetting>,
    pub wrappers: Vec<Wrapper>,
    pub env: Vec<(Vec<u8>, Vec<u8>)>,
    pub limits: LimitSettings,
    /// `SuFcgiBusyPage`: absolute path of the 503 page.
    pub busy_page: Option<PathBuf>,
    /// `SuFcgiRestartFile` as written (relative to the app directory).
    pub restart_file: Option<PathBuf>,
    /// `SuFcgiLog` as written: relative to the app directory, `~/…` for the
    /// owner's home, or absolute (the supervisor resolves it; see
    /// `supervisor::customer_log`).
    pub log_file: Option<PathBuf>,
    /// Customer files (`.htaccess`) that contributed a directive; the supervisor
    /// checks their ownership before running anything they configure.
    pub sources: Vec<PathBuf>,
    /// `php_value` / `php_flag` / `php_admin_*`: ini settings for PHP wrapper pools.
    pub php: Vec<PhpSetting>,
    /// `SuFcgiAuthorizer`: a FastCGI AUTHORIZER app that must allow each
    /// request in this tree before it is served (`Off` in a subdirectory
    /// lifts it there).
    pub authorizer: Option<AppSetting>,
}

/// The customer directives, by name as written in `.htaccess`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Directive {
    App,
    Wrapper,
    Env,
    MaxWorkers,
    MinWorkers,
    IdleTimeout,
    MaxRequests,
    QueueLimit,
    QueueTimeout,
    BusyPage,
    RequestTimeout,
    MemoryLimit,
    RestartFile,
    Log,
    Authorizer,
    SlowLog,
    XSendfile,
}

impl Directive {
    pub const ALL: [Directive; 17] = [
        Directive::App,
        Directive::Wrapper,
        Directive::Env,
        Directive::MaxWorkers,
        Directive::MinWorkers,
        Directive::IdleTimeout,
        Directive::MaxRequests,
        Directive::QueueLimit,
        Directive::QueueTimeout,
        Directive::BusyPage,
        Directive::RequestTimeout,
        Directive::MemoryLimit,
        Directive::RestartFile,
        Directive::Log,
        Directive::Authorizer,
        Directive::SlowLog,
        Directive::XSendfile,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Directive::App => "SuFcgiApp",
            Directive::Wrapper => "SuFcgiWrapper",
            Directive::Env => "SuFcgiEnv",
            Directive::MaxWorkers => "SuFcgiMaxWorkers",
            Directive::MinWorkers => "SuFcgiMinWorkers",
            Directive::IdleTimeout => "SuFcgiIdleTimeout",
            Directive::MaxRequests => "SuFcgiMaxRequests",
            Directive::QueueLimit => "SuFcgiQueueLimit",
            Directive::QueueTimeout => "SuFcgiQueueTimeout",
            Directive::BusyPage => "SuFcgiBusyPage",
            Directive::RequestTimeout => "SuFcgiRequestTimeout",
            Directive::MemoryLimit => "SuFcgiMemoryLimit",
            Directive::RestartFile => "SuFcgiRestartFile",
            Directive::Log => "SuFcgiLog",
            Directive::Authorizer => "SuFcgiAuthorizer",
            Directive::SlowLog => "SuFcgiSlowLog",
            Directive::XSendfile => "SuFcgiXSendfile",
        }
    }

    pub fn usage(self) -> &'static str {
        match self {
            Directive::App => "FILE [ARG...] | off -- serve this directory tree with the FastCGI app FILE",
            Directive::Wrapper => "COMMAND [ARG...] .EXT -- run existing *.EXT files through COMMAND (e.g. /usr/bin/php-cgi .php)",
            Directive::Env => "NAME VALUE -- extra environment variable for this directory's workers",
            Directive::MaxWorkers => "N -- at most N worker processes for this app (clamped to the host's ceiling)",
            Directive::MinWorkers => "N -- worker processes kept running even when idle (default 0)",
            Directive::IdleTimeout => "SECONDS -- idle workers above the minimum stop after this long (default 300)",
            Directive::MaxRequests => "N -- a worker is replaced after serving N requests (default 0: never)",
            Directive::QueueLimit => "N -- requests that may wait for a busy app before 503 (default 100)",
            Directive::QueueTimeout => "SECONDS -- longest wait for a worker before 503 (default 60)",
            Directive::BusyPage => "FILE -- the page sent with 503 when the app is overloaded",
            Directive::RequestTimeout => "SECONDS -- a request running longer gets 504 and its worker is replaced (default 0: off)",
            Directive::MemoryLimit => "SIZE -- a worker using more memory (e.g. 256M) is stopped (default: the host's)",
            Directive::RestartFile => "PATH -- touching this file restarts the app's workers (default tmp/restart.txt)",
            Directive::Log => "FILE -- refusals, errors, the app's stderr and its workers' lifecycle events go to this file (relative to the app's directory, ~/ for your home), written as you",
            Directive::Authorizer => "FILE [ARG...] | off -- a FastCGI authorizer app FILE must allow each request in this directory tree",
            Directive::SlowLog => "SECONDS -- a request still running after this long gets an entry in SuFcgiLog saying where the app is blocked (0: off)",
            Directive::XSendfile => "on|off -- an X-Sendfile response header makes the server send that file of yours itself (default off)",
        }
    }

    pub fn from_name(name: &str) -> Option<Directive> {
        Directive::ALL.into_iter().find(|d| d.name().eq_ignore_ascii_case(name))
    }
}

/// Apply one directive occurrence to `cfg`.
///
/// `dir` is the directory the directive applies to (the `.htaccess` directory),
/// `source` the customer file it came from (None for server config), and
/// `env_allowed` the host's environment policy. The error is the reason only;
/// the caller adds file and line.
pub fn apply(
    cfg: &mut DirConfig,
    directive: Directive,
    args: &[&[u8]],
    dir: &Path,
    source: Option<&Path>,
    env_allowed: &dyn Fn(&[u8]) -> bool,
) -> Result<(), String> {
    let name = directive.name();
    match directive {
        Directive::App => cfg.app = Some(app_setting(name, args, dir)?),
        Directive::Authorizer => cfg.authorizer = Some(app_setting(name, args, dir)?),
        Directive::Wrapper => {
            if args.len() < 2 {
                return Err(format!("{name} needs a COMMAND and an extension, e.g. '{name} /usr/bin/php-cgi .php'"));
            }
            let ext = args[args.len() - 1];
            check_extension(ext).map_err(|e| format!("{name}: {e}"))?;
            let command = args[0];
            if !command.starts_with(b"/") {
                return Err(format!("{name}: the command '{}' must be an absolute path", lossy(command)));
            }
            let command = path_from_bytes(command).map_err(|e| format!("{name}: {e}"))?;
            let middle = &args[1..args.len() - 1];
            for a in middle {
                check_arg(a).map_err(|e| format!("{name}: {e}"))?;
            }
            let w = Wrapper {
                ext: ext.to_vec(),
                command,
                args: middle.iter().map(|a| a.to_vec()).collect(),
                dir: dir.to_path_buf(),
            };
            cfg.wrappers.retain(|x| x.ext != w.ext);
            cfg.wrappers.push(w);
        }
        Directive::Env => {
            let [n, v] = args else {
                return Err(format!("{name} takes exactly two arguments: NAME VALUE"));
            };
            if !is_env_name(n) {
                return Err(format!("{name}: '{}' is not a valid environment variable name", lossy(n)));
            }
            if !env_allowed(n) {
                return Err(format!("{name}: setting '{}' is not allowed on this server", lossy(n)));
            }
            if v.contains(&0) {
                return Err(format!("{name}: the value of '{}' contains a NUL byte", lossy(n)));
            }
            cfg.env.retain(|(k, _)| k.as_slice() != *n);
            cfg.env.push((n.to_vec(), v.to_vec()));
        }
        Directive::MaxWorkers => cfg.limits.max_workers = Some(one_count(name, args, 1, MAX_WORKERS_LIMIT)?),
        Directive::MinWorkers => cfg.limits.min_workers = Some(one_count(name, args, 0, MAX_WORKERS_LIMIT)?),
        Directive::IdleTimeout => cfg.limits.idle_timeout = Some(one_count(name, args, 1, MAX_SECONDS)?),
        Directive::MaxRequests => cfg.limits.max_requests = Some(one_count(name, args, 0, u32::MAX - 1)?),
        Directive::QueueLimit => cfg.limits.queue_limit = Some(one_count(name, args, 0, 100_000)?),
        Directive::QueueTimeout => cfg.limits.queue_timeout = Some(one_count(name, args, 0, MAX_SECONDS)?),
        Directive::RequestTimeout => cfg.limits.request_timeout = Some(one_count(name, args, 0, MAX_SECONDS)?),
        Directive::MemoryLimit => {
            let [v] = args else {
                return Err(format!("{name} takes exactly one size, e.g. 256M"));
            };
            let n = parse_size(v).map_err(|e| format!("{name}: {e}"))?;
            if n != 0 && n < (8 << 20) {
                return Err(format!("{name}: {} is below the 8M minimum", String::from_utf8_lossy(v)));
            }
            cfg.limits.memory_limit = Some(n);
        }
        Directive::BusyPage => cfg.busy_page = Some(dir.join(one_relative(name, args)?)),
        Directive::RestartFile => cfg.restart_file = Some(one_relative(name, args)?),
        Directive::Log => cfg.log_file = Some(one_log_path(name, args)?),
        Directive::SlowLog => cfg.limits.slow_log = Some(one_count(name, args, 0, MAX_SECONDS)?),
        Directive::XSendfile => cfg.limits.x_sendfile = Some(one_flag(name, args)?),
    }
    add_source(cfg, source);
    Ok(())
}

/// `FILE [ARG…]` relative to `dir`, or `off` (SuFcgiApp, SuFcgiAuthorizer).
fn app_setting(name: &str, args: &[&[u8]], dir: &Path) -> Result<AppSetting, String> {
    let Some((first, rest)) = args.split_first() else {
        return Err(format!("{name} needs a FILE (or 'off')"));
    };
    if first.eq_ignore_ascii_case(b"off") {
        if !rest.is_empty() {
            return Err(format!("{name} off takes no further arguments"));
        }
        return Ok(AppSetting::Off);
    }
    let rel = relative_path(first).map_err(|e| format!("{name}: {e}"))?;
    for a in rest {
        check_arg(a).map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(AppSetting::On(AppDef { dir: dir.to_path_buf(), program: dir.join(rel), args: rest.iter().map(|a| a.to_vec()).collect() }))
}

fn add_source(cfg: &mut DirConfig, source: Option<&Path>) {
    if let Some(src) = source {
        if !cfg.sources.iter().any(|s| s == src) {
            cfg.sources.push(src.to_path_buf());
        }
    }
}

/// Apply one `php_value` / `php_flag` / `php_admin_value` / `php_admin_flag`.
///
/// `source` is the customer file it came from (None for server config): admin
/// forms are refused there, and so are names `forbidden` says the host forbids
/// (`php_ini::is_forbidden` with the host's `SuFcgiPhpForbid` list). The error is
/// the reason only; the caller adds file and line.
pub fn apply_php(
    cfg: &mut DirConfig,
    directive: PhpDirective,
    args: &[&[u8]],
    source: Option<&Path>,
    forbidden: &dyn Fn(&[u8]) -> bool,
) -> Result<(), String> {
    let dn = directive.name();
    if source.is_some() && directive.is_admin() {
        return Err(format!("{dn} is for the server configuration only, not for .htaccess"));
    }
    let s = php_ini::parse(directive, args)?;
    if source.is_some() && forbidden(&s.name) {
        return Err(format!("{dn}: setting '{}' is not allowed on this server", lossy(&s.name)));
    }
    php_ini::set(&mut cfg.php, s);
    add_source(cfg, source);
    Ok(())
}

/// A customer's `SuFcgiWrapper` for PHP may not set forbidden names with its own
/// `-d` arguments either (the same policy as `php_value`).
pub fn check_wrapper_php_args(w: &Wrapper, forbidden: &dyn Fn(&[u8]) -> bool) -> Result<(), String> {
    if !php_ini::is_php_command(&w.command) {
        return Ok(());
    }
    match php_ini::defined_names(&w.args).into_iter().find(|n| forbidden(n)) {
        Some(n) => Err(format!("SuFcgiWrapper: setting '{}' with -d is not allowed on this server", lossy(&n))),
        None => Ok(()),
    }
}

/// Inheritance: `add` (deeper directory) overrides `base`; env and wrappers are
/// merged by name/extension.
pub fn merge(base: &DirConfig, add: &DirConfig) -> DirConfig {
    let mut out = base.clone();
    if add.app.is_some() {
        out.app = add.app.clone();
    }
    if add.authorizer.is_some() {
        out.authorizer = add.authorizer.clone();
    }
    for w in &add.wrappers {
        out.wrappers.retain(|x| x.ext != w.ext);
        out.wrappers.push(w.clone());
    }
    for (k, v) in &add.env {
        out.env.retain(|(bk, _)| bk != k);
        out.env.push((k.clone(), v.clone()));
    }
    out.limits = base.limits.merge(&add.limits);
    if add.busy_page.is_some() {
        out.busy_page = add.busy_page.clone();
    }
    if add.restart_file.is_some() {
        out.restart_file = add.restart_file.clone();
    }
    if add.log_file.is_some() {
        out.log_file = add.log_file.clone();
    }
    for s in &add.sources {
        if !out.sources.contains(s) {
            out.sources.push(s.clone());
        }
    }
    out.php = php_ini::merge(&base.php, &add.php);
    out
}

impl DirConfig {
    /// The wrapper configured for a file name, if any. A PHP wrapper does not
    /// apply where `php_flag engine off` is in effect: as under mod_php, such
    /// files are served as plain files (e.g. an uploads directory).
    pub fn wrapper_for(&self, file_name: &[u8]) -> Option<&Wrapper> {
        self.wrappers
            .iter()
            .find(|w| file_name.len() > w.ext.len() && file_name.ends_with(&w.ext))
            .filter(|w| !(php_ini::is_php_command(&w.command) && php_ini::engine_off(&self.php)))
    }

    /// The arguments a wrapper's workers get: the directive's own, plus what
    /// this directory's other settings add. PHP wrappers get the effective
    /// `php_value`/`php_flag` settings as `-d NAME="VALUE"` after the directive's
    /// own arguments (php-cgi lets the last `-d` of a name win, so admin values
    /// also beat a `-d` on the `SuFcgiWrapper` line).
    pub fn wrapper_args(&self, w: &Wrapper) -> Vec<Vec<u8>> {
        let mut args = w.args.clone();
        if php_ini::is_php_command(&w.command) {
            args.extend(php_ini::ini_args(&self.php));
        }
        args
    }

    pub fn app(&self) -> Option<&AppDef> {
        match &self.app {
            Some(AppSetting::On(def)) => Some(def),
            _ => None,
        }
    }

    /// The authorizer guarding this directory, unless `SuFcgiAuthorizer off`.
    pub fn authorizer(&self) -> Option<&AppDef> {
        match &self.authorizer {
            Some(AppSetting::On(def)) => Some(def),
            _ => None,
        }
    }
}

fn one_count(name: &str, args: &[&[u8]], min: u32, max: u32) -> Result<u32, String> {
    let [n] = args else {
        return Err(format!("{name} takes exactly one number"));
    };
    parse_count(n, min, max).map_err(|e| format!("{name}: {e}"))
}

/// `on` / `off` (any case); also for host directives.
pub fn one_flag(name: &str, args: &[&[u8]]) -> Result<bool, String> {
    match args {
        [v] if v.eq_ignore_ascii_case(b"on") => Ok(true),
        [v] if v.eq_ignore_ascii_case(b"off") => Ok(false),
        _ => Err(format!("{name} takes on or off")),
    }
}

/// `SuFcgiLog`: any file the owner could create, since the supervisor opens
/// it with the owner's identity — relative to the app directory (`..`
/// allowed), `~/…` below the owner's home, or absolute. Only what cannot
/// name a file is refused here.
fn one_log_path(name: &str, args: &[&[u8]]) -> Result<PathBuf, String> {
    let [p] = args else {
        return Err(format!("{name} takes exactly one path"));
    };
    let path = path_from_bytes(p).map_err(|e| format!("{name}: {e}"))?;
    if p.starts_with(b"~") && !p.starts_with(b"~/") {
        return Err(format!("{name}: '{}': only ~/ (your own home) is understood", lossy(p)));
    }
    if p.ends_with(b"/") || p == b"~/" || path.file_name().is_none() || path.ends_with("..") || path.ends_with(".") {
        return Err(format!("{name}: '{}' does not name a file", lossy(p)));
    }
    Ok(path)
}

fn one_relative(name: &str, args: &[&[u8]]) -> Result<PathBuf, String> {
    let [p] = args else {
        return Err(format!("{name} takes exactly one path"));
    };
    relative_path(p).map_err(|e| format!("{name}: {e}"))
}

/// Parse a decimal count in `min..=max`.
/// `SuFcgiCeiling NAME VALUE`: NAME is a customer directive without its prefix.
pub fn set_ceiling(c: &mut Limits, name: &[u8], v: &[u8]) -> Result<(), String> {
    let secs = || parse_count(v, 0, MAX_SECONDS);
    match name.to_ascii_lowercase().as_slice() {
        b"maxworkers" => c.max_workers = parse_count(v, 1, MAX_WORKERS_LIMIT)?,
        b"minworkers" => c.min_workers = parse_count(v, 0, MAX_WORKERS_LIMIT)?,
        b"idletimeout" => c.idle_timeout = parse_count(v, 1, MAX_SECONDS)?,
        b"maxrequests" => c.max_requests = parse_count(v, 0, u32::MAX - 1)?,
        b"queuelimit" => c.queue_limit = parse_count(v, 0, 100_000)?,
        b"queuetimeout" => c.queue_timeout = secs()?,
        b"requesttimeout" => c.request_timeout = secs()?,
        b"memorylimit" => c.memory_limit = parse_size(v)?,
        b"slowlog" => c.slow_log = secs()?,
        b"xsendfile" => {
            c.x_sendfile = match v.to_ascii_lowercase().as_slice() {
                b"on" => true,
                b"off" => false,
                _ => return Err(format!("'{}' is not on or off", String::from_utf8_lossy(v))),
            }
        }
        _ => return Err(format!("unknown limit '{}'", String::from_utf8_lossy(name))),
    }
    Ok(())
}

/// A customer's `SuFcgiBusyPage`, if it is a regular file of sensible size
/// (read as the server user: it is served like any other file of the site).
pub fn read_busy_page(p: &Path) -> Option<Vec<u8>> {
    let md = std::fs::symlink_metadata(p).ok()?;
    if !md.file_type().is_file() || md.len() > 64 * 1024 {
        return None;
    }
    std::fs::read(p).ok()
}

pub fn parse_count(v: &[u8], min: u32, max: u32) -> Result<u32, String> {
    let s = std::str::from_utf8(v).map_err(|_| format!("'{}' is not a number", lossy(v)))?;
    match s.parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("'{s}' is not a number between {min} and {max}")),
    }
}

pub fn is_env_name(n: &[u8]) -> bool {
    match n.split_first() {
        Some((f, rest)) => {
            (f.is_ascii_alphabetic() || *f == b'_') && rest.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
        }
        None => false,
    }
}

fn check_arg(a: &[u8]) -> Result<(), String> {
    if a.contains(&0) {
        return Err("an argument contains a NUL byte".into());
    }
    Ok(())
}

fn check_extension(ext: &[u8]) -> Result<(), String> {
    let ok = ext.len() >= 2
        && ext[0] == b'.'
        && ext[1..].iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!("the last argument '{}' must be a file extension such as .php", lossy(ext)))
    }
}

/// A FILE argument: relative, no `..`, so an app always lies inside its directory.
fn relative_path(v: &[u8]) -> Result<PathBuf, String> {
    let p = path_from_bytes(v)?;
    if p.is_absolute() {
        return Err(format!("'{}' must be a path relative to this directory", lossy(v)));
    }
    if p.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(format!("'{}' must not leave this directory", lossy(v)));
    }
    Ok(p)
}

fn path_from_bytes(v: &[u8]) -> Result<PathBuf, String> {
    if v.is_empty() || v.contains(&0) {
        return Err("empty path or NUL byte in path".into());
    }
    Ok(PathBuf::from(std::ffi::OsStr::from_bytes(v)))
}

fn lossy(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

#[cfg(test)]
mod tests;
