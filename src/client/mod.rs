//! The blocking distcache client behind `DC_CTX` (`distcache/dc_client.h`).
//!
//! A [`Client`] sends one request at a time per connection and waits for
//! its answer, over plain blocking sockets (no NAL objects, no background
//! threads). It is `Send + Sync`: one client may be used by any number of
//! threads at once, and every thread gets the answer to its own request.
//!
//! # Connection modes (the `DC_CTX_FLAG_*` bits)
//!
//! * `0`: every operation connects, does one request/response and closes
//!   (how Apache's mod_socache_dc uses it). `RETRY` and `LATE` have no
//!   effect without `PERSISTENT`. With connection reuse turned on
//!   ([`ENV_REUSE`], see "Connection reuse" below) a flags-0 client keeps
//!   its connections instead.
//! * [`FLAG_PERSISTENT`]: connections are kept open and reused. One is made
//!   by [`Client::new`] (which fails if it cannot connect), unless
//!   [`FLAG_PERSISTENT_LATE`] is also given, in which case the first
//!   operation connects. Concurrent callers do not queue behind one socket:
//!   each operation takes an idle connection from a small pool (or opens a
//!   new one when all are busy) and puts it back afterwards. At most
//!   [`MAX_IDLE`] idle connections are kept; surplus ones are closed.
//!   A connection that failed, timed out, or whose peer broke the protocol
//!   (corrupt frame, wrong uid or operation, empty answer, bytes beyond the
//!   answer) is closed, never reused.
//! * [`FLAG_PERSISTENT_PIDCHECK`]: accepted for compatibility; what it asked
//!   for is always done (see "Fork" below).
//! * [`FLAG_PERSISTENT_RETRY`]: after a network error on a connection (send
//!   failure, reset, EOF: typically a `dc_client -idle` timeout closing an
//!   idle connection) the operation reconnects and is retried once, with
//!   the same request. A failure to connect, a timeout and a protocol
//!   violation are not retried.
//!
//! A pooled connection is owned by one operation at a time. The pool is
//! [`MAX_IDLE`] slots, each behind its own lock that is only ever *tried*
//! (never waited for) and held for a pointer-sized move, never during I/O:
//! an operation that finds a slot busy moves on to the next one. So a
//! `fork()` while other threads are using the client cannot leave the child
//! stuck on a lock: a slot caught mid-move at the fork is simply unusable in
//! the child, which connects anew when it finds no idle connection. (The
//! connection in such a slot, if any, then stays open in the child until it
//! exits, without being used: its peer sees the parent's close only then.)
//!
//! # Connection reuse for flags 0 (`DISTCACHE_REUSE_CONNECTIONS`)
//!
//! [`Config::reuse_connections`], set by `DISTCACHE_REUSE_CONNECTIONS=1`
//! when the client is created ([`Config::from_env`]; read as a number like
//! the other variables, so ` 1` and `01` are 1 too; `0` or unset: off, the
//! default; any other value is reported on stderr and ignored, i.e. off),
//! makes a client created with flags exactly `0` run as
//! `PERSISTENT | PERSISTENT_PIDCHECK | PERSISTENT_RETRY | PERSISTENT_LATE`
//! with one difference in what is retried. Any other flags are used as
//! given. [`Client::flags`] still reports the flags given.
//!
//! * `LATE`: nothing connects at creation. Apache makes its context in the
//!   parent before forking its children; a connection made there would sit
//!   unused in the parent, and creation must not start failing when the
//!   server is down (flags 0 never did).
//! * The pool below is the persistent mode's own: a connection is owned by
//!   one operation at a time and an operation takes an idle one before it
//!   makes one, so a process holds about as many as it has threads in
//!   operations at once, at most one per thread (and keeps at most
//!   [`MAX_IDLE`] idle). The pool's locks are only tried, so the bound is
//!   not absolute: an operation that finds the slots busy on every one of
//!   its passes (other threads moving connections in and out all the
//!   while) connects anew rather than wait. A child forked from the
//!   process never uses its parent's connections (see "Fork").
//! * Retried (once, on a new connection): only a failure to *send* the
//!   request (`EPIPE`, `ECONNRESET`: a kept connection the peer closed
//!   while it was idle, e.g. `dc_client -idle` or a restarted dc_client).
//!   The peer has then not received a whole request, so it cannot have
//!   acted on it. Not retried, unlike `PERSISTENT_RETRY`: an answer lost
//!   after the whole request was sent (EOF or reset while waiting for the
//!   answer), since the server may have acted on the request and a second
//!   copy can get a different answer (an ADD that was stored comes back
//!   "matching session", a REMOVE that removed comes back "not found").
//!   That operation fails ([`Error::Closed`] / [`Error::Recv`]: 0 from
//!   `DC_CTX_add_session`, `DC_CTX_get_session` and
//!   `DC_CTX_remove_session`, -1 from `DC_CTX_has_session`), and the next
//!   operation connects anew.
//!
//! Over TCP, a peer's close of an idle connection is not a send failure
//! (the kernel accepts the send and the answer is then an EOF), so there
//! it shows as a lost answer: that one operation fails.
//!
//! # Fork
//!
//! A socket is never shared across processes, whatever the flags (the
//! original did so without `PERSISTENT_PIDCHECK`: a child forked while its
//! parent used the connection could read the answer to the parent's
//! request, with the same uid since both count on from the same value, and
//! be handed the parent's session). Every pooled connection records the
//! process that made it, and each persistent operation compares that with
//! `getpid()`: a real system call since glibc 2.25 stopped caching the
//! pid, 0.2-0.4 µs (measured on a loaded 2-core VM), against 20-50 µs for
//! the exchange itself. No `pthread_atfork` handler is needed, so nothing
//! is registered and no child is missed for having been made without one
//! (a raw `clone()`). A connection inherited across `fork()` is closed on
//! sight: only our copy of the file descriptor, never a `send`, `recv` or
//! `shutdown` on it, so the parent's connection is untouched; the child's
//! operation makes a connection of its own. (A connection another thread
//! had out of the pool at the fork stays open in the child, unused, until
//! it exits.)
//!
//! # Request ids
//!
//! Every operation takes the next value of a per-process counter starting
//! at 1 (shared by all clients of the process, as in the original library).
//! A call refused locally for its arguments takes one too, so the uid
//! sequence stays the original's (which sent ids over 64 bytes to the
//! server and let it refuse them).
//! An answer is accepted only when it echoes the uid and the operation and
//! carries a non-empty payload; anything else fails the operation and closes
//! that connection.
//!
//! # Timeouts
//!
//! * Session lifetimes below a floor are raised to the floor instead of
//!   being refused. The floor is `DC_MIN_TIMEOUT` (500 ms) unless the
//!   environment variable `DISTCACHE_MIN_TIMEOUT_MS` gives another value
//!   (0 to 604800000), read when the client is created. Apache 2.4 passes
//!   only the millisecond remainder of the lifetime, so
//!   `DISTCACHE_MIN_TIMEOUT_MS=300000` (Apache's default
//!   SSLSessionCacheTimeout) gives sessions a useful life.
//! * Network I/O is bounded by `DISTCACHE_IO_TIMEOUT_MS` (default
//!   [`DEFAULT_IO_TIMEOUT_MS`] = 2000 ms, read when the client is created):
//!   connecting, sending the request and receiving the whole answer are each
//!   bounded by it, so an operation against a server that is down or stalls
//!   fails after at most about that long (a stalled server: one I/O timeout;
//!   in the worst case three, and twice that with `PERSISTENT_RETRY`).
//!
//! # `reget`
//!
//! [`Client::reget`] answers from the data of a previous successful
//! [`Client::get`] without network traffic. With several threads sharing a
//! client, "the previous get" is per thread: `reget` succeeds when the
//! calling thread's most recent operation on this client was a successful
//! `get` of the same id (the original's rule, applied per thread). The
//! result is kept in the calling thread's own storage (no lock shared with
//! other threads, so `fork()` cannot catch it half-updated); each thread
//! remembers its last get on up to [`MAX_REGET_CLIENTS`] clients, dropping
//! the oldest beyond that.

