//! `-metrics ADDR` of dc_server and dc_client (issue 19 item 1): the
//! counters of `GET /metrics` move by exactly what was done, other paths
//! and methods get 404/405, an oversized request head 431, a scraper that
//! sends nothing is dropped while the cache keeps answering, a 17th
//! metrics connection is refused, and a bad `-metrics` value fails start-up
//! with one line naming the flag. Loopback and temp directories only.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{TcpStream, UdpSocket};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::metrics::{http, scrape, status_of, val};
use common::*;

const SERVER: &str = env!("CARGO_BIN_EXE_dc_server");
const CLIENT: &str = env!("CARGO_BIN_EXE_dc_client");

fn delta(a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>, k: &str) -> f64 {
    val(b, k) - val(a, k)
}

fn req(op: &str, result: &str) -> String {
    format!("distcache_requests_total{{op=\"{op}\",result=\"{result}\"}}")
}

fn add(s: &mut std::os::unix::net::UnixStream, uid: u32, timeout: u32, id: &str, data: &str) -> u8 {
    let p = transact(
        s,
        &request(
            uid,
            0,
            &add_payload(timeout, id.as_bytes(), data.as_bytes()),
        ),
    );
    p[0]
}

/// dc_server with `-metrics` on a free loopback port (and `extra`).
fn server(dir: &TempDir, extra: &[&str]) -> (Srv, u16) {
    let port = free_port();
    let addr = format!("IP:127.0.0.1:{port}");
    let mut args = vec!["-metrics", addr.as_str()];
    args.extend_from_slice(extra);
    let srv = Srv::start(dir, "s", &args);
    wait_for_tcp(port);
    (srv, port)
}

