//! The request multiplexer of dc_client, free of I/O: it renames request
//! uids toward the server, remembers who asked what, and routes each answer
//! back to the right local client under its original uid.

use std::collections::VecDeque;

use distcache_tools::idmap::{self, IdMap};

use distcache_rs::proto::{self, Cmd, MsgRef};

/// A forwarded request waiting for the server's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pending {
    /// Token of the local client that sent it.
    pub client: u64,
    /// The uid the client used.
    pub uid: u32,
    pub cmd: Cmd,
    /// Forwarding order, to fail pending requests in the order they came.
    seq: u64,
    /// When it was forwarded, in microseconds of `tools::now_us` (for
    /// the round-trip histogram of -metrics).
    pub sent_us: u64,
}

/// What became of an answer from the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Done {
    /// The answer of a request still waiting: deliver it.
    Deliver(Pending),
    /// The answer of a request already answered 0x02 past its deadline:
    /// discard it.
    Late,
}

/// Why the server connection must be dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// An answer carrying a uid we have no request for.
    UnknownUid(u32),
    /// An answer whose operation differs from the request's.
    WrongOp { uid: u32, sent: Cmd, got: Cmd },
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Fault::UnknownUid(u) => write!(f, "server answered uid {u} which was never sent"),
            Fault::WrongOp { uid, sent, got } => write!(
                f,
                "server answered uid {uid} with operation {} but the request was {}",
                got.name(),
                sent.name()
            ),
        }
    }
}

/// Uid renaming and in-flight bookkeeping for one dc_client process.
#[derive(Debug)]
pub struct Mux {
    /// The next server-side uid (the first forwarded request gets 1).
    next_uid: u32,
    seq: u64,
    inflight: IdMap<u32, Pending>,
    /// Server-side uids of requests answered past their deadline, with
    /// their operation: reserved until their late answer arrives (or the
    /// connection goes), so the answer is discarded, never routed.
    late: IdMap<u32, Cmd>,
    /// (forwarding time in ms, server uid) in forwarding order: the
    /// deadline queue.
    order: VecDeque<(u64, u32)>,
}

impl Default for Mux {
    fn default() -> Self {
        Mux::new()
    }
}

impl Mux {
    pub fn new() -> Mux {
        Mux {
            next_uid: 1,
            seq: 0,
            inflight: idmap::new(),
            late: idmap::new(),
            order: VecDeque::new(),
        }
    }

    /// Requests answered past their deadline whose late answer is still
    /// to come.
    pub fn late(&self) -> usize {
        self.late.len()
    }

    /// When the oldest request still waiting was forwarded.
    pub fn oldest_sent(&mut self) -> Option<u64> {
        while let Some(&(t, sid)) = self.order.front() {
            if self.inflight.contains_key(&sid) {
                return Some(t);
            }
            self.order.pop_front();
        }
        None
    }

    /// Requests forwarded at or before `cutoff` and still waiting: they
    /// are answered by the caller (0x02) and their uids kept reserved for
    /// the late answer. Returned in forwarding order, each with its
    /// forwarding time.
    pub fn expire(&mut self, cutoff: u64) -> Vec<(Pending, u64)> {
        let mut v = Vec::new();
        while let Some(&(t, sid)) = self.order.front() {
            if t > cutoff {
                break;
            }
            self.order.pop_front();
            if let Some(p) = self.inflight.remove(&sid) {
                self.late.insert(sid, p.cmd);
                v.push((p, t));
            }
        }
        v
    }

