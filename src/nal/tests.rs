//! Tests of connections, listeners and selectors over real sockets.

use std::time::Duration;

use super::*;

fn tmp_path(tag: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("dcrs-nal-{}-{tag}.sock", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

fn step(sel: &mut Selector) -> usize {
    sel.select(Some(Duration::from_millis(2000))).unwrap()
}

/// Echo `msg` through a listener on `addr`: the server copies its read
/// buffer into its send buffer; everything runs on one selector.
fn echo(addr: &Address, msg: &[u8]) {
    let mut sel = Selector::new();
    let mut list = Listener::new();
    assert!(list.create(addr, 512));
    assert!(!list.finished());
    assert!(list.add_to_selector(&sel));
    assert!(!list.add_to_selector(&sel), "second add must fail");

    let mut client = Connection::new();
    assert!(client.create(addr, 256));
    assert!(client.add_to_selector(&sel));
    assert!(!client.add_to_selector(&sel));
    assert_eq!(client.send_buf_mut().write(msg), msg.len().min(256));

    let mut server = Connection::new();
    // Nothing selected yet: accept must not succeed (and never blocks).
    assert!(!server.accept(&mut list));
    let mut got = Vec::new();
    let mut sent = msg.len().min(256);
    for _ in 0..200 {
        step(&mut sel);
        if !server.is_created() && server.accept(&mut list) {
            assert!(server.is_established());
            assert_eq!(server.read_buf().size(), 512);
            assert!(server.add_to_selector(&sel));
        }
        assert!(client.io());
        if server.is_created() {
            assert!(server.io());
            let mut b = server.buffers_mut();
            let b = &mut *b;
            let n = b.read.used();
            b.send.transfer_from(&mut b.read, n);
        }
        {
            let mut r = client.read_buf_mut();
            got.extend_from_slice(r.data());
            r.clear();
        }
        if sent < msg.len() {
            sent += client.send_buf_mut().write(&msg[sent..]);
        }
        if got.len() == msg.len() {
            break;
        }
    }
    assert_eq!(got, msg);
    assert!(client.is_established());
    assert_eq!(sel.num_objects(), 3);

    // The peer closing makes io fail.
    drop(server);
    assert_eq!(sel.num_objects(), 2);
    let mut failed = false;
    for _ in 0..10 {
        step(&mut sel);
        if !client.io() {
            failed = true;
            break;
        }
    }
    assert!(failed, "io must fail after peer close");
    client.del_from_selector();
    assert!(!client.io(), "io fails when not bound");
    assert_eq!(sel.num_objects(), 1);
}

#[test]
fn echo_unix() {
    let p = tmp_path("echo");
    let addr = Address::parse(&format!("UNIX:{}", p.display())).unwrap();
    let msg: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
    echo(&addr, &msg);
    let _ = std::fs::remove_file(&p);
}

#[test]
fn echo_tcp() {
    set_nagle(false);
    // Find a free port by trying a range.
    for port in 30000 + (std::process::id() % 1000) as u16 * 20.. {
        let addr = Address::parse(&format!("IP:127.0.0.1:{port}")).unwrap();
        let mut probe = Listener::new();
        if !probe.create(&addr, 100) {
            continue;
        }
        drop(probe);
        echo(&addr, b"hello over tcp");
        break;
    }
}

#[test]
fn listen_only_address_cannot_connect() {
    let addr = Address::parse("IP:9").unwrap();
    let mut c = Connection::new();
    assert!(!c.create(&addr, 100));
    let addr = Address::parse("IP:127.0.0.1:1").unwrap();
    let mut c = Connection::new();
    assert!(!c.create(&addr, MAX_SIZE + 1));
}

const MAX_SIZE: usize = address::MAX_BUFFER_SIZE;

#[test]
fn unix_stale_vs_live() {
    let p = tmp_path("stale");
    let addr = Address::parse(&format!("UNIX:{}", p.display())).unwrap();
    // A stale socket file: bound, then the socket closed without unlinking.
    {
        let s = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
        s.bind(&socket2::SockAddr::unix(&p).unwrap()).unwrap();
    }
    assert!(p.exists());
    let mut a = Listener::new();
    assert!(a.create(&addr, 100), "stale socket file must be replaced");
    // Live server: must not be stolen.
    let mut b = Listener::new();
    assert!(!b.create(&addr, 100));
    assert!(b.finished());
    // A regular file is never removed.
    drop(a);
    let _ = std::fs::remove_file(&p);
    std::fs::write(&p, b"x").unwrap();
    assert!(!b.create(&addr, 100));
    assert_eq!(std::fs::read(&p).unwrap(), b"x");
    let _ = std::fs::remove_file(&p);
}

#[test]
fn fs_perms_and_owner() {
    let p = tmp_path("perms");
    let addr = Address::parse(&format!("UNIX:{}", p.display())).unwrap();
    let mut l = Listener::new();
    assert!(!l.set_fs_perms("600"));
    assert!(l.create(&addr, 100));
    assert!(l.set_fs_perms("640"));
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let m = std::fs::metadata(&p).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, 0o640);
    assert!(!l.set_fs_perms("9"));
    assert!(!l.set_fs_perms(""));
    assert!(!l.set_fs_perms("77777"));
    let uid = m.uid().to_string();
    let gid = m.gid().to_string();
    assert!(l.set_fs_owner(Some(&uid), Some(&gid)));
    assert!(l.set_fs_owner(None, None));
    assert!(!l.set_fs_owner(Some("no-such-user-dcrs"), None));
    drop(l);
    let _ = std::fs::remove_file(&p);
}

#[test]
fn pair_and_reset() {
    let mut sel = Selector::new();
    let (mut a, mut b) = (Connection::new(), Connection::new());
    assert!(Connection::create_pair(&mut a, &mut b, 64));
    assert!(!Connection::create_pair(&mut a, &mut b, 64));
    assert!(a.is_established() && b.is_established());
    assert!(a.add_to_selector(&sel) && b.add_to_selector(&sel));
    a.send_buf_mut().write(b"ping");
    for _ in 0..5 {
        step(&mut sel);
        assert!(a.io() && b.io());
        if b.read_buf().used() == 4 {
            break;
        }
    }
    assert_eq!(b.read_buf().data(), b"ping");
    // set_size refuses sizes smaller than held data, keeps data otherwise.
    assert!(!b.set_size(2));
    assert!(b.set_size(4));
    assert_eq!(b.read_buf().size(), 4);
    // 0 means the default size, which the 4 bytes held fit in.
    assert!(!b.set_size(MAX_SIZE + 1));
    assert!(b.set_size(0));
    assert_eq!(b.read_buf().size(), address::DEFAULT_BUFFER_SIZE);
    assert_eq!(b.read_buf().data(), b"ping");
    assert!(b.set_size(4));
    // Full read buffer: no readability asked; select times out even though
    // data is pending.
    a.send_buf_mut().write(b"more");
    step(&mut sel);
    assert!(a.io());
    assert_eq!(
        sel.select(Some(Duration::from_millis(20))).unwrap(),
        0,
        "full read buffer must not ask for readability"
    );
    b.read_buf_mut().clear();
    step(&mut sel);
    assert!(b.io());
    assert_eq!(b.read_buf().data(), b"more");
    // Reset selector: both unbound, io fails, can add again.
    sel.reset();
    assert_eq!(sel.num_objects(), 0);
    assert!(!a.io());
    assert!(a.add_to_selector(&sel));
    a.reset();
    assert!(!a.is_created() && !a.is_established());
    assert_eq!(sel.num_objects(), 0);
    // Selector dropped before the connection: the connection is unbound.
    assert!(b.add_to_selector(&sel));
    drop(sel);
    assert!(!b.is_bound());
    assert!(!b.io());
}

#[test]
fn failed_connect_is_reported() {
    let p = tmp_path("nobody");
    let addr = Address::parse(&format!("UNIX:{}", p.display())).unwrap();
    let mut c = Connection::new();
    assert!(!c.create(&addr, 100));
    assert!(!c.is_created());
}

#[test]
fn nal_address() {
    let mut a = NalAddress::new();
    assert_eq!(a.def_buffer_size(), address::DEFAULT_BUFFER_SIZE);
    assert!(!a.can_connect() && !a.can_listen());
    assert!(!a.create("IP:127.0.0.1:80", MAX_SIZE + 1));
    assert!(!a.create("garbage", 100));
    assert!(a.create("IP:127.0.0.1:80", 100));
    assert!(
        !a.create("IP:127.0.0.1:81", 100),
        "create twice needs reset"
    );
    assert!(a.can_connect() && a.can_listen());
    assert_eq!(a.def_buffer_size(), 100);
    assert!(!a.set_def_buffer_size(MAX_SIZE + 1));
    assert!(a.set_def_buffer_size(MAX_SIZE));
    assert!(a.set_def_buffer_size(0));
    assert_eq!(a.def_buffer_size(), 0);
    a.reset();
    assert!(a.create("IP:80", 10));
    assert!(!a.can_connect() && a.can_listen());
    a.reset();
    assert!(a.create("UNIX:/tmp/y", 0));
    assert_eq!(a.def_buffer_size(), 0);
    a.reset();
    let e = a.try_create("UNIX:", 10).unwrap_err();
    assert!(e.original_accepted(), "{e}");
    assert!(a.address().is_none());
}

/// Buffer size 0 (accepted as an address's default, a pair's size and
/// NAL_CONNECTION_set_size's) gives connections the default size, so they
/// can still send and receive: through a listener and a connect made from
/// size-0 addresses, and through a size-0 pair.
#[test]
fn size_zero_means_default() {
    let p = tmp_path("zero");
    let addr = Address::parse(&format!("UNIX:{}", p.display())).unwrap();
    let mut list = Listener::new();
    assert!(list.create(&addr, 0));
    let mut sel = Selector::new();
    assert!(list.add_to_selector(&sel));
    let mut client = Connection::new();
    assert!(client.create(&addr, 0));
    assert_eq!(client.send_buf().size(), address::DEFAULT_BUFFER_SIZE);
    assert!(client.add_to_selector(&sel));
    let msg = vec![7u8; 5000];
    let mut sent = client.send_buf_mut().write(&msg);
    let mut server = Connection::new();
    let mut got = Vec::new();
    for _ in 0..500 {
        if got.len() == msg.len() {
            break;
        }
        step(&mut sel);
        if !server.is_created() && server.accept(&mut list) {
            assert_eq!(server.read_buf().size(), address::DEFAULT_BUFFER_SIZE);
            assert!(server.add_to_selector(&sel));
        }
        assert!(client.io());
        if server.is_created() {
            assert!(server.io());
            let mut b = server.buffers_mut();
            let b = &mut *b;
            b.send.transfer_from(&mut b.read, usize::MAX);
        }
        {
            let mut r = client.read_buf_mut();
            got.extend_from_slice(r.data());
            r.clear();
        }
        sent += client.send_buf_mut().write(&msg[sent..]);
    }
    assert_eq!(got, msg);
    let _ = std::fs::remove_file(&p);
    let (mut a, mut b) = (Connection::new(), Connection::new());
    assert!(Connection::create_pair(&mut a, &mut b, 0));
    assert_eq!(a.read_buf().size(), address::DEFAULT_BUFFER_SIZE);
    assert!(!Connection::create_pair(
        &mut Connection::new(),
        &mut Connection::new(),
        MAX_SIZE + 1
    ));
}

#[test]
fn objects_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Connection>();
    check::<Listener>();
    check::<Selector>();
    check::<NalAddress>();
}

