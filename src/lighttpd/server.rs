//! The thin safe layer over lighttpd's server-level records: the error log,
//! the `server` (its event handler, its settings), our plugin record and the
//! configuration lighttpd parsed for our keys. With req.rs and fdevent.rs
//! this is where the glue's raw pointers are read; the rest of the glue is
//! safe Rust over these handles.

use super::ffi;
use std::ffi::{CStr, CString};
use std::os::raw::c_void;
use std::ptr::NonNull;

/// What a hook answers lighttpd (`handler_t`), kept as lighttpd's own value
/// so that one lighttpd returned (the body reader's) passes through as it is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Handled(pub(super) ffi::handler_t);

impl Handled {
    pub const GO_ON: Handled = Handled(ffi::handler_t_HANDLER_GO_ON);
    pub const FINISHED: Handled = Handled(ffi::handler_t_HANDLER_FINISHED);
    pub const COMEBACK: Handled = Handled(ffi::handler_t_HANDLER_COMEBACK);
    pub const WAIT_FOR_EVENT: Handled = Handled(ffi::handler_t_HANDLER_WAIT_FOR_EVENT);
    pub const ERROR: Handled = Handled(ffi::handler_t_HANDLER_ERROR);

    /// lighttpd's value, for the hook's return.
    pub fn raw(self) -> ffi::handler_t {
        self.0
    }
}

fn c_message(msg: &[u8]) -> CString {
    // NUL bytes cannot pass through "%s": show them instead of truncating.
    let cleaned: Vec<u8> = msg.iter().map(|&b| if b == 0 { b'?' } else { b }).collect();
    CString::new(cleaned).unwrap_or_default()
}

/// Log `msg` to an error-log handle (server or request). Messages are
/// always passed as data to a constant "%s" format, never as the format.
pub(super) fn log_to(errh: *mut ffi::log_error_st, msg: &[u8]) {
    if errh.is_null() {
        return;
    }
    let m = c_message(msg);
    // SAFETY: errh is lighttpd's live log handle (the server's or a live
    // request's); file and format are NUL-terminated statics and `m`
    // outlives the call.
    unsafe { ffi::log_error(errh, c"mod_sufcgi".as_ptr(), 0, c"%s".as_ptr(), m.as_ptr()) };
}

/// A lighttpd buffer's bytes (without its terminating NUL).
///
/// # Safety
/// `b` is null or a live lighttpd buffer that stays unchanged for `'a`.
pub(super) unsafe fn buffer_bytes<'a>(b: *const ffi::buffer) -> &'a [u8] {
    // SAFETY: the caller's contract; `used` counts the final NUL.
    match unsafe { b.as_ref() } {
        // SAFETY: a lighttpd buffer holds `used` bytes at `ptr`.
        Some(b) if !b.ptr.is_null() && b.used > 0 => unsafe { std::slice::from_raw_parts(b.ptr as *const u8, b.used as usize - 1) },
        _ => &[],
    }
}

/// lighttpd's server record, as a hook or a request reaches it.
///
/// A handle, not a borrow: lighttpd keeps its server for the process's life
/// (a reload keeps the same record), so every copy stays valid.
#[derive(Clone, Copy)]
pub struct Server(NonNull<ffi::server>);

impl Server {
    /// # Safety
    /// `srv` is null or lighttpd's live server record.
    pub unsafe fn from_raw(srv: *mut ffi::server) -> Option<Server> {
        NonNull::new(srv).map(Server)
    }

    /// # Safety
    /// `srv` is lighttpd's live server record (not null).
    pub(super) unsafe fn from_live(srv: *mut ffi::server) -> Server {
        // SAFETY: the caller's contract.
        Server(unsafe { NonNull::new_unchecked(srv) })
    }

    fn get(&self) -> &ffi::server {
        // SAFETY: a Server is only made from lighttpd's live server record
        // (from_raw's contract), which outlives every request and hook.
        unsafe { self.0.as_ref() }
    }

    /// Log against the server.
    pub fn log(&self, msg: &str) {
        log_to(self.get().errh, msg.as_bytes());
    }

    /// Its event handler (for fdevent.rs).
    pub(super) fn ev(&self) -> *mut ffi::fdevents {
        self.get().ev
    }

    pub(super) fn errh(&self) -> *mut ffi::log_error_st {
        self.get().errh
    }

    /// lighttpd runs as one process (`server.max-worker` 0).
    pub fn single_process(&self) -> bool {
        self.get().srvconf.max_worker == 0
    }