#[test]
fn dc_server_counters_move_by_what_was_done() {
    let dir = TempDir::new("metrics-srv");
    let sd_port = free_port();
    let sd = format!("127.0.0.1:{sd_port}");
    let (srv, port) = server(&dir, &["-sessions", "4", "-sessiond", &sd]);
    let before = scrape(port);
    assert_eq!(
        val(&before, "distcache_sessions_capacity{cache=\"distcache\"}"),
        4.0
    );
    assert_eq!(val(&before, "distcache_sessions{cache=\"distcache\"}"), 0.0);

    let mut s = srv.conn();
    for id in ["a", "b", "c"] {
        assert_eq!(add(&mut s, 1, 60_000, id, "data-data"), 0, "ADD {id}");
    }
    assert_eq!(add(&mut s, 2, 1, "x", "short-lived"), 0);
    sleep(Duration::from_millis(20));
    // "x" has expired: reclaimed to store "d"; then the cache is full of
    // live sessions and "e" evicts the oldest stored, "a".
    assert_eq!(add(&mut s, 3, 60_000, "d", "dd"), 0);
    assert_eq!(add(&mut s, 4, 60_000, "eee", "e"), 0);
    assert_eq!(
        add(&mut s, 5, 60_000, "b", "again"),
        distcache_rs::proto::status::ADD_MATCHING_SESSION,
        "live duplicate"
    );
    assert_eq!(transact(&mut s, &request(6, 1, b"b")), b"data-data");
    assert_eq!(transact(&mut s, &request(7, 1, b"a")), vec![1], "evicted");
    assert_eq!(transact(&mut s, &request(8, 2, b"c")), vec![0]);
    assert_eq!(transact(&mut s, &request(9, 2, b"zz")), vec![1]);
    assert_eq!(transact(&mut s, &request(10, 3, b"d")), vec![0]);
    assert_eq!(transact(&mut s, &request(11, 3, b"c")), vec![1]);

    // sessiond: NEW, GET hit, GET miss, REMOVE, one malformed datagram.
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    u.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let dgram = |t: u8, key: u8, value: &[u8]| {
        let mut d = vec![1, t, 0, 60];
        d.extend_from_slice(&[key; 32]);
        d.extend_from_slice(value);
        d
    };
    u.send_to(&dgram(0, 7, b"stunnel session"), &sd).unwrap();
    let mut buf = [0u8; 1024];
    u.send_to(&dgram(1, 7, b""), &sd).unwrap();
    let (n, _) = u.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[36..n], b"stunnel session");
    u.send_to(&dgram(1, 8, b""), &sd).unwrap();
    let (n, _) = u.recv_from(&mut buf).unwrap();
    assert_eq!((n, buf[1]), (36, 0x80), "miss");
    u.send_to(&dgram(2, 7, b""), &sd).unwrap();
    u.send_to(b"short", &sd).unwrap();
    // Datagrams are served before connections: one more GET makes sure the
    // REMOVE and the malformed one were handled.
    u.send_to(&dgram(1, 7, b""), &sd).unwrap();
    let (n, _) = u.recv_from(&mut buf).unwrap();
    assert_eq!((n, buf[1]), (36, 0x80), "removed");

    let after = scrape(port);
    for (k, want) in [
        (req("add", "stored"), 6.0),
        (req("add", "refused"), 1.0),
        (req("get", "hit"), 1.0),
        (req("get", "miss"), 1.0),
        (req("remove", "removed"), 1.0),
        (req("remove", "miss"), 1.0),
        (req("have", "hit"), 1.0),
        (req("have", "miss"), 1.0),
        ("distcache_evictions_total{cache=\"distcache\"}".into(), 1.0),
        (
            "distcache_expirations_total{cache=\"distcache\"}".into(),
            1.0,
        ),
        ("distcache_connections_accepted_total".into(), 1.0),
        ("distcache_metrics_requests_total{code=\"200\"}".into(), 1.0),
        (
            "distcache_sessiond_datagrams_total{type=\"new\",result=\"stored\"}".into(),
            1.0,
        ),
        (
            "distcache_sessiond_datagrams_total{type=\"get\",result=\"hit\"}".into(),
            1.0,
        ),
        (
            "distcache_sessiond_datagrams_total{type=\"get\",result=\"miss\"}".into(),
            2.0,
        ),
        (
            "distcache_sessiond_datagrams_total{type=\"remove\",result=\"done\"}".into(),
            1.0,
        ),
        (
            "distcache_sessiond_datagrams_total{type=\"malformed\",result=\"dropped\"}".into(),
            1.0,
        ),
    ] {
        assert_eq!(delta(&before, &after, &k), want, "{k}");
    }
    // Left: b (1+9 bytes), d (1+2), eee (3+1).
    assert_eq!(val(&after, "distcache_sessions{cache=\"distcache\"}"), 3.0);
    assert_eq!(
        val(&after, "distcache_stored_bytes{cache=\"distcache\"}"),
        17.0
    );
    assert_eq!(val(&after, "distcache_sessions{cache=\"sessiond\"}"), 0.0);
    assert_eq!(val(&after, "distcache_connections_open"), 1.0);
    for l in ["stall", "idle", "maxconns", "buffer"] {
        let k = format!("distcache_limit_hits_total{{limit=\"{l}\"}}");
        assert_eq!(delta(&before, &after, &k), 0.0, "{k}");
    }
    drop(s);
    sleep(Duration::from_millis(100));
    assert_eq!(val(&scrape(port), "distcache_connections_open"), 0.0);
}

#[test]
fn dc_server_limits_are_counted_by_name() {
    let dir = TempDir::new("metrics-limits");
    let (srv, port) = server(&dir, &["-maxconns", "2", "-stall", "300", "-idle", "600"]);
    let before = scrape(port);
    // Half a request: closed by -stall; a silent one: closed by -idle.
    let mut stuck = srv.conn();
    send(&mut stuck, &request(1, 1, b"abc")[..5]);
    let mut silent = srv.conn();
    assert!(closed_within(&mut stuck, Duration::from_secs(3)), "-stall");
    assert!(closed_within(&mut silent, Duration::from_secs(3)), "-idle");
    // Two connections with a request each answered, then a third: the
    // table is full and one makes room.
    let mut a = srv.conn();
    check_served(&mut a, "lim", 1);
    let mut b = srv.conn();
    check_served(&mut b, "lim", 2);
    let mut c = srv.conn();
    check_served(&mut c, "lim", 3);
    let after = scrape(port);
    for (l, want) in [
        ("stall", 1.0),
        ("idle", 1.0),
        ("maxconns", 1.0),
        ("buffer", 0.0),
    ] {
        let k = format!("distcache_limit_hits_total{{limit=\"{l}\"}}");
        assert_eq!(delta(&before, &after, &k), want, "{k}\n{}", srv.log());
    }
    assert_eq!(val(&after, "distcache_connections_open"), 2.0);
}

