use super::*;

fn allow_all(_: &[u8]) -> bool {
    true
}

fn run(cfg: &mut DirConfig, d: Directive, args: &[&str]) -> Result<(), String> {
    let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
    apply(cfg, d, &a, Path::new("/home/a/www/app"), Some(Path::new("/home/a/www/app/.htaccess")), &allow_all)
}

#[test]
fn app_is_relative_to_its_directory() {
    let mut c = DirConfig::default();
    run(&mut c, Directive::App, &["app.py", "--x"]).unwrap();
    let def = c.app().unwrap();
    assert_eq!(def.program, Path::new("/home/a/www/app/app.py"));
    assert_eq!(def.args, vec![b"--x".to_vec()]);
    assert_eq!(c.sources, vec![PathBuf::from("/home/a/www/app/.htaccess")]);
    assert!(run(&mut c, Directive::App, &["/usr/bin/python3"]).unwrap_err().contains("relative"));
    assert!(run(&mut c, Directive::App, &["../other/app.py"]).unwrap_err().contains("leave"));
    assert!(run(&mut c, Directive::App, &[]).is_err());
}

#[test]
fn app_off_overrides_parent() {
    let mut parent = DirConfig::default();
    run(&mut parent, Directive::App, &["app.py"]).unwrap();
    let mut child = DirConfig::default();
    run(&mut child, Directive::App, &["Off"]).unwrap();
    let merged = merge(&parent, &child);
    assert_eq!(merged.app, Some(AppSetting::Off));
    assert!(merged.app().is_none());
    assert!(run(&mut child, Directive::App, &["off", "x"]).is_err());
}

#[test]
fn wrapper_needs_absolute_command_and_extension() {
    let mut c = DirConfig::default();
    run(&mut c, Directive::Wrapper, &["/usr/bin/php-cgi", ".php"]).unwrap();
    run(&mut c, Directive::Wrapper, &["/usr/bin/php-cgi", "-d", "x=1", ".php"]).unwrap();
    assert_eq!(c.wrappers.len(), 1, "same extension replaces");
    assert_eq!(c.wrappers[0].args, vec![b"-d".to_vec(), b"x=1".to_vec()]);
    assert!(c.wrapper_for(b"index.php").is_some());
    assert!(c.wrapper_for(b".php").is_none());
    assert!(c.wrapper_for(b"index.phps").is_none());
    assert!(run(&mut c, Directive::Wrapper, &["php-cgi", ".php"]).unwrap_err().contains("absolute"));
    assert!(run(&mut c, Directive::Wrapper, &["/usr/bin/php-cgi", "php"]).unwrap_err().contains("extension"));
    assert!(run(&mut c, Directive::Wrapper, &["/usr/bin/php-cgi"]).is_err());
}

#[test]
fn env_rules() {
    let mut c = DirConfig::default();
    run(&mut c, Directive::Env, &["APP_MODE", "prod"]).unwrap();
    run(&mut c, Directive::Env, &["APP_MODE", "dev"]).unwrap();
    assert_eq!(c.env, vec![(b"APP_MODE".to_vec(), b"dev".to_vec())]);
    assert!(run(&mut c, Directive::Env, &["1BAD", "x"]).unwrap_err().contains("not a valid"));
    assert!(run(&mut c, Directive::Env, &["A-B", "x"]).is_err());
    assert!(run(&mut c, Directive::Env, &["ONLYNAME"]).is_err());
    let deny = |n: &[u8]| !n.starts_with(b"LD_");
    let e = apply(&mut c, Directive::Env, &[b"LD_PRELOAD", b"/x.so"], Path::new("/d"), None, &deny).unwrap_err();
    assert!(e.contains("not allowed"), "{e}");
}

#[test]
fn max_workers_range() {
    let mut c = DirConfig::default();
    run(&mut c, Directive::MaxWorkers, &["8"]).unwrap();
    assert_eq!(c.limits.max_workers, Some(8));
    assert!(run(&mut c, Directive::MaxWorkers, &["lots"]).unwrap_err().contains("not a number"));
    assert!(run(&mut c, Directive::MaxWorkers, &["0"]).is_err());
    assert!(run(&mut c, Directive::MaxWorkers, &["99999"]).is_err());
    assert!(run(&mut c, Directive::MaxWorkers, &["65"]).is_err(), "above the scoreboard's per-pool maximum");
    assert!(run(&mut c, Directive::MaxWorkers, &["-1"]).is_err());
}

