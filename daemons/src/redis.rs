//! A non-blocking, pipelined Redis client for the daemons' epoll loops
//! (issue 17: Redis as the shared session store). One [`RedisConn`] keeps
//! one connection to one Redis server, whatever the number of requests in
//! flight; it never blocks, spawns no thread and needs no async runtime.
//! The RESP codec is the `redis-protocol` crate (RESP2), decoding straight
//! from the connection's input buffer.
//!
//! # Wiring it into a loop
//!
//! ```text
//! let mut rc = RedisConn::new(Config::new(addr), TOKEN, &poller, now_ms());
//! loop {
//!     poller.wait(rc.next_wake().map(|t| t.saturating_sub(now_ms())), &mut evs)?;
//!     for ev in &evs {
//!         if ev.token == TOKEN { rc.on_event(&poller, ev, now_ms(), &mut done); }
//!     }
//!     rc.tick(&poller, now_ms(), &mut done);           // deadlines, backoff
//!     match rc.submit(&poller, Request::Get { id }, my_token, now_ms(), &mut done) {
//!         Ok(()) => {}                                  // answered later, in `done`
//!         Err(failure) => { /* answered at once: Answer::Failed(failure) */ }
//!     }
//!     rc.send_queued(&poller, now_ms(), &mut done);    // this turn's submits
//!     for c in done.drain(..) { reply(c.token, c.answer.status()); }
//! }
//! ```
//!
//! - The connection registers its own descriptor with the poller under the
//!   token given to [`RedisConn::new`] (as [`crate::link::Link`] does, which
//!   it uses for the byte stream), and changes the registration when it
//!   reconnects; [`RedisConn::fd`] and [`RedisConn::interest`] show it.
//! - [`RedisConn::on_event`] (or [`RedisConn::on_readable`] /
//!   [`RedisConn::on_writable`]) moves bytes and pushes a [`Completion`]
//!   (caller's token + [`Answer`]) for each request answered.
//! - [`RedisConn::tick`] fails requests past their deadline, gives up a
//!   connect or handshake that takes too long, resets a connection that
//!   stopped answering, and reconnects when the backoff delay has passed;
//!   [`RedisConn::next_wake`] says when it next has something to do.
//! - [`RedisConn::submit`] queues a request, or fails it at once (store
//!   down, pipeline full, invalid request) by returning the failure;
//!   [`RedisConn::send_queued`] writes the turn's requests.
//!
//! # Behaviour
//!
//! - Commands: ADD is `SET key data NX PX timeout`, GET is `GET`, REMOVE is
//!   `DEL`, HAVE is `EXISTS`; the key is the prefix (default
//!   [`DEFAULT_PREFIX`], the layout of Apache's mod_socache_redis) followed
//!   by the session id in lowercase hex.
//! - On connect: `AUTH [user] password` when a password is configured, then
//!   `PING`; the connection is up once the PONG arrives. Requests submitted
//!   while the connection opens are queued behind the handshake.
//! - [`RedisConn::submit`] only queues a command; the owner's loop calls
//!   [`RedisConn::send_queued`] once per turn (after its last submit,
//!   before it waits), so the requests of one turn reach Redis in one
//!   write. A batch reaching [`BATCH_BYTES`] is written at once.
//! - At most [`MAX_PENDING`] requests wait for replies (the FIFO also
//!   holds the handshake and requests already failed by their deadline
//!   whose late reply has not come); beyond it, or beyond
//!   [`MAX_UNSENT`] bytes of unsent commands, a request fails at once.
//! - Each request has a deadline ([`Config::deadline_ms`]): when it passes,
//!   the request is answered [`Failure::Deadline`] and its late reply is
//!   dropped when it comes.
//! - An error reply fails only the request it answers, classified in
//!   [`ReplyError`]; a READONLY reply (a primary turned replica in a
//!   fail-over), a lost connection and a failed attempt set the "needs
//!   rediscovery" flag ([`RedisConn::take_rediscovery`]) for the Sentinel layer.
//! - Protocol garbage, a reply of the wrong type, an unsolicited reply, a
//!   closed connection, a failed handshake (AUTH refused, NOAUTH), or no
//!   reply for [`Config::stall_ms`]: the connection is reset, every waiting
//!   request fails once ([`Failure::Reset`]), and reconnects follow with
//!   exponential backoff from [`BACKOFF_MIN_MS`] to [`BACKOFF_MAX_MS`] with
//!   jitter. While down, requests fail at once ([`Failure::Down`]).
//! - A GET value longer than the distcache session limit ([`MAX_VALUE`]) is
//!   a miss, logged once per connection object; its bytes are skipped as
//!   they arrive, never buffered whole. The input buffer holds at most
//!   [`MAX_INPUT`] bytes.
//! - For the Sentinel layer ([`crate::sentinel`]): with
//!   [`Config::check_role`] the handshake also sends `ROLE`, and a server
//!   that answers as a replica is refused (down, rediscovery asked);
//!   [`RedisConn::set_addr`] re-points the connection at a new primary.
//! - One log line per state change (down with its reason, up), never one
//!   per request; repeated failed reconnects for the same reason log nothing
//!   more.

use std::collections::VecDeque;
use std::fmt;
use std::os::fd::RawFd;

