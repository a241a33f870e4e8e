//! How a request URL maps onto an app mounted at a directory: SCRIPT_NAME is
//! the directory's URL path and PATH_INFO the rest, as WSGI/PSGI/Rack expect.

/// `uri`: the decoded request path (Apache's `r->uri`). `fs_path`: the
/// filesystem path the URL resolved to, including any trailing path info.
/// `app_dir`: the directory the app is mounted on.
///
/// Returns (SCRIPT_NAME, PATH_INFO), or None when `fs_path` is not inside
/// `app_dir` (an Alias or rewrite moved it elsewhere; the caller falls back).
pub fn split_mount(uri: &[u8], fs_path: &[u8], app_dir: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let dir = trim_trailing_slashes(app_dir);
    let rest = fs_path.strip_prefix(dir)?;
    // Whole components only: /home/a/www2 is not inside /home/a/www.
    if !(rest.is_empty() || rest.starts_with(b"/")) {
        return None;
    }
    // PATH_INFO is the URL's own tail of the same length, so the customer's
    // URL spelling (not the filesystem's) is what the app sees.
    if rest.len() > uri.len() {
        return None;
    }
    let split = uri.len() - rest.len();
    let (script, tail) = uri.split_at(split);
    if tail != rest {
        return None;
    }
    let script = trim_trailing_slashes(script);
    Some((script.to_vec(), tail.to_vec()))
}

fn trim_trailing_slashes(p: &[u8]) -> &[u8] {
    let mut end = p.len();
    while end > 0 && p[end - 1] == b'/' {
        end -= 1;
    }
    &p[..end]
}

#[cfg(test)]
mod tests {
    use super::split_mount;

    fn s(uri: &str, fs: &str, dir: &str) -> Option<(String, String)> {
        split_mount(uri.as_bytes(), fs.as_bytes(), dir.as_bytes())
            .map(|(a, b)| (String::from_utf8(a).unwrap(), String::from_utf8(b).unwrap()))
    }

    #[test]
    fn mounts_at_directory() {
        assert_eq!(s("/app/hello/x", "/srv/www/app/hello/x", "/srv/www/app/"), Some(("/app".into(), "/hello/x".into())));
        assert_eq!(s("/app/", "/srv/www/app/", "/srv/www/app/"), Some(("/app".into(), "/".into())));
        assert_eq!(s("/app", "/srv/www/app", "/srv/www/app/"), Some(("/app".into(), "".into())));
        assert_eq!(s("/", "/srv/www/", "/srv/www/"), Some(("".into(), "/".into())));
    }

    #[test]
    fn whole_components_only() {
        assert_eq!(s("/app2/x", "/srv/www/app2/x", "/srv/www/app"), None);
    }

    #[test]
    fn alias_mismatch_is_none() {
        assert_eq!(s("/a/x", "/srv/www/app/y", "/srv/www/app"), None);
    }
}
