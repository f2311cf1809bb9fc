//! Sentinel discovery (daemons/src/sentinel.rs) against real Debian
//! redis-server and redis-sentinel processes, each on a free loopback port
//! in its own temporary directory, stopped by pid: one primary, one
//! replica (`--replicaof`), three sentinels (quorum 2,
//! down-after-milliseconds 1000). The store is driven in the test's own
//! thread by a Poller loop, as the daemons drive it.
//!
//! Skipped with a message when redis-server or redis-sentinel is missing,
//! unless CI=true (then the test fails: .ci/run installs them).

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::free_port;
use common::redis::{have, loopback, Cluster, Redis, REDIS_SENTINEL, REDIS_SERVER};
use distcache_tools::redis::{self, Answer, Failure, Request, Secret};
use distcache_tools::sentinel::{self, Store};
use redis_protocol::resp2::types::OwnedFrame;

fn have_all(test: &str) -> bool {
    have(test, &[REDIS_SERVER, REDIS_SENTINEL])
}

/// The sentinel layer's lines about `master`.
fn sentinel_lines(master: &str) -> Vec<String> {
    let name = format!(" {master} ");
    common::redis::log_lines("sentinel: ")
        .into_iter()
        .filter(|l| format!("{l} ").contains(&name))
        .collect()
}

/// The connection's lines about the node at `port`.
fn redis_lines(port: u16) -> Vec<String> {
    common::redis::log_lines(&format!("redis {}: ", loopback(port)))
}

type Drv = common::redis::Drv<Store>;

fn add<'a>(id: &'a [u8], data: &'a [u8]) -> Request<'a> {
    Request::Add {
        id,
        data,
        timeout_ms: 60_000,
    }
}

fn scfg(ports: &[u16], master: &str) -> sentinel::Config {
    let mut c = sentinel::Config::new(ports.iter().map(|&p| loopback(p)).collect(), master);
    c.retry_ms = 100;
    c
}

/// Load counters, by kind of answer.
#[derive(Debug, Default)]
struct Tally {
    ok: u64,
    failed: u64,
    /// A GET that returned bytes never stored under its id.
    wrong: u64,
    /// An ADD of a fresh id refused as existing.
    matching: u64,
    /// The longest wait for an answer (ms).
    slowest: u64,
}

/// The session bytes stored under id `i` (about 200 B, the id inside).
fn data_of(i: u64) -> Vec<u8> {
    let mut d = format!("session {i} data ").into_bytes();
    while d.len() < 200 {
        d.push(b'a' + (i % 26) as u8);
    }
    d
}

/// One ADD of a fresh id and one GET of an earlier one, waited for.
/// True if both were answered by Redis (not failed).
fn load_step(d: &mut Drv, i: u64, t: &mut Tally) -> bool {
    let id = i.to_be_bytes();
    let data = data_of(i);
    let j = if i == 0 { 0 } else { (i * 7919) % i };
    let jid = j.to_be_bytes();
    let started = Instant::now();
    let mut all_ok = true;
    let a = d.submit(add(&id, &data));
    let g = d.submit(Request::Get { id: &jid });
    for (k, sub) in [a, g].into_iter().enumerate() {
        let ans = match sub {
            Err(f) => Answer::Failed(f),
            Ok(tok) => d.answer(tok, Duration::from_secs(3)),
        };
        t.slowest = t.slowest.max(started.elapsed().as_millis() as u64);
        match ans {
            Answer::Failed(_) => {
                t.failed += 1;
                all_ok = false;
            }
            Answer::Matching if k == 0 => {
                t.matching += 1;
            }
            Answer::Hit(v) if k == 1 && v != data_of(j) => {
                t.wrong += 1;
            }
            _ => t.ok += 1,
        }
    }
    all_ok
}

/// Ramp-up load for 700 ms: every step answered.
fn load_before(d: &mut Drv, i: &mut u64) -> Tally {
    let mut before = Tally::default();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(700) {
        load_step(d, *i, &mut before);
        *i += 1;
    }
    assert_eq!(before.failed, 0, "{before:?}");
    before
}

