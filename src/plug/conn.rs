//! [`Plug`]: a [`PlugCore`] joined to a NAL connection (the C `DC_PLUG`).

use super::{MsgView, PlugCore, WriteError};
use crate::nal::{Connection, Selector};
use crate::proto::Cmd;

/// Access to the connection a plug (or a DC_SERVER client) works on.
///
/// The connection may be owned by the plug or only borrowed from the
/// caller (C's `NOFREE_CONN`): the C layer implements this trait over the
/// caller's `NAL_CONNECTION` pointer, safe code uses [`OwnedConn`].
/// Handles are `Send` so that a [`Plug`] can move between threads.
pub trait ConnHandle: Send {
    fn conn(&mut self) -> &mut Connection;
}

/// A connection owned by the plug.
#[derive(Debug, Default)]
pub struct OwnedConn(pub Connection);

impl ConnHandle for OwnedConn {
    fn conn(&mut self) -> &mut Connection {
        &mut self.0
    }
}

/// A DC_PLUG: whole distcache messages over one connection.
pub struct Plug {
    conn: Box<dyn ConnHandle>,
    core: PlugCore,
}

impl std::fmt::Debug for Plug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plug").field("core", &self.core).finish()
    }
}

impl Plug {
    /// Wrap `conn`. `to_server`: we send requests and read responses.
    pub fn new(conn: Box<dyn ConnHandle>, to_server: bool) -> Plug {
        Plug {
            conn,
            core: PlugCore::new(to_server),
        }
    }

    /// The protocol state.
    pub fn core(&self) -> &PlugCore {
        &self.core
    }

    /// The connection.
    pub fn conn(&mut self) -> &mut Connection {
        self.conn.conn()
    }

    /// Give up the connection handle (dropping it frees an owned one).
    pub fn into_conn(self) -> Box<dyn ConnHandle> {
        self.conn
    }

    /// Move queued output into the send buffer and decode what arrived,
    /// without network I/O (used when the caller drives the connection).
    pub fn sync(&mut self) -> bool {
        let mut bufs = self.conn.conn().buffers_mut();
        let b = &mut *bufs;
        self.core.after_io(&mut b.read, &mut b.send).is_ok()
    }

    /// Move queued output into the send buffer, without decoding input.
    /// True when all output has left the send buffer (been written to the
    /// socket).
    pub fn flush(&mut self) -> bool {
        let mut sb = self.conn.conn().send_buf_mut();
        self.core.push(&mut sb);
        sb.is_empty() && self.core.pending_output() == 0
    }

    /// Make sure the connection is watched by `sel` (DC_PLUG_to_select).
    /// Our connections stay bound to a selector, which then waits for
    /// readability while the read buffer has room (the plug stops draining
    /// it while its own queue is full) and for writability while data waits
    /// to be sent; so this flushes queued output into the send buffer and
    /// binds the connection if it is not bound yet. Bound to another
    /// selector, it fails and changes nothing (like a second
    /// NAL_CONNECTION_add_to_selector): DC_PLUG_from_select first.
    pub fn to_select(&mut self, sel: &Selector) -> bool {
        if !self.core.is_alive() {
            return false;
        }
        let c = self.conn.conn();
        if c.is_bound() && !c.is_bound_to(sel) {
            return false;
        }
        {
            let mut sb = c.send_buf_mut();
            self.core.push(&mut sb);
        }
        c.is_bound() || c.add_to_selector(sel)
    }

    /// Stop watching the connection (DC_PLUG_from_select).
    pub fn from_select(&mut self) {
        self.conn.conn().del_from_selector();
    }

    /// Do the network I/O the last select allowed, then flush output and
    /// decode input (DC_PLUG_io). Fails when the connection failed (peer
    /// closed, socket error, not bound) or the peer sent a corrupt stream;
    /// complete messages received before a close can still be read.
    pub fn io(&mut self) -> bool {
        let net_ok = self.conn.conn().io();
        let proto_ok = self.sync();
        net_ok && proto_ok
    }

    /// DC_PLUG_read: see [`PlugCore::read`].
    pub fn read(&mut self, resume: bool) -> Option<MsgView<'_>> {
        let c = self.conn.conn();
        let mut rb = c.read_buf_mut();
        self.core.read(&mut rb, resume)
    }

    /// DC_PLUG_consume.
    pub fn consume(&mut self) -> bool {
        self.core.consume()
    }

    /// DC_PLUG_write.
    pub fn write(
        &mut self,
        resume: bool,
        uid: u32,
        cmd: Cmd,
        payload: &[u8],
    ) -> Result<(), WriteError> {
        self.core.write(resume, uid, cmd, payload)
    }

    /// DC_PLUG_write_more.
    pub fn write_more(&mut self, data: &[u8]) -> Result<(), WriteError> {
        self.core.write_more(data)
    }

    /// DC_PLUG_commit: queue the message and move what fits into the send
    /// buffer.
    pub fn commit(&mut self) -> Result<(), WriteError> {
        let c = self.conn.conn();
        let mut sb = c.send_buf_mut();
        self.core.commit(&mut sb)
    }

    /// DC_PLUG_rollback.
    pub fn rollback(&mut self) -> bool {
        self.core.rollback()
    }

    /// Queue already-encoded messages and move what fits into the send
    /// buffer.
    pub fn queue_encoded(&mut self, bytes: &[u8]) {
        let c = self.conn.conn();
        let mut sb = c.send_buf_mut();
        self.core.queue_encoded(bytes, &mut sb);
    }
}
