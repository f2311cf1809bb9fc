//! The `-metrics ADDR` endpoint of dc_server and dc_client: `GET /metrics`
//! in the Prometheus text format (version 0.0.4), served from the daemon's
//! own epoll loop ([`crate::evloop`]): no thread, no async runtime.
//!
//! Everything about metrics lives here, in one place: the HTTP side
//! ([`Endpoint`]: httparse for the request, at most [`MAX_SCRAPERS`]
//! connections, [`MAX_REQUEST`] bytes and [`SCRAPE_TIMEOUT_MS`] each, its
//! own table so a scraper never takes one of the cache's `-maxconns`
//! slots), and the metric names, help texts and labels ([`render_server`],
//! [`render_client`], encoded by prometheus-client). The daemons keep plain
//! integer counters where the events happen ([`ConnStats`],
//! [`ClientRequests`], the core's `Stats` and `Cache` counters) and hand
//! them over as a view when a scrape comes; only the round-trip histogram
//! of dc_client ([`Rtt`]) is a prometheus-client metric of its own.
//!
//! These crates are dependencies of the daemons crate only: the C
//! libraries (libnal.so.1 and friends) never link them.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use distcache_rs::nal::Address;
use distcache_rs::proto::{Cmd, Direction};
use distcache_rs::server::Stats;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::evloop::{self, Poller};
use crate::link::Link;
use crate::sessiond::SessiondStats;
use crate::tools::{self, Listener, RateLimit, SockOpts};

/// Metrics connections served at once; more are accepted, closed and
/// logged.
pub const MAX_SCRAPERS: usize = 16;
/// Largest request head (request line and headers) taken; over it the
/// answer is 431 and the connection closes.
pub const MAX_REQUEST: usize = 8 * 1024;
/// A metrics connection must send its request and take the answer within
/// this long; otherwise it is dropped (with a log line).
pub const SCRAPE_TIMEOUT_MS: u64 = 5000;
/// Most request headers parsed.
const MAX_HEADERS: usize = 64;

/// epoll tokens of the endpoint: the listener, then one per slot. Far
/// above any token the daemons give their own connections.
pub const TOKEN_LISTENER: u64 = 1 << 56;

/// Parse a `-metrics` value: an IP listening address in the tools' syntax
/// (`IP:127.0.0.1:9101`, `IPv6:[::1]:9101`, `IP:9101` for every
/// interface). The error names the flag.
pub fn parse_address(s: &str) -> Result<Address, String> {
    let a = Address::parse(s).map_err(|e| format!("flag -metrics: {e}"))?;
    match a {
        Address::Ip { .. } => Ok(a),
        _ => Err(format!(
            "flag -metrics: '{s}' is not an IP address (Prometheus scrapes over TCP, e.g. IP:127.0.0.1:9101)"
        )),
    }
}

// ------------------------------------------------------------ counters

/// Connection counters a daemon keeps where the events happen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnStats {
    /// Connections accepted into the table.
    pub accepted: u64,
    /// Newcomers refused: the table was full of connections with a
    /// request in flight (`-maxconns`).
    pub refused_maxconns: u64,
    /// Newcomers refused: out of file descriptors.
    pub refused_nofile: u64,
    /// Connections closed by a limit: stuck mid-request or not reading
    /// answers (`-stall`; dc_client's `-clientstall`), silent (`-idle`),
    /// making room for a newcomer (`-maxconns`), or over the buffer budget
    /// (`-maxbuffer`).
    pub closed_stall: u64,
    pub closed_idle: u64,
    pub closed_maxconns: u64,
    pub closed_buffer: u64,
    /// Connections closed to free a descriptor for a newcomer.
    pub closed_nofile: u64,
}

/// The counters of one cache (the distcache one, or sessiond's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreView {
    pub sessions: u64,
    pub capacity: u64,
    pub evictions: u64,
    pub expirations: u64,
    pub bytes: u64,
}

impl StoreView {
    /// Read a cache's counters (its live sessions counted at `now_ms`).
    pub fn of(cache: &mut distcache_rs::server::cache::Cache, now_ms: u64) -> StoreView {
        use distcache_rs::server::SessionCache;
        let sessions = cache.num_items(now_ms) as u64;
        StoreView {
            sessions,
            capacity: cache.capacity() as u64,
            evictions: cache.evictions(),
            expirations: cache.expirations(),
            bytes: cache.stored_bytes(),
        }
    }
}

