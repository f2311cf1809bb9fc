//! dc_server: the distcache session cache server.
//!
//! One epoll event loop, non-blocking sockets, the built-in cache; every
//! request is answered by `server::handle_request`, exactly as the
//! DC_SERVER library answers it.
//!
//! With `-sessiond <address>` the same loop also serves stunnel's
//! `sessiond` protocol (UDP datagrams, see `distcache_tools::sessiond`) from a
//! separate cache: stunnel sessions and distcache sessions never meet.
//! stunnel waits only a few milliseconds for a GET answer, so the UDP socket
//! is drained before any connection is served in every loop iteration, and
//! again between connections when many are ready.
//!
//! With `-backend redis://host:port` dc_server keeps no sessions: it is a
//! stateless front answering every request from Redis through one
//! connection ([`Backend`]), so that several dc_servers can share one
//! store. sessiond sessions go under their own key prefix; a sessiond GET
//! Redis has not answered within `-sessiond-deadline` is dropped unanswered
//! (stunnel then makes a full handshake).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Duration;

use distcache_rs::nal::Address;
use distcache_rs::proto::{self, status, Cmd, Decoder, Direction};
use distcache_rs::server::cache::Cache;
use distcache_rs::server::{handle_request, Policy, SessionCache, Stats};
use distcache_rs::transport::Transport;
use distcache_tools::backend::{Backend, Route, Taken};
use distcache_tools::daemon::{self, Daemon};
use distcache_tools::evloop::{self, Poller};
use distcache_tools::idmap::{self, IdMap};
use distcache_tools::link::Link;
use distcache_tools::metrics::{self, Answer as How, ConnStats, Endpoint};
use distcache_tools::redis::{Answer, Request};
use distcache_tools::sessiond::{self, SessiondStats};
use distcache_tools::snapshot;
use distcache_tools::store::{self, StoreAddress};
use distcache_tools::tls::{ServerOptions, TlsStream};
use distcache_tools::tlsconf::{self, DaemonAddress, ServerTls};
use distcache_tools::tools::evict::{pick_victim, Candidate};
use distcache_tools::tools::{self, Cli, Flag, Listener, Parsed, RateLimit, SockOpts, Stream};

const TOOL: &str = "dc_server";

/// What a host that reaches an exposed -listen address can do.
const NO_AUTH: &str = "there is no authentication and no encryption: anyone who reaches it can read and plant TLS sessions; bind a private address and firewall the port";

const CLI: Cli = Cli {
    tool: TOOL,
    synopsis: "-listen <address> [options]",
    flags: &[
        Flag::value(
            &["listen"],
            "address",
            "address to accept clients on: UNIX:, IP:, TLS: (required, repeatable)",
        ),
        Flag::switch(&["daemon"], "detach and close the standard descriptors"),
        Flag::value(&["user"], "user", "switch to this user once listening"),
        Flag::value(&["sockowner"], "user", "owner of a UNIX listening socket"),
        Flag::value(&["sockgroup"], "group", "group of a UNIX listening socket"),
        Flag::value(&["sockperms"], "octal", "mode of a UNIX listening socket"),
        Flag::value(
            &["sessions"],
            "num",
            "maximum sessions stored (default 512)",
        ),
        Flag::value(
            &["progress"],
            "num",
            "status line every num operations (default: once a second when busy)",
        ),
        Flag::value(&["pidfile"], "path", "write the process id to this file"),
        Flag::switch(&["killable"], "shut down cleanly on SIGUSR1/SIGUSR2"),
        tools::log::LOGFILE_FLAG,
        tools::log::SYSLOG_FLAG,
        store::MINTIMEOUT_FLAG,
        Flag::value(
            &["maxconns"],
            "num",
            "most client connections at once; when full, the connection that never \
             completed a request and waited longest (else the one idle longest) makes room \
             (default 10000)",
        ),
        store::MAXTIMEOUT_FLAG,
        Flag::value(
            &["maxbuffer"],
            "MB",
            "budget for all connections' buffered requests and unsent answers; when \
             reached, the connection whose answers have not drained for longest is closed \
             (default 256)",
        ),
        Flag::value(
            &["idle"],
            "msecs",
            "close connections silent this long (default 300000; 0 = never)",
        ),
        Flag::value(
            &["stall"],
            "msecs",
            "close connections stuck mid-request or not reading answers this long (default 30000; 0 = never)",
        ),
        Flag::value(
            &["sessiond"],
            "host:port",
            "also serve stunnel's sessiond protocol on this UDP IPv4 address \
             (e.g. 127.0.0.1:9002). NO AUTHENTICATION: bind to loopback or a private address",
        ),
        Flag::value(
            &["sessiond-allow"],
            "cidr,...",
            "serve sessiond datagrams only from these IPv4 sources (a.b.c.d/len or a.b.c.d; \
             default with a loopback -sessiond: 127.0.0.0/8; required otherwise)",
        ),
        Flag::value(
            &["sessiond-sessions"],
            "num",
            "maximum stunnel sessions stored, apart from the distcache ones \
             (default: the -sessions value)",
        ),
        Flag::value(
            &["snapshot"],
            "file",
            "keep sessions across restarts: load this file at start, write it on \
             SIGTERM/SIGINT. It holds session secrets: keep it on tmpfs (/run)",
        ),
        Flag::value(
            &["snapshot-interval"],
            "secs",
            "also write the -snapshot file this often (default 0 = only at shutdown)",
        ),
        Flag::value(
            &["metrics"],
            "address",
            "serve GET /metrics (Prometheus text format) on this IP address, \
             e.g. IP:127.0.0.1:9101 (at most 16 scrapers at once, 8 KiB requests, 5 s each)",
        ),
        Flag::value(
            &["backend"],
            "address",
            "keep no sessions: answer every request (and sessiond datagram) from this Redis, \
             redis://host:port, rediss://host:port (TLS) or \
             redis-sentinel://host:port[,host:port...]/MASTERNAME; several dc_servers can share it",
        ),
        store::REDIS_PREFIX_FLAG,
        store::REDIS_USER_FLAG,
        store::REDIS_PASSWORD_FILE_FLAG,
        store::REDIS_SENTINEL_PASSWORD_FILE_FLAG,
        store::REDIS_CA_FLAG,
        store::REDIS_CERT_FLAG,
        store::REDIS_KEY_FLAG,
        Flag::value(
            &["sessiond-prefix"],
            "string",
            "with -backend: Redis key prefix of the sessiond sessions (default stunnel-sess:)",
        ),
        Flag::value(
            &["sessiond-deadline"],
            "msecs",
            "with -backend: drop a sessiond GET unanswered when Redis has not answered \
             within this long; stunnel then makes a full handshake (default 2)",
        ),
    ],
    extra: tlsconf::SERVER_FLAGS,
};

/// Default and largest `-maxbuffer` (MB).
const DEFAULT_MAX_BUFFER_MB: u64 = 256;
const MAX_BUFFER_MB: u64 = 1 << 20;

/// Largest `-sessions`.
const MAX_SESSIONS: u64 = 10_000_000;
/// Read chunk (a shared scratch buffer).
const READ_CHUNK: usize = 64 * 1024;
/// Stop decoding a client's requests while this much output is unsent.
const OUT_HIGH: usize = 256 * 1024;
/// Connections accepted per wake-up of the listener.
const ACCEPT_BATCH: usize = 256;
/// Default `-idle`: a connection that sends nothing for 5 minutes is closed.
/// Persistent clients (libdistcache's pool, dc_client) reconnect by
/// themselves when an idle connection was closed, so this costs them one
/// connect; it bounds how long silent sockets (crashed peers behind a
/// firewall, port scanners, a flood of do-nothing connections) pin slots.
const DEFAULT_IDLE_MS: u64 = 300_000;
/// Default `-stall`: a connection holding half a request, or refusing to
/// read its answers, for 30 seconds is closed. Real clients send a request
/// in one go and read the answer at once; 30 s is 15 times libdistcache's
/// default I/O timeout, so only a broken or hostile peer gets there.
const DEFAULT_STALL_MS: u64 = 30_000;

/// Datagrams handled per wake-up of the sessiond socket (level-triggered:
/// more wake the loop again, after the connections had their turn).
const SESSIOND_BATCH: usize = 1024;
/// Connection events served between two looks at the sessiond socket.
const SESSIOND_EVERY: usize = 4;
/// SO_RCVBUF asked for the sessiond socket, to absorb bursts.
const SESSIOND_RCVBUF: usize = 1 << 20;

/// The `-listen` addresses' tokens: `TOK_LISTENER + i` for the i-th.
const TOK_LISTENER: u64 = 1 << 48;
/// Most `-listen` flags (a UNIX socket, plain and TLS side by side while a
/// fleet migrates, an address per interface).
const MAX_LISTEN: usize = 16;
const TOK_SIGNALS: u64 = 1;
const TOK_SESSIOND: u64 = 2;
/// The `-backend` Redis connection, then its sentinel client's tokens
/// ([`Backend::TOKENS`] in all, below the listeners).
const TOK_BACKEND: u64 = TOK_LISTENER - Backend::TOKENS;
const TOK_BASE: u64 = 3;

