//! `php_value` / `php_flag` / `php_admin_value` / `php_admin_flag` for php-cgi pools.
//!
//! Sites written for mod_php set PHP ini values in `.htaccess`. Under sufcgi the
//! values become `-d NAME="VALUE"` arguments of the php-cgi workers of that
//! directory's `SuFcgiWrapper` pool, fixed when the worker starts: never a
//! per-request FastCGI parameter (`PHP_VALUE` would let one request change the
//! ini of a worker that later serves another directory). The arguments are part
//! of the pool key, so directories with different effective values get
//! different pools and directories with the same values share one.
//!
//! Rules (as mod_php where it has one):
//! - customer values are inherited down the tree and overridden by deeper ones;
//! - admin values (host config only) win over customer values of the same name,
//!   wherever either was written;
//! - `php_value NAME none` sets the empty string, `php_flag` takes on/off (or 1/0);
//! - values are literal strings (constants such as `E_ALL` are not evaluated,
//!   as under mod_php): every value is passed double-quoted with `\`, `"` and
//!   `$` escaped, so no value can end the ini line, start another entry or
//!   expand `${VAR}`, and a malformed value cannot make php-cgi drop the
//!   entries after it (an ini syntax error does);
//! - names the host forbids (built-in list below plus `SuFcgiPhpForbid`) are an
//!   error in customer files.

use std::path::Path;

/// Longest ini name / value accepted (PHP's own names are far shorter).
pub const MAX_NAME_LEN: usize = 128;
pub const MAX_VALUE_LEN: usize = 8192;

/// Names customers may never set, whatever the host adds (`SuFcgiPhpForbid`).
/// Compared without regard to case; `PREFIX.*` covers a whole section.
///
/// - the host's PHP sandbox policy: `open_basedir`, `disable_functions`, `disable_classes`;
/// - loading native code into the interpreter: extensions, FFI, opcache preloading;
/// - how mail leaves the server: `sendmail_path`, `mail.force_extra_parameters`;
/// - `allow_url_include` (remote code as include);
/// - how php-cgi maps a request to a script or trusts the server's variables:
///   `doc_root`, `user_dir`, `cgi.*`, `fastcgi.*`.
///
/// Deliberately allowed: `auto_prepend_file` / `auto_append_file` (mod_php allows
/// them in `.htaccess`, security plugins such as Wordfence rely on them, and the
/// file runs with the customer's own uid, which is the real boundary);
/// `memory_limit` / `max_execution_time` (sufcgi's own limits apply outside PHP).
pub const BUILTIN_FORBIDDEN: &[&str] = &[
    "open_basedir",
    "disable_functions",
    "disable_classes",
    "extension",
    "zend_extension",
    "extension_dir",
    "ffi.*",
    "opcache.preload",
    "opcache.preload_user",
    "sendmail_path",
    "mail.force_extra_parameters",
    "allow_url_include",
    "doc_root",
    "user_dir",
    "cgi.*",
    "fastcgi.*",
];

/// The four mod_php directives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhpDirective {
    Value,
    Flag,
    AdminValue,
    AdminFlag,
}

impl PhpDirective {
    pub const ALL: [PhpDirective; 4] =
        [PhpDirective::Value, PhpDirective::Flag, PhpDirective::AdminValue, PhpDirective::AdminFlag];

    pub fn name(self) -> &'static str {
        match self {
            PhpDirective::Value => "php_value",
            PhpDirective::Flag => "php_flag",
            PhpDirective::AdminValue => "php_admin_value",
            PhpDirective::AdminFlag => "php_admin_flag",
        }
    }

    /// Host-only: allowed in server config, vhosts and `<Directory>`, never in `.htaccess`.
    pub fn is_admin(self) -> bool {
        matches!(self, PhpDirective::AdminValue | PhpDirective::AdminFlag)
    }

    fn is_flag(self) -> bool {
        matches!(self, PhpDirective::Flag | PhpDirective::AdminFlag)
    }

    pub fn from_name(name: &str) -> Option<PhpDirective> {
        PhpDirective::ALL.into_iter().find(|d| d.name().eq_ignore_ascii_case(name))
    }
}

/// One effective ini setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhpSetting {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
    /// Set by `php_admin_*`: customer values of this name no longer apply.
    pub admin: bool,
}

