//! Fault and hostile-input tests against a live dc_server (issue 8):
//! -idle/-stall limits, every malformed wire.json case while other clients
//! keep being served, dribbled/truncated/oversized/random streams, silent
//! connections, SIGSTOP with DC_CTX callers, file-system faults, socket
//! permissions and -user group dropping. UNIX sockets in a temp directory
//! only; every wait is bounded.

mod common;

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::process::Stdio;
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_dc_server");

fn frame(uid: u32, op: u8, complete: bool, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0x00, 0x11, 0x00, 0x00, 0x00];
    v.extend_from_slice(&uid.to_be_bytes());
    v.extend_from_slice(&[0, op, complete as u8]);
    v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

fn xorshift_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

// ------------------------------------------------------------- limits ----

#[test]
fn idle_connections_are_closed_after_idle_and_busy_ones_are_not() {
    let dir = TempDir::new("flt-idle");
    let srv = Srv::start(&dir, "s", &["-idle", "700", "-stall", "0"]);
    let t0 = Instant::now();
    let mut silent = srv.conn();
    let mut busy = srv.conn();
    // The busy client talks every 150 ms for 1.6 s: never idle.
    for i in 0..8 {
        check_served(&mut busy, "busy", i);
        sleep(Duration::from_millis(200));
    }
    assert!(closed_within(&mut silent, Duration::from_secs(3)));
    assert!(
        t0.elapsed() >= Duration::from_millis(500),
        "closed too early"
    );
    check_served(&mut busy, "busy", 99);
    assert!(srv.log().contains("(-idle)"), "{}", srv.log());
}

#[test]
fn stalled_requests_and_unread_answers_are_closed() {
    let dir = TempDir::new("flt-stall");
    let srv = Srv::start(&dir, "s", &["-stall", "800", "-idle", "0"]);
    let mut setup = srv.conn();
    let big = vec![0x42u8; 30_000];
    assert_eq!(
        transact(
            &mut setup,
            &request(1, 0, &add_payload(60_000, b"big", &big))
        ),
        vec![0]
    );
    // Slowloris: a frame that never completes, one byte every 100 ms.
    let req = request(2, 0, &add_payload(60_000, b"slow", &[7u8; 1000]));
    let slow_path = srv.sock.clone();
    let slowloris = std::thread::spawn(move || {
        let mut s = connect(&slow_path);
        let t0 = Instant::now();
        for b in &req[..req.len() - 1] {
            if s.write_all(&[*b]).is_err() {
                return Some(t0.elapsed());
            }
            sleep(Duration::from_millis(100));
            if t0.elapsed() > Duration::from_secs(8) {
                break;
            }
        }
        None
    });
    // A reader that never reads: 200 pipelined GETs of 30 KB.
    let mut hog = srv.conn();
    hog.set_nonblocking(true).unwrap();
    let get = request(3, 1, b"big");
    for _ in 0..200 {
        if hog.write_all(&get).is_err() {
            break;
        }
    }
    hog.set_nonblocking(false).unwrap();
    // A client dribbling whole small requests byte by byte (20 ms per byte,
    // each frame done well within -stall) keeps being served.
    let mut dribbler = srv.conn();
    for n in 0..6u32 {
        let id = format!("drib-{n}");
        let req = request(n, 0, &add_payload(60_000, id.as_bytes(), b"d"));
        for b in &req {
            dribbler.write_all(&[*b]).unwrap();
            sleep(Duration::from_millis(20));
        }
        assert_eq!(read_msg(&mut dribbler).unwrap().2, vec![0]);
    }
    let killed_after = slowloris.join().unwrap();
    assert!(
        killed_after.is_some(),
        "a never-completing frame was not dropped"
    );
    // The hog is cut off: its socket ends (after what was already sent).
    assert!(closed_within(&mut hog, Duration::from_secs(10)));
    check_served(&mut setup, "after", 1);
    let log = srv.log();
    assert!(log.contains("(-stall)"), "{log}");
}

// ------------------------------------------------------ hostile input ----

/// Every malformed request case of wire.json, each on its own connection,
/// while five persistent clients keep getting correct answers.
#[test]
fn every_malformed_wire_case_closes_only_its_connection() {
    let dir = TempDir::new("flt-wire");
    let mut srv = Srv::start(&dir, "s", &[]);
    let mut good: Vec<UnixStream> = (0..5).map(|_| srv.conn()).collect();
    let cases = wire_cases();
    let mut tried = 0;
    for c in &cases {
        let reaction = c.str("server_reaction").unwrap_or("");
        let leg = c.str("leg").unwrap_or("");
        if leg != "app->dc_server" || !matches!(reaction, "close" | "abort") {
            continue;
        }
        let name = c.str("name").unwrap();
        let mut bad = srv.conn();
        bad.write_all(&unhex(c.str("request_hex").unwrap()))
            .unwrap();
        // Half-close like the capture's end of input; the server must end
        // the connection (after any answers the case has).
        let _ = bad.shutdown(std::net::Shutdown::Write);
        assert!(
            closed_within(&mut bad, Duration::from_secs(3)),
            "{name}: not closed"
        );
        for (i, g) in good.iter_mut().enumerate() {
            check_served(g, name, i as u32);
        }
        tried += 1;
    }
    assert!(tried >= 25, "only {tried} malformed cases");
    assert!(srv.proc.alive());
}

