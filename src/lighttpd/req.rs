//! The thin safe layer over lighttpd's `request_st` and its `connection`,
//! as nginx's ngx-rust wraps `ngx_http_request_t`: what the routing, the
//! status page and the relay read and set of a request — paths, headers,
//! the CGI environment, the body queue, the response (status, headers,
//! body), our plugin slot — and scheduling its connection. The raw pointer
//! work of the request path is here, each access a short `unsafe` block;
//! the glue above it is safe Rust.
//!
//! `Req` and `Con` are handles, not borrows: lighttpd keeps a request (and
//! its connection) alive from its first hook to `handle_request_reset`, and
//! what we keep of a request between hooks lives in its own plugin slot
//! (dropped at that reset) or names it only while it is registered there
//! (a waiter's place, a shared connection's member, an fd we watch for it).
//! A handle is made only from what lighttpd passed to a hook. (Not a
//! `Req<'r>` borrow as a hook's request under Apache: an exchange runs over
//! many of lighttpd's calls — hooks, fd events, the timeout check — and
//! keeps its request's handle in between.)

use super::ffi;
use super::server::{buffer_bytes, log_to, Handled, Plugin, Server};
use crate::core::fastcgi::cgi_headers::{is_hop_by_hop, CgiHeaders};
use std::os::fd::{AsRawFd, BorrowedFd, IntoRawFd, OwnedFd};
use std::os::raw::{c_char, c_int, c_void};
use std::any::TypeId;
use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::OnceLock;

/// A live lighttpd request (see the module comment).
#[derive(Clone, Copy)]
pub struct Req(NonNull<ffi::request_st>);

/// A live lighttpd connection: the one a request came on.
#[derive(Clone, Copy)]
pub struct Con(NonNull<ffi::connection>);

/// The one type our plugin slot holds (as an `Rc`): the first one stored or
/// asked for. Asking for another finds nothing and stores nothing, so the
/// slot is never read as a type it does not hold.
static SLOT_TYPE: OnceLock<TypeId> = OnceLock::new();

fn slot_holds<T: 'static>() -> bool {
    *SLOT_TYPE.get_or_init(TypeId::of::<T>) == TypeId::of::<T>()
}

/// The request headers and response headers the glue names. lighttpd keeps
/// the headers it knows by id; `Other` is one it does not.
#[derive(Clone, Copy)]
pub enum Header {
    ContentType,
    Allow,
    CacheControl,
    Authorization,
    Other,
}

impl Header {
    fn id(self) -> ffi::http_header_e {
        match self {
            Header::ContentType => ffi::http_header_e_HTTP_HEADER_CONTENT_TYPE,
            Header::Allow => ffi::http_header_e_HTTP_HEADER_ALLOW,
            Header::CacheControl => ffi::http_header_e_HTTP_HEADER_CACHE_CONTROL,
            Header::Authorization => ffi::http_header_e_HTTP_HEADER_AUTHORIZATION,
            Header::Other => ffi::http_header_e_HTTP_HEADER_OTHER,
        }
    }
}

/// The request methods the glue tells apart.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Options,
    Other,
}

impl Con {
    /// Schedule the connection for processing: lighttpd runs its request's
    /// hooks again (its static inline `joblist_append`, which the binary
    /// does not export).
    pub fn schedule(&self) {
        let con = self.0.as_ptr();
        // SAFETY: a Con names a live connection (the module comment);
        // log_con_jqueue is lighttpd's job list head (a sentinel-terminated
        // list), only touched on lighttpd's one thread, which this is.
        unsafe {
            if (*con).jqnext.is_null() {
                (*con).jqnext = ffi::log_con_jqueue;
                ffi::log_con_jqueue = con;
            }
        }
    }

    /// The server it runs on.
    pub fn server(&self) -> Server {
        // SAFETY: a live connection's `srv` is lighttpd's live server record
        // (set when lighttpd makes the connection, never null).
        unsafe { Server::from_live((*self.0.as_ptr()).srv) }
    }
}