/// Parse one directive's arguments (`NAME VALUE`). The error is the reason only.
pub fn parse(d: PhpDirective, args: &[&[u8]]) -> Result<PhpSetting, String> {
    let dn = d.name();
    let [name, value] = args else {
        return Err(if d.is_flag() {
            format!("{dn} takes exactly two arguments: NAME on|off")
        } else {
            format!("{dn} takes exactly two arguments: NAME VALUE (quote a value that contains spaces)")
        });
    };
    check_name(name).map_err(|e| format!("{dn}: {e}"))?;
    let value: Vec<u8> = if d.is_flag() {
        match value.to_ascii_lowercase().as_slice() {
            b"on" | b"1" => b"1".to_vec(),
            b"off" | b"0" => b"0".to_vec(),
            _ => return Err(format!("{dn} {}: the value must be on or off, not '{}'", lossy(name), lossy(value))),
        }
    } else {
        check_value(value).map_err(|e| format!("{dn} {}: {e}", lossy(name)))?;
        // mod_php's spelling of the empty string.
        if value.eq_ignore_ascii_case(b"none") {
            Vec::new()
        } else {
            value.to_vec()
        }
    };
    Ok(PhpSetting { name: name.to_vec(), value, admin: d.is_admin() })
}

/// A PHP ini name: a letter or `_`, then letters, digits, `_`, `.`, `-`.
fn check_name(n: &[u8]) -> Result<(), String> {
    let ok = match n.split_first() {
        Some((f, rest)) => {
            (f.is_ascii_alphabetic() || *f == b'_')
                && rest.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
        }
        None => false,
    };
    if !ok || n.len() > MAX_NAME_LEN {
        return Err(format!(
            "'{}' is not a PHP setting name (letters, digits, '_', '.', '-'; no spaces or '=')",
            lossy(n)
        ));
    }
    Ok(())
}

/// Any bytes but NUL and line ends: those would end the ini entry php-cgi builds.
fn check_value(v: &[u8]) -> Result<(), String> {
    if v.contains(&0) {
        return Err("the value contains a NUL byte".into());
    }
    if v.iter().any(|c| matches!(c, b'\n' | b'\r')) {
        return Err("the value contains a line break".into());
    }
    if v.len() > MAX_VALUE_LEN {
        return Err(format!("the value is longer than {MAX_VALUE_LEN} bytes"));
    }
    Ok(())
}

/// Whether `name` matches the built-in list or one of the host's patterns
/// (`NAME` or `PREFIX.*`, case-insensitive).
pub fn is_forbidden(name: &[u8], host: &[Vec<u8>]) -> bool {
    let matches = |pat: &[u8]| match pat.strip_suffix(b"*") {
        Some(prefix) => name.len() >= prefix.len() && name[..prefix.len()].eq_ignore_ascii_case(prefix),
        None => name.eq_ignore_ascii_case(pat),
    };
    BUILTIN_FORBIDDEN.iter().any(|p| matches(p.as_bytes())) || host.iter().any(|p| matches(p))
}

/// A `SuFcgiPhpForbid` pattern: a setting name, optionally ending in `.*`.
pub fn check_forbid_pattern(p: &[u8]) -> Result<(), String> {
    let name = p.strip_suffix(b".*").unwrap_or(p);
    check_name(name)
}

/// Record `s` in `list`: a later value replaces an earlier one of the same name,
/// except that a customer value never replaces an admin value.
pub fn set(list: &mut Vec<PhpSetting>, s: PhpSetting) {
    if let Some(old) = list.iter_mut().find(|o| o.name == s.name) {
        if s.admin || !old.admin {
            *old = s;
        }
    } else {
        list.push(s);
    }
}

/// Inheritance: `add` (deeper / later) over `base`, admin values kept.
pub fn merge(base: &[PhpSetting], add: &[PhpSetting]) -> Vec<PhpSetting> {
    let mut out = base.to_vec();
    for s in add {
        set(&mut out, s.clone());
    }
    out
}

/// Whether a wrapper command is PHP (its file name starts with `php`, e.g.
/// `php-cgi`, `php-cgi8.2`, `php8.2-cgi`): only those get ini arguments.
pub fn is_php_command(command: &Path) -> bool {
    command.file_name().is_some_and(|n| {
        use std::os::unix::ffi::OsStrExt;
        n.as_bytes().starts_with(b"php")
    })
}

/// `php_flag engine off` (or the admin form): mod_php serves such files as
/// plain files instead of running them; sufcgi does the same by not wrapping.
pub fn engine_off(list: &[PhpSetting]) -> bool {
    list.iter().any(|s| s.name.eq_ignore_ascii_case(b"engine") && is_false(&s.value))
}

