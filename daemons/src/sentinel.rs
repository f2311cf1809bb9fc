//! Redis Sentinel discovery (issue 17): which node is the primary of a
//! master name, asked of a list of sentinels, and a [`Store`] that keeps a
//! [`RedisConn`] pointed at it across fail-overs. Non-blocking, inside the
//! daemons' epoll loops, in the style of [`crate::redis`].
//!
//! # Asking the sentinels
//!
//! A [`Sentinel`] runs "rounds": it connects to one sentinel (TCP, at most
//! [`Config::connect_timeout_ms`]), sends `AUTH` when a sentinel password
//! is configured and `SENTINEL get-master-addr-by-name NAME`, waits at
//! most [`Config::reply_timeout_ms`] for the answer, and closes the
//! connection. A sentinel that is unreachable, slow, refuses the AUTH,
//! answers an error, does not know the master name or names a host that
//! is not an IP address is passed over for the next one, in turn; a round
//! asks each configured sentinel (at most [`MAX_SENTINELS`]) at most once,
//! so it ends within `n x (connect + reply)` ms. It starts with the
//! sentinel that answered last.
//!
//! - A round that finds the primary yields [`Outcome::Primary`]; the next
//!   round comes [`Config::refresh_ms`] later, or sooner when the owner
//!   calls [`Sentinel::ask`] (at most one round per [`Config::retry_ms`]).
//!   Rounds that keep naming the primary the owner doubts start with the
//!   next sentinel each time (one may be stale) and space out, doubling up
//!   to [`SAME_SPACING_MAX_MS`].
//! - A round where no sentinel named the primary yields
//!   [`Outcome::Failed`]; the next round follows with exponential backoff
//!   from [`Config::retry_ms`] to [`BACKOFF_MAX_MS`], with jitter,
//!   whatever [`Sentinel::ask`] says.
//! - With [`Config::watch`] (the default) the client also subscribes to
//!   `+switch-master` on the sentinel that answered last (a second
//!   connection, under `token + 1`); an announcement for its master name
//!   yields [`Outcome::Primary`] at once, so a fail-over whose old primary
//!   stays up (a manual one, or a partition) is followed when it is
//!   announced rather than at the next round. Each answered round checks
//!   the subscription (PING, within the reply bound) or moves it to the
//!   sentinel that answered; a lost subscription is logged once and
//!   opened again after the next answered round.
//! - One log line per state change: all sentinels failing (one line, the
//!   reason of each; a wrong master name says so), answering again; a
//!   sentinel passed over while another answered, and answering again;
//!   the subscription lost, and working again.
//!
//! Sentinels that announce host names (`announce-hostnames yes`) are
//! passed over: a name lookup would block the loop. The sentinel
//! connections are plain TCP (`rediss-sentinel://` is parsed here; the
//! daemons refuse it, [`crate::store::NO_TLS_SENTINEL`]).
//!
//! # The owner side: [`Store`]
//!
//! ```text
//! // The sentinel client uses SENTINEL_TOKEN and SENTINEL_TOKEN + 1.
//! let mut st = Store::new(sentinel_cfg, redis_cfg, SENTINEL_TOKEN, REDIS_TOKEN, &poller, now_ms());
//! loop {
//!     poller.wait(st.next_wake().map(|t| t.saturating_sub(now_ms())), &mut evs)?;
//!     for ev in &evs {
//!         if st.owns(ev.token) { st.on_event(&poller, ev, now_ms(), &mut done); }
//!     }
//!     st.tick(&poller, now_ms(), &mut done);
//!     match st.submit(&poller, Request::Get { id }, my_token, now_ms(), &mut done) { .. }
//!     st.send_queued(&poller, now_ms(), &mut done); // the turn's submits, one write
//!     for c in done.drain(..) { reply(c.token, c.answer.status()); }
//! }
//! ```
//!
//! The store asks the sentinels again whenever its connection asks for
//! rediscovery ([`RedisConn::take_rediscovery`]: READONLY, a lost
//! connection, a failed attempt) or is not up; when the primary changed it
//! re-points the connection ([`RedisConn::set_addr`]) and logs
//! "primary of NAME is now host:port (was ...)". Its connection checks
//! `ROLE` in the handshake ([`crate::redis::Config::check_role`]), so a
//! node named by a stale sentinel that is in fact a replica is refused.
//! Until the first primary is known, requests fail at once
//! ([`Failure::Down`]).

use std::collections::VecDeque;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;

use distcache_rs::nal::Address;
use distcache_rs::proto::Direction;
use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::types::{OwnedFrame, Resp2Frame};

use crate::evloop::{Event, Poller};
use crate::link::Link;
use crate::redis::{self, write_auth, write_cmd, Completion, Failure, RedisConn, Request, Secret};
use crate::tools::log;

/// Sentinels in one list, at most.
pub const MAX_SENTINELS: usize = 16;

/// Longest master name accepted.
pub const MAX_MASTER_NAME: usize = 128;

/// The sentinels' usual port, when an address gives none.
pub const DEFAULT_PORT: u16 = 26379;

/// Default bound on connecting to one sentinel.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 500;

/// Default bound on one sentinel's answer, once connected.
pub const DEFAULT_REPLY_TIMEOUT_MS: u64 = 500;

/// Default least time between two rounds (and first backoff delay).
pub const DEFAULT_RETRY_MS: u64 = 250;

/// Default time between two rounds while all is well.
pub const DEFAULT_REFRESH_MS: u64 = 10_000;

/// Largest delay between failed rounds (before jitter).
pub const BACKOFF_MAX_MS: u64 = 5000;

/// Largest spacing of rounds that keep naming a primary the owner
/// doubts (its connection keeps failing: Redis down, or a stale sentinel).
pub const SAME_SPACING_MAX_MS: u64 = 1000;

/// A sentinel's reply, at most (two short strings in an array).
pub const MAX_REPLY: usize = 4096;

/// Which sentinels to ask about which master, and how.
#[derive(Clone, Debug)]
pub struct Config {
    /// The sentinels (TCP; at most [`MAX_SENTINELS`] are used).
    pub sentinels: Vec<Address>,
    /// The master name the sentinels monitor.
    pub master: String,
    /// ACL user for the sentinels' `AUTH user password`.
    pub user: Option<String>,
    /// The sentinels' password; none: no AUTH is sent.
    pub password: Option<Secret>,
    /// Connect bound per sentinel (ms).
    pub connect_timeout_ms: u64,
    /// Answer bound per sentinel once connected (ms).
    pub reply_timeout_ms: u64,
    /// Least time between rounds, first backoff delay (ms, at least 1).
    pub retry_ms: u64,
    /// Time between rounds while all is well (ms).
    pub refresh_ms: u64,
    /// Subscribe to `+switch-master` on the sentinel that answered last
    /// (a fail-over is then followed as soon as it is announced, not at
    /// the next round).
    pub watch: bool,
}