#[test]
fn merge_env_and_wrappers_by_key() {
    let mut a = DirConfig::default();
    run(&mut a, Directive::Env, &["X", "1"]).unwrap();
    run(&mut a, Directive::Env, &["Y", "1"]).unwrap();
    run(&mut a, Directive::Wrapper, &["/usr/bin/php-cgi", ".php"]).unwrap();
    run(&mut a, Directive::MaxWorkers, &["3"]).unwrap();
    let mut b = DirConfig::default();
    run(&mut b, Directive::Env, &["Y", "2"]).unwrap();
    let m = merge(&a, &b);
    assert_eq!(m.env, vec![(b"X".to_vec(), b"1".to_vec()), (b"Y".to_vec(), b"2".to_vec())]);
    assert_eq!(m.limits.max_workers, Some(3));
    assert_eq!(m.wrappers.len(), 1);
}

#[test]
fn lifecycle_directives() {
    let mut c = DirConfig::default();
    run(&mut c, Directive::MinWorkers, &["0"]).unwrap();
    run(&mut c, Directive::IdleTimeout, &["30"]).unwrap();
    run(&mut c, Directive::MaxRequests, &["500"]).unwrap();
    run(&mut c, Directive::QueueLimit, &["0"]).unwrap();
    run(&mut c, Directive::QueueTimeout, &["5"]).unwrap();
    run(&mut c, Directive::RequestTimeout, &["20"]).unwrap();
    run(&mut c, Directive::MemoryLimit, &["256M"]).unwrap();
    run(&mut c, Directive::BusyPage, &["errors/busy.html"]).unwrap();
    run(&mut c, Directive::RestartFile, &["tmp/restart.txt"]).unwrap();
    run(&mut c, Directive::Log, &["logs/app.log"]).unwrap();
    let l = c.limits.resolve();
    assert_eq!((l.min_workers, l.idle_timeout, l.max_requests, l.queue_limit), (0, 30, 500, 0));
    assert_eq!((l.queue_timeout, l.request_timeout, l.memory_limit), (5, 20, 256 << 20));
    assert_eq!(l.max_workers, Limits::DEFAULT.max_workers, "unset fields take the default");
    assert_eq!(c.busy_page.as_deref(), Some(Path::new("/home/a/www/app/errors/busy.html")));
    assert_eq!(c.log_file.as_deref(), Some(Path::new("logs/app.log")));
    assert!(run(&mut c, Directive::IdleTimeout, &["0"]).is_err());
    assert!(run(&mut c, Directive::MemoryLimit, &["1M"]).unwrap_err().contains("minimum"));
    assert!(run(&mut c, Directive::MemoryLimit, &["lots"]).is_err());
    // SuFcgiLog: wherever the owner can create a file (checked when it is opened, as them).
    for ok in ["/var/log/customers/a.log", "../logs/app.log", "~/logs/app.log", "app.log"] {
        run(&mut c, Directive::Log, &[ok]).unwrap();
        assert_eq!(c.log_file.as_deref(), Some(Path::new(ok)), "kept as written");
    }
    for bad in ["~bob/x.log", "logs/", "~/", "..", "logs/..", ""] {
        assert!(run(&mut c, Directive::Log, &[bad]).is_err(), "{bad:?}");
    }
    run(&mut c, Directive::SlowLog, &["5"]).unwrap();
    run(&mut c, Directive::XSendfile, &["On"]).unwrap();
    assert_eq!((c.limits.resolve().slow_log, c.limits.resolve().x_sendfile), (5, true));
    assert!(run(&mut c, Directive::XSendfile, &["yes"]).is_err());
    assert!(run(&mut c, Directive::SlowLog, &["-1"]).is_err());
    let mut ceil = Limits::DEFAULT_CEILINGS;
    set_ceiling(&mut ceil, b"XSendfile", b"off").unwrap();
    set_ceiling(&mut ceil, b"slowlog", b"0").unwrap();
    assert_eq!((ceil.x_sendfile, ceil.slow_log), (false, 0));
    assert!(set_ceiling(&mut ceil, b"XSendfile", b"maybe").is_err());
    assert!(run(&mut c, Directive::BusyPage, &["../busy.html"]).is_err());
    let mut child = DirConfig::default();
    run(&mut child, Directive::QueueLimit, &["7"]).unwrap();
    let m = merge(&c, &child);
    assert_eq!(m.limits.queue_limit, Some(7));
    assert_eq!(m.limits.request_timeout, Some(20), "inherited");
}

fn php(cfg: &mut DirConfig, d: PhpDirective, n: &str, v: &str, forbid: &[&str]) -> Result<(), String> {
    let host: Vec<Vec<u8>> = forbid.iter().map(|f| f.as_bytes().to_vec()).collect();
    let forbidden = |name: &[u8]| php_ini::is_forbidden(name, &host);
    apply_php(cfg, d, &[n.as_bytes(), v.as_bytes()], Some(Path::new("/home/a/www/app/.htaccess")), &forbidden)
}

