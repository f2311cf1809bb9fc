//! Shared session stores (issue 17): where a daemon keeps sessions when
//! the store is not a dc_server. Two things live here, once:
//!
//! - [`StoreAddress`]: the store addresses (`redis://host:port`,
//!   `rediss://host:port`, with an optional `user:password@`, and
//!   `redis-sentinel://host:port[,host:port...]/MASTERNAME`), parsed into
//!   an enum, and [`redis_config`] turning one with the `-redis-*` flags
//!   into the [`StoreConfig`] a [`crate::backend::Backend`] runs;
//! - [`plan`] and [`payload`]: a distcache request turned into a Redis
//!   [`Request`] (or answered on the spot, as dc_server would answer it),
//!   and a Redis [`Answer`] turned back into the distcache answer payload,
//!   so that a daemon in front of Redis answers byte for byte as dc_server.

use std::borrow::Cow;
use std::fmt;

use distcache_rs::nal::Address;
use distcache_rs::proto::{self, status, AddParse, Cmd, MsgRef};
use distcache_rs::server::cache::DEFAULT_MAX_TIMEOUT_MS;

use crate::redis::{self, Answer, Request, Secret};
use crate::sentinel::{self, SentinelUrl};
use crate::tls::TlsClient;
use crate::tools::{Flag, Parsed};

/// The schemes written as store addresses, lower case. `rediss-sentinel://`
/// is recognised (so that it is not taken for a libnal address) and
/// refused: the sentinel connections are plain TCP in this release, and
/// the nodes a sentinel names are IP addresses no certificate is checked
/// against.
pub const SCHEMES: &[&str] = &[
    "redis://",
    "rediss://",
    "redis-sentinel://",
    "rediss-sentinel://",
];

/// Redis' own port, for an address that gives none.
pub const DEFAULT_REDIS_PORT: u16 = 6379;

/// Whether `s` is written as a store address (one of [`SCHEMES`], any
/// case): the caller then parses it with [`StoreAddress::parse`] rather
/// than as a libnal address.
pub fn is_store_address(s: &str) -> bool {
    let b = s.as_bytes();
    SCHEMES
        .iter()
        .any(|p| b.len() >= p.len() && b[..p.len()].eq_ignore_ascii_case(p.as_bytes()))
}

/// One Redis server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisServer {
    /// The resolved TCP endpoint.
    pub addr: Address,
    /// `rediss://`: the connection is TLS.
    pub tls: bool,
    /// The host as written (for the certificate name under TLS).
    pub host: String,
    pub port: u16,
    /// The user written in the address, if any.
    pub user: Option<String>,
    /// The password written in the address, if any (it shows in the
    /// process list: [`StoreAddress::warning`]).
    pub password: Option<Secret>,
}

/// A store address. See the module documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreAddress {
    /// `redis://` or `rediss://`: one Redis server.
    Redis(RedisServer),
    /// `redis-sentinel://`: the primary the sentinels name for the master
    /// name, followed across fail-overs ([`crate::sentinel`]). A user and
    /// password written in the address are the sentinels'.
    Sentinel(SentinelUrl),
}

/// Why `rediss-sentinel://` is refused (one line).
pub const NO_TLS_SENTINEL: &str = "rediss-sentinel:// is not supported in this release \
     (the sentinel connections are plain TCP): use redis-sentinel:// on a trusted network, \
     or rediss://host:port to one server";