/// dc_server's sessiond side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessiondView {
    pub stats: SessiondStats,
    /// Datagrams from sources outside `-sessiond-allow`.
    pub refused: u64,
    /// GET answers withheld by the per-source answer limit.
    pub limited: u64,
    /// GET answers that could not be sent.
    pub unsent: u64,
    /// With `-backend`: GETs dropped unanswered because Redis had not
    /// answered within `-sessiond-deadline`, and requests dropped because
    /// too many already waited on Redis.
    pub deadline: u64,
    pub busy: u64,
    pub store: StoreView,
}

/// What dc_server shows.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServerView {
    pub requests: Stats,
    pub store: StoreView,
    pub conns_open: u64,
    pub conns: ConnStats,
    pub sessiond: Option<SessiondView>,
    /// With `-backend`: requests answered 0x02 because Redis did not
    /// answer (down, pipeline full, deadline, lost connection, error).
    pub backend_failures: Option<u64>,
}

/// How dc_client answered a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// With the server's answer.
    Server = 0,
    /// 0x02: the server had not answered within `-deadline`.
    Deadline = 1,
    /// 0x02: the server is taken as down (it answered nothing for a whole
    /// deadline); not forwarded.
    ServerDown = 2,
    /// 0x02: the server connection was lost with the request in flight.
    Disconnected = 3,
    /// Empty: no server connection.
    NoServer = 4,
}

const ANSWERS: [(Answer, &str); 5] = [
    (Answer::Server, "server"),
    (Answer::Deadline, "deadline"),
    (Answer::ServerDown, "server_down"),
    (Answer::Disconnected, "disconnected"),
    (Answer::NoServer, "no_server"),
];

const OPS: [(Cmd, &str); 4] = [
    (Cmd::Add, "add"),
    (Cmd::Get, "get"),
    (Cmd::Remove, "remove"),
    (Cmd::Have, "have"),
];

/// dc_client's requests by operation and how they were answered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientRequests([[u64; 5]; 4]);

impl ClientRequests {
    pub fn count(&mut self, cmd: Cmd, a: Answer) {
        self.0[cmd as usize][a as usize] += 1;
    }
    pub fn get(&self, cmd: Cmd, a: Answer) -> u64 {
        self.0[cmd as usize][a as usize]
    }
}

/// dc_client's upstream round-trip times (request forwarded to answer
/// received), in seconds: buckets from 100 µs doubling to about 1.6 s.
#[derive(Clone, Debug)]
pub struct Rtt(Histogram);

impl Default for Rtt {
    fn default() -> Self {
        Rtt(Histogram::new(exponential_buckets(0.0001, 2.0, 15)))
    }
}

impl Rtt {
    pub fn observe(&self, d: Duration) {
        self.0.observe(d.as_secs_f64());
    }
}

/// What dc_client shows.
#[derive(Clone, Debug, Default)]
pub struct ClientView {
    pub requests: ClientRequests,
    pub conns_open: u64,
    pub conns: ConnStats,
    pub upstream_up: bool,
    /// Successful connections to the server after the first one.
    pub reconnects: u64,
    /// Connection attempts that failed.
    pub connect_failures: u64,
    /// Server connections lost (closed, broken, stalled, corrupt).
    pub disconnects: u64,
    pub rtt: Rtt,
}

// ------------------------------------------------------------ encoding

type Labels = Vec<(&'static str, &'static str)>;

#[derive(Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    unit: Option<Unit>,
    kind: MetricType,
    samples: Vec<(Labels, u64)>,
}

/// One scrape's values, encoded by prometheus-client as a collector.
#[derive(Debug, Default)]
struct Snapshot(Vec<Family>);

