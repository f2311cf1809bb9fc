//! dc_snoop: a transparent distcache proxy that logs the traffic decoded.
//!
//! Every accepted connection gets its own connection to the server; bytes
//! are relayed unchanged both ways, and a copy of each direction is decoded
//! (requests from the client, responses from the server) and printed one
//! message per line. A stream that is not valid distcache is reported and
//! that connection pair closed; closing either side closes the other.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use distcache_rs::nal::Address;
use distcache_rs::proto::{self, status, Cmd, Direction, MsgRef};
use distcache_tools::evloop::{self, Event, Poller};
use distcache_tools::link::Link;
use distcache_tools::tls::{TlsClient, TlsStream};
use distcache_tools::tlsconf::{self, DaemonAddress};
use distcache_tools::tools::{self, Cli, Flag, Listener, SockOpts};

const CLI: Cli = Cli {
    tool: "dc_snoop",
    synopsis: "-listen <address> -server <address> [options]",
    flags: &[
        Flag::value(&["listen"], "address", "where clients connect (required)"),
        Flag::value(
            &["server", "connect"],
            "address",
            "where to relay to (required)",
        ),
        Flag::switch(&["hex"], "also dump every message's payload in hex"),
    ],
    extra: tlsconf::CONNECT_FLAGS,
};

const TOK_LISTEN: u64 = 0;
const TOK_SIGNAL: u64 = 1;
const READ_CHUNK: usize = 64 * 1024;
/// Stop reading a side while the other side has this much unsent.
const MAX_PENDING: usize = 1 << 20;
const CONNECT_TIMEOUT_MS: u64 = 5000;

/// Wall-clock time of day (UTC) with microseconds.
fn now_str() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let s = d.as_secs() % 86400;
    format!(
        "{:02}:{:02}:{:02}.{:06}",
        s / 3600,
        s / 60 % 60,
        s % 60,
        d.subsec_micros()
    )
}

/// Describe a decoded message (without time and connection).
pub fn describe(msg: &MsgRef<'_>, frames: usize) -> String {
    let dir = if msg.is_response { "s->c" } else { "c->s" };
    let kind = if msg.is_response { "RESP" } else { "REQ " };
    let mut s = format!(
        "{dir} {kind} uid={} {} len={}",
        msg.uid,
        msg.cmd.name(),
        msg.payload.len()
    );
    if frames > 1 {
        let _ = write!(s, " frames={frames}");
    }
    let p = msg.payload;
    if !msg.is_response {
        if msg.cmd == Cmd::Add {
            if p.len() >= 8 {
                let timeout = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
                let id_len = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
                let data = (p.len() - 8).saturating_sub(id_len as usize);
                let _ = write!(s, " timeout_ms={timeout} id_len={id_len} data_len={data}");
            } else {
                s.push_str(" (short ADD payload)");
            }
        } else {
            let _ = write!(s, " id_len={}", p.len());
        }
        return s;
    }
    let result = match (msg.cmd, p.len()) {
        (_, 0) => "result=EMPTY (failure from a proxy)".to_string(),
        (Cmd::Get, 1) => format!("result={}", status::name(p[0])),
        (Cmd::Get, n) if n >= 5 => format!("result=HIT data_len={n}"),
        (Cmd::Get, n) => format!("result=SHORT ({n} bytes: not a hit)"),
        (_, 1) => format!("result={}", status::name(p[0])),
        (_, n) => format!("result=UNEXPECTED ({n} bytes)"),
    };
    s.push(' ');
    s.push_str(&result);
    s
}

/// Classic hex dump lines, indented.
pub fn hexdump(data: &[u8]) -> String {
    let mut s = String::new();
    for (i, chunk) in data.chunks(16).enumerate() {
        let _ = write!(s, "    {:06x} ", i * 16);
        for j in 0..16 {
            match chunk.get(j) {
                Some(b) => {
                    let _ = write!(s, " {b:02x}");
                }
                None => s.push_str("   "),
            }
        }
        s.push_str("  |");
        for b in chunk {
            s.push(if b.is_ascii_graphic() || *b == b' ' {
                *b as char
            } else {
                '.'
            });
        }
        s.push_str("|\n");
    }
    s
}

/// A relayed connection: the application's side and the server's, each a
/// [`Link`]. What one side sends is read onto its input (decoded there for
/// the printout) and copied to the other side's output.
struct Pair {
    client: Link,
    server: Link,
    /// Frames of the message being received, per direction (client to
    /// server, server to client).
    frames: [usize; 2],
    /// Set once either side has closed: flush, then close.
    closing: Option<u64>,
}

