//! FastCGI 1.0 record framing (spec section 3.3): the 8-byte header, the
//! fixed-size BEGIN_REQUEST / END_REQUEST bodies, and stream records split at
//! 65535 content bytes and padded to a multiple of 8.
//!
//! Pure encoding into caller-owned buffers; no I/O. Padding is not required
//! by the spec, but aligned records are what the reference library and most
//! servers send, and some application libraries have been seen to assume it.

pub const FCGI_VERSION_1: u8 = 1;

// Record types.
pub const BEGIN_REQUEST: u8 = 1;
pub const ABORT_REQUEST: u8 = 2;
pub const END_REQUEST: u8 = 3;
pub const PARAMS: u8 = 4;
pub const STDIN: u8 = 5;
pub const STDOUT: u8 = 6;
pub const STDERR: u8 = 7;
pub const DATA: u8 = 8;
pub const GET_VALUES: u8 = 9;
pub const GET_VALUES_RESULT: u8 = 10;
pub const UNKNOWN_TYPE: u8 = 11;

/// Request id of management records (GET_VALUES, GET_VALUES_RESULT, UNKNOWN_TYPE).
pub const NULL_REQUEST_ID: u16 = 0;

// Roles (BEGIN_REQUEST body).
pub const FCGI_RESPONDER: u16 = 1;
pub const FCGI_AUTHORIZER: u16 = 2;
pub const FCGI_FILTER: u16 = 3;

/// BEGIN_REQUEST flag: the application keeps the connection open after the request.
pub const FCGI_KEEP_CONN: u8 = 1;

// END_REQUEST protocol statuses.
pub const REQUEST_COMPLETE: u8 = 0;
pub const CANT_MPX_CONN: u8 = 1;
pub const OVERLOADED: u8 = 2;
pub const UNKNOWN_ROLE: u8 = 3;

pub const HEADER_LEN: usize = 8;
pub const MAX_CONTENT_LEN: usize = 65535;

/// Zero bytes to append after a record's content; `padding_len` is always < 8
/// for records we produce, so `&PADDING[..pad]` never goes out of bounds.
pub const PADDING: [u8; 7] = [0; 7];

/// Padding that brings `content_len` up to a multiple of 8.
#[inline]
pub fn padding_for(content_len: usize) -> usize {
    content_len.wrapping_neg() & 7
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub version: u8,
    pub rtype: u8,
    pub request_id: u16,
    pub content_len: u16,
    pub padding_len: u8,
}

impl RecordHeader {
    /// Decodes a header; the version is not checked here (the decoder does,
    /// so it can report it).
    pub fn parse(b: &[u8; 8]) -> RecordHeader {
        RecordHeader {
            version: b[0],
            rtype: b[1],
            request_id: u16::from_be_bytes([b[2], b[3]]),
            content_len: u16::from_be_bytes([b[4], b[5]]),
            padding_len: b[6],
        }
    }

    pub fn to_bytes(&self) -> [u8; 8] {
        let id = self.request_id.to_be_bytes();
        let len = self.content_len.to_be_bytes();
        [
            self.version,
            self.rtype,
            id[0],
            id[1],
            len[0],
            len[1],
            self.padding_len,
            0,
        ]
    }

    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bytes());
    }
}

/// Header and padding length for a stream record carrying `len` content bytes,
/// so the caller can send header + its own slice + `&PADDING[..pad]` with
/// writev instead of copying the body.
///
/// `len` must be at most `MAX_CONTENT_LEN` (checked in debug builds only; a
/// larger value is clamped, so callers must chunk with `MAX_CONTENT_LEN`).
pub fn stream_record_header(rtype: u8, request_id: u16, len: usize) -> ([u8; 8], usize) {
    debug_assert!(
        len <= MAX_CONTENT_LEN,
        "stream record content too long: {len}"
    );
    let len = len.min(MAX_CONTENT_LEN);
    let pad = padding_for(len);
    let hdr = RecordHeader {
        version: FCGI_VERSION_1,
        rtype,
        request_id,
        content_len: len as u16,
        padding_len: pad as u8,
    };
    (hdr.to_bytes(), pad)
}

