//! The request multiplexer of dc_client, free of I/O: it renames request
//! uids toward the server, remembers who asked what, and routes each answer
//! back to the right local client under its original uid.

use std::collections::HashMap;

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
    inflight: HashMap<u32, Pending>,
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
            inflight: HashMap::new(),
        }
    }

    /// Number of requests waiting for the server.
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// Forward `msg` (a request from local client `client`): append it to
    /// `up_out` with a fresh server-side uid and remember the route.
    /// Returns the uid used toward the server.
    pub fn forward(&mut self, client: u64, msg: &MsgRef<'_>, up_out: &mut Vec<u8>) -> u32 {
        // A uid still in flight (only possible after 2^32 requests) is skipped.
        let mut sid = self.next_uid;
        while self.inflight.contains_key(&sid) {
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
            },
        );
        sid
    }

    /// Match an answer from the server to its request. On success the route
    /// is forgotten and returned; on a fault nothing changes.
    pub fn complete(&mut self, msg: &MsgRef<'_>) -> Result<Pending, Fault> {
        match self.inflight.get(&msg.uid) {
            None => Err(Fault::UnknownUid(msg.uid)),
            Some(p) if p.cmd != msg.cmd => Err(Fault::WrongOp {
                uid: msg.uid,
                sent: p.cmd,
                got: msg.cmd,
            }),
            Some(_) => Ok(self.inflight.remove(&msg.uid).expect("present")),
        }
    }

    /// The server connection is gone: every request in flight, in the order
    /// it was forwarded.
    pub fn fail_all(&mut self) -> Vec<Pending> {
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
        assert_eq!(m.forward(7, &req(0xDEADBEEF, Cmd::Get, b"abc"), &mut up), 1);
        assert_eq!(
            m.forward(8, &req(0xDEADBEEF, Cmd::Have, b"abc"), &mut up),
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
        let p = m.complete(&a).unwrap();
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
        assert_eq!(m.forward(7, &req(1, Cmd::Get, b""), &mut up), 3);
    }

    #[test]
    fn fail_all_keeps_forwarding_order() {
        let mut m = Mux::new();
        let mut up = Vec::new();
        for i in 0..100u32 {
            m.forward(u64::from(i % 3), &req(i, Cmd::Get, b"x"), &mut up);
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
        m.forward(1, &req(1, Cmd::Add, &payload), &mut up);
        assert_eq!(up, orig);
    }

    #[test]
    fn empty_answer_frame() {
        let mut out = Vec::new();
        answer(&mut out, 31337, Cmd::Get, &[]);
        assert_eq!(out, [0, 0x11, 0, 0, 1, 0, 0, 0x7a, 0x69, 0, 1, 1, 0, 0]);
    }
}
