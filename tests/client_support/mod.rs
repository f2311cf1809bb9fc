//! Shared test helpers for the DC_CTX client tests: the `api_call` parser
//! and scripted peers (small in-test servers on temporary UNIX sockets; never
//! dc_server). The JSON reader and hex live in `tests/common` (declare
//! `mod common;` beside `mod client_support;`).

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use distcache_rs::proto::{self, encode_message, parse_add, AddParse, Cmd, Decoder, Direction};

/// All cases of one group of wire.json, in file order.
pub fn cases(group: &str) -> Vec<crate::common::Json> {
    crate::common::wire_group(group)
}

// ------------------------------------------------------- api_call parser

/// A recorded `api_call`, e.g.
/// `DC_CTX_add_session(id="X"*65, data=bytes((i*7+0x31)&0xff for i in range(32)), timeout_msecs=300000)`.
#[derive(Debug, Clone)]
pub struct ApiCall {
    pub func: String,
    pub args: HashMap<String, Vec<u8>>,
    pub timeout: Option<u64>,
}

fn parse_int(s: &str) -> u64 {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).unwrap(),
        None => s.parse().unwrap(),
    }
}

/// Parse one argument value at the front of `s`; returns it and the rest.
fn parse_value(s: &str) -> (Vec<u8>, &str) {
    if let Some(rest) = s.strip_prefix('"') {
        let mut out = Vec::new();
        let b = rest.as_bytes();
        let mut i = 0;
        while b[i] != b'"' {
            if b[i] == b'\\' {
                match b[i + 1] {
                    b'x' => {
                        out.push(u8::from_str_radix(&rest[i + 2..i + 4], 16).unwrap());
                        i += 4;
                    }
                    b'n' => {
                        out.push(b'\n');
                        i += 2;
                    }
                    c => {
                        out.push(c);
                        i += 2;
                    }
                }
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        let mut rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('*') {
            let end = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
            let n: usize = r[..end].parse().unwrap();
            out = out.repeat(n);
            rest = &r[end..];
        }
        (out, rest)
    } else if let Some(r) = s.strip_prefix("bytes((i*") {
        // bytes((i*K[+C])&0xff for i in range(N))
        let close = r.find(')').unwrap();
        let (k, c) = match r[..close].split_once('+') {
            Some((k, c)) => (parse_int(k), parse_int(c)),
            None => (parse_int(&r[..close]), 0),
        };
        let r = r[close..]
            .strip_prefix(")&0xff for i in range(")
            .expect("bytes() form");
        let end = r.find(')').unwrap();
        let n = parse_int(&r[..end]);
        let v = (0..n).map(|i| ((i * k + c) & 0xff) as u8).collect();
        (v, r[end..].strip_prefix("))").expect("bytes() end"))
    } else {
        panic!("unknown api_call value {s:?}")
    }
}

pub fn parse_api_call(s: &str) -> ApiCall {
    let open = s.find('(').unwrap();
    let func = s[..open].to_string();
    let mut rest = &s[open + 1..];
    let mut args = HashMap::new();
    let mut timeout = None;
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        if rest.starts_with(')') {
            break;
        }
        let eq = rest.find('=').unwrap();
        let name = rest[..eq].to_string();
        rest = &rest[eq + 1..];
        if name == "timeout_msecs" {
            let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap();
            timeout = Some(rest[..end].parse().unwrap());
            rest = &rest[end..];
        } else {
            let (v, r) = parse_value(rest);
            args.insert(name, v);
            rest = r;
        }
    }
    ApiCall {
        func,
        args,
        timeout,
    }
}

// ---------------------------------------------------------- scripted peers

static NEXT_SOCK: AtomicUsize = AtomicUsize::new(0);

/// A unique temporary UNIX socket path.
pub fn temp_sock() -> PathBuf {
    let n = NEXT_SOCK.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("dcrs-client-{}-{n}.sock", std::process::id()))
}

/// What a peer saw on one connection.
#[derive(Debug, Default, Clone)]
pub struct ConnLog {
    /// Pid of the connecting process (SO_PEERCRED).
    pub peer_pid: i32,
    /// Requests answered on this connection.
    pub answered: usize,
    /// Raw bytes received.
    pub received: Vec<u8>,
}

