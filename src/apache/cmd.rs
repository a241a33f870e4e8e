//! The safe directive layer: httpd's command table entries (`command_rec`)
//! for TAKE_ARGV directives, and `Cmd`, a handle on the `cmd_parms` of the
//! directive being read, for the handlers in config.rs. A handler is a type
//! implementing `TakeArgv`; the `extern "C"` function httpd calls is the
//! generic `take_argv_entry`, which runs it under the panic guard and turns
//! its answer into what httpd expects (null, an error string in the
//! command's pool, or DECLINE_CMD).

use super::pool::{bytes, Pool};
use super::server::Server;
use super::server_conf::ServerConf;
use super::{ffi, log, module_index};
use crate::core::directives::DirConfig;
use std::ffi::{CStr, OsStr};
use std::os::raw::{c_char, c_int, c_void};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::ptr;

/// Override classes (`AllowOverride`) and contexts a directive is allowed in.
pub use ffi::{ACCESS_CONF, OR_AUTHCFG, OR_FILEINFO, OR_OPTIONS, RSRC_CONF};

/// One entry of the command table.
pub type Command = ffi::command_rec;

/// httpd's command table must be a static C array that lives as long as the module.
#[repr(transparent)]
pub struct CommandTable<const N: usize>(pub [Command; N]);
// SAFETY: the table is immutable after initialisation and holds only pointers
// to 'static data (names, usage strings, functions).
unsafe impl<const N: usize> Sync for CommandTable<N> {}

/// Why a directive was not taken.
pub enum Refusal {
    /// Our reason (the line is added for `.htaccess` files).
    Error(String),
    /// httpd's own reason (from a context check), as it wrote it.
    Httpd(HttpdError),
    /// Not ours after all: the next module with a directive of this name
    /// handles it (httpd's DECLINE_CMD).
    Decline,
}

impl From<String> for Refusal {
    fn from(e: String) -> Refusal {
        Refusal::Error(e)
    }
}

/// An error string httpd made (in the command's pool).
pub struct HttpdError(*const c_char);

/// A TAKE_ARGV directive handler.
pub trait TakeArgv {
    /// What the panic guard names if the handler panics.
    const WHAT: &'static str;
    fn run(cmd: &mut Cmd<'_>, args: &[&[u8]]) -> Result<(), Refusal>;
}

/// The command table entry of TAKE_ARGV directive `name`, handled by `H`.
/// `data` comes back as `Cmd::data`.
pub const fn take_argv<H: TakeArgv>(name: &'static CStr, usage: &'static CStr, data: usize, req_override: u32) -> Command {
    Command {
        name: name.as_ptr(),
        func: ffi::cmd_func { take_argv: Some(take_argv_entry::<H>) },
        cmd_data: data as *mut c_void,
        req_override: req_override as c_int,
        args_how: ffi::cmd_how_TAKE_ARGV,
        errmsg: usage.as_ptr(),
    }
}

/// The entry that ends a command table.
pub const fn end() -> Command {
    Command {
        name: ptr::null(),
        func: ffi::cmd_func { take_argv: None },
        cmd_data: ptr::null_mut(),
        req_override: 0,
        args_how: 0,
        errmsg: ptr::null(),
    }
}

/// httpd's DECLINE_CMD ("\a\b", compared with strcmp).
const DECLINE_CMD: &CStr = c"\x07\x08";

unsafe extern "C" fn take_argv_entry<H: TakeArgv>(cmd: *mut ffi::cmd_parms, mconfig: *mut c_void, argc: c_int, argv: *const *mut c_char) -> *const c_char {
    crate::core::guard::guard(H::WHAT, c"sufcgi: internal error while parsing a directive".as_ptr(), |m| log::main(log::ERR, m), || {
        let Some(cmd) = ptr::NonNull::new(cmd) else { return c"sufcgi: no directive".as_ptr() };
        let mut c = Cmd { cmd, mconfig: mconfig as *mut DirConfig, _life: std::marker::PhantomData };
        // SAFETY: httpd passes argc NUL-terminated strings in argv, which
        // live in the command's pool for the whole call.
        let args = unsafe { args(argc, argv) };
        match H::run(&mut c, &args) {
            Ok(()) => ptr::null(),
            Err(Refusal::Error(e)) => c.error(&e),
            Err(Refusal::Httpd(HttpdError(e))) => e,
            Err(Refusal::Decline) => DECLINE_CMD.as_ptr(),
        }
    })
}

/// The arguments of a TAKE_ARGV directive as byte slices.
///
/// # Safety
/// `argv` holds `argc` NUL-terminated strings that outlive `'a`.
unsafe fn args<'a>(argc: c_int, argv: *const *mut c_char) -> Vec<&'a [u8]> {
    (0..argc.max(0) as usize)
        // SAFETY: per the contract: argv[i] for i < argc is a valid string.
        .filter_map(|i| unsafe { bytes(*argv.add(i)) })
        .collect()
}

/// The directive being read: its `cmd_parms`, and our per-directory record
/// of the section (or `.htaccess` file) it stands in.
pub struct Cmd<'c> {
    cmd: ptr::NonNull<ffi::cmd_parms>,
    mconfig: *mut DirConfig,
    _life: std::marker::PhantomData<&'c mut ffi::cmd_parms>,
}

