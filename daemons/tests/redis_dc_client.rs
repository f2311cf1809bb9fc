//! dc_client `-server redis://host:port` (issue 17, standalone): the real
//! dc_client binary answering applications from a real redis-server
//! (started on a free loopback port in a temporary directory, stopped by
//! pid), with no dc_server in the path; and against a TCP listener that
//! never answers.
//!
//! Skipped with a message when /usr/bin/redis-server is missing, unless
//! CI=true (then a missing Redis fails the test: .ci/run installs it).

mod common;

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::metrics::{scrape, val};
use common::pki::{make_leaf, LeafSpec, Pki};
use common::redis::{have_redis, Redis, REDIS_CLI};
use common::*;
use distcache_rs::client::{AddOutcome, Client};
use distcache_rs::proto::status;
use redis_protocol::resp2::types::OwnedFrame;

const ADD: u8 = 0;
const GET: u8 = 1;
const REMOVE: u8 = 2;
const HAVE: u8 = 3;

fn url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}")
}

/// dc_client in front of `server` (a redis:// address), its log in
/// `dir/client.log`.
fn proxy(dir: &TempDir, server: &str, extra: &[&str]) -> Proc {
    dc_client_logged(dir, server, extra)
}

fn client_log(dir: &TempDir) -> String {
    std::fs::read_to_string(dir.path("client.log")).unwrap_or_default()
}

/// Lines of dc_client's log naming Redis (its state changes).
fn redis_lines(dir: &TempDir) -> Vec<String> {
    client_log(dir)
        .lines()
        .filter(|l| l.contains("redis "))
        .map(str::to_string)
        .collect()
}

fn app(dir: &TempDir) -> UnixStream {
    let s = connect(&dir.path("client"));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Wait (at most `limit`) until `cond` holds.
fn until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < limit, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wait until dc_client is connected to Redis: an ADD is stored.
fn wait_served(dir: &TempDir, limit: Duration) {
    let mut s = app(dir);
    let mut n = 0u32;
    until(limit, "dc_client serves from Redis", || {
        n += 1;
        let id = format!("probe-{n}");
        transact(
            &mut s,
            &request(n, ADD, &add_payload(60_000, id.as_bytes(), b"probe data")),
        ) == [status::OK]
    });
}

/// The connections Redis has other than the one asking (CLIENT LIST).
fn other_clients(r: &Redis) -> Vec<String> {
    match r.raw(&[b"CLIENT", b"LIST"]) {
        OwnedFrame::BulkString(b) => String::from_utf8_lossy(&b)
            .lines()
            .filter(|l| !l.contains("cmd=client|list") && !l.contains("cmd=client "))
            .map(str::to_string)
            .collect(),
        f => panic!("CLIENT LIST answered {f:?}"),
    }
}

fn field<'a>(line: &'a str, name: &str) -> &'a str {
    line.split(' ')
        .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {name}= in {line}"))
}

fn pttl(r: &Redis, key: &[u8]) -> i64 {
    match r.raw(&[b"PTTL", key]) {
        OwnedFrame::Integer(n) => n,
        f => panic!("PTTL answered {f:?}"),
    }
}

#[test]
fn dc_test_through_dc_client_to_redis_every_answer_correct() {
    if !have_redis("dc_test") {
        return;
    }
    let r = Redis::start("rdc-dctest");
    let dir = TempDir::new("rdc-dctest");
    let _c = proxy(&dir, &url(r.port), &[]);
    let target = dir.addr("client");
    for persistent in [false, true] {
        let mut args = vec![
            "-connect",
            target.as_str(),
            "-clients",
            "4",
            "-sessions",
            "40",
            "-ops",
            "4000",
            "-seed",
            "17",
        ];
        if persistent {
            args.push("-persistent");
        }
        let (code, out, err) = run(
            env!("CARGO_BIN_EXE_dc_test"),
            &args,
            Duration::from_secs(120),
        );
        assert_eq!(code, Some(0), "dc_test {args:?}: {out}{err}");
        assert!(
            out.contains("failures=0 lost=0 errors=0"),
            "dc_test {args:?}: {out}{err}"
        );
    }
    // The sessions are in Redis, not in dc_client.
    match r.raw(&[b"DBSIZE"]) {
        OwnedFrame::Integer(n) => assert!(n > 0, "DBSIZE {n}"),
        f => panic!("DBSIZE answered {f:?}"),
    }
    let lines = redis_lines(&dir);
    assert_eq!(lines.len(), 1, "one line, up: {lines:#?}");
    assert!(lines[0].ends_with(": up"), "{}", lines[0]);
}

