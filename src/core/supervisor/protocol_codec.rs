//! The supervisor protocol's framing and primitives, shared by every
//! message (protocol.rs: requests, replies, configuration; protocol_status:
//! the status report; protocol_usage and protocol_customer: their parts).
//!
//! A frame is `u32` little-endian payload length, then the payload:
//! `[VERSION, TAG, body…]`. Bodies use fixed-width little-endian integers,
//! `u32`-length-prefixed byte strings, `u32`-counted lists and a `0/1` byte
//! for options. Decoding is strict: every length is bounded by what is left,
//! trailing bytes are an error, and nothing panics on hostile input.

use std::io::{self, Read, Write};
use std::path::PathBuf;

use crate::core::request::AppKind;
use crate::core::sys;

/// Bumped whenever a message's layout changes (2: pool status carries
/// requests per worker; 3: owner limits in the configuration, isolation and
/// usage in status replies; 4: notes, pool history, refused pools, slow-log
/// and X-Sendfile limits), so a supervisor left running from an older module
/// and a newer child refuse each other's frames instead of misreading them.
pub const VERSION: u8 = 4;
/// Largest payload accepted (and produced).
pub const MAX_FRAME: usize = 1 << 20;

pub(super) const TAG_ENSURE: u8 = 1;
pub(super) const TAG_NUDGE: u8 = 2;
pub(super) const TAG_REPLY_READY: u8 = 3;
pub(super) const TAG_REPLY_REFUSED: u8 = 4;
pub(super) const TAG_CONFIG: u8 = 5;
pub(super) const TAG_KILL: u8 = 6;
pub(super) const TAG_STATUS: u8 = 7;
pub(super) const TAG_REPLY_STATUS: u8 = 8;
pub(super) const TAG_NOTE: u8 = 9;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtoError(pub &'static str);

impl std::fmt::Display for ProtoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed frame: {}", self.0)
    }
}

impl From<ProtoError> for io::Error {
    fn from(e: ProtoError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e.to_string())
    }
}

/// Builds one frame; `finish` fills in the length.
pub struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    pub fn new(tag: u8) -> Encoder {
        Encoder { buf: vec![0, 0, 0, 0, VERSION, tag] }
    }
    /// A bare encoder without frame header (used for pool keys).
    pub fn raw() -> Encoder {
        Encoder { buf: Vec::new() }
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u32(v.len() as u32);
        self.buf.extend_from_slice(v);
        self
    }
    pub fn path(&mut self, p: &std::path::Path) -> &mut Self {
        self.bytes(sys::path_bytes(p))
    }
    /// Appends bytes encoded elsewhere (by a `raw` encoder), as they are.
    pub fn append(&mut self, raw: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(raw);
        self
    }
    /// Bytes so far (with the frame header, if any).
    pub fn encoded_len(&self) -> usize {
        self.buf.len()
    }
    pub fn into_raw(self) -> Vec<u8> {
        self.buf
    }
    /// The finished frame, or an error if the payload exceeds `MAX_FRAME`.
    pub fn finish(mut self) -> io::Result<Vec<u8>> {
        let len = self.buf.len() - 4;
        if len > MAX_FRAME {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "frame exceeds the 1 MiB limit"));
        }
        self.buf[..4].copy_from_slice(&(len as u32).to_le_bytes());
        Ok(self.buf)
    }
}

/// Reads a payload; every accessor checks bounds.
pub struct Decoder<'a> {
    buf: &'a [u8],
}

impl<'a> Decoder<'a> {
    pub fn new(buf: &'a [u8]) -> Decoder<'a> {
        Decoder { buf }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        if self.buf.len() < n {
            return Err(ProtoError("truncated"));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    pub fn u8(&mut self) -> Result<u8, ProtoError> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16, ProtoError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    pub fn u32(&mut self) -> Result<u32, ProtoError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub fn u64(&mut self) -> Result<u64, ProtoError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    pub fn bytes(&mut self) -> Result<Vec<u8>, ProtoError> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    pub fn string(&mut self) -> Result<String, ProtoError> {
        String::from_utf8(self.bytes()?).map_err(|_| ProtoError("string is not UTF-8"))
    }
    pub fn path(&mut self) -> Result<PathBuf, ProtoError> {
        let b = self.bytes()?;
        if b.contains(&0) {
            return Err(ProtoError("path contains NUL"));
        }
        Ok(sys::path_from_bytes(&b).to_path_buf())
    }
    pub fn bool(&mut self) -> Result<bool, ProtoError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(ProtoError("bad boolean")),
        }
    }
    /// A list count; each element takes at least `min_elem` bytes, so the
    /// count can never make us allocate more than the frame justifies.
    pub fn count(&mut self, min_elem: usize) -> Result<usize, ProtoError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_elem.max(1)) > self.buf.len() {
            return Err(ProtoError("list count exceeds frame"));
        }
        Ok(n)
    }
    pub fn end(&self) -> Result<(), ProtoError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(ProtoError("trailing bytes"))
        }
    }
}

/// Splits off `[VERSION, TAG]` and checks the version.
pub(super) fn open(payload: &[u8]) -> Result<(u8, Decoder<'_>), ProtoError> {
    let mut d = Decoder::new(payload);
    if d.u8()? != VERSION {
        return Err(ProtoError("unsupported protocol version"));
    }
    let tag = d.u8()?;
    Ok((tag, d))
}

pub(super) fn kind_code(k: AppKind) -> u8 {
    k as u8
}

pub(super) fn kind_from(code: u8) -> Result<AppKind, ProtoError> {
    match code {
        1 => Ok(AppKind::App),
        2 => Ok(AppKind::Wrapper),
        3 => Ok(AppKind::Script),
        4 => Ok(AppKind::Authorizer),
        _ => Err(ProtoError("unknown app kind")),
    }
}

/// A refusal (a pool's or a status page's): the status and the reason.
pub(super) fn encode_refused(status: u16, reason: &str) -> io::Result<Vec<u8>> {
    let mut e = Encoder::new(TAG_REPLY_REFUSED);
    // Reasons are log text; keep them well inside a frame.
    let mut end = reason.len().min(4096);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    e.u16(status).bytes(&reason.as_bytes()[..end]);
    e.finish()
}

/// Accumulates bytes from a non-blocking stream and yields whole payloads.
#[derive(Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    pub fn new() -> FrameReader {
        FrameReader::default()
    }
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }
    /// The next complete payload, `Ok(None)` if more bytes are needed, or an
    /// error for an oversized frame (the connection should then be dropped).
    pub fn next_payload(&mut self) -> Result<Option<Vec<u8>>, ProtoError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > MAX_FRAME {
            return Err(ProtoError("frame too large"));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let payload = self.buf[4..4 + len].to_vec();
        self.buf.drain(..4 + len);
        Ok(Some(payload))
    }
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

/// Blocking read of one payload.
pub fn read_payload<R: Read>(r: &mut R) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(ProtoError("frame too large").into());
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Ok(payload)
}

pub fn write_frame<W: Write>(w: &mut W, frame: &[u8]) -> io::Result<()> {
    w.write_all(frame)?;
    w.flush()
}