impl StoreAddress {
    /// Parse `redis://[user[:password]@]host[:port]`, the same with
    /// `rediss://`, and `[v6]` hosts. No path (database numbers are not
    /// supported: one store is database 0) and no query.
    pub fn parse(s: &str) -> Result<StoreAddress, String> {
        let bad = |why: &str| format!("bad address '{}': {why}", redacted(s));
        let lower = s.to_ascii_lowercase();
        if lower.starts_with("rediss-sentinel://") {
            return Err(bad(NO_TLS_SENTINEL));
        }
        if lower.starts_with("redis-sentinel://") {
            return sentinel::parse_url(s).map(StoreAddress::Sentinel);
        }
        let (tls, rest) = if lower.starts_with("rediss://") {
            (true, &s["rediss://".len()..])
        } else if lower.starts_with("redis://") {
            (false, &s["redis://".len()..])
        } else {
            return Err(bad("expected redis://host:port or rediss://host:port"));
        };
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        if hostport.contains(['/', '?', '#']) {
            return Err(bad(
                "a path or query is not supported (database 0 is the store)",
            ));
        }
        let (user, password) = match userinfo {
            None => (None, None),
            Some(u) => {
                let (name, pw) = match u.split_once(':') {
                    Some((n, p)) => (n, Some(p)),
                    None => (u, None),
                };
                if pw.is_some_and(str::is_empty) {
                    return Err(bad("empty password"));
                }
                if name.is_empty() && pw.is_none() {
                    return Err(bad("empty user"));
                }
                (
                    (!name.is_empty()).then(|| name.to_string()),
                    pw.map(|p| Secret(p.as_bytes().to_vec())),
                )
            }
        };
        let (host, port, inner) = if let Some(v6) = hostport.strip_prefix('[') {
            let Some((ip, after)) = v6.split_once(']') else {
                return Err(bad("missing ']'"));
            };
            let port = match after {
                "" => DEFAULT_REDIS_PORT,
                p => port_of(p.strip_prefix(':').ok_or_else(|| bad("expected ]:port"))?)
                    .ok_or_else(|| bad("port must be a number in 1..65535"))?,
            };
            (ip, port, format!("IPv6:[{ip}]:{port}"))
        } else {
            let (h, port) = match hostport.rsplit_once(':') {
                Some((h, p)) => (
                    h,
                    port_of(p).ok_or_else(|| bad("port must be a number in 1..65535"))?,
                ),
                None => (hostport, DEFAULT_REDIS_PORT),
            };
            if h.contains(':') {
                return Err(bad("an IPv6 host goes in brackets: redis://[::1]:6379"));
            }
            (h, port, format!("IP:{h}:{port}"))
        };
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        let addr = Address::parse(&inner).map_err(|e| {
            let why = e.to_string();
            let why = why.split_once("': ").map_or(why.as_str(), |(_, w)| w);
            bad(why)
        })?;
        Ok(StoreAddress::Redis(RedisServer {
            addr,
            tls,
            host: host.to_string(),
            port,
            user,
            password,
        }))
    }

    /// Whether the connection is TLS.
    pub fn tls(&self) -> bool {
        match self {
            StoreAddress::Redis(r) => r.tls,
            StoreAddress::Sentinel(u) => u.tls,
        }
    }

    /// The password written in the address, if any.
    fn password(&self) -> Option<&Secret> {
        match self {
            StoreAddress::Redis(r) => r.password.as_ref(),
            StoreAddress::Sentinel(u) => u.password.as_ref(),
        }
    }

    /// The warning to log at start-up, if any: a password written in the
    /// address shows in the process list.
    pub fn warning(&self, flag: &str) -> Option<String> {
        let file = match self {
            StoreAddress::Redis(_) => "-redis-password-file",
            StoreAddress::Sentinel(_) => "-redis-sentinel-password-file",
        };
        self.password().map(|_| {
            format!(
                "warning: {flag} {self}: the password in the address shows in the process list \
                 (ps, /proc); use {file} FILE"
            )
        })
    }
}

impl fmt::Display for StoreAddress {
    /// The address without its password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (scheme, user) = match self {
            StoreAddress::Redis(r) => (if r.tls { "rediss://" } else { "redis://" }, &r.user),
            StoreAddress::Sentinel(u) => (
                if u.tls {
                    "rediss-sentinel://"
                } else {
                    "redis-sentinel://"
                },
                &u.user,
            ),
        };
        f.write_str(scheme)?;
        match (user, self.password()) {
            (Some(u), Some(_)) => write!(f, "{u}:***@")?,
            (Some(u), None) => write!(f, "{u}@")?,
            (None, Some(_)) => f.write_str(":***@")?,
            (None, None) => {}
        }
        match self {
            StoreAddress::Redis(r) => write_host(f, &r.host, r.port),
            StoreAddress::Sentinel(u) => {
                for (i, (h, p)) in u.sentinels.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write_host(f, h, *p)?;
                }
                write!(f, "/{}", u.master)
            }
        }
    }
}

