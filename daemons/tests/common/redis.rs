//! Real Redis processes for the tests (Debian's redis-server and
//! redis-sentinel), each on a free loopback port in its own temporary
//! directory, without persistence, stopped by pid; one-shot commands on a
//! fresh blocking connection to look at them from the side; and [`Drv`],
//! the epoll loop that drives a [`RedisConn`] or a [`Store`] in the
//! test's own thread, as the daemons drive them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use distcache_rs::nal::Address;
use distcache_tools::evloop::{Event, Poller};
use distcache_tools::redis::{Answer, Completion, Config, Failure, RedisConn, Request};
use distcache_tools::sentinel::{self, Store};
use distcache_tools::tools::{self, log};
use redis_protocol::resp2::types::OwnedFrame;

use super::{free_port, Proc, TempDir};

pub const REDIS_SERVER: &str = "/usr/bin/redis-server";
pub const REDIS_SENTINEL: &str = "/usr/bin/redis-sentinel";
pub const REDIS_CLI: &str = "/usr/bin/redis-cli";

/// Whether `test` can run: every program of `bins` is installed (see
/// [`super::have_binary`]: skipped outside CI, a failure under CI=true).
pub fn have(test: &str, bins: &[&str]) -> bool {
    bins.iter().all(|b| super::have_binary(b, test))
}

/// Whether a redis-server test can run.
pub fn have_redis(test: &str) -> bool {
    have(test, &[REDIS_SERVER])
}

/// 127.0.0.1:port as an address to connect to.
pub fn loopback(port: u16) -> Address {
    Address::Ip {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        listen_only: false,
    }
}

/// A redis-server (or redis-sentinel) of our own.
pub struct Redis {
    pub port: u16,
    pub proc: Proc,
    pub dir: TempDir,
}

impl Redis {
    pub fn start(tag: &str) -> Redis {
        Self::start_on(tag, free_port())
    }

    pub fn start_on(tag: &str, port: u16) -> Redis {
        Self::start_with(tag, port, &[])
    }

    /// A redis-server on `port` with `extra` arguments (`--replicaof`...).
    pub fn start_with(tag: &str, port: u16, extra: &[&str]) -> Redis {
        let dir = TempDir::new(tag);
        let p = port.to_string();
        let d = dir.0.display().to_string();
        let mut args = vec![
            "--port",
            &p,
            "--bind",
            "127.0.0.1",
            "--dir",
            &d,
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ];
        args.extend_from_slice(extra);
        Self::spawn(REDIS_SERVER, &args, port, dir)
    }

    /// A redis-sentinel on `port` whose sentinel.conf (in its own
    /// directory: a sentinel rewrites it) holds `conf` after the port,
    /// bind and dir lines.
    pub fn sentinel(tag: &str, port: u16, conf: &str) -> Redis {
        let dir = TempDir::new(tag);
        let path = dir.path("sentinel.conf");
        let text = format!(
            "port {port}\nbind 127.0.0.1\ndir {}\ndaemonize no\n{conf}",
            dir.0.display()
        );
        std::fs::write(&path, text).unwrap();
        let path = path.display().to_string();
        Self::spawn(REDIS_SENTINEL, &[&path], port, dir)
    }