fn strs(v: &[Vec<u8>]) -> Vec<String> {
    v.iter().map(|x| String::from_utf8(x.clone()).unwrap()).collect()
}

#[test]
fn php_values_become_wrapper_args_for_php_only() {
    let mut c = DirConfig::default();
    run(&mut c, Directive::Wrapper, &["/usr/bin/php-cgi", "-q", ".php"]).unwrap();
    run(&mut c, Directive::Wrapper, &["/usr/bin/python3", ".py"]).unwrap();
    php(&mut c, PhpDirective::Value, "upload_max_filesize", "64M", &[]).unwrap();
    php(&mut c, PhpDirective::Flag, "display_errors", "off", &[]).unwrap();
    assert_eq!(c.sources, vec![PathBuf::from("/home/a/www/app/.htaccess")]);
    let w = c.wrapper_for(b"index.php").unwrap().clone();
    assert_eq!(strs(&c.wrapper_args(&w)), ["-q", "-d", "display_errors=\"0\"", "-d", "upload_max_filesize=\"64M\""]);
    let py = c.wrapper_for(b"x.py").unwrap().clone();
    assert!(c.wrapper_args(&py).is_empty(), "only php commands get ini arguments");
}

#[test]
fn php_subdirectory_inherits_and_overrides() {
    let mut parent = DirConfig::default();
    run(&mut parent, Directive::Wrapper, &["/usr/bin/php-cgi", ".php"]).unwrap();
    php(&mut parent, PhpDirective::Value, "memory_limit", "64M", &[]).unwrap();
    php(&mut parent, PhpDirective::Value, "max_input_vars", "2000", &[]).unwrap();
    let mut child = DirConfig::default();
    php(&mut child, PhpDirective::Value, "memory_limit", "96M", &[]).unwrap();
    let m = merge(&parent, &child);
    let w = m.wrappers[0].clone();
    assert_eq!(strs(&m.wrapper_args(&w)), ["-d", "max_input_vars=\"2000\"", "-d", "memory_limit=\"96M\""]);
    // Same effective settings written in another order: identical argv, one pool.
    let mut other = DirConfig::default();
    run(&mut other, Directive::Wrapper, &["/usr/bin/php-cgi", ".php"]).unwrap();
    php(&mut other, PhpDirective::Value, "memory_limit", "96M", &[]).unwrap();
    php(&mut other, PhpDirective::Value, "max_input_vars", "2000", &[]).unwrap();
    assert_eq!(other.wrapper_args(&other.wrappers[0].clone()), m.wrapper_args(&w));
}

#[test]
fn php_admin_rules() {
    // Host <Directory> (no source): admin allowed, forbidden names allowed.
    let mut host = DirConfig::default();
    let none = |_: &[u8]| true;
    apply_php(&mut host, PhpDirective::AdminValue, &[b"memory_limit", b"32M"], None, &none).unwrap();
    apply_php(&mut host, PhpDirective::AdminValue, &[b"open_basedir", b"/home/a"], None, &none).unwrap();
    assert!(host.sources.is_empty());
    let mut cust = DirConfig::default();
    run(&mut cust, Directive::Wrapper, &["/usr/bin/php-cgi", ".php"]).unwrap();
    php(&mut cust, PhpDirective::Value, "memory_limit", "1G", &[]).unwrap();
    let m = merge(&host, &cust);
    let args = strs(&m.wrapper_args(&m.wrappers[0].clone()));
    assert_eq!(args, ["-d", "memory_limit=\"32M\"", "-d", "open_basedir=\"/home/a\""], "admin wins");
    // Admin forms in a customer file are refused.
    let e = php(&mut cust, PhpDirective::AdminValue, "memory_limit", "1G", &[]).unwrap_err();
    assert!(e.contains("server configuration only"), "{e}");
    assert!(php(&mut cust, PhpDirective::AdminFlag, "display_errors", "on", &[]).is_err());
}