#[test]
fn truncated_dribbled_oversized_and_random_streams() {
    let dir = TempDir::new("flt-hostile");
    let mut srv = Srv::start(&dir, "s", &["-sessions", "1000"]);
    let mut good = srv.conn();
    let mut n = 0u32;
    let mut served = |g: &mut UnixStream| {
        n += 1;
        check_served(g, "good", n);
    };

    // Truncated: a multi-frame ADD cut at many points, then closed.
    let full = request(5, 0, &add_payload(60_000, b"trunc", &[1u8; 5000]));
    for cut in [1, 4, 5, 13, 14, 15, 2061, 2062, 2063, 4124, full.len() - 1] {
        let mut s = srv.conn();
        s.write_all(&full[..cut]).unwrap();
        drop(s);
    }
    served(&mut good);
    let mut probe = srv.conn();
    assert_eq!(transact(&mut probe, &request(6, 3, b"trunc")), vec![1]);

    // Dribbled: the largest message (16 full frames, 32768 bytes), one byte
    // per write, is stored and read back whole.
    let data: Vec<u8> = (0..32768 - 8 - 5).map(|i| (i % 251) as u8).collect();
    let max = request(7, 0, &add_payload(60_000, b"max-1", &data));
    assert_eq!(max.len(), 16 * (14 + 2048));
    let mut d = srv.conn();
    for b in &max {
        d.write_all(&[*b]).unwrap();
    }
    assert_eq!(read_msg(&mut d).unwrap().2, vec![0]);
    assert_eq!(transact(&mut d, &request(8, 1, b"max-1")), data);
    served(&mut good);

    // 16 full frames plus an empty final one: accepted (as the original).
    let mut msg = Vec::new();
    let payload = add_payload(60_000, b"max-2", &data);
    for chunk in payload.chunks(2048) {
        msg.extend_from_slice(&frame(9, 0, false, chunk));
    }
    msg.extend_from_slice(&frame(9, 0, true, &[]));
    let mut s = srv.conn();
    assert_eq!(transact(&mut s, &msg), vec![0]);
    // 17 full frames: closed.
    let mut msg = Vec::new();
    for _ in 0..17 {
        msg.extend_from_slice(&frame(10, 0, false, &[0u8; 2048]));
    }
    let mut s = srv.conn();
    let _ = s.write_all(&msg);
    assert!(closed_within(&mut s, Duration::from_secs(3)), "17 frames");
    served(&mut good);

    // data_len 0xFFFF and 2049: closed at once, without waiting for data.
    for len in [0xFFFFu16, 2049] {
        let mut h = frame(11, 1, true, &[]);
        h[12..14].copy_from_slice(&len.to_be_bytes());
        let mut s = srv.conn();
        s.write_all(&h).unwrap();
        assert!(closed_within(&mut s, Duration::from_secs(3)), "len {len}");
    }
    // ADD with id_len 2^32-1 and timeout 2^32-1: answered, not trusted.
    let mut p = u32::MAX.to_be_bytes().to_vec();
    p.extend_from_slice(&u32::MAX.to_be_bytes());
    p.extend_from_slice(b"xyz");
    let mut s = srv.conn();
    assert_eq!(transact(&mut s, &request(12, 0, &p)), vec![102]);
    let mut p = 1000u32.to_be_bytes().to_vec();
    p.extend_from_slice(&u32::MAX.to_be_bytes());
    p.extend_from_slice(b"xyz");
    assert_eq!(transact(&mut s, &request(13, 0, &p)), vec![100]);
    served(&mut good);

    // Random bytes, and random bytes after a valid header prefix.
    for seed in 1..=20u64 {
        let mut bytes = xorshift_bytes(seed, 3000);
        if seed % 2 == 0 {
            bytes[..5].copy_from_slice(&[0, 0x11, 0, 0, 0]);
        }
        let mut s = srv.conn();
        let _ = s.write_all(&bytes);
        drop(s);
    }
    served(&mut good);

    // Connections that connect and send nothing: 500 of them, held open
    // while real clients are served.
    let silent: Vec<UnixStream> = (0..500).map(|_| srv.conn()).collect();
    for _ in 0..5 {
        let mut c = srv.conn();
        served(&mut c);
    }
    drop(silent);
    served(&mut good);
    assert!(srv.proc.alive());
}

