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
//!
//! Bounded waits: a request the server has not answered within `-deadline`
//! ms is answered 0x02 and its late answer discarded by uid. A server that
//! answered nothing for a whole deadline while requests waited is taken as
//! down: requests are answered 0x02 at once, except one probe a second
//! whose answer (any answer) takes it as up again.
//!
//! Bounded memory: each application connection has a cap on requests in
//! flight and on unread answers (its input is not decoded, nor read, past
//! them); one that holds unread answers or part of a request without
//! progress for `-clientstall` ms is closed; all application buffers
//! together stay under `-maxbuffer` MB. When the connection table is full
//! (`-maxconns`, or out of descriptors) room is made by the shared policy
//! of `tools::evict`.
//!
//! With `-server redis://host:port` (or `rediss://`) there is no dc_server:
//! every request is checked and answered as dc_server would, from Redis,
//! through one Redis connection ([`distcache_tools::backend`]); failures are 0x02 at once
//! while Redis is down and within `-deadline` when it is slow.

mod mux;

use std::io;
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::Duration;

use distcache_rs::nal::Address;
use distcache_rs::proto::{status, AddParse, Cmd, Direction};
use distcache_tools::daemon::{self, Daemon};
use distcache_tools::evloop::{self, Event, Poller};
use distcache_tools::idmap::{self, IdMap};
use distcache_tools::link::Link;
use distcache_tools::metrics::{self, Answer, Endpoint};
use distcache_tools::redis;
use distcache_tools::store::{self, StoreAddress, Timeouts};
use distcache_tools::tls::TlsStream;
use distcache_tools::tlsconf::{self, ClientTls, DaemonAddress};
use distcache_tools::tools::evict::{pick_victim, Candidate};
use distcache_tools::tools::{self, Cli, Flag, Listener, SockOpts};

use distcache_tools::backend::{Backend, Taken};
use mux::Mux;

const CLI: Cli = Cli {
    tool: "dc_client",
    synopsis: "-server <address> [options]",
    flags: &[
        Flag::value(
            &["server", "connect"],
            "address",
            "the dc_server to proxy to, or the Redis to answer from: redis://host:port, \
             rediss://host:port (TLS), redis://user:password@host:port, \
             redis-sentinel://host:port[,host:port...]/MASTERNAME (required)",
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
        tools::log::LOGFILE_FLAG,
        tools::log::SYSLOG_FLAG,
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
            "most application connections at once; a full table closes one that never completed a request, else the idlest, to make room (default 4096)",
        ),
        Flag::value(
            &["stall"],
            "msecs",
            "reconnect when the server answers nothing this long while requests wait (default 10000; 0 = never)",
        ),
        Flag::value(
            &["deadline"],
            "msecs",
            "answer a request 0x02 (DISCONNECTED) when the server has not within this long (default 250; 0 = none)",
        ),
        Flag::value(
            &["clientstall"],
            "msecs",
            "close an application connection whose answers go unread, or whose request stays partial, this long (default 30000; 0 = never)",
        ),
        Flag::value(
            &["maxbuffer"],
            "MB",
            "most memory buffered for all application connections together (default 32)",
        ),
        Flag::value(
            &["metrics"],
            "address",
            "serve GET /metrics (Prometheus text format) on this IP address, \
             e.g. IP:127.0.0.1:9102 (at most 16 scrapers at once, 8 KiB requests, 5 s each)",
        ),
        store::REDIS_PREFIX_FLAG,
        store::REDIS_USER_FLAG,
        store::REDIS_PASSWORD_FILE_FLAG,
        store::REDIS_SENTINEL_PASSWORD_FILE_FLAG,
        store::REDIS_CA_FLAG,
        store::REDIS_CERT_FLAG,
        store::REDIS_KEY_FLAG,
        store::MINTIMEOUT_FLAG,
        store::MAXTIMEOUT_FLAG,
    ],
    extra: tlsconf::CLIENT_FLAGS,
};

const TOK_LISTEN: u64 = 0;
const TOK_SIGNAL: u64 = 1;
/// First token handed out to connections (clients and the upstream).
const TOK_FIRST: u64 = 16;

/// Longest frame on the wire.
const MAX_FRAME: usize = distcache_rs::proto::MAX_FRAME_LEN;
/// Bytes read from a socket per call.
const READ_CHUNK: usize = 64 * 1024;
/// At most this much is read from one connection per event, for fairness.
const READ_BUDGET: usize = 256 * 1024;
/// A client with this many requests in flight is neither decoded nor read
/// from until some are answered. libdistcache sends one request at a time
/// per connection; this leaves ample room for a pipelining application
/// while bounding what its answers can add to its output: at most this
/// many maximal (32 KB) answers, 2 MB.
const MAX_CLIENT_INFLIGHT: usize = 64;
/// A client whose unread answers reach this is neither decoded nor read
/// from meanwhile. With the in-flight cap, one connection holds at most
/// about 1 MB + 2 MB of answers and 320 KB of input.
const MAX_CLIENT_OUT: usize = 1 << 20;
/// Default `-deadline`: the original answers in tens of milliseconds at
/// p99 with 50,000 sessions; 250 ms is far above a live server's worst and
/// far below the library's 2 s I/O bound.
const DEFAULT_DEADLINE_MS: u64 = 250;
/// While the server is down, one request is forwarded at most this often
/// as a probe.
const PROBE_EVERY_MS: u64 = 1000;
/// Requests answered past their deadline whose late answer has not come:
/// beyond this many the server connection is made anew (their uids are
/// reserved until then).
const MAX_LATE: usize = 65_536;
/// Default `-clientstall`.
const DEFAULT_CLIENTSTALL_MS: u64 = 30_000;
/// Default `-maxbuffer` in MB. Legitimate applications leave nothing
/// buffered in dc_client between two rounds of its loop (libdistcache sends
/// one request and reads its answer), so the budget is only ever filled by
/// connections that do not read; 32 MB keeps dc_client well under 64 MB
/// RSS however many of them there are, and is still room for a thousand
/// 32 KB answers waiting at once.
const DEFAULT_MAXBUFFER_MB: u64 = 32;
/// Clients are scanned for `-idle` and `-clientstall` at most this often.
const SCAN_MIN_MS: u64 = 50;
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
    /// `-server`: a libnal address, or `TLS:host:port`; `None` with a
    /// Redis address.
    server: Option<DaemonAddress>,
    /// `-server` as logged (a password in it masked).
    target: String,
    /// `-server redis://...`: the Redis connection and the ADD timeout
    /// bounds.
    redis: Option<(store::StoreConfig, Timeouts)>,
    /// Logged at start-up: a password written in the `-server` address.
    warning: Option<String>,
    retry_ms: u64,
    idle_ms: u64,
    maxconns: usize,
    /// `-stall`: 0 = never.
    stall_ms: u64,
    /// `-deadline`: 0 = none.
    deadline_ms: u64,
    /// `-clientstall`: 0 = never.
    clientstall_ms: u64,
    /// `-maxbuffer`, in bytes.
    maxbuffer: usize,
    metrics: Option<Address>,
}