/// Load until 200 steps in a row succeeded on `new` (at most 25 s after
/// `since`); the time from `since` to the first success there.
fn load_until_moved(
    d: &mut Drv,
    i: &mut u64,
    new: &distcache_rs::nal::Address,
    since: Instant,
    t: &mut Tally,
) -> Duration {
    let mut window = None;
    let mut after_ok = 0;
    while after_ok < 200 {
        assert!(
            since.elapsed() < Duration::from_secs(25),
            "not on {new} 25 s later: {t:?}, primary {:?}",
            d.rc.primary()
        );
        let ok = load_step(d, *i, t);
        *i += 1;
        if ok && d.rc.primary() == Some(new) {
            window.get_or_insert(since.elapsed());
            after_ok += 1;
        }
        // Pace the load while it fails (each failure is at once).
        if !ok {
            d.idle(2);
        }
    }
    window.unwrap()
}

#[test]
fn discovery_follows_a_kill_9_of_the_primary_under_load_with_no_wrong_data() {
    if !have_all("failover") {
        return;
    }
    let ports = [free_port(), free_port(), free_port()];
    let mut c = Cluster::start("sfo", true, &ports, "");
    let replica_port = c.replica.as_ref().unwrap().port;
    let primary_port = c.primary.port;
    let mut rcfg = redis::Config::new(loopback(1));
    rcfg.deadline_ms = 250;
    rcfg.connect_timeout_ms = 500;
    let mut d = Drv::store(scfg(&ports, &c.master), rcfg);
    d.wait_up_within(Duration::from_secs(10));
    assert_eq!(d.rc.primary(), Some(&loopback(primary_port)));
    assert_eq!(d.call(add(b"before", b"kill")), Answer::Added);
    assert_eq!(
        d.call(Request::Get { id: b"before" }),
        Answer::Hit(b"kill".to_vec())
    );
    let lines = sentinel_lines(&c.master);
    assert_eq!(lines.len(), 1, "one line for the discovery: {lines:#?}");
    assert!(
        lines[0].ends_with(&format!(
            "sentinel: primary of {} is now 127.0.0.1:{primary_port} (was none)",
            c.master
        )),
        "{lines:#?}"
    );
    c.wait_ready(None);

    // Load, then kill -9 of the primary under it.
    let mut i = 0u64;
    let before = load_before(&mut d, &mut i);
    c.primary.proc.kill9();
    let killed = Instant::now();
    let mut during = Tally::default();
    let window = load_until_moved(&mut d, &mut i, &loopback(replica_port), killed, &mut during);
    eprintln!(
        "fail-over window: {} ms from kill -9 to the first success on the promoted replica \
         ({} failed, {} answered, {} operations)",
        window.as_millis(),
        during.failed,
        during.ok,
        2 * i
    );
    assert_eq!(during.wrong + before.wrong, 0, "wrong data: {during:?}");
    assert_eq!(during.matching + before.matching, 0, "{during:?}");
    assert!(during.failed > 0, "no failure during a fail-over?");
    // Fail fast: every operation was answered within its deadline (250
    // ms) plus a generous margin, never held for the whole fail-over.
    assert!(
        during.slowest < 1500,
        "an operation took {} ms",
        during.slowest
    );
    assert_eq!(d.rc.primary(), Some(&loopback(replica_port)));
    match common::redis::raw(replica_port, &[b"ROLE"]) {
        OwnedFrame::Array(a) => assert_eq!(a[0], OwnedFrame::BulkString(b"master".to_vec())),
        f => panic!("ROLE answered {f:?}"),
    }
    let lines = sentinel_lines(&c.master);
    let moved = format!(
        "sentinel: primary of {} is now 127.0.0.1:{replica_port} (was 127.0.0.1:{primary_port})",
        c.master
    );
    assert_eq!(
        lines.iter().filter(|l| l.ends_with(&moved)).count(),
        1,
        "{lines:#?}"
    );
    // The store was not re-created: the same object, a new connection.
    assert!(d.rc.redis().unwrap().stats().ups >= 2);
    // The dead primary's connection logged its state changes, not one
    // line per request.
    let dead = redis_lines(primary_port);
    assert!(
        dead.len() <= 4,
        "{} lines about the dead primary: {dead:#?}",
        dead.len()
    );
}

