//! lighttpd has no `.htaccess`: the plugin reads the files itself, from the
//! document root down to the request's directory, as Apache would with
//! `AllowOverride All`. Each file is parsed once and kept until its mtime,
//! inode or size changes. What a path is (directory, file, missing) is looked
//! at most once a second per path, like lighttpd's own stat cache: an edit
//! is seen within a second, and a busy site costs no stat per request.

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

/// What one look at a path found.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Meta {
    Missing,
    Dir,
    File(Stamp),
    Other,
}

/// path → (second it was looked at, what it was, or the errno of a failed look).
type Looks = HashMap<PathBuf, (u32, Result<Meta, i32>)>;

/// deepest directory → (second it was merged, the merged configuration).
type Merged = HashMap<PathBuf, (u32, Rc<Layer>)>;

thread_local! {
    // lighttpd serves requests on one thread; each max-worker child has its own copy.
    static CACHE: RefCell<HashMap<PathBuf, Entry>> = RefCell::new(HashMap::new());
    static LOOKS: RefCell<Looks> = RefCell::new(HashMap::new());
    /// A chain's merged configuration, reused within the second its files
    /// were looked at (the same staleness as the looks themselves).
    static MERGED: RefCell<Merged> = RefCell::new(HashMap::new());
}

/// `path`'s kind, from a look at most a second old. Err is the errno of a
/// failed look other than "not there".
fn look(path: &Path) -> Result<Meta, i32> {
    let now = crate::core::sys::monotonic_secs();
    if let Some(m) = LOOKS.with(|l| l.borrow().get(path).filter(|(at, _)| *at == now).map(|(_, m)| *m)) {
        return m;
    }
    let m = match std::fs::metadata(path) {
        Ok(md) if md.is_dir() => Ok(Meta::Dir),
        Ok(md) if md.is_file() => Ok(Meta::File((md.mtime(), md.mtime_nsec(), md.ino(), md.len()))),
        Ok(_) => Ok(Meta::Other),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) => Ok(Meta::Missing),
        Err(e) => Err(e.raw_os_error().unwrap_or(libc::EIO)),
    };
    LOOKS.with(|l| {
        let mut l = l.borrow_mut();
        if l.len() >= MAX_CACHED {
            l.clear();
        }
        l.insert(path.to_path_buf(), (now, m));
    });
    m
}

/// Whether `path` is a regular file (looked at most a second ago).
pub fn is_file(path: &Path) -> bool {
    matches!(look(path), Ok(Meta::File(_)))
}

/// Why a directory's configuration cannot be used.
pub enum DirError {
    /// A refused line: 500, logged as "FILE:LINE: reason".
    Line { file: PathBuf, line: LineError },
    /// The file exists but cannot be read: 403, as Apache answers.
    Unreadable { file: PathBuf, why: String },
}

fn load(file: &Path, size: u64, policy: &Policy<'_>) -> Result<Result<Rc<Layer>, LineError>, DirError> {
    if size > MAX_FILE {
        return Ok(Err(LineError { line: 0, reason: format!("larger than {MAX_FILE} bytes") }));
    }
    let text = std::fs::read(file).map_err(|e| DirError::Unreadable { file: file.to_path_buf(), why: e.to_string() })?;
    let dir = file.parent().unwrap_or(Path::new("/"));
    Ok(htaccess_file::apply(&text, dir, file, policy).map(Rc::new))
}

/// The merged configuration of `dirs` (outermost first; `dirs_to` gives
/// them, so the deepest one names the chain).
pub fn layer_for(dirs: &[PathBuf], policy: &Policy<'_>) -> Result<Rc<Layer>, DirError> {
    let now = crate::core::sys::monotonic_secs();
    let key = dirs.last();
    if let Some(hit) = key.and_then(|k| MERGED.with(|m| m.borrow().get(k).filter(|(at, _)| *at == now).map(|(_, l)| l.clone()))) {
        return Ok(hit);
    }
    let merged = Rc::new(merge_chain(dirs, policy)?);
    if let Some(k) = key {
        MERGED.with(|m| {
            let mut m = m.borrow_mut();
            if m.len() >= MAX_CACHED {
                m.clear();
            }
            m.insert(k.clone(), (now, merged.clone()));
        });
    }
    Ok(merged)
}

fn merge_chain(dirs: &[PathBuf], policy: &Policy<'_>) -> Result<Layer, DirError> {
    let mut merged = Layer::default();
    for d in dirs {
        let file = d.join(HTACCESS);
        let stamp = match look(&file) {
            Ok(Meta::File(stamp)) => stamp,
            Ok(Meta::Missing) => {
                CACHE.with(|c| c.borrow_mut().remove(&file));
                continue;
            }
            Ok(_) => continue,
            Err(errno) => {
                let why = std::io::Error::from_raw_os_error(errno).to_string();
                return Err(DirError::Unreadable { file, why });
            }
        };
        let cached = CACHE.with(|c| c.borrow().get(&file).filter(|e| e.stamp == stamp).map(|e| e.parsed.clone()));
        let parsed = match cached {
            Some(p) => p,
            None => {
                let p = load(&file, stamp.3, policy)?;
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
        match look(&cur) {
            Ok(Meta::Dir) => dirs.push(cur.clone()),
            _ => {
                is_dir = false;
                break;
            }
        }
    }
    Some((dirs, is_dir))
}
