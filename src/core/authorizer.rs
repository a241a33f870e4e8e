//! The FastCGI AUTHORIZER role's answer (FastCGI spec 6.3), judged the way
//! mod_fcgid and mod_authnz_fcgi judge it: 200 lets the request through and
//! its `Variable-NAME` headers become environment variables; any other status
//! is the client's answer. Server-agnostic: the Apache glue runs the
//! exchange (`apache::authorizer`); a lighttpd plugin can reuse this.

use crate::core::directives::is_env_name;
use crate::core::fastcgi::cgi_headers::CgiHeaders;
use crate::core::fastcgi::response::Event;
use crate::core::fastcgi::params::param_value_is_safe;
use crate::core::hostconfig::{param_blocked, ALWAYS_BLOCKED_ENV};

/// CGI variables an authorizer does not get (spec 6.3), and hop-by-hop ones.
pub const DROPPED_PARAMS: &[&[u8]] = &[b"CONTENT_LENGTH", b"PATH_INFO", b"PATH_TRANSLATED", b"SCRIPT_NAME", b"HTTP_TE", b"HTTP_TRAILER", b"HTTP_TRANSFER_ENCODING", b"HTTP_UPGRADE", b"HTTP_KEEP_ALIVE"];

/// Whether a `Variable-NAME` may become environment variable NAME: a plain
/// name, and none a customer may not set with `SuFcgiEnv` or that never
/// reaches an app (`LD_*`, `PATH`, `PHP_VALUE`, `HTTP_PROXY`, the host's list).
pub fn variable_allowed(name: &[u8], host_blocked: &[String]) -> bool {
    is_env_name(name) && !ALWAYS_BLOCKED_ENV.iter().any(|b| b.as_bytes() == name) && !param_blocked(name, host_blocked)
}

/// Environment variables as (NAME, value).
pub type Vars = Vec<(Vec<u8>, Vec<u8>)>;

/// `Variable-NAME` headers of a 200 as (NAME, value), and the refused names
/// (as the authorizer wrote them). A `-` in NAME becomes `_`, as lighttpd and
/// mod_fcgid map it (`Variable-X-LIGHTTPD-FCGI-AUTH` sets
/// `X_LIGHTTPD_FCGI_AUTH`); the mapped name must be one it may set.
pub fn variables(h: &CgiHeaders, host_blocked: &[String]) -> (Vars, Vec<Vec<u8>>) {
    const PREFIX: &[u8] = b"variable-";
    let (mut ok, mut refused) = (Vec::new(), Vec::new());
    for (k, v) in &h.headers {
        if k.len() <= PREFIX.len() || !k[..PREFIX.len()].eq_ignore_ascii_case(PREFIX) {
            continue;
        }
        let written = &k[PREFIX.len()..];
        let name: Vec<u8> = written.iter().map(|&c| if c == b'-' { b'_' } else { c }).collect();
        if variable_allowed(&name, host_blocked) && param_value_is_safe(v) {
            ok.push((name, v.clone()));
        } else {
            refused.push(written.to_vec());
        }
    }
    (ok, refused)
}

/// `Authorization: Basic …` as (user, password), as the classic FastCGI
/// authorizers expect them in REMOTE_USER / REMOTE_PASSWD (for servers that
/// do not decode it themselves, as httpd's `ap_get_basic_auth_components`
/// does). None for another scheme or a malformed value.
pub fn basic_credentials(authorization: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let rest = authorization.trim_ascii();
    if rest.len() < 6 || !rest[..6].eq_ignore_ascii_case(b"basic ") {
        return None;
    }
    let decoded = base64_decode(rest[6..].trim_ascii())?;
    let colon = decoded.iter().position(|&c| c == b':')?;
    Some((decoded[..colon].to_vec(), decoded[colon + 1..].to_vec()))
}

/// Standard base64 (RFC 4648 section 4), padding required.
fn base64_decode(text: &[u8]) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    if !text.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    for (i, quad) in text.chunks(4).enumerate() {
        let last = i == text.len() / 4 - 1;
        let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &quad[..4 - pad] {
            n = (n << 6) | value(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

/// Body bytes of a captured (authorizer) response kept; the rest is dropped.
pub const MAX_CAPTURED_BODY: usize = 64 * 1024;

/// An authorizer's answer: its CGI headers (None if it sent none before the
/// stream ended) and the start of its body.
#[derive(Debug, Default)]
pub struct Captured {
    pub headers: Option<CgiHeaders>,
    pub body: Vec<u8>,
    pub body_truncated: bool,
}

impl Captured {
    /// Keep the response's headers, and its body up to `MAX_CAPTURED_BODY`;
    /// any other event (stderr, the end) is handed back for the caller.
    pub fn keep<'a>(&mut self, ev: Event<'a>) -> Option<Event<'a>> {
        match ev {
            Event::Headers(h) => self.headers = Some(h),
            Event::Body(b) => {
                let room = MAX_CAPTURED_BODY.saturating_sub(self.body.len());
                self.body.extend_from_slice(&b[..b.len().min(room)]);
                self.body_truncated |= b.len() > room;
            }
            other => return Some(other),
        }
        None
    }

    /// `ev` for the client, or None when `capture` kept it (an authorizer's
    /// answer is kept, not sent).
    pub fn pass<'a>(capture: Option<&mut Captured>, ev: Event<'a>) -> Option<Event<'a>> {
        match capture {
            Some(c) => c.keep(ev),
            None => Some(ev),
        }
    }
}

