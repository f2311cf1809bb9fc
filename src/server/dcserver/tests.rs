use super::*;
use crate::nal::{Connection, Selector};
use crate::plug::OwnedConn;
use crate::proto::{encode_add, encode_message, status, Cmd};
use crate::server::cache::Cache;
use std::time::Duration;

struct Rig {
    sel: Selector,
    srv: DcServer,
}

impl Rig {
    fn new(capacity: usize) -> Rig {
        Rig {
            sel: Selector::new(),
            srv: DcServer::new(Box::new(Cache::new(capacity))),
        }
    }

    /// A client plug (TO_SERVER) whose other end is an in-server client.
    fn connect(&mut self, in_server: bool) -> (Plug, ClientId) {
        let (mut a, mut b) = (Connection::new(), Connection::new());
        assert!(Connection::create_pair(&mut a, &mut b, 4096));
        assert!(a.add_to_selector(&self.sel));
        if in_server {
            assert!(b.add_to_selector(&self.sel));
        }
        let id = self.srv.new_client(Box::new(OwnedConn(b)), in_server).id();
        (Plug::new(Box::new(OwnedConn(a)), true), id)
    }

    /// Select once and run everybody's I/O.
    fn step(&mut self, plugs: &mut [&mut Plug], now: u64) -> usize {
        self.sel.select(Some(Duration::from_millis(100))).unwrap();
        for p in plugs.iter_mut() {
            p.io();
        }
        self.srv.clients_io(now)
    }
}

fn add_payload(id: &[u8], data: &[u8], timeout: u32) -> Vec<u8> {
    let mut p = Vec::new();
    encode_add(&mut p, timeout, id, data);
    p
}

/// Send one request and wait for its answer.
fn call(rig: &mut Rig, p: &mut Plug, uid: u32, cmd: Cmd, payload: &[u8], now: u64) -> Vec<u8> {
    p.write(false, uid, cmd, payload).unwrap();
    p.commit().unwrap();
    for _ in 0..50 {
        rig.step(&mut [p], now);
        if let Some(m) = p.read(false) {
            assert_eq!((m.uid, m.cmd), (uid, cmd));
            let v = m.payload.to_vec();
            p.consume();
            return v;
        }
    }
    panic!("no answer");
}

#[test]
fn answers_every_command_and_judges_expiry_by_the_callers_clock() {
    let mut rig = Rig::new(100);
    let (mut p, _) = rig.connect(true);
    let sess = vec![0xAB; 3000];
    assert_eq!(
        call(
            &mut rig,
            &mut p,
            1,
            Cmd::Add,
            &add_payload(b"id1", &sess, 1000),
            5000
        ),
        [status::OK]
    );
    assert_eq!(
        call(
            &mut rig,
            &mut p,
            2,
            Cmd::Add,
            &add_payload(b"id1", b"x", 1000),
            5000
        ),
        [status::ADD_MATCHING_SESSION]
    );
    assert_eq!(call(&mut rig, &mut p, 3, Cmd::Get, b"id1", 5999), sess);
    assert_eq!(
        call(&mut rig, &mut p, 4, Cmd::Have, b"id1", 5999),
        [status::OK]
    );
    assert_eq!(rig.srv.items_stored(5999), 1);
    // Expired at 6000 by the caller's clock.
    assert_eq!(
        call(&mut rig, &mut p, 5, Cmd::Have, b"id1", 6000),
        [status::NOTOK]
    );
    assert_eq!(
        call(&mut rig, &mut p, 6, Cmd::Get, b"id1", 6000),
        [status::NOTOK]
    );
    assert_eq!(rig.srv.items_stored(6000), 0);
    call(
        &mut rig,
        &mut p,
        7,
        Cmd::Add,
        &add_payload(b"id2", b"y", 1000),
        7000,
    );
    assert_eq!(
        call(&mut rig, &mut p, 8, Cmd::Remove, b"id2", 7000),
        [status::OK]
    );
    assert_eq!(
        call(&mut rig, &mut p, 9, Cmd::Remove, b"id2", 7000),
        [status::NOTOK]
    );
    assert_eq!(rig.srv.num_operations(), 9);
    assert_eq!(rig.srv.stats().hits, 1);
    rig.srv.reset_operations();
    assert_eq!(rig.srv.num_operations(), 0);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let mut rig = Rig::new(100);
    let (mut p, _) = rig.connect(true);
    for i in 0..30u32 {
        let id = format!("sess{i}");
        p.write(
            false,
            i,
            Cmd::Add,
            &add_payload(id.as_bytes(), &vec![i as u8; 5000], 60000),
        )
        .unwrap();
        p.commit().unwrap();
        p.write(false, 1000 + i, Cmd::Get, id.as_bytes()).unwrap();
        p.commit().unwrap();
    }
    let mut answers = Vec::new();
    for _ in 0..500 {
        rig.step(&mut [&mut p], 1);
        while let Some(m) = p.read(false) {
            answers.push((m.uid, m.payload.to_vec()));
            p.consume();
        }
        if answers.len() == 60 {
            break;
        }
    }
    assert_eq!(answers.len(), 60);
    for i in 0..30u32 {
        assert_eq!(answers[2 * i as usize], (i, vec![status::OK]));
        assert_eq!(answers[2 * i as usize + 1], (1000 + i, vec![i as u8; 5000]));
    }
}