pub type Handler = dyn Fn(usize, UnixStream, &Arc<Stats>) + Send + Sync;

#[derive(Debug, Default)]
pub struct Stats {
    pub conns: Mutex<Vec<ConnLog>>,
}

impl Stats {
    pub fn conn_count(&self) -> usize {
        self.conns.lock().unwrap().len()
    }
    pub fn log(&self) -> Vec<ConnLog> {
        self.conns.lock().unwrap().clone()
    }
    fn update(&self, i: usize, f: impl FnOnce(&mut ConnLog)) {
        f(&mut self.conns.lock().unwrap()[i])
    }
}

/// A test server on a temporary UNIX socket; every connection runs
/// `handler` on its own thread.
pub struct Peer {
    pub path: PathBuf,
    pub stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

/// Pid of the process at the other end of `s` (SO_PEERCRED), -1 if unknown.
fn peer_pid(s: &UnixStream) -> i32 {
    use std::os::unix::io::AsRawFd;
    distcache_tools::tools::sys::peer_pid(s.as_raw_fd()).unwrap_or(-1)
}

impl Peer {
    pub fn spawn(handler: Arc<Handler>) -> Peer {
        let path = temp_sock();
        let _ = std::fs::remove_file(&path);
        let l = UnixListener::bind(&path).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Stats::default());
        let (stop2, stats2) = (stop.clone(), stats.clone());
        let accept = std::thread::spawn(move || {
            for s in l.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(s) = s else { continue };
                let idx = {
                    let mut c = stats2.conns.lock().unwrap();
                    c.push(ConnLog {
                        peer_pid: peer_pid(&s),
                        ..Default::default()
                    });
                    c.len() - 1
                };
                let (h, st) = (handler.clone(), stats2.clone());
                std::thread::spawn(move || h(idx, s, &st));
            }
        });
        Peer {
            path,
            stats,
            stop,
            accept: Some(accept),
        }
    }

    /// The libnal address of this peer.
    pub fn addr(&self) -> String {
        format!("UNIX:{}", self.path.display())
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = UnixStream::connect(&self.path);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Read exactly `n` bytes (or until EOF / 5 s of silence).
pub fn read_n(s: &mut UnixStream, n: usize) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut v = vec![0; n];
    let mut got = 0;
    while got < n {
        match s.read(&mut v[got..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => got += k,
        }
    }
    v.truncate(got);
    v
}

/// A peer that, on connection number i, reads `script[i].0.len()` bytes,
/// records them, then writes `script[i].1` and keeps the socket open until
/// the client closes it.
pub fn replay_peer(script: Vec<(usize, Vec<u8>)>) -> Peer {
    let script = Arc::new(script);
    Peer::spawn(Arc::new(move |i, mut s: UnixStream, st: &Arc<Stats>| {
        let Some((n, resp)) = script.get(i).cloned() else {
            return;
        };
        let got = read_n(&mut s, n);
        st.update(i, |c| c.received = got);
        // Counted before sending, so the count is final when the client
        // has its answer.
        st.update(i, |c| c.answered += 1);
        let _ = s.write_all(&resp);
        // Wait for the client to close.
        let mut sink = [0u8; 64];
        while matches!(s.read(&mut sink), Ok(k) if k > 0) {}
    }))
}

/// Behaviour knobs of [`map_peer`].
#[derive(Clone, Debug, Default)]
pub struct MapOpts {
    /// Close a connection after answering this many requests on it.
    pub close_after: Option<usize>,
    /// On these connection indexes, close at the first request without
    /// answering it.
    pub drop_unanswered_on: Vec<usize>,
    /// Never answer (a stalled server).
    pub stall: bool,
}

pub type Map = Arc<Mutex<HashMap<Vec<u8>, Vec<u8>>>>;

/// Compute the answer a correct server gives to one request.
pub fn answer(map: &Map, cmd: Cmd, payload: &[u8]) -> Option<Vec<u8>> {
    let mut m = map.lock().unwrap();
    Some(match cmd {
        Cmd::Add => match parse_add(payload) {
            AddParse::Fatal => return None,
            AddParse::Reject(s) => vec![s],
            AddParse::Ok(r) => {
                if m.contains_key(r.id) {
                    vec![proto::status::ADD_MATCHING_SESSION]
                } else {
                    m.insert(r.id.to_vec(), r.data.to_vec());
                    vec![proto::status::OK]
                }
            }
        },
        Cmd::Get => match m.get(payload) {
            Some(d) => d.clone(),
            None => vec![proto::status::NOTOK],
        },
        Cmd::Remove => vec![if m.remove(payload).is_some() { 0 } else { 1 }],
        Cmd::Have => vec![if m.contains_key(payload) { 0 } else { 1 }],
    })
}

/// A peer serving a real in-memory session map (no expiry).
pub fn map_peer(map: Map, opts: MapOpts) -> Peer {
    Peer::spawn(Arc::new(move |i, s: UnixStream, st: &Arc<Stats>| {
        serve_map(i, s, &map, &opts, Some(st))
    }))
}

/// Serve one connection of a map peer (UNIX or TCP).
pub fn serve_map<S: Read + Write>(
    i: usize,
    mut s: S,
    map: &Map,
    opts: &MapOpts,
    st: Option<&Arc<Stats>>,
) {
    let mut dec = Decoder::new(Direction::Requests);
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 65536];
    let mut answered = 0;
    loop {
        let n = match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if opts.stall {
            continue;
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut reqs = Vec::new();
        let used = match dec.drain(&buf, |m| reqs.push(m.to_owned())) {
            Ok(u) => u,
            Err(_) => return,
        };
        buf.drain(..used);
        for r in reqs {
            if opts.drop_unanswered_on.contains(&i) {
                return;
            }
            let Some(a) = answer(map, r.cmd, &r.payload) else {
                return;
            };
            let mut out = Vec::new();
            encode_message(&mut out, true, r.uid, r.cmd, &a).unwrap();
            // Counted before sending, so the count is final when the
            // client has its answer.
            answered += 1;
            if let Some(st) = st {
                st.update(i, |c| c.answered += 1);
            }
            if s.write_all(&out).is_err() {
                return;
            }
            if opts.close_after == Some(answered) {
                return;
            }
        }
    }
}

/// A map peer on a TCP loopback port; returns the libnal address.
pub fn tcp_map_peer(map: Map, v6: bool) -> Option<String> {
    let l = std::net::TcpListener::bind(if v6 { "[::1]:0" } else { "127.0.0.1:0" }).ok()?;
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for (i, s) in l.incoming().enumerate() {
            let Ok(s) = s else { continue };
            let map = map.clone();
            std::thread::spawn(move || serve_map(i, s, &map, &MapOpts::default(), None));
        }
    });
    Some(if v6 {
        format!("IPv6:[::1]:{port}")
    } else {
        format!("IP:127.0.0.1:{port}")
    })
}

