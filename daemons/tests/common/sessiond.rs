//! stunnel's sessiond protocol from the test side: a dc_server with a
//! sessiond port, datagrams built and sent, GET answers checked (layout as
//! established for stunnel 5.68: see daemons/src/sessiond.rs).

use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::*;
use distcache_rs::client::Client;

pub const BIN: &str = env!("CARGO_BIN_EXE_dc_server");

pub const NEW: u8 = 0x00;
pub const GET: u8 = 0x01;
pub const REMOVE: u8 = 0x02;
pub const ERR: u8 = 0x80;
pub const OK: u8 = 0x81;

/// A running dc_server with a UNIX distcache listener and a sessiond port.
pub struct Server {
    pub proc: Proc,
    pub dir: TempDir,
    pub udp: SocketAddr,
}

impl Server {
    pub fn start(extra: &[&str]) -> Server {
        let dir = TempDir::new("sessiond");
        // A free UDP port can be taken by someone else before the server
        // binds it: try a few.
        for _ in 0..5 {
            let port = UdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let sd = format!("127.0.0.1:{port}");
            let listen = dir.addr("dc");
            // -progress 1: a status line after every busy loop iteration,
            // so the last one shows the final counters.
            let mut args = vec!["-listen", &listen, "-sessiond", &sd, "-progress", "1"];
            args.extend_from_slice(extra);
            let mut proc = Proc::spawn_with(BIN, &args, Stdio::piped(), Stdio::piped());
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && proc.alive() {
                if UnixStream::connect(dir.path("dc")).is_ok() {
                    return Server {
                        proc,
                        dir,
                        udp: sd.parse().unwrap(),
                    };
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let (code, err) = proc.terminate();
            eprintln!("dc_server did not start on {sd} ({code:?}): {err}");
        }
        panic!("dc_server -sessiond never started");
    }

    pub fn distcache(&self) -> Client {
        Client::new(&self.dir.addr("dc"), 0).unwrap()
    }

    /// SIGTERM; returns the last status line printed.
    pub fn last_status(self) -> String {
        let (code, out, err) = self.proc.terminate_all();
        assert_eq!(code, Some(0), "stderr: {err}");
        out.lines()
            .rfind(|l| l.contains("sessiond:"))
            .unwrap_or_else(|| panic!("no status line with sessiond counters in {out:?}"))
            .to_string()
    }
}

pub fn sock() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s
}

pub fn dgram(t: u8, timeout: u16, key: &[u8; 32], value: &[u8]) -> Vec<u8> {
    let mut d = vec![1, t];
    d.extend_from_slice(&timeout.to_be_bytes());
    d.extend_from_slice(key);
    d.extend_from_slice(value);
    d
}

pub fn key(b: u8) -> [u8; 32] {
    let mut k = [b; 32];
    k[0] = 0xA5;
    k
}

/// A DER-looking session of `n` bytes.
pub fn der(tag: u8, n: usize) -> Vec<u8> {
    let mut v = vec![0x30, 0x7e];
    v.extend((0..n - 2).map(|i| tag.wrapping_add(i as u8)));
    v
}

/// Send a GET from `s` and return the reply.
pub fn get(s: &UdpSocket, to: SocketAddr, k: &[u8; 32]) -> Vec<u8> {
    s.send_to(&dgram(GET, 0, k, &[]), to).unwrap();
    let mut buf = [0u8; 2048];
    let (n, from) = s.recv_from(&mut buf).expect("no answer to a GET");
    assert_eq!(from, to, "answer from another address");
    buf[..n].to_vec()
}

pub fn send_dgram(s: &UdpSocket, to: SocketAddr, d: &[u8]) {
    assert_eq!(s.send_to(d, to).unwrap(), d.len());
}

/// Send GET for `k` and check it is answered OK with `value`.
pub fn expect_hit(s: &UdpSocket, to: SocketAddr, k: &[u8; 32], value: &[u8]) {
    assert_eq!(get(s, to, k), dgram(OK, 0, k, value));
}

pub fn expect_miss(s: &UdpSocket, to: SocketAddr, k: &[u8; 32]) {
    assert_eq!(get(s, to, k), dgram(ERR, 0, k, &[]));
}
