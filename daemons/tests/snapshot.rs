//! dc_server -snapshot: sessions survive a restart (SIGTERM, start again),
//! expired ones do not; a corrupt file is renamed aside; the file is 0600
//! and a symbolic link at its path is not followed; a restart under load.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::Duration;

use common::{wait_for_socket, Load, LoadSpec, Pause, Proc, TempDir};
use distcache_rs::client::{AddOutcome, Client, Config};

const BIN: &str = env!("CARGO_BIN_EXE_dc_server");

fn start(dir: &TempDir, extra: &[&str]) -> Proc {
    let listen = dir.addr("sock");
    let snap = dir.path("snap").display().to_string();
    let mut args = vec!["-listen", &listen, "-snapshot", &snap];
    args.extend_from_slice(extra);
    let p = Proc::spawn_with(BIN, &args, Stdio::null(), Stdio::piped());
    wait_for_socket(&dir.path("sock"));
    p
}

/// SIGTERM, expect a clean exit; the stderr text.
fn stop(p: Proc) -> String {
    let (code, err) = p.terminate();
    assert_eq!(code, Some(0), "{err}");
    err
}

fn client(dir: &TempDir) -> Client {
    // No floor on timeouts: the test stores a short-lived session.
    let cfg = Config {
        min_timeout_ms: 0,
        ..Config::default()
    };
    Client::with_config(&dir.addr("sock"), 0, cfg).unwrap()
}

fn get(c: &Client, id: &str) -> Option<Vec<u8>> {
    c.get(id.as_bytes()).unwrap().map(|s| s.to_vec())
}

#[test]
fn sessions_survive_a_restart_and_expired_ones_do_not() {
    let dir = TempDir::new("snap-restart");
    let p = start(&dir, &[]);
    let c = client(&dir);
    for i in 0..50 {
        let id = format!("live-{i}");
        assert_eq!(
            c.add(id.as_bytes(), format!("data-{i}").as_bytes(), 60_000)
                .unwrap(),
            AddOutcome::Stored
        );
    }
    assert_eq!(
        c.add(b"short", b"gone soon", 300).unwrap(),
        AddOutcome::Stored
    );
    assert_eq!(get(&c, "short").as_deref(), Some(&b"gone soon"[..]));
    let err = stop(p);
    assert!(err.contains("snapshot: wrote 51 sessions"), "{err}");
    let md = fs::symlink_metadata(dir.path("snap")).unwrap();
    assert!(md.file_type().is_file());
    assert_eq!(md.permissions().mode() & 0o777, 0o600);
    // Down for longer than "short" had left.
    std::thread::sleep(Duration::from_millis(400));
    let p = start(&dir, &[]);
    for i in 0..50 {
        let want = format!("data-{i}");
        assert_eq!(
            get(&c, &format!("live-{i}")).as_deref(),
            Some(want.as_bytes())
        );
    }
    assert_eq!(get(&c, "short"), None, "expired while the server was down");
    let err = stop(p);
    assert!(
        err.contains("snapshot: loaded 50 sessions (1 expired dropped) from"),
        "{err}"
    );
}

