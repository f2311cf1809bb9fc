//! TLS for the cache link between dc_client (and dc_test, dc_snoop) and
//! dc_server (issue 16): loading certificate, key, CA and CRL files into
//! rustls configurations, and [`TlsStream`], a non-blocking TLS session over
//! a `TcpStream` that an epoll loop drives like a plain socket.
//!
//! rustls with the ring provider, TLS 1.3 and 1.2 only, the provider's
//! default cipher suites. This module lives in the daemons crate: the C
//! libraries never link a TLS stack.
//!
//! What an event loop must know about a [`TlsStream`]:
//! - `read` and `write` never block; `WouldBlock` means "wait for the fd"
//!   (readable, and writable too while [`TlsStream::wants_write`]);
//! - [`TlsStream::has_buffered_input`]: the session holds plaintext already
//!   decrypted (or a close it has not reported yet) that the fd will not
//!   show as readable: call `read` again instead of waiting;
//! - the handshake runs inside `read`, `write` and `flush`
//!   ([`TlsStream::is_handshaking`] tells whether it is done). rustls bounds
//!   each handshake message at 64 KiB and each record at about 16 KiB; the
//!   time and the total a handshake may take are the caller's `-stall`
//!   bound, as for any other connection that does not make progress.

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    AlertDescription, CertificateError, ClientConfig, ClientConnection, Connection,
    DigitallySignedStruct, DistinguishedName, InvalidMessage, RootCertStore, ServerConfig,
    ServerConnection, SignatureScheme,
};

/// The flags naming the files, used in every load error.
pub const CERT_FLAG: &str = "-tls-cert";
/// See [`CERT_FLAG`].
pub const KEY_FLAG: &str = "-tls-key";
/// See [`CERT_FLAG`].
pub const CA_FLAG: &str = "-tls-ca";
/// See [`CERT_FLAG`].
pub const CRL_FLAG: &str = "-tls-crl";
/// The override of the key file permission check.
pub const KEY_INSECURE_PERMS_FLAG: &str = "-tls-key-insecure-perms";
/// The flag that expects a server name other than the address's host.
pub const NAME_FLAG: &str = "-tls-name";
/// The flag that restricts clients to certificates with these names.
pub const ALLOW_NAME_FLAG: &str = "-tls-allow-name";
/// The flag that lets clients in without a certificate.
pub const NO_CLIENT_AUTH_FLAG: &str = "-tls-no-client-auth";

/// Default bound (bytes) on the TLS records and the not yet encrypted
/// plaintext a session queues for sending (rustls' own default, made
/// explicit here so a later flag can change it).
pub const DEFAULT_SEND_BUFFER: usize = 64 * 1024;

/// Default bound on the socket reads one `read`, `write`, `flush` or
/// `handshake` call makes (rustls reads at most 4 KiB at a time, so about
/// 64 KiB): a peer that streams records which yield no plaintext (a large
/// handshake message, many small records) cannot hold one loop turn. When
/// hit, the call returns `WouldBlock` with the rest still in the socket, so
/// a level-triggered loop comes back to it after serving the others.
pub const DEFAULT_READS_PER_CALL: usize = 16;

/// The PEM files of one side of a TLS link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// `-tls-cert`: this side's certificate chain (end-entity first).
    pub cert: PathBuf,
    /// `-tls-key`: the private key of that certificate.
    pub key: PathBuf,
    /// `-tls-ca`: the roots the peer's certificate must chain to.
    pub ca: PathBuf,
    /// `-tls-crl`: optional revocation lists checked against the peer.
    pub crl: Option<PathBuf>,
}

/// How dc_server treats clients.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerOptions {
    /// `-tls-no-client-auth`: do not ask for a client certificate.
    pub no_client_auth: bool,
    /// `-tls-allow-name`: when not empty, a client certificate must carry
    /// one of these DNS or URI subject alternative names.
    pub allow_names: Vec<String>,
    /// `-tls-key-insecure-perms`: accept a key file readable by others.
    pub insecure_key_perms: bool,
    /// `-tls-max-version 1.2`: offer TLS 1.2 only (default: 1.3 and 1.2).
    pub tls12_only: bool,
}