/// An application connection.
/// An application connection: the shared [`Link`] (its `progress` clock
/// counts for `-clientstall`, `since` for making room) and the requests it
/// has waiting on the server.
struct Client {
    link: Link,
    inflight: usize,
}

#[derive(PartialEq, Eq, Clone, Copy, Debug)]
enum UpState {
    Connecting { since: u64 },
    Up,
}

struct Proxy {
    cfg: Config,
    poller: Poller,
    listener: Listener,
    clients: IdMap<u64, Client>,
    next_token: u64,
    /// The connection to dc_server; its output holds the requests encoded
    /// for the server and not yet written.
    up: Option<Link>,
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
    /// When the server last answered anything.
    last_answer: u64,
    /// The server answered nothing for a whole `-deadline` while requests
    /// waited: requests are answered 0x02 at once, but for probes.
    down: bool,
    /// While down, the next request at or after this time is a probe.
    next_probe: u64,
    /// Bytes buffered for all application connections (input, output,
    /// half-received messages).
    buffered: usize,
    /// Log lines about -clientstall, -maxbuffer and -maxconns evictions.
    close_log: tools::RateLimit,
    /// `-metrics`, the counters it shows, and whether the server was ever
    /// connected (the connections after the first are reconnects).
    metrics: Option<Endpoint>,
    stats: metrics::ClientView,
    ever_up: bool,
    /// [`Proxy::upstream_connected`] ran for the current server connection.
    up_logged: bool,
    /// `-server TLS:...`: the client side of the link, reloadable.
    tls: Option<ClientTls>,
    /// `-server redis://...`: Redis instead of a dc_server.
    backend: Option<Backend>,
}

/// The tail of a rate-limited log line.
fn suppressed(skipped: u64) -> String {
    if skipped > 0 {
        format!(" ({skipped} similar lines suppressed)")
    } else {
        String::new()
    }
}

fn log(msg: std::fmt::Arguments<'_>) {
    tools::log::line(msg);
}

impl Client {
    /// At its in-flight or output cap: its input is left undecoded.
    fn saturated(&self) -> bool {
        self.inflight >= MAX_CLIENT_INFLIGHT || self.link.unsent() >= MAX_CLIENT_OUT
    }

    /// Append an answer for it.
    fn give(&mut self, uid: u32, cmd: Cmd, payload: &[u8], now: u64) {
        self.link.start_clock(now);
        mux::answer(self.link.out(), uid, cmd, payload);
        self.link.completed = true;
        self.link.since = now;
    }

    fn candidate(&self) -> Candidate {
        Candidate {
            completed_any: self.link.completed,
            in_flight: self.inflight > 0 || self.link.unsent() > 0,
            since_ms: self.link.since,
            serial: self.link.serial(),
        }
    }

