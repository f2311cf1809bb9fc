//! dc_client: the local proxy. Applications connect to it (normally over a
//! UNIX socket, often one connection per operation); it multiplexes all
//! their requests over ONE persistent connection to dc_server, renaming
//! request uids on the way so that clients never collide, and routes each
//! answer back under the client's own uid.
//!
//! While the server is unreachable every request is answered at once with
//! an empty payload (a failure to the client library); requests in flight
//! when the server connection dies are answered with the 1-byte payload
//! 0x02 (DISCONNECTED). The server is retried every `-retry` ms.

mod mux;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::Duration;

use distcache_rs::evloop::{self, Event, Poller};
use distcache_rs::nal::Address;
use distcache_rs::proto::{status, AddParse, Cmd, Decoder, Direction};
use distcache_rs::tools::{self, Cli, Flag, Listener, SockOpts, Stream};

use mux::Mux;

const CLI: Cli = Cli {
    tool: "dc_client",
    synopsis: "-server <address> [options]",
    flags: &[
        Flag::value(
            &["server", "connect"],
            "address",
            "the dc_server to proxy to (required)",
        ),
        Flag::value(
            &["listen"],
            "address",
            "where applications connect (default UNIX:/tmp/scache)",
        ),
        Flag::switch(
            &["daemon"],
            "detach from the terminal and run in the background",
        ),
        Flag::value(&["user"], "user", "drop to this user once listening"),
        Flag::value(&["sockowner"], "user", "owner of the UNIX listening socket"),
        Flag::value(
            &["sockgroup"],
            "group",
            "group of the UNIX listening socket",
        ),
        Flag::value(&["sockperms"], "octal", "mode of the UNIX listening socket"),
        Flag::value(&["pidfile"], "path", "write the process id to this file"),
        Flag::value(
            &["retry"],
            "msecs",
            "retry period while the server is unreachable (default 5000)",
        ),
        Flag::value(
            &["idle"],
            "msecs",
            "drop application connections idle this long (default 0 = never)",
        ),
        Flag::value(
            &["maxconns"],
            "num",
            "most application connections at once (default 4096)",
        ),
        Flag::value(
            &["stall"],
            "msecs",
            "reconnect when the server answers nothing this long while requests wait (default 10000; 0 = never)",
        ),
    ],
};

const TOK_LISTEN: u64 = 0;
const TOK_SIGNAL: u64 = 1;
/// First token handed out to connections (clients and the upstream).
const TOK_FIRST: u64 = 16;

/// Bytes read from a socket per call.
const READ_CHUNK: usize = 64 * 1024;
/// At most this much is read from one connection per event, for fairness.
const READ_BUDGET: usize = 256 * 1024;
/// A client with this many requests in flight is not read from until some
/// are answered.
const MAX_CLIENT_INFLIGHT: usize = 1024;
/// A client whose unread answers exceed this is not read from meanwhile.
const MAX_CLIENT_OUT: usize = 4 << 20;
/// How long a non-blocking connect to the server may take.
const CONNECT_TIMEOUT_MS: u64 = 5000;
/// Requests arriving while a connection is being made wait for it this
/// long at most; after that they are failed at once (the server is slow to
/// answer a connect: as good as unreachable) while the connect goes on.
const CONNECT_GRACE_MS: u64 = 200;
/// How long accepting stops after accept() failed (e.g. out of descriptors).
const ACCEPT_PAUSE_MS: u64 = 100;
/// Default `-maxconns`. An Apache child keeps at most a few pooled
/// connections (libdistcache keeps up to 32 idle ones per process), so 4096
/// covers the largest MaxRequestWorkers settings in use, well within a
/// typical descriptor limit.
const DEFAULT_MAXCONNS: u64 = 4096;
/// Default `-stall`: a server that answers nothing for 10 s while requests
/// wait is taken as hung (the library gives up after 2 s by default).
const DEFAULT_STALL_MS: u64 = 10_000;

