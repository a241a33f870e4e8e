//! Our per-server record: the host's settings from server config (the
//! directive handlers in config.rs fill it; the start-up hooks read it).

use crate::core::limits::Limits;
use crate::core::owner_limits::{CgroupMode, OwnerOverrides};
use std::path::PathBuf;

/// Host settings from server config. Global ones are read from the main server
/// only; `owner` is per vhost and deliberately not inherited by vhosts.
#[derive(Debug, Clone)]
pub struct ServerConf {
    pub owner: Option<(Vec<u8>, Option<Vec<u8>>)>,
    pub min_uid: Option<u32>,
    pub min_gid: Option<u32>,
    pub socket_dir: Option<PathBuf>,
    /// `SuFcgiCeiling NAME VALUE`, applied over the default ceilings.
    pub ceilings: Limits,
    pub max_workers_per_owner: Option<u32>,
    pub max_workers_total: Option<u32>,
    pub blocked_env: Vec<String>,
    /// `SuFcgiPhpForbid`: ini names (or `PREFIX.*`) customers may not set with
    /// `php_value`/`php_flag`, on top of `php_ini::BUILTIN_FORBIDDEN`. Per vhost,
    /// added to the main server's.
    pub php_forbid: Vec<Vec<u8>>,
    /// `SuFcgiCgroups` (main server only).
    pub cgroups: Option<CgroupMode>,
    /// `SuFcgiOwner*` limits set in this server record (the main server's
    /// are every owner's; a vhost's override them for its owners).
    pub owner_limits: OwnerOverrides,
    /// `SuFcgiRequestNotes auto|on|off`: None = auto (set them when a log
    /// format of the configuration mentions them).
    pub request_notes: Option<bool>,
    /// `SuFcgiShortSlices on|off` (main server only; None = on).
    pub short_slices: Option<bool>,
}

impl Default for ServerConf {
    fn default() -> Self {
        ServerConf {
            owner: None,
            min_uid: None,
            min_gid: None,
            socket_dir: None,
            ceilings: Limits::DEFAULT_CEILINGS,
            max_workers_per_owner: None,
            max_workers_total: None,
            blocked_env: Vec::new(),
            php_forbid: Vec::new(),
            cgroups: None,
            owner_limits: OwnerOverrides::default(),
            request_notes: None,
            short_slices: None,
        }
    }
}

impl ServerConf {
    /// A vhost's record over the main server's: globals live in the main
    /// server's record; the owner and owner limits are per vhost, and
    /// `SuFcgiPhpForbid` is per vhost on top of the main server's.
    pub fn merge(base: &ServerConf, add: &ServerConf) -> ServerConf {
        let mut merged = ServerConf { owner: add.owner.clone(), owner_limits: add.owner_limits, ..base.clone() };
        merged.php_forbid.extend(add.php_forbid.iter().filter(|n| !base.php_forbid.contains(n)).cloned());
        merged
    }
}