impl Config {
    /// The defaults for `sentinels` and `master`.
    pub fn new(sentinels: Vec<Address>, master: impl Into<String>) -> Config {
        Config {
            sentinels,
            master: master.into(),
            user: None,
            password: None,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            reply_timeout_ms: DEFAULT_REPLY_TIMEOUT_MS,
            retry_ms: DEFAULT_RETRY_MS,
            refresh_ms: DEFAULT_REFRESH_MS,
            watch: true,
        }
    }
}

/// What a round found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A sentinel named the primary (perhaps the one known already).
    Primary(Address),
    /// No sentinel named it.
    Failed,
}

/// Counters, for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Rounds started.
    pub rounds: u64,
    /// Rounds that found no primary.
    pub failed_rounds: u64,
    /// Sentinels asked (connections made).
    pub asked: u64,
    /// `+switch-master` subscriptions confirmed.
    pub watches: u64,
    /// `+switch-master` announcements for this master followed.
    pub switches: u64,
    /// Subscriptions that failed or were lost.
    pub watch_failures: u64,
    /// PINGs answered on the subscription (checked each answered round).
    pub watch_pongs: u64,
    /// Log lines written.
    pub log_lines: u64,
}

/// What a reply on the sentinel connection answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Auth,
    Query,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// No round; the next one at `next_at`.
    Idle { next_at: u64 },
    /// Asking sentinel `idx`, the `tried`-th of this round (from 0);
    /// given up at `deadline`.
    Asking {
        idx: usize,
        tried: usize,
        deadline: u64,
    },
}

/// Why one sentinel did not name the primary.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Miss {
    /// It does not know the master name (a null answer).
    Unknown,
    /// Anything else, said in words.
    Error(String),
}

/// A reply the `+switch-master` connection waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WatchOp {
    Auth,
    Subscribe,
    Ping,
}

/// The `+switch-master` subscription on one sentinel.
#[derive(Debug)]
struct Watch {
    link: Link,
    /// The sentinel watched.
    idx: usize,
    pending: VecDeque<WatchOp>,
    /// The connect or a reply is due by then.
    deadline: Option<u64>,
    subscribed: bool,
}

/// How the last failed round was logged (one line per change).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RoundLog {
    /// Every sentinel that answered said it does not know the name.
    Unknown,
    /// No sentinel named the primary, for other reasons.
    Failing,
}

/// Asks sentinels for the primary of one master name. See the module
/// documentation.
#[derive(Debug)]
pub struct Sentinel {
    cfg: Config,
    token: u64,
    state: State,
    link: Option<Link>,
    pending: VecDeque<Op>,
    /// The sentinel to ask first (the one that answered last).
    preferred: usize,
    /// No round starts before this (see [`Sentinel::ask`]).
    earliest: u64,
    /// Failed rounds in a row, for the backoff.
    fails: u32,
    /// What each sentinel of this round said when it named no primary.
    misses: Vec<(usize, Miss)>,
    /// Sentinels logged as failing.
    failing: Vec<bool>,
    /// The failed-round line last logged (`None`: last round found it).
    logged: Option<RoundLog>,
    outcome: Option<Outcome>,
    watch: Option<Watch>,
    /// A watch failure was logged and no subscription worked since.
    watch_failing: bool,
    /// The primary named last.
    last: Option<Address>,
    /// [`Sentinel::ask`] was called since the last answered round.
    doubted: bool,
    /// Answered rounds in a row that named the doubted primary again.
    same: u32,
    rng: u64,
    stats: Stats,
}

impl Sentinel {
    /// A sentinel client: the questions under `token`, the
    /// `+switch-master` subscription under `token + 1`; the first round
    /// starts now.
    pub fn new(mut cfg: Config, token: u64, poller: &Poller, now: u64) -> Sentinel {
        let given = cfg.sentinels.len();
        cfg.sentinels.truncate(MAX_SENTINELS);
        cfg.retry_ms = cfg.retry_ms.max(1);
        let n = cfg.sentinels.len();
        let mut s = Sentinel {
            cfg,
            token,
            state: State::Idle { next_at: now },
            link: None,
            pending: VecDeque::new(),
            preferred: 0,
            earliest: now,
            fails: 0,
            misses: Vec::new(),
            failing: vec![false; n],
            logged: None,
            outcome: None,
            watch: None,
            watch_failing: false,
            last: None,
            doubted: false,
            same: 0,
            rng: redis::jitter_seed(token.rotate_left(17)),
            stats: Stats::default(),
        };
        if given > MAX_SENTINELS {
            let name = s.cfg.master.clone();
            s.log(format_args!(
                "{given} sentinels given for master {name}: asking the first {MAX_SENTINELS} only"
            ));
        }
        s.start_round(poller, now);
        s
    }

    /// The master name asked about.
    pub fn master(&self) -> &str {
        &self.cfg.master
    }

    /// The poller token of the sentinel connection.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// A round is under way.
    pub fn asking(&self) -> bool {
        matches!(self.state, State::Asking { .. })
    }

    /// Whether an event with `t` is this client's (`token`, `token + 1`).
    pub fn owns(&self, t: u64) -> bool {
        t == self.token || t == self.watch_token()
    }

    fn watch_token(&self) -> u64 {
        self.token.wrapping_add(1)
    }

    /// The `+switch-master` subscription is confirmed.
    pub fn watching(&self) -> bool {
        self.watch.as_ref().is_some_and(|w| w.subscribed)
    }

    /// The question's descriptor registered with the poller, while there
    /// is one.
    pub fn fd(&self) -> Option<RawFd> {
        self.link.as_ref().map(|l| l.stream().as_raw_fd())
    }

    /// The events registered for [`Sentinel::fd`] (0 without one).
    pub fn interest(&self) -> u32 {
        self.link.as_ref().map_or(0, |l| l.interest())
    }

    /// What the last round found, once; `None` while nothing new.
    pub fn take_outcome(&mut self) -> Option<Outcome> {
        self.outcome.take()
    }

    /// Ask again soon: the next round starts as early as the spacing
    /// ([`Config::retry_ms`]) or the backoff after failed rounds allow.
    /// Cheap; call it as often as the primary seems wrong.
    pub fn ask(&mut self, now: u64) {
        self.doubted = true;
        if let State::Idle { next_at } = self.state {
            self.state = State::Idle {
                next_at: next_at.min(self.earliest.max(now)),
            };
        }
    }