    fn wanted_interest(&self) -> u32 {
        let mut i = 0;
        // Read only once everything read so far is taken: past its caps
        // the rest stays in its buffer (and the socket), not in memory.
        if !self.saturated() && self.link.inbuf.len() < MAX_FRAME {
            i |= evloop::READ;
        }
        if self.link.unsent() > 0 {
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
        let token = self.next_token;
        self.next_token += 1;
        let Some(server) = &self.cfg.server else {
            return;
        };
        let addr = &server.addr;
        let made = match &self.tls {
            Some(tls) => {
                let client = tls.current().clone();
                Link::connect_over(addr, token, Direction::Responses, &self.poller, |tcp| {
                    Ok(Box::new(TlsStream::connect(tcp, &client)?))
                })
            }
            None => Link::connect(addr, token, Direction::Responses, &self.poller),
        };
        match made {
            Ok(link) => {
                let done = !link.connecting() && !link.handshaking();
                self.up = Some(link);
                if done {
                    self.upstream_connected();
                } else {
                    // A TLS connect that completed at once: send the
                    // ClientHello now.
                    self.flush_upstream();
                }
            }
            Err(e) => self.connect_failed(e),
        }
    }

    /// The server connection's state: connecting while the TCP connect or
    /// the TLS handshake is not done (both bounded by the connect timeout).
    fn up_state(&self) -> Option<UpState> {
        self.up.as_ref().map(|u| match u.connecting_since() {
            Some(since) => UpState::Connecting { since },
            None if u.handshaking() => UpState::Connecting { since: u.born() },
            None => UpState::Up,
        })
    }

    /// The TLS handshake just completed: the link is up.
    fn handshake_progress(&mut self) {
        if self
            .up
            .as_ref()
            .is_some_and(|u| !u.connecting() && !u.handshaking())
            && !self.up_logged
        {
            self.upstream_connected();
        }
    }

    fn connect_failed(&mut self, e: io::Error) {
        self.stats.connect_failures += 1;
        if !self.outage_logged {
            log(format_args!(
                "cannot connect to server {}: {}; answering requests with failures, retrying every {} ms",
                self.cfg.target,
                tlsconf::failure_reason(&e),
                self.cfg.retry_ms
            ));
            self.outage_logged = true;
        }
        self.drop_upstream(&[]);
    }

    fn upstream_connected(&mut self) {
        if self.up.is_some() {
            self.up_logged = true;
            self.stats.reconnects += u64::from(self.ever_up);
            self.ever_up = true;
            if self.outage_logged {
                log(format_args!("connected to server {}", self.cfg.target));
            }
            self.outage_logged = false;
        }
    }

    /// Forget the server connection; answer everything in flight with
    /// `payload` and schedule a reconnection.
    fn drop_upstream(&mut self, payload: &[u8]) {
        self.up_logged = false;
        if let Some(mut up) = self.up.take() {
            up.deregister(&self.poller);
        }
        let now = Self::now();
        let how = if payload.is_empty() {
            Answer::NoServer
        } else {
            Answer::Disconnected
        };
        for p in self.mux.fail_all() {
            self.stats.requests.count(p.cmd, how);
            if let Some(c) = self.clients.get_mut(&p.client) {
                c.give(p.uid, p.cmd, payload, now);
                c.inflight -= 1;
                self.dirty.push(p.client);
            }
        }
        self.next_retry = now + self.cfg.retry_ms;
    }

    /// The connect is taking long: fail the requests queued for it (they
    /// never left) and keep connecting.
    fn fail_queued(&mut self) {
        if let Some(up) = self.up.as_mut() {
            up.discard_output();
        }
        let now = Self::now();
        for p in self.mux.fail_all() {
            self.stats.requests.count(p.cmd, Answer::NoServer);
            if let Some(c) = self.clients.get_mut(&p.client) {
                c.give(p.uid, p.cmd, &[], now);
                c.inflight -= 1;
                self.dirty.push(p.client);
            }
        }
    }

    fn upstream_lost(&mut self, why: std::fmt::Arguments<'_>) {
        let n = self.mux.in_flight();
        log(format_args!(
            "lost server connection {}: {why}; failing {n} request(s) in flight, retrying in {} ms",
            self.cfg.target, self.cfg.retry_ms
        ));
        // The next successful connection is logged; failures until then are not.
        self.outage_logged = true;
        let was_up = matches!(self.up_state(), Some(UpState::Up));
        self.stats.disconnects += u64::from(was_up);
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
        if up.connecting() {
            match up.connect_event(ev) {
                Ok(true) if up.handshaking() => {
                    // TCP is up: the TLS handshake starts (ClientHello).
                    self.flush_upstream();
                    return;
                }
                Ok(true) => self.upstream_connected(),
                Ok(false) => return,
                Err(e) => return self.connect_failed(e),
            }
        }
        if ev.readable() || self.up.as_ref().is_some_and(Link::has_buffered_input) {
            self.read_upstream();
        }
        if ev.writable() && self.up.as_ref().is_some_and(Link::handshaking) {
            self.flush_upstream();
        }
    }

    /// Push the server connection's output (and a TLS handshake) now.
    fn flush_upstream(&mut self) {
        let Some(up) = self.up.as_mut() else { return };
        if up.connecting() {
            return;
        }
        // Asked before the flush: a session that fails in it is no longer
        // handshaking, and a handshake that fails is a failed connect.
        let was_handshaking = up.handshaking();
        if let Err(e) = up.flush() {
            if was_handshaking {
                return self.connect_failed(e);
            }
            return self
                .upstream_lost(format_args!("write error: {}", tlsconf::failure_reason(&e)));
        }
        self.handshake_progress();
        self.set_upstream_interest();
    }

    fn set_upstream_interest(&mut self) {
        if let Some(up) = self.up.as_mut() {
            let mut want = evloop::READ;
            if up.connecting() || up.unsent() > 0 || up.wants_write() {
                want |= evloop::WRITE;
            }
            let _ = up.set_interest(&self.poller, want);
        }
    }

    fn read_upstream(&mut self) {
        let Some(up) = self.up.as_mut() else { return };
        let was_handshaking = up.handshaking();
        let eof = match up.read_some(&mut self.scratch, READ_BUDGET) {
            Ok(got) => got.eof,
            // A refused handshake is a failed connect (logged once per
            // outage, with the reason), not a lost connection.
            Err(e) if was_handshaking => return self.connect_failed(e),
            Err(e) => {
                return self
                    .upstream_lost(format_args!("read error: {}", tlsconf::failure_reason(&e)))
            }
        };
        if was_handshaking {
            self.handshake_progress();
            self.set_upstream_interest();
        }
        let Some(up) = self.up.as_mut() else { return };
        // Route every complete answer.
        let (dec, inbuf) = (&mut up.dec, &up.inbuf);
        let mut fault = None;
        let clients = &mut self.clients;
        let dirty = &mut self.dirty;
        let mux = &mut self.mux;
        let stats = &mut self.stats;
        // One clock read for the whole batch of answers.
        let now_us = tools::now_us();
        let now = now_us / 1000;
        let mut answered = false;
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
                            Ok(done) => {
                                answered = true;
                                if let mux::Done::Deliver(p) = done {
                                    stats.requests.count(p.cmd, Answer::Server);
                                    stats.rtt.observe(Duration::from_micros(
                                        now_us.saturating_sub(p.sent_us),
                                    ));
                                    if let Some(c) = clients.get_mut(&p.client) {
                                        c.give(p.uid, p.cmd, msg.payload, now);
                                        c.inflight -= 1;
                                        c.link.last_active = now;
                                        dirty.push(p.client);
                                    }
                                    // Otherwise the client has gone: discard.
                                }
                                // A late answer (its request was already
                                // answered 0x02): discarded, a sign of life.
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
                    self.up_progress = now;
                }
                up.consumed(used);
            }
        }
        if answered {
            self.last_answer = now;
            if self.down {
                self.down = false;
                log(format_args!(
                    "server {} answers again; forwarding requests",
                    self.cfg.target
                ));
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
        for round in 0..256 {
            match self.listener.accept_stream() {
                Ok(stream) => {
                    let full = self.clients.len() >= self.cfg.maxconns;
                    if full
                        && self.make_room(format_args!(
                            "{} connections open (-maxconns)",
                            self.clients.len()
                        ))
                    {
                        self.stats.conns.closed_maxconns += 1;
                    } else if full {
                        if let Some(skipped) = self.limit_log.allow(Self::now()) {
                            // Named only when refusing: accepting stays one
                            // system call.
                            let peer = stream.peer_name();
                            log(format_args!(
                                "refusing application connection{}: {} connections open (-maxconns), all with a request in flight{}",
                                if peer.is_empty() { String::new() } else { format!(" from {peer}") },
                                self.clients.len(),
                                if skipped > 0 { format!(" ({skipped} similar lines suppressed)") } else { String::new() }
                            ));
                        }
                        self.stats.conns.refused_maxconns += 1;
                        drop(stream);
                        continue;
                    }
                    let token = self.next_token;
                    self.next_token += 1;
                    match Link::accepted(stream, token, Direction::Requests, &self.poller) {
                        Ok(link) => {
                            self.clients.insert(token, Client { link, inflight: 0 });
                            self.stats.conns.accepted += 1;
                            // The application usually sent its request right
                            // after connecting: read it now rather than one
                            // epoll_wait later (one system call fewer per
                            // operation when a connection carries one).
                            let ev = Event {
                                token,
                                events: evloop::READ,
                            };
                            self.on_client(token, &ev);
                        }
                        Err(e) => log(format_args!("cannot watch a new connection: {e}")),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // accept(2) fails with EMFILE before it looks for a
                // connection: only the first call after the listener was
                // reported readable is sure to have a newcomer waiting. For
                // the others, stop here; the (level-triggered) listener
                // reports again if one waits.
                Err(e)
                    if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
                        && round > 0 =>
                {
                    break
                }
                Err(e)
                    if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
                        && self.make_room(format_args!("accept failed: {e}")) =>
                {
                    self.stats.conns.closed_nofile += 1;
                }
                Err(e) => {
                    // Out of descriptors with every connection busy, and
                    // friends: report, keep serving the others, and stop
                    // accepting for a moment instead of spinning.
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

    /// The connection table is full: close one application connection by
    /// the shared policy (never one with a request in flight; the server
    /// connection is not in the table). False if none may go.
    fn make_room(&mut self, why: std::fmt::Arguments<'_>) -> bool {
        let now_ms = Self::now();
        let cands: Vec<(u64, Candidate)> = self
            .clients
            .iter()
            .map(|(t, c)| (*t, c.candidate()))
            .collect();
        let Some(i) = pick_victim(cands.iter().map(|(_, c)| *c)) else {
            return false;
        };
        let (token, cand) = cands[i];
        if let Some(skipped) = self.close_log.allow(now_ms) {
            log(format_args!(
                "{why}: closing the application connection {} for {} ms to make room{}",
                if cand.completed_any {
                    "idle"
                } else {
                    "waiting without a complete request"
                },
                now_ms.saturating_sub(cand.since_ms),
                suppressed(skipped)
            ));
        }
        self.close_client(token);
        true
    }

    fn close_client(&mut self, token: u64) {
        // Closing the socket also removes it from the epoll set (it is
        // never duplicated); stale events for the token find no client.
        if let Some(c) = self.clients.remove(&token) {
            self.buffered -= c.link.charged;
        }
    }

    fn on_client(&mut self, token: u64, ev: &Event) {
        let Some(c) = self.clients.get_mut(&token) else {
            return;
        };
        if ev.writable() && c.link.unsent() > 0 && c.link.flush().is_err() {
            return self.close_client(token);
        }
        let mut eof = false;
        if ev.readable() {
            if c.link.interest() & evloop::READ == 0 {
                // Paused by back-pressure: a hang-up still ends it (the
                // event is level-triggered and would fire again and again).
                if ev.hangup() {
                    return self.close_client(token);
                }
            } else {
                match c.link.read_some(&mut self.scratch, READ_BUDGET) {
                    Ok(got) => eof = got.eof,
                    Err(_) => return self.close_client(token),
                }
            }
        }
        if !self.take_requests(token) {
            return;
        }
        if eof {
            // Answers still on their way are discarded when they arrive.
            return self.close_client(token);
        }
        self.dirty.push(token);
    }

    /// Decode the requests buffered for client `token` and forward or
    /// answer them, stopping at its in-flight or output cap (the rest stays
    /// buffered until answers are delivered or read). False if the client
    /// was closed (it sent garbage).
    fn take_requests(&mut self, token: u64) -> bool {
        let now_us = tools::now_us();
        let now = now_us / 1000;
        // Where requests go: to the server (possibly still connecting),
        // answered 0x02 because it is down (but for a probe), or answered
        // empty because there is none.
        let connected = match self.up_state() {
            Some(UpState::Up) => true,
            Some(UpState::Connecting { since }) => now < since + CONNECT_GRACE_MS,
            None => false,
        };
        let Some(c) = self.clients.get_mut(&token) else {
            return false;
        };
        let Client { link, inflight } = c;
        let mux = &mut self.mux;
        let mut up_out = self.up.as_mut().map(Link::out);
        let up_progress = &mut self.up_progress;
        let down = self.down;
        let next_probe = &mut self.next_probe;
        let counts = &mut self.stats.requests;
        let mut backend = self.backend.as_mut();
        let poller = &self.poller;
        let mut off = 0;
        let (mut took, mut answered) = (false, false);
        let res = loop {
            if *inflight >= MAX_CLIENT_INFLIGHT || link.unsent() >= MAX_CLIENT_OUT {
                break Ok(off);
            }
            let (dec, inbuf, out) = link.parts();
            match dec.feed(&inbuf[off..]) {
                Err(e) => break Err(e.to_string()),
                Ok(distcache_rs::proto::Event::NeedMore) => break Ok(off),
                Ok(distcache_rs::proto::Event::Fragment { consumed }) => off += consumed,
                Ok(distcache_rs::proto::Event::Message { consumed, msg }) => {
                    off += consumed;
                    took = true;
                    // An ADD too short to parse makes dc_server drop the
                    // connection it came on: forwarded, it would cut the
                    // shared server connection and fail every other
                    // application's requests. Drop only this client.
                    if msg.cmd == Cmd::Add
                        && matches!(distcache_rs::proto::parse_add(msg.payload), AddParse::Fatal)
                    {
                        break Err("corrupt ADD request (payload under 8 bytes)".to_string());
                    }
                    if let Some(b) = backend.as_deref_mut() {
                        match b.request(poller, token, 0, &msg, now, now_us) {
                            Taken::Queued => *inflight += 1,
                            Taken::Now(code, how) => {
                                counts.count(msg.cmd, how);
                                mux::answer(out, msg.uid, msg.cmd, &[code]);
                                answered = true;
                            }
                            Taken::Fatal => {
                                break Err("corrupt ADD request (payload under 8 bytes)".to_string())
                            }
                        }
                        continue;
                    }
                    let forward = connected && (!down || now >= *next_probe);
                    if let (true, Some(up_out)) = (forward, up_out.as_deref_mut()) {
                        if down {
                            *next_probe = now + PROBE_EVERY_MS;
                        }
                        if mux.in_flight() == 0 && mux.late() == 0 {
                            *up_progress = now;
                        }
                        mux.forward(token, &msg, up_out, now, now_us);
                        *inflight += 1;
                    } else {
                        let (payload, how): (&[u8], _) = if connected {
                            (&[status::DISCONNECTED], Answer::ServerDown)
                        } else {
                            (&[], Answer::NoServer)
                        };
                        counts.count(msg.cmd, how);
                        mux::answer(out, msg.uid, msg.cmd, payload);
                        answered = true;
                    }
                }
            }
        };
        if took {
            link.progress = now;
        }
        if answered {
            link.completed = true;
            link.since = now;
        }
        match res {
            Ok(used) => {
                link.consumed(used);
                true
            }
            Err(e) => {
                if let Some(skipped) = self.garbage_log.allow(now) {
                    log(format_args!(
                        "dropping a client that sent garbage: {e}{}",
                        suppressed(skipped)
                    ));
                }
                self.close_client(token);
                false
            }
        }
    }

    /// Write pending output: the clients' (taking the requests they have
    /// buffered once answers leave), then the server's batch.
    fn flush_all(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        for token in dirty.drain(..) {
            self.update_client(token);
        }
        self.dirty = dirty;
        if self.up.is_some() {
            self.flush_upstream();
        }
    }

    /// Flush a client's answers, take the requests it has buffered if its
    /// caps allow now, flush again, and set what to wait for.
    fn update_client(&mut self, token: u64) {
        for round in 0..2 {
            let Some(c) = self.clients.get_mut(&token) else {
                return;
            };
            if c.link.unsent() > 0 && c.link.flush().is_err() {
                return self.close_client(token);
            }
            let more = !c.link.inbuf.is_empty() && !c.saturated();
            if round == 1 || !more || !self.take_requests(token) {
                break;
            }
        }
        let Some(c) = self.clients.get_mut(&token) else {
            return;
        };
        c.link.trim();
        let want = c.wanted_interest();
        let _ = c.link.set_interest(&self.poller, want);
        let mem = c.link.mem();
        self.buffered = c.link.recharge(self.buffered, mem);
    }

    /// All application buffers together are over `-maxbuffer`: close the
    /// connections holding something that made no progress for longest,
    /// until under it.
    fn enforce_budget(&mut self) {
        while self.buffered > self.cfg.maxbuffer {
            let victim = self
                .clients
                .iter()
                .filter(|(_, c)| c.link.holds() && c.link.charged > 0)
                .min_by_key(|(_, c)| c.link.progress)
                .map(|(t, c)| (*t, c.link.charged, c.link.progress));
            let Some((token, held, progress)) = victim else {
                return;
            };
            let now = Self::now();
            if let Some(skipped) = self.close_log.allow(now) {
                log(format_args!(
                    "closing an application connection holding {held} bytes, no progress for {} ms: all application buffers reached {} MB (-maxbuffer){}",
                    now.saturating_sub(progress),
                    self.cfg.maxbuffer >> 20,
                    suppressed(skipped)
                ));
            }
            self.stats.conns.closed_buffer += 1;
            self.close_client(token);
        }
    }

    /// The server has requests to answer and has answered nothing for
    /// `-stall` ms.
    fn stalled(&self, now: u64) -> bool {
        self.cfg.stall_ms > 0
            && self.mux.in_flight() + self.mux.late() > 0
            && now >= self.up_progress.saturating_add(self.cfg.stall_ms)
    }

    /// Answer 0x02 the requests forwarded `-deadline` ms ago or more; if
    /// the server answered nothing since one of them was forwarded, it is
    /// down.
    fn expire(&mut self, now: u64) {
        if self.cfg.deadline_ms == 0 || now < self.cfg.deadline_ms {
            return;
        }
        let gone = self.mux.expire(now - self.cfg.deadline_ms);
        let n = gone.len();
        let mut silent = false;
        for (p, sent) in gone {
            self.stats.requests.count(p.cmd, Answer::Deadline);
            silent |= self.last_answer < sent;
            if let Some(c) = self.clients.get_mut(&p.client) {
                c.give(p.uid, p.cmd, &[status::DISCONNECTED], now);
                c.inflight -= 1;
                self.dirty.push(p.client);
            }
        }
        if silent && !self.down {
            self.down = true;
            self.next_probe = now + PROBE_EVERY_MS;
            log(format_args!(
                "server {} answered nothing for {} ms with {n} request(s) waiting (-deadline): answering 0x02 at once, probing once a second",
                self.cfg.target, self.cfg.deadline_ms
            ));
        }
        if self.mux.late() > MAX_LATE {
            self.upstream_lost(format_args!(
                "{} answers overdue past -deadline",
                self.mux.late()
            ));
        }
    }

    /// Give the application connections the answers Redis completed.
    fn deliver_backend(&mut self) {
        let Some(b) = &mut self.backend else { return };
        let now_us = tools::now_us();
        let now = now_us / 1000;
        let (clients, dirty, stats) = (&mut self.clients, &mut self.dirty, &mut self.stats);
        b.deliver(&mut |r, payload, how| {
            stats.requests.count(r.cmd, how);
            if how == Answer::Server {
                stats
                    .rtt
                    .observe(Duration::from_micros(now_us.saturating_sub(r.sent_us)));
            }
            if let Some(c) = clients.get_mut(&r.client) {
                c.give(r.uid, r.cmd, payload, now);
                c.inflight -= 1;
                c.link.last_active = now;
                dirty.push(r.client);
            }
            // Otherwise the application has gone: discarded.
        });
    }

    /// Drop clients idle for `-idle` ms and those stalled for
    /// `-clientstall` ms; returns when to look again.
    fn scan(&mut self, now: u64) -> u64 {
        let idle = self.cfg.idle_ms;
        let stall = self.cfg.clientstall_ms;
        let mut next = u64::MAX;
        let mut idlers = Vec::new();
        let mut stalled = Vec::new();
        for (t, c) in &self.clients {
            let l = &c.link;
            if stall > 0 && l.holds() {
                let due = l.progress + stall;
                if due <= now {
                    stalled.push((*t, l.unsent(), l.inbuf.len(), now - l.progress));
                } else {
                    next = next.min(due);
                }
                continue;
            }
            if idle == 0 || c.inflight > 0 || l.unsent() > 0 {
                continue;
            }
            let due = l.last_active + idle;
            if due <= now {
                idlers.push(*t);
            } else {
                next = next.min(due);
            }
        }
        for t in idlers {
            self.stats.conns.closed_idle += 1;
            self.close_client(t);
        }
        for (t, unread, partial, ms) in stalled {
            if let Some(skipped) = self.close_log.allow(now) {
                log(format_args!(
                    "closing an application connection: {unread} bytes of answers unread and {partial} bytes of requests pending, no progress for {ms} ms (-clientstall){}",
                    suppressed(skipped)
                ));
            }
            self.stats.conns.closed_stall += 1;
            self.close_client(t);
        }
        let floor = now + SCAN_MIN_MS;
        if next == u64::MAX {
            // Nothing due: look again within the shortest period (a client
            // may start holding something or go idle meanwhile).
            let p = [idle, stall].into_iter().filter(|&x| x > 0).min();
            return p.map_or(u64::MAX, |p| (now + p).max(floor));
        }
        next.max(floor)
    }

    /// An event for the -metrics endpoint; a scrape reads the counters.
    fn metrics_event(&mut self, token: u64, events: u32) {
        let up = match &self.backend {
            Some(b) => {
                b.count(&mut self.stats);
                b.is_up()
            }
            None => matches!(self.up_state(), Some(UpState::Up)) && !self.down,
        };
        let Some(ep) = &mut self.metrics else { return };
        self.stats.conns_open = self.clients.len() as u64;
        self.stats.upstream_up = up;
        let stats = &self.stats;
        ep.event(&self.poller, token, events, &mut |e| {
            metrics::render_client(stats, e)
        });
    }

    fn run(&mut self, d: &mut Daemon) -> io::Result<()> {
        self.poller
            .add(self.listener.as_raw_fd(), TOK_LISTEN, evloop::READ)?;
        self.poller.add(d.signals.fd(), TOK_SIGNAL, evloop::READ)?;
        if self.backend.is_none() {
            self.connect_upstream();
        }
        let mut events = Vec::new();
        loop {
            let now = Self::now();
            // Timers.
            if let Some(b) = &mut self.backend {
                b.tick(&self.poller, now);
                self.deliver_backend();
            }
            match self.up_state() {
                None if self.backend.is_some() => {}
                None if now >= self.next_retry => self.connect_upstream(),
                Some(UpState::Connecting { since }) if now >= since + CONNECT_TIMEOUT_MS => {
                    let what = if self.up.as_ref().is_some_and(Link::connecting) {
                        "connection timed out"
                    } else {
                        "TLS handshake timed out"
                    };
                    self.connect_failed(io::Error::new(io::ErrorKind::TimedOut, what))
                }
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
            self.expire(now);
            if (self.cfg.idle_ms > 0 || self.cfg.clientstall_ms > 0) && now >= self.next_idle_scan {
                self.next_idle_scan = self.scan(now);
            }
            // The Redis requests of this turn (timers above, events below
            // in the previous turn): one write; a write error answers them.
            if let Some(b) = &mut self.backend {
                b.send_queued(&self.poller, Self::now());
                self.deliver_backend();
            }
            self.flush_all();
            self.enforce_budget();
            let now = Self::now();
            if let Some(ep) = &mut self.metrics {
                ep.expire(now);
            }
            let mut wake = u64::MAX;
            if let Some(t) = self.backend.as_ref().and_then(Backend::next_wake) {
                wake = wake.min(t);
            }
            match self.up_state() {
                None if self.backend.is_some() => {}
                None => wake = wake.min(self.next_retry),
                Some(UpState::Connecting { since }) => {
                    wake = wake.min(since + CONNECT_TIMEOUT_MS);
                    if self.mux.in_flight() > 0 {
                        wake = wake.min(since + CONNECT_GRACE_MS);
                    }
                }
                Some(UpState::Up) => {
                    if self.cfg.stall_ms > 0 && self.mux.in_flight() + self.mux.late() > 0 {
                        wake = wake.min(self.up_progress + self.cfg.stall_ms);
                    }
                }
            }
            if self.cfg.deadline_ms > 0 {
                if let Some(t) = self.mux.oldest_sent() {
                    wake = wake.min(t + self.cfg.deadline_ms);
                }
            }
            if self.cfg.idle_ms > 0 || self.cfg.clientstall_ms > 0 {
                wake = wake.min(self.next_idle_scan);
            }
            if let Some(t) = self.accept_paused_until {
                wake = wake.min(t);
            }
            if let Some(t) = self.metrics.as_ref().and_then(Endpoint::next_deadline) {
                wake = wake.min(t);
            }
            if let Some(tls) = &mut self.tls {
                tls.maybe_reload(d.signals.take_reload(), now, &mut |l| {
                    log(format_args!("{l}"))
                });
                wake = wake.min(now.saturating_add(tls.due_in(now)));
            }
            if self.up.as_ref().is_some_and(Link::has_buffered_input) {
                // Decrypted answers the descriptor will not show: now.
                wake = now;
            }
            d.tick(now);
            let mut timeout =
                (wake != u64::MAX).then(|| Duration::from_millis(wake.saturating_sub(now)));
            if let Some(w) = d.max_sleep() {
                timeout = Some(timeout.map_or(w, |t| t.min(w)));
            }
            self.poller.wait(timeout, &mut events)?;
            for ev in &events {
                match ev.token {
                    TOK_LISTEN => self.accept(),
                    TOK_SIGNAL => {
                        if let Some(sig) = d.signals.pending() {
                            log(format_args!("{}: shutting down", tools::signal_name(sig)));
                            return Ok(());
                        }
                        if let Some(tls) = &mut self.tls {
                            if d.signals.take_reload() {
                                tls.maybe_reload(true, Self::now(), &mut |l| {
                                    log(format_args!("{l}"))
                                });
                            }
                        }
                    }
                    t if Endpoint::owns(t) => self.metrics_event(t, ev.events),
                    t if self.backend.as_ref().is_some_and(|b| b.owns(t)) => {
                        if let Some(b) = &mut self.backend {
                            b.event(&self.poller, ev, Self::now());
                        }
                        self.deliver_backend();
                    }
                    t if self.up.as_ref().is_some_and(|u| u.token() == t) => self.on_upstream(ev),
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
    let store = store::is_store_address(server)
        .then(|| StoreAddress::parse(server))
        .transpose()
        .map_err(|e| fail(format!("flag -server: {e}")))?;
    let server = match &store {
        Some(_) => None,
        None => {
            let s = DaemonAddress::parse(server).map_err(|e| fail(format!("flag -server: {e}")))?;
            if !s.addr.can_connect() {
                return Err(fail(format!(
                    "flag -server: {s} names no host to connect to"
                )));
            }
            Some(s)
        }
    };
    let target = match (&store, &server) {
        (Some(st), _) => st.to_string(),
        (None, Some(s)) => s.to_string(),
        (None, None) => String::new(),
    };
    let listen = p.get("listen").unwrap_or("UNIX:/tmp/scache");
    if listen.len() >= 4 && listen.as_bytes()[..4].eq_ignore_ascii_case(b"TLS:") {
        return Err(fail(format!(
            "flag -listen: '{listen}': dc_client listens for local applications in plain (UNIX: or IP:); TLS is for -server"
        )));
    }
    let listen = Address::parse(listen).map_err(|e| fail(format!("flag -listen: {e}")))?;
    let tls_needed = server.as_ref().is_some_and(|s| s.tls);
    tlsconf::Settings::from_flags(&p, tls_needed, &format!("-server {target}")).map_err(fail)?;
    let retry_ms = p.num("retry", 5000, 1, 86_400_000).map_err(fail)?;
    let idle_ms = p.num("idle", 0, 0, 86_400_000).map_err(fail)?;
    let maxconns = p
        .num("maxconns", DEFAULT_MAXCONNS, 1, 1_000_000)
        .map_err(fail)? as usize;
    let stall_ms = p
        .num("stall", DEFAULT_STALL_MS, 0, 86_400_000)
        .map_err(fail)?;
    let deadline_ms = p
        .num("deadline", DEFAULT_DEADLINE_MS, 0, 86_400_000)
        .map_err(fail)?;
    let clientstall_ms = p
        .num("clientstall", DEFAULT_CLIENTSTALL_MS, 0, 86_400_000)
        .map_err(fail)?;
    let maxbuffer = p
        .num("maxbuffer", DEFAULT_MAXBUFFER_MB, 1, 1 << 20)
        .map_err(fail)? as usize
        * (1 << 20);
    let metrics = p
        .get("metrics")
        .map(metrics::parse_address)
        .transpose()
        .map_err(fail)?;
    let warning = store.as_ref().and_then(|s| s.warning("-server"));
    let redis = match store {
        Some(st) => Some(redis_config(&p, st, deadline_ms, stall_ms).map_err(fail)?),
        None => {
            if let Some(n) = store::REDIS_FLAG_NAMES
                .iter()
                .chain(REDIS_ONLY)
                .find(|n| p.has(n))
            {
                return Err(fail(format!(
                    "flag -{n}: only with a Redis -server (redis://host:port); -server {target} is a dc_server"
                )));
            }
            None
        }
    };
    let opts = SockOpts {
        owner: p.get("sockowner").map(str::to_string),
        group: p.get("sockgroup").map(str::to_string),
        perms: p.octal("sockperms").map_err(fail)?,
    };
    Ok((
        Config {
            server,
            target,
            redis,
            warning,
            retry_ms,
            idle_ms,
            maxconns,
            stall_ms,
            deadline_ms,
            clientstall_ms,
            maxbuffer,
            metrics,
        },
        listen,
        opts,
        p,
    ))
}

/// The flags that only make sense with a Redis `-server`, beside
/// [`store::REDIS_FLAG_NAMES`].
const REDIS_ONLY: &[&str] = &["mintimeout", "maxtimeout"];

/// The Redis connection of `-server redis://...` from the address and the
/// `-redis-*` flags; the flags that make no sense with it are refused.
fn redis_config(
    p: &tools::Parsed,
    st: StoreAddress,
    deadline_ms: u64,
    stall_ms: u64,
) -> Result<(store::StoreConfig, Timeouts), String> {
    if p.has("retry") {
        return Err(format!(
            "flag -retry: a fixed retry period is for a dc_server; Redis is reconnected with backoff ({} ms to {} ms)",
            redis::BACKOFF_MIN_MS,
            redis::BACKOFF_MAX_MS
        ));
    }
    let mut sc = store::redis_config(p, st, "-server")?;
    let cfg = &mut sc.redis;
    // -deadline 0 (none) and -stall 0 (never): a day, the longest wait the
    // other flags take.
    cfg.deadline_ms = if deadline_ms == 0 {
        86_400_000
    } else {
        deadline_ms
    };
    if p.has("stall") {
        cfg.stall_ms = if stall_ms == 0 { 86_400_000 } else { stall_ms };
    }
    Ok((sc, Timeouts::from_flags(p)?))
}

fn main() -> ExitCode {
    let (cfg, listen, opts, p) = match parse() {
        Ok(x) => x,
        Err(code) => return ExitCode::from(code as u8),
    };
    match tools::log::target_from(&p).map(|t| tools::log::setup("dc_client", &t)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return ExitCode::from(CLI.fail(&format!("flag -logfile: {e}")) as u8),
        Err(m) => return ExitCode::from(CLI.fail(&m) as u8),
    }
    let fatal = |e: io::Error| {
        tools::log::fatal(&e.to_string());
        ExitCode::from(1)
    };
    // Resolved before -daemon changes the directory to /.
    let pidfile_path = match p.get("pidfile") {
        Some("") => return ExitCode::from(CLI.fail("flag -pidfile: empty path") as u8),
        Some(f) => match tools::absolute_path(f.as_ref()) {
            Ok(a) => Some(a),
            Err(e) => return ExitCode::from(CLI.fail(&format!("flag -pidfile: {e}")) as u8),
        },
        None => None,
    };
    // Checked here so that an unknown user is a usage error.
    if let Err(e) = p.get("user").map(tools::lookup_user).transpose() {
        return ExitCode::from(CLI.fail(&format!("flag -user: {e}")) as u8);
    }
    if let Some(w) = &cfg.warning {
        log(format_args!("{w}"));
    }
    if let Address::Ip { addr, .. } = &listen {
        let risk = "there is no authentication and no encryption: anyone who reaches it can read and plant TLS sessions through this proxy; listen on a UNIX socket or a private address";
        if let Some(w) = tools::net::exposure_warning("-listen", *addr, risk) {
            log(format_args!("{w}"));
        }
    }
    Daemon::hold_signals();
    let listener = match tools::listen(&listen, &opts) {
        Ok(l) => l,
        Err(e) => return fatal(e),
    };
    let endpoint = match cfg.metrics.as_ref().map(Endpoint::bind).transpose() {
        Ok(e) => e,
        Err(e) => return fatal(e),
    };
    // The TLS files are read now, before -user drops privileges (and
    // again at each reload, as that user).
    let tls_needed = cfg.server.as_ref().is_some_and(|s| s.tls);
    let tls = match tlsconf::Settings::from_flags(&p, tls_needed, "-server") {
        Ok(Some(settings)) => {
            let name = p
                .get("tls-name")
                .or(cfg.server.as_ref().and_then(|s| s.host.as_deref()))
                .unwrap_or_default()
                .to_string();
            match ClientTls::load(settings, &name, tools::now_ms()) {
                Ok(t) => Some(t),
                Err(e) => {
                    tools::log::fatal(&e);
                    return ExitCode::from(1);
                }
            }
        }
        Ok(None) => None,
        Err(m) => return ExitCode::from(CLI.fail(&m) as u8),
    };
    let dopts = daemon::Options {
        daemon: p.has("daemon"),
        pidfile: pidfile_path,
        user: p.get("user").map(str::to_string),
        killable: false,
        reload: tls.is_some(),
    };
    let files: Vec<&std::path::Path> = listener.unix_path().into_iter().collect();
    let mut d = match Daemon::start("dc_client", &dopts, &files) {
        Ok(d) => d,
        Err(code) => return ExitCode::from(code as u8),
    };
    match tools::raise_nofile_limit() {
        Ok(n) if (n as usize) < cfg.maxconns + 32 => log(format_args!(
            "warning: descriptor limit {n} is below -maxconns {}",
            cfg.maxconns
        )),
        Ok(_) => {}
        Err(e) => log(format_args!(
            "warning: cannot raise the descriptor limit: {e}"
        )),
    }
    let poller = match Poller::new() {
        Ok(p) => p,
        Err(e) => return ExitCode::from(d.fail(&format!("cannot start the event loop: {e}")) as u8),
    };
    let mut proxy = Proxy {
        cfg,
        poller,
        listener,
        clients: idmap::new(),
        next_token: TOK_FIRST,
        up: None,
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
        last_answer: 0,
        down: false,
        next_probe: 0,
        buffered: 0,
        close_log: tools::RateLimit::new(5),
        metrics: None,
        stats: metrics::ClientView::default(),
        ever_up: false,
        up_logged: false,
        tls,
        backend: None,
    };
    if let Some((rcfg, timeouts)) = proxy.cfg.redis.take() {
        let token = proxy.next_token;
        proxy.next_token += Backend::TOKENS;
        proxy.backend = Some(Backend::new(
            rcfg,
            timeouts,
            token,
            &proxy.poller,
            tools::now_ms(),
        ));
    }
    if let Some(ep) = endpoint {
        if let Err(e) = ep.register(&proxy.poller) {
            let msg = format!("cannot watch the -metrics listener: {e}");
            return ExitCode::from(d.fail(&msg) as u8);
        }
        proxy.metrics = Some(ep);
    }
    d.ready(&format!("proxying {listen} to {}", proxy.cfg.target));
    let code = match proxy.run(&mut d) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fatal(e),
    };
    d.stopping();
    code
}
