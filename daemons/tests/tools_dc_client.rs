//! dc_client against a scripted fake dc_server: replays the `dc_client-*`
//! groups of wire.json (both legs byte for byte: what the application gets
//! back and what must reach the server, uids renamed from 1 upward), plus
//! the cases where the original aborted, which must leave our dc_client
//! running and answering.

mod common;

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

/// A fake dc_server on a UNIX socket.
struct Fake {
    l: UnixListener,
}

impl Fake {
    fn new(path: &Path) -> Fake {
        let l = UnixListener::bind(path).unwrap();
        l.set_nonblocking(true).unwrap();
        Fake { l }
    }
    /// Wait (3 s at most) for dc_client to connect.
    fn accept(&self) -> UnixStream {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            match self.l.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                    return s;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "dc_client did not connect");
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    }
    /// No connection arrives within `d`.
    fn no_connection_for(&self, d: Duration) {
        std::thread::sleep(d);
        assert!(self.l.accept().is_err(), "unexpected connection");
    }
}

/// Read the exact bytes `hex` from `s`.
fn expect(s: &mut UnixStream, want_hex: &str, what: &str) {
    let want = unhex(want_hex);
    let got = read_n(s, want.len());
    assert_eq!(hex(&got), want_hex, "{what}");
}

fn s(c: &Json, k: &str) -> String {
    c.str(k)
        .unwrap_or_else(|| panic!("{k} missing"))
        .to_string()
}

fn log_hex(c: &Json, i: usize) -> String {
    c.get("upstream_log").unwrap().arr()[i]
        .str("hex")
        .unwrap()
        .to_string()
}

#[test]
fn two_leg_replay_renames_uids_and_routes_answers() {
    let all = wire_cases();
    let cases = group(&all, "dc_client-two-leg");
    assert!(cases.len() >= 20, "two-leg group missing");
    let dir = TempDir::new("twoleg");
    let fake = Fake::new(&dir.path("srv"));
    let mut client = dc_client(&dir, &dir.addr("srv"), &["-retry", "100"]);
    let mut up = fake.accept();
    let cpath = dir.path("client");
    let apps: Vec<&Json> = cases
        .iter()
        .filter(|c| c.str("leg") == Some("app->dc_client"))
        .collect();
    let upstream_of = |c: &Json| case(&all, &s(c, "paired_case")).clone();
    let mut i = 0;
    let mut checked = 0;
    while i < apps.len() {
        let c = apps[i];
        let name = s(c, "name");
        if name.ends_with("_1_have") && apps.get(i + 1).is_some() {
            let c2 = apps[i + 1];
            let (u1, u2) = (upstream_of(c), upstream_of(c2));
            if name.contains("pipelined") {
                // Two requests in one write on one connection.
                let mut app = connect(&cpath);
                let mut both = unhex(&s(c, "request_hex"));
                both.extend(unhex(&s(c2, "request_hex")));
                send(&mut app, &both);
                expect(&mut up, &s(&u1, "request_hex"), &name);
                expect(&mut up, &s(&u2, "request_hex"), &name);
                send(&mut up, &unhex(&s(&u1, "response_hex")));
                send(&mut up, &unhex(&s(&u2, "response_hex")));
                expect(&mut app, &s(c, "response_hex"), &name);
                expect(&mut app, &s(c2, "response_hex"), &name);
            } else {
                // Two applications, same uid, both in flight; the server
                // answers the second first.
                let mut a1 = connect(&cpath);
                let mut a2 = connect(&cpath);
                send(&mut a1, &unhex(&s(c, "request_hex")));
                expect(&mut up, &s(&u1, "request_hex"), &name);
                send(&mut a2, &unhex(&s(c2, "request_hex")));
                expect(&mut up, &s(&u2, "request_hex"), &name);
                send(&mut up, &unhex(&s(&u2, "response_hex")));
                send(&mut up, &unhex(&s(&u1, "response_hex")));
                expect(&mut a2, &s(c2, "response_hex"), &name);
                expect(&mut a1, &s(c, "response_hex"), &name);
            }
            checked += 2;
            i += 2;
            continue;
        }
        let mut app = connect(&cpath);
        send(&mut app, &unhex(&s(c, "request_hex")));
        match c.str("server_reaction").unwrap() {
            "response" => {
                let u = upstream_of(c);
                expect(
                    &mut up,
                    &s(&u, "request_hex"),
                    &format!("{name}: upstream leg"),
                );
                send(&mut up, &unhex(&s(&u, "response_hex")));
                expect(&mut app, &s(c, "response_hex"), &name);
            }
            // A corrupt frame (is_response=2) or a foreign protocol level
            // (where the original aborted): that application is dropped,
            // nothing is forwarded, dc_client keeps running.
            "close" | "abort" => {
                expect_eof(&mut app);
                assert!(client.alive(), "{name}: dc_client died");
            }
            other => panic!("{name}: unhandled reaction {other}"),
        }
        checked += 1;
        i += 1;
    }
    assert_eq!(checked, apps.len());
    assert!(checked >= 15);
    // Nothing was forwarded for the dropped applications: the counter
    // continues at 14.
    let mut app = connect(&cpath);
    send(&mut app, &unhex("00110000000000006300030100017a"));
    expect(
        &mut up,
        "00110000000000000e00030100017a",
        "counter after drops",
    );
    send(&mut up, &unhex("00110000010000000e000301000101"));
    expect(
        &mut app,
        "001100000100000063000301000101",
        "answer after drops",
    );
    assert!(client.alive());
}

