//! The Redis client of the daemons (daemons/src/redis.rs) against a real
//! redis-server started on a free loopback port in a temporary directory
//! (no persistence), stopped by pid; and against small fake servers for
//! what a real one does not do (garbage, a close in mid-pipeline, silence).
//!
//! Skipped with a message when /usr/bin/redis-server is missing, unless
//! CI=true (then a missing Redis fails the test: .ci/run installs it).

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::free_port;
use common::redis::{have, loopback, Drv, Redis, REDIS_CLI, REDIS_SERVER};
use distcache_rs::nal::Address;
use distcache_rs::proto::{status, MAX_TOTAL_DATA};
use distcache_tools::redis::{
    Answer, Config, Failure, ReplyError, Request, Secret, BATCH_BYTES, DEFAULT_PREFIX, MAX_PENDING,
};
use distcache_tools::tools;
use redis_protocol::resp2::types::OwnedFrame;

/// Whether the tests can run; outside CI a machine without Redis skips.
fn have_redis(test: &str) -> bool {
    have(test, &[REDIS_SERVER])
}

fn log_lines(addr: &Address) -> Vec<String> {
    common::redis::log_lines(&format!("redis {addr}: "))
}

fn add<'a>(id: &'a [u8], data: &'a [u8], timeout_ms: u64) -> Request<'a> {
    Request::Add {
        id,
        data,
        timeout_ms,
    }
}

#[test]
fn answers_add_get_remove_have_as_distcache_does() {
    if !have_redis("answers") {
        return;
    }
    let r = Redis::start("redis-answers");
    let mut d = Drv::new(Config::new(r.addr()));
    d.wait_up();
    let id = b"session-1";
    let a = d.call(add(id, b"first", 60_000));
    assert_eq!((a.clone(), a.status()), (Answer::Added, status::OK));
    // NX: the id is taken, the original's "matching session" refusal,
    // and the stored bytes are not replaced.
    let a = d.call(add(id, b"second", 60_000));
    assert_eq!(
        (a.clone(), a.status()),
        (Answer::Matching, status::ADD_MATCHING_SESSION)
    );
    assert_eq!(d.call(Request::Get { id }), Answer::Hit(b"first".to_vec()));
    assert_eq!(d.call(Request::Have { id }), Answer::Yes);
    let a = d.call(Request::Remove { id });
    assert_eq!((a.clone(), a.status()), (Answer::Removed, status::OK));
    let a = d.call(Request::Remove { id });
    assert_eq!((a.clone(), a.status()), (Answer::Absent, status::NOTOK));
    let a = d.call(Request::Get { id });
    assert_eq!((a.clone(), a.status()), (Answer::Miss, status::NOTOK));
    let a = d.call(Request::Have { id });
    assert_eq!((a.clone(), a.status()), (Answer::No, status::NOTOK));
    // Binary ids and data, the largest session: stored as given.
    let bid: Vec<u8> = (0..64u8).collect();
    let big: Vec<u8> = (0..MAX_TOTAL_DATA).map(|i| (i * 7) as u8).collect();
    assert_eq!(d.call(add(&bid, &big, 60_000)), Answer::Added);
    assert_eq!(d.call(Request::Get { id: &bid }), Answer::Hit(big));
    // Pipelined: many requests in flight, answered in order.
    let ids: Vec<Vec<u8>> = (0..200u32).map(|i| i.to_be_bytes().to_vec()).collect();
    let tokens: Vec<u64> = ids
        .iter()
        .map(|id| d.submit(add(id, id, 60_000)).unwrap())
        .collect();
    assert!(d.rc.pending() > 1, "nothing was in flight at once");
    for t in tokens {
        assert_eq!(d.answer(t, Duration::from_secs(5)), Answer::Added);
    }
    for id in &ids {
        assert_eq!(d.call(Request::Get { id }), Answer::Hit(id.clone()));
    }
    // Invalid requests never reach Redis.
    assert_eq!(d.submit(Request::Get { id: b"" }), Err(Failure::Invalid));
    assert_eq!(d.submit(add(b"x", b"y", 0)), Err(Failure::Invalid));
    assert_eq!(d.rc.stats().downs, 0);
    assert_eq!(d.rc.stats().connects, 1);
}