/// `host:port`, an IPv6 host in brackets.
fn write_host(f: &mut fmt::Formatter<'_>, host: &str, port: u16) -> fmt::Result {
    if host.contains(':') {
        write!(f, "[{host}]:{port}")
    } else {
        write!(f, "{host}:{port}")
    }
}

fn port_of(p: &str) -> Option<u16> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse::<u16>().ok().filter(|&n| n > 0)
}

/// `s` with any password between `:` and `@` after the scheme masked,
/// for error messages.
fn redacted(s: &str) -> String {
    let Some(start) = s.find("://").map(|i| i + 3) else {
        return s.to_string();
    };
    let rest = &s[start..];
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((u, _)) => format!("{}{u}:***@{host}", &s[..start]),
            None => s.to_string(),
        },
        None => s.to_string(),
    }
}

/// `-redis-prefix` of dc_client and dc_server in front of Redis.
pub const REDIS_PREFIX_FLAG: Flag = Flag::value(
    &["redis-prefix"],
    "string",
    "Redis: key prefix before the hex session id (default mod_ssl-sess:, as Apache's mod_socache_redis)",
);
/// `-redis-user`.
pub const REDIS_USER_FLAG: Flag =
    Flag::value(&["redis-user"], "name", "Redis: ACL user to AUTH as");
/// `-redis-password-file`.
pub const REDIS_PASSWORD_FILE_FLAG: Flag = Flag::value(
    &["redis-password-file"],
    "file",
    "Redis: read the AUTH password from this file (a trailing newline is dropped), before -user drops privileges",
);
/// `-redis-ca`.
pub const REDIS_CA_FLAG: Flag = Flag::value(
    &["redis-ca"],
    "file",
    "Redis: CA certificates (PEM) the rediss:// server's certificate must chain to",
);
/// `-redis-cert`.
pub const REDIS_CERT_FLAG: Flag = Flag::value(
    &["redis-cert"],
    "file",
    "Redis: client certificate (PEM) for rediss://, with -redis-key",
);
/// `-redis-key`.
pub const REDIS_KEY_FLAG: Flag = Flag::value(
    &["redis-key"],
    "file",
    "Redis: private key (PEM) of -redis-cert",
);
/// `-redis-sentinel-password-file`.
pub const REDIS_SENTINEL_PASSWORD_FILE_FLAG: Flag = Flag::value(
    &["redis-sentinel-password-file"],
    "file",
    "Redis: read the sentinels' AUTH password from this file (redis-sentinel:// only)",
);
/// The names of the `-redis-*` flags: refused without a Redis store.
pub const REDIS_FLAG_NAMES: &[&str] = &[
    "redis-prefix",
    "redis-user",
    "redis-password-file",
    "redis-sentinel-password-file",
    "redis-ca",
    "redis-cert",
    "redis-key",
];

/// What a [`crate::backend::Backend`] connects to: the Redis connection,
/// and for `redis-sentinel://` the sentinels that name its primary (the
/// connection's address is then replaced by the primary's).
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub redis: redis::Config,
    pub sentinel: Option<sentinel::Config>,
}