    /// Number of requests waiting for the server.
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// Forward `msg` (a request from local client `client`): append it to
    /// `up_out` with a fresh server-side uid and remember the route.
    /// `now` is the time in ms (for the deadline queue), `now_us` the same
    /// moment in microseconds (for the round-trip time). Returns the uid
    /// used toward the server.
    pub fn forward(
        &mut self,
        client: u64,
        msg: &MsgRef<'_>,
        up_out: &mut Vec<u8>,
        now: u64,
        now_us: u64,
    ) -> u32 {
        // A uid still in flight or reserved for a late answer (only
        // possible after 2^32 requests) is skipped.
        let mut sid = self.next_uid;
        while self.inflight.contains_key(&sid) || self.late.contains_key(&sid) {
            sid = sid.wrapping_add(1);
        }
        self.next_uid = sid.wrapping_add(1);
        self.seq += 1;
        // The decoder caps payloads at the protocol limit, so this cannot fail.
        let _ = proto::encode_message(up_out, false, sid, msg.cmd, msg.payload);
        self.inflight.insert(
            sid,
            Pending {
                client,
                uid: msg.uid,
                cmd: msg.cmd,
                seq: self.seq,
                sent_us: now_us,
            },
        );
        self.order.push_back((now, sid));
        sid
    }

    /// Match an answer from the server to its request. On success the route
    /// (or the late uid) is forgotten; on a fault nothing changes.
    pub fn complete(&mut self, msg: &MsgRef<'_>) -> Result<Done, Fault> {
        if let Some(&sent) = self.late.get(&msg.uid) {
            if sent != msg.cmd {
                return Err(Fault::WrongOp {
                    uid: msg.uid,
                    sent,
                    got: msg.cmd,
                });
            }
            self.late.remove(&msg.uid);
            return Ok(Done::Late);
        }
        match self.inflight.get(&msg.uid) {
            None => Err(Fault::UnknownUid(msg.uid)),
            Some(p) if p.cmd != msg.cmd => Err(Fault::WrongOp {
                uid: msg.uid,
                sent: p.cmd,
                got: msg.cmd,
            }),
            Some(_) => Ok(Done::Deliver(
                self.inflight.remove(&msg.uid).expect("present"),
            )),
        }
    }

    /// The server connection is gone: every request in flight, in the order
    /// it was forwarded.
    pub fn fail_all(&mut self) -> Vec<Pending> {
        self.late.clear();
        self.order.clear();
        let mut v: Vec<Pending> = self.inflight.drain().map(|(_, p)| p).collect();
        v.sort_by_key(|p| p.seq);
        v
    }
}

/// Append an answer for a local client: `payload` framed as a response
/// with the client's own uid and operation.
pub fn answer(out: &mut Vec<u8>, uid: u32, cmd: Cmd, payload: &[u8]) {
    // Payloads come from a decoded message or are one byte: never too large.
    let _ = proto::encode_message(out, true, uid, cmd, payload);
}

#[cfg(test)]
mod tests {
    use super::*;
    use distcache_rs::proto::{decode_all, Direction};