impl Snapshot {
    fn add(
        &mut self,
        kind: MetricType,
        name: &'static str,
        help: &'static str,
        unit: Option<Unit>,
        samples: Vec<(Labels, u64)>,
    ) {
        self.0.push(Family {
            name,
            help,
            unit,
            kind,
            samples,
        });
    }
    fn counter(&mut self, name: &'static str, help: &'static str, samples: Vec<(Labels, u64)>) {
        self.add(MetricType::Counter, name, help, None, samples);
    }
    fn gauge(&mut self, name: &'static str, help: &'static str, samples: Vec<(Labels, u64)>) {
        self.add(MetricType::Gauge, name, help, None, samples);
    }
    fn gauge_bytes(&mut self, name: &'static str, help: &'static str, samples: Vec<(Labels, u64)>) {
        self.add(MetricType::Gauge, name, help, Some(Unit::Bytes), samples);
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for f in &self.0 {
            let mut me = encoder.encode_descriptor(f.name, f.help, f.unit.as_ref(), f.kind)?;
            for (labels, v) in &f.samples {
                let fam = me.encode_family(labels)?;
                match f.kind {
                    MetricType::Counter => ConstCounter::new(*v).encode(fam)?,
                    _ => ConstGauge::new(i64::try_from(*v).unwrap_or(i64::MAX)).encode(fam)?,
                }
            }
        }
        Ok(())
    }
}

fn one(v: u64) -> Vec<(Labels, u64)> {
    vec![(Vec::new(), v)]
}

fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; a metric that could not be encoded
    // leaves what came before it.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, registry);
    out
}

/// Connection metrics shared by both daemons.
fn conn_families(s: &mut Snapshot, open: u64, c: &ConnStats, stall_name: &'static str) {
    s.gauge(
        "distcache_connections_open",
        "Client connections open now (metrics connections excluded).",
        one(open),
    );
    s.counter(
        "distcache_connections_accepted",
        "Client connections accepted.",
        one(c.accepted),
    );
    s.counter(
        "distcache_connections_refused",
        "Client connections refused, by reason.",
        vec![
            (vec![("reason", "maxconns")], c.refused_maxconns),
            (vec![("reason", "nofile")], c.refused_nofile),
        ],
    );
    s.counter(
        "distcache_limit_hits",
        "Connections closed by a limit, by limit.",
        vec![
            (vec![("limit", stall_name)], c.closed_stall),
            (vec![("limit", "idle")], c.closed_idle),
            (vec![("limit", "maxconns")], c.closed_maxconns),
            (vec![("limit", "buffer")], c.closed_buffer),
            (vec![("limit", "nofile")], c.closed_nofile),
        ],
    );
}

