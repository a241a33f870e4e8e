//! Server children's connections to the supervisor socket: accepted from
//! the server's uid only, read into frames, each request answered (pool
//! creation in `ensure`, the status report in `status`) or acted on (a
//! nudge, a kill, a note), replies flushed as the socket takes them.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use super::super::log::{log_error, log_warn};
use super::super::protocol::{self, FrameReader, KillReason, Request};
use super::super::worker_policy::StopReason;
use super::{is_would_block, Server};
use crate::core::sys;

const MAX_CLIENTS: usize = 8192;
const MAX_OUTBUF: usize = 1 << 20;

/// One connected server child.
pub(super) struct Conn {
    pub(super) stream: UnixStream,
    reader: FrameReader,
    out: Vec<u8>,
}

impl Conn {
    /// What to poll it for: replies still to send want POLLOUT too.
    pub(super) fn poll_events(&self) -> i16 {
        if self.out.is_empty() {
            libc::POLLIN
        } else {
            libc::POLLIN | libc::POLLOUT
        }
    }
}

impl Server {
    pub(super) fn accept_clients(&mut self) {
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if is_would_block(&e) => return,
                Err(e) => {
                    log_error!("accept on the supervisor socket failed: {e}");
                    return;
                }
            };
            let server_uid = self.configs.back().map_or(0, |c| c.server_uid);
            match sys::peer_cred(stream.as_raw_fd()) {
                Ok((_, uid, _)) if uid == server_uid || uid == 0 => {}
                Ok((pid, uid, _)) => {
                    log_warn!("refused supervisor connection from pid {pid} uid {uid} (not the server uid {server_uid})");
                    continue;
                }
                Err(e) => {
                    log_warn!("cannot read peer credentials: {e}");
                    continue;
                }
            }
            if self.clients.len() >= MAX_CLIENTS {
                log_warn!("too many supervisor connections; refusing one");
                continue;
            }
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            self.clients.push(Conn { stream, reader: FrameReader::new(), out: Vec::new() });
        }
    }

    pub(super) fn handle_clients(&mut self, polled: &[libc::pollfd]) {
        let mut keep = vec![true; self.clients.len()];
        for (i, pfd) in polled.iter().enumerate() {
            if i >= self.clients.len() || pfd.revents == 0 {
                continue;
            }
            keep[i] = self.service_client(i, pfd.revents);
        }
        let mut i = 0;
        self.clients.retain(|_| {
            let k = keep.get(i).copied().unwrap_or(true);
            i += 1;
            k
        });
    }

    /// Reads, answers and flushes one client; `false` drops it.
    fn service_client(&mut self, i: usize, revents: i16) -> bool {
        if revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            let mut buf = [0u8; 16384];
            let mut eof = false;
            loop {
                match self.clients[i].stream.read(&mut buf) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => {
                        self.clients[i].reader.push(&buf[..n]);
                        if self.clients[i].reader.buffered() > protocol::MAX_FRAME + 4 {
                            break;
                        }
                    }
                    Err(e) if is_would_block(&e) => break,
                    Err(_) => return false,
                }
            }
            loop {
                let payload = match self.clients[i].reader.next_payload() {
                    Ok(Some(p)) => p,
                    Ok(None) => break,
                    Err(e) => {
                        log_warn!("dropping a supervisor client: {e}");
                        return false;
                    }
                };
                let req = match protocol::decode_request(&payload) {
                    Ok(r) => r,
                    Err(e) => {
                        log_warn!("dropping a supervisor client: {e}");
                        return false;
                    }
                };
                if !self.answer(i, req) {
                    return false;
                }
            }
            if eof {
                // Best effort flush of what was answered, then drop.
                let c = &mut self.clients[i];
                let _ = c.stream.write(&c.out);
                return false;
            }
        }
        let c = &mut self.clients[i];
        while !c.out.is_empty() {
            match c.stream.write(&c.out) {
                Ok(0) => return false,
                Ok(n) => {
                    c.out.drain(..n);
                }
                Err(e) if is_would_block(&e) => break,
                Err(_) => return false,
            }
        }
        true
    }

    /// One request of client `i`, its reply queued; `false` drops the client.
    fn answer(&mut self, i: usize, req: Request) -> bool {
        match req {
            Request::Ensure(spec) => {
                let reply = self.ensure(&spec);
                match protocol::encode_reply(&reply) {
                    Ok(f) => self.clients[i].out.extend_from_slice(&f),
                    Err(e) => {
                        log_error!("cannot encode a reply: {e}");
                        return false;
                    }
                }
                if self.clients[i].out.len() > MAX_OUTBUF {
                    return false;
                }
            }
            Request::Nudge { slot, slot_generation } => self.nudge(slot, slot_generation),
            Request::Kill { slot, slot_generation, worker, epoch, reason } => self.kill(slot, slot_generation, worker, epoch, reason),
            Request::Note(n) => self.handle_note(&n),
            Request::Status { generation, vhost, dir, userdir_user } => {
                let reply = self.status(generation, vhost, dir, userdir_user);
                match protocol::encode_status_reply(&reply) {
                    Ok(f) => self.clients[i].out.extend_from_slice(&f),
                    Err(e) => {
                        log_error!("cannot encode a status reply: {e}");
                        return false;
                    }
                }
                if self.clients[i].out.len() > MAX_OUTBUF + protocol::MAX_FRAME {
                    return false;
                }
            }
        }
        true
    }

    fn nudge(&mut self, slot: u32, slot_generation: u32) {
        let Some(id) = self.pool_of_slot(slot, slot_generation) else { return };
        self.look_at_workers(id, std::time::Instant::now(), sys::monotonic_secs());
        self.balance(id);
    }

    fn kill(&mut self, slot: u32, slot_generation: u32, index: u32, epoch: u32, reason: KillReason) {
        let Some(id) = self.pool_of_slot(slot, slot_generation) else { return };
        let matches = self
            .pools
            .get(id)
            .and_then(|p| p.workers.get(index as usize))
            .and_then(|w| w.as_ref())
            .is_some_and(|w| w.epoch == epoch);
        if matches {
            let why = match reason {
                KillReason::Timeout => StopReason::Timeout,
            };
            self.stop_worker(id, index, why, false);
        }
        self.balance(id);
    }
}
