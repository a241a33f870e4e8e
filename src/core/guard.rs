//! The one guard every `extern "C"` entry point goes through: a panic in Rust
//! must never unwind into the server. It is caught, logged, and turned into an
//! error status.

use std::panic::{catch_unwind, AssertUnwindSafe};

fn panic_text(e: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = e.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = e.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// Run `f`; on panic log `what` with the panic text through `log` and return `on_panic`.
pub fn guard<T>(what: &str, on_panic: T, log: impl FnOnce(&str), f: impl FnOnce() -> T) -> T {
    // AssertUnwindSafe: after a panic we only log and return an error status;
    // nothing that `f` may have left half-updated is touched again here.
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(e) => {
            log(&format!("sufcgi: internal error in {what}: {}", panic_text(e.as_ref())));
            on_panic
        }
    }
}
