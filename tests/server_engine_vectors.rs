//! Replays every `app->dc_server` case of wire.json against the embedded
//! server engine behind DC_SERVER ([`DcServer`] with the built-in cache),
//! each case on a new NAL connection pair, a fresh server per group, time
//! driven by the test. Cases recorded as non-deterministic are checked
//! against `expected_if_fixed`; `abort` cases must just drop the
//! connection. The half-close cases shut down the write side of the
//! client's socket (SHUT_WR) and expect the fixed behaviour where one is
//! recorded (the request is still answered, then the connection closes).
//!
//! The cases come from `tests/vectors/wire.json` (see tests/vectors/README.md).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use distcache_rs::nal::{Connection, Selector};
use distcache_rs::plug::OwnedConn;
use distcache_rs::server::cache::Cache;
use distcache_rs::server::dcserver::DcServer;

use common::{unhex, wire_cases, Json};

#[derive(Debug, PartialEq)]
enum Outcome {
    /// Bytes received; whether the server closed.
    Got(Vec<u8>, bool),
}

/// One step of a case: after `delay_ms` (on the test's clock), send these
/// bytes, or half-close the client's socket (`None`).
type Chunk = (u64, Option<Vec<u8>>);

/// Send `chunks` (with the clock advanced by each delay) on a new client of
/// `srv`, then collect what comes back.
fn run_case(
    srv: &mut DcServer,
    sel: &mut Selector,
    now: &mut u64,
    chunks: &[Chunk],
    want_len: usize,
) -> Outcome {
    let (mut a, mut b) = (Connection::new(), Connection::new());
    assert!(Connection::create_pair(&mut a, &mut b, 32768));
    assert!(a.add_to_selector(sel) && b.add_to_selector(sel));
    srv.new_client(Box::new(OwnedConn(b)), true);
    let mut got = Vec::new();
    let mut closed = false;
    let round = |a: &mut Connection,
                 srv: &mut DcServer,
                 sel: &mut Selector,
                 got: &mut Vec<u8>,
                 now: u64|
     -> bool {
        sel.select(Some(Duration::from_millis(20))).unwrap();
        let ok = a.io();
        srv.clients_io(now);
        let mut rb = a.read_buf_mut();
        got.extend_from_slice(rb.data());
        rb.clear();
        ok
    };
    for (delay_ms, bytes) in chunks {
        *now += delay_ms;
        let Some(bytes) = bytes else {
            // Everything written so far has left the send buffer (the loop
            // below waits for that): now half-close.
            let fd = a.raw_fd().expect("connected");
            // SAFETY: shutdown(2) on a socket this test owns; no memory.
            assert_eq!(unsafe { libc::shutdown(fd, libc::SHUT_WR) }, 0);
            let mut idle = 0;
            while idle < 3 && !closed {
                if !round(&mut a, srv, sel, &mut got, *now) {
                    closed = true;
                }
                idle += 1;
            }
            continue;
        };
        let mut off = 0;
        // Push the chunk through, then give the server a few rounds.
        let mut idle = 0;
        while (off < bytes.len() || idle < 3) && !closed {
            off += a.send_buf_mut().write(&bytes[off..]);
            if !round(&mut a, srv, sel, &mut got, *now) {
                closed = true;
            }
            if off == bytes.len() && a.send_buf().is_empty() {
                idle += 1;
            }
        }
    }
    // Wait for the answer (or the close), then make sure nothing follows.
    let mut extra = 0;
    while !closed && extra < 5 {
        if !round(&mut a, srv, sel, &mut got, *now) {
            closed = true;
        }
        if got.len() >= want_len {
            extra += 1;
        }
    }
    Outcome::Got(got, closed)
}

#[test]
fn replay_wire_json_app_to_dc_server() {
    let mut sel = Selector::new();
    let mut servers: BTreeMap<String, DcServer> = BTreeMap::new();
    let mut now: u64 = 1_000_000;
    let mut checked = 0;
    let mut half_closes = 0;
    let mut failures = Vec::new();
    for case in wire_cases() {
        if case.str("leg") != Some("app->dc_server") {
            continue;
        }
        let name = case.str("name").unwrap().to_string();
        let group = case.str("group").unwrap().to_string();
        let mut half_close = false;
        let chunks: Vec<Chunk> = match case.get("request_chunks") {
            Some(Json::Arr(cs)) => cs
                .iter()
                .map(|c| {
                    let d = match c.get("delay_s") {
                        Some(Json::Num(n)) => (n * 1000.0) as u64,
                        _ => 0,
                    };
                    match c.str("action") {
                        Some(a) => {
                            assert_eq!(a, "shutdown(SHUT_WR)", "{name}");
                            half_close = true;
                            (d, None)
                        }
                        None => (d, Some(unhex(c.str("hex").unwrap()))),
                    }
                })
                .collect(),
            _ => vec![(0, Some(unhex(case.str("request_hex").unwrap())))],
        };
        let deterministic = !matches!(case.get("deterministic"), Some(Json::Bool(false)));
        // The fixed behaviour where one is recorded: for non-deterministic
        // cases, and for a half-close right after a request (the original
        // dropped the answer; we still give it, then close).
        let expect = if deterministic && !half_close {
            &case
        } else {
            case.get("expected_if_fixed").unwrap_or(&case)
        };
        let reaction = expect.str("server_reaction").unwrap().to_string();
        let want = expect.str("response_hex").map(unhex).unwrap_or_default();
        let srv = servers
            .entry(group.clone())
            .or_insert_with(|| DcServer::new(Box::new(Cache::new(512))));
        now += 1;
        let Outcome::Got(got, closed) = run_case(srv, &mut sel, &mut now, &chunks, want.len());
        let ok = match reaction.as_str() {
            "response" => got == want && !closed,
            "response+close" => got == want && closed,
            "close" | "abort" => got.is_empty() && closed,
            "no-response" => got.is_empty() && !closed,
            other => panic!("{name}: unknown reaction {other}"),
        };
        if !ok {
            failures.push(format!(
                "{name} ({reaction}): got {} bytes {:02x?}{}, want {:02x?}",
                got.len(),
                &got[..got.len().min(40)],
                if closed { " then close" } else { "" },
                &want[..want.len().min(40)]
            ));
        }
        checked += 1;
        half_closes += half_close as usize;
    }
    assert!(checked >= 90, "only {checked} cases found");
    assert_eq!(half_closes, 2, "the two half-close cases");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