#[test]
fn keys_are_prefix_and_lowercase_hex_with_the_timeout_as_ttl() {
    if !have_redis("keys") {
        return;
    }
    let r = Redis::start("redis-keys");
    let mut d = Drv::new(Config::new(r.addr()));
    d.wait_up();
    let id = [0x0a, 0xff, 0x01, 0xbc];
    assert_eq!(d.call(add(&id, b"\x00sess\xff", 45_000)), Answer::Added);
    let key = format!("{DEFAULT_PREFIX}0aff01bc");
    assert_eq!(d.rc.key(&id), key.as_bytes());
    assert_eq!(
        r.raw(&[b"KEYS", b"*"]),
        OwnedFrame::Array(vec![OwnedFrame::BulkString(key.clone().into_bytes())])
    );
    assert_eq!(
        r.raw(&[b"GET", key.as_bytes()]),
        OwnedFrame::BulkString(b"\x00sess\xff".to_vec())
    );
    match r.raw(&[b"PTTL", key.as_bytes()]) {
        OwnedFrame::Integer(ms) => assert!(ms > 40_000 && ms <= 45_000, "PTTL {ms}"),
        f => panic!("PTTL answered {f:?}"),
    }
    // What an operator sees with redis-cli.
    if Path::new(REDIS_CLI).exists() {
        let out = std::process::Command::new(REDIS_CLI)
            .args(["-p", &r.port.to_string(), "TTL", &key])
            .output()
            .unwrap();
        let ttl: i64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        assert!((40..=45).contains(&ttl), "redis-cli TTL {ttl}");
    }
    // A session stored by another client under the same layout (Apache's
    // mod_socache_redis) is found, and another prefix keeps its own keys.
    r.raw(&[
        b"SET",
        b"mod_ssl-sess:c0ffee",
        b"from-apache",
        b"PX",
        b"60000",
    ]);
    assert_eq!(
        d.call(Request::Get {
            id: &[0xc0, 0xff, 0xee]
        }),
        Answer::Hit(b"from-apache".to_vec())
    );
    let mut cfg = Config::new(r.addr());
    cfg.prefix = b"stunnel-sess:".to_vec();
    let mut s = Drv::new(cfg);
    s.wait_up();
    assert_eq!(s.call(Request::Have { id: &id }), Answer::No);
    assert_eq!(s.call(add(&id, b"st", 45_000)), Answer::Added);
    assert_eq!(
        r.raw(&[b"EXISTS", b"stunnel-sess:0aff01bc"]),
        OwnedFrame::Integer(1)
    );
}

#[test]
fn auth_with_user_and_password_and_one_line_for_a_wrong_one() {
    if !have_redis("auth") {
        return;
    }
    let r = Redis::start("redis-auth");
    assert_eq!(
        r.raw(&[b"ACL", b"SETUSER", b"alice", b"on", b">s3cret", b"~*", b"+@all"]),
        OwnedFrame::SimpleString(b"OK".to_vec())
    );
    let mut cfg = Config::new(r.addr());
    cfg.user = Some("alice".into());
    cfg.password = Some(Secret(b"s3cret".to_vec()));
    let mut d = Drv::new(cfg.clone());
    // Submitted while the connection opens: sent behind AUTH and PING.
    assert!(!d.rc.is_up());
    let t = d
        .submit(add(b"a", b"b", 10_000))
        .expect("queued while opening");
    assert_eq!(d.answer(t, Duration::from_secs(5)), Answer::Added);
    assert!(d.rc.is_up());
    assert_eq!(
        d.call(Request::Get { id: b"a" }),
        Answer::Hit(b"b".to_vec())
    );
    // The connection is alice's.
    match r.raw(&[b"CLIENT", b"LIST"]) {
        OwnedFrame::BulkString(list) => {
            let list = String::from_utf8_lossy(&list).to_string();
            assert!(list.contains("user=alice"), "{list}");
        }
        f => panic!("CLIENT LIST answered {f:?}"),
    }
    assert!(format!("{cfg:?}").contains("Secret(..)"));
    assert!(
        !format!("{cfg:?}").contains("s3cret"),
        "Debug shows the password"
    );

    // A wrong password: never up, requests fail, retried with backoff, one
    // log line naming the user however many attempts.
    let r2 = Redis::start("redis-auth2");
    r2.raw(&[
        b"ACL", b"SETUSER", b"alice", b"on", b">s3cret", b"~*", b"+@all",
    ]);
    let mut bad = cfg.clone();
    bad.addr = r2.addr();
    bad.password = Some(Secret(b"wrong".to_vec()));
    let mut w = Drv::new(bad);
    let mut failures = 0;
    w.until(Duration::from_secs(10), "four connect attempts", |w| {
        if let Answer::Failed(_) = w.call(Request::Get { id: b"a" }) {
            failures += 1;
        }
        w.rc.stats().connects >= 4
    });
    assert!(!w.rc.is_up());
    assert!(failures > 0);
    assert_eq!(w.rc.stats().ups, 0);
    let lines = log_lines(&r2.addr());
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].contains("alice") && lines[0].contains("WRONGPASS"),
        "{}",
        lines[0]
    );
}

