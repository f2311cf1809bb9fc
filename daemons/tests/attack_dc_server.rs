//! Attacks on a live dc_server (issue 13, findings 2, 4 and 5): a flood of
//! dribbling connections against a full connection table, connections
//! that pipeline requests without reading the answers against -maxbuffer,
//! and long-lived sessions planted to take over the cache. UNIX sockets in
//! a temp directory only; every wait and count is bounded.

mod common;

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::*;
use distcache_rs::client::{AddOutcome, Client, FLAG_PERSISTENT};

const BIN: &str = env!("CARGO_BIN_EXE_dc_server");

/// The attacks hold thousands of descriptors and much CPU: one at a time.
static HEAVY: Mutex<()> = Mutex::new(());

impl Srv {
    /// Resident set size of the server, in bytes.
    fn rss(&self) -> u64 {
        let s = fs::read_to_string(format!("/proc/{}/status", self.proc.pid())).unwrap();
        let kb: u64 = s
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .expect("VmRSS");
        kb * 1024
    }
}

/// Raise our soft descriptor limit to what `want` needs (up to the hard
/// limit); returns the limit in force.
fn raise_nofile(want: u64) -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut r), 0);
        if r.rlim_cur < want {
            r.rlim_cur = want.min(r.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
    }
    r.rlim_cur
}

/// DC_CTX callers sharing ONE client (flags as given) from `threads`
/// threads, each iteration an ADD of a fresh id, a GET of it back and a
/// REMOVE.
struct SharedLoad {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    wrong: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl SharedLoad {
    fn start(target: &str, flags: u32, threads: u32, tag: &str) -> SharedLoad {
        let client = Arc::new(Client::new(target, flags).unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let wrong = Arc::new(AtomicU64::new(0));
        let threads = (0..threads)
            .map(|t| {
                let (client, stop) = (client.clone(), stop.clone());
                let (ok, failed, wrong) = (ok.clone(), failed.clone(), wrong.clone());
                let tag = tag.to_string();
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(Relaxed) {
                        n += 1;
                        let id = format!("{tag}-{t}-{n}");
                        let data = format!("data of {id} ").repeat(4);
                        let added = client.add(id.as_bytes(), data.as_bytes(), 60_000);
                        let got = client.get(id.as_bytes());
                        // Removed again, so the load does not fill the cache.
                        let removed = matches!(client.remove(id.as_bytes()), Ok(true));
                        // Wrong: another session's data. A failed call
                        // (even an ADD stored whose answer was lost) is a
                        // failure, not a wrong answer.
                        match (added, got) {
                            (_, Ok(Some(d))) if *d != *data.as_bytes() => {
                                wrong.fetch_add(1, Relaxed);
                            }
                            (Ok(AddOutcome::Stored), Ok(Some(_))) if removed => {
                                ok.fetch_add(1, Relaxed);
                            }
                            _ => {
                                failed.fetch_add(1, Relaxed);
                            }
                        }
                    }
                })
            })
            .collect();
        SharedLoad {
            stop,
            ok,
            failed,
            wrong,
            threads,
        }
    }
    fn ok(&self) -> u64 {
        self.ok.load(Relaxed)
    }
    /// Stop; (successes, failures, wrong answers).
    fn stop(mut self) -> (u64, u64, u64) {
        self.stop.store(true, Relaxed);
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
        (
            self.ok.load(Relaxed),
            self.failed.load(Relaxed),
            self.wrong.load(Relaxed),
        )
    }
}

impl Drop for SharedLoad {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
    }
}

/// Whether the server closed this socket (EOF or reset), without waiting.
fn closed_by_peer(mut s: &UnixStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 65536];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            // Answers queued before the close come first.
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
    }
}