#[test]
fn one_sentinel_of_three_down_at_start_and_a_sentinel_password() {
    if !have_all("one-down") {
        return;
    }
    let down = free_port();
    let up = [free_port(), free_port()];
    let c = Cluster::start("s1d", false, &up, "requirepass sentinel-pw\n");
    let mut s = scfg(&[down, up[0], up[1]], &c.master);
    s.password = Some(Secret(b"sentinel-pw".to_vec()));
    s.refresh_ms = 200;
    let mut d = Drv::store(s, redis::Config::new(loopback(1)));
    d.wait_up_within(Duration::from_secs(10));
    assert_eq!(d.rc.primary(), Some(&c.primary.addr()));
    assert_eq!(d.call(add(b"k", b"v")), Answer::Added);
    assert_eq!(
        d.call(Request::Get { id: b"k" }),
        Answer::Hit(b"v".to_vec())
    );
    let lines = sentinel_lines(&c.master);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(
        lines[0].contains(&format!("127.0.0.1:{down} did not name the primary"))
            && lines[0].contains(&format!("127.0.0.1:{} did", up[0])),
        "{}",
        lines[0]
    );
    assert!(lines[1].contains("is now"), "{}", lines[1]);
    // Later rounds start with the sentinel that answered: no new line.
    // (The first round asked two, every later round one.) Each later
    // round checks the +switch-master subscription (AUTH'd too): PONG.
    d.idle(700);
    let st = d.rc.sentinel().unwrap().stats();
    assert_eq!(st.asked, st.rounds + 1, "{st:?}");
    assert!(st.rounds >= 3 && st.watch_pongs >= 2, "{st:?}");
    assert_eq!((st.watches, st.watch_failures), (1, 0), "{st:?}");
    assert!(d.rc.sentinel().unwrap().watching());
    assert_eq!(sentinel_lines(&c.master).len(), 2);

    // A wrong sentinel password: one line naming the refusal.
    let mut s2 = scfg(&[up[1]], &c.master);
    s2.password = Some(Secret(b"wrong".to_vec()));
    s2.user = None;
    let mut w = Drv::store(s2, redis::Config::new(loopback(1)));
    w.until(Duration::from_secs(5), "three failed rounds", |w| {
        w.rc.sentinel().unwrap().stats().failed_rounds >= 3
    });
    assert_eq!(w.submit(Request::Get { id: b"k" }), Err(Failure::Down));
    let lines: Vec<String> = sentinel_lines(&c.master)
        .into_iter()
        .filter(|l| l.contains("AUTH"))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains("WRONGPASS"), "{}", lines[0]);
}

#[test]
fn all_sentinels_down_fails_fast_logs_one_line_and_recovers_when_they_come_back() {
    if !have_all("all-down") {
        return;
    }
    let ports = [free_port(), free_port(), free_port()];
    let master = "sad-m";
    let mut d = Drv::store(scfg(&ports, master), redis::Config::new(loopback(1)));
    let t0 = Instant::now();
    assert_eq!(d.submit(Request::Get { id: b"x" }), Err(Failure::Down));
    assert!(
        t0.elapsed() < Duration::from_millis(50),
        "{:?}",
        t0.elapsed()
    );
    d.until(Duration::from_secs(5), "three failed rounds", |d| {
        d.rc.sentinel().unwrap().stats().failed_rounds >= 3
    });
    assert_eq!(d.submit(Request::Get { id: b"x" }), Err(Failure::Down));
    let lines = sentinel_lines(master);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    for p in ports {
        assert!(
            lines[0].contains(&format!("127.0.0.1:{p}: cannot connect")),
            "{}",
            lines[0]
        );
    }
    assert!(lines[0].contains("backoff"), "{}", lines[0]);
    // Rounds back off: not one per loop turn.
    let rounds = d.rc.sentinel().unwrap().stats().rounds;
    d.idle(500);
    let more = d.rc.sentinel().unwrap().stats().rounds - rounds;
    assert!(more <= 3, "{more} rounds in 500 ms");

    // The sentinels come back (with the primary they watch): found within
    // the backoff, without a new store.
    let c = Cluster::start("sad", false, &ports, "");
    assert_eq!(c.master, master);
    d.wait_up_within(Duration::from_secs(10));
    assert_eq!(d.rc.primary(), Some(&c.primary.addr()));
    assert_eq!(d.call(add(b"x", b"y")), Answer::Added);
    let lines = sentinel_lines(master);
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(
        lines[1].contains("the sentinels answer again for master sad-m"),
        "{}",
        lines[1]
    );
    assert!(lines[2].ends_with("(was none)"), "{}", lines[2]);
}

#[test]
fn a_wrong_master_name_is_one_clear_log_line() {
    if !have_all("wrong-name") {
        return;
    }
    let ports = [free_port(), free_port()];
    let c = Cluster::start("swn", false, &ports, "");
    let mut d = Drv::store(scfg(&ports, "no-such-m"), redis::Config::new(loopback(1)));
    d.until(Duration::from_secs(5), "three failed rounds", |d| {
        d.rc.sentinel().unwrap().stats().failed_rounds >= 3
    });
    assert_eq!(d.submit(Request::Get { id: b"x" }), Err(Failure::Down));
    assert!(d.rc.primary().is_none());
    let lines = sentinel_lines("no-such-m");
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].contains("none of the 2 sentinels knows a master named no-such-m"),
        "{}",
        lines[0]
    );
    drop(c);
}

