//! An authorizer's answer (`SuFcgiAuthorizer`; the verdict is
//! `core::authorizer`'s, as under Apache): 200 lets the request through —
//! its `Variable-NAME`s join the request's environment and lighttpd runs
//! the request again, which now goes to its handler (static file, app) —
//! anything else is the client's answer, as the app sent it.

use super::ctx::Ctx;
use crate::core::authorizer::{verdict, Captured, Verdict, MAX_CAPTURED_BODY};
use crate::lighttpd::server::Handled;

/// Act on the captured answer; nothing of the response was produced yet.
pub(super) fn judge(c: &mut Ctx, captured: Captured) -> Handled {
    let (v, refused) = verdict(captured.headers.as_ref(), &c.rt.host.blocked_env);
    for name in &refused {
        c.req.log(format!("sufcgi: authorizer: ignoring Variable-{} (not a name it may set)", String::from_utf8_lossy(name)).as_bytes());
    }
    match v {
        Verdict::Invalid(why) => c.refuse(500, None, &format!("authorizer: {why}")),
        Verdict::Allow(vars) => {
            for (k, val) in &vars {
                c.req.set_env(k, val);
            }
            // lighttpd's own bound on a request going round (mod_fastcgi's too).
            if c.req.count_loop() > 5 {
                return c.refuse(500, None, "authorizer: too many loops while processing the request");
            }
            c.authorized = true;
            // As mod_fastcgi's authorizers: the physical path is reset
            // too, so lighttpd maps the request afresh (an app tree is
            // claimed in handle_physical) and no handler is left.
            c.req.reset_response();
            Handled::COMEBACK
        }
        Verdict::Deny => {
            let Some(h) = captured.headers.as_ref() else { return c.refuse(500, None, "authorizer: no answer") };
            if captured.body_truncated {
                c.req.log(format!("sufcgi: authorizer: response body cut at {MAX_CAPTURED_BODY} bytes").as_bytes());
            }
            c.req.apply_cgi_headers(h);
            if !captured.body.is_empty() {
                c.req.append_body(&captured.body);
            }
            c.req.backend_done();
            Handled::FINISHED
        }
    }
}
