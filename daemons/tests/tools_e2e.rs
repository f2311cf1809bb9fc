//! The tools together: dc_test -> dc_client -> dc_server (persistent and
//! per-operation connections, 64 parallel clients), dc_snoop inserted
//! between dc_client and dc_server, and dc_server killed and restarted
//! under load.

mod common;

use std::fs::File;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

fn dc_server(dir: &TempDir, name: &str) -> Proc {
    let listen = dir.addr(name);
    // Quiet: status lines go nowhere.
    let p = Proc::spawn_with(
        env!("CARGO_BIN_EXE_dc_server"),
        &["-listen", &listen, "-sessions", "100000"],
        Stdio::null(),
        Stdio::null(),
    );
    wait_for_socket(&dir.path(name));
    p
}

fn dc_test(args: &[&str]) -> String {
    let (code, out, err) = run(env!("CARGO_BIN_EXE_dc_test"), args, Duration::from_secs(60));
    assert_eq!(code, Some(0), "dc_test {args:?} failed:\n{out}\n{err}");
    let last = out.lines().last().unwrap_or("").to_string();
    assert!(last.starts_with("dc_test ops="), "{out}");
    assert!(last.ends_with(" errors=0"), "{out}");
    last
}

fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} missing in {line}"))
        .parse()
        .unwrap()
}

#[test]
fn dc_test_through_dc_client_persistent_and_per_operation() {
    let dir = TempDir::new("e2e-basic");
    let _srv = dc_server(&dir, "srv");
    let mut client = dc_client(&dir, &dir.addr("srv"), &[]);
    let target = dir.addr("client");
    let last = dc_test(&[
        "-connect",
        &target,
        "-sessions",
        "20",
        "-ops",
        "3000",
        "-persistent",
    ]);
    assert_eq!(field(&last, "ops"), 3000);
    let last = dc_test(&["-connect", &target, "-sessions", "20", "-ops", "1500"]);
    assert_eq!(field(&last, "ops"), 1500);
    // Direct to the server as well, with the default sizes.
    dc_test(&["-connect", &dir.addr("srv"), "-persistent"]);
    assert!(client.alive());
}

#[test]
fn sixty_four_parallel_clients_through_one_dc_client() {
    let dir = TempDir::new("e2e-64");
    let _srv = dc_server(&dir, "srv");
    let mut client = dc_client(&dir, &dir.addr("srv"), &[]);
    let target = dir.addr("client");
    let last = dc_test(&[
        "-connect",
        &target,
        "-clients",
        "64",
        "-sessions",
        "10",
        "-ops",
        "12800",
    ]);
    assert_eq!(field(&last, "ops"), 12800);
    let last = dc_test(&[
        "-connect",
        &target,
        "-clients",
        "64",
        "-sessions",
        "10",
        "-ops",
        "25600",
        "-persistent",
    ]);
    assert_eq!(field(&last, "ops"), 25600);
    assert!(client.alive());
}

#[test]
fn dc_snoop_between_dc_client_and_dc_server() {
    let dir = TempDir::new("e2e-snoop");
    let _srv = dc_server(&dir, "srv");
    let log = dir.path("snoop.log");
    let snoop = Proc::spawn_with(
        env!("CARGO_BIN_EXE_dc_snoop"),
        &["-listen", &dir.addr("snoop"), "-server", &dir.addr("srv")],
        Stdio::from(File::create(&log).unwrap()),
        Stdio::null(),
    );
    wait_for_socket(&dir.path("snoop"));
    let _client = dc_client(&dir, &dir.addr("snoop"), &[]);
    let target = dir.addr("client");
    dc_test(&[
        "-connect",
        &target,
        "-sessions",
        "5",
        "-ops",
        "300",
        "-seed",
        "11",
    ]);
    std::thread::sleep(Duration::from_millis(200));
    let _ = snoop.terminate();
    let text = std::fs::read_to_string(&log).unwrap();
    // One upstream connection (after wait_for_socket's probe) carries
    // everything, with dc_client's own uids 1, 2, 3, ...
    let reqs: Vec<&str> = text.lines().filter(|l| l.contains(" c->s REQ ")).collect();
    let resps: Vec<&str> = text.lines().filter(|l| l.contains(" s->c RESP ")).collect();
    assert_eq!(reqs.len(), 300, "{text}");
    assert_eq!(resps.len(), 300, "{text}");
    for (i, (q, r)) in reqs.iter().zip(&resps).enumerate() {
        let uid = format!(" uid={} ", i + 1);
        assert!(q.contains(&uid) && r.contains(&uid), "{q}\n{r}");
        assert!(q.contains("conn#2 "), "{q}");
        let cmd = q.split_whitespace().nth(5).unwrap();
        assert!(r.contains(&format!("{uid}{cmd} ")), "{q}\n{r}");
        assert!(r.contains(" result="), "{r}");
    }
    // A random mix of 300 operations on 5 sessions sees all of these.
    for w in [
        " ADD len=1 result=OK",
        " ADD len=1 result=ADD_MATCHING_SESSION",
        " REMOVE len=1 result=OK",
        " REMOVE len=1 result=NOTOK",
        " GET len=1 result=NOTOK",
        "result=HIT data_len=",
    ] {
        assert!(text.contains(w), "missing {w:?}:\n{text}");
    }
}

