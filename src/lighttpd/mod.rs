//! lighttpd 1.4 glue: the plugin record, the `.htaccess` reader lighttpd
//! lacks, request routing, and a non-blocking relay on lighttpd's event loop.
//! Only this directory sees the raw bindings (`ffi`).

mod dirconf;
mod exchange;
mod shared_conn;
mod status;
mod ffi;
mod log;
mod observe;
mod plugin;
mod request_file;
mod route;
mod runtime;
mod settings;
mod waiters;
