//! libnal address strings.
//!
//! Accepted forms (case-insensitive prefixes):
//! - `UNIX:/path`: a UNIX-domain socket (listen and connect);
//! - `IP:port` and `IP::port` (empty host): all IPv4 interfaces, listen
//!   only; port 0 (`IP:0`) lets the kernel pick one;
//! - `IP:host:port`, `IPv4:host:port`: a name or dotted quad (listen or connect);
//! - `IPv6:[addr]:port` (listen or connect) and `IPv6:port` (all IPv6
//!   interfaces, listen only): beyond the original.
//!
//! `TLS:` addresses are the daemons' (dc_client connects to dc_server over
//! TLS); here they are refused with a message saying so.
//!
//! Spaces before a port number are skipped, as the original's number
//! parsing does (`IP: 9001`). Two strings the original accepted are
//! refused, deliberately: `UNIX:` with an empty path, and a UNIX path
//! longer than `sun_path` holds (the original cut it short and used
//! another path); [`AddressError::original_accepted`] tells them apart.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

/// Default buffer size used when the caller gives none.
pub const DEFAULT_BUFFER_SIZE: usize = 2048;
/// Largest buffer size accepted for addresses, connections and buffers.
pub const MAX_BUFFER_SIZE: usize = 32768;
/// Longest UNIX socket path (sun_path holds 108 bytes including the NUL).
pub const MAX_UNIX_PATH: usize = 107;

/// A parsed address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Address {
    /// `UNIX:/path`.
    Unix(PathBuf),
    /// A resolved IP endpoint. `listen_only` marks the forms without a host
    /// (`IP:port`, `IPv6:port`), which name the wildcard address.
    Ip { addr: SocketAddr, listen_only: bool },
}

/// Why an address string was refused: the message, and whether the
/// original libnal accepted the string (see [`AddressError::original_accepted`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressError(pub String, bool);

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AddressError {}

impl AddressError {
    /// Whether this is one of our deliberate refusals, which the C entry
    /// point reports on stderr (one line): a string the original libnal
    /// accepted (an empty or an over-long UNIX path), or a `TLS:` address,
    /// which only the daemons speak.
    pub fn original_accepted(&self) -> bool {
        self.1
    }
}

/// Longest part of the address string quoted in an error, so that a huge
/// string gives a bounded message.
const MAX_QUOTED: usize = 200;

fn err<T>(s: &str, why: &str) -> Result<T, AddressError> {
    Err(AddressError(message(s, why), false))
}

/// A deliberate refusal (see [`AddressError::original_accepted`]).
fn err_deliberate<T>(s: &str, why: &str) -> Result<T, AddressError> {
    Err(AddressError(message(s, why), true))
}

fn message(s: &str, why: &str) -> String {
    let quoted = if s.len() > MAX_QUOTED {
        let mut end = MAX_QUOTED;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    } else {
        s.to_owned()
    };
    format!("bad address '{quoted}': {why}")
}

/// Parse a port number; spaces before it are skipped. Port 0 only where
/// `zero_ok` (the listen-only forms, where it means "any free port").
fn parse_port(s: &str, p: &str, zero_ok: bool) -> Result<u16, AddressError> {
    let why = if zero_ok {
        "port must be a number in 0..65535"
    } else {
        "port must be a number in 1..65535"
    };
    // The characters C's isspace() skips.
    let p = p.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return err(s, why);
    }
    match p.parse::<u32>() {
        Ok(0) if zero_ok => Ok(0),
        Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
        _ => err(s, why),
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    // Compare bytes: slicing the str at prefix.len() could cut a multi-byte
    // character in two (a panic). A match is ASCII, so the cut is then safe.
    let head = s.as_bytes().get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix.as_bytes()) {
        Some(&s[prefix.len()..])
    } else {
        None
    }
}

/// Why a `TLS:` address is refused here: the C libraries do not link a
/// TLS stack; the daemons parse TLS addresses themselves.
pub const TLS_REFUSED: &str = "the C libraries do not speak TLS: run dc_client -server TLS:host:port in front and give this program dc_client's -listen address";

/// The error text (suffix) of [`Address::parse_numeric`] when the string is
/// well-formed but names a host that would need a name lookup.
pub const LOOKUP_REFUSED: &str = "host name lookup refused";

fn resolve_v4(s: &str, host: &str, port: u16, lookup: bool) -> Result<SocketAddr, AddressError> {
    if host.is_empty() {
        return err(s, "empty host name");
    }
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(SocketAddr::new(IpAddr::V4(ip), port));
    }
    if host.contains(|c: char| c.is_whitespace() || c == '/' || c == '[' || c == ']') {
        return err(s, "invalid host name");
    }
    if !lookup {
        return err(s, LOOKUP_REFUSED);
    }
    match (host, port).to_socket_addrs() {
        Ok(mut it) => match it.find(|a| a.is_ipv4()) {
            Some(a) => Ok(a),
            None => err(s, "host name has no IPv4 address"),
        },
        Err(e) => err(s, &format!("cannot resolve host name: {e}")),
    }
}

