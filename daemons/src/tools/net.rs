//! Listening and connecting sockets for the tools (non-blocking std
//! sockets usable with [`crate::evloop::Poller`]). The stream type, the
//! connector and the check of a UNIX socket path are the core crate's
//! transport layer ([`distcache_rs::transport`]); this file adds the tools'
//! listeners (owner, group, mode, rename into place) and their messages.

use std::fs;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, Socket, Type};

use super::sys;
use distcache_rs::nal::Address;

/// Owner, group and mode for a UNIX listening socket (`-sockowner`,
/// `-sockgroup`, `-sockperms`). Ignored for IP listeners.
#[derive(Clone, Debug, Default)]
pub struct SockOpts {
    pub owner: Option<String>,
    pub group: Option<String>,
    pub perms: Option<u32>,
}

/// A non-blocking listening socket. A UNIX listener removes its socket file
/// when dropped (if the file is still the one it created).
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    Unix {
        sock: UnixListener,
        /// Absolute path of the socket file.
        path: PathBuf,
        /// (dev, ino) of the file we created, to avoid removing another's.
        id: (u64, u64),
    },
}

use distcache_rs::transport::{connect_by, sockaddr, start_connect, unix_path_state, PathState};
/// A connected stream (TCP or UNIX): the core crate's transport layer.
pub use distcache_rs::transport::{Stream, Transport};

fn absolute(p: &Path) -> io::Result<PathBuf> {
    if p.is_absolute() {
        Ok(p.to_path_buf())
    } else {
        Ok(std::env::current_dir()?.join(p))
    }
}

fn ctx(e: io::Error, what: String) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Loopback, RFC 1918 or link-local IPv4; loopback, unique-local
/// (fc00::/7) or link-local (fe80::/10) IPv6. The wildcard is none of them.
pub fn is_private(a: SocketAddr) -> bool {
    match a {
        SocketAddr::V4(v) => {
            let ip = v.ip();
            ip.is_loopback() || ip.is_private() || ip.is_link_local()
        }
        SocketAddr::V6(v) => {
            let ip = v.ip();
            let first = ip.segments()[0];
            ip.is_loopback() || first & 0xfe00 == 0xfc00 || first & 0xffc0 == 0xfe80
        }
    }
}

/// The one start-up warning for a listening address that hosts beyond
/// loopback and private networks can reach (`what` names the listener,
/// `risk` says what such a host can do there); None when it is private.
pub fn exposure_warning(what: &str, a: SocketAddr, risk: &str) -> Option<String> {
    if is_private(a) {
        return None;
    }
    let every = if a.ip().is_unspecified() {
        " (the wildcard: every interface)"
    } else {
        ""
    };
    Some(format!(
        "warning: {what} address {a} is not loopback or private{every}; {risk}"
    ))
}

/// Create a non-blocking listener on `addr` (SO_REUSEADDR for IP).
///
/// For a UNIX path that already exists: if something accepts connections
/// there, fail (AddrInUse) and leave it alone; if it is a stale socket
/// (connection refused), remove it and bind; refuse to touch a file that is
/// not a socket. Then apply `opts` (owner, group, mode).
pub fn listen(addr: &Address, opts: &SockOpts) -> io::Result<Listener> {
    match addr {
        Address::Ip { addr: sa, .. } => listen_tcp(*sa),
        Address::Unix(p) => listen_unix(p, opts),
    }
}

fn listen_tcp(sa: SocketAddr) -> io::Result<Listener> {
    let what = || format!("cannot listen on {sa}");
    let s = Socket::new(Domain::for_address(sa), Type::STREAM, None).map_err(|e| ctx(e, what()))?;
    s.set_reuse_address(true).map_err(|e| ctx(e, what()))?;
    if sa.is_ipv6() {
        // Best effort: an IPv6 wildcard listener takes IPv4 too, as by default.
        let _ = s.set_only_v6(false);
    }
    s.bind(&sa.into()).map_err(|e| ctx(e, what()))?;
    s.listen(1024).map_err(|e| ctx(e, what()))?;
    s.set_nonblocking(true).map_err(|e| ctx(e, what()))?;
    s.set_cloexec(true).map_err(|e| ctx(e, what()))?;
    Ok(Listener::Tcp(s.into()))
}

/// When a live socket at our listen path belongs to a user other than ours
/// and other than `-sockowner`'s, the words that name that user (the path
/// may have been taken first by another local user, and clients configured
/// for it would talk to that user's process).
fn squatter_note(owner: u32, opts: &SockOpts) -> String {
    let sockowner = opts
        .owner
        .as_deref()
        .and_then(|u| sys::lookup_user(u).ok())
        .map(|u| u.uid);
    if owner == sys::euid() || Some(owner) == sockowner {
        return String::new();
    }
    format!(
        " (the socket belongs to user {}, uid {owner}: another user's process may have taken the path first; listen in a directory only the daemon's user can write, such as /run/distcache/)",
        sys::user_name(owner)
    )
}

