//! Arbitrary bytes from a (hostile) FastCGI backend, fed whole and in pieces:
//! the decoder must never panic, never buffer past its header limit, and
//! decide the same way however the bytes are split.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sufcgi::core::fastcgi::response::{Event, ResponseDecoder};

const LIMIT: usize = 64 * 1024;

fn run(data: &[u8], split: usize) -> (Result<(), String>, usize, bool) {
    let mut dec = ResponseDecoder::new(1, LIMIT);
    let mut body = 0usize;
    let mut sink = |ev: Event<'_>| {
        if let Event::Body(b) = ev {
            body += b.len();
        }
    };
    let mut res = Ok(());
    for chunk in data.chunks(split.max(1)) {
        if let Err(e) = dec.feed(chunk, &mut sink) {
            res = Err(e.to_string());
            break;
        }
    }
    let done = dec.is_done();
    (res, body, done)
}

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(1, |b| *b as usize % 17 + 1);
    let whole = run(data, data.len().max(1));
    let pieces = run(data, split);
    assert_eq!(whole, pieces, "the outcome depends on how the bytes were split");
});
