//! A server child says what to run; the supervisor checks that the site's
//! owner (in their own `.htaccess`) or the host (in server config) asked for
//! exactly that. Without this, a compromised server child could ask for a
//! host interpreter with arguments of its choosing (`python3 -c …`), or an
//! owner's app with an environment of its choosing (`PYTHONPATH=…`), and run
//! code as any customer.
//!
//! The rules mirror the directive model: an App needs a `SuFcgiApp` line in
//! its directory naming the program and arguments, an Authorizer likewise a
//! `SuFcgiAuthorizer` line (never a `SuFcgiApp` one); a Wrapper needs a
//! `SuFcgiWrapper` line in its directory naming the command and arguments
//! (plus `-d` pairs each backed by a `php_*` line); a Script takes no
//! arguments; every environment pair needs a `SuFcgiEnv` line.

use std::collections::HashSet;
use std::path::Path;

use crate::core::hostconfig::HostDirective;
use crate::core::htaccess::Line;
use crate::core::php_ini::{self, PhpDirective};
use crate::core::request::{AppKind, PoolSpec};

/// Directives that configure a pool, from one place: a customer file (its
/// directory) or the host's server config (its `<Directory>`, if any).
pub struct Source<'a> {
    pub dir: Option<&'a Path>,
    pub lines: Vec<Line>,
}

impl<'a> Source<'a> {
    pub fn from_host(d: &'a HostDirective) -> Source<'a> {
        Source { dir: d.dir.as_deref(), lines: vec![Line { number: 0, name: d.name.clone(), args: d.args.clone() }] }
    }
}

fn path_of(b: &[u8]) -> &Path {
    use std::os::unix::ffi::OsStrExt;
    Path::new(std::ffi::OsStr::from_bytes(b))
}

/// Read a customer's configuring file for checking: only a regular file of
/// the owner's that nobody else can write, opened without following a
/// symlink, and at most 1 MiB.
pub fn read_config_file(path: &Path, owner_uid: u32) -> Result<Vec<u8>, String> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let md = f.metadata().map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
    if !md.is_file() || md.uid() != owner_uid || md.mode() & 0o022 != 0 {
        return Err(format!("{} is not a regular file of uid {owner_uid} writable only by them", path.display()));
    }
    let mut buf = Vec::new();
    f.by_ref().take(1 << 20).read_to_end(&mut buf).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(buf)
}