/// One record holding all of `content` (at most `MAX_CONTENT_LEN` bytes), padded.
pub fn write_record(out: &mut Vec<u8>, rtype: u8, request_id: u16, content: &[u8]) {
    let (hdr, pad) = stream_record_header(rtype, request_id, content.len());
    out.extend_from_slice(&hdr);
    out.extend_from_slice(content);
    out.extend_from_slice(&PADDING[..pad]);
}

pub fn write_begin_request(out: &mut Vec<u8>, request_id: u16, role: u16, flags: u8) {
    let r = role.to_be_bytes();
    write_record(
        out,
        BEGIN_REQUEST,
        request_id,
        &[r[0], r[1], flags, 0, 0, 0, 0, 0],
    );
}

/// Writes `data` as records of type `rtype` (STDIN, PARAMS, DATA, …), at most
/// `MAX_CONTENT_LEN` content bytes each. Empty `data` writes nothing: the
/// empty record would end the stream (use `write_stream_end` for that).
pub fn write_stream(out: &mut Vec<u8>, rtype: u8, request_id: u16, data: &[u8]) {
    let records = data.len().div_ceil(MAX_CONTENT_LEN);
    out.reserve(data.len() + records * (HEADER_LEN + 7));
    for chunk in data.chunks(MAX_CONTENT_LEN) {
        write_record(out, rtype, request_id, chunk);
    }
}

/// The empty record that terminates a stream.
pub fn write_stream_end(out: &mut Vec<u8>, rtype: u8, request_id: u16) {
    write_record(out, rtype, request_id, &[]);
}

pub fn write_abort_request(out: &mut Vec<u8>, request_id: u16) {
    write_record(out, ABORT_REQUEST, request_id, &[]);
}

/// Move whole records encoded for one request to request `id`, with `flags`
/// in BEGIN_REQUEST (FCGI_KEEP_CONN for a shared connection): the lighttpd
/// plugin encodes a request's params before it knows which connection, and
/// so which id, it will run on. A trailing partial record is left alone.
pub fn retarget(records: &mut [u8], id: u16, flags: u8) {
    let mut at = 0;
    while records.len() - at >= HEADER_LEN {
        let content_len = u16::from_be_bytes([records[at + 4], records[at + 5]]) as usize;
        let total = HEADER_LEN + content_len + records[at + 6] as usize;
        if records.len() - at < total {
            break;
        }
        records[at + 2..at + 4].copy_from_slice(&id.to_be_bytes());
        if records[at + 1] == BEGIN_REQUEST && content_len == 8 {
            records[at + HEADER_LEN + 2] = flags;
        }
        at += total;
    }
}

/// END_REQUEST as an application sends it. The relay never sends this; it is
/// here for test backends and tools.
pub fn write_end_request(out: &mut Vec<u8>, request_id: u16, app_status: u32, protocol_status: u8) {
    let a = app_status.to_be_bytes();
    write_record(
        out,
        END_REQUEST,
        request_id,
        &[a[0], a[1], a[2], a[3], protocol_status, 0, 0, 0],
    );
}

/// Writes a stream incrementally into `out` without an intermediate buffer:
/// bytes pushed in any pieces are packed into records of at most
/// `MAX_CONTENT_LEN` content bytes (a piece may span records). The open record
/// is closed by `finish` (or on drop). It does not write the stream terminator.
pub struct StreamWriter<'o> {
    out: &'o mut Vec<u8>,
    rtype: u8,
    request_id: u16,
    /// Offset in `out` of the open record's header placeholder.
    open: Option<usize>,
    len: usize,
}

impl<'o> StreamWriter<'o> {
    pub fn new(out: &'o mut Vec<u8>, rtype: u8, request_id: u16) -> Self {
        StreamWriter {
            out,
            rtype,
            request_id,
            open: None,
            len: 0,
        }
    }

    pub fn push(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.open.is_none() {
                self.open = Some(self.out.len());
                self.out.extend_from_slice(&[0; HEADER_LEN]);
                self.len = 0;
            }
            let take = (MAX_CONTENT_LEN - self.len).min(data.len());
            self.out.extend_from_slice(&data[..take]);
            self.len += take;
            data = &data[take..];
            if self.len == MAX_CONTENT_LEN {
                self.close();
            }
        }
    }

    fn close(&mut self) {
        if let Some(at) = self.open.take() {
            let (hdr, pad) = stream_record_header(self.rtype, self.request_id, self.len);
            self.out[at..at + HEADER_LEN].copy_from_slice(&hdr);
            self.out.extend_from_slice(&PADDING[..pad]);
            self.len = 0;
        }
    }

    pub fn finish(mut self) {
        self.close();
    }
}

