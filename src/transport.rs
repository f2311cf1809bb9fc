//! The byte-stream transport: one place for what every connection of the
//! project does below its protocol.
//!
//! - [`Transport`]: the small trait a connected byte stream offers to the
//!   code above it (the daemons' connection state machine, the blocking
//!   client). [`Stream`] (a UNIX or TCP socket) implements it here; a TLS
//!   session over TCP implements it in the daemons' crate.
//! - The connector: [`start_connect`] begins a non-blocking connect,
//!   [`connect_by`] finishes one by a deadline. libnal's NAL_CONNECTION,
//!   the DC_CTX client and the tools all connect through these two.
//! - [`unix_path_state`]: the one check of what holds a UNIX socket path
//!   before listening there (a live listener, a stale file, not a socket).
//! - [`wait_ready`]: poll(2) on one descriptor, the only wait this layer
//!   (and the blocking client above it) uses.
//!
//! Plain UNIX and TCP sockets only: nothing here links more than libc and
//! socket2, since the C libraries are built from this crate.

use std::fmt::Debug;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, Socket, Type};

use crate::nal::Address;

/// A connected byte stream, whatever carries it.
///
/// Reads and writes follow the descriptor's blocking mode. A stream that
/// keeps state in user space (a TLS session) says so through
/// [`Transport::has_buffered_input`], so that a readiness loop does not
/// sleep on input the descriptor no longer shows.
pub trait Transport: Read + Write + AsRawFd + Send + Debug {
    /// The peer for log lines (`127.0.0.1:5000`, `UNIX pid 123`); empty
    /// when unknown.
    fn peer_name(&self) -> String;

    /// Shut down one or both directions of the underlying socket.
    fn shutdown(&self, how: Shutdown) -> io::Result<()>;

    /// The pending socket error (SO_ERROR), e.g. of a non-blocking connect.
    fn take_error(&self) -> io::Result<Option<io::Error>>;

    /// Switch the descriptor between blocking and non-blocking mode.
    fn set_nonblocking(&self, on: bool) -> io::Result<()>;

    /// Whether the stream holds input already taken from the descriptor
    /// and not yet read by the caller (decrypted records of a TLS session):
    /// the caller must read again before it waits for the descriptor to
    /// become readable. Always false for a plain socket.
    fn has_buffered_input(&self) -> bool {
        false
    }

    /// Whether a handshake below the protocol (TLS) is still going on: the
    /// link holds a peer that has not yet been able to send a request, so
    /// its stall clock runs. Always false for a plain socket.
    fn handshaking(&self) -> bool {
        false
    }

    /// Whether the stream has bytes of its own to send (TLS records: a
    /// handshake flight, an alert, a key update) even when the caller has
    /// no output queued: watch the descriptor for writability and call
    /// `flush`. Always false for a plain socket.
    fn wants_write(&self) -> bool {
        false
    }
}

/// A connected plain socket (UNIX or TCP).
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// Pid of the process at the other end of a UNIX socket (SO_PEERCRED).
pub fn peer_pid(fd: RawFd) -> Option<i32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred and len are valid for writes of the given size for the
    // duration of the call; the kernel writes at most `len` bytes.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut libc::ucred as *mut libc::c_void,
            &mut len,
        )
    };
    (r == 0 && cred.pid > 0).then_some(cred.pid)
}

/// How a UNIX peer is named in log lines.
pub fn unix_peer_name(fd: RawFd) -> String {
    match peer_pid(fd) {
        Some(pid) => format!("UNIX pid {pid}"),
        None => "UNIX peer".to_string(),
    }
}

impl Stream {
    /// A stream over a connected socket of `sa`'s family.
    pub fn from_socket(sock: Socket, sa: &SockAddr) -> Stream {
        if is_tcp(sa) {
            Stream::Tcp(sock.into())
        } else {
            Stream::Unix(UnixStream::from(OwnedFd::from(sock)))
        }
    }

    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(t),
            Stream::Unix(s) => s.set_read_timeout(t),
        }
    }

    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_write_timeout(t),
            Stream::Unix(s) => s.set_write_timeout(t),
        }
    }
}

// The methods callers need are inherent (no trait import needed to call
// them on a `Stream`); the trait forwards to them.
impl Stream {
    /// The peer for log lines (`127.0.0.1:5000`, `UNIX pid 123`), looked
    /// up on demand; empty if unknown.
    pub fn peer_name(&self) -> String {
        match self {
            Stream::Tcp(s) => s.peer_addr().map(|a| a.to_string()).unwrap_or_default(),
            Stream::Unix(s) => unix_peer_name(s.as_raw_fd()),
        }
    }

    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(how),
            Stream::Unix(s) => s.shutdown(how),
        }
    }

    /// The pending socket error (SO_ERROR), e.g. of a non-blocking connect.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        match self {
            Stream::Tcp(s) => s.take_error(),
            Stream::Unix(s) => s.take_error(),
        }
    }

    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_nonblocking(on),
            Stream::Unix(s) => s.set_nonblocking(on),
        }
    }
}