/// How a sentinel of our own behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fake {
    /// Answers every `get-master-addr-by-name` with 127.0.0.1 and the
    /// port held in the test's cell (a stale or lying sentinel).
    Names,
    /// Accepts and never answers.
    Silent,
    /// Answers with a simple string that never ends.
    Endless,
    /// As `Names`, and never confirms a subscription.
    NamesNoWatch,
}

/// A sentinel of our own on a free port, until `stop`.
fn fake_sentinel(
    kind: Fake,
    port: Arc<AtomicU16>,
    stop: Arc<AtomicBool>,
) -> (u16, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let me = l.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        let mut held = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let Ok((mut s, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut got = Vec::new();
            let mut b = [0u8; 1024];
            let asks = |got: &[u8], what: &str| String::from_utf8_lossy(got).contains(what);
            while !asks(&got, "get-master-addr-by-name") && !asks(&got, "+switch-master") {
                match s.read(&mut b) {
                    Ok(n) if n > 0 => got.extend_from_slice(&b[..n]),
                    _ => break,
                }
            }
            if asks(&got, "+switch-master") && kind == Fake::NamesNoWatch {
                held.push(s);
                continue;
            }
            if asks(&got, "+switch-master") {
                // The subscription: confirmed, then nothing is announced.
                let _ = s.write_all(b"*3\r\n$9\r\nsubscribe\r\n$14\r\n+switch-master\r\n:1\r\n");
                held.push(s);
                continue;
            }
            match kind {
                Fake::Names | Fake::NamesNoWatch => {
                    let p = port.load(Ordering::Relaxed).to_string();
                    let reply = format!("*2\r\n$9\r\n127.0.0.1\r\n${}\r\n{p}\r\n", p.len());
                    let _ = s.write_all(reply.as_bytes());
                }
                Fake::Silent => held.push(s),
                Fake::Endless => {
                    let mut junk = vec![b'a'; 64 * 1024];
                    junk[0] = b'+';
                    let _ = s.set_write_timeout(Some(Duration::from_millis(500)));
                    let _ = s.write_all(&junk);
                    held.push(s);
                }
            }
        }
    });
    (me, h)
}

