//! The control channel from the privileged parent: configuration frames in
//! (one per graceful restart), EOF when the server stopped.

use std::os::fd::AsRawFd;

use super::super::log::{log_error, log_notice, log_warn};
use super::super::protocol;
use super::{is_would_block, Server};
use crate::core::hostconfig::HostConfig;
use crate::core::sys;

/// Configurations kept for children forked before a graceful restart.
const KEEP_GENERATIONS: usize = 4;

impl Server {
    pub(super) fn handle_control(&mut self) {
        let Some(ctl) = self.control.as_ref() else { return };
        let fd = ctl.as_raw_fd();
        let me = sys::geteuid();
        let mut buf = [0u8; 65536];
        loop {
            match sys::recv_with_uid(fd, &mut buf) {
                Ok((0, _)) => {
                    log_notice!("control channel closed (server stopped); shutting down");
                    self.control = None;
                    self.stopping = true;
                    return;
                }
                // Only the privileged parent may configure us; server children that
                // inherited the fd and dropped privileges are ignored.
                Ok((n, Some(uid))) if uid == 0 || uid == me => self.control_reader.push(&buf[..n]),
                Ok((n, uid)) => {
                    log_error!("ignored {n} bytes on the control channel from uid {uid:?}");
                }
                Err(e) if is_would_block(&e) => break,
                Err(e) => {
                    log_error!("control channel read failed: {e}; shutting down");
                    self.control = None;
                    self.stopping = true;
                    return;
                }
            }
        }
        loop {
            match self.control_reader.next_payload() {
                Ok(Some(p)) => match protocol::decode_config(&p) {
                    Ok(cfg) => self.install_config(cfg),
                    Err(e) => log_error!("bad config frame from the server: {e}"),
                },
                Ok(None) => break,
                Err(e) => {
                    log_error!("control channel: {e}; shutting down");
                    self.control = None;
                    self.stopping = true;
                    return;
                }
            }
        }
    }

    fn install_config(&mut self, cfg: HostConfig) {
        if cfg.socket_dir != self.socket_dir {
            log_warn!(
                "SuFcgiSocketDir changed to {}; the supervisor keeps {} until a full restart",
                cfg.socket_dir.display(),
                self.socket_dir.display()
            );
        }
        log_notice!("configuration generation {} installed ({} vhosts)", cfg.generation, cfg.vhosts.len());
        self.configs.retain(|c| c.generation != cfg.generation);
        self.configs.push_back(cfg);
        while self.configs.len() > KEEP_GENERATIONS {
            self.configs.pop_front();
        }
        self.refresh_owner_limits();
    }
}
