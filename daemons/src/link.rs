//! One stream connection of the daemons, written once: the byte stream, its
//! place in the epoll loop, the frame decoder, the input and output
//! buffers, the clocks the limits are measured with, a non-blocking connect
//! with a deadline, and drain-then-close. dc_server (its applications),
//! dc_client (its applications and its server connection) and dc_snoop
//! (both sides of each relayed pair) hold a [`Link`] per connection and add
//! only their own policy: what a decoded frame means, when to pause
//! reading, whom to close when a limit is hit.
//!
//! The clocks (milliseconds from [`tools::now_ms`]):
//! - `last_active`: bytes moved either way (for `-idle`);
//! - `progress`: the last sign that the peer's business moves (a whole
//!   request taken, answers written, or the moment the link started to hold
//!   something); a peer dribbling a frame that never completes, or not
//!   reading its answers, makes none (for `-stall` / `-clientstall` and the
//!   `-maxbuffer` victim choice);
//! - `out_moved`: the unsent output last shrank or started to wait;
//! - `since`: accepted, or last answered (for [`tools::evict`]).

use std::io::{self, Read, Write};
use std::net::Shutdown;

use distcache_rs::nal::Address;
use distcache_rs::proto::{self, Decoder, Direction};
use distcache_rs::transport::Transport;

use crate::evloop::{self, Event, Poller};
use crate::tools;

/// Output left after a flush is compacted once this much of the buffer is
/// already written (so a slow reader does not keep written bytes around).
const COMPACT_AFTER: usize = 256 * 1024;

/// A buffer larger than this is given back once empty (output, when it is
/// all written; input, when mostly decoded), so that thousands of idle
/// connections hold little memory.
pub const KEEP_BUF: usize = 16 * 1024;

/// A connection of the daemons. See the module documentation.
#[derive(Debug)]
pub struct Link {
    /// The byte stream: a plain UNIX or TCP socket, or a TLS session over
    /// TCP ([`crate::tls::TlsStream`]); the link never knows which.
    stream: Box<dyn Transport>,
    token: u64,
    /// Events registered with the poller (0 while not registered).
    interest: u32,
    /// A non-blocking connect started at this time and is not done.
    connecting: Option<u64>,
    /// Decoder of the frames the peer sends.
    pub dec: Decoder,
    /// Received bytes not yet decoded.
    pub inbuf: Vec<u8>,
    /// Bytes to send; `out[out_pos..]` is unsent.
    out: Vec<u8>,
    out_pos: usize,
    /// The peer finished sending, or the link is to close once its output
    /// is written ([`Link::close_after_output`]).
    pub eof: bool,
    pub last_active: u64,
    pub progress: u64,
    pub out_moved: u64,
    pub since: u64,
    /// At least one answer was given on this link.
    pub completed: bool,
    /// Bytes counted for this link in its daemon's `-maxbuffer` total.
    pub charged: usize,
    /// Order of creation among the process's links.
    serial: u64,
    /// When the link was made.
    born: u64,
}

/// Serials for [`Link::serial`] (the daemons are single-threaded; atomic
/// only to be a plain static).
static NEXT_SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// What a read found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Got {
    /// Bytes read.
    pub n: usize,
    /// The peer closed its side.
    pub eof: bool,
}

impl Link {
    fn new(stream: Box<dyn Transport>, token: u64, dir: Direction, now: u64) -> Link {
        Link {
            stream,
            token,
            interest: 0,
            connecting: None,
            dec: Decoder::new(dir),
            inbuf: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            eof: false,
            last_active: now,
            progress: now,
            out_moved: now,
            since: now,
            completed: false,
            charged: 0,
            serial: NEXT_SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            born: now,
        }
    }

    /// Order of creation: of two links, the lower serial is the older
    /// (for [`tools::evict`] when their clocks show the same millisecond).
    pub fn serial(&self) -> u64 {
        self.serial
    }

    /// An accepted connection, registered for reading under `token`.
    pub fn accepted(
        stream: impl Transport + 'static,
        token: u64,
        dir: Direction,
        poller: &Poller,
    ) -> io::Result<Link> {
        let mut l = Link::new(Box::new(stream), token, dir, tools::now_ms());
        poller.add(l.stream.as_raw_fd(), token, evloop::READ)?;
        l.interest = evloop::READ;
        Ok(l)
    }

