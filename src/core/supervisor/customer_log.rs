//! The customer's own log (`SuFcgiLog`): refusals, errors, the app's stderr,
//! slow requests and worker lifecycle events, one timestamped line each.
//!
//! Only the supervisor writes it, and only with the owner's filesystem
//! identity (`sys_files::open_as`): the file is created as theirs, and a path
//! they could not write (`/etc/…`, another customer's file) cannot be
//! reached through it, wherever it is. Server children never open customer
//! files; what they know (FastCGI stderr, their refusals) reaches this file
//! as notes on their supervisor link.
//!
//! A hot loop must not fill the disk: each owner has a budget of lines per
//! second (a token bucket shared by all their logs), each file stops growing
//! at `MAX_FILE_SIZE`, and what was dropped is said in one line. The same
//! refusal repeated (every request to a broken site) is written once a
//! `FOLD_WINDOW` with a count.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::core::sys;
use crate::core::sys_files::{open_as, FsIdentity};

/// Lines per second one owner may add to their logs, on average…
pub const LINES_PER_SECOND: u32 = 50;
/// …and at once.
pub const LINE_BURST: u32 = 200;
/// A log stops growing here (until it is truncated, removed or rotated).
pub const MAX_FILE_SIZE: u64 = 64 << 20;
/// Longest line written (the rest is cut).
pub const MAX_LINE: usize = 4096;
/// An identical refusal within this window is counted, not written again.
pub const FOLD_WINDOW: Duration = Duration::from_secs(60);
/// A file not written for this long is closed (opened again when needed).
const IDLE_CLOSE: Duration = Duration::from_secs(600);
/// How often a file's path is looked at again (rotated or removed?).
const RECHECK: Duration = Duration::from_secs(1);
/// Open files at most; the least recently used one is closed beyond that.
const MAX_OPEN: usize = 4096;

/// Where one pool's lines go: the resolved path and whose it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogTarget {
    pub path: PathBuf,
    pub who: FsIdentity,
}

/// `SuFcgiLog` as written, made absolute: `~/x` below the owner's home, a
/// relative path below the app's directory, an absolute one as it is. `..`
/// is left for the kernel to resolve, as the owner.
pub fn resolve(written: &Path, workdir: &Path, home: &Path) -> PathBuf {
    let b = sys::path_bytes(written);
    if let Some(rest) = b.strip_prefix(b"~/") {
        home.join(sys::path_from_bytes(rest))
    } else {
        workdir.join(written)
    }
}

/// One line as it lands in the file: `[timestamp] [category] text`, with
/// control characters shown as `\xNN` so a line is always one line and a
/// terminal showing the file is never driven by it.
pub fn format_line(timestamp: &str, category: &str, text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len().min(MAX_LINE) + timestamp.len() + category.len() + 8);
    out.push(b'[');
    out.extend_from_slice(timestamp.as_bytes());
    out.extend_from_slice(b"] [");
    out.extend_from_slice(category.as_bytes());
    out.extend_from_slice(b"] ");
    let body = String::from_utf8_lossy(text);
    for c in body.chars() {
        if out.len() >= MAX_LINE {
            out.extend_from_slice("…".as_bytes());
            break;
        }
        if (c as u32) < 0x20 && c != '\t' || c as u32 == 0x7f {
            out.extend_from_slice(format!("\\x{:02x}", c as u32).as_bytes());
        } else {
            let mut b = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
        }
    }
    out.push(b'\n');
    out
}

struct Budget {
    tokens: f64,
    last: Instant,
}

