//! A daemon answering from Redis: dc_client in Redis mode (`-server
//! redis://host:port`) and dc_server as a stateless front (`-backend
//! redis://host:port`), either also with `redis-sentinel://`. Every
//! distcache request is answered from Redis through ONE connection (a
//! [`Store`]: one connection per daemon, whatever the number of client
//! connections, re-pointed at the primary the sentinels name). The requests are checked and
//! answered as dc_server would ([`store::plan`], [`store::payload`]); the
//! connection, its pipeline bounds, deadlines, backoff and its log lines
//! (one per state change) are the Redis client's.

use crate::evloop::{Event, Poller};
use crate::idmap::{self, IdMap};
use crate::metrics::{self, Answer as How};
use crate::redis::{Answer, Completion, Failure, Request};
use crate::sentinel::Store;
use crate::store::{self, Plan, StoreConfig, Timeouts};
use distcache_rs::proto::{status, Cmd, MsgRef};

/// A request waiting for Redis.
#[derive(Clone, Copy, Debug)]
pub struct Route {
    /// Token of the client connection that sent it.
    pub client: u64,
    /// The caller's check that `client` is still the connection that sent
    /// it (dc_server reuses tokens: the connection's serial), given back
    /// as it was given.
    pub tag: u64,
    /// The uid and operation it used.
    pub uid: u32,
    pub cmd: Cmd,
    zero_add: bool,
    /// When it was taken, in microseconds of `tools::now_us` (-metrics).
    pub sent_us: u64,
}

/// What became of a request.
#[derive(Debug)]
pub enum Taken {
    /// Sent to Redis: answered later through [`Backend::deliver`].
    Queued,
    /// Answered at once with this one-byte payload.
    Now(u8, How),
    /// An ADD too short to parse: drop the client connection (as
    /// dc_server drops the connection it came on).
    Fatal,
}

/// The Redis side of a daemon.
pub struct Backend {
    rc: Store,
    token: u64,
    routes: IdMap<u64, Route>,
    next: u64,
    timeouts: Timeouts,
    done: Vec<Completion>,
    /// Answers to [`Backend::submit_raw`] requests, for [`Backend::take_raw`].
    raw: Vec<Completion>,
}

/// The metrics label of a failed request.
pub fn how(f: Failure) -> How {
    match f {
        Failure::Deadline => How::Deadline,
        Failure::Reset => How::Disconnected,
        Failure::Reply(_) => How::Server,
        Failure::Down | Failure::Full | Failure::Invalid => How::ServerDown,
    }
}

impl Backend {
    /// Tokens a backend registers, from its `token` up: the Redis
    /// connection, then the sentinel client's two (asked, subscription).
    pub const TOKENS: u64 = 3;

    /// Connect to `cfg.redis.addr`, or ask `cfg.sentinel` for the primary;
    /// registered under `token` .. `token + TOKENS` (see
    /// [`Backend::owns`]); the first connect (or round) starts now.
    pub fn new(
        cfg: StoreConfig,
        timeouts: Timeouts,
        token: u64,
        poller: &Poller,
        now: u64,
    ) -> Backend {
        let rc = match cfg.sentinel {
            None => Store::direct(cfg.redis, token, poller, now),
            Some(s) => Store::new(s, cfg.redis, token + 1, token, poller, now),
        };
        Backend {
            rc,
            token,
            routes: idmap::new(),
            next: 0,
            timeouts,
            done: Vec::new(),
            raw: Vec::new(),
        }
    }

    pub fn token(&self) -> u64 {
        self.token
    }

    /// Whether a readiness event with `t` is this backend's.
    pub fn owns(&self, t: u64) -> bool {
        self.rc.owns(t)
    }

    pub fn is_up(&self) -> bool {
        self.rc.is_up()
    }

