//! The status page's content, for every server glue: the pools the
//! supervisor reported, with the isolation in force and each owner's
//! figures, as HTML, JSON or Prometheus text (metrics.rs). Every string
//! from the pools (paths, user names) is escaped for where it lands.

use crate::core::supervisor::protocol::PoolState;
use crate::core::supervisor::protocol_customer::{Happened, PoolHistory};
use crate::core::supervisor::protocol_usage::{Isolation, OwnerUsage};
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

// The view is the renderers' shared input; the glue names it from here.
pub use crate::core::status_view::View;
use crate::core::status_view::{kind_name, lossy, path_text};

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

/// How the page is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Html,
    /// `?json`
    Json,
    /// `?metrics`, or `SetHandler sufcgi-metrics`: Prometheus text.
    Metrics,
}

/// The format a query string asks for (`json` or `metrics`, as a word or `name=…`).
pub fn format_of(args: &[u8]) -> Format {
    let has = |w: &[u8]| args.split(|&c| c == b'&').any(|p| p == w || (p.starts_with(w) && p.get(w.len()) == Some(&b'=')));
    if has(b"metrics") {
        Format::Metrics
    } else if has(b"json") {
        Format::Json
    } else {
        Format::Html
    }
}

/// The page: body and content type.
pub fn render(v: &View<'_>, format: Format) -> (Vec<u8>, &'static str) {
    match format {
        Format::Json => (render_json(v), "application/json"),
        Format::Html => (render_html(v), "text/html; charset=utf-8"),
        Format::Metrics => (crate::core::metrics::render(v), crate::core::metrics::CONTENT_TYPE),
    }
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

fn json_opt(v: Option<u64>) -> String {
    v.map_or_else(|| "null".to_string(), |n| n.to_string())
}

fn json_secs(usec: Option<u64>) -> String {
    usec.map_or_else(|| "null".to_string(), |u| format!("{:.6}", u as f64 / 1e6))
}

/// `2026-11-21 11:20:00 UTC` for a unix time (days to civil date: Howard
/// Hinnant's algorithm).
fn utc(t: u64) -> String {
    let days = (t / 86_400) as i64;
    let secs = t % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", secs / 3600, secs / 60 % 60, secs % 60)
}

fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn when(t: u64) -> String {
    let now = now_unix();
    if t <= now {
        format!("{} ({} s ago)", utc(t), now - t)
    } else {
        format!("{} (in {} s)", utc(t), t - now)
    }
}

fn happened_text(h: &Happened) -> String {
    if h.status > 0 {
        format!("{}: {} — {}", h.status, h.text, when(h.at))
    } else {
        format!("{} — {}", h.text, when(h.at))
    }
}

fn json_happened(h: &Option<Happened>) -> String {
    match h {
        None => "null".into(),
        Some(h) => format!("{{\"at\":{},\"status\":{},\"text\":{}}}", h.at, h.status, json_str(&h.text)),
    }
}

fn json_opt_str(s: &Option<String>) -> String {
    s.as_deref().map_or("null".into(), json_str)
}

/// A pool's history (protocol_customer): refusal, exit, stderr, back-off, log.
fn json_history(h: &PoolHistory) -> String {
    let lines: Vec<String> = h.stderr.iter().map(|l| json_str(l)).collect();
    format!(
        "\"last_refusal\":{},\"last_exit\":{},\"stderr\":[{}],\"backoff_until\":{},\"log\":{{\"file\":{},\"error\":{}}}",
        json_happened(&h.last_refusal),
        json_happened(&h.last_exit),
        lines.join(","),
        if h.backoff_until > 0 { h.backoff_until.to_string() } else { "null".into() },
        json_opt_str(&h.log_file),
        json_opt_str(&h.log_error),
    )
}

fn history_rows(h: &PoolHistory) -> Vec<(&'static str, String)> {
    let mut rows = Vec::new();
    if h.backoff_until > 0 {
        rows.push(("back-off until", when(h.backoff_until)));
    }
    if let Some(r) = &h.last_refusal {
        rows.push(("last refusal", happened_text(r)));
    }
    if let Some(e) = &h.last_exit {
        rows.push(("last exit", happened_text(e)));
    }
    match (&h.log_file, &h.log_error) {
        (Some(f), Some(e)) => rows.push(("SuFcgiLog", format!("{f} — {e}"))),
        (Some(f), None) => rows.push(("SuFcgiLog", f.clone())),
        _ => {}
    }
    rows
}

fn isolation_json(o: &mut String, i: &Isolation, customer: bool) {
    let ctrls: Vec<String> = i.controllers.iter().map(|c| json_str(c)).collect();
    let _ = write!(
        o,
        "\"isolation\":{{\"mode\":{},\"hierarchy\":{},\"controllers\":[{}],\"location\":{},\"note\":{},\"slices\":{}}}",
        json_str(i.mode.name()),
        json_str(&i.hierarchy),
        ctrls.join(","),
        json_str(if customer { "" } else { &i.location }),
        json_str(&i.note),
        json_str(&i.slices)
    );
}

fn owners_json(o: &mut String, owners: &[OwnerUsage]) {
    o.push_str("\"owners\":[");
    for (i, u) in owners.iter().enumerate() {
        let l = &u.limits;
        let _ = write!(
            o,
            "{}{{\"uid\":{},\"user\":{},\"in_cgroup\":{},\"limits\":{{\"cpu_weight\":{},\"cpu_max_percent\":{},\"max_processes\":{},\"memory_bytes\":{}}},\
             \"cpu_seconds\":{},\"cpu_throttled_seconds\":{},\"memory_bytes\":{},\"memory_peak_bytes\":{},\"processes\":{},\"oom_kills\":{}}}",
            if i > 0 { "," } else { "" },
            u.uid,
            json_str(&lossy(&u.user)),
            u.in_cgroup,
            l.cpu_weight,
            if l.cpu_max == 0 { "null".to_string() } else { l.cpu_max.to_string() },
            if l.max_processes == 0 { "null".to_string() } else { l.max_processes.to_string() },
            if l.memory == 0 { "null".to_string() } else { l.memory.to_string() },
            json_secs(u.cpu_usec),
            json_secs(u.throttled_usec),
            json_opt(u.memory),
            json_opt(u.memory_peak),
            json_opt(u.processes),
            json_opt(u.oom_kills),
        );
    }
    o.push(']');
}

fn render_json(v: &View<'_>) -> Vec<u8> {
    let mut o = String::new();
    let _ = write!(o, "{{\"view\":{},\"truncated\":{},", json_str(if v.customer { "owner" } else { "server" }), v.truncated);
    isolation_json(&mut o, v.isolation, v.customer);
    o.push(',');
    owners_json(&mut o, v.owners);
    o.push_str(",\"pools\":[");
    for (i, p) in v.pools.iter().enumerate() {
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
        let u = &p.usage;
        let _ = write!(
            o,
            "],\"cgroup\":{{\"cpu_seconds\":{},\"memory_bytes\":{},\"processes\":{},\"oom_kills\":{}}},{}}}",
            json_secs(u.cpu_usec),
            json_opt(u.memory),
            json_opt(u.processes),
            json_opt(u.oom_kills),
            json_history(&p.history)
        );
    }
    o.push_str("]}\n");
    o.into_bytes()
}

/// `1.5 s`, `—` when the hierarchy cannot tell.
fn secs_text(usec: Option<u64>) -> String {
    usec.map_or_else(|| "—".into(), |u| format!("{:.2} s", u as f64 / 1e6))
}

fn bytes_text(b: Option<u64>) -> String {
    b.map_or_else(|| "—".into(), mib)
}

fn count_text(n: Option<u64>) -> String {
    n.map_or_else(|| "—".into(), |n| n.to_string())
}

/// Which isolation is in force, in a sentence.
pub fn isolation_text(i: &Isolation) -> String {
    let mut s = match i.hierarchy.as_str() {
        "none" => "no cgroups: processes capped by RLIMIT_NPROC (SuFcgiOwnerMaxProcesses), memory by the supervisor's RSS watch, no CPU share".to_string(),
        h => format!("cgroup {h} ({}): CPU share, memory and processes held by the kernel per owner", i.controllers.join(", ")),
    };
    s.push_str(&format!("; SuFcgiCgroups {}", i.mode.name()));
    if !i.note.is_empty() {
        s.push_str(&format!(" ({})", i.note));
    }
    if !i.slices.is_empty() {
        s.push_str(&format!("; scheduler slices: {}", i.slices));
    }
    s
}

fn owners_html(o: &mut String, owners: &[OwnerUsage]) {
    if owners.is_empty() {
        return;
    }
    o.push_str(
        "<h2>owners</h2>\n<table><tr><th>owner</th><th>limits</th><th>CPU</th><th>throttled</th><th>memory</th>\
         <th>peak</th><th>processes</th><th>OOM kills</th></tr>\n",
    );
    for u in owners {
        let limits = u.limits.describe();
        let _ = writeln!(
            o,
            "<tr><td>{} (uid {}){}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            html(&lossy(&u.user)),
            u.uid,
            if u.in_cgroup { "" } else { " — no workers now" },
            html(&limits),
            html(&secs_text(u.cpu_usec)),
            html(&secs_text(u.throttled_usec)),
            html(&bytes_text(u.memory)),
            html(&bytes_text(u.memory_peak)),
            count_text(u.processes),
            count_text(u.oom_kills),
        );
    }
    o.push_str("</table>\n");
}

fn render_html(v: &View<'_>) -> Vec<u8> {
    let (pools, customer, truncated) = (v.pools, v.customer, v.truncated);
    let mut o = String::from(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>sufcgi status</title>\n\
         <style>body{font-family:sans-serif}table{border-collapse:collapse;margin-bottom:1em}\
         th,td{border:1px solid #ccc;padding:2px 6px;text-align:left}</style></head><body>\n<h1>sufcgi status</h1>\n",
    );
    let view = if customer { "the pools of this site's owner" } else { "every pool on this server" };
    let _ = writeln!(o, "<p>{} pool(s): {}.{}</p>", pools.len(), view, if truncated { " (list truncated)" } else { "" });
    let _ = writeln!(o, "<p>isolation: {}</p>", html(&isolation_text(v.isolation)));
    owners_html(&mut o, v.owners);
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
            ("CPU (cgroups)", secs_text(p.usage.cpu_usec)),
            ("memory now (cgroups)", bytes_text(p.usage.memory)),
            ("processes now (cgroups)", count_text(p.usage.processes)),
            ("OOM kills (cgroups)", count_text(p.usage.oom_kills)),
        ];
        // A refused pool never ran: who, where and why is all there is.
        let shown = if p.state == PoolState::Refused { 5 } else { rows.len() };
        for (k, v) in rows.into_iter().take(shown).chain(history_rows(&p.history)) {
            let _ = writeln!(o, "<tr><th>{}</th><td>{}</td></tr>", html(k), html(&v));
        }
        if !p.history.stderr.is_empty() {
            let lines: Vec<String> = p.history.stderr.iter().map(|l| html(l)).collect();
            let _ = writeln!(o, "<tr><th>stderr (last lines)</th><td><pre>{}</pre></td></tr>", lines.join("\n"));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::owner_limits::{CgroupMode, OwnerLimits};
    use crate::core::request::AppKind;
    use crate::core::supervisor::protocol::{PoolState, PoolStatus, StopCounts};
    use crate::core::supervisor::protocol_usage::PoolUsage;

    fn view_parts() -> (Vec<PoolStatus>, Vec<OwnerUsage>, Isolation) {
        let pool = PoolStatus {
            uid: 2001,
            gid: 2001,
            user: b"alice".to_vec(),
            vhost: "a.test:80".into(),
            kind: AppKind::App,
            program: "/home/a/www/app/app.py".into(),
            workdir: "/home/a/www/app".into(),
            state: PoolState::Active,
            max_workers: 4,
            waiting: 0,
            spawns: 1,
            requests: 3,
            rejected: 0,
            per_worker: 1,
            stopped: StopCounts::default(),
            workers: vec![],
            usage: PoolUsage { cpu_usec: Some(2_500_000), memory: Some(4096), processes: None, oom_kills: Some(0) },
            history: PoolHistory::default(),
        };
        let owner = OwnerUsage {
            uid: 2001,
            user: b"<al>".to_vec(),
            limits: OwnerLimits { cpu_weight: 100, cpu_max: 150, max_processes: 512, memory: 0 },
            in_cgroup: true,
            cpu_usec: Some(1),
            memory: None,
            ..Default::default()
        };
        let iso = Isolation {
            mode: CgroupMode::Required,
            hierarchy: "v1".into(),
            controllers: vec!["cpu".into(), "memory".into()],
            location: "/sys/fs/cgroup/cpu/sufcgi/x".into(),
            note: "no pids controller".into(),
            slices: "short".into(),
        };
        (vec![pool], vec![owner], iso)
    }

    #[test]
    fn json_carries_isolation_owners_and_pool_figures() {
        let (pools, owners, iso) = view_parts();
        let v = View { pools: &pools, owners: &owners, isolation: &iso, customer: false, truncated: false };
        let j = String::from_utf8(render(&v, Format::Json).0).unwrap();
        assert!(j.contains(r#""isolation":{"mode":"required","hierarchy":"v1","controllers":["cpu","memory"],"location":"/sys/fs/cgroup/cpu/sufcgi/x","note":"no pids controller","slices":"short"}"#), "{j}");
        assert!(j.contains(r#""owners":[{"uid":2001,"user":"\u003cal\u003e","in_cgroup":true,"limits":{"cpu_weight":100,"cpu_max_percent":150,"max_processes":512,"memory_bytes":null},"cpu_seconds":0.000001,"cpu_throttled_seconds":null,"memory_bytes":null"#), "{j}");
        assert!(j.contains(r#""cgroup":{"cpu_seconds":2.500000,"memory_bytes":4096,"processes":null,"oom_kills":0}"#), "{j}");
        // A customer's page does not say where the host's groups are.
        let c = View { customer: true, ..v };
        let j = String::from_utf8(render(&c, Format::Json).0).unwrap();
        assert!(j.contains(r#""view":"owner""#) && j.contains(r#""location":"""#), "{j}");
        let h = String::from_utf8(render(&v, Format::Html).0).unwrap();
        assert!(h.contains("&lt;al&gt; (uid 2001)") && !h.contains("<al>"), "escaped owner name");
        assert!(h.contains("isolation: cgroup v1 (cpu, memory)") && h.contains("SuFcgiCgroups required (no pids controller); scheduler slices: short"), "{h}");
        assert!(h.contains("<td>2.50 s</td>") || h.contains("2.50 s"), "pool CPU: {h}");
        assert_eq!(render(&v, Format::Metrics).1, crate::core::metrics::CONTENT_TYPE);
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13:20 UTC");
    }

    #[test]
    fn history_shows_escaped_on_both_pages() {
        let (mut pools, owners, iso) = view_parts();
        let p = &mut pools[0];
        p.state = PoolState::Refused;
        p.history = PoolHistory {
            last_refusal: Some(Happened { at: 1_700_000_000, status: 403, text: "up/x.php is <writable>".into() }),
            stderr: vec!["PHP Warning: \"x\"".into()],
            log_file: Some("/home/a/logs/app.log".into()),
            ..PoolHistory::default()
        };
        let v = View { pools: &pools, owners: &owners, isolation: &iso, customer: true, truncated: false };
        let h = String::from_utf8(render(&v, Format::Html).0).unwrap();
        assert!(h.contains("<th>last refusal</th><td>403: up/x.php is &lt;writable&gt; — 2023-11-14 22:13:20 UTC ("), "{h}");
        assert!(h.contains("<pre>PHP Warning: &quot;x&quot;</pre>"), "{h}");
        assert!(!h.contains("max workers"), "a refused pool shows no counters");
        let j = String::from_utf8(render(&v, Format::Json).0).unwrap();
        assert!(j.contains(r#""state":"refused""#), "{j}");
        assert!(j.contains(r#""last_refusal":{"at":1700000000,"status":403,"text":"up/x.php is \u003cwritable\u003e"}"#), "{j}");
        assert!(j.contains(r#""backoff_until":null,"log":{"file":"/home/a/logs/app.log","error":null}}"#), "{j}");
    }

    #[test]
    fn formats_from_the_query() {
        assert_eq!(format_of(b""), Format::Html);
        assert_eq!(format_of(b"json"), Format::Json);
        assert_eq!(format_of(b"x=1&json=1"), Format::Json);
        assert_eq!(format_of(b"metrics"), Format::Metrics);
        assert_eq!(format_of(b"json&metrics"), Format::Metrics);
        assert_eq!(format_of(b"jsonp"), Format::Html);
        assert_eq!(format_of(b"metricsx=1"), Format::Html);
    }
}