impl Transport for Stream {
    fn peer_name(&self) -> String {
        Stream::peer_name(self)
    }
    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        Stream::shutdown(self, how)
    }
    fn take_error(&self) -> io::Result<Option<io::Error>> {
        Stream::take_error(self)
    }
    fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        Stream::set_nonblocking(self, on)
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }
}

// ------------------------------------------------------------ the connector

/// The socket address to connect to for `addr`. A listen-only IP address
/// (no host) cannot be connected to: callers check
/// [`Address::can_connect`] first and say so in their own words.
pub fn sockaddr(addr: &Address) -> io::Result<SockAddr> {
    match addr {
        Address::Unix(p) => SockAddr::unix(p),
        Address::Ip { addr, .. } => Ok(SockAddr::from(*addr)),
    }
}

/// Whether `sa` is an IP (TCP) address rather than a UNIX path.
pub fn is_tcp(sa: &SockAddr) -> bool {
    sa.domain() != Domain::UNIX
}

/// Where a started connect stands.
enum Progress {
    Connected,
    /// TCP: the handshake goes on; the socket becomes writable when done.
    Pending,
    /// UNIX: the listener's backlog is full (EAGAIN). A UNIX connect does
    /// not go on by itself: it has to be made again.
    BacklogFull,
}

fn begin(sa: &SockAddr, nodelay: bool) -> io::Result<(Socket, Progress)> {
    // socket2 makes the descriptor close-on-exec in the same socket(2)
    // call; SOCK_NONBLOCK rides along too.
    let sock = Socket::new(sa.domain(), Type::STREAM.nonblocking(), None)?;
    let tcp = is_tcp(sa);
    if tcp && nodelay {
        sock.set_nodelay(true)?;
    }
    let p = match sock.connect(sa) {
        Ok(()) => Progress::Connected,
        Err(e) if tcp && e.raw_os_error() == Some(libc::EINPROGRESS) => Progress::Pending,
        Err(e) if !tcp && e.kind() == io::ErrorKind::WouldBlock => Progress::BacklogFull,
        Err(e) => return Err(e),
    };
    Ok((sock, p))
}

/// Start a non-blocking connect to `sa`: a close-on-exec, non-blocking
/// socket (TCP_NODELAY when `nodelay`, TCP only). Returns the socket and
/// whether the connect is still in progress (TCP: wait for writability,
/// then read [`Socket::take_error`]). A UNIX listener whose backlog is full
/// fails the call with `WouldBlock` ([`connect_by`] waits for room).
pub fn start_connect(sa: &SockAddr, nodelay: bool) -> io::Result<(Socket, bool)> {
    match begin(sa, nodelay)? {
        (s, Progress::Connected) => Ok((s, false)),
        (s, Progress::Pending) => Ok((s, true)),
        (_, Progress::BacklogFull) => Err(io::ErrorKind::WouldBlock.into()),
    }
}

/// ETIMEDOUT, as the kernel reports a TCP connect that ran out of time.
fn timed_out() -> io::Error {
    io::Error::from_raw_os_error(libc::ETIMEDOUT)
}

/// Time left until `deadline` (None: no deadline); `Err` once it passed.
fn left(deadline: Option<Instant>) -> io::Result<Option<Duration>> {
    match deadline {
        None => Ok(None),
        Some(d) => {
            let l = d.saturating_duration_since(Instant::now());
            if l.is_zero() {
                Err(timed_out())
            } else {
                Ok(Some(l))
            }
        }
    }
}

