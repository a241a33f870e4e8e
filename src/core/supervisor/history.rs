//! What the customer's status page shows beyond counters: per pool, the last
//! refusal, the last worker exit and the last lines of stderr; and pools
//! the supervisor refused to start at all (they have no pool record), so a
//! site that is only ever a 403 still says why on its owner's page.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::protocol_customer::Happened;
use crate::core::request::AppKind;

/// Lines of stderr kept per pool.
pub const STDERR_LINES: usize = 5;
/// Longest stderr line kept for the page.
const STDERR_LINE_MAX: usize = 512;
/// Refused pools remembered at most, and for how long.
const MAX_REFUSED: usize = 1024;
const REFUSED_TTL: Duration = Duration::from_secs(3600);

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn happened(status: u16, text: &str) -> Happened {
    let mut end = text.len().min(2048);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Happened { at: unix_now(), status, text: text[..end].to_string() }
}

/// A pool's recent past.
#[derive(Default)]
pub struct History {
    pub last_refusal: Option<Happened>,
    pub last_exit: Option<Happened>,
    stderr: VecDeque<String>,
}

impl History {
    pub fn refused(&mut self, status: u16, why: &str) {
        self.last_refusal = Some(happened(status, why));
    }

    pub fn exited(&mut self, text: &str) {
        self.last_exit = Some(happened(0, text));
    }

    pub fn stderr_line(&mut self, line: &[u8]) {
        let mut s = String::from_utf8_lossy(&line[..line.len().min(STDERR_LINE_MAX)]).into_owned();
        s.retain(|c| !c.is_control() || c == '\t');
        if self.stderr.len() >= STDERR_LINES {
            self.stderr.pop_front();
        }
        self.stderr.push_back(s);
    }

    pub fn stderr_tail(&self) -> Vec<String> {
        self.stderr.iter().cloned().collect()
    }
}

/// What identifies a refused pool on the page: whose, where, what.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RefusedKey {
    pub uid: u32,
    pub vhost: String,
    pub kind: AppKind,
    pub program: PathBuf,
    pub workdir: PathBuf,
}

pub struct RefusedPool {
    pub gid: u32,
    pub user: Vec<u8>,
    pub last: Happened,
    pub log_file: Option<PathBuf>,
    seen: SystemTime,
}

/// Pools the supervisor would not start, most recent refusal each.
#[derive(Default)]
pub struct RefusedPools {
    map: HashMap<RefusedKey, RefusedPool>,
}

impl RefusedPools {
    pub fn record(&mut self, key: RefusedKey, gid: u32, user: Vec<u8>, status: u16, why: &str, log_file: Option<PathBuf>) {
        if !self.map.contains_key(&key) && self.map.len() >= MAX_REFUSED {
            if let Some(oldest) = self.map.iter().min_by_key(|(_, p)| p.seen).map(|(k, _)| k.clone()) {
                self.map.remove(&oldest);
            }
        }
        self.map.insert(key, RefusedPool { gid, user, last: happened(status, why), log_file, seen: SystemTime::now() });
    }

    /// The app started after all: it is no refused pool any more.
    pub fn forget(&mut self, key: &RefusedKey) {
        self.map.remove(key);
    }

    pub fn expire(&mut self) {
        let now = SystemTime::now();
        self.map.retain(|_, p| now.duration_since(p.seen).map_or(true, |d| d < REFUSED_TTL));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&RefusedKey, &RefusedPool)> {
        self.map.iter()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_keeps_the_last_lines_clean() {
        let mut h = History::default();
        for i in 0..8 {
            h.stderr_line(format!("line {i}\x1b[0m").as_bytes());
        }
        assert_eq!(h.stderr_tail(), vec!["line 3[0m", "line 4[0m", "line 5[0m", "line 6[0m", "line 7[0m"]);
    }

    #[test]
    fn refused_pools_are_bounded_and_forgotten_when_started() {
        let mut r = RefusedPools::default();
        let key = |i: u32| RefusedKey { uid: 1000 + i, vhost: "v".into(), kind: AppKind::App, program: "/p".into(), workdir: "/w".into() };
        for i in 0..(MAX_REFUSED as u32 + 10) {
            r.record(key(i), 1, b"u".to_vec(), 403, "why", None);
        }
        assert_eq!(r.len(), MAX_REFUSED);
        r.record(key(5000), 1, b"u".to_vec(), 403, "why", None);
        r.forget(&key(5000));
        assert!(r.iter().all(|(k, _)| k.uid != 5000));
    }
}
