//! A real redis-server for the tests: started on a free loopback port in
//! a temporary directory (no persistence), stopped by pid when dropped;
//! and one-command blocking connections to it (RESP through the
//! redis-protocol crate). Tests skip without /usr/bin/redis-server unless
//! CI=true.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use distcache_rs::nal::Address;
use redis_protocol::resp2::types::OwnedFrame;

use super::{free_port, Proc, TempDir};

pub const REDIS_SERVER: &str = "/usr/bin/redis-server";
pub const REDIS_CLI: &str = "/usr/bin/redis-cli";

/// Whether the tests can run; outside CI a machine without Redis skips.
pub fn have_redis(test: &str) -> bool {
    if Path::new(REDIS_SERVER).exists() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{REDIS_SERVER} is missing under CI (.ci/run installs redis-server)"
    );
    eprintln!("{test}: skipped, {REDIS_SERVER} is not installed");
    false
}

pub fn loopback(port: u16) -> Address {
    Address::Ip {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        listen_only: false,
    }
}

/// A redis-server of our own.
pub struct Redis {
    pub port: u16,
    _proc: Proc,
    _dir: TempDir,
}

impl Redis {
    pub fn start(tag: &str) -> Redis {
        Self::start_on(tag, free_port())
    }

    pub fn start_on(tag: &str, port: u16) -> Redis {
        Self::start_with(tag, port, &[])
    }

    /// [`Redis::start_on`] with more redis-server arguments (a TLS port
    /// beside the plain one, which the readiness check and
    /// [`Redis::raw`] use).
    pub fn start_with(tag: &str, port: u16, extra: &[&str]) -> Redis {
        let dir = TempDir::new(tag);
        let log = std::fs::File::create(dir.path("redis.log")).unwrap();
        let p = port.to_string();
        let d = dir.0.display().to_string();
        let proc = Proc::spawn_with(
            REDIS_SERVER,
            &[
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
            ]
            .into_iter()
            .chain(extra.iter().copied())
            .collect::<Vec<_>>(),
            std::process::Stdio::from(log.try_clone().unwrap()),
            std::process::Stdio::from(log),
        );
        let r = Redis {
            port,
            _proc: proc,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(OwnedFrame::SimpleString(s)) = try_raw(port, &[b"PING"]) {
                assert_eq!(s, b"PONG");
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {port} not ready in 10 s: {}",
                std::fs::read_to_string(r._dir.path("redis.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn addr(&self) -> Address {
        loopback(self.port)
    }

    pub fn raw(&self, args: &[&[u8]]) -> OwnedFrame {
        raw(self.port, args)
    }
}

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
