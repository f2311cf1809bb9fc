//! Fault and hostile-input tests for dc_client and dc_snoop in front of a
//! live dc_server (issue 8): malformed wire.json cases and hostile streams
//! from one application never disturb the others, -maxconns, dc_client
//! killed and restarted under DC_CTX load. UNIX sockets in a temp
//! directory only; every wait is bounded.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::process::Stdio;
use std::thread::sleep;
use std::time::Duration;

use common::*;

/// The request byte strings of wire.json that a server or proxy must
/// reject by closing the connection.
fn malformed_requests() -> Vec<(String, Vec<u8>)> {
    wire_cases()
        .iter()
        .filter(|c| {
            let leg = c.str("leg").unwrap_or("");
            matches!(c.str("server_reaction"), Some("close" | "abort"))
                && (leg == "app->dc_server" || leg == "app->dc_client")
        })
        .map(|c| {
            (
                c.str("name").unwrap().to_string(),
                unhex(c.str("request_hex").unwrap()),
            )
        })
        .collect()
}

/// Hostile streams beyond wire.json: 17 full frames, data_len 0xFFFF,
/// random bytes.
fn extra_hostile() -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    let mut f17 = Vec::new();
    for _ in 0..17 {
        let mut h = vec![0, 0x11, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0x08, 0x00];
        h.extend_from_slice(&[0u8; 2048]);
        f17.extend_from_slice(&h);
    }
    v.push(("17 full frames".to_string(), f17));
    v.push((
        "data_len 0xFFFF".to_string(),
        vec![0, 0x11, 0, 0, 0, 0, 0, 0, 1, 0, 1, 1, 0xFF, 0xFF],
    ));
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..10 {
        let mut junk: Vec<u8> = (0..2000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        if i % 2 == 0 {
            junk[..5].copy_from_slice(&[0, 0x11, 0, 0, 0]);
        }
        v.push((format!("random bytes #{i}"), junk));
    }
    v
}

#[test]
fn dc_client_drops_only_the_offending_application() {
    let dir = TempDir::new("fltc-wire");
    let mut srv = dc_server_logged(&dir, "srv", &[]);
    let mut client = dc_client_logged(&dir, &dir.addr("srv"), &["-retry", "100"]);
    let app = dir.path("client");
    let mut good: Vec<UnixStream> = (0..4).map(|_| connect(&app)).collect();
    let silent: Vec<UnixStream> = (0..200).map(|_| connect(&app)).collect();
    let mut tried = 0;
    for (name, bytes) in malformed_requests().into_iter().chain(extra_hostile()) {
        let mut bad = connect(&app);
        let _ = bad.write_all(&bytes);
        let _ = bad.shutdown(std::net::Shutdown::Write);
        assert!(closed_within(&mut bad, Duration::from_secs(3)), "{name}");
        for (i, g) in good.iter_mut().enumerate() {
            check_served(g, &name.replace(' ', "_"), i as u32);
        }
        tried += 1;
    }
    assert!(tried >= 35, "only {tried} hostile streams");
    // The largest message dribbled one byte per write goes through.
    let data: Vec<u8> = (0..32768 - 8 - 7).map(|i| (i % 253) as u8).collect();
    let max = request(77, 0, &add_payload(60_000, b"dribble", &data));
    let mut d = connect(&app);
    for b in &max {
        d.write_all(&[*b]).unwrap();
    }
    assert_eq!(read_msg(&mut d).unwrap().2, vec![0]);
    assert_eq!(transact(&mut d, &request(78, 1, b"dribble")), data);
    drop(silent);
    assert!(client.alive() && srv.alive());
}

