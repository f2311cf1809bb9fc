//! Connection reuse for flags-0 contexts (`DISTCACHE_REUSE_CONNECTIONS`,
//! issue 20): off by default, one kept connection across operations when
//! on, never shared across fork, a connection the peer closed while idle
//! replaced without an error, an answer lost after the request was sent
//! not re-sent, at most one connection per thread. Connections and
//! requests are counted on the fake server's side.
//!
//! The tests touch process-wide state (the environment, fd 2, fork) and
//! take a lock so they never run at the same time as each other.

mod client_support;
mod common;

use std::io::{Read, Write};
use std::os::raw::c_uint;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use client_support::{answer, capture_stderr, in_child, map_peer, Map, MapOpts, Peer, Stats};
use distcache_rs::capi::client::*;
use distcache_rs::client::*;
use distcache_rs::proto::{encode_message, status, Decoder, Direction};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn reuse_cfg() -> Config {
    Config {
        reuse_connections: true,
        ..Config::default()
    }
}

/// Wait (at most 10 s, a bound for a hung test, not a speed check) until
/// `cond` holds.
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A session-map peer that, on its connection 0, carries out request
/// number `lose_at` (counting from 0) and then closes without answering it
/// (a server that dies or drops the connection after acting on a
/// request). `requests` counts every request the peer read, on all
/// connections.
fn losing_peer(map: Map, lose_at: usize, requests: Arc<AtomicUsize>) -> Peer {
    Peer::spawn(Arc::new(move |i, mut s: UnixStream, _: &Arc<Stats>| {
        let mut dec = Decoder::new(Direction::Requests);
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 65536];
        let mut seen = 0;
        loop {
            let n = match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            let mut reqs = Vec::new();
            let Ok(used) = dec.drain(&buf, |m| reqs.push(m.to_owned())) else {
                return;
            };
            buf.drain(..used);
            for r in reqs {
                requests.fetch_add(1, Ordering::SeqCst);
                let Some(a) = answer(&map, r.cmd, &r.payload) else {
                    return;
                };
                if i == 0 && seen == lose_at {
                    return;
                }
                seen += 1;
                let mut out = Vec::new();
                encode_message(&mut out, true, r.uid, r.cmd, &a).unwrap();
                if s.write_all(&out).is_err() {
                    return;
                }
            }
        }
    }))
}

/// A session-map peer whose connections each answer one request and then
/// close; `closed` counts connections it has closed.
fn one_shot_peer(map: Map, closed: Arc<AtomicUsize>) -> Peer {
    let opts = MapOpts {
        close_after: Some(1),
        ..Default::default()
    };
    Peer::spawn(Arc::new(move |i, s: UnixStream, st: &Arc<Stats>| {
        // serve_map owns the stream: it is closed when serve_map returns.
        client_support::serve_map(i, s, &map, &opts, Some(st));
        closed.fetch_add(1, Ordering::SeqCst);
    }))
}

/// The mixed operations used to count connections; checks every answer.
fn some_ops(cl: &Client, tag: &str, rounds: usize) {
    for r in 0..rounds {
        let id = format!("{tag}-{r}");
        let data = format!("session data of {id}");
        assert_eq!(
            cl.add(id.as_bytes(), data.as_bytes(), 60_000).unwrap(),
            AddOutcome::Stored
        );
        assert_eq!(
            &cl.get(id.as_bytes()).unwrap().unwrap()[..],
            data.as_bytes()
        );
        assert!(cl.has(id.as_bytes()).unwrap());
        assert!(cl.remove(id.as_bytes()).unwrap());
        assert!(!cl.has(id.as_bytes()).unwrap());
    }
}

fn ctx_ptr(cl: Client) -> *mut DC_CTX {
    Box::into_raw(Box::new(cl))
}