fn store_families(s: &mut Snapshot, stores: &[(&'static str, StoreView)]) {
    let each = |f: fn(&StoreView) -> u64| -> Vec<(Labels, u64)> {
        stores
            .iter()
            .map(|(name, v)| (vec![("cache", *name)], f(v)))
            .collect()
    };
    s.gauge(
        "distcache_sessions",
        "Live sessions stored, by cache.",
        each(|v| v.sessions),
    );
    s.gauge(
        "distcache_sessions_capacity",
        "Most sessions a cache stores (-sessions, -sessiond-sessions).",
        each(|v| v.capacity),
    );
    s.gauge_bytes(
        "distcache_stored",
        "Session id and data bytes stored, by cache.",
        each(|v| v.bytes),
    );
    s.counter(
        "distcache_evictions",
        "Live sessions evicted to make room, by cache.",
        each(|v| v.evictions),
    );
    s.counter(
        "distcache_expirations",
        "Expired sessions reclaimed, by cache.",
        each(|v| v.expirations),
    );
}

fn endpoint_families(s: &mut Snapshot, e: &EndpointStats) {
    s.counter(
        "distcache_metrics_requests",
        "Requests to this metrics endpoint, by HTTP status code.",
        vec![
            (vec![("code", "200")], e.ok),
            (vec![("code", "400")], e.bad_request),
            (vec![("code", "404")], e.not_found),
            (vec![("code", "405")], e.bad_method),
            (vec![("code", "431")], e.too_large),
        ],
    );
    s.counter(
        "distcache_metrics_dropped",
        "Metrics connections dropped, by reason.",
        vec![
            (vec![("reason", "timeout")], e.timeouts),
            (vec![("reason", "busy")], e.busy),
        ],
    );
}

/// dc_server's metrics in the Prometheus text format.
pub fn render_server(v: &ServerView, e: &EndpointStats) -> String {
    let mut s = Snapshot::default();
    let r = &v.requests;
    s.counter(
        "distcache_requests",
        "Requests answered, by operation and result.",
        vec![
            (
                vec![("op", "add"), ("result", "stored")],
                r.adds - r.adds_refused,
            ),
            (vec![("op", "add"), ("result", "refused")], r.adds_refused),
            (vec![("op", "get"), ("result", "hit")], r.hits),
            (vec![("op", "get"), ("result", "miss")], r.misses),
            (
                vec![("op", "remove"), ("result", "removed")],
                r.removes_found,
            ),
            (
                vec![("op", "remove"), ("result", "miss")],
                r.removes - r.removes_found,
            ),
            (vec![("op", "have"), ("result", "hit")], r.haves_found),
            (
                vec![("op", "have"), ("result", "miss")],
                r.haves - r.haves_found,
            ),
        ],
    );
    let mut stores = vec![("distcache", v.store)];
    if let Some(sd) = &v.sessiond {
        stores.push(("sessiond", sd.store));
    }
    store_families(&mut s, &stores);
    conn_families(&mut s, v.conns_open, &v.conns, "stall");
    if let Some(sd) = &v.sessiond {
        let t = &sd.stats;
        s.counter(
            "distcache_sessiond_datagrams",
            "sessiond datagrams received, by type and result.",
            vec![
                (vec![("type", "new"), ("result", "stored")], t.news),
                (vec![("type", "get"), ("result", "hit")], t.hits),
                (vec![("type", "get"), ("result", "miss")], t.gets - t.hits),
                (vec![("type", "remove"), ("result", "done")], t.removes),
                (
                    vec![("type", "malformed"), ("result", "dropped")],
                    t.dropped,
                ),
                (vec![("type", "any"), ("result", "refused")], sd.refused),
            ],
        );
        s.counter(
            "distcache_sessiond_answers_dropped",
            "sessiond GET answers not sent, by reason.",
            vec![
                (vec![("reason", "rate_limit")], sd.limited),
                (vec![("reason", "send_error")], sd.unsent),
                (vec![("reason", "backend_deadline")], sd.deadline),
                (vec![("reason", "backend_busy")], sd.busy),
            ],
        );
    }
    if let Some(n) = v.backend_failures {
        s.counter(
            "distcache_backend_failures",
            "Requests answered 0x02 (disconnected) because the -backend store did not \
             answer: down, pipeline full, deadline, lost connection or an error reply.",
            vec![(vec![], n)],
        );
    }
    endpoint_families(&mut s, e);
    let mut reg = Registry::default();
    reg.register_collector(Box::new(s));
    encode(&reg)
}

/// dc_client's metrics in the Prometheus text format.
pub fn render_client(v: &ClientView, e: &EndpointStats) -> String {
    let mut s = Snapshot::default();
    let mut req = Vec::new();
    for (cmd, op) in OPS {
        for (a, how) in ANSWERS {
            req.push((vec![("op", op), ("result", how)], v.requests.get(cmd, a)));
        }
    }
    s.counter(
        "distcache_requests",
        "Requests answered, by operation and how: the server's answer, or \
         a failure because of the deadline, a server taken as down, a lost \
         connection, or no server.",
        req,
    );
    conn_families(&mut s, v.conns_open, &v.conns, "stall");
    s.gauge(
        "distcache_upstream_up",
        "1 while the server connection is up and answering, else 0.",
        one(u64::from(v.upstream_up)),
    );
    s.counter(
        "distcache_upstream_reconnects",
        "Connections made to the server after the first.",
        one(v.reconnects),
    );
    s.counter(
        "distcache_upstream_connect_failures",
        "Connection attempts to the server that failed.",
        one(v.connect_failures),
    );
    s.counter(
        "distcache_upstream_disconnects",
        "Server connections lost.",
        one(v.disconnects),
    );
    endpoint_families(&mut s, e);
    let mut reg = Registry::default();
    reg.register_collector(Box::new(s));
    reg.register_with_unit(
        "distcache_upstream_rtt",
        "Round-trip time of requests forwarded to the server.",
        Unit::Seconds,
        v.rtt.0.clone(),
    );
    encode(&reg)
}

// ------------------------------------------------------------ endpoint

/// The endpoint's own counters (shown as metrics too).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointStats {
    pub ok: u64,
    pub bad_request: u64,
    pub not_found: u64,
    pub bad_method: u64,
    pub too_large: u64,
    pub timeouts: u64,
    pub busy: u64,
}

/// A metrics connection: the shared [`Link`] (its decoder unused: the
/// request is HTTP), the peer's name, and its deadline.
struct Scraper {
    link: Link,
    peer: String,
    /// Dropped at this time (ms) if not done.
    deadline: u64,
    /// The answer is queued: waiting for the socket to take it.
    answering: bool,
}

/// What a request gets.
enum Reply {
    Metrics,
    Status(u16, &'static str),
}

/// The metrics listener and its connections, driven by the daemon's loop.
pub struct Endpoint {
    listener: Listener,
    slots: Vec<Option<Scraper>>,
    logs: RateLimit,
    pub stats: EndpointStats,
}

impl Endpoint {
    /// Listen on `addr` (an IP address, see [`parse_address`]). A public
    /// address gets the tools' one start-up warning.
    pub fn bind(addr: &Address) -> io::Result<Endpoint> {
        if let Address::Ip { addr: a, .. } = addr {
            let risk = "anyone who reaches it can read the cache's load and limits, and \
                        take metrics connections; bind loopback or a private address";
            if let Some(w) = tools::net::exposure_warning("-metrics", *a, risk) {
                tools::log::line(format_args!("{w}"));
            }
        }
        let listener = tools::listen(addr, &SockOpts::default())
            .map_err(|e| io::Error::new(e.kind(), format!("-metrics: {e}")))?;
        Ok(Endpoint {
            listener,
            slots: (0..MAX_SCRAPERS).map(|_| None).collect(),
            logs: RateLimit::new(5),
            stats: EndpointStats::default(),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Watch the listener.
    pub fn register(&self, poller: &Poller) -> io::Result<()> {
        poller.add(self.listener.as_raw_fd(), TOKEN_LISTENER, evloop::READ)
    }

    /// Whether an epoll token is the endpoint's.
    pub fn owns(token: u64) -> bool {
        (TOKEN_LISTENER..=TOKEN_LISTENER + MAX_SCRAPERS as u64).contains(&token)
    }

    fn note(&mut self, msg: &str) {
        if let Some(skipped) = self.logs.allow(tools::now_ms()) {
            if skipped > 0 {
                tools::log::line(format_args!(
                    "metrics: ({skipped} similar lines suppressed)"
                ));
            }
            tools::log::line(format_args!("metrics: {msg}"));
        }
    }

    /// Handle an event for one of the endpoint's tokens. `render` produces
    /// the metrics text when a scrape asks for it.
    pub fn event(
        &mut self,
        poller: &Poller,
        token: u64,
        events: u32,
        render: &mut dyn FnMut(&EndpointStats) -> String,
    ) {
        if token == TOKEN_LISTENER {
            return self.accept(poller);
        }
        let slot = (token - TOKEN_LISTENER - 1) as usize;
        let Some(mut s) = self.slots.get_mut(slot).and_then(Option::take) else {
            return;
        };
        // Dropping a Scraper closes its socket (never duplicated), which
        // takes it out of the epoll set.
        let keep = self.drive(&mut s, events, render);
        if keep {
            let want = if s.answering {
                evloop::WRITE
            } else {
                evloop::READ
            };
            if s.link.set_interest(poller, want).is_ok() {
                self.slots[slot] = Some(s);
            }
        }
    }

    fn accept(&mut self, poller: &Poller) {
        for _ in 0..MAX_SCRAPERS {
            let (stream, peer) = match self.listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors and the like: the level-triggered
                    // listener reports again; the cache is not affected.
                    self.note(&format!("accept failed: {e}"));
                    return;
                }
            };
            let Some(slot) = self.slots.iter().position(Option::is_none) else {
                self.stats.busy += 1;
                self.note(&format!(
                    "refusing connection from {peer}: {MAX_SCRAPERS} metrics connections open"
                ));
                continue;
            };
            let token = TOKEN_LISTENER + 1 + slot as u64;
            let link = match Link::accepted(stream, token, Direction::Requests, poller) {
                Ok(l) => l,
                Err(e) => {
                    self.note(&format!("cannot watch connection from {peer}: {e}"));
                    continue;
                }
            };
            self.slots[slot] = Some(Scraper {
                link,
                peer,
                deadline: tools::now_ms() + SCRAPE_TIMEOUT_MS,
                answering: false,
            });
        }
    }

    /// True: keep; false: done, close.
    fn drive(
        &mut self,
        s: &mut Scraper,
        events: u32,
        render: &mut dyn FnMut(&EndpointStats) -> String,
    ) -> bool {
        if !s.answering {
            let mut buf = [0u8; 2048];
            // Past MAX_REQUEST the request is refused: read no more (at
            // most one chunk beyond it).
            let budget = (MAX_REQUEST + 1).saturating_sub(s.link.inbuf.len());
            match s.link.read_some(&mut buf, budget) {
                Ok(got) if got.eof => return false,
                Ok(_) => {}
                Err(_) => return false,
            }
            let reply = match parse_request(&s.link.inbuf) {
                None if s.link.inbuf.len() > MAX_REQUEST => {
                    self.note(&format!(
                        "request from {} over {MAX_REQUEST} bytes without an end of headers: 431",
                        s.peer
                    ));
                    Reply::Status(431, "Request Header Fields Too Large")
                }
                None => return events & evloop::HUP == 0,
                Some(r) => r,
            };
            let (code, reason, ctype, body) = match reply {
                Reply::Metrics => {
                    self.stats.ok += 1;
                    let body = render(&self.stats);
                    (
                        200,
                        "OK",
                        prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                        body,
                    )
                }
                Reply::Status(code, reason) => {
                    match code {
                        400 => self.stats.bad_request += 1,
                        404 => self.stats.not_found += 1,
                        405 => self.stats.bad_method += 1,
                        _ => self.stats.too_large += 1,
                    }
                    (
                        code,
                        reason,
                        "text/plain; charset=utf-8",
                        format!("{reason}\n"),
                    )
                }
            };
            let allow = if code == 405 { "Allow: GET\r\n" } else { "" };
            let head = format!(
                "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
                body.len()
            );
            s.link.out().extend_from_slice(head.as_bytes());
            s.link.out().extend_from_slice(body.as_bytes());
            s.link.close_after_output();
            s.answering = true;
        }
        if s.link.flush().is_err() {
            return false;
        }
        if !s.link.finished() {
            return true;
        }
        // Everything written: close (one request per connection).
        s.link.shutdown_write();
        false
    }

    /// Drop the connections past [`SCRAPE_TIMEOUT_MS`] (call it from the
    /// loop at least once a second).
    pub fn expire(&mut self, now_ms: u64) {
        for i in 0..self.slots.len() {
            let due = matches!(&self.slots[i], Some(s) if s.deadline <= now_ms);
            if !due {
                continue;
            }
            let s = self.slots[i].take().expect("checked above");
            self.stats.timeouts += 1;
            let what = if s.answering {
                format!("{} bytes of the answer not taken", s.link.unsent())
            } else {
                format!("{} bytes of an unfinished request", s.link.inbuf.len())
            };
            self.note(&format!(
                "dropping connection from {}: {what} after {SCRAPE_TIMEOUT_MS} ms",
                s.peer
            ));
        }
    }

    /// When the next metrics connection is due to be dropped.
    pub fn next_deadline(&self) -> Option<u64> {
        self.slots.iter().flatten().map(|s| s.deadline).min()
    }
}

/// What a request head asks for; None while incomplete.
fn parse_request(buf: &[u8]) -> Option<Reply> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) => None,
        Ok(httparse::Status::Complete(_)) => {
            let path = req.path.unwrap_or("");
            let path = path.split('?').next().unwrap_or("");
            Some(if path != "/metrics" {
                Reply::Status(404, "Not Found")
            } else if req.method != Some("GET") {
                Reply::Status(405, "Method Not Allowed")
            } else {
                Reply::Metrics
            })
        }
        Err(httparse::Error::TooManyHeaders) => {
            Some(Reply::Status(431, "Request Header Fields Too Large"))
        }
        Err(_) => Some(Reply::Status(400, "Bad Request")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn requests_are_routed() {
        let r = |s: &str| match parse_request(s.as_bytes()) {
            None => 0,
            Some(Reply::Metrics) => 200,
            Some(Reply::Status(c, _)) => c,
        };
        assert_eq!(r("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), 200);
        assert_eq!(r("GET /metrics?x=1 HTTP/1.0\r\n\r\n"), 200);
        assert_eq!(r("GET /other HTTP/1.1\r\n\r\n"), 404);
        assert_eq!(r("POST /metrics HTTP/1.1\r\n\r\n"), 405);
        assert_eq!(r("GET /metrics HTTP/1.1\r\nHost: x\r\n"), 0);
        assert_eq!(r("\x01\x02 nonsense\r\n\r\n"), 400);
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("X-{i}: y\r\n"))
            .collect();
        assert_eq!(r(&format!("GET /metrics HTTP/1.1\r\n{many}\r\n")), 431);
    }

    /// An endpoint on a loopback port that was free a moment ago.
    fn endpoint() -> (Endpoint, u16) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = Address::parse(&format!("IP:127.0.0.1:{port}")).unwrap();
        (Endpoint::bind(&addr).unwrap(), port)
    }

    /// Run the endpoint's events until `done` says so (bounded).
    fn pump(ep: &mut Endpoint, p: &mut Poller, body: usize, done: &dyn Fn(&Endpoint) -> bool) {
        let mut evs = Vec::new();
        for _ in 0..200 {
            if done(ep) {
                return;
            }
            p.wait(Some(Duration::from_millis(10)), &mut evs).unwrap();
            for ev in &evs {
                assert!(Endpoint::owns(ev.token));
                ep.event(p, ev.token, ev.events, &mut |_| "x".repeat(body));
            }
        }
        panic!("endpoint never got there");
    }

    #[test]
    fn a_scraper_that_does_not_read_the_answer_is_dropped() {
        use std::net::TcpStream;
        let mut p = Poller::new().unwrap();
        let (mut ep, port) = endpoint();
        ep.register(&p).unwrap();
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        // An answer far larger than the socket buffers, never read.
        pump(&mut ep, &mut p, 64 << 20, &|ep| {
            ep.stats.ok == 1 && ep.slots.iter().flatten().any(|s| s.answering)
        });
        assert_eq!(ep.next_deadline().map(|d| d > tools::now_ms()), Some(true));
        ep.expire(tools::now_ms());
        assert_eq!(ep.stats.timeouts, 0, "not yet due");
        ep.expire(tools::now_ms() + SCRAPE_TIMEOUT_MS);
        assert_eq!(ep.stats.timeouts, 1);
        assert!(ep.slots.iter().all(Option::is_none));
        assert_eq!(ep.next_deadline(), None);
        // The peer sees the connection end, short of the whole answer.
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match c.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        assert!(got < 64 << 20, "{got}");
    }

    #[test]
    fn a_17th_connection_is_refused() {
        use std::net::TcpStream;
        let mut p = Poller::new().unwrap();
        let (mut ep, port) = endpoint();
        ep.register(&p).unwrap();
        let held: Vec<TcpStream> = (0..MAX_SCRAPERS + 1)
            .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
            .collect();
        pump(&mut ep, &mut p, 0, &|ep| ep.stats.busy == 1);
        assert!(ep.slots.iter().all(Option::is_some));
        drop(held);
    }

    #[test]
    fn server_text_has_the_conventional_names() {
        let mut v = ServerView::default();
        v.requests.adds = 3;
        v.requests.adds_refused = 1;
        v.requests.gets = 2;
        v.requests.hits = 2;
        v.store.capacity = 512;
        v.conns.refused_maxconns = 4;
        let t = render_server(&v, &EndpointStats::default());
        for line in [
            "# TYPE distcache_requests_total counter",
            "distcache_requests_total{op=\"add\",result=\"stored\"} 2",
            "distcache_requests_total{op=\"add\",result=\"refused\"} 1",
            "distcache_requests_total{op=\"get\",result=\"hit\"} 2",
            "distcache_sessions_capacity{cache=\"distcache\"} 512",
            "# TYPE distcache_stored_bytes gauge",
            "distcache_connections_refused_total{reason=\"maxconns\"} 4",
        ] {
            assert!(t.lines().any(|l| l == line), "{line:?} missing in:\n{t}");
        }
        assert!(
            !t.contains("distcache_sessiond") && !t.contains("cache=\"sessiond\""),
            "no sessiond metrics without -sessiond"
        );
    }

    #[test]
    fn client_text_has_the_histogram() {
        let mut v = ClientView::default();
        v.requests.count(Cmd::Get, Answer::Deadline);
        v.rtt.observe(Duration::from_micros(150));
        v.upstream_up = true;
        let t = render_client(&v, &EndpointStats::default());
        for line in [
            "distcache_requests_total{op=\"get\",result=\"deadline\"} 1",
            "distcache_upstream_up 1",
            "# TYPE distcache_upstream_rtt_seconds histogram",
            "distcache_upstream_rtt_seconds_bucket{le=\"0.0001\"} 0",
            "distcache_upstream_rtt_seconds_bucket{le=\"0.0002\"} 1",
            "distcache_upstream_rtt_seconds_count 1",
        ] {
            assert!(t.lines().any(|l| l == line), "{line:?} missing in:\n{t}");
        }
    }
}
