//! dc_server `-backend redis://host:port` (issue 17): the real dc_server
//! binary as a stateless front, answering distcache clients (dc_test, the
//! DC_CTX library, our dc_client) and stunnel's sessiond datagrams from a
//! real redis-server (started on a free loopback port in a temporary
//! directory, stopped by pid); and against a TCP listener that never
//! answers (the sessiond deadline).
//!
//! Skipped with a message when /usr/bin/redis-server is missing, unless
//! CI=true (then a missing Redis fails the test: .ci/run installs it).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::metrics::{scrape, val};
use common::redis::{have_redis, Redis};
use common::sessiond::{self as sd, dgram, expect_hit, expect_miss, sock, Server as SdServer};
use common::*;
use distcache_rs::client::{AddOutcome, Client};
use distcache_rs::proto::status;
use redis_protocol::resp2::types::OwnedFrame;

fn url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}")
}

/// Wait (at most `limit`) until `cond` holds.
fn until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < limit, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A dc_server front `name` in `dir` on `redis`, once it serves from it
/// (an ADD through it is stored).
fn front(dir: &TempDir, name: &str, redis: &str, extra: &[&str]) -> Srv {
    let mut args = vec!["-backend", redis];
    args.extend_from_slice(extra);
    let s = Srv::start(dir, name, &args);
    wait_served(&s.addr(), Duration::from_secs(10));
    s
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn bulk(r: &Redis, key: &[u8]) -> Option<Vec<u8>> {
    match r.raw(&[b"GET", key]) {
        OwnedFrame::BulkString(b) => Some(b),
        OwnedFrame::Null => None,
        f => panic!("GET answered {f:?}"),
    }
}

fn pttl(r: &Redis, key: &[u8]) -> i64 {
    match r.raw(&[b"PTTL", key]) {
        OwnedFrame::Integer(n) => n,
        f => panic!("PTTL answered {f:?}"),
    }
}

#[test]
fn dc_test_and_the_library_through_a_backend_front_get_dc_servers_answers() {
    if !have_redis("dc_test") {
        return;
    }
    let r = Redis::start("rds-dctest");
    let dir = TempDir::new("rds-dctest");
    let mport = free_port();
    let metrics = format!("IP:127.0.0.1:{mport}");
    let s = front(&dir, "front", &url(r.port), &["-metrics", &metrics]);
    for persistent in [false, true] {
        dc_test(&s.addr(), persistent);
    }
    for flags in [0, distcache_rs::client::FLAG_PERSISTENT] {
        let c = Client::new(&s.addr(), flags).unwrap();
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
        // In Redis as mod_socache_redis keeps it: prefix + lowercase hex
        // id, the raw bytes, the timeout as the expiry.
        let key = format!("mod_ssl-sess:{}", hex(id));
        assert_eq!(bulk(&r, key.as_bytes()).as_deref(), Some(data.as_slice()));
        let ttl = pttl(&r, key.as_bytes());
        assert!(ttl > 0 && ttl <= 60_000, "PTTL {ttl}");
        assert!(c.remove(id).unwrap());
        assert!(!c.has(id).unwrap());
        assert_eq!(c.get(id).unwrap(), None);
    }
    // dc_server's own answers on the wire: an empty id, an over-long one.
    let mut conn = s.conn();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(transact(&mut conn, &request(1, 1, b"")), [status::NOTOK]);
    assert_eq!(
        transact(&mut conn, &request(2, 2, &[b'x'; 100])),
        [status::NOTOK]
    );
    assert_eq!(
        transact(&mut conn, &request(3, 0, &add_payload(60_000, b"", b"d"))),
        [status::ADD_ID_RANGE]
    );
    // Every answer came from Redis: none failed, none stored here.
    let m = scrape(mport);
    assert_eq!(val(&m, "distcache_backend_failures_total"), 0.0);
    assert_eq!(val(&m, "distcache_sessions{cache=\"distcache\"}"), 0.0);
    assert!(val(&m, "distcache_requests_total{op=\"get\",result=\"hit\"}") > 0.0);
}

#[test]
fn two_fronts_on_one_redis_see_each_others_sessions() {
    if !have_redis("two fronts") {
        return;
    }
    let r = Redis::start("rds-two");
    let dir = TempDir::new("rds-two");
    let a = front(&dir, "a", &url(r.port), &[]);
    let b = front(&dir, "b", &url(r.port), &[]);
    let (ca, cb) = (
        Client::new(&a.addr(), 0).unwrap(),
        Client::new(&b.addr(), 0).unwrap(),
    );
    for i in 0..20u32 {
        let id = format!("shared-{i}");
        let data = format!("made on {} #{i}", if i % 2 == 0 { "a" } else { "b" });
        let (maker, other) = if i % 2 == 0 { (&ca, &cb) } else { (&cb, &ca) };
        assert_eq!(
            maker.add(id.as_bytes(), data.as_bytes(), 60_000).unwrap(),
            AddOutcome::Stored
        );
        assert_eq!(
            other.get(id.as_bytes()).unwrap().as_deref(),
            Some(data.as_bytes())
        );
        assert_eq!(
            other.add(id.as_bytes(), b"again", 60_000).unwrap(),
            AddOutcome::Refused(status::ADD_MATCHING_SESSION)
        );
        assert!(other.remove(id.as_bytes()).unwrap());
        assert_eq!(maker.get(id.as_bytes()).unwrap(), None);
    }
}

#[test]
fn a_dc_client_in_front_of_a_backend_front_works() {
    if !have_redis("dc_client in front") {
        return;
    }
    let r = Redis::start("rds-chain");
    let dir = TempDir::new("rds-chain");
    let s = front(&dir, "front", &url(r.port), &[]);
    let _c = dc_client_logged(&dir, &s.addr(), &[]);
    dc_test(&dir.addr("client"), true);
    let c = Client::new(&dir.addr("client"), 0).unwrap();
    assert_eq!(
        c.add(b"chained", b"data", 60_000).unwrap(),
        AddOutcome::Stored
    );
    let key = format!("mod_ssl-sess:{}", hex(b"chained"));
    assert_eq!(bulk(&r, key.as_bytes()).as_deref(), Some(&b"data"[..]));
}

/// A sessiond front on `redis` once a GET through it is answered.
fn sessiond_front(redis: &str, extra: &[&str]) -> SdServer {
    let mut args = vec!["-backend", redis];
    args.extend_from_slice(extra);
    let srv = SdServer::start(&args);
    let s = sock();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let probe = sd::key(0xEE);
    until(Duration::from_secs(10), "the sessiond front serves", || {
        s.send_to(&dgram(sd::NEW, 60, &probe, b"probe"), srv.udp)
            .unwrap();
        s.send_to(&dgram(sd::GET, 0, &probe, &[]), srv.udp).unwrap();
        let mut buf = [0u8; 1024];
        matches!(s.recv_from(&mut buf), Ok((n, _)) if buf[..n] == dgram(sd::OK, 0, &probe, b"probe")[..])
    });
    srv
}

#[test]
fn sessiond_through_the_backend_keeps_stunnel_sessions_apart_under_their_prefix() {
    if !have_redis("sessiond") {
        return;
    }
    let r = Redis::start("rds-sd");
    // A generous deadline: this test is about answers, not the deadline.
    let srv = sessiond_front(&url(r.port), &["-sessiond-deadline", "2000"]);
    let (a, b) = (sock(), sock());
    let k = sd::key(1);
    let v1 = sd::der(1, 132);
    sd::send_dgram(&a, srv.udp, &dgram(sd::NEW, 300, &k, &v1));
    expect_hit(&b, srv.udp, &k, &v1);
    let key = format!("stunnel-sess:{}", hex(&k));
    assert_eq!(bulk(&r, key.as_bytes()).as_deref(), Some(v1.as_slice()));
    let ttl = pttl(&r, key.as_bytes());
    assert!(ttl > 290_000 && ttl <= 300_000, "PTTL {ttl}");
    // A NEW overwrites.
    let v2 = sd::der(2, 200);
    sd::send_dgram(&a, srv.udp, &dgram(sd::NEW, 300, &k, &v2));
    expect_hit(&b, srv.udp, &k, &v2);
    // The distcache side does not see it under the same id.
    assert_eq!(srv.distcache().get(&k).unwrap(), None);
    let mk = format!("mod_ssl-sess:{}", hex(&k));
    assert_eq!(bulk(&r, mk.as_bytes()), None);
    // REMOVE, then a miss; an unknown key misses.
    sd::send_dgram(&a, srv.udp, &dgram(sd::REMOVE, 0, &k, &[]));
    expect_miss(&b, srv.udp, &k);
    assert_eq!(bulk(&r, key.as_bytes()), None);
    expect_miss(&b, srv.udp, &sd::key(9));
    // Another prefix is honoured.
    drop(srv);
    let srv = sessiond_front(
        &url(r.port),
        &["-sessiond-deadline", "2000", "-sessiond-prefix", "edge1:"],
    );
    sd::send_dgram(&a, srv.udp, &dgram(sd::NEW, 300, &k, &v1));
    expect_hit(&b, srv.udp, &k, &v1);
    let key = format!("edge1:{}", hex(&k));
    assert_eq!(bulk(&r, key.as_bytes()).as_deref(), Some(v1.as_slice()));
}

#[test]
fn a_sessiond_get_redis_does_not_answer_in_time_is_dropped_unanswered_and_counted() {
    // The kernel completes the handshake; nothing is ever read or written.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let mport = free_port();
    let metrics = format!("IP:127.0.0.1:{mport}");
    let srv = SdServer::start(&["-backend", &url(port), "-metrics", &metrics]);
    let s = sock();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let gets = 20;
    for i in 0..gets {
        s.send_to(&dgram(sd::GET, 0, &sd::key(i), &[]), srv.udp)
            .unwrap();
    }
    let mut buf = [0u8; 1024];
    let got = s.recv_from(&mut buf);
    assert!(got.is_err(), "a GET was answered: {got:?}");
    until(Duration::from_secs(5), "every GET counted as late", || {
        let m = scrape(mport);
        val(
            &m,
            "distcache_sessiond_answers_dropped_total{reason=\"backend_deadline\"}",
        ) == f64::from(gets)
    });
    let (code, _out, err) = srv.proc.terminate_all();
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("-sessiond-deadline"))
        .collect();
    assert!(
        !lines.is_empty() && lines.len() < gets as usize,
        "rate-limited log lines: {err}"
    );
    assert!(lines[0].contains("within 2 ms"), "{}", lines[0]);
    drop(l);
}