/// Default `-sessiond-prefix`.
const DEFAULT_SESSIOND_PREFIX: &str = "stunnel-sess:";
/// Default `-sessiond-deadline` (ms): stunnel waits only a few.
const DEFAULT_SESSIOND_DEADLINE_MS: u64 = 2;
/// sessiond requests waiting on Redis at once, at most; beyond it a
/// datagram is dropped (a GET unanswered), counted and logged.
const MAX_SESSIOND_WAITING: usize = 1024;
/// Requests of one connection waiting on Redis at once, at most; beyond it
/// the connection's further requests wait unread.
const MAX_CONN_WAITING: u32 = 256;

struct Config {
    /// Every `-listen` address, in the order given.
    listen: Vec<DaemonAddress>,
    /// The `-tls-*` flags, when a `-listen` address is `TLS:`.
    tls: Option<(tlsconf::Settings, ServerOptions)>,
    daemon: bool,
    user: Option<String>,
    sock: SockOpts,
    sessions: usize,
    progress: u64,
    pidfile: Option<PathBuf>,
    killable: bool,
    log: tools::log::Target,
    mintimeout: u64,
    maxtimeout: u64,
    maxconns: usize,
    /// `-maxbuffer`, in bytes.
    maxbuffer: usize,
    idle_ms: u64,
    stall_ms: u64,
    sessiond: Option<SocketAddr>,
    sessiond_allow: sessiond::Allow,
    sessiond_sessions: usize,
    snapshot: Option<PathBuf>,
    /// `-snapshot-interval`, in ms (0: only at shutdown).
    snapshot_every_ms: u64,
    metrics: Option<Address>,
    /// `-backend`: the Redis connection and the ADD timeout bounds, and the
    /// warning to log about the address, if any.
    backend: Option<(store::StoreConfig, store::Timeouts)>,
    backend_warning: Option<String>,
    sessiond_prefix: Vec<u8>,
    sessiond_deadline_ms: u64,
}

/// The flags that make no sense with `-backend`: the sessions are in
/// Redis, not here.
const LOCAL_ONLY: &[&str] = &[
    "sessions",
    "sessiond-sessions",
    "snapshot",
    "snapshot-interval",
];

/// The flags that only make sense with `-backend`.
const BACKEND_ONLY: &[&str] = &["sessiond-prefix", "sessiond-deadline"];

/// `-backend` and the flags that go with it.
#[allow(clippy::type_complexity)]
fn backend_config(
    p: &Parsed,
    sessiond: bool,
) -> Result<
    (
        Option<(store::StoreConfig, store::Timeouts)>,
        Option<String>,
        Vec<u8>,
        u64,
    ),
    String,
> {
    let Some(a) = p.get("backend") else {
        if let Some(n) = store::REDIS_FLAG_NAMES
            .iter()
            .chain(BACKEND_ONLY)
            .find(|n| p.has(n))
        {
            return Err(format!("flag -{n}: only with -backend redis://host:port"));
        }
        return Ok((None, None, Vec::new(), 0));
    };
    if !store::is_store_address(a) {
        return Err(format!(
            "flag -backend: '{a}' is not a store address (redis://host:port, rediss://host:port \
             or redis-sentinel://host:port[,...]/MASTERNAME)"
        ));
    }
    let st = StoreAddress::parse(a).map_err(|e| format!("flag -backend: {e}"))?;
    if let Some(n) = LOCAL_ONLY.iter().find(|n| p.has(n)) {
        return Err(format!(
            "flag -{n}: makes no sense with -backend (the sessions are kept in {st})"
        ));
    }
    if let Some(n) = BACKEND_ONLY.iter().find(|n| p.has(n)).filter(|_| !sessiond) {
        return Err(format!("flag -{n}: needs -sessiond"));
    }
    let warning = st.warning("-backend");
    let cfg = store::redis_config(p, st, "-backend")?;
    let prefix = p.get("sessiond-prefix").unwrap_or(DEFAULT_SESSIOND_PREFIX);
    if prefix.is_empty() {
        return Err("flag -sessiond-prefix: empty prefix".into());
    }
    if sessiond && prefix.as_bytes() == cfg.redis.prefix.as_slice() {
        return Err(format!(
            "flag -sessiond-prefix: '{prefix}' is the distcache prefix too (-redis-prefix): \
             stunnel and distcache sessions must not share keys"
        ));
    }
    let deadline = p.num("sessiond-deadline", DEFAULT_SESSIOND_DEADLINE_MS, 1, 10_000)?;
    let timeouts = store::Timeouts::from_flags(p)?;
    Ok((
        Some((cfg, timeouts)),
        warning,
        prefix.as_bytes().to_vec(),
        deadline,
    ))
}

/// Parse a `-sessiond` address: `host:port` (stunnel's own syntax, e.g.
/// `127.0.0.1:9002` or `localhost:9002`) or the libnal forms `IP:host:port`,
/// `IPv4:host:port` and `IP:port` (all interfaces). IPv4 only: stunnel's
/// sessiond client cannot send over IPv6.
fn sessiond_address(s: &str) -> Result<SocketAddr, String> {
    let has_prefix = ["IP:", "IPv4:", "IPv6:", "UNIX:"]
        .iter()
        .any(|p| s.len() >= p.len() && s[..p.len()].eq_ignore_ascii_case(p));
    let text = if has_prefix {
        s.to_string()
    } else {
        format!("IP:{s}")
    };
    match Address::parse(&text).map_err(|e| format!("flag -sessiond: {e}"))? {
        Address::Ip {
            addr: a @ SocketAddr::V4(_),
            ..
        } => Ok(a),
        _ => Err(format!(
            "flag -sessiond: '{s}' is not an IPv4 address (stunnel's sessiond client speaks IPv4 UDP only)"
        )),
    }
}

fn config(p: &Parsed) -> Result<Config, String> {
    p.required("listen")?;
    let all = p.all("listen");
    if all.len() > MAX_LISTEN {
        return Err(format!(
            "flag -listen: given {} times, at most {MAX_LISTEN}",
            all.len()
        ));
    }
    let mut listen: Vec<DaemonAddress> = Vec::new();
    for a in all {
        let d = DaemonAddress::parse(a).map_err(|e| format!("flag -listen: {e}"))?;
        if !d.addr.can_listen() {
            return Err(format!("flag -listen: cannot listen on '{a}'"));
        }
        if listen.iter().any(|l| l.addr == d.addr) {
            return Err(format!("flag -listen: '{a}' is given twice"));
        }
        listen.push(d);
    }
    let tls_addrs: Vec<String> = listen
        .iter()
        .filter(|l| l.tls)
        .map(|l| l.to_string())
        .collect();
    let tls = tlsconf::Settings::from_flags(
        p,
        !tls_addrs.is_empty(),
        &format!("-listen {}", tls_addrs.join(", -listen ")),
    )?
    .map(|s| {
        let opts = ServerOptions {
            no_client_auth: p.has("tls-no-client-auth"),
            allow_names: p.all("tls-allow-name").to_vec(),
            ..Default::default()
        };
        (s, opts)
    });
    for flag in ["user", "sockowner"] {
        if let Some(u) = p.get(flag) {
            tools::lookup_user(u).map_err(|e| format!("flag -{flag}: {e}"))?;
        }
    }
    if let Some(g) = p.get("sockgroup") {
        tools::lookup_group(g).map_err(|e| format!("flag -sockgroup: {e}"))?;
    }
    let sessiond = p.get("sessiond").map(sessiond_address).transpose()?;
    let sessiond_allow = match (sessiond, p.get("sessiond-allow")) {
        (None, Some(_)) => return Err("flag -sessiond-allow: needs -sessiond".into()),
        (_, Some(list)) => {
            sessiond::Allow::parse(list).map_err(|e| format!("flag -sessiond-allow: {e}"))?
        }
        (Some(a), None) if !a.ip().is_loopback() => {
            return Err(format!(
                "flag -sessiond-allow: required when -sessiond {a} is not a loopback address \
                 (list the stunnel hosts, e.g. 10.0.0.0/24)"
            ))
        }
        _ => sessiond::Allow::loopback(),
    };
    let (backend, backend_warning, sessiond_prefix, sessiond_deadline_ms) =
        backend_config(p, sessiond.is_some())?;
    let sessions = p.num("sessions", 512, 1, MAX_SESSIONS)?;
    let pidfile = match p.get("pidfile") {
        Some("") => return Err("flag -pidfile: empty path".into()),
        Some(f) => {
            Some(tools::absolute_path(f.as_ref()).map_err(|e| format!("flag -pidfile: {e}"))?)
        }
        None => None,
    };
    let store::Timeouts {
        min_ms: mintimeout,
        max_ms: maxtimeout,
    } = store::Timeouts::from_flags(p)?;
    let snapshot = match p.get("snapshot") {
        Some("") => return Err("flag -snapshot: empty path".into()),
        Some(f) => {
            let abs =
                tools::absolute_path(f.as_ref()).map_err(|e| format!("flag -snapshot: {e}"))?;
            match abs.parent() {
                Some(d) if d.is_dir() => Some(abs),
                _ => {
                    return Err(format!(
                        "flag -snapshot: no directory for {}",
                        abs.display()
                    ))
                }
            }
        }
        None => None,
    };
    let snapshot_every = p.num("snapshot-interval", 0, 0, 604_800)?;
    if snapshot.is_none() && p.has("snapshot-interval") {
        return Err("flag -snapshot-interval: needs -snapshot <file>".into());
    }
    Ok(Config {
        listen,
        tls,
        daemon: p.has("daemon"),
        user: p.get("user").map(String::from),
        sock: SockOpts {
            owner: p.get("sockowner").map(String::from),
            group: p.get("sockgroup").map(String::from),
            perms: p.octal("sockperms")?,
        },
        sessions: sessions as usize,
        progress: p.num("progress", 0, 0, u64::MAX)?,
        pidfile,
        killable: p.has("killable"),
        log: tools::log::target_from(p)?,
        mintimeout,
        maxtimeout,
        maxconns: p.num("maxconns", 10_000, 1, 1_000_000)? as usize,
        maxbuffer: p.num("maxbuffer", DEFAULT_MAX_BUFFER_MB, 1, MAX_BUFFER_MB)? as usize
            * (1 << 20),
        idle_ms: p.num("idle", DEFAULT_IDLE_MS, 0, 86_400_000)?,
        stall_ms: p.num("stall", DEFAULT_STALL_MS, 0, 86_400_000)?,
        sessiond,
        sessiond_allow,
        sessiond_sessions: p.num("sessiond-sessions", sessions, 1, MAX_SESSIONS)? as usize,
        snapshot,
        snapshot_every_ms: snapshot_every * 1000,
        metrics: p.get("metrics").map(metrics::parse_address).transpose()?,
        backend,
        backend_warning,
        sessiond_prefix,
        sessiond_deadline_ms,
    })
}