    fn req(uid: u32, cmd: Cmd, payload: &[u8]) -> MsgRef<'_> {
        MsgRef {
            is_response: false,
            uid,
            cmd,
            level: proto::PROTO_LEVEL,
            payload,
        }
    }

    #[test]
    fn renames_uids_from_one_and_routes_back() {
        let mut m = Mux::new();
        let mut up = Vec::new();
        assert_eq!(
            m.forward(7, &req(0xDEADBEEF, Cmd::Get, b"abc"), &mut up, 0, 0),
            1
        );
        assert_eq!(
            m.forward(8, &req(0xDEADBEEF, Cmd::Have, b"abc"), &mut up, 0, 0),
            2
        );
        let (msgs, used) = decode_all(Direction::Requests, &up).unwrap();
        assert_eq!(used, up.len());
        assert_eq!(msgs[0].uid, 1);
        assert_eq!(msgs[0].payload, b"abc");
        assert_eq!(msgs[1].uid, 2);
        assert_eq!(msgs[1].cmd, Cmd::Have);
        // Answers in any order.
        let a = MsgRef {
            is_response: true,
            uid: 2,
            cmd: Cmd::Have,
            level: proto::PROTO_LEVEL,
            payload: &[0],
        };
        let Ok(Done::Deliver(p)) = m.complete(&a) else {
            panic!("not delivered")
        };
        assert_eq!((p.client, p.uid, p.cmd), (8, 0xDEADBEEF, Cmd::Have));
        assert_eq!(m.complete(&a), Err(Fault::UnknownUid(2)));
        let wrong = MsgRef {
            uid: 1,
            cmd: Cmd::Remove,
            ..a
        };
        assert!(matches!(m.complete(&wrong), Err(Fault::WrongOp { .. })));
        assert_eq!(m.in_flight(), 1);
        let failed = m.fail_all();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].client, 7);
        assert_eq!(m.in_flight(), 0);
        // The counter keeps going after a failure.
        assert_eq!(m.forward(7, &req(1, Cmd::Get, b""), &mut up, 0, 0), 3);
    }

    #[test]
    fn expired_requests_keep_their_uid_and_their_late_answer_is_discarded() {
        let mut m = Mux::new();
        let mut up = Vec::new();
        assert_eq!(m.forward(1, &req(10, Cmd::Get, b"a"), &mut up, 100, 0), 1);
        assert_eq!(m.forward(2, &req(20, Cmd::Get, b"b"), &mut up, 300, 0), 2);
        assert_eq!(m.oldest_sent(), Some(100));
        let gone = m.expire(250);
        assert_eq!(gone.len(), 1);
        assert_eq!((gone[0].0.client, gone[0].0.uid, gone[0].1), (1, 10, 100));
        assert_eq!((m.in_flight(), m.late()), (1, 1));
        assert_eq!(m.oldest_sent(), Some(300));
        let ans = |uid, cmd| MsgRef {
            is_response: true,
            uid,
            cmd,
            level: proto::PROTO_LEVEL,
            payload: b"data",
        };
        // A late answer with the wrong operation is still a fault.
        assert!(matches!(
            m.complete(&ans(1, Cmd::Have)),
            Err(Fault::WrongOp { .. })
        ));
        assert_eq!(m.complete(&ans(1, Cmd::Get)), Ok(Done::Late));
        // Once discarded, the uid is unknown again.
        assert_eq!(m.complete(&ans(1, Cmd::Get)), Err(Fault::UnknownUid(1)));
        assert!(matches!(m.complete(&ans(2, Cmd::Get)), Ok(Done::Deliver(p)) if p.uid == 20));
        assert_eq!(m.oldest_sent(), None);
        // A reserved uid is skipped when the counter wraps onto it.
        let mut m = Mux::new();
        m.forward(1, &req(1, Cmd::Get, b"a"), &mut up, 0, 0);
        m.expire(0);
        m.next_uid = 1;
        assert_eq!(m.forward(1, &req(2, Cmd::Get, b"a"), &mut up, 0, 0), 2);
        assert_eq!(m.fail_all().len(), 1);
        assert_eq!(m.late(), 0);
    }

    #[test]
    fn fail_all_keeps_forwarding_order() {
        let mut m = Mux::new();
        let mut up = Vec::new();
        for i in 0..100u32 {
            m.forward(u64::from(i % 3), &req(i, Cmd::Get, b"x"), &mut up, 0, 0);
        }
        let v = m.fail_all();
        assert_eq!(
            v.iter().map(|p| p.uid).collect::<Vec<_>>(),
            (0..100).collect::<Vec<_>>()
        );
    }

    #[test]
    fn multiframe_payload_is_reframed_identically() {
        let mut m = Mux::new();
        let payload: Vec<u8> = (0..5137u32).map(|i| i as u8).collect();
        let mut orig = Vec::new();
        proto::encode_message(&mut orig, false, 1, Cmd::Add, &payload).unwrap();
        let mut up = Vec::new();
        m.forward(1, &req(1, Cmd::Add, &payload), &mut up, 0, 0);
        assert_eq!(up, orig);
    }

    #[test]
    fn empty_answer_frame() {
        let mut out = Vec::new();
        answer(&mut out, 31337, Cmd::Get, &[]);
        assert_eq!(out, [0, 0x11, 0, 0, 1, 0, 0, 0x7a, 0x69, 0, 1, 1, 0, 0]);
    }
}