#[test]
fn corrupt_or_closed_clients_are_dropped_without_affecting_others() {
    let mut rig = Rig::new(100);
    let (mut good, _) = rig.connect(true);
    let (mut bad, _) = rig.connect(true);
    let (closer, _) = rig.connect(true);
    let (mut short_add, _) = rig.connect(true);
    assert_eq!(rig.srv.num_clients(), 4);
    bad.conn().send_buf_mut().write(b"GET / HTTP/1.0\r\n\r\n");
    drop(closer);
    // An ADD payload under 8 bytes: closed without an answer.
    short_add.write(false, 1, Cmd::Add, b"1234567").unwrap();
    short_add.commit().unwrap();
    let mut dropped = 0;
    for _ in 0..10 {
        dropped += rig.step(&mut [&mut bad, &mut short_add], 0);
        if dropped == 3 {
            break;
        }
    }
    assert_eq!(dropped, 3);
    assert_eq!(rig.srv.num_clients(), 1);
    assert_eq!(
        call(&mut rig, &mut good, 1, Cmd::Have, b"nothing", 0),
        [status::NOTOK]
    );
    // The dropped ends see the close.
    let mut closed = false;
    for _ in 0..10 {
        rig.sel.select(Some(Duration::from_millis(50))).unwrap();
        if !short_add.io() {
            closed = true;
            break;
        }
    }
    assert!(closed);
    assert!(short_add.read(false).is_none());
}

#[test]
fn caller_driven_clients_use_process_client() {
    let mut rig = Rig::new(100);
    let (mut p, id) = rig.connect(false);
    // The caller binds and drives the server end itself.
    let sel2 = Selector::new();
    assert!(rig
        .srv
        .client_mut(id)
        .unwrap()
        .plug()
        .conn()
        .add_to_selector(&sel2));
    let mut bytes = Vec::new();
    encode_message(
        &mut bytes,
        false,
        5,
        Cmd::Add,
        &add_payload(b"k", b"v", 100),
    )
    .unwrap();
    encode_message(&mut bytes, false, 6, Cmd::Get, b"k").unwrap();
    p.conn().send_buf_mut().write(&bytes);
    let mut sel2 = sel2;
    let mut got = Vec::new();
    for _ in 0..20 {
        rig.sel.select(Some(Duration::from_millis(20))).unwrap();
        assert!(p.io());
        sel2.select(Some(Duration::from_millis(20))).unwrap();
        assert!(rig.srv.client_mut(id).unwrap().plug().conn().io());
        assert!(rig.srv.process_client(id, 10));
        // clients_io leaves caller-driven clients alone.
        assert_eq!(rig.srv.clients_io(10), 0);
        while let Some(m) = p.read(false) {
            got.push((m.uid, m.payload.to_vec()));
            p.consume();
        }
        if got.len() == 2 {
            break;
        }
    }
    assert_eq!(got, vec![(5, vec![status::OK]), (6, b"v".to_vec())]);
    // A corrupt stream makes process_client fail; the caller deletes.
    p.conn().send_buf_mut().write(&[0, 0x12, 0, 0, 0, 0, 0]);
    let mut failed = false;
    for _ in 0..20 {
        rig.sel.select(Some(Duration::from_millis(20))).unwrap();
        p.io();
        sel2.select(Some(Duration::from_millis(20))).unwrap();
        rig.srv.client_mut(id).unwrap().plug().conn().io();
        if !rig.srv.process_client(id, 10) {
            failed = true;
            break;
        }
    }
    assert!(failed);
    assert!(rig.srv.del_client(id));
    assert!(!rig.srv.del_client(id));
    assert!(!rig.srv.process_client(id, 10));
    assert!(rig.srv.clients_empty());
}

