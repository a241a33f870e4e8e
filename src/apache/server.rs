//! The safe server layer: `Server`, a handle on a `server_rec` (a vhost or
//! the main server) with our per-server record, its name, document root and
//! log; httpd's configuration tree and start-up state; the process-lifetime
//! record; and the "other child" registration the supervisor watchdog uses.
//! What runs at configuration time reads as safe Rust over this file.

use super::server_conf::ServerConf;
use super::pool::{bytes, Pool};
use super::runtime::{Persist, PERSIST_KEY};
use crate::core::scoreboard::Scoreboard;
use super::{ffi, log, module_index};
use std::ffi::CStr;
use std::os::raw::{c_int, c_void};
use std::ptr::{self, NonNull};

/// A server_rec of the configuration. httpd keeps them in pconf for the
/// whole configuration generation: in a child that is its whole life, in
/// the parent until the next restart (when every handle of it is gone too:
/// they are kept only in memory of pconf or of a child). Read-only after
/// configuration, so handles may go to other threads of a child.
#[derive(Clone, Copy)]
pub struct Server(NonNull<ffi::server_rec>);

// SAFETY: see the type's comment: the record is read-only once the
// configuration is read and outlives every thread of a child; logging
// against it (ap_log_error) is thread-safe.
unsafe impl Send for Server {}
// SAFETY: as for Send.
unsafe impl Sync for Server {}

impl Server {
    /// # Safety
    /// `s` is null or a server_rec of the live configuration.
    pub(super) unsafe fn from_raw(s: *const ffi::server_rec) -> Option<Server> {
        NonNull::new(s as *mut ffi::server_rec).map(Server)
    }

    pub(super) fn raw(self) -> *mut ffi::server_rec {
        self.0.as_ptr()
    }

    fn rec(&self) -> &ffi::server_rec {
        // SAFETY: live for the generation (see the type); only read.
        unsafe { self.0.as_ref() }
    }

    /// The main server, once configuration has been read.
    pub fn main() -> Option<Server> {
        // SAFETY: ap_server_conf is null or the main server; httpd sets it
        // once the configuration is read.
        unsafe { Server::from_raw(ffi::ap_server_conf) }
    }

    /// Tells servers apart (the key of `Runtime::vhosts`).
    pub fn key(self) -> usize {
        self.raw() as usize
    }

    /// The next server of the configuration's list (the main server first).
    pub fn next(self) -> Option<Server> {
        // SAFETY: the list is part of the live configuration.
        unsafe { Server::from_raw(self.rec().next) }
    }

