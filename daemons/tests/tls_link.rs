//! The TLS cache link (issue 16) with the real binaries: dc_server
//! listening on `TLS:127.0.0.1:PORT`, dc_client, dc_test and dc_snoop
//! connecting to it, the DC_CTX library through dc_client, and third-party
//! peers (`openssl s_client`, stunnel4 in client mode). Certificates are
//! made per test (common/pki.rs). Every bad input is its own test: the
//! connection is closed, dc_server logs one line naming the peer and the
//! reason, and it still serves a good connection afterwards.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::pki::{make_leaf, tls_flags, LeafSpec, Pki, CLIENT_NAME, SERVER_NAME};
use common::*;
use distcache_rs::client::{AddOutcome, Client, Config, Error, FLAG_PERSISTENT};
use distcache_tools::tls::{TlsClient, TlsFiles, TlsStream};
use distcache_tools::tlsconf::blocking_connector;

const DC_TEST: &str = env!("CARGO_BIN_EXE_dc_test");
const DC_SERVER: &str = env!("CARGO_BIN_EXE_dc_server");
const DC_CLIENT: &str = env!("CARGO_BIN_EXE_dc_client");
const OPENSSL: &str = "/usr/bin/openssl";
const STUNNEL: &str = "/usr/bin/stunnel4";

// ------------------------------------------------------------ set-up

/// One test's certificates: the server's and a client's, from one CA.
struct Net {
    pki: Pki,
    server: TlsFiles,
    client: TlsFiles,
}

impl Net {
    fn new(tag: &str) -> Net {
        let pki = Pki::new(tag);
        let server = pki.server();
        let client = pki.client();
        Net {
            pki,
            server,
            client,
        }
    }

    fn dir(&self) -> &TempDir {
        &self.pki.dir
    }

    /// dc_server on `UNIX:dir/srv` and `TLS:127.0.0.1:PORT` with the
    /// server's files and `extra`.
    fn server(&self, extra: &[&str]) -> Dc {
        self.server_on("srv", free_port(), extra)
    }

    /// [`Net::server`] on `UNIX:dir/name` and a given port.
    fn server_on(&self, name: &str, port: u16, extra: &[&str]) -> Dc {
        self.server_with(&self.server, name, port, extra)
    }

    /// [`Net::server_on`] with other files.
    fn server_with(&self, files: &TlsFiles, name: &str, port: u16, extra: &[&str]) -> Dc {
        let mut args = vec![
            "-listen".to_string(),
            format!("TLS:127.0.0.1:{port}"),
            "-sessions".to_string(),
            "100000".to_string(),
        ];
        args.extend(tls_flags(files));
        args.extend(extra.iter().map(|s| s.to_string()));
        let srv = Srv::start(self.dir(), name, &strs(&args));
        Dc { srv, port }
    }

    /// dc_client on `dir/client` in front of `TLS:127.0.0.1:port` with the
    /// client's files, expecting [`SERVER_NAME`], and `extra`.
    fn dc_client(&self, port: u16, extra: &[&str]) -> Proc {
        self.dc_client_with(&self.client, port, extra)
    }

    fn dc_client_with(&self, files: &TlsFiles, port: u16, extra: &[&str]) -> Proc {
        let mut args = vec!["-tls-name".to_string(), SERVER_NAME.to_string()];
        args.extend(tls_flags(files));
        args.extend(extra.iter().map(|s| s.to_string()));
        dc_client_logged(self.dir(), &format!("TLS:127.0.0.1:{port}"), &strs(&args))
    }

    fn client_addr(&self) -> String {
        self.dir().addr("client")
    }

    fn client_log(&self) -> String {
        std::fs::read_to_string(self.dir().path("client.log")).unwrap_or_default()
    }

    /// Leaf files `name.crt`/`name.key` of the test CA for `dns`.
    fn leaf_files(&self, name: &str, dns: &[&str]) -> TlsFiles {
        self.pki.files(name, &self.pki.leaf(dns))
    }
}

/// A running dc_server and its TLS port.
struct Dc {
    srv: Srv,
    port: u16,
}

impl Dc {
    fn log(&self) -> String {
        self.srv.log()
    }
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Waits (at most 10 s) until `read()` contains `needle`; returns the text.
fn wait_text(what: &str, needle: &str, read: impl Fn() -> String) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = read();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never showed {needle:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The lines of `text` containing `needle`.
fn lines_with<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.contains(needle)).collect()
}

/// dc_server's one line for closing `peer`'s connection (waited for):
/// exactly one such line, carrying `reason`.
fn assert_closed_line(dc: &Dc, peer: &str, reason: &str) {
    let head = format!("closing connection from {peer}");
    let log = wait_text("dc_server's log", &head, || dc.log());
    let lines = lines_with(&log, &head);
    assert_eq!(lines.len(), 1, "one line for {peer}:\n{log}");
    assert!(lines[0].contains(reason), "expected {reason:?}:\n{log}");
}

