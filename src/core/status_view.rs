//! What one status page shows, whatever its format: the supervisor's answer
//! as a `View`, and the names and text both renderers (status_page.rs for
//! HTML and JSON, metrics.rs for Prometheus) put on it. Apart, so that the
//! two renderers depend on it and not on each other.

use crate::core::request::AppKind;
use crate::core::supervisor::protocol::{PoolStatus, StatusReply};
use crate::core::supervisor::protocol_usage::{Isolation, OwnerUsage};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// What the supervisor answered, for one page.
pub struct View<'a> {
    pub pools: &'a [PoolStatus],
    pub owners: &'a [OwnerUsage],
    pub isolation: &'a Isolation,
    /// One owner's page (says so; the host's paths are left out).
    pub customer: bool,
    /// More pools or owners exist than were sent.
    pub truncated: bool,
}

impl<'a> View<'a> {
    /// The view of a `StatusReply::Pools` (None for a refusal).
    pub fn of(reply: &'a StatusReply, customer: bool) -> Option<View<'a>> {
        match reply {
            StatusReply::Pools { pools, truncated, isolation, owners } => {
                Some(View { pools, owners, isolation, customer, truncated: *truncated })
            }
            StatusReply::Refused { .. } => None,
        }
    }
}

pub(crate) fn kind_name(k: AppKind) -> &'static str {
    match k {
        AppKind::App => "app",
        AppKind::Wrapper => "wrapper",
        AppKind::Script => "script",
        AppKind::Authorizer => "authorizer",
    }
}

pub(crate) fn lossy(b: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(b)
}

pub(crate) fn path_text(p: &Path) -> std::borrow::Cow<'_, str> {
    lossy(p.as_os_str().as_bytes())
}
