//! Workers' stderr: each worker's pipe is polled by the loop, read without
//! blocking and cut into lines, which go to the pool's history and the
//! customer's log (else the error log; see `customer::customer_stderr`).

use std::os::fd::{AsRawFd, RawFd};

use super::super::pools::Worker;
use super::Server;

/// Longest stderr line passed on; the rest of a longer line is dropped.
const MAX_STDERR_LINE: usize = 4096;
/// Lines taken from one pipe at one go; the rest waits for the next poll.
const MAX_LINES_AT_ONCE: usize = 256;

impl Server {
    /// (pipe, pool id, worker pid) for every worker with its stderr still open.
    pub(super) fn stderr_fds(&self) -> Vec<(RawFd, u64, u32)> {
        let mut v = Vec::new();
        for p in self.pools.pools() {
            for w in p.workers.iter().flatten().chain(p.draining.iter()) {
                if let Some(fd) = w.stderr.as_ref() {
                    v.push((fd.as_raw_fd(), p.id, w.pid as u32));
                }
            }
        }
        v
    }

    pub(super) fn read_stderr(&mut self, id: u64, pid: u32) {
        let mut lines = Vec::new();
        if let Some(w) = self.pools.worker_mut(id, pid as libc::pid_t) {
            collect_stderr(w, &mut lines);
        }
        self.emit_stderr(id, pid as libc::pid_t, &lines);
    }

    /// What an exited worker left in its pipe, and its last partial line.
    pub(super) fn drain_stderr(&mut self, id: u64, w: &mut Worker) {
        let mut lines = Vec::new();
        collect_stderr(w, &mut lines);
        if !w.stderr_buf.is_empty() {
            lines.push(std::mem::take(&mut w.stderr_buf));
        }
        self.emit_stderr(id, w.pid, &lines);
    }

    fn emit_stderr(&self, id: u64, pid: libc::pid_t, lines: &[Vec<u8>]) {
        for l in lines {
            self.customer_stderr(id, pid, l);
        }
    }
}

/// Complete lines read from a worker's stderr pipe (non-blocking).
fn collect_stderr(w: &mut Worker, out: &mut Vec<Vec<u8>>) {
    let Some(fd) = w.stderr.as_ref() else { return };
    let mut buf = [0u8; 8192];
    loop {
        // SAFETY: reading into a stack buffer from our own pipe fd.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
        if n == 0 {
            w.stderr = None;
            break;
        }
        if n < 0 {
            break;
        }
        split_lines(&mut w.stderr_buf, &buf[..n as usize], out);
        if out.len() > MAX_LINES_AT_ONCE {
            break;
        }
    }
}

/// Cuts `data` into complete lines (to `out`), `partial` holding the line
/// begun and not yet ended; bytes of a line beyond `MAX_STDERR_LINE` are dropped.
fn split_lines(partial: &mut Vec<u8>, data: &[u8], out: &mut Vec<Vec<u8>>) {
    for &b in data {
        if b == b'\n' {
            out.push(std::mem::take(partial));
        } else if partial.len() < MAX_STDERR_LINE {
            partial.push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_cut_across_reads_and_bounded() {
        let mut partial = Vec::new();
        let mut out = Vec::new();
        split_lines(&mut partial, b"PHP Warning: a\nPHP No", &mut out);
        assert_eq!(out, vec![b"PHP Warning: a".to_vec()]);
        assert_eq!(partial, b"PHP No");
        split_lines(&mut partial, b"tice: b\n\nrest", &mut out);
        assert_eq!(out, vec![b"PHP Warning: a".to_vec(), b"PHP Notice: b".to_vec(), Vec::new()]);
        assert_eq!(partial, b"rest");
        // A long line keeps its first MAX_STDERR_LINE bytes; the next line is whole.
        let mut partial = Vec::new();
        let mut out = Vec::new();
        let mut long = vec![b'x'; MAX_STDERR_LINE + 10];
        long.extend_from_slice(b"\nok\n");
        split_lines(&mut partial, &long, &mut out);
        assert_eq!(out, vec![vec![b'x'; MAX_STDERR_LINE], b"ok".to_vec()]);
        assert!(partial.is_empty());
        // Bytes are bytes: no UTF-8 is assumed.
        split_lines(&mut partial, b"\xff\xfe\n", &mut out);
        assert_eq!(out.last().unwrap(), b"\xff\xfe");
    }
}