fn log(msg: &str) {
    tools::log::line(format_args!("{msg}"));
}

fn main() {
    std::process::exit(run());
}

fn run() -> i32 {
    let parsed = match CLI.parse_env() {
        Ok(p) => p,
        Err(code) => return code,
    };
    let cfg = match config(&parsed) {
        Ok(c) => c,
        Err(msg) => return CLI.fail(&msg),
    };
    if let Err(e) = tools::log::setup(TOOL, &cfg.log) {
        return CLI.fail(&format!("flag -logfile: {e}"));
    }
    match tools::raise_nofile_limit() {
        Ok(n) if (n as usize) < cfg.maxconns + 32 => log(&format!(
            "warning: descriptor limit {n} is below -maxconns {}",
            cfg.maxconns
        )),
        Ok(_) => {}
        Err(e) => log(&format!("warning: cannot raise the descriptor limit: {e}")),
    }
    // Bound before the listener and before dropping privileges, so a bad
    // address is reported at once and a port below 1024 works with -user.
    let udp = match cfg.sessiond.map(bind_sessiond).transpose() {
        Ok(u) => u,
        Err(e) => {
            tools::log::fatal(&e.to_string());
            return 1;
        }
    };
    if let Some(w) = cfg.sessiond.and_then(|a| {
        tools::net::exposure_warning(
            "sessiond",
            a,
            "anyone who reaches it can read and plant TLS sessions",
        )
    }) {
        log(&w);
    }
    if let Some(w) = &cfg.backend_warning {
        log(w);
    }
    for l in cfg.listen.iter().filter(|l| !l.tls) {
        if let Address::Ip { addr, .. } = &l.addr {
            if let Some(w) = tools::net::exposure_warning("-listen", *addr, NO_AUTH) {
                log(&w);
            }
        }
    }
    // The TLS files are read now, before -user drops privileges (and again
    // at each reload, as that user).
    let tls = match &cfg.tls {
        Some((settings, opts)) => {
            if opts.no_client_auth {
                log(&format!(
                    "warning: {}: clients are not authenticated: anyone who reaches a TLS: address can read and plant TLS sessions; give clients certificates and drop this flag",
                    tlsconf::NO_CLIENT_AUTH_FLAG
                ));
            }
            match ServerTls::load(settings.clone(), opts.clone(), tools::now_ms()) {
                Ok(t) => Some(t),
                Err(e) => {
                    tools::log::fatal(&e);
                    return 1;
                }
            }
        }
        None => None,
    };
    Daemon::hold_signals();
    let mut listening = Vec::new();
    for addr in &cfg.listen {
        match tools::listen(&addr.addr, &cfg.sock) {
            Ok(sock) => listening.push(Listening {
                sock,
                tls: addr.tls,
            }),
            Err(e) => {
                tools::log::fatal(&e.to_string());
                return 1;
            }
        }
    }
    let shown = cfg
        .listen
        .iter()
        .map(|l| l.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let endpoint = match cfg.metrics.as_ref().map(Endpoint::bind).transpose() {
        Ok(e) => e,
        Err(e) => {
            tools::log::fatal(&e.to_string());
            return 1;
        }
    };
    let opts = daemon::Options {
        daemon: cfg.daemon,
        pidfile: cfg.pidfile.clone(),
        user: cfg.user.clone(),
        killable: cfg.killable,
        reload: tls.is_some(),
    };
    let files: Vec<&std::path::Path> = listening
        .iter()
        .filter_map(|l| l.sock.unix_path())
        .collect();
    let mut d = match Daemon::start(TOOL, &opts, &files) {
        Ok(d) => d,
        Err(code) => return code,
    };
    release_big_buffers();
    let mut server = match Server::new(listening, tls, udp, &cfg) {
        Ok(s) => s,
        Err(e) => return d.fail(&format!("cannot start the event loop: {e}")),
    };
    if let Err(e) = server.poller.add(d.signals.fd(), TOK_SIGNALS, evloop::READ) {
        return d.fail(&format!("cannot watch signals: {e}"));
    }
    if let Some(ep) = endpoint {
        if let Err(e) = ep.register(&server.poller) {
            return d.fail(&format!("cannot watch the -metrics listener: {e}"));
        }
        server.metrics = Some(ep);
    }
    d.ready(&format!("listening on {shown}"));
    if !cfg.daemon {
        let kept = match &cfg.backend {
            Some((r, _)) => match &r.sentinel {
                Some(s) => format!(
                    "sessions kept in the -backend primary of {} (via {} sentinels)",
                    s.master,
                    s.sentinels.len()
                ),
                None => format!("sessions kept in the -backend at {}", r.redis.addr),
            },
            None => format!("up to {} sessions", cfg.sessions),
        };
        log(&format!("listening on {shown}, {kept}"));
        if let Some(a) = cfg.sessiond {
            let kept = match &cfg.backend {
                Some(_) => format!(
                    "sessions under {} in the -backend",
                    String::from_utf8_lossy(&cfg.sessiond_prefix)
                ),
                None => format!("up to {} sessions", cfg.sessiond_sessions),
            };
            log(&format!(
                "serving stunnel sessiond on UDP {a}, {kept} (no authentication: keep this address private)"
            ));
        }
        if let Some(a) = server.metrics.as_ref().and_then(Endpoint::local_addr) {
            log(&format!("serving metrics on http://{a}/metrics"));
        }
    }
    let code = match server.serve(&mut d) {
        Ok(sig) => {
            log(&format!(
                "caught {}, shutting down",
                tools::signal_name(sig)
            ));
            0
        }
        Err(e) => {
            log(&format!("event loop failed: {e}"));
            1
        }
    };
    d.stopping();
    server.save_snapshot();
    // Dropping the server closes every connection and removes the UNIX
    // socket file; the pid file goes last.
    drop(server);
    drop(d);
    code
}

/// Have malloc give buffers of 128 KB and more their own mappings, returned
/// to the system when freed. By default glibc raises that threshold each
/// time such a buffer is freed, after which the per-connection output
/// buffers of clients that do not read (up to ~512 KB each) come from the
/// heap and stay in the resident set after -maxbuffer closed their
/// connections.
fn release_big_buffers() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes a malloc tunable; called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// An application connection: the shared [`Link`] and the peer's name for
/// log lines.
struct Conn {
    link: Link,
    peer: String,
    /// With `-backend`: requests sent to Redis, not yet answered.
    waiting: u32,
}

impl Conn {
    /// A request is owed an answer: answers unsent, requests waiting on
    /// Redis, or whole requests received and not yet processed. Such a
    /// connection never makes room.
    fn in_flight(&self) -> bool {
        self.link.unsent() > 0 || self.waiting > 0 || proto::starts_with_frame(&self.link.inbuf)
    }
}

/// Why request processing stopped a connection.
enum Stop {
    /// A corrupt byte stream: close at once, discarding queued answers
    /// (as the original does).
    Corrupt(String),
    /// A request that cannot be answered: answers queued before it are
    /// still delivered, then the connection closes.
    Fatal(String),
}

/// What became of a connection after an event.
enum Outcome {
    Keep,
    /// Close; log the reason if there is one.
    Close(Option<String>),
}

/// Where `-sessiond`'s own cache is kept beside `-snapshot FILE`:
/// `FILE.sessiond` (same format, its own capacity and key space).
fn sessiond_snapshot(p: &std::path::Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".sessiond");
    PathBuf::from(s)
}

