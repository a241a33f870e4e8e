//! End-to-end test of the real supervisor (root only): identity switch,
//! restart after a kill, crash backoff, refusal, spawn hints, clean shutdown.

use std::io::Read;
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::*;
use crate::core::hostconfig::VhostConfig;
use crate::core::limits::Limits;
use crate::core::request::{worker_socket_path, AppKind, PoolReply, PoolSpec};
use crate::core::scoreboard::{pool_state, worker_state};

const USER: &str = "sufcgi-ut1";

const WORKER: &str = r#"#!/usr/bin/python3
import os, socket
fds = ",".join(sorted(os.listdir("/proc/self/fd"), key=int))
status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
nnp = status["NoNewPrivs"].strip()
blk = status["SigBlk"].strip()
groups = ",".join(str(g) for g in os.getgroups())
s = socket.socket(fileno=0)
while True:
    c, _ = s.accept()
    line = "%d %d %d %s %s %s %s %s %s %s %s\n" % (os.getuid(), os.getgid(), os.getpid(),
        os.environ.get("USER"), os.environ.get("APP_MODE"), os.getcwd(), fds, nnp, blk, groups,
        os.environ.get("PATH"))
    c.sendall(line.encode())
    c.close()
"#;

const CRASHER: &str = "#!/bin/sh\nexit 3\n";

fn ensure_user() -> sys::Passwd {
    if let Some(pw) = sys::getpwnam(USER.as_bytes()).unwrap() {
        return pw;
    }
    let st = Command::new("useradd")
        .args(["-U", "-M", "-d", "/nonexistent", "-s", "/usr/sbin/nologin", USER])
        .status()
        .expect("run useradd");
    assert!(st.success(), "useradd failed");
    sys::getpwnam(USER.as_bytes()).unwrap().expect("user exists after useradd")
}

/// These tests start a real supervisor (setuid, chown): as root only, which CI
/// is. Anywhere else they fail saying so rather than pass without testing;
/// leave them out there with `cargo test -- --skip as_root --skip socket_dir_symlink`.
fn require_root(test: &str) {
    assert_eq!(sys::geteuid(), 0, "{test} needs root (CI runs the unit tests as root)");
}

fn write_file(path: &Path, text: &str, mode: u32, uid: u32, gid: u32) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    chown(path, Some(uid), Some(gid)).unwrap();
}

/// Connects to a pool socket and reads the worker's one-line answer.
fn ask(path: &Path) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match UnixStream::connect(path) {
            Ok(mut s) => {
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut out = String::new();
                if s.read_to_string(&mut out).is_ok() && !out.is_empty() {
                    return out.split_whitespace().map(str::to_owned).collect();
                }
            }
            Err(e) if Instant::now() < deadline => {
                let _ = e;
            }
            Err(e) => panic!("cannot connect to {}: {e}", path.display()),
        }
        assert!(Instant::now() < deadline, "no answer from {}", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn alive(pid: i32) -> bool {
    // A zombie is not "remaining": check /proc state too.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

fn processes_of(uid: u32) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { continue };
        let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap_or("");
        if uid_line.split_whitespace().nth(1) == Some(&uid.to_string()) && alive(pid) {
            out.push(pid);
        }
    }
    out
}

fn spec(program: &Path, www: &Path, max_workers: u32) -> PoolSpec {
    PoolSpec {
        generation: 3,
        vhost: 0,
        kind: AppKind::App,
        program: program.to_path_buf(),
        args: vec![],
        workdir: www.to_path_buf(),
        config_files: vec![www.join(".htaccess")],
        env: vec![(b"APP_MODE".to_vec(), b"test".to_vec())],
        limits: Limits { max_workers, ..Limits::DEFAULT },
        restart_file: None,
        log_file: None,
        userdir_user: None,
    }
}

