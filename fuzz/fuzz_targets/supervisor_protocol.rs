//! Arbitrary frames at the supervisor's socket (from a compromised server
//! child) and at the child (from a broken supervisor): decoding refuses or
//! accepts, never panics, never allocates without bound.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sufcgi::core::supervisor::protocol::{decode_config, decode_reply, decode_request, decode_status_reply};

fuzz_target!(|data: &[u8]| {
    let _ = decode_request(data);
    let _ = decode_reply(data);
    let _ = decode_config(data);
    let _ = decode_status_reply(data);
});