#[test]
fn at_most_1024_sessiond_requests_wait_on_the_backend() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let mport = free_port();
    let metrics = format!("IP:127.0.0.1:{mport}");
    // GETs that wait 10 s; the silent Redis is given up after its connect
    // timeout (1 s), which fails them all.
    let srv = SdServer::start(&[
        "-backend",
        &url(port),
        "-sessiond-deadline",
        "10000",
        "-metrics",
        &metrics,
    ]);
    let s = sock();
    let sent = 1100u32;
    for i in 0..sent {
        let mut k = sd::key(0);
        k[1..5].copy_from_slice(&i.to_be_bytes());
        s.send_to(&dgram(sd::GET, 0, &k, &[]), srv.udp).unwrap();
    }
    until(Duration::from_secs(5), "the bound hit", || {
        let m = scrape(mport);
        val(
            &m,
            "distcache_sessiond_answers_dropped_total{reason=\"backend_busy\"}",
        ) >= 1.0
    });
    let (code, _out, err) = srv.proc.terminate_all();
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("1024 sessiond requests already wait on the backend"),
        "{err}"
    );
    drop(l);
}

#[test]
fn bad_flag_combinations_are_refused_with_one_line_naming_the_flag() {
    let dir = TempDir::new("rds-flags");
    let listen = dir.addr("dc");
    let snap = dir.path("snap").display().to_string();
    let r = "redis://127.0.0.1:6399";
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["-backend", r, "-sessions", "100"], "-sessions"),
        (vec!["-backend", r, "-snapshot", &snap], "-snapshot"),
        (
            vec![
                "-backend",
                r,
                "-sessiond",
                "127.0.0.1:1",
                "-sessiond-sessions",
                "9",
            ],
            "-sessiond-sessions",
        ),
        (vec!["-redis-prefix", "x:"], "-redis-prefix"),
        (vec!["-sessiond-deadline", "5"], "-sessiond-deadline"),
        (vec!["-backend", "IP:127.0.0.1:6379"], "-backend"),
        (vec!["-backend", "redis://127.0.0.1:0"], "-backend"),
        (
            vec!["-backend", r, "-sessiond-prefix", "s:"],
            "-sessiond-prefix",
        ),
        (
            vec![
                "-backend",
                r,
                "-sessiond",
                "127.0.0.1:1",
                "-sessiond-prefix",
                "mod_ssl-sess:",
            ],
            "-sessiond-prefix",
        ),
        (
            vec![
                "-backend",
                r,
                "-sessiond",
                "127.0.0.1:1",
                "-sessiond-deadline",
                "0",
            ],
            "-sessiond-deadline",
        ),
        (vec!["-backend", "rediss://127.0.0.1:6399"], "-redis-ca"),
        (vec!["-backend", r, "-redis-user", "bob"], "-redis-user"),
    ];
    for (mut args, flag) in cases {
        args.extend_from_slice(&["-listen", &listen]);
        let (code, out, err) = run(
            env!("CARGO_BIN_EXE_dc_server"),
            &args,
            Duration::from_secs(10),
        );
        assert_eq!(code, Some(1), "{args:?}: {out}{err}");
        let first = err.lines().next().unwrap_or("");
        assert!(
            first.starts_with("dc_server: ") && first.contains(&format!("flag {flag}")),
            "{args:?}: {err}"
        );
        assert!(err.contains("usage:"), "{args:?}: {err}");
    }
}

