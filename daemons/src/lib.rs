//! The distcache daemons and tools over the `distcache_rs` core.
//!
//! This crate is not part of the C libraries: `libnal.so.1` is built from the
//! core crate alone, so what lives here (and whatever this crate depends on)
//! is never linked into Apache or stunnel.
//!
//! - [`tools`]: what the four binaries share: single-dash flags, listening
//!   and connecting sockets, daemonizing, privileges, pid files, signals,
//!   the make-room policy;
//! - [`daemon`]: the start-up both daemons share (detach, signals, pid
//!   file, privileges, systemd readiness and watchdog), in one order;
//! - [`evloop`]: the one epoll readiness loop of the daemons (the library
//!   keeps poll/ppoll, since an epoll descriptor would cross fork());
//! - [`metrics`]: the `-metrics` Prometheus endpoint of dc_server and
//!   dc_client, served from the same loop;
//! - [`tls`]: the TLS link (certificates, keys, [`tls::TlsStream`]);
//! - [`sessiond`]: stunnel's UDP session-cache protocol, served by
//!   dc_server `-sessiond` over the core's cache;
//! - `src/bin/`: one file (or folder) per tool, each its own job only.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod daemon;
pub mod evloop;
pub mod metrics;
pub mod sessiond;
pub mod tls;
pub mod tools;
