//! Benchmark of the built-in session cache (not a test).
//!
//! `cargo run --release --example cache_bench [sizes...]`
//!
//! For each size N (default 512, 60000, 1000000): fill a cache of capacity
//! N with N sessions (ids 32 random bytes, data 100..300 bytes), report the
//! memory used beyond the id and data bytes (exact, from a counting
//! allocator; plus the resident-set growth, which includes malloc's own
//! per-allocation overhead), then run on the full cache a read-mostly mix
//! (80% GET hit, 10% GET miss, 10% REMOVE + re-ADD) and a stream of ADDs
//! of new sessions, each evicting the oldest stored session; report
//! ops/s and p50/p99/p99.9 latency (per operation, timer included).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use distcache_rs::server::cache::Cache;
use distcache_rs::server::SessionCache;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator, only counting bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn rss_bytes() -> usize {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = s
        .split_whitespace()
        .nth(1)
        .and_then(|x| x.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn id(&mut self) -> [u8; 32] {
        let mut id = [0u8; 32];
        for c in id.chunks_mut(8) {
            c.copy_from_slice(&self.next().to_le_bytes());
        }
        id
    }
}

fn pct(v: &mut [u32], p: f64) -> u32 {
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p) as usize]
}

fn bench(n: usize) {
    let mut rng = Rng(0x2545_F491_4F6C_DD1D ^ n as u64);
    let data = vec![0xABu8; 300];
    let ids: Vec<[u8; 32]> = (0..n).map(|_| rng.id()).collect();
    let dlen = |i: usize| 100 + (i * 7919) % 201;

    let base_live = LIVE.load(Ordering::Relaxed);
    let base_rss = rss_bytes();
    let mut cache = Cache::new(n);
    let mut now = 1_000u64;
    let t0 = Instant::now();
    let mut payload = 0usize;
    for (i, id) in ids.iter().enumerate() {
        // Timeouts spread over an hour so eviction order is non-trivial.
        let timeout = 600_000 + rng.next() % 3_000_000;
        assert!(cache.add(now, timeout, id, &data[..dlen(i)]));
        payload += 32 + dlen(i);
    }
    let fill = t0.elapsed();
    assert_eq!(cache.num_items(now), n);
    let used = (LIVE.load(Ordering::Relaxed) - base_live) as usize;
    let rss = rss_bytes().saturating_sub(base_rss);
    println!(
        "N={n:>8}: fill {:.0} adds/s; heap beyond id+data: {:.1} B/session \
         (index structures {:.1} B/session); RSS beyond id+data: {:.1} B/session",
        n as f64 / fill.as_secs_f64(),
        (used - payload) as f64 / n as f64,
        cache.structure_bytes() as f64 / n as f64,
        rss.saturating_sub(payload) as f64 / n as f64,
    );

    let ops = 2_000_000usize;
    let mut sink = 0usize;
    // Workload A: 80% GET hit, 10% GET miss, 10% REMOVE + re-ADD.
    let mut lat = Vec::with_capacity(ops);
    let t0 = Instant::now();
    for k in 0..ops {
        if k % 1024 == 0 {
            now += 1;
        }
        let r = rng.next();
        let i = ((r >> 8) % n as u64) as usize;
        let miss = rng.id();
        let s = Instant::now();
        match r % 10 {
            0..=7 => assert!(cache.get_with(now, &ids[i], &mut |d| sink += d.len())),
            8 => assert!(!cache.get_with(now, &miss, &mut |d| sink += d.len())),
            _ => {
                assert!(cache.remove(now, &ids[i]));
                assert!(cache.add(now, 600_000 + r % 3_000_000, &ids[i], &data[..dlen(i)]));
            }
        }
        lat.push(s.elapsed().as_nanos().min(u32::MAX as u128) as u32);
    }
    let el = t0.elapsed();
    println!(
        "           read-mostly: {:.2} Mops/s, p50 {} ns, p99 {} ns, p99.9 {} ns",
        ops as f64 / el.as_secs_f64() / 1e6,
        pct(&mut lat, 0.50),
        pct(&mut lat, 0.99),
        pct(&mut lat, 0.999),
    );
    // Workload B: ADD of new sessions into the full cache, each evicting
    // the oldest stored session.
    lat.clear();
    let fresh: Vec<[u8; 32]> = (0..ops / 4).map(|_| rng.id()).collect();
    let t0 = Instant::now();
    for (k, id) in fresh.iter().enumerate() {
        let s = Instant::now();
        assert!(cache.add(now, 600_000 + rng.next() % 3_000_000, id, &data[..dlen(k)]));
        lat.push(s.elapsed().as_nanos().min(u32::MAX as u128) as u32);
    }
    let el = t0.elapsed();
    assert_eq!(cache.num_items(now), n);
    println!(
        "           add+evict:   {:.2} Mops/s, p50 {} ns, p99 {} ns, p99.9 {} ns",
        fresh.len() as f64 / el.as_secs_f64() / 1e6,
        pct(&mut lat, 0.50),
        pct(&mut lat, 0.99),
        pct(&mut lat, 0.999),
    );
    std::hint::black_box(sink);
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    if sizes.is_empty() {
        // One process per size, so each RSS figure starts from a clean heap.
        let me = std::env::current_exe().expect("own path");
        for n in [512usize, 60_000, 1_000_000] {
            let st = std::process::Command::new(&me)
                .arg(n.to_string())
                .status()
                .expect("run");
            assert!(st.success());
        }
        return;
    }
    for n in sizes {
        bench(n);
    }
}
