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
mod relay;
mod relay_shared;
mod runtime;
mod status;
mod watchdog;
