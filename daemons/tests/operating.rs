//! What operators rely on: `-logfile` (one style of line, reopened on
//! SIGUSR2 for logrotate) and systemd's readiness protocol (READY=1 only
//! once the socket listens, WATCHDOG=1 from the event loop, STOPPING=1),
//! for both daemons.

mod common;

use common::*;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DC_SERVER: &str = env!("CARGO_BIN_EXE_dc_server");
const DC_CLIENT: &str = env!("CARGO_BIN_EXE_dc_client");

fn signal(p: &Proc, sig: i32) {
    // SAFETY: plain kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(p.pid(), sig) }, 0);
}

/// Wait until `path` holds a line containing `what`; returns the text.
fn wait_for_line(path: &std::path::Path, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().any(|l| l.contains(what)) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "no line with {what:?} in {}: {text:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `2026-12-02 10:25:00 <tool>: ...`
fn styled(line: &str, tool: &str) -> bool {
    let b = line.as_bytes();
    line.len() > 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b' '
        && b[13] == b':'
        && b[16] == b':'
        && line[..19].chars().filter(|c| c.is_ascii_digit()).count() == 14
        && line[19..].starts_with(&format!(" {tool}: "))
}

/// Start `exe` with `args`, lines to `dir/<tool>.log`; rename the file away
/// (as logrotate does), SIGUSR2, and the next lines go to a new file at the
/// path; standard error stays empty throughout.
fn logfile_rotation(exe: &str, tool: &str, dir: &TempDir, args: &[&str], sock: &str) {
    let logf = dir.path(&format!("{tool}.log"));
    let stderr = dir.path(&format!("{tool}.stderr"));
    let mut all: Vec<&str> = args.to_vec();
    let lf = logf.display().to_string();
    all.extend(["-logfile", &lf]);
    let p = Proc::spawn_with(
        exe,
        &all,
        Stdio::null(),
        Stdio::from(std::fs::File::create(&stderr).unwrap()),
    );
    wait_for_socket(&dir.path(sock));
    // SIGUSR2 without a rotation: the same file, one more line.
    signal(&p, libc::SIGUSR2);
    wait_for_line(&logf, "log file reopened");
    let rotated = dir.path(&format!("{tool}.log.1"));
    std::fs::rename(&logf, &rotated).unwrap();
    signal(&p, libc::SIGUSR2);
    let fresh = wait_for_line(&logf, "log file reopened");
    let (code, _) = p.terminate();
    assert_eq!(code, Some(0), "{tool} exit");
    let fresh_after = std::fs::read_to_string(&logf).unwrap();
    assert!(
        fresh_after.len() > fresh.len(),
        "no shutdown line after rotation"
    );
    assert!(
        fresh_after.contains("SIGTERM"),
        "shutdown line in the new file: {fresh_after:?}"
    );
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(!old.contains("SIGTERM"), "old file kept growing: {old:?}");
    for line in old.lines().chain(fresh_after.lines()) {
        assert!(styled(line, tool), "log line style: {line:?}");
    }
    let err = std::fs::read_to_string(&stderr).unwrap();
    assert!(
        err.is_empty(),
        "{tool} wrote to stderr with -logfile: {err:?}"
    );
}

#[test]
fn logfile_is_reopened_on_sigusr2_dc_server() {
    let dir = TempDir::new("logf-s");
    let listen = dir.addr("s");
    logfile_rotation(DC_SERVER, "dc_server", &dir, &["-listen", &listen], "s");
}

#[test]
fn logfile_is_reopened_on_sigusr2_dc_client() {
    let dir = TempDir::new("logf-c");
    let srv = dc_server_logged(&dir, "s", &[]);
    let server = dir.addr("s");
    let listen = dir.addr("c");
    logfile_rotation(
        DC_CLIENT,
        "dc_client",
        &dir,
        &["-server", &server, "-listen", &listen],
        "c",
    );
    drop(srv);
}

#[test]
fn bad_logfile_is_one_line_naming_the_flag() {
    let dir = TempDir::new("logf-bad");
    let listen = dir.addr("s");
    let missing = dir.path("no/such/dir/x.log").display().to_string();
    for (exe, tool, base) in [
        (DC_SERVER, "dc_server", vec!["-listen", listen.as_str()]),
        (
            DC_CLIENT,
            "dc_client",
            vec!["-server", listen.as_str(), "-listen", listen.as_str()],
        ),
    ] {
        for bad in ["", missing.as_str()] {
            let mut args = base.clone();
            args.extend(["-logfile", bad]);
            let (code, _, err) = run(exe, &args, Duration::from_secs(10));
            assert_ne!(code, Some(0), "{tool} -logfile {bad:?}");
            let first = err.lines().next().unwrap_or("");
            assert!(
                first.starts_with(&format!("{tool}: flag -logfile")),
                "{tool} -logfile {bad:?}: {err}"
            );
        }
        assert!(!dir.path("s").exists(), "{tool} left a socket behind");
    }
}

/// The datagrams systemd would get, in order, split into lines.
struct NotifySocket {
    sock: UnixDatagram,
    path: std::path::PathBuf,
}

impl NotifySocket {
    fn new(dir: &TempDir) -> NotifySocket {
        let path = dir.path("notify");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        NotifySocket { sock, path }
    }
    /// The next datagram within `limit`, if any.
    fn next(&self, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.sock.recv(&mut buf) {
                return Some(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        None
    }
}

fn spawn_notified(exe: &str, args: &[&str], n: &NotifySocket, wd_usec: Option<&str>) -> Proc {
    let mut c = Command::new(exe);
    c.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .env("NOTIFY_SOCKET", &n.path);
    if let Some(u) = wd_usec {
        c.env("WATCHDOG_USEC", u);
    }
    Proc {
        child: c.spawn().unwrap(),
        name: exe.into(),
    }
}

/// READY=1 arrives once the socket accepts (not before), WATCHDOG=1 keeps
/// coming at half the interval while the loop runs, STOPPING=1 at SIGTERM.
fn notify_protocol(exe: &str, args: &[&str], sock: &std::path::Path, dir: &TempDir) {
    let n = NotifySocket::new(dir);
    let p = spawn_notified(exe, args, &n, Some("300000"));
    let first = n.next(Duration::from_secs(10)).expect("no READY=1");
    assert!(first.lines().any(|l| l == "READY=1"), "{first:?}");
    assert!(
        first.lines().any(|l| l == format!("MAINPID={}", p.pid())),
        "{first:?}"
    );
    // Ready means listening: a connection succeeds right away.
    UnixStream::connect(sock).expect("READY=1 before the socket listens");
    let t0 = Instant::now();
    let mut pings = 0;
    while t0.elapsed() < Duration::from_millis(1000) {
        if let Some(m) = n.next(Duration::from_millis(400)) {
            assert_eq!(m, "WATCHDOG=1");
            pings += 1;
        } else {
            panic!("no WATCHDOG=1 for 400 ms with WATCHDOG_USEC=300000");
        }
    }
    // Every 150 ms: about 6 in a second; 4 leaves room for a loaded machine.
    assert!(pings >= 4, "{pings} watchdog pings in 1 s");
    signal(&p, libc::SIGTERM);
    let mut stopping = false;
    while let Some(m) = n.next(Duration::from_secs(5)) {
        if m == "STOPPING=1" {
            stopping = true;
            break;
        }
        assert_eq!(m, "WATCHDOG=1");
    }
    assert!(stopping, "no STOPPING=1 after SIGTERM");
    let (code, _) = p.terminate();
    assert_eq!(code, Some(0));

    // No WATCHDOG_USEC: READY=1 and STOPPING=1 only.
    let p = spawn_notified(exe, args, &n, None);
    let first = n.next(Duration::from_secs(10)).expect("no READY=1");
    assert!(first.starts_with("READY=1\n"), "{first:?}");
    assert_eq!(
        n.next(Duration::from_millis(700)),
        None,
        "pings without a watchdog"
    );
    signal(&p, libc::SIGTERM);
    assert_eq!(
        n.next(Duration::from_secs(5)).as_deref(),
        Some("STOPPING=1")
    );
}

#[test]
fn systemd_notifications_dc_server() {
    let dir = TempDir::new("notify-s");
    let listen = dir.addr("s");
    notify_protocol(DC_SERVER, &["-listen", &listen], &dir.path("s"), &dir);
}

#[test]
fn systemd_notifications_dc_client() {
    let dir = TempDir::new("notify-c");
    let srv = dc_server_logged(&dir, "s", &[]);
    let server = dir.addr("s");
    let listen = dir.addr("c");
    notify_protocol(
        DC_CLIENT,
        &["-server", &server, "-listen", &listen],
        &dir.path("c"),
        &dir,
    );
    drop(srv);
}

/// The unit files as `make install` writes them, with `bindir` for @BINDIR@.
fn units(bindir: &str) -> Vec<(String, String)> {
    ["dc_server", "dc_client"]
        .iter()
        .map(|u| {
            let p = repo_root().join(format!("systemd/{u}.service.in"));
            let text = std::fs::read_to_string(&p).unwrap();
            (format!("{u}.service"), text.replace("@BINDIR@", bindir))
        })
        .collect()
}

fn setting<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

/// The units say what the operators' checklist asks for, each its own
/// runtime directory, and `systemd-analyze verify` (where installed)
/// accepts them without a complaint.
#[test]
fn units_are_notify_hardened_and_verified() {
    let bindir = std::path::Path::new(DC_SERVER).parent().unwrap();
    let units = units(&bindir.display().to_string());
    let mut dirs = Vec::new();
    for (name, text) in &units {
        assert_eq!(setting(text, "Type"), ["notify"], "{name}");
        assert_eq!(setting(text, "User"), ["distcache"], "{name}");
        for (k, v) in [
            ("ProtectSystem", "strict"),
            ("PrivateTmp", "yes"),
            ("NoNewPrivileges", "yes"),
            ("RuntimeDirectoryPreserve", "restart"),
        ] {
            assert_eq!(setting(text, k), [v], "{name}: {k}");
        }
        assert!(!setting(text, "WatchdogSec").is_empty(), "{name}");
        dirs.extend(setting(text, "RuntimeDirectory"));
    }
    assert_eq!(dirs, ["distcache-server", "distcache-client"]);
    let sysusers = std::fs::read_to_string(repo_root().join("systemd/distcache.sysusers")).unwrap();
    assert!(
        sysusers.lines().any(|l| l.starts_with("u distcache ")),
        "{sysusers}"
    );
    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze not installed: verify skipped");
        return;
    };
    assert!(out.status.success());
    let dir = TempDir::new("units");
    let mut paths = Vec::new();
    for (name, text) in &units {
        let p = dir.path(name);
        std::fs::write(&p, text).unwrap();
        paths.push(p);
    }
    let out = Command::new("systemd-analyze")
        // The pages are in man/, not installed where man(1) looks.
        .args(["verify", "--man=no"])
        .args(&paths)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let ours: Vec<&str> = err
        .lines()
        .filter(|l| l.contains(&*dir.0.to_string_lossy()))
        .collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify: {err}"
    );
}

/// The units' ExecStart lines, with their Environment defaults expanded
/// and /run/distcache-* moved into a temporary directory, start the real
/// daemons: dc_client's default server is dc_server's default socket.
#[test]
fn unit_command_lines_start_the_daemons() {
    let bindir = std::path::Path::new(DC_SERVER).parent().unwrap();
    let dir = TempDir::new("unit-exec");
    let run = dir.0.display().to_string();
    let mut procs = Vec::new();
    for (name, text) in units(&bindir.display().to_string()) {
        let sub = if name.starts_with("dc_server") {
            "distcache-server"
        } else {
            "distcache-client"
        };
        std::fs::create_dir_all(dir.path(sub)).unwrap();
        let mut line = setting(&text, "ExecStart")[0].to_string();
        for env in setting(&text, "Environment") {
            let (k, v) = env.trim_matches('"').split_once('=').unwrap();
            line = line
                .replace(&format!("${{{k}}}"), v)
                .replace(&format!("${k}"), v);
        }
        let line = line.replace("/run/", &format!("{run}/"));
        assert!(!line.contains('$'), "unexpanded variable: {line}");
        let mut words = line.split_whitespace();
        let exe = words.next().unwrap().to_string();
        let args: Vec<&str> = words.collect();
        let sock = args
            .iter()
            .position(|a| *a == "-listen")
            .map(|i| args[i + 1].trim_start_matches("UNIX:").to_string())
            .unwrap();
        let p = Proc::spawn_with(&exe, &args, Stdio::null(), Stdio::null());
        wait_for_socket(std::path::Path::new(&sock));
        procs.push((name, p));
    }
    for (name, p) in procs.into_iter().rev() {
        let (code, _) = p.terminate();
        assert_eq!(code, Some(0), "{name}");
    }
    assert!(
        dir.path("distcache-server/sessions.snapshot").exists(),
        "dc_server's unit keeps a snapshot in its runtime directory"
    );
}
