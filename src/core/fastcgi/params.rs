//! FastCGI name-value pairs (spec section 3.4): PARAMS, GET_VALUES and
//! GET_VALUES_RESULT bodies. Names and values are bytes, never strings: CGI
//! variables carry whatever the client sent.

use std::fmt;

use super::record::{self, StreamWriter};

/// Largest length the 4-byte form can carry (31 bits).
pub const MAX_NV_LEN: usize = 0x7fff_ffff;

/// Appends one length: 1 byte if < 128, else 4 bytes big-endian with the high bit set.
fn write_len(out: &mut Vec<u8>, len: usize) {
    encode_len(len, |b| out.extend_from_slice(b));
}

fn encode_len(len: usize, mut put: impl FnMut(&[u8])) {
    if len < 128 {
        put(&[len as u8]);
    } else {
        let len = len.min(MAX_NV_LEN) as u32;
        put(&(len | 0x8000_0000).to_be_bytes());
    }
}

/// Bytes `write_name_value` produces for this pair.
pub fn encoded_len(name: &[u8], value: &[u8]) -> usize {
    let len_of = |n: usize| if n < 128 { 1 } else { 4 };
    let (n, v) = (name.len().min(MAX_NV_LEN), value.len().min(MAX_NV_LEN));
    len_of(n) + len_of(v) + n + v
}

/// Appends one name-value pair. A name or value longer than `MAX_NV_LEN`
/// (2 GiB, far beyond any server's request limits) is cut to that length so
/// the encoding stays self-consistent.
pub fn write_name_value(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    let name = &name[..name.len().min(MAX_NV_LEN)];
    let value = &value[..value.len().min(MAX_NV_LEN)];
    out.reserve(encoded_len(name, value));
    write_len(out, name.len());
    write_len(out, value.len());
    out.extend_from_slice(name);
    out.extend_from_slice(value);
}

fn push_name_value(w: &mut StreamWriter<'_>, name: &[u8], value: &[u8]) {
    let name = &name[..name.len().min(MAX_NV_LEN)];
    let value = &value[..value.len().min(MAX_NV_LEN)];
    encode_len(name.len(), |b| w.push(b));
    encode_len(value.len(), |b| w.push(b));
    w.push(name);
    w.push(value);
}

/// Encodes `pairs` as PARAMS records (a pair may span records) followed by
/// the empty PARAMS record that ends the stream.
pub fn write_params(out: &mut Vec<u8>, request_id: u16, pairs: &[(&[u8], &[u8])]) {
    write_params_iter(out, request_id, pairs.iter().copied());
}

/// `write_params` for any iterator of pairs (e.g. straight from a server's
/// environment table, without collecting first).
pub fn write_params_iter<'p, I>(out: &mut Vec<u8>, request_id: u16, pairs: I)
where
    I: IntoIterator<Item = (&'p [u8], &'p [u8])> + Clone,
{
    // Fast path (the request path, every request): the pairs fit one record,
    // so they are written straight behind one header, with no per-piece
    // record bookkeeping. Anything larger goes through the StreamWriter.
    let body: usize = pairs.clone().into_iter().map(|(n, v)| encoded_len(n, v)).sum();
    if body <= record::MAX_CONTENT_LEN {
        let (hdr, pad) = record::stream_record_header(record::PARAMS, request_id, body);
        out.reserve(2 * record::HEADER_LEN + body + pad);
        if body > 0 {
            out.extend_from_slice(&hdr);
            for (name, value) in pairs {
                write_name_value(out, name, value);
            }
            out.extend_from_slice(&record::PADDING[..pad]);
        }
        record::write_stream_end(out, record::PARAMS, request_id);
        return;
    }
    let mut w = StreamWriter::new(out, record::PARAMS, request_id);
    for (name, value) in pairs {
        push_name_value(&mut w, name, value);
    }
    w.finish();
    record::write_stream_end(out, record::PARAMS, request_id);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamsError {
    /// The data ends inside a length field.
    TruncatedLength,
    /// A length points past the end of the data.
    LengthPastEnd,
}

impl fmt::Display for ParamsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParamsError::TruncatedLength => "name-value data ends inside a length",
            ParamsError::LengthPastEnd => "name-value length past the end of the data",
        })
    }
}