#[test]
fn the_library_through_dc_client_gets_dc_servers_answers() {
    if !have_redis("library") {
        return;
    }
    let r = Redis::start("rdc-lib");
    let dir = TempDir::new("rdc-lib");
    let _c = proxy(&dir, &url(r.port), &[]);
    for flags in [0, distcache_rs::client::FLAG_PERSISTENT] {
        let c = Client::new(&dir.addr("client"), flags).unwrap();
        let id = format!("lib-session-{flags}");
        let id = id.as_bytes();
        let data: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
        assert!(!c.has(id).unwrap());
        assert_eq!(c.get(id).unwrap(), None);
        assert!(!c.remove(id).unwrap());
        assert_eq!(c.add(id, &data, 60_000).unwrap(), AddOutcome::Stored);
        assert_eq!(
            c.add(id, b"other data", 60_000).unwrap(),
            AddOutcome::Refused(status::ADD_MATCHING_SESSION)
        );
        assert_eq!(c.get(id).unwrap().as_deref(), Some(data.as_slice()));
        assert!(c.has(id).unwrap());
        assert!(c.remove(id).unwrap());
        assert!(!c.has(id).unwrap());
        assert_eq!(c.get(id).unwrap(), None);
        assert!(!c.remove(id).unwrap());
    }
    // The answers the library does not produce, on the wire, as
    // dc_server gives them.
    let mut s = app(&dir);
    // A timeout of 0: accepted, nothing kept; refused when one is live.
    assert_eq!(
        transact(&mut s, &request(1, ADD, &add_payload(0, b"zero", b"data"))),
        [status::OK]
    );
    assert_eq!(
        transact(&mut s, &request(2, HAVE, b"zero")),
        [status::NOTOK]
    );
    assert_eq!(
        transact(
            &mut s,
            &request(3, ADD, &add_payload(60_000, b"zero", b"d"))
        ),
        [status::OK]
    );
    assert_eq!(
        transact(&mut s, &request(4, ADD, &add_payload(0, b"zero", b"data"))),
        [status::ADD_MATCHING_SESSION]
    );
    assert_eq!(
        transact(&mut s, &request(5, ADD, &add_payload(60_000, b"", b"data"))),
        [status::ADD_ID_RANGE]
    );
    assert_eq!(
        transact(&mut s, &request(6, ADD, &add_payload(60_000, b"id", b""))),
        [status::ADD_CORRUPT]
    );
    assert_eq!(transact(&mut s, &request(7, GET, b"")), [status::NOTOK]);
    assert_eq!(
        transact(&mut s, &request(8, REMOVE, &[b'x'; 100])),
        [status::NOTOK]
    );
    // An ADD too short to parse closes only that application connection.
    send(&mut s, &request(9, ADD, b"short"));
    assert!(closed_within(&mut s, Duration::from_secs(3)));
    let mut s2 = app(&dir);
    check_served(&mut s2, "after-garbage", 1);
}