/// A TCP port where a connect hangs: a listener with a backlog of 0
/// whose queue is filled by connections never accepted, so that the
/// kernel drops further SYNs.
fn black_hole() -> (socket2::Socket, Vec<socket2::Socket>, u16) {
    use socket2::{Domain, Socket, Type};
    let l = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    l.bind(&any.into()).unwrap();
    l.listen(0).unwrap();
    let addr = l.local_addr().unwrap();
    let port = addr.as_socket().unwrap().port();
    let fill = (0..4)
        .map(|_| {
            let c = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            c.set_nonblocking(true).unwrap();
            let _ = c.connect(&addr);
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    (l, fill, port)
}

#[test]
fn a_hung_a_silent_and_an_endless_sentinel_are_each_passed_over_within_their_bound() {
    if !have_all("bounds") {
        return;
    }
    let primary = Redis::start("sbound-primary");
    let named = Arc::new(AtomicU16::new(primary.port));
    let stop = Arc::new(AtomicBool::new(false));
    let (_hole, _fill, hung) = black_hole();
    let (silent, h1) = fake_sentinel(Fake::Silent, named.clone(), stop.clone());
    let (endless, h2) = fake_sentinel(Fake::Endless, named.clone(), stop.clone());
    let (good, h3) = fake_sentinel(Fake::Names, named.clone(), stop.clone());
    let master = "sbound-m";
    let mut s = scfg(&[hung, silent, endless, good], master);
    s.connect_timeout_ms = 300;
    s.reply_timeout_ms = 300;
    let t0 = Instant::now();
    let mut d = Drv::store(s, redis::Config::new(loopback(1)));
    d.until(Duration::from_secs(5), "a primary named", |d| {
        d.rc.primary().is_some()
    });
    let took = t0.elapsed();
    // The hung connect and the silent sentinel each cost their bound,
    // no more (generous margin for a loaded machine).
    assert!(
        took >= Duration::from_millis(590) && took < Duration::from_millis(3000),
        "named after {took:?}"
    );
    d.wait_up_within(Duration::from_secs(5));
    assert_eq!(d.call(add(b"k", b"v")), Answer::Added);
    let lines = sentinel_lines(master);
    assert_eq!(lines.len(), 4, "{lines:#?}");
    let why = [
        (hung, "no connection within 300 ms"),
        (silent, "no answer within 300 ms"),
        (endless, "a reply longer than 4096 bytes"),
    ];
    for (line, (port, why)) in lines.iter().zip(why) {
        assert!(
            line.contains(&format!("127.0.0.1:{port} did not name")) && line.contains(why),
            "{line}"
        );
        assert!(line.ends_with(&format!("127.0.0.1:{good} did")), "{line}");
    }
    stop.store(true, Ordering::Relaxed);
    for h in [h1, h2, h3] {
        h.join().unwrap();
    }
}

#[test]
fn a_node_named_primary_that_is_a_replica_is_refused_then_followed_when_it_moves() {
    if !have_all("role") {
        return;
    }
    let primary = Redis::start("srole-primary");
    let pp = primary.port.to_string();
    let replica = Redis::start_with(
        "srole-replica",
        free_port(),
        &["--replicaof", "127.0.0.1", &pp],
    );
    let named = Arc::new(AtomicU16::new(replica.port));
    let stop = Arc::new(AtomicBool::new(false));
    let (sport, h) = fake_sentinel(Fake::Names, named.clone(), stop.clone());
    let master = "srole-m";
    let mut d = Drv::store(scfg(&[sport], master), redis::Config::new(loopback(1)));
    d.until(Duration::from_secs(5), "the replica refused twice", |d| {
        d.rc.redis().is_some_and(|r| r.stats().downs >= 2)
    });
    assert!(!d.rc.is_up());
    assert_eq!(d.rc.redis().unwrap().stats().ups, 0);
    assert!(matches!(d.call(add(b"x", b"y")), Answer::Failed(_)));
    let lines = redis_lines(replica.port);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].contains("is a slave, not a primary"),
        "{}",
        lines[0]
    );
    // The sentinel now names the real primary: followed without a new store.
    named.store(primary.port, Ordering::Relaxed);
    d.wait_up_within(Duration::from_secs(5));
    assert_eq!(d.rc.primary(), Some(&primary.addr()));
    assert_eq!(d.call(add(b"x", b"y")), Answer::Added);
    let lines = sentinel_lines(master);
    let moved = format!(
        "primary of {master} is now 127.0.0.1:{} (was 127.0.0.1:{})",
        primary.port, replica.port
    );
    assert!(lines.iter().any(|l| l.ends_with(&moved)), "{lines:#?}");
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap();
}

#[test]
fn a_manual_failover_with_the_old_primary_alive_is_followed_with_no_wrong_data() {
    if !have_all("manual") {
        return;
    }
    let ports = [free_port(), free_port(), free_port()];
    let c = Cluster::start("smf", true, &ports, "");
    let replica_port = c.replica.as_ref().unwrap().port;
    let mut rcfg = redis::Config::new(loopback(1));
    rcfg.deadline_ms = 250;
    let mut d = Drv::store(scfg(&ports, &c.master), rcfg);
    d.wait_up_within(Duration::from_secs(10));
    assert_eq!(d.rc.primary(), Some(&c.primary.addr()));
    c.wait_ready(None);
    let mut i = 0u64;
    let before = load_before(&mut d, &mut i);
    // The old primary stays up: demoted by the sentinels, it refuses
    // writes (READONLY) or drops its clients; either sends the store back
    // to the sentinels.
    assert_eq!(
        common::redis::raw(ports[1], &[b"SENTINEL", b"FAILOVER", c.master.as_bytes()]),
        OwnedFrame::SimpleString(b"OK".to_vec())
    );
    let asked = Instant::now();
    let mut during = Tally::default();
    let window = load_until_moved(&mut d, &mut i, &loopback(replica_port), asked, &mut during);
    eprintln!(
        "manual fail-over: {} ms from SENTINEL FAILOVER to the first success on the promoted \
         replica ({} failed, {} answered)",
        window.as_millis(),
        during.failed,
        during.ok
    );
    assert_eq!(during.wrong + before.wrong, 0, "wrong data: {during:?}");
    assert_eq!(during.matching + before.matching, 0, "{during:?}");
    assert!(
        during.slowest < 1500,
        "an operation took {} ms",
        during.slowest
    );
    // Followed on the announcement, not at the next round 10 s later.
    let st = d.rc.sentinel().unwrap().stats();
    assert!(st.switches >= 1, "{st:?}");
    assert!(window < Duration::from_secs(8), "moved after {window:?}");
    let moved = format!(
        "sentinel: primary of {} is now 127.0.0.1:{replica_port} (was 127.0.0.1:{})",
        c.master, c.primary.port
    );
    let lines = sentinel_lines(&c.master);
    assert_eq!(
        lines.iter().filter(|l| l.ends_with(&moved)).count(),
        1,
        "{lines:#?}"
    );
}