/// Until a DC_CTX call through dc_client (`addr`) is answered by the
/// server (dc_client answers failures until its TLS link is up).
fn wait_link_up(addr: &str) {
    let c = Client::new(addr, 0).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match c.has(b"link-up-probe") {
            Ok(false) => return,
            other => assert!(
                Instant::now() < deadline,
                "dc_client at {addr} never reached the server: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A DC_CTX client of dc_server's TLS port, connecting with `files`.
fn tls_lib_client(files: &TlsFiles, port: u16) -> Client {
    let tls = TlsClient::load(files, SERVER_NAME, false).unwrap();
    Client::with_connector(
        &format!("IP:127.0.0.1:{port}"),
        0,
        Config::default(),
        Some(blocking_connector(tls)),
    )
    .unwrap()
}

/// A good TLS connection is served: a session added and fetched exactly.
fn assert_serves(files: &TlsFiles, port: u16, tag: &str) {
    let c = tls_lib_client(files, port);
    let id = format!("good-{tag}");
    let data = format!("the session of {tag} ").repeat(5);
    assert_eq!(
        c.add(id.as_bytes(), data.as_bytes(), 60_000).unwrap(),
        AddOutcome::Stored,
        "{tag}"
    );
    assert_eq!(&c.get(id.as_bytes()).unwrap().unwrap()[..], data.as_bytes());
}

/// Runs dc_test with `args` and asserts every one of `ops` operations was
/// answered correctly.
fn dc_test_ok(args: &[&str], ops: u64) {
    let ops_s = ops.to_string();
    let mut all = args.to_vec();
    all.extend_from_slice(&["-sessions", "8", "-ops", &ops_s, "-seed", "16"]);
    let (code, out, err) = run(DC_TEST, &all, Duration::from_secs(60));
    assert_eq!(
        code,
        Some(0),
        "dc_test {all:?}\nstdout: {out}\nstderr: {err}"
    );
    assert_eq!(last_line_field(&out, "ops"), ops, "{out}");
    assert_eq!(last_line_field(&out, "errors"), 0, "{out}");
    assert_eq!(last_line_field(&out, "failures"), 0, "{out}");
}

// ------------------------------------------------------------ a relay

/// A TCP relay on 127.0.0.1 to `target`, recording every byte it carries
/// in each direction (the wire as a passive observer sees it).
struct Relay {
    port: u16,
    stop: Arc<AtomicBool>,
    to_server: Arc<Mutex<Vec<u8>>>,
    to_client: Arc<Mutex<Vec<u8>>>,
}

impl Relay {
    fn start(target: u16) -> Relay {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let to_server = Arc::new(Mutex::new(Vec::new()));
        let to_client = Arc::new(Mutex::new(Vec::new()));
        let (st, up, down) = (stop.clone(), to_server.clone(), to_client.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => {
                        c.set_nonblocking(false).unwrap();
                        let Ok(s) = TcpStream::connect(("127.0.0.1", target)) else {
                            continue;
                        };
                        pump(c.try_clone().unwrap(), s.try_clone().unwrap(), up.clone());
                        pump(s, c, down.clone());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Relay {
            port,
            stop,
            to_server,
            to_client,
        }
    }

    fn to_server(&self) -> Vec<u8> {
        self.to_server.lock().unwrap().clone()
    }

    fn to_client(&self) -> Vec<u8> {
        self.to_client.lock().unwrap().clone()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Copies `from` to `to` in a thread, recording into `log`, until either
/// side ends.
fn pump(mut from: TcpStream, mut to: TcpStream, log: Arc<Mutex<Vec<u8>>>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16384];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    log.lock().unwrap().extend_from_slice(&buf[..n]);
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// The cipher suite of the ServerHello at the start of `wire` (the first
/// record the server sent): TLS 1.3 suites are 0x13xx.
fn server_hello_suite(wire: &[u8]) -> u16 {
    assert!(
        wire.len() > 44 && wire[0] == 22 && wire[5] == 2,
        "not a ServerHello: {}",
        hex(&wire[..wire.len().min(16)])
    );
    // Record header (5), handshake header (4), version (2), random (32).
    let sid = wire[43] as usize;
    u16::from_be_bytes([wire[44 + sid], wire[45 + sid]])
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

// ------------------------------------------------------------ 1, 2: through dc_client

/// dc_test through dc_client over a relay into dc_server's TLS port; the
/// version the two daemons negotiated, seen on the wire.
fn dc_test_through_dc_client(tag: &str, server_extra: &[&str], client_extra: &[&str]) -> u16 {
    let net = Net::new(tag);
    let dc = net.server(server_extra);
    let relay = Relay::start(dc.port);
    let _client = net.dc_client(relay.port, client_extra);
    wait_link_up(&net.client_addr());
    let addr = net.client_addr();
    dc_test_ok(&["-connect", &addr], 400);
    dc_test_ok(&["-connect", &addr, "-persistent", "-clients", "4"], 800);
    assert!(!dc.log().contains("closing connection"), "{}", dc.log());
    server_hello_suite(&relay.to_client())
}

#[test]
fn dc_test_through_dc_client_over_tls_all_answers_correct() {
    let suite = dc_test_through_dc_client("tls-link-dctest", &[], &[]);
    assert_eq!(suite >> 8, 0x13, "TLS 1.3 by default, suite {suite:#06x}");
}

#[test]
fn dc_test_through_dc_client_with_tls12_forced_on_dc_client() {
    let suite = dc_test_through_dc_client("tls-link-12c", &[], &["-tls-max-version", "1.2"]);
    assert_ne!(suite >> 8, 0x13, "a TLS 1.2 suite, got {suite:#06x}");
}

#[test]
fn dc_test_through_dc_client_with_tls12_forced_on_dc_server() {
    let suite = dc_test_through_dc_client("tls-link-12s", &["-tls-max-version", "1.2"], &[]);
    assert_ne!(suite >> 8, 0x13, "a TLS 1.2 suite, got {suite:#06x}");
}

#[test]
fn dc_ctx_library_through_dc_client_over_tls() {
    let net = Net::new("tls-link-ctx");
    let dc = net.server(&[]);
    let _client = net.dc_client(dc.port, &[]);
    let addr = net.client_addr();
    wait_link_up(&addr);
    // Every byte value, and a session near the largest size.
    let data: Vec<u8> = (0..=255u8).cycle().take(4000).collect();
    for flags in [0, FLAG_PERSISTENT] {
        let c = Client::new(&addr, flags).unwrap();
        let id = format!("ctx-session-{flags}");
        let id = id.as_bytes();
        assert!(!c.has(id).unwrap());
        assert_eq!(c.get(id).unwrap(), None);
        assert_eq!(c.add(id, &data, 60_000).unwrap(), AddOutcome::Stored);
        assert!(matches!(
            c.add(id, b"another session's data", 60_000).unwrap(),
            AddOutcome::Refused(_)
        ));
        assert_eq!(&c.get(id).unwrap().unwrap()[..], &data[..]);
        assert!(c.has(id).unwrap());
        assert!(c.remove(id).unwrap());
        assert!(!c.remove(id).unwrap());
        assert!(!c.has(id).unwrap());
        assert_eq!(c.get(id).unwrap(), None);
        let big = vec![0xa5u8; 30_000];
        assert_eq!(c.add(b"big", &big, 60_000).unwrap(), AddOutcome::Stored);
        assert_eq!(&c.get(b"big").unwrap().unwrap()[..], &big[..]);
        assert!(c.remove(b"big").unwrap());
    }
    // The same session seen through the server's TLS port directly.
    let direct = tls_lib_client(&net.client, dc.port);
    let c = Client::new(&addr, 0).unwrap();
    assert_eq!(c.add(b"shared", &data, 60_000).unwrap(), AddOutcome::Stored);
    assert_eq!(&direct.get(b"shared").unwrap().unwrap()[..], &data[..]);
}

// ------------------------------------------------------------ 9: dc_test, dc_snoop

#[test]
fn dc_test_connects_tls_directly_to_dc_server() {
    let net = Net::new("tls-link-direct");
    let dc = net.server(&[]);
    let target = format!("TLS:127.0.0.1:{}", dc.port);
    let mut args = vec![
        "-connect".to_string(),
        target,
        "-tls-name".to_string(),
        SERVER_NAME.to_string(),
    ];
    args.extend(tls_flags(&net.client));
    dc_test_ok(&strs(&args), 200);
    args.push("-persistent".to_string());
    dc_test_ok(&strs(&args), 400);
    // Without -tls-name the expected name is the address's host, which
    // the certificate does not carry: refused, and said so.
    let mut plain_name = args.clone();
    plain_name.drain(2..4);
    let (code, _, err) = run(DC_TEST, &strs(&plain_name), Duration::from_secs(20));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("expected name"), "{err}");
}

#[test]
fn dc_snoop_relays_a_dc_test_run_into_the_tls_port() {
    let net = Net::new("tls-link-snoop");
    let dc = net.server(&[]);
    let out = std::fs::File::create(net.dir().path("snoop.out")).unwrap();
    let listen = net.dir().addr("snoop");
    let mut args = vec![
        "-listen".to_string(),
        listen.clone(),
        "-server".to_string(),
        format!("TLS:127.0.0.1:{}", dc.port),
        "-tls-name".to_string(),
        SERVER_NAME.to_string(),
    ];
    args.extend(tls_flags(&net.client));
    let _snoop = Proc::spawn_with(
        env!("CARGO_BIN_EXE_dc_snoop"),
        &strs(&args),
        Stdio::from(out),
        Stdio::null(),
    );
    wait_for_socket(&net.dir().path("snoop"));
    dc_test_ok(&["-connect", &listen, "-persistent"], 300);
    dc_test_ok(&["-connect", &listen], 100);
    let seen = std::fs::read_to_string(net.dir().path("snoop.out")).unwrap();
    assert!(seen.contains("ADD") && seen.contains("GET"), "{seen}");
}

// ------------------------------------------------------------ 3, 4: third-party peers

/// What `openssl s_client` printed and how it ended.
struct SClient {
    code: Option<i32>,
    out: Vec<u8>,
    err: String,
}

impl SClient {
    fn text(&self) -> String {
        format!("{}\n{}", String::from_utf8_lossy(&self.out), self.err)
    }

    /// The PEM body (base64, no line breaks) of the server certificate it
    /// printed.
    fn server_cert(&self) -> String {
        pem_body(&String::from_utf8_lossy(&self.out))
    }
}

/// The base64 of the first certificate in `pem` (line breaks dropped).
fn pem_body(pem: &str) -> String {
    let begin = "-----BEGIN CERTIFICATE-----";
    let start = pem.find(begin).expect("a certificate") + begin.len();
    let end = start + pem[start..].find("-----END").expect("its end");
    pem[start..end].split_whitespace().collect()
}

/// `openssl s_client` to dc_server's TLS port, verifying it against the
/// test CA and [`SERVER_NAME`], with `extra` flags: sends `input`, waits
/// (at most 10 s) until its output shows `until`, then closes its stdin.
fn s_client(net: &Net, port: u16, extra: &[&str], input: &[u8], until: &[u8]) -> SClient {
    let ca = net.pki.dir.path("ca.pem").display().to_string();
    let connect = format!("127.0.0.1:{port}");
    let mut args = vec![
        "s_client",
        "-connect",
        &connect,
        "-servername",
        SERVER_NAME,
        "-verify_hostname",
        SERVER_NAME,
        "-CAfile",
        &ca,
        "-verify_return_error",
        "-nocommands",
    ];
    args.extend_from_slice(extra);
    let mut child = Command::new(OPENSSL)
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = Arc::new(Mutex::new(Vec::new()));
    let err = Arc::new(Mutex::new(Vec::new()));
    let readers = [
        (
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            out.clone(),
        ),
        (
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            err.clone(),
        ),
    ]
    .map(|(src, sink)| {
        let mut src = src.unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = src.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    });
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(input);
    let _ = stdin.flush();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let seen = contains(&out.lock().unwrap(), until) || contains(&err.lock().unwrap(), until);
        if seen || child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    for r in readers {
        r.join().unwrap();
    }
    let out = out.lock().unwrap().clone();
    let err = String::from_utf8_lossy(&err.lock().unwrap()).into_owned();
    SClient { code, out, err }
}

/// `-cert` and `-key` of `files`, for s_client.
fn cert_args(files: &TlsFiles) -> [String; 4] {
    [
        "-cert".to_string(),
        files.cert.display().to_string(),
        "-key".to_string(),
        files.key.display().to_string(),
    ]
}

#[test]
fn openssl_s_client_without_a_certificate_is_refused() {
    if !have_binary(OPENSSL, "openssl_s_client_without_a_certificate_is_refused") {
        return;
    }
    let net = Net::new("tls-link-sclient-nocert");
    let dc = net.server(&[]);
    let probe = request(7, 3, b"some-id");
    let s = s_client(&net, dc.port, &[], &probe, b"certificate required");
    let text = s.text();
    assert!(text.contains("alert certificate required"), "{text}");
    assert_ne!(s.code, Some(0), "{text}");
    // No answer came back: an answer message starts 00 11 00 00 01.
    assert!(!contains(&s.out, &[0, 0x11, 0, 0, 1]), "{text}");
    assert_closed_line(
        &dc,
        "127.0.0.1:",
        "TLS: the client sent no certificate and one is required",
    );
    assert_serves(&net.client, dc.port, "after-nocert");
}

#[test]
fn openssl_s_client_with_a_valid_certificate_is_served() {
    if !have_binary(
        OPENSSL,
        "openssl_s_client_with_a_valid_certificate_is_served",
    ) {
        return;
    }
    let net = Net::new("tls-link-sclient-cert");
    let dc = net.server(&[]);
    let data = b"a session stored through openssl s_client".repeat(3);
    let mut input = request(41, 0, &add_payload(60_000, b"sclient-id", &data));
    input.extend_from_slice(&request(42, 1, b"sclient-id"));
    let mut answer = Vec::new();
    distcache_rs::proto::encode_message(
        &mut answer,
        true,
        42,
        distcache_rs::proto::Cmd::Get,
        &data,
    )
    .unwrap();
    let certs = cert_args(&net.client);
    let s = s_client(&net, dc.port, &strs(&certs), &input, &answer);
    let text = s.text();
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    assert!(text.contains("TLSv1.3"), "{text}");
    assert!(contains(&s.out, &answer), "no GET answer in:\n{text}");
    assert_eq!(
        s.server_cert(),
        pem_body(&std::fs::read_to_string(&net.server.cert).unwrap())
    );
    // The session is there for everyone else.
    let c = tls_lib_client(&net.client, dc.port);
    assert_eq!(&c.get(b"sclient-id").unwrap().unwrap()[..], &data[..]);
    assert!(!dc.log().contains("closing connection"), "{}", dc.log());
}

#[test]
fn stunnel_client_mode_carries_a_plain_dc_test_into_the_tls_port() {
    if !have_binary(
        STUNNEL,
        "stunnel_client_mode_carries_a_plain_dc_test_into_the_tls_port",
    ) {
        return;
    }
    let net = Net::new("tls-link-stunnel");
    let dc = net.server(&[]);
    let plain = free_port();
    let conf = net.dir().path("stunnel.conf");
    std::fs::write(
        &conf,
        format!(
            "foreground = yes\npid =\ndebug = notice\n\n[dc]\nclient = yes\naccept = 127.0.0.1:{plain}\nconnect = 127.0.0.1:{}\ncert = {}\nkey = {}\nCAfile = {}\nverifyChain = yes\ncheckHost = {SERVER_NAME}\n",
            dc.port,
            net.client.cert.display(),
            net.client.key.display(),
            net.client.ca.display()
        ),
    )
    .unwrap();
    let log = net.dir().path("stunnel.log");
    let _stunnel = Proc::spawn_with(
        STUNNEL,
        &[conf.to_str().unwrap()],
        Stdio::null(),
        Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    wait_text("stunnel's log", "Configuration successful", || {
        std::fs::read_to_string(&log).unwrap_or_default()
    });
    let target = format!("IP:127.0.0.1:{plain}");
    dc_test_ok(&["-connect", &target], 150);
    dc_test_ok(&["-connect", &target, "-persistent", "-clients", "2"], 300);
    // What the plain client stored is in dc_server's cache.
    let c = Client::new(&target, 0).unwrap();
    assert_eq!(
        c.add(b"via-stunnel", b"stunnel session data", 60_000)
            .unwrap(),
        AddOutcome::Stored
    );
    let direct = tls_lib_client(&net.client, dc.port);
    assert_eq!(
        &direct.get(b"via-stunnel").unwrap().unwrap()[..],
        b"stunnel session data"
    );
}

// ------------------------------------------------------------ 5: bad inputs

/// A DC_CTX call through dc_client is answered with a failure (the link
/// is refused), never a session.
fn assert_answers_failures(addr: &str) {
    let c = Client::new(addr, 0).unwrap();
    match c.add(b"refused-link", b"data that goes nowhere", 60_000) {
        Err(Error::Disconnected) | Err(Error::EmptyAnswer) => {}
        other => panic!("expected a failure answer, got {other:?}"),
    }
    assert!(c.get(b"refused-link").is_err());
}

/// dc_client with the client leaf `files` is refused by dc_server
/// (`server_extra`) with `reason`; dc_client answers failures; dc_server
/// serves a good client (`good`) afterwards.
fn refused_by_dc_server(
    net: &Net,
    files: &TlsFiles,
    good: &TlsFiles,
    server_extra: &[&str],
    reason: &str,
) {
    let dc = net.server(server_extra);
    let _client = net.dc_client_with(files, dc.port, &["-retry", "60000"]);
    let head = "closing connection from 127.0.0.1:";
    let log = wait_text("dc_server's log", head, || dc.log());
    let lines = lines_with(&log, head);
    assert!(
        lines.iter().all(|l| l.contains(reason)),
        "expected {reason:?}:\n{log}"
    );
    assert_answers_failures(&net.client_addr());
    // One attempt (-retry 60000), one line.
    assert_eq!(lines_with(&dc.log(), head).len(), 1, "{}", dc.log());
    assert_serves(good, dc.port, "after-refusal");
}

#[test]
fn plaintext_client_on_the_tls_port_is_closed_with_one_line() {
    let net = Net::new("tls-link-plain-on-tls");
    let dc = net.server(&[]);
    let mut raw = TcpStream::connect(("127.0.0.1", dc.port)).unwrap();
    let me = raw.local_addr().unwrap();
    raw.write_all(&request(1, 1, b"a plain GET")).unwrap();
    assert!(closed_within(&mut raw, Duration::from_secs(10)));
    assert_closed_line(
        &dc,
        &me.to_string(),
        "TLS: the peer did not speak TLS (a plaintext client on a TLS port?)",
    );
    assert_serves(&net.client, dc.port, "after-plain");
}

/// dc_client's one line saying why its link to `TLS:127.0.0.1:port`
/// failed (`why`): a refused handshake is a failed connect.
fn dc_client_link_failure(net: &Net, port: u16, why: &str) {
    let log = wait_text("dc_client's log", why, || net.client_log());
    let lines = lines_with(&log, why);
    assert_eq!(lines.len(), 1, "{log}");
    let want = format!("dc_client: cannot connect to server TLS:127.0.0.1:{port}: {why}");
    assert!(lines[0].contains(&want), "{log}");
    assert!(
        lines[0].contains("; answering requests with failures"),
        "{log}"
    );
}

#[test]
fn tls_client_on_a_plain_port_fails_clearly() {
    let net = Net::new("tls-link-tls-on-plain");
    let port = free_port();
    let listen = format!("IP:127.0.0.1:{port}");
    let srv = Srv::start(net.dir(), "srv", &["-listen", &listen]);
    let _client = net.dc_client(port, &["-retry", "60000"]);
    // The server hung up in the middle of the handshake.
    dc_client_link_failure(
        &net,
        port,
        "TLS: the peer closed the connection during the handshake",
    );
    assert_answers_failures(&net.client_addr());
    // dc_server took the ClientHello (16 03 01 ..) for a request of an
    // unknown protocol level and said so, once.
    let slog = wait_text(
        "dc_server's log",
        "closing connection from 127.0.0.1:",
        || srv.log(),
    );
    let lines = lines_with(&slog, "closing connection from");
    assert_eq!(lines.len(), 1, "{slog}");
    assert!(
        lines[0].contains("protocol incompatibility") && lines[0].contains("16030"),
        "{slog}"
    );
    // It serves plain clients as before.
    let c = Client::new(&listen, 0).unwrap();
    assert_eq!(
        c.add(b"plain", b"plain session data", 60_000).unwrap(),
        AddOutcome::Stored
    );
    assert_eq!(
        &c.get(b"plain").unwrap().unwrap()[..],
        b"plain session data"
    );
}

#[test]
fn client_without_a_certificate_is_refused() {
    let net = Net::new("tls-link-nocert");
    let dc = net.server(&[]);
    let nocert = common::pki::client_without_cert(&net.pki.ca.pem, SERVER_NAME);
    let c = Client::with_connector(
        &format!("IP:127.0.0.1:{}", dc.port),
        0,
        Config::default(),
        Some(blocking_connector(nocert)),
    )
    .unwrap();
    assert!(c.add(b"no-cert", b"refused session data", 60_000).is_err());
    assert_closed_line(
        &dc,
        "127.0.0.1:",
        "TLS: the client sent no certificate and one is required",
    );
    assert!(tls_lib_client(&net.client, dc.port)
        .get(b"no-cert")
        .unwrap()
        .is_none());
    assert_serves(&net.client, dc.port, "after-nocert");
}

#[test]
fn client_certificate_from_another_ca_is_refused() {
    let net = Net::new("tls-link-otherca");
    let leaf = make_leaf(
        &net.pki.other_ca,
        LeafSpec {
            dns: &[CLIENT_NAME],
            ..Default::default()
        },
    );
    let files = net.pki.files("stranger", &leaf);
    refused_by_dc_server(
        &net,
        &files,
        &net.client,
        &[],
        "TLS: the peer's certificate is not signed by a -tls-ca root",
    );
}

#[test]
fn expired_client_certificate_is_refused() {
    let net = Net::new("tls-link-expired");
    let leaf = make_leaf(
        &net.pki.ca,
        LeafSpec {
            dns: &[CLIENT_NAME],
            expired: true,
            ..Default::default()
        },
    );
    let files = net.pki.files("old", &leaf);
    refused_by_dc_server(
        &net,
        &files,
        &net.client,
        &[],
        "TLS: the peer's certificate has expired",
    );
}

#[test]
fn not_yet_valid_client_certificate_is_refused() {
    let net = Net::new("tls-link-future");
    let leaf = make_leaf(
        &net.pki.ca,
        LeafSpec {
            dns: &[CLIENT_NAME],
            not_yet_valid: true,
            ..Default::default()
        },
    );
    let files = net.pki.files("future", &leaf);
    refused_by_dc_server(
        &net,
        &files,
        &net.client,
        &[],
        "TLS: the peer's certificate is not valid yet",
    );
}

#[test]
fn revoked_client_certificate_is_refused_with_tls_crl() {
    let net = Net::new("tls-link-crl");
    let leaf = make_leaf(
        &net.pki.ca,
        LeafSpec {
            dns: &[CLIENT_NAME],
            serial: Some(4242),
            ..Default::default()
        },
    );
    let revoked = net.pki.files("revoked", &leaf);
    let crl = net.pki.crl(&[4242]).display().to_string();
    refused_by_dc_server(
        &net,
        &revoked,
        &net.client,
        &["-tls-crl", &crl],
        "TLS: the peer's certificate is revoked (-tls-crl)",
    );
}

#[test]
fn allow_name_refuses_an_unlisted_client_and_admits_a_listed_one() {
    let net = Net::new("tls-link-allow");
    let web2 = net.leaf_files("web2", &["web2.example"]);
    refused_by_dc_server(
        &net,
        &net.client,
        &web2,
        &[
            "-tls-allow-name",
            "web2.example",
            "-tls-allow-name",
            "spiffe://example/other",
        ],
        "TLS: the client's certificate carries none of the -tls-allow-name names",
    );
}

#[test]
fn wrong_server_name_is_refused_by_dc_client() {
    let net = Net::new("tls-link-name");
    let dc = net.server(&[]);
    let _client = net.dc_client(dc.port, &["-tls-name", "db.example", "-retry", "60000"]);
    dc_client_link_failure(
        &net,
        dc.port,
        "TLS: the server's certificate does not carry the expected name (see -tls-name)",
    );
    assert_answers_failures(&net.client_addr());
    assert_closed_line(&dc, "127.0.0.1:", "TLS: refused by the peer");
    assert_serves(&net.client, dc.port, "after-wrong-name");
}

/// dc_server presents the leaf `make` makes from the test's PKI: dc_client
/// refuses it with `why`, answers failures, and dc_server logs the refusal
/// it was sent.
fn server_refused_by_dc_client(tag: &str, make: impl FnOnce(&Pki) -> common::pki::Leaf, why: &str) {
    let net = Net::new(tag);
    let files = net.pki.files("bad-server", &make(&net.pki));
    let dc = net.server_with(&files, "srv", free_port(), &[]);
    let _client = net.dc_client(dc.port, &["-retry", "60000"]);
    dc_client_link_failure(&net, dc.port, why);
    assert_answers_failures(&net.client_addr());
    assert_closed_line(&dc, "127.0.0.1:", "TLS: refused by the peer");
}

#[test]
fn server_certificate_from_another_ca_is_refused_by_dc_client() {
    server_refused_by_dc_client(
        "tls-link-otherca-s",
        |pki| {
            make_leaf(
                &pki.other_ca,
                LeafSpec {
                    dns: &[SERVER_NAME],
                    ..Default::default()
                },
            )
        },
        "TLS: the peer's certificate is not signed by a -tls-ca root",
    );
}

#[test]
fn expired_server_certificate_is_refused_by_dc_client() {
    server_refused_by_dc_client(
        "tls-link-expired-s",
        |pki| {
            make_leaf(
                &pki.ca,
                LeafSpec {
                    dns: &[SERVER_NAME],
                    expired: true,
                    ..Default::default()
                },
            )
        },
        "TLS: the peer's certificate has expired",
    );
}

#[test]
fn no_client_auth_admits_a_client_without_certificate_with_a_warning() {
    let net = Net::new("tls-link-noauth");
    let dc = net.server(&["-tls-no-client-auth"]);
    let log = dc.log();
    let warnings = lines_with(
        &log,
        "warning: -tls-no-client-auth: clients are not authenticated",
    );
    assert_eq!(warnings.len(), 1, "{log}");
    let nocert = common::pki::client_without_cert(&net.pki.ca.pem, SERVER_NAME);
    let c = Client::with_connector(
        &format!("IP:127.0.0.1:{}", dc.port),
        0,
        Config::default(),
        Some(blocking_connector(nocert)),
    )
    .unwrap();
    assert_eq!(
        c.add(b"anonymous", b"an unauthenticated session", 60_000)
            .unwrap(),
        AddOutcome::Stored
    );
    assert_eq!(
        &c.get(b"anonymous").unwrap().unwrap()[..],
        b"an unauthenticated session"
    );
    assert_serves(&net.client, dc.port, "with-cert-too");
}

/// A TLS session to dc_server's port with its handshake done, and a second
/// handle on its TCP socket (to send bytes behind the session's back).
fn tls_session(files: &TlsFiles, port: u16) -> (TlsStream, TcpStream) {
    let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let raw = sock.try_clone().unwrap();
    sock.set_nonblocking(true).unwrap();
    let client = TlsClient::load(files, SERVER_NAME, false).unwrap();
    let mut t = TlsStream::connect(sock, &client).unwrap();
    drive(&mut t, |t| t.handshake()).unwrap();
    (t, raw)
}

/// Calls `f` until it does not block, waiting for the socket in between
/// (at most 10 s in all).
fn drive<T>(
    t: &mut TlsStream,
    mut f: impl FnMut(&mut TlsStream) -> std::io::Result<T>,
) -> std::io::Result<T> {
    use std::os::fd::AsRawFd;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match f(t) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(Instant::now());
                assert!(!left.is_zero(), "TLS session made no progress");
                let ev = libc::POLLIN | if t.wants_write() { libc::POLLOUT } else { 0 };
                distcache_rs::transport::wait_ready(t.as_raw_fd(), ev, Some(left))?;
            }
            other => return other,
        }
    }
}

#[test]
fn garbage_after_the_handshake_closes_that_connection() {
    let net = Net::new("tls-link-garbage");
    let dc = net.server(&[]);
    let (mut t, mut raw) = tls_session(&net.client, dc.port);
    let me = raw.local_addr().unwrap();
    // One good request over the session first: a HAVE answered "no".
    let req = request(5, 3, b"garbage-test-id");
    let mut sent = 0;
    while sent < req.len() {
        sent += drive(&mut t, |t| t.write(&req[sent..])).unwrap();
    }
    drive(&mut t, |t| t.flush()).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 256];
    while answer.len() < 15 {
        let n = drive(&mut t, |t| t.read(&mut buf)).unwrap();
        assert!(n > 0, "closed before answering");
        answer.extend_from_slice(&buf[..n]);
    }
    assert_eq!(answer[14], 1, "HAVE answer: not stored");
    // Then a record that is no TLS record of this session.
    let mut junk = vec![23, 3, 3, 0, 40];
    junk.extend_from_slice(&[0x5a; 40]);
    raw.write_all(&junk).unwrap();
    // The clone shares the session's non-blocking mode: wait on it.
    raw.set_nonblocking(false).unwrap();
    assert!(
        closed_within(&mut raw, Duration::from_secs(10)),
        "still open; dc_server's log:\n{}",
        dc.log()
    );
    assert_closed_line(&dc, &me.to_string(), "TLS: cannot decrypt peer's message");
    assert_serves(&net.client, dc.port, "after-garbage");
}

#[test]
fn handshake_that_never_completes_is_closed_after_stall() {
    let net = Net::new("tls-link-stall");
    let dc = net.server(&["-stall", "400"]);
    let mut raw = TcpStream::connect(("127.0.0.1", dc.port)).unwrap();
    let me = raw.local_addr().unwrap();
    // The start of a ClientHello record announcing 200 bytes, and no more.
    raw.write_all(&[22, 3, 1, 0, 200, 1, 0, 0, 196, 3, 3, 0x11, 0x22])
        .unwrap();
    // While it hangs, others are served.
    assert_serves(&net.client, dc.port, "during-stall");
    assert!(closed_within(&mut raw, Duration::from_secs(10)));
    assert_closed_line(&dc, &me.to_string(), "TLS: handshake not completed in ");
    assert!(dc.log().contains("ms (-stall)"), "{}", dc.log());
    assert_serves(&net.client, dc.port, "after-stall");
}

/// dc_server (or dc_client) started with `args` exits with status 1 and
/// one stderr line, which contains every one of `wanted`.
fn refuses_to_start(exe: &str, args: &[&str], wanted: &[&str]) {
    let mut cmd = Command::new(exe);
    cmd.args(args);
    refused_start(cmd, wanted);
}

/// [`refuses_to_start`] for a prepared command.
fn refused_start(mut cmd: Command, wanted: &[&str]) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{cmd:?} started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{cmd:?}\nstdout: {out}\nstderr: {err}"
    );
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line:\n{err}");
    for w in wanted {
        assert!(lines[0].contains(w), "expected {w:?} in {err}");
    }
}

/// dc_server's arguments listening on a TLS port with `files` and `extra`.
fn server_args(files: &TlsFiles, extra: &[&str]) -> Vec<String> {
    let mut v = vec![
        "-listen".to_string(),
        format!("TLS:127.0.0.1:{}", free_port()),
    ];
    v.extend(tls_flags(files));
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

#[test]
fn start_up_with_a_missing_key_file_fails_naming_flag_and_file() {
    let net = Net::new("tls-link-nokey");
    let files = TlsFiles {
        key: net.dir().path("nope.key"),
        ..net.server.clone()
    };
    let key = files.key.display().to_string();
    refuses_to_start(
        DC_SERVER,
        &strs(&server_args(&files, &[])),
        &[&format!("-tls-key {key}: missing")],
    );
}

#[test]
fn start_up_with_a_missing_cert_file_fails_naming_flag_and_file() {
    let net = Net::new("tls-link-nocertfile");
    let files = TlsFiles {
        cert: net.dir().path("nope.crt"),
        ..net.server.clone()
    };
    let cert = files.cert.display().to_string();
    refuses_to_start(
        DC_SERVER,
        &strs(&server_args(&files, &[])),
        &[&format!("-tls-cert {cert}: missing")],
    );
}

#[test]
fn start_up_with_an_unreadable_cert_file_fails_naming_flag_and_file() {
    let net = Net::new("tls-link-unreadable");
    // A directory is no file to read.
    let dir = net.dir().path("a-directory.crt");
    std::fs::create_dir(&dir).unwrap();
    let files = TlsFiles {
        cert: dir.clone(),
        ..net.server.clone()
    };
    let want = format!("-tls-cert {}: is a directory", dir.display());
    refuses_to_start(DC_SERVER, &strs(&server_args(&files, &[])), &[&want]);
    // A certificate of mode 000. Root reads anything, so a root test runs
    // dc_server as nobody, who owns the other files.
    std::fs::set_permissions(&net.server.cert, std::fs::Permissions::from_mode(0o000)).unwrap();
    let mut cmd = Command::new(DC_SERVER);
    cmd.args(server_args(&net.server, &[]));
    if distcache_tools::tools::sys::euid() == 0 {
        use std::os::unix::process::CommandExt;
        const NOBODY: u32 = 65534;
        for f in [&net.server.cert, &net.server.key, &net.server.ca] {
            std::os::unix::fs::chown(f, Some(NOBODY), Some(NOBODY)).unwrap();
        }
        cmd.uid(NOBODY).gid(NOBODY);
    }
    let want = format!(
        "-tls-cert {}: unreadable (permission denied)",
        net.server.cert.display()
    );
    refused_start(cmd, &[&want]);
}

#[test]
fn start_up_with_a_mismatched_key_fails_on_both_daemons() {
    let net = Net::new("tls-link-mismatch");
    let files = TlsFiles {
        key: net.client.key.clone(),
        ..net.server.clone()
    };
    let want = format!(
        "-tls-key {}: the key does not match the certificate in -tls-cert {}",
        net.client.key.display(),
        net.server.cert.display()
    );
    refuses_to_start(DC_SERVER, &strs(&server_args(&files, &[])), &[&want]);
    let listen = net.dir().addr("client");
    let mut args = vec![
        "-server".to_string(),
        "TLS:127.0.0.1:1".to_string(),
        "-listen".to_string(),
        listen,
    ];
    args.extend(tls_flags(&files));
    refuses_to_start(DC_CLIENT, &strs(&args), &[&want]);
}

#[test]
fn key_readable_by_others_refused_group_readable_accepted_override_accepted() {
    let net = Net::new("tls-link-perms");
    std::fs::set_permissions(&net.server.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    refuses_to_start(
        DC_SERVER,
        &strs(&server_args(&net.server, &[])),
        &[
            &format!("-tls-key {}: ", net.server.key.display()),
            "readable by others (mode 0644)",
            "-tls-key-insecure-perms",
        ],
    );
    // dc_client reads its key the same way.
    std::fs::set_permissions(&net.client.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut args = vec![
        "-server".to_string(),
        "TLS:127.0.0.1:1".to_string(),
        "-listen".to_string(),
        net.dir().addr("client"),
    ];
    args.extend(tls_flags(&net.client));
    refuses_to_start(
        DC_CLIENT,
        &strs(&args),
        &[
            &format!("-tls-key {}: ", net.client.key.display()),
            "readable by others (mode 0644)",
        ],
    );
    std::fs::set_permissions(&net.client.key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let dc = net.server(&["-tls-key-insecure-perms"]);
    assert_serves(&net.client, dc.port, "insecure-perms");
    drop(dc);
    std::fs::set_permissions(&net.server.key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let dc = net.server(&[]);
    assert_serves(&net.client, dc.port, "group-readable");
}

// ------------------------------------------------------------ 7: rotation

/// Replaces `files`' certificate and key with `leaf`'s the way README
/// says: written beside them, then renamed into place.
fn replace_files(files: &TlsFiles, leaf: &common::pki::Leaf) {
    for (path, text) in [(&files.key, &leaf.key), (&files.cert, &leaf.cert)] {
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }
}

fn sigusr1(p: &Proc) {
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(p.pid(), libc::SIGUSR1) }, 0);
}

/// The PEM body of the certificate a new s_client connection (with the
/// client leaf `files`) is shown.
fn served_cert(net: &Net, files: &TlsFiles, port: u16) -> String {
    let certs = cert_args(files);
    let probe = request(9, 3, b"rotation-probe");
    let s = s_client(net, port, &strs(&certs), &probe, &[0, 0x11, 0, 0, 1]);
    assert!(
        s.text().contains("Verify return code: 0 (ok)"),
        "{}",
        s.text()
    );
    s.server_cert()
}

/// 16 DC_CTX threads through dc_client while the server's certificate
/// (and dc_client's) is replaced, reloaded by `reload` (SIGUSR1, or the
/// periodic check): no operation fails, both daemons say they reloaded
/// (`why`), new connections get the new certificate.
fn rotation_under_load(tag: &str, reload_check: &str, signal: bool, why: &str) {
    if !have_binary(OPENSSL, tag) {
        return;
    }
    let net = Net::new(tag);
    let check = ["-tls-reload-check", reload_check];
    let dc = net.server(&check);
    // Generous bounds: a slow turn of the 2-core machine is no failure of
    // the rotation. -retry is for the reconnection at the end.
    let mut client_extra = vec!["-deadline", "5000", "-retry", "200"];
    client_extra.extend_from_slice(&check);
    let client = net.dc_client(dc.port, &client_extra);
    let addr = net.client_addr();
    wait_link_up(&addr);
    let old = pem_body(&std::fs::read_to_string(&net.server.cert).unwrap());
    assert_eq!(served_cert(&net, &net.client, dc.port), old);
    let mut load = Load::start(LoadSpec {
        target: &addr,
        workers: 16,
        id_prefix: tag,
        repeat: 4,
        pause: Pause::EveryIteration(Duration::from_millis(2)),
        get_after_failed_add: false,
    });
    load.wait_for_successes(1000, Duration::from_secs(30));
    let new_server = net.pki.leaf(&[SERVER_NAME]);
    replace_files(&net.server, &new_server);
    replace_files(&net.client, &net.pki.leaf(&[ROTATED_CLIENT]));
    if signal {
        sigusr1(&dc.srv.proc);
        sigusr1(&client);
    }
    let line = format!("TLS: reloaded certificate {}", net.server.cert.display());
    let slog = wait_text("dc_server's log", &line, || dc.log());
    assert!(
        slog.contains(&format!("({why}): new connections use them")),
        "{slog}"
    );
    let cline = format!("TLS: reloaded certificate {}", net.client.cert.display());
    let clog = wait_text("dc_client's log", &cline, || net.client_log());
    assert!(clog.contains(&format!("({why})")), "{clog}");
    let before = load.successes();
    load.wait_for_successes(before + 1000, Duration::from_secs(30));
    assert_eq!(
        served_cert(&net, &net.client, dc.port),
        pem_body(&new_server.cert)
    );
    let results = load.stop();
    for r in &results {
        assert!(r.is_ok(), "{r:?}");
    }
    assert_eq!(load.failures(), 0, "failed operations during the rotation");
    assert!(load.successes() >= before + 1000, "{}", load.successes());
    assert!(
        !slog.contains("reload failed") && !clog.contains("reload failed"),
        "{slog}\n{clog}"
    );
    // The established link carried the load throughout.
    let (slog, clog) = (dc.log(), net.client_log());
    assert!(!clog.contains("lost server connection"), "{clog}");
    assert!(!slog.contains("closing connection"), "{slog}");
    // dc_client's next connection presents its new certificate: a new
    // dc_server on the port that admits only the new name takes over.
    let port = dc.port;
    drop(dc);
    let dc = net.server_on("srv2", port, &["-tls-allow-name", ROTATED_CLIENT]);
    wait_link_up(&addr);
    let c = Client::new(&addr, 0).unwrap();
    assert_eq!(
        c.add(b"after-rotation", b"rotated session", 60_000)
            .unwrap(),
        AddOutcome::Stored
    );
    assert_eq!(
        &tls_lib_client(&net.client, dc.port)
            .get(b"after-rotation")
            .unwrap()
            .unwrap()[..],
        b"rotated session"
    );
    assert!(!dc.log().contains("closing connection"), "{}", dc.log());
}

/// The name of the client certificate a rotation puts in place.
const ROTATED_CLIENT: &str = "web1-rotated.example";

#[test]
fn rotation_under_load_with_sigusr1() {
    rotation_under_load("tls-link-rotate-usr1", "0", true, "SIGUSR1");
}

#[test]
fn rotation_under_load_by_replacing_the_files() {
    rotation_under_load("tls-link-rotate-files", "500", false, "files changed");
}

#[test]
fn a_broken_reload_keeps_the_old_configuration() {
    if !have_binary(OPENSSL, "a_broken_reload_keeps_the_old_configuration") {
        return;
    }
    let net = Net::new("tls-link-badreload");
    let mut dc = net.server(&[]);
    let mut client = net.dc_client(dc.port, &[]);
    wait_link_up(&net.client_addr());
    let old = pem_body(&std::fs::read_to_string(&net.server.cert).unwrap());
    // New keys that do not belong to the certificates in place (a rotation
    // half done), then SIGUSR1 to both daemons.
    for files in [&net.server, &net.client] {
        std::fs::write(&files.key, net.pki.leaf(&[SERVER_NAME]).key).unwrap();
    }
    sigusr1(&dc.srv.proc);
    sigusr1(&client);
    for (who, files, read) in [
        (
            "dc_server",
            &net.server,
            Box::new(|| dc.log()) as Box<dyn Fn() -> String>,
        ),
        ("dc_client", &net.client, Box::new(|| net.client_log())),
    ] {
        let log = wait_text(who, "TLS: reload failed", read);
        let lines = lines_with(&log, "TLS: reload");
        assert_eq!(lines.len(), 1, "{who}:\n{log}");
        assert!(
            lines[0].contains(&format!(
                "TLS: reload failed (SIGUSR1), keeping the previous configuration: -tls-key {}: the key does not match the certificate in -tls-cert {}",
                files.key.display(),
                files.cert.display()
            )),
            "{who}:\n{log}"
        );
    }
    assert!(dc.srv.proc.alive() && client.alive());
    // New connections still get the old (whole) configuration, and the
    // link through dc_client goes on.
    let probe = net.leaf_files("probe", &[CLIENT_NAME]);
    assert_eq!(served_cert(&net, &probe, dc.port), old);
    let c = Client::new(&net.client_addr(), 0).unwrap();
    assert_eq!(
        c.add(b"after-bad-reload", b"still served", 60_000).unwrap(),
        AddOutcome::Stored
    );
    assert_eq!(
        &c.get(b"after-bad-reload").unwrap().unwrap()[..],
        b"still served"
    );
}

// ------------------------------------------------------------ 8: no secret in clear

/// A session's data (200 distinctive bytes) added and fetched through
/// dc_client, whose link to dc_server runs through a recording relay;
/// returns the relay.
fn secret_through_relay(net: &Net, dc_port: u16, tls: bool, secret: &[u8]) -> Relay {
    let relay = Relay::start(dc_port);
    let _client = if tls {
        net.dc_client(relay.port, &[])
    } else {
        dc_client_logged(net.dir(), &format!("IP:127.0.0.1:{}", relay.port), &[])
    };
    let addr = net.client_addr();
    wait_link_up(&addr);
    let c = Client::new(&addr, FLAG_PERSISTENT).unwrap();
    assert_eq!(
        c.add(b"secret-session", secret, 60_000).unwrap(),
        AddOutcome::Stored
    );
    assert_eq!(&c.get(b"secret-session").unwrap().unwrap()[..], secret);
    relay
}

fn distinctive_secret() -> Vec<u8> {
    let mut s = Vec::new();
    let mut i = 0;
    while s.len() < 200 {
        s.extend_from_slice(format!("<master secret {i:02}>").as_bytes());
        i += 1;
    }
    s.truncate(200);
    s
}

/// Whether any 20-byte piece of `secret` is in `wire`.
fn leaks(wire: &[u8], secret: &[u8]) -> bool {
    secret.windows(20).any(|w| contains(wire, w))
}

#[test]
fn no_session_data_in_clear_on_the_tls_link() {
    let secret = distinctive_secret();
    let net = Net::new("tls-link-secret");
    let dc = net.server(&[]);
    let relay = secret_through_relay(&net, dc.port, true, &secret);
    let (up, down) = (relay.to_server(), relay.to_client());
    assert!(
        up.len() > 200 && down.len() > 200,
        "the relay carried the link"
    );
    assert!(
        !leaks(&up, &secret),
        "session data in clear towards dc_server"
    );
    assert!(
        !leaks(&down, &secret),
        "session data in clear towards dc_client"
    );
    assert!(!contains(&up, b"secret-session") && !contains(&down, b"secret-session"));
}

#[test]
fn session_data_is_in_clear_on_a_plain_link_the_control() {
    let secret = distinctive_secret();
    let net = Net::new("tls-link-secret-plain");
    let port = free_port();
    let listen = format!("IP:127.0.0.1:{port}");
    let _srv = Srv::start(net.dir(), "srv", &["-listen", &listen]);
    let relay = secret_through_relay(&net, port, false, &secret);
    assert!(contains(&relay.to_server(), &secret), "the ADD carries it");
    assert!(
        contains(&relay.to_client(), &secret),
        "the GET answer carries it"
    );
}

// ------------------------------------------------------------ address forms

#[test]
fn tls_ipv6_and_all_interfaces_address_forms() {
    let net = Net::new("tls-link-forms");
    let (v6, any) = (free_port(), free_port());
    let mut args = vec![
        "-listen".to_string(),
        format!("TLS:[::1]:{v6}"),
        "-listen".to_string(),
        format!("TLS:{any}"),
    ];
    args.extend(tls_flags(&net.server));
    let srv = Srv::start(net.dir(), "srv", &strs(&args));
    // dc_client to the IPv6 form, DC_CTX through it.
    let v6_addr = format!("TLS:[::1]:{v6}");
    let mut client_args = vec!["-tls-name".to_string(), SERVER_NAME.to_string()];
    client_args.extend(tls_flags(&net.client));
    let _client = dc_client_logged(net.dir(), &v6_addr, &strs(&client_args));
    wait_link_up(&net.client_addr());
    let c = Client::new(&net.client_addr(), FLAG_PERSISTENT).unwrap();
    assert_eq!(
        c.add(b"over-v6", b"a session over IPv6", 60_000).unwrap(),
        AddOutcome::Stored
    );
    // dc_test to the all-interfaces listener on 127.0.0.1, and to ::1.
    for target in [format!("TLS:127.0.0.1:{any}"), v6_addr.clone()] {
        let mut a = vec!["-connect".to_string(), target];
        a.extend(client_args.iter().cloned());
        dc_test_ok(&strs(&a), 100);
    }
    // One cache behind every listener.
    assert_eq!(
        &tls_lib_client(&net.client, any)
            .get(b"over-v6")
            .unwrap()
            .unwrap()[..],
        b"a session over IPv6"
    );
    assert!(!srv.log().contains("closing connection"), "{}", srv.log());
}