#[test]
fn off_by_default_one_connection_per_operation() {
    let _g = serial();
    std::env::remove_var(ENV_REUSE);
    assert!(!Config::default().reuse_connections);
    assert!(!Config::from_env().reuse_connections);
    let peer = map_peer(Default::default(), MapOpts::default());
    let cl = Client::new(&peer.addr(), 0).unwrap();
    assert!(!cl.reuses_connections());
    some_ops(&cl, "off", 2);
    let log = peer.stats.log();
    assert_eq!(log.len(), 10, "one connection per operation");
    assert!(log.iter().all(|c| c.answered == 1), "{log:?}");
    assert_eq!(cl.idle_connections(), 0);

    // The C API's DC_CTX_new, same default.
    let t = std::ffi::CString::new(peer.addr()).unwrap();
    // SAFETY: valid C string and buffers; ctx freed below.
    unsafe {
        let ctx = DC_CTX_new(t.as_ptr(), 0);
        assert!(!ctx.is_null());
        for _ in 0..3 {
            assert_eq!(DC_CTX_has_session(ctx, b"x".as_ptr(), 1), 0);
        }
        DC_CTX_free(ctx);
    }
    assert_eq!(peer.stats.conn_count(), 13);
}

#[test]
fn environment_values() {
    let _g = serial();
    let peer = map_peer(Default::default(), MapOpts::default());
    let t = std::ffi::CString::new(peer.addr()).unwrap();

    // "1" (read as a number, as the other DISTCACHE_* variables are:
    // white space around it and leading zeros do not matter): a flags-0 DC_CTX keeps one connection, made
    // at the first operation, not by DC_CTX_new.
    for on in ["1", " 1\n", "01"] {
        std::env::set_var(ENV_REUSE, on);
        let before = peer.stats.conn_count();
        let (_, err) = capture_stderr(|| {
            // SAFETY: valid C string and buffers; ctx freed below.
            unsafe {
                let ctx = DC_CTX_new(t.as_ptr(), 0);
                assert!(!ctx.is_null());
                assert!((*ctx).reuses_connections());
                assert_eq!((*ctx).flags(), 0);
                assert_eq!(peer.stats.conn_count(), before, "DC_CTX_new connected");
                let (id, data) = (b"env-on", b"env session");
                assert_eq!(
                    DC_CTX_add_session(
                        ctx,
                        id.as_ptr(),
                        id.len() as c_uint,
                        data.as_ptr(),
                        data.len() as c_uint,
                        60_000
                    ),
                    1
                );
                let mut out = [0u8; 64];
                let mut used: c_uint = 0;
                for _ in 0..10 {
                    assert_eq!(
                        DC_CTX_get_session(
                            ctx,
                            id.as_ptr(),
                            id.len() as c_uint,
                            out.as_mut_ptr(),
                            out.len() as c_uint,
                            &mut used
                        ),
                        1
                    );
                    assert_eq!(&out[..used as usize], data);
                }
                assert_eq!(
                    DC_CTX_remove_session(ctx, id.as_ptr(), id.len() as c_uint),
                    1
                );
                DC_CTX_free(ctx);
            }
        });
        assert_eq!(err, "", "{on:?} is a valid value");
        let log = peer.stats.log();
        assert_eq!(
            log.len(),
            before + 1,
            "{on:?}: one connection for 12 operations"
        );
        assert_eq!(log[before].answered, 12);
    }

    // Flags other than 0 are used as given: RETRY without PERSISTENT is
    // still one connection per operation.
    std::env::set_var(ENV_REUSE, "1");
    let before = peer.stats.conn_count();
    let cl = Client::new(&peer.addr(), FLAG_PERSISTENT_RETRY).unwrap();
    assert!(!cl.reuses_connections());
    for _ in 0..3 {
        assert!(!cl.has(b"x").unwrap());
    }
    assert_eq!(peer.stats.conn_count(), before + 3);

    // "0": off, silently.
    std::env::set_var(ENV_REUSE, "0");
    let (cl, err) = capture_stderr(|| Client::new(&peer.addr(), 0).unwrap());
    assert_eq!(err, "");
    assert!(!cl.reuses_connections());

    // Anything else: reported on stderr (naming the variable and the
    // value) and ignored, i.e. off.
    for bad in ["yes", "", "2", "true", "01x"] {
        std::env::set_var(ENV_REUSE, bad);
        let (cl, err) = capture_stderr(|| Client::new(&peer.addr(), 0).unwrap());
        assert!(!cl.reuses_connections(), "{bad:?} turned reuse on");
        assert_eq!(err.lines().count(), 1, "{err:?}");
        assert!(
            err.contains(&format!("ignoring {ENV_REUSE}={bad:?}")),
            "{bad:?}: {err:?}"
        );
        let before = peer.stats.conn_count();
        for _ in 0..3 {
            assert!(!cl.has(b"x").unwrap());
        }
        assert_eq!(peer.stats.conn_count(), before + 3, "{bad:?}");
    }
    std::env::remove_var(ENV_REUSE);
}

