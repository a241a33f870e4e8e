//! Generates the raw httpd/APR bindings from the *installed* headers, with the
//! include paths and defines httpd itself reports, so struct layouts match the
//! binary that loads the module.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn query(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn apxs() -> String {
    env::var("APXS").unwrap_or_else(|_| "apxs".to_string())
}

/// Compiler flags httpd was built with that bindgen needs: -I and -D only.
fn httpd_clang_args() -> Vec<String> {
    let apxs = apxs();
    let mut args = Vec::new();
    let includedir = query(&apxs, &["-q", "INCLUDEDIR"])
        .unwrap_or_else(|| panic!("`{apxs} -q INCLUDEDIR` failed: install apache2-dev (or set APXS)"));
    args.push(format!("-I{includedir}"));
    let mut flags = String::new();
    for var in ["EXTRA_CPPFLAGS", "EXTRA_INCLUDES", "CFLAGS", "EXTRA_CFLAGS"] {
        if let Some(v) = query(&apxs, &["-q", var]) {
            flags.push(' ');
            flags.push_str(&v);
        }
    }
    let apr_config = query(&apxs, &["-q", "APR_CONFIG"]).filter(|s| !s.is_empty()).unwrap_or_else(|| "apr-1-config".into());
    for q in ["--includes", "--cppflags"] {
        if let Some(v) = query(&apr_config, &[q]) {
            flags.push(' ');
            flags.push_str(&v);
        }
    }
    let apu_config = query(&apxs, &["-q", "APU_CONFIG"]).filter(|s| !s.is_empty()).unwrap_or_else(|| "apu-1-config".into());
    if let Some(v) = query(&apu_config, &["--includes"]) {
        flags.push(' ');
        flags.push_str(&v);
    }
    for f in flags.split_whitespace() {
        if (f.starts_with("-I") || f.starts_with("-D")) && !args.iter().any(|a| a == f) {
            args.push(f.to_string());
        }
    }
    args
}

fn main() {
    println!("cargo:rerun-if-changed=apache-headers/wrapper.h");
    println!("cargo:rerun-if-env-changed=APXS");
    let apache = env::var_os("CARGO_FEATURE_APACHE").is_some();
    let lighttpd = env::var_os("CARGO_FEATURE_LIGHTTPD").is_some();
    if apache && lighttpd {
        // One cdylib per server: each references symbols only its server
        // exports, so a library with both loads into neither. Both at once is
        // for checking the whole crate (`cargo clippy --all-features`).
        println!("cargo:warning=both the apache and lighttpd features: a library for checking only, loadable by neither server");
    }
    if lighttpd {
        lighttpd_bindings();
    }
    if !apache {
        return;
    }
    let clang_args = httpd_clang_args();
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));

    let bindings = bindgen::Builder::default()
        .header("apache-headers/wrapper.h")
        .clang_args(&clang_args)
        .allowlist_function("ap_.*|apr_.*|unixd_.*")
        .allowlist_type("request_rec|server_rec|conn_rec|cmd_parms|command_rec|module|process_rec|ap_directive_t|core_server_config|core_dir_config|apr_.*|ap_.*")
        .allowlist_var("AP_.*|APR_.*|APLOG_.*|MODULE_MAGIC_.*|HTTP_.*|OK|DECLINED|DONE|M_.*|REQUEST_.*|OR_.*|ACCESS_CONF|RSRC_CONF|NOT_IN_.*|GLOBAL_ONLY|ap_server_conf|ap_unixd_config|ap_server_root|core_module|ap_conftree")
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .expect("bindgen over apache-headers/wrapper.h failed");
    bindings.write_to_file(out.join("apache_ffi.rs")).expect("write bindings");

}

/// The lighttpd source tree `make lighttpd-src` unpacked for the installed version.
fn lighttpd_src() -> PathBuf {
    println!("cargo:rerun-if-env-changed=LIGHTTPD_SRC");
    let dir = env::var("LIGHTTPD_SRC").map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR")).join("build/lighttpd-src")
    });
    if !dir.join("src/plugin.h").is_file() {
        panic!("{}: no lighttpd sources; run `make lighttpd-src` (fetches Debian's source package for the installed lighttpd)", dir.display());
    }
    dir
}