// ------------------------------------------------------------- faults ----

/// dc_server stopped (SIGSTOP) for 3 s under DC_CTX load: every call
/// returns within the I/O bound, none returns wrong data, and service
/// resumes by itself after SIGCONT.
#[test]
fn sigstop_gives_bounded_failures_and_recovery() {
    let dir = TempDir::new("flt-stop");
    let srv = Srv::start(&dir, "s", &["-sessions", "100000"]);
    let addr = srv.addr();
    // libdistcache's default bound (DISTCACHE_IO_TIMEOUT_MS).
    let io_ms = distcache_rs::client::DEFAULT_IO_TIMEOUT_MS;
    let mut load = Load::start(LoadSpec {
        target: &addr,
        workers: 4,
        id_prefix: "stop",
        repeat: 10,
        pause: Pause::EveryIteration(Duration::from_millis(2)),
        // A failed ADD has waited out the bound already: no GET after it.
        get_after_failed_add: false,
    });
    sleep(Duration::from_millis(400));
    assert_eq!(load.failures(), 0, "failures before SIGSTOP");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(srv.proc.pid(), libc::SIGSTOP) };
    sleep(Duration::from_secs(3));
    let during = load.failures();
    let ok_before_cont = load.successes();
    // SAFETY: as above.
    unsafe { libc::kill(srv.proc.pid(), libc::SIGCONT) };
    assert!(during > 0, "no failure while the server was stopped");
    load.wait_for_successes(ok_before_cont + 100, Duration::from_secs(5));
    for r in load.stop() {
        let worst = r.unwrap();
        // Each call is bounded by the I/O timeout per phase (connect,
        // send, receive), with slack for a loaded machine; an iteration
        // is one call (a failed ADD) or an ADD and a GET that both answer.
        assert!(
            worst < Duration::from_millis(3 * io_ms + 2000),
            "an operation took {worst:?}"
        );
    }
    assert!(
        load.successes() >= ok_before_cont + 100,
        "service did not resume after SIGCONT"
    );
}

// ------------------------------------------------------- file system ----

fn run_srv(args: &[&str]) -> (Option<i32>, String) {
    let (code, _, err) = run(BIN, args, Duration::from_secs(10));
    (code, err)
}

fn one_line(err: &str) -> &str {
    let mut lines = err.lines();
    let first = lines.next().unwrap_or("");
    assert!(lines.next().is_none(), "more than one line: {err}");
    first
}

#[test]
fn file_system_faults_give_one_line_errors_and_delete_nothing() {
    let dir = TempDir::new("flt-fs");
    let sock = dir.addr("a");
    // Pid file directory missing.
    let (code, err) = run_srv(&["-listen", &sock, "-pidfile", &dir.addr("nodir/x.pid")[5..]]);
    assert_ne!(code, Some(0));
    assert!(one_line(&err).contains("does not exist"), "{err}");
    assert!(!dir.path("a").exists(), "socket left behind");
    // Pid file "directory" is a regular file.
    fs::write(dir.path("file"), b"x").unwrap();
    let pf = dir.path("file").join("x.pid");
    let (code, err) = run_srv(&["-listen", &sock, "-pidfile", pf.to_str().unwrap()]);
    assert_ne!(code, Some(0));
    assert!(one_line(&err).contains("cannot write pid file"), "{err}");
    // Pid file directory not writable (a read-only file system for root).
    let (code, err) = run_srv(&["-listen", &sock, "-pidfile", "/proc/dcrs-test.pid"]);
    assert_ne!(code, Some(0));
    assert!(one_line(&err).contains("cannot write pid file"), "{err}");
    assert!(!dir.path("a").exists());
    // Socket directory missing / not writable.
    let (code, err) = run_srv(&["-listen", &dir.addr("nodir/s")]);
    assert_ne!(code, Some(0));
    assert!(one_line(&err).contains("cannot listen"), "{err}");
    let (code, err) = run_srv(&["-listen", "UNIX:/proc/dcrs-test.sock"]);
    assert_ne!(code, Some(0));
    assert!(one_line(&err).contains("cannot listen"), "{err}");

    // A live server with a pid file: a second one on the same socket, or
    // with the same pid file, fails and removes neither.
    let pid_a = dir.path("a.pid");
    let mut a = Srv::start(&dir, "a", &["-pidfile", pid_a.to_str().unwrap()]);
    let (code, err) = run_srv(&["-listen", &sock]);
    assert_ne!(code, Some(0));
    assert!(one_line(&err).contains("another process"), "{err}");
    let (code, err) = run_srv(&[
        "-listen",
        &dir.addr("b"),
        "-pidfile",
        pid_a.to_str().unwrap(),
    ]);
    assert_ne!(code, Some(0));
    assert!(
        one_line(&err).contains("belongs to running process"),
        "{err}"
    );
    assert!(
        !dir.path("b").exists(),
        "second server's socket left behind"
    );
    assert_eq!(
        fs::read_to_string(&pid_a).unwrap().trim(),
        a.proc.pid().to_string()
    );
    let mut c = a.conn();
    check_served(&mut c, "still-a", 1);
    // SIGKILL leaves a stale socket and pid file: a restart replaces both.
    a.proc.kill9();
    assert!(dir.path("a").exists() && pid_a.exists());
    let b = Srv::start(&dir, "a", &["-pidfile", pid_a.to_str().unwrap()]);
    assert_eq!(
        fs::read_to_string(&pid_a).unwrap().trim(),
        b.proc.pid().to_string()
    );
    let mut c = b.conn();
    check_served(&mut c, "restarted", 1);
    let (code, _) = b.proc.terminate();
    assert_eq!(code, Some(0));
    assert!(!pid_a.exists() && !dir.path("a").exists());
}

