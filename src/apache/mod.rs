//! Apache httpd 2.4 glue: module record, directives, hooks, handler, relay.
//! Only this directory sees the raw bindings (`ffi`).

mod apr;
mod authorizer;
mod config;
mod ffi;
mod pool_request;
mod handler;
mod hooks;
mod log;
mod module;
mod observe;
mod relay;
mod relay_shared;
mod request_file;
mod runtime;
mod status;
mod watchdog;
