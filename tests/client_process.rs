//! DC_CTX tests that touch process-wide state: fork() (PERSISTENT_PIDCHECK),
//! file descriptor 2 (the protocol-error line) and the environment
//! (DISTCACHE_MIN_TIMEOUT_MS, DISTCACHE_IO_TIMEOUT_MS), plus random peer
//! answers (their stderr lines are captured and counted). They take a lock so
//! they never run at the same time as each other.

mod client_support;
mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client_support::{
    capture_stderr, in_child, map_peer, read_n, replay_peer, MapOpts, Peer, Stats,
};
use common::unhex;
use distcache_rs::capi::client::*;
use distcache_rs::client::*;
use distcache_rs::proto::encode_message;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn pidcheck_reconnects_in_the_child_and_leaves_the_parent_alone() {
    let _g = serial();
    let peer = map_peer(Default::default(), MapOpts::default());
    let flags = FLAG_PERSISTENT | FLAG_PERSISTENT_PIDCHECK;
    let cl = Client::new(&peer.addr(), flags).unwrap();
    assert_eq!(
        cl.add(b"fork-key", b"session made by the parent", 60_000)
            .unwrap(),
        AddOutcome::Stored
    );
    let me = std::process::id() as i32;
    let (child, status) = in_child(|| {
        let got = cl.get(b"fork-key");
        matches!(got, Ok(Some(d)) if &d[..] == b"session made by the parent")
            && cl.idle_connections() == 1
            && cl.has(b"fork-key").unwrap_or(false)
    });
    assert_eq!(status, 0, "child's operations");
    let log = peer.stats.log();
    assert_eq!(log.len(), 2, "the child made its own connection");
    assert_eq!(log[0].peer_pid, me);
    assert_eq!(log[1].peer_pid, child);
    assert_eq!(log[1].answered, 2);
    // The parent's connection was neither used nor shut down by the child:
    // it still works (without RETRY, a dead connection would fail here).
    assert_eq!(
        &cl.get(b"fork-key").unwrap().unwrap()[..],
        b"session made by the parent"
    );
    let log = peer.stats.log();
    assert_eq!(log.len(), 2, "the parent kept its connection");
    assert_eq!(log[0].answered, 2);
}

#[test]
fn without_pidcheck_the_child_still_makes_its_own_connection() {
    // The original shared the inherited socket here; we never share one
    // across processes, whatever the flags.
    let _g = serial();
    let peer = map_peer(Default::default(), MapOpts::default());
    let cl = Client::new(&peer.addr(), FLAG_PERSISTENT).unwrap();
    let me = std::process::id() as i32;
    let (child, status) = in_child(|| matches!(cl.has(b"k"), Ok(false)));
    assert_eq!(status, 0);
    let log = peer.stats.log();
    assert_eq!(log.len(), 2, "the child made its own connection");
    assert_eq!((log[0].peer_pid, log[0].answered), (me, 0));
    assert_eq!((log[1].peer_pid, log[1].answered), (child, 1));
    // The parent's connection is intact (no RETRY: a dead one would fail).
    assert!(!cl.has(b"k").unwrap());
    assert_eq!(peer.stats.log()[0].answered, 1);
}

