//! DC_CTX behaviour against scripted peers: thread stress with a data
//! integrity check on every hit, the persistent pool, RETRY, bounded
//! timeouts, the timeout floor, reget, answer mapping and argument checks.

mod client_support;
mod common;

use std::io::Write;
use std::os::raw::{c_uint, c_ulong};
use std::os::unix::net::UnixStream;
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client_support::{map_peer, read_n, replay_peer, MapOpts, Peer, Stats};
use distcache_rs::capi::client::*;
use distcache_rs::client::*;
use distcache_rs::proto::{encode_message, parse_add, AddParse, Decoder, Direction};

fn cfg(io_ms: u64) -> Config {
    Config {
        io_timeout: Duration::from_millis(io_ms),
        ..Config::default()
    }
}

/// The data stored under stress key `k`: length 5..=4100 (so some answers
/// span several frames), contents derived from `k`.
fn stress_data(k: u32) -> Vec<u8> {
    let len = 5 + (k as usize * 977) % 4096;
    (0..len)
        .map(|i| (i as u32).wrapping_mul(31).wrapping_add(k * 7) as u8)
        .collect()
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

#[derive(Default)]
struct Tally {
    ops: AtomicU64,
    hits: AtomicU64,
    stored: AtomicU64,
}

/// `threads` threads each doing `per_thread` random operations on one
/// shared client; every hit is checked against the data of its key.
fn hammer(cl: &Client, threads: usize, per_thread: usize, keys: u32) -> Tally {
    let tally = Tally::default();
    std::thread::scope(|sc| {
        for t in 0..threads {
            let tally = &tally;
            sc.spawn(move || {
                let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ ((t as u64 + 1) * 0x1234_5678);
                for _ in 0..per_thread {
                    let r = xorshift(&mut rng);
                    let k = (r % keys as u64) as u32;
                    let id = format!("stress-key-{k}");
                    match (r >> 32) % 4 {
                        0 => match cl.add(id.as_bytes(), &stress_data(k), 60_000).unwrap() {
                            AddOutcome::Stored => {
                                tally.stored.fetch_add(1, Ordering::Relaxed);
                            }
                            AddOutcome::Refused(s) => assert_eq!(s, 101, "add refused"),
                        },
                        1 | 2 => {
                            if let Some(d) = cl.get(id.as_bytes()).unwrap() {
                                assert_eq!(&d[..], &stress_data(k)[..], "data of {id}");
                                tally.hits.fetch_add(1, Ordering::Relaxed);
                                let again = cl.reget(id.as_bytes()).expect("reget after hit");
                                assert_eq!(&again[..], &d[..]);
                            }
                        }
                        _ => {
                            if r % 3 == 0 {
                                cl.remove(id.as_bytes()).unwrap();
                            } else {
                                cl.has(id.as_bytes()).unwrap();
                            }
                        }
                    }
                    tally.ops.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    tally
}

#[test]
fn sixteen_threads_on_one_persistent_client() {
    let peer = map_peer(Default::default(), MapOpts::default());
    let cl = Client::with_config(&peer.addr(), FLAG_PERSISTENT, cfg(5000)).unwrap();
    let start = Instant::now();
    let t = hammer(&cl, 16, 1000, 64);
    let el = start.elapsed();
    let ops = t.ops.load(Ordering::Relaxed);
    assert_eq!(ops, 16_000);
    assert!(t.hits.load(Ordering::Relaxed) > 0);
    assert!(t.stored.load(Ordering::Relaxed) > 0);
    let conns = peer.stats.conn_count();
    // The pool bounds idle connections and reuses them: far fewer
    // connections than operations.
    assert!(cl.idle_connections() >= 1 && cl.idle_connections() <= MAX_IDLE);
    assert!(conns <= 64, "{conns} connections for {ops} operations");
    eprintln!(
        "persistent stress: {ops} ops by 16 threads, {} verified hits, {} stores, {conns} connections, {:.0} ops/s",
        t.hits.load(Ordering::Relaxed),
        t.stored.load(Ordering::Relaxed),
        ops as f64 / el.as_secs_f64()
    );
}

#[test]
fn sixteen_threads_connection_per_operation_via_c_api() {
    let peer = map_peer(Default::default(), MapOpts::default());
    let target = std::ffi::CString::new(peer.addr()).unwrap();
    // SAFETY: valid C string.
    let ctx = unsafe { DC_CTX_new(target.as_ptr(), 0) };
    assert!(!ctx.is_null());
    let p = ctx as usize;
    let hits = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|sc| {
        for t in 0..16u32 {
            let hits = &hits;
            sc.spawn(move || {
                let ctx = p as *mut DC_CTX;
                let mut buf = vec![0u8; 8192];
                for i in 0..100u32 {
                    let k = (t * 7 + i) % 48;
                    let id = format!("c-key-{k}");
                    let data = stress_data(k);
                    // SAFETY: ctx is live for the whole scope; buffers valid.
                    unsafe {
                        let r = DC_CTX_add_session(
                            ctx,
                            id.as_ptr(),
                            id.len() as c_uint,
                            data.as_ptr(),
                            data.len() as c_uint,
                            0, // raised to the floor
                        );
                        assert!(r == 0 || r == 1);
                        let mut used: c_uint = 0;
                        let r = DC_CTX_get_session(
                            ctx,
                            id.as_ptr(),
                            id.len() as c_uint,
                            buf.as_mut_ptr(),
                            buf.len() as c_uint,
                            &mut used,
                        );
                        // Nothing removes keys here: every get hits.
                        assert_eq!(r, 1, "{id}");
                        assert_eq!(&buf[..used as usize], &data[..]);
                        assert_eq!(DC_CTX_has_session(ctx, id.as_ptr(), id.len() as c_uint), 1);
                        hits.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let el = start.elapsed();
    assert_eq!(hits.load(Ordering::Relaxed), 1600);
    // flags 0: one connection per operation (3 per iteration).
    assert_eq!(peer.stats.conn_count(), 4800);
    eprintln!(
        "flags=0 stress: 4800 ops by 16 threads through the C API, 1600 verified hits, {:.0} ops/s",
        4800.0 / el.as_secs_f64()
    );
    // SAFETY: ctx came from DC_CTX_new.
    unsafe { DC_CTX_free(ctx) };
}

#[test]
fn persistent_reuses_one_connection_sequentially() {
    let peer = map_peer(Default::default(), MapOpts::default());
    let cl = Client::with_config(&peer.addr(), FLAG_PERSISTENT, cfg(2000)).unwrap();
    // new() connected already.
    assert_eq!(cl.idle_connections(), 1);
    for i in 0..20u32 {
        let id = format!("seq-{i}");
        assert_eq!(
            cl.add(id.as_bytes(), b"hello world", 1000).unwrap(),
            AddOutcome::Stored
        );
        assert_eq!(&cl.get(id.as_bytes()).unwrap().unwrap()[..], b"hello world");
    }
    assert_eq!(peer.stats.conn_count(), 1);
    assert_eq!(peer.stats.log()[0].answered, 40);
}

#[test]
fn persistent_late_connects_on_first_use() {
    let peer = map_peer(Default::default(), MapOpts::default());
    let cl = Client::with_config(
        &peer.addr(),
        FLAG_PERSISTENT | FLAG_PERSISTENT_LATE,
        cfg(2000),
    )
    .unwrap();
    assert_eq!(cl.idle_connections(), 0);
    assert!(!cl.has(b"nothing").unwrap());
    assert_eq!(cl.idle_connections(), 1);
    assert_eq!(peer.stats.conn_count(), 1);
}

#[test]
fn unreachable_server() {
    let path = client_support::temp_sock();
    let addr = format!("UNIX:{}", path.display());
    // PERSISTENT connects in new(): fails.
    assert!(matches!(
        Client::with_config(&addr, FLAG_PERSISTENT, cfg(500)),
        Err(Error::Connect(_))
    ));
    let c = std::ffi::CString::new(addr.clone()).unwrap();
    // SAFETY: valid C string.
    assert!(unsafe { DC_CTX_new(c.as_ptr(), FLAG_PERSISTENT) }.is_null());
    // flags 0 and LATE do not connect in new(); operations fail.
    for flags in [
        0,
        FLAG_PERSISTENT | FLAG_PERSISTENT_LATE | FLAG_PERSISTENT_RETRY,
    ] {
        let cl = Client::with_config(&addr, flags, cfg(500)).unwrap();
        assert!(matches!(cl.get(b"abc"), Err(Error::Connect(_))));
        assert!(matches!(cl.has(b"abc"), Err(Error::Connect(_))));
    }
}

#[test]
fn retry_reconnects_after_the_peer_closed_an_idle_connection() {
    // The peer closes every connection after one answer (like dc_client
    // -idle closing an idle connection).
    let peer = map_peer(
        Default::default(),
        MapOpts {
            close_after: Some(1),
            ..Default::default()
        },
    );
    let cl = Client::with_config(
        &peer.addr(),
        FLAG_PERSISTENT | FLAG_PERSISTENT_RETRY,
        cfg(2000),
    )
    .unwrap();
    for i in 0..5u32 {
        let id = format!("r-{i}");
        assert_eq!(
            cl.add(id.as_bytes(), b"retry data", 1000).unwrap(),
            AddOutcome::Stored,
            "op {i}"
        );
    }
    // new() + one reconnect per later operation.
    assert_eq!(peer.stats.conn_count(), 5);
}

#[test]
fn without_retry_the_stale_connection_fails_once() {
    let peer = map_peer(
        Default::default(),
        MapOpts {
            close_after: Some(1),
            ..Default::default()
        },
    );
    let cl = Client::with_config(&peer.addr(), FLAG_PERSISTENT, cfg(2000)).unwrap();
    assert!(!cl.has(b"x1").unwrap());
    // Let the peer close its end.
    std::thread::sleep(Duration::from_millis(50));
    let e = cl.has(b"x2").unwrap_err();
    assert!(
        matches!(e, Error::Send(_) | Error::Recv(_) | Error::Closed),
        "{e:?}"
    );
    // The failed connection was dropped: the next call reconnects.
    assert!(!cl.has(b"x3").unwrap());
    assert_eq!(peer.stats.conn_count(), 2);
}

#[test]
fn retry_after_request_dropped_unanswered() {
    let peer = map_peer(
        Default::default(),
        MapOpts {
            drop_unanswered_on: vec![0],
            ..Default::default()
        },
    );
    let cl = Client::with_config(
        &peer.addr(),
        FLAG_PERSISTENT | FLAG_PERSISTENT_RETRY,
        cfg(2000),
    )
    .unwrap();
    assert_eq!(
        cl.add(b"dropped-once", b"payload!", 1000).unwrap(),
        AddOutcome::Stored
    );
    assert_eq!(peer.stats.conn_count(), 2);
    // Only one retry: a peer that always drops makes the call fail.
    let peer = map_peer(
        Default::default(),
        MapOpts {
            drop_unanswered_on: vec![0, 1, 2],
            ..Default::default()
        },
    );
    let cl = Client::with_config(
        &peer.addr(),
        FLAG_PERSISTENT | FLAG_PERSISTENT_RETRY,
        cfg(2000),
    )
    .unwrap();
    assert!(matches!(cl.get(b"k"), Err(Error::Closed)));
    assert_eq!(peer.stats.conn_count(), 2);
}

#[test]
fn a_stalled_server_fails_within_the_bound() {
    let peer = map_peer(
        Default::default(),
        MapOpts {
            stall: true,
            ..Default::default()
        },
    );
    for flags in [0, FLAG_PERSISTENT, FLAG_PERSISTENT | FLAG_PERSISTENT_RETRY] {
        let cl = Client::with_config(&peer.addr(), flags, cfg(200)).unwrap();
        let t = Instant::now();
        let e = cl.get(b"stalled").unwrap_err();
        assert!(matches!(e, Error::Timeout("receive")), "{e:?}");
        // Bounded (generously, to stay robust on a loaded machine): no hang.
        assert!(t.elapsed() < Duration::from_secs(10));
        assert!(t.elapsed() >= Duration::from_millis(150));
        // The timed-out connection is not reused.
        assert_eq!(cl.idle_connections(), 0);
    }
}

/// A UNIX listener with a backlog of 0, filled with connections nobody
/// accepts: (its path, the listener, the queued connections).
fn full_backlog_listener() -> (std::path::PathBuf, socket2::Socket, Vec<socket2::Socket>) {
    use socket2::{Domain, SockAddr, Socket, Type};
    let path = client_support::temp_sock();
    let l = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
    l.bind(&SockAddr::unix(&path).unwrap()).unwrap();
    l.listen(0).unwrap();
    let mut fill = Vec::new();
    for _ in 0..8 {
        let s = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        if s.connect(&SockAddr::unix(&path).unwrap()).is_err() {
            break;
        }
        fill.push(s);
    }
    assert!(
        !fill.is_empty() && fill.len() < 8,
        "the backlog did not fill ({} queued)",
        fill.len()
    );
    // Full: one more non-blocking connect is refused.
    let probe = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
    probe.set_nonblocking(true).unwrap();
    let e = probe.connect(&SockAddr::unix(&path).unwrap()).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "{e}");
    (path, l, fill)
}

#[test]
fn a_server_that_never_accepts_times_out_on_connect() {
    let (path, _l, fill) = full_backlog_listener();
    let addr = format!("UNIX:{}", path.display());
    let cl = Client::with_config(&addr, 0, cfg(200)).unwrap();
    let t = Instant::now();
    let e = cl.has(b"abc").unwrap_err();
    assert!(matches!(e, Error::Timeout("connect")), "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(10));
    drop(fill);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_full_backlog_that_drains_in_time_still_connects() {
    use std::os::unix::net::UnixListener;
    let (path, l, fill) = full_backlog_listener();
    let queued = fill.len();
    let listener: UnixListener = std::os::fd::OwnedFd::from(l).into();
    // After 300 ms: take the queued connections, then serve the client's
    // one request (a HAS, answered "yes").
    let server = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let mut held = Vec::new();
        for _ in 0..queued {
            held.push(listener.accept().unwrap().0);
        }
        let (mut s, _) = listener.accept().unwrap();
        let mut dec = Decoder::new(Direction::Requests);
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            use std::io::Read;
            let n = s.read(&mut chunk).unwrap();
            assert!(n > 0, "client closed before its request");
            buf.extend_from_slice(&chunk[..n]);
            let mut out = Vec::new();
            let used = dec
                .drain(&buf, |m| {
                    assert_eq!(m.cmd, distcache_rs::proto::Cmd::Have);
                    assert_eq!(m.payload, b"abc");
                    encode_message(&mut out, true, m.uid, m.cmd, &[0]).unwrap();
                })
                .unwrap();
            buf.drain(..used);
            if !out.is_empty() {
                s.write_all(&out).unwrap();
                return;
            }
        }
    });
    let addr = format!("UNIX:{}", path.display());
    let cl = Client::with_config(&addr, 0, cfg(5000)).unwrap();
    let t = Instant::now();
    assert!(cl.has(b"abc").unwrap(), "the HAS was not answered yes");
    // It had to wait for the backlog to drain.
    assert!(
        t.elapsed() >= Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );
    server.join().unwrap();
    drop(fill);
    let _ = std::fs::remove_file(&path);
}

/// A peer answering OK to everything and recording the ADD timeouts.
fn timeout_recorder() -> (Peer, Arc<Mutex<Vec<u32>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let peer = Peer::spawn(Arc::new(move |_, mut s: UnixStream, _: &Arc<Stats>| {
        let mut dec = Decoder::new(Direction::Requests);
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            use std::io::Read;
            let n = match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            let mut out = Vec::new();
            let used = dec
                .drain(&buf, |m| {
                    if m.cmd == distcache_rs::proto::Cmd::Add {
                        // Recorded whatever a server would make of it.
                        assert!(!matches!(parse_add(m.payload), AddParse::Fatal));
                        let t = u32::from_be_bytes(m.payload[..4].try_into().unwrap());
                        s2.lock().unwrap().push(t);
                    }
                    encode_message(&mut out, true, m.uid, m.cmd, &[0]).unwrap();
                })
                .unwrap();
            buf.drain(..used);
            let _ = s.write_all(&out);
        }
    }));
    (peer, seen)
}

#[test]
fn low_timeouts_are_raised_to_the_floor() {
    let (peer, seen) = timeout_recorder();
    let cl = Client::with_config(&peer.addr(), 0, cfg(2000)).unwrap();
    assert_eq!(cl.config().min_timeout_ms, 500);
    for t in [0u64, 1, 499, 500, 501, 300_000, 604_800_001, u64::MAX] {
        assert_eq!(cl.add(b"id", b"data", t).unwrap(), AddOutcome::Stored);
    }
    let c2 = Client::with_config(
        &peer.addr(),
        0,
        Config {
            min_timeout_ms: 300_000,
            ..cfg(2000)
        },
    )
    .unwrap();
    assert_eq!(c2.add(b"id", b"data", 999).unwrap(), AddOutcome::Stored);
    assert_eq!(c2.add(b"id", b"data", 400_000).unwrap(), AddOutcome::Stored);
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            500,
            500,
            500,
            500,
            501,
            300_000,
            604_800_001,
            u32::MAX,
            300_000,
            400_000
        ]
    );
    // And through the C API (Apache passes the 0-999 ms remainder).
    let target = std::ffi::CString::new(peer.addr()).unwrap();
    // SAFETY: valid C string; the ctx is freed below.
    unsafe {
        let ctx = DC_CTX_new(target.as_ptr(), 0);
        assert!(!ctx.is_null());
        assert_eq!(
            DC_CTX_add_session(ctx, b"i".as_ptr(), 1, b"d".as_ptr(), 1, 7 as c_ulong),
            1
        );
        DC_CTX_free(ctx);
    }
    assert_eq!(seen.lock().unwrap().last(), Some(&500));
}

#[test]
fn reget_is_per_thread_and_ends_with_the_next_operation() {
    let map: client_support::Map = Default::default();
    map.lock()
        .unwrap()
        .insert(b"shared".to_vec(), b"shared session".to_vec());
    map.lock()
        .unwrap()
        .insert(b"other".to_vec(), b"other session".to_vec());
    let peer = map_peer(map, MapOpts::default());
    let cl = Client::with_config(&peer.addr(), FLAG_PERSISTENT, cfg(2000)).unwrap();
    assert!(cl.reget(b"shared").is_none());
    assert_eq!(&cl.get(b"shared").unwrap().unwrap()[..], b"shared session");
    assert_eq!(&cl.reget(b"shared").unwrap()[..], b"shared session");
    assert!(cl.reget(b"other").is_none());
    // Another thread has no previous get of its own.
    std::thread::scope(|s| {
        s.spawn(|| {
            assert!(cl.reget(b"shared").is_none());
            assert_eq!(&cl.get(b"other").unwrap().unwrap()[..], b"other session");
            assert_eq!(&cl.reget(b"other").unwrap()[..], b"other session");
        });
    });
    // ... and its get did not disturb ours.
    assert_eq!(&cl.reget(b"shared").unwrap()[..], b"shared session");
    // A miss ends the window; so does any other operation.
    assert!(cl.get(b"missing").unwrap().is_none());
    assert!(cl.reget(b"shared").is_none());
    cl.get(b"shared").unwrap().unwrap();
    assert!(cl.has(b"shared").unwrap());
    assert!(cl.reget(b"shared").is_none());
}

#[test]
fn get_with_a_short_buffer_then_reget() {
    let map: client_support::Map = Default::default();
    let data: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    map.lock().unwrap().insert(b"big".to_vec(), data.clone());
    let peer = map_peer(map, MapOpts::default());
    let target = std::ffi::CString::new(peer.addr()).unwrap();
    // SAFETY: valid C string and buffers; the ctx is freed below.
    unsafe {
        let ctx = DC_CTX_new(target.as_ptr(), FLAG_PERSISTENT);
        assert!(!ctx.is_null());
        let mut small = [0u8; 100];
        let mut used: c_uint = 0;
        assert_eq!(
            DC_CTX_get_session(ctx, b"big".as_ptr(), 3, small.as_mut_ptr(), 100, &mut used),
            1
        );
        assert_eq!(used, 3000);
        assert_eq!(&small[..], &data[..100]);
        // Length only: NULL storage with size 0.
        assert_eq!(
            DC_CTX_reget_session(ctx, b"big".as_ptr(), 3, ptr::null_mut(), 0, &mut used),
            1
        );
        assert_eq!(used, 3000);
        let mut full = vec![0u8; used as usize];
        assert_eq!(
            DC_CTX_reget_session(ctx, b"big".as_ptr(), 3, full.as_mut_ptr(), used, &mut used),
            1
        );
        assert_eq!(full, data);
        // No network traffic for reget: still one request on one connection.
        assert_eq!(peer.stats.conn_count(), 1);
        assert_eq!(peer.stats.log()[0].answered, 1);
        DC_CTX_free(ctx);
    }
}

/// One scripted 1-byte or odd answer per connection.
fn answer_with(payload: &[u8], req_len: usize, uid: u32, op: u8) -> Vec<(usize, Vec<u8>)> {
    let mut out = Vec::new();
    let cmd = distcache_rs::proto::Cmd::from_wire(op).unwrap();
    encode_message(&mut out, true, uid, cmd, payload).unwrap();
    vec![(req_len, out)]
}

fn private_ctx(addr: &str) -> *mut DC_CTX {
    let c = Config {
        uids: UidSource::Private(77),
        ..cfg(2000)
    };
    Box::into_raw(Box::new(Client::with_config(addr, 0, c).unwrap()))
}

#[test]
fn answers_map_to_c_results_like_the_original() {
    // HAVE request for id "abc": 14 + 3 bytes, op 3.
    for (ans, want) in [
        (&[0u8][..], 1),
        (&[1], 0),
        (&[2], -1),
        (&[0x65], -1),
        (&[0, 0], 0),
        (&[1, 2, 3, 4, 5, 6], 0),
    ] {
        let peer = replay_peer(answer_with(ans, 17, 77, 3));
        let ctx = private_ctx(&peer.addr());
        // SAFETY: live ctx, valid id.
        let r = unsafe { DC_CTX_has_session(ctx, b"abc".as_ptr(), 3) };
        assert_eq!(r, want, "HAVE answer {ans:?}");
        // SAFETY: from Box::into_raw.
        unsafe { DC_CTX_free(ctx) };
    }
    // REMOVE: only 00 succeeds.
    for (ans, want) in [(&[0u8][..], 1), (&[1], 0), (&[2], 0), (&[0, 0], 0)] {
        let peer = replay_peer(answer_with(ans, 17, 77, 2));
        let ctx = private_ctx(&peer.addr());
        // SAFETY: live ctx, valid id.
        let r = unsafe { DC_CTX_remove_session(ctx, b"abc".as_ptr(), 3) };
        assert_eq!(r, want, "REMOVE answer {ans:?}");
        // SAFETY: from Box::into_raw.
        unsafe { DC_CTX_free(ctx) };
    }
    // GET: 1..4 bytes are misses (0x02 a failure, also 0), 5 and more hits.
    for (ans, want) in [(&b"\x01"[..], 0), (b"\x02", 0), (b"abcd", 0), (b"abcde", 1)] {
        let peer = replay_peer(answer_with(ans, 17, 77, 1));
        let ctx = private_ctx(&peer.addr());
        let mut buf = [0u8; 16];
        let mut used: c_uint = 99;
        // SAFETY: live ctx, valid buffers.
        let r =
            unsafe { DC_CTX_get_session(ctx, b"abc".as_ptr(), 3, buf.as_mut_ptr(), 16, &mut used) };
        assert_eq!(r, want, "GET answer {ans:?}");
        // A hit sets *result_used; a miss leaves it as it was (the original).
        assert_eq!(used as usize, if want == 1 { ans.len() } else { 99 });
        // SAFETY: from Box::into_raw.
        unsafe { DC_CTX_free(ctx) };
    }
    // ADD: anything but 00 fails; Rust reports the status.
    let peer = replay_peer(answer_with(&[101], 14 + 8 + 3 + 4, 77, 0));
    let c = Config {
        uids: UidSource::Private(77),
        ..cfg(2000)
    };
    let cl = Client::with_config(&peer.addr(), 0, c).unwrap();
    assert_eq!(
        cl.add(b"abc", b"data", 1000).unwrap(),
        AddOutcome::Refused(101)
    );
}

/// The one-byte answer 0x02 (DISCONNECTED, what dc_client answers when it
/// lost or gave up on the server) fails the call, whatever the operation:
/// never a miss, a "not found" or an ADD refusal. (It used to read as a
/// miss for GET.)
#[test]
fn answer_disconnected_fails_every_operation() {
    let c = || Config {
        uids: UidSource::Private(77),
        ..cfg(2000)
    };
    for (op, len) in [(0u8, 14 + 8 + 3 + 4), (1, 17), (2, 17), (3, 17)] {
        let peer = replay_peer(answer_with(&[2], len, 77, op));
        let cl = Client::with_config(&peer.addr(), 0, c()).unwrap();
        let r = match op {
            0 => cl.add(b"abc", b"data", 1000).map(|_| ()),
            1 => cl.get(b"abc").map(|_| ()),
            2 => cl.remove(b"abc").map(|_| ()),
            _ => cl.has(b"abc").map(|_| ()),
        };
        assert!(matches!(r, Err(Error::Disconnected)), "op {op}: {r:?}");
    }
}

#[test]
fn a_partial_answer_then_silence_times_out() {
    // Half a header, then nothing: bounded failure, no hang.
    let peer = Peer::spawn(Arc::new(|_, mut s: UnixStream, _: &Arc<Stats>| {
        let _ = read_n(&mut s, 17);
        let _ = s.write_all(&[0, 0x11, 0, 0, 1, 0, 0]);
        std::thread::sleep(Duration::from_secs(3));
    }));
    let cl = Client::with_config(&peer.addr(), 0, cfg(200)).unwrap();
    assert!(matches!(cl.has(b"abc"), Err(Error::Timeout("receive"))));
    // A multi-frame answer cut short by EOF.
    let peer = Peer::spawn(Arc::new(|_, mut s: UnixStream, _: &Arc<Stats>| {
        let req = read_n(&mut s, 17);
        let uid = u32::from_be_bytes(req[5..9].try_into().unwrap());
        let mut out = Vec::new();
        encode_message(
            &mut out,
            true,
            uid,
            distcache_rs::proto::Cmd::Get,
            &[7u8; 5000],
        )
        .unwrap();
        let _ = s.write_all(&out[..3000]);
    }));
    let cl = Client::with_config(&peer.addr(), 0, cfg(2000)).unwrap();
    assert!(matches!(cl.get(b"abc"), Err(Error::Closed)));
}

#[test]
fn argument_checks_in_rust() {
    // No server needed: arguments are refused before any connection.
    let cl = Client::with_config("UNIX:/nonexistent/dcrs-args", 0, cfg(100)).unwrap();
    let inv = |r: Result<(), Error>| matches!(r, Err(Error::InvalidArgument(_)));
    assert!(inv(cl.add(b"", b"d", 1).map(|_| ())));
    assert!(inv(cl.add(&[1; 65], b"d", 1).map(|_| ())));
    assert!(inv(cl.add(b"i", b"", 1).map(|_| ())));
    assert!(inv(cl.add(b"i", &vec![0; 32768 - 8], 1).map(|_| ())));
    assert!(inv(cl.get(b"").map(|_| ())));
    assert!(inv(cl.get(&[1; 65]).map(|_| ())));
    assert!(inv(cl.remove(b"").map(|_| ())));
    assert!(inv(cl.has(&[0; 100]).map(|_| ())));
    // The largest valid session gets as far as connecting.
    assert!(matches!(
        cl.add(b"i", &vec![0; 32768 - 9], 1),
        Err(Error::Connect(_))
    ));
    assert!(cl.reget(b"").is_none());
}

#[test]
fn argument_checks_in_the_c_api() {
    let t = std::ffi::CString::new("UNIX:/nonexistent/dcrs-args").unwrap();
    let bad = std::ffi::CString::new("nonsense").unwrap();
    // SAFETY: every pointer is NULL or valid for the lengths given; the
    // functions must refuse the NULL / out-of-range ones without touching
    // memory.
    unsafe {
        assert!(DC_CTX_new(ptr::null(), 0).is_null());
        assert!(DC_CTX_new(bad.as_ptr(), 0).is_null());
        DC_CTX_free(ptr::null_mut());
        let ctx = DC_CTX_new(t.as_ptr(), 0);
        assert!(!ctx.is_null());
        let id = b"id";
        let big = vec![0u8; 40000];
        let mut buf = [0u8; 8];
        let mut used: c_uint = 5;
        let n = ptr::null_mut::<DC_CTX>();
        assert_eq!(
            DC_CTX_add_session(n, id.as_ptr(), 2, id.as_ptr(), 2, 1000),
            0
        );
        assert_eq!(
            DC_CTX_add_session(ctx, ptr::null(), 2, id.as_ptr(), 2, 1000),
            0
        );
        assert_eq!(
            DC_CTX_add_session(ctx, id.as_ptr(), 0, id.as_ptr(), 2, 1000),
            0
        );
        assert_eq!(
            DC_CTX_add_session(ctx, big.as_ptr(), 65, id.as_ptr(), 2, 1000),
            0
        );
        assert_eq!(
            DC_CTX_add_session(ctx, id.as_ptr(), 2, ptr::null(), 2, 1000),
            0
        );
        assert_eq!(
            DC_CTX_add_session(ctx, id.as_ptr(), 2, id.as_ptr(), 0, 1000),
            0
        );
        assert_eq!(
            DC_CTX_add_session(ctx, id.as_ptr(), 2, big.as_ptr(), 40000, 1000),
            0
        );
        assert_eq!(DC_CTX_remove_session(n, id.as_ptr(), 2), 0);
        assert_eq!(DC_CTX_remove_session(ctx, ptr::null(), 2), 0);
        assert_eq!(DC_CTX_remove_session(ctx, id.as_ptr(), 0), 0);
        assert_eq!(DC_CTX_has_session(n, id.as_ptr(), 2), -1);
        assert_eq!(DC_CTX_has_session(ctx, ptr::null(), 2), -1);
        assert_eq!(DC_CTX_has_session(ctx, big.as_ptr(), 65), -1);
        for f in [DC_CTX_get_session, DC_CTX_reget_session] {
            assert_eq!(f(n, id.as_ptr(), 2, buf.as_mut_ptr(), 8, &mut used), 0);
            assert_eq!(f(ctx, ptr::null(), 2, buf.as_mut_ptr(), 8, &mut used), 0);
            assert_eq!(f(ctx, id.as_ptr(), 0, buf.as_mut_ptr(), 8, &mut used), 0);
            assert_eq!(f(ctx, big.as_ptr(), 65, buf.as_mut_ptr(), 8, &mut used), 0);
            assert_eq!(f(ctx, id.as_ptr(), 2, ptr::null_mut(), 8, &mut used), 0);
            assert_eq!(
                f(ctx, id.as_ptr(), 2, buf.as_mut_ptr(), 8, ptr::null_mut()),
                0
            );
            // Valid arguments, but no server / no previous get.
            assert_eq!(f(ctx, id.as_ptr(), 2, buf.as_mut_ptr(), 8, &mut used), 0);
        }
        DC_CTX_free(ctx);
    }
}

#[test]
fn tcp_targets_work() {
    let mut tried = 0;
    for v6 in [false, true] {
        // IPv6 loopback may be missing in a container: then only IPv4.
        let Some(addr) = client_support::tcp_map_peer(Default::default(), v6) else {
            assert!(v6, "no IPv4 loopback");
            continue;
        };
        tried += 1;
        for flags in [0, FLAG_PERSISTENT] {
            let cl = Client::with_config(&addr, flags, cfg(2000)).unwrap();
            let id = format!("tcp-{flags}");
            let data = stress_data(4242);
            assert_eq!(
                cl.add(id.as_bytes(), &data, 5000).unwrap(),
                AddOutcome::Stored
            );
            assert_eq!(&cl.get(id.as_bytes()).unwrap().unwrap()[..], &data[..]);
            assert!(cl.remove(id.as_bytes()).unwrap());
            assert!(!cl.has(id.as_bytes()).unwrap());
        }
    }
    assert!(tried >= 1);
}
