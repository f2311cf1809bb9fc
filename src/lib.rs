//! distcache-rs: a drop-in Rust re-implementation of distcache.
//!
//! This crate is the C libraries' code only (a safe Rust core with a thin
//! C ABI skin); the daemons are the workspace member `daemons/`
//! (distcache-tools), so nothing they use is linked into the C libraries.
//!
//! Layers, bottom up:
//! - [`proto`]: the distcache wire format and message framing (pure code);
//! - [`transport`]: the byte stream under every connection (the
//!   `Transport` trait and its UNIX/TCP `Stream`), the one connector
//!   (non-blocking connect, connect by a deadline) and the one check of a
//!   UNIX socket path before listening on it;
//! - [`nal`]: addresses, buffers, connections, listeners, selectors (libnal;
//!   readiness is poll/ppoll, never epoll, since the library lives across
//!   fork() inside Apache);
//! - [`plug`]: DC_PLUG, whole messages over a NAL connection's buffers;
//! - [`client`]: the blocking DC_CTX client logic (`client/conn.rs` is its
//!   one connection type);
//! - [`server`]: the session cache (`server/cache.rs`) and request handling
//!   (`server/mod.rs`), shared by DC_SERVER (`server/dcserver.rs`) and the
//!   dc_server daemon;
//! - [`capi`]: every `extern "C"` function, grouped like the C headers, each
//!   behind one panic guard.
//!
//! One request, end to end: `DC_CTX_add_session` (`capi/client.rs`) ->
//! `Client::add` (`client/mod.rs`, payload by `proto::encode_add`) ->
//! `Conn::exchange` (`client/conn.rs`: UNIX or TCP, connected by
//! `transport::connect_by`, framed by `proto/frame.rs`) -> dc_server,
//! where the connection is a `Link` (`daemons/src/link.rs`: read, buffer,
//! decode) driven by `daemons/src/bin/dc_server.rs` (or first dc_client,
//! `daemons/src/bin/dc_client/main.rs`, whose application and server sides
//! are Links too) -> `server::handle_request` (`server/mod.rs`) ->
//! `Cache::add` (`server/cache.rs`) -> the answer queued on the Link's
//! output and written back the same way.
//!
//! The cdylib built from this crate is installed as `libnal.so.1` and holds
//! every exported symbol; `libdistcache.so.1` and `libdistcacheserver.so.1`
//! are ELF filter libraries that export their own symbols and let the dynamic
//! linker resolve them in `libnal.so.1` (see the Makefile).

#![deny(unsafe_op_in_unsafe_fn)]

pub mod capi;
pub mod client;
pub mod nal;
pub mod plug;
pub mod proto;
pub mod server;
pub mod sysdb;
pub mod transport;