impl Address {
    /// Parse an address string.
    pub fn parse(s: &str) -> Result<Address, AddressError> {
        Self::parse_with(s, true)
    }

    /// Like [`parse`](Self::parse) but never resolves a host name: a name
    /// that is not a dotted quad fails with [`LOOKUP_REFUSED`]. For the
    /// fuzz targets, which must not send DNS queries.
    pub fn parse_numeric(s: &str) -> Result<Address, AddressError> {
        Self::parse_with(s, false)
    }

    fn parse_with(s: &str, lookup: bool) -> Result<Address, AddressError> {
        if s.contains('\0') {
            return err(s, "contains a NUL byte");
        }
        if strip_prefix_ci(s, "TLS:").is_some() {
            return err_deliberate(s, TLS_REFUSED);
        }
        if let Some(path) = strip_prefix_ci(s, "UNIX:") {
            if path.is_empty() {
                return err_deliberate(s, "empty UNIX socket path");
            }
            if path.len() > MAX_UNIX_PATH {
                return err_deliberate(
                    s,
                    &format!(
                        "UNIX socket path too long: {} bytes, sun_path holds \
                         {MAX_UNIX_PATH} (refused rather than cut short)",
                        path.len()
                    ),
                );
            }
            return Ok(Address::Unix(PathBuf::from(path)));
        }
        if let Some(rest) = strip_prefix_ci(s, "IPv6:") {
            // IPv6:[addr]:port or IPv6:port
            if let Some(inner) = rest.strip_prefix('[') {
                let Some(end) = inner.find(']') else {
                    return err(s, "missing ']'");
                };
                let ip: Ipv6Addr = match inner[..end].parse() {
                    Ok(ip) => ip,
                    Err(_) => return err(s, "invalid IPv6 address"),
                };
                let Some(port) = inner[end + 1..].strip_prefix(':') else {
                    return err(s, "missing port");
                };
                let port = parse_port(s, port, false)?;
                return Ok(Address::Ip {
                    addr: SocketAddr::new(IpAddr::V6(ip), port),
                    listen_only: false,
                });
            }
            let port = parse_port(s, rest, true)?;
            return Ok(Address::Ip {
                addr: SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
                listen_only: true,
            });
        }
        let rest = if let Some(r) = strip_prefix_ci(s, "IPv4:") {
            r
        } else if let Some(r) = strip_prefix_ci(s, "IP:") {
            r
        } else {
            return err(s, "expected UNIX:, IP:, IPv4: or IPv6: prefix");
        };
        match rest.rsplit_once(':') {
            // `IP:port`, and `IP::port` whose empty host means any.
            None | Some(("", _)) => {
                let port = rest.strip_prefix(':').unwrap_or(rest);
                let port = parse_port(s, port, true)?;
                Ok(Address::Ip {
                    addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
                    listen_only: true,
                })
            }
            Some((host, port)) => {
                let port = parse_port(s, port, false)?;
                let addr = resolve_v4(s, host, port, lookup)?;
                Ok(Address::Ip {
                    addr,
                    listen_only: false,
                })
            }
        }
    }

    /// Whether a connection can be made to this address.
    pub fn can_connect(&self) -> bool {
        match self {
            Address::Unix(_) => true,
            Address::Ip { listen_only, .. } => !listen_only,
        }
    }

    /// Whether a listener can be made on this address.
    pub fn can_listen(&self) -> bool {
        true
    }

