//! dc_test on its own: flag handling; that a failed call (here: a
//! dc_client without a server, which answers every request with an empty
//! payload) stops it with an error naming the operation; and that with
//! `-failures ok` failed calls are counted and the run goes on (through a
//! server killed and restarted), while a wrong answer still stops it.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn failure_answers_stop_the_test_with_an_error() {
    let dir = TempDir::new("dctest-noserver");
    let _client = dc_client(&dir, &dir.addr("nobody"), &["-retry", "10000"]);
    let target = dir.addr("client");
    let (code, out, err) = run(
        env!("CARGO_BIN_EXE_dc_test"),
        &["-connect", &target, "-sessions", "5", "-seed", "7"],
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(1), "stdout: {out}\nstderr: {err}");
    assert!(
        err.contains("dc_test: ERROR: client 0, operation 1: "),
        "{err}"
    );
    assert!(err.contains("empty answer"), "{err}");
    let last = out.lines().last().unwrap_or("");
    assert!(last.starts_with("dc_test ops=0 "), "{out}");
    assert!(last.ends_with(" errors=1"), "{out}");
}

#[test]
fn unreachable_target_is_an_error() {
    let dir = TempDir::new("dctest-none");
    let target = dir.addr("nothing");
    let (code, _, err) = run(
        env!("CARGO_BIN_EXE_dc_test"),
        &["-connect", &target, "-persistent"],
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(1));
    assert!(err.contains("cannot"), "{err}");
}

#[test]
fn bad_flags_give_an_error_line_and_nonzero_exit() {
    let exe = env!("CARGO_BIN_EXE_dc_test");
    for args in [
        &["-bogus"][..],
        &[][..],
        &["-connect"][..],
        &["-connect", "IP:9001"][..],
        &["-connect", "UNIX:/tmp/x", "-sessions", "0"][..],
        &[
            "-connect",
            "UNIX:/tmp/x",
            "-datamin",
            "100",
            "-datamax",
            "50",
        ][..],
        &["-connect", "UNIX:/tmp/x", "-datamax", "40000"][..],
        &["-connect", "UNIX:/tmp/x", "-clients", "x"][..],
        &["-connect", "UNIX:/tmp/x", "-ops", "-1"][..],
        &["-connect", "UNIX:/tmp/x", "-failures", "maybe"][..],
    ] {
        let (code, _, err) = run(exe, args, Duration::from_secs(5));
        assert_ne!(code, Some(0), "{args:?} accepted");
        assert!(code.is_some(), "{args:?}: killed by a signal");
        assert!(err.starts_with("dc_test: "), "{args:?}: {err}");
    }
    let (code, out, _) = run(exe, &["-?"], Duration::from_secs(5));
    assert_eq!(code, Some(0));
    assert!(out.contains("-persistent") && out.contains("-clients") && out.contains("-failures"));
}

/// A server on `path` that accepts every connection and closes it at once.
fn accept_and_close(path: &std::path::Path) {
    let l = std::os::unix::net::UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            drop(s);
        }
    });
}

/// A server on `path` that stores nothing and answers every GET with a
/// hit of data that is no session's: ADD "stored", REMOVE "not found".
fn wrong_data_server(path: &std::path::Path) {
    use distcache_rs::proto::{encode_message, Cmd, Decoder, Direction, Event};
    use std::io::{Read, Write};
    let l = std::os::unix::net::UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut dec = Decoder::new(Direction::Requests);
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let mut answers = Vec::new();
                    let mut off = 0;
                    loop {
                        match dec.feed(&buf[off..]) {
                            Ok(Event::NeedMore) => break,
                            Ok(Event::Fragment { consumed }) => off += consumed,
                            Ok(Event::Message { consumed, msg }) => {
                                off += consumed;
                                let payload: &[u8] = match msg.cmd {
                                    Cmd::Add => &[0],
                                    Cmd::Get => b"data of no session of this run",
                                    _ => &[1],
                                };
                                encode_message(&mut answers, true, msg.uid, msg.cmd, payload)
                                    .unwrap();
                            }
                            Err(_) => return,
                        }
                    }
                    buf.drain(..off);
                    if s.write_all(&answers).is_err() {
                        return;
                    }
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
}

