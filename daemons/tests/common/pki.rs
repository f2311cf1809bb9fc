//! Certificates made at test time with rcgen, for the TLS tests (the
//! transport's unit tests in tls.rs, the process-level ones in
//! tls_link.rs): two CAs, server and client leaves, expired and
//! not-yet-valid ones, written into a temp dir with key files mode 0600.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use distcache_tools::tls::{TlsClient, TlsFiles};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, RevokedCertParams, SanType,
    SerialNumber,
};
use rustls::pki_types::pem::PemObject;

use super::TempDir;

/// The name every server leaf made by [`Pki::server`] carries.
pub const SERVER_NAME: &str = "cache.example";
/// The DNS name of the client leaf made by [`Pki::client`].
pub const CLIENT_NAME: &str = "web1.example";

/// A certificate authority: its signing side and its certificate (PEM).
pub struct Ca {
    pub issuer: Issuer<'static, KeyPair>,
    pub pem: String,
}

pub fn make_ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca {
        issuer: Issuer::new(params, key),
        pem: cert.pem(),
    }
}

/// An end-entity certificate and its key, both PEM.
pub struct Leaf {
    pub cert: String,
    pub key: String,
}

#[derive(Default)]
pub struct LeafSpec<'a> {
    pub dns: &'a [&'a str],
    pub uris: &'a [&'a str],
    pub expired: bool,
    pub not_yet_valid: bool,
    pub serial: Option<u64>,
}

pub fn make_leaf(ca: &Ca, spec: LeafSpec) -> Leaf {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    for d in spec.dns {
        params
            .subject_alt_names
            .push(SanType::DnsName((*d).try_into().unwrap()));
    }
    for u in spec.uris {
        params
            .subject_alt_names
            .push(SanType::URI((*u).try_into().unwrap()));
    }
    params.distinguished_name.push(DnType::CommonName, "leaf");
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    if spec.expired {
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
    }
    if spec.not_yet_valid {
        params.not_before = rcgen::date_time_ymd(3000, 1, 1);
        params.not_after = rcgen::date_time_ymd(3001, 1, 1);
    }
    if let Some(s) = spec.serial {
        params.serial_number = Some(SerialNumber::from(s));
    }
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    Leaf {
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

/// The PKI of one test: written into a temp dir, key files mode 0600.
pub struct Pki {
    pub dir: TempDir,
    pub ca: Ca,
    pub other_ca: Ca,
}

impl Pki {
    pub fn new(tag: &str) -> Pki {
        let dir = TempDir::new(tag);
        let ca = make_ca("test CA");
        let other_ca = make_ca("other CA");
        std::fs::write(dir.path("ca.pem"), &ca.pem).unwrap();
        std::fs::write(dir.path("other-ca.pem"), &other_ca.pem).unwrap();
        Pki { dir, ca, other_ca }
    }

    /// Writes `name.crt` and `name.key` (0600) and returns the files of a
    /// side trusting `ca.pem`.
    pub fn files(&self, name: &str, leaf: &Leaf) -> TlsFiles {
        let cert = self.dir.path(&format!("{name}.crt"));
        let key = self.dir.path(&format!("{name}.key"));
        std::fs::write(&cert, &leaf.cert).unwrap();
        std::fs::write(&key, &leaf.key).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        TlsFiles {
            cert,
            key,
            ca: self.dir.path("ca.pem"),
            crl: None,
        }
    }

    /// A leaf of the test CA carrying `dns` names.
    pub fn leaf(&self, dns: &[&str]) -> Leaf {
        make_leaf(
            &self.ca,
            LeafSpec {
                dns,
                ..Default::default()
            },
        )
    }

    /// `server.crt`/`server.key`: a leaf for [`SERVER_NAME`].
    pub fn server(&self) -> TlsFiles {
        self.files("server", &self.leaf(&[SERVER_NAME]))
    }

    /// `ca.crl`: the test CA's revocation list naming `serials`.
    pub fn crl(&self, serials: &[u64]) -> std::path::PathBuf {
        let crl = CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2020, 1, 1),
            next_update: rcgen::date_time_ymd(4000, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from(*s),
                    revocation_time: rcgen::date_time_ymd(2020, 1, 1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.ca.issuer)
        .unwrap();
        let path = self.dir.path("ca.crl");
        std::fs::write(&path, crl.pem().unwrap()).unwrap();
        path
    }

    /// `client.crt`/`client.key`: a leaf for [`CLIENT_NAME`] and
    /// `spiffe://example/web`.
    pub fn client(&self) -> TlsFiles {
        let leaf = make_leaf(
            &self.ca,
            LeafSpec {
                dns: &[CLIENT_NAME],
                uris: &["spiffe://example/web"],
                ..Default::default()
            },
        );
        self.files("client", &leaf)
    }
}

/// The `-tls-cert`, `-tls-key`, `-tls-ca` (and `-tls-crl`) flags naming
/// `files`, as the daemons and tools take them.
pub fn tls_flags(files: &TlsFiles) -> Vec<String> {
    let mut v = vec![
        "-tls-cert".to_string(),
        files.cert.display().to_string(),
        "-tls-key".to_string(),
        files.key.display().to_string(),
        "-tls-ca".to_string(),
        files.ca.display().to_string(),
    ];
    if let Some(crl) = &files.crl {
        v.push("-tls-crl".to_string());
        v.push(crl.display().to_string());
    }
    v
}

/// A client that presents no certificate (a config built here, not from
/// files: the loader always presents one).
pub fn client_without_cert(ca_pem: &str, name: &str) -> TlsClient {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsClient::new(Arc::new(config), name).unwrap()
}