/// What the authorizer's answer means for the request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// 200: let the request through with these environment variables.
    Allow(Vars),
    /// Anything else: this is the client's answer.
    Deny,
    /// Not an answer an authorizer may give: 500, with the reason logged.
    Invalid(String),
}

pub fn verdict(headers: Option<&CgiHeaders>, host_blocked: &[String]) -> (Verdict, Vec<Vec<u8>>) {
    let Some(h) = headers else {
        return (Verdict::Invalid("the authorizer sent no response headers".into()), Vec::new());
    };
    match h.status {
        200 if h.location.is_some() => (Verdict::Invalid("the authorizer answered 200 with a Location header".into()), Vec::new()),
        200 => {
            let (vars, refused) = variables(h, host_blocked);
            (Verdict::Allow(vars), refused)
        }
        s if s < 200 => (Verdict::Invalid(format!("the authorizer answered with the interim status {s}")), Vec::new()),
        _ => (Verdict::Deny, Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::fastcgi::cgi_headers::parse_cgi_headers;

    fn v(head: &str) -> Verdict {
        verdict(Some(&parse_cgi_headers(head.as_bytes()).unwrap()), &[]).0
    }

    #[test]
    fn a_200_allows_and_exports_variables() {
        let h = parse_cgi_headers(b"Status: 200 OK\r\nVariable-AUTH_USER: bob\r\nvariable-Remote_User: bob\r\nX-Other: 1\r\nVariable-LD_PRELOAD: /x.so\r\nVariable-X-Y: 1\r\nVariable-SECRET: s\r\nVariable-LD-PRELOAD: /y.so\r\nVariable-X-LIGHTTPD-FCGI-AUTH: yes\r\nVariable-1-X: 1\r\n").unwrap();
        let (got, refused) = verdict(Some(&h), &["SECRET".to_string()]);
        assert_eq!(
            got,
            Verdict::Allow(vec![
                (b"AUTH_USER".to_vec(), b"bob".to_vec()),
                (b"Remote_User".to_vec(), b"bob".to_vec()),
                (b"X_Y".to_vec(), b"1".to_vec()),
                (b"X_LIGHTTPD_FCGI_AUTH".to_vec(), b"yes".to_vec()),
            ])
        );
        // Refused names stay refused when spelt with '-' (LD-PRELOAD is LD_PRELOAD).
        assert_eq!(refused, vec![b"LD_PRELOAD".to_vec(), b"SECRET".to_vec(), b"LD-PRELOAD".to_vec(), b"1-X".to_vec()]);
        // No Status header is a 200 too.
        assert!(matches!(v("Variable-A: 1\r\n"), Verdict::Allow(_)));
    }

    #[test]
    fn other_statuses_deny_and_odd_answers_are_invalid() {
        assert_eq!(v("Status: 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"x\"\r\n"), Verdict::Deny);
        assert_eq!(v("Location: /login\r\n"), Verdict::Deny, "a redirect is the client's answer");
        assert!(matches!(v("Status: 200\r\nLocation: /x\r\n"), Verdict::Invalid(_)));
        assert!(matches!(v("Status: 100\r\n"), Verdict::Invalid(_)));
        assert!(matches!(verdict(None, &[]).0, Verdict::Invalid(_)));
    }

    #[test]
    fn capture_keeps_headers_and_a_bounded_body_and_hands_back_the_rest() {
        let mut c = Captured::default();
        assert!(c.keep(Event::Headers(parse_cgi_headers(b"Status: 401\r\n").unwrap())).is_none());
        assert!(c.keep(Event::Body(&vec![b'x'; MAX_CAPTURED_BODY - 1])).is_none());
        assert!(c.keep(Event::Body(b"yz")).is_none());
        assert_eq!((c.body.len(), c.body_truncated), (MAX_CAPTURED_BODY, true));
        assert_eq!(c.headers.as_ref().map(|h| h.status), Some(401));
        assert!(matches!(c.keep(Event::Stderr(b"e")), Some(Event::Stderr(b"e"))));
    }

    #[test]
    fn basic_credentials_are_decoded() {
        // "alice:se:cret" and "a:" in base64, written out by hand.
        assert_eq!(basic_credentials(b"Basic YWxpY2U6c2U6Y3JldA=="), Some((b"alice".to_vec(), b"se:cret".to_vec())));
        assert_eq!(basic_credentials(b"basic  YTo= "), Some((b"a".to_vec(), b"".to_vec())));
        assert_eq!(basic_credentials(b"Bearer YTo="), None);
        assert_eq!(basic_credentials(b"Basic YWxpY2U="), None, "no colon");
        assert_eq!(basic_credentials(b"Basic YTo"), None, "unpadded");
        assert_eq!(basic_credentials(b"Basic Y=To"), None, "padding inside");
        assert_eq!(basic_credentials(b"Basic !!!!"), None);
    }

    #[test]
    fn blocked_names_are_never_variables() {
        for n in ["PATH", "PHP_VALUE", "PHPRC", "HTTP_PROXY", "LD_LIBRARY_PATH", "", "1X"] {
            assert!(!variable_allowed(n.as_bytes(), &[]), "{n}");
        }
        assert!(variable_allowed(b"REMOTE_USER", &[]));
    }
}
