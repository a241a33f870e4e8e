//! The protocol's codecs against hand-written frames, round trips, and
//! malformed input (truncation, trailing bytes, bad tags, huge counts).

use std::path::PathBuf;

use super::*;
use crate::core::owner_limits::{CgroupMode, OwnerLimits};
use crate::core::request::AppKind;
use crate::core::supervisor::protocol_codec::TAG_REPLY_STATUS;
use crate::core::supervisor::protocol_customer::{Happened, NoteKind, PoolHistory};
use crate::core::supervisor::protocol_usage::{Isolation, OwnerUsage, PoolUsage};

fn sample_spec() -> PoolSpec {
    PoolSpec {
        generation: 7,
        vhost: 2,
        kind: AppKind::Wrapper,
        program: "/usr/bin/php-cgi".into(),
        args: vec![b"-d".to_vec(), b"x=\xff".to_vec()],
        workdir: "/home/a/www".into(),
        config_files: vec!["/home/a/www/.htaccess".into(), "/home/a/.htaccess".into()],
        env: vec![(b"A".to_vec(), b"1".to_vec()), (b"B".to_vec(), Vec::new())],
        limits: Limits { max_workers: 3, ..Limits::DEFAULT },
        restart_file: Some("/home/a/www/tmp/restart.txt".into()),
        log_file: None,
        userdir_user: Some(b"alice".to_vec()),
    }
}

fn payload(frame: &[u8]) -> &[u8] {
    let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
    assert_eq!(frame.len(), 4 + len);
    &frame[4..]
}

#[test]
fn request_round_trip() {
    for r in [
        Request::Ensure(Box::new(sample_spec())),
        Request::Ensure(Box::new(PoolSpec { userdir_user: None, args: vec![], ..sample_spec() })),
        Request::Nudge { slot: 5, slot_generation: 9 },
        Request::Note(Box::new(Note {
            slot: 1,
            slot_generation: 2,
            kind: NoteKind::Stderr,
            status: 0,
            worker: 3,
            epoch: 4,
            elapsed_ms: 0,
            text: b"PHP Warning: x\nsecond".to_vec(),
        })),
    ] {
        let f = encode_request(&r).unwrap();
        assert_eq!(decode_request(payload(&f)).unwrap(), r);
    }
}

#[test]
fn reply_round_trip() {
    for r in [
        PoolReply::Ready(PoolInfo {
            socket_prefix: "/run/sufcgi/00ff".into(),
            slot: 1,
            slot_generation: 2,
            uid: 1001,
            gid: 1002,
            limits: Limits::DEFAULT,
        }),
        PoolReply::Refused { status: 403, reason: "nope".into() },
    ] {
        let f = encode_reply(&r).unwrap();
        assert_eq!(decode_reply(payload(&f)).unwrap(), r);
    }
}

#[test]
fn config_round_trip() {
    let mut c = HostConfig::new("/run/sufcgi".into(), 33, 33);
    c.generation = 12;
    c.cgroups = CgroupMode::Required;
    c.owner_limits = OwnerLimits { cpu_weight: 300, cpu_max: 250, max_processes: 0, memory: 1 << 30 };
    c.blocked_env = vec!["SECRET".into()];
    c.vhosts.push(VhostConfig::new("a:80".into(), Some((1001, 1001)), "/srv/a".into()));
    c.vhosts.push(VhostConfig::new("b:443".into(), None, "/srv/b".into()));
    c.vhosts[1].owner_overrides.memory = Some(64 << 20);
    let f = encode_config(&c).unwrap();
    assert_eq!(decode_config(payload(&f)).unwrap(), c);
    // SuFcgiShortSlices is the last byte; off travels as 0.
    assert_eq!(f.last(), Some(&1u8));
    c.short_slices = false;
    let f = encode_config(&c).unwrap();
    assert_eq!(f.last(), Some(&0u8));
    assert!(!decode_config(payload(&f)).unwrap().short_slices);
}

#[test]
fn hand_written_spawn_hint_frame() {
    let frame: &[u8] = &[
        10, 0, 0, 0, // payload length
        VERSION, TAG_NUDGE, // header
        3, 0, 0, 0, // slot
        0x01, 0x01, 0, 0, // generation 257
    ];
    assert_eq!(encode_request(&Request::Nudge { slot: 3, slot_generation: 257 }).unwrap(), frame);
    assert_eq!(decode_request(&frame[4..]).unwrap(), Request::Nudge { slot: 3, slot_generation: 257 });
}

#[test]
fn hand_written_refused_frame() {
    let frame: &[u8] = &[VERSION, TAG_REPLY_REFUSED, 0x93, 0x01, 2, 0, 0, 0, b'n', b'o'];
    assert_eq!(decode_reply(frame).unwrap(), PoolReply::Refused { status: 403, reason: "no".into() });
}

