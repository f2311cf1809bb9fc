//! Benchmark of dc_server over the wire (not a test).
//!
//! `cargo build --release && cargo run --release --example server_bench [clients] [sizes...]`
//!
//! For each size N (default 512, 60000, 1000000) it starts
//! `target/release/dc_server -sessions N` on a temporary UNIX socket, fills
//! it with N sessions (pipelined ADDs; ids 32 bytes, data 100..300 bytes),
//! then runs `clients` threads (default 4), each with one persistent
//! connection doing synchronous requests (80% GET hit, 10% GET miss, 10%
//! ADD of a new session, which evicts), for 3 seconds. Reports requests/s
//! and p50/p99 round-trip latency.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn frame(out: &mut Vec<u8>, uid: u32, op: u8, payload: &[u8]) {
    out.extend_from_slice(&[0x00, 0x11, 0x00, 0x00, 0x00]);
    out.extend_from_slice(&uid.to_be_bytes());
    out.extend_from_slice(&[0, op, 1]);
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(payload);
}

fn add(out: &mut Vec<u8>, uid: u32, id: &[u8], data: &[u8]) {
    let mut p = 3_600_000u32.to_be_bytes().to_vec();
    p.extend_from_slice(&(id.len() as u32).to_be_bytes());
    p.extend_from_slice(id);
    p.extend_from_slice(data);
    frame(out, uid, 0, &p);
}

/// Read one single-frame response, returning its payload length.
fn response(s: &mut UnixStream) -> usize {
    let mut h = [0u8; 14];
    s.read_exact(&mut h).expect("response header");
    let n = u16::from_be_bytes([h[12], h[13]]) as usize;
    let mut p = vec![0u8; n];
    s.read_exact(&mut p).expect("response data");
    n
}

fn id_of(k: u64) -> [u8; 32] {
    let mut id = [0u8; 32];
    let mut x = k.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for c in id.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes());
    }
    id
}

fn pct(v: &mut [u32], p: f64) -> u32 {
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p) as usize]
}

fn bench(bin: &PathBuf, n: u64, clients: usize) {
    let sock = std::env::temp_dir().join(format!("dcrs-bench-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&sock);
    let mut child = Command::new(bin)
        .args(["-listen", &format!("UNIX:{}", sock.display())])
        .args(["-sessions", &n.to_string(), "-daemon"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start dc_server");
    assert!(child.wait().unwrap().success(), "dc_server failed to start");
    let pid_guess = sock.clone();
    let data = vec![0x42u8; 300];
    let mut c = UnixStream::connect(&sock).expect("connect");
    let t0 = Instant::now();
    let mut k = 0u64;
    while k < n {
        let batch = (n - k).min(256);
        let mut out = Vec::new();
        for j in 0..batch {
            let i = k + j;
            add(
                &mut out,
                i as u32,
                &id_of(i),
                &data[..100 + (i as usize % 201)],
            );
        }
        c.write_all(&out).unwrap();
        for _ in 0..batch {
            response(&mut c);
        }
        k += batch;
    }
    let fill = t0.elapsed();
    let stop_at = Instant::now() + Duration::from_secs(3);
    let sock = Arc::new(sock);
    let handles: Vec<_> = (0..clients)
        .map(|t| {
            let sock = Arc::clone(&sock);
            let data = data.clone();
            std::thread::spawn(move || {
                let mut s = UnixStream::connect(&*sock).unwrap();
                let mut lat = Vec::new();
                let mut x = 0x1234_5678u64 + t as u64;
                let mut fresh = 1u64 << 40 | (t as u64) << 32;
                let mut out = Vec::new();
                while Instant::now() < stop_at {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    out.clear();
                    match x % 10 {
                        0..=7 => frame(&mut out, 1, 1, &id_of(x % n)),
                        8 => frame(&mut out, 2, 1, &id_of(u64::MAX - x)),
                        _ => {
                            fresh += 1;
                            add(&mut out, 3, &id_of(fresh), &data[..150]);
                        }
                    }
                    let s0 = Instant::now();
                    s.write_all(&out).unwrap();
                    response(&mut s);
                    lat.push(s0.elapsed().as_nanos() as u32);
                }
                lat
            })
        })
        .collect();
    let mut lat: Vec<u32> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let total = lat.len();
    println!(
        "N={n:>8}: fill {:.0} adds/s (pipelined); {clients} clients: {:.0} requests/s, p50 {:.1} us, p99 {:.1} us",
        n as f64 / fill.as_secs_f64(),
        total as f64 / 3.0,
        pct(&mut lat, 0.5) as f64 / 1000.0,
        pct(&mut lat, 0.99) as f64 / 1000.0,
    );
    // Stop the daemon: find it through the socket's peer credentials.
    let pid = distcache_tools::tools::sys::peer_pid(std::os::fd::AsRawFd::as_raw_fd(&c));
    if let Some(pid) = pid {
        // SAFETY: kill() takes plain integers; the pid is the daemon we started.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let t0 = Instant::now();
    while pid_guess.exists() && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let clients: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(4);
    let mut sizes: Vec<u64> = args.filter_map(|a| a.parse().ok()).collect();
    if sizes.is_empty() {
        sizes = vec![512, 60_000, 1_000_000];
    }
    let bin = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("dc_server");
    assert!(bin.exists(), "build dc_server first: {}", bin.display());
    for n in sizes {
        bench(&bin, n, clients);
    }
}