    fn spawn(exe: &str, args: &[&str], port: u16, dir: TempDir) -> Redis {
        let log = std::fs::File::create(dir.path("redis.log")).unwrap();
        let proc = Proc::spawn_with(
            exe,
            args,
            Stdio::from(log.try_clone().unwrap()),
            Stdio::from(log),
        );
        let r = Redis { port, proc, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // Answering: PONG, or NOAUTH with a password.
            match try_raw(port, &[b"PING"]) {
                Ok(OwnedFrame::SimpleString(s)) => {
                    assert_eq!(s, b"PONG");
                    return r;
                }
                Ok(OwnedFrame::Error(e)) if e.starts_with("NOAUTH") => return r,
                _ => {}
            }
            assert!(
                Instant::now() < deadline,
                "{exe} on port {port} not ready in 10 s: {}",
                r.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn addr(&self) -> Address {
        loopback(self.port)
    }

    /// The server's own log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path("redis.log")).unwrap_or_default()
    }

    pub fn raw(&self, args: &[&[u8]]) -> OwnedFrame {
        raw(self.port, args)
    }
}

/// `args` as a RESP array of bulk strings.
pub fn resp(args: &[&[u8]]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        v.extend_from_slice(a);
        v.extend_from_slice(b"\r\n");
    }
    v
}

/// One command on a fresh blocking connection.
pub fn try_raw(port: u16, args: &[&[u8]]) -> std::io::Result<OwnedFrame> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(&resp(args))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        if let Some((f, _)) = redis_protocol::resp2::decode::decode(&buf)
            .map_err(|e| std::io::Error::other(e.details().to_string()))?
        {
            return Ok(f);
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

pub fn raw(port: u16, args: &[&[u8]]) -> OwnedFrame {
    try_raw(port, args).unwrap_or_else(|e| panic!("redis on {port}: {args:?}: {e}"))
}

// ------------------------------------------------------------ the loop

/// The test process's log lines go to one file (one per test binary);
/// each test picks the lines naming its own server or master.
pub fn log_file() -> &'static Path {
    static LOG: OnceLock<PathBuf> = OnceLock::new();
    LOG.get_or_init(|| {
        let exe = std::env::current_exe().unwrap_or_default();
        let stem = exe
            .file_stem()
            .map_or("tests".into(), |s| s.to_string_lossy());
        let stem = stem.split('-').next().unwrap_or("tests").to_string();
        let p = std::env::temp_dir().join(format!("dcrs-{stem}-{}.log", std::process::id()));
        let _ = std::fs::remove_file(&p);
        log::setup("redis-tests", &log::Target::File(p.clone())).unwrap();
        p
    })
}

/// The log lines holding `tag`.
pub fn log_lines(tag: &str) -> Vec<String> {
    std::fs::read_to_string(log_file())
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(tag))
        .map(str::to_string)
        .collect()
}

/// What [`Drv`] drives: a [`RedisConn`] or a [`Store`].
pub trait Client {
    fn owns(&self, token: u64) -> bool;
    fn is_up(&self) -> bool;
    fn next_wake(&self) -> Option<u64>;
    fn on_event(&mut self, poller: &Poller, ev: &Event, now: u64, out: &mut Vec<Completion>);
    fn tick(&mut self, poller: &Poller, now: u64, out: &mut Vec<Completion>);
    fn send_queued(&mut self, poller: &Poller, now: u64, out: &mut Vec<Completion>);
    fn submit(
        &mut self,
        poller: &Poller,
        req: Request<'_>,
        token: u64,
        now: u64,
        out: &mut Vec<Completion>,
    ) -> Result<(), Failure>;
}

/// The poller token of a driven [`RedisConn`], and of a [`Store`]'s.
pub const REDIS_TOKEN: u64 = 1;
/// A [`Store`]'s sentinel client (and `SENTINEL_TOKEN + 1`).
pub const SENTINEL_TOKEN: u64 = 10;

impl Client for RedisConn {
    fn owns(&self, token: u64) -> bool {
        token == REDIS_TOKEN
    }
    fn is_up(&self) -> bool {
        RedisConn::is_up(self)
    }
    fn next_wake(&self) -> Option<u64> {
        RedisConn::next_wake(self)
    }
    fn on_event(&mut self, poller: &Poller, ev: &Event, now: u64, out: &mut Vec<Completion>) {
        RedisConn::on_event(self, poller, ev, now, out)
    }
    fn tick(&mut self, poller: &Poller, now: u64, out: &mut Vec<Completion>) {
        RedisConn::tick(self, poller, now, out)
    }
    fn send_queued(&mut self, poller: &Poller, now: u64, out: &mut Vec<Completion>) {
        RedisConn::send_queued(self, poller, now, out)
    }
    fn submit(
        &mut self,
        poller: &Poller,
        req: Request<'_>,
        token: u64,
        now: u64,
        out: &mut Vec<Completion>,
    ) -> Result<(), Failure> {
        RedisConn::submit(self, poller, req, token, now, out)
    }
}