#[test]
fn no_server_answers_empty_payloads_at_once() {
    let all = wire_cases();
    let dir = TempDir::new("noserver");
    let client = dc_client(&dir, &dir.addr("nobody-here"), &["-retry", "100"]);
    for name in [
        "dcc_no_server_get",
        "dcc_no_server_add",
        "dcc_no_server_persistent",
    ] {
        let c = case(&all, name);
        let mut app = connect(&dir.path("client"));
        let t0 = Instant::now();
        send(&mut app, &unhex(&s(c, "request_hex")));
        expect(&mut app, &s(c, "response_hex"), name);
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "{name}: answer not immediate"
        );
    }
    let (_, err) = client.terminate();
    assert!(err.contains("cannot connect"), "no outage line: {err}");
}

#[test]
fn server_closing_with_request_in_flight_gives_0x02_then_reconnects() {
    let all = wire_cases();
    let c = case(&all, "dcc_fake_close");
    let dir = TempDir::new("fakeclose");
    let fake = Fake::new(&dir.path("srv"));
    let _client = dc_client(&dir, &dir.addr("srv"), &["-retry", "100"]);
    let mut up = fake.accept();
    let mut app = connect(&dir.path("client"));
    send(&mut app, &unhex(&s(c, "request_hex")));
    expect(&mut up, &log_hex(c, 0), "conn 1 request");
    drop(up);
    expect(&mut app, &s(c, "response_hex"), "0x02 answer");
    // Reconnection after -retry; the next request goes to the new one.
    let mut up = fake.accept();
    let mut app2 = connect(&dir.path("client"));
    send(&mut app2, &unhex(&s(c, "followup_request_hex")));
    expect(&mut up, &log_hex(c, 2), "conn 2 request");
    drop(up);
    expect(&mut app2, &s(c, "followup_response_hex"), "followup 0x02");
}

#[test]
fn corrupt_server_answer_drops_the_server_connection() {
    let all = wire_cases();
    let c = case(&all, "dcc_fake_isresp0");
    let dir = TempDir::new("isresp0");
    let fake = Fake::new(&dir.path("srv"));
    let mut client = dc_client(&dir, &dir.addr("srv"), &["-retry", "100"]);
    let mut up = fake.accept();
    let mut app = connect(&dir.path("client"));
    send(&mut app, &unhex(&s(c, "request_hex")));
    expect(&mut up, &log_hex(c, 0), "conn 1 request");
    send(&mut up, &unhex(&log_hex(c, 1)));
    expect(&mut app, &s(c, "response_hex"), "0x02 answer");
    expect_eof(&mut up);
    let mut up = fake.accept();
    let mut app = connect(&dir.path("client"));
    send(&mut app, &unhex(&s(c, "followup_request_hex")));
    expect(&mut up, &log_hex(c, 3), "conn 2 request");
    send(&mut up, &unhex(&log_hex(c, 4)));
    expect(&mut app, &s(c, "followup_response_hex"), "followup");
    assert!(client.alive());
}

