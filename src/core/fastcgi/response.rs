//! Decoder for what an application sends back on a responder connection:
//! STDOUT (CGI header block, then body), STDERR, END_REQUEST.
//!
//! Input arrives in arbitrary pieces straight from the socket; the decoder
//! keeps only an 8-byte record header, the 8-byte END_REQUEST body, and the
//! header block (capped by `max_header_bytes`). Body and stderr bytes are
//! handed out as slices of the caller's input as soon as they arrive.
//!
//! END_REQUEST before the header block's blank line (the strict reading):
//! the buffered STDOUT is accepted as the header block only if it is
//! non-empty and ends with a newline (complete header lines, no blank line,
//! empty body); otherwise it is `ProtocolError::NoHeaders`. An END_REQUEST
//! whose protocol status is not REQUEST_COMPLETE (overloaded, unknown role,
//! …) is reported as `Event::End` without headers: the app refused the
//! request, and the relay decides what to answer.
//!
//! Empty STDOUT/STDERR records are accepted anywhere (not only as stream
//! terminators): harmless, and some libraries emit them on flush.

use std::fmt;

use super::cgi_headers::{parse_cgi_headers, CgiHeaders, HeaderError};
use super::record::{
    RecordHeader, END_REQUEST, FCGI_VERSION_1, GET_VALUES_RESULT, HEADER_LEN, NULL_REQUEST_ID,
    REQUEST_COMPLETE, STDERR, STDOUT, UNKNOWN_TYPE,
};

#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    Headers(CgiHeaders),
    Body(&'a [u8]),
    Stderr(&'a [u8]),
    End {
        app_status: u32,
        protocol_status: u8,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    BadVersion(u8),
    /// A record type a responder application must not send (or a management
    /// type with a non-zero request id).
    UnexpectedRecordType(u8),
    WrongRequestId {
        expected: u16,
        got: u16,
    },
    /// END_REQUEST whose content length is not 8.
    BadEndRequest(u16),
    DataAfterEnd,
    HeadersTooLarge,
    BadHeaders(HeaderError),
    /// END_REQUEST without a usable header block.
    NoHeaders,
    /// EOF before END_REQUEST.
    Truncated,
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::BadVersion(v) => {
                write!(f, "FastCGI record with unsupported version {v}")
            }
            ProtocolError::UnexpectedRecordType(t) => {
                write!(f, "unexpected FastCGI record type {t}")
            }
            ProtocolError::WrongRequestId { expected, got } => {
                write!(
                    f,
                    "FastCGI record for request id {got}, expected {expected}"
                )
            }
            ProtocolError::BadEndRequest(len) => {
                write!(f, "FastCGI END_REQUEST with length {len}, expected 8")
            }
            ProtocolError::DataAfterEnd => f.write_str("data after FastCGI END_REQUEST"),
            ProtocolError::HeadersTooLarge => f.write_str("CGI header block too large"),
            ProtocolError::BadHeaders(e) => write!(f, "bad CGI headers: {e}"),
            ProtocolError::NoHeaders => {
                f.write_str("application ended the request without a CGI header block")
            }
            ProtocolError::Truncated => f.write_str("connection closed before FastCGI END_REQUEST"),
        }
    }
}

impl std::error::Error for ProtocolError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Stdout,
    Stderr,
    End,
    /// Management record: content and padding are skipped.
    Skip,
}

#[derive(Debug)]
enum Phase {
    /// Collecting a record header (`hdr_fill` bytes so far).
    Header,
    /// Inside a record's content, then its padding.
    Record {
        kind: Kind,
        content_left: usize,
        padding_left: usize,
    },
    Done,
    Failed(ProtocolError),
}

pub struct ResponseDecoder {
    request_id: u16,
    max_header_bytes: usize,
    phase: Phase,
    hdr: [u8; HEADER_LEN],
    hdr_fill: usize,
    end_body: [u8; 8],
    end_fill: usize,
    headers_done: bool,
    /// STDOUT bytes until the header block's blank line.
    hbuf: Vec<u8>,
    /// Start in `hbuf` of the line being received.
    line_start: usize,
    /// An empty header block is a 200 (an authorizer's answer), not an error.
    empty_block_is_200: bool,
}

impl ResponseDecoder {
    pub fn new(request_id: u16, max_header_bytes: usize) -> Self {
        ResponseDecoder {
            request_id,
            max_header_bytes,
            phase: Phase::Header,
            hdr: [0; HEADER_LEN],
            hdr_fill: 0,
            end_body: [0; 8],
            end_fill: 0,
            headers_done: false,
            hbuf: Vec::new(),
            line_start: 0,
            empty_block_is_200: false,
        }
    }

