//! Apache httpd 2.4 glue: module record, directives, hooks, handler, relay.
//! Only this directory sees the raw bindings (`ffi`).

mod apr;
mod config;
mod dispatch;
mod ffi;
mod guard;
mod handler;
mod hooks;
mod link;
mod log;
mod module;
mod relay;
mod runtime;
mod watchdog;