/// The protocol versions offered: TLS 1.3 and 1.2, or 1.2 alone
/// (`-tls-max-version 1.2`, for a peer or a test that needs it).
fn versions(tls12_only: bool) -> &'static [&'static rustls::SupportedProtocolVersion] {
    static TLS12_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
    if tls12_only {
        &TLS12_ONLY
    } else {
        rustls::DEFAULT_VERSIONS
    }
}

/// A loaded server side: what [`TlsStream::accept`] needs.
#[derive(Clone, Debug)]
pub struct TlsServer {
    config: Arc<ServerConfig>,
}

/// A loaded client side: what [`TlsStream::connect`] needs.
#[derive(Clone, Debug)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl TlsServer {
    /// Reads the files and builds the server configuration. The error is one
    /// line naming the flag, the file and the reason.
    pub fn load(files: &TlsFiles, opts: &ServerOptions) -> Result<TlsServer, String> {
        let provider = provider();
        let chain = load_certs(CERT_FLAG, &files.cert)?;
        let key = load_key(&files.key, opts.insecure_key_perms)?;
        let roots = load_roots(&files.ca)?;
        let crls = match &files.crl {
            Some(path) => load_crls(path)?,
            None => Vec::new(),
        };
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions(opts.tls12_only))
            .map_err(|e| format!("TLS: no usable protocol version: {e}"))?;
        let builder = if opts.no_client_auth {
            if !opts.allow_names.is_empty() {
                return Err(format!(
                    "{ALLOW_NAME_FLAG} needs client certificates: it cannot go with {NO_CLIENT_AUTH_FLAG}"
                ));
            }
            builder.with_no_client_auth()
        } else {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .with_crls(crls)
                .build()
                .map_err(|e| verifier_error(files, e))?;
            let verifier: Arc<dyn ClientCertVerifier> = if opts.allow_names.is_empty() {
                verifier
            } else {
                Arc::new(AllowNames {
                    inner: verifier,
                    names: opts.allow_names.clone(),
                })
            };
            builder.with_client_cert_verifier(verifier)
        };
        let config = builder
            .with_single_cert(chain, key)
            .map_err(|e| key_error(files, &e))?;
        Ok(TlsServer {
            config: Arc::new(config),
        })
    }

    /// A server side from a configuration built elsewhere (a test's, or
    /// one with other protocol versions).
    pub fn new(config: Arc<ServerConfig>) -> TlsServer {
        TlsServer { config }
    }

    /// The rustls configuration.
    pub fn config(&self) -> &Arc<ServerConfig> {
        &self.config
    }
}

impl TlsClient {
    /// Reads the files and builds the client configuration: the server's
    /// certificate must chain to `-tls-ca` and carry `server_name` (the
    /// address's host, or `-tls-name`); this side presents `-tls-cert`.
    pub fn load(
        files: &TlsFiles,
        server_name: &str,
        insecure_key_perms: bool,
    ) -> Result<TlsClient, String> {
        Self::load_versions(files, server_name, insecure_key_perms, false)
    }

    /// [`TlsClient::load`], offering TLS 1.2 only when `tls12_only`
    /// (`-tls-max-version 1.2`).
    pub fn load_versions(
        files: &TlsFiles,
        server_name: &str,
        insecure_key_perms: bool,
        tls12_only: bool,
    ) -> Result<TlsClient, String> {
        Self::build(files, true, server_name, insecure_key_perms, tls12_only)
    }

    /// A client side that checks the server against the roots in `ca`
    /// (and `server_name`) and presents the certificate `cert_key` only
    /// when one is given: for a server that may not ask for one (Redis
    /// over TLS, `rediss://`). Errors name the `-tls-*` flags, as
    /// [`TlsClient::load`]'s.
    pub fn load_optional_cert(
        ca: &Path,
        cert_key: Option<(&Path, &Path)>,
        server_name: &str,
    ) -> Result<TlsClient, String> {
        let (cert, key) = cert_key.unwrap_or((ca, ca));
        let files = TlsFiles {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            ca: ca.to_path_buf(),
            crl: None,
        };
        Self::build(&files, cert_key.is_some(), server_name, false, false)
    }