#[test]
fn corrupt_file_is_renamed_aside_and_the_server_runs_empty() {
    let dir = TempDir::new("snap-corrupt");
    let p = start(&dir, &[]);
    let c = client(&dir);
    assert_eq!(c.add(b"a", b"x-data", 60_000).unwrap(), AddOutcome::Stored);
    stop(p);
    let mut b = fs::read(dir.path("snap")).unwrap();
    let n = b.len();
    b[n - 1] ^= 0x40;
    fs::write(dir.path("snap"), &b).unwrap();
    let p = start(&dir, &[]);
    assert_eq!(get(&c, "a"), None, "empty cache");
    assert_eq!(c.add(b"b", b"y-data", 60_000).unwrap(), AddOutcome::Stored);
    assert_eq!(get(&c, "b").as_deref(), Some(&b"y-data"[..]), "server runs");
    let err = stop(p);
    let line = err.lines().find(|l| l.contains("corrupt")).unwrap_or("");
    assert!(
        line.contains("renamed to") && line.contains(".bad-"),
        "{err}"
    );
    let aside: Vec<String> = fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("snap.bad-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(fs::read(dir.path(&aside[0])).unwrap(), b);
}

#[test]
fn a_symlink_at_the_snapshot_path_is_not_followed() {
    let dir = TempDir::new("snap-link");
    let target = dir.path("target");
    fs::write(&target, b"not yours").unwrap();
    std::os::unix::fs::symlink(&target, dir.path("snap")).unwrap();
    let p = start(&dir, &[]);
    let c = client(&dir);
    assert_eq!(c.add(b"a", b"x-data", 60_000).unwrap(), AddOutcome::Stored);
    let err = stop(p);
    assert!(err.contains("symbolic link is never followed"), "{err}");
    assert_eq!(fs::read(&target).unwrap(), b"not yours");
    let md = fs::symlink_metadata(dir.path("snap")).unwrap();
    assert!(
        md.file_type().is_file(),
        "the link was replaced by the file"
    );
    assert_eq!(md.permissions().mode() & 0o777, 0o600);
}

#[test]
fn interval_writes_while_running() {
    let dir = TempDir::new("snap-interval");
    let p = start(&dir, &["-snapshot-interval", "1"]);
    let c = client(&dir);
    assert_eq!(c.add(b"a", b"x-data", 60_000).unwrap(), AddOutcome::Stored);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while fs::metadata(dir.path("snap")).map_or(0, |m| m.len()) <= 40 {
        assert!(std::time::Instant::now() < deadline, "no interval write");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A crash (SIGKILL) now keeps what the interval write saved.
    let mut p = p;
    p.kill9();
    let p = start(&dir, &[]);
    assert_eq!(get(&c, "a").as_deref(), Some(&b"x-data"[..]));
    stop(p);
}

#[test]
fn interval_without_snapshot_is_a_flag_error() {
    let out = std::process::Command::new(BIN)
        .args(["-listen", "UNIX:/tmp/never", "-snapshot-interval", "5"])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    let mut lines = err.lines();
    assert!(
        lines.next().unwrap().contains("-snapshot-interval"),
        "{err}"
    );
    assert!(
        lines.next().unwrap().starts_with("usage: dc_server"),
        "{err}"
    );
    let out = std::process::Command::new(BIN)
        .args([
            "-listen",
            "UNIX:/tmp/never",
            "-snapshot",
            "/no/such/dir/snap",
        ])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("dc_server: flag -snapshot:"));
}

#[test]
fn restart_under_load_keeps_the_sessions_stored_before() {
    let dir = TempDir::new("snap-load");
    let p = start(&dir, &["-sessions", "100000"]);
    let target = dir.addr("sock");
    let c = client(&dir);
    for i in 0..200 {
        let id = format!("before-{i}");
        assert_eq!(
            c.add(id.as_bytes(), id.as_bytes(), 60_000).unwrap(),
            AddOutcome::Stored
        );
    }
    let mut load = Load::start(LoadSpec {
        target: &target,
        workers: 2,
        id_prefix: "load",
        repeat: 4,
        pause: Pause::AfterFailure(Duration::from_millis(5)),
        get_after_failed_add: false,
    });
    load.wait_for_successes(200, Duration::from_secs(10));
    let err = stop(p);
    assert!(err.contains("snapshot: wrote"), "{err}");
    let before = load.successes();
    let p = start(&dir, &["-sessions", "100000"]);
    load.wait_for_successes(before + 200, Duration::from_secs(10));
    for r in load.stop() {
        r.unwrap();
    }
    assert!(
        load.successes() >= before + 200,
        "load resumed after the restart"
    );
    for i in 0..200 {
        let id = format!("before-{i}");
        assert_eq!(get(&c, &id).as_deref(), Some(id.as_bytes()), "{id}");
    }
    let err = stop(p);
    assert!(err.contains("snapshot: loaded"), "{err}");
}