    /// The Redis connection's counters in -metrics' terms: reconnects
    /// (connections up after the first), failed attempts, and connections
    /// lost once up (every down is one or the other).
    pub fn count(&self, view: &mut metrics::ClientView) {
        let Some(rc) = self.rc.redis() else {
            return;
        };
        let st = rc.stats();
        let lost = st.ups - u64::from(rc.is_up());
        view.reconnects = st.ups.saturating_sub(1);
        view.disconnects = lost;
        view.connect_failures = st.downs.saturating_sub(lost);
    }

    /// When [`Backend::tick`] has something to do.
    pub fn next_wake(&self) -> Option<u64> {
        self.rc.next_wake()
    }

    /// Take the request `msg` of client connection `client` (`tag` as in
    /// [`Route::tag`]).
    #[allow(clippy::too_many_arguments)]
    pub fn request(
        &mut self,
        poller: &Poller,
        client: u64,
        tag: u64,
        msg: &MsgRef<'_>,
        now: u64,
        now_us: u64,
    ) -> Taken {
        let (req, zero_add) = match store::plan(msg, self.timeouts) {
            Plan::Fatal => return Taken::Fatal,
            Plan::Reply(code) => return Taken::Now(code, How::Server),
            Plan::Ask { req, zero_add } => (req, zero_add),
        };
        let token = self.next;
        self.next = self.next.wrapping_add(1);
        match self.rc.submit(poller, req, token, now, &mut self.done) {
            Ok(()) => {
                self.routes.insert(
                    token,
                    Route {
                        client,
                        tag,
                        uid: msg.uid,
                        cmd: msg.cmd,
                        zero_add,
                        sent_us: now_us,
                    },
                );
                Taken::Queued
            }
            Err(f) => Taken::Now(status::DISCONNECTED, how(f)),
        }
    }

    /// Send `req` with its key under `prefix` (a protocol of its own, such
    /// as stunnel's sessiond, whose answers the caller reads itself): the
    /// token its answer will carry in [`Backend::take_raw`], or the failure
    /// given at once.
    pub fn submit_raw(
        &mut self,
        poller: &Poller,
        prefix: &[u8],
        req: Request<'_>,
        now: u64,
    ) -> Result<u64, Failure> {
        let token = self.next;
        self.next = self.next.wrapping_add(1);
        self.rc
            .submit_under(poller, Some(prefix), req, token, now, &mut self.done)
            .map(|()| token)
    }

    /// The answers to [`Backend::submit_raw`] requests completed since the
    /// last call (gathered by [`Backend::deliver`]).
    pub fn take_raw(&mut self) -> Vec<Completion> {
        std::mem::take(&mut self.raw)
    }

    /// Write the requests taken since the last call: once per loop turn,
    /// after the last [`Backend::request`] / [`Backend::submit_raw`] and
    /// before waiting (see [`RedisConn::send_queued`]); then
    /// [`Backend::deliver`].
    pub fn send_queued(&mut self, poller: &Poller, now: u64) {
        self.rc.send_queued(poller, now, &mut self.done);
    }

    /// A readiness event for the Redis connection.
    pub fn event(&mut self, poller: &Poller, ev: &Event, now: u64) {
        self.rc.on_event(poller, ev, now, &mut self.done);
    }

    /// Deadlines, timeouts and reconnects due at `now`.
    pub fn tick(&mut self, poller: &Poller, now: u64) {
        self.rc.tick(poller, now, &mut self.done);
    }

    /// Hand every answered request to `give` (its route, the answer
    /// payload, how it was answered).
    pub fn deliver(&mut self, give: &mut dyn FnMut(Route, &[u8], How)) {
        for c in std::mem::take(&mut self.done) {
            // Every distcache request has its route (a request failed while
            // being submitted is routed before this runs); the others are
            // raw requests.
            let Some(r) = self.routes.remove(&c.token) else {
                self.raw.push(c);
                continue;
            };
            let h = match &c.answer {
                Answer::Failed(f) => how(*f),
                _ => How::Server,
            };
            give(r, &store::payload(&c.answer, r.zero_add), h);
        }
    }
}
