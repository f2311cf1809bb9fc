//! dc_test: correctness and load tester.
//!
//! Generates random sessions (ids of 10..63 bytes, data of -datamin..
//! -datamax bytes, timeouts of -timeout ± -timevar seconds), then runs
//! random ADD/GET/REMOVE operations, predicting each answer from what it
//! has added and removed, and stops with an error on the first wrong one.
//!
//! Beyond the original: -clients N runs N workers in parallel, each with
//! its own sessions (so predictions stay exact), and a final report gives
//! throughput and latency percentiles, ending with one machine-readable
//! line: `dc_test ops=... ops_per_s=... p50_us=... p99_us=... p999_us=...
//! failures=F lost=L errors=N`.
//!
//! `-failures ok` keeps going through failed calls, to measure a deadline,
//! a fail-over or a restart. A failed call is one that got no answer: a
//! connection that could not be made or broke, a timeout, an empty answer
//! or the answer 0x02 (DISCONNECTED) from a proxy. Failed calls are
//! counted (`failures=`) and timed like the others. A failed ADD or REMOVE
//! may still have run on the server, so that session's state is unknown
//! until an answer received `SETTLE` after the failure tells (meanwhile
//! any answer is accepted, but a hit must still carry the session's own
//! data). And once any call of the run has failed, the server may have
//! restarted: a session found missing where the model expected it is
//! counted as lost (`lost=`), not as an error. Everything else is a wrong
//! answer (`errors=`) and stops the run as without the flag: another
//! session's data, a hit or a refusal for a session that cannot be
//! stored, a malformed answer.
//!
//! Exit status: 0 when every answer was right (with `-failures ok`, even
//! if calls failed); 1 on a wrong answer, on a failed call without
//! `-failures ok`, on bad flags, or when the test cannot run.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use distcache_rs::client::{
    AddOutcome, Client, Config, Error, Session as Data, FLAG_PERSISTENT, FLAG_PERSISTENT_LATE,
};
use distcache_rs::proto::{status, DC_MIN_TIMEOUT_MS};
use distcache_tools::tlsconf::{self, DaemonAddress};
use distcache_tools::tools::{Cli, Flag};

const CLI: Cli = Cli {
    tool: "dc_test",
    synopsis: "-connect <address> [options]",
    flags: &[
        Flag::value(
            &["connect"],
            "address",
            "the dc_server or dc_client to test (required)",
        ),
        Flag::value(
            &["progress"],
            "num",
            "print a line every num operations (default 0: silent)",
        ),
        Flag::value(
            &["sessions"],
            "num",
            "sample sessions per client (default 10)",
        ),
        Flag::value(&["datamin"], "num", "smallest session data (default 50)"),
        Flag::value(&["datamax"], "num", "largest session data (default 2100)"),
        Flag::value(&["timeout"], "secs", "mean session timeout (default 60)"),
        Flag::value(
            &["timevar"],
            "secs",
            "spread of session timeouts (default 5)",
        ),
        Flag::value(
            &["ops"],
            "num",
            "operations in all (default 10*sessions^2 per client, at most 1000000)",
        ),
        Flag::switch(
            &["persistent"],
            "one connection per client instead of one per operation",
        ),
        Flag::value(
            &["clients"],
            "num",
            "parallel workers, each with its own sessions (default 1)",
        ),
        Flag::value(
            &["failures"],
            "stop|ok",
            "on a failed call (no answer, 0x02): stop with an error (default), or count it and go on",
        ),
        Flag::value(
            &["seed"],
            "num",
            "seed of the random generator (default: from the clock)",
        ),
    ],
    extra: tlsconf::CONNECT_FLAGS,
};

/// Cap of the default operation count (10 * sessions^2 grows fast).
const DEFAULT_OPS_CAP: u64 = 1_000_000;
/// A session added this close to its expiry may or may not still be there.
const EXPIRY_SLACK_MS: u64 = 250;
/// With -failures ok: how long after a failed ADD or REMOVE answers about
/// that session are not taken as its state (the request may still run on
/// the server: dc_client's -stall, the time it lets a silent server
/// keep its requests, defaults to 10 s).
const SETTLE: Duration = Duration::from_secs(10);