/// A cache of `capacity` sessions with `-maxtimeout`, filled from the
/// snapshot at `snap` when `-snapshot` is given.
fn restored_cache(capacity: usize, maxtimeout: u64, snap: Option<&std::path::Path>) -> Cache {
    let mut cache = Cache::new(capacity);
    cache.set_max_timeout(maxtimeout);
    match snap {
        Some(p) => snapshot::load_and_log(p, cache, tools::now_ms(), &mut |l| log(l)),
        None => cache,
    }
}

/// The stunnel `sessiond` side: a UDP socket and its own cache.
struct Sessiond {
    sock: UdpSocket,
    /// Separate from the distcache cache: the key spaces never meet.
    cache: Cache,
    stats: SessiondStats,
    /// GET answers that could not be sent (socket buffer full, ...).
    unsent: u64,
    /// `-sessiond-allow`, and the datagrams from other sources dropped.
    allow: sessiond::Allow,
    refused: u64,
    /// Answers per non-loopback source, and the answers it withheld.
    limit: sessiond::AnswerLimit,
    limited: u64,
    /// One datagram; a byte longer than the largest legal request, so an
    /// oversized datagram (truncated by the kernel to this size) is still
    /// recognised as too long.
    buf: Vec<u8>,
    reply: Vec<u8>,
    /// Kept apart from the connection log limiter, so a flood of bad
    /// datagrams cannot hide connection problems.
    logs: RateLimit,
    /// With `-backend`: the key prefix (`-sessiond-prefix`), the GET
    /// deadline (`-sessiond-deadline`, ms), the longest lifetime
    /// (`-maxtimeout`, ms), the requests waiting on Redis by backend token
    /// (at most [`MAX_SESSIOND_WAITING`]) and the GETs' deadlines in
    /// order (an entry whose GET was answered is skipped when due).
    prefix: Vec<u8>,
    deadline_ms: u64,
    maxtimeout: u64,
    waiting: IdMap<u64, Waiting>,
    due: VecDeque<(u64, u64)>,
    /// GETs dropped by the deadline; requests dropped because too many
    /// waited.
    deadline_drops: u64,
    busy: u64,
}

/// A sessiond request waiting on Redis.
enum Waiting {
    /// A GET: answered to `peer` if Redis answers by `due` (ms).
    Get {
        peer: SocketAddr,
        key: [u8; sessiond::KEY_LEN],
        due: u64,
    },
    /// A NEW's or REMOVE's command: never answered.
    Write,
}

impl Sessiond {
    fn new(sock: UdpSocket, cache: Cache, allow: sessiond::Allow) -> Sessiond {
        Sessiond {
            sock,
            cache,
            stats: SessiondStats::default(),
            unsent: 0,
            allow,
            refused: 0,
            limit: sessiond::AnswerLimit::new(sessiond::ANSWERS_PER_SEC),
            limited: 0,
            buf: vec![0u8; sessiond::HEADER_LEN + sessiond::MAX_VALUE + 1],
            reply: Vec::with_capacity(sessiond::HEADER_LEN + sessiond::MAX_VALUE),
            logs: RateLimit::new(5),
            prefix: Vec::new(),
            deadline_ms: DEFAULT_SESSIOND_DEADLINE_MS,
            maxtimeout: 0,
            waiting: idmap::new(),
            due: VecDeque::new(),
            deadline_drops: 0,
            busy: 0,
        }
    }

    fn ops(&self) -> u64 {
        let s = &self.stats;
        s.news + s.gets + s.removes + s.dropped
    }

    fn note(&mut self, msg: &str) {
        if let Some(skipped) = self.logs.allow(tools::now_ms()) {
            if skipped > 0 {
                log(&format!("sessiond: ({skipped} similar lines suppressed)"));
            }
            log(&format!("sessiond: {msg}"));
        }
    }

    /// Receive and answer datagrams until none is waiting (at most
    /// `SESSIOND_BATCH`). GET answers go out at once, to the sender; with a
    /// backend, the requests go to Redis ([`Sessiond::ask`]).
    fn drain(&mut self, mut backend: Option<&mut Backend>, poller: &Poller) {
        for _ in 0..SESSIOND_BATCH {
            let (n, peer) = match self.sock.recv_from(&mut self.buf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // A queued ICMP error or the like: it concerns one
                    // earlier datagram only.
                    self.note(&format!("receive failed: {e}"));
                    continue;
                }
            };
            if !self.allow.allows(peer.ip()) {
                self.refused += 1;
                self.note(&format!(
                    "dropped a datagram from {peer}: not in -sessiond-allow"
                ));
                continue;
            }
            let now = tools::now_ms();
            if let Some(b) = backend.as_deref_mut() {
                self.ask(b, poller, n, peer, now);
                continue;
            }
            match sessiond::handle(
                &mut self.cache,
                &mut self.stats,
                now,
                &self.buf[..n],
                &mut self.reply,
            ) {
                Ok(false) => {}
                Ok(true) => self.send_reply(peer, now),
                Err(why) => {
                    self.note(&format!("dropped a datagram from {peer}: {why}"));
                }
            }
        }
    }

    /// Send `reply` to `peer`, within the per-source answer limit.
    fn send_reply(&mut self, peer: SocketAddr, now: u64) {
        if !self.limit.take(peer.ip(), now) {
            self.limited += 1;
            self.note(&format!(
                "withheld an answer to {peer}: more than {} answers a second to one source",
                sessiond::ANSWERS_PER_SEC
            ));
            return;
        }
        loop {
            match self.sock.send_to(&self.reply, peer) {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.unsent += 1;
                    self.note(&format!("cannot answer {peer}: {e}"));
                    break;
                }
            }
        }
    }

    /// Put `reply` together: OK with `value` for a hit, else ERR.
    fn set_reply(&mut self, key: &[u8], value: Option<&[u8]>) {
        self.reply.clear();
        let t = if value.is_some() {
            sessiond::T_OK
        } else {
            sessiond::T_ERR
        };
        self.reply.extend_from_slice(&[sessiond::VERSION, t, 0, 0]);
        self.reply.extend_from_slice(key);
        self.reply.extend_from_slice(value.unwrap_or_default());
    }

    /// With a backend: send datagram `buf[..n]` from `peer` on to Redis.
    /// NEW is a DEL then a `SET NX` (a NEW overwrites), REMOVE a DEL, GET a
    /// GET answered later ([`Sessiond::answered`]) or dropped at its
    /// deadline ([`Sessiond::expire`]); a GET Redis cannot take is answered
    /// ERR at once (not found: stunnel makes a full handshake).
    fn ask(&mut self, b: &mut Backend, poller: &Poller, n: usize, peer: SocketAddr, now: u64) {
        let buf = std::mem::take(&mut self.buf);
        let req = sessiond::parse(&buf[..n]);
        let req = match req {
            Ok(r) => r,
            Err(why) => {
                self.stats.dropped += 1;
                self.note(&format!("dropped a datagram from {peer}: {why}"));
                self.buf = buf;
                return;
            }
        };
        if self.waiting.len() >= MAX_SESSIOND_WAITING {
            self.busy += 1;
            self.note(&format!(
                "dropped a datagram from {peer}: {MAX_SESSIOND_WAITING} sessiond requests already wait on the backend"
            ));
            self.buf = buf;
            return;
        }
        let prefix = std::mem::take(&mut self.prefix);
        match req {
            sessiond::Request::New {
                timeout_s,
                key,
                value,
            } => {
                self.stats.news += 1;
                let ms =
                    (u64::from(timeout_s.min(sessiond::MAX_TIMEOUT_S)) * 1000).min(self.maxtimeout);
                if let Ok(t) = b.submit_raw(poller, &prefix, Request::Remove { id: key }, now) {
                    self.waiting.insert(t, Waiting::Write);
                }
                if ms > 0 {
                    let add = Request::Add {
                        id: key,
                        data: value,
                        timeout_ms: ms,
                    };
                    if let Ok(t) = b.submit_raw(poller, &prefix, add, now) {
                        self.waiting.insert(t, Waiting::Write);
                    }
                }
            }
            sessiond::Request::Remove { key } => {
                self.stats.removes += 1;
                if let Ok(t) = b.submit_raw(poller, &prefix, Request::Remove { id: key }, now) {
                    self.waiting.insert(t, Waiting::Write);
                }
            }
            sessiond::Request::Get { key } => {
                self.stats.gets += 1;
                let mut k = [0u8; sessiond::KEY_LEN];
                k.copy_from_slice(key);
                match b.submit_raw(poller, &prefix, Request::Get { id: key }, now) {
                    Ok(t) => {
                        let due = now.saturating_add(self.deadline_ms);
                        self.waiting.insert(t, Waiting::Get { peer, key: k, due });
                        self.due.push_back((due, t));
                    }
                    Err(_) => {
                        self.set_reply(&k, None);
                        self.send_reply(peer, now);
                    }
                }
            }
        }
        self.prefix = prefix;
        self.buf = buf;
    }

    /// Redis answered the request sent as `token`: a GET still within its
    /// deadline is answered.
    fn answered(&mut self, token: u64, answer: &Answer, now: u64) {
        let Some(Waiting::Get { peer, key, due }) = self.waiting.remove(&token) else {
            return;
        };
        if now > due {
            self.dropped_late(peer);
            return;
        }
        let value = match answer {
            Answer::Hit(v) if v.len() <= sessiond::MAX_VALUE => Some(v.as_slice()),
            _ => None,
        };
        self.stats.hits += u64::from(value.is_some());
        self.set_reply(&key, value);
        self.send_reply(peer, now);
    }

    fn dropped_late(&mut self, peer: SocketAddr) {
        self.deadline_drops += 1;
        self.note(&format!(
            "dropped a GET from {peer} unanswered: the backend did not answer within {} ms (-sessiond-deadline); {} so far",
            self.deadline_ms, self.deadline_drops
        ));
    }

    /// Drop the GETs past their deadline, unanswered.
    fn expire(&mut self, now: u64) {
        while let Some(&(due, token)) = self.due.front() {
            if due > now {
                break;
            }
            self.due.pop_front();
            if let Some(Waiting::Get { peer, .. }) = self.waiting.remove(&token) {
                self.dropped_late(peer);
            }
        }
    }

    /// When the next GET deadline is due (ms).
    fn next_due(&self) -> Option<u64> {
        self.due.front().map(|&(d, _)| d)
    }
}

