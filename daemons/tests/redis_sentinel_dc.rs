//! The daemons with a `redis-sentinel://` store (issue 17): the real
//! dc_client (`-server redis-sentinel://...`) and dc_server (`-backend
//! redis-sentinel://...`) binaries in front of real Debian redis-server
//! and redis-sentinel processes (one primary, one replica, three
//! sentinels, on free loopback ports in temporary directories, stopped by
//! pid; the deployment of tests/common/redis.rs).
//!
//! Skipped with a message when redis-server or redis-sentinel is missing,
//! unless CI=true (then the test fails: .ci/run installs them).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::redis::{have, Cluster, REDIS_SENTINEL, REDIS_SERVER};
use common::*;
use distcache_rs::client::{AddOutcome, Client, FLAG_PERSISTENT};

fn have_all(test: &str) -> bool {
    have(test, &[REDIS_SERVER, REDIS_SENTINEL])
}

/// The store address of `c`'s sentinels.
fn url(c: &Cluster) -> String {
    let list: Vec<String> = c
        .sentinels
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port))
        .collect();
    format!("redis-sentinel://{}/{}", list.join(","), c.master)
}

/// The session bytes stored under load id `i` (200 B, the id inside).
fn data_of(i: u64) -> Vec<u8> {
    let mut d = format!("session {i} data ").into_bytes();
    while d.len() < 200 {
        d.push(b'a' + (i % 26) as u8);
    }
    d
}

/// What one load thread saw.
#[derive(Default)]
struct Seen {
    /// ADDs of fresh ids: when sent, when answered, whether stored.
    adds: Vec<(Instant, Instant, bool)>,
    /// GETs that returned bytes never stored under their id.
    wrong: u64,
    /// GETs that hit (with the right bytes).
    hits: u64,
}

