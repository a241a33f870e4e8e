//! The CGI response header block an application writes at the start of
//! STDOUT (RFC 3875 section 6), parsed strictly: anything ambiguous is an
//! error (the relay answers 502) rather than something a client or a proxy
//! in front of us might read differently.
//!
//! Rules beyond RFC 3875:
//! - `Location` without `Status` is a 302 to the client; we never perform
//!   CGI "local redirects".
//! - `Status`, `Content-Type` and `Location` may appear at most once.
//! - An empty block (the blank line comes first) is an error: RFC 3875
//!   requires at least one header field.

use std::fmt;

/// Hop-by-hop headers a CGI response must not pass to the client.
const HOP_BY_HOP: &[&[u8]] = &[b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade", b"proxy-authenticate", b"proxy-connection"];

/// Whether a response header is hop-by-hop (never passed to the client).
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgiHeaders {
    pub status: u16,
    /// Reason phrase from `Status: NNN reason`, if any.
    pub reason: Option<Vec<u8>>,
    pub content_type: Option<Vec<u8>>,
    pub location: Option<Vec<u8>>,
    /// Every other header in order; repeats (`Set-Cookie`) are kept.
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
}

impl CgiHeaders {
    /// A block that says nothing but its status.
    pub fn status_only(status: u16) -> CgiHeaders {
        CgiHeaders { status, reason: None, content_type: None, location: None, headers: Vec::new() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// No header lines at all.
    Empty,
    /// An empty line inside the block (the caller passed the terminator too).
    EmptyLine,
    MissingColon,
    /// A line starting with whitespace (obsolete line folding).
    ObsFold,
    /// The name is empty or not an RFC 7230 token (this includes whitespace before the colon).
    InvalidName,
    /// CR, LF, NUL or another control character in a value.
    InvalidValue,
    InvalidStatus,
    /// A header that must appear at most once appeared again.
    Duplicate(&'static str),
    /// `Content-Type` or `Location` with an empty value.
    EmptyValue(&'static str),
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::Empty => f.write_str("empty CGI header block"),
            HeaderError::EmptyLine => f.write_str("empty line inside CGI header block"),
            HeaderError::MissingColon => f.write_str("CGI header line without a colon"),
            HeaderError::ObsFold => f.write_str("folded CGI header line"),
            HeaderError::InvalidName => f.write_str("invalid CGI header name"),
            HeaderError::InvalidValue => f.write_str("invalid character in CGI header value"),
            HeaderError::InvalidStatus => f.write_str("invalid Status header"),
            HeaderError::Duplicate(name) => write!(f, "duplicate {name} header"),
            HeaderError::EmptyValue(name) => write!(f, "empty {name} header"),
        }
    }
}

impl std::error::Error for HeaderError {}

/// RFC 7230 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = v {
        if !is_ows(*first) {
            break;
        }
        v = rest;
    }
    while let [rest @ .., last] = v {
        if !is_ows(*last) {
            break;
        }
        v = rest;
    }
    v
}

/// Field-value characters: visible ASCII, SP, HTAB and obs-text (0x80..).
fn value_is_valid(v: &[u8]) -> bool {
    v.iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// `NNN` or `NNN reason`, NNN in 100..=599.
fn parse_status(v: &[u8]) -> Result<(u16, Option<Vec<u8>>), HeaderError> {
    let (digits, rest) = v.split_at(v.len().min(3));
    if digits.len() != 3 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(HeaderError::InvalidStatus);
    }
    let code = digits
        .iter()
        .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    if !(100..=599).contains(&code) {
        return Err(HeaderError::InvalidStatus);
    }
    let reason = match rest.first() {
        None => None,
        Some(&b) if is_ows(b) => {
            let r = trim_ows(rest);
            (!r.is_empty()).then(|| r.to_vec())
        }
        Some(_) => return Err(HeaderError::InvalidStatus),
    };
    Ok((code, reason))
}

fn set_once(
    slot: &mut Option<Vec<u8>>,
    name: &'static str,
    value: &[u8],
) -> Result<(), HeaderError> {
    if slot.is_some() {
        return Err(HeaderError::Duplicate(name));
    }
    if value.is_empty() {
        return Err(HeaderError::EmptyValue(name));
    }
    *slot = Some(value.to_vec());
    Ok(())
}

/// Parses a header block without its terminating blank line. Lines end in
/// CRLF or a bare LF; the last line's line ending is optional.
pub fn parse_cgi_headers(block: &[u8]) -> Result<CgiHeaders, HeaderError> {
    let block = block.strip_suffix(b"\n").unwrap_or(block);
    if block.is_empty() || block == b"\r" {
        return Err(HeaderError::Empty);
    }
    let mut status: Option<(u16, Option<Vec<u8>>)> = None;
    let mut content_type = None;
    let mut location = None;
    let mut headers = Vec::new();

    for raw in block.split(|&b| b == b'\n') {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        let Some(&first) = line.first() else {
            return Err(HeaderError::EmptyLine);
        };
        if is_ows(first) {
            return Err(HeaderError::ObsFold);
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(HeaderError::MissingColon)?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(HeaderError::InvalidName);
        }
        // Checked before trimming: a stray CR (or other control) anywhere is an error.
        if !value_is_valid(value) {
            return Err(HeaderError::InvalidValue);
        }
        let value = trim_ows(value);

        if name.eq_ignore_ascii_case(b"Status") {
            if status.is_some() {
                return Err(HeaderError::Duplicate("Status"));
            }
            status = Some(parse_status(value)?);
        } else if name.eq_ignore_ascii_case(b"Content-Type") {
            set_once(&mut content_type, "Content-Type", value)?;
        } else if name.eq_ignore_ascii_case(b"Location") {
            set_once(&mut location, "Location", value)?;
        } else {
            headers.push((name.to_vec(), value.to_vec()));
        }
    }

    let (status, reason) = match status {
        Some(s) => s,
        None if location.is_some() => (302, None),
        None => (200, None),
    };
    Ok(CgiHeaders {
        status,
        reason,
        content_type,
        location,
        headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::fastcgi::test_rng::XorShift;

    fn pair(n: &str, v: &str) -> (Vec<u8>, Vec<u8>) {
        (n.as_bytes().to_vec(), v.as_bytes().to_vec())
    }

    #[test]
    fn simple_block_crlf_and_lf() {
        for block in [
            &b"Content-Type: text/html\r\nX-A: 1\r\n"[..],
            b"Content-Type: text/html\nX-A: 1\n",
            b"Content-Type: text/html\r\nX-A: 1",
            b"Content-Type: text/html\nX-A: 1\r\n",
        ] {
            let h = parse_cgi_headers(block).unwrap();
            assert_eq!(h.status, 200);
            assert_eq!(h.reason, None);
            assert_eq!(h.content_type.as_deref(), Some(&b"text/html"[..]));
            assert_eq!(h.location, None);
            assert_eq!(h.headers, vec![pair("X-A", "1")]);
        }
    }

    #[test]
    fn status_with_and_without_reason() {
        let h = parse_cgi_headers(b"Status: 404 Not Found\r\n").unwrap();
        assert_eq!(
            (h.status, h.reason.as_deref()),
            (404, Some(&b"Not Found"[..]))
        );
        let h = parse_cgi_headers(b"status:201\r\n").unwrap();
        assert_eq!((h.status, h.reason), (201, None));
        let h = parse_cgi_headers(b"STATUS:  599 \t\r\n").unwrap();
        assert_eq!((h.status, h.reason), (599, None));
        let h = parse_cgi_headers(b"Status: 100\tContinue  ").unwrap();
        assert_eq!(
            (h.status, h.reason.as_deref()),
            (100, Some(&b"Continue"[..]))
        );
        assert!(h.headers.is_empty());
    }

    #[test]
    fn invalid_status() {
        for block in [
            &b"Status: 99\r\n"[..],
            b"Status: 099",
            b"Status: 600",
            b"Status: 1000",
            b"Status: 200OK",
            b"Status: abc",
            b"Status:",
            b"Status: -20",
            b"Status: +200",
        ] {
            assert_eq!(
                parse_cgi_headers(block),
                Err(HeaderError::InvalidStatus),
                "{block:?}"
            );
        }
        assert_eq!(
            parse_cgi_headers(b"Status: 200\r\nStatus: 404\r\n"),
            Err(HeaderError::Duplicate("Status"))
        );
    }

    #[test]
    fn location_gives_302_unless_status() {
        let h = parse_cgi_headers(b"Location: /elsewhere\r\n").unwrap();
        assert_eq!(h.status, 302);
        assert_eq!(h.location.as_deref(), Some(&b"/elsewhere"[..]));
        let h =
            parse_cgi_headers(b"Location: https://x.example/\r\nStatus: 301 Moved\r\n").unwrap();
        assert_eq!((h.status, h.reason.as_deref()), (301, Some(&b"Moved"[..])));
        assert_eq!(h.location.as_deref(), Some(&b"https://x.example/"[..]));
        assert_eq!(
            parse_cgi_headers(b"Location: /a\r\nlocation: /b\r\n"),
            Err(HeaderError::Duplicate("Location"))
        );
        assert_eq!(
            parse_cgi_headers(b"Location:  \r\n"),
            Err(HeaderError::EmptyValue("Location"))
        );
    }

    #[test]
    fn repeated_set_cookie_kept_in_order() {
        let h = parse_cgi_headers(
            b"Set-Cookie: a=1\r\nContent-type: text/plain\r\nSet-Cookie: b=2\r\nX-Y:\r\nset-cookie: c=3\r\n",
        )
        .unwrap();
        assert_eq!(h.content_type.as_deref(), Some(&b"text/plain"[..]));
        assert_eq!(
            h.headers,
            vec![
                pair("Set-Cookie", "a=1"),
                pair("Set-Cookie", "b=2"),
                pair("X-Y", ""),
                pair("set-cookie", "c=3")
            ]
        );
        assert_eq!(
            parse_cgi_headers(b"Content-Type: a\r\nCONTENT-TYPE: b\r\n"),
            Err(HeaderError::Duplicate("Content-Type"))
        );
    }

    #[test]
    fn values_are_trimmed_and_keep_inner_whitespace_and_obs_text() {
        let h = parse_cgi_headers(b"X-A: \t a  b\tc \t\r\nX-B: caf\xc3\xa9\r\n").unwrap();
        assert_eq!(
            h.headers,
            vec![
                pair("X-A", "a  b\tc"),
                (b"X-B".to_vec(), b"caf\xc3\xa9".to_vec())
            ]
        );
    }

    #[test]
    fn structural_errors() {
        assert_eq!(parse_cgi_headers(b""), Err(HeaderError::Empty));
        assert_eq!(parse_cgi_headers(b"\r\n"), Err(HeaderError::Empty));
        assert_eq!(parse_cgi_headers(b"\n"), Err(HeaderError::Empty));
        assert_eq!(
            parse_cgi_headers(b"X-A: 1\r\n\r\n"),
            Err(HeaderError::EmptyLine)
        );
        assert_eq!(
            parse_cgi_headers(b"X-A: 1\r\n\r\nX-B: 2"),
            Err(HeaderError::EmptyLine)
        );
        assert_eq!(
            parse_cgi_headers(b"X-A: 1\r\nhello world\r\n"),
            Err(HeaderError::MissingColon)
        );
        assert_eq!(
            parse_cgi_headers(b"X-A: 1\r\n folded\r\n"),
            Err(HeaderError::ObsFold)
        );
        assert_eq!(
            parse_cgi_headers(b"X-A: 1\r\n\tfolded: x\r\n"),
            Err(HeaderError::ObsFold)
        );
        assert_eq!(parse_cgi_headers(b" X-A: 1\r\n"), Err(HeaderError::ObsFold));
    }

    #[test]
    fn invalid_names() {
        for block in [
            &b": v"[..],
            b"X A: v",
            b"X-A : v",
            b"X\x00A: v",
            b"X(A): v",
            b"X\xc3\xa9: v",
            b"\rX: v",
        ] {
            assert_eq!(
                parse_cgi_headers(block),
                Err(HeaderError::InvalidName),
                "{block:?}"
            );
        }
        assert!(parse_cgi_headers(b"!#$%&'*+-.^_`|~09azAZ: v").is_ok());
    }

    #[test]
    fn invalid_values() {
        for block in [
            &b"X-A: a\rb\r\n"[..],
            b"X-A: a\r\r\n",
            b"X-A: a\x00b",
            b"X-A: a\x01b",
            b"X-A: a\x1bb",
            b"X-A: a\x7fb",
            b"Status: 200 O\x00K",
            b"Location: /a\x0bb",
        ] {
            assert_eq!(
                parse_cgi_headers(block),
                Err(HeaderError::InvalidValue),
                "{block:?}"
            );
        }
    }

    #[test]
    fn display_is_short() {
        assert_eq!(
            HeaderError::InvalidStatus.to_string(),
            "invalid Status header"
        );
        assert_eq!(
            HeaderError::Duplicate("Location").to_string(),
            "duplicate Location header"
        );
        assert_eq!(HeaderError::Empty.to_string(), "empty CGI header block");
    }

    #[test]
    fn fuzz_never_panics() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        const ALPHABET: &[u8] = b"Status: 302LocationContent-Type\r\n\r\n\t \x00\x01\x7f\xff:abc";
        for _ in 0..20_000 {
            let len = (rng.next() % 64) as usize;
            let block: Vec<u8> = (0..len)
                .map(|_| ALPHABET[(rng.next() % ALPHABET.len() as u64) as usize])
                .collect();
            if let Ok(h) = parse_cgi_headers(&block) {
                assert!((100..=599).contains(&h.status));
                for (n, v) in &h.headers {
                    assert!(!n.is_empty() && n.iter().all(|&b| is_tchar(b)));
                    assert!(value_is_valid(v));
                }
            }
        }
    }
}