#[test]
fn hand_written_status_request_frame() {
    let frame: &[u8] = &[
        26, 0, 0, 0, // payload length
        VERSION, TAG_STATUS, // header
        5, 0, 0, 0, 0, 0, 0, 0, // generation 5
        2, 0, 0, 0, // vhost 2
        1, 6, 0, 0, 0, b'/', b'h', b'o', b'm', b'e', b'/', // dir Some("/home/")
        0, // no userdir user
    ];
    let r = Request::Status { generation: 5, vhost: 2, dir: Some("/home/".into()), userdir_user: None };
    assert_eq!(encode_request(&r).unwrap(), frame);
    assert_eq!(decode_request(&frame[4..]).unwrap(), r);
    let all = Request::Status { generation: 1, vhost: 0, dir: None, userdir_user: Some(b"al\xffce".to_vec()) };
    assert_eq!(decode_request(payload(&encode_request(&all).unwrap())).unwrap(), all);
}

fn sample_pool_status() -> PoolStatus {
    PoolStatus {
        uid: 2401,
        gid: 2401,
        user: b"alice".to_vec(),
        vhost: "a.test:80".into(),
        kind: AppKind::App,
        program: "/home/a/www/app/app.py".into(),
        workdir: "/home/a/www/app".into(),
        state: PoolState::Backoff,
        max_workers: 4,
        waiting: 1,
        spawns: 9,
        requests: 1 << 33,
        rejected: 3,
        per_worker: 8,
        stopped: StopCounts { idle: 1, max_requests: 2, reload: 3, timeout: 4, memory: 5, retired: 6, crashed: 7, exited: 8 },
        workers: vec![
            WorkerStatus { pid: 100, state: WorkerState::Busy, requests: 7, rss: 12 << 20, age_secs: 30 },
            WorkerStatus { pid: 101, state: WorkerState::Stopping, requests: 0, rss: 0, age_secs: 1 },
        ],
        usage: PoolUsage { cpu_usec: Some(1500), memory: Some(9 << 20), processes: Some(3), oom_kills: None },
        history: PoolHistory {
            last_exit: Some(Happened { at: 5, status: 0, text: "pid 9 exited with status 1".into() }),
            stderr: vec!["warning".into()],
            ..PoolHistory::default()
        },
    }
}

#[test]
fn hand_written_status_reply_frame() {
    let mut p: Vec<u8> = vec![VERSION, TAG_REPLY_STATUS, 0, 1, 0, 0, 0];
    p.extend_from_slice(&[0x61, 0x09, 0, 0, 0x61, 0x09, 0, 0]); // uid, gid 2401
    p.extend_from_slice(&[1, 0, 0, 0, b'u']); // user
    p.extend_from_slice(&[3, 0, 0, 0, b'v', b':', b'1']); // vhost
    p.push(2); // kind: wrapper
    p.extend_from_slice(&[2, 0, 0, 0, b'/', b'p']); // program
    p.extend_from_slice(&[2, 0, 0, 0, b'/', b'w']); // workdir
    p.push(2); // state: retiring
    for v in [4u32, 0, 1] {
        p.extend_from_slice(&v.to_le_bytes()); // max_workers, waiting, spawns
    }
    p.extend_from_slice(&5u64.to_le_bytes()); // requests
    p.extend_from_slice(&0u32.to_le_bytes()); // rejected
    p.extend_from_slice(&1u32.to_le_bytes()); // requests per worker
    for v in 1u32..=8 {
        p.extend_from_slice(&v.to_le_bytes()); // stop counts
    }
    p.extend_from_slice(&1u32.to_le_bytes()); // one worker
    p.extend_from_slice(&77u32.to_le_bytes());
    p.push(1); // idle
    p.extend_from_slice(&5u32.to_le_bytes());
    p.extend_from_slice(&4096u64.to_le_bytes());
    p.extend_from_slice(&12u32.to_le_bytes());
    let worker_state_at = p.len() - 21 + 4;
    p.extend_from_slice(&[0, 1, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // usage: cpu unknown, 7 bytes, the rest unknown
    p.extend_from_slice(&[0u8; 16]); // empty history (protocol_customer)
    p.extend_from_slice(&[2, 4, 0, 0, 0, b'n', b'o', b'n', b'e', 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, b'o', b'f', b'f', 0, 0, 0, 0]); // isolation (no slices text)
    p.extend_from_slice(&1u32.to_le_bytes()); // one owner
    p.extend_from_slice(&2401u32.to_le_bytes());
    p.extend_from_slice(&[1, 0, 0, 0, b'u']);
    for v in [100u32, 0, 512] {
        p.extend_from_slice(&v.to_le_bytes());
    }
    p.extend_from_slice(&0u64.to_le_bytes());
    p.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0]); // not in a cgroup, no figures
    let want = StatusReply::Pools {
        pools: vec![PoolStatus {
            uid: 2401,
            gid: 2401,
            user: b"u".to_vec(),
            vhost: "v:1".into(),
            kind: AppKind::Wrapper,
            program: "/p".into(),
            workdir: "/w".into(),
            state: PoolState::Retiring,
            max_workers: 4,
            waiting: 0,
            spawns: 1,
            requests: 5,
            rejected: 0,
            per_worker: 1,
            stopped: StopCounts { idle: 1, max_requests: 2, reload: 3, timeout: 4, memory: 5, retired: 6, crashed: 7, exited: 8 },
            workers: vec![WorkerStatus { pid: 77, state: WorkerState::Idle, requests: 5, rss: 4096, age_secs: 12 }],
            usage: PoolUsage { memory: Some(7), ..Default::default() },
            history: PoolHistory::default(),
        }],
        truncated: false,
        isolation: Isolation { mode: CgroupMode::Off, hierarchy: "none".into(), note: "off".into(), ..Default::default() },
        owners: vec![OwnerUsage { uid: 2401, user: b"u".to_vec(), ..Default::default() }],
    };
    assert_eq!(decode_status_reply(&p).unwrap(), want);
    assert_eq!(payload(&encode_status_reply(&want).unwrap()), &p[..]);
    // Every truncation fails cleanly; so do trailing bytes and a bad state.
    for n in 0..p.len() {
        assert!(decode_status_reply(&p[..n]).is_err(), "truncated at {n}");
    }
    let mut t = p.clone();
    t.push(0);
    assert!(decode_status_reply(&t).is_err());
    let mut bad = p.clone();
    bad[worker_state_at] = 9;
    assert!(decode_status_reply(&bad).is_err());
}