/// PHP's reading of a boolean ini string.
fn is_false(v: &[u8]) -> bool {
    let l = v.to_ascii_lowercase();
    match l.as_slice() {
        b"on" | b"yes" | b"true" => false,
        b"" | b"off" | b"no" | b"false" | b"none" => true,
        _ => std::str::from_utf8(&l).ok().and_then(|s| s.trim().parse::<i64>().ok()).unwrap_or(0) == 0,
    }
}

/// The php-cgi arguments for `list`: `-d`, `NAME="VALUE"` per setting, sorted by
/// name so equal settings give equal argv (and so one pool) whatever the order
/// they were written in.
pub fn ini_args(list: &[PhpSetting]) -> Vec<Vec<u8>> {
    let mut sorted: Vec<&PhpSetting> = list.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = Vec::with_capacity(sorted.len() * 2);
    for s in sorted {
        out.push(b"-d".to_vec());
        out.push(define(&s.name, &s.value));
    }
    out
}

/// `NAME="VALUE"` as php-cgi's `-d` wants it: php-cgi adds the entry to its ini
/// text unchanged when the value starts with a quote, and inside double quotes
/// the ini scanner takes `\\`, `\"` and `\$` as escapes (checked against
/// php-cgi 8.2), so this reads back as exactly VALUE.
fn define(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut d = Vec::with_capacity(name.len() + value.len() + 4);
    d.extend_from_slice(name);
    d.extend_from_slice(b"=\"");
    for &c in value {
        if matches!(c, b'\\' | b'"' | b'$') {
            d.push(b'\\');
        }
        d.push(c);
    }
    d.push(b'"');
    d
}

/// The ini names a php-cgi argv sets with `-d` (`-d N=V`, `-dN=V`, `--define N=V`,
/// `--define=N=V`), to hold a customer's `SuFcgiWrapper` arguments to the same
/// forbidden list as `php_value`.
pub fn defined_names(args: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_slice();
        let def: Option<&[u8]> = if a == b"-d" || a == b"--define" {
            i += 1;
            args.get(i).map(|v| v.as_slice())
        } else if let Some(rest) = a.strip_prefix(b"--define=") {
            Some(rest)
        } else if a.starts_with(b"-d") && !a.starts_with(b"--") {
            Some(&a[2..])
        } else {
            None
        };
        if let Some(def) = def {
            let name = def.split(|c| *c == b'=').next().unwrap_or(def);
            out.push(name.trim_ascii().to_vec());
        }
        i += 1;
    }
    out
}