/// xorshift64*: small, fast, good enough for test data.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // Never zero; mix the seed so nearby seeds diverge.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in lo..=hi.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

#[derive(Clone, Debug)]
struct Params {
    /// The address the library connects to (a `TLS:` address becomes its
    /// `IP:` form, connected through `tls`).
    target: String,
    /// `-connect TLS:...`: the client side of the link.
    tls: Option<distcache_tools::tls::TlsClient>,
    progress: u64,
    sessions: usize,
    datamin: usize,
    datamax: usize,
    timeout_s: u64,
    timevar_s: u64,
    ops: u64,
    persistent: bool,
    clients: usize,
    seed: u64,
    /// -failures ok: count failed calls and go on.
    failures_ok: bool,
}

/// One sample session. The data is regenerated from `data_seed` when
/// needed, so 100 000 sessions take little memory.
struct Session {
    id: Vec<u8>,
    data_len: usize,
    data_seed: u64,
    timeout_ms: u64,
    /// When the last successful ADD was sent, if the session should be
    /// stored (while `unknown`: the earliest it may have been added).
    added_at: Option<Instant>,
    /// When an ADD or REMOVE of it last failed, while its state is unknown
    /// (-failures ok).
    unknown: Option<Instant>,
}

impl Session {
    fn data(&self) -> Vec<u8> {
        let mut d = vec![0u8; self.data_len];
        Rng::new(self.data_seed).fill(&mut d);
        d
    }
}

/// Shortest and longest sample session id (the original's range).
const ID_MIN: usize = 10;
const ID_MAX: usize = 63;
/// Bytes of the run salt at the front of every id.
const ID_SALT: usize = 5;
/// Most sessions per worker: the session index is 3 bytes of the id.
const MAX_SESSIONS: u64 = 10_000_000;
/// Most workers: the worker number is 2 bytes of the id.
const MAX_CLIENTS: u64 = 4096;

/// The id of session `index` of worker `worker` in the run with `salt`,
/// `len` bytes long (ID_MIN..=ID_MAX):
///
/// | bytes  | content                                  |
/// |--------|------------------------------------------|
/// | 0..5   | run salt (low 40 bits of `salt`)         |
/// | 5..7   | worker number, little-endian u16         |
/// | 7..10  | session index, little-endian 24 bits     |
/// | 10..   | random                                   |
///
/// Two sessions of one run differ in (worker, index), so their ids differ
/// in bytes 5..10 whatever their lengths and random tails: distinct by
/// construction, not by chance. That holds for every count the flags
/// allow: -clients is at most 4096 < 2^16 and -sessions at most
/// 10 000 000 < 2^24, so neither field wraps. (The earlier layout put the
/// salt and worker in the first 8 bytes and left a 10-byte id 2 random
/// bytes: with -sessions 1000 two ids of a worker were equal in about 1 %
/// of runs, and the worker's model of the server broke.) The salt keeps
/// the key spaces of different runs against one server apart: two runs
/// share it with probability 2^-40.
fn session_id(salt: u64, worker: usize, index: usize, len: usize, rng: &mut Rng) -> Vec<u8> {
    debug_assert!((ID_MIN..=ID_MAX).contains(&len));
    debug_assert!((worker as u64) < MAX_CLIENTS && (index as u64) < MAX_SESSIONS);
    let mut id = vec![0u8; len];
    rng.fill(&mut id[ID_MIN..]);
    id[..ID_SALT].copy_from_slice(&salt.to_le_bytes()[..ID_SALT]);
    id[5..7].copy_from_slice(&(worker as u16).to_le_bytes());
    id[7..10].copy_from_slice(&(index as u32).to_le_bytes()[..3]);
    id
}

