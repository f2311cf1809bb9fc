//! Benchmark of dc_server's snapshot (not a test).
//!
//! `cargo run --release -p distcache-tools --example snapshot_bench [sessions] [dir]`
//!
//! Fills a cache with `sessions` (default 1 000 000) sessions (ids 32
//! bytes, data 100..300 bytes, like cache_bench), writes the snapshot
//! file into `dir` (default the temp dir; use a tmpfs such as /dev/shm to
//! measure what dc_server does on /run), loads it back, and reports both
//! times and the file size.

use std::time::Instant;

use distcache_rs::server::cache::Cache;
use distcache_rs::server::SessionCache;
use distcache_tools::snapshot::{self, Clock};

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir = args
        .next()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let path = dir.join(format!("snapshot-bench-{}", std::process::id()));
    let mut cache = Cache::new(n);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..n {
        let mut id = [0u8; 32];
        for c in id.chunks_mut(8) {
            c.copy_from_slice(&rnd().to_le_bytes());
        }
        let data = vec![(rnd() & 0xff) as u8; 100 + (rnd() % 201) as usize];
        cache.add(0, 3_600_000, &id, &data);
    }
    let clock = Clock::at(0);
    for round in 0..3 {
        let t0 = Instant::now();
        let w = snapshot::write_file(&cache, clock, &path).expect("write");
        let wt = t0.elapsed();
        let mut empty = Cache::new(n);
        empty.set_max_timeout(cache.max_timeout());
        let t1 = Instant::now();
        let (mut loaded, out) = snapshot::load_file(&path, empty, clock);
        let lt = t1.elapsed();
        assert_eq!(loaded.num_items(0), cache.num_items(0), "{out:?}");
        println!(
            "round {round}: {} sessions, file {:.1} MB: write {:.0} ms, load {:.0} ms",
            w.sessions,
            w.bytes as f64 / 1e6,
            wt.as_secs_f64() * 1e3,
            lt.as_secs_f64() * 1e3
        );
    }
    let _ = std::fs::remove_file(&path);
}