impl Budget {
    fn take(&mut self, now: Instant) -> bool {
        let refill = now.saturating_duration_since(self.last).as_secs_f64() * LINES_PER_SECOND as f64;
        self.tokens = (self.tokens + refill).min(LINE_BURST as f64);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

struct Fold {
    text: Vec<u8>,
    category: &'static str,
    since: Instant,
    repeats: u64,
}

struct LogFile {
    who: FsIdentity,
    fd: Option<OwnedFd>,
    /// (dev, ino) of what `fd` has open.
    id: (u64, u64),
    size: u64,
    /// Why it cannot be written (for the status page), if so.
    error: Option<String>,
    checked: Option<Instant>,
    used: Instant,
    /// The "reached its size limit" line was written.
    full_noted: bool,
    /// Lines dropped for the owner's budget since the last note about it.
    suppressed: u64,
    fold: Option<Fold>,
}

/// Every customer log the supervisor writes.
#[derive(Default)]
pub struct CustomerLogs {
    files: HashMap<PathBuf, LogFile>,
    budgets: HashMap<u32, Budget>,
}

impl CustomerLogs {
    /// Write one line to `t`'s file (unless the owner's budget is spent).
    pub fn write(&mut self, t: &LogTarget, category: &'static str, text: &[u8]) {
        let now = Instant::now();
        let allowed = self.budget(t.who.uid, now);
        let ts = super::log::timestamp();
        let f = self.file(t, now);
        if !allowed {
            f.suppressed = f.suppressed.saturating_add(1);
            return;
        }
        let line = format_line(&ts, category, text);
        f.append(&t.path, &line, now);
    }

    /// As `write`, but the same text again within `FOLD_WINDOW` is counted
    /// instead (a refusal answered to every request of a broken site).
    pub fn write_folded(&mut self, t: &LogTarget, category: &'static str, text: &[u8]) {
        let now = Instant::now();
        let f = self.file(t, now);
        if let Some(fold) = f.fold.as_mut() {
            if fold.text == text && fold.category == category && now.saturating_duration_since(fold.since) < FOLD_WINDOW {
                fold.repeats = fold.repeats.saturating_add(1);
                return;
            }
        }
        self.flush_fold(t, now);
        self.write(t, category, text);
        let f = self.file(t, now);
        f.fold = Some(Fold { text: text.to_vec(), category, since: now, repeats: 0 });
    }

    /// Why `path` cannot be written, if it cannot (None: fine or unknown).
    pub fn error(&self, path: &Path) -> Option<String> {
        self.files.get(path).and_then(|f| f.error.clone())
    }

    /// Once in a while: say what was suppressed or folded, close idle files.
    pub fn tick(&mut self) {
        let now = Instant::now();
        let ts = super::log::timestamp();
        let paths: Vec<PathBuf> = self.files.keys().cloned().collect();
        for p in paths {
            let Some(f) = self.files.get_mut(&p) else { continue };
            if f.suppressed > 0 {
                let n = std::mem::take(&mut f.suppressed);
                let text = format!("{n} lines suppressed (more than {LINES_PER_SECOND} a second)");
                let line = format_line(&ts, "log", text.as_bytes());
                f.append(&p, &line, now);
            }
            if f.fold.as_ref().is_some_and(|fold| now.saturating_duration_since(fold.since) >= FOLD_WINDOW) {
                if let Some(fold) = f.fold.take() {
                    if fold.repeats > 0 {
                        let line = format_line(&ts, fold.category, &repeated(&fold));
                        f.append(&p, &line, now);
                    }
                }
            }
            if now.saturating_duration_since(f.used) >= IDLE_CLOSE && f.fold.is_none() {
                self.files.remove(&p);
            }
        }
        let owners: std::collections::HashSet<u32> = self.files.values().map(|f| f.who.uid).collect();
        self.budgets.retain(|uid, b| owners.contains(uid) || now.saturating_duration_since(b.last) < Duration::from_secs(10));
    }

    fn budget(&mut self, uid: u32, now: Instant) -> bool {
        self.budgets.entry(uid).or_insert(Budget { tokens: LINE_BURST as f64, last: now }).take(now)
    }

    fn flush_fold(&mut self, t: &LogTarget, now: Instant) {
        let ts = super::log::timestamp();
        let f = self.file(t, now);
        if let Some(fold) = f.fold.take() {
            if fold.repeats > 0 {
                let line = format_line(&ts, fold.category, &repeated(&fold));
                f.append(&t.path, &line, now);
            }
        }
    }

    fn file(&mut self, t: &LogTarget, now: Instant) -> &mut LogFile {
        if !self.files.contains_key(&t.path) && self.files.len() >= MAX_OPEN {
            if let Some(oldest) = self.files.iter().min_by_key(|(_, f)| f.used).map(|(p, _)| p.clone()) {
                self.files.remove(&oldest);
            }
        }
        let f = self.files.entry(t.path.clone()).or_insert_with(|| LogFile {
            who: t.who.clone(),
            fd: None,
            id: (0, 0),
            size: 0,
            error: None,
            checked: None,
            used: now,
            full_noted: false,
            suppressed: 0,
            fold: None,
        });
        if f.who != t.who {
            // Another owner names the same path: theirs from now on, opened anew.
            f.who = t.who.clone();
            f.fd = None;
            f.checked = None;
        }
        f
    }
}

fn repeated(fold: &Fold) -> Vec<u8> {
    let mut t = fold.text.clone();
    t.extend_from_slice(format!(" (the same {} more time(s) in {} s)", fold.repeats, FOLD_WINDOW.as_secs()).as_bytes());
    t
}

impl LogFile {
    /// (Re)open when the path no longer names what we have open (removed,
    /// rotated) or after a failure, at most once a `RECHECK`.
    fn ensure_open(&mut self, path: &Path, now: Instant) {
        if self.checked.is_some_and(|c| now.saturating_duration_since(c) < RECHECK) {
            return;
        }
        self.checked = Some(now);
        if self.fd.is_some() {
            // A metadata look by root at a path: it follows nothing and opens nothing.
            match sys::lstat(path) {
                Ok(st) if (st.dev, st.ino) == self.id => {
                    self.size = st.size;
                    if st.size < MAX_FILE_SIZE {
                        self.full_noted = false;
                    }
                    return;
                }
                _ => self.fd = None,
            }
        }
        let flags = libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_NOFOLLOW | libc::O_NONBLOCK;
        match open_as(path, flags, 0o640, &self.who) {
            Ok(fd) => match sys::fstat(fd.as_raw_fd()) {
                // Only a regular file: never a FIFO (a writer would block), a device or a socket.
                Ok(st) if st.is_file() => {
                    self.id = (st.dev, st.ino);
                    self.size = st.size;
                    self.full_noted = st.size >= MAX_FILE_SIZE && self.full_noted;
                    self.fd = Some(fd);
                    self.error = None;
                }
                Ok(_) => self.error = Some(format!("cannot write {}: not a regular file", path.display())),
                Err(e) => self.error = Some(format!("cannot write {}: {e}", path.display())),
            },
            Err(e) => self.error = Some(format!("cannot open {} as its owner: {e}", path.display())),
        }
    }

    fn append(&mut self, path: &Path, line: &[u8], now: Instant) {
        self.used = now;
        self.ensure_open(path, now);
        let Some(fd) = self.fd.as_ref() else { return };
        if self.size >= MAX_FILE_SIZE {
            if !self.full_noted {
                self.full_noted = true;
                let ts = super::log::timestamp();
                let note = format!("this log reached {} MiB; lines are dropped until it is truncated, removed or rotated", MAX_FILE_SIZE >> 20);
                let _ = sys::write_all_fd(fd.as_raw_fd(), &format_line(&ts, "log", note.as_bytes()));
            }
            return;
        }
        match sys::write_all_fd(fd.as_raw_fd(), line) {
            Ok(()) => self.size = self.size.saturating_add(line.len() as u64),
            Err(e) => {
                self.error = Some(format!("cannot write {}: {e}", path.display()));
                self.fd = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> FsIdentity {
        // SAFETY: getegid cannot fail.
        FsIdentity { uid: sys::geteuid(), gid: unsafe { libc::getegid() }, groups: vec![] }
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sufcgi-clog-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn paths_resolve_like_the_directive_says() {
        let (w, h) = (Path::new("/home/a/www/app"), Path::new("/home/a"));
        assert_eq!(resolve(Path::new("logs/app.log"), w, h), Path::new("/home/a/www/app/logs/app.log"));
        assert_eq!(resolve(Path::new("../logs/app.log"), w, h), Path::new("/home/a/www/app/../logs/app.log"));
        assert_eq!(resolve(Path::new("~/logs/app.log"), w, h), Path::new("/home/a/logs/app.log"));
        assert_eq!(resolve(Path::new("/var/log/c/a.log"), w, h), Path::new("/var/log/c/a.log"));
    }

    #[test]
    fn lines_are_one_line_each_and_bounded() {
        let l = format_line("T", "stderr", b"a\nb\x1b[31m\tc\xff");
        assert_eq!(String::from_utf8(l).unwrap(), "[T] [stderr] a\\x0ab\\x1b[31m\tc\u{fffd}\n");
        let long = format_line("T", "x", &vec![b'y'; 10 * MAX_LINE]);
        assert!(long.len() < MAX_LINE + 16 && long.ends_with(b"\n"));
    }

    #[test]
    fn a_hot_loop_is_cut_and_says_so() {
        let d = dir("budget");
        let t = LogTarget { path: d.join("app.log"), who: me() };
        let mut logs = CustomerLogs::default();
        for i in 0..1000 {
            logs.write(&t, "stderr", format!("line {i}").as_bytes());
        }
        logs.tick();
        let text = std::fs::read_to_string(&t.path).unwrap();
        let written = text.lines().filter(|l| l.contains("] [stderr] line ")).count();
        assert!((LINE_BURST as usize..LINE_BURST as usize + 10).contains(&written), "{written} lines written");
        assert!(text.contains(&format!("{} lines suppressed", 1000 - written)), "{}", &text[text.len().saturating_sub(300)..]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn the_same_refusal_is_folded() {
        let d = dir("fold");
        let t = LogTarget { path: d.join("app.log"), who: me() };
        let mut logs = CustomerLogs::default();
        for _ in 0..5 {
            logs.write_folded(&t, "refused", b"403: x.php is writable by others");
        }
        logs.write_folded(&t, "refused", b"403: something else");
        let text = std::fs::read_to_string(&t.path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].ends_with("] [refused] 403: x.php is writable by others"));
        assert!(lines[1].ends_with("x.php is writable by others (the same 4 more time(s) in 60 s)"), "{}", lines[1]);
        assert!(lines[2].ends_with("] [refused] 403: something else"));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_full_file_stops_growing_and_a_removed_one_is_made_again() {
        let d = dir("size");
        let t = LogTarget { path: d.join("app.log"), who: me() };
        let f = std::fs::File::create(&t.path).unwrap();
        f.set_len(MAX_FILE_SIZE).unwrap();
        drop(f);
        let mut logs = CustomerLogs::default();
        logs.write(&t, "event", b"one");
        logs.write(&t, "event", b"two");
        let len = std::fs::metadata(&t.path).unwrap().len();
        assert!(len > MAX_FILE_SIZE && len < MAX_FILE_SIZE + 300, "only the note was added: {len}");
        std::fs::remove_file(&t.path).unwrap();
        std::thread::sleep(RECHECK + Duration::from_millis(50));
        logs.write(&t, "event", b"three");
        let text = std::fs::read_to_string(&t.path).unwrap();
        assert!(text.ends_with("] [event] three\n"), "{text}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn what_is_no_regular_file_is_not_written() {
        let d = dir("fifo");
        let p = d.join("app.log");
        let c = sys::cpath(&p).unwrap();
        // SAFETY: c is NUL-terminated.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let t = LogTarget { path: p.clone(), who: me() };
        let mut logs = CustomerLogs::default();
        logs.write(&t, "event", b"never blocks");
        assert!(logs.error(&p).is_some(), "a FIFO without reader is refused, not waited for");
        let _ = std::fs::remove_dir_all(&d);
    }
}