#[test]
fn empty_server_answer_is_passed_through() {
    let all = wire_cases();
    let c = case(&all, "dcc_fake_empty");
    let dir = TempDir::new("empty");
    let fake = Fake::new(&dir.path("srv"));
    let _client = dc_client(&dir, &dir.addr("srv"), &["-retry", "100"]);
    let mut up = fake.accept();
    let mut app = connect(&dir.path("client"));
    send(&mut app, &unhex(&s(c, "request_hex")));
    expect(&mut up, &log_hex(c, 0), "request");
    send(&mut up, &unhex(&log_hex(c, 1)));
    expect(&mut app, &s(c, "response_hex"), "empty answer");
    send(&mut app, &unhex(&s(c, "followup_request_hex")));
    expect(&mut up, &log_hex(c, 2), "followup request");
    send(&mut up, &unhex(&log_hex(c, 3)));
    expect(&mut app, &s(c, "followup_response_hex"), "followup answer");
}

/// Where the original dc_client aborted on a bad answer from its server
/// (foreign protocol level, unknown uid, wrong operation), ours drops the
/// server connection, answers 0x02, reconnects and carries on.
#[test]
fn bad_server_answers_where_the_original_aborted() {
    let all = wire_cases();
    for name in ["dcc_fake_badproto", "dcc_fake_wronguid", "dcc_fake_wrongop"] {
        let c = case(&all, name);
        assert_eq!(c.str("server_reaction"), Some("abort"));
        let dir = TempDir::new(name);
        let fake = Fake::new(&dir.path("srv"));
        let mut client = dc_client(&dir, &dir.addr("srv"), &["-retry", "100"]);
        let mut up = fake.accept();
        let mut app = connect(&dir.path("client"));
        send(&mut app, &unhex(&s(c, "request_hex")));
        expect(&mut up, &log_hex(c, 0), name);
        send(&mut up, &unhex(&log_hex(c, 1)));
        expect(&mut app, "001100000100007a69000101000102", name);
        expect_eof(&mut up);
        assert!(client.alive(), "{name}: dc_client died");
        // Service resumes on a new server connection.
        let mut up = fake.accept();
        send(&mut app, &unhex("001100000000000063000301000178"));
        expect(&mut up, "001100000000000002000301000178", name);
        send(&mut up, &unhex("001100000100000002000301000100"));
        expect(&mut app, "001100000100000063000301000100", name);
        let (_, err) = client.terminate();
        assert!(err.contains("lost server connection"), "{name}: {err}");
    }
}

/// The original aborted when an application went away with a request in
/// flight; ours discards the late answer.
#[test]
fn application_leaving_with_request_in_flight() {
    let all = wire_cases();
    let c = case(&all, "dcc_fake_silent_app_disconnects");
    let dir = TempDir::new("silent");
    let fake = Fake::new(&dir.path("srv"));
    let mut client = dc_client(&dir, &dir.addr("srv"), &["-retry", "100"]);
    let mut up = fake.accept();
    let mut app = connect(&dir.path("client"));
    send(&mut app, &unhex(&s(c, "request_hex")));
    expect(&mut up, &log_hex(c, 0), "request");
    drop(app);
    std::thread::sleep(Duration::from_millis(100));
    assert!(client.alive());
    // The late answer goes nowhere; the server connection stays.
    send(&mut up, &unhex("00110000010000000100010100050102030405"));
    let mut app = connect(&dir.path("client"));
    send(&mut app, &unhex("001100000000000063000301000178"));
    expect(&mut up, "001100000000000002000301000178", "next request");
    send(&mut up, &unhex("001100000100000002000301000101"));
    expect(&mut app, "001100000100000063000301000101", "next answer");
    assert!(client.alive());
    fake.no_connection_for(Duration::from_millis(50));
}