mod conn;

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

pub use self::conn::Connector;
use self::conn::{Conn, Target};
use crate::nal::Address;
use crate::proto::{
    answer, encode_add, encode_message, status, Cmd, DecodeError, DC_MIN_TIMEOUT_MS, MAX_EXPIRY_MS,
    MAX_ID_LEN, MAX_TOTAL_DATA,
};

/// Keep connections open between operations.
pub const FLAG_PERSISTENT: u32 = 0x0001;
/// Reconnect when the process id changed (after `fork()`).
pub const FLAG_PERSISTENT_PIDCHECK: u32 = 0x0002;
/// Reconnect and retry once after a network error.
pub const FLAG_PERSISTENT_RETRY: u32 = 0x0004;
/// Do not connect in [`Client::new`]; connect on first use.
pub const FLAG_PERSISTENT_LATE: u32 = 0x0008;

/// Default bound on each network phase of an operation, in milliseconds.
pub const DEFAULT_IO_TIMEOUT_MS: u64 = 2000;
/// Most idle connections a persistent client keeps.
pub const MAX_IDLE: usize = 32;
/// Most passes [`Client`]'s pool makes over its slots looking for an idle
/// connection while it meets busy slots.
const TAKE_PASSES: usize = 4;
/// Most clients whose last `get` result one thread remembers for `reget`.
pub const MAX_REGET_CLIENTS: usize = 8;
/// Environment variable overriding the session timeout floor.
pub const ENV_MIN_TIMEOUT: &str = "DISTCACHE_MIN_TIMEOUT_MS";
/// Environment variable overriding the I/O bound.
pub const ENV_IO_TIMEOUT: &str = "DISTCACHE_IO_TIMEOUT_MS";
/// Environment variable turning on connection reuse for flags-0 clients
/// (`1`: on; `0` or unset: off).
pub const ENV_REUSE: &str = "DISTCACHE_REUSE_CONNECTIONS";
/// The flags a flags-0 client runs with when connection reuse is on (see
/// the module documentation; what is retried differs from
/// [`FLAG_PERSISTENT_RETRY`]).
pub const REUSE_FLAGS: u32 =
    FLAG_PERSISTENT | FLAG_PERSISTENT_PIDCHECK | FLAG_PERSISTENT_RETRY | FLAG_PERSISTENT_LATE;

