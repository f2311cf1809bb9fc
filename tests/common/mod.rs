//! Helpers shared by the integration tests: a tiny JSON reader for
//! `wire.json`, hex, temp directories, child processes that are killed
//! when the test ends, and socket helpers.
//!
//! wire.json is the repository's own copy, `tests/vectors/wire.json`
//! (format and origin: tests/vectors/README.md); env DCRS_VECTORS may name
//! another copy (the file, or the directory holding it) explicitly.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- JSON

#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(BTreeMap<String, Json>),
}

impl Json {
    /// Member `k` of an object; a `null` member counts as absent.
    pub fn get(&self, k: &str) -> Option<&Json> {
        match self {
            Json::Obj(m) => m.get(k).filter(|v| **v != Json::Null),
            _ => None,
        }
    }
    pub fn str(&self, k: &str) -> Option<&str> {
        match self.get(k) {
            Some(Json::Str(s)) => Some(s),
            _ => None,
        }
    }
    /// Member `k` as an array.
    pub fn list(&self, k: &str) -> Option<&[Json]> {
        match self.get(k) {
            Some(Json::Arr(a)) => Some(a),
            _ => None,
        }
    }
    pub fn num(&self, k: &str) -> Option<f64> {
        match self.get(k) {
            Some(Json::Num(n)) => Some(*n),
            _ => None,
        }
    }
    pub fn bool(&self, k: &str) -> Option<bool> {
        match self.get(k) {
            Some(Json::Bool(b)) => Some(*b),
            _ => None,
        }
    }
    /// This value as an array (empty if it is none).
    pub fn arr(&self) -> &[Json] {
        match self {
            Json::Arr(v) => v,
            _ => &[],
        }
    }
}

struct P<'a> {
    s: &'a [u8],
    i: usize,
}

impl P<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) {
        self.ws();
        assert_eq!(
            self.s[self.i], c,
            "JSON: expected {} at {}",
            c as char, self.i
        );
        self.i += 1;
    }
    fn value(&mut self) -> Json {
        self.ws();
        match self.s[self.i] {
            b'{' => {
                self.i += 1;
                let mut m = BTreeMap::new();
                self.ws();
                if self.s[self.i] == b'}' {
                    self.i += 1;
                    return Json::Obj(m);
                }
                loop {
                    self.ws();
                    let Json::Str(k) = self.value() else {
                        panic!("JSON: key")
                    };
                    self.eat(b':');
                    let v = self.value();
                    m.insert(k, v);
                    self.ws();
                    let c = self.s[self.i];
                    self.i += 1;
                    if c == b'}' {
                        return Json::Obj(m);
                    }
                    assert_eq!(c, b',');
                }
            }
            b'[' => {
                self.i += 1;
                let mut v = Vec::new();
                self.ws();
                if self.s[self.i] == b']' {
                    self.i += 1;
                    return Json::Arr(v);
                }
                loop {
                    v.push(self.value());
                    self.ws();
                    let c = self.s[self.i];
                    self.i += 1;
                    if c == b']' {
                        return Json::Arr(v);
                    }
                    assert_eq!(c, b',');
                }
            }
            b'"' => {
                self.i += 1;
                let mut out = String::new();
                loop {
                    let c = self.s[self.i];
                    self.i += 1;
                    match c {
                        b'"' => return Json::Str(out),
                        b'\\' => {
                            let e = self.s[self.i];
                            self.i += 1;
                            match e {
                                b'n' => out.push('\n'),
                                b't' => out.push('\t'),
                                b'r' => out.push('\r'),
                                b'b' => out.push('\u{8}'),
                                b'f' => out.push('\u{c}'),
                                b'u' => {
                                    let h =
                                        std::str::from_utf8(&self.s[self.i..self.i + 4]).unwrap();
                                    self.i += 4;
                                    let cp = u32::from_str_radix(h, 16).unwrap();
                                    out.push(char::from_u32(cp).unwrap_or('\u{fffd}'));
                                }
                                other => out.push(other as char),
                            }
                        }
                        _ => {
                            // Copy a UTF-8 sequence as is.
                            let start = self.i - 1;
                            let mut end = self.i;
                            while end < self.s.len() && (self.s[end] & 0xC0) == 0x80 {
                                end += 1;
                            }
                            out.push_str(std::str::from_utf8(&self.s[start..end]).unwrap());
                            self.i = end;
                        }
                    }
                }
            }
            b't' => {
                self.i += 4;
                Json::Bool(true)
            }
            b'f' => {
                self.i += 5;
                Json::Bool(false)
            }
            b'n' => {
                self.i += 4;
                Json::Null
            }
            _ => {
                let start = self.i;
                while self.i < self.s.len() && b"+-0123456789.eE".contains(&self.s[self.i]) {
                    self.i += 1;
                }
                let t = std::str::from_utf8(&self.s[start..self.i]).unwrap();
                Json::Num(t.parse().unwrap())
            }
        }
    }
}