#[test]
fn garbage_from_one_application_drops_only_it() {
    let dir = TempDir::new("garbage");
    let fake = Fake::new(&dir.path("srv"));
    let _client = dc_client(&dir, &dir.addr("srv"), &["-retry", "100"]);
    let mut up = fake.accept();
    let mut good = connect(&dir.path("client"));
    let mut bad = connect(&dir.path("client"));
    send(&mut good, &unhex("001100000000000007000301000178"));
    expect(&mut up, "001100000000000001000301000178", "forwarded");
    send(&mut bad, b"GET / HTTP/1.0\r\n\r\n");
    expect_eof(&mut bad);
    send(&mut up, &unhex("001100000100000001000301000100"));
    expect(&mut good, "001100000100000007000301000100", "answer");
}

#[test]
fn idle_applications_are_dropped() {
    let dir = TempDir::new("idle");
    let fake = Fake::new(&dir.path("srv"));
    let _client = dc_client(&dir, &dir.addr("srv"), &["-retry", "100", "-idle", "500"]);
    let mut up = fake.accept();
    let mut app = connect(&dir.path("client"));
    // Activity keeps it open.
    for i in 0..3u8 {
        std::thread::sleep(Duration::from_millis(100));
        send(&mut app, &unhex("001100000000000007000301000178"));
        let mut req = unhex("001100000000000001000301000178");
        req[8] = i + 1;
        expect(&mut up, &hex(&req), "forwarded");
        let mut ans = unhex("001100000100000001000301000100");
        ans[8] = i + 1;
        send(&mut up, &ans);
        expect(&mut app, "001100000100000007000301000100", "answer");
    }
    let t0 = Instant::now();
    expect_eof(&mut app);
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(400),
        "dropped too early: {waited:?}"
    );
}

#[test]
fn bad_flags_give_an_error_line_and_nonzero_exit() {
    let exe = env!("CARGO_BIN_EXE_dc_client");
    for args in [
        &["-bogus"][..],
        &[][..],
        &["-server"][..],
        &["-server", "NOPE:1"][..],
        &["-server", "IP:9001"][..],
        &["-server", "UNIX:/tmp/x", "-retry", "abc"][..],
        &["-server", "UNIX:/tmp/x", "-idle", "-5"][..],
        &["-server", "UNIX:/tmp/x", "-sockperms", "999"][..],
        &["-server", "UNIX:/tmp/x", "-deadline", "soon"][..],
        &["-server", "UNIX:/tmp/x", "-clientstall", "-1"][..],
        &["-server", "UNIX:/tmp/x", "-maxbuffer", "0"][..],
    ] {
        let (code, _, err) = run(exe, args, Duration::from_secs(5));
        assert_ne!(code, Some(0), "{args:?} accepted");
        assert!(code.is_some(), "{args:?}: killed by a signal");
        let first = err.lines().next().unwrap_or("");
        assert!(first.starts_with("dc_client: "), "{args:?}: {err}");
    }
    let (code, out, _) = run(exe, &["-h"], Duration::from_secs(5));
    assert_eq!(code, Some(0));
    assert!(out.contains("-retry"));
    for f in ["-deadline", "-clientstall", "-maxbuffer"] {
        assert!(out.contains(f), "{f} missing from -h: {out}");
    }
}

