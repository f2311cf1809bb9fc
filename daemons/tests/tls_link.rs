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
use std::path::Path;
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
        let port = free_port();
        let mut args = vec![
            "-listen".to_string(),
            format!("TLS:127.0.0.1:{port}"),
            "-sessions".to_string(),
            "100000".to_string(),
        ];
        args.extend(tls_flags(&self.server));
        args.extend(extra.iter().map(|s| s.to_string()));
        let srv = Srv::start(self.dir(), "srv", &strs(&args));
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
        dc_client_logged(
            self.dir(),
            &format!("TLS:127.0.0.1:{port}"),
            &strs(&args),
        )
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

/// dc_test's last line field `key=value`.
fn dc_test_field(out: &str, key: &str) -> u64 {
    let last = out.lines().last().unwrap_or("");
    last.split_whitespace()
        .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in {out:?}"))
        .parse()
        .unwrap()
}

/// Runs dc_test with `args` and asserts every one of `ops` operations was
/// answered correctly.
fn dc_test_ok(args: &[&str], ops: u64) {
    let ops_s = ops.to_string();
    let mut all = args.to_vec();
    all.extend_from_slice(&["-sessions", "8", "-ops", &ops_s, "-seed", "16"]);
    let (code, out, err) = run(DC_TEST, &all, Duration::from_secs(60));
    assert_eq!(code, Some(0), "dc_test {all:?}\nstdout: {out}\nstderr: {err}");
    assert_eq!(dc_test_field(&out, "ops"), ops, "{out}");
    assert_eq!(dc_test_field(&out, "errors"), 0, "{out}");
    assert_eq!(dc_test_field(&out, "failures"), 0, "{out}");
}

/// Whether a Debian binary the test needs is there; under CI it must be.
fn have(exe: &str, test: &str) -> bool {
    if Path::new(exe).exists() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{exe} is missing under CI (.ci/run installs it)"
    );
    eprintln!("{test}: SKIPPED, {exe} is not installed");
    false
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
