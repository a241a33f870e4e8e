//! The request's CGI environment as FastCGI params: what lighttpd builds
//! for mod_fastcgi, with the request's mapping's overrides, minus blocked
//! names; encoded once as BEGIN_REQUEST + PARAMS.

use super::ctx::{Ctx, REQUEST_ID};
use crate::core::authorizer::{basic_credentials, DROPPED_PARAMS};
use crate::core::fastcgi::params::{self, param_value_is_safe};
use crate::core::fastcgi::record::{self, FCGI_AUTHORIZER, FCGI_RESPONDER};
use crate::core::hostconfig::param_blocked;
use crate::lighttpd::req::Header;
use crate::lighttpd::server::Handled;

/// Where http_cgi_headers' pairs go: encoded at once (no per-pair
/// allocation), minus blocked names and the ones our mapping decides.
struct ParamSink<'a> {
    nv: Vec<u8>,
    blocked: &'a [String],
    /// REMOTE_USER came from lighttpd (mod_auth authenticated the request).
    has_remote_user: bool,
    /// The first name whose name or value carries CR or LF.
    unsafe_name: Option<Vec<u8>>,
}

impl ParamSink<'_> {
    fn add(&mut self, k: &[u8], v: &[u8]) {
        if param_blocked(k, self.blocked) {
            return;
        }
        self.has_remote_user |= k == b"REMOTE_USER";
        if self.unsafe_name.is_none() && (!param_value_is_safe(k) || !param_value_is_safe(v)) {
            self.unsafe_name = Some(k.to_vec());
        }
        params::write_name_value(&mut self.nv, k, v);
    }
}

/// lighttpd maps both `X-Foo` and `X_Foo` to HTTP_X_FOO, so a client could
/// shadow a header a proxy set (or forge CONTENT_TYPE with `Content_Type`).
/// As Apache does, headers whose names are not letters, digits and '-' are
/// left out.
fn odd_header_name(name: &[u8]) -> bool {
    name.iter().any(|&ch| !(ch.is_ascii_alphanumeric() || ch == b'-'))
}

/// Encode the request's params into `c.params`; Err: the request was
/// answered (400 for a name or value with CR or LF).
pub(super) fn build(c: &mut Ctx) -> Result<(), Handled> {
    let authorizer = c.is_authorizer();
    // (An authorizer's: `authorizer::DROPPED_PARAMS` are left out.)
    let dropped: &[&[u8]] = if authorizer { DROPPED_PARAMS } else { &[] };
    let overrides = &c.job.overrides;
    let mut sink = ParamSink { nv: Vec::with_capacity(2048), blocked: &c.rt.host.blocked_env, has_remote_user: false, unsafe_name: None };
    c.req.cgi_env(authorizer, odd_header_name, |key, val| {
        if !overrides.iter().any(|(o, _)| *o == key) && !dropped.contains(&key) {
            sink.add(key, val);
        }
    });
    for (k, v) in overrides.iter() {
        // An empty PATH_INFO / PATH_TRANSLATED is left out, as lighttpd does.
        if v.is_empty() && (*k == b"PATH_INFO" || *k == b"PATH_TRANSLATED") {
            continue;
        }
        sink.add(k, v);
    }
    if authorizer {
        // As under Apache: no body (CONTENT_LENGTH 0), and Basic credentials
        // decoded as the classic FastCGI authorizers expect them.
        sink.add(b"CONTENT_LENGTH", b"0");
        let auth = c.req.request_header(Header::Authorization, b"Authorization");
        if let Some((user, pw)) = auth.as_deref().and_then(basic_credentials).filter(|_| !sink.has_remote_user) {
            sink.add(b"REMOTE_USER", &user);
            sink.add(b"REMOTE_PASSWD", &pw);
        }
    }
    let nv = std::mem::take(&mut sink.nv);
    if let Some(k) = sink.unsafe_name.take() {
        let why = format!("refusing a request whose {} contains CR or LF", String::from_utf8_lossy(&k));
        return Err(c.refuse(400, None, &why));
    }
    let mut out = Vec::with_capacity(nv.len() + 64);
    let role = if authorizer { FCGI_AUTHORIZER } else { FCGI_RESPONDER };
    record::write_begin_request(&mut out, REQUEST_ID, role, 0);
    let mut w = record::StreamWriter::new(&mut out, record::PARAMS, REQUEST_ID);
    w.push(&nv);
    w.finish();
    record::write_stream_end(&mut out, record::PARAMS, REQUEST_ID);
    c.params = out;
    Ok(())
}