/// CPU time (user + system, in clock ticks) used so far by a process.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// Out of file descriptors (issue 13): idle connections make room for
/// newcomers; when every connection has a request in flight (a hung server,
/// no -deadline) dc_client keeps serving what it has, does not spin on the
/// listener, and accepts again once some close.
#[test]
fn out_of_descriptors_makes_room_or_pauses_accepting() {
    let dir = TempDir::new("emfile");
    let fake = Fake::new(&dir.path("srv"));
    let listen = dir.addr("client");
    let server = dir.addr("srv");
    let log = std::fs::File::create(dir.path("client.log")).unwrap();
    let mut p = Proc::spawn_with(
        "prlimit",
        &[
            "--nofile=16:16",
            env!("CARGO_BIN_EXE_dc_client"),
            "-server",
            &server,
            "-listen",
            &listen,
            "-deadline",
            "0",
            "-stall",
            "0",
        ],
        std::process::Stdio::null(),
        std::process::Stdio::from(log),
    );
    wait_for_socket(&dir.path("client"));
    let mut up = fake.accept();
    let req = |uid: u8| unhex(&format!("0011000000000000{uid:02x}000301000178"));
    // The server's side: take one forwarded HAVE, answer it "absent".
    let serve = |up: &mut UnixStream| {
        let f = read_n(up, 15);
        let mut a = f[..14].to_vec();
        a[4] = 1;
        a.push(0);
        send(up, &a);
    };
    // Forty connections kept open, one after the other, each served: the
    // older idle ones are closed to make room (16 descriptors hold fewer
    // than ten).
    let mut conns = Vec::new();
    for i in 0..40u8 {
        let mut c = connect(&dir.path("client"));
        send(&mut c, &req(i));
        serve(&mut up);
        assert_eq!(
            hex(&read_n(&mut c, 15)),
            format!("0011000001000000{i:02x}000301000100"),
            "connection {i}"
        );
        conns.push(c);
    }
    assert!(
        closed_within(&mut conns[0], Duration::from_secs(3)),
        "the oldest idle connection is still open; dc_client said: {}",
        std::fs::read_to_string(dir.path("client.log")).unwrap_or_default()
    );
    // Now every open connection gets a request in flight that the server
    // never answers: none may be closed for a newcomer.
    let mut busy = Vec::new();
    for mut c in conns.drain(..) {
        let open = !closed_within(&mut c, Duration::from_millis(20));
        if open {
            send(&mut c, &req(200));
            read_n(&mut up, 15);
            busy.push(c);
        }
    }
    assert!(busy.len() >= 3, "only {} connections open", busy.len());
    let mut waiting: Vec<UnixStream> = (0..5).map(|_| connect(&dir.path("client"))).collect();
    for c in &mut waiting {
        send(c, &req(201));
    }
    let t0 = cpu_ticks(p.pid());
    std::thread::sleep(Duration::from_millis(500));
    let used = cpu_ticks(p.pid()) - t0;
    assert!(
        used < 20,
        "dc_client burnt {used} ticks while out of descriptors"
    );
    assert!(p.alive());
    // Nothing of the waiting ones was taken.
    up.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut b = [0u8; 1];
    assert!(std::io::Read::read(&mut up, &mut b).is_err(), "forwarded");
    up.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    // One busy application leaves: a waiting connection is accepted and
    // its request forwarded.
    drop(busy.pop());
    serve(&mut up);
    let mut got = 0;
    for c in &mut waiting {
        c.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        if read_msg(c).is_ok() {
            got += 1;
        }
    }
    assert_eq!(got, 1);
    p.terminate();
    let err = std::fs::read_to_string(dir.path("client.log")).unwrap();
    assert!(err.contains("pausing new connections"), "{err}");
    assert!(err.contains("to make room"), "{err}");
}

/// A server whose connects hang (its accept queue is full: SYNs are
/// dropped): requests waiting for the connection fail after a short grace
/// instead of hanging, and later ones fail at once.
#[test]
fn slow_connect_fails_requests_promptly() {
    use socket2::{Domain, Socket, Type};
    let l = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    l.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    l.listen(0).unwrap();
    let port = l.local_addr().unwrap().as_socket().unwrap().port();
    // Fill the accept queue; never accept.
    let mut fillers = Vec::new();
    for _ in 0..4 {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        let _ = s.connect(&l.local_addr().unwrap());
        fillers.push(s);
    }
    std::thread::sleep(Duration::from_millis(50));
    let dir = TempDir::new("slowconnect");
    let _client = dc_client(&dir, &format!("IP:127.0.0.1:{port}"), &["-retry", "100"]);
    let mut app = connect(&dir.path("client"));
    let req = unhex("001100000000000005000301000178");
    let t0 = Instant::now();
    send(&mut app, &req);
    assert_eq!(hex(&read_n(&mut app, 14)), "0011000001000000050003010000");
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t0.elapsed()
    );
    let t1 = Instant::now();
    send(&mut app, &req);
    assert_eq!(hex(&read_n(&mut app, 14)), "0011000001000000050003010000");
    assert!(
        t1.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t1.elapsed()
    );
}

