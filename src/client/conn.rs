//! One blocking client connection: connect, send a whole request, read one
//! whole response.
//!
//! Plain socket syscalls on a `socket2::Socket`: no NAL objects, no event
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
use crate::transport::{connect_by, wait_ready};

/// Where to connect, resolved once per client.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) sockaddr: SockAddr,
}

/// Receive buffer grows in steps of this size.
const RECV_CHUNK: usize = 16 * 1024;

/// A connected socket plus its receive buffer.
#[derive(Debug)]
pub(crate) struct Conn {
    sock: Socket,
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
            "connect" => Error::Connect(e),
            "send" => Error::Send(e),
            _ => Error::Recv(e),
        },
    }
}

/// Wait until `sock` is ready for `events` (or has an error/hang-up) for
/// at most `left`. Returns false on timeout.
fn wait_for(sock: &Socket, events: libc::c_short, left: Duration) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
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
    /// Open a connection; every phase is bounded by `io_timeout`. `pid` is
    /// the calling process (0 for a connection that is never pooled).
    pub(crate) fn connect(t: &Target, io_timeout: Duration, pid: u32) -> Result<Conn, Error> {
        let deadline = Instant::now() + io_timeout;
        let sock = connect_by(&t.sockaddr, true, Some(deadline)).map_err(|e| match e.kind() {
            io::ErrorKind::TimedOut => Error::Timeout("connect"),
            _ => Error::Connect(e),
        })?;
        Ok(Conn {
            sock,
            pid,
            rx: Vec::new(),
        })
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
            match self.sock.send_with_flags(&req[sent..], libc::MSG_NOSIGNAL) {
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
            match recv_into(&self.sock, &mut self.rx) {
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
