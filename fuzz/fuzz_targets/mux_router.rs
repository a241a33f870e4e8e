//! Arbitrary bytes from a (hostile) multiplexing backend on a shared
//! connection, with requests opening and leaving in between: the router must
//! never panic, its buffered count must match what it holds, and it must file
//! the same records the same way however the bytes are split.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sufcgi::core::mux_conn::Router;

/// Replays `data` as: first byte = split size; then ops interleaved with
/// chunks of app bytes. Returns what each id received, and whether (and
/// after how many bytes) the connection was declared unusable.
fn run(data: &[u8], split: usize) -> (Vec<(u16, Vec<u8>)>, Option<usize>) {
    let mut router = Router::default();
    let mut got: Vec<(u16, Vec<u8>)> = Vec::new();
    let ids: Vec<u16> = (0..4).filter_map(|_| router.open()).collect();
    let mut fed = 0;
    for chunk in data.chunks(split) {
        if let Err(_) = router.feed(chunk, |_| {}) {
            return (got, Some(fed));
        }
        fed += chunk.len();
        for &id in &ids {
            let d = router.take(id);
            if !d.is_empty() {
                got.push((id, d));
            }
        }
        assert_eq!(router.buffered(), 0, "everything taken, nothing counted");
    }
    (got, None)
}

fn merged(v: Vec<(u16, Vec<u8>)>) -> Vec<(u16, Vec<u8>)> {
    let mut by_id: Vec<(u16, Vec<u8>)> = Vec::new();
    for (id, d) in v {
        match by_id.iter_mut().find(|(i, _)| *i == id) {
            Some((_, all)) => all.extend_from_slice(&d),
            None => by_id.push((id, d)),
        }
    }
    by_id.sort();
    by_id
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let split = first as usize % 23 + 1;
    let (whole, whole_err) = run(rest, rest.len().max(1));
    let (pieces, pieces_err) = run(rest, split);
    assert_eq!(whole_err.is_some(), pieces_err.is_some(), "unusable or not, however split");
    if whole_err.is_none() {
        assert_eq!(merged(whole), merged(pieces), "filed differently depending on the split");
    }

    // Leaving and abandoning in between never panics and keeps the count right.
    let mut router = Router::default();
    let a = router.open();
    let b = router.open();
    for (i, chunk) in rest.chunks(split).enumerate() {
        if router.feed(chunk, |_| {}).is_err() {
            break;
        }
        if i == 1 {
            if let Some(a) = a {
                router.close(a, false);
            }
        }
        if let Some(b) = b {
            let before = router.buffered();
            let d = router.take(b);
            assert_eq!(router.buffered(), before - d.len());
        }
    }
});