#[test]
fn supervisor_end_to_end_as_root() {
    require_root("supervisor_end_to_end_as_root");
    let pw = ensure_user();
    assert!(pw.uid >= 1000 && pw.gid >= 1000, "test user ids below 1000: {pw:?}");
    assert!(processes_of(pw.uid).is_empty(), "stray processes of {USER} before the test");

    let base = PathBuf::from(format!("/tmp/sufcgi-ut-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir(&base).unwrap();
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
    let www = base.join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::set_permissions(&www, std::fs::Permissions::from_mode(0o755)).unwrap();
    chown(&www, Some(pw.uid), Some(pw.gid)).unwrap();
    write_file(&www.join("app.py"), WORKER, 0o755, pw.uid, pw.gid);
    write_file(&www.join("crash.sh"), CRASHER, 0o755, pw.uid, pw.gid);
    write_file(&www.join("root.py"), WORKER, 0o755, 0, 0);
    write_file(&www.join(".htaccess"), "SuFcgiApp app.py\nSuFcgiApp crash.sh\nSuFcgiApp root.py\nSuFcgiEnv APP_MODE test\n", 0o644, pw.uid, pw.gid);

    let sock_dir = base.join("sock");
    let mut cfg = HostConfig::new(sock_dir.clone(), 0, 0);
    cfg.generation = 3;
    cfg.vhosts.push(VhostConfig::new("ut.example:80".into(), None, www.clone()));
    let sb = Scoreboard::create(8, 8).unwrap();
    // An fd the "server" leaked without CLOEXEC must not reach the supervisor.
    // SAFETY: plain open of a device; closed below.
    let leaked = unsafe { libc::open(c"/dev/zero".as_ptr(), libc::O_RDONLY) };
    assert!(leaked >= 0);
    let handle = start(&cfg, &sb).unwrap();
    // SAFETY: closing the fd opened above.
    unsafe { libc::close(leaked) };
    assert!(handle.is_alive());
    let st = sys::lstat(&sock_dir).unwrap();
    assert_eq!((st.mode & 0o7777, st.uid), (0o750, 0));

    let mut client = Client::connect(&supervisor_socket_path(&sock_dir)).unwrap();

    // 1. A pool runs as the DocumentRoot owner with the spec's env and workdir.
    let info = match client.ensure(&spec(&www.join("app.py"), &www, 2)).unwrap() {
        PoolReply::Ready(i) => i,
        other => panic!("expected Ready, got {other:?}"),
    };
    let started = Instant::now();
    // The supervisor answered, so its start-up hygiene is done.
    let sup_fds: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", handle.pid()))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|p| p.display().to_string())
        .collect();
    assert!(!sup_fds.iter().any(|p| p == "/dev/zero"), "supervisor fds: {sup_fds:?}");
    assert_eq!((info.uid, info.gid, info.limits.max_workers), (pw.uid, pw.gid, 2));
    let ans = ask(&worker_socket_path(&info.socket_prefix, 0));
    assert_eq!(ans[0], pw.uid.to_string());
    assert_eq!(ans[1], pw.gid.to_string());
    assert_eq!(ans[3], USER);
    assert_eq!(ans[4], "test");
    assert_eq!(ans[5], www.to_str().unwrap());
    // Only stdin (the socket), stdout, stderr, plus the fd listdir itself opened.
    assert_eq!(ans[6], "0,1,2,3", "inherited fds");
    assert_eq!(ans[7], "1", "NoNewPrivs");
    assert_eq!(ans[8], "0000000000000000", "blocked signals");
    assert_eq!(ans[9], pw.gid.to_string(), "supplementary groups");
    assert_eq!(ans[10], "/usr/local/bin:/usr/bin:/bin");
    let first_pid: i32 = ans[2].parse().unwrap();
    let slot = sb.slot(info.slot).unwrap();
    assert_eq!(slot.workers[0].load().1, worker_state::IDLE);
    assert_eq!(slot.live_workers(), 1);
    assert_eq!(slot.max_workers.load(Ordering::Acquire), 2);

    // Same spec again: the same pool.
    assert_eq!(client.ensure(&spec(&www.join("app.py"), &www, 2)).unwrap(), PoolReply::Ready(info.clone()));

    // 2. A worker killed after the crash window leaves its entry empty (no
    //    demand, no respawn); a waiting request brings a fresh one.
    std::thread::sleep((started + Duration::from_millis(1200)).saturating_duration_since(Instant::now()));
    sys::kill(first_pid, libc::SIGKILL).unwrap();
    wait_for("first worker to be reaped", || slot.workers[0].load().1 == worker_state::EMPTY);
    assert!(sys::lstat(&worker_socket_path(&info.socket_prefix, 0)).is_err(), "dead worker's socket removed");
    slot.waiting.store(1, Ordering::Release);
    client.nudge(info.slot, info.slot_generation).unwrap();
    wait_for("a fresh worker", || slot.workers[0].load().1 == worker_state::IDLE);
    slot.waiting.store(0, Ordering::Release);
    let ans = ask(&worker_socket_path(&info.socket_prefix, 0));
    let second_pid: i32 = ans[2].parse().unwrap();
    assert_ne!(second_pid, first_pid);
    assert_eq!(ans[0], pw.uid.to_string());
    assert_eq!(slot.spawns.load(Ordering::Acquire), 2);

    // 3. With the only worker busy and a request waiting, a second worker appears.
    let claim = slot.claim().expect("the idle worker can be claimed");
    slot.waiting.store(1, Ordering::Release);
    client.nudge(info.slot, info.slot_generation).unwrap();
    wait_for("second worker", || slot.live_workers() == 2);
    // A nudge for a stale generation is ignored (and max is reached anyway).
    client.nudge(info.slot, info.slot_generation.wrapping_add(1)).unwrap();
    slot.waiting.store(0, Ordering::Release);
    claim.release();

    // 4. A root-owned program is refused with a precise reason.
    match client.ensure(&spec(&www.join("root.py"), &www, 1)).unwrap() {
        PoolReply::Refused { status, reason } => {
            assert_eq!(status, 403);
            assert!(reason.contains("owned by uid 0"), "{reason}");
        }
        other => panic!("expected Refused, got {other:?}"),
    }
    // Unknown generation → 500.
    let mut bad = spec(&www.join("app.py"), &www, 2);
    bad.generation = 99;
    assert!(matches!(client.ensure(&bad).unwrap(), PoolReply::Refused { status: 500, .. }));

    // 5. A crashing app backs off: socket gone, 503 while backing off.
    let crash = match client.ensure(&spec(&www.join("crash.sh"), &www, 1)).unwrap() {
        PoolReply::Ready(i) => i,
        other => panic!("expected Ready for the crasher, got {other:?}"),
    };
    let crash_slot = sb.slot(crash.slot).unwrap();
    // Only a burst of crashes at start backs off: each request meanwhile
    // (an ensure of the pool, which has no worker left) starts another.
    wait_for("crasher to back off", || {
        if crash_slot.workers[0].pid.load(Ordering::Acquire) == 0 && crash_slot.state.load(Ordering::Acquire) != pool_state::BACKOFF {
            let _ = client.ensure(&spec(&www.join("crash.sh"), &www, 1));
        }
        crash_slot.state.load(Ordering::Acquire) == pool_state::BACKOFF
    });
    assert!(crash_slot.spawns.load(Ordering::Acquire) >= 3, "backed off only after a burst of crashes at start");
    assert!(sys::lstat(&worker_socket_path(&crash.socket_prefix, 0)).is_err(), "crashed worker's socket removed");
    match client.ensure(&spec(&www.join("crash.sh"), &www, 1)).unwrap() {
        PoolReply::Refused { status, .. } => assert_eq!(status, 503),
        other => panic!("expected 503 while backing off, got {other:?}"),
    }

    // 6. A new config generation over the control channel is honoured.
    let mut cfg4 = cfg.clone();
    cfg4.generation = 4;
    handle.send_config(&cfg4).unwrap();
    let mut s4 = spec(&www.join("app.py"), &www, 2);
    s4.generation = 4;
    wait_for("generation 4", || matches!(client.ensure(&s4), Ok(PoolReply::Ready(_))));

    // A config frame from an unprivileged holder of the control fd is ignored.
    let (pid, ctl) = handle.into_raw();
    let mut forged = cfg.clone();
    forged.generation = 77;
    let frame = protocol::encode_config(&forged).unwrap();
    // SAFETY: the forked test child only makes async-signal-safe calls and _exits.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: as above.
        unsafe {
            if libc::setresgid(65534, 65534, 65534) != 0 || libc::setresuid(65534, 65534, 65534) != 0 {
                libc::_exit(2);
            }
            let ok = sys::send_all(ctl, &frame).is_ok();
            libc::_exit(if ok { 0 } else { 1 });
        }
    }
    let mut wst = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(child, &mut wst, 0) };
    assert!(libc::WIFEXITED(wst) && libc::WEXITSTATUS(wst) == 0, "forging child failed: {wst}");
    let handle = SupervisorHandle::from_raw(pid, ctl);
    let mut s77 = spec(&www.join("app.py"), &www, 2);
    s77.generation = 77;
    std::thread::sleep(Duration::from_millis(100));
    assert!(matches!(client.ensure(&s77).unwrap(), PoolReply::Refused { status: 500, .. }));
    assert!(handle.is_alive());

    // A foreign frame closes only that connection.
    {
        let mut raw = UnixStream::connect(supervisor_socket_path(&sock_dir)).unwrap();
        use std::io::Write;
        raw.write_all(&[3, 0, 0, 0, 9, 9, 9]).unwrap();
        raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(raw.read(&mut buf).unwrap_or(0), 0);
    }

    // 7. Shutdown leaves no worker and no socket behind.
    let workers = processes_of(pw.uid);
    assert!(!workers.is_empty());
    drop(client);
    handle.shutdown(Duration::from_secs(10)).unwrap();
    for pid in workers {
        assert!(!alive(pid), "worker {pid} survived the shutdown");
    }
    assert!(processes_of(pw.uid).is_empty());
    assert!(!worker_socket_path(&info.socket_prefix, 0).exists());
    assert!(!worker_socket_path(&info.socket_prefix, 1).exists());
    assert!(!supervisor_socket_path(&sock_dir).exists());
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn socket_dir_symlink_is_refused() {
    require_root("socket_dir_symlink_is_refused");
    let base = PathBuf::from(format!("/tmp/sufcgi-ut-link-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir(&base).unwrap();
    let real = base.join("real");
    std::fs::create_dir(&real).unwrap();
    let link = base.join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    assert!(prepare_socket_dir(&link, 0).unwrap_err().to_string().contains("symlink"));
    // A non-root-owned directory is refused too.
    chown(&real, Some(12345), None).unwrap();
    assert!(prepare_socket_dir(&real, 0).unwrap_err().to_string().contains("not root"));
    let _ = std::fs::remove_dir_all(&base);
}
