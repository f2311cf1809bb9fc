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
//! - [`link`]: one stream connection of the daemons (buffers, budgets,
//!   clocks, non-blocking connect, drain-then-close), under dc_server,
//!   dc_client (both sides) and dc_snoop;
//! - [`evloop`]: the one epoll readiness loop of the daemons (the library
//!   keeps poll/ppoll, since an epoll descriptor would cross fork());
//! - [`idmap`]: hash maps keyed by ids the daemons assign themselves
//!   (a multiplicative hash, not SipHash);
//! - [`metrics`]: the `-metrics` Prometheus endpoint of dc_server and
//!   dc_client, served from the same loop;
//! - [`snapshot`]: dc_server's `-snapshot` file (the cache written at
//!   exit and read back at start, so a restart loses no sessions);
//! - [`tls`]: the TLS link (certificates, keys, [`tls::TlsStream`]);
//!   [`tlsconf`]: its flags, addresses and reload in the daemons;
//! - [`redis`]: a non-blocking, pipelined Redis client for the loops
//!   (issue 17: Redis as the shared store);
//! - [`store`]: store addresses (`redis://`, `rediss://`,
//!   `redis-sentinel://`), the shared `-redis-*` flags, and the
//!   distcache-to-Redis translation (dc_server's checks and answers);
//! - [`sentinel`]: Redis Sentinel discovery of the primary and a store
//!   that follows it across fail-overs;
//! - [`backend`]: a daemon answering distcache requests from Redis through
//!   one connection (dc_client `-server redis://...`, dc_server
//!   `-backend`), standalone or through Sentinel;
//! - [`sessiond`]: stunnel's UDP session-cache protocol, served by
//!   dc_server `-sessiond` over the core's cache;
//! - `src/bin/`: one file (or folder) per tool, each its own job only.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod backend;
pub mod daemon;
pub mod evloop;
pub mod idmap;
pub mod link;
pub mod metrics;
pub mod redis;
pub mod sentinel;
pub mod sessiond;
pub mod snapshot;
pub mod store;
pub mod tls;
pub mod tlsconf;
pub mod tools;
