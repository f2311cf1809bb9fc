//! NAL_CONNECTION: a non-blocking stream socket with a read and a send
//! [`Buffer`].
//!
//! # Rust API summary (used by DC_PLUG, DC_CTX and DC_SERVER)
//! - [`Connection::new`], [`Connection::reset`];
//! - [`Connection::create`] (connect to an [`Address`], non-blocking),
//!   [`Connection::create_pair`] (socketpair), [`Connection::accept`]
//!   (from a [`Listener`], only after a select reported a pending
//!   connection);
//! - buffers: [`Connection::read_buf`], [`Connection::read_buf_mut`],
//!   [`Connection::send_buf`], [`Connection::send_buf_mut`] return guards
//!   that deref to [`Buffer`]; [`Connection::buffers_mut`] gives both at
//!   once (`b.read`, `b.send`); [`Connection::set_size`];
//! - [`Connection::add_to_selector`] (once; a second add while bound
//!   fails), [`Connection::del_from_selector`], [`Connection::is_bound`];
//! - [`Connection::io`] after [`Selector::select`]: moves bytes between the
//!   socket and the buffers; false when not bound, peer gone, connect
//!   failed, or a socket error;
//! - [`Connection::is_established`], [`Connection::is_created`],
//!   [`Connection::raw_fd`].
//!
//! The buffers live in state shared (through `Arc<Mutex<_>>`) with the
//! selector, which reads them at each select to decide what to wait for.
//! Do not hold a buffer guard across [`Selector::select`] or hold two
//! guards of the same connection at once (use [`Connection::buffers_mut`]).

use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use parking_lot::{MappedMutexGuard, Mutex, MutexGuard};
use socket2::{Domain, Socket, Type};

use super::address::{Address, MAX_BUFFER_SIZE};
use super::buffer::Buffer;
use super::listener::Listener;
use super::selector::{Registration, Selector, SlotObj, EV_ERROR, EV_READ, EV_WRITE};

/// The two buffers of a connection.
#[derive(Debug, Default)]
pub struct Buffers {
    /// Data read from the peer, waiting for the application.
    pub read: Buffer,
    /// Data written by the application, waiting to be sent.
    pub send: Buffer,
}

/// State shared between a connection and the selector it is bound to.
#[derive(Debug, Default)]
pub(crate) struct ConnCore {
    pub(crate) bufs: Buffers,
    sock: Option<Socket>,
    /// A non-blocking connect is in progress.
    connecting: bool,
    established: bool,
}

impl ConnCore {
    /// The descriptor and poll(2) events to wait for; None without a socket.
    pub(crate) fn poll_interest(&self) -> Option<(RawFd, i16)> {
        let s = self.sock.as_ref()?;
        let mut ev = 0;
        if !self.bufs.read.is_full() {
            ev |= EV_READ;
        }
        if self.connecting || !self.bufs.send.is_empty() {
            ev |= EV_WRITE;
        }
        Some((s.as_raw_fd(), ev))
    }

    fn do_io(&mut self, ev: i16) -> bool {
        let ConnCore {
            bufs,
            sock,
            connecting,
            established,
        } = self;
        let Some(sock) = sock.as_ref() else {
            return false;
        };
        if ev == 0 {
            return true;
        }
        if ev & libc::POLLNVAL != 0 {
            return false;
        }
        if *connecting {
            if ev & (EV_WRITE | EV_ERROR) == 0 {
                return true;
            }
            match sock.take_error() {
                Ok(None) => {
                    *connecting = false;
                    *established = true;
                }
                _ => return false,
            }
        }
        if ev & libc::POLLERR != 0 {
            return false;
        }
        if ev & (EV_READ | libc::POLLHUP) != 0 && !bufs.read.is_full() {
            let mut s: &Socket = sock;
            match s.read(bufs.read.spare_mut()) {
                Ok(0) => return false,
                Ok(n) => {
                    bufs.read.wrote(n);
                    *established = true;
                }
                Err(e) if retry(&e) => {}
                Err(_) => return false,
            }
        }
        if ev & EV_WRITE != 0 && !bufs.send.is_empty() {
            match sock.send_with_flags(bufs.send.data(), libc::MSG_NOSIGNAL) {
                Ok(n) => {
                    bufs.send.consume(n);
                    *established = true;
                }
                Err(e) if retry(&e) => {}
                Err(_) => return false,
            }
        }
        true
    }
}

