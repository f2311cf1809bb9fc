//! The daemons crate's test helpers: everything in the core crate's
//! `tests/common` (one copy, shared through `#[path]`) plus what needs the
//! binaries built by this crate.
#![allow(dead_code)]

#[path = "../../../tests/common/mod.rs"]
mod shared;
pub use shared::*;

/// Start dc_client with `-server srv -listen UNIX:<dir>/client` and extra args.
pub fn dc_client(dir: &TempDir, server: &str, extra: &[&str]) -> Proc {
    let listen = dir.addr("client");
    let mut args = vec!["-server", server, "-listen", &listen];
    args.extend_from_slice(extra);
    let p = Proc::spawn(env!("CARGO_BIN_EXE_dc_client"), &args);
    wait_for_socket(&dir.path("client"));
    p
}