impl Drop for StreamWriter<'_> {
    fn drop(&mut self) {
        // A placeholder header left as zeros would corrupt the stream.
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_match_spec() {
        assert_eq!(
            [
                BEGIN_REQUEST,
                ABORT_REQUEST,
                END_REQUEST,
                PARAMS,
                STDIN,
                STDOUT
            ],
            [1, 2, 3, 4, 5, 6]
        );
        assert_eq!(
            [STDERR, DATA, GET_VALUES, GET_VALUES_RESULT, UNKNOWN_TYPE],
            [7, 8, 9, 10, 11]
        );
        assert_eq!([FCGI_RESPONDER, FCGI_AUTHORIZER, FCGI_FILTER], [1, 2, 3]);
        assert_eq!(
            [REQUEST_COMPLETE, CANT_MPX_CONN, OVERLOADED, UNKNOWN_ROLE],
            [0, 1, 2, 3]
        );
    }

    #[test]
    fn begin_request_bytes() {
        let mut out = Vec::new();
        write_begin_request(&mut out, 1, FCGI_RESPONDER, FCGI_KEEP_CONN);
        assert_eq!(out, [1, 1, 0, 1, 0, 8, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0]);

        let mut out = Vec::new();
        write_begin_request(&mut out, 0x1234, FCGI_AUTHORIZER, 0);
        assert_eq!(out, [1, 1, 0x12, 0x34, 0, 8, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn header_parse_and_write() {
        let b = [1, 6, 0xab, 0xcd, 0x01, 0x02, 5, 0];
        let h = RecordHeader::parse(&b);
        assert_eq!(
            h,
            RecordHeader {
                version: 1,
                rtype: 6,
                request_id: 0xabcd,
                content_len: 0x0102,
                padding_len: 5
            }
        );
        let mut out = Vec::new();
        h.write(&mut out);
        assert_eq!(out, b);
        // The reserved byte is ignored when parsing and written as zero.
        let h2 = RecordHeader::parse(&[1, 6, 0xab, 0xcd, 0x01, 0x02, 5, 0xff]);
        assert_eq!(h2.to_bytes(), b);
    }

    #[test]
    fn small_stream_is_padded_with_zeros() {
        let mut out = Vec::new();
        write_stream(&mut out, STDIN, 1, b"hello");
        assert_eq!(
            out,
            [1, 5, 0, 1, 0, 5, 3, 0, b'h', b'e', b'l', b'l', b'o', 0, 0, 0]
        );

        // Already aligned: no padding.
        let mut out = Vec::new();
        write_stream(&mut out, STDIN, 1, b"12345678");
        assert_eq!(
            out,
            [1, 5, 0, 1, 0, 8, 0, 0, b'1', b'2', b'3', b'4', b'5', b'6', b'7', b'8']
        );
    }

    #[test]
    fn empty_stream_writes_nothing_and_terminator_is_empty_record() {
        let mut out = Vec::new();
        write_stream(&mut out, STDIN, 1, b"");
        assert!(out.is_empty());
        write_stream_end(&mut out, STDIN, 1);
        assert_eq!(out, [1, 5, 0, 1, 0, 0, 0, 0]);
        write_stream_end(&mut out, PARAMS, 0x0102);
        assert_eq!(&out[8..], [1, 4, 1, 2, 0, 0, 0, 0]);
    }

    #[test]
    fn record_of_65535_bytes() {
        let data = vec![0xaa; 65535];
        let mut out = Vec::new();
        write_stream(&mut out, STDIN, 3, &data);
        assert_eq!(out.len(), 8 + 65535 + 1);
        assert_eq!(out[..8], [1, 5, 0, 3, 0xff, 0xff, 1, 0]);
        assert!(out[8..8 + 65535].iter().all(|&b| b == 0xaa));
        assert_eq!(out[8 + 65535], 0);
    }

    #[test]
    fn stream_of_65536_bytes_is_two_records() {
        let data = vec![0x55; 65536];
        let mut out = Vec::new();
        write_stream(&mut out, STDOUT, 2, &data);
        assert_eq!(out.len(), (8 + 65535 + 1) + (8 + 1 + 7));
        assert_eq!(out[..8], [1, 6, 0, 2, 0xff, 0xff, 1, 0]);
        assert_eq!(out[8 + 65535], 0);
        let second = &out[8 + 65535 + 1..];
        assert_eq!(second, [1, 6, 0, 2, 0, 1, 7, 0, 0x55, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn stream_record_header_for_writev() {
        assert_eq!(
            stream_record_header(STDIN, 1, 0),
            ([1, 5, 0, 1, 0, 0, 0, 0], 0)
        );
        assert_eq!(
            stream_record_header(STDIN, 1, 1),
            ([1, 5, 0, 1, 0, 1, 7, 0], 7)
        );
        assert_eq!(
            stream_record_header(STDIN, 1, 7),
            ([1, 5, 0, 1, 0, 7, 1, 0], 1)
        );
        assert_eq!(
            stream_record_header(STDIN, 1, 16),
            ([1, 5, 0, 1, 0, 16, 0, 0], 0)
        );
        assert_eq!(
            stream_record_header(DATA, 0x0100, 300),
            ([1, 8, 1, 0, 1, 44, 4, 0], 4)
        );
        assert_eq!(
            stream_record_header(STDIN, 1, 65535),
            ([1, 5, 0, 1, 0xff, 0xff, 1, 0], 1)
        );
    }

    #[test]
    fn abort_request_bytes() {
        let mut out = Vec::new();
        write_abort_request(&mut out, 7);
        assert_eq!(out, [1, 2, 0, 7, 0, 0, 0, 0]);
    }

    #[test]
    fn end_request_bytes() {
        let mut out = Vec::new();
        write_end_request(&mut out, 1, 0x01020304, OVERLOADED);
        assert_eq!(out, [1, 3, 0, 1, 0, 8, 0, 0, 1, 2, 3, 4, 2, 0, 0, 0]);
    }

    #[test]
    fn stream_writer_packs_pieces_and_spans_records() {
        let mut out = Vec::new();
        let mut w = StreamWriter::new(&mut out, PARAMS, 1);
        w.push(b"ab");
        w.push(b"");
        w.push(b"c");
        w.finish();
        assert_eq!(
            out,
            [1, 4, 0, 1, 0, 3, 5, 0, b'a', b'b', b'c', 0, 0, 0, 0, 0]
        );

        // Nothing pushed: nothing written.
        let mut out = Vec::new();
        StreamWriter::new(&mut out, PARAMS, 1).finish();
        assert!(out.is_empty());

        // 65530 + 10 bytes: first record full (65535), second holds 5.
        let mut out = Vec::new();
        {
            let mut w = StreamWriter::new(&mut out, STDIN, 1);
            w.push(&vec![1; 65530]);
            w.push(&[2; 10]);
            // dropped without finish: still closed
        }
        assert_eq!(out.len(), 8 + 65535 + 1 + 8 + 5 + 3);
        assert_eq!(out[..8], [1, 5, 0, 1, 0xff, 0xff, 1, 0]);
        assert_eq!(out[8 + 65530..8 + 65535], [2; 5]);
        assert_eq!(out[8 + 65535], 0);
        assert_eq!(
            out[8 + 65536..],
            [1, 5, 0, 1, 0, 5, 3, 0, 2, 2, 2, 2, 2, 0, 0, 0]
        );
    }

    #[test]
    fn retarget_moves_every_record_and_sets_begin_flags() {
        let mut recs = vec![
            1, 1, 0, 1, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, // BEGIN_REQUEST id 1, responder, flags 0
            1, 4, 0, 1, 0, 3, 5, 0, 1, 1, b'A', 0, 0, 0, 0, 0, // PARAMS "A"="" padded
            1, 4, 0, 1, 0, 0, 0, 0, // end of PARAMS
            1, 5, 0, 1, 0, 0, 0, // a partial STDIN header: left alone
        ];
        retarget(&mut recs, 0x0203, FCGI_KEEP_CONN);
        assert_eq!(&recs[..16], &[1, 1, 2, 3, 0, 8, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0]);
        assert_eq!(&recs[16..24], &[1, 4, 2, 3, 0, 3, 5, 0]);
        assert_eq!(&recs[32..40], &[1, 4, 2, 3, 0, 0, 0, 0]);
        assert_eq!(&recs[40..], &[1, 5, 0, 1, 0, 0, 0]);
    }
}