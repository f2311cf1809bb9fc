//! Real Redis processes for the tests (Debian's redis-server and
//! redis-sentinel), each on a free loopback port in its own temporary
//! directory, without persistence, stopped by pid; and one-shot commands on
//! a fresh blocking connection to look at them from the side.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use distcache_rs::nal::Address;
use redis_protocol::resp2::types::OwnedFrame;

use super::{free_port, Proc, TempDir};

pub const REDIS_SERVER: &str = "/usr/bin/redis-server";
pub const REDIS_SENTINEL: &str = "/usr/bin/redis-sentinel";
pub const REDIS_CLI: &str = "/usr/bin/redis-cli";

/// Whether `test` can run: every program of `bins` is installed. Outside
/// CI a machine without them skips (with a message); under CI=true a
/// missing one fails the test (.ci/run installs them).
pub fn have(test: &str, bins: &[&str]) -> bool {
    let Some(missing) = bins.iter().find(|b| !Path::new(b).exists()) else {
        return true;
    };
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{missing} is missing under CI (.ci/run installs the redis packages)"
    );
    eprintln!("{test}: skipped, {missing} is not installed");
    false
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