#[test]
fn dc_server_killed_and_restarted_under_load() {
    let dir = TempDir::new("e2e-kill");
    let mut srv = dc_server(&dir, "srv");
    let mut client = dc_client(&dir, &dir.addr("srv"), &["-retry", "100"]);
    let target = dir.addr("client");
    let mut load = Load::start(LoadSpec {
        target: &target,
        workers: 8,
        id_prefix: "kill-test",
        repeat: 20,
        // Do not spin while the server is away.
        pause: Pause::AfterFailure(Duration::from_millis(1)),
        get_after_failed_add: true,
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(load.failures(), 0, "failures before the kill");
    srv.kill9();
    std::thread::sleep(Duration::from_millis(400));
    let during = load.failures();
    assert!(during > 0, "no failures seen while the server was down");
    let _srv2 = dc_server(&dir, "srv");
    // Only successes after the restart count.
    let before = load.successes();
    // Service resumes within a few retry periods.
    load.wait_for_successes(before + 100, Duration::from_secs(5));
    for r in load.stop() {
        let worst = r.unwrap();
        assert!(
            worst < Duration::from_secs(2),
            "an operation hung for {worst:?}"
        );
    }
    assert!(load.successes() - before >= 100, "service did not resume");
    assert!(client.alive());
    let (_, err) = client.terminate();
    assert!(err.contains("lost server connection"), "{err}");
    assert!(err.contains("connected to server"), "{err}");
}

#[test]
fn dc_client_daemon_with_pidfile() {
    let dir = TempDir::new("e2e-daemon");
    let _srv = dc_server(&dir, "srv");
    let pidfile = dir.path("client.pid");
    let (code, _, err) = run(
        env!("CARGO_BIN_EXE_dc_client"),
        &[
            "-server",
            &dir.addr("srv"),
            "-listen",
            &dir.addr("client"),
            "-daemon",
            "-pidfile",
            pidfile.to_str().unwrap(),
            "-sockperms",
            "600",
        ],
        Duration::from_secs(5),
    );
    assert_eq!(code, Some(0), "{err}");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path("client"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    dc_test(&["-connect", &dir.addr("client"), "-ops", "200"]);
    // SAFETY: plain kill(2) of the daemon we started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while pidfile.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!pidfile.exists(), "pid file left behind");
    assert!(!dir.path("client").exists(), "socket left behind");
}

/// One application pipelining thousands of requests (more than dc_client
/// keeps in flight per client) gets every answer, in order, with its uids.
#[test]
fn deep_pipelining_through_dc_client() {
    use std::io::Write;
    let dir = TempDir::new("e2e-pipe");
    let _srv = dc_server(&dir, "srv");
    let _client = dc_client(&dir, &dir.addr("srv"), &[]);
    let mut app = connect(&dir.path("client"));
    const N: u32 = 5000;
    let mut reqs = Vec::new();
    for i in 0..N {
        distcache_rs::proto::encode_message(
            &mut reqs,
            false,
            i.wrapping_mul(2654435761),
            distcache_rs::proto::Cmd::Have,
            format!("pipelined-{i}").as_bytes(),
        )
        .unwrap();
    }
    let mut w = app.try_clone().unwrap();
    let writer = std::thread::spawn(move || w.write_all(&reqs).unwrap());
    let want_len = 15 * N as usize;
    let got = read_n(&mut app, want_len);
    writer.join().unwrap();
    let (msgs, used) =
        distcache_rs::proto::decode_all(distcache_rs::proto::Direction::Responses, &got).unwrap();
    assert_eq!(used, want_len);
    assert_eq!(msgs.len(), N as usize);
    for (i, m) in msgs.iter().enumerate() {
        assert_eq!(m.uid, (i as u32).wrapping_mul(2654435761));
        assert_eq!(m.payload, [1]);
    }
}

/// The usual deployment: dc_client on a TCP (or UNIX) front, dc_server over
/// TCP (non-blocking connects, reconnection after the server appears).
#[test]
fn over_tcp_with_the_server_appearing_late() {
    let (sp, cp) = (free_port(), free_port());
    let server = format!("IP:127.0.0.1:{sp}");
    let front = format!("IP:127.0.0.1:{cp}");
    let mut client = Proc::spawn(
        env!("CARGO_BIN_EXE_dc_client"),
        &["-server", &server, "-listen", &front, "-retry", "100"],
    );
    wait_for_tcp(cp);
    // No server yet: immediate failures (empty answers).
    let (code, _, err) = run(
        env!("CARGO_BIN_EXE_dc_test"),
        &["-connect", &front, "-ops", "10"],
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(1));
    assert!(err.contains("empty answer"), "{err}");
    let _srv = Proc::spawn_with(
        env!("CARGO_BIN_EXE_dc_server"),
        &["-listen", &format!("IP:{sp}")],
        Stdio::null(),
        Stdio::null(),
    );
    wait_for_tcp(sp);
    // Within a few retry periods the proxy is connected.
    std::thread::sleep(Duration::from_millis(300));
    dc_test(&[
        "-connect",
        &front,
        "-persistent",
        "-clients",
        "4",
        "-sessions",
        "20",
        "-ops",
        "4000",
    ]);
    dc_test(&["-connect", &front, "-ops", "500"]);
    assert!(client.alive());
}

#[test]
fn dc_server_bad_flags_give_an_error_line_and_nonzero_exit() {
    let exe = env!("CARGO_BIN_EXE_dc_server");
    for args in [
        &["-bogus"][..],
        &[][..],
        &["-listen"][..],
        &["-listen", "NOPE:1"][..],
        &["-listen", "UNIX:/tmp/dcrs-never", "-sessions", "x"][..],
    ] {
        let (code, _, err) = run(exe, args, Duration::from_secs(5));
        assert_ne!(code, Some(0), "{args:?} accepted");
        assert!(code.is_some(), "{args:?}: killed by a signal");
        assert!(err.starts_with("dc_server: "), "{args:?}: {err}");
    }
}

/// `-user`: the listener is made first (as root), then privileges drop
/// before the server is contacted. Needs root; skipped otherwise.
#[test]
fn dc_client_drops_privileges() {
    let uid_line = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .to_string();
    if uid_line.split_whitespace().nth(1) != Some("0") {
        eprintln!("not root: skipped");
        return;
    }
    let dir = TempDir::new("e2e-user");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let _srv = Proc::spawn_with(
        env!("CARGO_BIN_EXE_dc_server"),
        &["-listen", &dir.addr("srv"), "-sockperms", "666"],
        Stdio::null(),
        Stdio::null(),
    );
    wait_for_socket(&dir.path("srv"));
    let client = dc_client(
        &dir,
        &dir.addr("srv"),
        &["-user", "nobody", "-sockperms", "666"],
    );
    // The listener exists before the switch: wait for it.
    let uid_of = |pid: i32| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .unwrap()
            .to_string();
        line.split_whitespace().nth(1).unwrap().to_string()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while uid_of(client.pid()) != "65534" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(uid_of(client.pid()), "65534");
    dc_test(&[
        "-connect",
        &dir.addr("client"),
        "-ops",
        "300",
        "-persistent",
    ]);
}