fn retry(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// A buffer size a connection accepts: 0..=32768, where 0 means the
/// default size ([`super::effective_buffer_size`]).
fn valid_size(size: usize) -> bool {
    size <= MAX_BUFFER_SIZE
}

/// Whether new TCP sockets keep Nagle's algorithm (NAL_config_set_nagle).
static NAGLE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Enable (true, the default) or disable Nagle's algorithm (TCP_NODELAY)
/// on TCP sockets created or accepted after this call.
pub fn set_nagle(enabled: bool) {
    NAGLE.store(enabled, std::sync::atomic::Ordering::Relaxed);
}

/// Current setting of [`set_nagle`].
pub fn nagle() -> bool {
    NAGLE.load(std::sync::atomic::Ordering::Relaxed)
}

/// Apply the global Nagle setting to a fresh TCP socket.
pub(crate) fn apply_nagle(s: &Socket) -> io::Result<()> {
    if nagle() {
        Ok(())
    } else {
        s.set_nodelay(true)
    }
}

/// A non-blocking stream connection with read and send buffers
/// (NAL_CONNECTION). See the module documentation for the API summary.
#[derive(Debug)]
pub struct Connection {
    // Declared first so that the binding is dropped before the socket.
    reg: Option<Registration>,
    core: Arc<Mutex<ConnCore>>,
}

impl Default for Connection {
    fn default() -> Self {
        Self::new()
    }
}

/// Guard giving access to one buffer of a connection.
pub type BufGuard<'a> = MappedMutexGuard<'a, Buffer>;
/// Guard giving access to both buffers of a connection.
pub type BuffersGuard<'a> = MappedMutexGuard<'a, Buffers>;

impl Connection {
    /// An unconnected connection with empty zero-size buffers.
    pub fn new() -> Connection {
        Connection {
            reg: None,
            core: Arc::new(Mutex::new(ConnCore::default())),
        }
    }

    /// Close the socket, unbind from any selector and drop buffered data
    /// (buffer sizes are kept), so the object can be created again.
    pub fn reset(&mut self) {
        self.reg = None;
        let mut c = self.core.lock();
        c.sock = None;
        c.connecting = false;
        c.established = false;
        c.bufs.read.clear();
        c.bufs.send.clear();
    }

    /// Whether the connection holds a socket (created, accepted or paired).
    pub fn is_created(&self) -> bool {
        self.core.lock().sock.is_some()
    }

    /// The socket's file descriptor, if any.
    pub fn raw_fd(&self) -> Option<RawFd> {
        self.core.lock().sock.as_ref().map(|s| s.as_raw_fd())
    }

    fn install(&mut self, sock: Socket, buf_size: usize, connecting: bool) -> bool {
        let buf_size = super::effective_buffer_size(buf_size);
        let mut c = self.core.lock();
        c.bufs.read.clear();
        c.bufs.send.clear();
        if !c.bufs.read.set_size(buf_size) || !c.bufs.send.set_size(buf_size) {
            return false;
        }
        c.sock = Some(sock);
        c.connecting = connecting;
        c.established = !connecting;
        true
    }

    /// Start connecting to `addr` with buffers of `buf_size` bytes. Fails if
    /// the connection already has a socket, the address is listen-only, the
    /// size is over 32768 (0 means the default size), or the connect failed
    /// at once. On success
    /// the connect may still be in progress (see [`Connection::is_established`]).
    pub fn create(&mut self, addr: &Address, buf_size: usize) -> bool {
        if self.is_created() || !valid_size(buf_size) || !addr.can_connect() {
            return false;
        }
        match connect_socket(addr) {
            Ok((s, in_progress)) => self.install(s, buf_size, in_progress),
            Err(_) => false,
        }
    }

    /// Make `a` and `b` the two ends of one socketpair, buffers of
    /// `buf_size` bytes each (0: the default size). Both must be fresh.
    pub fn create_pair(a: &mut Connection, b: &mut Connection, buf_size: usize) -> bool {
        if a.is_created() || b.is_created() || !valid_size(buf_size) {
            return false;
        }
        let Ok((s1, s2)) = Socket::pair(Domain::UNIX, Type::STREAM, None) else {
            return false;
        };
        if s1.set_nonblocking(true).is_err() || s2.set_nonblocking(true).is_err() {
            return false;
        }
        if !a.install(s1, buf_size, false) {
            return false;
        }
        if !b.install(s2, buf_size, false) {
            a.reset();
            return false;
        }
        true
    }

    /// Accept a pending connection from `list`. Never blocks: succeeds only
    /// when the last select on the listener's selector reported one. The
    /// buffers get the listener address's default size.
    pub fn accept(&mut self, list: &mut Listener) -> bool {
        if self.is_created() {
            return false;
        }
        match list.accept_ready() {
            Some((s, size)) => self.install(s, size, false),
            None => false,
        }
    }

    /// Resize both buffers to `size` bytes (0..=32768, 0 meaning the
    /// default size), keeping their data. Fails without changing anything
    /// if either holds more than that.
    pub fn set_size(&mut self, size: usize) -> bool {
        if !valid_size(size) {
            return false;
        }
        let size = super::effective_buffer_size(size);
        let mut c = self.core.lock();
        if c.bufs.read.used() > size || c.bufs.send.used() > size {
            return false;
        }
        c.bufs.read.set_size(size) && c.bufs.send.set_size(size)
    }

    /// The read buffer (data received from the peer).
    pub fn read_buf(&self) -> BufGuard<'_> {
        MutexGuard::map(self.core.lock(), |c| &mut c.bufs.read)
    }

    /// The read buffer, mutably (consume received data).
    pub fn read_buf_mut(&mut self) -> BufGuard<'_> {
        self.read_buf()
    }

    /// The send buffer (data waiting to be sent).
    pub fn send_buf(&self) -> BufGuard<'_> {
        MutexGuard::map(self.core.lock(), |c| &mut c.bufs.send)
    }

    /// The send buffer, mutably (queue data to send).
    pub fn send_buf_mut(&mut self) -> BufGuard<'_> {
        self.send_buf()
    }

    /// Both buffers at once.
    pub fn buffers_mut(&mut self) -> BuffersGuard<'_> {
        MutexGuard::map(self.core.lock(), |c| &mut c.bufs)
    }

    /// Raw pointer to the shared state, for the C ABI's buffer pointers.
    pub(crate) fn core_ptr(&self) -> *mut ConnCore {
        self.core.data_ptr()
    }

    /// Whether the connection is connected (false while a non-blocking
    /// connect is in progress, or without a socket).
    pub fn is_established(&self) -> bool {
        let c = self.core.lock();
        c.sock.is_some() && c.established
    }

    /// Bind to `sel`: from now on each select waits for readability while
    /// the read buffer has room and writability while the send buffer holds
    /// data or a connect is in progress. Fails without a socket or while
    /// already bound to a (live) selector.
    pub fn add_to_selector(&mut self, sel: &Selector) -> bool {
        if self.is_bound() || !self.is_created() {
            return false;
        }
        self.reg = Some(sel.register(SlotObj::Conn(Arc::downgrade(&self.core))));
        true
    }

    /// Unbind from the selector (no-op when not bound).
    pub fn del_from_selector(&mut self) {
        self.reg = None;
    }

    /// Whether bound to a selector that is still alive and not reset.
    pub fn is_bound(&self) -> bool {
        self.reg.as_ref().is_some_and(|r| r.is_live())
    }

    /// Whether bound (live) to `sel` in particular.
    pub fn is_bound_to(&self, sel: &Selector) -> bool {
        self.reg
            .as_ref()
            .is_some_and(|r| r.is_live() && r.is_with(sel))
    }

    /// Do the network I/O the last select allowed. Succeeds trivially when
    /// the select reported nothing for this connection. Fails when not bound
    /// to a selector, when the peer closed, when a non-blocking connect
    /// failed, or on a socket error: the connection is then unusable.
    pub fn io(&mut self) -> bool {
        let Some(reg) = &self.reg else {
            return false;
        };
        let Some(ev) = reg.take_events() else {
            return false;
        };
        self.core.lock().do_io(ev)
    }
}

/// Open a non-blocking socket and start connecting (the one connector,
/// [`crate::transport::start_connect`]; TCP_NODELAY follows
/// [`set_nagle`]); the flag tells whether the connect is still in progress.
fn connect_socket(addr: &Address) -> io::Result<(Socket, bool)> {
    crate::transport::start_connect(&crate::transport::sockaddr(addr)?, !nagle())
}