#[test]
fn a_client_pipelining_past_256_waiting_requests_gets_every_answer_even_half_closed() {
    if !have_redis("pipelining") {
        return;
    }
    let r = Redis::start("rds-pipe");
    let dir = TempDir::new("rds-pipe");
    let s = front(&dir, "front", &url(r.port), &[]);
    let c = Client::new(&s.addr(), 0).unwrap();
    for i in 0..10u32 {
        let id = format!("pipe-{i}");
        assert_eq!(
            c.add(id.as_bytes(), format!("data-{i}").as_bytes(), 60_000)
                .unwrap(),
            AddOutcome::Stored
        );
    }
    // 1000 GETs in one go (at most 256 of a connection wait on Redis at
    // once; the rest wait unread), then the write side closed.
    let n = 1000u32;
    let mut all = Vec::new();
    for uid in 0..n {
        all.extend(request(uid, 1, format!("pipe-{}", uid % 20).as_bytes()));
    }
    let mut conn = s.conn();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    send(&mut conn, &all);
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    let mut seen = vec![false; n as usize];
    for _ in 0..n {
        let (uid, op, payload) = read_msg(&mut conn).expect("an answer");
        assert_eq!(op, 1);
        assert!(
            !std::mem::replace(&mut seen[uid as usize], true),
            "uid {uid} twice"
        );
        let i = uid % 20;
        if i < 10 {
            assert_eq!(payload, format!("data-{i}").as_bytes(), "uid {uid}");
        } else {
            assert_eq!(payload, [status::NOTOK], "uid {uid}");
        }
    }
    // Then the connection closes.
    assert!(closed_within(&mut conn, Duration::from_secs(5)));
}