    fn build(
        files: &TlsFiles,
        with_cert: bool,
        server_name: &str,
        insecure_key_perms: bool,
        tls12_only: bool,
    ) -> Result<TlsClient, String> {
        let provider = provider();
        let name = ServerName::try_from(server_name.to_string())
            .map_err(|_| format!("{NAME_FLAG} {server_name:?}: not a DNS name or an IP address"))?;
        // Read in the flags' order: certificate, key, roots.
        let auth = if with_cert {
            Some((
                load_certs(CERT_FLAG, &files.cert)?,
                load_key(&files.key, insecure_key_perms)?,
            ))
        } else {
            None
        };
        let roots = load_roots(&files.ca)?;
        let crls = match &files.crl {
            Some(path) => load_crls(path)?,
            None => Vec::new(),
        };
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .with_crls(crls)
                .build()
                .map_err(|e| verifier_error(files, e))?;
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions(tls12_only))
            .map_err(|e| format!("TLS: no usable protocol version: {e}"))?
            .with_webpki_verifier(verifier);
        let config = match auth {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| key_error(files, &e))?,
            None => builder.with_no_client_auth(),
        };
        Ok(TlsClient {
            config: Arc::new(config),
            name,
        })
    }

    /// A client side from a configuration built elsewhere (a test's, a
    /// client without a certificate, other protocol versions).
    pub fn new(config: Arc<ClientConfig>, server_name: &str) -> Result<TlsClient, String> {
        Ok(TlsClient {
            config,
            name: parse_name(server_name)?,
        })
    }

    /// The rustls configuration.
    pub fn config(&self) -> &Arc<ClientConfig> {
        &self.config
    }
}

/// The name the server's certificate must carry.
fn parse_name(name: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(name.to_string())
        .map_err(|_| format!("{NAME_FLAG} {name:?}: not a DNS name or an IP address"))
}

/// ring, with its default cipher suites and key exchange groups.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// "missing" / "unreadable" / the OS's words, for a file that cannot be
/// opened or read.
fn io_reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "missing (no such file)".to_string(),
        io::ErrorKind::PermissionDenied => "unreadable (permission denied)".to_string(),
        _ => format!("unreadable ({e})"),
    }
}

fn pem_reason(e: &pem::Error) -> String {
    match e {
        pem::Error::Io(e) => io_reason(e),
        other => format!("not valid PEM ({other})"),
    }
}

/// Fails with "missing"/"unreadable" before any parsing, so the reason is
/// the file's, not the PEM parser's.
fn check_readable(flag: &str, path: &Path) -> Result<fs::Metadata, String> {
    let meta =
        fs::metadata(path).map_err(|e| format!("{flag} {}: {}", path.display(), io_reason(&e)))?;
    if meta.is_dir() {
        return Err(format!(
            "{flag} {}: is a directory, not a PEM file",
            path.display()
        ));
    }
    fs::File::open(path).map_err(|e| format!("{flag} {}: {}", path.display(), io_reason(&e)))?;
    Ok(meta)
}

fn load_certs(flag: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    check_readable(flag, path)?;
    let iter = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{flag} {}: {}", path.display(), pem_reason(&e)))?;
    let certs = iter
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{flag} {}: {}", path.display(), pem_reason(&e)))?;
    if certs.is_empty() {
        return Err(format!(
            "{flag} {}: no certificate in it (expected a PEM \"BEGIN CERTIFICATE\" block)",
            path.display()
        ));
    }
    Ok(certs)
}

/// Refuses a key file readable by others (mode & 0o004) unless
/// `insecure_perms`; group-readable is allowed (Debian's `ssl-cert` group).
pub fn check_key_perms(path: &Path, insecure_perms: bool) -> Result<(), String> {
    let meta = check_readable(KEY_FLAG, path)?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o004 != 0 && !insecure_perms {
        return Err(format!(
            "{KEY_FLAG} {}: the private key is readable by others (mode {mode:04o}); \
             chmod o-r it (group-readable is fine) or give {KEY_INSECURE_PERMS_FLAG}",
            path.display()
        ));
    }
    Ok(())
}

fn load_key(path: &Path, insecure_perms: bool) -> Result<PrivateKeyDer<'static>, String> {
    check_key_perms(path, insecure_perms)?;
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        pem::Error::NoItemsFound => format!(
            "{KEY_FLAG} {}: no private key in it (expected a PEM \"BEGIN PRIVATE KEY\", \
             \"BEGIN RSA PRIVATE KEY\" or \"BEGIN EC PRIVATE KEY\" block)",
            path.display()
        ),
        other => format!("{KEY_FLAG} {}: {}", path.display(), pem_reason(&other)),
    })
}