impl Req {
    /// # Safety
    /// `r` is null or the live request lighttpd passed to a hook; the
    /// handle (and its copies) is used only as the module comment says.
    pub unsafe fn from_raw(r: *mut ffi::request_st) -> Option<Req> {
        NonNull::new(r).map(Req)
    }

    /// Which request this is, to tell requests apart (not to reach it).
    pub fn id(&self) -> usize {
        self.0.as_ptr() as usize
    }

    fn raw(&self) -> *mut ffi::request_st {
        self.0.as_ptr()
    }

    /// A shared view for reading fields, not held across calls into lighttpd.
    fn get(&self) -> &ffi::request_st {
        // SAFETY: a Req names a live request; lighttpd runs on this one
        // thread and does not change it while our code runs, except in the
        // calls below, which never overlap a view.
        unsafe { self.0.as_ref() }
    }

    /// Log against the request (its conditional error log).
    pub fn log(&self, msg: &[u8]) {
        log_to(self.get().conf.errh as *mut ffi::log_error_st, msg);
    }

    pub fn con(&self) -> Con {
        // SAFETY: a live request's `con` is its live connection (set when
        // lighttpd makes the request, never null).
        Con(unsafe { NonNull::new_unchecked(self.get().con) })
    }

    // ---- what the request is ----

    /// `r->physical.path`: the file the request maps to.
    pub fn physical_path(&self) -> Vec<u8> {
        // SAFETY: the request's own buffer, copied at once.
        unsafe { buffer_bytes(&self.get().physical.path) }.to_vec()
    }

    /// `r->physical.basedir`: the document root the path was mapped under.
    pub fn physical_basedir(&self) -> Vec<u8> {
        // SAFETY: as physical_path.
        unsafe { buffer_bytes(&self.get().physical.basedir) }.to_vec()
    }

    /// `r->physical.doc_root`.
    pub fn doc_root(&self) -> Vec<u8> {
        // SAFETY: as physical_path.
        unsafe { buffer_bytes(&self.get().physical.doc_root) }.to_vec()
    }

    /// The URL path (decoded).
    pub fn uri_path(&self) -> Vec<u8> {
        // SAFETY: as physical_path.
        unsafe { buffer_bytes(&self.get().uri.path) }.to_vec()
    }

    /// The query string.
    pub fn query(&self) -> Vec<u8> {
        // SAFETY: as physical_path.
        unsafe { buffer_bytes(&self.get().uri.query) }.to_vec()
    }

    /// The request target as sent.
    pub fn target(&self) -> Vec<u8> {
        // SAFETY: as physical_path.
        unsafe { buffer_bytes(&self.get().target) }.to_vec()
    }

    pub fn method(&self) -> Method {
        match self.get().http_method {
            ffi::http_method_t_HTTP_METHOD_GET => Method::Get,
            ffi::http_method_t_HTTP_METHOD_HEAD => Method::Head,
            ffi::http_method_t_HTTP_METHOD_OPTIONS => Method::Options,
            _ => Method::Other,
        }
    }

    /// The method's name ("?" if lighttpd has none).
    pub fn method_name(&self) -> Vec<u8> {
        // SAFETY: lighttpd's static method-name table: a static buffer or null.
        let b = unsafe { ffi::http_method_buf(self.get().http_method) };
        // SAFETY: as above.
        if b.is_null() { b"?".to_vec() } else { unsafe { buffer_bytes(b) }.to_vec() }
    }

    /// A request header's value (copied), if present.
    pub fn request_header(&self, h: Header, name: &[u8]) -> Option<Vec<u8>> {
        // SAFETY: the request is live; lighttpd returns its own buffer or
        // null, copied at once.
        unsafe {
            let b = ffi::http_header_request_get(self.raw(), h.id(), name.as_ptr() as *const c_char, name.len() as u32);
            let b = b.as_ref()?;
            if b.ptr.is_null() || b.used < 1 {
                return None;
            }
            Some(buffer_bytes(b).to_vec())
        }
    }