/// The store at address `st` (given as `flag`, e.g. `-server`) with the
/// `-redis-*` flags: TLS files (read now, before `-user` drops
/// privileges), the user and password, the key prefix; for
/// `redis-sentinel://`, the sentinels (resolved now) with the user and
/// password of the address or `-redis-sentinel-password-file` (the user
/// then is the address's, else `-redis-user`). The caller sets the
/// deadlines its own flags give.
pub fn redis_config(p: &Parsed, st: StoreAddress, flag: &str) -> Result<StoreConfig, String> {
    let (r, sentinel) = match st {
        StoreAddress::Redis(r) => {
            if p.has("redis-sentinel-password-file") {
                return Err(format!(
                    "flag -redis-sentinel-password-file: only with a redis-sentinel:// {flag}"
                ));
            }
            (r, None)
        }
        StoreAddress::Sentinel(u) => {
            let s = sentinel_config(p, u)?;
            // The nodes' address is the primary's once a sentinel names it.
            let placeholder = RedisServer {
                addr: s.sentinels[0].clone(),
                tls: false,
                host: String::new(),
                port: 0,
                user: None,
                password: None,
            };
            (placeholder, Some(s))
        }
    };
    let tls = if r.tls {
        Some(redis_tls(p, &r.host, flag)?)
    } else {
        if let Some(n) = ["redis-ca", "redis-cert", "redis-key"]
            .iter()
            .find(|n| p.has(n))
        {
            return Err(format!("flag -{n}: only with a rediss:// (TLS) {flag}"));
        }
        None
    };
    let mut cfg = redis::Config::new(r.addr);
    cfg.tls = tls;
    cfg.user = r.user;
    cfg.password = r.password;
    if let Some(u) = p.get("redis-user") {
        if u.is_empty() {
            return Err("flag -redis-user: empty user name".to_string());
        }
        if let Some(was) = &cfg.user {
            return Err(format!(
                "flag -redis-user: the {flag} address already names user {was}"
            ));
        }
        cfg.user = Some(u.to_string());
    }
    if let Some(f) = p.get("redis-password-file") {
        if cfg.password.is_some() {
            return Err(format!(
                "flag -redis-password-file: the {flag} address already holds a password"
            ));
        }
        cfg.password = Some(read_password(f, "flag -redis-password-file")?);
    }
    if cfg.user.is_some() && cfg.password.is_none() {
        return Err("flag -redis-user: needs a password (-redis-password-file FILE)".to_string());
    }
    if let Some(prefix) = p.get("redis-prefix") {
        cfg.prefix = prefix.as_bytes().to_vec();
    }
    Ok(StoreConfig {
        redis: cfg,
        sentinel,
    })
}

/// The sentinels of `u`: resolved, with their credentials.
fn sentinel_config(p: &Parsed, u: SentinelUrl) -> Result<sentinel::Config, String> {
    let list = u.resolve()?;
    let mut cfg = sentinel::Config::new(list, u.master);
    cfg.password = u.password;
    if let Some(f) = p.get("redis-sentinel-password-file") {
        if cfg.password.is_some() {
            return Err(
                "flag -redis-sentinel-password-file: the address already holds the sentinels' password"
                    .to_string(),
            );
        }
        cfg.password = Some(read_password(f, "flag -redis-sentinel-password-file")?);
    }
    cfg.user = match (u.user, &cfg.password) {
        (Some(_), None) => {
            return Err(
                "the sentinel user in the address needs a password (-redis-sentinel-password-file FILE)"
                    .to_string(),
            )
        }
        (Some(user), Some(_)) => Some(user),
        (None, Some(_)) => p.get("redis-user").map(str::to_string),
        (None, None) => None,
    };
    Ok(cfg)
}

/// Longest `-redis-password-file` read.
pub const MAX_PASSWORD_FILE: u64 = 4096;

/// The password in a password file (`flag` names it in errors): the
/// file's bytes without a trailing newline; read now, before `-user` drops
/// privileges.
fn read_password(path: &str, flag: &str) -> Result<Secret, String> {
    use std::io::Read;
    let mut buf = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_PASSWORD_FILE + 1).read_to_end(&mut buf))
        .map_err(|e| format!("{flag}: cannot read {path}: {e}"))?;
    if buf.len() as u64 > MAX_PASSWORD_FILE {
        return Err(format!(
            "{flag}: {path} is longer than {MAX_PASSWORD_FILE} bytes"
        ));
    }
    if buf.ends_with(b"\n") {
        buf.pop();
        if buf.ends_with(b"\r") {
            buf.pop();
        }
    }
    if buf.is_empty() {
        return Err(format!("{flag}: {path} holds no password"));
    }
    Ok(Secret(buf))
}

