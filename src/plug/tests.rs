use super::*;
use crate::proto::{decode_all, encode_message, Message};

/// One side of a fake connection: its read and send buffers.
struct Side {
    core: PlugCore,
    rd: Buffer,
    sd: Buffer,
}

impl Side {
    fn new(to_server: bool, bufsize: usize) -> Self {
        Side {
            core: PlugCore::new(to_server),
            rd: Buffer::with_size(bufsize).unwrap(),
            sd: Buffer::with_size(bufsize).unwrap(),
        }
    }
    fn read(&mut self, resume: bool) -> Option<(u32, Cmd, Vec<u8>)> {
        self.core
            .read(&mut self.rd, resume)
            .map(|m| (m.uid, m.cmd, m.payload.to_vec()))
    }
    fn send(&mut self, uid: u32, cmd: Cmd, payload: &[u8]) {
        self.core.write(false, uid, cmd, payload).unwrap();
        self.core.commit(&mut self.sd).unwrap();
    }
}

/// Move bytes from `a`'s send buffer to `b`'s read buffer, at most `chunk`
/// at a time, running the plugs' I/O step in between (as the network
/// would), until nothing moves.
fn pump(a: &mut Side, b: &mut Side, chunk: usize) -> Result<(), DecodeError> {
    loop {
        a.core.push(&mut a.sd);
        let n = b.rd.transfer_from(&mut a.sd, chunk);
        b.core.after_io(&mut b.rd, &mut b.sd)?;
        a.core.push(&mut a.sd);
        if n == 0 {
            return Ok(());
        }
    }
}

fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn request_and_response_roundtrip() {
    let mut cli = Side::new(true, 4096);
    let mut srv = Side::new(false, 4096);
    cli.send(7, Cmd::Get, b"session-id");
    // Client-side plugs send requests (is_response = 0).
    let (msgs, _) = decode_all(Direction::Requests, cli.sd.data()).unwrap();
    assert_eq!(msgs.len(), 1);
    pump(&mut cli, &mut srv, 4096).unwrap();
    assert_eq!(srv.read(false), Some((7, Cmd::Get, b"session-id".to_vec())));
    srv.send(7, Cmd::Get, b"data");
    let (msgs, _) = decode_all(Direction::Responses, srv.sd.data()).unwrap();
    assert_eq!(msgs[0].payload, b"data");
    assert!(srv.core.consume());
    pump(&mut srv, &mut cli, 4096).unwrap();
    assert_eq!(cli.read(false), Some((7, Cmd::Get, b"data".to_vec())));
    assert!(cli.core.consume());
    assert_eq!(cli.read(false), None);
}

#[test]
fn multi_frame_messages_through_small_buffers() {
    // Buffers far smaller than one frame: the plug must stage bytes itself
    // and trickle its output out.
    for &(bufsize, chunk) in &[(64usize, 64usize), (100, 7), (4096, 4096), (2062, 1)] {
        let mut cli = Side::new(true, bufsize);
        let mut srv = Side::new(false, bufsize);
        let sizes = [0usize, 1, 2047, 2048, 2049, 4096, 10000, 32767, 32768];
        for (i, &len) in sizes.iter().enumerate() {
            cli.send(i as u32, Cmd::Add, &payload(len, i as u8));
        }
        for (i, &len) in sizes.iter().enumerate() {
            pump(&mut cli, &mut srv, chunk).unwrap();
            let got = srv.read(false).expect("message");
            assert_eq!(got, (i as u32, Cmd::Add, payload(len, i as u8)));
            assert!(srv.core.consume());
        }
        pump(&mut cli, &mut srv, chunk).unwrap();
        assert_eq!(srv.read(false), None);
        assert!(!srv.core.mid_message());
        assert_eq!(cli.core.pending_output(), 0);
    }
}