struct Snoop {
    poller: Poller,
    listener: Listener,
    /// `-server`: a libnal address or `TLS:host:port`.
    server: DaemonAddress,
    /// `-server TLS:...`: the client side of the TLS link to the server.
    tls: Option<TlsClient>,
    hex: bool,
    pairs: HashMap<u64, Pair>,
    next_conn: u64,
    out: io::BufWriter<io::Stdout>,
    scratch: Vec<u8>,
    accept_paused_until: Option<u64>,
}

impl Snoop {
    fn line(&mut self, n: u64, text: &str) {
        let _ = writeln!(self.out, "{} conn#{n} {text}", now_str());
    }

    fn accept(&mut self) {
        for _ in 0..256 {
            let (client, peer) = match self.listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors or similar: pause instead of spinning.
                    tools::log::line(format_args!("accept failed: {e}; pausing new connections"));
                    let _ = self.poller.modify(self.listener.as_raw_fd(), TOK_LISTEN, 0);
                    self.accept_paused_until = Some(tools::now_ms() + 100);
                    return;
                }
            };
            self.next_conn += 1;
            let n = self.next_conn;
            let client = match Link::accepted(client, n * 2, Direction::Requests, &self.poller) {
                Ok(l) => l,
                Err(e) => {
                    tools::log::line(format_args!("cannot watch connection {n}: {e}"));
                    continue;
                }
            };
            let made = match &self.tls {
                Some(tls) => Link::connect_over(
                    &self.server.addr,
                    n * 2 + 1,
                    Direction::Responses,
                    &self.poller,
                    |tcp| Ok(Box::new(TlsStream::connect(tcp, tls)?)),
                ),
                None => Link::connect(
                    &self.server.addr,
                    n * 2 + 1,
                    Direction::Responses,
                    &self.poller,
                ),
            };
            let server = match made {
                Ok(l) => l,
                Err(e) => {
                    let msg = format!(
                        "open from {peer}: cannot connect to {}: {e}; closed",
                        self.server
                    );
                    self.line(n, &msg);
                    continue;
                }
            };
            let msg = format!("open from {peer} -> {}", self.server);
            self.line(n, &msg);
            self.pairs.insert(
                n,
                Pair {
                    client,
                    server,
                    frames: [0, 0],
                    closing: None,
                },
            );
        }
    }

    fn close(&mut self, n: u64, why: &str) {
        if self.pairs.remove(&n).is_some() {
            // Closing the descriptors takes them out of the epoll set.
            let msg = format!("closed: {why}");
            self.line(n, &msg);
        }
    }

    /// Decode what arrived on one flow and print it. Err = corrupt stream.
    fn analyse(&mut self, n: u64, to_server: bool) -> Result<(), String> {
        let hex = self.hex;
        let Some(p) = self.pairs.get_mut(&n) else {
            return Ok(());
        };
        let (src, frames) = if to_server {
            (&mut p.client, &mut p.frames[0])
        } else {
            (&mut p.server, &mut p.frames[1])
        };
        let mut lines = Vec::new();
        let mut off = 0;
        let res = loop {
            match src.dec.feed(&src.inbuf[off..]) {
                Err(e) => break Err(e.to_string()),
                Ok(proto::Event::NeedMore) => break Ok(()),
                Ok(proto::Event::Fragment { consumed }) => {
                    off += consumed;
                    *frames += 1;
                }
                Ok(proto::Event::Message { consumed, msg }) => {
                    off += consumed;
                    let count = *frames + 1;
                    *frames = 0;
                    let mut s = describe(&msg, count);
                    if hex && !msg.payload.is_empty() {
                        s.push('\n');
                        s.push_str(hexdump(msg.payload).trim_end());
                    }
                    lines.push(s);
                }
            }
        };
        src.consumed(off);
        for l in lines {
            self.line(n, &l);
        }
        res
    }

    fn on_event(&mut self, ev: &Event) {
        let n = ev.token / 2;
        let from_server = ev.token % 2 == 1;
        let Some(p) = self.pairs.get_mut(&n) else {
            return;
        };
        if from_server && p.server.connecting() {
            match p.server.connect_event(ev) {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    let why = format!("cannot connect to {}: {e}", self.server);
                    return self.close(n, &why);
                }
            }
        }
        let who = if from_server { "server" } else { "client" };
        let (src, sink) = if from_server {
            (&mut p.server, &mut p.client)
        } else {
            (&mut p.client, &mut p.server)
        };
        // Writes first (and a TLS handshake's records).
        if (ev.writable() || src.handshaking()) && !src.connecting() {
            if let Err(e) = src.flush() {
                let e = tlsconf::failure_reason(&e);
                return self.close(n, &format!("write to {who} failed: {e}"));
            }
        }
        if !ev.readable() || p.closing.is_some() || src.connecting() {
            return;
        }
        let before = src.inbuf.len();
        let r = src.read_some(&mut self.scratch, MAX_PENDING.saturating_sub(sink.unsent()));
        // What arrived goes on to the other side as it is.
        sink.out().extend_from_slice(&src.inbuf[before..]);
        if let Err(e) = self.analyse(n, !from_server) {
            return self.close(n, &format!("corrupt stream from {who}: {e}"));
        }
        match r {
            Ok(got) if got.eof => {
                let Some(p) = self.pairs.get_mut(&n) else {
                    return;
                };
                p.closing = Some(tools::now_ms());
                // Nothing more is read from either side; the other side
                // gets what is still buffered for it, then is closed.
                let (src, sink) = if from_server {
                    (&mut p.server, &mut p.client)
                } else {
                    (&mut p.client, &mut p.server)
                };
                src.deregister(&self.poller);
                let _ = sink.set_interest(&self.poller, evloop::WRITE);
                self.line(n, &format!("{who} closed its side"));
            }
            Ok(_) => {}
            Err(e) => {
                let e = tlsconf::failure_reason(&e);
                self.close(n, &format!("read from {who} failed: {e}"))
            }
        }
    }

    /// Flush, adjust interests, finish closing pairs.
    fn housekeeping(&mut self) {
        let now = tools::now_ms();
        let mut done = Vec::new();
        for (n, p) in self.pairs.iter_mut() {
            if let Some(since) = p.server.connecting_since() {
                if now >= since + CONNECT_TIMEOUT_MS {
                    done.push((*n, "connect to server timed out"));
                }
                continue;
            }
            if p.server.handshaking() && now >= p.server.born() + CONNECT_TIMEOUT_MS {
                done.push((*n, "TLS handshake with the server timed out"));
                continue;
            }
            if (p.server.unsent() > 0 || p.server.wants_write()) && p.server.flush().is_err() {
                done.push((*n, "write to server failed"));
                continue;
            }
            if p.client.unsent() > 0 && p.client.flush().is_err() {
                done.push((*n, "write to client failed"));
                continue;
            }
            if let Some(since) = p.closing {
                if (p.server.unsent() == 0 && p.client.unsent() == 0) || now >= since + 2000 {
                    done.push((*n, "relay finished"));
                }
                continue;
            }
            // Read from a side only while the other side's output is under
            // the cap; write where output waits.
            let want = |other: &Link, me: &Link| {
                let mut i = 0;
                if other.unsent() < MAX_PENDING {
                    i |= evloop::READ;
                }
                if me.unsent() > 0 || me.wants_write() {
                    i |= evloop::WRITE;
                }
                i
            };
            let ci = want(&p.server, &p.client);
            let si = want(&p.client, &p.server);
            let _ = p.client.set_interest(&self.poller, ci);
            let _ = p.server.set_interest(&self.poller, si);
        }
        for (n, why) in done {
            self.close(n, why);
        }
        let _ = self.out.flush();
    }

    fn run(&mut self, signals: &tools::Signals) -> io::Result<()> {
        self.poller
            .add(self.listener.as_raw_fd(), TOK_LISTEN, evloop::READ)?;
        self.poller.add(signals.fd(), TOK_SIGNAL, evloop::READ)?;
        let mut events = Vec::new();
        loop {
            self.housekeeping();
            if self
                .accept_paused_until
                .is_some_and(|t| tools::now_ms() >= t)
            {
                self.accept_paused_until = None;
                self.poller
                    .modify(self.listener.as_raw_fd(), TOK_LISTEN, evloop::READ)?;
            }
            let busy = self.accept_paused_until.is_some()
                || self.pairs.values().any(|p| {
                    p.closing.is_some() || p.server.connecting() || p.server.handshaking()
                });
            // Answers a TLS session decrypted and the descriptor will not
            // show: relayed now, as if it had.
            let held: Vec<u64> = self
                .pairs
                .iter()
                .filter(|(_, p)| p.closing.is_none() && p.server.has_buffered_input())
                .map(|(n, _)| n * 2 + 1)
                .collect();
            let timeout = if !held.is_empty() {
                Some(Duration::ZERO)
            } else {
                busy.then(|| Duration::from_millis(50))
            };
            self.poller.wait(timeout, &mut events)?;
            for token in held {
                if !events.iter().any(|e| e.token == token) {
                    events.push(Event {
                        token,
                        events: evloop::READ,
                    });
                }
            }
            for ev in &events {
                match ev.token {
                    TOK_LISTEN => self.accept(),
                    TOK_SIGNAL => {
                        if signals.pending().is_some() {
                            let _ = self.out.flush();
                            return Ok(());
                        }
                    }
                    _ => self.on_event(ev),
                }
            }
        }
    }
}