/// Ok when every part of `spec` that decides what runs is backed by a source.
pub fn justify(spec: &PoolSpec, sources: &[Source<'_>]) -> Result<(), String> {
    let lines = || sources.iter().flat_map(|s| s.lines.iter().map(move |l| (s.dir, l)));
    let in_workdir = |d: Option<&Path>| d.is_some_and(|d| d == spec.workdir || wildcard_covers(d, &spec.workdir));
    match spec.kind {
        AppKind::App | AppKind::Authorizer => {
            // The role is part of what the owner asked for: a responder line
            // does not justify an authorizer pool, nor the other way round.
            let directive = if spec.kind == AppKind::App { "SuFcgiApp" } else { "SuFcgiAuthorizer" };
            let ok = lines().any(|(dir, l)| {
                l.is(directive)
                    && in_workdir(dir)
                    && l.args.first().is_some_and(|f| !f.eq_ignore_ascii_case(b"off") && spec.workdir.join(path_of(f)) == spec.program)
                    && l.args[1..] == spec.args[..]
            });
            if !ok {
                return Err(format!("no {directive} line in {} asks for {} with these arguments", spec.workdir.display(), spec.program.display()));
            }
        }
        AppKind::Wrapper => {
            let php: HashSet<Vec<u8>> = lines().filter_map(|(_, l)| php_arg(l)).collect();
            let ok = lines().any(|(dir, l)| {
                if !l.is("SuFcgiWrapper") || !in_workdir(dir) || l.args.len() < 2 {
                    return false;
                }
                let own = &l.args[1..l.args.len() - 1];
                path_of(&l.args[0]) == spec.program
                    && spec.args.len() >= own.len()
                    && spec.args[..own.len()] == own[..]
                    && extras_backed(&spec.args[own.len()..], &php)
            });
            if !ok {
                return Err(format!("no SuFcgiWrapper line in {} asks for {} with these arguments", spec.workdir.display(), spec.program.display()));
            }
        }
        AppKind::Script => {
            if !spec.args.is_empty() {
                return Err("a sufcgi-script takes no arguments".into());
            }
        }
    }
    for (k, v) in &spec.env {
        let ok = lines().any(|(_, l)| l.is("SuFcgiEnv") && l.args.len() == 2 && l.args[0] == *k && l.args[1] == *v);
        if !ok {
            return Err(format!("no SuFcgiEnv line sets {}", String::from_utf8_lossy(k)));
        }
    }
    if spec.log_file.is_some() && !log_backed(spec, sources) {
        return Err("no SuFcgiLog line names this log file".into());
    }
    Ok(())
}

/// Whether a `SuFcgiLog` line names `spec.log_file` exactly as written: a
/// child can never have the supervisor (as the owner) write to a file the
/// owner did not name.
pub fn log_backed(spec: &PoolSpec, sources: &[Source<'_>]) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Some(want) = spec.log_file.as_deref() else { return false };
    sources.iter().flat_map(|s| s.lines.iter()).any(|l| l.is("SuFcgiLog") && l.args.len() == 1 && l.args[0] == want.as_os_str().as_bytes())
}

/// A host `<Directory /home/*/www>` pattern covers a directory below a match.
fn wildcard_covers(pattern: &Path, dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let p = pattern.as_os_str().as_bytes();
    if !p.iter().any(|c| matches!(c, b'*' | b'?' | b'[')) {
        return false;
    }
    let Ok(pc) = std::ffi::CString::new(p.strip_suffix(b"/").unwrap_or(p)) else { return false };
    dir.ancestors().any(|a| {
        std::ffi::CString::new(a.as_os_str().as_bytes())
            // SAFETY: both arguments are NUL-terminated strings that outlive the call.
            .is_ok_and(|ac| unsafe { libc::fnmatch(pc.as_ptr(), ac.as_ptr(), libc::FNM_PATHNAME) } == 0)
    })
}

/// The `-d NAME="VALUE"` argument a php_* line stands for, rendered exactly as
/// the directive model renders it.
fn php_arg(l: &Line) -> Option<Vec<u8>> {
    let d = PhpDirective::from_name(std::str::from_utf8(&l.name).ok()?)?;
    let args: Vec<&[u8]> = l.args.iter().map(Vec::as_slice).collect();
    let setting = php_ini::parse(d, &args).ok()?;
    php_ini::ini_args(&[setting]).pop()
}

/// Arguments after the wrapper's own: only `-d` pairs, each backed by a line.
fn extras_backed(extras: &[Vec<u8>], php: &HashSet<Vec<u8>>) -> bool {
    extras.len().is_multiple_of(2) && extras.chunks(2).all(|p| p[0] == b"-d" && php.contains(&p[1]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::htaccess::parse;
    use crate::core::limits::Limits;
    use std::path::PathBuf;

    fn spec(kind: AppKind, program: &str, args: &[&str], env: &[(&str, &str)]) -> PoolSpec {
        PoolSpec {
            generation: 1,
            vhost: 0,
            kind,
            program: program.into(),
            args: args.iter().map(|a| a.as_bytes().to_vec()).collect(),
            workdir: "/home/a/www/app".into(),
            config_files: vec!["/home/a/www/app/.htaccess".into()],
            env: env.iter().map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec())).collect(),
            limits: Limits::DEFAULT,
            restart_file: None,
            log_file: None,
            userdir_user: None,
        }
    }

    fn file(text: &str) -> Source<'static> {
        Source { dir: Some(Path::new("/home/a/www/app")), lines: parse(text.as_bytes()) }
    }

    #[test]
    fn app_must_match_its_line() {
        let src = [file("SuFcgiApp app.py --port 1\nSuFcgiEnv MODE prod\n")];
        assert!(justify(&spec(AppKind::App, "/home/a/www/app/app.py", &["--port", "1"], &[("MODE", "prod")]), &src).is_ok());
        assert!(justify(&spec(AppKind::App, "/home/a/www/app/app.py", &["--evil"], &[]), &src).is_err());
        assert!(justify(&spec(AppKind::App, "/home/a/www/app/other.py", &["--port", "1"], &[]), &src).is_err());
        let e = justify(&spec(AppKind::App, "/home/a/www/app/app.py", &["--port", "1"], &[("PYTHONPATH", "/tmp")]), &src).unwrap_err();
        assert!(e.contains("PYTHONPATH"), "{e}");
    }

    #[test]
    fn authorizer_needs_its_own_line() {
        let src = [file("SuFcgiAuthorizer auth.py\nSuFcgiApp app.py\n")];
        assert!(justify(&spec(AppKind::Authorizer, "/home/a/www/app/auth.py", &[], &[]), &src).is_ok());
        assert!(justify(&spec(AppKind::Authorizer, "/home/a/www/app/auth.py", &["-x"], &[]), &src).is_err());
        // A SuFcgiApp line does not make its app an authorizer, nor the reverse.
        let e = justify(&spec(AppKind::Authorizer, "/home/a/www/app/app.py", &[], &[]), &src).unwrap_err();
        assert!(e.contains("SuFcgiAuthorizer"), "{e}");
        assert!(justify(&spec(AppKind::App, "/home/a/www/app/auth.py", &[], &[]), &src).is_err());
        assert!(justify(&spec(AppKind::Authorizer, "/home/a/www/app/off", &[], &[]), &[file("SuFcgiAuthorizer off\n")]).is_err());
        // Written by the host in server config for this directory: accepted too.
        let d = HostDirective { dir: Some(PathBuf::from("/home/a/www/app")), name: b"SuFcgiAuthorizer".to_vec(), args: vec![b"auth.py".to_vec()] };
        assert!(justify(&spec(AppKind::Authorizer, "/home/a/www/app/auth.py", &[], &[]), &[Source::from_host(&d)]).is_ok());
    }

    #[test]
    fn wrapper_arguments_are_the_customers() {
        let src = [file("SuFcgiWrapper /usr/bin/php-cgi .php\n")];
        assert!(justify(&spec(AppKind::Wrapper, "/usr/bin/php-cgi", &[], &[]), &src).is_ok());
        // The compromised-child attack: a host interpreter with arguments nobody wrote.
        assert!(justify(&spec(AppKind::Wrapper, "/usr/bin/python3", &["-c", "evil"], &[]), &src).is_err());
        assert!(justify(&spec(AppKind::Wrapper, "/usr/bin/php-cgi", &["-d", "x=1"], &[]), &src).is_err());
        // No configuring file at all: nothing is justified.
        assert!(justify(&spec(AppKind::Wrapper, "/usr/bin/php-cgi", &[], &[]), &[]).is_err());
    }

    #[test]
    fn php_values_back_d_arguments() {
        let src = [file("SuFcgiWrapper /usr/bin/php-cgi .php\nphp_value upload_max_filesize 64M\nphp_flag display_errors off\n")];
        let mut c = crate::core::directives::DirConfig::default();
        for l in &src[0].lines {
            let d = crate::core::directives::Directive::from_name(std::str::from_utf8(&l.name).unwrap());
            let args: Vec<&[u8]> = l.args.iter().map(Vec::as_slice).collect();
            if let Some(d) = d {
                crate::core::directives::apply(&mut c, d, &args, Path::new("/home/a/www/app"), None, &|_| true).unwrap();
            } else if let Some(p) = PhpDirective::from_name(std::str::from_utf8(&l.name).unwrap()) {
                php_ini::set(&mut c.php, php_ini::parse(p, &args).unwrap());
            }
        }
        let w = c.wrapper_for(b"index.php").unwrap().clone();
        let args = c.wrapper_args(&w);
        let args: Vec<&str> = args.iter().map(|a| std::str::from_utf8(a).unwrap()).collect();
        assert!(justify(&spec(AppKind::Wrapper, "/usr/bin/php-cgi", &args, &[]), &src).is_ok(), "the model's own args are justified: {args:?}");
        assert!(justify(&spec(AppKind::Wrapper, "/usr/bin/php-cgi", &["-d", "disable_functions=\"\""], &[]), &src).is_err());
    }

    #[test]
    fn host_lines_count_too() {
        let d = HostDirective { dir: Some(PathBuf::from("/home/a/www/app")), name: b"SuFcgiWrapper".to_vec(), args: vec![b"/usr/bin/php-cgi".to_vec(), b".php".to_vec()] };
        let src = [Source::from_host(&d)];
        assert!(justify(&spec(AppKind::Wrapper, "/usr/bin/php-cgi", &[], &[]), &src).is_ok());
        let elsewhere = HostDirective { dir: Some(PathBuf::from("/home/b/www")), ..d.clone() };
        assert!(justify(&spec(AppKind::Wrapper, "/usr/bin/php-cgi", &[], &[]), &[Source::from_host(&elsewhere)]).is_err());
    }

    #[test]
    fn host_wildcard_directories_cover_their_matches() {
        let d = HostDirective { dir: Some(PathBuf::from("/home/*/www/")), name: b"SuFcgiWrapper".to_vec(), args: vec![b"/usr/bin/php-cgi".to_vec(), b".php".to_vec()] };
        let mut s = spec(AppKind::Wrapper, "/usr/bin/php-cgi", &[], &[]);
        s.workdir = "/home/a/www/blog".into();
        assert!(justify(&s, &[Source::from_host(&d)]).is_ok());
        s.workdir = "/srv/www".into();
        assert!(justify(&s, &[Source::from_host(&d)]).is_err());
    }

    #[test]
    fn the_log_file_must_be_named_by_the_owner() {
        let src = [file("SuFcgiApp app.py\nSuFcgiLog ~/logs/app.log\n")];
        let mut s = spec(AppKind::App, "/home/a/www/app/app.py", &[], &[]);
        s.log_file = Some("~/logs/app.log".into());
        assert!(justify(&s, &src).is_ok());
        s.log_file = Some("/home/a/.bashrc".into());
        assert!(justify(&s, &src).unwrap_err().contains("SuFcgiLog"));
    }

    #[test]
    fn scripts_take_no_arguments() {
        assert!(justify(&spec(AppKind::Script, "/home/a/www/app/x.fcgi", &[], &[]), &[]).is_ok());
        assert!(justify(&spec(AppKind::Script, "/home/a/www/app/x.fcgi", &["-x"], &[]), &[]).is_err());
    }
}