/// A non-blocking UDP socket bound to `addr`.
fn bind_sessiond(addr: SocketAddr) -> io::Result<UdpSocket> {
    use socket2::{Domain, Socket, Type};
    let what =
        |e: io::Error| io::Error::new(e.kind(), format!("cannot bind sessiond UDP {addr}: {e}"));
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, None).map_err(what)?;
    s.set_cloexec(true).map_err(what)?;
    // Best effort: the kernel caps it at net.core.rmem_max.
    let _ = s.set_recv_buffer_size(SESSIOND_RCVBUF);
    s.bind(&addr.into()).map_err(what)?;
    s.set_nonblocking(true).map_err(what)?;
    Ok(s.into())
}

/// One `-listen` address's socket.
struct Listening {
    sock: Listener,
    /// Connections accepted here speak TLS.
    tls: bool,
}

struct Server {
    poller: Poller,
    listening: Vec<Listening>,
    /// The server side of TLS (any `-listen TLS:`), reloadable.
    tls: Option<ServerTls>,
    /// Connections whose stream holds decrypted input the descriptor does
    /// not show: served again before the loop sleeps.
    again: Vec<usize>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    /// Slots freed during the current batch of events (reused afterwards so
    /// a stale event never reaches a new connection).
    freed: Vec<usize>,
    nconns: usize,
    maxconns: usize,
    /// `-maxbuffer` (bytes), and what the connections' buffers hold now.
    maxbuffer: usize,
    buffered: usize,
    cache: Cache,
    policy: Policy,
    stats: Stats,
    scratch: Vec<u8>,
    logs: RateLimit,
    reserve_fd: Option<File>,
    progress: u64,
    quiet: bool,
    last_status_ms: u64,
    /// Operations of both protocols at the last status line.
    last_status_ops: u64,
    idle_ms: u64,
    stall_ms: u64,
    next_idle_scan: u64,
    /// Distcache operations at the last status line.
    last_status_dc: u64,
    sessiond: Option<Sessiond>,
    /// `-snapshot`, `-snapshot-interval` (ms) and when the next write is due.
    snapshot: Option<PathBuf>,
    snapshot_every_ms: u64,
    next_snapshot: u64,
    /// `-metrics`, and the connection counters it shows.
    metrics: Option<Endpoint>,
    conn_stats: ConnStats,
    /// `-backend`: the Redis every request is answered from (the caches
    /// above then stay empty), and the requests it failed.
    backend: Option<Backend>,
    backend_failures: u64,
}

impl Server {
    fn new(
        listening: Vec<Listening>,
        tls: Option<ServerTls>,
        udp: Option<UdpSocket>,
        cfg: &Config,
    ) -> io::Result<Server> {
        let poller = Poller::new()?;
        for (i, l) in listening.iter().enumerate() {
            poller.add(l.sock.as_raw_fd(), TOK_LISTENER + i as u64, evloop::READ)?;
        }
        if let Some(u) = &udp {
            poller.add(u.as_raw_fd(), TOK_SESSIOND, evloop::READ)?;
        }
        let cache = restored_cache(cfg.sessions, cfg.maxtimeout, cfg.snapshot.as_deref());
        let sessiond = udp.map(|u| {
            let sp = cfg.snapshot.as_deref().map(sessiond_snapshot);
            let sd_cache = restored_cache(cfg.sessiond_sessions, cfg.maxtimeout, sp.as_deref());
            let mut sd = Sessiond::new(u, sd_cache, cfg.sessiond_allow.clone());
            sd.prefix.clone_from(&cfg.sessiond_prefix);
            sd.deadline_ms = cfg.sessiond_deadline_ms;
            sd.maxtimeout = cfg.maxtimeout;
            sd
        });
        let backend = cfg.backend.clone().map(|(rcfg, timeouts)| {
            Backend::new(rcfg, timeouts, TOK_BACKEND, &poller, tools::now_ms())
        });
        Ok(Server {
            poller,
            listening,
            tls,
            again: Vec::new(),
            conns: Vec::new(),
            free: Vec::new(),
            freed: Vec::new(),
            nconns: 0,
            maxconns: cfg.maxconns,
            maxbuffer: cfg.maxbuffer,
            buffered: 0,
            cache,
            policy: Policy {
                min_timeout_ms: cfg.mintimeout,
            },
            stats: Stats::default(),
            scratch: vec![0u8; READ_CHUNK],
            logs: RateLimit::new(20),
            reserve_fd: File::open("/dev/null").ok(),
            progress: cfg.progress,
            quiet: cfg.daemon,
            last_status_ms: 0,
            last_status_ops: 0,
            idle_ms: cfg.idle_ms,
            stall_ms: cfg.stall_ms,
            next_idle_scan: 0,
            last_status_dc: 0,
            sessiond,
            snapshot: cfg.snapshot.clone(),
            snapshot_every_ms: cfg.snapshot_every_ms,
            next_snapshot: tools::now_ms().saturating_add(cfg.snapshot_every_ms),
            metrics: None,
            conn_stats: ConnStats::default(),
            backend,
            backend_failures: 0,
        })
    }

    /// Write the -snapshot file (logs how it went).
    fn save_snapshot(&self) {
        if let Some(p) = &self.snapshot {
            snapshot::write_and_log(&self.cache, tools::now_ms(), p, &mut |l| log(l));
            if let Some(sd) = &self.sessiond {
                let sp = sessiond_snapshot(p);
                snapshot::write_and_log(&sd.cache, tools::now_ms(), &sp, &mut |l| log(l));
            }
        }
    }

    /// Write the -snapshot file if -snapshot-interval says it is due.
    fn snapshot_if_due(&mut self) {
        let now = tools::now_ms();
        if self.snapshot_every_ms > 0 && now >= self.next_snapshot {
            self.save_snapshot();
            self.next_snapshot = tools::now_ms().saturating_add(self.snapshot_every_ms);
        }
    }

    /// A rate-limited log line.
    fn note(&mut self, msg: &str) {
        if let Some(skipped) = self.logs.allow(tools::now_ms()) {
            if skipped > 0 {
                log(&format!("({skipped} similar lines suppressed)"));
            }
            log(msg);
        }
    }