fn load_roots(path: &Path) -> Result<RootCertStore, String> {
    let certs = load_certs(CA_FLAG, path)?;
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| {
            format!(
                "{CA_FLAG} {}: not a usable CA certificate ({e})",
                path.display()
            )
        })?;
    }
    Ok(roots)
}

fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    check_readable(CRL_FLAG, path)?;
    let iter = CertificateRevocationListDer::pem_file_iter(path)
        .map_err(|e| format!("{CRL_FLAG} {}: {}", path.display(), pem_reason(&e)))?;
    let crls = iter
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{CRL_FLAG} {}: {}", path.display(), pem_reason(&e)))?;
    if crls.is_empty() {
        return Err(format!(
            "{CRL_FLAG} {}: no revocation list in it (expected a PEM \"BEGIN X509 CRL\" block)",
            path.display()
        ));
    }
    Ok(crls)
}

fn verifier_error(files: &TlsFiles, e: rustls::server::VerifierBuilderError) -> String {
    use rustls::server::VerifierBuilderError as E;
    match e {
        E::NoRootAnchors => format!(
            "{CA_FLAG} {}: no usable CA certificate in it",
            files.ca.display()
        ),
        E::InvalidCrl(e) => match &files.crl {
            Some(crl) => format!(
                "{CRL_FLAG} {}: unusable revocation list ({e:?})",
                crl.display()
            ),
            None => format!("{CRL_FLAG}: unusable revocation list ({e:?})"),
        },
        other => format!("{CA_FLAG} {}: {other}", files.ca.display()),
    }
}

fn key_error(files: &TlsFiles, e: &rustls::Error) -> String {
    match e {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => format!(
            "{KEY_FLAG} {}: the key does not match the certificate in {CERT_FLAG} {}",
            files.key.display(),
            files.cert.display()
        ),
        other => format!(
            "{KEY_FLAG} {}: unusable private key ({other})",
            files.key.display()
        ),
    }
}

/// The client certificate verifier with `-tls-allow-name`: the chain is
/// verified first (CA, validity, CRL), then the end-entity certificate must
/// carry one of the names, so a refused client gets a TLS alert and never
/// reaches the established state.
#[derive(Debug)]
struct AllowNames {
    inner: Arc<dyn ClientCertVerifier>,
    names: Vec<String>,
}