    /// When [`Sentinel::tick`] next has something to do.
    pub fn next_wake(&self) -> Option<u64> {
        let t = match self.state {
            State::Idle { next_at } => next_at,
            State::Asking { deadline, .. } => deadline,
        };
        Some(match self.watch.as_ref().and_then(|w| w.deadline) {
            Some(w) => t.min(w),
            None => t,
        })
    }

    /// Timeouts and rounds due at `now`.
    pub fn tick(&mut self, poller: &Poller, now: u64) {
        match self.state {
            State::Idle { next_at } if now >= next_at => self.start_round(poller, now),
            State::Asking { deadline, .. } if now >= deadline => {
                let why = if self.link.as_ref().is_some_and(|l| l.connecting()) {
                    format!("no connection within {} ms", self.cfg.connect_timeout_ms)
                } else {
                    format!("no answer within {} ms", self.cfg.reply_timeout_ms)
                };
                self.passed_over(poller, now, Miss::Error(why));
            }
            _ => {}
        }
        if let Some(w) = self.watch.as_ref() {
            if w.deadline.is_some_and(|d| now >= d) {
                let why = if w.link.connecting() {
                    format!("no connection within {} ms", self.cfg.connect_timeout_ms)
                } else {
                    format!("no answer within {} ms", self.cfg.reply_timeout_ms)
                };
                self.watch_lost(poller, &why);
            }
        }
    }

    /// A readiness event for one of this client's tokens.
    pub fn on_event(&mut self, poller: &Poller, ev: &Event, now: u64) {
        if ev.token == self.watch_token() {
            self.watch_event(poller, ev);
            return;
        }
        let Some(link) = self.link.as_mut() else {
            return;
        };
        if link.connecting() {
            match link.connect_event(ev) {
                Ok(false) => return,
                Ok(true) => self.connected(now),
                Err(e) => {
                    self.passed_over(poller, now, Miss::Error(format!("cannot connect: {e}")));
                    return;
                }
            }
        }
        if ev.writable() && !self.flush(poller, now) {
            return;
        }
        if ev.readable() {
            self.read(poller, now);
        }
    }

    fn log(&mut self, msg: fmt::Arguments<'_>) {
        self.stats.log_lines += 1;
        log::line(format_args!("sentinel: {msg}"));
    }

    fn start_round(&mut self, poller: &Poller, now: u64) {
        self.stats.rounds += 1;
        self.misses.clear();
        let first = self.preferred;
        self.ask_from(poller, now, first, 0);
    }

    /// Ask sentinel `idx`, the `tried`-th of the round, or the next ones
    /// when connecting fails at once; the round ends when all were tried.
    fn ask_from(&mut self, poller: &Poller, now: u64, mut idx: usize, mut tried: usize) {
        let n = self.cfg.sentinels.len();
        while tried < n {
            idx %= n;
            self.stats.asked += 1;
            match self.connect(poller, now, idx, tried) {
                Ok(()) => return,
                Err(why) => {
                    self.misses.push((idx, Miss::Error(why)));
                    idx += 1;
                    tried += 1;
                }
            }
        }
        self.round_failed(now);
    }

    /// Open a connection to sentinel `idx` and queue the question.
    fn connect(
        &mut self,
        poller: &Poller,
        now: u64,
        idx: usize,
        tried: usize,
    ) -> Result<(), String> {
        let addr = &self.cfg.sentinels[idx];
        let mut link = Link::connect(addr, self.token, Direction::Responses, poller)
            .map_err(|e| format!("cannot connect: {e}"))?;
        self.pending.clear();
        if let Some(pw) = &self.cfg.password {
            write_auth(link.out(), self.cfg.user.as_deref(), pw)
                .map_err(|()| "cannot encode AUTH".to_string())?;
            self.pending.push_back(Op::Auth);
        }
        write_cmd(
            link.out(),
            &[
                b"SENTINEL",
                b"get-master-addr-by-name",
                self.cfg.master.as_bytes(),
            ],
        )
        .map_err(|()| "cannot encode the question".to_string())?;
        self.pending.push_back(Op::Query);
        let connecting = link.connecting();
        self.link = Some(link);
        self.state = State::Asking {
            idx,
            tried,
            deadline: now.saturating_add(self.cfg.connect_timeout_ms),
        };
        if !connecting {
            self.connected(now);
            if !self.flush(poller, now) {
                // Already passed over to the next sentinel.
                return Ok(());
            }
        }
        Ok(())
    }

    /// The connect is done: the answer is due within the reply bound.
    fn connected(&mut self, now: u64) {
        if let State::Asking { idx, tried, .. } = self.state {
            self.state = State::Asking {
                idx,
                tried,
                deadline: now.saturating_add(self.cfg.reply_timeout_ms),
            };
        }
    }

    /// Write what the socket takes; false if the sentinel was passed over.
    fn flush(&mut self, poller: &Poller, now: u64) -> bool {
        let Some(link) = self.link.as_mut() else {
            return false;
        };
        if let Err(why) = redis::push(link, poller) {
            self.passed_over(poller, now, Miss::Error(why));
            return false;
        }
        true
    }

    fn read(&mut self, poller: &Poller, now: u64) {
        let Some(link) = self.link.as_mut() else {
            return;
        };
        let mut frames = Vec::new();
        let res = read_frames(link, &mut frames);
        for frame in frames {
            if !self.reply(poller, now, frame) {
                return;
            }
        }
        match res {
            Ok(false) => {}
            Ok(true) => {
                let why = "closed the connection without an answer".to_string();
                self.passed_over(poller, now, Miss::Error(why));
            }
            Err(why) => self.passed_over(poller, now, Miss::Error(why)),
        }
    }

    /// One reply; false once the connection is gone.
    fn reply(&mut self, poller: &Poller, now: u64, frame: OwnedFrame) -> bool {
        match (self.pending.pop_front(), frame) {
            (Some(Op::Auth), OwnedFrame::SimpleString(_)) => true,
            (Some(Op::Auth), OwnedFrame::Error(e)) => {
                let why = auth_refused(self.cfg.user.as_deref(), &e);
                self.passed_over(poller, now, Miss::Error(why));
                false
            }
            (Some(Op::Query), f) => {
                match primary_of(f) {
                    Ok(addr) => self.found(poller, now, addr),
                    Err(miss) => self.passed_over(poller, now, miss),
                }
                false
            }
            (op, f) => {
                let why = format!("a {:?} reply to {op:?}", f.kind());
                self.passed_over(poller, now, Miss::Error(why));
                false
            }
        }
    }