#[test]
fn write_more_builds_one_message_and_is_bounded() {
    let mut cli = Side::new(true, 32768);
    let mut srv = Side::new(false, 32768);
    cli.core.write(false, 1, Cmd::Add, &[]).unwrap();
    for i in 0..16 {
        cli.core.write_more(&payload(2048, i)).unwrap();
    }
    assert_eq!(cli.core.write_more(b"x"), Err(WriteError::TooLarge));
    cli.core.commit(&mut cli.sd).unwrap();
    // 16 full frames: more than the send buffer holds, the rest waits.
    assert_eq!(cli.sd.used(), 32768);
    assert_eq!(cli.core.pending_output(), 16 * (14 + 2048) - 32768);
    pump(&mut cli, &mut srv, 32768).unwrap();
    let (_, _, p) = srv.read(false).unwrap();
    let want: Vec<u8> = (0..16).flat_map(|i| payload(2048, i)).collect();
    assert_eq!(p, want);
    // Oversized payloads are refused up front and leave nothing open.
    assert_eq!(
        cli.core.write(false, 2, Cmd::Add, &vec![0; 32769]),
        Err(WriteError::TooLarge)
    );
    assert!(!cli.core.writing());
    assert_eq!(cli.core.commit(&mut cli.sd), Err(WriteError::NotOpen));
    assert_eq!(cli.core.write_more(b"x"), Err(WriteError::NotOpen));
}

#[test]
fn pipelined_messages_are_read_in_order_one_at_a_time() {
    let mut cli = Side::new(true, 8192);
    let mut srv = Side::new(false, 8192);
    cli.send(1, Cmd::Add, b"one");
    cli.send(2, Cmd::Get, &payload(3000, 2));
    cli.send(3, Cmd::Remove, b"three");
    cli.send(4, Cmd::Have, b"");
    pump(&mut cli, &mut srv, 8192).unwrap();
    assert_eq!(srv.core.queued(), 4);

    let first = srv.read(false).unwrap();
    assert_eq!(first, (1, Cmd::Add, b"one".to_vec()));
    // Opened: a plain read fails, a resumed read gives the same message.
    assert_eq!(srv.read(false), None);
    assert_eq!(srv.read(true), Some(first.clone()));
    assert_eq!(srv.read(true), Some(first));
    assert!(srv.core.consume());
    assert!(!srv.core.consume(), "nothing open any more");
    assert_eq!(srv.read(false), Some((2, Cmd::Get, payload(3000, 2))));
    assert!(srv.core.consume());
    assert_eq!(srv.read(true), Some((3, Cmd::Remove, b"three".to_vec())));
    assert!(srv.core.consume());
    assert_eq!(srv.read(false), Some((4, Cmd::Have, vec![])));
    assert!(srv.core.consume());
    assert_eq!(srv.read(false), None);
    assert_eq!(srv.read(true), None);
}

#[test]
fn payload_pointer_stays_valid_while_more_messages_arrive() {
    let mut cli = Side::new(true, 8192);
    let mut srv = Side::new(false, 8192);
    cli.send(1, Cmd::Get, b"first");
    pump(&mut cli, &mut srv, 8192).unwrap();
    let ptr = srv.core.read(&mut srv.rd, false).unwrap().payload.as_ptr();
    for i in 0..40 {
        cli.send(10 + i, Cmd::Get, &payload(100, i as u8));
        pump(&mut cli, &mut srv, 8192).unwrap();
    }
    let again = srv.core.read(&mut srv.rd, true).unwrap().payload;
    assert_eq!(again.as_ptr(), ptr);
    assert_eq!(again, b"first");
}

#[test]
fn rollback_drops_the_open_message() {
    let mut cli = Side::new(true, 4096);
    let mut srv = Side::new(false, 4096);
    assert!(!cli.core.rollback(), "nothing to roll back");
    cli.core.write(false, 1, Cmd::Add, b"abc").unwrap();
    cli.core.write_more(b"def").unwrap();
    assert!(cli.core.rollback());
    assert!(!cli.core.writing());
    assert_eq!(cli.core.commit(&mut cli.sd), Err(WriteError::NotOpen));
    assert!(cli.sd.is_empty());
    cli.send(2, Cmd::Have, b"kept");
    pump(&mut cli, &mut srv, 4096).unwrap();
    assert_eq!(srv.read(false), Some((2, Cmd::Have, b"kept".to_vec())));
    srv.core.consume();
    assert_eq!(srv.read(false), None);
}

#[test]
fn write_resume_replaces_the_open_message() {
    let mut cli = Side::new(true, 4096);
    let mut srv = Side::new(false, 4096);
    cli.core.write(false, 1, Cmd::Add, b"old").unwrap();
    cli.core.write_more(b"-more").unwrap();
    assert_eq!(
        cli.core.write(false, 2, Cmd::Get, b"x"),
        Err(WriteError::AlreadyOpen)
    );
    cli.core.write(true, 3, Cmd::Remove, b"new").unwrap();
    cli.core.write_more(b"er").unwrap();
    cli.core.commit(&mut cli.sd).unwrap();
    // resume with nothing open just opens a message.
    cli.core.write(true, 4, Cmd::Have, b"h").unwrap();
    cli.core.commit(&mut cli.sd).unwrap();
    pump(&mut cli, &mut srv, 4096).unwrap();
    assert_eq!(srv.read(false), Some((3, Cmd::Remove, b"newer".to_vec())));
    srv.core.consume();
    assert_eq!(srv.read(false), Some((4, Cmd::Have, b"h".to_vec())));
    srv.core.consume();
    assert_eq!(srv.read(false), None);
}

