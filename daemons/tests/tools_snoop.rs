//! dc_snoop between an application and a scripted fake server: bytes are
//! relayed unchanged both ways, every message is logged decoded, corrupt
//! streams and closes are handled per connection.

mod common;

use std::fs::File;
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

fn accept(l: &UnixListener) -> UnixStream {
    l.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                return s;
            }
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("no connection: {e}"),
        }
    }
}

fn snoop(dir: &TempDir, extra: &[&str]) -> (Proc, std::path::PathBuf) {
    let log = dir.path("snoop.log");
    let out = File::create(&log).unwrap();
    let listen = dir.addr("snoop");
    let srv = dir.addr("srv");
    let mut args = vec!["-listen", listen.as_str(), "-server", srv.as_str()];
    args.extend_from_slice(extra);
    let p = Proc::spawn_with(
        env!("CARGO_BIN_EXE_dc_snoop"),
        &args,
        Stdio::from(out),
        Stdio::piped(),
    );
    wait_for_socket(&dir.path("snoop"));
    (p, log)
}

#[test]
fn relays_byte_exact_and_logs_decoded_messages() {
    let all = wire_cases();
    let add = case(&all, "dcclient_raw_add_5137_multiframe");
    let get = case(&all, "dcclient_raw_get_5120_multiframe");
    let dir = TempDir::new("snoop");
    let fake = UnixListener::bind(dir.path("srv")).unwrap();
    let (p, log) = snoop(&dir, &["-hex"]);
    // wait_for_socket made (and closed) a probe connection: drain it.
    let probe = accept(&fake);
    drop(probe);
    let mut app = connect(&dir.path("snoop"));
    let mut srv_side = accept(&fake);
    for c in [add, get] {
        let req = unhex(c.str("request_hex").unwrap());
        let resp = unhex(c.str("response_hex").unwrap());
        // Sent in odd pieces: the relay must not care.
        for piece in req.chunks(1000) {
            send(&mut app, piece);
        }
        assert_eq!(read_n(&mut srv_side, req.len()), req);
        send(&mut srv_side, &resp);
        assert_eq!(read_n(&mut app, resp.len()), resp);
    }
    // Failure answers as a proxy gives them.
    send(
        &mut app,
        &unhex("001100000000007a690001010007736f6d652d6964"),
    );
    read_n(&mut srv_side, 21);
    send(&mut srv_side, &unhex("001100000100007a69000101000102"));
    read_n(&mut app, 15);
    // The client closing closes the server side.
    drop(app);
    expect_eof(&mut srv_side);
    std::thread::sleep(Duration::from_millis(100));
    let (_, _) = p.terminate();
    let text = std::fs::read_to_string(&log).unwrap();
    let want = [
        "conn#2 c->s REQ  uid=77 ADD len=5135 frames=3 timeout_ms=300000 id_len=7 data_len=5120",
        "conn#2 s->c RESP uid=77 ADD len=1 result=OK",
        "conn#2 c->s REQ  uid=78 GET len=7 id_len=7",
        "conn#2 s->c RESP uid=78 GET len=5120 frames=3 result=HIT data_len=5120",
        "conn#2 c->s REQ  uid=31337 GET len=7 id_len=7",
        "conn#2 s->c RESP uid=31337 GET len=1 result=DISCONNECTED",
        "conn#2 client closed its side",
    ];
    for w in want {
        assert!(text.contains(w), "missing {w:?} in log:\n{text}");
    }
    // -hex dumps payloads.
    assert!(
        text.contains("    000000  62 69 67 2d 76 69 61"),
        "no hex dump:\n{text}"
    );
    // Each message line starts with a time stamp.
    let line = text.lines().find(|l| l.contains("uid=77 ADD")).unwrap();
    assert_eq!(&line[2..3], ":", "{line}");
}

#[test]
fn corrupt_stream_is_reported_and_closed() {
    let dir = TempDir::new("snoopbad");
    let fake = UnixListener::bind(dir.path("srv")).unwrap();
    let (p, log) = snoop(&dir, &[]);
    drop(accept(&fake));
    // A client speaking HTTP.
    let mut app = connect(&dir.path("snoop"));
    let mut srv_side = accept(&fake);
    send(&mut app, b"GET / HTTP/1.0\r\n\r\n");
    expect_eof(&mut app);
    expect_eof(&mut srv_side);
    // A server answering garbage; another connection is unaffected.
    let mut a1 = connect(&dir.path("snoop"));
    let mut s1 = accept(&fake);
    let mut a2 = connect(&dir.path("snoop"));
    let mut s2 = accept(&fake);
    send(&mut a1, &unhex("001100000000000001000301000178"));
    read_n(&mut s1, 15);
    send(&mut s1, &unhex("001100000200000001000301000100"));
    expect_eof(&mut a1);
    send(&mut a2, &unhex("001100000000000002000301000178"));
    read_n(&mut s2, 15);
    send(&mut s2, &unhex("001100000100000002000301000101"));
    assert_eq!(hex(&read_n(&mut a2, 15)), "001100000100000002000301000101");
    // The server closing closes the client side.
    drop(s2);
    expect_eof(&mut a2);
    std::thread::sleep(Duration::from_millis(100));
    let (_, _) = p.terminate();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("conn#2 closed: corrupt stream from client: protocol incompatibility"),
        "{text}"
    );
    assert!(
        text.contains("conn#3 closed: corrupt stream from server: corrupt frame: is_response=2"),
        "{text}"
    );
    assert!(
        text.contains("conn#4 s->c RESP uid=2 HAVE len=1 result=NOTOK"),
        "{text}"
    );
    assert!(text.contains("conn#4 server closed its side"), "{text}");
}

#[test]
fn unreachable_server_closes_the_client() {
    let dir = TempDir::new("snoopnosrv");
    let (p, log) = snoop(&dir, &[]);
    let mut app = connect(&dir.path("snoop"));
    expect_eof(&mut app);
    let _ = p.terminate();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("cannot connect to"), "{text}");
}

#[test]
fn bad_flags_give_an_error_line_and_nonzero_exit() {
    let exe = env!("CARGO_BIN_EXE_dc_snoop");
    for args in [
        &["-bogus"][..],
        &[][..],
        &["-listen", "UNIX:/tmp/dcrs-x"][..],
        &["-server", "UNIX:/tmp/dcrs-x"][..],
        &["-listen", "FOO:1", "-server", "UNIX:/tmp/x"][..],
        &["-listen", "UNIX:/tmp/x", "-server", "IP:9001"][..],
    ] {
        let (code, _, err) = run(exe, args, Duration::from_secs(5));
        assert_ne!(code, Some(0), "{args:?} accepted");
        assert!(code.is_some(), "{args:?}: killed by a signal");
        assert!(err.starts_with("dc_snoop: "), "{args:?}: {err}");
    }
    let (code, out, _) = run(exe, &["-help"], Duration::from_secs(5));
    assert_eq!(code, Some(0));
    assert!(out.contains("-hex"));
}
