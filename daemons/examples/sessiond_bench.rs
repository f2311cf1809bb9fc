//! Latency benchmark of `dc_server -sessiond` (not a test).
//!
//! `cargo build --release && cargo run --release --example sessiond_bench [gets] [clients]`
//!
//! Starts `target/release/dc_server -sessiond 127.0.0.1:<free port>` with a
//! UNIX distcache listener, stores 1000 stunnel-sized sessions (150 bytes)
//! through sessiond NEWs, then measures `gets` (default 20000) GET round
//! trips the way stunnel makes them: a fresh UDP socket per request, timed
//! from `send_to` to the answer's arrival (90% hits, 10% misses). It does
//! that twice: with the distcache side idle, and while
//! `target/release/dc_test -clients <clients> -persistent` (default 8) loads
//! the same dc_server. Reports p50/p99/p99.9/max in microseconds, answers
//! slower than stunnel's ~8 ms wait, and the distcache load in requests/s
//! (from dc_server's status lines).
//!
//! As a baseline, every GET to dc_server is followed by one to a trivial
//! UDP echo process (this program with `--echo <port>`: blocking
//! `recv_from`, answer ERR), so both see the same host conditions: what
//! the echo process shows is the floor set by the host (scheduling, other
//! load), and the difference is dc_server's own.
//!
//! On a small shared machine the load generator competes with dc_server
//! for the CPU; `DCRS_BENCH_LOAD_NICE=N` runs dc_test under `nice -n N`
//! (dc_server still answers all its requests, as if the distcache clients
//! ran elsewhere). Run the whole benchmark under `nice -n -10` (as root) to
//! see how much of the tail is other processes on the host.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SESSIONS: u32 = 1000;

fn bin(name: &str) -> PathBuf {
    // The workspace's target/ is one folder above this crate's.
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/release")
        .join(name);
    assert!(p.exists(), "build first: cargo build --release ({p:?})");
    p
}

fn key(i: u32) -> [u8; 32] {
    let mut k = [0u8; 32];
    let mut x = u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for c in k.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes());
    }
    k
}