#[test]
fn encoded_bytes_match_the_codec() {
    let mut cli = Side::new(true, 32768);
    let p = payload(5000, 9);
    cli.send(0xDEADBEEF, Cmd::Add, &p);
    let mut want = Vec::new();
    encode_message(&mut want, false, 0xDEADBEEF, Cmd::Add, &p).unwrap();
    assert_eq!(cli.sd.data(), &want[..]);
    let mut srv = Side::new(false, 32768);
    srv.send(0xDEADBEEF, Cmd::Add, &[0]);
    want.clear();
    encode_message(&mut want, true, 0xDEADBEEF, Cmd::Add, &[0]).unwrap();
    assert_eq!(srv.sd.data(), &want[..]);
}

fn corrupt_after_valid(mut bad: Vec<u8>, to_server: bool) -> (Side, DecodeError) {
    let mut s = Side::new(to_server, 8192);
    let mut bytes = Vec::new();
    encode_message(&mut bytes, to_server, 5, Cmd::Get, b"fine").unwrap();
    bytes.append(&mut bad);
    s.rd.write(&bytes);
    let e = s.core.pull(&mut s.rd).unwrap_err();
    (s, e)
}

#[test]
fn corrupt_streams_kill_the_plug() {
    let valid = |is_resp: bool| {
        let mut v = Vec::new();
        encode_message(&mut v, is_resp, 9, Cmd::Have, b"abc").unwrap();
        v
    };
    let mut cases: Vec<(Vec<u8>, bool, DecodeError)> = Vec::new();
    // An HTTP probe: rejected on the first 5 bytes.
    cases.push((
        b"GET / HTTP/1.0\r\n".to_vec(),
        false,
        DecodeError::BadLevel(0x47455420),
    ));
    let mut v = valid(false);
    v[1] = 0x12;
    cases.push((v, false, DecodeError::BadLevel(0x00120000)));
    // A request where a response is expected and the reverse.
    cases.push((valid(false), true, DecodeError::WrongDirection(false)));
    cases.push((valid(true), false, DecodeError::WrongDirection(true)));
    let mut v = valid(false);
    v[10] = 9;
    cases.push((v, false, DecodeError::BadOp(9)));
    let mut v = valid(false);
    v[11] = 0;
    cases.push((v, false, DecodeError::ShortFragment(3)));
    for (bad, to_server, want) in cases {
        let (mut s, e) = corrupt_after_valid(bad.clone(), to_server);
        assert_eq!(e, want, "{bad:02x?}");
        assert_eq!(s.core.error(), Some(want));
        assert!(!s.core.is_alive());
        // Dead: reading fails even though a good message was queued, and
        // I/O keeps failing.
        assert_eq!(s.read(false), None);
        assert_eq!(s.read(true), None);
        assert!(s.core.after_io(&mut s.rd, &mut s.sd).is_err());
        assert!(s.core.pull(&mut s.rd).is_err());
    }
}

#[test]
fn a_dead_plug_does_not_affect_another() {
    let mut cli = Side::new(true, 4096);
    let mut good = Side::new(false, 4096);
    let mut bad = Side::new(false, 4096);
    bad.rd.write(b"\x00\x11\x00\x00\x07garbage-here");
    assert!(bad.core.pull(&mut bad.rd).is_err());
    cli.send(1, Cmd::Get, b"x");
    pump(&mut cli, &mut good, 4096).unwrap();
    assert_eq!(good.read(false), Some((1, Cmd::Get, b"x".to_vec())));
}

#[test]
fn receive_queue_is_bounded() {
    let mut srv = Side::new(false, 32768);
    let mut bytes = Vec::new();
    for i in 0..(MAX_QUEUED_MSGS as u32 + 40) {
        encode_message(&mut bytes, false, i, Cmd::Have, &[7; 200]).unwrap();
    }
    assert!(bytes.len() < 32768);
    srv.rd.write(&bytes);
    srv.core.pull(&mut srv.rd).unwrap();
    assert_eq!(srv.core.queued(), MAX_QUEUED_MSGS);
    assert!(!srv.rd.is_empty(), "the rest stays in the connection");
    for i in 0..(MAX_QUEUED_MSGS as u32 + 40) {
        assert_eq!(srv.read(false).unwrap().0, i);
        assert!(srv.core.consume());
    }
    assert_eq!(srv.read(false), None);
    assert!(srv.rd.is_empty());
}