/// Session data handed out by [`Client::get`] (shared with the `reget` slot).
pub type Session = Arc<[u8]>;

/// Why an operation failed.
#[derive(Debug)]
pub enum Error {
    /// The caller's arguments cannot be sent (empty or over-long id, empty
    /// or over-long session data).
    InvalidArgument(&'static str),
    /// The target string is not a connectable libnal address.
    Address(String),
    /// Could not connect.
    Connect(io::Error),
    /// Sending the request failed.
    Send(io::Error),
    /// Receiving the answer failed.
    Recv(io::Error),
    /// The named phase (`connect`, `send`, `receive`) hit the I/O bound.
    Timeout(&'static str),
    /// The peer closed the connection before answering.
    Closed,
    /// The peer sent bytes that are not a valid distcache response.
    Protocol(DecodeError),
    /// The answer carried another request's uid.
    UidMismatch { sent: u32, got: u32 },
    /// The answer was for another operation.
    OpMismatch { sent: Cmd, got: Cmd },
    /// The answer had an empty payload (a proxy without a server does this).
    EmptyAnswer,
    /// The one-byte answer 0x02 (DISCONNECTED): a proxy (dc_client) could
    /// not get the server's answer in time, or lost the server. The
    /// request may still have run there: neither a miss nor a "not found".
    Disconnected,
    /// A well-formed answer outside what this operation can return: a
    /// REMOVE or HAVE answer other than `00`/`01`.
    Unexpected { cmd: Cmd, payload: Vec<u8> },
}

impl Error {
    /// A failure of the connection (as opposed to a refusal by the caller's
    /// arguments or a malformed peer): what `PERSISTENT_RETRY` retries,
    /// except connection failures and timeouts.
    fn retryable(&self) -> bool {
        matches!(self, Error::Send(_) | Error::Recv(_) | Error::Closed)
    }
    /// The peer broke the protocol: worth a line on stderr.
    fn is_peer_violation(&self) -> bool {
        matches!(
            self,
            Error::Protocol(_) | Error::UidMismatch { .. } | Error::OpMismatch { .. }
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidArgument(w) => write!(f, "invalid argument: {w}"),
            Error::Address(w) => f.write_str(w),
            Error::Connect(e) => write!(f, "cannot connect: {e}"),
            Error::Send(e) => write!(f, "send failed: {e}"),
            Error::Recv(e) => write!(f, "receive failed: {e}"),
            Error::Timeout(p) => write!(f, "{p} timed out"),
            Error::Closed => f.write_str("connection closed by the peer before it answered"),
            Error::Protocol(e) => e.fmt(f),
            Error::UidMismatch { sent, got } => {
                write!(f, "answer has request uid {got:#x}, expected {sent:#x}")
            }
            Error::OpMismatch { sent, got } => write!(
                f,
                "answer is for operation {}, expected {}",
                got.name(),
                sent.name()
            ),
            Error::EmptyAnswer => f.write_str("empty answer (proxy without a server?)"),
            Error::Disconnected => {
                f.write_str("answer 0x02: the proxy lost or gave up on the server")
            }
            Error::Unexpected { cmd, payload } => {
                write!(
                    f,
                    "unexpected {} answer of {} bytes",
                    cmd.name(),
                    payload.len()
                )
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Connect(e) | Error::Send(e) | Error::Recv(e) => Some(e),
            Error::Protocol(e) => Some(e),
            _ => None,
        }
    }
}

/// What the server said to an ADD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddOutcome {
    /// Stored (answer `00`).
    Stored,
    /// Refused with this status byte (see [`crate::proto::status`]), e.g.
    /// 101 when a session with this id is already stored.
    Refused(u8),
}

/// Where request uids come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UidSource {
    /// The per-process counter shared by all clients (production).
    Process,
    /// A counter private to this client, starting at the given value
    /// (tests that need exact uids).
    Private(u32),
}

/// Tunables of a client. [`Config::from_env`] is what `DC_CTX_new` uses.
#[derive(Clone, Debug)]
pub struct Config {
    /// Bound on each network phase (connect, send, receive).
    pub io_timeout: Duration,
    /// Session timeouts below this are raised to it.
    pub min_timeout_ms: u64,
    /// Source of request uids.
    pub uids: UidSource,
    /// A client created with flags 0 keeps its connections (see the module
    /// documentation, "Connection reuse"). Off by default.
    pub reuse_connections: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            io_timeout: Duration::from_millis(DEFAULT_IO_TIMEOUT_MS),
            min_timeout_ms: DC_MIN_TIMEOUT_MS,
            uids: UidSource::Process,
            reuse_connections: false,
        }
    }
}

