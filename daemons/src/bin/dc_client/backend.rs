//! dc_client in Redis mode (`-server redis://host:port`): every
//! application request is answered from Redis through ONE [`RedisConn`]
//! (one connection per dc_client, whatever the number of application
//! connections), with no dc_server hop. The requests are checked and
//! answered as dc_server would ([`store::plan`], [`store::payload`]); the
//! connection, its pipeline bounds, deadlines, backoff and its log lines
//! (one per state change) are the Redis client's.

use distcache_rs::proto::{status, Cmd, MsgRef};
use distcache_tools::evloop::{Event, Poller};
use distcache_tools::idmap::{self, IdMap};
use distcache_tools::metrics::{self, Answer as How};
use distcache_tools::redis::{self, Answer, Completion, Failure, RedisConn};
use distcache_tools::store::{self, Plan, Timeouts};

/// A request waiting for Redis.
#[derive(Clone, Copy, Debug)]
pub struct Route {
    /// Token of the application connection that sent it.
    pub client: u64,
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
    /// An ADD too short to parse: drop the application connection (as
    /// dc_server drops the connection it came on).
    Fatal,
}

/// The Redis side of dc_client.
pub struct Backend {
    rc: RedisConn,
    token: u64,
    routes: IdMap<u64, Route>,
    next: u64,
    timeouts: Timeouts,
    done: Vec<Completion>,
}

/// The metrics label of a failed request.
fn how(f: Failure) -> How {
    match f {
        Failure::Deadline => How::Deadline,
        Failure::Reset => How::Disconnected,
        Failure::Reply(_) => How::Server,
        Failure::Down | Failure::Full | Failure::Invalid => How::ServerDown,
    }
}

impl Backend {
    /// Connect to `cfg.addr` (registered under `token`); the first
    /// connect starts now.
    pub fn new(
        cfg: redis::Config,
        timeouts: Timeouts,
        token: u64,
        poller: &Poller,
        now: u64,
    ) -> Backend {
        Backend {
            rc: RedisConn::new(cfg, token, poller, now),
            token,
            routes: idmap::new(),
            next: 0,
            timeouts,
            done: Vec::new(),
        }
    }

    pub fn token(&self) -> u64 {
        self.token
    }

    pub fn is_up(&self) -> bool {
        self.rc.is_up()
    }

    /// The Redis connection's counters in -metrics' terms: reconnects
    /// (connections up after the first), failed attempts, and connections
    /// lost once up (every down is one or the other).
    pub fn count(&self, view: &mut metrics::ClientView) {
        let st = self.rc.stats();
        let lost = st.ups - u64::from(self.rc.is_up());
        view.reconnects = st.ups.saturating_sub(1);
        view.disconnects = lost;
        view.connect_failures = st.downs.saturating_sub(lost);
    }

    /// When [`Backend::tick`] has something to do.
    pub fn next_wake(&self) -> Option<u64> {
        self.rc.next_wake()
    }

    /// Take application `client`'s request `msg`.
    pub fn request(
        &mut self,
        poller: &Poller,
        client: u64,
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
            // Every completion has its route (a request failed while being
            // submitted is routed before this runs); none is skipped.
            let Some(r) = self.routes.remove(&c.token) else {
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