impl std::error::Error for ParamsError {}

/// Reads one length at `*pos`, advancing it.
fn read_len(data: &[u8], pos: &mut usize) -> Result<usize, ParamsError> {
    let first = *data.get(*pos).ok_or(ParamsError::TruncatedLength)?;
    if first < 0x80 {
        *pos += 1;
        return Ok(first as usize);
    }
    let b = data
        .get(*pos..*pos + 4)
        .ok_or(ParamsError::TruncatedLength)?;
    *pos += 4;
    Ok((u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff) as usize)
}

/// One decoded pair, borrowing from the input.
pub type NameValue<'a> = (&'a [u8], &'a [u8]);

/// Decodes a complete name-value body (e.g. a GET_VALUES_RESULT record's
/// content). Pairs borrow from `data`.
pub fn parse_name_values(data: &[u8]) -> Result<Vec<NameValue<'_>>, ParamsError> {
    let mut pairs = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let nlen = read_len(data, &mut pos)?;
        let vlen = read_len(data, &mut pos)?;
        let rest = &data[pos..];
        // Checked separately so huge lengths cannot overflow the sum.
        if nlen > rest.len() || vlen > rest.len() - nlen {
            return Err(ParamsError::LengthPastEnd);
        }
        pairs.push((&rest[..nlen], &rest[nlen..nlen + vlen]));
        pos += nlen + vlen;
    }
    Ok(pairs)
}

/// Whether a CGI variable value can be passed on: no CR, LF or NUL, which an
/// application might otherwise turn into header injection or truncation.
pub fn param_value_is_safe(v: &[u8]) -> bool {
    // Eight bytes at a time (every param of every request passes here): a
    // word has a byte equal to `c` iff `has_zero(w ^ c·0x0101…)`.
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |w: u64| w.wrapping_sub(ONES) & !w & HIGH != 0;
    let mut chunks = v.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        if has_zero(w) || has_zero(w ^ (ONES * b'\r' as u64)) || has_zero(w ^ (ONES * b'\n' as u64)) {
            return false;
        }
    }
    !chunks.remainder().iter().any(|&b| matches!(b, b'\r' | b'\n' | 0))
}