/// A number from the environment: unset gives `default`, a value that is
/// not a number in `range` is reported on stderr and gives `default`.
fn env_num(name: &str, default: u64, range: std::ops::RangeInclusive<u64>, unit: &str) -> u64 {
    match std::env::var(name) {
        Err(_) => default,
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(n) if range.contains(&n) => n,
            _ => {
                log_line(&format!(
                    "distcache-rs: ignoring {name}={v:?} (expected {}..{}{unit}); using {default}",
                    range.start(),
                    range.end()
                ));
                default
            }
        },
    }
}

impl Config {
    /// Defaults, overridden by `DISTCACHE_MIN_TIMEOUT_MS`,
    /// `DISTCACHE_IO_TIMEOUT_MS` and `DISTCACHE_REUSE_CONNECTIONS` when set
    /// to valid values (an invalid value is reported on stderr and
    /// ignored).
    pub fn from_env() -> Config {
        Config {
            io_timeout: Duration::from_millis(env_num(
                ENV_IO_TIMEOUT,
                DEFAULT_IO_TIMEOUT_MS,
                1..=3_600_000,
                " ms",
            )),
            min_timeout_ms: env_num(ENV_MIN_TIMEOUT, DC_MIN_TIMEOUT_MS, 0..=MAX_EXPIRY_MS, " ms"),
            uids: UidSource::Process,
            // 0 or 1, as a number (so " 1" and "01" are 1, as they would
            // be for the other variables).
            reuse_connections: env_num(ENV_REUSE, 0, 0..=1, "") == 1,
        }
    }
}