/// The TLS client side of a `rediss://host:port` store: `-redis-ca`
/// (required) and optionally `-redis-cert` with `-redis-key`, read now
/// (before `-user` drops privileges); the certificate must name `host`.
fn redis_tls(p: &Parsed, host: &str, flag: &str) -> Result<TlsClient, String> {
    let file = |name: &str| match p.get(name) {
        Some("") => Err(format!("flag -{name}: empty file name")),
        v => Ok(v.map(std::path::Path::new)),
    };
    let ca = file("redis-ca")?
        .ok_or_else(|| format!("missing required flag -redis-ca (needed by {flag} rediss://)"))?;
    let cert_key = match (file("redis-cert")?, file("redis-key")?) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        (Some(_), None) => return Err("flag -redis-cert: needs -redis-key".to_string()),
        (None, Some(_)) => return Err("flag -redis-key: needs -redis-cert".to_string()),
    };
    // The loader names the -tls-* flags; these files came from -redis-*.
    TlsClient::load_optional_cert(ca, cert_key, host).map_err(|e| {
        e.replacen("-tls-ca ", "flag -redis-ca ", 1)
            .replacen("-tls-cert ", "flag -redis-cert ", 1)
            .replacen("-tls-key ", "flag -redis-key ", 1)
    })
}

/// `-mintimeout` of dc_server and of dc_client in front of Redis.
pub const MINTIMEOUT_FLAG: Flag = Flag::value(
    &["mintimeout"],
    "msecs",
    "store sessions for at least this long (default 0)",
);

/// `-maxtimeout` of dc_server and of dc_client in front of Redis.
pub const MAXTIMEOUT_FLAG: Flag = Flag::value(
    &["maxtimeout"],
    "msecs",
    "store sessions for at most this long; longer timeouts are clamped \
     (default 86400000, one day)",
);

/// The ADD timeout bounds dc_server applies (`-mintimeout`, `-maxtimeout`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub min_ms: u64,
    pub max_ms: u64,
}

impl Timeouts {
    /// `-mintimeout` and `-maxtimeout` (defaults 0 and one day), checked
    /// against each other.
    pub fn from_flags(p: &Parsed) -> Result<Timeouts, String> {
        let min_ms = p.num("mintimeout", 0, 0, proto::MAX_EXPIRY_MS)?;
        let max_ms = p.num(
            "maxtimeout",
            DEFAULT_MAX_TIMEOUT_MS,
            1,
            proto::MAX_EXPIRY_MS,
        )?;
        if min_ms > max_ms {
            return Err(format!(
                "flag -mintimeout: {min_ms} is above -maxtimeout {max_ms}"
            ));
        }
        Ok(Timeouts { min_ms, max_ms })
    }
}

/// What to ask Redis for a distcache request, or the answer to give at
/// once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan<'a> {
    /// Answered without Redis, as dc_server answers it (a refused ADD, a
    /// lookup of an id no session can have): this one-byte payload.
    Reply(u8),
    /// Ask Redis; `zero_add` marks an ADD whose timeout is 0 (after
    /// `-mintimeout`), asked as an EXISTS: dc_server accepts such a
    /// session and keeps nothing, unless one with the id is live.
    Ask { req: Request<'a>, zero_add: bool },
    /// An ADD payload under 8 bytes: dc_server drops the connection.
    Fatal,
}

/// The plan for request `msg` (dc_server's checks, in its order).
pub fn plan<'a>(msg: &MsgRef<'a>, t: Timeouts) -> Plan<'a> {
    let id = msg.payload;
    let lookup_ok = !id.is_empty() && id.len() <= proto::MAX_ID_LEN;
    let ask = |req| Plan::Ask {
        req,
        zero_add: false,
    };
    match msg.cmd {
        Cmd::Add => match proto::parse_add(msg.payload) {
            AddParse::Fatal => Plan::Fatal,
            AddParse::Reject(code) => Plan::Reply(code),
            AddParse::Ok(a) => {
                let timeout = u64::from(a.timeout_ms).max(t.min_ms);
                if timeout == 0 {
                    Plan::Ask {
                        req: Request::Have { id: a.id },
                        zero_add: true,
                    }
                } else {
                    ask(Request::Add {
                        id: a.id,
                        data: a.data,
                        timeout_ms: timeout.min(t.max_ms),
                    })
                }
            }
        },
        _ if !lookup_ok => Plan::Reply(status::NOTOK),
        Cmd::Get => ask(Request::Get { id }),
        Cmd::Remove => ask(Request::Remove { id }),
        Cmd::Have => ask(Request::Have { id }),
    }
}