fn listen_unix(p: &Path, opts: &SockOpts) -> io::Result<Listener> {
    let path = absolute(p)?;
    let shown = path.display().to_string();
    match unix_path_state(&path).map_err(|e| ctx(e, format!("cannot listen on {shown}")))? {
        PathState::Absent => {}
        PathState::NotSocket => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("cannot listen on {shown}: the path exists and is not a socket"),
            ))
        }
        PathState::Live { owner } => {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "cannot listen on {shown}: another process is accepting connections there{}",
                    squatter_note(owner, opts)
                ),
            ))
        }
        PathState::Stale => {
            fs::remove_file(&path)
                .map_err(|e| ctx(e, format!("cannot remove stale socket {shown}")))?;
        }
    }
    // The socket is made under a temporary name in the same directory,
    // given its mode, owner and group, set listening, and only then
    // renamed to `path`. A UNIX socket refuses connections until
    // listen(2), so nobody connects while mode, owner or group are still
    // the defaults, and whoever finds the file at `path` finds it
    // accepting (a file that refuses connections would look stale to the
    // next starter). Where the temporary name would not fit sun_path, the
    // socket is bound at `path` directly and still listens last.
    let what = || format!("cannot listen on {shown}");
    let s = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(|e| ctx(e, what()))?;
    s.set_cloexec(true).map_err(|e| ctx(e, what()))?;
    // Unique per process and call (the tests listen from several threads).
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path
        .parent()
        .map(|d| d.join(format!(".dc_listen.{}.{n}", std::process::id())))
        .filter(|t| t.as_os_str().len() < SUN_PATH_LEN);
    let at = tmp.as_deref().unwrap_or(&path);
    if tmp.is_some() {
        // Ours from an earlier run with this pid that died mid-start.
        let _ = fs::remove_file(at);
    }
    let sa = SockAddr::unix(at).map_err(|e| ctx(e, what()))?;
    s.bind(&sa).map_err(|e| ctx(e, what()))?;
    let md = fs::symlink_metadata(at).map_err(|e| ctx(e, format!("cannot stat {shown}")))?;
    let id = (md.dev(), md.ino());
    // From here on, an error removes the file again.
    let remove = |e: io::Error| {
        remove_if_ours(at, id);
        e
    };
    let uid = match &opts.owner {
        Some(u) => Some(sys::lookup_user(u).map_err(remove)?.uid),
        None => None,
    };
    let gid = match &opts.group {
        Some(g) => Some(sys::lookup_group(g).map_err(remove)?),
        None => None,
    };
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::lchown(at, uid, gid)
            .map_err(|e| remove(ctx(e, format!("cannot change owner/group of {shown}"))))?;
    }
    if let Some(m) = opts.perms {
        fs::set_permissions(at, fs::Permissions::from_mode(m))
            .map_err(|e| remove(ctx(e, format!("cannot change mode of {shown}"))))?;
    }
    s.listen(1024).map_err(|e| remove(ctx(e, what())))?;
    s.set_nonblocking(true)
        .map_err(|e| remove(ctx(e, what())))?;
    if tmp.is_some() {
        fs::rename(at, &path).map_err(|e| remove(ctx(e, what())))?;
    }
    Ok(Listener::Unix {
        sock: s.into(),
        path,
        id,
    })
}

/// Room in `sockaddr_un.sun_path`, the terminating NUL included.
const SUN_PATH_LEN: usize = 108;

