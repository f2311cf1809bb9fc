//! libnal in safe Rust: addresses, buffers, connections, listeners and
//! selectors.
//!
//! Rust API used by the other layers (DC_PLUG, DC_CTX, DC_SERVER, tools):
//! - [`Address::parse`] then [`Connection::create`]`(&addr, size)` or
//!   [`Listener::create`]`(&addr, size)`;
//! - [`Selector::new`], [`Selector::select`]`(Option<Duration>)`,
//!   [`Selector::num_objects`], [`Selector::reset`];
//! - [`Connection`]: `add_to_selector(&Selector)` once, then after each
//!   select `io()`; buffers through `read_buf()/read_buf_mut()/send_buf()/
//!   send_buf_mut()` (guards that deref to [`Buffer`]) or `buffers_mut()`;
//!   `accept(&mut Listener)`, `create_pair`, `set_size`, `is_established`;
//! - [`set_nagle`]; [`codec`] for big-endian encode/decode.
//!
//! The C types map as NAL_CONNECTION = [`Connection`], NAL_SELECTOR =
//! [`Selector`], NAL_BUFFER = [`Buffer`], NAL_LISTENER = [`Listener`],
//! NAL_ADDRESS = [`NalAddress`].

pub mod address;
pub mod buffer;
pub mod codec;
pub mod connection;
pub mod listener;
pub mod selector;

pub use address::{Address, AddressError};
pub use buffer::Buffer;
pub use connection::{nagle, set_nagle, BufGuard, Buffers, BuffersGuard, Connection};
pub use listener::Listener;
pub use selector::Selector;

use address::{DEFAULT_BUFFER_SIZE, MAX_BUFFER_SIZE};

/// The buffer size a connection gets for a requested `size`: 0, which the
/// original accepts as an address's default size, means
/// [`DEFAULT_BUFFER_SIZE`], so that such a connection can still send and
/// receive (buffers of size 0 could do neither).
pub fn effective_buffer_size(size: usize) -> usize {
    if size == 0 {
        DEFAULT_BUFFER_SIZE
    } else {
        size
    }
}

/// A NAL_ADDRESS: a parsed address (once created) plus the default buffer
/// size of connections made from it or accepted through a listener on it
/// (0..=32768; 0 gives connections [`DEFAULT_BUFFER_SIZE`] bytes, see
/// [`effective_buffer_size`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NalAddress {
    addr: Option<Address>,
    def_buffer_size: usize,
}

impl Default for NalAddress {
    fn default() -> Self {
        NalAddress {
            addr: None,
            def_buffer_size: DEFAULT_BUFFER_SIZE,
        }
    }
}

impl NalAddress {
    pub fn new() -> NalAddress {
        NalAddress::default()
    }

    /// Forget the address (the object can be created again).
    pub fn reset(&mut self) {
        *self = NalAddress::default();
    }

    /// Parse `s` and set the default buffer size (0..=32768). Fails when
    /// already created, on a bad size, or on a bad string.
    pub fn create(&mut self, s: &str, def_buffer_size: usize) -> bool {
        matches!(self.try_create(s, def_buffer_size), Ok(true))
    }

    /// [`create`](Self::create) saying why a string failed to parse:
    /// `Ok(false)` when already created or on a bad size, `Err` on a bad
    /// string.
    pub fn try_create(&mut self, s: &str, def_buffer_size: usize) -> Result<bool, AddressError> {
        if self.addr.is_some() || def_buffer_size > MAX_BUFFER_SIZE {
            return Ok(false);
        }
        let a = Address::parse(s)?;
        self.addr = Some(a);
        self.def_buffer_size = def_buffer_size;
        Ok(true)
    }

    pub fn address(&self) -> Option<&Address> {
        self.addr.as_ref()
    }

    pub fn def_buffer_size(&self) -> usize {
        self.def_buffer_size
    }

    /// Set the default buffer size (0..=32768).
    pub fn set_def_buffer_size(&mut self, size: usize) -> bool {
        if size > MAX_BUFFER_SIZE {
            return false;
        }
        self.def_buffer_size = size;
        true
    }

    pub fn can_connect(&self) -> bool {
        self.addr.as_ref().is_some_and(|a| a.can_connect())
    }

    pub fn can_listen(&self) -> bool {
        self.addr.as_ref().is_some_and(|a| a.can_listen())
    }
}

#[cfg(test)]
mod tests;
