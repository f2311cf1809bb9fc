//! distcache-rs: a drop-in Rust re-implementation of distcache.
//!
//! The crate is a safe Rust core with a thin C ABI skin:
//! - [`nal`]: addresses, buffers, connections, listeners, selectors (libnal);
//! - [`proto`]: the distcache wire format and message framing (pure code);
//! - [`plug`]: DC_PLUG, whole messages over a NAL connection's buffers;
//! - [`client`]: the blocking DC_CTX client logic;
//! - [`server`]: the session cache and request handling (DC_SERVER, dc_server);
//! - [`capi`]: every `extern "C"` function, grouped like the C headers.
//!
//! The cdylib built from this crate is installed as `libnal.so.1` and holds
//! every exported symbol; `libdistcache.so.1` and `libdistcacheserver.so.1`
//! are ELF filter libraries that export their own symbols and let the dynamic
//! linker resolve them in `libnal.so.1` (see the Makefile).

#![deny(unsafe_op_in_unsafe_fn)]

pub mod capi;
pub mod client;
pub mod evloop;
pub mod nal;
pub mod plug;
pub mod proto;
pub mod server;
pub mod sysdb;
pub mod tools;
pub mod util;
