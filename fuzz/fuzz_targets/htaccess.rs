//! Arbitrary `.htaccess` text through the tokenizer and the directive model:
//! every line either applies or is refused with a reason; nothing panics
//! (line by line, as Apache applies them, and as a whole file, as the lighttpd
//! plugin does).
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use sufcgi::core::directives::{apply, DirConfig, Directive};
use sufcgi::core::htaccess::parse;
use sufcgi::core::htaccess_file::{self, Policy};

fuzz_target!(|data: &[u8]| {
    let mut cfg = DirConfig::default();
    for line in parse(data) {
        let Ok(name) = std::str::from_utf8(&line.name) else { continue };
        let Some(d) = Directive::from_name(name) else { continue };
        let args: Vec<&[u8]> = line.args.iter().map(Vec::as_slice).collect();
        let _ = apply(&mut cfg, d, &args, Path::new("/home/a/www"), Some(Path::new("/home/a/www/.htaccess")), &|_| true);
    }
    let _ = cfg.limits.resolve();
    // The whole-file applier the lighttpd plugin uses (host-only names, AddHandler…).
    let policy = Policy { env_allowed: &|_| true, php_forbidden: &|n| n == b"disable_functions" };
    if let Ok(layer) = htaccess_file::apply(data, Path::new("/home/a/www"), Path::new("/home/a/www/.htaccess"), &policy) {
        let merged = htaccess_file::merge(&layer, &layer);
        let _ = merged.is_script(b"/home/a/www/x.fcgi");
    }
});
