//! The server-agnostic core. Nothing here may use a server's FFI.

pub mod authorizer;
pub mod dispatch;
pub mod directives;
pub mod fastcgi;
pub mod guard;
pub mod hostconfig;
pub mod htaccess;
pub mod htaccess_file;
pub mod identity;
pub mod limits;
pub mod mapping;
pub mod mux;
pub mod metrics;
pub mod mux_conn;
pub mod owner_limits;
pub mod parking;
pub mod php_ini;
pub mod pool_link;
pub mod request;
pub mod scoreboard;
pub mod status_page;
pub mod supervisor;
pub mod sys;
