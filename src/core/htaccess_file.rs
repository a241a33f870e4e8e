//! One customer `.htaccess` file applied to the directive model, for servers
//! that do not read `.htaccess` themselves (lighttpd). Apache applies the same
//! directives one by one through its command table; this gives the same
//! result and the same refusals, with the line each came from.
//!
//! Only what sufcgi owns is taken: `SuFcgi*` lines, `php_*` lines and
//! `AddHandler`/`RemoveHandler` for `sufcgi-script`. Every other Apache
//! directive is left alone (the server does not implement them). A host-only
//! `SuFcgi*` directive, an unknown `SuFcgi*` name, or a bad value fails the
//! whole file, as a bad line fails a whole `.htaccess` under Apache.

use crate::core::directives::{self, DirConfig, Directive};
use crate::core::htaccess;
use crate::core::php_ini::PhpDirective;
use std::path::Path;

/// The handler name `AddHandler` maps script extensions to.
pub const SCRIPT_HANDLER: &[u8] = b"sufcgi-script";

/// Host-only directives: a customer file naming them is refused.
pub const HOST_ONLY: &[&str] = &[
    "SuFcgiOwner",
    "SuFcgiMinUid",
    "SuFcgiMinGid",
    "SuFcgiSocketDir",
    "SuFcgiCeiling",
    "SuFcgiMaxWorkersPerOwner",
    "SuFcgiMaxWorkersTotal",
    "SuFcgiBlockEnv",
    "SuFcgiPhpForbid",
];

/// What one directory's file says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layer {
    pub cfg: DirConfig,
    /// `AddHandler sufcgi-script EXT…` (lowercase, with the dot).
    pub script_exts: Vec<Vec<u8>>,
    /// `RemoveHandler EXT…`: taken out of what outer directories added.
    pub removed_exts: Vec<Vec<u8>>,
    /// `SetHandler NAME` (lowercase; `none` resets), for this directory and
    /// below unless a deeper one sets another.
    pub handler: Option<Vec<u8>>,
}

/// A refused line: the caller logs "FILE:LINE: reason" and answers 500.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub line: usize,
    pub reason: String,
}

/// The host's policy for customer files.
pub struct Policy<'a> {
    pub env_allowed: &'a dyn Fn(&[u8]) -> bool,
    pub php_forbidden: &'a dyn Fn(&[u8]) -> bool,
}

fn ext_of(arg: &[u8]) -> Vec<u8> {
    let lower = arg.to_ascii_lowercase();
    if lower.starts_with(b".") {
        lower
    } else {
        [b".".as_slice(), &lower].concat()
    }
}