    fn close(&mut self, poller: &Poller) {
        if let Some(mut l) = self.link.take() {
            l.deregister(poller);
        }
        self.pending.clear();
    }

    /// The sentinel being asked named no primary: ask the next one.
    fn passed_over(&mut self, poller: &Poller, now: u64, miss: Miss) {
        self.close(poller);
        let State::Asking { idx, tried, .. } = self.state else {
            return;
        };
        self.misses.push((idx, miss));
        self.ask_from(poller, now, idx + 1, tried + 1);
    }

    fn found(&mut self, poller: &Poller, now: u64, addr: Address) {
        self.close(poller);
        let State::Asking { idx, .. } = self.state else {
            return;
        };
        let name = self.cfg.master.clone();
        let by = host_port(&self.cfg.sentinels[idx]);
        if self.logged.take().is_some() {
            self.log(format_args!(
                "the sentinels answer again for master {name} ({by})"
            ));
            self.failing.iter_mut().for_each(|f| *f = false);
        } else if self.failing[idx] {
            self.log(format_args!("{by} answers again for master {name}"));
            self.failing[idx] = false;
        }
        let misses = std::mem::take(&mut self.misses);
        for (i, miss) in &misses {
            if !self.failing[*i] {
                self.failing[*i] = true;
                let who = host_port(&self.cfg.sentinels[*i]);
                self.log(format_args!(
                    "{who} did not name the primary of master {name} ({}); {by} did",
                    miss_text(miss, &name)
                ));
            }
        }
        self.keep_watching(poller, now, idx);
        // The owner doubts the primary this sentinel names again: the next
        // round asks the next sentinel first (one may be stale), and the
        // rounds space out, up to [`SAME_SPACING_MAX_MS`].
        let spacing = if self.doubted && self.last.as_ref() == Some(&addr) {
            self.same = self.same.saturating_add(1);
            self.preferred = (idx + 1) % self.cfg.sentinels.len();
            self.cfg
                .retry_ms
                .saturating_mul(1u64 << self.same.min(16))
                .min(SAME_SPACING_MAX_MS.max(self.cfg.retry_ms))
        } else {
            self.same = 0;
            self.preferred = idx;
            self.cfg.retry_ms
        };
        self.doubted = false;
        self.last = Some(addr.clone());
        self.fails = 0;
        self.earliest = now.saturating_add(spacing);
        self.state = State::Idle {
            next_at: now.saturating_add(self.cfg.refresh_ms.max(self.cfg.retry_ms)),
        };
        self.outcome = Some(Outcome::Primary(addr));
    }

