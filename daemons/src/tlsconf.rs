//! The daemons' side of TLS configuration (issue 16): the `TLS:` address
//! forms, the `-tls-*` flags dc_server and dc_client share, and reloading
//! the files (SIGUSR1, and a check of their modification times).
//!
//! [`crate::tls`] loads files into rustls configurations and runs sessions;
//! this module decides which files, when to read them again, and what the
//! log says when that fails (the previous configuration stays).

use std::fmt;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use distcache_rs::nal::Address;

use crate::tls::{self, Failure, ServerOptions, TlsClient, TlsFiles, TlsServer};
use crate::tools::{Flag, Parsed};

/// Default of `-tls-reload-check` (ms): how often the files' modification
/// times are compared with those last loaded.
pub const DEFAULT_RELOAD_CHECK_MS: u64 = 60_000;
/// Largest `-tls-reload-check` (a day).
pub const MAX_RELOAD_CHECK_MS: u64 = 86_400_000;

/// An address a daemon connects to or listens on: a libnal address, or a
/// `TLS:` one (TCP carrying TLS).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonAddress {
    /// The TCP (or UNIX) endpoint.
    pub addr: Address,
    /// The link is TLS.
    pub tls: bool,
    /// The host as written (`cache.example`, `10.0.0.5`, `::1`): the name
    /// the server's certificate must carry unless `-tls-name` says
    /// otherwise. `None` for the listen-only `TLS:port`.
    pub host: Option<String>,
    text: String,
}

impl DaemonAddress {
    /// Parse `TLS:host:port`, `TLS:[v6]:port`, `TLS:port` (listen on all
    /// interfaces), or any libnal address.
    pub fn parse(s: &str) -> Result<DaemonAddress, String> {
        let head = s.as_bytes().get(..4);
        if !head.is_some_and(|h| h.eq_ignore_ascii_case(b"TLS:")) {
            let addr = Address::parse(s).map_err(|e| e.to_string())?;
            return Ok(DaemonAddress {
                addr,
                tls: false,
                host: None,
                text: s.to_string(),
            });
        }
        // The first four bytes are ASCII: slicing there is safe.
        let rest = &s[4..];
        let bad = |why: &str| format!("bad address '{s}': {why}");
        let (inner, host) = if let Some(v6) = rest.strip_prefix('[') {
            let Some((ip, port)) = v6.split_once(']') else {
                return Err(bad("missing ']'"));
            };
            (format!("IPv6:[{ip}]{port}"), Some(ip.to_string()))
        } else if rest.bytes().all(|b| b.is_ascii_digit()) {
            (format!("IP:{rest}"), None)
        } else {
            match rest.rsplit_once(':') {
                Some((host, _)) if !host.is_empty() => {
                    (format!("IP:{rest}"), Some(host.to_string()))
                }
                _ => return Err(bad("expected TLS:host:port, TLS:[ipv6]:port or TLS:port")),
            }
        };
        let addr = Address::parse(&inner).map_err(|e| {
            // Quote what the user wrote, not the translated form.
            let why = e.to_string();
            let why = why.split_once("': ").map_or(why.as_str(), |(_, w)| w);
            bad(why)
        })?;
        Ok(DaemonAddress {
            addr,
            tls: true,
            host,
            text: s.to_string(),
        })
    }
}

impl fmt::Display for DaemonAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

const CERT: Flag = Flag::value(
    &["tls-cert"],
    "file",
    "TLS: this side's certificate chain (PEM)",
);
const KEY: Flag = Flag::value(
    &["tls-key"],
    "file",
    "TLS: the certificate's private key (PEM; not readable by others)",
);
const CA: Flag = Flag::value(
    &["tls-ca"],
    "file",
    "TLS: the roots the peer's certificate must chain to (PEM)",
);
const CRL: Flag = Flag::value(
    &["tls-crl"],
    "file",
    "TLS: revocation lists checked against the peer (PEM)",
);
const INSECURE: Flag = Flag::switch(
    &["tls-key-insecure-perms"],
    "TLS: accept a -tls-key file readable by others",
);
const MAX_VERSION: Flag = Flag::value(
    &["tls-max-version"],
    "1.2|1.3",
    "TLS: highest protocol version offered (default 1.3)",
);
const RELOAD: Flag = Flag::value(
    &["tls-reload-check"],
    "msecs",
    "TLS: how often to look for changed files, 0 = on SIGUSR1 only (default 60000)",
);

/// The `-tls-*` flags of dc_client (the connecting side).
pub const CLIENT_FLAGS: &[Flag] = &[
    CERT,
    KEY,
    CA,
    CRL,
    Flag::value(
        &["tls-name"],
        "name",
        "TLS: the name dc_server's certificate must carry (default: the -server host)",
    ),
    INSECURE,
    MAX_VERSION,
    RELOAD,
];