struct Config {
    server: Address,
    retry_ms: u64,
    idle_ms: u64,
    maxconns: usize,
    /// `-stall`: 0 = never.
    stall_ms: u64,
}

/// An application connection.
struct Client {
    stream: Stream,
    dec: Decoder,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    out_off: usize,
    inflight: usize,
    last_active: u64,
    interest: u32,
}

#[derive(PartialEq, Eq, Clone, Copy, Debug)]
enum UpState {
    Connecting { since: u64 },
    Up,
}

/// The connection to dc_server.
struct Upstream {
    token: u64,
    stream: Stream,
    state: UpState,
    dec: Decoder,
    inbuf: Vec<u8>,
    interest: u32,
}

struct Proxy {
    cfg: Config,
    poller: Poller,
    listener: Listener,
    clients: HashMap<u64, Client>,
    next_token: u64,
    up: Option<Upstream>,
    /// Requests encoded for the server, not yet written (from `up_off`).
    up_out: Vec<u8>,
    up_off: usize,
    mux: Mux,
    /// When to try connecting again (no upstream).
    next_retry: u64,
    /// The server is known to be unreachable (log only the first failure).
    outage_logged: bool,
    /// Clients with output to flush at the end of this round.
    dirty: Vec<u64>,
    next_idle_scan: u64,
    /// Read buffer shared by all connections.
    scratch: Vec<u8>,
    garbage_log: tools::RateLimit,
    /// Log lines about -maxconns refusals.
    limit_log: tools::RateLimit,
    /// Accepting is paused until then after an accept failure.
    accept_paused_until: Option<u64>,
    /// Last sign of life from the server while requests were in flight:
    /// an answer, or the first request after none were waiting.
    up_progress: u64,
}

fn log(msg: std::fmt::Arguments<'_>) {
    eprintln!("{} dc_client: {msg}", tools::timestamp());
}

/// Read what is available into `buf` (through `scratch`). Returns
/// (bytes read, eof).
fn read_some(s: &mut Stream, buf: &mut Vec<u8>, scratch: &mut [u8]) -> io::Result<(usize, bool)> {
    let mut total = 0;
    while total < READ_BUDGET {
        match s.read(scratch) {
            Ok(0) => return Ok((total, true)),
            Ok(n) => {
                buf.extend_from_slice(&scratch[..n]);
                total += n;
                if n < scratch.len() {
                    break;
                }
            }
            Err(e) => match e.kind() {
                io::ErrorKind::WouldBlock => break,
                io::ErrorKind::Interrupted => continue,
                _ => return Err(e),
            },
        }
    }
    Ok((total, false))
}