#[test]
fn other_paths_methods_and_oversized_requests() {
    let dir = TempDir::new("metrics-http");
    let (srv, port) = server(&dir, &[]);
    let before = scrape(port);
    let a = http(port, "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status_of(&a), "HTTP/1.1 404 Not Found", "{a}");
    let a = http(port, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(status_of(&a), "HTTP/1.1 405 Method Not Allowed", "{a}");
    assert!(a.contains("Allow: GET"), "{a}");
    let a = http(port, "NOT HTTP AT ALL\r\n\r\n");
    assert_eq!(status_of(&a), "HTTP/1.1 400 Bad Request", "{a}");
    // 9000 bytes of one header and no end of the headers.
    let big = format!("GET /metrics HTTP/1.1\r\nX-Big: {}", "y".repeat(9000));
    let a = http(port, &big);
    assert_eq!(
        status_of(&a),
        "HTTP/1.1 431 Request Header Fields Too Large",
        "{a}"
    );
    let after = scrape(port);
    for (code, want) in [
        ("200", 1.0),
        ("400", 1.0),
        ("404", 1.0),
        ("405", 1.0),
        ("431", 1.0),
    ] {
        let k = format!("distcache_metrics_requests_total{{code=\"{code}\"}}");
        assert_eq!(delta(&before, &after, &k), want, "{k}");
    }
    assert!(
        srv.log()
            .contains("over 8192 bytes without an end of headers: 431"),
        "{}",
        srv.log()
    );
    // None of this touched the cache's connection counters.
    assert_eq!(val(&after, "distcache_connections_accepted_total"), 1.0);
}

#[test]
fn silent_scrapers_are_dropped_and_the_cache_keeps_answering() {
    let dir = TempDir::new("metrics-slow");
    // -maxconns 1: the metrics connections do not take the cache's slot.
    let (srv, port) = server(&dir, &["-maxconns", "1"]);
    let t0 = Instant::now();
    let mut silent: Vec<TcpStream> = (0..16)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    sleep(Duration::from_millis(200));
    // The 17th is refused at once.
    let mut extra = TcpStream::connect(("127.0.0.1", port)).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut b = [0u8; 16];
    assert!(
        matches!(extra.read(&mut b), Ok(0) | Err(_)),
        "17th metrics connection closed"
    );
    // The cache answers meanwhile, on its one -maxconns slot.
    let mut c = srv.conn();
    for i in 0..50 {
        check_served(&mut c, "slow", i);
    }
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "served before the drop"
    );
    // The silent ones are dropped after 5 s.
    for s in &mut silent {
        s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
        assert!(matches!(s.read(&mut b), Ok(0) | Err(_)));
    }
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_millis(4900), "{waited:?}");
    check_served(&mut c, "slow", 99);
    let m = scrape(port);
    assert_eq!(
        val(&m, "distcache_metrics_dropped_total{reason=\"timeout\"}"),
        16.0
    );
    assert_eq!(
        val(&m, "distcache_metrics_dropped_total{reason=\"busy\"}"),
        1.0
    );
    assert_eq!(
        val(
            &m,
            "distcache_connections_refused_total{reason=\"maxconns\"}"
        ),
        0.0
    );
    let log = srv.log();
    assert!(log.contains("16 metrics connections open"), "{log}");
    assert!(
        log.contains("0 bytes of an unfinished request after 5000 ms"),
        "{log}"
    );
}

