//! Which requests are ours, decided from the customer's `.htaccess` files:
//! an app (`SuFcgiApp`) owns its whole directory tree, existing or not, so it
//! is claimed when lighttpd has composed the physical path (before lighttpd
//! would answer 404 for a path that is not a file); a wrapped extension
//! (`SuFcgiWrapper`) or `AddHandler sufcgi-script` applies to existing files,
//! claimed after lighttpd split off PATH_INFO.

use super::dirconf::{self, DirError};
use super::exchange::{ctx_of, Ctx, Job};
use super::runtime::{self, Runtime};
use super::{ffi, log, settings, status};
use crate::core::htaccess_file::{Layer, Policy};
use crate::core::identity::WrappedScript;
use crate::core::mapping::split_mount;
use crate::core::php_ini;
use crate::core::status_page::request_dir;
use crate::core::request::{AppKind, PoolSpec};
use std::ffi::OsStr;
use std::os::raw::c_int;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

thread_local! {
    /// The configuration `physical` found for a request it did not take,
    /// kept for `subrequest_start` of the same request (the common case: the
    /// file's directory is the one `physical` read up to), so the files are
    /// not looked at twice. (request, directory, configuration)
    static ROUTED: std::cell::RefCell<Option<(usize, PathBuf, Rc<Layer>)>> = const { std::cell::RefCell::new(None) };
}

pub(super) fn buf(b: &ffi::buffer) -> &[u8] {
    if b.ptr.is_null() || b.used == 0 {
        return &[];
    }
    // SAFETY: a lighttpd buffer holds `used` bytes including the final NUL.
    unsafe { std::slice::from_raw_parts(b.ptr as *const u8, b.used as usize - 1) }
}

fn path(b: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(b))
}

/// End the request with `status` (lighttpd writes the error page).
pub(super) unsafe fn answer(r: *mut ffi::request_st, status: c_int, why: &str) -> ffi::handler_t {
    log::request(r, format!("sufcgi: {why}").as_bytes());
    // SAFETY: r is live (the caller's contract).
    unsafe {
        (*r).http_status = status;
        (*r).handler_module = std::ptr::null();
    }
    ffi::handler_t_HANDLER_FINISHED
}

/// The merged `.htaccess` configuration for `dirs`, or the answer to give.
unsafe fn layer(r: *mut ffi::request_st, rt: &Runtime, dirs: &[PathBuf]) -> Result<Rc<Layer>, ffi::handler_t> {
    let env_allowed = |n: &[u8]| rt.host.env_allowed(n);
    let php_forbidden = |n: &[u8]| php_ini::is_forbidden(n, &rt.php_forbid);
    let policy = Policy { env_allowed: &env_allowed, php_forbidden: &php_forbidden };
    match dirconf::layer_for(dirs, &policy) {
        Ok(l) => Ok(l),
        // As Apache reports a bad .htaccess line: file, line, reason; 500.
        // SAFETY: r is live.
        Err(DirError::Line { file, line }) => Err(unsafe {
            answer(r, 500, &format!("{}: line {}: {}", file.display(), line.line, line.reason))
        }),
        // SAFETY: r is live.
        Err(DirError::Unreadable { file, why }) => Err(unsafe {
            answer(r, 403, &format!("{}: unable to check htaccess file, ensure it is readable: {why}", file.display()))
        }),
    }
}