/// One DC_CTX load thread `t` on `target` until `stop`: an ADD of a fresh
/// id, then a GET of one of its earlier ids, checked byte for byte.
fn load(target: String, t: u64, stop: Arc<AtomicBool>, seen: Arc<Mutex<Seen>>) {
    let c = Client::new(&target, FLAG_PERSISTENT).unwrap();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let i = t * 1_000_000 + n;
        let sent = Instant::now();
        let stored = c.add(&i.to_be_bytes(), &data_of(i), 60_000).ok() == Some(AddOutcome::Stored);
        let j = t * 1_000_000 + n / 2;
        let got = c.get(&j.to_be_bytes()).ok().flatten();
        let mut s = seen.lock().unwrap();
        s.adds.push((sent, Instant::now(), stored));
        match got {
            Some(d) if *d == *data_of(j) => s.hits += 1,
            Some(_) => s.wrong += 1,
            None => {}
        }
        drop(s);
        n += 1;
        // A failure answers at once: do not spin on a dead store.
        if !stored {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[test]
fn dc_client_follows_a_kill_9_of_the_primary_under_load_with_no_wrong_data() {
    if !have_all("sentinel dc_client fail-over") {
        return;
    }
    let ports = [free_port(), free_port(), free_port()];
    let mut c = Cluster::start("sdc", true, &ports, "");
    c.wait_ready(None);
    let replica_port = c.replica.as_ref().unwrap().port;
    let dir = TempDir::new("sdc");
    let _dc = dc_client_logged(&dir, &url(&c), &[]);
    let target = dir.addr("client");
    wait_served(&target, Duration::from_secs(15));
    dc_test(&target, true);

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (target, stop, seen) = (target.clone(), stop.clone(), seen.clone());
            std::thread::spawn(move || load(target, t, stop, seen))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // kill9 returns once the primary is gone: an ADD sent after `killed`
    // and stored was stored by the promoted replica.
    c.primary.proc.kill9();
    let killed = Instant::now();
    let after = |sent: &Instant| *sent > killed;
    // Until the load has succeeded for 1 s after the fail-over (at most 25 s).
    loop {
        let first_ok = seen
            .lock()
            .unwrap()
            .adds
            .iter()
            .find(|(sent, _, ok)| *ok && after(sent))
            .map(|(_, at, _)| *at);
        if first_ok.is_some_and(|at| at.elapsed() > Duration::from_secs(1)) {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(25),
            "no ADD stored within 25 s of the kill -9: {}",
            std::fs::read_to_string(dir.path("client.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let s = seen.lock().unwrap();
    let before = s.adds.iter().filter(|(sent, _, _)| !after(sent)).count();
    let failed = s.adds.iter().filter(|(_, _, ok)| !ok).count();
    let first_ok = s
        .adds
        .iter()
        .find(|(sent, _, ok)| *ok && after(sent))
        .map(|(_, at, _)| *at - killed)
        .unwrap();
    let last_failure = s
        .adds
        .iter()
        .filter(|(_, _, ok)| !ok)
        .map(|(_, at, _)| at.saturating_duration_since(killed))
        .max()
        .unwrap_or_default();
    println!(
        "fail-over window through dc_client: {} ms from kill -9 to the first stored ADD, \
         {} ms to the last failed one; {} ADDs ({before} before the kill), {failed} failed, \
         {} GET hits, {} wrong",
        first_ok.as_millis(),
        last_failure.as_millis(),
        s.adds.len(),
        s.hits,
        s.wrong
    );
    assert_eq!(s.wrong, 0, "a GET answered bytes never stored under its id");
    assert!(before > 0 && s.hits > 0, "the load ran before the kill");
    assert!(failed > 0, "the kill -9 was felt (operations failed)");
    // Failures end: after the last one, the load succeeds again, from the
    // same dc_client (never restarted), on the promoted replica.
    assert!(
        s.adds
            .iter()
            .any(|(sent, _, ok)| *ok && *sent > killed + last_failure),
        "no success after the last failure"
    );
    let log = std::fs::read_to_string(dir.path("client.log")).unwrap_or_default();
    let moved = format!(
        "sentinel: primary of {} is now 127.0.0.1:{replica_port}",
        c.master
    );
    assert!(log.contains(&moved), "no '{moved}' in: {log}");
    // And the promoted replica serves dc_test, every answer correct.
    dc_test(&target, false);
}

#[test]
fn dc_server_backend_through_password_protected_sentinels_answers_dc_test() {
    if !have_all("sentinel dc_server -backend") {
        return;
    }
    let ports = [free_port(), free_port(), free_port()];
    let c = Cluster::start("sds", false, &ports, "requirepass sentinel-pw\n");
    let dir = TempDir::new("sds");
    let pw = dir.path("sentinel.pw");
    std::fs::write(&pw, "sentinel-pw\n").unwrap();
    let pw = pw.display().to_string();
    let srv = Srv::start(
        &dir,
        "front",
        &["-backend", &url(&c), "-redis-sentinel-password-file", &pw],
    );
    wait_served(&srv.addr(), Duration::from_secs(15));
    dc_test(&srv.addr(), true);
    dc_test(&srv.addr(), false);
    let log = srv.log();
    let found = format!(
        "sentinel: primary of {} is now 127.0.0.1:{}",
        c.master, c.primary.port
    );
    assert!(log.contains(&found), "no '{found}' in: {log}");
    assert!(
        !log.contains("sentinel-pw"),
        "the password in the log: {log}"
    );
}

#[test]
fn sentinel_flags_are_checked_with_one_line_naming_the_flag() {
    let dir = TempDir::new("sdf");
    let pw = dir.path("pw");
    std::fs::write(&pw, "x\n").unwrap();
    let pw = pw.display().to_string();
    let listen = dir.addr("client");
    let cases: &[(&[&str], &str)] = &[
        (&["-server", "rediss-sentinel://127.0.0.1:1/m"], "plain TCP"),
        (&["-server", "redis-sentinel://127.0.0.1:1"], "MASTERNAME"),
        (
            &[
                "-server",
                "redis://127.0.0.1:1",
                "-redis-sentinel-password-file",
                &pw,
            ],
            "-redis-sentinel-password-file",
        ),
        (
            &[
                "-server",
                "redis-sentinel://:inline@127.0.0.1:1/m",
                "-redis-sentinel-password-file",
                &pw,
            ],
            "-redis-sentinel-password-file",
        ),
        (
            &[
                "-server",
                "redis-sentinel://127.0.0.1:1/m",
                "-redis-sentinel-password-file",
                "/nonexistent/pw",
            ],
            "-redis-sentinel-password-file",
        ),
        (
            &[
                "-server",
                "redis-sentinel://127.0.0.1:1/m",
                "-redis-ca",
                &pw,
            ],
            "-redis-ca",
        ),
    ];
    for (flags, want) in cases {
        let mut args = flags.to_vec();
        args.extend_from_slice(&["-listen", &listen]);
        let (code, out, err) = run(
            env!("CARGO_BIN_EXE_dc_client"),
            &args,
            Duration::from_secs(10),
        );
        assert_ne!(code, Some(0), "{args:?}: {out}{err}");
        let first = err.lines().next().unwrap_or_default();
        assert!(first.contains(want), "{args:?}: {err}");
        assert!(!err.contains("inline"), "{args:?}: a password shown: {err}");
    }
    let (code, _, err) = run(
        env!("CARGO_BIN_EXE_dc_server"),
        &[
            "-listen",
            &dir.addr("srv"),
            "-backend",
            "rediss-sentinel://127.0.0.1:1/m",
        ],
        Duration::from_secs(10),
    );
    assert_ne!(code, Some(0), "{err}");
    assert!(
        err.lines().next().unwrap_or_default().contains("-backend"),
        "{err}"
    );
}
