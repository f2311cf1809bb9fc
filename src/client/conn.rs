//! One blocking client connection: connect, send a whole request, read one
//! whole response.
//!
//! A [`Conn`] runs over any [`Transport`] (a tool may hand it a TLS
//! session, [`Conn::over`]); the C libraries only ever make one over a
//! plain UNIX or TCP socket with [`Conn::connect`], through [`Wire`]'s
//! `socket2::Socket` case: plain socket syscalls, no NAL objects, no event
//! loop. The socket comes from the one connector
//! ([`crate::transport::connect_by`]) non-blocking, so a UNIX connection
//! costs socket, connect, send, poll, recv and close and nothing else (a
//! send that finds the socket full waits in `poll`); should the listener's
//! backlog be full, the connect falls back to a blocking one bounded by
//! `SO_SNDTIMEO`. A TCP connection adds one `setsockopt` (TCP_NODELAY) and,
//! when the handshake has not finished by the time connect(2) returns, one
//! `poll` for it, bounded by the I/O timeout. The answer is awaited with
//! `poll` and read with a non-blocking `recv`, so the common exchange costs
//! one `send`, one `poll` and one `recv`.

use std::io;
use std::mem::MaybeUninit;
use std::time::{Duration, Instant};

use socket2::{SockAddr, Socket};

use super::Error;
use crate::proto::{encoded_len, Cmd, Decoder, Direction, Event, MAX_TOTAL_DATA};
use crate::transport::{connect_by, wait_ready, Transport};

/// Makes a tool's connection stream (a TLS session, connected and with
/// its handshake done) in place of a plain socket: given the address and
/// the deadline of the whole connect. The C libraries never set one.
pub type Connector =
    std::sync::Arc<dyn Fn(&SockAddr, Instant) -> io::Result<Box<dyn Transport>> + Send + Sync>;

/// Where to connect, resolved once per client.
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) sockaddr: SockAddr,
    /// A tool's own connector; `None`: a plain socket.
    pub(crate) connector: Option<Connector>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("sockaddr", &self.sockaddr)
            .field("connector", &self.connector.is_some())
            .finish()
    }
}

/// The stream of a client connection: a plain socket (always, in the C
/// libraries) or what a tool's [`Connector`] made.
#[derive(Debug)]
pub(crate) enum Sock {
    Plain(Socket),
    Boxed(Box<dyn Transport>),
}

impl std::os::fd::AsRawFd for Sock {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        match self {
            Sock::Plain(s) => s.as_raw_fd(),
            Sock::Boxed(t) => t.as_raw_fd(),
        }
    }
}

impl Wire for Sock {
    fn send_some(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sock::Plain(s) => s.send_some(buf),
            Sock::Boxed(t) => t.write(buf),
        }
    }
    fn recv_some(&mut self, v: &mut Vec<u8>) -> io::Result<usize> {
        match self {
            Sock::Plain(s) => s.recv_some(v),
            Sock::Boxed(t) => transport_recv(&mut **t, v),
        }
    }
    fn has_buffered_input(&self) -> bool {
        match self {
            Sock::Plain(_) => false,
            Sock::Boxed(t) => t.has_buffered_input(),
        }
    }
}

/// A transport's `read` into the room after `v`'s bytes, growing `v`.
fn transport_recv(t: &mut (impl io::Read + ?Sized), v: &mut Vec<u8>) -> io::Result<usize> {
    let len = v.len();
    if v.capacity() - len < 2048 {
        v.reserve(RECV_CHUNK);
    }
    v.resize(v.capacity(), 0);
    let r = t.read(&mut v[len..]);
    v.truncate(len + *r.as_ref().unwrap_or(&0));
    r
}

/// Receive buffer grows in steps of this size.
const RECV_CHUNK: usize = 16 * 1024;