    fn round_failed(&mut self, now: u64) {
        self.stats.failed_rounds += 1;
        let delay = self.backoff();
        let name = self.cfg.master.clone();
        let unknown =
            !self.misses.is_empty() && self.misses.iter().all(|(_, m)| matches!(m, Miss::Unknown));
        let kind = if unknown {
            RoundLog::Unknown
        } else {
            RoundLog::Failing
        };
        if self.logged != Some(kind) {
            self.logged = Some(kind);
            let n = self.cfg.sentinels.len();
            let retry = self.cfg.retry_ms;
            if unknown {
                self.log(format_args!(
                    "none of the {n} sentinels knows a master named {name} \
                     (SENTINEL get-master-addr-by-name answered null: check the name); \
                     asking again with backoff ({retry} ms to {BACKOFF_MAX_MS} ms)"
                ));
            } else {
                let detail = if n == 0 {
                    "no sentinel is configured".to_string()
                } else {
                    self.misses
                        .iter()
                        .map(|(i, m)| {
                            format!(
                                "{}: {}",
                                host_port(&self.cfg.sentinels[*i]),
                                miss_text(m, &name)
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("; ")
                };
                self.log(format_args!(
                    "no sentinel of {n} named the primary of master {name} ({detail}); \
                     asking again with backoff ({retry} ms to {BACKOFF_MAX_MS} ms)"
                ));
            }
            self.failing.iter_mut().for_each(|f| *f = true);
        }
        self.misses.clear();
        self.earliest = now.saturating_add(delay);
        self.state = State::Idle {
            next_at: self.earliest,
        };
        self.outcome = Some(Outcome::Failed);
    }

    /// After sentinel `idx` answered: subscribe there, or check that the
    /// subscription there still answers (PING).
    fn keep_watching(&mut self, poller: &Poller, now: u64, idx: usize) {
        if !self.cfg.watch {
            return;
        }
        let reply_by = now.saturating_add(self.cfg.reply_timeout_ms);
        match self.watch.as_mut() {
            Some(w) if w.idx == idx => {
                if w.subscribed && w.pending.is_empty() {
                    if write_cmd(w.link.out(), &[b"PING"]).is_err() {
                        return;
                    }
                    w.pending.push_back(WatchOp::Ping);
                    w.deadline = Some(reply_by);
                    self.watch_flush(poller);
                }
                return;
            }
            Some(_) => self.watch_close(poller),
            None => {}
        }
        let addr = &self.cfg.sentinels[idx];
        let mut link = match Link::connect(addr, self.watch_token(), Direction::Responses, poller) {
            Ok(l) => l,
            Err(e) => {
                self.watch_failed(&format!("cannot connect: {e}"), idx);
                return;
            }
        };
        let mut pending = VecDeque::new();
        let mut ok = true;
        if let Some(pw) = &self.cfg.password {
            ok &= write_auth(link.out(), self.cfg.user.as_deref(), pw).is_ok();
            pending.push_back(WatchOp::Auth);
        }
        ok &= write_cmd(link.out(), &[b"SUBSCRIBE", b"+switch-master"]).is_ok();
        pending.push_back(WatchOp::Subscribe);
        if !ok {
            link.deregister(poller);
            return;
        }
        let connecting = link.connecting();
        let deadline = now
            .saturating_add(self.cfg.connect_timeout_ms)
            .saturating_add(self.cfg.reply_timeout_ms);
        self.watch = Some(Watch {
            link,
            idx,
            pending,
            deadline: Some(deadline),
            subscribed: false,
        });
        if !connecting {
            self.watch_flush(poller);
        }
    }

    fn watch_event(&mut self, poller: &Poller, ev: &Event) {
        let Some(w) = self.watch.as_mut() else {
            return;
        };
        if w.link.connecting() {
            match w.link.connect_event(ev) {
                Ok(false) => return,
                Ok(true) => {}
                Err(e) => {
                    self.watch_lost(poller, &format!("cannot connect: {e}"));
                    return;
                }
            }
        }
        if ev.writable() && !self.watch_flush(poller) {
            return;
        }
        if !ev.readable() {
            return;
        }
        let Some(w) = self.watch.as_mut() else {
            return;
        };
        let mut frames = Vec::new();
        let res = read_frames(&mut w.link, &mut frames);
        for frame in frames {
            if !self.watch_frame(poller, frame) {
                return;
            }
        }
        match res {
            Ok(false) => {}
            Ok(true) => self.watch_lost(poller, "the sentinel closed the connection"),
            Err(why) => self.watch_lost(poller, &why),
        }
    }

    /// One frame on the watch; false once it is gone.
    fn watch_frame(&mut self, poller: &Poller, frame: OwnedFrame) -> bool {
        let Some(w) = self.watch.as_mut() else {
            return false;
        };
        let head = match &frame {
            OwnedFrame::Array(items) => match items.first() {
                Some(OwnedFrame::BulkString(h) | OwnedFrame::SimpleString(h)) => {
                    Some(h.to_ascii_lowercase())
                }
                _ => None,
            },
            _ => None,
        };
        let expected = w.pending.front().copied();
        match (expected, head.as_deref(), frame) {
            (_, Some(b"message"), OwnedFrame::Array(items)) => {
                self.switch_message(&items);
            }
            (Some(WatchOp::Auth), _, OwnedFrame::SimpleString(_)) => {
                w.pending.pop_front();
            }
            (Some(WatchOp::Subscribe), Some(b"subscribe"), _) => {
                w.pending.pop_front();
                w.subscribed = true;
                w.deadline = None;
                self.stats.watches += 1;
                if std::mem::take(&mut self.watch_failing) {
                    let who = host_port(&self.cfg.sentinels[w.idx]);
                    let name = self.cfg.master.clone();
                    self.log(format_args!(
                        "watching +switch-master on {who} for master {name} again"
                    ));
                }
            }
            (Some(WatchOp::Ping), Some(b"pong"), _) => {
                w.pending.pop_front();
                w.deadline = None;
                self.stats.watch_pongs += 1;
            }
            (_, _, OwnedFrame::Error(e)) => {
                let why = match expected {
                    Some(WatchOp::Auth) => auth_refused(self.cfg.user.as_deref(), &e),
                    _ => format!("answered {e}"),
                };
                self.watch_lost(poller, &why);
                return false;
            }
            (op, _, f) => {
                let why = format!("a {:?} reply to {op:?}", f.kind());
                self.watch_lost(poller, &why);
                return false;
            }
        }
        true
    }

    /// A `+switch-master` message: `NAME old-ip old-port new-ip new-port`.
    fn switch_message(&mut self, items: &[OwnedFrame]) {
        let (Some(OwnedFrame::BulkString(chan)), Some(OwnedFrame::BulkString(text))) =
            (items.get(1), items.get(2))
        else {
            return;
        };
        if chan != b"+switch-master" {
            return;
        }
        let text = String::from_utf8_lossy(text);
        let words: Vec<&str> = text.split_whitespace().collect();
        let [name, _, _, ip, port] = words[..] else {
            return;
        };
        if name != self.cfg.master {
            return;
        }
        let bulk = |s: &str| OwnedFrame::BulkString(s.as_bytes().to_vec());
        if let Ok(addr) = primary_of(OwnedFrame::Array(vec![bulk(ip), bulk(port)])) {
            self.stats.switches += 1;
            self.outcome = Some(Outcome::Primary(addr));
        }
    }

    /// Write what the watch socket takes; false if the watch was lost.
    fn watch_flush(&mut self, poller: &Poller) -> bool {
        let Some(w) = self.watch.as_mut() else {
            return false;
        };
        if let Err(why) = redis::push(&mut w.link, poller) {
            self.watch_lost(poller, &why);
            return false;
        }
        true
    }

    fn watch_close(&mut self, poller: &Poller) {
        if let Some(mut w) = self.watch.take() {
            w.link.deregister(poller);
        }
    }

    /// The watch failed: closed, one line per change; the next answered
    /// round opens it again.
    fn watch_lost(&mut self, poller: &Poller, why: &str) {
        let idx = self.watch.as_ref().map_or(0, |w| w.idx);
        self.watch_close(poller);
        self.watch_failed(why, idx);
    }

    fn watch_failed(&mut self, why: &str, idx: usize) {
        self.stats.watch_failures += 1;
        if std::mem::replace(&mut self.watch_failing, true) {
            return;
        }
        let who = host_port(&self.cfg.sentinels[idx]);
        let name = self.cfg.master.clone();
        let every = self.cfg.refresh_ms;
        self.log(format_args!(
            "cannot watch +switch-master on {who} for master {name} ({why}); \
             asking every {every} ms meanwhile"
        ));
    }

    /// The delay after a failed round: doubling from [`Config::retry_ms`]
    /// up to [`BACKOFF_MAX_MS`], with jitter.
    fn backoff(&mut self) -> u64 {
        let max = BACKOFF_MAX_MS.max(self.cfg.retry_ms);
        let d = redis::backoff_delay(&mut self.rng, self.cfg.retry_ms, max, self.fails);
        self.fails = self.fails.saturating_add(1);
        d
    }
}

/// Chunks read per readiness event, at most (a flooding sentinel waits
/// for the next turn of the loop).
const READ_CHUNKS: usize = 16;

/// Read what `link` has (at most [`READ_CHUNKS`] of 1 KiB) and decode the
/// whole frames onto `frames`: `Ok(true)` at the end of the stream; `Err`
/// says why to drop the connection (garbage, more than [`MAX_REPLY`]
/// bytes undecoded, a read error). The frames come first either way.
fn read_frames(link: &mut Link, frames: &mut Vec<OwnedFrame>) -> Result<bool, String> {
    let mut scratch = [0u8; 1024];
    for _ in 0..READ_CHUNKS {
        let got = link
            .read_once(&mut scratch)
            .map_err(|e| format!("read: {e}"))?;
        if got.eof {
            return Ok(true);
        }
        if got.n == 0 {
            break;
        }
        link.keep(&scratch[..got.n]);
        while let Some((f, used)) =
            decode(&link.inbuf).map_err(|e| format!("protocol error: {}", e.details()))?
        {
            link.consumed(used);
            frames.push(f);
        }
        if link.inbuf.len() > MAX_REPLY {
            return Err(format!("a reply longer than {MAX_REPLY} bytes"));
        }
    }
    Ok(false)
}

fn auth_refused(user: Option<&str>, e: &str) -> String {
    format!("AUTH as user {} refused: {e}", user.unwrap_or("default"))
}

fn miss_text(m: &Miss, master: &str) -> String {
    match m {
        Miss::Unknown => format!("does not know a master named {master}"),
        Miss::Error(e) => e.clone(),
    }
}

/// An address as `host:port` (`[v6]:port`), for log lines.
pub fn host_port(a: &Address) -> String {
    match a {
        Address::Ip { addr, .. } => addr.to_string(),
        other => other.to_string(),
    }
}

/// The primary named by an answer to `SENTINEL get-master-addr-by-name`:
/// an array of host and port, or null for an unknown name.
fn primary_of(f: OwnedFrame) -> Result<Address, Miss> {
    let items = match f {
        OwnedFrame::Null => return Err(Miss::Unknown),
        OwnedFrame::Array(items) if items.is_empty() => return Err(Miss::Unknown),
        OwnedFrame::Array(items) => items,
        OwnedFrame::Error(e) => return Err(Miss::Error(format!("answered {e}"))),
        other => {
            let why = format!("a {:?} answer, not an address", other.kind());
            return Err(Miss::Error(why));
        }
    };
    let text = |f: &OwnedFrame| match f {
        OwnedFrame::BulkString(b) | OwnedFrame::SimpleString(b) => {
            std::str::from_utf8(b).ok().map(str::to_string)
        }
        _ => None,
    };
    let (Some(host), Some(port), 2) = (
        items.first().and_then(text),
        items.get(1).and_then(text),
        items.len(),
    ) else {
        return Err(Miss::Error("an answer that is not host and port".into()));
    };
    let Ok(ip) = host.parse::<IpAddr>() else {
        let shown: String = host.chars().take(64).collect();
        return Err(Miss::Error(format!(
            "names host '{shown}', not an IP address (host names are not looked up: \
             set the sentinels' announce-hostnames to no)"
        )));
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(Address::Ip {
            addr: SocketAddr::new(ip, p),
            listen_only: false,
        }),
        _ => Err(Miss::Error(format!("names port '{port}'"))),
    }
}

// ------------------------------------------------------------ the store

/// A [`RedisConn`] to the primary a [`Sentinel`] names, followed across
/// fail-overs (or, made with [`Store::direct`], to one fixed server: the
/// owner then holds one type for `redis://` and `redis-sentinel://`).
/// See the module documentation.
#[derive(Debug)]
pub struct Store {
    sentinel: Option<Sentinel>,
    redis: Option<RedisConn>,
    rcfg: redis::Config,
    redis_token: u64,
}

impl Store {
    /// Discovery through `scfg` under `sentinel_token` (and
    /// `sentinel_token + 1`, see [`Sentinel::new`]); the connection to
    /// the primary, made with `rcfg` (whose `addr` is replaced by the
    /// primary's, and `check_role` set), under `redis_token`.
    pub fn new(
        scfg: Config,
        mut rcfg: redis::Config,
        sentinel_token: u64,
        redis_token: u64,
        poller: &Poller,
        now: u64,
    ) -> Store {
        rcfg.check_role = true;
        let mut st = Store {
            sentinel: Some(Sentinel::new(scfg, sentinel_token, poller, now)),
            redis: None,
            rcfg,
            redis_token,
        };
        st.follow(poller, now, &mut Vec::new());
        st
    }

    /// A store on the one server `rcfg.addr` (`redis://`), under `token`:
    /// no sentinel, [`Store::owns`] only `token`.
    pub fn direct(rcfg: redis::Config, token: u64, poller: &Poller, now: u64) -> Store {
        Store {
            sentinel: None,
            redis: Some(RedisConn::new(rcfg.clone(), token, poller, now)),
            rcfg,
            redis_token: token,
        }
    }

    /// Whether an event with `token` is this store's.
    pub fn owns(&self, token: u64) -> bool {
        token == self.redis_token || self.sentinel.as_ref().is_some_and(|s| s.owns(token))
    }

    /// The primary's connection is up.
    pub fn is_up(&self) -> bool {
        self.redis.as_ref().is_some_and(RedisConn::is_up)
    }

    /// The primary in use (none until the sentinels first name one).
    pub fn primary(&self) -> Option<&Address> {
        self.redis.as_ref().map(RedisConn::addr)
    }

    /// The connection to the primary, once there is one.
    pub fn redis(&self) -> Option<&RedisConn> {
        self.redis.as_ref()
    }

    /// The sentinel client (none for [`Store::direct`]).
    pub fn sentinel(&self) -> Option<&Sentinel> {
        self.sentinel.as_ref()
    }

    /// As [`RedisConn::submit`]; [`Failure::Down`] until a primary is known.
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

    /// As [`RedisConn::submit_under`]; [`Failure::Down`] until a primary
    /// is known.
    pub fn submit_under(
        &mut self,
        poller: &Poller,
        prefix: Option<&[u8]>,
        req: Request<'_>,
        token: u64,
        now: u64,
        out: &mut Vec<Completion>,
    ) -> Result<(), Failure> {
        match self.redis.as_mut() {
            Some(rc) => rc.submit_under(poller, prefix, req, token, now, out),
            None => Err(Failure::Down),
        }
    }

    /// As [`RedisConn::send_queued`]: once per loop turn, after the last
    /// submit.
    pub fn send_queued(&mut self, poller: &Poller, now: u64, out: &mut Vec<Completion>) {
        if let Some(rc) = self.redis.as_mut() {
            rc.send_queued(poller, now, out);
        }
    }

    /// A readiness event for one of this store's tokens.
    pub fn on_event(&mut self, poller: &Poller, ev: &Event, now: u64, out: &mut Vec<Completion>) {
        if let Some(s) = self.sentinel.as_mut().filter(|s| s.owns(ev.token)) {
            s.on_event(poller, ev, now);
        } else if let Some(rc) = self.redis.as_mut().filter(|_| ev.token == self.redis_token) {
            rc.on_event(poller, ev, now, out);
        }
        self.follow(poller, now, out);
    }

    /// Deadlines, timeouts, reconnects and rounds due at `now`.
    pub fn tick(&mut self, poller: &Poller, now: u64, out: &mut Vec<Completion>) {
        if let Some(s) = self.sentinel.as_mut() {
            s.tick(poller, now);
        }
        if let Some(rc) = self.redis.as_mut() {
            rc.tick(poller, now, out);
        }
        self.follow(poller, now, out);
    }

    /// When [`Store::tick`] next has something to do.
    pub fn next_wake(&self) -> Option<u64> {
        let r = self.redis.as_ref().and_then(RedisConn::next_wake);
        match (self.sentinel.as_ref().and_then(Sentinel::next_wake), r) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Ask the sentinels while the primary seems wrong; follow what they say.
    fn follow(&mut self, poller: &Poller, now: u64, out: &mut Vec<Completion>) {
        let Some(sentinel) = self.sentinel.as_mut() else {
            return;
        };
        if let Some(Outcome::Primary(addr)) = sentinel.take_outcome() {
            let was = match self.redis.as_mut() {
                None => {
                    let mut cfg = self.rcfg.clone();
                    cfg.addr = addr.clone();
                    self.redis = Some(RedisConn::new(cfg, self.redis_token, poller, now));
                    Some("none".to_string())
                }
                Some(rc) => {
                    let old = host_port(rc.addr());
                    rc.set_addr(poller, addr.clone(), now, out).then_some(old)
                }
            };
            if let Some(was) = was {
                log::line(format_args!(
                    "sentinel: primary of {} is now {} (was {was})",
                    sentinel.master(),
                    host_port(&addr)
                ));
            }
        }
        // In doubt (after taking the answer, which may have settled it):
        // rediscovery asked (READONLY, lost, failed attempt), or down
        // between attempts (not while a connect is under way).
        let doubt = match self.redis.as_mut() {
            Some(rc) => rc.take_rediscovery() || rc.fd().is_none(),
            None => true,
        };
        if doubt {
            sentinel.ask(now);
        }
    }
}

// ------------------------------------------------------------ addresses

/// A parsed `redis-sentinel://` (or `rediss-sentinel://`) address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentinelUrl {
    /// `rediss-sentinel://`: TLS to the sentinels and the nodes.
    pub tls: bool,
    /// The sentinels as written: host (without IPv6 brackets) and port
    /// ([`DEFAULT_PORT`] when none is given); 1 to [`MAX_SENTINELS`].
    pub sentinels: Vec<(String, u16)>,
    /// The master name.
    pub master: String,
    /// `user[:password]@` or `:password@` before the hosts (the owner
    /// warns that a password shows in the process list).
    pub user: Option<String>,
    pub password: Option<Secret>,
}

/// The schemes, lowercase.
const SCHEME: &str = "redis-sentinel://";
const SCHEME_TLS: &str = "rediss-sentinel://";

/// Parse `redis-sentinel://[user[:password]@]host:port[,host:port...]/MASTERNAME`
/// (or `rediss-sentinel://`). Pure: no name is looked up
/// ([`SentinelUrl::resolve`] does that).
pub fn parse_url(s: &str) -> Result<SentinelUrl, String> {
    let bad = |why: &str| Err(url_message(s, why));
    let scheme = |p: &str| s.get(..p.len()).is_some_and(|h| h.eq_ignore_ascii_case(p));
    let (tls, rest) = if scheme(SCHEME_TLS) {
        (true, &s[SCHEME_TLS.len()..])
    } else if scheme(SCHEME) {
        (false, &s[SCHEME.len()..])
    } else {
        return bad("not a redis-sentinel:// or rediss-sentinel:// address");
    };
    let Some((authority, master)) = rest.split_once('/') else {
        return bad("no /MASTERNAME after the sentinels");
    };
    if master.is_empty() {
        return bad("empty master name");
    }
    if master.len() > MAX_MASTER_NAME {
        return bad(&format!("master name longer than {MAX_MASTER_NAME}"));
    }
    if !master
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
    {
        return bad("the master name may hold letters, digits and - _ . : only");
    }
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    // As redis:// addresses (crate::store): `user@` alone is a user whose
    // password comes from a file; no %-escapes.
    let (user, password) = match userinfo {
        None => (None, None),
        Some(u) => {
            let (name, pw) = match u.split_once(':') {
                Some((n, p)) => (n, Some(p)),
                None => (u, None),
            };
            if pw.is_some_and(str::is_empty) {
                return bad("empty password");
            }
            if name.is_empty() && pw.is_none() {
                return bad("empty user");
            }
            (
                (!name.is_empty()).then(|| name.to_string()),
                pw.map(|p| Secret(p.as_bytes().to_vec())),
            )
        }
    };
    if hosts.is_empty() {
        return bad("no sentinel host");
    }
    let mut sentinels = Vec::new();
    for part in hosts.split(',') {
        if sentinels.len() == MAX_SENTINELS {
            return bad(&format!("more than {MAX_SENTINELS} sentinels"));
        }
        sentinels.push(host_and_port(part).map_err(|why| url_message(s, &why))?);
    }
    Ok(SentinelUrl {
        tls,
        sentinels,
        master: master.to_string(),
        user,
        password,
    })
}

impl SentinelUrl {
    /// The sentinels' addresses (host names looked up now: at start-up,
    /// never in the loop).
    pub fn resolve(&self) -> Result<Vec<Address>, String> {
        self.sentinels
            .iter()
            .map(|(h, p)| {
                let form = if h.contains(':') {
                    format!("IPv6:[{h}]:{p}")
                } else {
                    format!("IP:{h}:{p}")
                };
                Address::parse(&form).map_err(|e| format!("sentinel {h}:{p}: {e}"))
            })
            .collect()
    }
}

/// One `host[:port]` or `[v6][:port]` of the list.
fn host_and_port(part: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = part.strip_prefix('[') {
        let Some((h, after)) = rest.split_once(']') else {
            return Err(format!("'{part}': no ] after the IPv6 address"));
        };
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("'{part}': not an IPv6 address"));
        }
        match after {
            "" => (h, None),
            _ => match after.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None => return Err(format!("'{part}': junk after ]")),
            },
        }
    } else {
        match part.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (part, None),
        }
    };
    if host.is_empty() {
        return Err("an empty sentinel host".into());
    }
    if host.contains(|c: char| c.is_whitespace() || "[]/@,?#:".contains(c))
        && !part.starts_with('[')
    {
        return Err(format!("'{part}': bad host"));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(format!("'{part}': port must be a number in 1..65535")),
        },
    };
    Ok((host.to_string(), port))
}