    /// Whether lighttpd.conf's condition block `context` matches the request.
    pub fn matches_context(&self, context: u32) -> bool {
        // SAFETY: the request is live; context is an index of this configuration.
        unsafe { ffi::config_check_cond(self.raw(), context as i32) != 0 }
    }

    /// The host has lighttpd make its own error pages
    /// (`server.errorfile-prefix`, `server.error-handler`).
    pub fn host_error_pages(&self) -> bool {
        let conf = &self.get().conf;
        !conf.errorfile_prefix.is_null() || !conf.error_handler.is_null()
    }

    // ---- who handles it ----

    /// Some module (we or another) took the request.
    pub fn is_handled(&self) -> bool {
        !self.get().handler_module.is_null()
    }

    /// Take the request: lighttpd calls our subrequest hook for it.
    pub fn claim_handler(&self, p: Plugin) {
        // SAFETY: the request is live; p.record is our plugin record.
        unsafe { (*self.raw()).handler_module = p.record };
    }

    /// No module handles it any more (lighttpd answers its status itself).
    pub fn release_handler(&self) {
        // SAFETY: the request is live.
        unsafe { (*self.raw()).handler_module = std::ptr::null() };
    }

    /// lighttpd's own bound on a request going round: one more round, and
    /// how many it has been.
    pub fn count_loop(&self) -> i32 {
        // SAFETY: the request is live.
        unsafe {
            (*self.raw()).loops_per_request += 1;
            (*self.raw()).loops_per_request as i32
        }
    }

    // ---- our plugin slot ----

    fn slot(&self, p: Plugin) -> *mut *mut c_void {
        // SAFETY: plugin_ctx has one entry per loaded plugin; ours is at our id.
        unsafe { self.get().plugin_ctx.add(p.id) }
    }

