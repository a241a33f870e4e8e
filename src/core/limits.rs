//! A pool's lifecycle limits: what the customer asks for in `.htaccess`,
//! clamped to the host's ceilings. Zero means "off" where the directive says so.

/// Workers one pool can ever have: the scoreboard reserves this many entries.
pub const MAX_POOL_WORKERS: u32 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limits {
    /// `SuFcgiMaxWorkers`: at most this many worker processes.
    pub max_workers: u32,
    /// `SuFcgiMinWorkers`: kept warm even when idle.
    pub min_workers: u32,
    /// `SuFcgiIdleTimeout`: seconds an idle worker above the minimum lives.
    pub idle_timeout: u32,
    /// `SuFcgiMaxRequests`: a worker is recycled after this many (0 = never).
    pub max_requests: u32,
    /// `SuFcgiQueueLimit`: requests that may wait for a busy pool.
    pub queue_limit: u32,
    /// `SuFcgiQueueTimeout`: seconds a request may wait for a worker.
    pub queue_timeout: u32,
    /// `SuFcgiRequestTimeout`: seconds a request may run (0 = only the I/O timeout).
    pub request_timeout: u32,
    /// `SuFcgiMemoryLimit`: bytes of resident memory per worker (0 = no limit).
    pub memory_limit: u64,
    /// `SuFcgiSlowLog`: seconds after which a running request gets an entry
    /// in the customer's log (0 = off). Not a limit on the app: a threshold.
    pub slow_log: u32,
    /// `SuFcgiXSendfile`: the server sends the file an `X-Sendfile` response
    /// header names (confined to the owner's files, see `core::sendfile`).
    pub x_sendfile: bool,
}

impl Limits {
    /// What a pool gets with nothing configured.
    pub const DEFAULT: Limits = Limits {
        max_workers: 4,
        min_workers: 0,
        idle_timeout: 300,
        max_requests: 0,
        queue_limit: 100,
        queue_timeout: 60,
        request_timeout: 0,
        memory_limit: 0,
        slow_log: 0,
        x_sendfile: false,
    };

    /// The host's default ceilings: generous, but bounded.
    pub const DEFAULT_CEILINGS: Limits = Limits {
        max_workers: 16,
        min_workers: 4,
        idle_timeout: 3600,
        max_requests: 0,
        queue_limit: 1000,
        queue_timeout: 300,
        request_timeout: 3600,
        memory_limit: 4 << 30,
        slow_log: 3600,
        x_sendfile: true,
    };

    /// Clamp every field to `ceil`. A customer's "0 = off" for
    /// `request_timeout` and `memory_limit` becomes the ceiling when the host
    /// set one: a customer cannot switch a host limit off.
    pub fn clamp(&self, ceil: &Limits) -> Limits {
        let off_to_ceiling = |v: u64, c: u64| if v == 0 || (c != 0 && v > c) { c } else { v };
        let max_workers = self.max_workers.clamp(1, ceil.max_workers.clamp(1, MAX_POOL_WORKERS));
        Limits {
            max_workers,
            min_workers: self.min_workers.min(ceil.min_workers).min(max_workers),
            idle_timeout: self.idle_timeout.clamp(1, ceil.idle_timeout.max(1)),
            max_requests: if ceil.max_requests == 0 { self.max_requests } else { off_to_ceiling(self.max_requests as u64, ceil.max_requests as u64) as u32 },
            queue_limit: self.queue_limit.min(ceil.queue_limit),
            queue_timeout: self.queue_timeout.min(ceil.queue_timeout),
            request_timeout: off_to_ceiling(self.request_timeout as u64, ceil.request_timeout as u64) as u32,
            memory_limit: off_to_ceiling(self.memory_limit, ceil.memory_limit),
            // "Off" stays off (it is the customer's log); a host ceiling of 0
            // turns the slow log off for everyone.
            slow_log: if ceil.slow_log == 0 { 0 } else { self.slow_log.min(ceil.slow_log) },
            x_sendfile: self.x_sendfile && ceil.x_sendfile,
        }
    }
}

/// Parse a size such as `512M`, `1G`, `65536`, `64k` (binary units).
pub fn parse_size(v: &[u8]) -> Result<u64, String> {
    let s = std::str::from_utf8(v).map_err(|_| "not a size".to_string())?.trim();
    let (num, mult) = match s.chars().last() {
        Some('k' | 'K') => (&s[..s.len() - 1], 1u64 << 10),
        Some('m' | 'M') => (&s[..s.len() - 1], 1u64 << 20),
        Some('g' | 'G') => (&s[..s.len() - 1], 1u64 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("'{s}' is not a size such as 512M or 1G"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamps_to_ceilings() {
        let ceil = Limits { max_workers: 8, min_workers: 2, memory_limit: 1 << 30, request_timeout: 120, ..Limits::DEFAULT_CEILINGS };
        let asked = Limits { max_workers: 50, min_workers: 5, memory_limit: 0, request_timeout: 0, ..Limits::DEFAULT };
        let got = asked.clamp(&ceil);
        assert_eq!(got.max_workers, 8);
        assert_eq!(got.min_workers, 2);
        assert_eq!(got.memory_limit, 1 << 30, "0 (off) cannot switch off a host limit");
        assert_eq!(got.request_timeout, 120);
        let small = Limits { memory_limit: 64 << 20, request_timeout: 5, ..asked }.clamp(&ceil);
        assert_eq!(small.memory_limit, 64 << 20);
        assert_eq!(small.request_timeout, 5);
    }

    #[test]
    fn slow_log_and_x_sendfile_follow_the_host() {
        let asked = Limits { slow_log: 5000, x_sendfile: true, ..Limits::DEFAULT };
        let got = asked.clamp(&Limits::DEFAULT_CEILINGS);
        assert_eq!((got.slow_log, got.x_sendfile), (3600, true));
        assert_eq!(Limits { slow_log: 5, ..asked }.clamp(&Limits::DEFAULT_CEILINGS).slow_log, 5);
        assert_eq!(Limits::DEFAULT.clamp(&Limits::DEFAULT_CEILINGS).slow_log, 0, "off stays off");
        let strict = Limits { slow_log: 0, x_sendfile: false, ..Limits::DEFAULT_CEILINGS };
        let got = asked.clamp(&strict);
        assert_eq!((got.slow_log, got.x_sendfile), (0, false), "the host can forbid both");
    }

    #[test]
    fn min_never_above_max_and_max_in_scoreboard() {
        let got = Limits { max_workers: 2, min_workers: 3, ..Limits::DEFAULT }.clamp(&Limits::DEFAULT_CEILINGS);
        assert_eq!((got.max_workers, got.min_workers), (2, 2));
        let huge = Limits { max_workers: 1000, ..Limits::DEFAULT }.clamp(&Limits { max_workers: 1000, ..Limits::DEFAULT_CEILINGS });
        assert_eq!(huge.max_workers, MAX_POOL_WORKERS);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size(b"512M").unwrap(), 512 << 20);
        assert_eq!(parse_size(b"1g").unwrap(), 1 << 30);
        assert_eq!(parse_size(b"64k").unwrap(), 64 << 10);
        assert_eq!(parse_size(b"1000").unwrap(), 1000);
        assert!(parse_size(b"lots").is_err());
        assert!(parse_size(b"99999999999999999999G").is_err());
        assert!(parse_size(b"-1M").is_err());
    }
}