/// Write one line to stderr with a single write(2), so lines from several
/// threads or processes do not interleave.
pub(crate) fn log_line(msg: &str) {
    use std::io::Write;
    let mut line = String::with_capacity(msg.len() + 1);
    line.push_str(msg);
    line.push('\n');
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// The per-process request uid counter.
static NEXT_UID: AtomicU32 = AtomicU32::new(1);

#[derive(Debug)]
enum Uids {
    Process,
    Private(AtomicU32),
}

impl Uids {
    fn next(&self) -> u32 {
        match self {
            Uids::Process => NEXT_UID.fetch_add(1, Ordering::Relaxed),
            Uids::Private(c) => c.fetch_add(1, Ordering::Relaxed),
        }
    }
}

/// The last successful get of one thread on one client.
#[derive(Debug)]
struct LastGet {
    /// [`Client::serial`] of the client.
    client: u64,
    id: Vec<u8>,
    data: Session,
}

/// Serial numbers of clients (never reused, so a remembered get can never
/// be mistaken for one of a later client at the same address).
static NEXT_CLIENT_SERIAL: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's last successful get per client, newest last.
    static LAST_GETS: RefCell<Vec<LastGet>> = const { RefCell::new(Vec::new()) };
}

/// The idle connections of a persistent client (see the module
/// documentation): slots whose locks are only ever tried.
#[derive(Debug)]
struct Pool {
    slots: Vec<Mutex<Option<Conn>>>,
}

impl Pool {
    fn new() -> Pool {
        Pool {
            slots: (0..MAX_IDLE).map(|_| Mutex::new(None)).collect(),
        }
    }

    /// An idle connection made by process `me`. Connections of another
    /// process (inherited across fork) met on the way are closed: only our
    /// copy of the descriptor, no shutdown(), so the parent's connection is
    /// untouched.
    ///
    /// A slot found busy (another thread moving a connection in or out, or
    /// looking for a free slot) may hold an idle connection, so a pass that
    /// met one and found nothing is made again, at most [`TAKE_PASSES`] in
    /// all (a slot caught mid-move by a fork stays busy in the child
    /// forever, so the passes must end). Without this, threads putting
    /// connections back made others miss idle ones and connect anew: more
    /// connections than threads.
    fn take(&self, me: u32) -> Option<Conn> {
        for pass in 0..TAKE_PASSES {
            if pass > 0 {
                std::thread::yield_now();
            }
            let mut busy = false;
            for slot in &self.slots {
                let Some(mut g) = slot.try_lock() else {
                    busy = true;
                    continue;
                };
                let got = g.take();
                // The slot is free again before any close(2) below.
                drop(g);
                match got {
                    Some(c) if c.pid == me => return Some(c),
                    Some(inherited) => drop(inherited),
                    None => {}
                }
            }
            if !busy {
                break;
            }
        }
        None
    }

    /// Keep `c` idle; closed when every slot is full (or busy).
    fn put(&self, c: Conn) {
        let mut c = Some(c);
        for slot in &self.slots {
            let Some(mut g) = slot.try_lock() else {
                continue;
            };
            if g.is_none() {
                *g = c.take();
                return;
            }
        }
    }

    fn len(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.try_lock().is_some_and(|g| g.is_some()))
            .count()
    }
}

/// A blocking distcache client (`DC_CTX`). See the module documentation.
#[derive(Debug)]
pub struct Client {
    target: Target,
    /// The target as given, for messages.
    name: String,
    /// The flags given at creation.
    flags: u32,
    /// The flags in effect: `flags`, or [`REUSE_FLAGS`] for a flags-0
    /// client with connection reuse on.
    mode: u32,
    /// Connection reuse for flags 0 is in effect (retries only failed
    /// sends).
    reuse: bool,
    cfg: Config,
    uids: Uids,
    /// Idle persistent connections.
    idle: Pool,
    /// Identifies this client's entries in threads' `reget` memory.
    serial: u64,
}