impl Client for Store {
    fn owns(&self, token: u64) -> bool {
        Store::owns(self, token)
    }
    fn is_up(&self) -> bool {
        Store::is_up(self)
    }
    fn next_wake(&self) -> Option<u64> {
        Store::next_wake(self)
    }
    fn on_event(&mut self, poller: &Poller, ev: &Event, now: u64, out: &mut Vec<Completion>) {
        Store::on_event(self, poller, ev, now, out)
    }
    fn tick(&mut self, poller: &Poller, now: u64, out: &mut Vec<Completion>) {
        Store::tick(self, poller, now, out)
    }
    fn send_queued(&mut self, poller: &Poller, now: u64, out: &mut Vec<Completion>) {
        Store::send_queued(self, poller, now, out)
    }
    fn submit(
        &mut self,
        poller: &Poller,
        req: Request<'_>,
        token: u64,
        now: u64,
        out: &mut Vec<Completion>,
    ) -> Result<(), Failure> {
        Store::submit(self, poller, req, token, now, out)
    }
}

/// A Redis client and the epoll loop around it, in the test's thread.
pub struct Drv<T> {
    pub poller: Poller,
    pub rc: T,
    pub done: Vec<Completion>,
    pub next_token: u64,
}

impl Drv<RedisConn> {
    /// A [`RedisConn`] to `cfg.addr`.
    pub fn new(cfg: Config) -> Self {
        Self::with(|p, now| RedisConn::new(cfg, REDIS_TOKEN, p, now))
    }
}

impl Drv<Store> {
    /// A [`Store`] following the primary the sentinels of `scfg` name.
    pub fn store(scfg: sentinel::Config, rcfg: Config) -> Self {
        Self::with(|p, now| Store::new(scfg, rcfg, SENTINEL_TOKEN, REDIS_TOKEN, p, now))
    }

    /// A [`Store`] on the one server `rcfg.addr`.
    pub fn direct(rcfg: Config) -> Self {
        Self::with(|p, now| Store::direct(rcfg, REDIS_TOKEN, p, now))
    }
}

impl<T: Client> Drv<T> {
    fn with(make: impl FnOnce(&Poller, u64) -> T) -> Self {
        log_file();
        let poller = Poller::new().unwrap();
        let rc = make(&poller, tools::now_ms());
        Drv {
            poller,
            rc,
            done: Vec::new(),
            next_token: 100,
        }
    }

    /// Run the loop once (at most `max` waiting).
    pub fn turn(&mut self, max: Duration) {
        // What was submitted since the last turn, in one write (as a
        // daemon's loop does before it waits).
        self.rc
            .send_queued(&self.poller, tools::now_ms(), &mut self.done);
        let now = tools::now_ms();
        let wait = self.rc.next_wake().map_or(max, |t| {
            Duration::from_millis(t.saturating_sub(now)).min(max)
        });
        let mut evs = Vec::new();
        self.poller.wait(Some(wait), &mut evs).unwrap();
        for ev in &evs {
            assert!(self.rc.owns(ev.token), "an event for token {}", ev.token);
            self.rc
                .on_event(&self.poller, ev, tools::now_ms(), &mut self.done);
        }
        self.rc.tick(&self.poller, tools::now_ms(), &mut self.done);
    }

    /// Run the loop until `cond` or `limit` (then panic naming `what`).
    pub fn until(&mut self, limit: Duration, what: &str, mut cond: impl FnMut(&mut Self) -> bool) {
        let end = Instant::now() + limit;
        while !cond(self) {
            assert!(Instant::now() < end, "not within {limit:?}: {what}");
            self.turn(Duration::from_millis(20));
        }
    }

    /// Run the loop for `ms`.
    pub fn idle(&mut self, ms: u64) {
        let t = tools::now_ms();
        self.until(Duration::from_millis(ms + 2000), "time passes", |_| {
            tools::now_ms() >= t + ms
        });
    }

    pub fn wait_up(&mut self) {
        self.wait_up_within(Duration::from_secs(10));
    }

    pub fn wait_up_within(&mut self, limit: Duration) {
        self.until(limit, "the connection comes up", |d| d.rc.is_up());
    }

    pub fn submit(&mut self, req: Request<'_>) -> Result<u64, Failure> {
        let t = self.next_token;
        self.next_token += 1;
        self.rc
            .submit(&self.poller, req, t, tools::now_ms(), &mut self.done)
            .map(|()| t)
    }