#[test]
fn bad_metrics_values_fail_with_one_line() {
    let dir = TempDir::new("metrics-bad");
    let listen = dir.addr("s");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = format!("IP:127.0.0.1:{}", taken.local_addr().unwrap().port());
    for (exe, base) in [
        (SERVER, vec!["-listen", listen.as_str()]),
        (
            CLIENT,
            vec!["-server", listen.as_str(), "-listen", listen.as_str()],
        ),
    ] {
        for bad in ["UNIX:/tmp/metrics.sock", "IP:127.0.0.1:99999", "nonsense"] {
            let mut a = base.clone();
            a.extend_from_slice(&["-metrics", bad]);
            let (code, _, err) = run(exe, &a, Duration::from_secs(10));
            assert_eq!(code, Some(1), "{exe} -metrics {bad}: {err}");
            let first = err.lines().next().unwrap_or("");
            assert!(first.contains("-metrics"), "{exe} -metrics {bad}: {err}");
            assert!(err.contains("usage") || err.contains("Usage"), "{err}");
        }
        // A port another process holds: one line naming it, exit 1.
        let mut a = base.clone();
        a.extend_from_slice(&["-metrics", busy.as_str()]);
        let (code, _, err) = run(exe, &a, Duration::from_secs(10));
        assert_eq!(code, Some(1), "{exe}: {err}");
        assert!(
            err.contains("-metrics") && err.contains("cannot listen"),
            "{err}"
        );
        let (code, out, err) = run(exe, &["-h"], Duration::from_secs(10));
        assert_eq!(code, Some(0));
        assert!((out + &err).contains("-metrics"), "{exe} -h");
    }
}

#[test]
fn dc_client_counts_requests_upstream_state_and_round_trips() {
    let dir = TempDir::new("metrics-cli");
    let srv = Srv::start(&dir, "s", &[]);
    let port = free_port();
    let addr = format!("IP:127.0.0.1:{port}");
    let cli = dc_client_logged(&dir, &srv.addr(), &["-metrics", &addr, "-retry", "100"]);
    wait_for_tcp(port);
    let sock = dir.path("client");
    let mut c = connect(&sock);
    check_served(&mut c, "cli", 1);
    let before = scrape(port);
    assert_eq!(val(&before, "distcache_upstream_up"), 1.0);
    for i in 2..7 {
        check_served(&mut c, "cli", i);
    }
    assert_eq!(transact(&mut c, &request(50, 3, b"cli-2")), vec![0]);
    let after = scrape(port);
    for (k, want) in [
        (req("add", "server"), 5.0),
        (req("get", "server"), 5.0),
        (req("have", "server"), 1.0),
        (req("get", "no_server"), 0.0),
        ("distcache_upstream_rtt_seconds_count".to_string(), 11.0),
        ("distcache_upstream_reconnects_total".to_string(), 0.0),
    ] {
        assert_eq!(delta(&before, &after, &k), want, "{k}");
    }
    assert!(val(&after, "distcache_upstream_rtt_seconds_sum") > 0.0);
    assert_eq!(
        val(&after, "distcache_upstream_rtt_seconds_bucket{le=\"+Inf\"}"),
        val(&after, "distcache_upstream_rtt_seconds_count")
    );
    assert_eq!(val(&after, "distcache_connections_open"), 1.0);

    // The server goes: requests fail at once, the state shows it.
    let sock_path = srv.sock.clone();
    drop(srv);
    let deadline = Instant::now() + Duration::from_secs(5);
    while val(&scrape(port), "distcache_upstream_up") != 0.0 {
        assert!(Instant::now() < deadline, "upstream_up never went to 0");
        sleep(Duration::from_millis(20));
    }
    let p = transact(&mut c, &request(60, 1, b"cli-3"));
    assert!(p.is_empty() || p == vec![2], "{p:?}");
    let down = scrape(port);
    assert_eq!(
        delta(&after, &down, "distcache_upstream_disconnects_total"),
        1.0
    );
    let failed = delta(&after, &down, &req("get", "no_server"))
        + delta(&after, &down, &req("get", "disconnected"))
        + delta(&after, &down, &req("get", "server_down"));
    assert_eq!(failed, 1.0);

    // It comes back on the same socket: one reconnect.
    let srv = Srv::start(&dir, "s", &[]);
    assert_eq!(srv.sock, sock_path);
    let deadline = Instant::now() + Duration::from_secs(5);
    while val(&scrape(port), "distcache_upstream_up") != 1.0 {
        assert!(Instant::now() < deadline, "upstream_up never came back");
        sleep(Duration::from_millis(20));
    }
    let back = scrape(port);
    assert_eq!(
        delta(&after, &back, "distcache_upstream_reconnects_total"),
        1.0
    );
    check_served(&mut c, "cli", 70);
    drop(srv);
    drop(cli);
}
