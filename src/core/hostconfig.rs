//! What the host (server config) decides: identities per vhost, floors and ceilings.
//!
//! Built by the server glue in the privileged parent at start-up and on every
//! graceful restart, and handed to the supervisor over its control channel.
//! Customer directives can never change anything here.

use crate::core::limits::Limits;
use crate::core::owner_limits::{CgroupMode, OwnerLimits, OwnerOverrides};
use std::path::PathBuf;

/// Defaults that are safe with nothing but the `LoadModule` line.
pub const DEFAULT_MIN_UID: u32 = 1000;
pub const DEFAULT_MIN_GID: u32 = 1000;
pub const DEFAULT_MAX_WORKERS_PER_OWNER: u32 = 32;
pub const DEFAULT_MAX_WORKERS_TOTAL: u32 = 512;

/// Environment names a customer may never set, whatever the host adds.
pub const ALWAYS_BLOCKED_ENV: &[&str] = &["PHPRC", "PHP_VALUE", "PHP_ADMIN_VALUE", "HTTP_PROXY", "PATH"];
/// Environment name prefixes a customer may never set.
pub const ALWAYS_BLOCKED_ENV_PREFIXES: &[&str] = &["LD_"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    /// Server configuration generation; children quote it so the supervisor
    /// resolves their vhost index against the table they were forked with.
    pub generation: u64,
    pub min_uid: u32,
    pub min_gid: u32,
    /// Ceilings for every customer limit (`SuFcgiCeiling NAME VALUE`).
    pub ceilings: Limits,
    /// Live workers one owner (uid) may have across all its pools.
    pub max_workers_per_owner: u32,
    /// Live workers across the whole server.
    pub max_workers_total: u32,
    /// Where pool sockets and the supervisor socket live (root-owned, 0750 root:server_gid).
    pub socket_dir: PathBuf,
    /// The uid/gid the server's children run as: the only peers the supervisor serves.
    pub server_uid: u32,
    pub server_gid: u32,
    /// Extra environment names the host forbids in `SuFcgiEnv`.
    pub blocked_env: Vec<String>,
    /// Indexed by the position the glue assigned (Apache: order of server_rec chain).
    pub vhosts: Vec<VhostConfig>,
    /// Customer directives the host wrote in server config.
    pub host_directives: Vec<HostDirective>,
    /// `SuFcgiCgroups`: fixed for a supervisor's life (see supervisor::cgroup).
    pub cgroups: CgroupMode,
    /// `SuFcgiOwner*` in server config: every owner's limits unless its vhost sets its own.
    pub owner_limits: OwnerLimits,
    /// `SuFcgiShortSlices`: short scheduler slices for interactive workers (core::latency).
    pub short_slices: bool,
}

/// A customer directive written by the host in server config (e.g.
/// `<Directory /home/*/www> SuFcgiWrapper /usr/bin/php-cgi .php`): the
/// supervisor accepts pools it configures without a customer file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDirective {
    /// The enclosing `<Directory>` path, if any.
    pub dir: Option<PathBuf>,
    pub name: Vec<u8>,
    pub args: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhostConfig {
    /// For logs and pool keys: "name:port".
    pub name: String,
    /// `SuFcgiOwner`, already resolved to ids by the privileged parent.
    pub owner: Option<(u32, u32)>,
    /// The vhost's DocumentRoot; its owner (lstat) is the identity when `owner` is None.
    pub document_root: PathBuf,
    /// `SuFcgiOwner*` set in this vhost: they apply to the owner of its pools.
    pub owner_overrides: OwnerOverrides,
}

impl VhostConfig {
    pub fn new(name: String, owner: Option<(u32, u32)>, document_root: PathBuf) -> VhostConfig {
        VhostConfig { name, owner, document_root, owner_overrides: OwnerOverrides::default() }
    }

    /// The same identity (name, owner, document root), whatever its limits.
    pub fn same_identity(&self, o: &VhostConfig) -> bool {
        self.name == o.name && self.owner == o.owner && self.document_root == o.document_root
    }
}

/// FastCGI params that never reach an app, whatever set them (SetEnv, a
/// RewriteRule's E= flag, a request header): per-request PHP settings would
/// stick in a reused php-fpm-style worker, and HTTP_PROXY is httpoxy.
pub fn param_blocked(name: &[u8], host_blocked: &[String]) -> bool {
    const NEVER: &[&[u8]] = &[b"HTTP_PROXY", b"PHP_VALUE", b"PHP_ADMIN_VALUE", b"PHPRC"];
    NEVER.contains(&name)
        || ALWAYS_BLOCKED_ENV_PREFIXES.iter().any(|p| name.starts_with(p.as_bytes()))
        || host_blocked.iter().any(|b| b.as_bytes() == name)
}

impl HostConfig {
    pub fn new(socket_dir: PathBuf, server_uid: u32, server_gid: u32) -> HostConfig {
        HostConfig {
            generation: 0,
            min_uid: DEFAULT_MIN_UID,
            min_gid: DEFAULT_MIN_GID,
            ceilings: Limits::DEFAULT_CEILINGS,
            max_workers_per_owner: DEFAULT_MAX_WORKERS_PER_OWNER,
            max_workers_total: DEFAULT_MAX_WORKERS_TOTAL,
            socket_dir,
            server_uid,
            server_gid,
            blocked_env: Vec::new(),
            vhosts: Vec::new(),
            host_directives: Vec::new(),
            cgroups: CgroupMode::default(),
            owner_limits: OwnerLimits::DEFAULT,
            short_slices: true,
        }
    }

    /// Whether a customer may set environment variable `name`.
    pub fn env_allowed(&self, name: &[u8]) -> bool {
        let blocked_exact = ALWAYS_BLOCKED_ENV.iter().any(|b| b.as_bytes() == name)
            || self.blocked_env.iter().any(|b| b.as_bytes() == name);
        let blocked_prefix = ALWAYS_BLOCKED_ENV_PREFIXES.iter().any(|p| name.starts_with(p.as_bytes()));
        !(blocked_exact || blocked_prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocked_params() {
        for n in [&b"HTTP_PROXY"[..], b"PHP_VALUE", b"PHP_ADMIN_VALUE", b"PHPRC", b"LD_PRELOAD"] {
            assert!(param_blocked(n, &[]), "{}", String::from_utf8_lossy(n));
        }
        assert!(!param_blocked(b"PATH", &[]), "PATH is a normal CGI variable");
        assert!(!param_blocked(b"HTTP_HOST", &[]));
        assert!(param_blocked(b"SECRET", &["SECRET".to_string()]));
    }

    #[test]
    fn env_policy() {
        let h = HostConfig::new(PathBuf::from("/run/x"), 33, 33);
        assert!(h.env_allowed(b"APP_MODE"));
        assert!(!h.env_allowed(b"LD_LIBRARY_PATH"));
        assert!(!h.env_allowed(b"PATH"));
        assert!(!h.env_allowed(b"PHP_VALUE"));
    }
}