#[test]
fn keys_are_the_prefix_and_lowercase_hex_id_with_the_raw_bytes_and_the_timeout_as_ttl() {
    if !have_redis("keys") {
        return;
    }
    let r = Redis::start("rdc-keys");
    let id = [0x0a, 0xff, 0x01, 0xbc];
    let data = b"raw\r\n\x00bytes \xfe of a session".to_vec();
    {
        let dir = TempDir::new("rdc-keys");
        let _c = proxy(&dir, &url(r.port), &[]);
        let mut s = app(&dir);
        assert_eq!(
            transact(&mut s, &request(1, ADD, &add_payload(30_000, &id, &data))),
            [status::OK]
        );
        let key = b"mod_ssl-sess:0aff01bc";
        assert_eq!(r.raw(&[b"GET", key]), OwnedFrame::BulkString(data.clone()));
        let ttl = pttl(&r, key);
        assert!((25_000..=30_000).contains(&ttl), "PTTL {ttl}");
        if Path::new(REDIS_CLI).exists() {
            let out = std::process::Command::new(REDIS_CLI)
                .args(["-p", &r.port.to_string(), "--scan"])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.lines().any(|l| l == "mod_ssl-sess:0aff01bc"), "{text}");
        }
        // What Redis holds under the key is what GET answers.
        r.raw(&[b"SET", b"mod_ssl-sess:0102", b"planted by another host"]);
        assert_eq!(
            transact(&mut s, &request(2, GET, &[1, 2])),
            b"planted by another host"
        );
    }
    // -redis-prefix, -mintimeout and -maxtimeout.
    let dir = TempDir::new("rdc-keys2");
    let _c = proxy(
        &dir,
        &url(r.port),
        &[
            "-redis-prefix",
            "app:",
            "-mintimeout",
            "5000",
            "-maxtimeout",
            "20000",
        ],
    );
    let mut s = app(&dir);
    assert_eq!(
        transact(&mut s, &request(1, ADD, &add_payload(300, &id, &data))),
        [status::OK]
    );
    let ttl = pttl(&r, b"app:0aff01bc");
    assert!(
        (4_000..=5_000).contains(&ttl),
        "a 300 ms timeout raised to 5000: PTTL {ttl}"
    );
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(transact(&mut s, &request(2, GET, &id)), data);
    assert_eq!(
        transact(
            &mut s,
            &request(3, ADD, &add_payload(90_000, b"long", b"d"))
        ),
        [status::OK]
    );
    let ttl = pttl(&r, b"app:6c6f6e67");
    assert!(
        (15_000..=20_000).contains(&ttl),
        "90 s capped at 20 s: PTTL {ttl}"
    );
}