    /// [`Link::accepted`] for a stream already boxed (a TLS session or a
    /// plain socket, chosen by the listener it came from).
    pub fn accepted_boxed(
        stream: Box<dyn Transport>,
        token: u64,
        dir: Direction,
        poller: &Poller,
    ) -> io::Result<Link> {
        let mut l = Link::new(stream, token, dir, tools::now_ms());
        poller.add(l.stream.as_raw_fd(), token, evloop::READ)?;
        l.interest = evloop::READ;
        Ok(l)
    }

    /// [`Link::connect`] to a TCP address, the socket wrapped by `wrap`
    /// (a TLS client session) before it is registered. The handshake starts
    /// once the connect completes ([`Link::handshaking`]).
    pub fn connect_over(
        addr: &Address,
        token: u64,
        dir: Direction,
        poller: &Poller,
        wrap: impl FnOnce(std::net::TcpStream) -> io::Result<Box<dyn Transport>>,
    ) -> io::Result<Link> {
        let (stream, done) = tools::connect_nonblocking(addr)?;
        let tcp = match stream {
            tools::Stream::Tcp(t) => t,
            tools::Stream::Unix(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "TLS runs over TCP only",
                ))
            }
        };
        let now = tools::now_ms();
        let mut l = Link::new(wrap(tcp)?, token, dir, now);
        let interest = evloop::READ | evloop::WRITE;
        poller.add(l.stream.as_raw_fd(), token, interest)?;
        l.interest = interest;
        l.connecting = (!done).then_some(now);
        Ok(l)
    }

    /// When the link was made (accepted, or its connect started).
    pub fn born(&self) -> u64 {
        self.born
    }

    /// A handshake below the protocol (TLS) is still going on.
    pub fn handshaking(&self) -> bool {
        self.stream.handshaking()
    }

    /// The stream has bytes of its own to send (TLS records) besides the
    /// link's output: watch for writability and [`Link::flush`].
    pub fn wants_write(&self) -> bool {
        self.stream.wants_write()
    }

    /// Start a non-blocking connect to `addr`, registered under `token`.
    /// While [`Link::connecting`], feed its events to [`Link::connect_event`]
    /// and give up at the caller's deadline ([`Link::connecting_since`]).
    pub fn connect(
        addr: &Address,
        token: u64,
        dir: Direction,
        poller: &Poller,
    ) -> io::Result<Link> {
        let (stream, done) = tools::connect_nonblocking(addr)?;
        let now = tools::now_ms();
        let mut l = Link::new(Box::new(stream), token, dir, now);
        let interest = evloop::READ | evloop::WRITE;
        poller.add(l.stream.as_raw_fd(), token, interest)?;
        l.interest = interest;
        l.connecting = (!done).then_some(now);
        Ok(l)
    }

    /// The connect has not completed yet.
    pub fn connecting(&self) -> bool {
        self.connecting.is_some()
    }

    /// When the pending connect started.
    pub fn connecting_since(&self) -> Option<u64> {
        self.connecting
    }

    /// An event while connecting: `Ok(true)` once connected, `Ok(false)`
    /// while still in progress, the connect's error when it failed.
    pub fn connect_event(&mut self, ev: &Event) -> io::Result<bool> {
        if self.connecting.is_none() {
            return Ok(true);
        }
        if !ev.writable() && !ev.hangup() {
            return Ok(false);
        }
        match self.stream.take_error()? {
            Some(e) => Err(e),
            None if ev.hangup() => Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "connection closed",
            )),
            None => {
                self.connecting = None;
                Ok(true)
            }
        }
    }

    pub fn stream(&self) -> &dyn Transport {
        &*self.stream
    }

    pub fn token(&self) -> u64 {
        self.token
    }

    /// The events currently registered.
    pub fn interest(&self) -> u32 {
        self.interest
    }

    /// Watch for `want` (one epoll_ctl, only when it changes).
    pub fn set_interest(&mut self, poller: &Poller, want: u32) -> io::Result<()> {
        if want != self.interest {
            poller.modify(self.stream.as_raw_fd(), self.token, want)?;
            self.interest = want;
        }
        Ok(())
    }

    /// Stop watching (before dropping a link whose descriptor may have
    /// been duplicated; otherwise closing it is enough).
    pub fn deregister(&mut self, poller: &Poller) {
        let _ = poller.delete(self.stream.as_raw_fd());
        self.interest = 0;
    }

    /// About to start holding something: the `progress` clock starts now.
    pub fn start_clock(&mut self, now: u64) {
        if !self.holds() {
            self.progress = now;
        }
    }

    /// Half a request (or answer) received and not taken, output the peer
    /// has not read, or a TLS handshake not completed (so `-stall` bounds
    /// a handshake that never ends).
    pub fn holds(&self) -> bool {
        !self.inbuf.is_empty()
            || self.dec.in_message()
            || self.unsent() > 0
            || self.stream.handshaking()
    }

    /// The stream holds input already taken from the descriptor (a TLS
    /// session's decrypted records): read again before waiting for epoll.
    pub fn has_buffered_input(&self) -> bool {
        self.stream.has_buffered_input()
    }

    /// Read into `scratch` once (nothing is buffered): the caller decodes
    /// straight from it and keeps the rest with [`Link::keep`]. Updates
    /// the clocks.
    pub fn read_once(&mut self, scratch: &mut [u8]) -> io::Result<Got> {
        loop {
            match self.stream.read(scratch) {
                Ok(0) => return Ok(Got { n: 0, eof: true }),
                Ok(n) => {
                    self.moved_in(tools::now_ms());
                    return Ok(Got { n, eof: false });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(Got { n: 0, eof: false })
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Read what is available, up to `budget` bytes, onto `inbuf` (through
    /// `scratch`). Updates the clocks.
    pub fn read_some(&mut self, scratch: &mut [u8], budget: usize) -> io::Result<Got> {
        let now = tools::now_ms();
        let mut got = Got { n: 0, eof: false };
        while got.n < budget {
            match self.stream.read(scratch) {
                Ok(0) => {
                    got.eof = true;
                    break;
                }
                Ok(n) => {
                    if got.n == 0 {
                        self.moved_in(now);
                    }
                    self.inbuf.extend_from_slice(&scratch[..n]);
                    got.n += n;
                    // A short read emptied the socket; a TLS session may
                    // still hold decrypted bytes the descriptor does not show.
                    if n < scratch.len() && !self.stream.has_buffered_input() {
                        break;
                    }
                }
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => break,
                    io::ErrorKind::Interrupted => continue,
                    _ => return Err(e),
                },
            }
        }
        Ok(got)
    }

    fn moved_in(&mut self, now: u64) {
        self.start_clock(now);
        self.last_active = now;
    }

    /// Keep bytes read with [`Link::read_once`] that were not decoded.
    pub fn keep(&mut self, rest: &[u8]) {
        self.inbuf.extend_from_slice(rest);
    }

    /// `consumed` bytes of `inbuf` were decoded: drop them (and give back
    /// a large buffer that is mostly empty).
    pub fn consumed(&mut self, consumed: usize) {
        self.inbuf.drain(..consumed);
        if self.inbuf.capacity() > KEEP_BUF && self.inbuf.len() < KEEP_BUF / 4 {
            self.inbuf.shrink_to_fit();
        }
    }

    /// Where to append output (answers, forwarded requests). Start the
    /// output clock with [`Link::output_starts`] before queueing onto an
    /// empty buffer.
    pub fn out(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    /// The decoder, the input and the output together, to answer decoded
    /// messages while their payload still borrows the decoder or the input.
    pub fn parts(&mut self) -> (&mut Decoder, &[u8], &mut Vec<u8>) {
        (&mut self.dec, &self.inbuf, &mut self.out)
    }

    /// Output queued from now on starts waiting now.
    pub fn output_starts(&mut self, now: u64) {
        if self.unsent() == 0 {
            self.out_moved = now;
        }
    }

    /// Output queued and not yet written.
    pub fn unsent(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Drop the unsent output (requests that will never be sent).
    pub fn discard_output(&mut self) {
        self.out.clear();
        self.out_pos = 0;
    }

    /// Write as much unsent output as the socket takes. `Ok(true)` if some
    /// left (the clocks then move).
    pub fn flush(&mut self) -> io::Result<bool> {
        if self.out_pos == self.out.len() && self.stream.wants_write() {
            // Records of the stream's own (a handshake flight) and no
            // output: push them; the handshake moving is progress.
            match self.stream.flush() {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            return Ok(false);
        }
        let before = self.out_pos;
        while self.out_pos < self.out.len() {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let moved = self.out_pos != before;
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
            if self.out.capacity() > KEEP_BUF {
                self.out = Vec::new();
            }
        } else if self.out_pos > COMPACT_AFTER {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
        if moved {
            let now = tools::now_ms();
            self.last_active = now;
            self.progress = now;
            self.out_moved = now;
        }
        Ok(moved)
    }

    /// Take no more input: what is buffered is dropped, the output queued
    /// so far is still written, then the link is [`Link::finished`].
    pub fn close_after_output(&mut self) {
        self.eof = true;
        self.inbuf = Vec::new();
    }

    /// Tell the peer nothing more comes (before closing a link whose peer
    /// reads until the end, e.g. an HTTP answer).
    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// Nothing more to read and nothing left to write: close it.
    pub fn finished(&self) -> bool {
        self.eof && self.unsent() == 0
    }

    /// Memory the link holds (capacities, and a message being reassembled
    /// counted at its largest), for `-maxbuffer`.
    pub fn mem(&self) -> usize {
        let partial = if self.dec.in_message() {
            proto::MAX_TOTAL_DATA
        } else {
            0
        };
        self.inbuf.capacity() + self.out.capacity() + partial
    }

    /// Memory held by the buffers alone.
    pub fn buffered(&self) -> usize {
        self.inbuf.capacity() + self.out.capacity()
    }

    /// Give large empty buffers back.
    pub fn trim(&mut self) {
        if self.out.is_empty() && self.out.capacity() > KEEP_BUF {
            self.out = Vec::new();
        }
        if self.inbuf.is_empty() && self.inbuf.capacity() > KEEP_BUF {
            self.inbuf = Vec::new();
        }
    }

    /// Nothing pending either way: drop the buffers altogether (over a
    /// memory budget). False if something is pending.
    pub fn release_buffers(&mut self) -> bool {
        if self.unsent() > 0 || !self.inbuf.is_empty() {
            return false;
        }
        self.out = Vec::new();
        self.out_pos = 0;
        self.inbuf = Vec::new();
        true
    }

    /// Charge the link's current memory to a daemon total: returns the
    /// new total.
    pub fn recharge(&mut self, total: usize, held: usize) -> usize {
        let t = total - self.charged + held;
        self.charged = held;
        t
    }

    /// Holding something with no progress for `limit` ms (0: no limit):
    /// how long, if so.
    pub fn stalled(&self, now: u64, limit: u64) -> Option<u64> {
        (limit > 0 && self.holds() && now >= self.progress.saturating_add(limit))
            .then(|| now - self.progress)
    }

    /// When the link's `-idle` of `limit` ms runs out, if it can: a link
    /// holding something is governed by the stall clock instead.
    pub fn idle_due(&self, limit: u64) -> Option<u64> {
        (limit > 0 && !self.holds()).then(|| self.last_active.saturating_add(limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::Stream;
    use std::os::fd::{AsRawFd, RawFd};
    use std::os::unix::net::UnixStream;

    /// A transport that has taken `held` off its descriptor already (as a
    /// TLS session holds decrypted records) and hands it out two bytes a
    /// read.
    #[derive(Debug)]
    struct Holding {
        sock: UnixStream,
        held: Vec<u8>,
    }
    impl Read for Holding {
        fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
            if self.held.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = b.len().min(2).min(self.held.len());
            b[..n].copy_from_slice(&self.held[..n]);
            self.held.drain(..n);
            Ok(n)
        }
    }
    impl Write for Holding {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.sock.write(b)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    impl AsRawFd for Holding {
        fn as_raw_fd(&self) -> RawFd {
            self.sock.as_raw_fd()
        }
    }
    impl Transport for Holding {
        fn peer_name(&self) -> String {
            String::new()
        }
        fn shutdown(&self, how: Shutdown) -> io::Result<()> {
            self.sock.shutdown(how)
        }
        fn take_error(&self) -> io::Result<Option<io::Error>> {
            Ok(None)
        }
        fn set_nonblocking(&self, on: bool) -> io::Result<()> {
            self.sock.set_nonblocking(on)
        }
        fn has_buffered_input(&self) -> bool {
            !self.held.is_empty()
        }
    }

    #[test]
    fn reads_what_a_transport_holds_past_a_short_read() {
        let p = Poller::new().unwrap();
        let (a, _b) = UnixStream::pair().unwrap();
        let t = Holding {
            sock: a,
            held: b"abcdefg".to_vec(),
        };
        let mut l = Link::accepted(t, 1, Direction::Requests, &p).unwrap();
        assert!(l.has_buffered_input());
        let mut scratch = [0u8; 4];
        let got = l.read_some(&mut scratch, 64).unwrap();
        assert_eq!(got, Got { n: 7, eof: false });
        assert_eq!(l.inbuf, b"abcdefg");
        assert!(!l.has_buffered_input());
    }

    fn pair(poller: &Poller) -> (Link, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let l = Link::accepted(Stream::Unix(a), 7, Direction::Requests, poller).unwrap();
        (l, b)
    }

    #[test]
    fn reads_onto_inbuf_within_budget_and_sees_eof() {
        let p = Poller::new().unwrap();
        let (mut l, mut peer) = pair(&p);
        let mut scratch = vec![0u8; 4];
        peer.write_all(b"0123456789").unwrap();
        let got = l.read_some(&mut scratch, 8).unwrap();
        assert_eq!(got, Got { n: 8, eof: false });
        assert_eq!(l.inbuf, b"01234567");
        assert!(l.holds());
        let got = l.read_some(&mut scratch, 8).unwrap();
        assert_eq!(got, Got { n: 2, eof: false });
        drop(peer);
        let got = l.read_some(&mut scratch, 8).unwrap();
        assert_eq!(got, Got { n: 0, eof: true });
        l.consumed(10);
        assert!(!l.holds());
    }

    #[test]
    fn flush_writes_what_the_socket_takes_and_keeps_the_rest() {
        let p = Poller::new().unwrap();
        let (mut l, mut peer) = pair(&p);
        // More than a UNIX socket buffer holds.
        let big = vec![0x5au8; 4 << 20];
        l.output_starts(1);
        l.out().extend_from_slice(&big);
        assert!(l.flush().unwrap(), "nothing written");
        let left = l.unsent();
        assert!(left > 0 && left < big.len(), "left {left}");
        assert!(l.holds());
        assert!(!l.flush().unwrap(), "a full socket took more");
        // The peer reads it all: the rest goes and the buffer is empty.
        let reader = std::thread::spawn(move || {
            let mut v = Vec::new();
            peer.read_to_end(&mut v).unwrap();
            v
        });
        while l.unsent() > 0 {
            l.flush().unwrap();
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        l.trim();
        assert_eq!(l.buffered(), 0);
        drop(l);
        assert_eq!(reader.join().unwrap(), big);
    }

    #[test]
    fn close_after_output_drains_then_finishes() {
        let p = Poller::new().unwrap();
        let (mut l, mut peer) = pair(&p);
        l.keep(b"half a request");
        l.out().extend_from_slice(b"answer");
        l.close_after_output();
        assert!(l.inbuf.is_empty());
        assert!(!l.finished());
        l.flush().unwrap();
        assert!(l.finished());
        let mut b = [0u8; 6];
        peer.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"answer");
    }

    #[test]
    fn stall_and_idle_clocks() {
        let p = Poller::new().unwrap();
        let (mut l, _peer) = pair(&p);
        l.last_active = 100;
        l.progress = 100;
        assert_eq!(l.idle_due(50), Some(150));
        assert_eq!(l.idle_due(0), None);
        assert_eq!(l.stalled(1000, 50), None, "holds nothing: not stalled");
        l.keep(b"x");
        assert_eq!(l.idle_due(50), None, "holding: the stall clock governs");
        assert_eq!(l.stalled(149, 50), None);
        assert_eq!(l.stalled(150, 50), Some(50));
        assert_eq!(l.stalled(150, 0), None);
        // Starting to hold restarts the clock; holding already does not.
        l.start_clock(500);
        assert_eq!(l.progress, 100);
        l.consumed(1);
        l.start_clock(500);
        assert_eq!(l.progress, 500);
    }

    #[test]
    fn connect_reports_refusal_and_success() {
        let p = Poller::new().unwrap();
        let dir = std::env::temp_dir().join(format!("dcrs-link-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        // Nothing there: the connect fails at once.
        let gone = Address::Unix(dir.join("none"));
        assert!(Link::connect(&gone, 1, Direction::Responses, &p).is_err());
        // A listener: a UNIX connect completes at once.
        let path = dir.join("l");
        let lst = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let mut l = Link::connect(&Address::Unix(path), 2, Direction::Responses, &p).unwrap();
        let ev = Event {
            token: 2,
            events: evloop::WRITE,
        };
        assert!(l.connect_event(&ev).unwrap());
        assert!(!l.connecting());
        let (mut srv, _) = lst.accept().unwrap();
        l.out().extend_from_slice(b"hi");
        l.flush().unwrap();
        let mut b = [0u8; 2];
        srv.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"hi");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