/// "1.4.69" from configure.ac's AC_INIT.
fn lighttpd_source_version(src: &std::path::Path) -> String {
    let ac = std::fs::read_to_string(src.join("configure.ac")).expect("read configure.ac");
    let line = ac.lines().find(|l| l.starts_with("AC_INIT(")).expect("AC_INIT in configure.ac");
    line.split(['[', ']']).nth(3).expect("version in AC_INIT").to_string()
}

/// configure's LIGHTTPD_VERSION_ID: `0x%x%02x%02x` of major, minor, patch
/// (1.4.69 -> 0x10445), which lighttpd compares with each plugin's version.
fn lighttpd_version_id(version: &str) -> u64 {
    let n: Vec<u64> = version.split('.').map(|p| p.parse().expect("numeric version")).collect();
    let s = format!("{:x}{:02x}{:02x}", n[0], n[1], n[2]);
    u64::from_str_radix(&s, 16).expect("hex")
}

fn lighttpd_bindings() {
    println!("cargo:rerun-if-changed=lighttpd-headers/wrapper.h");
    let src = lighttpd_src();
    let version = lighttpd_source_version(&src);
    // Headers of another version would give wrong struct layouts: refuse.
    if let Some(out) = query("lighttpd", &["-v"]).or_else(|| query("/usr/sbin/lighttpd", &["-v"])) {
        let installed = out.split(['/', ' ']).nth(1).unwrap_or("");
        if installed != version {
            panic!("lighttpd sources are {version} but the installed lighttpd is {installed}: run `make lighttpd-src` again");
        }
    }
    println!("cargo:rustc-env=SUFCGI_LIGHTTPD_VERSION={version}");
    println!("cargo:rustc-env=SUFCGI_LIGHTTPD_VERSION_ID={}", lighttpd_version_id(&version));
    // lighttpd dlclose()s and reopens plugins on reload (SIGUSR1); the
    // supervisor link and scoreboard mapping must survive that: never unload.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
    let defines = [
        "HAVE_STDINT_H", "HAVE_INTTYPES_H", "HAVE_SYS_TIME_H", "HAVE_LOCALTIME_R", "HAVE_GMTIME_R", "HAVE_TIMEGM",
        "HAVE_SOCKLEN_T", "HAVE_SYS_UN_H", "HAVE_IPV6", "HAVE_SPLICE", "HAVE_PCRE2_H", "HAVE_CLOCK_GETTIME",
    ];
    let mut args: Vec<String> = defines.iter().map(|d| format!("-D{d}")).collect();
    args.push(format!("-I{}", src.join("src").display()));
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let bindings = bindgen::Builder::default()
        .header("lighttpd-headers/wrapper.h")
        .clang_args(&args)
        .allowlist_function("fdevent_.*|chunkqueue_.*|buffer_.*|http_header_.*|http_response_.*|http_cgi_headers|http_chunk_.*|http_etag_create|http_method_buf|log_error|log_perror|stat_cache_.*|config_plugin_values_init|config_check_cond|array_.*")
        .allowlist_type("request_st|server|connection|plugin|plugin_data_base|config_plugin_value_t|config_plugin_keys_t|config_scope_type_t|config_values_type_t|handler_t|data_config|data_string|data_unset|http_cgi_opts|fdnode|fdevents|chunkqueue|buffer|array")
        .allowlist_var("log_con_jqueue|log_monotonic_secs|log_epoch_secs|FDEVENT_.*|HTTP_HEADER_.*|T_CONFIG_.*|T_CONFIG_SCOPE_.*|HANDLER_.*")
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .expect("bindgen over lighttpd-headers/wrapper.h failed");
    bindings.write_to_file(out.join("lighttpd_ffi.rs")).expect("write bindings");
}