/// What a [`Conn`] runs over: a plain socket (what the C libraries use)
/// or any [`Transport`].
pub(crate) trait Wire: std::os::fd::AsRawFd + std::fmt::Debug {
    /// Send what fits of `buf` without blocking; a gone peer is an error,
    /// never a SIGPIPE.
    fn send_some(&mut self, buf: &[u8]) -> io::Result<usize>;
    /// Receive what is there into the room after `v`'s bytes without
    /// blocking, growing `v` as needed.
    fn recv_some(&mut self, v: &mut Vec<u8>) -> io::Result<usize>;
    /// Input held that the descriptor does not show ([`Transport::has_buffered_input`]).
    fn has_buffered_input(&self) -> bool;
}

/// The C libraries' case: send(2) with MSG_NOSIGNAL and a non-blocking
/// recv(2) straight into the buffer's spare capacity.
impl Wire for Socket {
    fn send_some(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.send_with_flags(buf, libc::MSG_NOSIGNAL)
    }
    fn recv_some(&mut self, v: &mut Vec<u8>) -> io::Result<usize> {
        recv_into(self, v)
    }
    fn has_buffered_input(&self) -> bool {
        false
    }
}

/// Any transport (the tools' case): its own `write` and `read` on a
/// non-blocking stream (a transport's `write` must not raise SIGPIPE; the
/// tools ignore it anyway).
impl<T: Transport> Wire for T {
    fn send_some(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write(buf)
    }
    fn recv_some(&mut self, v: &mut Vec<u8>) -> io::Result<usize> {
        transport_recv(self, v)
    }
    fn has_buffered_input(&self) -> bool {
        Transport::has_buffered_input(self)
    }
}

/// A connected, non-blocking stream plus its receive buffer.
#[derive(Debug)]
pub(crate) struct Conn<S: Wire = Sock> {
    sock: S,
    /// Process that made the connection: a pooled connection is used only
    /// by it, never by a child forked since.
    pub(crate) pid: u32,
    /// Bytes received and not yet consumed.
    rx: Vec<u8>,
}

fn timeout_err(e: io::Error, phase: &'static str) -> Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::Timeout(phase),
        _ => match phase {
            "send" => Error::Send(e),
            _ => Error::Recv(e),
        },
    }
}

/// Wait until `sock` is ready for `events` (or has an error/hang-up) for
/// at most `left`. Returns false on timeout.
fn wait_for(
    sock: &impl std::os::fd::AsRawFd,
    events: libc::c_short,
    left: Duration,
) -> io::Result<bool> {
    Ok(wait_ready(sock.as_raw_fd(), events, Some(left))? != 0)
}

/// Non-blocking `recv` into the spare capacity of `v`, growing it as needed.
fn recv_into(sock: &Socket, v: &mut Vec<u8>) -> io::Result<usize> {
    if v.capacity() - v.len() < 2048 {
        v.reserve(RECV_CHUNK);
    }
    let spare: &mut [MaybeUninit<u8>] = v.spare_capacity_mut();
    let n = sock.recv_with_flags(spare, libc::MSG_DONTWAIT)?;
    debug_assert!(n <= spare.len());
    let n = n.min(spare.len());
    // SAFETY: recv(2) initialised the first `n` bytes of the spare
    // capacity, and `n` does not exceed that capacity.
    unsafe { v.set_len(v.len() + n) };
    Ok(n)
}

impl Conn {
    /// Open a connection over a plain socket; every phase is bounded by
    /// `io_timeout`. `pid` is the calling process (0 for a connection that
    /// is never pooled).
    pub(crate) fn connect(t: &Target, io_timeout: Duration, pid: u32) -> Result<Conn, Error> {
        let deadline = Instant::now() + io_timeout;
        let made = match &t.connector {
            None => connect_by(&t.sockaddr, true, Some(deadline)).map(Sock::Plain),
            Some(connect) => connect(&t.sockaddr, deadline).map(Sock::Boxed),
        };
        let sock = made.map_err(|e| match e.kind() {
            io::ErrorKind::TimedOut => Error::Timeout("connect"),
            _ => Error::Connect(e),
        })?;
        Ok(Conn::over(sock, pid))
    }
}