#[test]
fn queue_encoded_passes_bytes_through() {
    let mut srv = Side::new(false, 100);
    let mut bytes = Vec::new();
    encode_message(&mut bytes, true, 1, Cmd::Get, &payload(300, 1)).unwrap();
    srv.core.queue_encoded(&bytes, &mut srv.sd);
    assert_eq!(srv.sd.used(), 100);
    assert_eq!(srv.core.pending_output(), bytes.len() - 100);
    let mut got = Vec::new();
    while !srv.sd.is_empty() {
        got.extend_from_slice(srv.sd.data());
        srv.sd.clear();
        srv.core.push(&mut srv.sd);
    }
    assert_eq!(got, bytes);
}

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

#[test]
fn random_bytes_never_panic() {
    let mut x: u64 = 0x2545F4914F6CDD1D;
    for round in 0..3000 {
        let mut s = Side::new(round % 2 == 0, 1 + (xorshift(&mut x) % 5000) as usize);
        let len = (xorshift(&mut x) % 6000) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| xorshift(&mut x) as u8).collect();
        // Mostly well-formed prefixes, so deeper states are reached.
        if round % 3 != 0 && bytes.len() >= 14 {
            bytes[0] = 0;
            bytes[1] = 0x11;
            bytes[4] &= 1;
            bytes[9] = 0;
            bytes[10] &= 3;
            bytes[11] &= 1;
            bytes[12] &= 0x07;
        }
        let mut off = 0;
        while off < bytes.len() {
            let n = s.rd.write(&bytes[off..]);
            off += n;
            let r = s.core.pull(&mut s.rd);
            while s.read(false).is_some() {
                s.core.consume();
            }
            if r.is_err() {
                assert_eq!(s.read(true), None);
                break;
            }
            if n == 0 && s.rd.is_full() {
                // Queue full but nothing consumable: cannot happen because
                // we consume everything above.
                panic!("stalled");
            }
        }
    }
}

#[test]
fn random_valid_traffic_roundtrips() {
    let mut x: u64 = 0x9E3779B97F4A7C15;
    let mut cli = Side::new(true, 3000);
    let mut srv = Side::new(false, 1500);
    let mut sent = Vec::new();
    for i in 0..200u32 {
        let len = match xorshift(&mut x) % 4 {
            0 => (xorshift(&mut x) % 16) as usize,
            1 => (xorshift(&mut x) % 4200) as usize,
            _ => (xorshift(&mut x) % 32769) as usize,
        };
        let cmd = Cmd::from_wire((xorshift(&mut x) % 4) as u8).unwrap();
        let m = Message {
            is_response: false,
            uid: i,
            cmd,
            payload: payload(len, i as u8),
        };
        cli.send(m.uid, m.cmd, &m.payload);
        sent.push(m);
    }
    let mut got = Vec::new();
    let chunk = 1 + (xorshift(&mut x) % 3000) as usize;
    while got.len() < sent.len() {
        pump(&mut cli, &mut srv, chunk).unwrap();
        while let Some((uid, cmd, p)) = srv.read(false) {
            got.push(Message {
                is_response: false,
                uid,
                cmd,
                payload: p,
            });
            srv.core.consume();
        }
    }
    assert_eq!(got, sent);
}

mod over_connections {
    use super::payload;
    use crate::nal::{Connection, Selector};
    use crate::plug::{OwnedConn, Plug};
    use crate::proto::Cmd;
    use std::time::Duration;

    fn pair(size: usize) -> (Plug, Plug) {
        let (mut a, mut b) = (Connection::new(), Connection::new());
        assert!(Connection::create_pair(&mut a, &mut b, size));
        (
            Plug::new(Box::new(OwnedConn(a)), true),
            Plug::new(Box::new(OwnedConn(b)), false),
        )
    }

    /// One round of select + io on both plugs.
    fn step(sel: &mut Selector, a: &mut Plug, b: &mut Plug) -> bool {
        assert!(a.to_select(sel) && b.to_select(sel));
        sel.select(Some(Duration::from_millis(200))).unwrap();
        let ra = a.io();
        let rb = b.io();
        ra && rb
    }

