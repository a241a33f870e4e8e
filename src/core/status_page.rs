//! The status page's content, for every server glue: the pools the
//! supervisor reported, as HTML or JSON. Every string from the pools
//! (paths, user names) is escaped for where it lands.

use crate::core::request::AppKind;
use crate::core::supervisor::protocol::PoolStatus;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The directory a customer's status page lives in: the request's
/// directory, or the one containing the file it names.
pub fn request_dir(filename: &[u8], is_dir: bool) -> PathBuf {
    let mut f = filename;
    while f.len() > 1 && f.ends_with(b"/") {
        f = &f[..f.len() - 1];
    }
    let p = Path::new(OsStr::from_bytes(f));
    if is_dir {
        p.to_path_buf()
    } else {
        p.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"))
    }
}

pub fn wants_json(args: &[u8]) -> bool {
    args.split(|&c| c == b'&').any(|p| p == b"json" || p.starts_with(b"json="))
}

/// The page: body and content type. `customer`: one owner's pools (says
/// so on the page); `truncated`: more pools exist than were sent.
pub fn render(pools: &[PoolStatus], customer: bool, truncated: bool, json: bool) -> (Vec<u8>, &'static str) {
    if json {
        (render_json(pools, customer, truncated), "application/json")
    } else {
        (render_html(pools, customer, truncated), "text/html; charset=utf-8")
    }
}

fn kind_name(k: AppKind) -> &'static str {
    match k {
        AppKind::App => "app",
        AppKind::Wrapper => "wrapper",
        AppKind::Script => "script",
        AppKind::Authorizer => "authorizer",
    }
}

fn lossy(b: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(b)
}

fn path_text(p: &Path) -> std::borrow::Cow<'_, str> {
    lossy(p.as_os_str().as_bytes())
}

/// Text for HTML element content and quoted attribute values.
fn html(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// A JSON string literal. `<`, `>` and `&` are escaped too, so the output
/// can never be mistaken for markup if a browser sniffs it.
fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// 0: the app was not asked yet (it has not served a request).
fn per_worker_text(n: u32) -> String {
    match n {
        0 => "1 (not asked yet whether the app multiplexes)".into(),
        1 => "1".into(),
        n => format!("{n} (the app multiplexes: they share a connection)"),
    }
}

fn render_json(pools: &[PoolStatus], customer: bool, truncated: bool) -> Vec<u8> {
    let mut o = String::new();
    let _ = write!(o, "{{\"view\":{},\"truncated\":{},\"pools\":[", json_str(if customer { "owner" } else { "server" }), truncated);
    for (i, p) in pools.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        let _ = write!(
            o,
            "{{\"uid\":{},\"gid\":{},\"user\":{},\"vhost\":{},\"kind\":{},\"program\":{},\"directory\":{},\"state\":{},\
             \"max_workers\":{},\"waiting\":{},\"requests\":{},\"spawns\":{},\"rejected\":{},\"requests_per_worker\":{},\"stopped\":{{",
            p.uid,
            p.gid,
            json_str(&lossy(&p.user)),
            json_str(&p.vhost),
            json_str(kind_name(p.kind)),
            json_str(&path_text(&p.program)),
            json_str(&path_text(&p.workdir)),
            json_str(p.state.name()),
            p.max_workers,
            p.waiting,
            p.requests,
            p.spawns,
            p.rejected,
            p.per_worker,
        );
        for (k, (name, n)) in p.stopped.named().iter().enumerate() {
            let _ = write!(o, "{}{}:{}", if k > 0 { "," } else { "" }, json_str(name), n);
        }
        o.push_str("},\"workers\":[");
        for (k, w) in p.workers.iter().enumerate() {
            let _ = write!(
                o,
                "{}{{\"pid\":{},\"state\":{},\"requests\":{},\"rss_bytes\":{},\"age_seconds\":{}}}",
                if k > 0 { "," } else { "" },
                w.pid,
                json_str(w.state.name()),
                w.requests,
                w.rss,
                w.age_secs
            );
        }
        o.push_str("]}");
    }
    o.push_str("]}\n");
    o.into_bytes()
}

fn render_html(pools: &[PoolStatus], customer: bool, truncated: bool) -> Vec<u8> {
    let mut o = String::from(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>sufcgi status</title>\n\
         <style>body{font-family:sans-serif}table{border-collapse:collapse;margin-bottom:1em}\
         th,td{border:1px solid #ccc;padding:2px 6px;text-align:left}</style></head><body>\n<h1>sufcgi status</h1>\n",
    );
    let view = if customer { "the pools of this site's owner" } else { "every pool on this server" };
    let _ = writeln!(o, "<p>{} pool(s): {}.{}</p>", pools.len(), view, if truncated { " (list truncated)" } else { "" });
    for p in pools {
        let _ = writeln!(o, "<h2>{}</h2>\n<table>", html(&path_text(&p.program)));
        let stopped: Vec<String> = p.stopped.named().iter().map(|(k, n)| format!("{k} {n}")).collect();
        let rows = [
            ("owner", format!("{} (uid {}, gid {})", lossy(&p.user), p.uid, p.gid)),
            ("vhost", p.vhost.clone()),
            ("kind", kind_name(p.kind).to_string()),
            ("directory", path_text(&p.workdir).into_owned()),
            ("state", p.state.name().to_string()),
            ("max workers", p.max_workers.to_string()),
            ("waiting", p.waiting.to_string()),
            ("requests", p.requests.to_string()),
            ("spawns", p.spawns.to_string()),
            ("rejected (503)", p.rejected.to_string()),
            ("requests per worker", per_worker_text(p.per_worker)),
            ("stopped", stopped.join(", ")),
        ];
        for (k, v) in rows {
            let _ = writeln!(o, "<tr><th>{}</th><td>{}</td></tr>", html(k), html(&v));
        }
        o.push_str("</table>\n<table><tr><th>pid</th><th>state</th><th>requests</th><th>RSS</th><th>age</th></tr>\n");
        for w in &p.workers {
            let _ = writeln!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} s</td></tr>",
                w.pid,
                html(w.state.name()),
                w.requests,
                html(&mib(w.rss)),
                w.age_secs
            );
        }
        o.push_str("</table>\n");
    }
    o.push_str("</body></html>\n");
    o.into_bytes()
}
