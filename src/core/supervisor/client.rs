//! The server child's side of the supervisor socket.
//!
//! One `Client` per child process; the glue guards it with a mutex and
//! reconnects after fork or after any error (an error leaves the stream in
//! an unknown state, so the client refuses further use once one happened).

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::protocol::{self, KillReason, Request, StatusReply};
use crate::core::request::{PoolReply, PoolSpec};
use crate::core::sys;

/// How long `ensure` waits for the supervisor.
pub const ENSURE_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Client {
    stream: UnixStream,
    broken: bool,
}

impl Client {
    pub fn connect(socket_path: &Path) -> io::Result<Client> {
        let stream = UnixStream::connect(socket_path)?;
        // Only a root supervisor (or one running as ourselves, in tests) is trusted.
        let (_, uid, _) = sys::peer_cred(stream.as_raw_fd())?;
        if uid != 0 && uid != sys::geteuid() {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("supervisor socket {} is served by uid {uid}, not root", socket_path.display()),
            ));
        }
        stream.set_read_timeout(Some(ENSURE_TIMEOUT))?;
        stream.set_write_timeout(Some(ENSURE_TIMEOUT))?;
        Ok(Client { stream, broken: false })
    }

    fn check(&self) -> io::Result<()> {
        if self.broken {
            Err(io::Error::new(io::ErrorKind::NotConnected, "supervisor connection is broken; reconnect"))
        } else {
            Ok(())
        }
    }

    fn send(&mut self, r: &Request) -> io::Result<()> {
        let frame = protocol::encode_request(r)?;
        sys::send_all(self.stream.as_raw_fd(), &frame)
    }

    /// Asks for a ready pool; blocks up to `ENSURE_TIMEOUT`.
    pub fn ensure(&mut self, spec: &PoolSpec) -> io::Result<PoolReply> {
        self.check()?;
        let result = self
            .send(&Request::Ensure(Box::new(spec.clone())))
            .and_then(|_| protocol::read_payload(&mut self.stream))
            .and_then(|p| protocol::decode_reply(&p).map_err(io::Error::from));
        if result.is_err() {
            self.broken = true;
        }
        result
    }

    /// The status page's pools: all of them (`dir` None), or those of the
    /// owner the supervisor derives for `dir` on `vhost`. Never spawns.
    pub fn status(&mut self, generation: u64, vhost: u32, dir: Option<PathBuf>, userdir_user: Option<Vec<u8>>) -> io::Result<StatusReply> {
        self.check()?;
        let result = self
            .send(&Request::Status { generation, vhost, dir, userdir_user })
            .and_then(|_| protocol::read_payload(&mut self.stream))
            .and_then(|p| protocol::decode_status_reply(&p).map_err(io::Error::from));
        if result.is_err() {
            self.broken = true;
        }
        result
    }

    /// Asks the supervisor to look at a pool (requests waiting, or a worker
    /// retired). No reply.
    pub fn nudge(&mut self, slot: u32, slot_generation: u32) -> io::Result<()> {
        self.one_way(&Request::Nudge { slot, slot_generation })
    }

    /// Asks the supervisor to stop the worker a timed-out request was using. No reply.
    pub fn kill(&mut self, slot: u32, slot_generation: u32, worker: u32, epoch: u32, reason: KillReason) -> io::Result<()> {
        self.one_way(&Request::Kill { slot, slot_generation, worker, epoch, reason })
    }

    /// A note for the pool owner's log (protocol_customer::Note). No reply.
    pub fn note(&mut self, n: &super::protocol_customer::Note) -> io::Result<()> {
        self.one_way(&Request::Note(Box::new(n.clone())))
    }

    fn one_way(&mut self, r: &Request) -> io::Result<()> {
        self.check()?;
        let res = self.send(r);
        if res.is_err() {
            self.broken = true;
        }
        res
    }
}