    /// Run until a stop signal arrives; returns it.
    fn serve(&mut self, d: &mut Daemon) -> io::Result<i32> {
        let mut events = Vec::new();
        // At least once a second (the status line, the clocks), and twice
        // per systemd watchdog interval.
        let sleep = d.max_sleep().map_or(Duration::from_millis(1000), |w| {
            w.min(Duration::from_millis(1000))
        });
        loop {
            d.tick(tools::now_ms());
            // The Redis requests the last turn took (connections, sessiond,
            // held-back ones taken by deliver_backend): one write. A write
            // error answers them, and what deliver_backend then takes fails
            // at once (the connection is down), so nothing stays unsent.
            if let Some(b) = &mut self.backend {
                b.send_queued(&self.poller, tools::now_ms());
                self.deliver_backend();
            }
            // Up to the next -idle/-stall scan when one is due sooner (a
            // short -stall bounds a handshake that never completes).
            let now = tools::now_ms();
            let mut wait = if !self.again.is_empty() {
                Duration::ZERO
            } else if (self.idle_ms > 0 || self.stall_ms > 0) && self.nconns > 0 {
                sleep.min(Duration::from_millis(
                    self.next_idle_scan.saturating_sub(now).max(1),
                ))
            } else {
                sleep
            };
            // The backend's deadlines and reconnects, and the sessiond
            // GETs' deadlines.
            let due = [
                self.backend.as_ref().and_then(Backend::next_wake),
                self.sessiond.as_ref().and_then(Sessiond::next_due),
            ];
            if let Some(t) = due.into_iter().flatten().min() {
                wait = wait.min(Duration::from_millis(t.saturating_sub(now)));
            }
            self.poller.wait(Some(wait), &mut events)?;
            // stunnel waits only a few milliseconds for a GET answer:
            // datagrams go first, and are looked for again every few
            // connections, never queued behind distcache work.
            if events.iter().any(|ev| ev.token == TOK_SESSIOND) {
                self.sessiond_drain();
            }
            let mut served = 0usize;
            // Listeners with newcomers (a bit per -listen address).
            let mut accept = 0u32;
            for ev in &events {
                match ev.token {
                    TOK_SESSIOND => {}
                    t if self.backend.as_ref().is_some_and(|b| b.owns(t)) => {
                        if let Some(b) = &mut self.backend {
                            b.event(&self.poller, ev, tools::now_ms());
                        }
                        self.deliver_backend();
                    }
                    // After the connections: a newcomer accepted in the
                    // previous round has its request read before more
                    // newcomers can push it out of a full table.
                    t if (TOK_LISTENER..TOK_LISTENER + MAX_LISTEN as u64).contains(&t) => {
                        accept |= 1 << (t - TOK_LISTENER)
                    }
                    TOK_SIGNALS => {
                        if let Some(sig) = d.signals.pending() {
                            return Ok(sig);
                        }
                        if d.signals.take_reload() {
                            if let Some(tls) = &mut self.tls {
                                tls.maybe_reload(true, tools::now_ms(), &mut |l| log(l));
                            }
                        }
                    }
                    t if Endpoint::owns(t) => self.metrics_event(t, ev.events),
                    t => {
                        let idx = (t - TOK_BASE) as usize;
                        // A TLS handshake step costs a signature or a
                        // certificate check (hundreds of microseconds):
                        // datagrams are looked for after each one.
                        let handshake = self
                            .conns
                            .get(idx)
                            .and_then(Option::as_ref)
                            .is_some_and(|c| c.link.handshaking());
                        self.conn_event(idx, ev.events);
                        if self.over_budget() {
                            self.enforce_budget();
                        }
                        served += 1;
                        if handshake || served % SESSIOND_EVERY == 0 {
                            self.sessiond_drain();
                        }
                    }
                }
            }
            // Connections with decrypted input left: a bounded read each,
            // as if the descriptor had shown it.
            for idx in std::mem::take(&mut self.again) {
                self.conn_event(idx, evloop::READ);
            }
            if let Some(b) = &mut self.backend {
                b.tick(&self.poller, tools::now_ms());
                self.deliver_backend();
            }
            if let Some(sd) = &mut self.sessiond {
                sd.expire(tools::now_ms());
            }
            self.free.append(&mut self.freed);
            for i in 0..self.listening.len() {
                if accept & (1 << i) != 0 {
                    self.accept_some(i);
                }
            }
            if let Some(tls) = &mut self.tls {
                tls.maybe_reload(false, tools::now_ms(), &mut |l| log(l));
            }
            self.expire_idle();
            if let Some(ep) = &mut self.metrics {
                ep.expire(tools::now_ms());
            }
            self.status();
            self.snapshot_if_due();
        }
    }

    /// Close connections past `-idle` (nothing pending) or `-stall` (half a
    /// request, or unread answers). Scans at most a few times a second.
    fn expire_idle(&mut self) {
        if self.idle_ms == 0 && self.stall_ms == 0 {
            return;
        }
        let now = tools::now_ms();
        if now < self.next_idle_scan {
            return;
        }
        let limit = |ms: u64| if ms == 0 { u64::MAX } else { ms };
        let (idle, stall) = (limit(self.idle_ms), limit(self.stall_ms));
        self.next_idle_scan = now + idle.min(stall).clamp(1, 4000) / 4;
        for idx in 0..self.conns.len() {
            let Some(c) = &self.conns[idx] else { continue };
            if c.waiting > 0 {
                // Answers due from the backend (within its deadline).
                continue;
            }
            let l = &c.link;
            let why = if let Some(quiet) = l.stalled(now, self.stall_ms) {
                self.conn_stats.closed_stall += 1;
                if l.handshaking() {
                    format!("TLS: handshake not completed in {quiet} ms (-stall)")
                } else {
                    format!(
                    "stalled for {quiet} ms with {} bytes of a request and {} bytes of answers pending (-stall)",
                    l.inbuf.len(),
                    l.unsent()
                )
                }
            } else if l.idle_due(self.idle_ms).is_some_and(|due| now >= due) {
                self.conn_stats.closed_idle += 1;
                format!("idle for {} ms (-idle)", now - l.last_active)
            } else {
                continue;
            };
            let conn = self.conns[idx].take().expect("checked above");
            self.note(&format!("closing connection from {}: {why}", conn.peer));
            self.close(idx, conn);
        }
        self.free.append(&mut self.freed);
    }

    fn sessiond_drain(&mut self) {
        if let Some(sd) = &mut self.sessiond {
            sd.drain(self.backend.as_mut(), &self.poller);
        }
    }