/// Run `f` in a forked child; returns its pid and exit status (0 = `f`
/// returned true). The caller keeps other threads of the test process out
/// of the locks `f` uses (the tests serialise on their own lock).
pub fn in_child(f: impl FnOnce() -> bool) -> (i32, i32) {
    // SAFETY: fork() has no memory-safety preconditions. The child only
    // runs `f` (the client and plain syscalls) and then _exit()s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(false);
        // SAFETY: _exit() ends the child without running the parent's
        // atexit handlers or test harness code.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child with a valid status pointer.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid);
    assert!(libc::WIFEXITED(status), "child died: status {status:#x}");
    (pid, libc::WEXITSTATUS(status))
}

/// Run `f` with file descriptor 2 redirected to a temporary file; returns
/// its result and what was written there.
pub fn capture_stderr<T>(f: impl FnOnce() -> T) -> (T, String) {
    let path = temp_sock().with_extension("stderr");
    let file = std::fs::File::create(&path).unwrap();
    // SAFETY: dup/dup2 on valid descriptors; fd 2 is restored below.
    let saved = unsafe { libc::dup(2) };
    assert!(saved >= 0);
    // SAFETY: as above.
    assert_eq!(
        unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&file), 2) },
        2
    );
    let r = f();
    // SAFETY: as above.
    unsafe {
        libc::dup2(saved, 2);
        libc::close(saved);
    }
    let mut s = String::new();
    std::fs::File::open(&path)
        .unwrap()
        .read_to_string(&mut s)
        .unwrap();
    let _ = std::fs::remove_file(&path);
    (r, s)
}
