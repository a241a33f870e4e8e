//! "Where is it blocked": a look at a worker from outside, for a slow
//! request's entry in the customer's log (`SuFcgiSlowLog`). Any language:
//! only what the kernel shows in `/proc` — each thread's state and the
//! syscall it is in (`/proc/PID/task/TID/syscall`), what that syscall's file
//! descriptor is (a TCP peer, a file, a pipe), the kernel stack where root
//! may read it, CPU time and RSS. No ptrace, nothing stopped, nothing
//! written. The supervisor (root) calls it; the parsers are pure functions
//! over /proc text, tested against hand-written samples.

use std::fmt::Write as _;
use std::path::Path;

/// Threads described at most.
const MAX_THREADS: usize = 8;
/// Kernel stack frames shown per thread.
const STACK_FRAMES: usize = 3;

/// What `/proc/…/syscall` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InSyscall {
    Running,
    /// Blocked outside any syscall (e.g. a page fault), or unknown.
    NoSyscall,
    Blocked { nr: i64, args: [u64; 6] },
}

pub fn parse_syscall(text: &str) -> Option<InSyscall> {
    let mut w = text.split_whitespace();
    let first = w.next()?;
    if first == "running" {
        return Some(InSyscall::Running);
    }
    let nr: i64 = first.parse().ok()?;
    if nr < 0 {
        return Some(InSyscall::NoSyscall);
    }
    let mut args = [0u64; 6];
    for a in args.iter_mut() {
        *a = u64::from_str_radix(w.next()?.trim_start_matches("0x"), 16).ok()?;
    }
    Some(InSyscall::Blocked { nr, args })
}

/// From `/proc/PID/stat`: (state, utime + stime in clock ticks). The
/// command name may hold spaces and parentheses: fields start after the last ')'.
pub fn parse_stat(text: &str) -> Option<(char, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let state = f.first()?.chars().next()?;
    // After the name: state(0) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime(11) stime(12)
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((state, utime + stime))
}

/// The syscalls a blocked request is usually found in, and whether the first
/// argument is a file descriptor worth naming.
pub fn syscall_name(nr: i64) -> Option<(&'static str, bool)> {
    #[cfg(target_arch = "x86_64")]
    {
        let old = match nr {
            libc::SYS_poll => Some(("poll", false)),
            libc::SYS_select => Some(("select", false)),
            libc::SYS_epoll_wait => Some(("epoll_wait", true)),
            libc::SYS_accept => Some(("accept", true)),
            libc::SYS_pause => Some(("pause", false)),
            libc::SYS_wait4 => Some(("wait4 (waiting for a child process)", false)),
            libc::SYS_nanosleep => Some(("nanosleep (sleeping)", false)),
            _ => None,
        };
        if old.is_some() {
            return old;
        }
    }
    Some(match nr {
        libc::SYS_read => ("read", true),
        libc::SYS_write => ("write", true),
        libc::SYS_readv => ("readv", true),
        libc::SYS_writev => ("writev", true),
        libc::SYS_pread64 => ("pread", true),
        libc::SYS_pwrite64 => ("pwrite", true),
        libc::SYS_recvfrom => ("recvfrom", true),
        libc::SYS_recvmsg => ("recvmsg", true),
        libc::SYS_sendto => ("sendto", true),
        libc::SYS_sendmsg => ("sendmsg", true),
        libc::SYS_connect => ("connect", true),
        libc::SYS_accept4 => ("accept", true),
        libc::SYS_flock => ("flock (waiting for a file lock)", true),
        libc::SYS_fsync => ("fsync", true),
        libc::SYS_fdatasync => ("fdatasync", true),
        libc::SYS_fcntl => ("fcntl (a file lock?)", true),
        libc::SYS_ppoll => ("ppoll", false),
        libc::SYS_pselect6 => ("pselect", false),
        libc::SYS_epoll_pwait => ("epoll_wait", true),
        libc::SYS_futex => ("futex (waiting for a lock or a condition)", false),
        libc::SYS_clock_nanosleep => ("clock_nanosleep (sleeping)", false),
        libc::SYS_waitid => ("waitid (waiting for a child process)", false),
        libc::SYS_openat => ("openat", false),
        libc::SYS_semtimedop => ("semtimedop (a semaphore)", false),
        libc::SYS_msgrcv => ("msgrcv", false),
        _ => return None,
    })
}

/// `0100007F:0CEA` (as in /proc/net/tcp) → `127.0.0.1:3306`; IPv6 too.
pub fn parse_proc_addr(s: &str) -> Option<String> {
    let (host, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    match host.len() {
        8 => {
            let v = u32::from_str_radix(host, 16).ok()?;
            Some(format!("{}:{port}", std::net::Ipv4Addr::from(v.to_le_bytes())))
        }
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                let w = u32::from_str_radix(&host[i * 8..i * 8 + 8], 16).ok()?;
                b[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
            }
            let a = std::net::Ipv6Addr::from(b);
            Some(match a.to_ipv4_mapped() {
                Some(v4) => format!("{v4}:{port}"),
                None => format!("[{a}]:{port}"),
            })
        }
        _ => None,
    }
}

