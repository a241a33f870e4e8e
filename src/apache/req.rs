//! The safe request layer: `Req<'r>`, a handle on the `request_rec` httpd
//! hands a hook, with safe methods for what the glue does to a request (its
//! strings, tables, pool, status and content type, body in and response out,
//! its connection and server, our per-directory record), and the APR tables
//! those use. Everything above this file reads as safe Rust;
//! every raw pointer of a request is touched here (or in `ffi`).

use super::ffi;
use super::log;
use super::module_index;
use super::pool::{bytes, Pool};
use super::server::Server;
use crate::core::directives::DirConfig;
use std::ffi::{CStr, CString};
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::raw::{c_char, c_int, c_void};
use std::ptr::{self, NonNull};

/// What a hook returns: OK, DECLINED, DONE or an HTTP status.
pub type Status = c_int;
pub const OK: Status = ffi::OK as Status;
pub const DECLINED: Status = ffi::DECLINED;
pub const DONE: Status = ffi::DONE;
/// HTTP statuses as bindgen types them (`as Status` where a hook returns one).
pub use ffi::{
    HTTP_BAD_GATEWAY, HTTP_BAD_REQUEST, HTTP_FORBIDDEN, HTTP_GATEWAY_TIME_OUT, HTTP_INTERNAL_SERVER_ERROR, HTTP_METHOD_NOT_ALLOWED,
    HTTP_NOT_FOUND, HTTP_REQUEST_ENTITY_TOO_LARGE, HTTP_SERVICE_UNAVAILABLE,
};

/// The handler names sufcgi answers for: `SetHandler sufcgi-app` /
/// `sufcgi-wrapper` are set by the fixups hook; `AddHandler sufcgi-script`,
/// `SetHandler sufcgi-status` and `SetHandler sufcgi-metrics` are the names
/// lighttpd's `.htaccess` reader knows too.
pub const APP_HANDLER: &CStr = c"sufcgi-app";
pub const WRAPPER_HANDLER: &CStr = c"sufcgi-wrapper";
pub const HANDLER_APP: &[u8] = APP_HANDLER.to_bytes();
pub const HANDLER_WRAPPER: &[u8] = WRAPPER_HANDLER.to_bytes();
pub use crate::core::htaccess_file::{METRICS_HANDLER as HANDLER_METRICS, SCRIPT_HANDLER as HANDLER_SCRIPT, STATUS_HANDLER as HANDLER_STATUS};

/// `/~alice/...` names the user whose home a mod_userdir URL maps into.
pub fn userdir_user(uri: &[u8]) -> Option<Vec<u8>> {
    let rest = uri.strip_prefix(b"/~")?;
    let end = rest.iter().position(|&c| c == b'/').unwrap_or(rest.len());
    (end > 0).then(|| rest[..end].to_vec())
}

/// An APR table of a request (headers, environment, notes): its strings
/// live in the request's pool or longer, so they outlive `'r`.
/// (A request always has its tables; a null one reads as empty and takes nothing.)
#[derive(Clone, Copy)]
pub struct Table<'r> {
    t: *mut ffi::apr_table_t,
    _life: PhantomData<&'r ffi::apr_table_t>,
}