fn resolve(target: &str) -> Result<Target, Error> {
    let addr = Address::parse(target).map_err(|e| Error::Address(e.to_string()))?;
    if !addr.can_connect() {
        return Err(Error::Address(format!(
            "address '{target}' can only be listened on"
        )));
    }
    Ok(Target {
        sockaddr: crate::transport::sockaddr(&addr).map_err(|e| Error::Address(e.to_string()))?,
        connector: None,
    })
}

impl Client {
    /// A client for `target` (a libnal address such as `UNIX:/path` or
    /// `IP:host:port`) with `DC_CTX_FLAG_*` bits, configured from the
    /// environment ([`Config::from_env`]).
    pub fn new(target: &str, flags: u32) -> Result<Client, Error> {
        Client::with_config(target, flags, Config::from_env())
    }

    /// Like [`Client::new`] with an explicit configuration. An I/O timeout
    /// under 1 ms is raised to 1 ms, a floor over 7 days lowered to 7 days.
    pub fn with_config(target: &str, flags: u32, cfg: Config) -> Result<Client, Error> {
        Client::with_connector(target, flags, cfg, None)
    }

    /// Like [`Client::with_config`], every connection made by `connector`
    /// when given (a tool's TLS session to `target`, a TCP address); the
    /// C API never passes one.
    pub fn with_connector(
        target: &str,
        flags: u32,
        mut cfg: Config,
        connector: Option<Connector>,
    ) -> Result<Client, Error> {
        cfg.io_timeout = cfg.io_timeout.max(Duration::from_millis(1));
        cfg.min_timeout_ms = cfg.min_timeout_ms.min(MAX_EXPIRY_MS);
        let mut t = resolve(target)?;
        t.connector = connector;
        let uids = match cfg.uids {
            UidSource::Process => Uids::Process,
            UidSource::Private(start) => Uids::Private(AtomicU32::new(start)),
        };
        let reuse = flags == 0 && cfg.reuse_connections;
        let c = Client {
            target: t,
            name: target.to_string(),
            flags,
            mode: if reuse { REUSE_FLAGS } else { flags },
            reuse,
            cfg,
            uids,
            idle: Pool::new(),
            serial: NEXT_CLIENT_SERIAL.fetch_add(1, Ordering::Relaxed),
        };
        if c.persistent() && c.mode & FLAG_PERSISTENT_LATE == 0 {
            let conn = Conn::connect(&c.target, c.cfg.io_timeout, std::process::id())?;
            c.idle.put(conn);
        }
        Ok(c)
    }

    /// The `DC_CTX_FLAG_*` bits given at creation.
    pub fn flags(&self) -> u32 {
        self.flags
    }

    /// Whether this is a flags-0 client keeping its connections because
    /// connection reuse was on at creation.
    pub fn reuses_connections(&self) -> bool {
        self.reuse
    }

    /// The configuration in effect.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Number of idle persistent connections currently pooled.
    pub fn idle_connections(&self) -> usize {
        self.idle.len()
    }

    fn persistent(&self) -> bool {
        self.mode & FLAG_PERSISTENT != 0
    }

    /// Whether `e`, met on a connection, is worth one retry on a new one.
    fn may_retry(&self, e: &Error) -> bool {
        if self.reuse {
            // Only when the peer cannot have received the whole request.
            matches!(e, Error::Send(_))
        } else {
            e.retryable() && self.mode & FLAG_PERSISTENT_RETRY != 0
        }
    }

    /// Add a session that expires after `timeout_ms` (raised to the floor
    /// if lower; saturated to `u32::MAX` if larger, which a server refuses).
    pub fn add(&self, id: &[u8], data: &[u8], timeout_ms: u64) -> Result<AddOutcome, Error> {
        let uid = self.uids.next();
        check_id(id)?;
        if data.is_empty() {
            return Err(Error::InvalidArgument("empty session data"));
        }
        if 8 + id.len() + data.len() > MAX_TOTAL_DATA {
            return Err(Error::InvalidArgument(
                "session too large (8 + id + data must not exceed 32768 bytes)",
            ));
        }
        let t = timeout_ms.max(self.cfg.min_timeout_ms);
        let t = u32::try_from(t).unwrap_or(u32::MAX);
        let mut payload = Vec::with_capacity(8 + id.len() + data.len());
        encode_add(&mut payload, t, id, data);
        self.forget_get();
        let a = self.transact(uid, Cmd::Add, &payload)?;
        Ok(match a.as_slice() {
            [status::OK] => AddOutcome::Stored,
            [s] => AddOutcome::Refused(*s),
            _ => {
                return Err(Error::Unexpected {
                    cmd: Cmd::Add,
                    payload: a,
                })
            }
        })
    }