/// The line of a /proc/net/{tcp,udp}{,6} table for socket inode `ino`:
/// "local -> remote".
pub fn find_inet_socket(table: &str, ino: u64) -> Option<String> {
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.get(9).and_then(|i| i.parse::<u64>().ok()) == Some(ino) {
            return Some(format!("{} -> {}", parse_proc_addr(f.get(1)?)?, parse_proc_addr(f.get(2)?)?));
        }
    }
    None
}

/// `/proc/…/stack` → the first few function names, innermost first.
pub fn parse_stack(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(|f| f.split('+').next().unwrap_or(f).to_string())
        .filter(|f| !f.is_empty())
        .take(STACK_FRAMES)
        .collect()
}

fn read(p: &str) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

/// What fd `fd` of `pid` is: "TCP 127.0.0.1:5000 -> 127.0.0.1:3306", a
/// path, "pipe", "a UNIX socket".
pub fn describe_fd(pid: i32, fd: u64) -> Option<String> {
    let target = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    let t = target.to_string_lossy().into_owned();
    if let Some(ino) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')).and_then(|n| n.parse::<u64>().ok()) {
        for (table, what) in [("tcp", "TCP"), ("tcp6", "TCP"), ("udp", "UDP"), ("udp6", "UDP")] {
            if let Some(found) = read(&format!("/proc/{pid}/net/{table}")).and_then(|t| find_inet_socket(&t, ino)) {
                return Some(format!("{what} {found}"));
            }
        }
        return Some("a UNIX socket".into());
    }
    if t.starts_with("pipe:[") {
        return Some("a pipe".into());
    }
    Some(t)
}

/// How telling a thread's description is: waiting on something named (a
/// peer, a file) first, then running, then the rest (idle pools' futexes).
fn rank(d: &str) -> u8 {
    if d.contains(" on TCP ") || d.contains(" on UDP ") || d.contains(" on /") || d.contains("uninterruptible") {
        0
    } else if d.contains("running on CPU") {
        1
    } else {
        2
    }
}

fn describe_thread(pid: i32, tid: i32, out: &mut String) {
    let base = format!("/proc/{pid}/task/{tid}");
    let state = read(&format!("{base}/stat")).and_then(|s| parse_stat(&s)).map(|(st, _)| st);
    let _ = write!(out, "thread {tid}{}: ", if tid == pid { " (main)" } else { "" });
    match read(&format!("{base}/syscall")).as_deref().and_then(parse_syscall) {
        _ if state == Some('R') => out.push_str("running on CPU"),
        Some(InSyscall::Running) => out.push_str("running on CPU"),
        Some(InSyscall::Blocked { nr, args }) => match syscall_name(nr) {
            Some((name, takes_fd)) => {
                out.push_str(name);
                if takes_fd {
                    if let Some(what) = describe_fd(pid, args[0]) {
                        let _ = write!(out, " on {what}");
                    } else {
                        let _ = write!(out, " on fd {}", args[0]);
                    }
                }
            }
            None => {
                let _ = write!(out, "syscall {nr}");
            }
        },
        Some(InSyscall::NoSyscall) => out.push_str(if state == Some('D') { "waiting for the disk or the kernel" } else { "not in a syscall" }),
        None => out.push_str("(not visible)"),
    }
    if state == Some('D') {
        out.push_str(" (uninterruptible)");
    }
    let stack = read(&format!("{base}/stack")).map(|s| parse_stack(&s)).unwrap_or_default();
    if !stack.is_empty() {
        let _ = write!(out, " [kernel: {}]", stack.join(" < "));
    }
}

