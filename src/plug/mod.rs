//! DC_PLUG: turns a connection's byte stream into whole distcache messages
//! and back.
//!
//! [`PlugCore`] is the protocol state machine. It never touches a socket:
//! it works on the two [`Buffer`]s of a connection (the read buffer the
//! network fills, the send buffer the network drains), so it can be tested
//! and fuzzed on its own. [`Plug`] joins a core to a NAL connection and is
//! what the C type `DC_PLUG` is.
//!
//! Reading: complete (defragmented) messages are decoded from the read
//! buffer into a queue; several may wait (pipelining). [`PlugCore::read`]
//! opens the oldest one and keeps exposing it until [`PlugCore::consume`].
//! Writing: [`PlugCore::write`] opens one outgoing message,
//! [`PlugCore::write_more`] appends payload, [`PlugCore::commit`] encodes it
//! (fragmented) into an output queue that is moved into the send buffer as
//! space allows, [`PlugCore::rollback`] drops it.
//!
//! A peer that sends anything the decoder rejects kills the plug: reading
//! and I/O fail from then on, and one line on stderr says why (for a
//! version mismatch, the peer's level and ours). Nothing else is affected;
//! the process is never aborted.

use std::collections::VecDeque;

use crate::nal::Buffer;
use crate::proto::{self, Cmd, DecodeError, Decoder, Direction, Event, MAX_FRAME_LEN};

mod conn;
pub use conn::{ConnHandle, OwnedConn, Plug};

/// Flag of `DC_PLUG_new`: we send requests and read responses.
pub const FLAG_TO_SERVER: u32 = 0x0001;
/// Flag of `DC_PLUG_new`: freeing the plug leaves the connection alone.
pub const FLAG_NOFREE_CONN: u32 = 0x0002;

/// Stop taking bytes from the read buffer while this many complete
/// messages wait unread; the connection's read buffer then fills up and
/// the peer is throttled by TCP instead of by our memory.
pub const MAX_QUEUED_MSGS: usize = 64;
/// Same, counted in payload bytes of the waiting messages.
pub const MAX_QUEUED_BYTES: usize = 256 * 1024;

/// One complete received message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incoming {
    pub uid: u32,
    pub cmd: Cmd,
    pub payload: Vec<u8>,
}

/// The message opened by [`PlugCore::read`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsgView<'a> {
    pub uid: u32,
    pub cmd: Cmd,
    pub payload: &'a [u8],
}

/// Why a write-side call was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteError {
    /// `write` without resume while a message is open.
    AlreadyOpen,
    /// `write_more`/`commit` with no message open.
    NotOpen,
    /// The payload would exceed 32768 bytes.
    TooLarge,
}

#[derive(Debug)]
struct Outgoing {
    uid: u32,
    cmd: Cmd,
    payload: Vec<u8>,
}

/// The DC_PLUG state machine over a connection's read and send buffers.
#[derive(Debug)]
pub struct PlugCore {
    to_server: bool,
    decoder: Decoder,
    /// Bytes taken from the read buffer and not yet decoded; `in_pos`
    /// marks where the undecoded part starts. Holds at most about two
    /// frames, so the connection's buffer size never limits message size.
    inbuf: Vec<u8>,
    in_pos: usize,
    /// Complete messages received, oldest first.
    incoming: VecDeque<Incoming>,
    incoming_bytes: usize,
    /// The front of `incoming` is opened by `read`.
    read_open: bool,
    /// The message being written.
    writing: Option<Outgoing>,
    /// Encoded messages waiting for room in the send buffer.
    out: Vec<u8>,
    out_pos: usize,
    /// Set when the peer sent something we could not decode.
    dead: Option<DecodeError>,
}

impl PlugCore {
    /// A plug core. `to_server`: we send requests and read responses;
    /// otherwise we are the server side.
    pub fn new(to_server: bool) -> Self {
        PlugCore {
            to_server,
            decoder: Decoder::new(if to_server {
                Direction::Responses
            } else {
                Direction::Requests
            }),
            inbuf: Vec::new(),
            in_pos: 0,
            incoming: VecDeque::new(),
            incoming_bytes: 0,
            read_open: false,
            writing: None,
            out: Vec::new(),
            out_pos: 0,
            dead: None,
        }
    }

    /// True for a client-side plug (DC_PLUG_FLAG_TO_SERVER).
    pub fn to_server(&self) -> bool {
        self.to_server
    }

    /// The decode error that killed this plug, if any.
    pub fn error(&self) -> Option<DecodeError> {
        self.dead
    }

    /// False once the peer sent a corrupt stream.
    pub fn is_alive(&self) -> bool {
        self.dead.is_none()
    }

    /// Number of complete received messages waiting (the open one included).
    pub fn queued(&self) -> usize {
        self.incoming.len()
    }

    /// True when a multi-frame message or a partial frame has been received
    /// but not completed.
    pub fn mid_message(&self) -> bool {
        self.decoder.in_message() || self.in_pos < self.inbuf.len()
    }