use distcache_rs::nal::Address;
use distcache_rs::proto::{self, status, Direction};
use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::encode::encode_borrowed;
use redis_protocol::resp2::types::{BorrowedFrame, OwnedFrame, Resp2Frame};

use crate::evloop::{self, Event, Poller};
use crate::link::Link;
use crate::tls::{TlsClient, TlsStream};
use crate::tlsconf::failure_reason;
use crate::tools::log;

/// Requests waiting for a reply on one connection, at most (handshake
/// commands and deadline-failed requests whose late reply is still due
/// included). Beyond it a request fails at once with [`Failure::Full`].
pub const MAX_PENDING: usize = 4096;

/// Unsent command bytes, at most (a Redis that stops reading); beyond it a
/// request fails at once with [`Failure::Full`]. Some 250 ADDs of the
/// largest session, or thousands of GETs; a live Redis on loopback never
/// lets this much wait.
pub const MAX_UNSENT: usize = 8 << 20;

/// Queued command bytes at which [`RedisConn::submit`] writes at once
/// instead of waiting for [`RedisConn::send_queued`]: a bigger write saves
/// no system call worth having, and the batch of one loop turn stays
/// small.
pub const BATCH_BYTES: usize = 64 << 10;

/// Received bytes not yet decoded, at most. Every reply we accept fits
/// (the largest is a GET of [`MAX_VALUE`] bytes); longer values are
/// skipped, so a full buffer that holds no whole reply is garbage.
pub const MAX_INPUT: usize = 256 * 1024;

/// Bytes read from the socket per read call.
const READ_CHUNK: usize = 64 * 1024;

/// The largest session a GET may return: the distcache protocol's session
/// limit. A longer value is answered as a miss.
pub const MAX_VALUE: usize = proto::MAX_TOTAL_DATA;

/// The key prefix Apache's mod_socache_redis uses for mod_ssl sessions.
pub const DEFAULT_PREFIX: &str = "mod_ssl-sess:";

/// Default per-request deadline: dc_client's `-deadline` default.
pub const DEFAULT_DEADLINE_MS: u64 = 250;

/// Default bound on a connect plus its AUTH/PING handshake.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 1000;

/// Default: an up connection whose oldest request has had no reply and no
/// byte from Redis for this long is taken as dead and reset.
pub const DEFAULT_STALL_MS: u64 = 2000;

/// First reconnect delay after a failure (before jitter).
pub const BACKOFF_MIN_MS: u64 = 50;

/// Largest reconnect delay (before jitter).
pub const BACKOFF_MAX_MS: u64 = 5000;

/// A password, never shown by `Debug`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(pub Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// What to connect to and how.
#[derive(Clone, Debug)]
pub struct Config {
    /// The Redis server (a TCP address; a UNIX socket works too).
    pub addr: Address,
    /// ACL user for `AUTH user password` (none: `AUTH password`).
    pub user: Option<String>,
    /// Password; none: no AUTH is sent.
    pub password: Option<Secret>,
    /// Key prefix put before the hex session id.
    pub prefix: Vec<u8>,
    /// Per-request deadline in ms (at least 1).
    pub deadline_ms: u64,
    /// Connect plus handshake bound in ms.
    pub connect_timeout_ms: u64,
    /// No reply for this long while requests wait: reset (ms).
    pub stall_ms: u64,
    /// Pipeline bound (at most [`MAX_PENDING`]).
    pub max_pending: usize,
    /// `rediss://`: the connection is TLS, with this client side (the
    /// handshake runs before AUTH and PING, within
    /// [`Config::connect_timeout_ms`]).
    pub tls: Option<TlsClient>,
    /// Send `ROLE` in the handshake and take the connection up only if
    /// the server is a primary (the Sentinel layer sets it: a node
    /// announced as primary that answers as a replica is refused, with
    /// the rediscovery flag set). An ACL user needs `+role` for it: a
    /// refused ROLE fails the handshake, naming the reason.
    pub check_role: bool,
}

impl Config {
    /// The defaults for `addr`.
    pub fn new(addr: Address) -> Config {
        Config {
            addr,
            user: None,
            password: None,
            prefix: DEFAULT_PREFIX.as_bytes().to_vec(),
            deadline_ms: DEFAULT_DEADLINE_MS,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            stall_ms: DEFAULT_STALL_MS,
            max_pending: MAX_PENDING,
            tls: None,
            check_role: false,
        }
    }
}

/// A distcache operation to run against Redis (borrowed: it is encoded at
/// once and not kept).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// Store `data` under `id` for `timeout_ms`, only if absent.
    Add {
        id: &'a [u8],
        data: &'a [u8],
        timeout_ms: u64,
    },
    Get {
        id: &'a [u8],
    },
    Remove {
        id: &'a [u8],
    },
    Have {
        id: &'a [u8],
    },
}

/// The error replies told apart (by their first word).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyError {
    /// READONLY: written to a replica (fail-over under way); rediscover.
    ReadOnly,
    /// LOADING: the server is loading its data set.
    Loading,
    /// NOAUTH: authentication required.
    NoAuth,
    /// WRONGPASS: bad user or password.
    WrongPass,
    /// OOM: maxmemory reached and nothing to evict.
    Oom,
    /// TRYAGAIN: a cluster slot is moving.
    TryAgain,
    /// Any other error reply (WRONGTYPE, ERR, NOPERM, ...).
    Other,
}