fn make_sessions(p: &Params, worker: usize, salt: u64, rng: &mut Rng) -> Vec<Session> {
    let floor = DC_MIN_TIMEOUT_MS;
    (0..p.sessions)
        .map(|index| {
            let len = rng.range(ID_MIN as u64, ID_MAX as u64) as usize;
            let id = session_id(salt, worker, index, len, rng);
            let lo = (p.timeout_s.saturating_sub(p.timevar_s) * 1000).max(1000);
            let hi = ((p.timeout_s + p.timevar_s) * 1000).max(lo);
            Session {
                id,
                data_len: rng.range(p.datamin as u64, p.datamax as u64) as usize,
                data_seed: rng.next(),
                timeout_ms: rng.range(lo, hi).max(floor),
                added_at: None,
                unknown: None,
            }
        })
        .collect()
}

/// What a worker found.
struct Outcome {
    latencies_us: Vec<u32>,
    error: Option<String>,
    /// Failed calls (-failures ok).
    failures: u64,
    /// Sessions found missing after a failure (-failures ok).
    lost: u64,
}

struct Shared {
    stop: AtomicBool,
    done: AtomicU64,
    start: Instant,
    /// A call of the run has failed (-failures ok): the server may have
    /// lost its sessions since.
    failed: AtomicBool,
}

/// A call that got no answer (as opposed to a wrong one).
fn is_failure(e: &Error) -> bool {
    matches!(
        e,
        Error::Connect(_)
            | Error::Send(_)
            | Error::Recv(_)
            | Error::Timeout(_)
            | Error::Closed
            | Error::EmptyAnswer
            | Error::Disconnected
    )
}

/// What one answer says the server holds: `Some(true)` stored,
/// `Some(false)` not stored.
type Held = Option<bool>;

fn describe_id(id: &[u8]) -> String {
    let hex: String = id.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("id {hex}... ({} bytes)", id.len())
}

/// The answer to one call.
enum Answer {
    Added(AddOutcome),
    Got(Option<Data>),
    Removed(bool),
}

impl Answer {
    /// Whether the session was stored before the call, by this answer
    /// (None: the answer cannot tell).
    fn held_before(&self, data_len: usize) -> Held {
        match self {
            Answer::Added(AddOutcome::Stored) => Some(false),
            Answer::Added(_) => Some(true),
            Answer::Got(Some(_)) => Some(true),
            // Data under 5 bytes reads as a miss on the wire.
            Answer::Got(None) if data_len < 5 => None,
            Answer::Got(None) => Some(false),
            Answer::Removed(r) => Some(*r),
        }
    }
    /// Whether it is stored after the call (None: as before).
    fn held_after(&self, data_len: usize) -> Held {
        match self {
            Answer::Added(_) => Some(true),
            Answer::Got(_) => self.held_before(data_len),
            Answer::Removed(_) => Some(false),
        }
    }
    fn describe(&self) -> String {
        match self {
            Answer::Added(o) => format!("{o:?}"),
            Answer::Got(g) => (if g.is_some() { "a hit" } else { "a miss" }).into(),
            Answer::Removed(r) => (if *r { "removed" } else { "not found" }).into(),
        }
    }
}

/// What the model expected, for a message.
fn expected(op: u64, present: bool) -> &'static str {
    match (op, present) {
        (0, true) => "refusal (session already stored)",
        (0, false) => "success",
        (1, true) => "a hit",
        (1, false) => "a miss",
        (_, true) => "removed",
        (_, false) => "not found",
    }
}