#[test]
fn redis_absent_at_start_fails_at_once_then_serves_when_it_appears() {
    if !have_redis("absent") {
        return;
    }
    let port = free_port();
    let mut d = Drv::new(Config::new(loopback(port)));
    assert!(!d.rc.is_up());
    // The first connect may still be in progress (queued, failed by the
    // refusal as soon as it comes) or refused already (failed at once).
    let t0 = Instant::now();
    match d.submit(Request::Get { id: b"x" }) {
        Err(f) => assert_eq!(f, Failure::Down),
        Ok(t) => assert_eq!(
            d.answer(t, Duration::from_secs(1)),
            Answer::Failed(Failure::Reset)
        ),
    }
    assert!(
        t0.elapsed() < Duration::from_millis(50),
        "{:?}",
        t0.elapsed()
    );
    // Between attempts, a request fails at once.
    d.until(Duration::from_secs(1), "down between attempts", |d| {
        !d.rc.is_up() && d.rc.fd().is_none()
    });
    assert_eq!(d.submit(Request::Get { id: b"x" }), Err(Failure::Down));
    // A few failed attempts with backoff (not one per loop turn).
    d.until(Duration::from_secs(5), "three connect attempts", |d| {
        d.rc.stats().connects >= 3
    });
    let started = Instant::now();
    let t = tools::now_ms();
    d.until(Duration::from_millis(500), "half a second", |_| {
        tools::now_ms() >= t + 500
    });
    let n = d.rc.stats().connects;
    assert!(n <= 12, "{n} connect attempts in {:?}", started.elapsed());
    let r = Redis::start_on("redis-absent", port);
    d.wait_up();
    assert_eq!(d.call(add(b"x", b"y", 10_000)), Answer::Added);
    assert_eq!(
        d.call(Request::Get { id: b"x" }),
        Answer::Hit(b"y".to_vec())
    );
    let lines = log_lines(&r.addr());
    assert_eq!(lines.len(), 2, "one down, one up: {lines:#?}");
    assert!(lines[0].contains("down"), "{}", lines[0]);
    assert!(lines[1].ends_with("up"), "{}", lines[1]);
}

#[test]
fn a_redis_that_never_answers_costs_a_deadline_not_a_stall() {
    // Accepts (the kernel completes the handshake) and never reads.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let mut cfg = Config::new(loopback(port));
    cfg.deadline_ms = 100;
    cfg.connect_timeout_ms = 600;
    let mut d = Drv::new(cfg);
    let t0 = Instant::now();
    let t = d
        .submit(Request::Get { id: b"x" })
        .expect("queued while opening");
    assert_eq!(
        d.answer(t, Duration::from_secs(2)),
        Answer::Failed(Failure::Deadline)
    );
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(90) && took < Duration::from_millis(400),
        "deadline answer after {took:?}"
    );
    // The handshake is given up; then requests fail at once.
    d.until(Duration::from_secs(3), "the connection given up", |d| {
        d.rc.stats().downs >= 1
    });
    assert_eq!(d.submit(Request::Get { id: b"x" }), Err(Failure::Down));
    assert_eq!(d.rc.stats().deadline_failures, 1);
    assert!(d.done.is_empty(), "answered twice: {:?}", d.done);
    let lines = log_lines(&loopback(port));
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains("600 ms"), "{}", lines[0]);
    drop(l);
}