impl ClientCertVerifier for AllowNames {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let names = cert_names(end_entity);
        if names.iter().any(|n| self.names.iter().any(|a| a == n)) {
            Ok(verified)
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The DNS and URI subject alternative names of a certificate (empty when
/// it does not parse; only called on certificates webpki has verified).
pub fn cert_names(cert: &CertificateDer<'_>) -> Vec<String> {
    match webpki::EndEntityCert::try_from(cert) {
        Ok(ee) => ee
            .valid_dns_names()
            .chain(ee.valid_uri_names())
            .map(str::to_string)
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Why a TLS session failed: what the log line says, and what tests and
/// the event loop can match on. Found in the `io::Error` that `read`,
/// `write` and `flush` return ([`Failure::of`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The peer's bytes are not TLS (a plaintext client on a TLS port).
    NotTls,
    /// The peer closed the connection before the handshake completed (a
    /// plain server behind a TLS address, or a peer that refused us).
    ClosedInHandshake,
    /// The peer's certificate does not chain to `-tls-ca`.
    UnknownCa,
    /// The peer's certificate has expired.
    Expired,
    /// The peer's certificate is not valid yet.
    NotYetValid,
    /// The peer's certificate is revoked by `-tls-crl`.
    Revoked,
    /// The server's certificate does not carry the expected name.
    BadName,
    /// The client presented no certificate and one is required.
    NoClientCert,
    /// The client certificate carries none of the `-tls-allow-name` names.
    NameNotAllowed,
    /// Our certificate was refused by the peer: the alert it sent.
    PeerRefused(String),
    /// Any other TLS error.
    Protocol(String),
}

impl Failure {
    /// The failure inside an error from [`TlsStream`], if it is one.
    pub fn of(err: &io::Error) -> Option<&Failure> {
        err.get_ref().and_then(|e| e.downcast_ref::<Failure>())
    }

    fn from_rustls(err: &rustls::Error, handshaking: bool) -> Failure {
        use rustls::Error as E;
        match err {
            E::InvalidMessage(
                InvalidMessage::InvalidContentType
                | InvalidMessage::UnknownProtocolVersion
                | InvalidMessage::MessageTooLarge,
            ) if handshaking => Failure::NotTls,
            E::InvalidMessage(
                InvalidMessage::HandshakePayloadTooLarge
                | InvalidMessage::CertificatePayloadTooLarge,
            ) => Failure::Protocol(format!(
                "the peer's handshake message is over rustls' 64 KiB bound ({err})"
            )),
            E::NoCertificatesPresented => Failure::NoClientCert,
            E::InvalidCertificate(c) => match c {
                CertificateError::UnknownIssuer => Failure::UnknownCa,
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    Failure::Expired
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    Failure::NotYetValid
                }
                CertificateError::Revoked => Failure::Revoked,
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => Failure::BadName,
                CertificateError::ApplicationVerificationFailure => Failure::NameNotAllowed,
                other => Failure::Protocol(format!("bad peer certificate: {other:?}")),
            },
            E::AlertReceived(AlertDescription::CertificateRequired) => Failure::PeerRefused(
                "the server requires a client certificate (give -tls-cert and -tls-key)".into(),
            ),
            E::AlertReceived(alert) => {
                Failure::PeerRefused(format!("the peer sent the alert {alert:?}"))
            }
            other => Failure::Protocol(other.to_string()),
        }
    }

    fn into_io(self) -> io::Error {
        let kind = match self {
            Failure::NotTls | Failure::Protocol(_) => io::ErrorKind::InvalidData,
            Failure::ClosedInHandshake => io::ErrorKind::UnexpectedEof,
            _ => io::ErrorKind::PermissionDenied,
        };
        io::Error::new(kind, self)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::NotTls => {
                f.write_str("TLS: the peer did not speak TLS (a plaintext client on a TLS port?)")
            }
            Failure::ClosedInHandshake => f.write_str(
                "TLS: the peer closed the connection during the handshake \
                 (a plain port, or the peer refused our certificate)",
            ),
            Failure::UnknownCa => {
                f.write_str("TLS: the peer's certificate is not signed by a -tls-ca root")
            }
            Failure::Expired => f.write_str("TLS: the peer's certificate has expired"),
            Failure::NotYetValid => f.write_str("TLS: the peer's certificate is not valid yet"),
            Failure::Revoked => f.write_str("TLS: the peer's certificate is revoked (-tls-crl)"),
            Failure::BadName => f.write_str(
                "TLS: the server's certificate does not carry the expected name (see -tls-name)",
            ),
            Failure::NoClientCert => {
                f.write_str("TLS: the client sent no certificate and one is required")
            }
            Failure::NameNotAllowed => f.write_str(
                "TLS: the client's certificate carries none of the -tls-allow-name names",
            ),
            Failure::PeerRefused(why) => write!(f, "TLS: refused by the peer: {why}"),
            Failure::Protocol(why) => write!(f, "TLS: {why}"),
        }
    }
}

impl std::error::Error for Failure {}

/// A TLS session over a non-blocking `TcpStream`. `Read` and `Write` never
/// block; see the module documentation for how a loop drives it.
pub struct TlsStream {
    sock: TcpStream,
    conn: Connection,
    /// Decrypted bytes rustls holds, as of the last processing.
    plain_pending: usize,
    /// The peer's close_notify has arrived but `read` has not returned 0.
    close_pending: bool,
    /// `read` has returned 0 for the peer's close_notify.
    close_reported: bool,
    /// The first failure, returned again by every later call.
    failed: Option<Failure>,
    /// Socket reads allowed per call, and left in the current call.
    reads_per_call: usize,
    reads_left: usize,
    /// How many calls stopped at `reads_per_call`.
    budget_hits: u64,
}

impl fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsStream")
            .field("fd", &self.sock.as_raw_fd())
            .field("server", &matches!(self.conn, Connection::Server(_)))
            .field("handshaking", &self.conn.is_handshaking())
            .field("failed", &self.failed)
            .finish()
    }
}

impl TlsStream {
    /// The server side of a TLS session on an accepted connection.
    pub fn accept(sock: TcpStream, server: &TlsServer) -> io::Result<TlsStream> {
        let conn = ServerConnection::new(server.config.clone())
            .map_err(|e| Failure::Protocol(e.to_string()).into_io())?;
        TlsStream::new(sock, Connection::Server(conn))
    }