impl ReplyError {
    /// The class of an error reply's text.
    pub fn classify(text: &str) -> ReplyError {
        match text.split_whitespace().next().unwrap_or("") {
            "READONLY" => ReplyError::ReadOnly,
            "LOADING" => ReplyError::Loading,
            "NOAUTH" => ReplyError::NoAuth,
            "WRONGPASS" => ReplyError::WrongPass,
            "OOM" => ReplyError::Oom,
            "TRYAGAIN" => ReplyError::TryAgain,
            _ => ReplyError::Other,
        }
    }
}

/// Why a request got no answer from Redis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The store is down (between reconnect attempts).
    Down,
    /// The pipeline is full ([`Config::max_pending`] or [`MAX_UNSENT`]).
    Full,
    /// The request's deadline passed.
    Deadline,
    /// The connection was reset with the request waiting.
    Reset,
    /// Redis answered with an error.
    Reply(ReplyError),
    /// The request cannot be sent (empty or over-long id or data, a
    /// timeout of 0); callers check these first, as dc_server does.
    Invalid,
}

/// The distcache answer to a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// ADD stored.
    Added,
    /// ADD refused: a session with this id exists (the NX failed).
    Matching,
    /// GET found the session.
    Hit(Vec<u8>),
    /// GET found nothing (or a value over [`MAX_VALUE`]).
    Miss,
    /// REMOVE removed it.
    Removed,
    /// REMOVE found nothing.
    Absent,
    /// HAVE: present.
    Yes,
    /// HAVE: absent.
    No,
    /// No answer from Redis.
    Failed(Failure),
}

impl Answer {
    /// The distcache status byte for this answer (a failure is the proxy's
    /// "disconnected" status, 0x02).
    pub fn status(&self) -> u8 {
        match self {
            Answer::Added | Answer::Hit(_) | Answer::Removed | Answer::Yes => status::OK,
            Answer::Matching => status::ADD_MATCHING_SESSION,
            Answer::Miss | Answer::Absent | Answer::No => status::NOTOK,
            Answer::Failed(_) => status::DISCONNECTED,
        }
    }
}

/// A request answered: the caller's token and the answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    pub token: u64,
    pub answer: Answer,
}

/// Counters, for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connection attempts started.
    pub connects: u64,
    /// Handshakes completed (connection up).
    pub ups: u64,
    /// Connections lost or attempts failed.
    pub downs: u64,
    /// Requests failed by their deadline.
    pub deadline_failures: u64,
    /// Error replies.
    pub reply_errors: u64,
    /// GET values over [`MAX_VALUE`] answered as misses.
    pub oversize: u64,
    /// Log lines written.
    pub log_lines: u64,
}

/// What a FIFO entry waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Auth,
    Role,
    Ping,
    Add,
    Get,
    Remove,
    Have,
}

#[derive(Debug)]
struct Pending {
    /// The caller's token; `None` for the handshake and for a request
    /// already answered (deadline) whose reply is still due.
    token: Option<u64>,
    op: Op,
    deadline: u64,
    queued: u64,
}

/// Why the connection went down, for "one line per change".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DownKind {
    Connect,
    Auth,
    Timeout,
    Closed,
    Protocol,
    /// The server is not a primary ([`Config::check_role`]).
    Role,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// No connection; the next attempt at `retry_at`.
    Down {
        retry_at: u64,
    },
    /// Connecting or handshaking since `since`.
    Opening {
        since: u64,
    },
    Up,
}

/// One Redis connection in an epoll loop. See the module documentation.
#[derive(Debug)]
pub struct RedisConn {
    cfg: Config,
    token: u64,
    state: State,
    link: Option<Link>,
    pending: VecDeque<Pending>,
    /// Bytes of an over-long GET value (and its CRLF) still to skip.
    skipping: usize,
    /// Last time bytes came from Redis.
    last_read: u64,
    /// Failed attempts since the last up, for the backoff.
    attempts: u32,
    /// The down reason last logged (`None`: last logged state is up, or
    /// nothing logged yet).
    logged_down: Option<DownKind>,
    rediscover: bool,
    oversize_logged: bool,
    rng: u64,
    stats: Stats,
}

impl RedisConn {
    /// A connection to `cfg.addr`, registered under `token`; the first
    /// connect starts now.
    pub fn new(mut cfg: Config, token: u64, poller: &Poller, now: u64) -> RedisConn {
        cfg.deadline_ms = cfg.deadline_ms.max(1);
        cfg.max_pending = cfg.max_pending.clamp(1, MAX_PENDING);
        let mut rc = RedisConn {
            cfg,
            token,
            state: State::Down { retry_at: now },
            link: None,
            pending: VecDeque::new(),
            skipping: 0,
            last_read: now,
            attempts: 0,
            logged_down: None,
            rediscover: false,
            oversize_logged: false,
            rng: jitter_seed(token),
            stats: Stats::default(),
        };
        let mut none = Vec::new();
        rc.open(poller, now, &mut none);
        rc
    }