#[test]
fn an_oversized_value_is_a_miss_logged_once_and_the_stream_stays_in_step() {
    if !have_redis("oversize") {
        return;
    }
    let r = Redis::start("redis-oversize");
    let mut d = Drv::new(Config::new(r.addr()));
    d.wait_up();
    let big = vec![b'B'; 300 * 1024]; // longer than the input buffer too
    let exact = vec![b'E'; MAX_TOTAL_DATA];
    let over = vec![b'O'; MAX_TOTAL_DATA + 1];
    r.raw(&[b"SET", &d.rc.key(b"big"), &big]);
    r.raw(&[b"SET", &d.rc.key(b"exact"), &exact]);
    r.raw(&[b"SET", &d.rc.key(b"over"), &over]);
    let t1 = d.submit(Request::Get { id: b"big" }).unwrap();
    let t2 = d.submit(Request::Get { id: b"exact" }).unwrap();
    let t3 = d.submit(Request::Get { id: b"over" }).unwrap();
    let t4 = d.submit(Request::Have { id: b"big" }).unwrap();
    let lim = Duration::from_secs(5);
    assert_eq!(d.answer(t1, lim), Answer::Miss);
    assert_eq!(d.answer(t2, lim), Answer::Hit(exact));
    assert_eq!(d.answer(t3, lim), Answer::Miss);
    assert_eq!(d.answer(t4, lim), Answer::Yes);
    assert_eq!(d.rc.stats().oversize, 2);
    assert_eq!(d.rc.stats().downs, 0, "the connection was reset");
    let lines: Vec<String> = log_lines(&r.addr())
        .into_iter()
        .filter(|l| l.contains("session limit"))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:#?}");
}

#[test]
fn the_pipeline_bound_fails_a_request_at_once() {
    if !have_redis("bound") {
        return;
    }
    let r = Redis::start("redis-bound");
    let mut d = Drv::new(Config::new(r.addr()));
    d.wait_up();
    let mut tokens = Vec::new();
    for i in 0..MAX_PENDING as u32 {
        let id = i.to_be_bytes();
        tokens.push(
            d.submit(Request::Have { id: &id })
                .expect("within the bound"),
        );
    }
    assert_eq!(d.rc.pending(), MAX_PENDING);
    assert_eq!(
        d.submit(Request::Have { id: b"one more" }),
        Err(Failure::Full)
    );
    for t in tokens {
        assert_eq!(d.answer(t, Duration::from_secs(10)), Answer::No);
    }
    assert_eq!(d.rc.pending(), 0);
    assert_eq!(d.call(Request::Have { id: b"one more" }), Answer::No);
}

