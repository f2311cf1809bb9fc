//! dc_test on its own: flag handling, and that a wrong answer (here: a
//! dc_client without a server, which answers every request with an empty
//! payload) stops it with an error naming the operation.

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
    ] {
        let (code, _, err) = run(exe, args, Duration::from_secs(5));
        assert_ne!(code, Some(0), "{args:?} accepted");
        assert!(code.is_some(), "{args:?}: killed by a signal");
        assert!(err.starts_with("dc_test: "), "{args:?}: {err}");
    }
    let (code, out, _) = run(exe, &["-?"], Duration::from_secs(5));
    assert_eq!(code, Some(0));
    assert!(out.contains("-persistent") && out.contains("-clients"));
}