    /// The answer for `token`, waiting at most `limit`.
    pub fn answer(&mut self, token: u64, limit: Duration) -> Answer {
        let mut found = None;
        self.until(limit, &format!("an answer for token {token}"), |d| {
            if let Some(i) = d.done.iter().position(|c| c.token == token) {
                found = Some(d.done.remove(i).answer);
            }
            found.is_some()
        });
        found.unwrap()
    }

    pub fn call(&mut self, req: Request<'_>) -> Answer {
        match self.submit(req) {
            Ok(t) => self.answer(t, Duration::from_secs(5)),
            Err(f) => Answer::Failed(f),
        }
    }
}

// ------------------------------------------------- a Sentinel deployment

/// The sentinel.conf lines (after port, bind, dir) monitoring `master`
/// at `port` with quorum 2.
pub fn monitor(master: &str, port: u16, extra: &str) -> String {
    format!(
        "sentinel monitor {master} 127.0.0.1 {port} 2\n\
         sentinel down-after-milliseconds {master} 1000\n\
         sentinel failover-timeout {master} 5000\n\
         sentinel parallel-syncs {master} 1\n{extra}"
    )
}

/// A primary, optionally a replica, and sentinels on the given ports.
pub struct Cluster {
    pub master: String,
    pub primary: Redis,
    pub replica: Option<Redis>,
    pub sentinels: Vec<Redis>,
}

impl Cluster {
    pub fn start(tag: &str, replica: bool, sentinel_ports: &[u16], extra: &str) -> Cluster {
        let master = format!("{tag}-m");
        let primary = Redis::start(&format!("{tag}-primary"));
        let replica = replica.then(|| {
            let p = primary.port.to_string();
            Redis::start_with(
                &format!("{tag}-replica"),
                free_port(),
                &["--replicaof", "127.0.0.1", &p],
            )
        });
        let conf = monitor(&master, primary.port, extra);
        let sentinels = sentinel_ports
            .iter()
            .enumerate()
            .map(|(i, &p)| Redis::sentinel(&format!("{tag}-sentinel{i}"), p, &conf))
            .collect();
        Cluster {
            master,
            primary,
            replica,
            sentinels,
        }
    }

    /// Wait until the replica is in sync and every sentinel knows it and
    /// the other sentinels (a fail-over needs both).
    pub fn wait_ready(&self, password: Option<&str>) {
        let deadline = Instant::now() + Duration::from_secs(40);
        let replica = self.replica.as_ref().expect("a replica");
        loop {
            let synced = matches!(
                replica.raw(&[b"INFO", b"replication"]),
                OwnedFrame::BulkString(ref s) if String::from_utf8_lossy(s).contains("master_link_status:up")
            );
            // What each sentinel knows: (replicas, other sentinels).
            let seen: Vec<(usize, usize)> = self
                .sentinels
                .iter()
                .map(|s| {
                    let n = |what: &[u8]| match sentinel_cmd(
                        s.port,
                        password,
                        &[b"SENTINEL", what, self.master.as_bytes()],
                    ) {
                        OwnedFrame::Array(a) => a.len(),
                        _ => 0,
                    };
                    (n(b"replicas"), n(b"sentinels"))
                })
                .collect();
            let known = seen
                .iter()
                .all(|&(r, o)| r >= 1 && o + 1 >= self.sentinels.len());
            if synced && known {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "sentinels not ready in 40 s (replica synced: {synced}; \
                 (replicas, other sentinels) each knows: {seen:?})"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// One command to a sentinel, after AUTH when it has a password.
pub fn sentinel_cmd(port: u16, password: Option<&str>, args: &[&[u8]]) -> OwnedFrame {
    let Some(pw) = password else {
        return raw(port, args);
    };
    // AUTH and the command on one connection.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut req = resp(&[b"AUTH", pw.as_bytes()]);
    req.extend(resp(args));
    s.write_all(&req).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let mut frames = Vec::new();
    while frames.len() < 2 {
        while let Some((f, used)) = redis_protocol::resp2::decode::decode(&buf).unwrap() {
            buf.drain(..used);
            frames.push(f);
        }
        if frames.len() == 2 {
            break;
        }
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "sentinel {port} closed");
        buf.extend_from_slice(&chunk[..n]);
    }
    frames.pop().unwrap()
}