impl<'r> Table<'r> {
    fn new(t: *mut ffi::apr_table_t) -> Table<'r> {
        Table { t, _life: PhantomData }
    }

    fn raw(self) -> *mut ffi::apr_table_t {
        self.t
    }

    /// The (key, value) pairs, in order. Later changes to the table leave
    /// these strings alone (APR copies new values; the old stay in the pool).
    pub fn entries(self) -> Vec<(&'r [u8], &'r [u8])> {
        if self.t.is_null() {
            return Vec::new();
        }
        // SAFETY: apr_table_elts is a cast in APR: a table begins with its
        // apr_array_header_t of apr_table_entry_t.
        let arr = unsafe { &*(self.raw() as *const ffi::apr_array_header_t) };
        let n = arr.nelts.max(0) as usize;
        let elts = arr.elts as *const ffi::apr_table_entry_t;
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            // SAFETY: i < nelts, and elts holds nelts entries.
            let e = unsafe { &*elts.add(i) };
            // SAFETY: keys and values are NUL-terminated strings in the table's pool.
            if let (Some(k), Some(v)) = unsafe { (bytes(e.key), bytes(e.val)) } {
                out.push((k, v));
            }
        }
        out
    }

    /// A value by key (case-insensitive, as APR compares).
    pub fn get(self, k: &[u8]) -> Option<&'r [u8]> {
        if self.t.is_null() {
            return None;
        }
        let k = CString::new(k).ok()?;
        // SAFETY: the table is live; apr_table_get returns a pointer into it or null.
        unsafe { bytes(ffi::apr_table_get(self.raw(), k.as_ptr())) }
    }

    /// Add a pair; APR copies both strings (a key or value holding NUL is dropped).
    pub fn add(self, k: &[u8], v: &[u8]) {
        if self.t.is_null() {
            return;
        }
        if let (Ok(k), Ok(v)) = (CString::new(k), CString::new(v)) {
            // SAFETY: the table is live; apr_table_add copies key and value into its pool.
            unsafe { ffi::apr_table_add(self.raw(), k.as_ptr(), v.as_ptr()) };
        }
    }

    /// Set (replace) a pair; APR copies both strings.
    pub fn set(self, k: &[u8], v: &[u8]) {
        if self.t.is_null() {
            return;
        }
        if let (Ok(k), Ok(v)) = (CString::new(k), CString::new(v)) {
            // SAFETY: the table is live; apr_table_set copies key and value into its pool.
            unsafe { ffi::apr_table_set(self.raw(), k.as_ptr(), v.as_ptr()) };
        }
    }
}

/// What the request's file name names on disk (`r->finfo.filetype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    Regular,
    Directory,
    Other,
}

/// The request httpd handed the current hook. Copyable: every copy is the
/// same request, and none outlives the hook call (`'r`).
#[derive(Clone, Copy)]
pub struct Req<'r> {
    r: NonNull<ffi::request_rec>,
    _life: PhantomData<&'r mut ffi::request_rec>,
}