    /// Hand the answers the backend completed to their connections (and
    /// datagrams), then serve those connections: their answers go out and
    /// requests held back by [`MAX_CONN_WAITING`] are taken.
    fn deliver_backend(&mut self) {
        let Some(b) = &mut self.backend else { return };
        let now = tools::now_ms();
        let mut touched = Vec::new();
        let (conns, stats, failures) =
            (&mut self.conns, &mut self.stats, &mut self.backend_failures);
        b.deliver(&mut |r: Route, payload, how| {
            count(stats, r.cmd, payload, how);
            if how != How::Server {
                *failures += 1;
            }
            let idx = (r.client - TOK_BASE) as usize;
            // The connection that sent it, not one that took its slot
            // since: else the answer is dropped.
            let Some(c) = conns
                .get_mut(idx)
                .and_then(Option::as_mut)
                .filter(|c| c.link.serial() == r.tag)
            else {
                return;
            };
            c.waiting -= 1;
            // Payloads are a session or one byte: never too large.
            let _ = proto::encode_message(c.link.out(), true, r.uid, r.cmd, payload);
            c.link.completed = true;
            c.link.since = now;
            c.link.last_active = now;
            c.link.output_starts(now);
            touched.push(idx);
        });
        let raw = b.take_raw();
        if let Some(sd) = &mut self.sessiond {
            for c in &raw {
                sd.answered(c.token, &c.answer, now);
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for idx in touched {
            self.conn_event(idx, evloop::WRITE);
        }
    }

    /// Operations of both protocols, for deciding when a status line is due.
    fn total_ops(&self) -> u64 {
        self.stats.ops + self.sessiond.as_ref().map_or(0, Sessiond::ops)
    }

    fn accept_some(&mut self, which: usize) {
        let mut fd_room_made = false;
        for _ in 0..ACCEPT_BATCH {
            match self.listening[which].sock.accept() {
                Ok((stream, peer)) => {
                    // Room made for a descriptor went to this newcomer.
                    fd_room_made = false;
                    let full = self.nconns >= self.maxconns;
                    if full && self.make_room(&format!("-maxconns {} reached", self.maxconns)) {
                        self.conn_stats.closed_maxconns += 1;
                    } else if full {
                        self.conn_stats.refused_maxconns += 1;
                        self.note(&format!(
                            "refusing connection from {peer}: {} connections open (-maxconns), every one with a request in flight",
                            self.nconns
                        ));
                        drop(stream);
                        continue;
                    }
                    let stream: Box<dyn Transport> = match (&self.tls, stream) {
                        (Some(tls), Stream::Tcp(tcp)) if self.listening[which].tls => {
                            match TlsStream::accept(tcp, tls.current()) {
                                Ok(t) => Box::new(t),
                                Err(e) => {
                                    self.note(&format!(
                                        "closing connection from {peer}: {}",
                                        tlsconf::failure_reason(&e)
                                    ));
                                    continue;
                                }
                            }
                        }
                        (_, s) => Box::new(s),
                    };
                    self.register(stream, peer);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(e)
                    if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
                        && !fd_room_made
                        && self.nconns > 0
                        && self.make_room(&format!("out of file descriptors: {e}")) =>
                {
                    // Closing a connection freed a descriptor: accept the
                    // newcomer. If that accept fails again (another process
                    // took the system's last descriptor), refuse instead of
                    // closing more.
                    fd_room_made = true;
                    self.conn_stats.closed_nofile += 1;
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) => {
                    // Out of descriptors and nothing to close: accept with
                    // the reserve one and close at once, so the listener
                    // does not spin.
                    self.reserve_fd = None;
                    if let Ok((s, peer)) = self.listening[which].sock.accept() {
                        drop(s);
                        self.conn_stats.refused_nofile += 1;
                        self.note(&format!(
                            "refusing connection from {peer}: out of file descriptors ({} open)",
                            self.nconns
                        ));
                    }
                    self.reserve_fd = File::open("/dev/null").ok();
                    return;
                }
                Err(e) => {
                    self.note(&format!("accept failed: {e}"));
                    return;
                }
            }
        }
    }

    /// The table is full: close one connection chosen by the shared policy
    /// (tools::evict: never completed and waited longest, else idle
    /// longest, never one with a request in flight), with a log line.
    /// False when every connection has a request in flight.
    fn make_room(&mut self, why: &str) -> bool {
        let victim = pick_victim(self.conns.iter().map(|c| match c {
            Some(c) => Candidate {
                completed_any: c.link.completed,
                in_flight: c.in_flight(),
                since_ms: c.link.since,
                serial: c.link.serial(),
            },
            // An empty slot is never chosen.
            None => Candidate {
                completed_any: true,
                in_flight: true,
                since_ms: 0,
                serial: 0,
            },
        }));
        let Some(idx) = victim else { return false };
        let conn = self.conns[idx]
            .take()
            .expect("pick_victim skips empty slots");
        let waited = tools::now_ms().saturating_sub(conn.link.since);
        let what = if conn.link.completed {
            format!("idle for {waited} ms")
        } else {
            format!(
                "never completed a request in {waited} ms ({} bytes of one pending)",
                conn.link.inbuf.len()
            )
        };
        self.note(&format!(
            "closing connection from {} to make room for a new one ({why}): {what}",
            conn.peer
        ));
        self.close(idx, conn);
        true
    }

    /// Over -maxbuffer: release the spare buffers of connections with
    /// nothing pending, then close, first, the connections whose output has
    /// not shrunk (or whose partial request has not progressed) for
    /// longest, until the total is within the budget. A client that reads
    /// its answers (a multiplexing dc_client) is never the offender.
    fn enforce_budget(&mut self) {
        if self.buffered <= self.maxbuffer {
            return;
        }
        for c in self.conns.iter_mut().flatten() {
            if c.link.charged > 0 && c.link.release_buffers() {
                self.buffered = c.link.recharge(self.buffered, 0);
            }
        }
        if self.buffered <= self.maxbuffer {
            return;
        }
        // (stuck since, slot): an allocation only while over the budget.
        let mut stuck: Vec<(u64, usize)> = self
            .conns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let c = &c.as_ref()?.link;
                if c.unsent() > 0 {
                    Some((c.out_moved, i))
                } else if !c.inbuf.is_empty() {
                    Some((c.progress, i))
                } else {
                    None
                }
            })
            .collect();
        stuck.sort_unstable();
        let now = tools::now_ms();
        for (since, idx) in stuck {
            if self.buffered <= self.maxbuffer {
                break;
            }
            let conn = self.conns[idx].take().expect("collected above");
            let msg = format!(
                "closing connection from {}: {} bytes of answers and {} bytes of requests not drained for {} ms, with {} bytes buffered in all (-maxbuffer {} MB)",
                conn.peer,
                conn.link.unsent(),
                conn.link.inbuf.len(),
                now.saturating_sub(since),
                self.buffered,
                self.maxbuffer >> 20
            );
            self.note(&msg);
            self.conn_stats.closed_buffer += 1;
            self.close(idx, conn);
        }
    }

    fn over_budget(&self) -> bool {
        self.buffered > self.maxbuffer
    }

    fn register(&mut self, stream: Box<dyn Transport>, peer: String) {
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.conns.push(None);
                self.conns.len() - 1
            }
        };
        let token = idx as u64 + TOK_BASE;
        match Link::accepted_boxed(stream, token, Direction::Requests, &self.poller) {
            Ok(link) => {
                self.conns[idx] = Some(Conn {
                    link,
                    peer,
                    waiting: 0,
                });
                self.nconns += 1;
                self.conn_stats.accepted += 1;
            }
            Err(e) => {
                self.free.push(idx);
                self.note(&format!("cannot watch connection from {peer}: {e}"));
            }
        }
    }

    fn conn_event(&mut self, idx: usize, events: u32) {
        let Some(mut conn) = self.conns.get_mut(idx).and_then(Option::take) else {
            return;
        };
        let outcome = self.drive(&mut conn, events);
        let held = conn.link.buffered();
        self.buffered = conn.link.recharge(self.buffered, held);
        match outcome {
            Outcome::Keep => {
                let want = desired_interest(&conn.link, conn.waiting, self.over_budget());
                if let Err(e) = conn.link.set_interest(&self.poller, want) {
                    let msg = format!("closing connection from {}: epoll: {e}", conn.peer);
                    self.note(&msg);
                    self.close(idx, conn);
                    return;
                }
                if conn.link.has_buffered_input()
                    && !paused(&conn.link, conn.waiting, self.over_budget())
                {
                    self.again.push(idx);
                }
                self.conns[idx] = Some(conn);
            }
            Outcome::Close(reason) => {
                if let Some(r) = reason {
                    let msg = format!("closing connection from {}: {r}", conn.peer);
                    self.note(&msg);
                }
                self.close(idx, conn);
            }
        }
    }

    fn close(&mut self, idx: usize, conn: Conn) {
        self.buffered -= conn.link.charged;
        // Closing the descriptor removes it from the epoll set (it is never
        // duplicated).
        drop(conn);
        self.nconns -= 1;
        self.freed.push(idx);
    }

    fn drive(&mut self, conn: &mut Conn, events: u32) -> Outcome {
        let link = &mut conn.link;
        if events & evloop::ERR != 0 {
            return Outcome::Close(None);
        }
        // On a hang-up, requests already received are still carried out
        // (a fire-and-forget ADD counts); the answers then fail to send and
        // the connection closes.
        // Over -maxbuffer, a connection whose answers wait unsent takes no
        // more requests until they drain.
        let over = self.over_budget();
        if !paused(link, conn.waiting, over) && events & (evloop::READ | evloop::HUP) != 0 {
            match link.read_once(&mut self.scratch) {
                Ok(got) if got.eof => link.eof = true,
                Ok(got) if got.n > 0 => {
                    let r = self.take_input(conn, got.n);
                    if let Some(o) = self.stopped(conn, r) {
                        return o;
                    }
                }
                Ok(_) => {}
                Err(e) => return Outcome::Close(tls_reason(&e)),
            }
        }
        loop {
            let link = &mut conn.link;
            if link.unsent() > 0 || link.wants_write() {
                if let Err(e) = link.flush() {
                    return Outcome::Close(tls_reason(&e));
                }
            }
            // Output drained below the mark: decode what is still buffered
            // (also after the peer finished sending).
            if !backed_up(link, conn.waiting, over) && proto::decodable(&link.inbuf) {
                let before = link.inbuf.len();
                let r = self.process_buffered(conn);
                if let Some(o) = self.stopped(conn, r) {
                    return o;
                }
                if conn.link.inbuf.len() != before {
                    continue;
                }
            }
            break;
        }
        // Answers still due from the backend keep a half-closed connection.
        if conn.link.finished() && conn.waiting == 0 {
            return Outcome::Close(None);
        }
        Outcome::Keep
    }

    /// Act on the end of request processing: `Some` to close at once.
    fn stopped(&mut self, conn: &mut Conn, r: Result<(), Stop>) -> Option<Outcome> {
        match r {
            Ok(()) => None,
            Err(Stop::Corrupt(why)) => Some(Outcome::Close(Some(why))),
            Err(Stop::Fatal(why)) => {
                let msg = format!("closing connection from {}: {why}", conn.peer);
                self.note(&msg);
                conn.link.close_after_output();
                None
            }
        }
    }

    /// Decode `scratch[..n]` (after any buffered bytes).
    fn take_input(&mut self, conn: &mut Conn, n: usize) -> Result<(), Stop> {
        if conn.link.inbuf.is_empty() {
            let scratch = std::mem::take(&mut self.scratch);
            let used = self.process(conn, &scratch[..n]);
            if let Ok(used) = used {
                conn.link.keep(&scratch[used..n]);
            }
            self.scratch = scratch;
            used.map(|_| ())
        } else {
            conn.link.keep(&self.scratch[..n]);
            self.process_buffered(conn)
        }
    }

    fn process_buffered(&mut self, conn: &mut Conn) -> Result<(), Stop> {
        let input = std::mem::take(&mut conn.link.inbuf);
        let used = self.process(conn, &input);
        conn.link.inbuf = input;
        conn.link.consumed(used?);
        Ok(())
    }

    /// Answer `input`'s requests from the cache, or send them to the
    /// backend.
    fn process(&mut self, conn: &mut Conn, input: &[u8]) -> Result<usize, Stop> {
        let answerer = match &mut self.backend {
            Some(backend) => Answerer::Backend {
                backend,
                poller: &self.poller,
                waiting: &mut conn.waiting,
                failures: &mut self.backend_failures,
            },
            None => Answerer::Cache {
                cache: &mut self.cache,
                policy: &self.policy,
            },
        };
        process(&mut conn.link, input, answerer, &mut self.stats)
    }

    /// An event for the -metrics endpoint; a scrape reads the counters.
    fn metrics_event(&mut self, token: u64, events: u32) {
        let Some(ep) = &mut self.metrics else { return };
        let (cache, stats, sessiond) = (&mut self.cache, &self.stats, &mut self.sessiond);
        let (open, conns) = (self.nconns as u64, self.conn_stats);
        let (backend, failures) = (self.backend.is_some(), self.backend_failures);
        ep.event(&self.poller, token, events, &mut |e| {
            let now = tools::now_ms();
            let view = metrics::ServerView {
                requests: *stats,
                store: metrics::StoreView::of(cache, now),
                conns_open: open,
                conns,
                sessiond: sessiond.as_mut().map(|sd| metrics::SessiondView {
                    stats: sd.stats,
                    refused: sd.refused,
                    limited: sd.limited,
                    unsent: sd.unsent,
                    deadline: sd.deadline_drops,
                    busy: sd.busy,
                    store: metrics::StoreView::of(&mut sd.cache, now),
                }),
                backend_failures: backend.then_some(failures),
            };
            metrics::render_server(&view, e)
        });
    }

    /// Print a status line when due (never with -daemon).
    fn status(&mut self) {
        if self.quiet {
            return;
        }
        let ops = self.total_ops();
        if ops == self.last_status_ops {
            return;
        }
        let now = tools::now_ms();
        let by_count = self.progress > 0 && ops - self.last_status_ops >= self.progress;
        if !by_count && now.saturating_sub(self.last_status_ms) < 1000 {
            return;
        }
        let s = self.stats;
        let items = self.cache.num_items(now);
        let sd = match &mut self.sessiond {
            Some(sd) => {
                let t = sd.stats;
                format!(
                    " sessiond: news={} gets={} hits={} removes={} dropped={} refused={} limited={} unsent={} items={}/{}",
                    t.news,
                    t.gets,
                    t.hits,
                    t.removes,
                    t.dropped,
                    sd.refused,
                    sd.limited,
                    sd.unsent,
                    sd.cache.num_items(now),
                    sd.cache.capacity()
                )
            }
            None => String::new(),
        };
        let sd = match (&self.backend, &self.sessiond) {
            (Some(_), Some(x)) => format!("{sd} late={} busy={}", x.deadline_drops, x.busy),
            _ => sd,
        };
        let sd = match &self.backend {
            Some(b) => format!(
                "{sd} backend={} failed={}",
                if b.is_up() { "up" } else { "down" },
                self.backend_failures
            ),
            None => sd,
        };
        println!(
            "[{}] {TOOL}: ops={} (+{}) adds={} refused={} gets={} hits={} misses={} removes={} haves={} items={}/{} conns={}{sd}",
            tools::timestamp(),
            s.ops,
            s.ops - self.last_status_dc,
            s.adds,
            s.adds_refused,
            s.gets,
            s.hits,
            s.misses,
            s.removes,
            s.haves,
            items,
            self.cache.capacity(),
            self.nconns
        );
        let _ = io::stdout().flush();
        self.last_status_ms = now;
        self.last_status_ops = ops;
        self.last_status_dc = s.ops;
    }
}

