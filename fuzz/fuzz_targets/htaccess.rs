//! Arbitrary `.htaccess` text through the tokenizer and the directive model:
//! every line either applies or is refused with a reason; nothing panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use sufcgi::core::directives::{apply, DirConfig, Directive};
use sufcgi::core::htaccess::parse;

fuzz_target!(|data: &[u8]| {
    let mut cfg = DirConfig::default();
    for line in parse(data) {
        let Ok(name) = std::str::from_utf8(&line.name) else { continue };
        let Some(d) = Directive::from_name(name) else { continue };
        let args: Vec<&[u8]> = line.args.iter().map(Vec::as_slice).collect();
        let _ = apply(&mut cfg, d, &args, Path::new("/home/a/www"), Some(Path::new("/home/a/www/.htaccess")), &|_| true);
    }
    let _ = cfg.limits.resolve();
});