fn main() -> ExitCode {
    let p = match CLI.parse_env() {
        Ok(p) => p,
        Err(code) => return ExitCode::from(code as u8),
    };
    let fail = |m: String| ExitCode::from(CLI.fail(&m) as u8);
    let listen = match p.required("listen") {
        Ok(v) => v,
        Err(m) => return fail(m),
    };
    let listen = match Address::parse(listen) {
        Ok(a) => a,
        Err(e) => return fail(format!("flag -listen: {e}")),
    };
    let server = match p.required("server") {
        Ok(v) => v,
        Err(m) => return fail(m),
    };
    let server = match DaemonAddress::parse(server) {
        Ok(a) if a.addr.can_connect() => a,
        Ok(a) => return fail(format!("flag -server: {a} names no host to connect to")),
        Err(e) => return fail(format!("flag -server: {e}")),
    };
    let tls = match tlsconf::client_for(&p, &server, &format!("-server {server}")) {
        Ok(t) => t,
        Err(m) if m.starts_with("missing") || m.starts_with("flag") => return fail(m),
        Err(m) => {
            tools::log::fatal(&m);
            return ExitCode::from(1);
        }
    };
    let listener = match tools::listen(&listen, &SockOpts::default()) {
        Ok(l) => l,
        Err(e) => {
            tools::log::fatal(&e.to_string());
            return ExitCode::from(1);
        }
    };
    let signals = match tools::Signals::install(false, false) {
        Ok(s) => s,
        Err(e) => {
            tools::log::fatal(&e.to_string());
            return ExitCode::from(1);
        }
    };
    let _ = tools::raise_nofile_limit();
    let poller = match Poller::new() {
        Ok(p) => p,
        Err(e) => {
            tools::log::fatal(&e.to_string());
            return ExitCode::from(1);
        }
    };
    let mut s = Snoop {
        poller,
        listener,
        server,
        tls,
        hex: p.has("hex"),
        pairs: HashMap::new(),
        next_conn: 0,
        out: io::BufWriter::new(io::stdout()),
        scratch: vec![0u8; READ_CHUNK],
        accept_paused_until: None,
    };
    match s.run(&signals) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tools::log::fatal(&e.to_string());
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(is_response: bool, cmd: Cmd, payload: &[u8]) -> MsgRef<'_> {
        MsgRef {
            is_response,
            uid: 42,
            cmd,
            level: proto::PROTO_LEVEL,
            payload,
        }
    }

    #[test]
    fn describes_requests_and_results() {
        let mut add = Vec::new();
        proto::encode_add(&mut add, 300000, b"0123456789", b"data!");
        let s = describe(&msg(false, Cmd::Add, &add), 1);
        assert_eq!(
            s,
            "c->s REQ  uid=42 ADD len=23 timeout_ms=300000 id_len=10 data_len=5"
        );
        assert_eq!(
            describe(&msg(true, Cmd::Add, &[101]), 1),
            "s->c RESP uid=42 ADD len=1 result=ADD_MATCHING_SESSION"
        );
        assert_eq!(
            describe(&msg(true, Cmd::Get, &[1]), 1),
            "s->c RESP uid=42 GET len=1 result=NOTOK"
        );
        assert_eq!(
            describe(&msg(true, Cmd::Get, &[7u8; 3000]), 2),
            "s->c RESP uid=42 GET len=3000 frames=2 result=HIT data_len=3000"
        );
        assert!(describe(&msg(true, Cmd::Have, &[]), 1).contains("EMPTY"));
        assert!(describe(&msg(true, Cmd::Remove, &[2]), 1).contains("DISCONNECTED"));
        assert_eq!(
            describe(&msg(false, Cmd::Get, b"abc"), 1),
            "c->s REQ  uid=42 GET len=3 id_len=3"
        );
    }

    #[test]
    fn hexdump_format() {
        let d = hexdump(b"hello, world!\x00\x01\x02xyz");
        let lines: Vec<&str> = d.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("    000000  68 65 6c 6c 6f"));
        assert!(lines[0].ends_with("|hello, world!...|"));
        assert!(lines[1].starts_with("    000010  78 79 7a"));
    }
}