    /// The client side of a TLS session on a connected (or connecting)
    /// socket; the ClientHello goes out on the first `read`, `write` or
    /// `flush` (the fd's writability is the cue: [`TlsStream::wants_write`]).
    pub fn connect(sock: TcpStream, client: &TlsClient) -> io::Result<TlsStream> {
        let conn = ClientConnection::new(client.config.clone(), client.name.clone())
            .map_err(|e| Failure::Protocol(e.to_string()).into_io())?;
        TlsStream::new(sock, Connection::Client(conn))
    }

    fn new(sock: TcpStream, mut conn: Connection) -> io::Result<TlsStream> {
        sock.set_nonblocking(true)?;
        conn.set_buffer_limit(Some(DEFAULT_SEND_BUFFER));
        Ok(TlsStream {
            sock,
            conn,
            plain_pending: 0,
            close_pending: false,
            close_reported: false,
            failed: None,
            reads_per_call: DEFAULT_READS_PER_CALL,
            reads_left: DEFAULT_READS_PER_CALL,
            budget_hits: 0,
        })
    }

    /// Whether the handshake is still going on.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Whether TLS records wait to be sent (watch the fd for writability
    /// and call `flush`).
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Whether the session holds input the fd will not show as readable:
    /// decrypted plaintext, or the peer's close not yet returned by `read`.
    pub fn has_buffered_input(&self) -> bool {
        self.plain_pending > 0 || self.close_pending
    }

    /// The DNS and URI subject alternative names of the peer's certificate
    /// (empty before the handshake, or when the peer sent none).
    pub fn peer_names(&self) -> Vec<String> {
        match self.conn.peer_certificates() {
            Some([ee, ..]) => cert_names(ee),
            _ => Vec::new(),
        }
    }