    #[test]
    fn to_select_binds_once_and_refuses_another_selector() {
        let (mut sel1, mut sel2) = (Selector::new(), Selector::new());
        let (mut cli, mut srv) = pair(1000);
        assert!(cli.to_select(&sel1) && srv.to_select(&sel1));
        assert!(cli.to_select(&sel1), "again on the same selector: fine");
        assert!(!cli.to_select(&sel2), "bound elsewhere: refused");
        // Still served by the first selector.
        cli.write(false, 7, Cmd::Have, b"x").unwrap();
        cli.commit().unwrap();
        let mut seen = None;
        for _ in 0..20 {
            assert!(step(&mut sel1, &mut cli, &mut srv));
            if let Some(m) = srv.read(false) {
                seen = Some(m.uid);
                break;
            }
        }
        assert_eq!(seen, Some(7), "the first selector still serves it");
        // Moved explicitly, it works with the second one.
        cli.from_select();
        srv.from_select();
        assert!(cli.to_select(&sel2) && srv.to_select(&sel2));
        sel2.select(Some(Duration::from_millis(50))).unwrap();
        assert!(cli.io());
        // A reset selector's bindings are stale: another selector may take it.
        sel2.reset();
        assert!(cli.to_select(&sel1));
    }

    #[test]
    fn messages_cross_a_socketpair() {
        let mut sel = Selector::new();
        let (mut cli, mut srv) = pair(1000);
        let big = payload(32768, 3);
        cli.write(false, 1, Cmd::Add, &big[..100]).unwrap();
        cli.write_more(&big[100..]).unwrap();
        cli.commit().unwrap();
        cli.write(false, 2, Cmd::Get, b"id").unwrap();
        cli.commit().unwrap();
        let mut got = Vec::new();
        for _ in 0..200 {
            assert!(step(&mut sel, &mut cli, &mut srv));
            while let Some(m) = srv.read(false) {
                got.push((m.uid, m.cmd, m.payload.to_vec()));
                srv.consume();
            }
            if got.len() == 2 {
                break;
            }
        }
        assert_eq!(got[0], (1, Cmd::Add, big));
        assert_eq!(got[1], (2, Cmd::Get, b"id".to_vec()));
        srv.write(false, 2, Cmd::Get, b"answer").unwrap();
        srv.commit().unwrap();
        let mut answer = None;
        for _ in 0..20 {
            assert!(step(&mut sel, &mut cli, &mut srv));
            if let Some(m) = cli.read(false) {
                answer = Some((m.uid, m.cmd, m.payload.to_vec()));
                break;
            }
        }
        assert_eq!(answer, Some((2, Cmd::Get, b"answer".to_vec())));
    }

    #[test]
    fn garbage_fails_io_of_that_plug_only() {
        let mut sel = Selector::new();
        let (mut cli, mut srv) = pair(4096);
        let (mut cli2, mut srv2) = pair(4096);
        // Raw garbage from the client end, bypassing its plug.
        cli.conn().send_buf_mut().write(b"GET / HTTP/1.0\r\n\r\n");
        cli2.write(false, 9, Cmd::Have, b"x").unwrap();
        cli2.commit().unwrap();
        let mut failed = false;
        let mut got = None;
        for _ in 0..20 {
            assert!(cli.to_select(&sel) && cli2.to_select(&sel) && srv2.to_select(&sel));
            if !failed {
                assert!(srv.to_select(&sel));
            }
            sel.select(Some(Duration::from_millis(200))).unwrap();
            assert!(cli.io() && cli2.io() && srv2.io());
            if !failed && !srv.io() {
                failed = true;
                assert!(!srv.core().is_alive());
                assert!(srv.read(false).is_none());
                assert!(!srv.to_select(&sel));
            }
            if let Some(m) = srv2.read(false) {
                got = Some(m.uid);
            }
            if failed && got.is_some() {
                break;
            }
        }
        assert!(failed);
        assert_eq!(got, Some(9));
    }

    #[test]
    fn peer_close_fails_io() {
        let mut sel = Selector::new();
        let (cli, mut srv) = pair(4096);
        drop(cli);
        assert!(srv.to_select(&sel));
        sel.select(Some(Duration::from_millis(200))).unwrap();
        assert!(!srv.io());
    }
}

#[test]
fn plugs_can_move_between_threads() {
    fn is_send<T: Send>() {}
    is_send::<Plug>();
    is_send::<PlugCore>();
}