#[test]
fn php_forbidden_names_in_customer_files() {
    let mut c = DirConfig::default();
    let e = php(&mut c, PhpDirective::Value, "open_basedir", "/", &[]).unwrap_err();
    assert!(e.contains("'open_basedir' is not allowed"), "{e}");
    assert!(php(&mut c, PhpDirective::Value, "disable_functions", "", &[]).is_err());
    assert!(php(&mut c, PhpDirective::Flag, "cgi.fix_pathinfo", "on", &[]).is_err());
    php(&mut c, PhpDirective::Value, "auto_prepend_file", "/home/a/waf.php", &[]).unwrap();
    assert!(php(&mut c, PhpDirective::Value, "auto_prepend_file", "/x", &["auto_prepend_file"]).is_err());
    assert!(c.sources.len() == 1 && c.php.len() == 1, "a refused line changes nothing");
    // The same policy holds for -d on a customer's SuFcgiWrapper line.
    run(&mut c, Directive::Wrapper, &["/usr/bin/php-cgi", "-d", "open_basedir=/", ".php"]).unwrap();
    let forbidden = |n: &[u8]| php_ini::is_forbidden(n, &[]);
    let e = check_wrapper_php_args(&c.wrappers[0], &forbidden).unwrap_err();
    assert!(e.contains("open_basedir"), "{e}");
    run(&mut c, Directive::Wrapper, &["/usr/bin/php-cgi", "-d", "memory_limit=1G", ".php"]).unwrap();
    check_wrapper_php_args(&c.wrappers[0], &forbidden).unwrap();
}

#[test]
fn php_engine_off_unwraps_php_files() {
    let mut parent = DirConfig::default();
    run(&mut parent, Directive::Wrapper, &["/usr/bin/php-cgi", ".php"]).unwrap();
    run(&mut parent, Directive::Wrapper, &["/usr/bin/perl", ".pl"]).unwrap();
    let mut uploads = DirConfig::default();
    php(&mut uploads, PhpDirective::Flag, "engine", "off", &[]).unwrap();
    let m = merge(&parent, &uploads);
    assert!(m.wrapper_for(b"shell.php").is_none(), "served as a plain file, as mod_php does");
    assert!(m.wrapper_for(b"x.pl").is_some());
    assert!(parent.wrapper_for(b"index.php").is_some());
}

#[test]
fn a_wrappers_pool_and_configuring_directory_for_a_script() {
    let w = |dir: &str| Wrapper { ext: b".php".to_vec(), command: "/usr/bin/php-cgi".into(), args: vec![], dir: dir.into() };
    let script = Path::new("/home/a/www/blog/up/x.php");
    let plain = w("/home/a/www");
    assert_eq!(plain.workdir_for(script), Path::new("/home/a/www"));
    assert_eq!(plain.config_dir_for(script), Path::new("/home/a/www"));
    // A host's wildcard <Directory>: the pool runs in the script's own
    // directory; the directory the pattern matched configured it.
    let wild = w("/home/*/www");
    assert_eq!(wild.workdir_for(script), Path::new("/home/a/www/blog/up"));
    assert_eq!(wild.config_dir_for(script), Path::new("/home/a/www"));
    assert_eq!(w("/home/?/w[w]w/blog").config_dir_for(script), Path::new("/home/a/www/blog"));
}

#[test]
fn authorizer_directive_and_off() {
    let mut parent = DirConfig::default();
    run(&mut parent, Directive::Authorizer, &["auth.py"]).unwrap();
    let def = parent.authorizer().unwrap();
    assert_eq!(def.program, Path::new("/home/a/www/app/auth.py"));
    assert_eq!(def.dir, Path::new("/home/a/www/app"));
    assert!(parent.app().is_none(), "an authorizer is not a responder");
    assert_eq!(parent.sources, vec![PathBuf::from("/home/a/www/app/.htaccess")]);
    assert!(run(&mut parent, Directive::Authorizer, &["/usr/bin/auth"]).unwrap_err().contains("relative"));
    assert!(run(&mut parent, Directive::Authorizer, &["../auth.py"]).is_err());
    assert!(run(&mut parent, Directive::Authorizer, &[]).is_err());
    assert!(run(&mut parent, Directive::Authorizer, &["off", "x"]).is_err());
    // Inherited by a subdirectory that says nothing; lifted by `off`.
    let child = DirConfig::default();
    assert_eq!(merge(&parent, &child).authorizer().map(|d| d.program.clone()), Some(PathBuf::from("/home/a/www/app/auth.py")));
    let mut public = DirConfig::default();
    run(&mut public, Directive::Authorizer, &["Off"]).unwrap();
    let m = merge(&parent, &public);
    assert_eq!(m.authorizer, Some(AppSetting::Off));
    assert!(m.authorizer().is_none());
    assert_eq!(Directive::from_name("sufcgiauthorizer"), Some(Directive::Authorizer));
}

#[test]
fn names_are_case_insensitive() {
    assert_eq!(Directive::from_name("sufcgiapp"), Some(Directive::App));
    assert_eq!(Directive::from_name("SuFcgiNope"), None);
}