/// Check `a`, the answer to `op` on `s` sent at `t0`, against the model
/// and update it. `lossy`: a call of the run has failed, so the server
/// may have lost sessions. Returns whether a session was found lost, or
/// the wrong answer.
fn judge(s: &mut Session, op: u64, a: &Answer, t0: Instant, lossy: bool) -> Result<bool, String> {
    // Whatever the model: a hit carries this session's own data, and the
    // only refusal is "already stored".
    match a {
        Answer::Got(Some(got)) => {
            let data = s.data();
            if got[..] != data[..] {
                return Err(format!(
                    "expected the {} bytes added, got {} different bytes",
                    data.len(),
                    got.len()
                ));
            }
        }
        Answer::Added(AddOutcome::Refused(st)) if *st != status::ADD_MATCHING_SESSION => {
            return Err(format!("expected success or refusal 101, got refusal {st}"));
        }
        _ => {}
    }
    let before = a.held_before(s.data_len);
    let after = a.held_after(s.data_len);
    let mut lost = false;
    if let Some(failed_at) = s.unknown {
        // A failed ADD or REMOVE may still land: any answer goes, and only
        // one received SETTLE after the failure tells the state.
        if t0.duration_since(failed_at) < SETTLE {
            return Ok(false);
        }
        s.unknown = None;
    } else {
        let present = s.added_at.is_some();
        // A stored session close to (or past) its expiry may be gone.
        let uncertain = s.added_at.is_some_and(|at| {
            t0.duration_since(at) + Duration::from_millis(EXPIRY_SLACK_MS)
                >= Duration::from_millis(s.timeout_ms)
        });
        match before {
            Some(b) if b == present => {}
            None => {}
            Some(false) if uncertain => {}
            Some(false) if lossy => lost = true,
            Some(_) => {
                return Err(format!(
                    "expected {}, got {}",
                    expected(op, present),
                    a.describe()
                ))
            }
        }
    }
    match after {
        Some(true) if matches!(a, Answer::Added(AddOutcome::Stored)) => s.added_at = Some(t0),
        // Stored already: since when the model knows (or, after an unknown
        // spell, the earliest it may have been added).
        Some(true) => s.added_at = s.added_at.or(Some(t0)),
        Some(false) => s.added_at = None,
        None => {}
    }
    Ok(lost)
}

fn worker(p: Arc<Params>, w: usize, ops: u64, salt: u64, shared: Arc<Shared>) -> Outcome {
    let mut rng = Rng::new(p.seed ^ ((w as u64 + 1).wrapping_mul(0xD6E8_FEB8_6659_FD93)));
    let mut sessions = make_sessions(&p, w, salt, &mut rng);
    let mut out = Outcome {
        latencies_us: Vec::with_capacity(ops.min(50_000_000) as usize),
        error: None,
        failures: 0,
        lost: 0,
    };
    let mut flags = if p.persistent { FLAG_PERSISTENT } else { 0 };
    if p.failures_ok {
        // Connect on first use, where a failure is counted like any other.
        flags |= FLAG_PERSISTENT_LATE;
    }
    let connector = p
        .tls
        .clone()
        .map(distcache_tools::tlsconf::blocking_connector);
    let client = match Client::with_connector(&p.target, flags, Config::from_env(), connector) {
        Ok(c) => c,
        Err(e) => {
            out.error = Some(format!("client {w}: cannot use {}: {e}", p.target));
            return out;
        }
    };
    for n in 0..ops {
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        let i = rng.range(0, sessions.len() as u64 - 1) as usize;
        let op = rng.range(0, 2);
        let s = &mut sessions[i];
        let t0 = Instant::now();
        let r = match op {
            0 => client
                .add(&s.id, &s.data(), s.timeout_ms)
                .map(Answer::Added),
            1 => client.get(&s.id).map(Answer::Got),
            _ => client.remove(&s.id).map(Answer::Removed),
        };
        out.latencies_us
            .push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
        let verdict = match r {
            Err(e) if p.failures_ok && is_failure(&e) => {
                out.failures += 1;
                shared.failed.store(true, Ordering::Relaxed);
                if op != 1 {
                    s.added_at = s.added_at.or(Some(t0));
                    s.unknown = Some(t0);
                }
                Ok(false)
            }
            Err(e) => Err(format!("failed: {e}")),
            Ok(a) => judge(
                s,
                op,
                &a,
                t0,
                p.failures_ok && shared.failed.load(Ordering::Relaxed),
            ),
        };
        match verdict {
            Ok(lost) => out.lost += u64::from(lost),
            Err(e) => {
                shared.stop.store(true, Ordering::Relaxed);
                out.error = Some(format!(
                    "client {w}, operation {}: {} of {}: {e}",
                    n + 1,
                    ["ADD", "GET", "REMOVE"][op as usize],
                    describe_id(&s.id)
                ));
                return out;
            }
        }
        let total = shared.done.fetch_add(1, Ordering::Relaxed) + 1;
        if p.progress > 0 && total % p.progress == 0 {
            let secs = shared.start.elapsed().as_secs_f64();
            println!(
                "dc_test: {total} operations done ({:.0} ops/s)",
                total as f64 / secs.max(1e-9)
            );
        }
    }
    out
}