#[test]
fn dribbling_flood_against_a_full_table_fails_no_operation() {
    // Finding 2: 8 000 dribbling sockets as fast as possible against
    // -maxconns 2000, while 8 threads share one connection-per-operation
    // DC_CTX and a dc_client upstream multiplexes other requests.
    let _g = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let mut flood = 8000usize;
    let limit = raise_nofile(flood as u64 + 512);
    if limit < flood as u64 + 512 {
        flood = (limit as usize).saturating_sub(512);
        println!("descriptor limit {limit}: flooding with {flood} sockets instead of 8000");
    }
    let dir = TempDir::new("atk-flood");
    let srv = Srv::start(&dir, "s", &["-maxconns", "2000", "-sessions", "100000"]);
    let proxy = dc_client(&dir, &srv.addr(), &[]);
    let via_proxy = Client::new(&dir.addr("client"), FLAG_PERSISTENT).unwrap();
    assert_eq!(
        via_proxy
            .add(b"upstream-warm", b"warm data", 60_000)
            .unwrap(),
        AddOutcome::Stored
    );

    let direct = SharedLoad::start(&srv.addr(), 0, 8, "direct");
    let proxied = SharedLoad::start(&dir.addr("client"), FLAG_PERSISTENT, 2, "proxied");
    let t0 = Instant::now();
    while direct.ok() < 50 && t0.elapsed() < Duration::from_secs(20) {
        sleep(Duration::from_millis(10));
    }
    let before = direct.ok();

    // The flood: each socket sends 9 bytes of a 14-byte header, then a
    // 10th byte once all are open, and nothing more.
    let t0 = Instant::now();
    let mut socks = Vec::with_capacity(flood);
    let mut connect_errors = 0;
    for _ in 0..flood {
        match UnixStream::connect(&srv.sock) {
            Ok(mut s) => {
                let _ = s.write_all(&[0, 0x11, 0, 0, 1, 0, 0, 0, 7]);
                socks.push(s);
            }
            Err(_) => connect_errors += 1,
        }
    }
    let opened = t0.elapsed();
    for s in &mut socks {
        let _ = s.write(&[0]);
    }
    // Let the server catch up with the last of them while the load runs.
    sleep(Duration::from_millis(1500));
    let during = direct.ok() - before;
    let closed = socks.iter().filter(|s| closed_by_peer(s)).count();
    let (ok, failed, wrong) = direct.stop();
    let (pok, pfailed, pwrong) = proxied.stop();
    drop(socks);
    let (_, proxy_log) = proxy.terminate();
    let log = srv.log();
    println!(
        "flood of {flood} sockets opened in {opened:?} ({connect_errors} connect errors), \
         {closed} closed by the server; direct DC_CTX: {ok} ok ({during} during the flood), \
         {failed} failed, {wrong} wrong; via dc_client: {pok} ok, {pfailed} failed, {pwrong} wrong"
    );
    assert_eq!(wrong + pwrong, 0, "wrong answers");
    assert_eq!(failed, 0, "failed connection-per-operation calls\n{log}");
    assert_eq!(pfailed, 0, "failed calls through dc_client\n{log}");
    assert!(during > 0, "operations kept being served during the flood");
    assert!(
        closed >= flood.saturating_sub(2000 + 100),
        "dribblers made room: {closed} of {flood} closed"
    );
    assert!(
        log.contains("to make room for a new one (-maxconns 2000 reached)"),
        "{log}"
    );
    assert!(log.contains("never completed a request"), "{log}");
    assert!(
        !proxy_log.contains("lost server connection"),
        "dc_client's upstream was never closed\n{proxy_log}"
    );
}