/// Wait at most `limit` for our child `pid`; SIGKILL it past that.
/// Returns its exit status, None when it had to be killed or died of a
/// signal.
fn wait_bounded(pid: i32, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    let mut status = 0;
    loop {
        // SAFETY: polling our own child with a valid status pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
        }
        assert_eq!(r, 0, "waitpid failed");
        if Instant::now() > deadline {
            // SAFETY: killing and reaping our own hung child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Issue 13, finding 6: with `PERSISTENT` alone, a child forked while its
/// parent uses the client must never get the parent's session. Each of 40
/// rounds leaves a connection idle in the pool, forks, and then parent
/// and child each fetch their own session 500 times at once (20 000 calls
/// in the children in all). The original (and this library before the
/// fix) let the child use the inherited socket together with the parent:
/// both count request uids on from the same value, so one could read the
/// answer to the other's request with the uid it expected and return the
/// other's session as its own (or fail on a uid mismatch or a torn frame,
/// or wait out the I/O bound for an answer the other took).
#[test]
fn fork_under_load_never_hands_the_child_the_parents_session() {
    const FORKS: usize = 40;
    const CALLS: u64 = 500;
    let _g = serial();
    let peer = map_peer(Default::default(), MapOpts::default());
    // A short I/O bound: on the old code a stolen answer costs one.
    let cfg = Config {
        io_timeout: Duration::from_millis(300),
        ..Config::default()
    };
    let cl = Client::with_config(&peer.addr(), FLAG_PERSISTENT, cfg).unwrap();
    let parent_data = b"session data of the parent process ".repeat(3);
    let child_data = b"session data of a forked child ".repeat(3);
    for (id, data) in [(&b"parent"[..], &parent_data), (b"child", &child_data)] {
        assert_eq!(cl.add(id, data, 600_000).unwrap(), AddOutcome::Stored);
    }
    // (wrong answers: another session's data or a miss; failed calls)
    let hammer = |id: &[u8], want: &[u8]| {
        let (mut bad, mut err) = (0u64, 0u64);
        for _ in 0..CALLS {
            match cl.get(id) {
                Ok(Some(d)) if d[..] == want[..] => {}
                Ok(_) => bad += 1,
                Err(_) => err += 1,
            }
        }
        (bad, err)
    };
    let mut child_pids = Vec::new();
    let (mut wrong, mut failed, mut lost) = (0u64, 0u64, 0);
    let (mut p_wrong, mut p_failed) = (0u64, 0u64);
    let start = Instant::now();
    for _ in 0..FORKS {
        // The parent's connection is idle in the pool at the fork.
        assert!(matches!(cl.get(b"parent"), Ok(Some(_))));
        let (mut rx, mut tx) = UnixStream::pair().unwrap();
        // SAFETY: fork() has no memory-safety preconditions; the child only
        // uses the client, plain syscalls and its end of the pair, then
        // _exit()s.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let (bad, err) = hammer(b"child", &child_data);
                let mut msg = bad.to_le_bytes().to_vec();
                msg.extend_from_slice(&err.to_le_bytes());
                tx.write_all(&msg).is_ok()
            }));
            // SAFETY: ends the child without the parent's exit handlers.
            unsafe { libc::_exit(if matches!(r, Ok(true)) { 0 } else { 1 }) };
        }
        drop(tx);
        let (bad, err) = hammer(b"parent", &parent_data);
        p_wrong += bad;
        p_failed += err;
        let status = wait_bounded(pid, Duration::from_secs(60));
        let mut msg = Vec::new();
        rx.read_to_end(&mut msg).unwrap();
        if status != Some(0) || msg.len() != 16 {
            lost += 1;
            continue;
        }
        wrong += u64::from_le_bytes(msg[..8].try_into().unwrap());
        failed += u64::from_le_bytes(msg[8..].try_into().unwrap());
        child_pids.push(pid);
    }
    let calls = FORKS as u64 * CALLS;
    println!(
        "fork under load ({:.1} s): children {calls} calls, {wrong} wrong, {failed} failed, \
         {lost} children lost; parent {calls} calls, {p_wrong} wrong, {p_failed} failed",
        start.elapsed().as_secs_f64()
    );
    assert_eq!(lost, 0, "children that hung or died");
    assert_eq!(
        wrong, 0,
        "children handed another session's data (or a miss)"
    );
    assert_eq!(
        p_wrong, 0,
        "parent handed another session's data (or a miss)"
    );
    assert_eq!((failed, p_failed), (0, 0), "failed calls (child, parent)");
    // Every child talked over a connection of its own only, and the
    // parent kept its one connection throughout.
    let log = peer.stats.log();
    let me = std::process::id() as i32;
    let mine: Vec<_> = log.iter().filter(|c| c.peer_pid == me).collect();
    assert_eq!(mine.len(), 1, "the parent reconnected");
    assert_eq!(mine[0].answered as u64, 2 + FORKS as u64 * (CALLS + 1));
    for pid in child_pids {
        let own: Vec<_> = log.iter().filter(|c| c.peer_pid == pid).collect();
        assert_eq!(own.len(), 1, "child {pid}'s connections");
        assert_eq!(own[0].answered as u64, CALLS, "child {pid}'s calls");
    }
}