#[test]
fn an_error_reply_fails_only_its_request() {
    if !have_redis("errors") {
        return;
    }
    let r = Redis::start("redis-errors");
    let mut d = Drv::new(Config::new(r.addr()));
    d.wait_up();
    r.raw(&[b"LPUSH", &d.rc.key(b"list"), b"x"]);
    assert_eq!(d.call(add(b"ok", b"data", 60_000)), Answer::Added);
    // WRONGTYPE between two good requests, pipelined.
    let t1 = d.submit(Request::Get { id: b"ok" }).unwrap();
    let t2 = d.submit(Request::Get { id: b"list" }).unwrap();
    let t3 = d.submit(Request::Get { id: b"ok" }).unwrap();
    let lim = Duration::from_secs(5);
    assert_eq!(d.answer(t1, lim), Answer::Hit(b"data".to_vec()));
    let a = d.answer(t2, lim);
    assert_eq!(a, Answer::Failed(Failure::Reply(ReplyError::Other)));
    assert_eq!(a.status(), status::DISCONNECTED);
    assert_eq!(d.answer(t3, lim), Answer::Hit(b"data".to_vec()));
    // OOM: maxmemory too small for anything.
    r.raw(&[b"CONFIG", b"SET", b"maxmemory", b"1"]);
    assert_eq!(
        d.call(add(b"new", b"data", 60_000)),
        Answer::Failed(Failure::Reply(ReplyError::Oom))
    );
    r.raw(&[b"CONFIG", b"SET", b"maxmemory", b"0"]);
    // READONLY: the server turned replica (of nothing that answers).
    assert!(!d.rc.take_rediscovery());
    let nowhere = free_port().to_string();
    r.raw(&[b"REPLICAOF", b"127.0.0.1", nowhere.as_bytes()]);
    assert_eq!(
        d.call(add(b"new", b"data", 60_000)),
        Answer::Failed(Failure::Reply(ReplyError::ReadOnly))
    );
    assert!(d.rc.take_rediscovery(), "READONLY asks for rediscovery");
    assert!(!d.rc.take_rediscovery(), "the flag is taken once");
    r.raw(&[b"REPLICAOF", b"NO", b"ONE"]);
    assert_eq!(d.call(add(b"new", b"data", 60_000)), Answer::Added);
    assert_eq!(d.rc.stats().reply_errors, 3);
    assert_eq!(d.rc.stats().downs, 0, "an error reply reset the connection");
    assert_eq!(d.rc.stats().connects, 1);
}

/// A fake Redis: answers the handshake's PING, waits for `requests` GETs,
/// then sends `then` (if any) and closes.
fn fake(requests: usize, then: Vec<u8>) -> (u16, std::thread::JoinHandle<()>) {
    fake_holding(requests, then, Duration::ZERO)
}

/// [`fake`], holding the connection open for `hold` (silent) before it
/// closes.
fn fake_holding(
    requests: usize,
    then: Vec<u8>,
    hold: Duration,
) -> (u16, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = Vec::new();
        let mut b = [0u8; 4096];
        let mut ponged = false;
        loop {
            let text = String::from_utf8_lossy(&got).to_string();
            if !ponged && text.contains("PING") {
                s.write_all(b"+PONG\r\n").unwrap();
                ponged = true;
            }
            if text.matches("GET").count() >= requests {
                break;
            }
            let n = s.read(&mut b).expect("the client's requests");
            assert!(n > 0, "the client closed first");
            got.extend_from_slice(&b[..n]);
        }
        // The client may reset the connection while this is written.
        let _ = s.write_all(&then);
        std::thread::sleep(hold);
    });
    (port, h)
}

fn reset_case(then: Vec<u8>, why: &str) {
    let (port, h) = fake(3, then);
    let mut d = Drv::new(Config::new(loopback(port)));
    d.wait_up();
    let tokens: Vec<u64> = (0..3)
        .map(|_| d.submit(Request::Get { id: b"x" }).unwrap())
        .collect();
    for &t in &tokens {
        assert_eq!(
            d.answer(t, Duration::from_secs(5)),
            Answer::Failed(Failure::Reset)
        );
    }
    h.join().unwrap();
    assert!(!d.rc.is_up());
    assert!(
        d.rc.take_rediscovery(),
        "a lost primary asks for rediscovery"
    );
    // Each failed once: nothing more comes.
    let t = tools::now_ms();
    d.until(Duration::from_secs(2), "200 ms more", |_| {
        tools::now_ms() >= t + 200
    });
    assert!(d.done.is_empty(), "answered twice: {:?}", d.done);
    let lines = log_lines(&loopback(port));
    assert!(
        lines.iter().any(|l| l.contains("down") && l.contains(why)),
        "{lines:#?}"
    );
}

#[test]
fn protocol_garbage_resets_and_fails_each_waiting_request_once() {
    reset_case(b"?garbage\r\n".to_vec(), "protocol error");
}