    /// What we hung on the request, if anything.
    pub fn ctx<T: 'static>(&self, p: Plugin) -> Option<Rc<T>> {
        if !slot_holds::<T>() {
            return None;
        }
        // SAFETY: our slot is null or an Rc<T> (SLOT_TYPE) that the slot
        // owns; the count is raised for the one returned.
        unsafe {
            let v = *self.slot(p) as *const T;
            if v.is_null() {
                return None;
            }
            Rc::increment_strong_count(v);
            Some(Rc::from_raw(v))
        }
    }

    /// Hang `v` on the request (what was there before is dropped).
    pub fn set_ctx<T: 'static>(&self, p: Plugin, v: Rc<T>) {
        if !slot_holds::<T>() {
            return;
        }
        self.clear_ctx::<T>(p);
        // SAFETY: our slot, empty now; it owns the Rc until cleared.
        unsafe { *self.slot(p) = Rc::into_raw(v) as *mut c_void };
    }

    /// Drop what we hung on the request.
    pub fn clear_ctx<T: 'static>(&self, p: Plugin) {
        if !slot_holds::<T>() {
            return;
        }
        // SAFETY: our slot holds null or an Rc<T> it owns (SLOT_TYPE);
        // emptied before the value is dropped.
        let old = unsafe { std::mem::replace(&mut *self.slot(p), std::ptr::null_mut()) } as *const T;
        if !old.is_null() {
            // SAFETY: the slot's reference, taken out above.
            drop(unsafe { Rc::from_raw(old) });
        }
    }

    // ---- the request body ----

    /// CONTENT_LENGTH; -1 while a chunked body streams in.
    pub fn body_length(&self) -> i64 {
        self.get().reqbody_length
    }

    /// Body bytes received so far.
    pub fn body_received(&self) -> i64 {
        self.get().reqbody_queue.bytes_in
    }

    /// Body bytes taken out of the queue so far.
    pub fn body_taken(&self) -> i64 {
        self.get().reqbody_queue.bytes_out
    }

    /// Read what the client sent of the body into the queue (the
    /// connection's `reqbody_read`); None if the connection has no reader.
    pub fn read_body(&self) -> Option<Handled> {
        // SAFETY: the connection is live; its reader is lighttpd's, called
        // with the request it belongs to.
        unsafe {
            let read = (*self.get().con).reqbody_read?;
            Some(Handled(read(self.raw())))
        }
    }

    /// Answer a body-reading error (`status`: 411 for a chunked body).
    pub fn body_read_error(&self, status: c_int) -> Handled {
        // SAFETY: the request is live.
        Handled(unsafe { ffi::http_response_reqbody_read_error(self.raw(), status) })
    }

    /// Take the next bytes of the body queue, at most `scratch.len()`, and
    /// hand them to `f` first: memory chunks by reference, file chunks
    /// (bodies lighttpd spooled to disk) copied into `scratch`. `f` must
    /// not touch the request's body queue (the bytes may be its own).
    /// Ok(how many), 0 when nothing is there; Err if lighttpd could not
    /// read them.
    pub fn drain_body(&self, scratch: &mut [u8], f: impl FnOnce(&[u8])) -> Result<usize, ()> {
        let mut want = scratch.len().min(u32::MAX as usize) as u32;
        let mut data: *mut c_char = scratch.as_mut_ptr() as *mut c_char;
        // SAFETY: the request is live and this is its own body queue;
        // scratch is writable for `want` bytes.
        let rc = unsafe {
            let r = self.raw();
            ffi::chunkqueue_peek_data(&mut (*r).reqbody_queue, &mut data, &mut want, (*r).conf.errh as *mut _)
        };
        if rc != 0 || data.is_null() {
            return Err(());
        }
        if want == 0 {
            return Ok(0);
        }
        // SAFETY: lighttpd pointed `data` at `want` bytes (in scratch or in a
        // memory chunk), unchanged until the queue is next touched, which
        // happens below, after `f`.
        f(unsafe { std::slice::from_raw_parts(data as *const u8, want as usize) });
        // SAFETY: the request is live; `want` bytes were peeked from its queue.
        unsafe { ffi::chunkqueue_mark_written(&mut (*self.raw()).reqbody_queue, want as i64) };
        Ok(want as usize)
    }

    /// The CGI environment lighttpd builds for mod_fastcgi, pair by pair.
    /// Request headers whose names `hide` picks are left out: their values
    /// are blanked for the duration of the call (lighttpd skips blank
    /// values) and restored before it returns.
    pub fn cgi_env(&self, authorizer: bool, hide: impl Fn(&[u8]) -> bool, mut each: impl FnMut(&[u8], &[u8])) {
        let hidden = self.blank_headers(&hide);
        let mut opts = ffi::http_cgi_opts { authorizer: authorizer as _, break_scriptfilename_for_php: 0, docroot: std::ptr::null(), strip_request_uri: std::ptr::null() };
        let mut f: &mut dyn FnMut(&[u8], &[u8]) = &mut each;
        // SAFETY: the request is live; the callback gets `f` back as its
        // vdata, alive for the call.
        unsafe { ffi::http_cgi_headers(self.raw(), &mut opts, Some(cgi_pair), &mut f as *mut &mut dyn FnMut(&[u8], &[u8]) as *mut c_void) };
        for (b, used) in hidden {
            // SAFETY: restoring the lengths saved by blank_headers on the
            // same live header buffers (nothing freed them meanwhile).
            unsafe { (*b).used = used };
        }
    }

    /// Blank the values of the request headers whose names `hide` picks;
    /// what to restore.
    fn blank_headers(&self, hide: &dyn Fn(&[u8]) -> bool) -> Vec<(*mut ffi::buffer, u32)> {
        let mut hidden = Vec::new();
        // SAFETY: the request is live; rqst_headers holds `used`
        // data_string pointers, and single-threaded lighttpd does not look
        // at them while we hold them.
        unsafe {
            let a = &(*self.raw()).rqst_headers;
            for i in 0..a.used as usize {
                let ds = *a.data.add(i) as *mut ffi::data_string;
                let Some(d) = ds.as_mut() else { continue };
                if hide(buffer_bytes(&d.key)) {
                    hidden.push((&mut d.value as *mut ffi::buffer, d.value.used));
                    d.value.used = 0;
                }
            }
        }
        hidden
    }

    // ---- the response ----

    pub fn status(&self) -> c_int {
        self.get().http_status
    }

    pub fn set_status(&self, status: c_int) {
        // SAFETY: the request is live.
        unsafe { (*self.raw()).http_status = status };
    }

    /// End the request with `status` (lighttpd writes the error page).
    pub fn answer(&self, status: c_int, why: &str) -> Handled {
        self.log(format!("sufcgi: {why}").as_bytes());
        self.set_status(status);
        self.release_handler();
        Handled::FINISHED
    }

    /// Set a response header (replacing one of that name).
    pub fn set_header(&self, h: Header, name: &[u8], value: &[u8]) {
        // SAFETY: the request is live; lighttpd copies name and value.
        unsafe { ffi::http_header_response_set(self.raw(), h.id(), name.as_ptr() as *const c_char, name.len() as u32, value.as_ptr() as *const c_char, value.len() as u32) };
    }

    /// Add a response header (beside others of that name).
    fn insert_header(&self, id: ffi::http_header_e, name: &[u8], value: &[u8]) {
        // SAFETY: as set_header.
        unsafe { ffi::http_header_response_insert(self.raw(), id, name.as_ptr() as *const c_char, name.len() as u32, value.as_ptr() as *const c_char, value.len() as u32) };
    }

    /// Put an app's CGI headers on the response, with its status; nothing
    /// of the response may have been produced yet.
    pub fn apply_cgi_headers(&self, h: &CgiHeaders) {
        if let Some(ct) = &h.content_type {
            self.insert_header(ffi::http_header_e_HTTP_HEADER_CONTENT_TYPE, b"Content-Type", ct);
        }
        if let Some(loc) = &h.location {
            self.insert_header(ffi::http_header_e_HTTP_HEADER_LOCATION, b"Location", loc);
        }
        for (k, v) in &h.headers {
            // Content-Length too: lighttpd frames the body itself.
            if is_hop_by_hop(k) || k.eq_ignore_ascii_case(b"content-length") {
                continue;
            }
            // SAFETY: a pure lookup in lighttpd's table of known names.
            let id = unsafe { ffi::http_header_hkey_get(k.as_ptr() as *const c_char, k.len()) };
            self.insert_header(id, k, v);
        }
        self.set_status(h.status as c_int);
        // SAFETY: the request is live.
        unsafe { (*self.raw()).resp_body_started = 1 };
    }

    /// Set a value of the request's environment (for `accesslog.format`'s
    /// `%{…}e`, and what an authorizer passes on).
    pub fn set_env(&self, name: &[u8], value: &[u8]) {
        // SAFETY: the request is live; lighttpd copies name and value.
        unsafe { ffi::http_header_env_set(self.raw(), name.as_ptr() as *const c_char, name.len() as u32, value.as_ptr() as *const c_char, value.len() as u32) };
    }

    /// Append to the response body; false if lighttpd could not store it
    /// (its temp files).
    pub fn append_body(&self, bytes: &[u8]) -> bool {
        // SAFETY: the request is live; lighttpd copies the bytes into the response queue.
        unsafe { ffi::http_chunk_append_mem(self.raw(), bytes.as_ptr() as *const c_char, bytes.len()) == 0 }
    }

    /// The response body is complete (lighttpd frames it, answers HEAD and
    /// ranges itself).
    pub fn finish_body(&self) {
        // SAFETY: the request is live.
        unsafe { (*self.raw()).resp_body_finished = 1 };
    }

    /// The backend's response is complete.
    pub fn backend_done(&self) {
        // SAFETY: the request is live.
        unsafe { ffi::http_response_backend_done(self.raw()) };
    }

    /// The backend failed mid-response: lighttpd cuts the response.
    pub fn backend_error(&self) {
        // SAFETY: the request is live.
        unsafe { ffi::http_response_backend_error(self.raw()) };
    }

    /// Forget the response and the physical mapping: lighttpd maps the
    /// request afresh (an authorizer let it through).
    pub fn reset_response(&self) {
        // SAFETY: the request is live.
        unsafe { ffi::http_response_reset(self.raw()) };
    }

    // ---- sending a file as lighttpd sends static files ----

    /// The mimetype lighttpd's table gives `name`, if any.
    pub fn mimetype(&self, name: &[u8]) -> Option<Vec<u8>> {
        // SAFETY: the request's mimetype table is live with its config; the
        // result is null or a buffer of that table, copied at once.
        unsafe {
            let ct = ffi::stat_cache_mimetype_by_ext(self.get().conf.mimetypes, name.as_ptr() as *const c_char, name.len() as u32);
            ct.as_ref().filter(|b| b.used > 1 && !b.ptr.is_null()).map(|b| buffer_bytes(b).to_vec())
        }
    }

    /// An ETag for the file `fd` is, as lighttpd makes one (when the host's
    /// `static-file.etags` are on).
    pub fn set_etag_of(&self, fd: BorrowedFd<'_>) {
        // SAFETY: an all-zero stat is a valid out-buffer for fstat.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat on a descriptor we hold, into a local.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return;
        }
        let flags = self.get().conf.etag_flags();
        if flags == 0 {
            return;
        }
        // SAFETY: the request's scratch buffer is ours for the duration of
        // the call; lighttpd copies the header value.
        unsafe {
            let b = self.get().tmp_buf;
            ffi::http_etag_create(b, &st as *const libc::stat as *const _, flags as i32);
            if (*b).used > 1 {
                ffi::http_header_response_set(self.raw(), ffi::http_header_e_HTTP_HEADER_ETAG, c"ETag".as_ptr(), 4, (*b).ptr, (*b).used - 1);
            }
        }
    }

    /// Last-Modified from `mtime` (seconds); true if lighttpd answered the
    /// request's conditions itself (304/412).
    pub fn answered_conditional(&self, mtime: i64) -> bool {
        // SAFETY: the request is live; the Last-Modified buffer lighttpd
        // returns is its own header's, passed straight back.
        unsafe {
            let lmod = ffi::http_response_set_last_modified(self.raw(), mtime);
            ffi::http_response_handle_cachable(self.raw(), lmod, mtime) == ffi::handler_t_HANDLER_FINISHED as i32
        }
    }

    /// Append `len` bytes of the open file `fd` from `start` to the
    /// response (sent with sendfile); lighttpd takes the descriptor.
    pub fn append_file(&self, path: &[u8], fd: OwnedFd, start: u64, len: u64) {
        // SAFETY: the request's scratch buffer is ours for the duration of
        // the call (lighttpd copies the name); the chunk owns the fd after.
        unsafe {
            let b = self.get().tmp_buf;
            ffi::buffer_copy_string_len(b, path.as_ptr() as *const c_char, path.len());
            ffi::http_chunk_append_file_fd_range(self.raw(), b, fd.into_raw_fd(), start as i64, len as i64);
        }
    }
}

/// http_cgi_headers' callback: one name and value to `vdata`'s closure.
unsafe extern "C" fn cgi_pair(vdata: *mut c_void, k: *const c_char, klen: usize, v: *const c_char, vlen: usize) -> c_int {
    // SAFETY: vdata is the closure cgi_env passed, alive for the call; k
    // and v are valid for klen/vlen bytes for the duration of the call.
    unsafe {
        let f = &mut *(vdata as *mut &mut dyn FnMut(&[u8], &[u8]));
        let key = std::slice::from_raw_parts(k as *const u8, klen);
        let val = if vlen == 0 { &[][..] } else { std::slice::from_raw_parts(v as *const u8, vlen) };
        f(key, val);
    }
    0
}