/// One line about worker `pid` as it is now: CPU time so far, RSS, and
/// what each thread is doing.
pub fn describe(pid: i32, page_size: u64) -> String {
    // SAFETY: sysconf has no memory-safety requirements.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut out = String::new();
    if let Some((_, ticks)) = read(&format!("/proc/{pid}/stat")).and_then(|s| parse_stat(&s)) {
        let _ = write!(out, "CPU {:.2} s", ticks as f64 / hz);
    }
    if let Some(pages) = read(&format!("/proc/{pid}/statm")).and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok()) {
        let _ = write!(out, "{}RSS {:.1} MiB", if out.is_empty() { "" } else { ", " }, (pages * page_size) as f64 / 1048576.0);
    }
    let mut tids: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default();
    tids.sort_unstable();
    if tids.is_empty() && !Path::new(&format!("/proc/{pid}")).exists() {
        out.push_str(if out.is_empty() { "the worker has exited" } else { "; the worker has exited" });
        return out;
    }
    let mut threads: Vec<String> = tids
        .iter()
        .take(MAX_THREADS * 8)
        .map(|&tid| {
            let mut d = String::new();
            describe_thread(pid, tid, &mut d);
            d
        })
        .collect();
    threads.sort_by_key(|d| rank(d));
    let more = tids.len().saturating_sub(MAX_THREADS);
    for d in threads.into_iter().take(MAX_THREADS) {
        out.push_str("; ");
        out.push_str(&d);
    }
    if more > 0 {
        let _ = write!(out, "; {more} more thread(s)");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syscall_files() {
        assert_eq!(parse_syscall("running\n"), Some(InSyscall::Running));
        assert_eq!(parse_syscall("-1 0x7ffd 0x7f12\n"), Some(InSyscall::NoSyscall));
        let b = parse_syscall("0 0x7 0x7f0000 0x10000 0x0 0x0 0x0 0x7ffd5 0x7f1\n").unwrap();
        assert_eq!(b, InSyscall::Blocked { nr: 0, args: [7, 0x7f0000, 0x10000, 0, 0, 0] });
        assert_eq!(parse_syscall(""), None);
        assert_eq!(parse_syscall("12 0x1"), None, "truncated");
        assert_eq!(syscall_name(libc::SYS_read), Some(("read", true)));
        assert!(syscall_name(libc::SYS_futex).unwrap().0.starts_with("futex"));
    }

    #[test]
    fn stat_with_an_awkward_name() {
        let s = "4242 (my (app) x) S 1 4242 4242 0 -1 4194560 300 0 0 0 150 25 0 0 20 0 3 0 12345 1000000 500 18446744073709551615";
        assert_eq!(parse_stat(s), Some(('S', 175)));
        assert_eq!(parse_stat("1 (x) R 1"), None);
    }

    #[test]
    fn net_tables() {
        assert_eq!(parse_proc_addr("0100007F:0CEA").as_deref(), Some("127.0.0.1:3306"));
        assert_eq!(parse_proc_addr("0000000000000000FFFF00000100007F:1F90").as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(parse_proc_addr("00000000000000000000000001000000:0050").as_deref(), Some("[::1]:80"));
        assert_eq!(parse_proc_addr("zz:1"), None);
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
                     \x20  0: 0100007F:C350 0100007F:0CEA 01 00000000:00000000 00:00000000 00000000  1000        0 99123 1 0 20 4 30 10 -1\n";
        assert_eq!(find_inet_socket(table, 99123).as_deref(), Some("127.0.0.1:50000 -> 127.0.0.1:3306"));
        assert_eq!(find_inet_socket(table, 1), None);
    }

    #[test]
    fn the_telling_threads_come_first() {
        let mut v = vec!["thread 2: futex (waiting)", "thread 1 (main): running on CPU", "thread 3: recvfrom on TCP 1 -> 2"];
        v.sort_by_key(|d| rank(d));
        assert_eq!(v, ["thread 3: recvfrom on TCP 1 -> 2", "thread 1 (main): running on CPU", "thread 2: futex (waiting)"]);
    }

    #[test]
    fn kernel_stacks() {
        let s = "[<0>] sk_wait_data+0x121/0x150\n[<0>] tcp_recvmsg_locked+0x2c0/0x9a0\n[<0>] tcp_recvmsg+0x7d/0x1d0\n[<0>] inet_recvmsg+0x52/0x130\n";
        assert_eq!(parse_stack(s), vec!["sk_wait_data", "tcp_recvmsg_locked", "tcp_recvmsg"]);
        assert!(parse_stack("").is_empty());
    }

    #[test]
    fn a_thread_blocked_in_read_on_a_pipe_is_described() {
        use std::os::fd::AsRawFd;
        let (r, w) = crate::core::sys::pipe().unwrap();
        // SAFETY: the child only calls async-signal-safe functions, then exits.
        let child = unsafe { libc::fork() };
        if child == 0 {
            let mut b = [0u8; 1];
            // SAFETY: in the forked child: close its copy of the write end (so
            // the parent's close ends the read), read into a stack buffer, exit.
            unsafe {
                libc::close(w.as_raw_fd());
                libc::read(r.as_raw_fd(), b.as_mut_ptr() as *mut _, 1);
                libc::_exit(0);
            }
        }
        let mut seen = String::new();
        for _ in 0..200 {
            seen = describe(child, 4096);
            if seen.contains("read on a pipe") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        drop(w);
        let mut st = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(child, &mut st, 0) };
        assert!(seen.contains(&format!("thread {child} (main): read on a pipe")), "{seen}");
        assert!(seen.starts_with("CPU ") && seen.contains("RSS "), "{seen}");
    }
}
