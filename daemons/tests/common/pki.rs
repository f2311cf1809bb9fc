//! Test certificates made at test time with rcgen: CAs, server and client
//! leaves (optionally expired, not yet valid, with a chosen serial), and
//! a PKI written into a temporary directory (key files mode 0600). The
//! server leaf names `cache.example`; [`Pki::files`] writes any other.

use std::os::unix::fs::PermissionsExt;

use distcache_tools::tls::TlsFiles;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType, SerialNumber,
};

use super::TempDir;

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

    pub fn server(&self) -> TlsFiles {
        let leaf = make_leaf(
            &self.ca,
            LeafSpec {
                dns: &["cache.example"],
                ..Default::default()
            },
        );
        self.files("server", &leaf)
    }

    pub fn client(&self) -> TlsFiles {
        let leaf = make_leaf(
            &self.ca,
            LeafSpec {
                dns: &["web1.example"],
                uris: &["spiffe://example/web"],
                ..Default::default()
            },
        );
        self.files("client", &leaf)
    }
}