/// Why a connection failed, for its log line: a TLS failure says why (the
/// peer is refused or misbehaves); a plain socket error (the peer reset
/// the connection) closes it quietly, as it always did.
fn tls_reason(e: &io::Error) -> Option<String> {
    distcache_tools::tls::Failure::of(e).map(|f| f.to_string())
}

/// Answers back up past the mark, wait while over -maxbuffer, or too many
/// requests wait on the backend: take no more requests.
fn backed_up(link: &Link, waiting: u32, over_budget: bool) -> bool {
    link.unsent() >= OUT_HIGH || (over_budget && link.unsent() > 0) || waiting >= MAX_CONN_WAITING
}

/// Reading is paused: backed up, or the peer finished sending.
fn paused(link: &Link, waiting: u32, over_budget: bool) -> bool {
    link.eof || backed_up(link, waiting, over_budget)
}

/// Where `process` gets its answers.
enum Answerer<'a> {
    /// The built-in cache.
    Cache {
        cache: &'a mut dyn SessionCache,
        policy: &'a Policy,
    },
    /// `-backend`: Redis; answers come later through
    /// `Server::deliver_backend`, counted in `waiting` until then.
    Backend {
        backend: &'a mut Backend,
        poller: &'a Poller,
        waiting: &'a mut u32,
        failures: &'a mut u64,
    },
}

/// Count a request answered through the backend in the status counters.
fn count(stats: &mut Stats, cmd: Cmd, payload: &[u8], how: How) {
    let answered = how == How::Server;
    let yes = answered && payload == [status::OK];
    stats.ops += 1;
    match cmd {
        Cmd::Add => {
            stats.adds += 1;
            stats.adds_refused += u64::from(!yes);
        }
        Cmd::Get => {
            stats.gets += 1;
            let hit = answered && payload != [status::NOTOK];
            stats.hits += u64::from(hit);
            stats.misses += u64::from(!hit);
        }
        Cmd::Remove => {
            stats.removes += 1;
            stats.removes_found += u64::from(yes);
        }
        Cmd::Have => {
            stats.haves += 1;
            stats.haves_found += u64::from(yes);
        }
    }
}

/// Decode and answer requests from the front of `input` until it runs out,
/// or until the connection's unsent output reaches the high-water mark.
/// Returns the bytes consumed; an error closes the connection.
fn process(
    link: &mut Link,
    input: &[u8],
    mut answerer: Answerer<'_>,
    stats: &mut Stats,
) -> Result<usize, Stop> {
    let mut off = 0;
    let mut big = false;
    let mut answered = false;
    let now_us = tools::now_us();
    let now = now_us / 1000;
    link.output_starts(now);
    let (token, tag) = (link.token(), link.serial());
    while link.unsent() < OUT_HIGH {
        if let Answerer::Backend { waiting, .. } = &answerer {
            if **waiting >= MAX_CONN_WAITING {
                break;
            }
        }
        let (dec, _, out) = link.parts();
        match dec
            .feed(&input[off..])
            .map_err(|e| Stop::Corrupt(e.to_string()))?
        {
            proto::Event::NeedMore => break,
            proto::Event::Fragment { consumed } => off += consumed,
            proto::Event::Message { consumed, msg } => {
                let (uid, cmd) = (msg.uid, msg.cmd);
                big |= msg.payload.len() >= proto::MSG_MAX_DATA;
                let fatal = || {
                    Stop::Fatal(format!(
                        "corrupt {} request (uid {uid:#x}): payload too short",
                        cmd.name()
                    ))
                };
                match &mut answerer {
                    Answerer::Cache { cache, policy } => {
                        handle_request(*cache, policy, stats, now, msg, out)
                            .map_err(|_| fatal())?;
                        answered = true;
                    }
                    Answerer::Backend { .. } if msg.is_response => return Err(fatal()),
                    Answerer::Backend {
                        backend,
                        poller,
                        waiting,
                        failures,
                    } => match backend.request(poller, token, tag, &msg, now, now_us) {
                        Taken::Queued => **waiting += 1,
                        Taken::Now(code, how) => {
                            count(stats, cmd, &[code], how);
                            if how != How::Server {
                                **failures += 1;
                            }
                            let _ = proto::encode_message(out, true, uid, cmd, &[code]);
                            answered = true;
                        }
                        Taken::Fatal => return Err(fatal()),
                    },
                }
                off += consumed;
            }
        }
    }
    if off > 0 {
        link.progress = now;
    }
    if answered {
        link.completed = true;
        link.since = now;
    }
    if big && !link.dec.in_message() {
        // Release the reassembly buffer of a multi-frame message: idle
        // connections should hold no large buffers.
        link.dec = Decoder::new(Direction::Requests);
    }
    Ok(off)
}

/// The events a connection should be watched for. While reading is paused
/// (output backlog, or the peer finished sending) the connection is watched
/// edge-triggered for WRITE only, so a lingering hang-up condition cannot
/// wake the loop again and again.
fn desired_interest(link: &Link, waiting: u32, over_budget: bool) -> u32 {
    if paused(link, waiting, over_budget) {
        evloop::WRITE | libc::EPOLLET as u32
    } else if link.unsent() > 0 || link.wants_write() {
        evloop::READ | evloop::WRITE
    } else {
        evloop::READ
    }
}