/// Write as much of `buf[*off..]` as the socket takes. Clears the buffer
/// once everything is written.
fn flush(s: &mut Stream, buf: &mut Vec<u8>, off: &mut usize) -> io::Result<()> {
    while *off < buf.len() {
        match s.write(&buf[*off..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => *off += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if *off == buf.len() {
        buf.clear();
        *off = 0;
    } else if *off > (1 << 20) && *off * 2 > buf.len() {
        buf.drain(..*off);
        *off = 0;
    }
    Ok(())
}

impl Client {
    fn pending_out(&self) -> bool {
        self.out_off < self.out.len()
    }

    fn wanted_interest(&self) -> u32 {
        let mut i = 0;
        if self.inflight < MAX_CLIENT_INFLIGHT && self.out.len() - self.out_off < MAX_CLIENT_OUT {
            i |= evloop::READ;
        }
        if self.pending_out() {
            i |= evloop::WRITE;
        }
        i
    }
}

impl Proxy {
    fn now() -> u64 {
        tools::now_ms()
    }

    /// Try to (re)connect to the server.
    fn connect_upstream(&mut self) {
        let now = Self::now();
        match tools::connect_nonblocking(&self.cfg.server) {
            Ok((stream, done)) => {
                let token = self.next_token;
                self.next_token += 1;
                let interest = evloop::READ | evloop::WRITE;
                if let Err(e) = self.poller.add(stream.as_raw_fd(), token, interest) {
                    log(format_args!("cannot watch server connection: {e}"));
                    self.next_retry = now + self.cfg.retry_ms;
                    return;
                }
                self.up = Some(Upstream {
                    token,
                    stream,
                    state: UpState::Connecting { since: now },
                    dec: Decoder::new(Direction::Responses),
                    inbuf: Vec::new(),
                    interest,
                });
                if done {
                    self.upstream_connected();
                }
            }
            Err(e) => self.connect_failed(e),
        }
    }

    fn connect_failed(&mut self, e: io::Error) {
        if !self.outage_logged {
            log(format_args!(
                "cannot connect to server {}: {e}; answering requests with failures, retrying every {} ms",
                self.cfg.server, self.cfg.retry_ms
            ));
            self.outage_logged = true;
        }
        self.drop_upstream(&[]);
    }

    fn upstream_connected(&mut self) {
        if let Some(up) = self.up.as_mut() {
            up.state = UpState::Up;
            if self.outage_logged {
                log(format_args!("connected to server {}", self.cfg.server));
            }
            self.outage_logged = false;
        }
    }

    /// Forget the server connection; answer everything in flight with
    /// `payload` and schedule a reconnection.
    fn drop_upstream(&mut self, payload: &[u8]) {
        if let Some(up) = self.up.take() {
            let _ = self.poller.delete(up.stream.as_raw_fd());
        }
        self.up_out.clear();
        self.up_off = 0;
        for p in self.mux.fail_all() {
            if let Some(c) = self.clients.get_mut(&p.client) {
                mux::answer(&mut c.out, p.uid, p.cmd, payload);
                c.inflight -= 1;
                self.dirty.push(p.client);
            }
        }
        self.next_retry = Self::now() + self.cfg.retry_ms;
    }

    /// The connect is taking long: fail the requests queued for it (they
    /// never left) and keep connecting.
    fn fail_queued(&mut self) {
        self.up_out.clear();
        self.up_off = 0;
        for p in self.mux.fail_all() {
            if let Some(c) = self.clients.get_mut(&p.client) {
                mux::answer(&mut c.out, p.uid, p.cmd, &[]);
                c.inflight -= 1;
                self.dirty.push(p.client);
            }
        }
    }

    fn upstream_lost(&mut self, why: std::fmt::Arguments<'_>) {
        let n = self.mux.in_flight();
        log(format_args!(
            "lost server connection {}: {why}; failing {n} request(s) in flight, retrying in {} ms",
            self.cfg.server, self.cfg.retry_ms
        ));
        // The next successful connection is logged; failures until then are not.
        self.outage_logged = true;
        let was_up = matches!(self.up.as_ref().map(|u| u.state), Some(UpState::Up));
        // Requests that never reached a connected server get the same
        // answer as when no server is there at all.
        if was_up {
            self.drop_upstream(&[status::DISCONNECTED]);
        } else {
            self.drop_upstream(&[]);
        }
    }

    fn on_upstream(&mut self, ev: &Event) {
        let Some(up) = self.up.as_mut() else { return };
        if let UpState::Connecting { .. } = up.state {
            if !ev.writable() && !ev.hangup() {
                return;
            }
            match up.stream.take_error() {
                Ok(None) if !ev.hangup() => self.upstream_connected(),
                Ok(Some(e)) | Err(e) => return self.connect_failed(e),
                Ok(None) => {
                    return self.connect_failed(io::Error::new(
                        io::ErrorKind::ConnectionRefused,
                        "connection closed",
                    ))
                }
            }
        }
        if ev.readable() {
            self.read_upstream();
        }
    }

    fn read_upstream(&mut self) {
        let Some(up) = self.up.as_mut() else { return };
        let (_, eof) = match read_some(&mut up.stream, &mut up.inbuf, &mut self.scratch) {
            Ok(x) => x,
            Err(e) => return self.upstream_lost(format_args!("read error: {e}")),
        };
        // Route every complete answer.
        let Upstream { dec, inbuf, .. } = up;
        let mut fault = None;
        let clients = &mut self.clients;
        let dirty = &mut self.dirty;
        let mux = &mut self.mux;
        let res = {
            let mut off = 0;
            loop {
                match dec.feed(&inbuf[off..]) {
                    Err(e) => break Err(e),
                    Ok(distcache_rs::proto::Event::NeedMore) => break Ok(off),
                    Ok(distcache_rs::proto::Event::Fragment { consumed }) => off += consumed,
                    Ok(distcache_rs::proto::Event::Message { consumed, msg }) => {
                        off += consumed;
                        match mux.complete(&msg) {
                            Ok(p) => {
                                if let Some(c) = clients.get_mut(&p.client) {
                                    mux::answer(&mut c.out, p.uid, p.cmd, msg.payload);
                                    c.inflight -= 1;
                                    c.last_active = tools::now_ms();
                                    dirty.push(p.client);
                                }
                                // Otherwise the client has gone: discard.
                            }
                            Err(f) => {
                                fault = Some(f);
                                break Ok(off);
                            }
                        }
                    }
                }
            }
        };
        match res {
            Err(e) => return self.upstream_lost(format_args!("corrupt answer: {e}")),
            Ok(used) => {
                if used > 0 {
                    self.up_progress = tools::now_ms();
                }
                inbuf.drain(..used);
            }
        }
        if let Some(f) = fault {
            return self.upstream_lost(format_args!("{f}"));
        }
        if eof {
            self.upstream_lost(format_args!("closed by the server"));
        }
    }

    fn accept(&mut self) {
        for _ in 0..256 {
            match self.listener.accept_stream() {
                Ok(stream) => {
                    if self.clients.len() >= self.cfg.maxconns {
                        if let Some(skipped) = self.limit_log.allow(Self::now()) {
                            // Named only when refusing: accepting stays one
                            // system call.
                            let peer = stream.peer_name();
                            log(format_args!(
                                "refusing application connection{}: {} connections open (-maxconns){}",
                                if peer.is_empty() { String::new() } else { format!(" from {peer}") },
                                self.clients.len(),
                                if skipped > 0 { format!(" ({skipped} similar lines suppressed)") } else { String::new() }
                            ));
                        }
                        drop(stream);
                        continue;
                    }
                    let token = self.next_token;
                    self.next_token += 1;
                    if let Err(e) = self.poller.add(stream.as_raw_fd(), token, evloop::READ) {
                        log(format_args!("cannot watch a new connection: {e}"));
                        continue;
                    }
                    self.clients.insert(
                        token,
                        Client {
                            stream,
                            dec: Decoder::new(Direction::Requests),
                            inbuf: Vec::new(),
                            out: Vec::new(),
                            out_off: 0,
                            inflight: 0,
                            last_active: Self::now(),
                            interest: evloop::READ,
                        },
                    );
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and friends: report, keep serving the others,
                    // and stop accepting for a moment instead of spinning.
                    if self.garbage_log.allow(Self::now()).is_some() {
                        log(format_args!("accept failed: {e}; pausing new connections"));
                    }
                    let _ = self.poller.modify(self.listener.as_raw_fd(), TOK_LISTEN, 0);
                    self.accept_paused_until = Some(Self::now() + ACCEPT_PAUSE_MS);
                    break;
                }
            }
        }
    }

    fn close_client(&mut self, token: u64) {
        // Closing the socket also removes it from the epoll set (it is
        // never duplicated); stale events for the token find no client.
        self.clients.remove(&token);
    }

    fn on_client(&mut self, token: u64, ev: &Event) {
        let Some(c) = self.clients.get_mut(&token) else {
            return;
        };
        if ev.writable()
            && c.pending_out()
            && flush(&mut c.stream, &mut c.out, &mut c.out_off).is_err()
        {
            return self.close_client(token);
        }
        if !ev.readable() {
            return;
        }
        if c.interest & evloop::READ == 0 {
            // Paused by back-pressure: a hang-up still ends it (the event
            // is level-triggered and would fire again and again).
            if ev.hangup() {
                self.close_client(token);
            }
            return;
        }
        let (n, eof) = match read_some(&mut c.stream, &mut c.inbuf, &mut self.scratch) {
            Ok(x) => x,
            Err(_) => return self.close_client(token),
        };
        if n > 0 {
            c.last_active = Self::now();
        }
        let connected = match self.up.as_ref().map(|u| u.state) {
            Some(UpState::Up) => true,
            Some(UpState::Connecting { since }) => Self::now() < since + CONNECT_GRACE_MS,
            None => false,
        };
        let Client {
            dec,
            inbuf,
            out,
            inflight,
            ..
        } = c;
        let mux = &mut self.mux;
        let up_out = &mut self.up_out;
        let up_progress = &mut self.up_progress;
        let mut answered_locally = false;
        // An ADD too short to parse makes dc_server drop the connection it
        // came on: forwarded, it would cut the shared server connection and
        // fail every other application's requests. Drop only this client.
        let mut poisoned = false;
        let res = dec.drain(inbuf, |msg| {
            if poisoned {
                return;
            }
            if msg.cmd == Cmd::Add
                && matches!(distcache_rs::proto::parse_add(msg.payload), AddParse::Fatal)
            {
                poisoned = true;
                return;
            }
            if connected {
                if mux.in_flight() == 0 {
                    *up_progress = tools::now_ms();
                }
                mux.forward(token, &msg, up_out);
                *inflight += 1;
            } else {
                mux::answer(out, msg.uid, msg.cmd, &[]);
                answered_locally = true;
            }
        });
        let res = match res {
            Ok(_) if poisoned => Err("corrupt ADD request (payload under 8 bytes)".to_string()),
            Ok(used) => Ok(used),
            Err(e) => Err(e.to_string()),
        };
        match res {
            Ok(used) => {
                inbuf.drain(..used);
            }
            Err(e) => {
                if let Some(skipped) = self.garbage_log.allow(Self::now()) {
                    let more = if skipped > 0 {
                        format!(" ({skipped} similar lines suppressed)")
                    } else {
                        String::new()
                    };
                    log(format_args!(
                        "dropping a client that sent garbage: {e}{more}"
                    ));
                }
                return self.close_client(token);
            }
        }
        if answered_locally {
            self.dirty.push(token);
        }
        if eof {
            // Answers still on their way are discarded when they arrive.
            self.close_client(token);
        }
    }

    /// Write pending output: the server's batch first, then the clients'.
    fn flush_all(&mut self) {
        if let Some(up) = self.up.as_mut() {
            let mut want = evloop::READ;
            if up.state == UpState::Up {
                if let Err(e) = flush(&mut up.stream, &mut self.up_out, &mut self.up_off) {
                    return self.upstream_lost(format_args!("write error: {e}"));
                }
                if self.up_off < self.up_out.len() {
                    want |= evloop::WRITE;
                }
            } else {
                want |= evloop::WRITE;
            }
            if want != up.interest {
                up.interest = want;
                let _ = self.poller.modify(up.stream.as_raw_fd(), up.token, want);
            }
        }
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        for token in dirty.drain(..) {
            self.update_client(token, true);
        }
        self.dirty = dirty;
    }

    fn update_client(&mut self, token: u64, write: bool) {
        let Some(c) = self.clients.get_mut(&token) else {
            return;
        };
        if write && c.pending_out() && flush(&mut c.stream, &mut c.out, &mut c.out_off).is_err() {
            return self.close_client(token);
        }
        let want = c.wanted_interest();
        if want != c.interest {
            c.interest = want;
            let _ = self.poller.modify(c.stream.as_raw_fd(), token, want);
        }
    }

    /// The server has requests to answer and has answered nothing for
    /// `-stall` ms.
    fn stalled(&self, now: u64) -> bool {
        self.cfg.stall_ms > 0
            && self.mux.in_flight() > 0
            && now >= self.up_progress.saturating_add(self.cfg.stall_ms)
    }

    /// Drop clients idle for `-idle` ms; returns when to look again.
    fn idle_scan(&mut self, now: u64) -> u64 {
        let idle = self.cfg.idle_ms;
        let mut next = now + idle;
        let mut victims = Vec::new();
        for (t, c) in &self.clients {
            if c.inflight > 0 || c.pending_out() {
                continue;
            }
            let due = c.last_active + idle;
            if due <= now {
                victims.push(*t);
            } else {
                next = next.min(due);
            }
        }
        for t in victims {
            self.close_client(t);
        }
        next
    }

    fn run(&mut self, signals: &tools::Signals) -> io::Result<()> {
        self.poller
            .add(self.listener.as_raw_fd(), TOK_LISTEN, evloop::READ)?;
        self.poller.add(signals.fd(), TOK_SIGNAL, evloop::READ)?;
        self.connect_upstream();
        let mut events = Vec::new();
        loop {
            let now = Self::now();
            // Timers.
            match self.up.as_ref().map(|u| u.state) {
                None if now >= self.next_retry => self.connect_upstream(),
                Some(UpState::Connecting { since }) if now >= since + CONNECT_TIMEOUT_MS => self
                    .connect_failed(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "connection timed out",
                    )),
                Some(UpState::Connecting { since })
                    if now >= since + CONNECT_GRACE_MS && self.mux.in_flight() > 0 =>
                {
                    self.fail_queued()
                }
                Some(UpState::Up) if self.stalled(now) => {
                    let n = self.mux.in_flight();
                    self.upstream_lost(format_args!(
                        "no answer for {} ms with {n} request(s) waiting (-stall)",
                        now - self.up_progress
                    ))
                }
                _ => {}
            }
            if self.accept_paused_until.is_some_and(|t| now >= t) {
                self.accept_paused_until = None;
                self.poller
                    .modify(self.listener.as_raw_fd(), TOK_LISTEN, evloop::READ)?;
            }
            if self.cfg.idle_ms > 0 && now >= self.next_idle_scan {
                self.next_idle_scan = self.idle_scan(now).max(now + 1);
            }
            self.flush_all();
            let now = Self::now();
            let mut wake = u64::MAX;
            match self.up.as_ref().map(|u| u.state) {
                None => wake = wake.min(self.next_retry),
                Some(UpState::Connecting { since }) => {
                    wake = wake.min(since + CONNECT_TIMEOUT_MS);
                    if self.mux.in_flight() > 0 {
                        wake = wake.min(since + CONNECT_GRACE_MS);
                    }
                }
                Some(UpState::Up) => {
                    if self.cfg.stall_ms > 0 && self.mux.in_flight() > 0 {
                        wake = wake.min(self.up_progress + self.cfg.stall_ms);
                    }
                }
            }
            if self.cfg.idle_ms > 0 {
                wake = wake.min(self.next_idle_scan);
            }
            if let Some(t) = self.accept_paused_until {
                wake = wake.min(t);
            }
            let timeout =
                (wake != u64::MAX).then(|| Duration::from_millis(wake.saturating_sub(now)));
            self.poller.wait(timeout, &mut events)?;
            for ev in &events {
                match ev.token {
                    TOK_LISTEN => self.accept(),
                    TOK_SIGNAL => {
                        if let Some(sig) = signals.pending() {
                            log(format_args!("{}: shutting down", tools::signal_name(sig)));
                            return Ok(());
                        }
                    }
                    t if self.up.as_ref().is_some_and(|u| u.token == t) => self.on_upstream(ev),
                    t => self.on_client(t, ev),
                }
            }
        }
    }
}

fn parse() -> Result<(Config, Address, SockOpts, tools::Parsed), i32> {
    let p = CLI.parse_env()?;
    let fail = |m: String| CLI.fail(&m);
    let server = p.required("server").map_err(fail)?;
    let server = Address::parse(server).map_err(|e| fail(format!("flag -server: {e}")))?;
    if !server.can_connect() {
        return Err(fail(format!(
            "flag -server: {server} names no host to connect to"
        )));
    }
    let listen = Address::parse(p.get("listen").unwrap_or("UNIX:/tmp/scache"))
        .map_err(|e| fail(format!("flag -listen: {e}")))?;
    let retry_ms = p.num("retry", 5000, 1, 86_400_000).map_err(fail)?;
    let idle_ms = p.num("idle", 0, 0, 86_400_000).map_err(fail)?;
    let maxconns = p
        .num("maxconns", DEFAULT_MAXCONNS, 1, 1_000_000)
        .map_err(fail)? as usize;
    let stall_ms = p
        .num("stall", DEFAULT_STALL_MS, 0, 86_400_000)
        .map_err(fail)?;
    let opts = SockOpts {
        owner: p.get("sockowner").map(str::to_string),
        group: p.get("sockgroup").map(str::to_string),
        perms: p.octal("sockperms").map_err(fail)?,
    };
    Ok((
        Config {
            server,
            retry_ms,
            idle_ms,
            maxconns,
            stall_ms,
        },
        listen,
        opts,
        p,
    ))
}

fn main() -> ExitCode {
    let (cfg, listen, opts, p) = match parse() {
        Ok(x) => x,
        Err(code) => return ExitCode::from(code as u8),
    };
    let fatal = |e: io::Error| {
        eprintln!("dc_client: {e}");
        ExitCode::from(1)
    };
    let listener = match tools::listen(&listen, &opts) {
        Ok(l) => l,
        Err(e) => return fatal(e),
    };
    let detached = if p.has("daemon") {
        match tools::daemonize(!p.has("pidfile")) {
            Ok(d) => Some(d),
            Err(e) => return fatal(e),
        }
    } else {
        None
    };
    let _pidfile = match p.get("pidfile") {
        Some(path) => match tools::PidFile::write(std::path::Path::new(path)) {
            Ok(f) => Some(f),
            Err(e) => return fatal(e),
        },
        None => None,
    };
    if let Some(user) = p.get("user") {
        if let Err(e) = tools::drop_privileges(user) {
            return fatal(e);
        }
    }
    let signals = match tools::Signals::install(false) {
        Ok(s) => s,
        Err(e) => return fatal(e),
    };
    match tools::raise_nofile_limit() {
        Ok(n) if (n as usize) < cfg.maxconns + 32 => eprintln!(
            "dc_client: warning: descriptor limit {n} is below -maxconns {}",
            cfg.maxconns
        ),
        Ok(_) => {}
        Err(e) => eprintln!("dc_client: warning: cannot raise the descriptor limit: {e}"),
    }
    let poller = match Poller::new() {
        Ok(p) => p,
        Err(e) => return fatal(e),
    };
    let mut proxy = Proxy {
        cfg,
        poller,
        listener,
        clients: HashMap::new(),
        next_token: TOK_FIRST,
        up: None,
        up_out: Vec::new(),
        up_off: 0,
        mux: Mux::new(),
        next_retry: 0,
        outage_logged: false,
        dirty: Vec::new(),
        next_idle_scan: 0,
        scratch: vec![0u8; READ_CHUNK],
        garbage_log: tools::RateLimit::new(10),
        limit_log: tools::RateLimit::new(5),
        accept_paused_until: None,
        up_progress: 0,
    };
    if let Some(d) = detached {
        d.ready();
    }
    match proxy.run(&signals) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fatal(e),
    }
}