/// `handle_physical`: refuse `.ht*` files; claim app trees.
///
/// # Safety
/// `r` is the live request; `self_` our plugin record.
pub unsafe fn physical(r: *mut ffi::request_st, self_: *const ffi::plugin, id: usize) -> ffi::handler_t {
    // SAFETY: the caller's contract.
    unsafe {
        let rr = &mut *r;
        // Whatever an earlier request left there is not this request's.
        ROUTED.with(|c| c.borrow_mut().take());
        if !rr.handler_module.is_null() {
            return ffi::handler_t_HANDLER_GO_ON;
        }
        let Some(rt) = runtime::get() else { return ffi::handler_t_HANDLER_GO_ON };
        let full = buf(&rr.physical.path).to_vec();
        let base = buf(&rr.physical.basedir).to_vec();
        let name = full.rsplit(|&c| c == b'/').next().unwrap_or(&[]);
        // The files this plugin reads as configuration are never content (as
        // Apache's default `<Files ".ht*">` rule).
        if name.starts_with(b".ht") {
            return answer(r, 403, &format!("{} is configuration, not content", String::from_utf8_lossy(&full)));
        }
        if status::host_page(r, &rt) {
            return status::serve(r, &rt, None, false);
        }
        if base.is_empty() {
            return ffi::handler_t_HANDLER_GO_ON;
        }
        let Some((dirs, _)) = dirconf::dirs_to(&path(&base), &path(&full)) else { return ffi::handler_t_HANDLER_GO_ON };
        let layer = match layer(r, &rt, &dirs) {
            Ok(l) => l,
            Err(rc) => return rc,
        };
        if let Some(def) = layer.cfg.authorizer() {
            // Asked first; once it let the request through, lighttpd runs the
            // request again and it goes on to its handler.
            let c = ctx_of(r, id);
            if c.is_null() || !(*c).authorized() {
                let (program, args, workdir) = (def.program.clone(), def.args.clone(), def.dir.clone());
                return claim(r, self_, id, rt, &layer, AppKind::Authorizer, program, args, workdir, None, Vec::new());
            }
        }
        if layer.is_status_page() || layer.is_metrics_page() {
            let dir = request_dir(&full, path(&full).is_dir());
            return status::serve(r, &rt, Some(dir), layer.is_metrics_page());
        }
        let Some(def) = layer.cfg.app() else {
            if let Some(d) = dirs.last() {
                ROUTED.with(|c| *c.borrow_mut() = Some((r as usize, d.clone(), layer)));
            }
            return ffi::handler_t_HANDLER_GO_ON;
        };
        let uri = buf(&rr.uri.path).to_vec();
        let mut overrides: Vec<(&'static [u8], Vec<u8>)> = vec![(b"SCRIPT_FILENAME", def.program.as_os_str().as_bytes().to_vec())];
        if let Some((script_name, info)) = split_mount(&uri, &full, def.dir.as_os_str().as_bytes()) {
            let mut translated = Vec::new();
            if !info.is_empty() {
                translated = base.clone();
                translated.extend_from_slice(&info);
            }
            overrides.push((b"SCRIPT_NAME", script_name));
            overrides.push((b"PATH_INFO", info));
            overrides.push((b"PATH_TRANSLATED", translated));
        }
        let (program, args, workdir) = (def.program.clone(), def.args.clone(), def.dir.clone());
        claim(r, self_, id, rt, &layer, AppKind::App, program, args, workdir, None, overrides)
    }
}

/// `handle_subrequest_start`: wrapped extensions and `AddHandler sufcgi-script`.
///
/// # Safety
/// As `physical`.
pub unsafe fn subrequest_start(r: *mut ffi::request_st, self_: *const ffi::plugin, id: usize) -> ffi::handler_t {
    // SAFETY: the caller's contract.
    unsafe {
        let rr = &mut *r;
        if !rr.handler_module.is_null() {
            return ffi::handler_t_HANDLER_GO_ON;
        }
        let Some(rt) = runtime::get() else { return ffi::handler_t_HANDLER_GO_ON };
        let file = path(buf(&rr.physical.path));
        let base = path(buf(&rr.physical.basedir));
        if !dirconf::is_file(&file) {
            return ffi::handler_t_HANDLER_GO_ON;
        }
        let Some(parent) = file.parent() else { return ffi::handler_t_HANDLER_GO_ON };
        let routed = ROUTED.with(|c| c.borrow_mut().take()).filter(|(req, dir, _)| *req == r as usize && dir == parent);
        let layer = match routed {
            Some((_, _, l)) => l,
            None => {
                let Some((dirs, true)) = dirconf::dirs_to(&base, parent) else { return ffi::handler_t_HANDLER_GO_ON };
                match layer(r, &rt, &dirs) {
                    Ok(l) => l,
                    Err(rc) => return rc,
                }
            }
        };
        let fname = file.as_os_str().as_bytes();
        if let Some(w) = layer.cfg.wrapper_for(fname) {
            let (cmd, args, dir) = (w.command.clone(), layer.cfg.wrapper_args(w), w.workdir_for(&file));
            let script = Some(WrappedScript::new(file.clone(), w));
            return claim(r, self_, id, rt, &layer, AppKind::Wrapper, cmd, args, dir, script, Vec::new());
        }
        if layer.is_script(fname) {
            return claim(r, self_, id, rt, &layer, AppKind::Script, file.clone(), Vec::new(), parent.to_path_buf(), None, Vec::new());
        }
        ffi::handler_t_HANDLER_GO_ON
    }
}

/// Take the request: build the pool spec and hang a Ctx on it.
#[allow(clippy::too_many_arguments)]
unsafe fn claim(
    r: *mut ffi::request_st,
    self_: *const ffi::plugin,
    id: usize,
    rt: Arc<Runtime>,
    layer: &Layer,
    kind: AppKind,
    program: PathBuf,
    args: Vec<Vec<u8>>,
    workdir: PathBuf,
    script: Option<WrappedScript>,
    overrides: Vec<(&'static [u8], Vec<u8>)>,
) -> ffi::handler_t {
    // SAFETY: the caller's contract.
    unsafe {
        let context = settings::identity_context(r, &rt.identity_contexts) as usize;
        // The supervisor's entry for this context; None after a reload that
        // changed its identity (answered 503 by the exchange).
        let vhost = rt.vhost_index.get(context).copied().flatten();
        let basedir = path(buf(&(*r).physical.basedir));
        let configured = rt.docroots.get(context).cloned().unwrap_or_default();
        if !rt.has_owner.get(context).copied().unwrap_or(false) && basedir != configured {
            // The owner comes from the configured document root; a root set
            // at run time (mod_simple_vhost, mod_userdir) needs sufcgi.owner.
            return answer(r, 500, &format!(
                "the request's document root {} is not the configured one ({}); set sufcgi.owner for this host",
                basedir.display(),
                configured.display()
            ));
        }
        let cfg = &layer.cfg;
        let spec = PoolSpec::for_directory(rt.host.generation, vhost.unwrap_or(0), kind, program, args, workdir, cfg, None);
        let stale = vhost.is_none().then(|| {
            "this host's owner or document root changed on reload; restart lighttpd to apply it".to_string()
        });
        let job = Job { kind, spec, script, busy_page: cfg.busy_page.clone(), overrides, stale };
        let ctx = Ctx::new(r, rt, job);
        // What its authorizer left there (it let the request through) is done with.
        let earlier = ctx_of(r, id);
        if !earlier.is_null() {
            drop(Box::from_raw(earlier));
        }
        *(*r).plugin_ctx.add(id) = Box::into_raw(ctx) as *mut std::ffi::c_void;
        (*r).handler_module = self_;
        ffi::handler_t_HANDLER_GO_ON
    }
}