#[test]
fn on_one_connection_is_reused_across_operations() {
    let _g = serial();
    let peer = map_peer(Default::default(), MapOpts::default());
    let cl = Client::with_config(&peer.addr(), 0, reuse_cfg()).unwrap();
    assert!(cl.reuses_connections());
    assert_eq!(peer.stats.conn_count(), 0, "connected at creation");
    some_ops(&cl, "on", 10);
    let log = peer.stats.log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].answered, 50);
    assert_eq!(log[0].peer_pid, std::process::id() as i32);
    assert_eq!(cl.idle_connections(), 1);
}

#[test]
fn never_shared_across_fork() {
    let _g = serial();
    let peer = map_peer(Default::default(), MapOpts::default());
    let me = std::process::id() as i32;

    // Apache's order: the context is made in the parent, which never uses
    // it, and the children fork from there. Each child connects on its own.
    let cl = Client::with_config(&peer.addr(), 0, reuse_cfg()).unwrap();
    let mut children = Vec::new();
    for k in 0..2 {
        let (pid, status) = in_child(|| {
            some_ops(&cl, &format!("child{k}"), 2);
            cl.idle_connections() == 1
        });
        assert_eq!(status, 0, "child {k}");
        children.push(pid);
    }
    let log = peer.stats.log();
    assert_eq!(log.len(), 2, "{log:?}");
    for (c, pid) in log.iter().zip(&children) {
        assert_eq!((c.peer_pid, c.answered), (*pid, 10));
    }

    // A parent with a kept connection: the child makes its own and leaves
    // the parent's alone (the parent's goes on working, unchanged).
    some_ops(&cl, "parent", 1);
    assert_eq!(peer.stats.conn_count(), 3);
    let (child, status) = in_child(|| {
        some_ops(&cl, "child2", 1);
        cl.idle_connections() == 1
    });
    assert_eq!(status, 0);
    some_ops(&cl, "parent-again", 1);
    let log = peer.stats.log();
    assert_eq!(log.len(), 4, "{log:?}");
    assert_eq!((log[2].peer_pid, log[2].answered), (me, 10));
    assert_eq!((log[3].peer_pid, log[3].answered), (child, 5));
}

#[test]
fn closed_while_idle_is_replaced_without_an_error() {
    let _g = serial();
    let map = Map::default();
    let closed = Arc::new(AtomicUsize::new(0));
    let peer = one_shot_peer(map.clone(), closed.clone());
    let cl = Client::with_config(&peer.addr(), 0, reuse_cfg()).unwrap();
    for k in 0..5usize {
        // The kept connection is closed by the peer after each answer; the
        // next operation finds that when it sends, connects anew and sends
        // its request once.
        let id = format!("idle-{k}");
        assert_eq!(
            cl.add(id.as_bytes(), b"data", 60_000).unwrap(),
            AddOutcome::Stored,
            "operation {k}"
        );
        wait_until("the peer closed its connection", || {
            closed.load(Ordering::SeqCst) == k + 1
        });
    }
    let log = peer.stats.log();
    assert_eq!(log.len(), 5, "{log:?}");
    assert!(log.iter().all(|c| c.answered == 1), "{log:?}");
    assert_eq!(map.lock().unwrap().len(), 5);

    // Through the C API: 1, not a failure.
    let ctx = ctx_ptr(Client::with_config(&peer.addr(), 0, reuse_cfg()).unwrap());
    // SAFETY: ctx is a live DC_CTX made above and freed once; valid buffers.
    unsafe {
        assert_eq!(DC_CTX_has_session(ctx, b"idle-0".as_ptr(), 6), 1);
        wait_until("the peer closed", || closed.load(Ordering::SeqCst) == 6);
        assert_eq!(DC_CTX_remove_session(ctx, b"idle-0".as_ptr(), 6), 1);
        DC_CTX_free(ctx);
    }
    assert_eq!(peer.stats.conn_count(), 7);
}