/// `accept4(2)` with `SOCK_NONBLOCK | SOCK_CLOEXEC`: one system call where
/// `accept` and `fcntl` take two.
fn accept_nonblocking(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: accept4 allows null address pointers; the result is checked.
    let r = unsafe {
        libc::accept4(
            fd,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: r is a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

impl Listener {
    /// Accept one connection (non-blocking: `WouldBlock` when none is
    /// pending). The stream is non-blocking too; `peer` names the client
    /// for log lines (`127.0.0.1:5000` or `UNIX pid 123`).
    pub fn accept(&self) -> io::Result<(Stream, String)> {
        match self {
            Listener::Tcp(l) => {
                let (s, a) = l.accept()?;
                s.set_nonblocking(true)?;
                let _ = s.set_nodelay(true);
                Ok((Stream::Tcp(s), a.to_string()))
            }
            Listener::Unix { sock, .. } => {
                let s = UnixStream::from(accept_nonblocking(sock.as_raw_fd())?);
                let peer = distcache_rs::transport::unix_peer_name(s.as_raw_fd());
                Ok((Stream::Unix(s), peer))
            }
        }
    }

    /// Like [`Listener::accept`] without naming the peer: the cheapest
    /// accept (one `accept4` for a UNIX socket, plus `TCP_NODELAY` for TCP),
    /// for proxies that take a new connection per request.
    pub fn accept_stream(&self) -> io::Result<Stream> {
        match self {
            Listener::Tcp(l) => {
                let s = TcpStream::from(accept_nonblocking(l.as_raw_fd())?);
                let _ = s.set_nodelay(true);
                Ok(Stream::Tcp(s))
            }
            Listener::Unix { sock, .. } => Ok(Stream::Unix(UnixStream::from(accept_nonblocking(
                sock.as_raw_fd(),
            )?))),
        }
    }

    /// The socket file of a UNIX listener.
    pub fn unix_path(&self) -> Option<&Path> {
        match self {
            Listener::Unix { path, .. } => Some(path),
            Listener::Tcp(_) => None,
        }
    }

    /// The bound address of an IP listener.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr().ok(),
            Listener::Unix { .. } => None,
        }
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix { sock, .. } => sock.as_raw_fd(),
        }
    }
}

/// Remove the socket file at `path` if it is still the one we created.
fn remove_if_ours(path: &Path, id: (u64, u64)) {
    if let Ok(md) = fs::symlink_metadata(path) {
        if (md.dev(), md.ino()) == id {
            if let Err(e) = fs::remove_file(path) {
                super::log::line(format_args!("cannot remove socket {}: {e}", path.display()));
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix { path, id, .. } = self {
            remove_if_ours(path, *id);
        }
    }
}

/// Connect (blocking) to `addr`. TCP gets TCP_NODELAY.
pub fn connect(addr: &Address) -> io::Result<Stream> {
    connect_timeout(addr, None)
}

/// Connect with an optional timeout (the one connector,
/// [`distcache_rs::transport::connect_by`]); the stream is blocking.
pub fn connect_timeout(addr: &Address, timeout: Option<Duration>) -> io::Result<Stream> {
    if !addr.can_connect() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot connect to {addr}: it names no host"),
        ));
    }
    let what = || format!("cannot connect to {addr}");
    let sa = sockaddr(addr).map_err(|e| ctx(e, what()))?;
    let deadline = timeout.map(|t| Instant::now() + t);
    let sock = connect_by(&sa, true, deadline).map_err(|e| ctx(e, what()))?;
    sock.set_nonblocking(false).map_err(|e| ctx(e, what()))?;
    Ok(Stream::from_socket(sock, &sa))
}

