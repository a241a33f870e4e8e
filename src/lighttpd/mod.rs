//! lighttpd 1.4 glue: the plugin record, the `.htaccess` reader lighttpd
//! lacks, request routing, and a non-blocking relay on lighttpd's event loop.
//! Only this directory sees the raw bindings (`ffi`); the thin safe layer
//! over them is `server.rs` (server, plugin, configuration), `req.rs` (the
//! request and its connection) and `fdevent.rs` (lighttpd's event loop).

mod dirconf;
mod exchange;
mod fdevent;
mod ffi;
mod observe;
mod plugin;
mod req;
mod request_file;
mod route;
mod runtime;
mod server;
mod settings;
mod shared_conn;
mod status;
mod waiters;