    /// `lighttpd -tt`: the configuration is only being checked.
    pub fn preflight(&self) -> bool {
        self.get().srvconf.preflight_check != 0
    }

    /// `server.username` and `server.groupname` (empty when unset).
    pub fn user_and_group(&self) -> (Vec<u8>, Vec<u8>) {
        let s = self.get();
        // SAFETY: the server's configuration buffers are null or live while it is.
        unsafe { (buffer_bytes(s.srvconf.username).to_vec(), buffer_bytes(s.srvconf.groupname).to_vec()) }
    }

    /// The configuration contexts: the global scope (0) and every
    /// `$HTTP[…]` block, in lighttpd's order.
    pub fn config_contexts(&self) -> Vec<ConfigContext> {
        let s = self.get();
        let mut out = Vec::new();
        // SAFETY: config_context is the server's array of `used` data_config
        // pointers, built at start-up and left unchanged while it runs.
        let Some(a) = (unsafe { s.config_context.as_ref() }) else { return out };
        for u in 0..a.used as usize {
            // SAFETY: as above: index `u` is below `used`.
            let dc = unsafe { *a.data.add(u) } as *const ffi::data_config;
            // SAFETY: a non-null entry is a live data_config of the configuration.
            let Some(dc) = (unsafe { dc.as_ref() }) else {
                out.push(ConfigContext::default());
                continue;
            };
            // SAFETY: the context's parent is an entry of the same array, or null.
            let parent = unsafe { dc.parent.as_ref() }.map(|p| p.context_ndx as usize);
            out.push(ConfigContext {
                present: true,
                // SAFETY: the key is the context's own buffer.
                key: unsafe { buffer_bytes(&dc.key) }.to_vec(),
                parent,
                document_root: string_value(dc.value, c"server.document-root"),
                accesslog_format: string_value(dc.value, c"accesslog.format"),
            });
        }
        out
    }
}

/// The string a context's value array sets for `key`, if a string.
fn string_value(values: *const ffi::array, key: &CStr) -> Option<Vec<u8>> {
    // SAFETY: `values` is a context's live value array; the key is copied by lighttpd.
    let du = unsafe { ffi::array_get_element_klen(values, key.as_ptr(), key.to_bytes().len() as u32) };
    // SAFETY: a non-null element is a live data_unset; one of TYPE_STRING is a data_string.
    let ds = unsafe { (du as *const ffi::data_string).as_ref() }?;
    // SAFETY: the data_string's value buffer is live with it.
    (ds.type_ == ffi::data_type_t_TYPE_STRING).then(|| unsafe { buffer_bytes(&ds.value) }.to_vec())
}

/// One configuration context, as settings.rs needs it.
#[derive(Default)]
pub struct ConfigContext {
    /// False for an entry lighttpd left empty.
    pub present: bool,
    /// Its condition as lighttpd shows it (`$HTTP["host"] == "…"`).
    pub key: Vec<u8>,
    pub parent: Option<usize>,
    pub document_root: Option<Vec<u8>>,
    pub accesslog_format: Option<Vec<u8>>,
}

/// What lighttpd keeps for us: only its own `PLUGIN_DATA` header (our state
/// lives in statics that survive reloads). lighttpd frees it with free().
#[repr(C)]
struct PluginData {
    base: ffi::plugin_data_base,
}

/// `p->init`: the record lighttpd keeps for us, zeroed. calloc: lighttpd
/// frees it (and the cvlist it points to) itself.
pub fn new_plugin_data() -> *mut c_void {
    // SAFETY: a plain allocation, zeroed, of the record's size.
    unsafe { libc::calloc(1, std::mem::size_of::<PluginData>()) }
}

/// Our plugin: its id (its slot in every request's `plugin_ctx`) and its
/// record (what a request's `handler_module` names when it is ours).
#[derive(Clone, Copy)]
pub struct Plugin {
    pub(super) id: usize,
    pub(super) record: *const ffi::plugin,
    data: NonNull<c_void>,
}

impl Plugin {
    /// # Safety
    /// `p_d` is null or the record `new_plugin_data` made for lighttpd, as
    /// lighttpd passes it back to a hook (alive until cleanup).
    pub unsafe fn from_raw(p_d: *mut c_void) -> Option<Plugin> {
        let data = NonNull::new(p_d)?;
        // SAFETY: the caller's contract: the record begins with PLUGIN_DATA.
        let base = unsafe { &(*(p_d as *const PluginData)).base };
        Some(Plugin { id: base.id.max(0) as usize, record: base.self_, data })
    }

