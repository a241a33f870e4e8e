//! The module record httpd finds by the symbol `sufcgi_module`.

use super::{config, entry, ffi, module_index};
use std::os::raw::{c_int, c_ulong};
use std::ptr;

/// httpd writes `module_index`, `dynamic_load_handle` and `next` into this
/// record when it loads the module, hence `static mut`.
#[no_mangle]
#[allow(non_upper_case_globals)]
pub static mut sufcgi_module: ffi::module = ffi::module {
    version: ffi::MODULE_MAGIC_NUMBER_MAJOR as c_int,
    minor_version: ffi::MODULE_MAGIC_NUMBER_MINOR as c_int,
    module_index: -1,
    name: module_index::NAME.as_ptr(),
    dynamic_load_handle: ptr::null_mut(),
    next: ptr::null_mut(),
    magic: ffi::MODULE_MAGIC_COOKIE as c_ulong,
    rewrite_args: None,
    create_dir_config: Some(entry::create_dir_config),
    merge_dir_config: Some(entry::merge_dir_config),
    create_server_config: Some(entry::create_server_config),
    merge_server_config: Some(entry::merge_server_config),
    cmds: &config::COMMANDS as *const _ as *const ffi::command_rec,
    register_hooks: Some(entry::register_hooks),
    flags: 0,
};