/// The `-tls-*` flags of dc_test and dc_snoop (they connect, and run too
/// briefly for reloading to matter).
pub const CONNECT_FLAGS: &[Flag] = &[
    CERT,
    KEY,
    CA,
    CRL,
    Flag::value(
        &["tls-name"],
        "name",
        "TLS: the name the server's certificate must carry (default: the address's host)",
    ),
    INSECURE,
    MAX_VERSION,
];

/// The `-tls-*` flags of dc_server (the listening side).
pub const SERVER_FLAGS: &[Flag] = &[
    CERT,
    KEY,
    CA,
    CRL,
    Flag::switch(
        &["tls-no-client-auth"],
        "TLS: let clients in without a certificate (not recommended)",
    ),
    Flag::value(
        &["tls-allow-name"],
        "name",
        "TLS: only clients whose certificate carries this DNS or URI name (repeatable)",
    ),
    INSECURE,
    MAX_VERSION,
    RELOAD,
];

/// What both sides read from the `-tls-*` flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub files: TlsFiles,
    pub insecure_key_perms: bool,
    pub tls12_only: bool,
    /// `-tls-reload-check` in ms (0: SIGUSR1 only).
    pub reload_check_ms: u64,
}

/// Every `-tls-*` flag name the daemons know (for "given without a TLS
/// address").
const ALL_NAMES: &[&str] = &[
    "tls-cert",
    "tls-key",
    "tls-ca",
    "tls-crl",
    "tls-name",
    "tls-no-client-auth",
    "tls-allow-name",
    "tls-key-insecure-perms",
    "tls-max-version",
    "tls-reload-check",
];

impl Settings {
    /// The settings when `needed` (some address is `TLS:`; `what` names it
    /// for the error), `None` otherwise. A `-tls-*` flag without a TLS
    /// address is an error: it would be silently ignored otherwise.
    pub fn from_flags(p: &Parsed, needed: bool, what: &str) -> Result<Option<Settings>, String> {
        if !needed {
            return match ALL_NAMES.iter().find(|n| p.has(n)) {
                Some(n) => Err(format!(
                    "flag -{n}: no TLS: address is given ({what} is not TLS)"
                )),
                None => Ok(None),
            };
        }
        let tls12_only = match p.get("tls-max-version") {
            None | Some("1.3") => false,
            Some("1.2") => true,
            Some(v) => return Err(format!("flag -tls-max-version: '{v}' is not 1.2 or 1.3")),
        };
        let reload_check_ms = p.num(
            "tls-reload-check",
            DEFAULT_RELOAD_CHECK_MS,
            0,
            MAX_RELOAD_CHECK_MS,
        )?;
        let file = |name: &str| -> Result<PathBuf, String> {
            match p.get(name) {
                Some(v) if !v.is_empty() => Ok(PathBuf::from(v)),
                Some(_) => Err(format!("flag -{name}: empty file name")),
                None => Err(format!("missing required flag -{name} (needed by {what})")),
            }
        };
        let files = TlsFiles {
            cert: file("tls-cert")?,
            key: file("tls-key")?,
            ca: file("tls-ca")?,
            crl: p.has("tls-crl").then(|| file("tls-crl")).transpose()?,
        };
        Ok(Some(Settings {
            files,
            insecure_key_perms: p.has("tls-key-insecure-perms"),
            tls12_only,
            reload_check_ms,
        }))
    }
}

/// What identifies a file's contents cheaply: device, inode, size and
/// modification time (a rename over it, or a rewrite in place, changes
/// one of them). `None` when it cannot be read.
type Stamp = Option<(u64, u64, u64, i64, i64)>;