impl<'r> Req<'r> {
    /// # Safety
    /// `r` is null or the live request httpd passed to the current hook,
    /// valid for `'r`; the handle is used on the hook's thread only.
    pub(super) unsafe fn from_raw(r: *mut ffi::request_rec) -> Option<Req<'r>> {
        NonNull::new(r).map(|r| Req { r, _life: PhantomData })
    }

    fn raw(self) -> *mut ffi::request_rec {
        self.r.as_ptr()
    }

    /// A short-lived view for reading fields (writes go through `raw`, never
    /// while a view is held).
    fn rec(&self) -> &ffi::request_rec {
        // SAFETY: r is live for 'r (from_raw's contract).
        unsafe { &*self.raw() }
    }

    fn string(self, p: *const c_char) -> Option<&'r [u8]> {
        // SAFETY: the request's strings are NUL-terminated and live in its
        // pool (or longer), so they outlive 'r.
        unsafe { bytes(p) }
    }

    // --- what the request names ---

    pub fn method(self) -> Option<&'r [u8]> {
        self.string(self.rec().method)
    }
    pub fn is_get(self) -> bool {
        self.rec().method_number == ffi::M_GET as c_int
    }
    pub fn uri(self) -> Option<&'r [u8]> {
        self.string(self.rec().uri)
    }
    pub fn unparsed_uri(self) -> Option<&'r [u8]> {
        self.string(self.rec().unparsed_uri)
    }
    pub fn filename(self) -> Option<&'r [u8]> {
        self.string(self.rec().filename)
    }
    pub fn path_info(self) -> Option<&'r [u8]> {
        self.string(self.rec().path_info)
    }
    /// The query string.
    pub fn args(self) -> Option<&'r [u8]> {
        self.string(self.rec().args)
    }
    pub fn handler(self) -> Option<&'r [u8]> {
        self.string(self.rec().handler)
    }
    /// A HEAD request: headers only.
    pub fn header_only(self) -> bool {
        self.rec().header_only != 0
    }
    /// A subrequest (mod_dir, mod_include…), not the client's own request.
    pub fn is_subrequest(self) -> bool {
        !self.rec().main.is_null()
    }
    /// Whether httpd already has an authenticated user.
    pub fn has_user(self) -> bool {
        !self.rec().user.is_null()
    }
    pub fn file_type(self) -> FileType {
        match self.rec().finfo.filetype {
            ffi::apr_filetype_e_APR_REG => FileType::Regular,
            ffi::apr_filetype_e_APR_DIR => FileType::Directory,
            _ => FileType::Other,
        }
    }
    /// `AcceptPathInfo Off` is in force for the request.
    pub fn path_info_rejected(self) -> bool {
        self.rec().used_path_info == ffi::AP_REQ_REJECT_PATH_INFO as c_int
    }
    /// The request's server (its vhost; httpd always sets it).
    pub fn server(self) -> Option<Server> {
        // SAFETY: a request's server lives as long as the configuration
        // generation (longer than the request).
        unsafe { Server::from_raw(self.rec().server) }
    }
    /// `DocumentRoot` in force for the request.
    pub fn document_root(self) -> Option<&'r [u8]> {
        // SAFETY: r is live; the document root is a string of the server's config.
        self.string(unsafe { ffi::ap_document_root(self.raw()) })
    }
    /// `LimitRequestBody` in force (0: none).
    pub fn limit_req_body(self) -> i64 {
        // SAFETY: r is live.
        unsafe { ffi::ap_get_limit_req_body(self.raw()) }
    }
    /// The user and password of Basic credentials, if the request has them.
    pub fn basic_auth(self) -> Option<(&'r [u8], &'r [u8])> {
        let (mut user, mut pw): (*const c_char, *const c_char) = (ptr::null(), ptr::null());
        // SAFETY: r is live; httpd points user and pw at strings in r->pool.
        if unsafe { ffi::ap_get_basic_auth_components(self.raw(), &mut user, &mut pw) } != 0 {
            return None;
        }
        Some((self.string(user)?, self.string(pw)?))
    }

    /// Our merged per-directory record (None when nothing configured it).
    pub fn dir_conf(self) -> Option<&'r DirConfig> {
        // SAFETY: our slot of per_dir_config holds a DirConfig made by
        // create_dir_config or merge_dir_config (in a pool outliving the
        // request), or null.
        unsafe { (module_index::slot(self.rec().per_dir_config) as *const DirConfig).as_ref() }
    }

    /// Whether an `.htaccess` file that could have set the handler (FileInfo
    /// overrides: `SetHandler`, `AddHandler`, `RewriteRule [H=]`, or an
    /// `AllowOverrideList`) was read for this request.
    ///
    /// (httpd leaves `htaccess_result.override_list` uninitialised — its
    /// `.htaccess` cache never fills it in — so it is never read here; an
    /// `AllowOverrideList` in force for the request is seen in its merged
    /// core directory configuration instead.)
    pub fn customer_configurable(self) -> bool {
        // SAFETY: r->htaccess is httpd's list of .htaccess results for this
        // request (pool-allocated, null-terminated); only its initialised
        // fields are read. The core module's slot of per_dir_config holds
        // its core_dir_config, as ap_get_core_module_config reads it.
        unsafe {
            let mut h = self.rec().htaccess;
            let mut read_any = false;
            while let Some(e) = h.as_ref() {
                if !e.htaccess.is_null() {
                    read_any = true;
                    if e.override_ & ffi::OR_FILEINFO as c_int != 0 {
                        return true;
                    }
                }
                h = e.next;
            }
            if !read_any {
                return false;
            }
            let idx = (*ptr::addr_of!(ffi::core_module)).module_index as usize;
            let core = *(self.rec().per_dir_config as *mut *mut ffi::core_dir_config).add(idx);
            core.as_ref().is_some_and(|c| !c.override_list.is_null() && ffi::apr_is_empty_table(c.override_list) == 0)
        }
    }

    // --- tables ---

    fn table(self, t: *mut ffi::apr_table_t) -> Table<'r> {
        Table::new(t)
    }
    pub fn headers_in(self) -> Table<'r> {
        self.table(self.rec().headers_in)
    }
    pub fn headers_out(self) -> Table<'r> {
        self.table(self.rec().headers_out)
    }
    /// Headers sent with error pages too.
    pub fn err_headers_out(self) -> Table<'r> {
        self.table(self.rec().err_headers_out)
    }
    /// The CGI environment.
    pub fn subprocess_env(self) -> Table<'r> {
        self.table(self.rec().subprocess_env)
    }
    /// Request notes (for `%{NAME}n` in log formats).
    pub fn notes(self) -> Table<'r> {
        self.table(self.rec().notes)
    }

    // --- what the glue changes ---

    pub fn set_handler(self, name: &'static CStr) {
        // SAFETY: r is live; the name is a static string, as httpd's handlers are.
        unsafe { (*self.raw()).handler = name.as_ptr() }
    }
    /// A copy of `info` in the request's pool becomes its path info.
    pub fn set_path_info(self, info: &[u8]) {
        let p = self.pstr(info);
        // SAFETY: r is live; p is null or a string in r->pool.
        unsafe { (*self.raw()).path_info = p as *mut c_char }
    }
    /// Make a directory look like no file (mod_dir, mod_autoindex then leave it alone).
    pub fn forget_directory(self) {
        if self.file_type() == FileType::Directory {
            // SAFETY: r is live; a plain field.
            unsafe { (*self.raw()).finfo.filetype = ffi::apr_filetype_e_APR_NOFILE }
        }
    }
    /// Only GET (and so HEAD) is allowed here (for a 405's `Allow`).
    pub fn allow_get(self) {
        // SAFETY: r is live; a plain field.
        unsafe { (*self.raw()).allowed |= 1 << ffi::M_GET }
    }

    /// The CGI environment httpd builds for mod_cgi, mod_proxy_fcgi and
    /// mod_fcgid, in subprocess_env.
    pub fn add_cgi_vars(self) {
        // SAFETY: r is live.
        unsafe {
            ffi::ap_add_common_vars(self.raw());
            ffi::ap_add_cgi_vars(self.raw());
        }
    }

    /// The same CGI variables without those of the path info. With path
    /// info, ap_add_cgi_vars looks it up as a URI (a subrequest, which would
    /// run the current hook again) only to derive PATH_TRANSLATED: hidden
    /// meanwhile, for a caller that sends neither.
    pub fn add_cgi_vars_without_path_info(self) {
        // SAFETY: r is live; path_info is restored before returning.
        unsafe {
            ffi::ap_add_common_vars(self.raw());
            let path_info = (*self.raw()).path_info;
            (*self.raw()).path_info = c"".as_ptr() as *mut c_char;
            ffi::ap_add_cgi_vars(self.raw());
            (*self.raw()).path_info = path_info;
        }
    }

    /// Run `f`, then put subprocess_env back as it was before.
    pub fn with_env_restored<T>(self, f: impl FnOnce() -> T) -> T {
        // SAFETY: r is live; the copy lives in r->pool.
        let saved = unsafe { ffi::apr_table_copy(self.rec().pool, self.rec().subprocess_env) };
        let out = f();
        // SAFETY: as above; the copy is a table of r->pool.
        unsafe { (*self.raw()).subprocess_env = saved };
        out
    }

    // --- the response ---

    pub fn set_status(self, status: Status) {
        // SAFETY: r is live; a plain field.
        unsafe { (*self.raw()).status = status }
    }
    /// The status line's reason phrase (`200 Fine`), copied into the pool.
    pub fn set_status_line(self, line: &[u8]) {
        let p = self.pstr(line);
        // SAFETY: r is live; p is null or a string in r->pool.
        unsafe { (*self.raw()).status_line = p }
    }
    /// The response's Content-Type (ignored if it holds a NUL).
    pub fn set_content_type(self, ct: &[u8]) {
        let c = self.pstr(ct);
        if !c.is_null() {
            // SAFETY: r is live; c is a string in r->pool, as httpd keeps it.
            unsafe { ffi::ap_set_content_type(self.raw(), c) };
        }
    }

    /// Write body bytes to the client (httpd's output filters). Negative
    /// when the client is gone.
    pub fn write(self, b: &[u8]) -> c_int {
        // SAFETY: r is live; ap_rwrite copies the bytes into its brigade.
        unsafe { ffi::ap_rwrite(b.as_ptr() as *const c_void, b.len() as c_int, self.raw()) }
    }

    /// Push what was written to the client now. Negative when the client is gone.
    pub fn flush(self) -> c_int {
        // SAFETY: r is live.
        unsafe { ffi::ap_rflush(self.raw()) }
    }

    /// The body of an error with `status` is `text`, unless the host or the
    /// site has an `ErrorDocument` for it.
    pub fn default_error_text(self, status: Status, text: &str) {
        let Ok(text) = CString::new(text) else { return };
        // SAFETY: r is live; ap_custom_response copies the text into r's
        // pool, and the index is httpd's own for a status it knows.
        unsafe {
            let idx = ffi::ap_index_of_response(status);
            if ffi::ap_response_code_string(self.raw(), idx).is_null() {
                ffi::ap_custom_response(self.raw(), status, text.as_ptr());
            }
        }
    }

    /// A response already under way failed: make sure the client sees a
    /// truncated response rather than a complete-looking one.
    pub fn cut_connection(self) {
        // SAFETY: r and its connection are live.
        unsafe {
            let c = self.rec().connection;
            (*c).keepalive = ffi::ap_conn_keepalive_e_AP_CONN_CLOSE;
            (*c).aborted = 1;
        }
    }

    // --- the request body ---

    /// Set up httpd's (dechunked) body reading; Err is the status to answer.
    pub fn setup_body(self) -> Result<(), Status> {
        // SAFETY: r is live.
        let rc = unsafe { ffi::ap_setup_client_block(self.raw(), ffi::REQUEST_CHUNKED_DECHUNK as c_int) };
        if rc == OK {
            Ok(())
        } else {
            Err(rc)
        }
    }
    /// Whether a body is to be read (after `setup_body`).
    pub fn has_body(self) -> bool {
        // SAFETY: r is live, its body reading set up.
        unsafe { ffi::ap_should_client_block(self.raw()) != 0 }
    }
    /// Read the next piece of the body into `buf`: its length, 0 at the
    /// end, negative when the client failed.
    pub fn read_body(self, buf: &mut [u8]) -> isize {
        // SAFETY: r is live; httpd fills at most buf.len() bytes of buf.
        unsafe { ffi::ap_get_client_block(self.raw(), buf.as_mut_ptr() as *mut c_char, buf.len() as _) as isize }
    }
    /// Read and drop the body (a response that does not need it).
    pub fn discard_body(self) {
        // SAFETY: r is live.
        unsafe { ffi::ap_discard_request_body(self.raw()) };
    }

    /// Send the open file `fd` (at `path`) as the response, the way httpd's
    /// default handler sends a static file: finfo, Last-Modified, ETag,
    /// Content-Length, `ap_meets_conditions` (304/412), a file bucket and EOS
    /// in one brigade (so the byterange filter answers Range requests and
    /// the core output filter uses sendfile), no body for HEAD. The
    /// descriptor is handed to APR (`apr_file_dup`, so the file's lifetime
    /// follows the bucket even when the event MPM sets it aside after the
    /// request pool is gone). Ok is the handler's return value.
    pub fn send_file(self, fd: OwnedFd, path: &[u8]) -> Result<Status, String> {
        // SAFETY: r, its pool and connection are live; every APR object made
        // here lives in r->pool (the file's descriptor is APR's own dup).
        unsafe {
            let r = self.raw();
            let rr = &mut *r;
            let mut raw: ffi::apr_os_file_t = fd.as_raw_fd();
            let mut borrowed: *mut ffi::apr_file_t = ptr::null_mut();
            let flags = (ffi::APR_FOPEN_READ | ffi::APR_FOPEN_SENDFILE_ENABLED) as i32;
            if ffi::apr_os_file_put(&mut borrowed, &mut raw, flags, rr.pool) != 0 {
                return Err("X-Sendfile: APR could not take the file".into());
            }
            let mut f: *mut ffi::apr_file_t = ptr::null_mut();
            if ffi::apr_file_dup(&mut f, borrowed, rr.pool) != 0 || f.is_null() {
                return Err("X-Sendfile: APR could not take the file".into());
            }
            drop(fd);
            if ffi::apr_file_info_get(&mut rr.finfo, ffi::APR_FINFO_NORM as i32, f) != 0 {
                return Err("X-Sendfile: cannot stat the file".into());
            }
            rr.filename = self.pstr(path) as *mut _;
            if rr.content_type.is_null() {
                // mod_mime's answer for the file's name, as for a static file
                // (the handler it may pick is not ours to change now).
                let handler = rr.handler;
                ffi::ap_run_type_checker(r);
                rr.handler = handler;
            }
            ffi::ap_update_mtime(r, rr.finfo.mtime);
            ffi::ap_set_last_modified(r);
            ffi::ap_set_etag(r);
            ffi::ap_set_accept_ranges(r);
            ffi::ap_set_content_length(r, rr.finfo.size);
            let rc = ffi::ap_meets_conditions(r);
            if rc != OK {
                return Ok(rc);
            }
            let c = rr.connection;
            let bb = ffi::apr_brigade_create(rr.pool, (*c).bucket_alloc);
            if rr.header_only == 0 && rr.finfo.size > 0 {
                ffi::apr_brigade_insert_file(bb, f, 0, rr.finfo.size, rr.pool);
            }
            brigade_insert_tail(bb, ffi::apr_bucket_eos_create((*c).bucket_alloc));
            let rv = ffi::ap_pass_brigade(rr.output_filters, bb);
            if rv != 0 && (*c).aborted == 0 {
                return Ok(HTTP_INTERNAL_SERVER_ERROR as Status);
            }
            Ok(OK)
        }
    }

    // --- the rest ---

    /// A copy of `v` in the request's pool (null if it holds a NUL).
    fn pstr(self, v: &[u8]) -> *const c_char {
        // SAFETY: r->pool is the request's live pool (null for no request httpd makes).
        match unsafe { Pool::from_raw(self.rec().pool) } {
            Some(p) => p.pstr(v),
            None => ptr::null(),
        }
    }

    /// Log against the request (adds the client address, like httpd's own messages).
    pub fn log(self, level: u32, msg: &[u8]) {
        // SAFETY: r is the live request of the current hook.
        unsafe { log::request(self.raw(), level, msg) }
    }
}