#[test]
fn auth_with_an_acl_user_and_a_password_file_and_recovery_from_a_wrong_password() {
    if !have_redis("auth") {
        return;
    }
    let r = Redis::start("rdc-auth");
    assert_eq!(
        r.raw(&[b"ACL", b"SETUSER", b"alice", b"on", b">s3cret", b"~*", b"+@all"]),
        OwnedFrame::SimpleString(b"OK".to_vec())
    );
    let dir = TempDir::new("rdc-auth");
    let pw = dir.path("password");
    std::fs::write(&pw, "s3cret\n").unwrap();
    let pw = pw.display().to_string();
    {
        let _c = proxy(
            &dir,
            &url(r.port),
            &["-redis-user", "alice", "-redis-password-file", &pw],
        );
        wait_served(&dir, Duration::from_secs(5));
        let others = other_clients(&r);
        assert_eq!(others.len(), 1, "{others:#?}");
        assert_eq!(field(&others[0], "user"), "alice");
    }
    // The password in the address works, with a warning that does not
    // show it.
    {
        let dir = TempDir::new("rdc-auth-url");
        let _c = proxy(
            &dir,
            &format!("redis://alice:s3cret@127.0.0.1:{}", r.port),
            &[],
        );
        wait_served(&dir, Duration::from_secs(5));
        let log = client_log(&dir);
        assert!(log.contains("process list"), "{log}");
        assert!(!log.contains("s3cret"), "the password is logged: {log}");
    }
    // A wrong password: failures at once, one line naming the user, and
    // retried with backoff until the ACL accepts it.
    let dir = TempDir::new("rdc-auth-wrong");
    let bad = dir.path("password");
    std::fs::write(&bad, "wrong").unwrap();
    let bad = bad.display().to_string();
    let _c = proxy(
        &dir,
        &url(r.port),
        &["-redis-user", "alice", "-redis-password-file", &bad],
    );
    let mut s = app(&dir);
    for n in 0..10u32 {
        let t0 = Instant::now();
        assert_eq!(
            transact(&mut s, &request(n, GET, b"some id")),
            [status::DISCONNECTED]
        );
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    let lines = redis_lines(&dir);
    assert_eq!(lines.len(), 1, "one line for many attempts: {lines:#?}");
    assert!(
        lines[0].contains("alice") && lines[0].contains("WRONGPASS"),
        "{}",
        lines[0]
    );
    r.raw(&[b"ACL", b"SETUSER", b"alice", b">wrong"]);
    wait_served(&dir, Duration::from_secs(15));
    let lines = redis_lines(&dir);
    assert_eq!(lines.len(), 2, "down, then up: {lines:#?}");
    assert!(lines[1].ends_with(": up"), "{}", lines[1]);
}

#[test]
fn redis_absent_at_start_then_served_once_it_runs() {
    if !have_redis("absent") {
        return;
    }
    let port = free_port();
    let mport = free_port();
    let metrics = format!("IP:127.0.0.1:{mport}");
    let dir = TempDir::new("rdc-absent");
    let _c = proxy(&dir, &url(port), &["-metrics", &metrics]);
    let mut s = app(&dir);
    for n in 0..5u32 {
        let t0 = Instant::now();
        assert_eq!(
            transact(
                &mut s,
                &request(n, ADD, &add_payload(60_000, b"id", b"data"))
            ),
            [status::DISCONNECTED]
        );
        assert!(
            t0.elapsed() < Duration::from_millis(500),
            "{:?}",
            t0.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let m = scrape(mport);
    assert_eq!(val(&m, "distcache_upstream_up"), 0.0);
    assert_eq!(
        val(
            &m,
            r#"distcache_requests_total{op="add",result="server_down"}"#
        ),
        5.0
    );
    assert!(val(&m, "distcache_upstream_connect_failures_total") >= 1.0);
    let _r = Redis::start_on("rdc-absent", port);
    wait_served(&dir, Duration::from_secs(15));
    check_served(&mut s, "absent", 100);
    let m = scrape(mport);
    assert_eq!(val(&m, "distcache_upstream_up"), 1.0);
    assert_eq!(
        val(&m, r#"distcache_requests_total{op="get",result="server"}"#),
        1.0
    );
    assert_eq!(val(&m, "distcache_upstream_disconnects_total"), 0.0);
    let lines = redis_lines(&dir);
    assert_eq!(lines.len(), 2, "down once, up once: {lines:#?}");
    assert!(lines[0].contains("down"), "{}", lines[0]);
    assert!(lines[1].ends_with(": up"), "{}", lines[1]);
}

#[test]
fn a_redis_that_accepts_and_never_answers_costs_each_request_its_deadline() {
    // The kernel completes the handshakes; nothing is ever read or written.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let dir = TempDir::new("rdc-silent");
    let _c = proxy(&dir, &url(port), &["-deadline", "100"]);
    let mut s = app(&dir);
    let t_all = Instant::now();
    for n in 0..8u32 {
        let t0 = Instant::now();
        assert_eq!(
            transact(&mut s, &request(n, GET, b"id")),
            [status::DISCONNECTED]
        );
        let took = t0.elapsed();
        assert!(took < Duration::from_secs(1), "request {n}: {took:?}");
    }
    // Through the connect timeout and the reconnects after it too.
    std::thread::sleep(Duration::from_millis(1200));
    for n in 8..12u32 {
        let t0 = Instant::now();
        assert_eq!(
            transact(&mut s, &request(n, HAVE, b"id")),
            [status::DISCONNECTED]
        );
        assert!(t0.elapsed() < Duration::from_secs(1));
    }
    assert!(t_all.elapsed() < Duration::from_secs(20));
    drop(l);
}

#[test]
fn one_redis_connection_for_64_applications_and_none_new_in_a_restart_storm() {
    if !have_redis("connections") {
        return;
    }
    let r = Redis::start("rdc-conns");
    let dir = TempDir::new("rdc-conns");
    let _c = proxy(&dir, &url(r.port), &[]);
    wait_served(&dir, Duration::from_secs(5));
    let mut apps: Vec<UnixStream> = (0..64).map(|_| app(&dir)).collect();
    for (i, s) in apps.iter_mut().enumerate() {
        check_served(s, "conn", i as u32);
    }
    // In flight from all 64 at once.
    for (i, s) in apps.iter_mut().enumerate() {
        send(
            s,
            &request(1000 + i as u32, GET, format!("conn-{i}").as_bytes()),
        );
    }
    for (i, s) in apps.iter_mut().enumerate() {
        let (uid, _, p) = read_msg(s).unwrap();
        assert_eq!(uid, 1000 + i as u32);
        assert_eq!(p, format!("data of conn-{i}").repeat(3).as_bytes());
    }
    let others = other_clients(&r);
    assert_eq!(others.len(), 1, "one connection to Redis: {others:#?}");
    let id = field(&others[0], "id").to_string();
    drop(apps);
    // Connection per operation, 300 times (an Apache graceful restart).
    for n in 0..300u32 {
        let mut s = app(&dir);
        let op = if n % 2 == 0 { HAVE } else { GET };
        let p = transact(
            &mut s,
            &request(n, op, format!("conn-{}", n % 64).as_bytes()),
        );
        assert_ne!(p, [status::DISCONNECTED], "operation {n}");
    }
    let others = other_clients(&r);
    assert_eq!(others.len(), 1, "{others:#?}");
    assert_eq!(field(&others[0], "id"), id, "the same connection");
}

#[test]
fn bad_flag_combinations_are_refused_with_one_line_naming_the_flag() {
    let dir = TempDir::new("rdc-flags");
    let listen = dir.addr("client");
    let empty = dir.path("empty");
    std::fs::write(&empty, "\n").unwrap();
    let empty = empty.display().to_string();
    let pwfile = dir.path("pw");
    std::fs::write(&pwfile, "pw").unwrap();
    let pwfile = pwfile.display().to_string();
    let missing = dir.path("missing").display().to_string();
    let long = dir.path("long");
    std::fs::write(&long, "p".repeat(5000)).unwrap();
    let long = long.display().to_string();
    let r = "redis://127.0.0.1:6399";
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["-server", "UNIX:/nowhere", "-redis-prefix", "x:"],
            "-redis-prefix",
        ),
        (
            vec!["-server", "UNIX:/nowhere", "-mintimeout", "5"],
            "-mintimeout",
        ),
        (
            vec!["-server", "UNIX:/nowhere", "-redis-user", "u"],
            "-redis-user",
        ),
        (vec!["-server", r, "-retry", "100"], "-retry"),
        (vec!["-server", r, "-tls-ca", "ca.pem"], "-tls-ca"),
        (vec!["-server", r, "-redis-ca", "ca.pem"], "-redis-ca"),
        (vec!["-server", r, "-redis-user", "bob"], "-redis-user"),
        (
            vec!["-server", r, "-redis-password-file", &missing],
            "-redis-password-file",
        ),
        (
            vec!["-server", r, "-redis-password-file", &empty],
            "-redis-password-file",
        ),
        (
            vec!["-server", r, "-redis-password-file", &long],
            "-redis-password-file",
        ),
        (
            vec![
                "-server",
                "redis://a:b@127.0.0.1:6399",
                "-redis-password-file",
                &pwfile,
            ],
            "-redis-password-file",
        ),
        (
            vec!["-server", r, "-mintimeout", "5000", "-maxtimeout", "1000"],
            "-mintimeout",
        ),
        (vec!["-server", "redis://127.0.0.1:0"], "-server"),
        (vec!["-server", "redis://127.0.0.1:6379/1"], "-server"),
        (
            vec!["-server", "rediss-sentinel://127.0.0.1:26379/mymaster"],
            "-server",
        ),
    ];
    for (mut args, flag) in cases {
        args.extend_from_slice(&["-listen", &listen]);
        let (code, out, err) = run(
            env!("CARGO_BIN_EXE_dc_client"),
            &args,
            Duration::from_secs(10),
        );
        assert_eq!(code, Some(1), "{args:?}: {out}{err}");
        let first = err.lines().next().unwrap_or("");
        assert!(
            first.starts_with(&format!("dc_client: flag {flag}")),
            "{args:?}: {err}"
        );
        assert!(err.contains("usage:"), "{args:?}: {err}");
        if flag == "-redis-password-file" && args.contains(&missing.as_str()) {
            assert!(first.contains(&missing), "{first}");
        }
    }
}

#[test]
fn rediss_with_a_client_certificate_and_the_checks_that_refuse_a_server() {
    if !have_redis("rediss") {
        return;
    }
    let pki = Pki::new("rdc-tls-pki");
    let leaf = make_leaf(
        &pki.ca,
        LeafSpec {
            dns: &["localhost"],
            ..Default::default()
        },
    );
    let srv = pki.files("redis", &leaf);
    let cli = pki.client();
    let tls_port = free_port();
    let (cert, key, ca) = (
        srv.cert.display().to_string(),
        srv.key.display().to_string(),
        srv.ca.display().to_string(),
    );
    let tp = tls_port.to_string();
    let r = Redis::start_with(
        "rdc-tls",
        free_port(),
        &[
            "--tls-port",
            &tp,
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            "yes",
        ],
    );
    let server = format!("rediss://localhost:{tls_port}");
    let (ccert, ckey) = (
        cli.cert.display().to_string(),
        cli.key.display().to_string(),
    );
    {
        let dir = TempDir::new("rdc-tls");
        let _c = proxy(
            &dir,
            &server,
            &["-redis-ca", &ca, "-redis-cert", &ccert, "-redis-key", &ckey],
        );
        wait_served(&dir, Duration::from_secs(10));
        let mut s = app(&dir);
        check_served(&mut s, "tls", 1);
        assert_eq!(
            r.raw(&[b"GET", b"mod_ssl-sess:746c732d31"]),
            OwnedFrame::BulkString("data of tls-1".repeat(3).into_bytes())
        );
        let (code, out, err) = run(
            env!("CARGO_BIN_EXE_dc_test"),
            &[
                "-connect",
                &dir.addr("client"),
                "-clients",
                "2",
                "-ops",
                "2000",
            ],
            Duration::from_secs(60),
        );
        assert_eq!(code, Some(0), "{out}{err}");
        assert!(out.contains("failures=0 lost=0 errors=0"), "{out}");
    }
    // Refused: no client certificate (Redis asks for one), a server
    // certificate from another CA. Requests fail at once, one line each.
    let other = pki.dir.path("other-ca.pem").display().to_string();
    for (tag, args) in [
        ("nocert", vec!["-redis-ca", ca.as_str()]),
        (
            "otherca",
            vec![
                "-redis-ca",
                other.as_str(),
                "-redis-cert",
                &ccert,
                "-redis-key",
                &ckey,
            ],
        ),
    ] {
        let dir = TempDir::new(&format!("rdc-tls-{tag}"));
        let _c = proxy(&dir, &server, &args);
        let mut s = app(&dir);
        std::thread::sleep(Duration::from_millis(300));
        for n in 0..5u32 {
            assert_eq!(
                transact(&mut s, &request(n, GET, b"x")),
                [status::DISCONNECTED],
                "{tag}"
            );
        }
        let lines = redis_lines(&dir);
        assert_eq!(lines.len(), 1, "{tag}: {lines:#?}");
        assert!(lines[0].contains("down"), "{tag}: {}", lines[0]);
    }
    // Bad TLS flags: one line naming the flag.
    let listen = TempDir::new("rdc-tls-flags");
    let l = listen.addr("client");
    for (args, flag) in [
        (
            vec!["-server", server.as_str()],
            "missing required flag -redis-ca",
        ),
        (
            vec!["-server", &server, "-redis-ca", "/nonexistent.pem"],
            "flag -redis-ca /nonexistent.pem",
        ),
        (
            vec!["-server", &server, "-redis-ca", &ca, "-redis-cert", &ccert],
            "flag -redis-cert",
        ),
    ] {
        let mut a = args.clone();
        a.extend_from_slice(&["-listen", &l]);
        let (code, out, err) = run(env!("CARGO_BIN_EXE_dc_client"), &a, Duration::from_secs(10));
        assert_eq!(code, Some(1), "{a:?}: {out}{err}");
        assert!(
            err.lines()
                .next()
                .unwrap_or("")
                .starts_with(&format!("dc_client: {flag}")),
            "{a:?}: {err}"
        );
    }
}

#[test]
fn an_error_reply_fails_only_its_request_and_an_oversized_value_is_a_miss() {
    if !have_redis("errors") {
        return;
    }
    let r = Redis::start("rdc-errors");
    let dir = TempDir::new("rdc-errors");
    let _c = proxy(&dir, &url(r.port), &[]);
    let mut s = app(&dir);
    check_served(&mut s, "before", 1);
    // A value over the protocol's session limit, planted by another
    // writer: a miss, logged once, and the stream stays in step.
    let big = vec![b'v'; distcache_rs::proto::MAX_TOTAL_DATA + 1];
    r.raw(&[b"SET", b"mod_ssl-sess:626967", &big]);
    for n in 0..3u32 {
        assert_eq!(
            transact(&mut s, &request(10 + n, GET, b"big")),
            [status::NOTOK]
        );
    }
    assert_eq!(
        transact(&mut s, &request(20, GET, b"before-1")),
        "data of before-1".repeat(3).as_bytes()
    );
    // Redis out of memory: each ADD is answered 0x02 (OOM), the reads
    // around it are answered, and the connection stays.
    r.raw(&[b"CONFIG", b"SET", b"maxmemory", b"1"]);
    for n in 0..3u32 {
        assert_eq!(
            transact(
                &mut s,
                &request(30 + n, ADD, &add_payload(60_000, b"oom", b"data"))
            ),
            [status::DISCONNECTED]
        );
        assert_eq!(
            transact(&mut s, &request(40 + n, HAVE, b"before-1")),
            [status::OK]
        );
    }
    r.raw(&[b"CONFIG", b"SET", b"maxmemory", b"0"]);
    check_served(&mut s, "after", 2);
    let lines = redis_lines(&dir);
    assert_eq!(
        lines.len(),
        2,
        "up, and the oversized value once: {lines:#?}"
    );
    assert!(lines[1].contains("over the session limit"), "{}", lines[1]);
    assert_eq!(other_clients(&r).len(), 1);
}

#[test]
fn a_lone_request_is_written_in_its_loop_turn_not_at_its_deadline() {
    if !have_redis("lone request") {
        return;
    }
    let r = Redis::start("rdc-lone");
    let dir = TempDir::new("rdc-lone");
    // A 60 s deadline: an answer within seconds was written in the turn
    // that took it (dc_client's end-of-turn write), not by a later timer.
    let _c = proxy(&dir, &url(r.port), &["-deadline", "60000"]);
    wait_served(&dir, Duration::from_secs(10));
    let mut s = app(&dir);
    for (i, (op, payload)) in [
        (ADD, add_payload(60_000, b"lone", b"lone data")),
        (GET, b"lone".to_vec()),
        (REMOVE, b"lone".to_vec()),
        (HAVE, b"lone".to_vec()),
    ]
    .into_iter()
    .enumerate()
    {
        let t0 = Instant::now();
        let answer = transact(&mut s, &request(i as u32, op, &payload));
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "op {op} answered after {:?} (deadline 60 s)",
            t0.elapsed()
        );
        let want: &[u8] = match op {
            GET => b"lone data",
            HAVE => &[status::NOTOK],
            _ => &[status::OK],
        };
        assert_eq!(answer, want, "op {op}");
    }
}