#[test]
fn guard_held_across_select_does_not_deadlock() {
    let mut sel = Selector::new();
    let (mut a, mut b) = (Connection::new(), Connection::new());
    assert!(Connection::create_pair(&mut a, &mut b, 64));
    assert!(a.add_to_selector(&sel) && b.add_to_selector(&sel));
    b.send_buf_mut().write(b"x");
    // First select records b's interest (writable); then hold a guard on b
    // while selecting again: the previous interest is reused.
    assert_eq!(step(&mut sel), 1);
    let g = b.read_buf();
    assert_eq!(step(&mut sel), 1);
    drop(g);
    assert!(b.io());
    step(&mut sel);
    assert!(a.io());
    assert_eq!(a.read_buf().data(), b"x");
}

#[test]
fn tcp_connect_refused_fails_io() {
    // Find a port with nothing listening: bind one, note it, close it.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let addr = Address::parse(&format!("IP:127.0.0.1:{port}")).unwrap();
    let mut sel = Selector::new();
    let mut c = Connection::new();
    if !c.create(&addr, 100) {
        assert!(!c.is_created()); // refused at once: also correct
        return;
    }
    assert!(c.add_to_selector(&sel));
    let mut ok = true;
    for _ in 0..10 {
        step(&mut sel);
        ok = c.io();
        if !ok {
            break;
        }
    }
    assert!(!ok);
    assert!(!c.is_established());
}