fn percentile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn parse() -> Result<Params, i32> {
    let a = CLI.parse_env()?;
    let fail = |m: String| CLI.fail(&m);
    let given = a.required("connect").map_err(fail)?.to_string();
    let addr = match DaemonAddress::parse(&given) {
        Ok(d) if d.addr.can_connect() => d,
        Ok(d) => return Err(fail(format!("flag -connect: {d} names no host"))),
        Err(e) => return Err(fail(format!("flag -connect: {e}"))),
    };
    let target = if addr.tls {
        addr.addr.to_string()
    } else {
        given.clone()
    };
    let tls = match tlsconf::client_for(&a, &addr, &format!("-connect {given}")) {
        Ok(t) => t,
        // A missing flag is a usage error; a file that does not load is
        // one line naming the flag and the file.
        Err(m) if m.starts_with("missing") || m.starts_with("flag") => return Err(fail(m)),
        Err(m) => {
            eprintln!("dc_test: {m}");
            return Err(1);
        }
    };
    let progress = a.num("progress", 0, 0, u64::MAX).map_err(fail)?;
    let sessions = a.num("sessions", 10, 1, MAX_SESSIONS).map_err(fail)? as usize;
    // ADD payload: 8 + id (up to 63) + data must fit in 32768 bytes.
    let datamin = a.num("datamin", 50, 1, 32_697).map_err(fail)? as usize;
    let datamax = a.num("datamax", 2100, 1, 32_697).map_err(fail)? as usize;
    if datamin > datamax {
        return Err(fail(format!(
            "flag -datamin: {datamin} is above -datamax {datamax}"
        )));
    }
    let timeout_s = a.num("timeout", 60, 1, 604_800).map_err(fail)?;
    let timevar_s = a.num("timevar", 5, 0, 604_800).map_err(fail)?;
    if timeout_s + timevar_s > 604_800 {
        return Err(fail(
            "flag -timevar: timeout + timevar exceeds 7 days".into(),
        ));
    }
    let clients = a.num("clients", 1, 1, MAX_CLIENTS).map_err(fail)? as usize;
    let default_ops = (10 * (sessions as u64).pow(2))
        .min(DEFAULT_OPS_CAP)
        .saturating_mul(clients as u64);
    let ops = a.num("ops", default_ops, 0, u64::MAX).map_err(fail)?;
    let failures_ok = match a.get("failures") {
        None | Some("stop") => false,
        Some("ok") => true,
        Some(v) => {
            return Err(fail(format!(
                "flag -failures: expected stop or ok, got {v:?}"
            )))
        }
    };
    let seed = match a.get("seed") {
        Some(v) => distcache_tools::tools::parse_num("seed", v, 0, u64::MAX).map_err(fail)?,
        None => {
            let t = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            t.as_nanos() as u64 ^ (u64::from(std::process::id()) << 32)
        }
    };
    Ok(Params {
        target,
        tls,
        progress,
        sessions,
        datamin,
        datamax,
        timeout_s,
        timevar_s,
        ops,
        persistent: a.has("persistent"),
        clients,
        seed,
        failures_ok,
    })
}