#[test]
fn pidcheck_with_flags_zero_is_harmless_across_fork() {
    let _g = serial();
    let peer = map_peer(Default::default(), MapOpts::default());
    let cl = Client::new(&peer.addr(), FLAG_PERSISTENT_PIDCHECK).unwrap();
    let (_, status) = in_child(|| matches!(cl.has(b"k"), Ok(false)));
    assert_eq!(status, 0);
    assert!(!cl.has(b"k").unwrap());
    assert_eq!(peer.stats.conn_count(), 2);
}

/// fork() while other threads are in the middle of operations on the same
/// client (taking and returning pooled connections, remembering gets):
/// every child must be able to use the client at once. A lock caught held
/// at the fork would hang the child forever.
#[test]
fn fork_while_other_threads_use_the_client_never_hangs_the_child() {
    let _g = serial();
    let peer = map_peer(Default::default(), MapOpts::default());
    let flags = FLAG_PERSISTENT | FLAG_PERSISTENT_PIDCHECK | FLAG_PERSISTENT_RETRY;
    let cl = Arc::new(Client::new(&peer.addr(), flags).unwrap());
    assert_eq!(
        cl.add(b"shared", b"made before the forks", 600_000)
            .unwrap(),
        AddOutcome::Stored
    );
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..4u8)
        .map(|t| {
            let (cl, stop, ops) = (cl.clone(), stop.clone(), ops.clone());
            std::thread::spawn(move || {
                let key = [b'w', t];
                assert_eq!(
                    cl.add(&key, b"worker data", 600_000).unwrap(),
                    AddOutcome::Stored
                );
                while !stop.load(Ordering::Relaxed) {
                    let got = cl.get(&key).unwrap().unwrap();
                    assert_eq!(&got[..], b"worker data");
                    assert!(cl.reget(&key).is_some());
                    ops.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    while ops.load(Ordering::Relaxed) < 200 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut hung = 0;
    for _ in 0..200 {
        // SAFETY: fork() has no memory-safety preconditions; the child only
        // uses the client and plain syscalls, then _exit()s.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                matches!(cl.get(b"shared"), Ok(Some(d)) if &d[..] == b"made before the forks")
                    && cl.reget(b"shared").is_some()
                    && cl.has(b"shared").unwrap_or(false)
            }))
            .unwrap_or(false);
            // SAFETY: ends the child without the parent's exit handlers.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        match wait_bounded(pid, Duration::from_secs(10)) {
            Some(0) => {}
            Some(code) => panic!("child failed: exit status {code}"),
            None => hung += 1,
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(hung, 0, "children hung on a lock inherited across fork()");
    assert!(ops.load(Ordering::Relaxed) >= 200);
}

#[test]
fn bad_proto_level_fails_the_call_with_a_line_on_stderr() {
    let _g = serial();
    let c = client_support::cases("library-vs-fake-server")
        .into_iter()
        .find(|c| c.str("name") == Some("lib_fake_badproto_add"))
        .unwrap();
    let req = unhex(c.str("request_hex").unwrap());
    let peer = replay_peer(vec![(req.len(), unhex(c.str("response_hex").unwrap()))]);
    let cfg = Config {
        uids: UidSource::Private(1),
        ..Config::default()
    };
    let cl = Client::with_config(&peer.addr(), FLAG_PERSISTENT, cfg).unwrap();
    let result = Arc::new(Mutex::new(None));
    let r2 = result.clone();
    let (_, err) = capture_stderr(|| {
        *r2.lock().unwrap() = Some(cl.add(b"proxy-session-id", b"proxy session payload", 300_000));
    });
    let r = result.lock().unwrap().take().unwrap();
    assert!(matches!(r, Err(Error::Protocol(_))), "{r:?}");
    let want = format!(
        "libdistcache(pid={}) protocol incompatibility; my level is 00110000, the peer's is 00100000",
        std::process::id()
    );
    assert!(err.contains(&want), "stderr was {err:?}");
    assert_eq!(err.lines().count(), 1);
    // The corrupt connection was dropped, not pooled.
    assert_eq!(cl.idle_connections(), 0);
    assert_eq!(peer.stats.log()[0].received, req);
}

#[test]
fn environment_sets_the_floor_and_the_io_bound() {
    let _g = serial();
    let peer = map_peer(
        Default::default(),
        MapOpts {
            stall: true,
            ..Default::default()
        },
    );
    std::env::set_var(ENV_MIN_TIMEOUT, "300000");
    std::env::set_var(ENV_IO_TIMEOUT, "150");
    let cl = Client::new(&peer.addr(), 0).unwrap();
    assert_eq!(cl.config().min_timeout_ms, 300_000);
    assert_eq!(cl.config().io_timeout, Duration::from_millis(150));
    // DC_CTX_new reads the same variables: a stalled server fails within
    // the (short) bound.
    let t = std::ffi::CString::new(peer.addr()).unwrap();
    // SAFETY: valid C string; ctx freed below.
    unsafe {
        let ctx = DC_CTX_new(t.as_ptr(), 0);
        assert!(!ctx.is_null());
        let start = Instant::now();
        assert_eq!(DC_CTX_has_session(ctx, b"x".as_ptr(), 1), -1);
        assert!(start.elapsed() < Duration::from_secs(10));
        DC_CTX_free(ctx);
    }
    // Invalid values are reported and ignored.
    std::env::set_var(ENV_MIN_TIMEOUT, "604800001");
    std::env::set_var(ENV_IO_TIMEOUT, "soon");
    let (_, err) = capture_stderr(|| {
        let cl = Client::new(&peer.addr(), 0).unwrap();
        assert_eq!(cl.config().min_timeout_ms, 500);
        assert_eq!(
            cl.config().io_timeout,
            Duration::from_millis(DEFAULT_IO_TIMEOUT_MS)
        );
    });
    assert!(
        err.contains(ENV_MIN_TIMEOUT) && err.contains(ENV_IO_TIMEOUT),
        "{err:?}"
    );
    std::env::remove_var(ENV_MIN_TIMEOUT);
    std::env::remove_var(ENV_IO_TIMEOUT);
    let cl = Client::new(&peer.addr(), 0).unwrap();
    assert_eq!(cl.config().min_timeout_ms, 500);
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

#[test]
fn random_and_mutated_answers_never_panic() {
    // Each connection: read the HAVE request for "abc", answer with a
    // mutated (or random) byte string, close.
    let seed = Arc::new(AtomicU64::new(0x5eed_1234_abcd_0001));
    let outcomes = Arc::new(Mutex::new([0usize; 4]));
    let s2 = seed.clone();
    let peer = Peer::spawn(Arc::new(move |i, mut s: UnixStream, _: &Arc<Stats>| {
        let req = read_n(&mut s, 17);
        if req.len() != 17 {
            return;
        }
        let uid = u32::from_be_bytes(req[5..9].try_into().unwrap());
        let mut rng = s2.load(Ordering::Relaxed) ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9);
        let mut out = Vec::new();
        let payload_len = (xorshift(&mut rng) % 4100) as usize;
        let payload: Vec<u8> = (0..payload_len).map(|_| xorshift(&mut rng) as u8).collect();
        encode_message(
            &mut out,
            true,
            uid,
            distcache_rs::proto::Cmd::Have,
            &payload,
        )
        .unwrap();
        match xorshift(&mut rng) % 4 {
            // Pure noise.
            0 => {
                out = (0..(xorshift(&mut rng) % 64))
                    .map(|_| xorshift(&mut rng) as u8)
                    .collect()
            }
            // Flip a few bytes (often in the header).
            1 | 2 => {
                for _ in 0..1 + xorshift(&mut rng) % 3 {
                    let lim = if xorshift(&mut rng) % 2 == 0 {
                        14.min(out.len())
                    } else {
                        out.len()
                    };
                    let at = (xorshift(&mut rng) as usize) % lim;
                    out[at] ^= 1 << (xorshift(&mut rng) % 8);
                }
            }
            // Truncate.
            _ => {
                let keep = (xorshift(&mut rng) as usize) % out.len();
                out.truncate(keep);
            }
        }
        let _ = s.write_all(&out);
    }));
    let c = Config {
        uids: UidSource::Private(1),
        io_timeout: Duration::from_millis(300),
        ..Config::default()
    };
    let cl = Client::with_config(&peer.addr(), 0, c).unwrap();
    let _g = serial();
    let (_, err) = capture_stderr(|| {
        for _ in 0..300 {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cl.has(b"abc")));
            let r = r.expect("client panicked on peer input");
            let k = match r {
                Ok(_) => 0,
                Err(Error::Protocol(_)) => 1,
                Err(Error::Closed) | Err(Error::Timeout(_)) | Err(Error::Recv(_)) => 2,
                Err(_) => 3,
            };
            outcomes.lock().unwrap()[k] += 1;
        }
    });
    let o = *outcomes.lock().unwrap();
    // One stderr line per peer protocol violation, none otherwise.
    let violations = err
        .lines()
        .filter(|l| l.starts_with("libdistcache(pid="))
        .count();
    assert_eq!(err.lines().count(), violations);
    assert!(violations >= o[1], "{violations} lines for {o:?}");
    assert_eq!(o.iter().sum::<usize>(), 300);
    // The mix exercised both rejection and cut-short paths.
    assert!(o[1] > 0 && o[2] > 0, "{o:?}");
}