pub fn parse_json(text: &str) -> Json {
    let mut p = P {
        s: text.as_bytes(),
        i: 0,
    };
    p.value()
}

/// The workspace's top folder (this file serves the core crate's tests and,
/// through `#[path]`, the daemons crate's tests in `daemons/tests/`), found
/// from the crate root `cargo test` names at run time (so a test binary
/// reused by another checkout reads that checkout's files), else the one it
/// was compiled in.
pub fn repo_root() -> PathBuf {
    let here = crate_root();
    match here.file_name() {
        Some(n) if n == "daemons" => here.parent().map(Path::to_path_buf).unwrap_or(here),
        _ => here,
    }
}

/// Path of the wire vectors: `tests/vectors/wire.json` at the workspace's
/// top, unless `DCRS_VECTORS` names another wire.json (or the directory
/// holding it) explicitly.
pub fn vectors_path() -> PathBuf {
    match std::env::var_os("DCRS_VECTORS") {
        Some(p) if Path::new(&p).is_dir() => PathBuf::from(p).join("wire.json"),
        Some(p) => PathBuf::from(p),
        None => repo_root().join("tests/vectors/wire.json"),
    }
}

/// The crate root: `CARGO_MANIFEST_DIR` of this run, else of the build.
pub fn crate_root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// All cases of `wire.json` in file order.
pub fn wire_cases() -> Vec<Json> {
    let path = vectors_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    match parse_json(&text) {
        Json::Arr(a) => a,
        _ => panic!("{} is not an array", path.display()),
    }
}

/// The cases of one group of `wire.json`, in file order.
pub fn wire_group(g: &str) -> Vec<Json> {
    group(&wire_cases(), g)
}

pub fn group(cases: &[Json], g: &str) -> Vec<Json> {
    cases
        .iter()
        .filter(|c| c.str("group") == Some(g))
        .cloned()
        .collect()
}

pub fn case<'a>(cases: &'a [Json], name: &str) -> &'a Json {
    cases
        .iter()
        .find(|c| c.str("name") == Some(name))
        .unwrap_or_else(|| panic!("no case {name}"))
}

pub fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0);
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

// ------------------------------------------------------------ processes