/// Apply `text`, the `.htaccess` of `dir` read from `source`.
pub fn apply(text: &[u8], dir: &Path, source: &Path, policy: &Policy<'_>) -> Result<Layer, LineError> {
    let mut layer = Layer::default();
    for line in htaccess::parse(text) {
        let fail = |reason: String| LineError { line: line.number, reason };
        let name = String::from_utf8_lossy(&line.name).into_owned();
        let args: Vec<&[u8]> = line.args.iter().map(Vec::as_slice).collect();
        if let Some(d) = Directive::from_name(&name) {
            if d == Directive::Wrapper {
                // As under Apache: checked before applying, so the customer's
                // own -d arguments obey the php_value policy.
                let mut probe = DirConfig::default();
                if directives::apply(&mut probe, d, &args, dir, None, policy.env_allowed).is_ok() {
                    if let Some(w) = probe.wrappers.first() {
                        directives::check_wrapper_php_args(w, policy.php_forbidden).map_err(fail)?;
                    }
                }
            }
            directives::apply(&mut layer.cfg, d, &args, dir, Some(source), policy.env_allowed).map_err(fail)?;
        } else if let Some(d) = PhpDirective::from_name(&name) {
            directives::apply_php(&mut layer.cfg, d, &args, Some(source), policy.php_forbidden).map_err(fail)?;
        } else if HOST_ONLY.iter().any(|h| h.eq_ignore_ascii_case(&name)) {
            return Err(fail(format!("{name} not allowed here: a host setting, not for .htaccess")));
        } else if line.name.len() > 6 && line.name[..6].eq_ignore_ascii_case(b"SuFcgi") {
            // (Bytes, not the lossy string: a name may not be UTF-8.)
            return Err(fail(format!("Invalid command '{name}', perhaps misspelled")));
        } else if line.is("AddHandler") {
            let Some((handler, exts)) = args.split_first() else {
                return Err(fail("AddHandler requires at least two arguments".into()));
            };
            if handler.eq_ignore_ascii_case(SCRIPT_HANDLER) {
                if exts.is_empty() {
                    return Err(fail("AddHandler requires at least two arguments".into()));
                }
                for e in exts {
                    let e = ext_of(e);
                    layer.removed_exts.retain(|x| *x != e);
                    if !layer.script_exts.contains(&e) {
                        layer.script_exts.push(e);
                    }
                }
            } else {
                // Another handler for these extensions: ours no longer applies.
                for e in exts {
                    let e = ext_of(e);
                    layer.script_exts.retain(|x| *x != e);
                    layer.removed_exts.push(e);
                }
            }
        } else if line.is("SetHandler") {
            // (Malformed, it is Apache's to refuse; ignored here, as other
            // directives sufcgi does not own.)
            if let [h] = args.as_slice() {
                layer.handler = Some(h.to_ascii_lowercase());
            }
        } else if line.is("RemoveHandler") {
            for e in &args {
                let e = ext_of(e);
                layer.script_exts.retain(|x| *x != e);
                layer.removed_exts.push(e);
            }
        }
    }
    Ok(layer)
}

/// A deeper directory's layer over what its parents say.
pub fn merge(base: &Layer, add: &Layer) -> Layer {
    let mut exts: Vec<Vec<u8>> = base.script_exts.iter().filter(|e| !add.removed_exts.contains(e)).cloned().collect();
    for e in &add.script_exts {
        if !exts.contains(e) {
            exts.push(e.clone());
        }
    }
    let handler = add.handler.clone().or_else(|| base.handler.clone());
    Layer { cfg: directives::merge(&base.cfg, &add.cfg), script_exts: exts, removed_exts: Vec::new(), handler }
}

/// The handler name of the status page.
pub const STATUS_HANDLER: &[u8] = b"sufcgi-status";
/// The same page as Prometheus text (metrics.rs).
pub const METRICS_HANDLER: &[u8] = b"sufcgi-metrics";

impl Layer {
    /// Whether `SetHandler sufcgi-status` is in force here.
    pub fn is_status_page(&self) -> bool {
        self.handler.as_deref() == Some(STATUS_HANDLER)
    }

    /// Whether `SetHandler sufcgi-metrics` is in force here.
    pub fn is_metrics_page(&self) -> bool {
        self.handler.as_deref() == Some(METRICS_HANDLER)
    }