    /// The peer's address (for log lines).
    pub fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.sock.peer_addr()
    }

    /// The negotiated protocol version, once the handshake is done.
    pub fn protocol_version(&self) -> Option<rustls::ProtocolVersion> {
        self.conn.protocol_version()
    }

    /// The failure that ended this session, if one did.
    pub fn failure(&self) -> Option<&Failure> {
        self.failed.as_ref()
    }

    /// Queues a close_notify and tries to send it (and whatever is queued
    /// before it); `WouldBlock` if the socket cannot take it all now.
    pub fn close(&mut self) -> io::Result<()> {
        self.conn.send_close_notify();
        self.flush()
    }

    fn fail(&mut self, failure: Failure) -> io::Error {
        // Best effort: the alert rustls queued for the peer says why.
        let _ = self.conn.write_tls(&mut self.sock);
        let err = failure.clone().into_io();
        self.failed = Some(failure);
        err
    }

    /// Sets the bound on socket reads per call (at least 1; see
    /// [`DEFAULT_READS_PER_CALL`]).
    pub fn set_reads_per_call(&mut self, reads: usize) {
        self.reads_per_call = reads.max(1);
    }

    /// How many calls have stopped at the bound on socket reads (for the
    /// caller's log line and metrics).
    pub fn budget_hits(&self) -> u64 {
        self.budget_hits
    }

    /// The start of a public call: the failure so far, a fresh read budget.
    fn begin(&mut self) -> io::Result<()> {
        self.reads_left = self.reads_per_call;
        self.check_failed()
    }

    fn check_failed(&self) -> io::Result<()> {
        match &self.failed {
            Some(f) => Err(f.clone().into_io()),
            None => Ok(()),
        }
    }

    /// Lets rustls decrypt and act on what it has read.
    fn process(&mut self) -> io::Result<()> {
        match self.conn.process_new_packets() {
            Ok(state) => {
                self.plain_pending = state.plaintext_bytes_to_read();
                if state.peer_has_closed() && self.plain_pending == 0 && !self.close_reported {
                    self.close_pending = true;
                }
                Ok(())
            }
            Err(e) => {
                let failure = Failure::from_rustls(&e, self.conn.is_handshaking());
                Err(self.fail(failure))
            }
        }
    }

    /// Sends queued records until done or the socket is full.
    fn push(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// One read of the socket into rustls and the processing of it.
    /// `Ok(false)` at the peer's end of stream.
    fn pull(&mut self) -> io::Result<bool> {
        if self.reads_left == 0 {
            self.budget_hits += 1;
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.reads_left -= 1;
        let n = match self.conn.read_tls(&mut self.sock) {
            Ok(n) => n,
            // A plain server that hangs up on the unread ClientHello resets.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset && self.conn.is_handshaking() => {
                return Err(self.fail(Failure::ClosedInHandshake))
            }
            // rustls' own bounds ("message buffer full": a handshake message
            // over 64 KiB) come as errors that are not the socket's.
            Err(e) if e.raw_os_error().is_none() && e.kind() != io::ErrorKind::WouldBlock => {
                let why = if self.conn.is_handshaking() {
                    format!("the peer's handshake message is over rustls' 64 KiB bound ({e})")
                } else {
                    format!("the peer's records overflow the session's buffers ({e})")
                };
                return Err(self.fail(Failure::Protocol(why)));
            }
            Err(e) => return Err(e),
        };
        if n == 0 && self.conn.is_handshaking() {
            return Err(self.fail(Failure::ClosedInHandshake));
        }
        self.process()?;
        Ok(n > 0)
    }

    /// Moves the handshake as far as the socket allows. `Ok(())` when it is
    /// done; `WouldBlock` while it waits for the peer or the socket.
    ///
    /// Bounded per call by the read budget ([`DEFAULT_READS_PER_CALL`]) and
    /// in size by rustls (64 KiB per handshake message); how long it may
    /// take in all, and so how many bytes a slow peer may trickle, is the
    /// caller's `-stall` bound: a connection still handshaking when it
    /// expires is closed like any other that makes no progress.
    pub fn handshake(&mut self) -> io::Result<()> {
        self.begin()?;
        self.drive_handshake()
    }

    fn drive_handshake(&mut self) -> io::Result<()> {
        while self.conn.is_handshaking() {
            match self.push() {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if !self.conn.is_handshaking() {
                break;
            }
            if self.conn.wants_read() {
                self.pull()?;
            } else {
                // Only records to send are left: wait for writability.
                return Err(io::ErrorKind::WouldBlock.into());
            }
        }
        // The last flight (a client's Finished, a server's tickets).
        match self.push() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(()),
        }
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.begin()?;
        if buf.is_empty() {
            return Ok(0);
        }
        self.drive_handshake()?;
        loop {
            match self.conn.reader().read(buf) {
                Ok(0) => {
                    // The peer's close_notify: the end of the stream.
                    self.close_pending = false;
                    self.close_reported = true;
                    return Ok(0);
                }
                Ok(n) => {
                    self.plain_pending = self.plain_pending.saturating_sub(n);
                    // Decrypt records already read, so has_buffered_input
                    // is true if the fd will not signal them; a failure is
                    // kept and returned by the next call, after these bytes.
                    let _ = self.process();
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            // Nothing decrypted: read the socket (WouldBlock ends here).
            self.pull()?;
            // A key update or a ticket may have queued records to send.
            match self.push() {
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
                _ => {}
            }
        }
    }
}

impl Write for TlsStream {
    /// Accepts plaintext only once the handshake is done and the records
    /// queued before are sent, so at most one `buf`'s worth (bounded by
    /// [`DEFAULT_SEND_BUFFER`]) waits in the session; the records of the
    /// bytes accepted are sent now or by a later `flush`.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.begin()?;
        self.drive_handshake()?;
        self.push()?;
        let n = self.conn.writer().write(buf)?;
        match self.push() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(n),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.begin()?;
        if self.conn.is_handshaking() {
            return self.drive_handshake();
        }
        self.push()
    }
}

impl AsRawFd for TlsStream {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

/// A TLS session is a byte stream of the transport layer: the daemons'
/// connection code ([`crate::link`]) and the blocking client can carry it
/// like a plain socket. The socket operations act on the TCP socket below.
impl distcache_rs::transport::Transport for TlsStream {
    fn peer_name(&self) -> String {
        self.peer_addr().map(|a| a.to_string()).unwrap_or_default()
    }
    fn shutdown(&self, how: std::net::Shutdown) -> io::Result<()> {
        self.sock.shutdown(how)
    }
    fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.sock.take_error()
    }
    fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        self.sock.set_nonblocking(on)
    }
    fn has_buffered_input(&self) -> bool {
        TlsStream::has_buffered_input(self)
    }
    fn handshaking(&self) -> bool {
        self.failed.is_none() && self.conn.is_handshaking()
    }
    fn wants_write(&self) -> bool {
        self.failed.is_none() && self.conn.wants_write()
    }
}