#[test]
fn answer_lost_after_send_fails_and_is_not_resent() {
    let _g = serial();
    let map = Map::default();
    let requests = Arc::new(AtomicUsize::new(0));
    // Connection 0 answers one request, then acts on the second (stores
    // the session) and closes without answering.
    let peer = losing_peer(map.clone(), 1, requests.clone());
    let cl = Client::with_config(&peer.addr(), 0, reuse_cfg()).unwrap();
    assert!(!cl.has(b"lost").unwrap());
    let r = cl.add(b"lost", b"the session", 60_000);
    assert!(matches!(r, Err(Error::Closed)), "{r:?}");
    assert_eq!(requests.load(Ordering::SeqCst), 2, "the ADD was re-sent");
    assert_eq!(peer.stats.conn_count(), 1, "reconnected to re-send");
    assert!(map.lock().unwrap().contains_key(&b"lost"[..]));
    // The next operation connects anew and sees what the server did.
    assert_eq!(&cl.get(b"lost").unwrap().unwrap()[..], b"the session");
    assert_eq!(peer.stats.conn_count(), 2);
    assert_eq!(requests.load(Ordering::SeqCst), 3);

    // Through the C API the lost ADD is the failure value 0 (and a lost
    // HAS is -1), each sent once.
    for (op, want) in [("add", 0), ("has", -1)] {
        let map = Map::default();
        let requests = Arc::new(AtomicUsize::new(0));
        let peer = losing_peer(map, 1, requests.clone());
        let ctx = ctx_ptr(Client::with_config(&peer.addr(), 0, reuse_cfg()).unwrap());
        // SAFETY: ctx is a live DC_CTX made above and freed once; valid
        // buffers.
        unsafe {
            assert_eq!(DC_CTX_has_session(ctx, b"k".as_ptr(), 1), 0);
            let got = if op == "add" {
                DC_CTX_add_session(ctx, b"k".as_ptr(), 1, b"v".as_ptr(), 1, 60_000)
            } else {
                DC_CTX_has_session(ctx, b"k".as_ptr(), 1)
            };
            assert_eq!(got, want, "{op}");
            DC_CTX_free(ctx);
        }
        assert_eq!(requests.load(Ordering::SeqCst), 2, "{op}");
        assert_eq!(peer.stats.conn_count(), 1, "{op}");
    }

    // Why: the explicit PERSISTENT_RETRY flag (the original's behaviour,
    // kept for callers that ask for it) re-sends, and the ADD the server
    // stored comes back "matching session".
    let map = Map::default();
    let requests = Arc::new(AtomicUsize::new(0));
    let peer = losing_peer(map, 1, requests.clone());
    let cl = Client::with_config(
        &peer.addr(),
        FLAG_PERSISTENT | FLAG_PERSISTENT_RETRY,
        Config::default(),
    )
    .unwrap();
    assert!(!cl.has(b"lost").unwrap());
    assert_eq!(
        cl.add(b"lost", b"the session", 60_000).unwrap(),
        AddOutcome::Refused(status::ADD_MATCHING_SESSION)
    );
    assert_eq!(requests.load(Ordering::SeqCst), 3);
}

#[test]
fn at_most_one_connection_per_thread() {
    let _g = serial();
    const THREADS: usize = 8;
    let peer = map_peer(Default::default(), MapOpts::default());
    let cl = Client::with_config(&peer.addr(), 0, reuse_cfg()).unwrap();
    let start = Barrier::new(THREADS);
    std::thread::scope(|sc| {
        for t in 0..THREADS {
            let (cl, start) = (&cl, &start);
            sc.spawn(move || {
                start.wait();
                some_ops(cl, &format!("thread{t}"), 20);
            });
        }
    });
    let log = peer.stats.log();
    let me = std::process::id() as i32;
    assert!(
        (1..=THREADS).contains(&log.len()),
        "{} connections for {THREADS} threads",
        log.len()
    );
    assert!(log.iter().all(|c| c.peer_pid == me));
    assert_eq!(log.iter().map(|c| c.answered).sum::<usize>(), THREADS * 100);
    // All of them were kept for reuse, none closed or leaked.
    assert_eq!(cl.idle_connections(), log.len());
    // One thread on its own reuses a kept one: no new connection.
    some_ops(&cl, "alone", 4);
    assert_eq!(peer.stats.conn_count(), log.len());
}