/// Read from `s` into `buf` until `buf` holds `n` occurrences of `what`.
fn read_until_count(s: &mut std::net::TcpStream, buf: &mut Vec<u8>, what: &[u8], n: usize) {
    use std::io::Read;
    let mut chunk = [0u8; 4096];
    while buf.windows(what.len()).filter(|w| *w == what).count() < n {
        let got = s.read(&mut chunk).expect("the front's commands");
        assert!(got > 0, "the front closed its Redis connection");
        buf.extend_from_slice(&chunk[..got]);
    }
}

#[test]
fn a_late_answer_for_a_reset_connection_never_reaches_the_one_that_took_its_slot() {
    use std::io::Write;
    // A fake Redis that answers the handshake, then holds the GETs back
    // until both have come, and answers them in order.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let fake = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = Vec::new();
        read_until_count(&mut s, &mut buf, b"PING", 1);
        s.write_all(b"+PONG\r\n").unwrap();
        read_until_count(&mut s, &mut buf, b"GET", 1);
        tx.send(()).unwrap();
        read_until_count(&mut s, &mut buf, b"GET", 2);
        s.write_all(b"$6\r\nfor-a!\r\n$6\r\nfor-b!\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(500));
    });
    let dir = TempDir::new("rds-slot");
    let tcp = free_port();
    let listen = format!("IP:127.0.0.1:{tcp}");
    let srv = Srv::start(&dir, "front", &["-backend", &url(port), "-listen", &listen]);
    let get = request(7, 1, b"same-uid");
    // A sends its GET, then resets its connection (RST: linger 0), which
    // closes it at once in the front, its GET still waiting on Redis.
    let a = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    a.connect(&SocketAddr::from(([127, 0, 0, 1], tcp)).into())
        .unwrap();
    a.set_linger(Some(Duration::ZERO)).unwrap();
    let mut a: std::net::TcpStream = a.into();
    a.write_all(&get).unwrap();
    rx.recv_timeout(Duration::from_secs(10))
        .expect("A's GET reached Redis");
    drop(a);
    std::thread::sleep(Duration::from_millis(30));
    // B takes the freed slot and sends a GET with the same uid.
    let mut b = std::net::TcpStream::connect(("127.0.0.1", tcp)).unwrap();
    b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    b.write_all(&get).unwrap();
    let mut head = [0u8; 14];
    std::io::Read::read_exact(&mut b, &mut head).unwrap();
    let n = u16::from_be_bytes([head[12], head[13]]) as usize;
    let mut payload = vec![0u8; n];
    std::io::Read::read_exact(&mut b, &mut payload).unwrap();
    // Its own answer (or 0x02 on a host too slow for the 250 ms
    // deadline), never A's.
    assert_ne!(payload, b"for-a!", "A's answer went to B");
    assert!(
        payload == b"for-b!" || payload == [status::DISCONNECTED],
        "B got {payload:?}"
    );
    fake.join().unwrap();
    drop(srv);
}