/// The distcache answer payload for Redis' `answer` to a planned request
/// (`zero_add` as in [`Plan::Ask`]): the session bytes for a hit, else one
/// status byte (a failure is 0x02, "disconnected").
pub fn payload(answer: &Answer, zero_add: bool) -> Cow<'_, [u8]> {
    match (answer, zero_add) {
        (Answer::Hit(v), _) => Cow::Borrowed(v.as_slice()),
        (Answer::Yes, true) => Cow::Owned(vec![status::ADD_MATCHING_SESSION]),
        (Answer::No, true) => Cow::Owned(vec![status::OK]),
        (a, _) => Cow::Owned(vec![a.status()]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn redis(s: &str) -> RedisServer {
        match StoreAddress::parse(s) {
            Ok(StoreAddress::Redis(r)) => r,
            Ok(other) => panic!("{s}: {other:?}"),
            Err(e) => panic!("{s}: {e}"),
        }
    }

    #[test]
    fn addresses() {
        let r = redis("redis://127.0.0.1:6380");
        assert_eq!(
            r.addr,
            Address::Ip {
                addr: SocketAddr::from(([127, 0, 0, 1], 6380)),
                listen_only: false
            }
        );
        assert!(!r.tls && r.user.is_none() && r.password.is_none());
        let r = redis("REDISS://[::1]:7000");
        assert!(r.tls);
        assert_eq!(r.host, "::1");
        assert_eq!(r.port, 7000);
        assert_eq!(redis("redis://127.0.0.1").port, DEFAULT_REDIS_PORT);
        let a = StoreAddress::parse("redis://app:s3cret@127.0.0.1:6380").unwrap();
        let StoreAddress::Redis(r) = &a else {
            panic!("{a:?}")
        };
        assert_eq!(r.user.as_deref(), Some("app"));
        assert_eq!(r.password, Some(Secret(b"s3cret".to_vec())));
        assert_eq!(a.to_string(), "redis://app:***@127.0.0.1:6380");
        assert!(a.warning("-server").unwrap().contains("process list"));
        assert!(!a.warning("-server").unwrap().contains("s3cret"));
        let a = StoreAddress::parse("redis://:pw@127.0.0.1:1").unwrap();
        assert_eq!(a.to_string(), "redis://:***@127.0.0.1:1");
        assert_eq!(
            StoreAddress::parse("rediss://[::1]:7000")
                .unwrap()
                .to_string(),
            "rediss://[::1]:7000"
        );
        for bad in [
            "redis://",
            "redis://127.0.0.1:0",
            "redis://127.0.0.1:99999",
            "redis://127.0.0.1:6379/2",
            "redis://::1:6379",
            "redis://[::1",
            "redis://u:@127.0.0.1:1",
            "rediss-sentinel://127.0.0.1:26379/mymaster",
            "redis-sentinel://127.0.0.1:26379",
            "IP:127.0.0.1:1",
        ] {
            assert!(StoreAddress::parse(bad).is_err(), "{bad}");
        }
        let e = StoreAddress::parse("redis://u:topsecret@127.0.0.1:0").unwrap_err();
        assert!(!e.contains("topsecret"), "{e}");
        assert!(is_store_address("Redis://x") && is_store_address("redis-sentinel://x"));
        let a = StoreAddress::parse("redis-sentinel://:pw@127.0.0.1:1,[::1]:2/mymaster").unwrap();
        assert!(matches!(&a, StoreAddress::Sentinel(u) if u.sentinels.len() == 2));
        assert_eq!(
            a.to_string(),
            "redis-sentinel://:***@127.0.0.1:1,[::1]:2/mymaster"
        );
        assert!(a
            .warning("-server")
            .unwrap()
            .contains("-redis-sentinel-password-file"));
        let e = StoreAddress::parse("rediss-sentinel://u:topsecret@127.0.0.1:1/m").unwrap_err();
        assert!(e.contains("plain TCP") && !e.contains("topsecret"), "{e}");
        assert!(!is_store_address("IP:127.0.0.1:1") && !is_store_address("TLS:h:1"));
    }

    fn msg(cmd: Cmd, payload: &[u8]) -> MsgRef<'_> {
        MsgRef {
            is_response: false,
            uid: 1,
            cmd,
            level: proto::PROTO_LEVEL,
            payload,
        }
    }

    fn add(timeout: u32, id: &[u8], data: &[u8]) -> Vec<u8> {
        let mut v = timeout.to_be_bytes().to_vec();
        v.extend_from_slice(&(id.len() as u32).to_be_bytes());
        v.extend_from_slice(id);
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn plans_follow_dc_server() {
        let t = Timeouts {
            min_ms: 0,
            max_ms: 10_000,
        };
        let p = add(300, b"id", b"data");
        assert_eq!(
            plan(&msg(Cmd::Add, &p), t),
            Plan::Ask {
                req: Request::Add {
                    id: b"id",
                    data: b"data",
                    timeout_ms: 300
                },
                zero_add: false
            }
        );
        // -mintimeout raises, -maxtimeout caps.
        let up = Timeouts { min_ms: 5000, ..t };
        assert!(matches!(
            plan(&msg(Cmd::Add, &p), up),
            Plan::Ask {
                req: Request::Add {
                    timeout_ms: 5000,
                    ..
                },
                ..
            }
        ));
        let p2 = add(20_000, b"id", b"data");
        assert!(matches!(
            plan(&msg(Cmd::Add, &p2), t),
            Plan::Ask {
                req: Request::Add {
                    timeout_ms: 10_000,
                    ..
                },
                ..
            }
        ));
        let z = add(0, b"id", b"data");
        assert_eq!(
            plan(&msg(Cmd::Add, &z), t),
            Plan::Ask {
                req: Request::Have { id: b"id" },
                zero_add: true
            }
        );
        assert_eq!(plan(&msg(Cmd::Add, b"short"), t), Plan::Fatal);
        assert_eq!(
            plan(&msg(Cmd::Add, &add(1, b"", b"data")), t),
            Plan::Reply(status::ADD_ID_RANGE)
        );
        let mut huge = add(1, b"id", b"");
        huge.extend(std::iter::repeat(0).take(proto::MAX_TOTAL_DATA + 1));
        assert_eq!(
            plan(&msg(Cmd::Add, &huge), t),
            Plan::Reply(status::ADD_DATA_RANGE)
        );
        assert_eq!(plan(&msg(Cmd::Get, b""), t), Plan::Reply(status::NOTOK));
        let long = vec![1u8; proto::MAX_ID_LEN + 1];
        assert_eq!(plan(&msg(Cmd::Have, &long), t), Plan::Reply(status::NOTOK));
        assert_eq!(
            plan(&msg(Cmd::Remove, b"x"), t),
            Plan::Ask {
                req: Request::Remove { id: b"x" },
                zero_add: false
            }
        );
    }

    #[test]
    fn payloads() {
        assert_eq!(&*payload(&Answer::Hit(b"abcde".to_vec()), false), b"abcde");
        assert_eq!(&*payload(&Answer::Miss, false), [status::NOTOK]);
        assert_eq!(
            &*payload(&Answer::Yes, true),
            [status::ADD_MATCHING_SESSION]
        );
        assert_eq!(&*payload(&Answer::No, true), [status::OK]);
        assert_eq!(&*payload(&Answer::Yes, false), [status::OK]);
        assert_eq!(
            &*payload(&Answer::Failed(crate::redis::Failure::Down), true),
            [status::DISCONNECTED]
        );
    }
}