#[test]
fn status_reply_round_trip_and_truncation() {
    for r in [
        StatusReply::Pools {
            pools: vec![sample_pool_status(), sample_pool_status()],
            truncated: false,
            isolation: Isolation { hierarchy: "v2".into(), controllers: vec!["memory".into()], ..Default::default() },
            owners: vec![OwnerUsage { uid: 1, cpu_usec: Some(2), ..Default::default() }; 3],
        },
        StatusReply::Pools { pools: vec![], truncated: true, isolation: Isolation::default(), owners: vec![] },
        StatusReply::Refused { status: 403, reason: "not yours".into() },
    ] {
        let f = encode_status_reply(&r).unwrap();
        assert_eq!(decode_status_reply(payload(&f)).unwrap(), r);
    }
    // More pools than a frame holds: a prefix, marked truncated.
    let big = PoolStatus { program: PathBuf::from(format!("/{}", "x".repeat(60_000))), ..sample_pool_status() };
    let owners = vec![OwnerUsage { user: vec![b'o'; 100], ..Default::default() }; 20_000];
    let f = encode_status_reply(&StatusReply::Pools { pools: vec![big; 40], truncated: false, isolation: Isolation::default(), owners }).unwrap();
    assert!(f.len() <= MAX_FRAME + 4);
    match decode_status_reply(payload(&f)).unwrap() {
        StatusReply::Pools { pools, truncated, owners, .. } => {
            assert!(!owners.is_empty() && owners.len() < 20_000, "owners are cut at half a frame");
            assert!(truncated);
            assert!(!pools.is_empty() && pools.len() < 40);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn malformed_frames_are_errors() {
    let good = encode_request(&Request::Ensure(Box::new(sample_spec()))).unwrap();
    let p = payload(&good);
    // Every truncation fails cleanly.
    for n in 0..p.len() {
        assert!(decode_request(&p[..n]).is_err(), "truncated at {n}");
    }
    // Trailing garbage, wrong version, unknown tag, bad kind.
    let mut t = p.to_vec();
    t.push(0);
    assert!(decode_request(&t).is_err());
    assert!(decode_request(&[VERSION + 1, TAG_NUDGE, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    assert!(decode_request(&[VERSION, 99]).is_err());
    let mut k = p.to_vec();
    k[2 + 8 + 4] = 9;
    assert!(decode_request(&k).is_err());
    // Huge list count cannot allocate.
    let mut e = Encoder::new(TAG_ENSURE);
    e.u64(0).u32(0).u8(1).bytes(b"/x").u32(u32::MAX);
    let f = e.finish().unwrap();
    assert!(decode_request(payload(&f)).is_err());
    // Replies: unknown tag; requests tag is not a reply.
    assert!(decode_reply(&[VERSION, TAG_ENSURE]).is_err());
    assert!(decode_config(&[VERSION, TAG_NUDGE]).is_err());
}

#[test]
fn frame_reader_splits_and_bounds() {
    let a = encode_request(&Request::Nudge { slot: 1, slot_generation: 2 }).unwrap();
    let b = encode_request(&Request::Ensure(Box::new(sample_spec()))).unwrap();
    let mut all = a.clone();
    all.extend_from_slice(&b);
    let mut r = FrameReader::new();
    for chunk in all.chunks(3) {
        r.push(chunk);
    }
    assert_eq!(decode_request(&r.next_payload().unwrap().unwrap()).unwrap(), Request::Nudge { slot: 1, slot_generation: 2 });
    assert!(matches!(decode_request(&r.next_payload().unwrap().unwrap()).unwrap(), Request::Ensure(_)));
    assert_eq!(r.next_payload().unwrap(), None);
    let mut big = FrameReader::new();
    big.push(&((MAX_FRAME as u32) + 1).to_le_bytes());
    assert!(big.next_payload().is_err());
    let mut cur = std::io::Cursor::new(b.clone());
    assert_eq!(read_payload(&mut cur).unwrap(), payload(&b));
}