    /// Fetch a session: `Ok(Some(data))` on a hit, `Ok(None)` on a miss
    /// (the answer 0x02 is [`Error::Disconnected`], never a miss).
    ///
    /// As in the original, only an answer of 5 bytes or more is a hit (a
    /// 1-byte session `01` is indistinguishable from a miss on the wire).
    pub fn get(&self, id: &[u8]) -> Result<Option<Session>, Error> {
        let uid = self.uids.next();
        check_id(id)?;
        self.forget_get();
        let a = self.transact(uid, Cmd::Get, id)?;
        match answer::get_hit(&a) {
            None => Ok(None),
            Some(d) => {
                let data: Session = Arc::from(d);
                self.remember_get(id, data.clone());
                Ok(Some(data))
            }
        }
    }

    /// The data of the calling thread's previous [`get`](Client::get) on
    /// this client, if that was its last operation here, it was a hit, and
    /// it was for `id`. No network traffic.
    pub fn reget(&self, id: &[u8]) -> Option<Session> {
        // Unavailable only while the thread is being torn down: no memory.
        LAST_GETS
            .try_with(|m| {
                m.borrow()
                    .iter()
                    .find(|g| g.client == self.serial && g.id == id)
                    .map(|g| g.data.clone())
            })
            .ok()
            .flatten()
    }

    /// Remove a session: `Ok(true)` when removed, `Ok(false)` when it was
    /// not found.
    pub fn remove(&self, id: &[u8]) -> Result<bool, Error> {
        let uid = self.uids.next();
        check_id(id)?;
        self.forget_get();
        let a = self.transact(uid, Cmd::Remove, id)?;
        match a.as_slice() {
            [status::OK] => Ok(true),
            [status::NOTOK] => Ok(false),
            _ => Err(Error::Unexpected {
                cmd: Cmd::Remove,
                payload: a,
            }),
        }
    }

    /// Whether a session is stored.
    pub fn has(&self, id: &[u8]) -> Result<bool, Error> {
        let uid = self.uids.next();
        check_id(id)?;
        self.forget_get();
        let a = self.transact(uid, Cmd::Have, id)?;
        match answer::have(&a) {
            Some(p) => Ok(p),
            None => Err(Error::Unexpected {
                cmd: Cmd::Have,
                payload: a,
            }),
        }
    }

    fn remember_get(&self, id: &[u8], data: Session) {
        let _ = LAST_GETS.try_with(|m| {
            let mut m = m.borrow_mut();
            m.retain(|g| g.client != self.serial);
            if m.len() >= MAX_REGET_CLIENTS {
                m.remove(0);
            }
            m.push(LastGet {
                client: self.serial,
                id: id.to_vec(),
                data,
            });
        });
    }

    /// Any operation ends the calling thread's `reget` window.
    fn forget_get(&self) {
        let _ = LAST_GETS.try_with(|m| {
            let mut m = m.borrow_mut();
            if !m.is_empty() {
                m.retain(|g| g.client != self.serial);
            }
        });
    }

    /// One request/response; reports peer violations on stderr. The answer
    /// 0x02 (DISCONNECTED) is a failure of the call, whatever the command.
    fn transact(&self, uid: u32, cmd: Cmd, payload: &[u8]) -> Result<Vec<u8>, Error> {
        match self.transact_raw(uid, cmd, payload) {
            Ok(a) if a[..] == [status::DISCONNECTED] => Err(Error::Disconnected),
            r => r,
        }
    }