    /// The connection handshake is done and requests are being served.
    pub fn is_up(&self) -> bool {
        self.state == State::Up
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The descriptor registered with the poller, while there is one.
    pub fn fd(&self) -> Option<RawFd> {
        self.link.as_ref().map(|l| l.stream().as_raw_fd())
    }

    /// The events registered for [`RedisConn::fd`] (0 without one).
    pub fn interest(&self) -> u32 {
        self.link.as_ref().map_or(0, |l| l.interest())
    }

    /// The server this connection talks to.
    pub fn addr(&self) -> &Address {
        &self.cfg.addr
    }

    /// Point the connection at `addr` (the Sentinel layer's new primary):
    /// the current connection, if any, is dropped without a "down" line
    /// (the caller logs the move), its waiting requests fail once
    /// ([`Failure::Reset`], in `out`), the backoff is forgotten and a
    /// connect to `addr` starts now. False (nothing done) when `addr` is
    /// the current address.
    pub fn set_addr(
        &mut self,
        poller: &Poller,
        addr: Address,
        now: u64,
        out: &mut Vec<Completion>,
    ) -> bool {
        if addr == self.cfg.addr {
            return false;
        }
        self.drop_link(poller, out);
        self.cfg.addr = addr;
        self.attempts = 0;
        self.logged_down = None;
        self.rediscover = false;
        self.state = State::Down { retry_at: now };
        self.open(poller, now, out);
        true
    }

    /// Requests (and handshake commands) waiting for a reply.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Whether a READONLY reply, a lost connection or a failed attempt
    /// asked for the primary to be looked up again (Sentinel); clears the
    /// flag.
    pub fn take_rediscovery(&mut self) -> bool {
        std::mem::take(&mut self.rediscover)
    }

    /// The Redis key for session `id`: prefix + lowercase hex.
    pub fn key(&self, id: &[u8]) -> Vec<u8> {
        key_under(&self.cfg.prefix, id)
    }

    /// When [`RedisConn::tick`] next has something to do (ms, the clock
    /// of [`crate::tools::now_ms`]).
    pub fn next_wake(&self) -> Option<u64> {
        let mut t = match self.state {
            State::Down { retry_at } => Some(retry_at),
            State::Opening { since } => Some(since.saturating_add(self.cfg.connect_timeout_ms)),
            State::Up => None,
        };
        let mut min = |x: u64| t = Some(t.map_or(x, |t: u64| t.min(x)));
        if let Some(p) = self.pending.iter().find(|p| p.token.is_some()) {
            min(p.deadline);
        }
        if self.state == State::Up {
            if let Some(p) = self.pending.front() {
                min(p
                    .queued
                    .max(self.last_read)
                    .saturating_add(self.cfg.stall_ms));
            }
        }
        t
    }

    /// Queue `req`, answered later as a [`Completion`] carrying `token`;
    /// `Err` is the answer given at once. The command is written by the
    /// next [`RedisConn::send_queued`] (at once when the queue reaches
    /// [`BATCH_BYTES`]); should a write find the connection lost, every
    /// waiting request (this one included) is answered in `out`.
    pub fn submit(
        &mut self,
        poller: &Poller,
        req: Request<'_>,
        token: u64,
        now: u64,
        out: &mut Vec<Completion>,
    ) -> Result<(), Failure> {
        self.submit_under(poller, None, req, token, now, out)
    }

    /// [`RedisConn::submit`] with the key under `prefix` instead of
    /// [`Config::prefix`] (`None`: that one): dc_server keeps stunnel's
    /// sessiond sessions under their own prefix on the same connection.
    pub fn submit_under(
        &mut self,
        poller: &Poller,
        prefix: Option<&[u8]>,
        req: Request<'_>,
        token: u64,
        now: u64,
        out: &mut Vec<Completion>,
    ) -> Result<(), Failure> {
        if matches!(self.state, State::Down { .. }) {
            return Err(Failure::Down);
        }
        let Some(link) = self.link.as_mut() else {
            return Err(Failure::Down);
        };
        if self.pending.len() >= self.cfg.max_pending || link.unsent() > MAX_UNSENT {
            return Err(Failure::Full);
        }
        let id = match req {
            Request::Add { id, .. }
            | Request::Get { id }
            | Request::Remove { id }
            | Request::Have { id } => id,
        };
        if id.is_empty() || id.len() > proto::MAX_ID_LEN {
            return Err(Failure::Invalid);
        }
        let key = key_under(prefix.unwrap_or(&self.cfg.prefix), id);
        let link = self.link.as_mut().ok_or(Failure::Down)?;
        let (op, res) = match req {
            Request::Add {
                data, timeout_ms, ..
            } => {
                if data.is_empty() || data.len() > MAX_VALUE || timeout_ms == 0 {
                    return Err(Failure::Invalid);
                }
                let ms = timeout_ms.to_string();
                let args: [&[u8]; 6] = [b"SET", &key, data, b"NX", b"PX", ms.as_bytes()];
                (Op::Add, write_cmd(link.out(), &args))
            }
            Request::Get { .. } => (Op::Get, write_cmd(link.out(), &[b"GET", &key])),
            Request::Remove { .. } => (Op::Remove, write_cmd(link.out(), &[b"DEL", &key])),
            Request::Have { .. } => (Op::Have, write_cmd(link.out(), &[b"EXISTS", &key])),
        };
        if res.is_err() {
            return Err(Failure::Invalid);
        }
        self.pending.push_back(Pending {
            token: Some(token),
            op,
            deadline: now.saturating_add(self.cfg.deadline_ms),
            queued: now,
        });
        if self
            .link
            .as_ref()
            .is_some_and(|l| l.unsent() >= BATCH_BYTES)
        {
            self.flush(poller, now, out);
        }
        Ok(())
    }

    /// Write the commands [`RedisConn::submit`] queued: the owner's loop
    /// calls this once per turn, after its last submit and before it
    /// waits (nothing else writes them). Sent behind the handshake while
    /// it runs; while the TCP connect is in progress this only asks for
    /// WRITE. A write finding the connection lost answers every waiting
    /// request in `out` (as [`RedisConn::submit`] did).
    pub fn send_queued(&mut self, poller: &Poller, now: u64, out: &mut Vec<Completion>) {
        if self.link.as_ref().is_some_and(|l| l.unsent() > 0) {
            self.flush(poller, now, out);
        }
    }

    /// A readiness event for this connection's token.
    pub fn on_event(&mut self, poller: &Poller, ev: &Event, now: u64, out: &mut Vec<Completion>) {
        let Some(link) = self.link.as_mut() else {
            return;
        };
        if link.connecting() {
            match link.connect_event(ev) {
                Ok(false) => return,
                Ok(true) => {}
                Err(e) => {
                    let msg = format!("cannot connect: {}", failure_reason(&e));
                    self.down(poller, now, DownKind::Connect, &msg, out);
                    return;
                }
            }
        }
        if ev.writable() && !self.flush(poller, now, out) {
            return;
        }
        if ev.readable() {
            self.read(poller, now, out);
            // A TLS flight to answer, or commands held by the handshake
            // that just finished.
            if self
                .link
                .as_ref()
                .is_some_and(|l| l.wants_write() || (l.unsent() > 0 && !l.handshaking()))
            {
                self.flush(poller, now, out);
            }
        }
    }

    /// The descriptor is readable.
    pub fn on_readable(&mut self, poller: &Poller, now: u64, out: &mut Vec<Completion>) {
        let ev = Event {
            token: self.token,
            events: evloop::READ,
        };
        self.on_event(poller, &ev, now, out);
    }

    /// The descriptor is writable.
    pub fn on_writable(&mut self, poller: &Poller, now: u64, out: &mut Vec<Completion>) {
        let ev = Event {
            token: self.token,
            events: evloop::WRITE,
        };
        self.on_event(poller, &ev, now, out);
    }

    /// Deadlines, timeouts and reconnects due at `now`.
    pub fn tick(&mut self, poller: &Poller, now: u64, out: &mut Vec<Completion>) {
        match self.state {
            State::Down { retry_at } if now >= retry_at => self.open(poller, now, out),
            State::Opening { since }
                if now >= since.saturating_add(self.cfg.connect_timeout_ms) =>
            {
                let msg = format!(
                    "no answer to the connect and handshake within {} ms",
                    self.cfg.connect_timeout_ms
                );
                self.down(poller, now, DownKind::Timeout, &msg, out);
            }
            State::Up => {
                if let Some(p) = self.pending.front() {
                    let quiet = p.queued.max(self.last_read);
                    if now >= quiet.saturating_add(self.cfg.stall_ms) {
                        let msg = format!("no reply for {} ms", now - quiet);
                        self.down(poller, now, DownKind::Timeout, &msg, out);
                    }
                }
            }
            _ => {}
        }
        for p in self.pending.iter_mut() {
            if p.token.is_none() {
                continue;
            }
            if p.deadline > now {
                break;
            }
            if let Some(token) = p.token.take() {
                self.stats.deadline_failures += 1;
                out.push(Completion {
                    token,
                    answer: Answer::Failed(Failure::Deadline),
                });
            }
        }
    }

    fn log(&mut self, msg: fmt::Arguments<'_>) {
        self.stats.log_lines += 1;
        log::line(format_args!("redis {}: {msg}", self.cfg.addr));
    }

    /// Start a connection attempt, queueing AUTH and PING.
    fn open(&mut self, poller: &Poller, now: u64, out: &mut Vec<Completion>) {
        self.stats.connects += 1;
        let made = match &self.cfg.tls {
            Some(tls) => Link::connect_over(
                &self.cfg.addr,
                self.token,
                Direction::Responses,
                poller,
                |tcp| Ok(Box::new(TlsStream::connect(tcp, tls)?)),
            ),
            None => Link::connect(&self.cfg.addr, self.token, Direction::Responses, poller),
        };
        let mut link = match made {
            Ok(l) => l,
            Err(e) => {
                let msg = format!("cannot connect: {}", failure_reason(&e));
                self.down(poller, now, DownKind::Connect, &msg, out);
                return;
            }
        };
        let deadline = now.saturating_add(self.cfg.connect_timeout_ms);
        let mut ok = true;
        if let Some(pw) = &self.cfg.password {
            ok &= write_auth(link.out(), self.cfg.user.as_deref(), pw).is_ok();
            self.pending.push_back(Pending {
                token: None,
                op: Op::Auth,
                deadline,
                queued: now,
            });
        }
        if self.cfg.check_role {
            ok &= write_cmd(link.out(), &[b"ROLE"]).is_ok();
            self.pending.push_back(Pending {
                token: None,
                op: Op::Role,
                deadline,
                queued: now,
            });
        }
        ok &= write_cmd(link.out(), &[b"PING"]).is_ok();
        self.pending.push_back(Pending {
            token: None,
            op: Op::Ping,
            deadline,
            queued: now,
        });
        self.link = Some(link);
        self.skipping = 0;
        self.last_read = now;
        self.state = State::Opening { since: now };
        if !ok {
            self.down(poller, now, DownKind::Protocol, "cannot encode AUTH", out);
            return;
        }
        if !self.link.as_ref().is_some_and(|l| l.connecting()) {
            self.flush(poller, now, out);
        }
    }

    /// Write what the socket takes and set the interest; false if the
    /// connection was reset.
    fn flush(&mut self, poller: &Poller, now: u64, out: &mut Vec<Completion>) -> bool {
        let Some(link) = self.link.as_mut() else {
            return false;
        };
        if let Err(msg) = push(link, poller) {
            self.down(poller, now, DownKind::Closed, &msg, out);
            return false;
        }
        true
    }

    /// Read what is there (within [`MAX_INPUT`]) and take the replies.
    fn read(&mut self, poller: &Poller, now: u64, out: &mut Vec<Completion>) {
        let mut scratch = vec![0u8; READ_CHUNK];
        loop {
            let Some(link) = self.link.as_mut() else {
                return;
            };
            let room = MAX_INPUT.saturating_sub(link.inbuf.len());
            if room == 0 {
                break;
            }
            let n = room.min(READ_CHUNK);
            match link.read_once(&mut scratch[..n]) {
                Ok(got) if got.eof => {
                    self.replies(poller, now, out);
                    self.down(
                        poller,
                        now,
                        DownKind::Closed,
                        "connection closed by the server",
                        out,
                    );
                    return;
                }
                Ok(got) if got.n == 0 => break,
                Ok(got) => {
                    self.last_read = now;
                    link.keep(&scratch[..got.n]);
                    if !self.replies(poller, now, out) {
                        return;
                    }
                }
                Err(e) => {
                    let msg = format!("read: {}", failure_reason(&e));
                    self.down(poller, now, DownKind::Closed, &msg, out);
                    return;
                }
            }
        }
        // Full and nothing decodable: no reply we accept is this long.
        if self
            .link
            .as_ref()
            .is_some_and(|l| l.inbuf.len() >= MAX_INPUT)
        {
            let msg = format!("a reply longer than {MAX_INPUT} bytes");
            self.down(poller, now, DownKind::Protocol, &msg, out);
        }
    }

    /// Take the whole replies in the input buffer; false if the
    /// connection was reset.
    fn replies(&mut self, poller: &Poller, now: u64, out: &mut Vec<Completion>) -> bool {
        loop {
            let Some(link) = self.link.as_mut() else {
                return false;
            };
            if self.skipping > 0 {
                let n = self.skipping.min(link.inbuf.len());
                link.consumed(n);
                self.skipping -= n;
                if self.skipping > 0 {
                    return true;
                }
                continue;
            }
            if link.inbuf.is_empty() {
                return true;
            }
            let Some(op) = self.pending.front().map(|p| p.op) else {
                self.down(
                    poller,
                    now,
                    DownKind::Protocol,
                    "a reply nobody asked for",
                    out,
                );
                return false;
            };
            if op == Op::Get {
                match bulk_len(&link.inbuf) {
                    BulkHead::Incomplete => return true,
                    BulkHead::Len(len, head) if len > MAX_VALUE => {
                        // Skip the value as it arrives: a miss.
                        self.skipping = head + len + 2;
                        let p = self.pending.pop_front();
                        self.oversized(len);
                        if let Some(token) = p.and_then(|p| p.token) {
                            out.push(Completion {
                                token,
                                answer: Answer::Miss,
                            });
                        }
                        continue;
                    }
                    _ => {}
                }
            }
            let (frame, used) = match decode(&link.inbuf) {
                Ok(Some(x)) => x,
                Ok(None) => return true,
                Err(e) => {
                    let msg = format!("protocol error: {}", e.details());
                    self.down(poller, now, DownKind::Protocol, &msg, out);
                    return false;
                }
            };
            link.consumed(used);
            let Some(p) = self.pending.pop_front() else {
                return false;
            };
            if !self.reply(poller, now, p, frame, out) {
                return false;
            }
        }
    }

    /// One reply to the oldest entry; false if the connection was reset.
    fn reply(
        &mut self,
        poller: &Poller,
        now: u64,
        p: Pending,
        frame: OwnedFrame,
        out: &mut Vec<Completion>,
    ) -> bool {
        let answer = match (p.op, frame) {
            (Op::Auth, OwnedFrame::SimpleString(_)) => return true,
            (Op::Auth, OwnedFrame::Error(e)) => {
                let who = self.cfg.user.as_deref().unwrap_or("default");
                let msg = format!("AUTH as user {who} refused: {e}");
                self.down(poller, now, DownKind::Auth, &msg, out);
                return false;
            }
            (Op::Role, OwnedFrame::Array(items)) => {
                let role = match items.first() {
                    Some(OwnedFrame::BulkString(r) | OwnedFrame::SimpleString(r)) => {
                        String::from_utf8_lossy(r).into_owned()
                    }
                    _ => String::from("(no role)"),
                };
                if role == "master" {
                    return true;
                }
                let msg = format!("the server is a {role}, not a primary");
                self.down(poller, now, DownKind::Role, &msg, out);
                return false;
            }
            (Op::Role, OwnedFrame::Error(e)) => {
                let msg = format!("ROLE refused (needed to check the primary): {e}");
                self.down(poller, now, DownKind::Auth, &msg, out);
                return false;
            }
            (Op::Ping, OwnedFrame::SimpleString(_)) => {
                self.up(now);
                return true;
            }
            (Op::Ping, OwnedFrame::Error(e)) => {
                let msg = format!("PING refused: {e}");
                self.down(poller, now, DownKind::Auth, &msg, out);
                return false;
            }
            (_, OwnedFrame::Error(e)) => {
                self.stats.reply_errors += 1;
                let class = ReplyError::classify(&e);
                if class == ReplyError::ReadOnly {
                    self.rediscover = true;
                }
                Answer::Failed(Failure::Reply(class))
            }
            (Op::Add, OwnedFrame::SimpleString(_)) => Answer::Added,
            (Op::Add, OwnedFrame::Null) => Answer::Matching,
            (Op::Get, OwnedFrame::Null) => Answer::Miss,
            (Op::Get, OwnedFrame::BulkString(v)) if v.len() > MAX_VALUE => {
                self.oversized(v.len());
                Answer::Miss
            }
            (Op::Get, OwnedFrame::BulkString(v)) => Answer::Hit(v),
            (Op::Remove, OwnedFrame::Integer(n)) => {
                if n > 0 {
                    Answer::Removed
                } else {
                    Answer::Absent
                }
            }
            (Op::Have, OwnedFrame::Integer(n)) => {
                if n > 0 {
                    Answer::Yes
                } else {
                    Answer::No
                }
            }
            (op, f) => {
                let msg = format!("a {:?} reply to {op:?}", f.kind());
                self.down(poller, now, DownKind::Protocol, &msg, out);
                return false;
            }
        };
        if let Some(token) = p.token {
            out.push(Completion { token, answer });
        }
        true
    }

    /// A GET value of `len` bytes, over [`MAX_VALUE`]: counted, logged
    /// the first time.
    fn oversized(&mut self, len: usize) {
        self.stats.oversize += 1;
        if !self.oversize_logged {
            self.oversize_logged = true;
            self.log(format_args!(
                "a stored value of {len} bytes is over the session limit of {MAX_VALUE}: \
                 answered as a miss (logged once)"
            ));
        }
    }

    fn up(&mut self, _now: u64) {
        self.state = State::Up;
        self.stats.ups += 1;
        self.attempts = 0;
        self.logged_down = None;
        self.log(format_args!("up"));
    }

    /// Drop the connection, fail what waits on it, schedule the retry.
    fn down(
        &mut self,
        poller: &Poller,
        now: u64,
        kind: DownKind,
        why: &str,
        out: &mut Vec<Completion>,
    ) {
        self.drop_link(poller, out);
        let was_up = self.state == State::Up;
        self.rediscover = true;
        self.stats.downs += 1;
        let delay = self.backoff();
        if was_up || self.logged_down != Some(kind) {
            self.logged_down = Some(kind);
            self.log(format_args!(
                "down: {why}; reconnecting with backoff ({BACKOFF_MIN_MS} ms to {BACKOFF_MAX_MS} ms)"
            ));
        }
        self.state = State::Down {
            retry_at: now.saturating_add(delay),
        };
    }

    /// Close the connection (if any) and fail what waits on it once.
    fn drop_link(&mut self, poller: &Poller, out: &mut Vec<Completion>) {
        if let Some(mut l) = self.link.take() {
            l.deregister(poller);
        }
        self.skipping = 0;
        for p in self.pending.drain(..) {
            if let Some(token) = p.token {
                out.push(Completion {
                    token,
                    answer: Answer::Failed(Failure::Reset),
                });
            }
        }
    }

    /// The next reconnect delay: doubling from [`BACKOFF_MIN_MS`] up to
    /// [`BACKOFF_MAX_MS`], then a random point in its upper half.
    fn backoff(&mut self) -> u64 {
        let d = backoff_delay(&mut self.rng, BACKOFF_MIN_MS, BACKOFF_MAX_MS, self.attempts);
        self.attempts = self.attempts.saturating_add(1);
        d
    }
}

/// A seed for [`backoff_delay`]'s jitter: process, time and `salt`.
pub(crate) fn jitter_seed(salt: u64) -> u64 {
    let seed = (std::process::id() as u64) << 32
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
        ^ salt;
    seed | 1
}

/// Exponential backoff with jitter: `first` doubled `attempts` times, at
/// most `max`, then a random point in its upper half. `rng` is an
/// xorshift64 state (jitter only, no need for a cryptographic source).
pub(crate) fn backoff_delay(rng: &mut u64, first: u64, max: u64, attempts: u32) -> u64 {
    let base = first.saturating_mul(1u64 << attempts.min(16)).min(max);
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    base / 2 + *rng % (base / 2 + 1)
}

/// Write what `link`'s socket takes (unless its connect is under way) and
/// watch for writability while output waits; `Err` names the failed step
/// (the Redis and the sentinel connections).
pub(crate) fn push(link: &mut Link, poller: &Poller) -> Result<(), String> {
    if !link.connecting() {
        link.flush()
            .map_err(|e| format!("write: {}", failure_reason(&e)))?;
    }
    // Commands wait for a TLS handshake to finish: only its own records
    // ask for writability meanwhile (no spinning on a writable socket
    // while the server's flight is awaited).
    let want =
        if link.connecting() || link.wants_write() || (link.unsent() > 0 && !link.handshaking()) {
            evloop::READ | evloop::WRITE
        } else {
            evloop::READ
        };
    link.set_interest(poller, want)
        .map_err(|e| format!("epoll: {e}"))
}

/// Append `AUTH [user] password` to `out`.
pub(crate) fn write_auth(out: &mut Vec<u8>, user: Option<&str>, pw: &Secret) -> Result<(), ()> {
    match user {
        Some(u) => write_cmd(out, &[b"AUTH", u.as_bytes(), &pw.0]),
        None => write_cmd(out, &[b"AUTH", &pw.0]),
    }
}

/// Append the RESP array of bulk strings `args` to `out` (also the
/// Sentinel layer's encoder).
pub(crate) fn write_cmd(out: &mut Vec<u8>, args: &[&[u8]]) -> Result<(), ()> {
    let items: Vec<BorrowedFrame<'_>> = args.iter().map(|a| BorrowedFrame::BulkString(a)).collect();
    let frame = BorrowedFrame::Array(&items);
    let start = out.len();
    out.resize(start + frame.encode_len(false), 0);
    match encode_borrowed(&mut out[start..], &frame, false) {
        Ok(n) => {
            out.truncate(start + n);
            Ok(())
        }
        Err(_) => {
            out.truncate(start);
            Err(())
        }
    }
}

/// The head of a reply that may be a bulk string.
#[derive(Debug, PartialEq, Eq)]
enum BulkHead {
    /// Not a bulk string, a null one, or a header the codec will refuse.
    Other,
    /// A bulk header not yet whole.
    Incomplete,
    /// A bulk string of this many bytes after a header of this many.
    Len(usize, usize),
}

/// Longest bulk header looked at: `$`, 20 digits, CRLF.
const MAX_BULK_HEAD: usize = 23;

/// Read a bulk string's length from its header (only to skip values too
/// long to keep; the codec decodes every reply we keep).
fn bulk_len(buf: &[u8]) -> BulkHead {
    if buf.first() != Some(&b'$') {
        return BulkHead::Other;
    }
    let end = buf.len().min(MAX_BULK_HEAD);
    let Some(cr) = buf[..end].iter().position(|&b| b == b'\r') else {
        return if buf.len() < MAX_BULK_HEAD {
            BulkHead::Incomplete
        } else {
            BulkHead::Other
        };
    };
    if cr + 1 >= buf.len() {
        return BulkHead::Incomplete;
    }
    if buf[cr + 1] != b'\n' {
        return BulkHead::Other;
    }
    let digits = &buf[1..cr];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return BulkHead::Other;
    }
    match std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
    {
        Some(n) => BulkHead::Len(n, cr + 2),
        None => BulkHead::Other,
    }
}