#[test]
fn pipelining_without_reading_stays_within_maxbuffer() {
    // Finding 4: 500 connections pipeline GETs of a 32 KB session and
    // never read; -maxbuffer 16 MB bounds the server and a well-behaved
    // client keeps being served.
    let _g = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    raise_nofile(1024);
    let dir = TempDir::new("atk-buf");
    let srv = Srv::start(&dir, "s", &["-maxbuffer", "16", "-sessions", "10000"]);
    let big = vec![0x5au8; 32_000];
    let c = Client::new(&srv.addr(), FLAG_PERSISTENT).unwrap();
    assert_eq!(c.add(b"big", &big, 600_000).unwrap(), AddOutcome::Stored);
    let good = SharedLoad::start(&srv.addr(), FLAG_PERSISTENT, 2, "good");
    sleep(Duration::from_millis(200));
    let base = srv.rss();
    let get = request(7, 1, b"big");
    let blob: Vec<u8> = get.iter().copied().cycle().take(get.len() * 400).collect();
    assert_eq!(c.get(b"big").unwrap().as_deref(), Some(&big[..]));
    let mut socks = Vec::new();
    let mut written = 0usize;
    let mut peak = base;
    let t0 = Instant::now();
    for i in 0..500 {
        let mut s = UnixStream::connect(&srv.sock).unwrap();
        s.set_nonblocking(true).unwrap();
        let mut off = 0;
        // As many pipelined GETs as the socket takes now.
        while off < blob.len() {
            match s.write(&blob[off..]) {
                Ok(n) => {
                    off += n;
                    written += n;
                }
                Err(_) => break,
            }
        }
        socks.push(s);
        if i % 25 == 0 {
            peak = peak.max(srv.rss());
        }
    }
    // Keep watching while the server works through what it was sent.
    while t0.elapsed() < Duration::from_secs(4) {
        peak = peak.max(srv.rss());
        sleep(Duration::from_millis(20));
    }
    let closed = socks.iter().filter(|s| closed_by_peer(s)).count();
    let (ok, failed, wrong) = good.stop();
    let log = srv.log();
    println!(
        "{written} bytes of GETs sent; RSS before {:.1} MB, peak {:.1} MB (+{:.1} MB) with -maxbuffer 16; \
         {closed} of 500 pipelining connections closed; good client {ok} ok, {failed} failed, {wrong} wrong",
        base as f64 / 1048576.0,
        peak as f64 / 1048576.0,
        (peak - base) as f64 / 1048576.0
    );
    assert_eq!(wrong, 0);
    assert_eq!(failed, 0, "{log}");
    assert!(ok > 0);
    // The budget, plus what one event may add before it is enforced (one
    // connection's buffers, < 1 MB) and the connection table itself.
    assert!(
        peak - base < 17 << 20,
        "growth {} bytes is within the 16 MB budget",
        peak - base
    );
    assert!(closed > 0 && log.contains("(-maxbuffer 16 MB)"), "{log}");
    assert!(
        srv.log().matches("(-maxbuffer").count() <= 100,
        "rate-limited"
    );
}

#[test]
fn planted_long_lived_sessions_do_not_take_over_the_cache() {
    // Finding 5, through the wire: 100 seven-day ADDs fill a 100-session
    // dc_server, then 50 normal ADDs are all retrievable.
    let dir = TempDir::new("atk-plant");
    let srv = Srv::start(&dir, "s", &["-sessions", "100"]);
    let mut s = connect(&srv.sock);
    for i in 0..100u32 {
        let id = format!("planted-{i}");
        let p = add_payload(604_800_000, id.as_bytes(), b"long-lived");
        assert_eq!(transact(&mut s, &request(i, 0, &p)), vec![0], "{id}");
    }
    let mut n = connect(&srv.sock);
    for i in 0..50u32 {
        let id = format!("normal-{i}");
        let p = add_payload(300_000, id.as_bytes(), id.as_bytes());
        assert_eq!(transact(&mut n, &request(i, 0, &p)), vec![0], "{id}");
    }
    for i in 0..50u32 {
        let id = format!("normal-{i}");
        assert_eq!(
            transact(&mut n, &request(100 + i, 1, id.as_bytes())),
            id.as_bytes(),
            "GET {id}"
        );
    }
    drop(srv);
}

#[test]
fn maxtimeout_clamps_long_timeouts() {
    let dir = TempDir::new("atk-maxt");
    let srv = Srv::start(&dir, "s", &["-maxtimeout", "800"]);
    let mut s = connect(&srv.sock);
    let p = add_payload(604_800_000, b"week", b"data");
    assert_eq!(
        transact(&mut s, &request(1, 0, &p)),
        vec![0],
        "clamped, not refused"
    );
    assert_eq!(transact(&mut s, &request(2, 1, b"week")), b"data");
    sleep(Duration::from_millis(1300));
    assert_eq!(
        transact(&mut s, &request(3, 1, b"week")),
        vec![1],
        "expired"
    );
}