/// A temp directory removed at the end of the test.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "dcrs-tools-{tag}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    pub fn addr(&self, name: &str) -> String {
        format!("UNIX:{}", self.path(name).display())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed (SIGKILL) when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn spawn(exe: &str, args: &[&str]) -> Proc {
        Self::spawn_with(exe, args, Stdio::null(), Stdio::piped())
    }
    pub fn spawn_with(exe: &str, args: &[&str], out: Stdio, err: Stdio) -> Proc {
        let child = Command::new(exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {exe}: {e}"));
        Proc {
            child,
            name: exe.to_string(),
        }
    }
    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
    /// SIGTERM, then wait (at most 5 s) and return the stderr text.
    pub fn terminate(self) -> (Option<i32>, String) {
        let (code, _, err) = self.terminate_all();
        (code, err)
    }

    /// SIGTERM, then wait (at most 5 s); returns exit code, stdout, stderr.
    pub fn terminate_all(mut self) -> (Option<i32>, String, String) {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let mut out = String::new();
        if let Some(mut o) = self.child.stdout.take() {
            let _ = o.read_to_string(&mut out);
        }
        (status, out, err)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Wait until a UNIX socket accepts connections.
pub fn wait_for_socket(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if UnixStream::connect(path).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("nothing listens on {}", path.display());
}

pub fn connect(path: &Path) -> UnixStream {
    let s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s
}

/// Read exactly n bytes (panics on timeout or EOF).
pub fn read_n(s: &mut UnixStream, n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    s.read_exact(&mut b)
        .unwrap_or_else(|e| panic!("reading {n} bytes: {e}"));
    b
}

/// Expect EOF (no data) within the read timeout.
pub fn expect_eof(s: &mut UnixStream) {
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(0) => {}
        Ok(n) => panic!("expected EOF, got {}", hex(&b[..n])),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("expected EOF, got error {e}"),
    }
}

pub fn send(s: &mut UnixStream, bytes: &[u8]) {
    s.write_all(bytes).unwrap();
}

/// Run a tool to completion with a time limit; returns (exit code, stdout, stderr).
pub fn run(exe: &str, args: &[&str], limit: Duration) -> (Option<i32>, String, String) {
    let mut p = Proc::spawn_with(exe, args, Stdio::piped(), Stdio::piped());
    let mut out = p.child.stdout.take().unwrap();
    let mut err = p.child.stderr.take().unwrap();
    let to = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let te = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let code = loop {
        if let Some(s) = p.child.try_wait().unwrap() {
            break s.code();
        }
        if Instant::now() > deadline {
            p.kill9();
            panic!("{exe} {args:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    (code, to.join().unwrap(), te.join().unwrap())
}

/// A TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Wait until 127.0.0.1:port accepts connections.
pub fn wait_for_tcp(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("nothing listens on port {port}");
}

// ------------------------------------------------------------ messages

/// A whole (possibly multi-frame) request message.
pub fn request(uid: u32, op: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    distcache_rs::proto::encode_message(
        &mut out,
        false,
        uid,
        distcache_rs::proto::Cmd::from_wire(op).unwrap(),
        payload,
    )
    .unwrap();
    out
}

/// The payload of an ADD request.
pub fn add_payload(timeout_ms: u32, id: &[u8], data: &[u8]) -> Vec<u8> {
    let mut p = timeout_ms.to_be_bytes().to_vec();
    p.extend_from_slice(&(id.len() as u32).to_be_bytes());
    p.extend_from_slice(id);
    p.extend_from_slice(data);
    p
}

/// Read one whole response message: (uid, op, payload).
pub fn read_msg(s: &mut UnixStream) -> std::io::Result<(u32, u8, Vec<u8>)> {
    let mut payload = Vec::new();
    loop {
        let mut h = [0u8; 14];
        s.read_exact(&mut h)?;
        assert_eq!(&h[..5], &[0, 0x11, 0, 0, 1], "response header {}", hex(&h));
        let n = u16::from_be_bytes([h[12], h[13]]) as usize;
        let mut p = vec![0u8; n];
        s.read_exact(&mut p)?;
        payload.extend_from_slice(&p);
        if h[11] == 1 {
            return Ok((u32::from_be_bytes([h[5], h[6], h[7], h[8]]), h[10], payload));
        }
    }
}

/// Send `req` and return the payload of its response (same uid and op).
pub fn transact(s: &mut UnixStream, req: &[u8]) -> Vec<u8> {
    s.write_all(req).unwrap();
    let (uid, op, p) = read_msg(s).unwrap();
    assert_eq!(uid.to_be_bytes(), req[5..9]);
    assert_eq!(op, req[10]);
    p
}

/// A socket whose reads can be bounded in time (UNIX or TCP).
pub trait TimedRead: Read {
    fn read_timeout(&self, limit: Option<Duration>) -> std::io::Result<()>;
}

impl TimedRead for UnixStream {
    fn read_timeout(&self, limit: Option<Duration>) -> std::io::Result<()> {
        self.set_read_timeout(limit)
    }
}

impl TimedRead for std::net::TcpStream {
    fn read_timeout(&self, limit: Option<Duration>) -> std::io::Result<()> {
        self.set_read_timeout(limit)
    }
}

/// True if the peer closed (EOF or reset) within `limit` (whatever it sent
/// before is read and dropped); the read timeout is 3 s afterwards.
pub fn closed_within<S: TimedRead>(s: &mut S, limit: Duration) -> bool {
    s.read_timeout(Some(limit)).unwrap();
    let mut b = [0u8; 4096];
    let r = loop {
        match s.read(&mut b) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    s.read_timeout(Some(Duration::from_secs(3))).unwrap();
    r
}

/// One ADD+GET round trip with a data check.
pub fn check_served(s: &mut UnixStream, tag: &str, n: u32) {
    let id = format!("{tag}-{n}");
    let data = format!("data of {id}").repeat(3);
    assert_eq!(
        transact(
            s,
            &request(n, 0, &add_payload(60_000, id.as_bytes(), data.as_bytes()))
        ),
        vec![0],
        "ADD {id}"
    );
    assert_eq!(
        transact(s, &request(n, 1, id.as_bytes())),
        data.as_bytes(),
        "GET {id}"
    );
}

// ---------------------------------------------------------- client load

/// When a load worker sleeps.
#[derive(Clone, Copy, Debug)]
pub enum Pause {
    /// After each iteration that was not a success (do not spin while the
    /// service is away).
    AfterFailure(Duration),
    /// After every iteration.
    EveryIteration(Duration),
}

/// What a [`Load`] runs.
pub struct LoadSpec<'a> {
    /// Address the clients talk to (`UNIX:...` or `IP:...`).
    pub target: &'a str,
    /// Worker threads; even ones use `FLAG_PERSISTENT`, odd ones 0.
    pub workers: u32,
    /// Session ids are `{id_prefix}-{worker}-{n}`, each used once.
    pub id_prefix: &'a str,
    /// The data is `"data of {id} "` repeated this many times.
    pub repeat: usize,
    pub pause: Pause,
    /// GET also after an ADD that was not stored; a hit for such an id ends
    /// the worker with an error ("found but never stored"). When false a
    /// failed ADD is not followed by a GET (one bounded call per failure).
    pub get_after_failed_add: bool,
}

/// DC_CTX-style callers hammering a cache until stopped: each iteration
/// ADDs a fresh id and GETs it back. An iteration succeeds when the ADD
/// stored the session and the GET returned it; anything else but wrong
/// data is a failure (wrong data ends that worker with an error). Each
/// worker keeps the longest iteration (ADD plus GET) it saw.
pub struct Load {
    shared: std::sync::Arc<LoadShared>,
    workers: Vec<std::thread::JoinHandle<Result<Duration, String>>>,
}

#[derive(Default)]
struct LoadShared {
    stop: std::sync::atomic::AtomicBool,
    successes: std::sync::atomic::AtomicU64,
    failures: std::sync::atomic::AtomicU64,
}

/// One worker's part of a [`LoadSpec`], owned by its thread.
struct LoadWorker {
    target: String,
    worker: u32,
    id_prefix: String,
    repeat: usize,
    pause: Pause,
    get_after_failed_add: bool,
}

impl Load {
    pub fn start(spec: LoadSpec) -> Load {
        let shared = std::sync::Arc::new(LoadShared::default());
        let workers = (0..spec.workers)
            .map(|worker| {
                let w = LoadWorker {
                    target: spec.target.to_string(),
                    worker,
                    id_prefix: spec.id_prefix.to_string(),
                    repeat: spec.repeat,
                    pause: spec.pause,
                    get_after_failed_add: spec.get_after_failed_add,
                };
                let shared = shared.clone();
                std::thread::spawn(move || w.run(&shared))
            })
            .collect();
        Load { shared, workers }
    }

    pub fn successes(&self) -> u64 {
        self.shared
            .successes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn failures(&self) -> u64 {
        self.shared
            .failures
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits (bounded by `limit`) until at least `n` successes are counted.
    pub fn wait_for_successes(&self, n: u64, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.successes() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops and joins the workers: each one's longest iteration, or its
    /// error. The counters stay readable (and final) afterwards.
    pub fn stop(&mut self) -> Vec<Result<Duration, String>> {
        self.shared
            .stop
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.workers
            .drain(..)
            .map(|h| h.join().unwrap_or_else(|_| Err("worker panicked".into())))
            .collect()
    }
}

impl Drop for Load {
    /// A test that fails before `stop()` does not leave workers running.
    fn drop(&mut self) {
        self.shared
            .stop
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl LoadWorker {
    fn run(self, shared: &LoadShared) -> Result<Duration, String> {
        use distcache_rs::client::{AddOutcome, Client, Config, FLAG_PERSISTENT};
        use std::sync::atomic::Ordering::Relaxed;
        let w = self.worker;
        let flags = if w % 2 == 0 { FLAG_PERSISTENT } else { 0 };
        let c = Client::with_config(&self.target, flags, Config::default())
            .map_err(|e| format!("worker {w}: client for {}: {e:?}", self.target))?;
        let mut worst = Duration::ZERO;
        let mut n = 0u64;
        while !shared.stop.load(Relaxed) {
            n += 1;
            let id = format!("{}-{w}-{n}", self.id_prefix);
            let data = format!("data of {id} ").repeat(self.repeat);
            let t0 = Instant::now();
            let added = matches!(
                c.add(id.as_bytes(), data.as_bytes(), 60_000),
                Ok(AddOutcome::Stored)
            );
            let got = (added || self.get_after_failed_add).then(|| c.get(id.as_bytes()));
            worst = worst.max(t0.elapsed());
            let ok = match got {
                Some(Ok(Some(d))) if *d != *data.as_bytes() => {
                    return Err(format!("wrong data for {id}"))
                }
                Some(Ok(Some(_))) if !added => return Err(format!("{id} found but never stored")),
                Some(Ok(Some(_))) => true,
                _ => false,
            };
            let counter = if ok {
                &shared.successes
            } else {
                &shared.failures
            };
            counter.fetch_add(1, Relaxed);
            match self.pause {
                Pause::EveryIteration(d) => std::thread::sleep(d),
                Pause::AfterFailure(d) if !ok => std::thread::sleep(d),
                Pause::AfterFailure(_) => {}
            }
        }
        Ok(worst)
    }
}