    /// For an AUTHORIZER's answer: a bare blank line (no header at all) is
    /// "200, no variables", as lighttpd, mod_fcgid and the FastCGI spec's
    /// example authorizers have it. Responders keep the strict rule.
    pub fn for_authorizer(mut self, authorizer: bool) -> Self {
        self.empty_block_is_200 = authorizer;
        self
    }

    /// Feeds bytes exactly as read from the socket (any split). Calls `sink`
    /// for each event in order. After an error, every later call returns the
    /// same error without emitting events.
    pub fn feed<F: FnMut(Event<'_>)>(
        &mut self,
        data: &[u8],
        sink: &mut F,
    ) -> Result<(), ProtocolError> {
        if let Phase::Failed(e) = &self.phase {
            return Err(e.clone());
        }
        self.feed_inner(data, sink)
            .inspect_err(|e| self.phase = Phase::Failed(e.clone()))
    }

    /// True once END_REQUEST (with its padding) was decoded.
    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    /// Call at EOF: Ok if END_REQUEST was seen; the earlier error if one
    /// occurred; else `Truncated`.
    pub fn finish(&self) -> Result<(), ProtocolError> {
        match &self.phase {
            Phase::Done => Ok(()),
            Phase::Failed(e) => Err(e.clone()),
            _ => Err(ProtocolError::Truncated),
        }
    }

    /// Whether `Event::Headers` was already emitted.
    pub fn headers_sent(&self) -> bool {
        self.headers_done
    }

    fn feed_inner<F: FnMut(Event<'_>)>(
        &mut self,
        data: &[u8],
        sink: &mut F,
    ) -> Result<(), ProtocolError> {
        let mut input = data;
        while !input.is_empty() {
            match self.phase {
                Phase::Header => {
                    let take = (HEADER_LEN - self.hdr_fill).min(input.len());
                    self.hdr[self.hdr_fill..self.hdr_fill + take].copy_from_slice(&input[..take]);
                    self.hdr_fill += take;
                    input = &input[take..];
                    if self.hdr_fill == HEADER_LEN {
                        self.hdr_fill = 0;
                        self.start_record(sink)?;
                    }
                }
                Phase::Record {
                    kind,
                    mut content_left,
                    mut padding_left,
                } => {
                    if content_left > 0 {
                        let take = content_left.min(input.len());
                        let (chunk, rest) = input.split_at(take);
                        input = rest;
                        content_left -= take;
                        self.on_content(kind, chunk, sink)?;
                    } else {
                        let take = padding_left.min(input.len());
                        input = &input[take..];
                        padding_left -= take;
                    }
                    self.phase = Phase::Record {
                        kind,
                        content_left,
                        padding_left,
                    };
                    if content_left == 0 && padding_left == 0 {
                        self.end_record(kind, sink)?;
                    }
                }
                Phase::Done => return Err(ProtocolError::DataAfterEnd),
                // feed() returns before calling us in this state.
                Phase::Failed(ref e) => return Err(e.clone()),
            }
        }
        Ok(())
    }

    fn start_record<F: FnMut(Event<'_>)>(&mut self, sink: &mut F) -> Result<(), ProtocolError> {
        let h = RecordHeader::parse(&self.hdr);
        if h.version != FCGI_VERSION_1 {
            return Err(ProtocolError::BadVersion(h.version));
        }
        let kind = match h.rtype {
            GET_VALUES_RESULT | UNKNOWN_TYPE if h.request_id == NULL_REQUEST_ID => Kind::Skip,
            STDOUT | STDERR | END_REQUEST if h.request_id != self.request_id => {
                return Err(ProtocolError::WrongRequestId {
                    expected: self.request_id,
                    got: h.request_id,
                });
            }
            STDOUT => Kind::Stdout,
            STDERR => Kind::Stderr,
            END_REQUEST if h.content_len != 8 => {
                return Err(ProtocolError::BadEndRequest(h.content_len))
            }
            END_REQUEST => Kind::End,
            t => return Err(ProtocolError::UnexpectedRecordType(t)),
        };
        self.end_fill = 0;
        let (content_left, padding_left) = (usize::from(h.content_len), usize::from(h.padding_len));
        self.phase = Phase::Record {
            kind,
            content_left,
            padding_left,
        };
        if content_left == 0 && padding_left == 0 {
            self.end_record(kind, sink)?;
        }
        Ok(())
    }