    /// Register our keys with lighttpd (type checks, "unknown key"
    /// bookkeeping); false if lighttpd refused a value (it logged why).
    pub fn register_keys(&self, srv: Server, keys: &[ConfigKey]) -> bool {
        let mut raw: Vec<ffi::config_plugin_keys_t> = keys
            .iter()
            .map(|k| ffi::config_plugin_keys_t { k: k.name.as_ptr(), klen: k.name.to_bytes().len() as u8, ktype: k.ktype as u8, scope: k.scope as u8 })
            .collect();
        raw.push(ffi::config_plugin_keys_t { k: std::ptr::null(), klen: 0, ktype: ffi::config_values_type_t_T_CONFIG_UNSET as u8, scope: 0 });
        // SAFETY: srv is live during start-up and this is our plugin data;
        // the key list ends with T_CONFIG_UNSET as lighttpd requires, and
        // its names are statics.
        unsafe { ffi::config_plugin_values_init(srv.0.as_ptr(), self.data.as_ptr(), raw.as_ptr(), c"mod_sufcgi".as_ptr()) != 0 }
    }

    /// Every value lighttpd parsed for our keys (after `register_keys`),
    /// context by context.
    pub fn config_values(&self) -> Vec<ConfigValue> {
        let mut out = Vec::new();
        // SAFETY: config_plugin_values_init filled our cvlist as documented
        // in lighttpd's plugin_config.h: `nconfig` heads (k_id: the context,
        // u2: where its values start and how many), each value list ending
        // with k_id -1.
        unsafe {
            let p = &*(self.data.as_ptr() as *const ffi::plugin_data_base);
            for i in 0..p.nconfig.max(0) as usize {
                let head = &*p.cvlist.add(i);
                if head.v.u2[1] == 0 {
                    continue;
                }
                let mut cpv = p.cvlist.add(head.v.u2[0] as usize);
                while (*cpv).k_id >= 0 {
                    out.push(ConfigValue { context: head.k_id as usize, key: (*cpv).k_id as usize, vtype: (*cpv).vtype, v: (*cpv).v });
                    cpv = cpv.add(1);
                }
            }
        }
        out
    }
}

/// A key we ask lighttpd to parse.
pub struct ConfigKey {
    pub name: &'static CStr,
    pub ktype: ffi::config_values_type_t,
    pub scope: ffi::config_scope_type_t,
}

/// One value lighttpd parsed for one of our keys in one context. The
/// accessors read the field lighttpd fills for the key's declared type.
pub struct ConfigValue {
    pub context: usize,
    /// The key's index in the list given to `register_keys`.
    pub key: usize,
    vtype: ffi::config_values_type_t,
    v: ffi::config_plugin_value_v_u,
}

impl ConfigValue {
    /// An int or bool key's value.
    pub fn int(&self) -> u32 {
        match self.vtype {
            // SAFETY: lighttpd stores these types' values in `u`.
            ffi::config_values_type_t_T_CONFIG_INT | ffi::config_values_type_t_T_CONFIG_BOOL => unsafe { self.v.u },
            _ => 0,
        }
    }

    /// A string key's value.
    pub fn bytes(&self) -> &[u8] {
        if self.vtype != ffi::config_values_type_t_T_CONFIG_STRING {
            return &[];
        }
        // SAFETY: a string value is in `b`, a buffer of the configuration,
        // which lives until lighttpd frees it after this generation's requests.
        unsafe { buffer_bytes(self.v.b) }
    }

    /// A list or key => value array's strings (key, value).
    pub fn strings(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        if !matches!(self.vtype, ffi::config_values_type_t_T_CONFIG_ARRAY_VLIST | ffi::config_values_type_t_T_CONFIG_ARRAY_KVSTRING) {
            return out;
        }
        // SAFETY: an array value is in `a`, an array lighttpd type-checked as
        // holding strings (T_CONFIG_ARRAY_VLIST / _KVSTRING): data_string
        // elements, `used` of them.
        unsafe {
            let Some(a) = self.v.a.as_ref() else { return out };
            for i in 0..a.used as usize {
                if let Some(ds) = (*a.data.add(i) as *const ffi::data_string).as_ref() {
                    out.push((buffer_bytes(&ds.key).to_vec(), buffer_bytes(&ds.value).to_vec()));
                }
            }
        }
        out
    }
}

/// The effective uid and gid lighttpd runs as now.
pub fn process_ids() -> (u32, u32) {
    // SAFETY: plain syscalls without arguments.
    unsafe { (libc::geteuid(), libc::getegid()) }
}
