//! Apache httpd 2.4 glue. Only this directory sees the raw bindings (`ffi`);
//! only the thin safe layer over them touches raw pointers: `req` (the
//! request and its tables), `pool`, `server` (server records, the
//! configuration tree, the process record), `cmd` (directives), `log`,
//! `module_index`, and the entry points httpd calls (`entry`, `module`).
//! Everything else — the handler, relay, authorizer, status page, start-up
//! hooks, directive handlers — is safe Rust over that layer.

mod authorizer;
mod cmd;
mod config;
mod entry;
mod ffi;
mod handler;
mod hooks;
mod log;
mod module;
mod module_index;
mod observe;
mod pool;
mod pool_request;
mod relay;
mod req;
mod request_file;
mod runtime;
mod server;
mod server_conf;
mod status;
mod watchdog;
