//! The supervisor's view of the user database — passwd entries and
//! supplementary groups — cached. Each new pool needs its owner's entry and
//! groups; on a host with thousands of accounts one lookup reads all of
//! /etc/passwd and /etc/group and asks every NSS source (systemd's userdb
//! probes a dozen paths), which was most of the supervisor's share of a cold
//! first request.
//!
//! An answer (a miss too) is used while /etc/passwd and /etc/group are
//! unchanged (mtime and inode, looked at on each use: two stats) and at
//! most `TTL` old, for NSS sources other than the files (LDAP, sssd), as
//! nscd would.

use crate::core::identity::Accounts;
use crate::core::sys::{self, Passwd};
use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

pub const TTL: Duration = Duration::from_secs(60);
/// Entries kept at most; past it the cache starts over.
const MAX_ENTRIES: usize = 50_000;
const FILES: [&str; 2] = ["/etc/passwd", "/etc/group"];

type FilesStamp = [(i64, u64, u64); 2];

fn files_stamp() -> FilesStamp {
    FILES.map(|f| sys::lstat(Path::new(f)).map(|s| (s.mtime_ns, s.ino, s.dev)).unwrap_or_default())
}

#[derive(Default)]
struct State {
    stamp: Option<FilesStamp>,
    by_uid: HashMap<u32, (Instant, Option<Passwd>)>,
    by_name: HashMap<Vec<u8>, (Instant, Option<Passwd>)>,
    groups: HashMap<(Vec<u8>, u32), (Instant, Vec<libc::gid_t>)>,
}

impl State {
    /// Forget everything if the files changed or the cache is full.
    fn revalidate(&mut self) {
        let now = files_stamp();
        let entries = self.by_uid.len() + self.by_name.len() + self.groups.len();
        if self.stamp != Some(now) || entries > MAX_ENTRIES {
            *self = State { stamp: Some(now), ..State::default() };
        }
    }
}

/// A cached `Accounts` (single-threaded: the supervisor's loop).
#[derive(Default)]
pub struct CachedAccounts {
    state: RefCell<State>,
}

fn fresh<T: Clone>(e: Option<&(Instant, T)>) -> Option<T> {
    e.filter(|(at, _)| at.elapsed() < TTL).map(|(_, v)| v.clone())
}

impl CachedAccounts {
    /// `name`'s supplementary groups, with `gid` first if the database does
    /// not list it (as initgroups does).
    pub fn groups(&self, name: &[u8], gid: u32) -> io::Result<Vec<libc::gid_t>> {
        let mut st = self.state.borrow_mut();
        st.revalidate();
        let key = (name.to_vec(), gid);
        if let Some(g) = fresh(st.groups.get(&key)) {
            return Ok(g);
        }
        let mut groups = sys::getgrouplist(name, gid)?;
        if !groups.contains(&gid) {
            groups.insert(0, gid);
        }
        st.groups.insert(key, (Instant::now(), groups.clone()));
        Ok(groups)
    }
}

impl Accounts for CachedAccounts {
    fn by_name(&self, name: &[u8]) -> io::Result<Option<Passwd>> {
        let mut st = self.state.borrow_mut();
        st.revalidate();
        if let Some(p) = fresh(st.by_name.get(name)) {
            return Ok(p);
        }
        let p = sys::getpwnam(name)?;
        st.by_name.insert(name.to_vec(), (Instant::now(), p.clone()));
        Ok(p)
    }

    fn by_uid(&self, uid: u32) -> io::Result<Option<Passwd>> {
        let mut st = self.state.borrow_mut();
        st.revalidate();
        if let Some(p) = fresh(st.by_uid.get(&uid)) {
            return Ok(p);
        }
        let p = sys::getpwuid(uid)?;
        st.by_uid.insert(uid, (Instant::now(), p.clone()));
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_as_the_system_does_and_from_the_cache_after() {
        let c = CachedAccounts::default();
        let root = c.by_uid(0).unwrap().unwrap();
        assert_eq!((root.name.as_slice(), root.uid, root.gid), (&b"root"[..], 0, 0));
        assert_eq!(c.by_name(b"root").unwrap(), Some(root.clone()));
        assert_eq!(c.by_name(b"sufcgi-no-such-user").unwrap(), None);
        assert!(c.groups(b"root", 0).unwrap().contains(&0));
        // Cached: the same answers, one entry each.
        assert_eq!(c.by_uid(0).unwrap(), Some(root));
        let st = c.state.borrow();
        assert_eq!((st.by_uid.len(), st.by_name.len(), st.groups.len()), (1, 2, 1));
    }

    #[test]
    fn a_changed_stamp_or_an_old_entry_is_looked_up_again() {
        let c = CachedAccounts::default();
        c.by_uid(0).unwrap();
        // As if /etc/passwd had changed since.
        c.state.borrow_mut().stamp = Some([(1, 2, 3); 2]);
        c.by_name(b"root").unwrap();
        assert!(c.state.borrow().by_uid.is_empty(), "everything forgotten on a change");
        // An entry older than TTL is not used.
        let old = Instant::now().checked_sub(TTL + Duration::from_secs(1));
        if let Some(old) = old {
            c.state.borrow_mut().by_name.insert(b"root".to_vec(), (old, None));
            assert!(c.by_name(b"root").unwrap().is_some());
        }
    }
}