#[test]
fn new_flags_are_documented_and_checked() {
    let (code, out, err) = run(BIN, &["-h"], Duration::from_secs(10));
    let text = out + &err;
    assert_eq!(code, Some(0), "{text}");
    for f in ["-maxtimeout", "-maxbuffer", "-maxconns"] {
        assert!(text.contains(f), "{f} in -h\n{text}");
    }
    let dir = TempDir::new("atk-flags");
    let listen = dir.addr("s");
    for (args, flag) in [
        (vec!["-maxtimeout", "0"], "-maxtimeout"),
        (vec!["-maxtimeout", "604800001"], "-maxtimeout"),
        (vec!["-maxbuffer", "0"], "-maxbuffer"),
        (vec!["-maxbuffer", "lots"], "-maxbuffer"),
        (vec!["-mintimeout", "90000000"], "-mintimeout"),
    ] {
        let mut a = vec!["-listen", listen.as_str()];
        a.extend_from_slice(&args);
        let (code, _, err) = run(BIN, &a, Duration::from_secs(10));
        assert_ne!(code, Some(0), "{args:?}");
        let first = err.lines().next().unwrap_or("");
        assert!(first.contains(flag), "{args:?}: {err}");
    }
}

#[test]
fn out_of_descriptors_makes_room_too() {
    // Finding 2, the EMFILE side: dc_server limited to 64 descriptors
    // (soft and hard, so it cannot raise them) and 300 dribblers: the
    // newcomers of a shared connection-per-operation DC_CTX are still
    // served.
    use std::os::unix::process::CommandExt;
    let _g = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    raise_nofile(1024);
    let dir = TempDir::new("atk-emfile");
    let sock = dir.path("s");
    let log_path = dir.path("s.log");
    let listen = format!("UNIX:{}", sock.display());
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["-listen", &listen])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(fs::File::create(&log_path).unwrap()));
    // SAFETY: setrlimit only, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let r = libc::rlimit {
                rlim_cur: 64,
                rlim_max: 64,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let _srv = Proc {
        child: cmd.spawn().unwrap(),
        name: "dc_server".into(),
    };
    wait_for_socket(&sock);
    let addr = format!("UNIX:{}", sock.display());
    let load = SharedLoad::start(&addr, 0, 4, "emfile");
    let mut socks = Vec::new();
    for _ in 0..300 {
        if let Ok(mut s) = UnixStream::connect(&sock) {
            let _ = s.write_all(&[0, 0x11, 0, 0, 1]);
            socks.push(s);
        }
        sleep(Duration::from_millis(1));
    }
    let before = load.ok();
    sleep(Duration::from_millis(1000));
    let during = load.ok() - before;
    let closed = socks.iter().filter(|s| closed_by_peer(s)).count();
    let (ok, failed, wrong) = load.stop();
    let log = fs::read_to_string(&log_path).unwrap_or_default();
    println!(
        "64 descriptors, 300 dribblers: {closed} closed by the server; DC_CTX {ok} ok \
         ({during} after the flood), {failed} failed, {wrong} wrong"
    );
    assert_eq!(wrong, 0);
    assert_eq!(failed, 0, "{log}");
    assert!(during > 0, "{log}");
    assert!(closed >= 300 - 64, "{closed} dribblers made room");
    assert!(log.contains("(out of file descriptors"), "{log}");
}

#[test]
fn a_table_full_of_requests_in_flight_refuses_the_newcomer() {
    // Never close a connection with a request in flight: with both slots
    // of -maxconns 2 owing answers (pipelined GETs their peers do not
    // read), the newcomer is the one closed, with a log line.
    let dir = TempDir::new("atk-inflight");
    let srv = Srv::start(&dir, "s", &["-maxconns", "2", "-stall", "0"]);
    let mut setup = connect(&srv.sock);
    let p = add_payload(600_000, b"big", &[0x42; 30_000]);
    assert_eq!(transact(&mut setup, &request(1, 0, &p)), vec![0]);
    drop(setup);
    sleep(Duration::from_millis(100));
    let get = request(2, 1, b"big");
    let blob: Vec<u8> = get.iter().copied().cycle().take(get.len() * 100).collect();
    let mut owed: Vec<UnixStream> = (0..2)
        .map(|_| {
            let mut s = connect(&srv.sock);
            s.write_all(&blob).unwrap();
            s
        })
        .collect();
    sleep(Duration::from_millis(300));
    let mut extra = connect(&srv.sock);
    assert!(
        closed_within(&mut extra, Duration::from_secs(5)),
        "newcomer refused"
    );
    for s in &owed {
        assert!(!closed_by_peer(s), "a connection owed answers was kept");
    }
    let log = srv.log();
    assert!(log.contains("every one with a request in flight"), "{log}");
    owed.clear();
}
