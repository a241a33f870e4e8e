//! sufcgi: per-owner persistent FastCGI workers, configured from `.htaccess`.
//!
//! `core` is server-agnostic (directive model, FastCGI codec, identity policy,
//! supervisor); it never touches a server's FFI. Each server's glue lives in its
//! own module with its raw bindings kept private inside it.

pub mod core;

#[cfg(feature = "apache")]
mod apache;

#[cfg(feature = "lighttpd")]
mod lighttpd;