/// Start a non-blocking connection (the one connector,
/// [`distcache_rs::transport::start_connect`]; TCP gets TCP_NODELAY).
/// Returns the stream and whether it is already connected.
pub fn connect_nonblocking(addr: &Address) -> io::Result<(Stream, bool)> {
    if !addr.can_connect() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{addr} names no host to connect to"),
        ));
    }
    let sa = sockaddr(addr)?;
    let (sock, in_progress) = start_connect(&sa, true)?;
    Ok((Stream::from_socket(sock, &sa), !in_progress))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("dcrs-net-{}-{name}", std::process::id()));
        let _ = fs::remove_file(&d);
        d
    }

    /// -sockperms is the socket's exact mode whatever the umask, the
    /// socket only listens once owner, group and mode are final, and the
    /// process's umask is not touched. A failure on the way leaves no file
    /// behind.
    #[test]
    fn unix_listen_applies_perms_before_listening() {
        // The Umask line of /proc/self/status, so the test reads it
        // without changing it.
        let umask = || {
            fs::read_to_string("/proc/self/status")
                .unwrap()
                .lines()
                .find_map(|l| l.strip_prefix("Umask:").map(|v| v.trim().to_string()))
        };
        let before = umask();
        let p = tmp("perms.sock");
        let addr = Address::Unix(p.clone());
        for m in [0o600, 0o666, 0o660] {
            let opts = SockOpts {
                perms: Some(m),
                ..SockOpts::default()
            };
            let l = listen(&addr, &opts).unwrap();
            let mode = fs::symlink_metadata(&p).unwrap().mode() & 0o7777;
            assert_eq!(mode, m, "-sockperms {m:o}");
            // The process's own umask is left alone.
            assert_eq!(umask(), before, "umask changed by listen");
            let _c = connect(&addr).unwrap();
            drop(l);
            assert!(!p.exists(), "listener removes its socket");
        }
        let opts = SockOpts {
            owner: Some("no-such-user-dcrs".into()),
            perms: Some(0o600),
            ..SockOpts::default()
        };
        let e = listen(&addr, &opts).unwrap_err();
        assert!(e.to_string().contains("no-such-user-dcrs"), "{e}");
        assert!(!p.exists(), "a failed listen leaves no socket file");
    }

    #[test]
    fn unix_listen_live_stale_and_nonsocket() {
        let p = tmp("a.sock");
        let addr = Address::Unix(p.clone());
        let l = listen(&addr, &SockOpts::default()).unwrap();
        // Live: refused, file kept.
        let e = listen(&addr, &SockOpts::default()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
        assert!(p.exists());
        let mut c = connect(&addr).unwrap();
        let accept = || loop {
            match l.accept() {
                Ok(x) => break x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(e) => panic!("{e}"),
            }
        };
        // The refused second listen() left its probe connection (closed).
        let (mut probe, _) = accept();
        probe.set_nonblocking(false).unwrap();
        assert_eq!(probe.read(&mut [0u8; 4]).unwrap(), 0);
        let (mut s, peer) = accept();
        assert!(peer.starts_with("UNIX"), "{peer}");
        c.write_all(b"hi").unwrap();
        s.set_nonblocking(false).unwrap();
        let mut b = [0u8; 2];
        s.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"hi");
        drop(l);
        assert!(!p.exists(), "socket file not removed on drop");
        // Stale socket: a bound socket nobody listens on.
        let stale = std::os::unix::net::UnixDatagram::bind(&p).unwrap();
        drop(stale);
        assert!(p.exists());
        let l = listen(&addr, &SockOpts::default()).unwrap();
        drop(l);
        // A regular file is never removed.
        fs::write(&p, b"precious").unwrap();
        let e = listen(&addr, &SockOpts::default()).unwrap_err();
        assert!(e.to_string().contains("not a socket"), "{e}");
        assert_eq!(fs::read(&p).unwrap(), b"precious");
        fs::remove_file(&p).unwrap();
    }

    #[test]
    fn unix_perms() {
        let p = tmp("perm.sock");
        let opts = SockOpts {
            perms: Some(0o600),
            ..SockOpts::default()
        };
        let l = listen(&Address::Unix(p.clone()), &opts).unwrap();
        let m = fs::metadata(&p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(m, 0o600);
        drop(l);
        let opts = SockOpts {
            owner: Some("no-such-user-dcrs".into()),
            ..SockOpts::default()
        };
        let e = listen(&Address::Unix(p.clone()), &opts).unwrap_err();
        assert!(e.to_string().contains("no-such-user-dcrs"), "{e}");
        assert!(!p.exists(), "socket left behind after a failed setup");
    }

    #[test]
    fn tcp_listen_connect() {
        let a = Address::parse("IP:127.0.0.1:1").unwrap();
        let Address::Ip { .. } = a else { panic!() };
        let l = listen_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = l.local_addr().unwrap().port();
        let addr = Address::parse(&format!("IP:127.0.0.1:{port}")).unwrap();
        let _c = connect(&addr).unwrap();
        let (_s, peer) = loop {
            match l.accept() {
                Ok(x) => break x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(e) => panic!("{e}"),
            }
        };
        assert!(peer.starts_with("127.0.0.1:"), "{peer}");
        assert!(connect(&Address::parse("IP:9").unwrap()).is_err());
    }
}

#[cfg(test)]
mod exposure_tests {
    use super::{exposure_warning, is_private};

    #[test]
    fn private_and_public_addresses() {
        for a in [
            "127.0.0.1:1",
            "10.0.0.5:9001",
            "192.168.1.2:1",
            "172.16.0.1:1",
            "169.254.1.1:1",
            "[::1]:1",
            "[fd00::1]:1",
            "[fe80::1]:1",
        ] {
            assert!(is_private(a.parse().unwrap()), "{a}");
            assert_eq!(
                exposure_warning("listen", a.parse().unwrap(), "r"),
                None,
                "{a}"
            );
        }
        for a in [
            "0.0.0.0:1",
            "8.8.8.8:1",
            "172.32.0.1:1",
            "[::]:1",
            "[2001:db8::1]:1",
        ] {
            assert!(!is_private(a.parse().unwrap()), "{a}");
        }
        let w = exposure_warning("listen", "0.0.0.0:9001".parse().unwrap(), "risk").unwrap();
        assert_eq!(w, "warning: listen address 0.0.0.0:9001 is not loopback or private (the wildcard: every interface); risk");
        let w = exposure_warning("listen", "8.8.8.8:1".parse().unwrap(), "risk").unwrap();
        assert_eq!(
            w,
            "warning: listen address 8.8.8.8:1 is not loopback or private; risk"
        );
    }
}
