//! Which requests are ours, decided from the customer's `.htaccess` files:
//! an app (`SuFcgiApp`) owns its whole directory tree, existing or not, so it
//! is claimed when lighttpd has composed the physical path (before lighttpd
//! would answer 404 for a path that is not a file); a wrapped extension
//! (`SuFcgiWrapper`) or `AddHandler sufcgi-script` applies to existing files,
//! claimed after lighttpd split off PATH_INFO.

use super::dirconf::{self, DirError};
use super::exchange::{self, Job};
use super::req::Req;
use super::runtime::{self, Runtime};
use super::server::{Handled, Plugin};
use super::{settings, status};
use crate::core::htaccess_file::{Layer, Policy};
use crate::core::identity::WrappedScript;
use crate::core::mapping::split_mount;
use crate::core::php_ini;
use crate::core::status_page::request_dir;
use crate::core::request::{AppKind, PoolSpec};
use std::ffi::OsStr;
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

fn path(b: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(b))
}

/// The merged `.htaccess` configuration for `dirs`, or the answer to give.
fn layer(req: Req, rt: &Runtime, dirs: &[PathBuf]) -> Result<Rc<Layer>, Handled> {
    let env_allowed = |n: &[u8]| rt.host.env_allowed(n);
    let php_forbidden = |n: &[u8]| php_ini::is_forbidden(n, &rt.php_forbid);
    let policy = Policy { env_allowed: &env_allowed, php_forbidden: &php_forbidden };
    match dirconf::layer_for(dirs, &policy) {
        Ok(l) => Ok(l),
        // As Apache reports a bad .htaccess line: file, line, reason; 500.
        Err(DirError::Line { file, line }) => Err(req.answer(500, &format!("{}: line {}: {}", file.display(), line.line, line.reason))),
        Err(DirError::Unreadable { file, why }) => {
            Err(req.answer(403, &format!("{}: unable to check htaccess file, ensure it is readable: {why}", file.display())))
        }
    }
}

/// `handle_physical`: refuse `.ht*` files; claim app trees.
pub fn physical(req: Req, p: Plugin) -> Handled {
    // Whatever an earlier request left there is not this request's.
    ROUTED.with(|c| c.borrow_mut().take());
    if req.is_handled() {
        return Handled::GO_ON;
    }
    let Some(rt) = runtime::get() else { return Handled::GO_ON };
    let full = req.physical_path();
    let base = req.physical_basedir();
    let name = full.rsplit(|&c| c == b'/').next().unwrap_or(&[]);
    // The files this plugin reads as configuration are never content (as
    // Apache's default `<Files ".ht*">` rule).
    if name.starts_with(b".ht") {
        return req.answer(403, &format!("{} is configuration, not content", String::from_utf8_lossy(&full)));
    }
    if status::host_page(req, &rt) {
        return status::serve(req, &rt, None, false);
    }
    if base.is_empty() {
        return Handled::GO_ON;
    }
    let Some((dirs, _)) = dirconf::dirs_to(&path(&base), &path(&full)) else { return Handled::GO_ON };
    let layer = match layer(req, &rt, &dirs) {
        Ok(l) => l,
        Err(rc) => return rc,
    };
    if let Some(def) = layer.cfg.authorizer() {
        // Asked first; once it let the request through, lighttpd runs the
        // request again and it goes on to its handler.
        if !exchange::authorized(req, p) {
            let (program, args, workdir) = (def.program.clone(), def.args.clone(), def.dir.clone());
            return claim(req, p, rt, &layer, AppKind::Authorizer, program, args, workdir, None, Vec::new());
        }
    }
    if layer.is_status_page() || layer.is_metrics_page() {
        let dir = request_dir(&full, path(&full).is_dir());
        return status::serve(req, &rt, Some(dir), layer.is_metrics_page());
    }
    let Some(def) = layer.cfg.app() else {
        if let Some(d) = dirs.last() {
            ROUTED.with(|c| *c.borrow_mut() = Some((req.id(), d.clone(), layer)));
        }
        return Handled::GO_ON;
    };
    let uri = req.uri_path();
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
    claim(req, p, rt, &layer, AppKind::App, program, args, workdir, None, overrides)
}

/// `handle_subrequest_start`: wrapped extensions and `AddHandler sufcgi-script`.
pub fn subrequest_start(req: Req, p: Plugin) -> Handled {
    if req.is_handled() {
        return Handled::GO_ON;
    }
    let Some(rt) = runtime::get() else { return Handled::GO_ON };
    let file = path(&req.physical_path());
    let base = path(&req.physical_basedir());
    if !dirconf::is_file(&file) {
        return Handled::GO_ON;
    }
    let Some(parent) = file.parent() else { return Handled::GO_ON };
    let routed = ROUTED.with(|c| c.borrow_mut().take()).filter(|(id, dir, _)| *id == req.id() && dir == parent);
    let layer = match routed {
        Some((_, _, l)) => l,
        None => {
            let Some((dirs, true)) = dirconf::dirs_to(&base, parent) else { return Handled::GO_ON };
            match layer(req, &rt, &dirs) {
                Ok(l) => l,
                Err(rc) => return rc,
            }
        }
    };
    let fname = file.as_os_str().as_bytes();
    if let Some(w) = layer.cfg.wrapper_for(fname) {
        let (cmd, args, dir) = (w.command.clone(), layer.cfg.wrapper_args(w), w.workdir_for(&file));
        let script = Some(WrappedScript::new(file.clone(), w));
        return claim(req, p, rt, &layer, AppKind::Wrapper, cmd, args, dir, script, Vec::new());
    }
    if layer.is_script(fname) {
        return claim(req, p, rt, &layer, AppKind::Script, file.clone(), Vec::new(), parent.to_path_buf(), None, Vec::new());
    }
    Handled::GO_ON
}

/// Take the request: build the pool spec and hang its exchange on it.
#[allow(clippy::too_many_arguments)]
fn claim(
    req: Req,
    p: Plugin,
    rt: Arc<Runtime>,
    layer: &Layer,
    kind: AppKind,
    program: PathBuf,
    args: Vec<Vec<u8>>,
    workdir: PathBuf,
    script: Option<WrappedScript>,
    overrides: Vec<(&'static [u8], Vec<u8>)>,
) -> Handled {
    let context = settings::identity_context(req, &rt.identity_contexts) as usize;
    // The supervisor's entry for this context; None after a reload that
    // changed its identity (answered 503 by the exchange).
    let vhost = rt.vhost_index.get(context).copied().flatten();
    let basedir = path(&req.physical_basedir());
    let configured = rt.docroots.get(context).cloned().unwrap_or_default();
    if !rt.has_owner.get(context).copied().unwrap_or(false) && basedir != configured {
        // The owner comes from the configured document root; a root set
        // at run time (mod_simple_vhost, mod_userdir) needs sufcgi.owner.
        return req.answer(500, &format!(
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
    // What its authorizer left there (it let the request through) is done with.
    exchange::start(req, p, rt, job);
    req.claim_handler(p);
    Handled::GO_ON
}