    fn transact_raw(&self, uid: u32, cmd: Cmd, payload: &[u8]) -> Result<Vec<u8>, Error> {
        let mut req = Vec::new();
        encode_message(&mut req, false, uid, cmd, payload)
            .map_err(|_| Error::InvalidArgument("request exceeds 32768 bytes"))?;
        let r = if self.persistent() {
            self.transact_persistent(&req, uid, cmd)
        } else {
            Conn::connect(&self.target, self.cfg.io_timeout, 0)
                .and_then(|mut c| c.exchange(&req, uid, cmd, self.cfg.io_timeout))
                .map(|(a, _)| a)
        };
        if let Err(e) = &r {
            if e.is_peer_violation() {
                log_line(&format!(
                    "libdistcache(pid={}) {e} [distcache-rs: {} answer from {}; connection dropped, the call fails]",
                    std::process::id(),
                    cmd.name(),
                    self.name
                ));
            }
        }
        r
    }

    fn transact_persistent(&self, req: &[u8], uid: u32, cmd: Cmd) -> Result<Vec<u8>, Error> {
        let io = self.cfg.io_timeout;
        // Whatever the flags: a pooled connection of another process (we
        // are a child forked since it was made) is never used.
        let me = std::process::id();
        let mut conn = match self.idle.take(me) {
            Some(c) => c,
            None => Conn::connect(&self.target, io, me)?,
        };
        match conn.exchange(req, uid, cmd, io) {
            Ok((a, clean)) => {
                if clean {
                    self.idle.put(conn);
                }
                Ok(a)
            }
            Err(e) if self.may_retry(&e) => {
                drop(conn);
                let mut conn = Conn::connect(&self.target, io, me)?;
                let (a, clean) = conn.exchange(req, uid, cmd, io)?;
                if clean {
                    self.idle.put(conn);
                }
                Ok(a)
            }
            Err(e) => Err(e),
        }
    }
}

impl Drop for Client {
    /// The dropping thread's `reget` memory of this client goes with it
    /// (other threads' entries can never match a later client and are
    /// displaced as they use others).
    fn drop(&mut self) {
        self.forget_get();
    }
}

fn check_id(id: &[u8]) -> Result<(), Error> {
    if id.is_empty() {
        return Err(Error::InvalidArgument("empty session id"));
    }
    if id.len() > MAX_ID_LEN {
        return Err(Error::InvalidArgument("session id longer than 64 bytes"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_limits() {
        assert!(check_id(b"").is_err());
        assert!(check_id(&[7; 1]).is_ok());
        assert!(check_id(&[7; 64]).is_ok());
        assert!(check_id(&[7; 65]).is_err());
    }

    #[test]
    fn bad_targets_are_refused() {
        for t in ["", "nonsense", "IP:9001", "UNIX:", "TCP:host:1"] {
            assert!(
                matches!(Client::new(t, 0), Err(Error::Address(_))),
                "{t:?} accepted"
            );
        }
        assert!(Client::new("UNIX:/nonexistent/dcrs", 0).is_ok());
        let odd = Config {
            io_timeout: Duration::ZERO,
            min_timeout_ms: u64::MAX,
            uids: UidSource::Private(0),
            reuse_connections: false,
        };
        let c = Client::with_config("UNIX:/nonexistent/dcrs", 0, odd).unwrap();
        assert_eq!(c.config().io_timeout, Duration::from_millis(1));
        assert_eq!(c.config().min_timeout_ms, MAX_EXPIRY_MS);
        // The zero timeout did not turn into a setsockopt error.
        assert!(
            matches!(c.has(b"x"), Err(Error::Connect(e)) if e.kind() == io::ErrorKind::NotFound)
        );
        assert!(Client::new("IP:127.0.0.1:9", FLAG_PERSISTENT | FLAG_PERSISTENT_LATE).is_ok());
    }

    #[test]
    fn retry_classification() {
        assert!(Error::Closed.retryable());
        assert!(Error::Send(io::ErrorKind::BrokenPipe.into()).retryable());
        assert!(!Error::Timeout("receive").retryable());
        assert!(!Error::Connect(io::ErrorKind::ConnectionRefused.into()).retryable());
        assert!(!Error::Protocol(DecodeError::BadLevel(0x0010_0000)).retryable());
        assert!(Error::Protocol(DecodeError::BadLevel(0)).is_peer_violation());
    }
}
