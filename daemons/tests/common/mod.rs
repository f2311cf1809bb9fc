//! The daemons crate's test helpers: everything in the core crate's
//! `tests/common` (one copy, shared through `#[path]`) plus what needs the
//! binaries built by this crate.
#![allow(dead_code)]

#[path = "../../../tests/common/mod.rs"]
mod shared;
pub use shared::*;

pub mod metrics;
pub mod pki;
pub mod redis;
pub mod sessiond;

/// Start dc_client with `-server srv -listen UNIX:<dir>/client` and extra args.
pub fn dc_client(dir: &TempDir, server: &str, extra: &[&str]) -> Proc {
    let listen = dir.addr("client");
    let mut args = vec!["-server", server, "-listen", &listen];
    args.extend_from_slice(extra);
    let p = Proc::spawn(env!("CARGO_BIN_EXE_dc_client"), &args);
    wait_for_socket(&dir.path("client"));
    p
}

/// dc_server on `dir/name` with `-sessions 10000` and `extra`, its stderr
/// in `dir/name.log` (a pipe nobody reads could fill up).
pub fn dc_server_logged(dir: &TempDir, name: &str, extra: &[&str]) -> Proc {
    let log = std::fs::File::create(dir.path(&format!("{name}.log"))).unwrap();
    let listen = dir.addr(name);
    let mut args = vec!["-listen", &listen, "-sessions", "10000"];
    args.extend_from_slice(extra);
    let p = Proc::spawn_with(
        env!("CARGO_BIN_EXE_dc_server"),
        &args,
        std::process::Stdio::null(),
        std::process::Stdio::from(log),
    );
    wait_for_socket(&dir.path(name));
    p
}

/// dc_client on `dir/client` in front of `server`, its stderr in
/// `dir/client.log`.
pub fn dc_client_logged(dir: &TempDir, server: &str, extra: &[&str]) -> Proc {
    let log = std::fs::File::create(dir.path("client.log")).unwrap();
    let listen = dir.addr("client");
    let mut args = vec!["-server", server, "-listen", &listen];
    args.extend_from_slice(extra);
    let p = Proc::spawn_with(
        env!("CARGO_BIN_EXE_dc_client"),
        &args,
        std::process::Stdio::null(),
        std::process::Stdio::from(log),
    );
    wait_for_socket(&dir.path("client"));
    p
}

/// dc_server on `dir/name` (only `-listen` and `extra`), its stderr in
/// `dir/name.log`.
pub struct Srv {
    pub proc: Proc,
    pub sock: std::path::PathBuf,
    pub log: std::path::PathBuf,
}

impl Srv {
    pub fn start(dir: &TempDir, name: &str, extra: &[&str]) -> Srv {
        let sock = dir.path(name);
        let log = dir.path(&format!("{name}.log"));
        let listen = format!("UNIX:{}", sock.display());
        let mut args = vec!["-listen", listen.as_str()];
        args.extend_from_slice(extra);
        let proc = Proc::spawn_with(
            env!("CARGO_BIN_EXE_dc_server"),
            &args,
            std::process::Stdio::null(),
            std::process::Stdio::from(std::fs::File::create(&log).unwrap()),
        );
        wait_for_socket(&sock);
        // The socket listens before the pid file is written and the loop
        // runs; the "listening on" line comes after both.
        let t0 = std::time::Instant::now();
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("listening on")
        {
            if t0.elapsed() > std::time::Duration::from_secs(10) {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("dc_server {name} never said it listens: {text}");
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // Let the readiness probe's connection go away.
        std::thread::sleep(std::time::Duration::from_millis(50));
        Srv { proc, sock, log }
    }
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    pub fn addr(&self) -> String {
        format!("UNIX:{}", self.sock.display())
    }
    pub fn conn(&self) -> std::os::unix::net::UnixStream {
        connect(&self.sock)
    }
}

/// A field of dc_test's machine-readable last line (`key=value`).
pub fn last_line_field(out: &str, key: &str) -> u64 {
    let last = out.lines().last().unwrap_or("");
    last.split_whitespace()
        .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in {last:?}"))
        .parse()
        .unwrap()
}

/// Whether a Debian binary a test needs (`exe`) is installed. Outside CI a
/// machine without it skips `test` with a message; under CI (env CI=true,
/// where .ci/run installs it) it must be there.
pub fn have_binary(exe: &str, test: &str) -> bool {
    if std::path::Path::new(exe).exists() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{exe} is missing under CI (.ci/run installs it)"
    );
    eprintln!("{test}: SKIPPED, {exe} is not installed");
    false
}

/// dc_test through `target` (4 clients, 40 sessions, 3000 operations,
/// `-persistent` or not): every answer correct.
pub fn dc_test(target: &str, persistent: bool) {
    let mut args = vec![
        "-connect",
        target,
        "-clients",
        "4",
        "-sessions",
        "40",
        "-ops",
        "3000",
        "-seed",
        "17",
    ];
    if persistent {
        args.push("-persistent");
    }
    let (code, out, err) = run(
        env!("CARGO_BIN_EXE_dc_test"),
        &args,
        std::time::Duration::from_secs(120),
    );
    assert_eq!(code, Some(0), "dc_test {args:?}: {out}{err}");
    assert!(
        out.contains("failures=0 lost=0 errors=0"),
        "dc_test {args:?}: {out}{err}"
    );
}

/// Wait (at most `limit`) until the daemon listening on `target` serves
/// from its store: an ADD of a fresh id through it is stored.
pub fn wait_served(target: &str, limit: std::time::Duration) {
    use distcache_rs::client::{AddOutcome, Client, FLAG_PERSISTENT};
    let c = Client::new(target, FLAG_PERSISTENT).unwrap();
    let t0 = std::time::Instant::now();
    for n in 0.. {
        let id = format!("probe-{n}");
        if c.add(id.as_bytes(), b"probe data", 60_000).ok() == Some(AddOutcome::Stored) {
            return;
        }
        assert!(
            t0.elapsed() < limit,
            "{target} does not serve from its store within {limit:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
