//! The TLS groundwork (daemons/src/tls.rs): certificates made with rcgen
//! (common/pki.rs: two CAs, servers, clients, an expired one; a revoked one
//! here), a server and a client `TlsStream` over a loopback TCP pair, both
//! driven by poll(2) in this one thread, as an event loop would.

mod common;

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;

use common::pki::{client_without_cert, make_leaf, LeafSpec, Pki};
use distcache_tools::tls::{
    Failure, ServerOptions, TlsClient, TlsFiles, TlsServer, TlsStream, DEFAULT_SEND_BUFFER,
};

// ------------------------------------------------------------ driving

fn tcp_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    (c, s)
}

/// poll(2) on the given streams: readable, and writable while they have
/// records to send. The wait is bounded so a stuck session fails the test
/// instead of hanging it.
fn wait(streams: &[&TlsStream]) {
    let mut fds: Vec<libc::pollfd> = streams
        .iter()
        .map(|s| libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLIN | if s.wants_write() { libc::POLLOUT } else { 0 },
            revents: 0,
        })
        .collect();
    // SAFETY: fds is a live, exclusively borrowed array of fds.len()
    // pollfd structures for the duration of the call.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 10_000) };
    assert!(n > 0, "no progress on either side of the TLS pair");
}

/// Whether the fd shows input right now (poll with a zero timeout).
fn fd_readable(s: &TlsStream) -> bool {
    let mut fd = libc::pollfd {
        fd: s.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one live pollfd, exclusively borrowed for the call.
    let n = unsafe { libc::poll(&mut fd, 1, 0) };
    n == 1 && fd.revents & libc::POLLIN != 0
}

fn would_block(r: &io::Result<()>) -> bool {
    matches!(r, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// Both handshakes until each side is done or has failed.
fn handshake(c: &mut TlsStream, s: &mut TlsStream) -> (io::Result<()>, io::Result<()>) {
    let mut rc = Err(io::ErrorKind::WouldBlock.into());
    let mut rs = Err(io::ErrorKind::WouldBlock.into());
    for _ in 0..1000 {
        if would_block(&rc) {
            rc = c.handshake();
        }
        if would_block(&rs) {
            rs = s.handshake();
        }
        match (would_block(&rc), would_block(&rs)) {
            (false, false) => return (rc, rs),
            (true, false) => wait(&[c]),
            (false, true) => wait(&[s]),
            (true, true) => wait(&[c, s]),
        }
    }
    panic!("handshake did not finish in 1000 turns");
}

/// Sends all of `data` from `from` while `to` reads; returns what `to` read.
fn transfer(from: &mut TlsStream, to: &mut TlsStream, data: &[u8]) -> io::Result<Vec<u8>> {
    let mut sent = 0;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    for _ in 0..10_000 {
        if sent < data.len() {
            match from.write(&data[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        } else {
            match from.flush() {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        loop {
            match to.read(&mut buf) {
                Ok(0) => return Ok(got),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if got.len() == data.len() {
            return Ok(got);
        }
        wait(&[from, to]);
    }
    panic!("transfer did not finish in 10000 turns");
}

/// Reads until the stream fails or yields data / end of stream.
fn read_outcome(s: &mut TlsStream) -> io::Result<usize> {
    let mut buf = [0u8; 256];
    for _ in 0..1000 {
        match s.read(&mut buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait(&[s]),
            other => return other,
        }
    }
    panic!("no outcome in 1000 turns");
}

fn failure_of<T: std::fmt::Debug>(r: &io::Result<T>) -> Failure {
    match r {
        Err(e) => Failure::of(e)
            .unwrap_or_else(|| panic!("not a TLS failure: {e:?}"))
            .clone(),
        Ok(v) => panic!("expected a TLS failure, got Ok({v:?})"),
    }
}

fn pair(server: &TlsServer, client: &TlsClient) -> (TlsStream, TlsStream) {
    let (c, s) = tcp_pair();
    (
        TlsStream::connect(c, client).unwrap(),
        TlsStream::accept(s, server).unwrap(),
    )
}

fn load_server(files: &TlsFiles) -> TlsServer {
    TlsServer::load(files, &ServerOptions::default()).unwrap()
}

fn load_client(files: &TlsFiles, name: &str) -> TlsClient {
    TlsClient::load(files, name, false).unwrap()
}

use rustls::pki_types::pem::PemObject;

/// A dc_server side that speaks TLS 1.2 only (built here: the loader
/// offers 1.3 and 1.2), requiring client certificates from `ca.pem`.
fn tls12_server(pki: &Pki, files: &TlsFiles) -> TlsServer {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(pki.ca.pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let chain = rustls::pki_types::CertificateDer::pem_file_iter(&files.cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&files.key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    TlsServer::new(Arc::new(config))
}

// ------------------------------------------------------------ tests

#[test]
fn round_trip_both_ways_with_peer_names() {
    let pki = Pki::new("tls-rt");
    let server = load_server(&pki.server());
    let client = load_client(&pki.client(), "cache.example");
    let (mut c, mut s) = pair(&server, &client);
    assert!(c.is_handshaking() && s.is_handshaking());
    let (rc, rs) = handshake(&mut c, &mut s);
    rc.unwrap();
    rs.unwrap();
    assert!(!c.is_handshaking() && !s.is_handshaking());
    assert_eq!(c.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    assert_eq!(c.peer_names(), vec!["cache.example".to_string()]);
    assert_eq!(
        s.peer_names(),
        vec![
            "web1.example".to_string(),
            "spiffe://example/web".to_string()
        ]
    );

    let request: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(transfer(&mut c, &mut s, &request).unwrap(), request);
    let answer: Vec<u8> = (0..30_000u32).map(|i| (i % 13) as u8).collect();
    assert_eq!(transfer(&mut s, &mut c, &answer).unwrap(), answer);

    // A clean close: the server reads the end of the stream.
    let mut closed = c.close();
    while would_block(&closed) {
        wait(&[&c]);
        closed = c.flush();
    }
    closed.unwrap();
    assert_eq!(read_outcome(&mut s).unwrap(), 0);
}

#[test]
fn decrypted_input_is_reported_when_the_fd_is_quiet() {
    let pki = Pki::new("tls-buffered");
    let server = load_server(&pki.server());
    let client = load_client(&pki.client(), "cache.example");
    let (mut c, mut s) = pair(&server, &client);
    let (rc, rs) = handshake(&mut c, &mut s);
    rc.unwrap();
    rs.unwrap();
    let mut sent = c.write(b"0123456789abcdef");
    while matches!(&sent, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
        wait(&[&c]);
        sent = c.write(b"0123456789abcdef");
    }
    assert_eq!(sent.unwrap(), 16);
    let mut small = [0u8; 4];
    let n = read_outcome_into(&mut s, &mut small);
    assert_eq!(&small[..n], &b"0123"[..n]);
    // The rest is decrypted inside the session: the fd is quiet, and the
    // stream says so.
    assert!(s.has_buffered_input());
    assert!(!fd_readable(&s));
    let mut rest = Vec::new();
    rest.extend_from_slice(&small[..n]);
    while s.has_buffered_input() {
        let n = s.read(&mut small).unwrap();
        rest.extend_from_slice(&small[..n]);
    }
    assert_eq!(rest, b"0123456789abcdef");
    // Nothing left: a read now waits for the fd.
    assert_eq!(
        s.read(&mut small).unwrap_err().kind(),
        io::ErrorKind::WouldBlock
    );
}

fn read_outcome_into(s: &mut TlsStream, buf: &mut [u8]) -> usize {
    for _ in 0..1000 {
        match s.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait(&[s]),
            other => return other.unwrap(),
        }
    }
    panic!("no data in 1000 turns");
}

#[test]
fn tls12_forced_on_the_server_round_trip_and_refusal() {
    let pki = Pki::new("tls-12");
    let server = tls12_server(&pki, &pki.server());
    let client = load_client(&pki.client(), "cache.example");
    let (mut c, mut s) = pair(&server, &client);
    let (rc, rs) = handshake(&mut c, &mut s);
    rc.unwrap();
    rs.unwrap();
    assert_eq!(c.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
    assert_eq!(s.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
    assert_eq!(c.peer_names(), vec!["cache.example".to_string()]);
    assert!(s.peer_names().contains(&"web1.example".to_string()));
    let request: Vec<u8> = (0..40_000u32).map(|i| (i % 241) as u8).collect();
    assert_eq!(transfer(&mut c, &mut s, &request).unwrap(), request);
    assert_eq!(transfer(&mut s, &mut c, b"answer").unwrap(), b"answer");

    // TLS 1.2 judges the client's certificate inside the handshake, so the
    // client learns of the refusal there, not on a later read.
    let nocert = client_without_cert(&pki.ca.pem, "cache.example");
    let (mut c, mut s) = pair(&server, &nocert);
    let (rc, rs) = handshake(&mut c, &mut s);
    assert_eq!(failure_of(&rs), Failure::NoClientCert);
    assert!(matches!(failure_of(&rc), Failure::PeerRefused(_)), "{rc:?}");
}

#[test]
fn garbage_after_the_handshake_ends_the_session_clearly() {
    let pki = Pki::new("tls-garbage");
    let server = load_server(&pki.server());
    let client = load_client(&pki.client(), "cache.example");
    let (c, s) = tcp_pair();
    let mut raw = c.try_clone().unwrap();
    let mut c = TlsStream::connect(c, &client).unwrap();
    let mut s = TlsStream::accept(s, &server).unwrap();
    let (rc, rs) = handshake(&mut c, &mut s);
    rc.unwrap();
    rs.unwrap();
    assert_eq!(transfer(&mut c, &mut s, b"first").unwrap(), b"first");
    assert_eq!(s.peer_addr().unwrap(), raw.local_addr().unwrap());
    // Bytes that are not a TLS record, on the client's socket behind the
    // session's back (an application data record header with junk after it).
    raw.write_all(&[23, 3, 3, 0, 40]).unwrap();
    raw.write_all(&[0x5a; 40]).unwrap();
    let r = read_outcome(&mut s);
    let failure = failure_of(&r);
    assert!(matches!(failure, Failure::Protocol(_)), "{failure:?}");
    assert_eq!(r.unwrap_err().kind(), io::ErrorKind::InvalidData);
    // The session stays failed: a write says the same.
    assert_eq!(failure_of(&s.write(b"x")), failure);
}

#[test]
fn client_without_certificate_refused() {
    let pki = Pki::new("tls-nocert");
    let server = load_server(&pki.server());
    let client = client_without_cert(&pki.ca.pem, "cache.example");
    let (mut c, mut s) = pair(&server, &client);
    let (rc, rs) = handshake(&mut c, &mut s);
    assert_eq!(failure_of(&rs), Failure::NoClientCert);
    assert_eq!(s.failure(), Some(&Failure::NoClientCert));
    // TLS 1.3: the client's side of the handshake ends before the server
    // has judged it; the alert comes on its next read.
    let client_side = match rc {
        Err(e) => Err(e),
        Ok(()) => read_outcome(&mut c).map(|_| ()),
    };
    match failure_of(&client_side) {
        Failure::PeerRefused(why) => assert!(why.contains("client certificate"), "{why}"),
        other => panic!("client saw {other:?}"),
    }
}

#[test]
fn no_client_auth_option_lets_a_client_without_certificate_in() {
    let pki = Pki::new("tls-noauth");
    let opts = ServerOptions {
        no_client_auth: true,
        ..Default::default()
    };
    let server = TlsServer::load(&pki.server(), &opts).unwrap();
    let client = client_without_cert(&pki.ca.pem, "cache.example");
    let (mut c, mut s) = pair(&server, &client);
    let (rc, rs) = handshake(&mut c, &mut s);
    rc.unwrap();
    rs.unwrap();
    assert_eq!(transfer(&mut c, &mut s, b"ping").unwrap(), b"ping");
    assert!(s.peer_names().is_empty());
}

/// The side that judges a certificate fails with `expect`; the other side
/// learns it was refused.
fn refused(c: &mut TlsStream, s: &mut TlsStream, server_judges: bool, expect: Failure) {
    let (rc, rs) = handshake(c, s);
    let (judge, other, other_stream) = if server_judges {
        (rs, rc, c)
    } else {
        (rc, rs, s)
    };
    assert_eq!(failure_of(&judge), expect);
    let other = match other {
        Err(e) => Err(e),
        Ok(()) => read_outcome(other_stream).map(|_| ()),
    };
    match failure_of(&other) {
        Failure::PeerRefused(_) => {}
        f => panic!("the refused side saw {f:?}"),
    }
}

#[test]
fn client_certificate_from_another_ca_refused() {
    let pki = Pki::new("tls-otherca-c");
    let server = load_server(&pki.server());
    let leaf = make_leaf(
        &pki.other_ca,
        LeafSpec {
            dns: &["web1.example"],
            ..Default::default()
        },
    );
    let client = load_client(&pki.files("stranger", &leaf), "cache.example");
    let (mut c, mut s) = pair(&server, &client);
    refused(&mut c, &mut s, true, Failure::UnknownCa);
}

#[test]
fn server_certificate_from_another_ca_refused() {
    let pki = Pki::new("tls-otherca-s");
    let leaf = make_leaf(
        &pki.other_ca,
        LeafSpec {
            dns: &["cache.example"],
            ..Default::default()
        },
    );
    let server = load_server(&pki.files("impostor", &leaf));
    let client = load_client(&pki.client(), "cache.example");
    let (mut c, mut s) = pair(&server, &client);
    refused(&mut c, &mut s, false, Failure::UnknownCa);
}

#[test]
fn expired_client_certificate_refused() {
    let pki = Pki::new("tls-expired-c");
    let server = load_server(&pki.server());
    let leaf = make_leaf(
        &pki.ca,
        LeafSpec {
            dns: &["web1.example"],
            expired: true,
            ..Default::default()
        },
    );
    let client = load_client(&pki.files("old", &leaf), "cache.example");
    let (mut c, mut s) = pair(&server, &client);
    refused(&mut c, &mut s, true, Failure::Expired);
}

#[test]
fn expired_server_certificate_refused() {
    let pki = Pki::new("tls-expired-s");
    let leaf = make_leaf(
        &pki.ca,
        LeafSpec {
            dns: &["cache.example"],
            expired: true,
            ..Default::default()
        },
    );
    let server = load_server(&pki.files("old", &leaf));
    let client = load_client(&pki.client(), "cache.example");
    let (mut c, mut s) = pair(&server, &client);
    refused(&mut c, &mut s, false, Failure::Expired);
}

#[test]
fn not_yet_valid_certificates_refused_on_both_sides() {
    let pki = Pki::new("tls-future");
    let future = |dns| {
        make_leaf(
            &pki.ca,
            LeafSpec {
                dns,
                not_yet_valid: true,
                ..Default::default()
            },
        )
    };
    let server = load_server(&pki.server());
    let client = load_client(
        &pki.files("future-c", &future(&["web1.example"])),
        "cache.example",
    );
    let (mut c, mut s) = pair(&server, &client);
    refused(&mut c, &mut s, true, Failure::NotYetValid);

    let server = load_server(&pki.files("future-s", &future(&["cache.example"])));
    let client = load_client(&pki.client(), "cache.example");
    let (mut c, mut s) = pair(&server, &client);
    refused(&mut c, &mut s, false, Failure::NotYetValid);
}

#[test]
fn wrong_server_name_refused() {
    let pki = Pki::new("tls-name");
    let server = load_server(&pki.server());
    let client = load_client(&pki.client(), "db.example");
    let (mut c, mut s) = pair(&server, &client);
    refused(&mut c, &mut s, false, Failure::BadName);
}

#[test]
fn revoked_client_certificate_refused() {
    let pki = Pki::new("tls-crl");
    let leaf = make_leaf(
        &pki.ca,
        LeafSpec {
            dns: &["web1.example"],
            serial: Some(4242),
            ..Default::default()
        },
    );
    let crl_path = pki.crl(&[4242]);
    let mut files = pki.server();
    files.crl = Some(crl_path.clone());
    let server = load_server(&files);
    let revoked = load_client(&pki.files("revoked", &leaf), "cache.example");
    let (mut c, mut s) = pair(&server, &revoked);
    refused(&mut c, &mut s, true, Failure::Revoked);
    // The same CRL does not stop a client it does not list.
    let good = load_client(&pki.client(), "cache.example");
    let (mut c, mut s) = pair(&server, &good);
    let (rc, rs) = handshake(&mut c, &mut s);
    rc.unwrap();
    rs.unwrap();
    assert_eq!(transfer(&mut c, &mut s, b"ok").unwrap(), b"ok");
}

#[test]
fn plaintext_client_on_tls_port_refused() {
    let pki = Pki::new("tls-plain-c");
    let server = load_server(&pki.server());
    let (mut raw, s) = tcp_pair();
    let mut s = TlsStream::accept(s, &server).unwrap();
    // A distcache request header as a plain client would send it.
    raw.write_all(&[0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x20])
        .unwrap();
    let r = read_outcome(&mut s);
    assert_eq!(failure_of(&r), Failure::NotTls);
    let msg = r.unwrap_err().to_string();
    assert!(msg.contains("did not speak TLS"), "{msg}");
    // Every later call says the same, and the socket saw an alert record.
    assert_eq!(failure_of(&s.write(b"x")), Failure::NotTls);
    let mut alert = [0u8; 16];
    let n = raw.read(&mut alert).unwrap();
    assert!(
        n >= 5 && alert[0] == 21,
        "expected a TLS alert record, got {:?}",
        &alert[..n]
    );
}

#[test]
fn tls_client_on_a_plain_port_fails_clearly() {
    let pki = Pki::new("tls-plain-s");
    let client = load_client(&pki.client(), "cache.example");
    // A plain server hangs up on the ClientHello: after reading it all (the
    // client sees the end of stream) or with it unread (a reset).
    for read_all in [true, false] {
        let (c, mut raw) = tcp_pair();
        let mut c = TlsStream::connect(c, &client).unwrap();
        let r = c.handshake();
        assert!(would_block(&r), "{r:?}");
        let mut header = [0u8; 5];
        raw.read_exact(&mut header).unwrap();
        assert_eq!(header[0], 22, "a TLS handshake record");
        if read_all {
            let len = u16::from_be_bytes([header[3], header[4]]) as usize;
            let mut body = vec![0u8; len];
            raw.read_exact(&mut body).unwrap();
        }
        drop(raw);
        let mut r = c.handshake();
        while would_block(&r) {
            wait(&[&c]);
            r = c.handshake();
        }
        assert_eq!(
            failure_of(&r),
            Failure::ClosedInHandshake,
            "read_all {read_all}"
        );
        let msg = r.unwrap_err().to_string();
        assert!(msg.contains("during the handshake"), "{msg}");
    }
}

#[test]
fn allow_list_accepts_listed_dns_and_uri_names_and_refuses_others() {
    let pki = Pki::new("tls-allow");
    let server_files = pki.server();
    let client = load_client(&pki.client(), "cache.example");
    for allowed in [
        vec!["web1.example".to_string()],
        vec!["spiffe://example/web".to_string()],
        vec!["web9.example".to_string(), "web1.example".to_string()],
    ] {
        let opts = ServerOptions {
            allow_names: allowed.clone(),
            ..Default::default()
        };
        let server = TlsServer::load(&server_files, &opts).unwrap();
        let (mut c, mut s) = pair(&server, &client);
        let (rc, rs) = handshake(&mut c, &mut s);
        rc.unwrap_or_else(|e| panic!("{allowed:?}: {e}"));
        rs.unwrap_or_else(|e| panic!("{allowed:?}: {e}"));
        assert_eq!(transfer(&mut c, &mut s, b"hi").unwrap(), b"hi");
    }
    // A name the certificate does not carry (nor a prefix of one).
    for refused_list in [vec!["web2.example".to_string()], vec!["web1".to_string()]] {
        let opts = ServerOptions {
            allow_names: refused_list,
            ..Default::default()
        };
        let server = TlsServer::load(&server_files, &opts).unwrap();
        let (mut c, mut s) = pair(&server, &client);
        refused(&mut c, &mut s, true, Failure::NameNotAllowed);
    }
    // An allow-list without client certificates is a contradiction.
    let opts = ServerOptions {
        allow_names: vec!["web1.example".into()],
        no_client_auth: true,
        ..Default::default()
    };
    let err = TlsServer::load(&server_files, &opts).unwrap_err();
    assert!(
        err.contains("-tls-allow-name") && err.contains("-tls-no-client-auth"),
        "{err}"
    );
}

#[test]
fn key_readable_by_others_refused_group_readable_accepted_override_works() {
    let pki = Pki::new("tls-perms");
    let files = pki.server();
    let key = files.key.display().to_string();
    std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = TlsServer::load(&files, &ServerOptions::default()).unwrap_err();
    assert!(err.starts_with(&format!("-tls-key {key}:")), "{err}");
    assert!(
        err.contains("readable by others") && err.contains("0644"),
        "{err}"
    );
    assert!(err.contains("-tls-key-insecure-perms"), "{err}");
    let err = TlsClient::load(&files, "cache.example", false).unwrap_err();
    assert!(err.starts_with(&format!("-tls-key {key}:")), "{err}");

    let insecure = ServerOptions {
        insecure_key_perms: true,
        ..Default::default()
    };
    TlsServer::load(&files, &insecure).unwrap();
    TlsClient::load(&files, "cache.example", true).unwrap();

    std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o640)).unwrap();
    TlsServer::load(&files, &ServerOptions::default()).unwrap();
}

#[test]
fn mismatched_key_refused_at_load_naming_the_flags() {
    let pki = Pki::new("tls-mismatch");
    let server = pki.server();
    let client = pki.client();
    let files = TlsFiles {
        key: client.key.clone(),
        ..server.clone()
    };
    let err = TlsServer::load(&files, &ServerOptions::default()).unwrap_err();
    assert_eq!(
        err,
        format!(
            "-tls-key {}: the key does not match the certificate in -tls-cert {}",
            client.key.display(),
            server.cert.display()
        )
    );
    let err = TlsClient::load(&files, "cache.example", false).unwrap_err();
    assert!(
        err.starts_with("-tls-key ") && err.contains("does not match"),
        "{err}"
    );
}

#[test]
fn unusable_files_named_with_flag_file_and_reason() {
    let pki = Pki::new("tls-files");
    let good = pki.server();
    let missing = pki.dir.path("nope.pem");
    let empty = pki.dir.path("empty.pem");
    std::fs::write(&empty, "no PEM here\n").unwrap();
    let load = |f: &TlsFiles| TlsServer::load(f, &ServerOptions::default()).unwrap_err();
    let shown = |p: &PathBuf| p.display().to_string();

    let err = load(&TlsFiles {
        cert: missing.clone(),
        ..good.clone()
    });
    assert_eq!(
        err,
        format!("-tls-cert {}: missing (no such file)", shown(&missing))
    );

    let err = load(&TlsFiles {
        cert: empty.clone(),
        ..good.clone()
    });
    assert!(
        err.starts_with(&format!(
            "-tls-cert {}: no certificate in it",
            shown(&empty)
        )),
        "{err}"
    );

    let err = load(&TlsFiles {
        key: missing.clone(),
        ..good.clone()
    });
    assert_eq!(
        err,
        format!("-tls-key {}: missing (no such file)", shown(&missing))
    );

    std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = load(&TlsFiles {
        key: empty.clone(),
        ..good.clone()
    });
    assert!(
        err.starts_with(&format!("-tls-key {}: no private key in it", shown(&empty))),
        "{err}"
    );

    let err = load(&TlsFiles {
        ca: missing.clone(),
        ..good.clone()
    });
    assert_eq!(
        err,
        format!("-tls-ca {}: missing (no such file)", shown(&missing))
    );

    let err = load(&TlsFiles {
        ca: empty.clone(),
        ..good.clone()
    });
    assert!(
        err.starts_with(&format!("-tls-ca {}: no certificate in it", shown(&empty))),
        "{err}"
    );

    let err = load(&TlsFiles {
        crl: Some(missing.clone()),
        ..good.clone()
    });
    assert_eq!(
        err,
        format!("-tls-crl {}: missing (no such file)", shown(&missing))
    );

    let err = load(&TlsFiles {
        crl: Some(empty.clone()),
        ..good.clone()
    });
    assert!(
        err.starts_with(&format!(
            "-tls-crl {}: no revocation list in it",
            shown(&empty)
        )),
        "{err}"
    );

    // Unreadable (root reads anything, so only when not root).
    if distcache_tools::tools::sys::euid() != 0 {
        std::fs::set_permissions(&good.cert, std::fs::Permissions::from_mode(0o000)).unwrap();
        let err = load(&good);
        assert!(err.contains("unreadable"), "{err}");
    }

    let err = TlsClient::load(&good, "not a name!", false).unwrap_err();
    assert!(err.starts_with("-tls-name "), "{err}");
}

#[test]
fn send_queue_is_bounded_when_the_peer_does_not_read() {
    let pki = Pki::new("tls-bound");
    let server = load_server(&pki.server());
    let client = load_client(&pki.client(), "cache.example");
    let (mut c, mut s) = pair(&server, &client);
    let (rc, rs) = handshake(&mut c, &mut s);
    rc.unwrap();
    rs.unwrap();
    // The server does not read: the client's writes stop being accepted
    // once the socket buffers are full and one bounded batch is queued.
    let data: Vec<u8> = (0..64 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    let mut accepted = 0;
    loop {
        match c.write(&data[accepted..]) {
            Ok(n) => {
                assert!(n <= DEFAULT_SEND_BUFFER, "one write took {n} bytes");
                accepted += n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
        assert!(accepted < data.len(), "64 MiB accepted with no reader");
    }
    assert!(c.wants_write(), "the last batch waits in the session");
    // Once the server reads, everything accepted arrives intact.
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    while got.len() < accepted {
        match s.read(&mut buf) {
            Ok(n) => {
                assert!(n > 0);
                got.extend_from_slice(&buf[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let _ = c.flush();
                wait(&[&c, &s]);
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(got, &data[..accepted]);
}

/// One handshake message of `len` bytes (a bogus ClientHello) in 16 KiB
/// records, as a raw peer would send it.
fn fragmented_hello(len: usize) -> Vec<u8> {
    let mut message = vec![1u8, (len >> 16) as u8, (len >> 8) as u8, len as u8];
    message.resize(4 + len, 0x33);
    let mut wire = Vec::new();
    for chunk in message.chunks(16384) {
        wire.extend_from_slice(&[22, 3, 1]);
        wire.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        wire.extend_from_slice(chunk);
    }
    wire
}

#[test]
fn socket_reads_per_call_are_bounded_and_the_rest_waits_in_the_socket() {
    let pki = Pki::new("tls-budget");
    let server = load_server(&pki.server());
    let (mut raw, s) = tcp_pair();
    let mut s = TlsStream::accept(s, &server).unwrap();
    s.set_reads_per_call(4);
    // Joining this message takes more than 4 socket reads of <= 4 KiB.
    let wire = fragmented_hello(0xff00);
    assert!(wire.len() > 4 * 4096);
    raw.write_all(&wire).unwrap();
    let r = s.handshake();
    assert!(would_block(&r), "{r:?}");
    assert_eq!(s.budget_hits(), 1);
    assert!(fd_readable(&s), "the rest is left in the socket");
    // Later calls take the rest and judge the (bogus) ClientHello.
    let mut r = s.handshake();
    while would_block(&r) {
        wait(&[&s]);
        r = s.handshake();
    }
    assert!(s.budget_hits() > 1);
    assert!(Failure::of(r.as_ref().unwrap_err()).is_some(), "{r:?}");
}

#[test]
fn oversized_handshake_message_refused_clearly() {
    let pki = Pki::new("tls-oversized");
    let server = load_server(&pki.server());
    // Declared over the bound (refused from its header), and declared at
    // the bound but overflowing rustls' joining buffer with the headers.
    for len in [0x20000, 0xffff] {
        let (mut raw, s) = tcp_pair();
        let mut s = TlsStream::accept(s, &server).unwrap();
        raw.write_all(&fragmented_hello(len)).unwrap();
        let mut r = s.handshake();
        while would_block(&r) {
            wait(&[&s]);
            r = s.handshake();
        }
        match failure_of(&r) {
            Failure::Protocol(why) => assert!(why.contains("64 KiB"), "{len}: {why}"),
            other => panic!("{len}: {other:?}"),
        }
    }
}

#[test]
fn a_budget_of_one_read_per_call_still_carries_everything() {
    let pki = Pki::new("tls-budget1");
    let server = load_server(&pki.server());
    let client = load_client(&pki.client(), "cache.example");
    let (mut c, mut s) = pair(&server, &client);
    c.set_reads_per_call(1);
    s.set_reads_per_call(1);
    let (rc, rs) = handshake(&mut c, &mut s);
    rc.unwrap();
    rs.unwrap();
    let request: Vec<u8> = (0..100_000u32).map(|i| (i % 199) as u8).collect();
    assert_eq!(transfer(&mut c, &mut s, &request).unwrap(), request);
    assert!(
        s.budget_hits() > 0,
        "16 KiB records take several 4 KiB reads"
    );
}