    /// Encoded bytes not yet moved into a send buffer.
    pub fn pending_output(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// True while a message is open for writing.
    pub fn writing(&self) -> bool {
        self.writing.is_some()
    }

    fn queue_full(&self) -> bool {
        self.incoming.len() >= MAX_QUEUED_MSGS || self.incoming_bytes >= MAX_QUEUED_BYTES
    }

    fn die(&mut self, e: DecodeError) -> DecodeError {
        if self.dead.is_none() {
            eprintln!(
                "libdistcache(pid={}): {} plug: dropping the connection: {}",
                std::process::id(),
                if self.to_server {
                    "client-side"
                } else {
                    "server-side"
                },
                e
            );
            self.dead = Some(e);
        }
        e
    }

    /// Decode every complete message available in `input` into the queue
    /// (until the queue is full), consuming the bytes used.
    pub fn pull(&mut self, input: &mut Buffer) -> Result<(), DecodeError> {
        if let Some(e) = self.dead {
            return Err(e);
        }
        while !self.queue_full() {
            let ev = self.decoder.feed(&self.inbuf[self.in_pos..]);
            match ev {
                Err(e) => return Err(self.die(e)),
                Ok(Event::Fragment { consumed }) => self.in_pos += consumed,
                Ok(Event::Message { consumed, msg }) => {
                    let m = Incoming {
                        uid: msg.uid,
                        cmd: msg.cmd,
                        payload: msg.payload.to_vec(),
                    };
                    self.in_pos += consumed;
                    self.incoming_bytes += m.payload.len();
                    self.incoming.push_back(m);
                }
                Ok(Event::NeedMore) => {
                    // Less than one frame is staged: top up from the
                    // connection's read buffer.
                    self.inbuf.drain(..self.in_pos);
                    self.in_pos = 0;
                    let room = (2 * MAX_FRAME_LEN).saturating_sub(self.inbuf.len());
                    let n = room.min(input.used());
                    if n == 0 {
                        break;
                    }
                    self.inbuf.extend_from_slice(&input.data()[..n]);
                    input.consume(n);
                }
            }
        }
        if self.in_pos == self.inbuf.len() {
            self.inbuf.clear();
            self.in_pos = 0;
        }
        Ok(())
    }

    /// Move queued output into `output` as far as it has room.
    pub fn push(&mut self, output: &mut Buffer) {
        let n = output.write(&self.out[self.out_pos..]);
        self.out_pos += n;
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        } else if self.out_pos > 64 * 1024 && self.out_pos * 2 > self.out.len() {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
    }

    /// Open the oldest complete message (DC_PLUG_read). `input` is the
    /// connection's read buffer: bytes waiting there are decoded first.
    /// With a message already open, only `resume` re-opens it; otherwise
    /// the call fails. `resume` with nothing open simply opens the next
    /// message. Fails when nothing complete has arrived or the plug is dead.
    pub fn read(&mut self, input: &mut Buffer, resume: bool) -> Option<MsgView<'_>> {
        if self.dead.is_some() {
            return None;
        }
        if self.read_open {
            if !resume {
                return None;
            }
        } else {
            if self.pull(input).is_err() {
                return None;
            }
            if self.incoming.is_empty() {
                return None;
            }
            self.read_open = true;
        }
        self.incoming.front().map(|m| MsgView {
            uid: m.uid,
            cmd: m.cmd,
            payload: &m.payload,
        })
    }

    /// Close the message opened by [`read`](Self::read) (DC_PLUG_consume).
    pub fn consume(&mut self) -> bool {
        if !self.read_open {
            return false;
        }
        self.read_open = false;
        if let Some(m) = self.incoming.pop_front() {
            self.incoming_bytes -= m.payload.len();
        }
        true
    }

    /// Open an outgoing message (DC_PLUG_write). `resume` replaces a
    /// message already open (like rollback then write); without it an open
    /// message makes the call fail. `uid` is 32 bits on the wire.
    pub fn write(
        &mut self,
        resume: bool,
        uid: u32,
        cmd: Cmd,
        payload: &[u8],
    ) -> Result<(), WriteError> {
        if self.writing.is_some() && !resume {
            return Err(WriteError::AlreadyOpen);
        }
        if payload.len() > proto::MAX_TOTAL_DATA {
            return Err(WriteError::TooLarge);
        }
        let mut p = self.writing.take().map(|o| o.payload).unwrap_or_default();
        p.clear();
        p.extend_from_slice(payload);
        self.writing = Some(Outgoing {
            uid,
            cmd,
            payload: p,
        });
        Ok(())
    }

    /// Append payload to the open message (DC_PLUG_write_more).
    pub fn write_more(&mut self, data: &[u8]) -> Result<(), WriteError> {
        let w = self.writing.as_mut().ok_or(WriteError::NotOpen)?;
        if w.payload.len() + data.len() > proto::MAX_TOTAL_DATA {
            return Err(WriteError::TooLarge);
        }
        w.payload.extend_from_slice(data);
        Ok(())
    }

    /// Encode the open message into the output queue and move what fits
    /// into `output`, the connection's send buffer (DC_PLUG_commit).
    pub fn commit(&mut self, output: &mut Buffer) -> Result<(), WriteError> {
        let w = self.writing.take().ok_or(WriteError::NotOpen)?;
        // The payload is bounded by write/write_more, so encoding succeeds.
        proto::encode_message(&mut self.out, !self.to_server, w.uid, w.cmd, &w.payload)
            .map_err(|_| WriteError::TooLarge)?;
        self.push(output);
        Ok(())
    }

    /// Drop the open message (DC_PLUG_rollback). False if none was open.
    pub fn rollback(&mut self) -> bool {
        self.writing.take().is_some()
    }

    /// Queue bytes that are already encoded messages (a server answering
    /// through [`crate::server::handle_request`]), then move what fits into
    /// `output`.
    pub fn queue_encoded(&mut self, bytes: &[u8], output: &mut Buffer) {
        self.out.extend_from_slice(bytes);
        self.push(output);
    }

    /// The work done after network I/O (and before selecting): flush the
    /// output queue, decode what arrived. Fails once the plug is dead.
    pub fn after_io(&mut self, input: &mut Buffer, output: &mut Buffer) -> Result<(), DecodeError> {
        self.push(output);
        self.pull(input)
    }
}

#[cfg(test)]
mod tests;
