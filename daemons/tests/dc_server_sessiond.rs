//! Integration tests of `dc_server -sessiond`: stunnel's UDP session cache
//! protocol served next to the distcache protocol, over a separate cache.
//! Every test drives the real binary over its UDP port (datagram layout as
//! established for stunnel 5.68: see the header of src/server/sessiond.rs).

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::sessiond::*;
use common::*;
use distcache_rs::client::{AddOutcome, Client};

#[test]
fn new_get_remove_overwrite() {
    let srv = Server::start(&[]);
    let (a, b) = (sock(), sock());
    let k = key(1);
    let v1 = der(1, 132);
    // NEW is never answered; a GET from another socket (another source
    // port, as stunnel uses a fresh socket per request) finds it.
    send_dgram(&a, srv.udp, &dgram(NEW, 300, &k, &v1));
    expect_hit(&b, srv.udp, &k, &v1);
    // Miss: an explicit ERR echoing the key.
    expect_miss(&b, srv.udp, &key(2));
    // Overwrite: a NEW for a stored key replaces the value.
    let v2 = der(9, 148);
    send_dgram(&a, srv.udp, &dgram(NEW, 300, &k, &v2));
    expect_hit(&b, srv.udp, &k, &v2);
    // The largest value stunnel sends (512 bytes) goes through whole.
    let k3 = key(3);
    let big = der(3, 512);
    send_dgram(&a, srv.udp, &dgram(NEW, 300, &k3, &big));
    expect_hit(&a, srv.udp, &k3, &big);
    // REMOVE is not answered and deletes.
    send_dgram(&a, srv.udp, &dgram(REMOVE, 0, &k, &[]));
    expect_miss(&b, srv.udp, &k);
    expect_hit(&b, srv.udp, &k3, &big);
    // Nothing was ever sent to `a` but the one GET answer it asked for.
    a.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 1024];
    assert!(a.recv_from(&mut buf).is_err(), "unexpected datagram");
    let status = srv.last_status();
    assert!(
        status.contains("news=3 gets=6 hits=4 removes=1 dropped=0"),
        "{status}"
    );
    assert!(status.contains("items=1/512"), "{status}");
}

#[test]
fn sessions_expire() {
    let srv = Server::start(&[]);
    let s = sock();
    let (short, long) = (key(4), key(5));
    send_dgram(&s, srv.udp, &dgram(NEW, 1, &short, b"\x30\x01x"));
    send_dgram(&s, srv.udp, &dgram(NEW, 60, &long, b"\x30\x01y"));
    expect_hit(&s, srv.udp, &short, b"\x30\x01x");
    std::thread::sleep(Duration::from_millis(1100));
    expect_miss(&s, srv.udp, &short);
    expect_hit(&s, srv.udp, &long, b"\x30\x01y");
    // A zero timeout stores nothing visible.
    let zero = key(6);
    send_dgram(&s, srv.udp, &dgram(NEW, 0, &zero, b"\x30\x01z"));
    expect_miss(&s, srv.udp, &zero);
}

#[test]
fn malformed_datagrams_are_dropped_silently() {
    let srv = Server::start(&[]);
    let s = sock();
    let k = key(7);
    send_dgram(&s, srv.udp, &dgram(NEW, 300, &k, b"\x30\x02ok"));
    let mut bad_version = dgram(GET, 0, &k, &[]);
    bad_version[0] = 2;
    let mut zero_version = dgram(GET, 0, &k, &[]);
    zero_version[0] = 0;
    let cases: Vec<Vec<u8>> = vec![
        vec![],                                // empty
        vec![1],                               // 1 byte
        dgram(GET, 0, &k, &[])[..35].to_vec(), // header minus one
        bad_version,                           // version 2
        zero_version,                          // version 0
        dgram(0x03, 0, &k, &[]),               // unknown type
        dgram(0x7f, 0, &k, &[]),               // unknown type
        dgram(OK, 0, &k, b"\x30\x01x"),        // a reply sent to us
        dgram(ERR, 0, &k, &[]),                // a reply sent to us
        dgram(NEW, 300, &k, &[]),              // NEW without a value
        dgram(GET, 0, &k, b"x"),               // GET with a value
        dgram(REMOVE, 0, &k, b"x"),            // REMOVE with a value
        dgram(NEW, 300, &k, &der(1, 513)),     // value one byte too long
        dgram(NEW, 300, &k, &der(1, 4000)),    // far too long
        dgram(GET, 0, &k, &vec![0; 60_000]),   // huge
    ];
    for d in &cases {
        send_dgram(&s, srv.udp, d);
    }
    // The server handles one socket's datagrams in order: had it answered
    // any malformed one, that answer would arrive before this GET's.
    expect_hit(&s, srv.udp, &k, b"\x30\x02ok");
    // A malformed REMOVE or NEW changed nothing.
    expect_hit(&sock(), srv.udp, &k, b"\x30\x02ok");
    // The distcache side is still served too.
    let c = srv.distcache();
    assert!(matches!(
        c.add(b"dc-id", b"dc-data", 10_000),
        Ok(AddOutcome::Stored)
    ));
    let status = srv.last_status();
    assert!(
        status.contains(&format!("dropped={}", cases.len())),
        "{status}"
    );
    assert!(
        status.contains("news=1 gets=2 hits=2 removes=0"),
        "{status}"
    );
}