impl<S: Wire> Conn<S> {
    /// A connection over `sock`, connected and non-blocking.
    pub(crate) fn over(sock: S, pid: u32) -> Conn<S> {
        Conn {
            sock,
            pid,
            rx: Vec::new(),
        }
    }

    /// Send `req` (one whole encoded request with this `uid` and `cmd`) and
    /// read its answer. Returns the answer payload and whether the
    /// connection is still in a clean state (nothing unread after the
    /// answer) so it may be reused.
    ///
    /// The receive phase as a whole is bounded by `io_timeout`.
    pub(crate) fn exchange(
        &mut self,
        req: &[u8],
        uid: u32,
        cmd: Cmd,
        io_timeout: Duration,
    ) -> Result<(Vec<u8>, bool), Error> {
        self.rx.clear();
        let mut sent = 0;
        let mut send_deadline = None;
        while sent < req.len() {
            match self.sock.send_some(&req[sent..]) {
                Ok(0) => return Err(Error::Send(io::ErrorKind::WriteZero.into())),
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // The socket is full: wait for room, bounded like a
                    // blocking send.
                    let deadline =
                        *send_deadline.get_or_insert_with(|| Instant::now() + io_timeout);
                    let left = deadline.saturating_duration_since(Instant::now());
                    match wait_for(&self.sock, libc::POLLOUT, left) {
                        Ok(true) => {}
                        Ok(false) => return Err(Error::Timeout("send")),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(Error::Send(e)),
                    }
                }
                Err(e) => return Err(timeout_err(e, "send")),
            }
        }
        let deadline = Instant::now() + io_timeout;
        let mut dec = Decoder::new(Direction::Responses);
        // Bytes of `rx` already consumed by the decoder.
        let mut off = 0;
        loop {
            loop {
                match dec.feed(&self.rx[off..]).map_err(Error::Protocol)? {
                    Event::NeedMore => break,
                    Event::Fragment { consumed } => off += consumed,
                    Event::Message { consumed, msg } => {
                        if msg.uid != uid {
                            return Err(Error::UidMismatch {
                                sent: uid,
                                got: msg.uid,
                            });
                        }
                        if msg.cmd != cmd {
                            return Err(Error::OpMismatch {
                                sent: cmd,
                                got: msg.cmd,
                            });
                        }
                        if msg.payload.is_empty() {
                            return Err(Error::EmptyAnswer);
                        }
                        let clean = off + consumed == self.rx.len();
                        return Ok((msg.payload.to_vec(), clean));
                    }
                }
            }
            if off > 0 {
                self.rx.drain(..off);
                off = 0;
            }
            // Wait in poll(2) rather than in a blocking recv(2): a task
            // blocked in recv on a UNIX stream socket is woken every time
            // the server consumes our request (the kernel signals "write
            // space" on the same wait queue), a wake-up that costs the
            // server a scheduler round trip per request. poll's wait is
            // keyed, so only input wakes it.
            // A stream holding input of its own (a TLS session's records)
            // is read before any wait: the descriptor may not show it.
            if !self.sock.has_buffered_input() {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(Error::Timeout("receive"));
                }
                match wait_for(&self.sock, libc::POLLIN, left) {
                    Ok(true) => {}
                    Ok(false) => return Err(Error::Timeout("receive")),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(Error::Recv(e)),
                }
            }
            match self.sock.recv_some(&mut self.rx) {
                Ok(0) => return Err(Error::Closed),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                    ) => {}
                Err(e) => return Err(timeout_err(e, "receive")),
            }
            // The decoder bounds a message; this only guards against a
            // decoder bug turning into unbounded memory use.
            if self.rx.len() > 2 * encoded_len(MAX_TOTAL_DATA) {
                return Err(Error::Recv(io::Error::other("answer too large")));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::encode_message;
    use crate::transport::Stream;
    use std::io::{Read, Write};
    use std::net::Shutdown;
    use std::os::fd::{AsRawFd, RawFd};
    use std::os::unix::net::UnixStream;
    use std::sync::mpsc;

    /// A server end that reads one request of `req_len` bytes and answers
    /// it with `answer` in one write, then keeps the connection open until
    /// told to go.
    fn serve(
        mut s: UnixStream,
        req_len: usize,
        answer: Vec<u8>,
    ) -> (mpsc::Sender<()>, std::thread::JoinHandle<Vec<u8>>) {
        let (tx, rx) = mpsc::channel();
        let h = std::thread::spawn(move || {
            let mut req = vec![0u8; req_len];
            s.read_exact(&mut req).unwrap();
            s.write_all(&answer).unwrap();
            let _ = rx.recv();
            req
        });
        (tx, h)
    }

    fn request_and_answer(payload: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let mut req = Vec::new();
        encode_message(&mut req, false, 7, Cmd::Get, b"session-id").unwrap();
        let mut ans = Vec::new();
        encode_message(&mut ans, true, 7, Cmd::Get, payload).unwrap();
        (req, ans)
    }

    /// The client runs over a Transport (here the plain Stream) as over
    /// its own socket: request sent whole, a two-frame answer reassembled.
    #[test]
    fn exchange_over_a_transport() {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let payload: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let (req, ans) = request_and_answer(&payload);
        let (go, h) = serve(b, req.len(), ans);
        let mut c = Conn::over(Stream::Unix(a), 0);
        let (got, clean) = c
            .exchange(&req, 7, Cmd::Get, Duration::from_secs(5))
            .unwrap();
        assert_eq!(got, payload);
        assert!(clean);
        go.send(()).unwrap();
        assert_eq!(h.join().unwrap(), req);
    }

    /// A transport that takes everything the socket has at once and hands
    /// it out a few bytes per read, as a TLS session hands out decrypted
    /// records: the descriptor is no longer readable while it holds input.
    #[derive(Debug)]
    struct Slurp {
        inner: Stream,
        held: Vec<u8>,
    }

    impl Read for Slurp {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.held.is_empty() {
                let mut chunk = [0u8; 8192];
                loop {
                    match self.inner.read(&mut chunk) {
                        Ok(0) => break,
                        Ok(n) => self.held.extend_from_slice(&chunk[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
                if self.held.is_empty() {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
            }
            let n = buf.len().min(self.held.len()).min(7);
            buf[..n].copy_from_slice(&self.held[..n]);
            self.held.drain(..n);
            Ok(n)
        }
    }

    impl Write for Slurp {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.inner.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl AsRawFd for Slurp {
        fn as_raw_fd(&self) -> RawFd {
            self.inner.as_raw_fd()
        }
    }

    impl Transport for Slurp {
        fn peer_name(&self) -> String {
            self.inner.peer_name()
        }
        fn shutdown(&self, how: Shutdown) -> io::Result<()> {
            self.inner.shutdown(how)
        }
        fn take_error(&self) -> io::Result<Option<io::Error>> {
            self.inner.take_error()
        }
        fn set_nonblocking(&self, on: bool) -> io::Result<()> {
            self.inner.set_nonblocking(on)
        }
        fn has_buffered_input(&self) -> bool {
            !self.held.is_empty()
        }
    }

    /// Input a transport holds is read before the client waits on the
    /// descriptor: the answer arrives whole although the socket shows
    /// nothing more after the first read (a wait there would run into the
    /// receive timeout instead).
    #[test]
    fn buffered_input_is_read_before_waiting() {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let payload = b"answer held by the transport".to_vec();
        let (req, ans) = request_and_answer(&payload);
        let (go, h) = serve(b, req.len(), ans);
        let mut c = Conn::over(
            Slurp {
                inner: Stream::Unix(a),
                held: Vec::new(),
            },
            0,
        );
        let (got, clean) = c
            .exchange(&req, 7, Cmd::Get, Duration::from_secs(30))
            .unwrap();
        assert_eq!(got, payload);
        assert!(clean);
        assert!(c.sock.held.is_empty(), "bytes left unread");
        go.send(()).unwrap();
        assert_eq!(h.join().unwrap(), req);
    }
}