#[test]
fn client_back_reference_points_to_its_server() {
    let mut srv = Box::new(DcServer::new(Box::new(Cache::new(64))));
    let (mut a, mut b) = (Connection::new(), Connection::new());
    assert!(Connection::create_pair(&mut a, &mut b, 1024));
    let owner = srv.new_client(Box::new(OwnedConn(b)), true).owner();
    assert!(std::ptr::eq(owner, &*srv));
}

#[test]
fn unbound_in_server_clients_are_kept_until_bound() {
    let mut rig = Rig::new(100);
    let (mut a, mut b) = (Connection::new(), Connection::new());
    assert!(Connection::create_pair(&mut a, &mut b, 4096));
    assert!(a.add_to_selector(&rig.sel));
    let id = rig.srv.new_client(Box::new(OwnedConn(b)), true).id();
    let mut p = Plug::new(Box::new(OwnedConn(a)), true);
    p.write(false, 3, Cmd::Have, b"id").unwrap();
    p.commit().unwrap();
    for _ in 0..3 {
        assert_eq!(rig.step(&mut [&mut p], 0), 0);
    }
    assert_eq!(rig.srv.num_clients(), 1);
    assert!(p.read(false).is_none(), "no I/O while unbound");
    // Bound late: served from then on.
    let sel = &rig.sel;
    assert!(rig
        .srv
        .client_mut(id)
        .unwrap()
        .plug()
        .conn()
        .add_to_selector(sel));
    let mut first = None;
    for _ in 0..20 {
        rig.step(&mut [&mut p], 0);
        if let Some(m) = p.read(false) {
            first = Some((m.uid, m.payload.to_vec()));
            p.consume();
            break;
        }
    }
    assert_eq!(first, Some((3, vec![status::NOTOK])));
    assert_eq!(
        call(&mut rig, &mut p, 4, Cmd::Have, b"id", 0),
        [status::NOTOK]
    );
}

#[test]
fn a_client_that_does_not_read_holds_bounded_output() {
    // Issue 13, finding 4 for the engine: the answers waiting for a client
    // that pipelines GETs and never reads stay under MAX_PENDING_OUTPUT
    // (plus one answer); its further requests wait in its connection.
    let mut rig = Rig::new(10);
    let (mut p, id) = rig.connect(true);
    let sess = vec![0x5A; 30_000];
    assert_eq!(
        call(
            &mut rig,
            &mut p,
            1,
            Cmd::Add,
            &add_payload(b"big", &sess, 60_000),
            0
        ),
        [status::OK]
    );
    let mut sent = 0u32;
    let mut worst = 0usize;
    for _ in 0..200 {
        // Queue GETs while the client's plug takes them; never read.
        while sent < 2000 && p.write(false, 10 + sent, Cmd::Get, b"big").is_ok() {
            if p.commit().is_err() {
                break;
            }
            sent += 1;
        }
        rig.sel.select(Some(Duration::from_millis(5))).unwrap();
        p.conn().io();
        rig.srv.clients_io(1);
        let c = rig.srv.client_mut(id).expect("client kept");
        worst = worst.max(c.plug().core().pending_output());
    }
    assert!(sent > 20, "the client pipelined ({sent} GETs)");
    assert!(
        (MAX_PENDING_OUTPUT..MAX_PENDING_OUTPUT + 33_000).contains(&worst),
        "pending output peaked at {worst}"
    );
}
