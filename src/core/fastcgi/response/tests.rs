use super::*;
use crate::core::fastcgi::test_rng::XorShift;

#[test]
fn stderr_lines_join_pieces_and_cut_long_lines() {
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut s = StderrLines::default();
    s.push(b"one\ntw", |l| got.push(l.to_vec()));
    s.push(b"o\n\nthr", |l| got.push(l.to_vec()));
    assert_eq!(got, vec![b"one".to_vec(), b"two".to_vec()]);
    s.flush(|l| got.push(l.to_vec()));
    assert_eq!(got.last().unwrap(), b"thr");
    let long = vec![b'x'; MAX_STDERR_LINE + 10];
    s.push(&long, |_| panic!("no newline yet"));
    s.push(b"\n", |l| got.push(l.to_vec()));
    assert_eq!(got.last().unwrap().len(), MAX_STDERR_LINE);
    s.flush(|_| panic!("nothing pending"));
}

/// Owned copy of an event, so tests can collect them.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Headers(CgiHeaders),
    Body(Vec<u8>),
    Stderr(Vec<u8>),
    End(u32, u8),
}

/// Collects events, merging consecutive Body/Stderr pieces.
fn push(evs: &mut Vec<Ev>, e: Event<'_>) {
    match (evs.last_mut(), e) {
        (Some(Ev::Body(b)), Event::Body(d)) => b.extend_from_slice(d),
        (Some(Ev::Stderr(b)), Event::Stderr(d)) => b.extend_from_slice(d),
        (_, Event::Body(d)) => evs.push(Ev::Body(d.to_vec())),
        (_, Event::Stderr(d)) => evs.push(Ev::Stderr(d.to_vec())),
        (_, Event::Headers(h)) => evs.push(Ev::Headers(h)),
        (
            _,
            Event::End {
                app_status,
                protocol_status,
            },
        ) => evs.push(Ev::End(app_status, protocol_status)),
    }
}

/// Feeds `input` in pieces of the given sizes (cycled); returns events,
/// the first error (feeding stops there) and the decoder.
fn run_split(
    input: &[u8],
    sizes: &[usize],
    max: usize,
) -> (Vec<Ev>, Result<(), ProtocolError>, ResponseDecoder) {
    let mut d = ResponseDecoder::new(1, max);
    let mut evs = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    while pos < input.len() {
        let n = sizes[i % sizes.len()].clamp(1, input.len() - pos);
        i += 1;
        if let Err(e) = d.feed(&input[pos..pos + n], &mut |e| push(&mut evs, e)) {
            return (evs, Err(e), d);
        }
        pos += n;
    }
    let fin = d.finish();
    (evs, fin, d)
}

fn run(input: &[u8]) -> (Vec<Ev>, Result<(), ProtocolError>) {
    let (evs, r, _) = run_split(input, &[usize::MAX], 65536);
    (evs, r)
}

/// Runs whole, byte by byte and in odd pieces; all must agree.
fn run_all_splits(input: &[u8]) -> (Vec<Ev>, Result<(), ProtocolError>) {
    let whole = run(input);
    for sizes in [&[1][..], &[2], &[3, 1, 7], &[5, 13, 8]] {
        let (evs, r, _) = run_split(input, sizes, 65536);
        assert_eq!((evs, r), whole, "split {sizes:?}");
    }
    whole
}

/// A record written out by hand: header bytes, content, `pad` bytes of 0xEE
/// (padding content must be ignored, whatever it is).
fn rec(rtype: u8, id: u16, content: &[u8], pad: u8) -> Vec<u8> {
    let len = content.len() as u16;
    let mut v = vec![
        1,
        rtype,
        (id >> 8) as u8,
        id as u8,
        (len >> 8) as u8,
        len as u8,
        pad,
        0,
    ];
    v.extend_from_slice(content);
    v.extend(std::iter::repeat_n(0xee, pad as usize));
    v
}

