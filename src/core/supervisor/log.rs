//! Supervisor log lines, written to stderr (the server's error log) in
//! Apache's error-log format:
//! `[Sat Nov 21 11:20:00.123456 2026] [sufcgi:error] [pid 123] message`.
//! Each line is one `write(2)` so lines from several processes don't interleave.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Error,
    Warn,
    Notice,
    Info,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Notice => "notice",
            Level::Info => "info",
        }
    }
}

const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// The bracketed local timestamp, e.g. `Sat Nov 21 11:20:00.123456 2026`.
pub fn timestamp() -> String {
    // SAFETY: clock_gettime/localtime_r write into local structs we own.
    let (tm, usec) = unsafe {
        let mut ts: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts);
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&ts.tv_sec, &mut tm).is_null() {
            return String::from("Thu Jan 01 00:00:00.000000 1970");
        }
        (tm, ts.tv_nsec / 1000)
    };
    format!(
        "{} {} {:02} {:02}:{:02}:{:02}.{:06} {}",
        DAYS.get(tm.tm_wday as usize).unwrap_or(&"???"),
        MONTHS.get(tm.tm_mon as usize).unwrap_or(&"???"),
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        usec,
        tm.tm_year as i64 + 1900
    )
}

pub fn format_line(level: Level, pid: i32, msg: fmt::Arguments<'_>) -> String {
    let mut s = format!("[{}] [sufcgi:{}] [pid {}] {}", timestamp(), level.as_str(), pid, msg);
    // One record per line: neutralize embedded newlines from paths or reasons.
    s = s.replace(['\n', '\r'], "\\n");
    s.push('\n');
    s
}

pub fn log(level: Level, msg: fmt::Arguments<'_>) {
    let line = format_line(level, crate::core::sys::getpid(), msg);
    let _ = crate::core::sys::write_all_fd(2, line.as_bytes());
}

macro_rules! log_error { ($($t:tt)*) => { $crate::core::supervisor::log::log($crate::core::supervisor::log::Level::Error, format_args!($($t)*)) } }
macro_rules! log_warn { ($($t:tt)*) => { $crate::core::supervisor::log::log($crate::core::supervisor::log::Level::Warn, format_args!($($t)*)) } }
macro_rules! log_notice { ($($t:tt)*) => { $crate::core::supervisor::log::log($crate::core::supervisor::log::Level::Notice, format_args!($($t)*)) } }
pub(crate) use {log_error, log_notice, log_warn};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_format() {
        let l = format_line(Level::Error, 123, format_args!("worker {} died\nagain", 5));
        // [Www Mmm dd hh:mm:ss.uuuuuu yyyy] [sufcgi:error] [pid 123] msg
        assert!(l.starts_with('['));
        let close = l.find(']').unwrap();
        let ts = &l[1..close];
        assert_eq!(ts.len(), "Sat Nov 21 11:20:00.123456 2026".len(), "{ts}");
        assert_eq!(&ts[19..20], ".");
        assert!(l[close..].starts_with("] [sufcgi:error] [pid 123] worker 5 died\\nagain\n"), "{l}");
        assert_eq!(l.matches('\n').count(), 1);
    }
}