impl Cmd<'_> {
    fn rec(&self) -> &ffi::cmd_parms {
        // SAFETY: httpd's cmd_parms of this directive, live for the call.
        unsafe { self.cmd.as_ref() }
    }

    /// The `data` of the directive's table entry.
    pub fn data(&self) -> usize {
        // SAFETY: cmd->cmd is the table entry of the directive being read.
        unsafe { self.rec().cmd.as_ref() }.map_or(usize::MAX, |c| c.cmd_data as usize)
    }

    /// The directory of the enclosing `<Directory>` section or `.htaccess`
    /// file (None in server config).
    pub fn path(&self) -> Option<&[u8]> {
        // SAFETY: cmd->path is null or a string of the configuration.
        unsafe { bytes(self.rec().path) }
    }

    /// Read from an `.htaccess` file (httpd reads those with the
    /// request's pool as both pools).
    pub fn in_htaccess(&self) -> bool {
        self.rec().pool == self.rec().temp_pool
    }

    /// The `.htaccess` file the directive is in (None in server config).
    pub fn source(&self) -> Option<PathBuf> {
        if !self.in_htaccess() {
            return None;
        }
        // SAFETY: cmd->directive is the directive being read; its file name
        // is a string of the configuration.
        unsafe { self.rec().directive.as_ref().and_then(|d| bytes(d.filename)) }.map(|f| PathBuf::from(OsStr::from_bytes(f)))
    }

    fn line(&self) -> i32 {
        // SAFETY: cmd->directive is the directive being read (set by httpd).
        unsafe { self.rec().directive.as_ref() }.map_or(0, |d| d.line_num)
    }

    /// The server being configured (the request's vhost while an `.htaccess` is read).
    pub fn server(&self) -> Option<Server> {
        // SAFETY: cmd->server is a server_rec of the configuration being read.
        unsafe { Server::from_raw(self.rec().server) }
    }

    /// Our record of the section the directive stands in.
    pub fn dir_conf(&mut self) -> Option<&mut DirConfig> {
        // SAFETY: httpd passes our own per-directory record (made by
        // create_dir_config) of the section being read; no other reference
        // to it is alive while its directive is handled.
        unsafe { self.mconfig.as_mut() }
    }

    /// Our record of the server being configured.
    pub fn server_conf_mut(&mut self) -> Option<&mut ServerConf> {
        // SAFETY: our slot of the server's module_config holds a ServerConf
        // made by create_server_config; directives are read one at a time
        // by one thread, and no reference to the record is kept across them.
        unsafe { self.rec().server.as_ref().and_then(|s| (module_index::slot(s.module_config) as *mut ServerConf).as_mut()) }
    }

    /// Refuse the directive outside the main server config (httpd's GLOBAL_ONLY).
    pub fn check_global_only(&self) -> Result<(), HttpdError> {
        // SAFETY: the live cmd_parms of the directive; httpd returns null or
        // a string of its own.
        let err = unsafe { ffi::ap_check_cmd_context(self.cmd.as_ptr(), ffi::GLOBAL_ONLY as _) };
        if err.is_null() {
            Ok(())
        } else {
            Err(HttpdError(err))
        }
    }

    /// An error string in the command's pool, as httpd expects from a handler.
    fn error(&self, msg: &str) -> *const c_char {
        // httpd prefixes .htaccess errors with the file name but not the line, and
        // server-config errors with both; naming the line ourselves covers both.
        let text = if self.in_htaccess() { format!("line {}: {msg}", self.line()) } else { msg.to_string() };
        // SAFETY: cmd->pool is live for the duration of the directive.
        match unsafe { Pool::from_raw(self.rec().pool) } {
            Some(p) => p.pstr(text.replace('\0', "?").as_bytes()),
            None => c"sufcgi: no pool for the error".as_ptr(),
        }
    }
}

/// Whether a module of this name (`__FILE__` of its record) is loaded.
pub fn module_loaded(name: &CStr) -> bool {
    // SAFETY: ap_find_linked_module only walks httpd's module list, which is
    // stable while configuration is being read (this runs in a directive handler).
    unsafe { !ffi::ap_find_linked_module(name.as_ptr()).is_null() }
}