#[test]
fn tls_addresses_are_refused_by_the_c_entry_points_with_one_line() {
    use distcache_rs::capi::nal::{NAL_ADDRESS_create, NAL_ADDRESS_free, NAL_ADDRESS_new};
    use distcache_rs::nal::address::TLS_REFUSED;
    let _g = serial();
    for addr in ["TLS:127.0.0.1:9443", "tls:[::1]:9443", "TLS:9443"] {
        let c = std::ffi::CString::new(addr).unwrap();
        // SAFETY: a valid C string; a non-NULL result would be freed.
        let (ctx, err) = capture_stderr(|| unsafe { DC_CTX_new(c.as_ptr(), 0) });
        assert!(ctx.is_null(), "{addr}");
        assert_eq!(err.lines().count(), 1, "{addr}: {err:?}");
        assert!(
            err.contains("DC_CTX_new") && err.contains(addr) && err.contains(TLS_REFUSED),
            "{addr}: {err:?}"
        );
        assert!(TLS_REFUSED.contains("run dc_client -server TLS:"));
        // SAFETY: a fresh address object, freed below; a valid C string.
        unsafe {
            let a = NAL_ADDRESS_new();
            assert!(!a.is_null());
            let (ok, err) = capture_stderr(|| NAL_ADDRESS_create(a, c.as_ptr(), 2048));
            assert_eq!(ok, 0, "{addr}");
            assert_eq!(err.lines().count(), 1, "{addr}: {err:?}");
            assert!(
                err.contains("NAL_ADDRESS_create") && err.contains(TLS_REFUSED),
                "{addr}: {err:?}"
            );
            NAL_ADDRESS_free(a);
        }
        // The Rust API refuses it the same way, without printing.
        let (r, err) = capture_stderr(|| Client::new(addr, 0));
        match r {
            Err(Error::Address(m)) => assert!(m.contains(TLS_REFUSED), "{m}"),
            other => panic!("{addr}: {other:?}"),
        }
        assert_eq!(err, "");
    }
}