/// A GET_VALUES management record asking for `names` (e.g. `FCGI_MPXS_CONNS`).
/// The query must fit one record: names that would push it past
/// `MAX_CONTENT_LEN` are left out (never the case for the spec's names).
pub fn write_get_values(out: &mut Vec<u8>, names: &[&[u8]]) {
    let mut content = Vec::new();
    for name in names {
        let before = content.len();
        write_name_value(&mut content, name, b"");
        if content.len() > record::MAX_CONTENT_LEN {
            content.truncate(before);
        }
    }
    record::write_record(out, record::GET_VALUES, record::NULL_REQUEST_ID, &content);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_values_bytes() {
        let mut out = Vec::new();
        write_get_values(&mut out, &[b"FCGI_MAX_CONNS", b"FCGI_MPXS_CONNS"]);
        let mut expected = vec![1, 9, 0, 0, 0, 33, 7, 0];
        expected.extend_from_slice(&[14, 0]);
        expected.extend_from_slice(b"FCGI_MAX_CONNS");
        expected.extend_from_slice(&[15, 0]);
        expected.extend_from_slice(b"FCGI_MPXS_CONNS");
        expected.extend_from_slice(&[0; 7]);
        assert_eq!(out, expected);

        // Names that cannot fit one record are dropped rather than overflowing it.
        let huge = vec![b'X'; 70000];
        let mut out = Vec::new();
        write_get_values(&mut out, &[b"A", &huge]);
        assert_eq!(out, [1, 9, 0, 0, 0, 3, 5, 0, 1, 0, b'A', 0, 0, 0, 0, 0]);
    }

    #[test]
    fn one_byte_lengths_up_to_127() {
        let mut out = Vec::new();
        write_name_value(&mut out, b"AB", b"xyz");
        assert_eq!(out, [2, 3, b'A', b'B', b'x', b'y', b'z']);

        let mut out = Vec::new();
        write_name_value(&mut out, b"", b"");
        assert_eq!(out, [0, 0]);

        let value = [b'v'; 127];
        let mut out = Vec::new();
        write_name_value(&mut out, b"N", &value);
        assert_eq!(out[..3], [1, 127, b'N']);
        assert_eq!(out.len(), 2 + 1 + 127);
        assert_eq!(encoded_len(b"N", &value), out.len());
    }

    #[test]
    fn four_byte_lengths_from_128() {
        let value = [b'v'; 128];
        let mut out = Vec::new();
        write_name_value(&mut out, b"N", &value);
        assert_eq!(out[..6], [1, 0x80, 0, 0, 0x80, b'N']);
        assert_eq!(out.len(), 1 + 4 + 1 + 128);
        assert_eq!(encoded_len(b"N", &value), out.len());

        let name = [b'n'; 300];
        let mut out = Vec::new();
        write_name_value(&mut out, &name, b"v");
        assert_eq!(out[..6], [0x80, 0, 0x01, 0x2c, 1, b'n']);

        let big = vec![0u8; 0x0102_0304];
        let mut out = Vec::new();
        write_name_value(&mut out, b"", &big);
        assert_eq!(out[..5], [0, 0x81, 0x02, 0x03, 0x04]);
    }

    #[test]
    fn params_stream_bytes() {
        let mut out = Vec::new();
        write_params(&mut out, 1, &[(b"A", b"1"), (b"BB", b"")]);
        assert_eq!(
            out,
            [
                1, 4, 0, 1, 0, 8, 0, 0, // header: 8 content bytes, no padding
                1, 1, b'A', b'1', 2, 0, b'B', b'B', // pairs
                1, 4, 0, 1, 0, 0, 0, 0, // terminator
            ]
        );
    }

    #[test]
    fn params_stream_padding() {
        let mut out = Vec::new();
        write_params(&mut out, 1, &[(b"AB", b"1")]);
        assert_eq!(
            out,
            [1, 4, 0, 1, 0, 5, 3, 0, 2, 1, b'A', b'B', b'1', 0, 0, 0, 1, 4, 0, 1, 0, 0, 0, 0]
        );
    }

    #[test]
    fn no_params_is_only_the_terminator() {
        let mut out = Vec::new();
        write_params(&mut out, 2, &[]);
        assert_eq!(out, [1, 4, 0, 2, 0, 0, 0, 0]);
    }

    #[test]
    fn large_pair_spans_records() {
        // 1 + 4 + 1 + 70000 = 70006 bytes of pair data: 65535 + 4471.
        let value = vec![b'x'; 70000];
        let mut out = Vec::new();
        write_params_iter(&mut out, 1, [(&b"N"[..], &value[..])]);
        assert_eq!(
            out[..14],
            [1, 4, 0, 1, 0xff, 0xff, 1, 0, 1, 0x80, 0x01, 0x11, 0x70, b'N']
        );
        let second = 8 + 65535 + 1;
        assert_eq!(out[second - 1], 0, "padding");
        // 4471 = 0x1177, padding 1.
        assert_eq!(out[second..second + 8], [1, 4, 0, 1, 0x11, 0x77, 1, 0]);
        let term = second + 8 + 4471 + 1;
        assert_eq!(out[term..], [1, 4, 0, 1, 0, 0, 0, 0]);

        // Reassemble the content and decode it.
        let mut content = out[8..8 + 65535].to_vec();
        content.extend_from_slice(&out[second + 8..second + 8 + 4471]);
        let pairs = parse_name_values(&content).unwrap();
        assert_eq!(pairs.len(), 1);
        assert_eq!(pairs[0].0, b"N");
        assert_eq!(pairs[0].1, &value[..]);
    }

    /// The general (record-spanning) encoding, as write_params_iter did
    /// before its one-record fast path.
    fn general(request_id: u16, pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = StreamWriter::new(&mut out, record::PARAMS, request_id);
        for (n, v) in pairs {
            push_name_value(&mut w, n, v);
        }
        w.finish();
        record::write_stream_end(&mut out, record::PARAMS, request_id);
        out
    }

    #[test]
    fn one_record_fast_path_matches_the_general_encoding() {
        let long = vec![b'v'; 300];
        // 65535 bytes of pair data exactly: 1 + 4 + 2 + 65528.
        let edge = vec![b'e'; 65528];
        let cases: Vec<Vec<(&[u8], &[u8])>> = vec![
            vec![],
            vec![(b"", b"")],
            vec![(b"A", b"1")],
            vec![(b"GATEWAY_INTERFACE", b"CGI/1.1"), (b"LONG", &long[..]), (&long[..127], b"")],
            vec![(b"AB", &edge[..])],
            vec![(b"AB", &edge[..edge.len() - 1]), (b"", b"")],
        ];
        for pairs in &cases {
            let mut out = Vec::new();
            write_params(&mut out, 7, pairs);
            assert_eq!(out, general(7, pairs), "{:?}", pairs.iter().map(|(n, v)| (n.len(), v.len())).collect::<Vec<_>>());
        }
    }

    #[test]
    fn safe_check_matches_the_bytewise_rule() {
        let naive = |v: &[u8]| !v.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0));
        let mut v = Vec::new();
        for len in 0..40 {
            v.resize(len, b'a');
            assert_eq!(param_value_is_safe(&v), naive(&v));
            for at in 0..len {
                for bad in [b'\r', b'\n', 0, 0x8d, 0x8a, 0x80, 0x0c, 0x0e, 0xff, 0x0b, 0x01] {
                    let keep = v[at];
                    v[at] = bad;
                    assert_eq!(param_value_is_safe(&v), naive(&v), "len {len} at {at} byte {bad:#x}");
                    v[at] = keep;
                }
            }
        }
    }

    #[test]
    fn parse_hand_written() {
        let mut data = vec![15, 1];
        data.extend_from_slice(b"FCGI_MPXS_CONNS0");
        data.extend_from_slice(&[1, 0x80, 0, 0, 1, b'K', b'v']);
        let pairs = parse_name_values(&data).unwrap();
        assert_eq!(
            pairs,
            vec![(&b"FCGI_MPXS_CONNS"[..], &b"0"[..]), (&b"K"[..], &b"v"[..])]
        );

        // Same, but the last value byte is missing.
        data.pop();
        assert_eq!(parse_name_values(&data), Err(ParamsError::LengthPastEnd));
    }

    #[test]
    fn parse_errors_never_panic() {
        assert_eq!(
            parse_name_values(&[]).unwrap(),
            Vec::<(&[u8], &[u8])>::new()
        );
        assert_eq!(parse_name_values(&[1]), Err(ParamsError::TruncatedLength));
        assert_eq!(
            parse_name_values(&[0x80, 0, 0]),
            Err(ParamsError::TruncatedLength)
        );
        assert_eq!(
            parse_name_values(&[1, 0x80, 0, 0]),
            Err(ParamsError::TruncatedLength)
        );
        assert_eq!(
            parse_name_values(&[1, 1, b'a']),
            Err(ParamsError::LengthPastEnd)
        );
        assert_eq!(
            parse_name_values(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            Err(ParamsError::LengthPastEnd)
        );
        assert_eq!(
            parse_name_values(&[0, 0xff, 0xff, 0xff, 0xff]),
            Err(ParamsError::LengthPastEnd)
        );
        assert_eq!(
            parse_name_values(&[0, 0, 0]),
            Err(ParamsError::TruncatedLength)
        );
    }

    #[test]
    fn safe_values() {
        assert!(param_value_is_safe(b""));
        assert!(param_value_is_safe(b"/index.php?a=b&c=%0d%0a"));
        assert!(param_value_is_safe(b"tab\there \x7f \xff utf8 \xc3\xa9"));
        assert!(!param_value_is_safe(b"a\rb"));
        assert!(!param_value_is_safe(b"a\nb"));
        assert!(!param_value_is_safe(b"a\0b"));
    }
}
