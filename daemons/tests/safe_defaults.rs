//! Safe defaults and honest warnings (issue 14 item 4, issue 13 finding 7),
//! tested through the real binaries: pid files that never follow a
//! symbolic link, warnings for exposed TCP listeners, squatted UNIX socket
//! paths, socket modes applied before the socket appears, files removable
//! by the `-user` at exit, and the sessiond source allow list.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

const SERVER: &str = env!("CARGO_BIN_EXE_dc_server");
const CLIENT: &str = env!("CARGO_BIN_EXE_dc_client");

/// Run a tool that is expected to fail at start-up.
fn run_fail(exe: &str, args: &[&str]) -> String {
    let (code, _, err) = run(exe, args, Duration::from_secs(10));
    assert_ne!(code, Some(0), "{exe} {args:?} started: {err}");
    err
}

/// Wait until `path` no longer exists.
fn gone_within(path: &Path, limit: Duration) -> bool {
    let t0 = Instant::now();
    while path.exists() || fs::symlink_metadata(path).is_ok() {
        if t0.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// Wait until the pid file at `path` holds `pid`. The socket appears when
/// the daemon binds it (as root, before `-user`); the pid file is written
/// after that, so a test must not read it the moment the socket exists.
fn pidfile_holds(path: &Path, pid: impl std::fmt::Display) -> bool {
    let t0 = Instant::now();
    let want = format!("{pid}\n");
    while fs::read_to_string(path).ok().as_deref() != Some(want.as_str()) {
        if t0.elapsed() > Duration::from_secs(10) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

// ------------------------------------------------------------ pid files

/// A symbolic link planted at the -pidfile path is refused with one line
/// naming the flag and the path, and the link's target is not touched
/// (issue 13 finding 7). Both daemons.
#[test]
fn pidfile_symlink_is_refused_and_target_untouched() {
    let dir = TempDir::new("sd-pidlink");
    let target = dir.path("precious");
    fs::write(&target, b"root's data\n").unwrap();
    let link = dir.path("x.pid");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let link_s = link.to_str().unwrap();
    for (exe, args) in [
        (
            SERVER,
            vec!["-listen", &dir.addr("s")[..], "-pidfile", link_s],
        ),
        (
            CLIENT,
            vec![
                "-server",
                "IP:127.0.0.1:9",
                "-listen",
                &dir.addr("c")[..],
                "-pidfile",
                link_s,
            ],
        ),
    ] {
        let err = run_fail(exe, &args);
        let line = err.lines().next().unwrap_or_default();
        assert!(
            line.contains("-pidfile") && line.contains(link_s) && line.contains("symbolic link"),
            "{exe}: {err}"
        );
        assert_eq!(fs::read(&target).unwrap(), b"root's data\n", "{exe}");
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        // No temporary file left behind, no socket left behind.
        let names: Vec<_> = fs::read_dir(&dir.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(sorted, ["precious", "x.pid"], "{exe}: {names:?}");
    }
    // A dangling link (to a file that does not exist yet) is refused too,
    // and nothing is created at its target.
    let dangling = dir.path("d.pid");
    std::os::unix::fs::symlink(dir.path("created"), &dangling).unwrap();
    let err = run_fail(
        SERVER,
        &[
            "-listen",
            &dir.addr("s"),
            "-pidfile",
            dangling.to_str().unwrap(),
        ],
    );
    assert!(err.contains("symbolic link"), "{err}");
    assert!(!dir.path("created").exists());
    // A directory or a socket at the path: not a regular file.
    fs::create_dir(dir.path("adir")).unwrap();
    let err = run_fail(
        SERVER,
        &[
            "-listen",
            &dir.addr("s"),
            "-pidfile",
            dir.path("adir").to_str().unwrap(),
        ],
    );
    let line = err.lines().next().unwrap_or_default();
    assert!(
        line.contains("-pidfile") && line.contains("not a regular file"),
        "{err}"
    );
}

/// A stale regular pid file is replaced (a new inode renamed over it), the
/// file holds our pid, and it is removed at exit.
#[test]
fn pidfile_replaced_and_removed_at_exit() {
    let dir = TempDir::new("sd-pidreg");
    let pf = dir.path("srv.pid");
    // A pid nobody runs: stale.
    fs::write(&pf, b"999999999\n").unwrap();
    let old_ino = fs::metadata(&pf).unwrap().ino();
    let p = Proc::spawn(
        SERVER,
        &["-listen", &dir.addr("s"), "-pidfile", pf.to_str().unwrap()],
    );
    wait_for_socket(&dir.path("s"));
    assert!(pidfile_holds(&pf, p.pid()), "{pf:?} never held our pid");
    let md = fs::symlink_metadata(&pf).unwrap();
    assert!(md.file_type().is_file());
    assert_ne!(md.ino(), old_ino, "written in place instead of renamed");
    assert_eq!(md.mode() & 0o777, 0o644);
    assert_eq!(fs::read_to_string(&pf).unwrap(), format!("{}\n", p.pid()));
    let (code, err) = p.terminate();
    assert_eq!(code, Some(0), "{err}");
    assert!(!pf.exists(), "pid file left behind");
    // dc_client too (also with a relative path and -daemon, which changes
    // directory to /: the path is resolved before).
    let pc = dir.path("cli.pid");
    let c = Proc::spawn(
        CLIENT,
        &[
            "-server",
            "IP:127.0.0.1:9",
            "-listen",
            &dir.addr("c"),
            "-pidfile",
            pc.to_str().unwrap(),
        ],
    );
    wait_for_socket(&dir.path("c"));
    assert!(pidfile_holds(&pc, c.pid()), "{pc:?} never held our pid");
    let (code, err) = c.terminate();
    assert_eq!(code, Some(0), "{err}");
    assert!(!pc.exists(), "dc_client pid file left behind");
    let script = format!(
        "cd {} && exec {CLIENT} -server IP:127.0.0.1:9 -listen {} -daemon -pidfile rel.pid",
        dir.0.display(),
        dir.addr("d")
    );
    let (code, _, err) = run("sh", &["-c", &script], Duration::from_secs(10));
    assert_eq!(code, Some(0), "{err}");
    let rel = dir.path("rel.pid");
    let pid: i32 = fs::read_to_string(&rel).unwrap().trim().parse().unwrap();
    // SAFETY: plain kill(2) of the daemon this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    assert!(
        gone_within(&rel, Duration::from_secs(5)),
        "daemon's pid file left behind"
    );
}

/// A pid file that another process overwrote with its own pid is left to
/// that process at exit.
#[test]
fn pidfile_with_another_pid_is_not_removed() {
    let dir = TempDir::new("sd-pidother");
    let pf = dir.path("srv.pid");
    let p = Proc::spawn(
        SERVER,
        &["-listen", &dir.addr("s"), "-pidfile", pf.to_str().unwrap()],
    );
    wait_for_socket(&dir.path("s"));
    assert!(pidfile_holds(&pf, p.pid()), "{pf:?} never held our pid");
    fs::write(&pf, b"12345\n").unwrap();
    let (code, err) = p.terminate();
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(fs::read_to_string(&pf).unwrap(), "12345\n");
    // Replaced by a symbolic link meanwhile: neither the link nor its
    // target is removed.
    let target = dir.path("t");
    let p = Proc::spawn(
        SERVER,
        &[
            "-listen",
            &dir.addr("s"),
            "-pidfile",
            dir.path("b.pid").to_str().unwrap(),
        ],
    );
    wait_for_socket(&dir.path("s"));
    let pid = p.pid();
    assert!(
        pidfile_holds(&dir.path("b.pid"), pid),
        "b.pid never held our pid"
    );
    fs::write(&target, format!("{pid}\n")).unwrap();
    fs::remove_file(dir.path("b.pid")).unwrap();
    std::os::unix::fs::symlink(&target, dir.path("b.pid")).unwrap();
    let (code, err) = p.terminate();
    assert_eq!(code, Some(0), "{err}");
    assert!(fs::symlink_metadata(dir.path("b.pid")).is_ok());
    assert_eq!(fs::read_to_string(&target).unwrap(), format!("{pid}\n"));
}

// ------------------------------------------------------------ exposed TCP listeners

/// A TCP listener on the wildcard gets one start-up warning that names the
/// flag and the address; an explicit loopback address gets none. Both
/// daemons, since both carry sessions without authentication.
#[test]
fn wildcard_tcp_listen_warns_and_loopback_does_not() {
    let dir = TempDir::new("expose");
    // dc_server on every interface.
    let port = free_port();
    let wild = format!("IP:{port}");
    let p = Proc::spawn(SERVER, &["-listen", &wild]);
    wait_for_tcp(port);
    let (code, err) = p.terminate();
    assert_eq!(code, Some(0), "{err}");
    let want = format!(
        "warning: -listen address 0.0.0.0:{port} is not loopback or private (the wildcard: every interface); there is no authentication"
    );
    assert_eq!(err.matches(&want).count(), 1, "{err}");
    // dc_server on loopback: silent.
    let port = free_port();
    let lo = format!("IP:127.0.0.1:{port}");
    let p = Proc::spawn(SERVER, &["-listen", &lo]);
    wait_for_tcp(port);
    let (code, err) = p.terminate();
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("warning"), "{err}");
    // dc_client listening on the wildcard (its upstream need not exist).
    let port = free_port();
    let wild = format!("IP:0.0.0.0:{port}");
    let upstream = dir.addr("none");
    let p = Proc::spawn(CLIENT, &["-listen", &wild, "-server", &upstream]);
    wait_for_tcp(port);
    let (_, err) = p.terminate();
    let want = format!("warning: -listen address 0.0.0.0:{port} is not loopback or private");
    assert_eq!(err.matches(&want).count(), 1, "{err}");
}

// ------------------------------------------------------------ squatted socket paths

/// A live socket at dc_client's listen path that belongs to another user
/// is named in the refusal (who took the path); a live socket of our own
/// is refused without that note.
#[test]
fn a_squatted_listen_path_names_the_squatter() {
    let dir = TempDir::new("squat");
    let path = dir.path("scache");
    let addr = dir.addr("scache");
    let upstream = dir.addr("none");
    let _mine = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let err = run_fail(CLIENT, &["-listen", &addr, "-server", &upstream]);
    assert!(
        err.contains("another process is accepting connections there"),
        "{err}"
    );
    assert!(!err.contains("belongs to user"), "{err}");
    // SAFETY: geteuid takes no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: cannot hand the socket to another user; skipping that half");
        return;
    }
    let nobody = distcache_rs::sysdb::lookup_user("nobody").unwrap();
    std::os::unix::fs::chown(&path, Some(nobody.uid), None).unwrap();
    let err = run_fail(CLIENT, &["-listen", &addr, "-server", &upstream]);
    let want = format!("(the socket belongs to user nobody, uid {}:", nobody.uid);
    assert!(err.contains(&want), "{err}");
    // -sockowner nobody: the socket is expected to be nobody's; no note.
    let err = run_fail(
        CLIENT,
        &[
            "-listen",
            &addr,
            "-server",
            &upstream,
            "-sockowner",
            "nobody",
        ],
    );
    assert!(!err.contains("belongs to user"), "{err}");
    // dc_server shares the listener code.
    let err = run_fail(SERVER, &["-listen", &addr]);
    assert!(err.contains(&want), "{err}");
}

/// A socket file appears at the listen path only once it accepts, with
/// its -sockperms mode already set: a client (Apache, the next dc_client)
/// that connects the moment the file exists is never refused, and never
/// finds a socket with the default mode. Both daemons, several starts.
#[test]
fn socket_file_appears_only_when_it_accepts_with_its_final_mode() {
    let dir = TempDir::new("sock-appears");
    let srv_sock = dir.path("srv");
    let mut kept = None;
    for (exe, name) in [(SERVER, "srv"), (CLIENT, "cli")] {
        for round in 0..10 {
            let sock = dir.path(name);
            let listen = dir.addr(name);
            let server = format!("UNIX:{}", srv_sock.display());
            let mut args = vec!["-listen", listen.as_str(), "-sockperms", "0600"];
            if exe == CLIENT {
                args.extend(["-server", server.as_str()]);
            }
            let mut p = Proc::spawn(exe, &args);
            let t0 = Instant::now();
            while fs::symlink_metadata(&sock).is_err() {
                assert!(
                    t0.elapsed() < Duration::from_secs(10) && p.alive(),
                    "{name}: no socket"
                );
                std::hint::spin_loop();
            }
            let mode = fs::symlink_metadata(&sock).unwrap().mode() & 0o777;
            let conn = std::os::unix::net::UnixStream::connect(&sock);
            assert!(conn.is_ok(), "{name} round {round}: {conn:?}");
            assert_eq!(mode, 0o600, "{name} round {round}");
            if exe == SERVER && round == 9 {
                // The last dc_server stays for the dc_client rounds.
                kept = Some(p);
            } else {
                let (code, _) = p.terminate();
                assert_eq!(code, Some(0));
            }
        }
    }
    let (code, _) = kept.unwrap().terminate();
    assert_eq!(code, Some(0));
    let leftovers: Vec<_> = fs::read_dir(&dir.0)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".dc_listen"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

// ------------------------------------------------------------ start-up window

/// A stop signal sent the moment the socket appears (what a supervisor or
/// an impatient operator does) is a clean stop: exit 0, socket and pid file
/// removed. The socket listens before the signal handling is set up, so the
/// daemons hold those signals from before they bind. Repeated, as the
/// window is short.
#[test]
fn sigterm_as_soon_as_the_socket_appears_is_a_clean_stop() {
    let dir = TempDir::new("sd-early");
    for round in 0..20 {
        for (exe, extra) in [
            (SERVER, vec![]),
            (CLIENT, vec!["-server", "IP:127.0.0.1:9"]),
        ] {
            let sock = dir.path("s");
            let pf = dir.path("p.pid");
            let mut args = extra.clone();
            let listen = dir.addr("s");
            args.extend(["-listen", listen.as_str(), "-pidfile", pf.to_str().unwrap()]);
            let p = Proc::spawn(exe, &args);
            let t0 = Instant::now();
            while fs::symlink_metadata(&sock).is_err() {
                assert!(t0.elapsed() < Duration::from_secs(10), "{exe}: no socket");
                std::thread::sleep(Duration::from_micros(200));
            }
            let (code, err) = p.terminate();
            assert_eq!(code, Some(0), "{exe} round {round}: {err}");
            assert!(!sock.exists(), "{exe} round {round}: socket left behind");
            assert!(!pf.exists(), "{exe} round {round}: pid file left behind");
        }
    }
}