#[test]
fn a_subscription_never_confirmed_is_bounded_logged_once_and_the_sentinel_still_asked() {
    if !have_all("no-watch") {
        return;
    }
    let primary = Redis::start("snw-primary");
    let named = Arc::new(AtomicU16::new(primary.port));
    let stop = Arc::new(AtomicBool::new(false));
    let (sport, h) = fake_sentinel(Fake::NamesNoWatch, named.clone(), stop.clone());
    let master = "snw-m";
    let mut s = scfg(&[sport], master);
    s.connect_timeout_ms = 200;
    s.reply_timeout_ms = 200;
    s.refresh_ms = 300;
    let mut d = Drv::store(s, redis::Config::new(loopback(1)));
    d.wait_up_within(Duration::from_secs(5));
    d.until(Duration::from_secs(5), "three lost subscriptions", |d| {
        d.rc.sentinel().unwrap().stats().watch_failures >= 3
    });
    assert!(!d.rc.sentinel().unwrap().watching());
    assert_eq!(d.call(add(b"k", b"v")), Answer::Added);
    let lines: Vec<String> = sentinel_lines(master)
        .into_iter()
        .filter(|l| l.contains("watch"))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].contains(&format!("cannot watch +switch-master on 127.0.0.1:{sport}"))
            && lines[0].contains("no answer within 200 ms")
            && lines[0].contains("asking every 300 ms"),
        "{}",
        lines[0]
    );
    // Rounds go on meanwhile.
    assert!(d.rc.sentinel().unwrap().stats().rounds >= 3);
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap();
}

#[test]
fn a_stale_sentinel_naming_a_replica_is_passed_over_for_the_next_one() {
    if !have_all("stale") {
        return;
    }
    let primary = Redis::start("sstale-primary");
    let pp = primary.port.to_string();
    let replica = Redis::start_with(
        "sstale-replica",
        free_port(),
        &["--replicaof", "127.0.0.1", &pp],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let stale = Arc::new(AtomicU16::new(replica.port));
    let right = Arc::new(AtomicU16::new(primary.port));
    let (s1, h1) = fake_sentinel(Fake::Names, stale, stop.clone());
    let (s2, h2) = fake_sentinel(Fake::Names, right, stop.clone());
    let master = "sstale-m";
    let mut d = Drv::store(scfg(&[s1, s2], master), redis::Config::new(loopback(1)));
    d.wait_up_within(Duration::from_secs(5));
    assert_eq!(d.rc.primary(), Some(&primary.addr()));
    assert_eq!(d.call(add(b"k", b"v")), Answer::Added);
    let refused = redis_lines(replica.port);
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert!(refused[0].contains("not a primary"), "{}", refused[0]);
    let lines = sentinel_lines(master);
    assert!(
        lines.last().unwrap().ends_with(&format!(
            "primary of {master} is now 127.0.0.1:{} (was 127.0.0.1:{})",
            primary.port, replica.port
        )),
        "{lines:#?}"
    );
    stop.store(true, Ordering::Relaxed);
    h1.join().unwrap();
    h2.join().unwrap();
}

#[test]
fn a_direct_store_serves_one_fixed_server_without_sentinels() {
    if !have_all("direct") {
        return;
    }
    let r = Redis::start("sdirect");
    let mut d = Drv::direct(redis::Config::new(r.addr()));
    assert!(d.rc.sentinel().is_none());
    assert!(d.rc.owns(common::redis::REDIS_TOKEN) && !d.rc.owns(common::redis::SENTINEL_TOKEN));
    d.wait_up_within(Duration::from_secs(5));
    assert_eq!(d.rc.primary(), Some(&r.addr()));
    assert_eq!(d.call(add(b"k", b"v")), Answer::Added);
    assert_eq!(
        d.call(Request::Get { id: b"k" }),
        Answer::Hit(b"v".to_vec())
    );
}
