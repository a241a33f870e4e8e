//! State that outlives one configuration generation (kept in httpd's process
//! pool: the supervisor, its control channel, the scoreboard) and the
//! per-generation view the request path reads.
//!
//! httpd unloads and reloads DSO modules on every restart, so Rust statics
//! start empty each generation; anything that must survive a graceful restart
//! lives in the process pool's userdata instead.

use crate::core::scoreboard::{RawScoreboard, Scoreboard};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

/// Number of scoreboard slots: the most pools that can be live at once.
pub const SCOREBOARD_SLOTS: u32 = 8192;

/// Versioned: a module upgraded by a graceful restart must not read an older
/// module's record with a different layout.
pub const PERSIST_KEY: &std::ffi::CStr = c"sufcgi:persist:2";

/// Lives in the process pool (`Server::process_record`), written only by
/// the single-threaded parent.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Persist {
    pub supervisor_pid: libc::pid_t,
    pub control_fd: libc::c_int,
    /// None until the scoreboard is created.
    pub scoreboard: Option<RawScoreboard>,
}

/// What request handling needs, fixed for one generation.
pub struct Runtime {
    pub generation: u64,
    pub socket_dir: PathBuf,
    pub scoreboard: Scoreboard,
    /// Max seconds to wait for the backend on any one read or write.
    pub io_timeout_ms: i32,
    /// server_rec address → index into the supervisor's vhost table.
    pub vhosts: HashMap<usize, u32>,
    /// `SuFcgiBlockEnv` names: also kept out of the FastCGI params.
    pub blocked_env: Vec<String>,
    /// Which `sufcgi-*` request notes to set (`SuFcgiRequestNotes`).
    pub notes: crate::core::request_cost::Wanted,
}

impl Runtime {
    /// Where the shared pool link finds this server's supervisor and scoreboard.
    pub fn site(&self) -> crate::core::pool_link::Site<'_> {
        crate::core::pool_link::Site { socket_dir: &self.socket_dir, scoreboard: &self.scoreboard }
    }
}

static RUNTIME: RwLock<Option<Arc<Runtime>>> = RwLock::new(None);

pub fn set(rt: Option<Runtime>) {
    let mut g = RUNTIME.write().unwrap_or_else(|e| e.into_inner());
    *g = rt.map(Arc::new);
}

/// None when the module is inactive (httpd not started as root).
pub fn get() -> Option<Arc<Runtime>> {
    RUNTIME.read().unwrap_or_else(|e| e.into_inner()).clone()
}
