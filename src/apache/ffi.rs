//! Raw bindgen output over the installed httpd/APR headers. Private to the
//! Apache glue: only `src/apache/*` may use it, through the safe layer.
#![allow(non_upper_case_globals, non_camel_case_types, non_snake_case, dead_code, clippy::all)]
#![allow(improper_ctypes, unnecessary_transmutes, unsafe_op_in_unsafe_fn)]
#![allow(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

include!(concat!(env!("OUT_DIR"), "/apache_ffi.rs"));