#[test]
fn a_close_resets_and_fails_each_waiting_request_once() {
    reset_case(Vec::new(), "closed");
}

#[test]
fn an_endless_reply_fills_the_bounded_input_and_resets() {
    // A simple string that never ends: the input buffer stops it.
    let mut then = vec![b'+'];
    then.resize(1 << 20, b'a');
    reset_case(then, "longer than");
}

#[test]
fn an_up_connection_that_goes_silent_is_reset_after_the_stall_time() {
    let (port, h) = fake_holding(1, Vec::new(), Duration::from_secs(3));
    let mut cfg = Config::new(loopback(port));
    cfg.deadline_ms = 100;
    cfg.stall_ms = 400;
    let mut d = Drv::new(cfg);
    d.wait_up();
    let t0 = Instant::now();
    let t = d.submit(Request::Get { id: b"x" }).unwrap();
    assert_eq!(
        d.answer(t, Duration::from_secs(2)),
        Answer::Failed(Failure::Deadline)
    );
    d.until(Duration::from_secs(2), "the silent connection reset", |d| {
        !d.rc.is_up()
    });
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(380) && took < Duration::from_millis(1500),
        "reset after {took:?}"
    );
    assert_eq!(d.submit(Request::Get { id: b"x" }), Err(Failure::Down));
    assert!(d.done.is_empty(), "answered twice: {:?}", d.done);
    let lines = log_lines(&loopback(port));
    assert!(
        lines.iter().any(|l| l.contains("down: no reply for")),
        "{lines:#?}"
    );
    h.join().unwrap();
}

#[test]
fn a_request_submitted_during_the_handshake_is_sent_once_it_is_up() {
    // PONG comes late: the connect is done, the handshake is not.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = Vec::new();
        let mut b = [0u8; 4096];
        let mut read_until = |s: &mut TcpStream, what: &str, got: &mut Vec<u8>| {
            while !String::from_utf8_lossy(got).contains(what) {
                let n = s.read(&mut b).unwrap_or(0);
                assert!(n > 0, "no {what} from the client");
                got.extend_from_slice(&b[..n]);
            }
        };
        read_until(&mut s, "PING", &mut got);
        std::thread::sleep(Duration::from_millis(150));
        s.write_all(b"+PONG\r\n").unwrap();
        read_until(&mut s, "GET", &mut got);
        s.write_all(b"$-1\r\n").unwrap();
        let _ = s.read(&mut b);
    });
    let mut cfg = Config::new(loopback(port));
    cfg.deadline_ms = 1000;
    let mut d = Drv::new(cfg);
    let t = tools::now_ms();
    d.until(Duration::from_secs(1), "60 ms of handshake", |_| {
        tools::now_ms() >= t + 60
    });
    assert!(!d.rc.is_up(), "up before its PONG");
    let tok = d.submit(Request::Get { id: b"x" }).unwrap();
    assert_eq!(d.answer(tok, Duration::from_secs(2)), Answer::Miss);
    drop(d);
    h.join().unwrap();
}

/// A fake Redis that reports each read it makes (one item per read, in
/// `rx`) and answers every GET it has seen with a miss and every SET with
/// OK; the handshake's PING gets its PONG. Ends when the client closes.
fn recording_fake() -> (
    u16,
    std::sync::mpsc::Receiver<Vec<u8>>,
    std::thread::JoinHandle<()>,
) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut got = Vec::new();
        let mut b = vec![0u8; 1 << 20];
        let (mut gets, mut sets, mut ponged) = (0, 0, false);
        let count =
            |got: &[u8], what: &[u8]| got.windows(what.len()).filter(|w| *w == what).count();
        loop {
            let n = match s.read(&mut b) {
                Ok(n) if n > 0 => n,
                _ => return,
            };
            got.extend_from_slice(&b[..n]);
            let _ = tx.send(b[..n].to_vec());
            let mut reply = Vec::new();
            if !ponged && count(&got, b"PING") > 0 {
                ponged = true;
                reply.extend_from_slice(b"+PONG\r\n");
            }
            let g = count(&got, b"$3\r\nGET\r\n");
            let st = count(&got, b"$3\r\nSET\r\n");
            for _ in gets..g {
                reply.extend_from_slice(b"$-1\r\n");
            }
            for _ in sets..st {
                reply.extend_from_slice(b"+OK\r\n");
            }
            (gets, sets) = (g, st);
            if s.write_all(&reply).is_err() {
                return;
            }
        }
    });
    (port, rx, h)
}