    /// True for UNIX-domain addresses.
    pub fn is_unix(&self) -> bool {
        matches!(self, Address::Unix(_))
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Unix(p) => write!(f, "UNIX:{}", p.display()),
            Address::Ip {
                addr: SocketAddr::V4(a),
                listen_only: true,
            } => write!(f, "IP:{}", a.port()),
            Address::Ip {
                addr: SocketAddr::V4(a),
                ..
            } => write!(f, "IP:{}:{}", a.ip(), a.port()),
            Address::Ip {
                addr: SocketAddr::V6(a),
                listen_only: true,
            } => write!(f, "IPv6:{}", a.port()),
            Address::Ip {
                addr: SocketAddr::V6(a),
                ..
            } => write!(f, "IPv6:[{}]:{}", a.ip(), a.port()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_forms() {
        assert_eq!(
            Address::parse("UNIX:/tmp/x").unwrap(),
            Address::Unix("/tmp/x".into())
        );
        let a = Address::parse("IP:9001").unwrap();
        assert!(!a.can_connect() && a.can_listen());
        assert_eq!(a.to_string(), "IP:9001");
        let a = Address::parse("IP:127.0.0.1:9001").unwrap();
        assert!(a.can_connect());
        assert_eq!(a.to_string(), "IP:127.0.0.1:9001");
        let a = Address::parse("IPv4:localhost:80").unwrap();
        assert!(a.can_connect());
        let a = Address::parse("IPv6:[::1]:443").unwrap();
        assert!(a.can_connect());
        assert_eq!(a.to_string(), "IPv6:[::1]:443");
        let a = Address::parse("IPv6:443").unwrap();
        assert!(!a.can_connect());
        assert!(Address::parse("ip:127.0.0.1:1").is_ok());
        assert!(Address::parse("unix:/a").is_ok());
    }

    #[test]
    fn bad_forms() {
        for s in [
            "",
            "UNIX:",
            "IP:",
            "IP:65536",
            "IP:-1",
            "IP::",
            "IP: ",
            "IP:9001 ",
            "IP:127.0.0.1:",
            "IP:127.0.0.1:0",
            "IP:127.0.0.1:99999",
            "TCP:1.2.3.4:5",
            "garbage",
            "IPv6:[::1]",
            "IPv6:[::1:80",
            "IPv6:[zz]:80",
            "IP:12 34",
            "IP:host name:80",
        ] {
            assert!(Address::parse(s).is_err(), "{s:?} accepted");
        }
        let long = format!("UNIX:/{}", "a".repeat(200));
        assert!(Address::parse(&long).is_err());
        let ok = format!("UNIX:/{}", "a".repeat(106));
        assert!(Address::parse(&ok).is_ok());
    }

    /// The forms the original accepted that we once refused (issue 21).
    #[test]
    fn original_listen_forms() {
        let any = |port| Address::Ip {
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
            listen_only: true,
        };
        for (s, port) in [
            ("IP:0", 0),
            ("IP::9001", 9001),
            ("IP: 9001", 9001),
            ("IP:\t 80", 80),
            ("IPv4::0", 0),
        ] {
            let a = Address::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
            assert_eq!(a, any(port), "{s:?}");
            assert!(!a.can_connect() && a.can_listen(), "{s:?}");
        }
        assert_eq!(Address::parse("IPv6:0").unwrap().to_string(), "IPv6:0");
        let a = Address::parse("IP:127.0.0.1: 9001").unwrap();
        assert_eq!(a.to_string(), "IP:127.0.0.1:9001");
        // A host with port 0 cannot be connected to: still refused.
        assert!(Address::parse("IP:127.0.0.1:0").is_err());
    }

    /// Our deliberate refusals say so; ordinary ones do not; a huge string
    /// gives a bounded message.
    #[test]
    fn deliberate_refusals() {
        let e = Address::parse("UNIX:").unwrap_err();
        assert!(e.original_accepted(), "{e}");
        assert!(e.0.contains("'UNIX:'") && e.0.contains("empty"), "{e}");
        let long = format!("UNIX:/{}", "a".repeat(5000));
        let e = Address::parse(&long).unwrap_err();
        assert!(e.original_accepted(), "{e}");
        assert!(e.0.contains("5001 bytes") && e.0.len() < 400, "{e}");
        for s in ["IP:", "garbage", "IP:UNIX socket path too long:80"] {
            assert!(!Address::parse(s).unwrap_err().original_accepted(), "{s:?}");
        }
        // The cut falls inside the two-byte character: no panic.
        let e = Address::parse(&format!("{}\u{e9}", "Z".repeat(199))).unwrap_err();
        assert!(e.0.contains(&format!("'{}...'", "Z".repeat(199))), "{e}");
    }

    /// `TLS:` forms are the daemons' own: the libraries refuse them with
    /// the way out, reported on stderr by the C entry points.
    #[test]
    fn tls_forms_are_refused_with_the_way_out() {
        for s in ["TLS:127.0.0.1:9443", "tls:[::1]:9443", "TLS:9443"] {
            let e = Address::parse(s).unwrap_err();
            assert!(e.original_accepted(), "{s}: {e}");
            assert!(e.0.contains("dc_client -server TLS:"), "{s}: {e}");
        }
    }

    #[test]
    fn numeric_never_looks_up() {
        let e = Address::parse_numeric("IP:localhost:80").unwrap_err();
        assert!(e.0.ends_with(LOOKUP_REFUSED), "{e}");
        assert_eq!(
            Address::parse_numeric("IP:127.0.0.1:80").unwrap(),
            Address::parse("IP:127.0.0.1:80").unwrap()
        );
        assert!(Address::parse_numeric("IP:host name:80").is_err());
        assert!(Address::parse_numeric("UNIX:/x").is_ok());
    }

    /// Found by fuzz/address: a multi-byte character across the end of
    /// the prefix being compared made the parser panic.
    #[test]
    fn multibyte_prefix_no_panic() {
        for s in [
            "IP?\u{aaaa}",
            "I\u{fd76}4:10.0.0.1:65535",
            "UNI\u{e9}:/x",
            "\u{e9}",
            "IPv\u{1F600}:1",
        ] {
            assert!(Address::parse(s).is_err(), "{s:?} accepted");
        }
    }
}
