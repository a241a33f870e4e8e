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
    if env::var_os("CARGO_FEATURE_APACHE").is_none() {
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