#[test]
fn failures_ok_counts_failed_calls_and_exits_zero() {
    let dir = TempDir::new("dctest-failok");
    let exe = env!("CARGO_BIN_EXE_dc_test");
    // A dc_client without a server answers every request with an empty
    // payload; an accept-and-close server answers nothing; a path where
    // nothing listens refuses the connection. All are failed calls.
    let _client = dc_client(&dir, &dir.addr("nobody"), &["-retry", "10000"]);
    accept_and_close(&dir.path("closer"));
    for (target, mode) in [
        (dir.addr("client"), None),
        (dir.addr("client"), Some("-persistent")),
        (dir.addr("closer"), None),
        (dir.addr("closer"), Some("-persistent")),
        (dir.addr("nothing"), Some("-persistent")),
    ] {
        let mut args = vec!["-connect", &target, "-sessions", "5", "-ops", "300"];
        args.extend(["-clients", "2", "-failures", "ok", "-seed", "7"]);
        args.extend(mode);
        let (code, out, err) = run(exe, &args, Duration::from_secs(60));
        assert_eq!(code, Some(0), "{args:?}\nstdout: {out}\nstderr: {err}");
        assert!(!err.contains("ERROR"), "{args:?}: {err}");
        assert_eq!(last_line_field(&out, "ops"), 300, "{out}");
        assert_eq!(last_line_field(&out, "failures"), 300, "{out}");
        assert_eq!(last_line_field(&out, "errors"), 0, "{out}");
        assert!(out.contains("300 failed call(s)"), "{out}");
    }
    // Without the flag the first failed call stops the run (exit 1).
    let (code, out, err) = run(
        exe,
        &["-connect", &dir.addr("closer"), "-sessions", "5"],
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(
        err.contains("operation 1: ") && err.contains(": failed: "),
        "{err}"
    );
    assert_eq!(last_line_field(&out, "errors"), 1, "{out}");
    assert_eq!(last_line_field(&out, "failures"), 0, "{out}");
}

#[test]
fn failures_ok_goes_through_a_server_killed_and_restarted_mid_run() {
    let dir = TempDir::new("dctest-restart");
    let server = dir.addr("server");
    let start = || {
        let p = Proc::spawn(env!("CARGO_BIN_EXE_dc_server"), &["-listen", &server]);
        wait_for_socket(&dir.path("server"));
        p
    };
    let mut srv = start();
    let t = std::thread::spawn({
        let (exe, target) = (env!("CARGO_BIN_EXE_dc_test"), server.clone());
        move || {
            run(
                exe,
                &[
                    "-connect",
                    &target,
                    "-sessions",
                    "50",
                    "-ops",
                    "400000",
                    "-clients",
                    "2",
                    "-persistent",
                    "-failures",
                    "ok",
                ],
                Duration::from_secs(300),
            )
        }
    });
    // Let it run, kill the server (SIGKILL: its sessions are gone), leave
    // it down a moment, start a fresh one on the same path.
    std::thread::sleep(Duration::from_millis(700));
    srv.kill9();
    let _ = std::fs::remove_file(dir.path("server"));
    std::thread::sleep(Duration::from_millis(300));
    let _srv = start();
    let (code, out, err) = t.join().unwrap();
    println!("{out}");
    assert_eq!(code, Some(0), "stdout: {out}\nstderr: {err}");
    let failures = last_line_field(&out, "failures");
    assert!(failures > 0, "the kill went unnoticed: {out}");
    assert_eq!(last_line_field(&out, "errors"), 0, "{out}");
    assert_eq!(last_line_field(&out, "ops"), 400_000, "{out}");
}

#[test]
fn a_wrong_answer_still_stops_the_run_with_failures_ok() {
    let dir = TempDir::new("dctest-wrong");
    wrong_data_server(&dir.path("liar"));
    let target = dir.addr("liar");
    let (code, out, err) = run(
        env!("CARGO_BIN_EXE_dc_test"),
        &[
            "-connect",
            &target,
            "-sessions",
            "3",
            "-ops",
            "1000",
            "-failures",
            "ok",
            "-seed",
            "5",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(code, Some(1), "stdout: {out}\nstderr: {err}");
    assert!(
        err.contains("dc_test: ERROR: client 0, operation "),
        "{err}"
    );
    assert!(
        err.contains("different bytes") || err.contains("expected removed, got not found"),
        "{err}"
    );
    assert_eq!(last_line_field(&out, "errors"), 1, "{out}");
    assert!(last_line_field(&out, "ops") < 1000, "{out}");
}