    fn on_content<F: FnMut(Event<'_>)>(
        &mut self,
        kind: Kind,
        chunk: &[u8],
        sink: &mut F,
    ) -> Result<(), ProtocolError> {
        match kind {
            Kind::Stdout if self.headers_done => {
                if !chunk.is_empty() {
                    sink(Event::Body(chunk));
                }
            }
            Kind::Stdout => self.header_bytes(chunk, sink)?,
            Kind::Stderr => {
                if !chunk.is_empty() {
                    sink(Event::Stderr(chunk));
                }
            }
            Kind::End => {
                // start_record guaranteed 8 content bytes; min() keeps this panic-free regardless.
                let take = chunk.len().min(8 - self.end_fill);
                self.end_body[self.end_fill..self.end_fill + take].copy_from_slice(&chunk[..take]);
                self.end_fill += take;
            }
            Kind::Skip => {}
        }
        Ok(())
    }

    fn end_record<F: FnMut(Event<'_>)>(
        &mut self,
        kind: Kind,
        sink: &mut F,
    ) -> Result<(), ProtocolError> {
        if kind != Kind::End {
            self.phase = Phase::Header;
            return Ok(());
        }
        let b = self.end_body;
        let app_status = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let protocol_status = b[4];
        if !self.headers_done && protocol_status == REQUEST_COMPLETE {
            // Strict reading: only complete header lines count (see module docs).
            if self.hbuf.last() != Some(&b'\n') {
                return Err(ProtocolError::NoHeaders);
            }
            self.emit_headers(self.hbuf.len(), sink)?;
        }
        self.hbuf = Vec::new();
        self.phase = Phase::Done;
        sink(Event::End {
            app_status,
            protocol_status,
        });
        Ok(())
    }

    /// STDOUT before the end of the header block: buffer it line by line and
    /// look for the blank line (`\n\n`, `\r\n\r\n`, or mixed), which may be
    /// split across records and feeds. Bytes after it are body.
    fn header_bytes<F: FnMut(Event<'_>)>(
        &mut self,
        chunk: &[u8],
        sink: &mut F,
    ) -> Result<(), ProtocolError> {
        let mut rest = chunk;
        while !rest.is_empty() {
            let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                return self.buffer_header(rest);
            };
            let (line_part, after) = rest.split_at(nl + 1);
            self.buffer_header(line_part)?;
            rest = after;
            let end = self.hbuf.len();
            let line = &self.hbuf[self.line_start..end - 1];
            if line.is_empty() || line == b"\r" {
                self.emit_headers(self.line_start, sink)?;
                if !rest.is_empty() {
                    sink(Event::Body(rest));
                }
                return Ok(());
            }
            self.line_start = end;
        }
        Ok(())
    }

    /// The cap counts the whole header block including its blank line, so
    /// the outcome does not depend on how the input was split.
    fn buffer_header(&mut self, part: &[u8]) -> Result<(), ProtocolError> {
        if part.len() > self.max_header_bytes.saturating_sub(self.hbuf.len()) {
            return Err(ProtocolError::HeadersTooLarge);
        }
        self.hbuf.extend_from_slice(part);
        Ok(())
    }

    fn emit_headers<F: FnMut(Event<'_>)>(
        &mut self,
        block_end: usize,
        sink: &mut F,
    ) -> Result<(), ProtocolError> {
        let block = self.hbuf.get(..block_end).unwrap_or(&self.hbuf);
        let headers = match parse_cgi_headers(block) {
            Err(HeaderError::Empty) if self.empty_block_is_200 => CgiHeaders::status_only(200),
            parsed => parsed.map_err(ProtocolError::BadHeaders)?,
        };
        self.headers_done = true;
        self.hbuf = Vec::new();
        self.line_start = 0;
        sink(Event::Headers(headers));
        Ok(())
    }
}

/// An app's STDERR as lines for the server's error log: each complete line
/// is handed out when its newline arrives (a line may span records and
/// reads); a line longer than `MAX_STDERR_LINE` bytes is cut there.
#[derive(Debug, Default)]
pub struct StderrLines {
    line: Vec<u8>,
}

/// Longest stderr line kept for the log.
pub const MAX_STDERR_LINE: usize = 8192;

impl StderrLines {
    pub fn push(&mut self, bytes: &[u8], mut emit: impl FnMut(&[u8])) {
        for &c in bytes {
            if c == b'\n' {
                self.flush(&mut emit);
            } else if self.line.len() < MAX_STDERR_LINE {
                self.line.push(c);
            }
        }
    }

    /// Hand out what is pending (the exchange ended without a final newline).
    pub fn flush(&mut self, mut emit: impl FnMut(&[u8])) {
        if !self.line.is_empty() {
            emit(&self.line);
            self.line.clear();
        }
    }
}

#[cfg(test)]
mod tests;
