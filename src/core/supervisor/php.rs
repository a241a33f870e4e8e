//! php-cgi exits by itself after PHP_FCGI_MAX_REQUESTS requests (500 unless
//! set). An exit the supervisor did not ask for races with the next request
//! claiming that worker, so recycling is taken over: the worker gets
//! PHP_FCGI_MAX_REQUESTS=0 and the customer's value (or php's default)
//! becomes the pool's SuFcgiMaxRequests, which retires a worker only once its
//! last request is done.

use crate::core::limits::Limits;
use std::path::Path;

const VAR: &[u8] = b"PHP_FCGI_MAX_REQUESTS";
/// php-cgi's own default.
const PHP_DEFAULT: u32 = 500;

fn is_php(program: &Path) -> bool {
    program.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("php"))
}

/// The environment and limits a pool's workers really get.
/// Environment pairs as the supervisor passes them to a worker.
pub type Env = Vec<(Vec<u8>, Vec<u8>)>;

pub fn take_over_recycling(program: &Path, env: &[(Vec<u8>, Vec<u8>)], limits: Limits) -> (Env, Limits) {
    let asked = env.iter().find(|(k, _)| k == VAR).map(|(_, v)| v.clone());
    if !is_php(program) && asked.is_none() {
        return (env.to_vec(), limits);
    }
    let php_limit = match &asked {
        Some(v) => std::str::from_utf8(v).ok().and_then(|s| s.trim().parse::<u32>().ok()).unwrap_or(PHP_DEFAULT),
        None => PHP_DEFAULT,
    };
    let mut l = limits;
    if php_limit > 0 {
        l.max_requests = if l.max_requests == 0 { php_limit } else { l.max_requests.min(php_limit) };
    }
    let mut e: Vec<(Vec<u8>, Vec<u8>)> = env.iter().filter(|(k, _)| k != VAR).cloned().collect();
    e.push((VAR.to_vec(), b"0".to_vec()));
    (e, l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn php_default_becomes_max_requests() {
        let (env, l) = take_over_recycling(Path::new("/usr/bin/php-cgi8.2"), &[], Limits::DEFAULT);
        assert_eq!(l.max_requests, 500);
        assert_eq!(env, vec![(VAR.to_vec(), b"0".to_vec())]);
    }

    #[test]
    fn customer_value_and_own_limit_take_the_smaller() {
        let env = vec![(VAR.to_vec(), b"5".to_vec()), (b"A".to_vec(), b"1".to_vec())];
        let (e, l) = take_over_recycling(Path::new("/usr/bin/php-cgi"), &env, Limits { max_requests: 3, ..Limits::DEFAULT });
        assert_eq!(l.max_requests, 3);
        assert_eq!(e, vec![(b"A".to_vec(), b"1".to_vec()), (VAR.to_vec(), b"0".to_vec())]);
        let (_, l) = take_over_recycling(Path::new("/usr/bin/php-cgi"), &env, Limits::DEFAULT);
        assert_eq!(l.max_requests, 5);
        let zero = vec![(VAR.to_vec(), b"0".to_vec())];
        let (_, l) = take_over_recycling(Path::new("/usr/bin/php-cgi"), &zero, Limits::DEFAULT);
        assert_eq!(l.max_requests, 0, "0 means unlimited for php too");
    }

    #[test]
    fn other_programs_are_untouched() {
        let env = vec![(b"A".to_vec(), b"1".to_vec())];
        let (e, l) = take_over_recycling(Path::new("/home/a/app.py"), &env, Limits::DEFAULT);
        assert_eq!((e, l), (env, Limits::DEFAULT));
    }
}