/// Random bytes from applications and from the server never take
/// dc_client down; a well-behaved application keeps being served.
#[test]
fn random_garbage_from_both_sides() {
    let dir = TempDir::new("garbage-both");
    let fake = Fake::new(&dir.path("srv"));
    let mut client = dc_client(&dir, &dir.addr("srv"), &["-retry", "20"]);
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..30u32 {
        let mut up = fake.accept();
        // Garbage from a few applications (some starting like a frame).
        for _ in 0..5 {
            let mut junk: Vec<u8> = (0..(rand() % 200)).map(|_| rand() as u8).collect();
            if rand() % 2 == 0 && junk.len() > 5 {
                junk[..5].copy_from_slice(&[0, 0x11, 0, 0, 0]);
            }
            let mut a = connect(&dir.path("client"));
            let _ = std::io::Write::write_all(&mut a, &junk);
        }
        // A good request, then random bytes from the server.
        let mut app = connect(&dir.path("client"));
        send(&mut app, &unhex("001100000000000063000301000178"));
        let mut req = unhex("001100000000000000000301000178");
        let got = read_n(&mut up, req.len());
        req[5..9].copy_from_slice(&got[5..9]);
        assert_eq!(got, req, "round {round}");
        let junk: Vec<u8> = (0..(1 + rand() % 100)).map(|_| rand() as u8).collect();
        let _ = std::io::Write::write_all(&mut up, &junk);
        drop(up);
        // The server connection is dropped (corrupt, or closed by us with
        // a partial frame): the application gets 0x02 under its own uid.
        assert_eq!(
            hex(&read_n(&mut app, 15)),
            "001100000100000063000301000102",
            "round {round}"
        );
        assert!(client.alive(), "round {round}");
    }
}

/// Read one 15-byte HAVE frame and check it, uid aside (the uid toward the
/// server is dc_client's to choose).
fn expect_have_any_uid(s: &mut UnixStream, want_hex: &str, what: &str) {
    let got = hex(&read_n(s, 15));
    assert_eq!(
        format!("{}{}", &got[..10], &got[18..]),
        format!("{}{}", &want_hex[..10], &want_hex[18..]),
        "{what}: {got}"
    );
}

#[test]
fn a_server_that_stops_answering_is_dropped_after_stall() {
    let dir = TempDir::new("stall");
    let fake = Fake::new(&dir.path("srv"));
    // No -deadline: the request waits for -stall.
    let client = dc_client(
        &dir,
        &dir.addr("srv"),
        &["-retry", "100", "-stall", "500", "-deadline", "0"],
    );
    let mut up = fake.accept();
    let mut app = connect(&dir.path("client"));
    // The connection works: one request answered.
    send(&mut app, &unhex("001100000000000007000301000178"));
    expect(&mut up, "001100000000000001000301000178", "forwarded");
    send(&mut up, &unhex("001100000100000001000301000100"));
    expect(&mut app, "001100000100000007000301000100", "answer");
    // Silence with nothing waiting is no stall, however long.
    std::thread::sleep(Duration::from_millis(900));
    // Now the server takes a request and hangs.
    let t0 = Instant::now();
    send(&mut app, &unhex("001100000000000008000301000178"));
    expect(
        &mut up,
        "001100000000000002000301000178",
        "forwarded on the same connection",
    );
    expect(
        &mut app,
        "001100000100000008000301000102",
        "0x02 (DISCONNECTED) after -stall",
    );
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(3),
        "answered after {waited:?}"
    );
    // The hung connection is closed and a new one made; requests use it.
    expect_eof(&mut up);
    let mut up2 = fake.accept();
    send(&mut app, &unhex("001100000000000009000301000178"));
    expect_have_any_uid(
        &mut up2,
        "001100000000000003000301000178",
        "on the new connection",
    );
    let (_, _, err) = client.terminate_all();
    assert!(
        err.contains("no answer for") && err.contains("(-stall)"),
        "stderr: {err}"
    );
}