    /// Whether `AddHandler sufcgi-script` covers this file name (the last
    /// extension, case-insensitively, as mod_mime matches it).
    pub fn is_script(&self, file_name: &[u8]) -> bool {
        let base = file_name.rsplit(|&c| c == b'/').next().unwrap_or(file_name);
        match base.iter().rposition(|&c| c == b'.') {
            Some(i) if i > 0 => self.script_exts.contains(&base[i..].to_ascii_lowercase()),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str) -> Result<Layer, LineError> {
        let allow = |_: &[u8]| true;
        let forbid = |n: &[u8]| n == b"disable_functions";
        let policy = Policy { env_allowed: &allow, php_forbidden: &forbid };
        apply(text.as_bytes(), Path::new("/home/a/www/app"), Path::new("/home/a/www/app/.htaccess"), &policy)
    }

    #[test]
    fn takes_sufcgi_lines_and_ignores_other_apache_directives() {
        let l = run("RewriteEngine On\nOptions -Indexes\nSuFcgiApp app.py --x\nSuFcgiEnv A 1\nSuFcgiMaxWorkers 3\n").unwrap();
        let app = l.cfg.app().unwrap();
        assert_eq!(app.program, Path::new("/home/a/www/app/app.py"));
        assert_eq!(app.args, vec![b"--x".to_vec()]);
        assert_eq!(l.cfg.env, vec![(b"A".to_vec(), b"1".to_vec())]);
        assert_eq!(l.cfg.limits.max_workers, Some(3));
        assert_eq!(l.cfg.sources, vec![Path::new("/home/a/www/app/.htaccess").to_path_buf()]);
    }

    #[test]
    fn bad_lines_name_their_line() {
        assert_eq!(run("# c\n\nSuFcgiMaxWorkers lots\n").unwrap_err().line, 3);
        let e = run("SuFcgiOwner bob\n").unwrap_err();
        assert_eq!(e.line, 1);
        assert!(e.reason.contains("host setting"), "{}", e.reason);
        assert!(run("SuFcgiFrobnicate 1\n").unwrap_err().reason.contains("Invalid command 'SuFcgiFrobnicate'"));
        assert!(run("php_admin_value memory_limit 1G\n").unwrap_err().reason.contains("server configuration only"));
        assert!(run("php_value disable_functions x\n").unwrap_err().reason.contains("not allowed"));
        assert!(run("SuFcgiWrapper /usr/bin/php-cgi -d disable_functions= .php\n").is_err());
        assert!(run("AddHandler sufcgi-script\n").is_err());
        // Found by the fuzzer: a name with a multi-byte character at byte 6.
        assert!(run("SuFcgi\u{e9}x 1\n").unwrap_err().reason.contains("Invalid command"));
        assert!(run("SuFcg\u{e9} 1\n").is_ok());
    }

    #[test]
    fn addhandler_extensions_and_inheritance() {
        let outer = run("AddHandler sufcgi-script .fcgi FCGI2\nAddHandler cgi-script .cgi\n").unwrap();
        assert!(outer.is_script(b"/x/env.fcgi"));
        assert!(outer.is_script(b"/x/ENV.FCGI2"));
        assert!(!outer.is_script(b"/x/env.cgi"));
        assert!(!outer.is_script(b"/x/.fcgi"));
        assert!(!outer.is_script(b"/x/fcgi"));
        let inner = run("RemoveHandler .fcgi\nAddHandler sufcgi-script .pl\n").unwrap();
        let m = merge(&outer, &inner);
        assert!(!m.is_script(b"a.fcgi"));
        assert!(m.is_script(b"a.fcgi2"));
        assert!(m.is_script(b"a.pl"));
        let again = merge(&m, &run("AddHandler sufcgi-script .fcgi\n").unwrap());
        assert!(again.is_script(b"a.fcgi"));
    }

    #[test]
    fn sethandler_status_is_inherited_until_a_deeper_one_resets_it() {
        let outer = run("SetHandler sufcgi-status\n").unwrap();
        assert!(outer.is_status_page());
        assert!(merge(&outer, &run("# nothing\n").unwrap()).is_status_page());
        assert!(!merge(&outer, &run("SetHandler None\n").unwrap()).is_status_page());
        assert!(!merge(&outer, &run("SetHandler cgi-script\n").unwrap()).is_status_page());
        assert!(run("SetHandler SUFCGI-Status\n").unwrap().is_status_page());
        let m = run("SetHandler sufcgi-metrics\n").unwrap();
        assert!(m.is_metrics_page() && !m.is_status_page());
        assert!(!run("SetHandler\n").unwrap().is_status_page());
    }

    #[test]
    fn app_off_in_a_deeper_directory_wins() {
        let outer = run("SuFcgiApp app.py\n").unwrap();
        let inner = apply(b"SuFcgiApp off\n", Path::new("/home/a/www/app/static"), Path::new("/home/a/www/app/static/.htaccess"), &Policy {
            env_allowed: &|_| true,
            php_forbidden: &|_| false,
        })
        .unwrap();
        assert!(merge(&outer, &inner).cfg.app().is_none());
        assert!(outer.cfg.app().is_some());
    }
}