/// A full table (-maxconns) makes room for a newcomer (issue 13): the
/// connection that never completed a request goes first, then the one idle
/// longest; each newcomer is served. One line per eviction (rate-limited).
#[test]
fn dc_client_maxconns_makes_room_for_new_connections() {
    let dir = TempDir::new("fltc-max");
    let _srv = dc_server_logged(&dir, "srv", &[]);
    let mut client = dc_client_logged(&dir, &dir.addr("srv"), &["-maxconns", "3"]);
    let app = dir.path("client");
    sleep(Duration::from_millis(100));
    let mut held: Vec<UnixStream> = (0..2).map(|_| connect(&app)).collect();
    for (i, c) in held.iter_mut().enumerate() {
        check_served(c, "held", i as u32);
        sleep(Duration::from_millis(20));
    }
    // A silent connection (never completed a request) fills the table.
    let mut silent = connect(&app);
    sleep(Duration::from_millis(100));
    // The newcomer is served; the silent one went for it, though younger
    // than both idle ones.
    let mut c1 = connect(&app);
    check_served(&mut c1, "new", 1);
    assert!(
        closed_within(&mut silent, Duration::from_secs(3)),
        "silent kept"
    );
    // The table is full of connections that completed requests: the one
    // idle longest (held[0]) makes room for the next newcomer.
    let mut c2 = connect(&app);
    check_served(&mut c2, "new", 2);
    assert!(
        closed_within(&mut held[0], Duration::from_secs(3)),
        "oldest kept"
    );
    check_served(&mut held[1], "still", 1);
    for i in 0..20 {
        let mut extra = connect(&app);
        check_served(&mut extra, "extra", i);
    }
    assert!(client.alive());
    let log = fs::read_to_string(dir.path("client.log")).unwrap();
    let lines = log.matches("(-maxconns): closing").count();
    assert!(lines >= 2, "{log}");
    // Rate-limited: 22 evictions in well under a second, at most 5 lines.
    assert!(lines <= 6, "{lines} lines: {log}");
    assert!(log.contains("waiting without a complete request"), "{log}");
}

/// dc_client SIGKILLed under DC_CTX load and restarted on the same socket
/// path (its stale socket file left behind): callers fail within the
/// bound, never see wrong data, and recover once it is back.
#[test]
fn dc_client_killed_and_restarted() {
    let dir = TempDir::new("fltc-kill");
    let _srv = dc_server_logged(&dir, "srv", &[]);
    let mut client = dc_client_logged(&dir, &dir.addr("srv"), &[]);
    let target = dir.addr("client");
    let mut load = Load::start(LoadSpec {
        target: &target,
        workers: 4,
        id_prefix: "cli-kill",
        repeat: 8,
        pause: Pause::AfterFailure(Duration::from_millis(2)),
        get_after_failed_add: true,
    });
    sleep(Duration::from_millis(400));
    assert_eq!(load.failures(), 0, "failures before the kill");
    client.kill9();
    assert!(dir.path("client").exists(), "stale socket expected");
    sleep(Duration::from_millis(500));
    assert!(load.failures() > 0, "no failure while down");
    let before = load.successes();
    let mut client2 = dc_client_logged(&dir, &dir.addr("srv"), &[]);
    load.wait_for_successes(before + 100, Duration::from_secs(5));
    for r in load.stop() {
        let worst = r.unwrap();
        assert!(worst < Duration::from_secs(5), "a call took {worst:?}");
    }
    assert!(load.successes() >= before + 100, "service did not resume");
    assert!(client2.alive());
}

/// dc_snoop between applications and a live dc_server: each hostile
/// stream ends only its own relayed connection.
#[test]
fn dc_snoop_drops_only_the_offending_connection() {
    let dir = TempDir::new("fltc-snoop");
    let mut srv = dc_server_logged(&dir, "srv", &[]);
    let log = fs::File::create(dir.path("snoop.out")).unwrap();
    let listen = dir.addr("snoop");
    let server = dir.addr("srv");
    let mut snoop = Proc::spawn_with(
        env!("CARGO_BIN_EXE_dc_snoop"),
        &["-listen", &listen, "-server", &server],
        Stdio::from(log),
        Stdio::from(fs::File::create(dir.path("snoop.err")).unwrap()),
    );
    wait_for_socket(&dir.path("snoop"));
    let mut good = connect(&dir.path("snoop"));
    let mut tried = 0;
    for (name, bytes) in malformed_requests().into_iter().chain(extra_hostile()) {
        let mut bad = connect(&dir.path("snoop"));
        let _ = bad.write_all(&bytes);
        let _ = bad.shutdown(std::net::Shutdown::Write);
        assert!(closed_within(&mut bad, Duration::from_secs(3)), "{name}");
        check_served(&mut good, &name.replace(' ', "_"), tried);
        tried += 1;
    }
    assert!(tried >= 35);
    assert!(snoop.alive() && srv.alive());
}