/// The Redis key for session `id` under `prefix`: prefix + lowercase hex.
pub fn key_under(prefix: &[u8], id: &[u8]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut k = Vec::with_capacity(prefix.len() + 2 * id.len());
    k.extend_from_slice(prefix);
    for b in id {
        k.push(HEX[(b >> 4) as usize]);
        k.push(HEX[(b & 15) as usize]);
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_resp_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        write_cmd(&mut out, &[b"SET", b"k", b"v\r\n", b"NX", b"PX", b"300"]).unwrap();
        assert_eq!(
            out,
            b"*6\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv\r\n\r\n$2\r\nNX\r\n$2\r\nPX\r\n$3\r\n300\r\n"
        );
    }

    #[test]
    fn bulk_headers() {
        assert_eq!(bulk_len(b"$5\r\nhello\r\n"), BulkHead::Len(5, 4));
        assert_eq!(bulk_len(b"$40000\r"), BulkHead::Incomplete);
        assert_eq!(bulk_len(b"$400"), BulkHead::Incomplete);
        assert_eq!(bulk_len(b"$-1\r\n"), BulkHead::Other);
        assert_eq!(bulk_len(b"+OK\r\n"), BulkHead::Other);
        assert_eq!(bulk_len(b"$99999999999999999999999999"), BulkHead::Other);
    }

    #[test]
    fn error_classes_and_statuses() {
        assert_eq!(
            ReplyError::classify("READONLY You can't write against a read only replica."),
            ReplyError::ReadOnly
        );
        assert_eq!(
            ReplyError::classify("OOM command not allowed"),
            ReplyError::Oom
        );
        assert_eq!(
            ReplyError::classify("WRONGTYPE Operation"),
            ReplyError::Other
        );
        assert_eq!(Answer::Matching.status(), status::ADD_MATCHING_SESSION);
        assert_eq!(Answer::Failed(Failure::Down).status(), status::DISCONNECTED);
        assert_eq!(Answer::Miss.status(), status::NOTOK);
        assert_eq!(Answer::Hit(vec![1]).status(), status::OK);
    }
}