#[test]
fn key_spaces_are_apart() {
    let srv = Server::start(&[]);
    let s = sock();
    let c = srv.distcache();
    // A distcache ADD of a 32-byte id is not visible to sessiond ...
    let k = key(8);
    assert!(matches!(
        c.add(&k, b"distcache-session", 60_000),
        Ok(AddOutcome::Stored)
    ));
    expect_miss(&s, srv.udp, &k);
    // ... and a sessiond NEW is not visible to distcache, even under the
    // same id: both stores keep their own value.
    send_dgram(&s, srv.udp, &dgram(NEW, 300, &k, b"\x30\x03tls"));
    expect_hit(&s, srv.udp, &k, b"\x30\x03tls");
    assert_eq!(&*c.get(&k).unwrap().unwrap(), b"distcache-session");
    let k2 = key(9);
    send_dgram(&s, srv.udp, &dgram(NEW, 300, &k2, b"\x30\x03tls"));
    expect_hit(&s, srv.udp, &k2, b"\x30\x03tls");
    assert!(c.get(&k2).unwrap().is_none());
    assert!(!c.has(&k2).unwrap());
    // Removing on one side leaves the other.
    assert!(c.remove(&k).unwrap());
    expect_hit(&s, srv.udp, &k, b"\x30\x03tls");
    send_dgram(&s, srv.udp, &dgram(REMOVE, 0, &k2, &[]));
    assert!(c.add(&k2, b"later", 60_000).is_ok());
    expect_miss(&s, srv.udp, &k2);
}

#[test]
fn sessiond_capacity_is_its_own() {
    // Two sessiond sessions at most, four distcache ones: filling one store
    // never evicts from the other.
    let srv = Server::start(&["-sessions", "4", "-sessiond-sessions", "2"]);
    let s = sock();
    let c = srv.distcache();
    for i in 0..4u8 {
        assert!(c.add(&[b'd', i], b"data", 60_000).is_ok());
    }
    for i in 0..3u8 {
        send_dgram(
            &s,
            srv.udp,
            &dgram(NEW, 300 + u16::from(i), &key(20 + i), &[0x30, i]),
        );
    }
    // The oldest stored (the first) made room for the third.
    expect_miss(&s, srv.udp, &key(20));
    expect_hit(&s, srv.udp, &key(21), &[0x30, 1]);
    expect_hit(&s, srv.udp, &key(22), &[0x30, 2]);
    for i in 0..4u8 {
        assert!(c.has(&[b'd', i]).unwrap(), "distcache session {i} evicted");
    }
    let status = srv.last_status();
    assert!(status.contains("items=4/4 "), "{status}");
    assert!(status.ends_with("items=2/2"), "{status}");
}

#[test]
fn address_forms() {
    // The libnal form is accepted as well as stunnel's host:port.
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = TempDir::new("sessiond-addr");
    let listen = dir.addr("dc");
    let sd = format!("IP:127.0.0.1:{port}");
    let p1 = Proc::spawn(BIN, &["-listen", &listen, "-sessiond", &sd]);
    wait_for_socket(&dir.path("dc"));
    let s = sock();
    let to: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    expect_miss(&s, to, &key(30));
    // All interfaces (`IP:port`) works, with a warning: no authentication.
    let port2 = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen2 = dir.addr("dc2");
    let wild = format!("IP:{port2}");
    let p2 = Proc::spawn(
        BIN,
        &[
            "-listen",
            &listen2,
            "-sessiond",
            &wild,
            "-sessiond-allow",
            "127.0.0.1/32",
        ],
    );
    wait_for_socket(&dir.path("dc2"));
    let to2: SocketAddr = format!("127.0.0.1:{port2}").parse().unwrap();
    expect_miss(&s, to2, &key(31));
    let (code, err) = p2.terminate();
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains(&format!(
            "warning: sessiond address 0.0.0.0:{port2} is not loopback or private"
        )),
        "{err}"
    );
    // No warning for loopback.
    let (code, err) = p1.terminate();
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("serving stunnel sessiond on UDP 127.0.0.1:"),
        "{err}"
    );
    assert!(!err.contains("warning"), "{err}");
    // Refused: IPv6 (stunnel's client is IPv4 only), UNIX, junk, no port.
    for bad in [
        "IPv6:[::1]:9002",
        "UNIX:/tmp/x",
        "127.0.0.1",
        "nonsense:port",
        "",
    ] {
        let (code, _, err) = run(
            BIN,
            &["-listen", &dir.addr("other"), "-sessiond", bad],
            Duration::from_secs(10),
        );
        assert_eq!(code, Some(1), "-sessiond {bad:?} accepted");
        assert!(err.contains("-sessiond"), "{err}");
    }
}

