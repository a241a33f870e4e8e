//! lighttpd has no `.htaccess`: the plugin reads the files itself, from the
//! document root down to the request's directory, as Apache would with
//! `AllowOverride All`. Each file is parsed once and kept until its mtime,
//! inode or size changes (one stat per directory level per request, as
//! Apache does).

use crate::core::htaccess_file::{self, Layer, LineError, Policy};
use std::cell::RefCell;
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

pub const HTACCESS: &str = ".htaccess";
/// Larger files are refused rather than read (a customer file, read on the request path).
const MAX_FILE: u64 = 1 << 20;
/// Cached files beyond this are dropped wholesale (bounded memory).
const MAX_CACHED: usize = 16_384;

type Stamp = (i64, i64, u64, u64);

struct Entry {
    stamp: Stamp,
    parsed: Result<Rc<Layer>, LineError>,
}

thread_local! {
    // lighttpd serves requests on one thread; each max-worker child has its own copy.
    static CACHE: RefCell<HashMap<PathBuf, Entry>> = RefCell::new(HashMap::new());
}

/// Why a directory's configuration cannot be used.
pub enum DirError {
    /// A refused line: 500, logged as "FILE:LINE: reason".
    Line { file: PathBuf, line: LineError },
    /// The file exists but cannot be read: 403, as Apache answers.
    Unreadable { file: PathBuf, why: String },
}

fn load(file: &Path, md: &std::fs::Metadata, policy: &Policy<'_>) -> Result<Option<Result<Rc<Layer>, LineError>>, DirError> {
    if md.len() > MAX_FILE {
        return Ok(Some(Err(LineError { line: 0, reason: format!("larger than {MAX_FILE} bytes") })));
    }
    let text = std::fs::read(file).map_err(|e| DirError::Unreadable { file: file.to_path_buf(), why: e.to_string() })?;
    let dir = file.parent().unwrap_or(Path::new("/"));
    Ok(Some(htaccess_file::apply(&text, dir, file, policy).map(Rc::new)))
}

/// The merged configuration of `dirs` (outermost first).
pub fn layer_for(dirs: &[PathBuf], policy: &Policy<'_>) -> Result<Layer, DirError> {
    let mut merged = Layer::default();
    for d in dirs {
        let file = d.join(HTACCESS);
        let md = match std::fs::metadata(&file) {
            Ok(m) if m.is_file() => m,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) => {
                CACHE.with(|c| c.borrow_mut().remove(&file));
                continue;
            }
            Err(e) => return Err(DirError::Unreadable { file, why: e.to_string() }),
        };
        let stamp: Stamp = (md.mtime(), md.mtime_nsec(), md.ino(), md.len());
        let cached = CACHE.with(|c| {
            c.borrow().get(&file).filter(|e| e.stamp == stamp).map(|e| e.parsed.clone())
        });
        let parsed = match cached {
            Some(p) => p,
            None => {
                let Some(p) = load(&file, &md, policy)? else { continue };
                CACHE.with(|c| {
                    let mut c = c.borrow_mut();
                    if c.len() >= MAX_CACHED {
                        c.clear();
                    }
                    c.insert(file.clone(), Entry { stamp, parsed: p.clone() });
                });
                p
            }
        };
        match parsed {
            Ok(layer) => merged = htaccess_file::merge(&merged, &layer),
            Err(line) => return Err(DirError::Line { file, line }),
        }
    }
    Ok(merged)
}

/// The directories from `base` down to the deepest existing directory on
/// the way to `path` (a path below `base`; nonexistent tails are fine: an app
/// owns its whole tree). Also says whether `path` itself is a directory.
pub fn dirs_to(base: &Path, path: &Path) -> Option<(Vec<PathBuf>, bool)> {
    let rest = path.strip_prefix(base).ok()?;
    let mut dirs = vec![base.to_path_buf()];
    let mut cur = base.to_path_buf();
    let mut is_dir = true;
    for comp in rest.components() {
        let std::path::Component::Normal(c) = comp else { return None };
        cur.push(c);
        match std::fs::metadata(&cur) {
            Ok(m) if m.is_dir() => dirs.push(cur.clone()),
            _ => {
                is_dir = false;
                break;
            }
        }
    }
    Some((dirs, is_dir))
}
