//! dc_client under greedy, hostile and hung peers (issue 13, findings 1-3):
//! an application that pipelines GETs and never reads, a flood of
//! dribbling connections, and a dc_server that accepts and never answers.
//! Each test drives the real binaries over UNIX sockets in a temp dir;
//! every wait is bounded. Figures are printed (run with --nocapture).

mod common;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::*;
use distcache_rs::proto::{self, Cmd, Decoder, Direction};

fn client_log(dir: &TempDir) -> String {
    fs::read_to_string(dir.path("client.log")).unwrap()
}

/// Resident set size of a process, in KB.
fn rss_kb(pid: i32) -> u64 {
    let st = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    st.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// True if the peer closed `s` within `limit`, seen without reading (a
/// read would drain answers: progress for the peer).
fn hung_up_within(s: &UnixStream, limit: Duration) -> bool {
    use std::os::fd::AsRawFd;
    let t0 = Instant::now();
    loop {
        let mut p = libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one valid pollfd, a bounded timeout.
        let n = unsafe { libc::poll(&mut p, 1, 10) };
        if n > 0 && p.revents & (libc::POLLRDHUP | libc::POLLHUP) != 0 {
            return true;
        }
        if t0.elapsed() >= limit {
            return false;
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

// ------------------------------------------------------------ finding 1

/// Finding 1: connections that pipeline ~340 KB of GETs for a 32 KB session
/// and never read. dc_client stays under 64 MB RSS throughout, other
/// applications keep being served promptly, and each attacker is closed by
/// -clientstall with one log line.
#[test]
fn greedy_readers_keep_dc_client_memory_bounded() {
    let dir = TempDir::new("atk-greedy");
    let _srv = dc_server_logged(&dir, "srv", &[]);
    let mut client = dc_client_logged(&dir, &dir.addr("srv"), &["-clientstall", "3000"]);
    let app = dir.path("client");
    let base = rss_kb(client.pid());
    // The largest session: a 32768-byte ADD payload.
    let id = b"big";
    let data: Vec<u8> = (0..32768 - 8 - id.len()).map(|i| (i % 251) as u8).collect();
    let mut c = connect(&app);
    assert_eq!(
        transact(&mut c, &request(1, 0, &add_payload(600_000, id, &data))),
        vec![0]
    );
    assert_eq!(transact(&mut c, &request(2, 1, id)), data);
    // Each attacker writes ~340 KB of pipelined GETs (20,000 of them) as far
    // as dc_client takes them, and never reads.
    let mut gets = Vec::new();
    for i in 0..20_000u32 {
        gets.extend_from_slice(&request(i, 1, id));
    }
    let gets = Arc::new(gets);
    let attackers: Vec<UnixStream> = (0..3).map(|_| connect(&app)).collect();
    let writers: Vec<_> = attackers
        .iter()
        .map(|a| {
            let mut a = a.try_clone().unwrap();
            let gets = gets.clone();
            std::thread::spawn(move || {
                a.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut sent = 0;
                while sent < gets.len() {
                    match a.write(&gets[sent..]) {
                        Ok(n) if n > 0 => sent += n,
                        _ => break,
                    }
                }
                sent
            })
        })
        .collect();
    // Meanwhile a good application does ADD+GET round trips and RSS is
    // sampled, until the attackers are closed (or 15 s).
    let t0 = Instant::now();
    let mut peak = 0;
    let mut worst = Duration::ZERO;
    let mut rounds = 0u32;
    let mut closed_at = None;
    let mut open = [true; 3];
    while t0.elapsed() < Duration::from_secs(15) {
        let r0 = Instant::now();
        check_served(&mut c, "good", rounds);
        worst = worst.max(r0.elapsed());
        rounds += 1;
        peak = peak.max(rss_kb(client.pid()));
        for (i, a) in attackers.iter().enumerate() {
            if open[i] && hung_up_within(a, Duration::ZERO) {
                open[i] = false;
            }
        }
        if !open.iter().any(|o| *o) {
            closed_at = Some(t0.elapsed());
            break;
        }
        sleep(Duration::from_millis(20));
    }
    let sent: Vec<usize> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    let after = rss_kb(client.pid());
    println!(
        "greedy readers: RSS base {base} KB, peak {peak} KB, after {after} KB; \
         {rounds} good ADD+GET rounds, slowest {worst:?}; attackers wrote {sent:?} bytes, \
         closed after {closed_at:?}"
    );
    assert!(client.alive());
    assert!(peak < 64 * 1024, "dc_client RSS reached {peak} KB");
    assert!(closed_at.is_some(), "attackers not closed: {open:?}");
    // Normal latency for the others: far under the library's 2 s bound.
    assert!(
        worst < Duration::from_millis(500),
        "slowest round {worst:?}"
    );
    check_served(&mut c, "after", 1);
    let log = client_log(&dir);
    let lines = log.matches("(-clientstall)").count();
    assert_eq!(lines, 3, "one line per attacker: {log}");
}

/// The process-wide -maxbuffer budget: with a budget below what the
/// attackers hold, the one without progress for longest is closed at once
/// (one line), long before -clientstall.
#[test]
fn maxbuffer_closes_the_stalest_connection() {
    let dir = TempDir::new("atk-budget");
    let _srv = dc_server_logged(&dir, "srv", &[]);
    let mut client = dc_client_logged(&dir, &dir.addr("srv"), &["-maxbuffer", "2"]);
    let app = dir.path("client");
    let id = b"big";
    let data: Vec<u8> = (0..32768 - 8 - id.len()).map(|i| (i % 249) as u8).collect();
    let mut c = connect(&app);
    assert_eq!(
        transact(&mut c, &request(1, 0, &add_payload(600_000, id, &data))),
        vec![0]
    );
    let mut gets = Vec::new();
    for i in 0..2_000u32 {
        gets.extend_from_slice(&request(i, 1, id));
    }
    // Each attacker holds ~3 MB in dc_client: over a 2 MB budget.
    let mut a = connect(&app);
    a.write_all(&gets).unwrap();
    let t0 = Instant::now();
    assert!(hung_up_within(&a, Duration::from_secs(5)), "attacker kept");
    println!("-maxbuffer 2: attacker closed after {:?}", t0.elapsed());
    check_served(&mut c, "good", 1);
    assert!(client.alive());
    let log = client_log(&dir);
    assert_eq!(log.matches("(-maxbuffer)").count(), 1, "{log}");
}

// ------------------------------------------------------------ finding 2

/// Raise this process's soft descriptor limit toward `want` (hard limit
/// permitting); returns the soft limit in force.
fn raise_nofile(want: u64) -> u64 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: rl is valid for writes.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
    if rl.rlim_cur < want {
        let new = libc::rlimit {
            rlim_cur: want.min(rl.rlim_max),
            rlim_max: rl.rlim_max,
        };
        // SAFETY: new is a valid rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } == 0 {
            rl.rlim_cur = new.rlim_cur;
        }
    }
    rl.rlim_cur
}

/// Finding 2: 8,000 dribbling sockets (one byte of a header, then silence)
/// opened as fast as possible against dc_client with its default -maxconns
/// (4096), while 8 threads share one DC_CTX in connection-per-operation
/// mode: the full table makes room (oldest never-completed first), so no
/// operation fails, none is wrong, and the server connection stays.
#[test]
fn dribbler_flood_does_not_lock_applications_out() {
    // 8,000 sockets plus the test's own need more than the usual 1024;
    // scaled down (with a line saying so) only if the hard limit is lower.
    let limit = raise_nofile(9_000);
    let flood = 8_000usize.min(limit.saturating_sub(300) as usize);
    if flood < 8_000 {
        println!("descriptor hard limit {limit}: flooding with {flood} sockets only");
    }
    let dir = TempDir::new("atk-flood");
    let _srv = dc_server_logged(&dir, "srv", &[]);
    let mut client = dc_client_logged(&dir, &dir.addr("srv"), &[]);
    let app = dir.path("client");
    let target = dir.addr("client");
    let ctx = Arc::new(
        distcache_rs::client::Client::with_config(
            &target,
            0,
            distcache_rs::client::Config::default(),
        )
        .unwrap(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(Mutex::new(Vec::<String>::new()));
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let (ctx, stop, ok, failed) = (ctx.clone(), stop.clone(), ok.clone(), failed.clone());
            std::thread::spawn(move || {
                use distcache_rs::client::AddOutcome;
                let mut n = 0u32;
                while !stop.load(Relaxed) {
                    n += 1;
                    let id = format!("flood-{w}-{n}");
                    let data = format!("data of {id} ").repeat(4);
                    let r = match ctx.add(id.as_bytes(), data.as_bytes(), 60_000) {
                        Ok(AddOutcome::Stored) => match ctx.get(id.as_bytes()) {
                            Ok(Some(d)) if *d == *data.as_bytes() => Ok(()),
                            Ok(Some(_)) => Err(format!("WRONG data for {id}")),
                            other => Err(format!("GET {id}: {other:?}")),
                        },
                        other => Err(format!("ADD {id}: {other:?}")),
                    };
                    match r {
                        Ok(()) => {
                            ok.fetch_add(1, Relaxed);
                        }
                        Err(e) => failed.lock().unwrap().push(e),
                    }
                }
            })
        })
        .collect();
    sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    let before = ok.load(Relaxed);
    let mut socks = Vec::with_capacity(flood);
    for _ in 0..flood {
        match UnixStream::connect(&app) {
            Ok(mut s) => {
                let _ = s.write_all(&[0]);
                socks.push(s);
            }
            Err(e) => panic!("flood connect {}: {e}", socks.len()),
        }
    }
    let flood_time = t0.elapsed();
    // Keep them open a little while the applications go on.
    sleep(Duration::from_millis(500));
    let during = ok.load(Relaxed) - before;
    stop.store(true, Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let closed = socks
        .iter_mut()
        .map(|s| {
            s.set_nonblocking(true).unwrap();
            matches!(s.read(&mut [0u8; 1]), Ok(0))
        })
        .filter(|closed| *closed)
        .count();
    let failed = failed.lock().unwrap().clone();
    println!(
        "dribbler flood: {flood} sockets in {flood_time:?}, {closed} of them closed by dc_client; \
         {during} good ADD+GET pairs meanwhile, {} total, {} failed: {:?}",
        ok.load(Relaxed),
        failed.len(),
        failed.iter().take(5).collect::<Vec<_>>()
    );
    assert!(client.alive());
    assert!(failed.is_empty(), "{} failed operations", failed.len());
    assert!(during > 0, "no operation during the flood");
    assert!(closed as u64 >= flood as u64 - 4096, "only {closed} closed");
    let log = client_log(&dir);
    assert!(log.contains("to make room"), "{log}");
    assert!(!log.contains("lost server connection"), "{log}");
    // The server connection was never the one closed: one connection to
    // dc_server, still serving.
    let mut c = connect(&app);
    check_served(&mut c, "after", 1);
}

/// -clientstall also closes a connection holding part of a request.
#[test]
fn clientstall_closes_a_partial_request() {
    let dir = TempDir::new("atk-partial");
    let _srv = dc_server_logged(&dir, "srv", &[]);
    let mut client = dc_client_logged(&dir, &dir.addr("srv"), &["-clientstall", "300"]);
    let app = dir.path("client");
    let mut d = connect(&app);
    send(&mut d, &request(1, 1, b"half")[..7]);
    let mut idle = connect(&app);
    check_served(&mut idle, "idle", 1);
    let t0 = Instant::now();
    assert!(hung_up_within(&d, Duration::from_secs(3)));
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_millis(200), "{waited:?}");
    // An idle connection holding nothing is not stalled.
    sleep(Duration::from_millis(400));
    check_served(&mut idle, "idle", 2);
    assert!(client.alive());
    let log = client_log(&dir);
    assert_eq!(log.matches("(-clientstall)").count(), 1, "{log}");
}

// ------------------------------------------------------------ finding 3

/// A fake dc_server: reads requests; while `answering` it answers each GET
/// with `data of <id>`, otherwise it keeps them and answers them all (late)
/// once it answers again.
struct HungServer {
    answering: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl HungServer {
    fn start(path: &std::path::Path) -> HungServer {
        let l = UnixListener::bind(path).unwrap();
        l.set_nonblocking(true).unwrap();
        let answering = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (answering.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Relaxed) {
                match l.accept() {
                    Ok((c, _)) => {
                        let (a, s) = (a.clone(), s.clone());
                        std::thread::spawn(move || Self::serve(c, &a, &s));
                    }
                    Err(_) => sleep(Duration::from_millis(5)),
                }
            }
        });
        HungServer { answering, stop }
    }

    fn serve(mut c: UnixStream, answering: &AtomicBool, stop: &AtomicBool) {
        c.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let mut dec = Decoder::new(Direction::Requests);
        let mut inbuf = Vec::new();
        let mut held: Vec<(u32, Vec<u8>)> = Vec::new();
        let mut b = vec![0u8; 65536];
        while !stop.load(Relaxed) {
            match c.read(&mut b) {
                Ok(0) => return,
                Ok(n) => inbuf.extend_from_slice(&b[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return,
            }
            let used = dec
                .drain(&inbuf, |m| {
                    assert_eq!(m.cmd, Cmd::Get);
                    held.push((m.uid, m.payload.to_vec()));
                })
                .unwrap();
            inbuf.drain(..used);
            if answering.load(Relaxed) && !held.is_empty() {
                let mut out = Vec::new();
                for (uid, id) in held.drain(..) {
                    let mut data = b"data of ".to_vec();
                    data.extend_from_slice(&id);
                    proto::encode_message(&mut out, true, uid, Cmd::Get, &data).unwrap();
                }
                if c.write_all(&out).is_err() {
                    return;
                }
            }
        }
    }
}

impl Drop for HungServer {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
    }
}

/// What one application GET came back with.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Outcome {
    Data,
    Disconnected,
    /// No answer within the test's 3 s bound (the old code).
    Timeout,
    Wrong,
}

/// One GET for a fresh id over `s` (reconnecting when needed).
fn timed_get(s: &mut Option<UnixStream>, app: &std::path::Path, n: u32) -> (Duration, Outcome) {
    let t0 = Instant::now();
    if s.is_none() {
        let c = UnixStream::connect(app).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        *s = Some(c);
    }
    let c = s.as_mut().unwrap();
    let id = format!("id-{n}");
    if c.write_all(&request(n, 1, id.as_bytes())).is_err() {
        *s = None;
        return (t0.elapsed(), Outcome::Timeout);
    }
    let out = match read_msg(c) {
        Ok((uid, op, p)) if uid == n && op == 1 => {
            if p == [2] {
                Outcome::Disconnected
            } else if p == format!("data of {id}").as_bytes() {
                Outcome::Data
            } else {
                Outcome::Wrong
            }
        }
        Ok(_) => Outcome::Wrong,
        Err(_) => {
            *s = None;
            Outcome::Timeout
        }
    };
    (t0.elapsed(), out)
}

/// Finding 3: a server that accepts and never answers. Every application
/// GET is answered within -deadline (0x02), at once once the server is
/// marked down; when the server answers again requests are forwarded
/// within about a second; late answers are discarded, never delivered to
/// another request.
#[test]
fn hung_server_costs_a_deadline_then_nothing() {
    let dir = TempDir::new("atk-hung");
    let srv = HungServer::start(&dir.path("srv"));
    srv.answering.store(true, Relaxed);
    let mut client = dc_client_logged(&dir, &dir.addr("srv"), &[]);
    let app = dir.path("client");
    let mut s = None;
    let mut n = 0u32;
    let mut get = |s: &mut Option<UnixStream>| {
        n += 1;
        timed_get(s, &app, n)
    };
    // Live: answers come through.
    for _ in 0..50 {
        assert_eq!(get(&mut s).1, Outcome::Data);
    }
    // Hung for 3 s.
    srv.answering.store(false, Relaxed);
    let t0 = Instant::now();
    let mut all = Vec::new();
    let mut after_down = Vec::new();
    let mut outcomes = [0u32; 4];
    while t0.elapsed() < Duration::from_secs(3) {
        let (d, o) = get(&mut s);
        outcomes[o as usize] += 1;
        all.push(d);
        if t0.elapsed() > Duration::from_millis(600) {
            after_down.push(d);
        }
    }
    all.sort();
    after_down.sort();
    let (p99, med) = (percentile(&all, 0.99), percentile(&after_down, 0.5));
    let max = all.last().copied().unwrap_or_default();
    // Answering again: time until a GET gets its data.
    srv.answering.store(true, Relaxed);
    let t1 = Instant::now();
    let mut recovered = None;
    while t1.elapsed() < Duration::from_secs(5) {
        let (_, o) = get(&mut s);
        outcomes[o as usize] += 1;
        if o == Outcome::Data {
            recovered = Some(t1.elapsed());
            break;
        }
    }
    for _ in 0..200 {
        let (_, o) = get(&mut s);
        outcomes[o as usize] += 1;
        assert_ne!(o, Outcome::Timeout);
    }
    println!(
        "hung server: {} GETs while hung, p99 {p99:?}, max {max:?}, median once down {med:?} ({} GETs); \
         forwarded again after {recovered:?}; outcomes data/0x02/timeout/wrong = {outcomes:?}",
        all.len(),
        after_down.len()
    );
    assert_eq!(outcomes[Outcome::Wrong as usize], 0, "wrong answers");
    assert!(p99 <= Duration::from_millis(300), "p99 {p99:?}");
    // Even the requests waiting when it hung: far from the library's 2 s.
    assert!(max < Duration::from_secs(1), "slowest {max:?}");
    assert!(med < Duration::from_millis(1), "median once down {med:?}");
    let rec = recovered.expect("never forwarded again");
    assert!(rec < Duration::from_millis(2500), "recovered after {rec:?}");
    assert!(client.alive());
    let log = client_log(&dir);
    assert!(log.contains("(-deadline)"), "{log}");
    assert!(log.contains("answers again"), "{log}");
}

/// A slow but live server (every answer 100 ms late, well within the
/// deadline) is never marked down.
#[test]
fn slow_live_server_is_never_marked_down() {
    let dir = TempDir::new("atk-slow");
    let path = dir.path("srv");
    let l = UnixListener::bind(&path).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        c.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let mut dec = Decoder::new(Direction::Requests);
        let mut inbuf = Vec::new();
        let mut b = vec![0u8; 65536];
        while !st.load(Relaxed) {
            if let Ok(n) = c.read(&mut b) {
                if n == 0 {
                    return;
                }
                inbuf.extend_from_slice(&b[..n]);
            }
            let mut got = Vec::new();
            let used = dec
                .drain(&inbuf, |m| got.push((m.uid, m.payload.to_vec())))
                .unwrap();
            inbuf.drain(..used);
            for (uid, id) in got {
                sleep(Duration::from_millis(100));
                let mut data = b"data of ".to_vec();
                data.extend_from_slice(&id);
                let mut out = Vec::new();
                proto::encode_message(&mut out, true, uid, Cmd::Get, &data).unwrap();
                let _ = c.write_all(&out);
            }
        }
    });
    let mut client = dc_client_logged(&dir, &dir.addr("srv"), &[]);
    let app = dir.path("client");
    let mut s = None;
    for n in 1..=15 {
        let (d, o) = timed_get(&mut s, &app, n);
        assert_eq!(o, Outcome::Data, "GET {n} after {d:?}");
    }
    stop.store(true, Relaxed);
    assert!(client.alive());
    let log = client_log(&dir);
    assert!(!log.contains("(-deadline)"), "{log}");
}