fn dgram(t: u8, timeout: u16, k: &[u8; 32], value: &[u8]) -> Vec<u8> {
    let mut d = vec![1, t];
    d.extend_from_slice(&timeout.to_be_bytes());
    d.extend_from_slice(k);
    d.extend_from_slice(value);
    d
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The baseline: answer every datagram with a 36-byte ERR, blocking.
fn echo(port: u16) {
    let s = UdpSocket::bind(("127.0.0.1", port)).expect("echo bind");
    let mut buf = [0u8; 2048];
    loop {
        let Ok((n, from)) = s.recv_from(&mut buf) else {
            continue;
        };
        if n >= 36 {
            buf[1] = 0x80;
            let _ = s.send_to(&buf[..36], from);
        }
    }
}

/// One GET round trip in microseconds, or None when the answer was wrong
/// or missing (a 100 ms wait, far beyond stunnel's). `expect` is the
/// answer type, or None for any.
fn round_trip(to: SocketAddr, k: &[u8; 32], expect: Option<u8>) -> Option<u32> {
    let mut buf = [0u8; 1024];
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let req = dgram(1, 0, k, &[]);
    let t0 = Instant::now();
    s.send_to(&req, to).unwrap();
    let len = s.recv(&mut buf).ok()?;
    let dt = t0.elapsed();
    let ok = len >= 36 && buf[4..36] == *k && expect.map_or(true, |t| buf[1] == t);
    ok.then(|| dt.as_micros().min(u128::from(u32::MAX)) as u32)
}

struct Sample {
    lat: Vec<u32>,
    lost: usize,
}

/// `n` GETs to dc_server (90% hits), each followed by one to the echo
/// baseline.
fn measure(to: SocketAddr, baseline: SocketAddr, n: usize) -> (Sample, Sample) {
    let mut dc = Sample {
        lat: Vec::with_capacity(n),
        lost: 0,
    };
    let mut base = Sample {
        lat: Vec::with_capacity(n),
        lost: 0,
    };
    for i in 0..n {
        let idx = i as u32 % (SESSIONS * 10 / 9);
        let hit = idx < SESSIONS;
        let k = if hit { key(idx) } else { key(1_000_000 + idx) };
        match round_trip(to, &k, Some(if hit { 0x81 } else { 0x80 })) {
            Some(us) => dc.lat.push(us),
            None => dc.lost += 1,
        }
        match round_trip(baseline, &k, None) {
            Some(us) => base.lat.push(us),
            None => base.lost += 1,
        }
    }
    (dc, base)
}

fn report(label: &str, sample: Sample, load: Option<f64>) {
    let Sample { mut lat, lost } = sample;
    lat.sort_unstable();
    let p = |q: f64| lat[((lat.len() - 1) as f64 * q).round() as usize];
    let slow = lat.iter().filter(|&&us| us >= 8000).count();
    let over1ms = lat.iter().filter(|&&us| us >= 1000).count();
    println!(
        "{label:<40} n={} p50={}us p99={}us p99.9={}us max={}us >=1ms={} >=8ms={} lost={}{}",
        lat.len(),
        p(0.50),
        p(0.99),
        p(0.999),
        lat[lat.len() - 1],
        over1ms,
        slow,
        lost,
        load.map(|r| format!(" distcache load={r:.0} req/s"))
            .unwrap_or_default()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--echo") {
        echo(args[1].parse().expect("port"));
        return;
    }
    let gets: usize = args.first().map_or(20_000, |a| a.parse().expect("gets"));
    let clients: usize = args.get(1).map_or(8, |a| a.parse().expect("clients"));

    let dir = std::env::temp_dir().join(format!("dcrs-sessiond-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("dc");
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let udp: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let listen = format!("UNIX:{}", sock.display());
    let mut server = Kill(
        Command::new(bin("dc_server"))
            .args(["-listen", &listen, "-sessions", "100000"])
            .args(["-sessiond", &udp.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dc_server"),
    );
    // Follow the status lines: distcache requests answered so far.
    let dc_ops = Arc::new(AtomicU64::new(0));
    let out = server.0.stdout.take().unwrap();
    let ops = dc_ops.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if let Some(v) = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("ops="))
                .and_then(|v| v.parse().ok())
            {
                ops.store(v, Ordering::Relaxed);
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while UnixStream::connect(&sock).is_err() {
        assert!(Instant::now() < deadline, "dc_server did not start");
        std::thread::sleep(Duration::from_millis(10));
    }

    let echo_port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let baseline: SocketAddr = format!("127.0.0.1:{echo_port}").parse().unwrap();
    let _echo = Kill(
        Command::new(std::env::current_exe().unwrap())
            .args(["--echo", &echo_port.to_string()])
            .spawn()
            .expect("echo baseline"),
    );
    std::thread::sleep(Duration::from_millis(200));

    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let value: Vec<u8> = (0..150u32).map(|i| i as u8).collect();
    for i in 0..SESSIONS {
        s.send_to(&dgram(0, 3600, &key(i), &value), udp).unwrap();
        if i % 64 == 63 {
            // Let the server keep up (UDP has no flow control).
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    // Warm up.
    let _ = measure(udp, baseline, 1000);

    let (dc, base) = measure(udp, baseline, gets);
    report("dc_server, distcache side idle", dc, None);
    report("  baseline echo, same moments", base, None);

    let nice = std::env::var("DCRS_BENCH_LOAD_NICE").ok();
    let mut cmd = match &nice {
        Some(n) => {
            let mut c = Command::new("nice");
            c.args(["-n", n]).arg(bin("dc_test"));
            c
        }
        None => Command::new(bin("dc_test")),
    };
    let mut load = Kill(
        cmd.args(["-connect", &listen, "-persistent", "-clients"])
            .arg(clients.to_string())
            .args(["-ops", "1000000000", "-sessions", "50", "-datamax", "1000"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dc_test"),
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        load.0.try_wait().unwrap().is_none(),
        "dc_test stopped early"
    );
    let (ops0, t0) = (dc_ops.load(Ordering::Relaxed), Instant::now());
    let (dc, base) = measure(udp, baseline, gets);
    std::thread::sleep(Duration::from_millis(1100));
    let rate = (dc_ops.load(Ordering::Relaxed) - ops0) as f64 / t0.elapsed().as_secs_f64();
    report(
        &match &nice {
            Some(n) => format!("dc_server, dc_test -clients {clients} (nice {n})"),
            None => format!("dc_server, dc_test -clients {clients} load"),
        },
        dc,
        Some(rate),
    );
    report("  baseline echo, same moments", base, None);
    drop(load);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