fn main() -> ExitCode {
    let p = match parse() {
        Ok(p) => Arc::new(p),
        Err(code) => return ExitCode::from(code as u8),
    };
    // The salt separates this run's ids from any earlier run's, even with
    // the same -seed.
    let salt = {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Rng::new(t.as_nanos() as u64 ^ u64::from(std::process::id())).next()
    };
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        done: AtomicU64::new(0),
        start: Instant::now(),
        failed: AtomicBool::new(false),
    });
    let per = p.ops / p.clients as u64;
    let extra = p.ops % p.clients as u64;
    let handles: Vec<_> = (0..p.clients)
        .map(|w| {
            let (p2, sh) = (p.clone(), shared.clone());
            let ops = per + u64::from((w as u64) < extra);
            std::thread::Builder::new()
                .name(format!("dc_test-{w}"))
                .spawn(move || worker(p2, w, ops, salt, sh))
        })
        .collect();
    let mut lat = Vec::new();
    let mut errors = Vec::new();
    let (mut failures, mut lost) = (0, 0);
    for h in handles {
        match h {
            Ok(h) => match h.join() {
                Ok(o) => {
                    lat.extend_from_slice(&o.latencies_us);
                    errors.extend(o.error);
                    failures += o.failures;
                    lost += o.lost;
                }
                Err(_) => errors.push("a worker thread panicked".into()),
            },
            Err(e) => errors.push(format!("cannot start a worker thread: {e}")),
        }
    }
    let secs = shared.start.elapsed().as_secs_f64();
    for e in &errors {
        eprintln!("dc_test: ERROR: {e}");
    }
    let done = shared.done.load(Ordering::Relaxed);
    lat.sort_unstable();
    let ops_per_s = done as f64 / secs.max(1e-9);
    let (p50, p99, p999) = (
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        percentile(&lat, 0.999),
    );
    println!(
        "dc_test: {done} operations in {secs:.3} s by {} client(s), {}, seed {}",
        p.clients,
        if p.persistent {
            "persistent connections"
        } else {
            "one connection per operation"
        },
        p.seed
    );
    println!(
        "dc_test: {ops_per_s:.0} ops/s; latency p50 {p50} us, p99 {p99} us, p99.9 {p999} us, max {} us",
        lat.last().copied().unwrap_or(0)
    );
    if p.failures_ok {
        println!(
            "dc_test: {failures} failed call(s) (counted, -failures ok), {lost} session(s) found lost after a failure, {} wrong answer(s)",
            errors.len()
        );
    }
    println!(
        "dc_test ops={done} ops_per_s={ops_per_s:.0} p50_us={p50} p99_us={p99} p999_us={p999} failures={failures} lost={lost} errors={}",
        errors.len()
    );
    if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_ranges_and_determinism() {
        let mut a = Rng::new(5);
        let mut b = Rng::new(5);
        for _ in 0..1000 {
            let x = a.range(10, 63);
            assert!((10..=63).contains(&x));
            assert_eq!(x, b.range(10, 63));
        }
        assert_ne!(Rng::new(1).next(), Rng::new(2).next());
        let mut z = Rng::new(0);
        assert_ne!(z.next(), 0);
    }

    #[test]
    fn sessions_respect_limits_and_key_spaces() {
        let p = Params {
            target: String::new(),
            tls: None,
            progress: 0,
            sessions: 500,
            datamin: 50,
            datamax: 60,
            timeout_s: 2,
            timevar_s: 5,
            ops: 0,
            persistent: false,
            clients: 2,
            seed: 1,
            failures_ok: false,
        };
        let mut r = Rng::new(1);
        let s0 = make_sessions(&p, 0, 77, &mut r);
        let s1 = make_sessions(&p, 1, 77, &mut r);
        for s in s0.iter().chain(&s1) {
            assert!((10..=63).contains(&s.id.len()));
            assert!((50..=60).contains(&s.data_len));
            assert!(s.timeout_ms >= 1000 && s.timeout_ms <= 7000);
            assert_eq!(s.data(), s.data());
            assert_eq!(s.data().len(), s.data_len);
        }
        assert!(s0.iter().all(|s| s.id[5..7] == [0, 0]));
        assert!(s1.iter().all(|s| s.id[5..7] == [1, 0]));
        assert!(s0.iter().chain(&s1).all(|s| s.id[..5] == [77, 0, 0, 0, 0]));
        assert_eq!(s1[300].id[7..10], [44, 1, 0]);
    }

    /// A million sessions of one worker (the case the old layout lost:
    /// many ids of the shortest length) have a million distinct ids, and
    /// the extreme workers and indexes the flags allow stay apart. Larger
    /// counts cannot collide either: see `session_id` (the worker and the
    /// index each have their own bytes, wide enough for the flags'
    /// maxima), so this test checks the encoding, not luck.
    #[test]
    fn ids_of_a_run_are_distinct_by_construction() {
        let p = Params {
            target: String::new(),
            tls: None,
            progress: 0,
            sessions: 1_000_000,
            datamin: 1,
            datamax: 1,
            timeout_s: 60,
            timevar_s: 0,
            ops: 0,
            persistent: false,
            clients: 1,
            seed: 3,
            failures_ok: false,
        };
        let salt = 0x1234_5678_9abc;
        let s = make_sessions(&p, 0, salt, &mut Rng::new(3));
        let mut seen = std::collections::HashSet::with_capacity(s.len() + 16);
        let mut shortest = 0;
        for x in &s {
            assert!((ID_MIN..=ID_MAX).contains(&x.id.len()));
            shortest += usize::from(x.id.len() == ID_MIN);
            assert!(seen.insert(x.id.clone()), "duplicate {:02x?}", x.id);
        }
        assert_eq!(seen.len(), 1_000_000);
        // About 1/54 of them are 10 bytes long: 10-byte ids with no random
        // byte at all, still distinct.
        assert!(shortest > 15_000, "{shortest}");
        // The largest worker number and index the flags allow do not wrap:
        // they read back from their bytes, and the four corners differ.
        let mut r = Rng::new(9);
        let (w, i) = (MAX_CLIENTS as usize - 1, MAX_SESSIONS as usize - 1);
        let corners: std::collections::HashSet<Vec<u8>> = [(0, 0), (w, 0), (0, i), (w, i)]
            .into_iter()
            .map(|(worker, index)| {
                let id = session_id(salt, worker, index, ID_MIN, &mut r);
                assert_eq!(usize::from(u16::from_le_bytes([id[5], id[6]])), worker);
                assert_eq!(u32::from_le_bytes([id[7], id[8], id[9], 0]) as usize, index);
                id
            })
            .collect();
        assert_eq!(corners.len(), 4);
    }

    /// The model under -failures ok: a session a failed ADD touched is
    /// unknown (any answer goes, but never another session's data) until
    /// SETTLE has passed; a miss of a stored session is a loss only once a
    /// call of the run has failed.
    #[test]
    fn judge_unknown_and_lost_sessions() {
        let t0 = Instant::now();
        let mut s = Session {
            id: vec![1; 10],
            data_len: 20,
            data_seed: 4,
            timeout_ms: 60_000,
            added_at: Some(t0),
            unknown: None,
        };
        let miss = Answer::Got(None);
        assert!(judge(&mut s, 1, &miss, t0, false).is_err());
        assert_eq!(judge(&mut s, 1, &miss, t0, true), Ok(true));
        assert_eq!(s.added_at, None);
        let wrong: Data = Arc::from(&[9u8; 20][..]);
        let right: Data = Arc::from(&s.data()[..]);
        // After a failed ADD: either answer, until it settles.
        s.unknown = Some(t0);
        s.added_at = Some(t0);
        assert_eq!(judge(&mut s, 1, &miss, t0, false), Ok(false));
        assert_eq!(
            judge(&mut s, 1, &Answer::Got(Some(right.clone())), t0, false),
            Ok(false)
        );
        assert!(judge(&mut s, 1, &Answer::Got(Some(wrong)), t0, false).is_err());
        assert!(s.unknown.is_some());
        // Settled: the answer is the state again.
        let later = t0 + SETTLE;
        assert_eq!(judge(&mut s, 1, &miss, later, false), Ok(false));
        assert_eq!((s.unknown, s.added_at), (None, None));
        assert!(judge(&mut s, 1, &Answer::Got(Some(right)), later, true).is_err());
        assert!(judge(&mut s, 2, &Answer::Removed(true), later, true).is_err());
        assert_eq!(
            judge(&mut s, 0, &Answer::Added(AddOutcome::Stored), later, false),
            Ok(false)
        );
        assert_eq!(s.added_at, Some(later));
        let refused = Answer::Added(AddOutcome::Refused(status::ADD_TIMEOUT_RANGE));
        assert!(judge(&mut s, 0, &refused, later, true).is_err());
    }

    #[test]
    fn percentiles() {
        let v: Vec<u32> = (1..=1000).collect();
        assert_eq!(percentile(&v, 0.5), 501);
        assert_eq!(percentile(&v, 0.99), 990);
        assert_eq!(percentile(&v, 0.999), 999);
        assert_eq!(percentile(&[], 0.5), 0);
    }
}
