//! The bodies of the error answers sufcgi itself gives (403, 500, 502, 503,
//! 504): one sentence saying what kind of problem it is, and where the site
//! owner finds the details — their `SuFcgiLog` and their status page. Never
//! a path, a reason or a line of stderr: those are for the owner, and the
//! visitor may be anyone. A host's own `ErrorDocument` wins (the glue checks).

/// What kind of problem a status is, in one sentence for a visitor.
pub fn sentence(status: u16) -> Option<&'static str> {
    Some(match status {
        403 => "This site's application is not allowed to run: a file or directory of it has the wrong owner or permissions.",
        500 => "This site's application could not be started because of a problem in its configuration.",
        502 => "This site's application failed while answering: it stopped, or sent something that is not a valid answer.",
        503 => "This site's application is busy or restarting; please try again in a moment.",
        504 => "This site's application took too long to answer.",
        _ => return None,
    })
}

fn title(status: u16) -> &'static str {
    match status {
        403 => "Forbidden",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

/// A complete HTML page for `status` (ASCII only: Apache sends custom
/// error text as ISO-8859-1).
pub fn page(status: u16) -> Option<String> {
    let s = sentence(status)?;
    Some(format!(
        "<!DOCTYPE html>\n<html><head><title>{status} {t}</title></head>\n<body><h1>{t}</h1>\n<p>{s}</p>\n\
         <p>If this is your site: the reason is in your SuFcgiLog file and on your sufcgi status page \
         (see your host's documentation).</p>\n</body></html>\n",
        t = title(status)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_say_what_and_where_and_nothing_else() {
        for s in [403, 500, 502, 503, 504] {
            let p = page(s).unwrap();
            assert!(p.is_ascii(), "{s}");
            assert!(p.contains("SuFcgiLog") && p.contains("status page"), "{s}");
            assert!(!p.contains("/home") && !p.contains("uid") && !p.contains("stderr"), "{s}");
        }
        assert!(page(404).is_none());
    }
}