/// The error text for address `s` (its password never shown, its length
/// bounded).
fn url_message(s: &str, why: &str) -> String {
    let shown = match (s.find("://"), s.rfind('@')) {
        (Some(a), Some(b)) if b > a => format!("{}://...{}", &s[..a], &s[b..]),
        _ => s.to_string(),
    };
    let shown: String = shown.chars().take(200).collect();
    format!("bad address '{shown}': {why}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> SentinelUrl {
        parse_url(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn err(s: &str) -> String {
        parse_url(s).expect_err(s)
    }

    #[test]
    fn sentinel_urls() {
        let u = ok("redis-sentinel://10.0.0.1:26379,10.0.0.2:26380/mymaster");
        assert!(!u.tls);
        assert_eq!(
            u.sentinels,
            vec![("10.0.0.1".into(), 26379), ("10.0.0.2".into(), 26380)]
        );
        assert_eq!(u.master, "mymaster");
        assert_eq!((u.user, u.password), (None, None));

        let u = ok("REDISS-SENTINEL://s1.example:1,[::1]:2,[fe80::1],s4/m-1.x_y");
        assert!(u.tls);
        assert_eq!(
            u.sentinels,
            vec![
                ("s1.example".into(), 1),
                ("::1".into(), 2),
                ("fe80::1".into(), DEFAULT_PORT),
                ("s4".into(), DEFAULT_PORT)
            ]
        );
        assert_eq!(u.master, "m-1.x_y");

        let u = ok("redis-sentinel://alice:p@ss:w@h:1/m");
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!(u.password, Some(Secret(b"p@ss:w".to_vec())));
        let u = ok("redis-sentinel://alice@h:1/m");
        assert_eq!((u.user.as_deref(), u.password), (Some("alice"), None));
        let u = ok("redis-sentinel://:pw@h:1/m");
        assert_eq!((u.user, u.password), (None, Some(Secret(b"pw".to_vec()))));

        let many: Vec<String> = (1..=MAX_SENTINELS).map(|i| format!("h{i}:1")).collect();
        let u = ok(&format!("redis-sentinel://{}/m", many.join(",")));
        assert_eq!(u.sentinels.len(), MAX_SENTINELS);
    }

    #[test]
    fn bad_sentinel_urls_say_why() {
        let cases = [
            ("redis://h:1/m", "not a redis-sentinel"),
            ("redis-sentinel://h:1", "no /MASTERNAME"),
            ("redis-sentinel://h:1/", "empty master name"),
            ("redis-sentinel://h:1/a/b", "master name may hold"),
            ("redis-sentinel://h:1/a b", "master name may hold"),
            ("redis-sentinel:///m", "no sentinel host"),
            ("redis-sentinel://h:1,,h:2/m", "empty sentinel host"),
            ("redis-sentinel://h:0/m", "port must be"),
            ("redis-sentinel://h:99999/m", "port must be"),
            ("redis-sentinel://h:+1/m", "port must be"),
            ("redis-sentinel://h:/m", "port must be"),
            ("redis-sentinel://[::1/m", "no ]"),
            ("redis-sentinel://[zz]:1/m", "not an IPv6"),
            ("redis-sentinel://[::1]x/m", "junk after"),
            ("redis-sentinel://@h:1/m", "empty user"),
            ("redis-sentinel://alice:@h:1/m", "empty password"),
        ];
        for (s, why) in cases {
            let e = err(s);
            assert!(e.contains(why), "{s}: {e}");
            assert!(e.starts_with("bad address '"), "{e}");
        }
        let long = "x".repeat(MAX_MASTER_NAME + 1);
        assert!(err(&format!("redis-sentinel://h:1/{long}")).contains("longer than"));
        let many: Vec<String> = (0..=MAX_SENTINELS).map(|i| format!("h{i}:1")).collect();
        assert!(err(&format!("redis-sentinel://{}/m", many.join(","))).contains("more than 16"));
        // The password never shows in an error.
        let e = err("redis-sentinel://alice:s3cret@h:0/m");
        assert!(!e.contains("s3cret"), "{e}");
    }

    #[test]
    fn resolved_addresses() {
        let u = ok("redis-sentinel://127.0.0.1:5,[::1]:6/m");
        let a = u.resolve().unwrap();
        assert_eq!(host_port(&a[0]), "127.0.0.1:5");
        assert_eq!(host_port(&a[1]), "[::1]:6");
    }

    #[test]
    fn at_most_16_sentinels_are_asked_and_a_round_of_failures_ends() {
        let poller = Poller::new().unwrap();
        let dir = std::env::temp_dir().join(format!("dcrs-sentinel-{}", std::process::id()));
        // UNIX paths where nothing listens: each connect fails at once.
        let list = (0..MAX_SENTINELS + 4)
            .map(|i| Address::Unix(dir.join(format!("none-{i}"))))
            .collect();
        let mut s = Sentinel::new(Config::new(list, "m"), 7, &poller, 1000);
        assert_eq!(s.cfg.sentinels.len(), MAX_SENTINELS);
        assert_eq!(s.stats().asked, MAX_SENTINELS as u64);
        assert_eq!(s.stats().failed_rounds, 1);
        assert_eq!(s.take_outcome(), Some(Outcome::Failed));
        // The truncation line and the failed round's line.
        assert_eq!(s.stats().log_lines, 2);
        // The next round waits for the backoff, whatever ask() says.
        s.ask(1000);
        let next = s.next_wake().unwrap();
        assert!(next >= 1000 + DEFAULT_RETRY_MS / 2, "{next}");
        s.tick(&poller, next - 1);
        assert_eq!(s.stats().rounds, 1);
        s.tick(&poller, next);
        assert_eq!(s.stats().rounds, 2);
        assert_eq!(s.stats().log_lines, 2, "a second failed round, no new line");
    }

    #[test]
    fn sentinel_answers() {
        let bulk = |s: &str| OwnedFrame::BulkString(s.as_bytes().to_vec());
        let a = primary_of(OwnedFrame::Array(vec![bulk("127.0.0.1"), bulk("6380")])).unwrap();
        assert_eq!(host_port(&a), "127.0.0.1:6380");
        let a = primary_of(OwnedFrame::Array(vec![bulk("::1"), bulk("7")])).unwrap();
        assert_eq!(host_port(&a), "[::1]:7");
        assert_eq!(primary_of(OwnedFrame::Null), Err(Miss::Unknown));
        let e = |f| match primary_of(f) {
            Err(Miss::Error(e)) => e,
            x => panic!("{x:?}"),
        };
        assert!(
            e(OwnedFrame::Array(vec![bulk("redis-1"), bulk("1")])).contains("announce-hostnames")
        );
        assert!(e(OwnedFrame::Array(vec![bulk("1.2.3.4"), bulk("0")])).contains("port"));
        assert!(e(OwnedFrame::Array(vec![bulk("1.2.3.4")])).contains("host and port"));
        assert!(e(OwnedFrame::Error("ERR unknown command".into())).contains("unknown command"));
        assert!(e(OwnedFrame::Integer(3)).contains("not an address"));
    }
}