fn lossy(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(d: PhpDirective, n: &str, v: &str) -> Result<PhpSetting, String> {
        parse(d, &[n.as_bytes(), v.as_bytes()])
    }

    #[test]
    fn value_and_flag_parse() {
        let s = p(PhpDirective::Value, "upload_max_filesize", "64M").unwrap();
        assert_eq!((s.name.as_slice(), s.value.as_slice(), s.admin), (&b"upload_max_filesize"[..], &b"64M"[..], false));
        assert_eq!(p(PhpDirective::Flag, "display_errors", "Off").unwrap().value, b"0");
        assert_eq!(p(PhpDirective::Flag, "display_errors", "ON").unwrap().value, b"1");
        assert_eq!(p(PhpDirective::Flag, "x", "1").unwrap().value, b"1");
        assert!(p(PhpDirective::AdminFlag, "x", "on").unwrap().admin);
        assert_eq!(p(PhpDirective::Value, "error_log", "None").unwrap().value, b"", "mod_php's none");
        assert_eq!(p(PhpDirective::Value, "date.timezone", "").unwrap().value, b"");
    }

    #[test]
    fn malformed_lines_are_refused_with_a_reason() {
        let one = parse(PhpDirective::Value, &[b"memory_limit"]).unwrap_err();
        assert!(one.contains("two arguments"), "{one}");
        let three = parse(PhpDirective::Value, &[b"a", b"b", b"c"]).unwrap_err();
        assert!(three.contains("two arguments"), "{three}");
        assert!(p(PhpDirective::Value, "memory limit", "1").unwrap_err().contains("not a PHP setting name"));
        assert!(p(PhpDirective::Value, "a=b", "1").unwrap_err().contains("no spaces or '='"));
        assert!(p(PhpDirective::Value, "", "1").is_err());
        assert!(p(PhpDirective::Value, "1abc", "1").is_err());
        assert!(p(PhpDirective::Value, "x", "a\nb").unwrap_err().contains("line break"));
        assert!(p(PhpDirective::Value, "x", "a\rb").unwrap_err().contains("line break"));
        assert!(p(PhpDirective::Value, "x", "a\0b").unwrap_err().contains("NUL"));
        assert!(p(PhpDirective::Value, "x", &"y".repeat(MAX_VALUE_LEN + 1)).is_err());
        let f = p(PhpDirective::Flag, "display_errors", "maybe").unwrap_err();
        assert!(f.contains("on or off"), "{f}");
    }

    #[test]
    fn forbidden_names() {
        assert!(is_forbidden(b"open_basedir", &[]));
        assert!(is_forbidden(b"Disable_Functions", &[]), "case-insensitive");
        assert!(is_forbidden(b"cgi.fix_pathinfo", &[]));
        assert!(is_forbidden(b"ffi.enable", &[]));
        assert!(!is_forbidden(b"cgiX", &[]));
        assert!(!is_forbidden(b"upload_max_filesize", &[]));
        assert!(!is_forbidden(b"auto_prepend_file", &[]), "documented as allowed by default");
        let host = vec![b"auto_prepend_file".to_vec(), b"session.*".to_vec()];
        assert!(is_forbidden(b"auto_prepend_file", &host));
        assert!(is_forbidden(b"session.save_path", &host));
        assert!(!is_forbidden(b"sessionx", &host));
        assert!(check_forbid_pattern(b"session.*").is_ok());
        assert!(check_forbid_pattern(b"a b").is_err());
    }

    #[test]
    fn admin_values_win_over_customer_values() {
        let admin = p(PhpDirective::AdminValue, "memory_limit", "64M").unwrap();
        let cust = p(PhpDirective::Value, "memory_limit", "1G").unwrap();
        let mut l = vec![admin.clone()];
        set(&mut l, cust.clone());
        assert_eq!(l, vec![admin.clone()]);
        // Customer first (parent .htaccess), admin later (deeper <Directory>): admin.
        assert_eq!(merge(std::slice::from_ref(&cust), std::slice::from_ref(&admin)), vec![admin.clone()]);
        // Admin above, customer deeper: still admin.
        assert_eq!(merge(std::slice::from_ref(&admin), std::slice::from_ref(&cust)), vec![admin.clone()]);
        let admin2 = p(PhpDirective::AdminValue, "memory_limit", "32M").unwrap();
        assert_eq!(merge(&[admin], std::slice::from_ref(&admin2)), vec![admin2], "a deeper admin value replaces");
    }

    #[test]
    fn args_are_sorted_quoted_and_escaped() {
        let l = vec![
            p(PhpDirective::Value, "upload_max_filesize", "64M").unwrap(),
            p(PhpDirective::Flag, "display_errors", "off").unwrap(),
            p(PhpDirective::Value, "user_agent", r#"a\b"c${HOME}"#).unwrap(),
        ];
        let a = ini_args(&l);
        let s: Vec<String> = a.iter().map(|x| String::from_utf8(x.clone()).unwrap()).collect();
        assert_eq!(
            s,
            vec!["-d", r#"display_errors="0""#, "-d", r#"upload_max_filesize="64M""#, "-d", r#"user_agent="a\\b\"c\${HOME}""#]
        );
        let mut rev = l.clone();
        rev.reverse();
        assert_eq!(ini_args(&rev), a, "order written does not matter");
    }

    #[test]
    fn php_commands_and_engine_off() {
        assert!(is_php_command(Path::new("/usr/bin/php-cgi")));
        assert!(is_php_command(Path::new("/usr/bin/php8.2-cgi")));
        assert!(!is_php_command(Path::new("/usr/bin/python3")));
        assert!(!is_php_command(Path::new("/opt/php/bin/cgi")));
        assert!(engine_off(&[p(PhpDirective::Flag, "engine", "off").unwrap()]));
        assert!(engine_off(&[p(PhpDirective::Value, "Engine", "Off").unwrap()]));
        assert!(!engine_off(&[p(PhpDirective::Flag, "engine", "on").unwrap()]));
        assert!(!engine_off(&[]));
    }

    #[test]
    fn names_defined_by_wrapper_args() {
        let a: Vec<Vec<u8>> = ["-d", "open_basedir=/", "-dx=1", "--define", "y = 2", "--define=z=3", "-q", "--", "w"]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
        assert_eq!(defined_names(&a), vec![b"open_basedir".to_vec(), b"x".to_vec(), b"y".to_vec(), b"z".to_vec()]);
        assert!(PhpDirective::from_name("PHP_VALUE") == Some(PhpDirective::Value));
    }
}