// ------------------------------------------------------ safe defaults ----

/// Without -sockperms the socket mode comes from the umask, as bind(2)
/// gives it (the original's behaviour): never wider than 0777 & ~umask.
#[test]
fn socket_mode_follows_the_umask() {
    let dir = TempDir::new("flt-perm");
    for (umask, want) in [("022", 0o755), ("077", 0o700), ("007", 0o770)] {
        let sock = dir.path(&format!("u{umask}"));
        let script = format!("umask {umask}; exec {BIN} -listen UNIX:{}", sock.display());
        let p = Proc::spawn_with("sh", &["-c", &script], Stdio::null(), Stdio::null());
        wait_for_socket(&sock);
        let mode = fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, want, "umask {umask}");
        drop(p);
    }
}

fn status_field(pid: i32, key: &str) -> Vec<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("no {key} in status"));
    line[key.len()..]
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect()
}

/// -user: uid and gid switch, and root's supplementary groups are replaced
/// by the user's own (none of root's stay).
#[test]
fn user_switch_drops_supplementary_groups() {
    // SAFETY: getuid() takes no arguments and cannot fail.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("SKIPPED: needs root to switch users");
        return;
    }
    let nobody = distcache_tools::tools::lookup_user("nobody").unwrap();
    // Give the starting process extra groups, as a root shell may have.
    let dir = TempDir::new("flt-user");
    fs::set_permissions(&dir.0, fs::Permissions::from_mode(0o777)).unwrap();
    let sock = dir.path("s");
    let mut cmd = std::process::Command::new(BIN);
    cmd.args([
        "-listen",
        &format!("UNIX:{}", sock.display()),
        "-user",
        "nobody",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    use std::os::unix::process::CommandExt;
    // SAFETY: setgroups is async-signal-safe; the array outlives the call.
    unsafe {
        cmd.pre_exec(|| {
            let groups: [libc::gid_t; 3] = [0, 4, 27];
            if libc::setgroups(3, groups.as_ptr()) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    let mut p = Proc {
        child,
        name: "dc_server".into(),
    };
    wait_for_socket(&sock);
    let deadline = Instant::now() + Duration::from_secs(5);
    while status_field(p.pid(), "Uid:")[0] != nobody.uid {
        assert!(Instant::now() < deadline, "never switched user");
        sleep(Duration::from_millis(10));
    }
    assert!(status_field(p.pid(), "Uid:")
        .iter()
        .all(|&u| u == nobody.uid));
    assert!(status_field(p.pid(), "Gid:")
        .iter()
        .all(|&g| g == nobody.gid));
    let groups = status_field(p.pid(), "Groups:");
    for g in [0, 4, 27] {
        assert!(
            !groups.contains(&g) || g == nobody.gid,
            "supplementary group {g} kept: {groups:?}"
        );
    }
    assert!(p.alive());
}

#[test]
fn limit_flags_are_documented_and_checked() {
    let (code, out, _) = run(BIN, &["-h"], Duration::from_secs(10));
    assert_eq!(code, Some(0));
    for f in ["-idle", "-stall", "-maxconns"] {
        assert!(out.contains(f), "usage lacks {f}: {out}");
    }
    for (flag, bad) in [("-idle", "-1"), ("-stall", "abc"), ("-idle", "99999999999")] {
        let (code, err) = run_srv(&["-listen", "UNIX:/tmp/dcrs-never", flag, bad]);
        assert_ne!(code, Some(0));
        assert!(err.lines().next().unwrap_or("").contains(flag), "{err}");
    }
    let (code, out, _) = run(
        env!("CARGO_BIN_EXE_dc_client"),
        &["-h"],
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(0));
    assert!(out.contains("-maxconns"), "{out}");
}