/// `-sessiond-allow`: datagrams from other sources are dropped unanswered,
/// logged and counted (`refused=` in the status line); the default with a
/// loopback bind address is 127.0.0.0/8; a non-loopback bind address needs
/// the flag; the flag needs -sessiond.
#[test]
fn sources_outside_the_allow_list_are_refused() {
    let srv = Server::start(&["-sessiond-allow", "127.0.0.1/32"]);
    let good = sock();
    // 127.0.0.2 is a local address on Linux, yet outside 127.0.0.1/32.
    let other = UdpSocket::bind("127.0.0.2:0").unwrap();
    other
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let k = key(40);
    send_dgram(&good, srv.udp, &dgram(NEW, 300, &k, &der(4, 120)));
    other.send_to(&dgram(GET, 0, &k, &[]), srv.udp).unwrap();
    let mut buf = [0u8; 2048];
    assert!(
        other.recv_from(&mut buf).is_err(),
        "a source outside -sessiond-allow got an answer"
    );
    // A NEW from the refused source plants nothing.
    let k2 = key(41);
    other
        .send_to(&dgram(NEW, 300, &k2, &der(5, 120)), srv.udp)
        .unwrap();
    expect_hit(&good, srv.udp, &k, &der(4, 120));
    expect_miss(&good, srv.udp, &k2);
    let status = srv.last_status();
    assert!(status.contains("refused=2"), "{status}");

    // Default with a loopback address: all of 127/8 is served.
    let srv = Server::start(&[]);
    let k3 = key(42);
    let other = UdpSocket::bind("127.0.0.2:0").unwrap();
    other
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    expect_miss(&other, srv.udp, &k3);
    let status = srv.last_status();
    assert!(status.contains("refused=0"), "{status}");

    // A wildcard or other non-loopback bind address needs the flag.
    let dir = TempDir::new("sdallow");
    let (code, _, err) = run(
        BIN,
        &["-listen", &dir.addr("a"), "-sessiond", "IP:9"],
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(
            "flag -sessiond-allow: required when -sessiond 0.0.0.0:9 is not a loopback address"
        ),
        "{err}"
    );
    for (args, want) in [
        (
            vec!["-sessiond-allow", "127.0.0.1/32"],
            "flag -sessiond-allow: needs -sessiond",
        ),
        (
            vec!["-sessiond", "127.0.0.1:9", "-sessiond-allow", "10.0.0.0/40"],
            "flag -sessiond-allow: '10.0.0.0/40': the prefix length must be 0..32",
        ),
    ] {
        let addr = dir.addr("b");
        let mut all = vec!["-listen", addr.as_str()];
        all.extend(args);
        let (code, _, err) = run(BIN, &all, Duration::from_secs(10));
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains(want), "{err}");
    }
}

/// With `-snapshot FILE`, the sessiond cache is kept too (in
/// `FILE.sessiond`): stunnel's sessions survive a restart like the
/// distcache ones, each in its own key space.
#[test]
fn sessiond_sessions_survive_a_restart_with_snapshot() {
    let dir = TempDir::new("sessiond-snap");
    let snap = dir.path("sessions.snapshot").display().to_string();
    let listen = dir.addr("dc");
    let start = |port: u16| {
        let sd = format!("127.0.0.1:{port}");
        let args = [
            "-listen",
            listen.as_str(),
            "-sessiond",
            sd.as_str(),
            "-snapshot",
            snap.as_str(),
        ];
        let mut p = Proc::spawn_with(BIN, &args, Stdio::null(), Stdio::piped());
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(dir.path("dc")).is_err() {
            assert!(
                Instant::now() < deadline && p.alive(),
                "dc_server did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        (p, sd.parse::<SocketAddr>().unwrap())
    };
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (p, udp) = start(port);
    let s = sock();
    let (k1, v1) = (key(7), der(7, 140));
    let (k2, v2) = (key(8), der(8, 300));
    send_dgram(&s, udp, &dgram(NEW, 300, &k1, &v1));
    send_dgram(&s, udp, &dgram(NEW, 300, &k2, &v2));
    expect_hit(&s, udp, &k2, &v2);
    let c = Client::new(&dir.addr("dc"), 0).unwrap();
    assert_eq!(
        c.add(b"distcache-id", b"distcache-data", 300_000).unwrap(),
        AddOutcome::Stored
    );
    drop(c);
    let (code, err) = p.terminate();
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains(".sessiond"),
        "no sessiond snapshot line: {err}"
    );
    let (p, udp) = start(port);
    expect_hit(&s, udp, &k1, &v1);
    expect_hit(&s, udp, &k2, &v2);
    expect_miss(&s, udp, &key(9));
    let c = Client::new(&dir.addr("dc"), 0).unwrap();
    assert_eq!(
        c.get(b"distcache-id").unwrap().map(|v| v.to_vec()),
        Some(b"distcache-data".to_vec())
    );
    // Key spaces stay apart: the sessiond key is not a distcache id.
    assert!(c.get(&k1).unwrap().is_none());
    drop(c);
    let (code, err) = p.terminate();
    assert_eq!(code, Some(0), "{err}");
}