    /// Our record of this server (None before create_server_config made it).
    pub fn conf(self) -> Option<&'static ServerConf> {
        // SAFETY: our slot of module_config holds a ServerConf made by
        // create_server_config or merge_server_config in pconf, or null;
        // it is changed only while directives are read (cmd.rs), when
        // nothing else reads it.
        unsafe { (module_index::slot(self.rec().module_config) as *const ServerConf).as_ref() }
    }

    /// The main server's record (host-wide settings): `ap_server_conf` once
    /// configuration has been read; before that (while parsing) this server
    /// stands in.
    pub fn main_conf(self) -> Option<&'static ServerConf> {
        Server::main().unwrap_or(self).conf()
    }

    /// `ServerName:port` for log lines and the status page: the port of the
    /// ServerName, else the one the vhost listens on, else none (`*:*`).
    pub fn name(self) -> String {
        let s = self.rec();
        // SAFETY: the host name is a string of the configuration.
        let host = String::from_utf8_lossy(unsafe { bytes(s.server_hostname) }.unwrap_or(b"")).into_owned();
        // SAFETY: `addrs` is null or a list httpd built.
        let listened = unsafe { s.addrs.as_ref() }.map_or(0, |a| a.host_port);
        match s.port {
            0 if listened == 0 => host,
            0 => format!("{host}:{listened}"),
            port => format!("{host}:{port}"),
        }
    }

    /// The server's `DocumentRoot` (core's per-server record).
    pub fn document_root(self) -> &'static [u8] {
        // SAFETY: the core module's slot of module_config holds its
        // core_server_config, as ap_get_core_module_config reads it; the
        // document root is a string of the configuration.
        unsafe {
            let core_index = (*ptr::addr_of!(ffi::core_module)).module_index as usize;
            let core = *(self.rec().module_config as *mut *mut ffi::core_server_config).add(core_index);
            core.as_ref().and_then(|c| bytes(c.ap_document_root)).unwrap_or(b"")
        }
    }

    /// `Timeout`, in microseconds.
    pub fn timeout_us(self) -> i64 {
        self.rec().timeout
    }

    /// The process-lifetime record in httpd's process pool, created on first
    /// use (None if it cannot be allocated).
    pub fn process_record(self) -> Option<ProcessRecord> {
        // SAFETY: s->process is httpd's process record, whose pool lives as
        // long as the process.
        let pool = unsafe { (*self.rec().process).pool };
        let mut data: *mut c_void = ptr::null_mut();
        // SAFETY: the key is a static string; APR writes the stored pointer or null.
        unsafe { ffi::apr_pool_userdata_get(&mut data, PERSIST_KEY.as_ptr(), pool) };
        if data.is_null() {
            // SAFETY: apr_palloc returns memory living as long as the process
            // pool; every field is initialised before it is published. The
            // key must outlive the pool: a static string.
            unsafe {
                let p = ffi::apr_palloc(pool, std::mem::size_of::<Persist>()) as *mut Persist;
                if p.is_null() {
                    return None;
                }
                p.write(Persist { supervisor_pid: 0, control_fd: -1, scoreboard: None });
                ffi::apr_pool_userdata_setn(p as *const c_void, PERSIST_KEY.as_ptr(), None, pool);
                data = p as *mut c_void;
            }
        }
        NonNull::new(data as *mut Persist).map(ProcessRecord)
    }

    /// Log against this server.
    pub fn log(self, level: u32, msg: &str) {
        // SAFETY: the server is live (see the type).
        unsafe { log::server(self.raw(), level, msg) }
    }
}

/// The `Persist` record of the process pool: read and written whole, as a
/// cell, by the single-threaded parent at configuration time (and by
/// child_init, which only clears the control fd of its copy).
pub struct ProcessRecord(NonNull<Persist>);

impl ProcessRecord {
    pub fn get(&self) -> Persist {
        // SAFETY: the record is initialised and lives as long as the process;
        // no reference into it is ever handed out, and the one thread that
        // runs configuration hooks is the only one touching it.
        unsafe { self.0.as_ptr().read() }
    }

    pub fn set(&self, p: Persist) {
        // SAFETY: as for get.
        unsafe { self.0.as_ptr().write(p) }
    }

    /// The process's scoreboard: the one the record keeps (made by an
    /// earlier generation), else a new one from `create`, kept from now on.
    pub fn scoreboard(&self, create: impl FnOnce() -> Result<Scoreboard, String>) -> Result<Scoreboard, String> {
        let mut p = self.get();
        if let Some(raw) = p.scoreboard {
            // SAFETY: only this method stores raw parts, from `as_raw` of a
            // Scoreboard made in this process (or the parent it was forked
            // from), whose mapping lives for the whole process (never unmapped).
            return Ok(unsafe { Scoreboard::from_raw(raw) });
        }
        let sb = create()?;
        p.scoreboard = Some(sb.as_raw());
        self.set(p);
        Ok(sb)
    }

    /// Close the supervisor's control channel, if the record holds it.
    pub fn close_control(&self) {
        let mut p = self.get();
        if p.control_fd >= 0 {
            // SAFETY: the record owns this descriptor (SupervisorHandle::into_raw
            // gave it up) and forgets it right here.
            unsafe { libc::close(p.control_fd) };
            p.control_fd = -1;
            self.set(p);
        }
    }
}

impl Pool {
    /// `name` below httpd's runtime directory (`DefaultRuntimeDir`), in this pool.
    pub fn runtime_dir(self, name: &CStr) -> Option<Vec<u8>> {
        // SAFETY: the pool is live; the result is null or a string in it,
        // copied out at once.
        unsafe { bytes(ffi::ap_runtime_dir_relative(self.raw(), name.as_ptr())).map(<[u8]>::to_vec) }
    }
}