/// Connect to `sa` by `deadline` (None: as long as the kernel tries).
/// Returns a connected, non-blocking, close-on-exec socket; a connect still
/// unfinished at the deadline fails with `TimedOut`.
///
/// TCP waits in poll(2) for writability. When poll reports the socket
/// writable and nothing else, the handshake succeeded; SO_ERROR is read
/// only when it reports an error or a hang-up, to name the failure. So a
/// TCP connect costs socket, setsockopt (TCP_NODELAY), connect and at most
/// one poll.
///
/// A UNIX connect completes at once or finds the listener's backlog full;
/// poll cannot wait for room there (an unconnected UNIX socket polls as
/// hung up), so the socket then connects the blocking way, bounded by
/// SO_SNDTIMEO (which the kernel applies to a blocking UNIX connect), and
/// goes back to non-blocking.
// Inlined into its one caller in the C libraries (the DC_CTX client's
// connect), so that libnal.so.1 does not grow by a function of its own.
#[inline(always)]
pub fn connect_by(sa: &SockAddr, nodelay: bool, deadline: Option<Instant>) -> io::Result<Socket> {
    let (sock, p) = begin(sa, nodelay)?;
    match p {
        Progress::Connected => Ok(sock),
        Progress::Pending => loop {
            let revents = match wait_ready(sock.as_raw_fd(), libc::POLLOUT, left(deadline)?) {
                Ok(0) => return Err(timed_out()),
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) == 0 {
                return Ok(sock);
            }
            return Err(match sock.take_error()? {
                Some(e) => e,
                None => io::ErrorKind::ConnectionRefused.into(),
            });
        },
        Progress::BacklogFull => {
            sock.set_nonblocking(false)?;
            loop {
                // None: SO_SNDTIMEO stays 0, a wait without bound.
                sock.set_write_timeout(left(deadline)?)?;
                match sock.connect(sa) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // The kernel's SO_SNDTIMEO ran out: EAGAIN for UNIX.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(timed_out()),
                    Err(e) => return Err(e),
                }
            }
            sock.set_nonblocking(true)?;
            Ok(sock)
        }
    }
}

/// Wait until `fd` is ready for `events` (or has an error or hang-up), for
/// at most `left` (None: without bound; a bound is counted in whole
/// milliseconds, at least one). Returns the ready events, 0 on timeout.
pub fn wait_ready(
    fd: RawFd,
    events: libc::c_short,
    left: Option<Duration>,
) -> io::Result<libc::c_short> {
    let ms = match left {
        None => -1,
        Some(l) => l.as_millis().clamp(1, i32::MAX as u128) as libc::c_int,
    };
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: pfd is one valid pollfd for the duration of the call, and the
    // count passed is 1.
    let r = unsafe { libc::poll(&mut pfd, 1, ms) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(if r == 0 { 0 } else { pfd.revents })
}

// ------------------------------------------------------------ UNIX socket paths

/// What holds a UNIX socket path that a listener is about to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathState {
    /// Nothing is there.
    Absent,
    /// A file that is not a socket: never removed.
    NotSocket,
    /// A socket file where a process listens (or queues connections);
    /// `owner` is the file's owner.
    Live { owner: u32 },
    /// A socket file nobody listens on any more (its server is gone): the
    /// new listener may remove it.
    Stale,
}

/// Tell what holds `path` ([`PathState`]). The kernel's table of UNIX
/// sockets (/proc/net/unix) is read first: when it shows a listener bound
/// at this path, the server is not disturbed by a probe. Otherwise a
/// non-blocking connect decides: refused means stale; accepted or a full
/// backlog means live. Errors of the look-ups themselves are returned.
// Inlined into its one caller in the C libraries (NAL_LISTENER's stale
// check), so that libnal.so.1 does not grow by a function of its own.
#[inline(always)]
pub fn unix_path_state(path: &Path) -> io::Result<PathState> {
    let md = match std::fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(PathState::Absent),
        Err(e) => return Err(e),
    };
    if !md.file_type().is_socket() {
        return Ok(PathState::NotSocket);
    }
    let live = PathState::Live { owner: md.uid() };
    if proc_unix_listening(path) {
        return Ok(live);
    }
    let probe = Socket::new(Domain::UNIX, Type::STREAM.nonblocking(), None)?;
    match probe.connect(&SockAddr::unix(path)?) {
        Ok(()) => Ok(live),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(live),
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => Ok(PathState::Stale),
        Err(e) => Err(e),
    }
}