fn stamp(p: &std::path::Path) -> Stamp {
    let m = std::fs::metadata(p).ok()?;
    Some((m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// The files of a configuration and when to look at them again.
#[derive(Debug)]
struct Watch {
    settings: Settings,
    stamps: Vec<Stamp>,
    next_check: u64,
}

impl Watch {
    fn new(settings: Settings, now: u64) -> Watch {
        let mut w = Watch {
            stamps: Vec::new(),
            next_check: 0,
            settings,
        };
        w.stamps = w.current();
        w.next_check = w.after(now);
        w
    }

    fn paths(&self) -> Vec<&std::path::Path> {
        let f = &self.settings.files;
        let mut v = vec![f.cert.as_path(), f.key.as_path(), f.ca.as_path()];
        v.extend(f.crl.as_deref());
        v
    }

    fn current(&self) -> Vec<Stamp> {
        self.paths().into_iter().map(stamp).collect()
    }

    fn after(&self, now: u64) -> u64 {
        match self.settings.reload_check_ms {
            0 => u64::MAX,
            ms => now.saturating_add(ms),
        }
    }

    /// Whether to load again now: on `signal`, or when the periodic check
    /// is due and a file changed. Records the stamps it decided on.
    fn due(&mut self, signal: bool, now: u64) -> bool {
        if !signal && now < self.next_check {
            return false;
        }
        self.next_check = self.after(now);
        let now_stamps = self.current();
        let changed = now_stamps != self.stamps;
        // A file that fails to load is tried again when it changes again
        // (or on SIGUSR1), not every check.
        self.stamps = now_stamps;
        signal || changed
    }
}

/// Load, and on failure keep the old configuration with one log line.
fn reload<T>(
    watch: &mut Watch,
    current: &mut T,
    signal: bool,
    now: u64,
    load: impl FnOnce(&Settings) -> Result<T, String>,
    log: &mut dyn FnMut(&str),
) -> bool {
    if !watch.due(signal, now) {
        return false;
    }
    let why = if signal { "SIGUSR1" } else { "files changed" };
    match load(&watch.settings) {
        Ok(t) => {
            *current = t;
            log(&format!(
                "TLS: reloaded certificate {}, key, CA and CRL ({why}): new connections use them",
                watch.settings.files.cert.display()
            ));
            true
        }
        Err(e) => {
            log(&format!(
                "TLS: reload failed ({why}), keeping the previous configuration: {e}"
            ));
            false
        }
    }
}

/// dc_server's TLS configuration, reloadable.
#[derive(Debug)]
pub struct ServerTls {
    watch: Watch,
    opts: ServerOptions,
    current: TlsServer,
}

impl ServerTls {
    /// Loads the files now (before `-user` drops privileges): an error is
    /// one line naming the flag, the file and the reason.
    pub fn load(settings: Settings, opts: ServerOptions, now: u64) -> Result<ServerTls, String> {
        let opts = ServerOptions {
            insecure_key_perms: settings.insecure_key_perms,
            tls12_only: settings.tls12_only,
            ..opts
        };
        let current = TlsServer::load(&settings.files, &opts)?;
        Ok(ServerTls {
            watch: Watch::new(settings, now),
            opts,
            current,
        })
    }

    /// The configuration new connections get.
    pub fn current(&self) -> &TlsServer {
        &self.current
    }

    /// Reload on `signal` (SIGUSR1) or when the periodic check finds a
    /// changed file; true when a new configuration is in place.
    pub fn maybe_reload(&mut self, signal: bool, now: u64, log: &mut dyn FnMut(&str)) -> bool {
        let opts = &self.opts;
        reload(
            &mut self.watch,
            &mut self.current,
            signal,
            now,
            |s| TlsServer::load(&s.files, opts),
            log,
        )
    }

    /// Milliseconds until the next periodic check (for the loop's sleep).
    pub fn due_in(&self, now: u64) -> u64 {
        self.watch.next_check.saturating_sub(now)
    }
}

/// dc_client's TLS configuration, reloadable.
#[derive(Debug)]
pub struct ClientTls {
    watch: Watch,
    name: String,
    current: TlsClient,
}

impl ClientTls {
    /// Loads the files now; `name` is what the server's certificate must
    /// carry (`-tls-name`, or the address's host).
    pub fn load(settings: Settings, name: &str, now: u64) -> Result<ClientTls, String> {
        let current = load_client(&settings, name)?;
        Ok(ClientTls {
            watch: Watch::new(settings, now),
            name: name.to_string(),
            current,
        })
    }

    pub fn current(&self) -> &TlsClient {
        &self.current
    }

    /// See [`ServerTls::maybe_reload`].
    pub fn maybe_reload(&mut self, signal: bool, now: u64, log: &mut dyn FnMut(&str)) -> bool {
        let name = &self.name;
        reload(
            &mut self.watch,
            &mut self.current,
            signal,
            now,
            |s| load_client(s, name),
            log,
        )
    }

    /// See [`ServerTls::due_in`].
    pub fn due_in(&self, now: u64) -> u64 {
        self.watch.next_check.saturating_sub(now)
    }
}

fn load_client(s: &Settings, name: &str) -> Result<TlsClient, String> {
    TlsClient::load_versions(&s.files, name, s.insecure_key_perms, s.tls12_only)
}

/// Loads the client side for a tool that connects once per run (dc_test,
/// dc_snoop): `-tls-name`, or the address's host, is the name expected.
pub fn client_for(
    p: &Parsed,
    addr: &DaemonAddress,
    what: &str,
) -> Result<Option<TlsClient>, String> {
    let Some(settings) = Settings::from_flags(p, addr.tls, what)? else {
        return Ok(None);
    };
    let name = p
        .get("tls-name")
        .or(addr.host.as_deref())
        .unwrap_or_default();
    load_client(&settings, name).map(Some)
}

/// A blocking connector for the client library ([`distcache_rs::client::Connector`]):
/// TCP connect, then the whole TLS handshake, both by the deadline, for
/// tools that use the library's blocking client (dc_test).
pub fn blocking_connector(client: TlsClient) -> distcache_rs::client::Connector {
    use distcache_rs::transport::{connect_by, wait_ready, Transport};
    use std::os::fd::AsRawFd;
    std::sync::Arc::new(move |sa, deadline| {
        let sock = connect_by(sa, true, Some(deadline))?;
        let mut tls = crate::tls::TlsStream::connect(sock.into(), &client)?;
        loop {
            match tls.handshake() {
                Ok(()) => return Ok(Box::new(tls) as Box<dyn Transport>),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "TLS handshake timed out",
                        ));
                    }
                    let mut ev = libc::POLLIN;
                    if Transport::wants_write(&tls) {
                        ev |= libc::POLLOUT;
                    }
                    match wait_ready(tls.as_raw_fd(), ev, Some(left)) {
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => {
                    let why = failure_reason(&e);
                    return Err(io::Error::new(e.kind(), why));
                }
            }
        }
    })
}

/// Why a connection failed, for a log line: a TLS failure in its own
/// words (they start with "TLS:"), anything else as the OS says it.
pub fn failure_reason(e: &io::Error) -> String {
    match Failure::of(e) {
        Some(f) => f.to_string(),
        None => e.to_string(),
    }
}

/// Re-exported so the daemons name the TLS flags in one place.
pub use tls::NO_CLIENT_AUTH_FLAG;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_address_forms() {
        let a = DaemonAddress::parse("TLS:127.0.0.1:9443").unwrap();
        assert!(a.tls && a.addr.can_connect());
        assert_eq!(a.host.as_deref(), Some("127.0.0.1"));
        assert_eq!(a.to_string(), "TLS:127.0.0.1:9443");
        let a = DaemonAddress::parse("tls:[::1]:9443").unwrap();
        assert!(a.tls && a.addr.can_connect());
        assert_eq!(a.host.as_deref(), Some("::1"));
        let a = DaemonAddress::parse("TLS:9443").unwrap();
        assert!(a.tls && a.addr.can_listen() && !a.addr.can_connect());
        assert_eq!(a.host, None);
        let a = DaemonAddress::parse("UNIX:/tmp/x").unwrap();
        assert!(!a.tls && a.addr.is_unix());
        for bad in [
            "TLS:",
            "TLS:[::1",
            "TLS:host:",
            "TLS:[zz]:1",
            "TLS::9",
            "TLS:a:99999",
        ] {
            let e = DaemonAddress::parse(bad).unwrap_err();
            assert!(e.contains(&format!("'{bad}'")), "{bad}: {e}");
        }
        // A multibyte character right after the prefix: no panic.
        assert!(DaemonAddress::parse("TLS\u{e9}:1").is_err());
    }

    #[test]
    fn flags_need_a_tls_address_and_the_three_files() {
        let cli = crate::tools::Cli {
            tool: "t",
            synopsis: "",
            flags: &[],
            extra: SERVER_FLAGS,
        };
        let p = cli.parse(["-tls-cert", "c.pem"]).unwrap();
        let e = Settings::from_flags(&p, false, "-listen UNIX:/x").unwrap_err();
        assert!(e.contains("-tls-cert") && e.contains("no TLS:"), "{e}");
        let e = Settings::from_flags(&p, true, "-listen TLS:9").unwrap_err();
        assert!(e.contains("-tls-key") && e.contains("TLS:9"), "{e}");
        let p = cli
            .parse([
                "-tls-cert",
                "c",
                "-tls-key",
                "k",
                "-tls-ca",
                "a",
                "-tls-max-version",
                "1.2",
                "-tls-reload-check",
                "0",
            ])
            .unwrap();
        let s = Settings::from_flags(&p, true, "x").unwrap().unwrap();
        assert!(s.tls12_only && s.reload_check_ms == 0 && s.files.crl.is_none());
        let p = cli.parse(["-tls-max-version", "1.1"]).unwrap();
        let e = Settings::from_flags(&p, true, "x").unwrap_err();
        assert!(e.contains("-tls-max-version"), "{e}");
        assert!(
            Settings::from_flags(&cli.parse::<[&str; 0], &str>([]).unwrap(), false, "x")
                .unwrap()
                .is_none()
        );
    }
}