/// The first of httpd's two start-up passes, which only checks the
/// configuration.
pub fn pre_config_pass() -> bool {
    // SAFETY: a plain query of httpd's state.
    unsafe { ffi::ap_state_query(ffi::AP_SQ_MAIN_STATE as c_int) == ffi::AP_SQ_MS_CREATE_PRE_CONFIG as c_int }
}

/// The configuration generation (0 at the first start, then one more per restart).
pub fn config_generation() -> u64 {
    // SAFETY: a plain query of httpd's state.
    unsafe { ffi::ap_state_query(ffi::AP_SQ_CONFIG_GEN as c_int) }.max(0) as u64
}

/// httpd's `User` and `Group` ids.
pub fn unixd_ids() -> (u32, u32) {
    // SAFETY: mod_unixd fills the record while configuration is read; it is
    // only read afterwards.
    unsafe { (ffi::ap_unixd_config.user_id, ffi::ap_unixd_config.group_id) }
}

/// A node of httpd's configuration tree (a directive, or a section with
/// children). The tree lives in pconf, complete and immutable once the
/// configuration is read.
#[derive(Clone, Copy)]
pub struct ConfNode(NonNull<ffi::ap_directive_t>);

impl ConfNode {
    /// The first node of the whole tree (post_config and later).
    pub fn tree() -> Option<ConfNode> {
        // SAFETY: ap_conftree is null or httpd's complete tree.
        NonNull::new(unsafe { ffi::ap_conftree }).map(ConfNode)
    }

    fn rec(&self) -> &'static ffi::ap_directive_t {
        // SAFETY: see the type.
        unsafe { self.0.as_ref() }
    }

    /// The directive's name (`<Directory` for a section).
    pub fn name(self) -> &'static [u8] {
        // SAFETY: a string of the tree.
        unsafe { bytes(self.rec().directive) }.unwrap_or(b"")
    }

    /// Its arguments, as written.
    pub fn args(self) -> &'static [u8] {
        // SAFETY: a string of the tree.
        unsafe { bytes(self.rec().args) }.unwrap_or(b"")
    }

    pub fn first_child(self) -> Option<ConfNode> {
        NonNull::new(self.rec().first_child).map(ConfNode)
    }

    pub fn next(self) -> Option<ConfNode> {
        NonNull::new(self.rec().next).map(ConfNode)
    }
}

/// A child process watched as one of httpd's "other children" (as mod_cgid
/// watches its daemon): kept in pconf, so a restart drops the registration.
struct Watch {
    proc_: ffi::apr_proc_t,
    what: &'static str,
    on_exit: Box<dyn FnMut(libc::pid_t)>,
}

/// Have the MPM's maintenance loop call `on_exit(pid)` once the process
/// `pid` died or was lost (under the panic guard, as `what`). Parent only,
/// at configuration time.
pub fn watch_child(pconf: Pool, pid: libc::pid_t, what: &'static str, on_exit: impl FnMut(libc::pid_t) + 'static) {
    let w = pconf.keep(Watch { proc_: ffi::apr_proc_t { pid, ..Default::default() }, what, on_exit: Box::new(on_exit) });
    // SAFETY: the Watch lives in pconf (dropped by its cleanup) and APR keeps
    // only the pointer we pass; the registration is tied to pconf too, so it
    // never outlives the Watch.
    unsafe { ffi::apr_proc_other_child_register(ptr::addr_of_mut!((*w).proc_), Some(maintenance), w as *mut c_void, ptr::null_mut(), pconf.raw()) };
}

unsafe extern "C" fn maintenance(reason: c_int, data: *mut c_void, _status: c_int) {
    let reason = reason as u32;
    if reason != ffi::APR_OC_REASON_DEATH && reason != ffi::APR_OC_REASON_LOST {
        return;
    }
    // SAFETY: `data` is the Watch registered by watch_child, alive until
    // pconf is cleared; the MPM calls us from the single-threaded parent.
    let w = unsafe { &mut *(data as *mut Watch) };
    crate::core::guard::guard(w.what, (), |m| log::main(log::ERR, m), || {
        // SAFETY: as above: the registration of this very Watch.
        unsafe { ffi::apr_proc_other_child_unregister(data) };
        let pid = w.proc_.pid;
        (w.on_exit)(pid);
    })
}