const END_OK: [u8; 16] = [1, 3, 0, 1, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

fn headers(block: &[u8]) -> CgiHeaders {
    parse_cgi_headers(block).unwrap()
}

#[test]
fn hand_written_response() {
    let mut input = vec![
        1, 6, 0, 1, 0, 32, 0, 0, // STDOUT, 32 bytes
    ];
    input.extend_from_slice(b"Content-Type: text/plain\r\n\r\nhi\r\n");
    input.extend_from_slice(&[1, 7, 0, 1, 0, 3, 5, 0, b'e', b'r', b'r', 0, 0, 0, 0, 0]); // STDERR "err" + 5 pad
    input.extend_from_slice(&[1, 6, 0, 1, 0, 0, 0, 0]); // STDOUT terminator
    input.extend_from_slice(&[1, 7, 0, 1, 0, 0, 0, 0]); // STDERR terminator
    input.extend_from_slice(&[1, 3, 0, 1, 0, 8, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0]); // END app_status 258
    let (evs, r) = run_all_splits(&input);
    assert_eq!(r, Ok(()));
    assert_eq!(
        evs,
        vec![
            Ev::Headers(headers(b"Content-Type: text/plain\r\n")),
            Ev::Body(b"hi\r\n".to_vec()),
            Ev::Stderr(b"err".to_vec()),
            Ev::End(258, 0),
        ]
    );
}

#[test]
fn one_byte_at_a_time_states() {
    let mut input = rec(STDOUT, 1, b"Status: 404\n\nnot found", 1);
    input.extend_from_slice(&END_OK);
    let mut d = ResponseDecoder::new(1, 1024);
    let mut evs = Vec::new();
    for (i, b) in input.iter().enumerate() {
        assert!(!d.is_done());
        d.feed(std::slice::from_ref(b), &mut |e| push(&mut evs, e))
            .unwrap();
        // Headers go out as soon as the blank line is in (byte 8 + 12).
        assert_eq!(d.headers_sent(), i >= 8 + 12, "byte {i}");
    }
    assert!(d.is_done());
    assert_eq!(d.finish(), Ok(()));
    assert_eq!(
        evs,
        vec![
            Ev::Headers(headers(b"Status: 404\n")),
            Ev::Body(b"not found".to_vec()),
            Ev::End(0, 0)
        ]
    );
}

#[test]
fn terminator_split_across_records() {
    for block in [
        &b"X-A: 1\r\n\r\n"[..],
        b"X-A: 1\n\n",
        b"X-A: 1\n\r\n",
        b"X-A: 1\r\n\n",
    ] {
        for cut in 1..block.len() {
            let mut input = rec(STDOUT, 1, &block[..cut], 0);
            input.extend(rec(STDERR, 1, b"!", 7));
            input.extend(rec(STDOUT, 1, &block[cut..], 3));
            input.extend(rec(STDOUT, 1, b"body", 0));
            input.extend_from_slice(&END_OK);
            let (evs, r) = run_all_splits(&input);
            assert_eq!(r, Ok(()));
            let expected = vec![
                Ev::Stderr(b"!".to_vec()),
                Ev::Headers(headers(b"X-A: 1\n")),
                Ev::Body(b"body".to_vec()),
                Ev::End(0, 0),
            ];
            assert_eq!(evs, expected, "{block:?} cut {cut}");
        }
    }
}

#[test]
fn body_is_streamed_before_record_completes() {
    let mut input = rec(STDOUT, 1, b"X-A: 1\r\n\r\n", 6);
    let mut big = rec(STDOUT, 1, &[b'z'; 1000], 0);
    big.truncate(8 + 10);
    input.extend_from_slice(&big);
    let mut d = ResponseDecoder::new(1, 1024);
    let mut evs = Vec::new();
    d.feed(&input, &mut |e| push(&mut evs, e)).unwrap();
    assert_eq!(
        evs,
        vec![
            Ev::Headers(headers(b"X-A: 1\r\n")),
            Ev::Body(vec![b'z'; 10])
        ]
    );
    assert_eq!(d.finish(), Err(ProtocolError::Truncated));
    assert!(d.headers_sent());
}

#[test]
fn body_slices_borrow_from_input() {
    let mut input = rec(STDOUT, 1, b"X: y\n\n", 2);
    input.extend(rec(STDOUT, 1, b"abcdefgh", 0));
    let mut d = ResponseDecoder::new(1, 1024);
    let base = input.as_ptr() as usize;
    let mut offsets = Vec::new();
    d.feed(&input, &mut |e| {
        if let Event::Body(b) = e {
            offsets.push(b.as_ptr() as usize - base);
        }
    })
    .unwrap();
    assert_eq!(offsets, vec![16 + 8]);
}

#[test]
fn body_in_same_record_as_headers_and_large_records() {
    let mut content = b"Content-Type: application/octet-stream\r\n\r\n".to_vec();
    let head_len = content.len();
    content.extend((0..65535 - head_len).map(|i| i as u8));
    let mut input = rec(STDOUT, 1, &content, 1);
    assert_eq!(input[..8], [1, 6, 0, 1, 0xff, 0xff, 1, 0]);
    input.extend(rec(STDOUT, 1, &[7], 7));
    input.extend_from_slice(&END_OK);
    let (evs, r, _) = run_split(&input, &[4096, 1, 333], 1024);
    assert_eq!(r, Ok(()));
    let mut body = content[head_len..].to_vec();
    body.push(7);
    assert_eq!(evs.len(), 3);
    assert_eq!(evs[1], Ev::Body(body));
}

#[test]
fn status_location_and_cookies() {
    let mut input = rec(
        STDOUT,
        1,
        b"Location: /x\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n",
        0,
    );
    input.extend_from_slice(&END_OK);
    let (evs, r) = run_all_splits(&input);
    assert_eq!(r, Ok(()));
    let Ev::Headers(h) = &evs[0] else {
        panic!("{evs:?}")
    };
    assert_eq!(h.status, 302);
    assert_eq!(h.location.as_deref(), Some(&b"/x"[..]));
    assert_eq!(
        h.headers,
        vec![
            (b"Set-Cookie".to_vec(), b"a=1".to_vec()),
            (b"Set-Cookie".to_vec(), b"b=2".to_vec())
        ]
    );
    assert_eq!(evs[1], Ev::End(0, 0));
}

#[test]
fn header_limit() {
    let block = b"X-A: 12345\r\n\r\n"; // 14 bytes
    let mut input = rec(STDOUT, 1, block, 2);
    input.extend(rec(
        STDOUT,
        1,
        b"body that does not count toward the limit",
        0,
    ));
    input.extend_from_slice(&END_OK);
    for sizes in [&[usize::MAX][..], &[1], &[9, 2]] {
        let (_, r, _) = run_split(&input, sizes, 14);
        assert_eq!(r, Ok(()));
        let (evs, r, d) = run_split(&input, sizes, 13);
        assert_eq!(r, Err(ProtocolError::HeadersTooLarge));
        assert!(evs.is_empty());
        assert!(!d.headers_sent());
        assert_eq!(d.finish(), Err(ProtocolError::HeadersTooLarge));
    }
    // An endless header line is cut off at the limit, not buffered forever.
    let mut d = ResponseDecoder::new(1, 64 * 1024);
    let chunk = rec(STDOUT, 1, &[b'a'; 65535], 1);
    assert_eq!(d.feed(&chunk, &mut |_| {}), Ok(()));
    assert_eq!(
        d.feed(&chunk, &mut |_| {}),
        Err(ProtocolError::HeadersTooLarge)
    );
    assert!(d.hbuf.len() <= 64 * 1024 && d.hbuf.capacity() <= 2 * 64 * 1024);
    // Sticky: further input gets the same error.
    assert_eq!(
        d.feed(&END_OK, &mut |_| panic!()),
        Err(ProtocolError::HeadersTooLarge)
    );
}

#[test]
fn management_records_are_ignored() {
    let mut input = rec(
        GET_VALUES_RESULT,
        0,
        &[
            15, 1, b'F', b'C', b'G', b'I', b'_', b'M', b'P', b'X', b'S', b'_', b'C', b'O',
            b'N', b'N', b'S', b'0',
        ],
        6,
    );
    input.extend(rec(UNKNOWN_TYPE, 0, &[9, 0, 0, 0, 0, 0, 0, 0], 0));
    input.extend(rec(STDOUT, 1, b"X: 1\n\n", 2));
    input.extend(rec(GET_VALUES_RESULT, 0, b"", 0));
    input.extend_from_slice(&END_OK);
    let (evs, r) = run_all_splits(&input);
    assert_eq!(r, Ok(()));
    assert_eq!(evs, vec![Ev::Headers(headers(b"X: 1\n")), Ev::End(0, 0)]);
}

#[test]
fn end_request_padding_is_consumed_before_done() {
    let mut input = rec(STDOUT, 1, b"X: 1\n\n", 2);
    input.extend(rec(
        END_REQUEST,
        1,
        &[0xff, 0xff, 0xff, 0xfe, 2, 9, 9, 9],
        8,
    ));
    let (evs, r) = run_all_splits(&input);
    assert_eq!(r, Ok(()));
    assert_eq!(evs.last(), Some(&Ev::End(0xffff_fffe, 2)));

    let mut d = ResponseDecoder::new(1, 100);
    let mut n = 0;
    d.feed(&input[..input.len() - 1], &mut |_| n += 1).unwrap();
    assert!(!d.is_done());
    assert_eq!(n, 1, "End waits for the padding");
    d.feed(&input[input.len() - 1..], &mut |_| n += 1).unwrap();
    assert!(d.is_done());
    assert_eq!(n, 2);
}

#[test]
fn end_without_blank_line() {
    // Complete header lines only: accepted, empty body.
    let mut input = rec(STDOUT, 1, b"Status: 204\r\n", 3);
    input.extend_from_slice(&END_OK);
    let (evs, r) = run_all_splits(&input);
    assert_eq!(r, Ok(()));
    assert_eq!(
        evs,
        vec![Ev::Headers(headers(b"Status: 204\r\n")), Ev::End(0, 0)]
    );

    // Ends mid-line: rejected.
    let mut input = rec(STDOUT, 1, b"Status: 204", 5);
    input.extend_from_slice(&END_OK);
    assert_eq!(
        run_all_splits(&input),
        (vec![], Err(ProtocolError::NoHeaders))
    );

    // Lines that are not headers: rejected as bad headers.
    let mut input = rec(STDOUT, 1, b"hello world\n", 4);
    input.extend_from_slice(&END_OK);
    assert_eq!(
        run_all_splits(&input).1,
        Err(ProtocolError::BadHeaders(HeaderError::MissingColon))
    );

    // No STDOUT at all (only terminators and stderr).
    let mut input = rec(STDERR, 1, b"crash", 3);
    input.extend(rec(STDOUT, 1, b"", 0));
    input.extend_from_slice(&END_OK);
    assert_eq!(
        run_all_splits(&input),
        (
            vec![Ev::Stderr(b"crash".to_vec())],
            Err(ProtocolError::NoHeaders)
        )
    );
}

#[test]
fn refused_request_reports_end_without_headers() {
    // OVERLOADED: not an error at this layer.
    let input = [1, 3, 0, 1, 0, 8, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0];
    let (evs, r, d) = run_split(&input, &[3], 100);
    assert_eq!(r, Ok(()));
    assert_eq!(evs, vec![Ev::End(0, 2)]);
    assert!(!d.headers_sent());
}

#[test]
fn bad_header_block() {
    let mut input = rec(STDOUT, 1, b"Status: 999\r\n\r\n", 1);
    input.extend_from_slice(&END_OK);
    assert_eq!(
        run_all_splits(&input),
        (
            vec![],
            Err(ProtocolError::BadHeaders(HeaderError::InvalidStatus))
        )
    );
    // The blank line first: an empty block.
    let mut input = rec(STDOUT, 1, b"\r\nbody", 2);
    input.extend_from_slice(&END_OK);
    assert_eq!(
        run_all_splits(&input).1,
        Err(ProtocolError::BadHeaders(HeaderError::Empty))
    );
}

#[test]
fn an_authorizers_empty_header_block_is_a_200() {
    // STDOUT "\r\n" (2 bytes, 6 padding), its terminator, END_REQUEST complete.
    let input = [
        1, 6, 0, 1, 0, 2, 6, 0, b'\r', b'\n', 0, 0, 0, 0, 0, 0, //
        1, 6, 0, 1, 0, 0, 0, 0, //
        1, 3, 0, 1, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    for sizes in [&[1][..], &[3, 1, 7], &[40]] {
        let mut d = ResponseDecoder::new(1, 65536).for_authorizer(true);
        let mut evs = Vec::new();
        let mut pos = 0;
        for n in sizes.iter().cycle() {
            if pos >= input.len() {
                break;
            }
            let end = (pos + n).min(input.len());
            d.feed(&input[pos..end], &mut |e| push(&mut evs, e)).unwrap();
            pos = end;
        }
        assert_eq!(evs, vec![Ev::Headers(CgiHeaders::status_only(200)), Ev::End(0, 0)], "split {sizes:?}");
        assert_eq!(d.finish(), Ok(()));
    }
    // A responder keeps the strict rule.
    let mut d = ResponseDecoder::new(1, 65536).for_authorizer(false);
    assert_eq!(d.feed(&input, &mut |_| {}), Err(ProtocolError::BadHeaders(HeaderError::Empty)));
}

#[test]
fn protocol_errors() {
    let ok_head = rec(STDOUT, 1, b"X: 1\n\n", 2);
    let cases: Vec<(Vec<u8>, ProtocolError)> = vec![
        (vec![2, 6, 0, 1, 0, 0, 0, 0], ProtocolError::BadVersion(2)),
        (vec![0, 6, 0, 1, 0, 0, 0, 0], ProtocolError::BadVersion(0)),
        (
            vec![1, 6, 0, 2, 0, 0, 0, 0],
            ProtocolError::WrongRequestId {
                expected: 1,
                got: 2,
            },
        ),
        (
            vec![1, 6, 0, 0, 0, 0, 0, 0],
            ProtocolError::WrongRequestId {
                expected: 1,
                got: 0,
            },
        ),
        (
            vec![1, 3, 1, 1, 0, 8, 0, 0],
            ProtocolError::WrongRequestId {
                expected: 1,
                got: 257,
            },
        ),
        (
            vec![1, 7, 0, 3, 0, 1, 0, 0, b'x'],
            ProtocolError::WrongRequestId {
                expected: 1,
                got: 3,
            },
        ),
        (
            vec![1, 5, 0, 1, 0, 0, 0, 0],
            ProtocolError::UnexpectedRecordType(5),
        ),
        (
            vec![1, 1, 0, 1, 0, 8, 0, 0],
            ProtocolError::UnexpectedRecordType(1),
        ),
        (
            vec![1, 4, 0, 1, 0, 0, 0, 0],
            ProtocolError::UnexpectedRecordType(4),
        ),
        (
            vec![1, 9, 0, 0, 0, 0, 0, 0],
            ProtocolError::UnexpectedRecordType(9),
        ),
        (
            vec![1, 10, 0, 1, 0, 0, 0, 0],
            ProtocolError::UnexpectedRecordType(10),
        ),
        (
            vec![1, 11, 0, 1, 0, 8, 0, 0],
            ProtocolError::UnexpectedRecordType(11),
        ),
        (
            vec![1, 12, 0, 1, 0, 0, 0, 0],
            ProtocolError::UnexpectedRecordType(12),
        ),
        (
            vec![1, 0, 0, 1, 0, 0, 0, 0],
            ProtocolError::UnexpectedRecordType(0),
        ),
        (
            vec![1, 3, 0, 1, 0, 7, 1, 0],
            ProtocolError::BadEndRequest(7),
        ),
        (
            vec![1, 3, 0, 1, 0, 0, 0, 0],
            ProtocolError::BadEndRequest(0),
        ),
        (
            vec![1, 3, 0, 1, 0, 16, 0, 0],
            ProtocolError::BadEndRequest(16),
        ),
    ];
    for (tail, err) in cases {
        let mut input = ok_head.clone();
        input.extend_from_slice(&tail);
        let (evs, r) = run_all_splits(&input);
        assert_eq!(r, Err(err.clone()), "{tail:?}");
        assert_eq!(evs, vec![Ev::Headers(headers(b"X: 1\n"))]);
        assert!(!err.to_string().is_empty());
    }
}

#[test]
fn data_after_end() {
    let mut input = rec(STDOUT, 1, b"X: 1\n\n", 2);
    input.extend_from_slice(&END_OK);
    input.push(1);
    let (evs, r) = run_all_splits(&input);
    assert_eq!(r, Err(ProtocolError::DataAfterEnd));
    assert_eq!(evs.last(), Some(&Ev::End(0, 0)));

    // In a separate feed call, too; an empty feed is fine.
    let mut d = ResponseDecoder::new(1, 100);
    d.feed(&input[..input.len() - 1], &mut |_| {}).unwrap();
    d.feed(&[], &mut |_| panic!()).unwrap();
    assert_eq!(
        d.feed(&END_OK, &mut |_| panic!()),
        Err(ProtocolError::DataAfterEnd)
    );
    assert_eq!(d.finish(), Err(ProtocolError::DataAfterEnd));
}

#[test]
fn truncated() {
    let mut input = rec(STDOUT, 1, b"X: 1\n\nbody", 6);
    input.extend_from_slice(&END_OK);
    for cut in 0..input.len() {
        let (_, r, d) = run_split(&input[..cut], &[5], 100);
        assert_eq!(r, Err(ProtocolError::Truncated), "cut {cut}");
        assert!(!d.is_done());
    }
    assert_eq!(
        ProtocolError::Truncated.to_string(),
        "connection closed before FastCGI END_REQUEST"
    );
}

/// Mostly well-formed records with random types, ids, lengths and
/// contents (so the fuzz gets past the header checks), sometimes raw noise.
fn random_stream(rng: &mut XorShift) -> Vec<u8> {
    const PIECES: &[&[u8]] = &[
        b"X-A: 1",
        b"\r\n",
        b"\n",
        b"\r",
        b"Status: 302",
        b"Location: /",
        b":",
        b" ",
        b"\0",
        b"body",
    ];
    let mut out = Vec::new();
    if rng.below(3) == 0 {
        out.extend(rec(STDOUT, 1, b"X-A: 1\r\n\r\n", rng.below(9) as u8));
    }
    for _ in 0..rng.below(8) {
        if rng.below(20) == 0 {
            out.extend((0..rng.below(24)).map(|_| rng.next() as u8));
            continue;
        }
        let rtype = match rng.below(10) {
            0..=4 => STDOUT,
            5 | 6 => STDERR,
            7 => END_REQUEST,
            8 => GET_VALUES_RESULT,
            _ => rng.below(13) as u8,
        };
        let id = if rtype == GET_VALUES_RESULT && rng.below(4) != 0 {
            0
        } else if rng.below(10) == 0 {
            rng.below(3) as u16
        } else {
            1
        };
        let mut content = Vec::new();
        if rtype == END_REQUEST && rng.below(4) != 0 {
            content.extend((0..8).map(|_| rng.below(3) as u8));
        } else {
            for _ in 0..rng.below(6) {
                content.extend_from_slice(PIECES[rng.below(PIECES.len() as u64) as usize]);
            }
        }
        let version = if rng.below(50) == 0 { 2 } else { 1 };
        let mut r = rec(rtype, id, &content, rng.below(9) as u8);
        r[0] = version;
        out.extend(r);
    }
    out
}

#[test]
fn fuzz_never_panics_and_split_does_not_matter() {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..5000 {
        let input = random_stream(&mut rng);
        let max = [16, 64, 65536][rng.below(3) as usize];
        let (evs, r, _) = run_split(&input, &[usize::MAX], max);
        let sizes: Vec<usize> = (0..4).map(|_| 1 + rng.below(20) as usize).collect();
        let (evs2, r2, _) = run_split(&input, &sizes, max);
        assert_eq!((&evs, &r), (&evs2, &r2), "input {input:?} sizes {sizes:?}");
        if r.is_ok() {
            assert!(matches!(evs.last(), Some(Ev::End(..))));
        }
        // Record which outcomes were reached, to prove the fuzz goes deep.
        let outcome = match &r {
            Ok(()) if evs.iter().any(|e| matches!(e, Ev::Body(_))) => "ok+body".to_string(),
            Ok(()) => "ok".to_string(),
            Err(ProtocolError::BadHeaders(_)) => "bad headers".to_string(),
            Err(e) => format!("{e:?}")
                .split(['(', ' '])
                .next()
                .unwrap_or("")
                .to_string(),
        };
        *seen.entry(outcome).or_insert(0u32) += 1;
    }
    eprintln!("fuzz outcomes: {seen:?}");
    assert!(seen.len() >= 10, "{seen:?}");
    assert!(
        seen.contains_key("ok+body") && seen.contains_key("bad headers"),
        "{seen:?}"
    );
    // Pure noise.
    for _ in 0..3000 {
        let input: Vec<u8> = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
        let mut d = ResponseDecoder::new(rng.below(3) as u16, 32);
        let _ = d.feed(&input, &mut |_| {});
        let _ = d.finish();
    }
}