/// Whether /proc/net/unix lists a listening socket bound to `path` (as
/// given or made absolute). A socket bound under another name and renamed
/// to `path` is listed under its first name, so a false answer proves
/// nothing: [`unix_path_state`] then probes.
pub(crate) fn proc_unix_listening(path: &Path) -> bool {
    const SO_ACCEPTCON: u32 = 0x10000;
    let Ok(table) = std::fs::read_to_string("/proc/net/unix") else {
        return false;
    };
    let want = path.as_os_str().to_string_lossy();
    let abs = std::env::current_dir()
        .map(|d| d.join(path).to_string_lossy().into_owned())
        .unwrap_or_default();
    table.lines().skip(1).any(|line| {
        // Num RefCount Protocol Flags Type St Inode Path: the path is the
        // rest of the line after the seventh field.
        let mut rest = line;
        let mut fields = Vec::with_capacity(7);
        for _ in 0..7 {
            rest = rest.trim_start();
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            fields.push(&rest[..end]);
            rest = &rest[end..];
        }
        let p = rest.trim();
        let listening = u32::from_str_radix(fields[3], 16).is_ok_and(|fl| fl & SO_ACCEPTCON != 0);
        listening && !p.is_empty() && (p == want || p == abs)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    fn tmp(name: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("dcrs-transport-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        p
    }

    /// Absent, not a socket, live (seen in /proc/net/unix, and found by the
    /// probe when /proc lists it under another name), stale.
    #[test]
    fn unix_path_states() {
        let p = tmp("state.sock");
        assert_eq!(unix_path_state(&p).unwrap(), PathState::Absent);
        std::fs::write(&p, b"x").unwrap();
        assert_eq!(unix_path_state(&p).unwrap(), PathState::NotSocket);
        std::fs::remove_file(&p).unwrap();

        let l = UnixListener::bind(&p).unwrap();
        assert!(proc_unix_listening(&p));
        let me = std::fs::metadata(&p).unwrap().uid();
        assert_eq!(unix_path_state(&p).unwrap(), PathState::Live { owner: me });
        // Seen in the table: no probe connection reached the listener.
        l.set_nonblocking(true).unwrap();
        assert_eq!(
            l.accept().unwrap_err().kind(),
            io::ErrorKind::WouldBlock,
            "the check probed a listener the kernel's table shows"
        );
        drop(l);
        assert_eq!(unix_path_state(&p).unwrap(), PathState::Stale);
        std::fs::remove_file(&p).unwrap();

        // Bound under another name, renamed into place: /proc does not
        // show this path, the probe finds the listener.
        let first = tmp("state-first.sock");
        let l = UnixListener::bind(&first).unwrap();
        std::fs::rename(&first, &p).unwrap();
        assert!(!proc_unix_listening(&p));
        assert_eq!(unix_path_state(&p).unwrap(), PathState::Live { owner: me });
        l.set_nonblocking(true).unwrap();
        assert!(
            l.accept().is_ok(),
            "the probe connection reached the listener"
        );
        drop(l);
        std::fs::remove_file(&p).unwrap();
    }

    /// A UNIX listener with a full backlog: start_connect fails with
    /// WouldBlock, connect_by waits for room and gives up at its deadline
    /// (TimedOut), and connects once the listener accepts.
    #[test]
    fn unix_backlog_full_is_bounded_by_the_deadline() {
        let p = tmp("backlog.sock");
        let s = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
        let sa = SockAddr::unix(&p).unwrap();
        s.bind(&sa).unwrap();
        s.listen(0).unwrap();
        // Fill the backlog (its length is the kernel's business: connect
        // until it refuses).
        let mut queued = Vec::new();
        let full = loop {
            match start_connect(&sa, true) {
                Ok((c, in_progress)) => {
                    assert!(!in_progress, "a UNIX connect is never in progress");
                    queued.push(c);
                    assert!(queued.len() < 64, "the backlog never filled");
                }
                Err(e) => break e,
            }
        };
        assert_eq!(full.kind(), io::ErrorKind::WouldBlock, "{full}");
        let deadline = Some(Instant::now() + Duration::from_millis(50));
        let e = connect_by(&sa, true, deadline).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        // Room again: the same call connects, and the socket it returns is
        // non-blocking.
        let _ = s.accept().unwrap();
        let c = connect_by(&sa, true, Some(Instant::now() + Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 1];
        let e = (&c).read(&mut b).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{e}");
        drop(queued);
        let _ = std::fs::remove_file(&p);
    }

    /// TCP: a connect by a deadline succeeds with TCP_NODELAY set on
    /// request; one to a closed port fails with the kernel's reason.
    #[test]
    fn tcp_connect_by_deadline() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr =
            Address::parse(&format!("IP:127.0.0.1:{}", l.local_addr().unwrap().port())).unwrap();
        let sa = sockaddr(&addr).unwrap();
        assert!(is_tcp(&sa));
        let deadline = Some(Instant::now() + Duration::from_secs(5));
        let c = connect_by(&sa, true, deadline).unwrap();
        assert!(c.nodelay().unwrap());
        let mut s = Stream::from_socket(c, &sa);
        let (mut peer, _) = l.accept().unwrap();
        peer.write_all(b"hi").unwrap();
        s.set_nonblocking(false).unwrap();
        let mut b = [0u8; 2];
        s.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"hi");
        assert!(s.peer_name().starts_with("127.0.0.1:"), "{}", s.peer_name());
        assert!(!s.has_buffered_input());
        let c = connect_by(&sa, false, deadline).unwrap();
        assert!(!c.nodelay().unwrap());
        // A port nobody listens on.
        drop(l);
        let e = connect_by(&sa, true, deadline).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
    }

    #[test]
    fn unix_stream_names_its_peer_pid() {
        let (a, _b) = UnixStream::pair().unwrap();
        let s = Stream::Unix(a);
        assert_eq!(s.peer_name(), format!("UNIX pid {}", std::process::id()));
        assert_eq!(peer_pid(s.as_raw_fd()), Some(std::process::id() as i32));
    }
}