/// Append bucket `e` to brigade `bb` (APR's `APR_BRIGADE_INSERT_TAIL`
/// macro, which bindgen cannot see: the ring's sentinel is the brigade's
/// list head viewed as a bucket, as APR_RING_SENTINEL computes it).
///
/// # Safety
/// `bb` is a live brigade and `e` a live bucket in no brigade.
unsafe fn brigade_insert_tail(bb: *mut ffi::apr_bucket_brigade, e: *mut ffi::apr_bucket) {
    // SAFETY: per the contract; the offsets are those of the C structs, so
    // `sentinel` aliases `bb->list` exactly as the macros do, and only its
    // `link` field is ever touched.
    unsafe {
        let sentinel = (ptr::addr_of_mut!((*bb).list) as *mut u8).sub(std::mem::offset_of!(ffi::apr_bucket, link)) as *mut ffi::apr_bucket;
        let last = (*bb).list.prev;
        (*e).link.next = sentinel;
        (*e).link.prev = last;
        (*last).link.next = e;
        (*bb).list.prev = e;
    }
}

/// A request hook's `extern "C"` body: the raw request made a `Req`, `f`
/// run under the one panic guard (a panic is logged against the request
/// and answered `on_panic`).
///
/// # Safety
/// `r` is the live request httpd passed to the hook being run.
pub(super) unsafe fn hook(r: *mut ffi::request_rec, what: &str, on_panic: Status, f: impl FnOnce(Req<'_>) -> Status) -> Status {
    // SAFETY: the caller's contract.
    let Some(req) = (unsafe { Req::from_raw(r) }) else { return on_panic };
    crate::core::guard::guard(what, on_panic, |m| req.log(log::ERR, m.as_bytes()), || f(req))
}