fn commands_in(chunk: &[u8], what: &[u8]) -> usize {
    chunk.windows(what.len()).filter(|w| *w == what).count()
}

#[test]
fn the_requests_of_one_turn_reach_redis_in_one_write() {
    let (port, rx, h) = recording_fake();
    // Past the 300 ms the test holds the batch.
    let mut cfg = Config::new(loopback(port));
    cfg.deadline_ms = 60_000;
    let mut d = Drv::new(cfg);
    d.wait_up();
    while rx.try_recv().is_ok() {} // the handshake
    let ids: Vec<[u8; 4]> = (0..50u32).map(u32::to_be_bytes).collect();
    let tokens: Vec<u64> = ids
        .iter()
        .map(|id| d.submit(Request::Get { id }).unwrap())
        .collect();
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "a submit wrote before the end of its turn"
    );
    d.rc.send_queued(&d.poller, tools::now_ms(), &mut d.done);
    let chunk = rx.recv_timeout(Duration::from_secs(5)).expect("the batch");
    assert_eq!(
        commands_in(&chunk, b"$3\r\nGET\r\n"),
        50,
        "the 50 GETs of one turn came in one read"
    );
    for t in tokens {
        assert_eq!(d.answer(t, Duration::from_secs(5)), Answer::Miss);
    }
    assert!(rx.try_recv().is_err(), "more was written than the batch");
    drop(d);
    h.join().unwrap();
}

#[test]
fn a_lone_request_goes_out_in_its_turn_well_within_the_deadline() {
    let (port, rx, h) = recording_fake();
    let mut cfg = Config::new(loopback(port));
    cfg.deadline_ms = 60_000;
    let mut d = Drv::new(cfg);
    d.wait_up();
    while rx.try_recv().is_ok() {}
    let start = Instant::now();
    let t = d.submit(Request::Get { id: b"alone" }).unwrap();
    // One turn of the loop writes it: the fake sees it before the loop
    // turns again.
    d.turn(Duration::ZERO);
    let chunk = rx.recv_timeout(Duration::from_secs(5)).expect("the GET");
    assert_eq!(commands_in(&chunk, b"$3\r\nGET\r\n"), 1);
    assert_eq!(d.answer(t, Duration::from_secs(5)), Answer::Miss);
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "answered {:?} after the submit, the deadline is 60 s",
        start.elapsed()
    );
    drop(d);
    h.join().unwrap();
}

#[test]
fn a_turn_queueing_batch_bytes_writes_at_once() {
    let (port, rx, h) = recording_fake();
    let mut cfg = Config::new(loopback(port));
    cfg.deadline_ms = 60_000;
    let mut d = Drv::new(cfg);
    d.wait_up();
    while rx.try_recv().is_ok() {}
    // Three ADDs stay under BATCH_BYTES, the fourth passes it.
    let data = vec![b'a'; BATCH_BYTES / 3 - 200];
    let ids: Vec<[u8; 4]> = (0..4u32).map(u32::to_be_bytes).collect();
    let mut tokens = Vec::new();
    for id in &ids[..3] {
        tokens.push(d.submit(add(id, &data, 60_000)).unwrap());
    }
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "three ADDs (under BATCH_BYTES) were written before the end of the turn"
    );
    // The fourth passes BATCH_BYTES: written by the submit itself.
    tokens.push(d.submit(add(&ids[3], &data, 60_000)).unwrap());
    let chunk = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("a write without send_queued once BATCH_BYTES are queued");
    assert!(!chunk.is_empty());
    for t in tokens {
        assert_eq!(d.answer(t, Duration::from_secs(5)), Answer::Added);
    }
    drop(d);
    h.join().unwrap();
}
