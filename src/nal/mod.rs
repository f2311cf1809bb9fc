//! libnal in safe Rust: addresses, buffers, connections, listeners and
//! selectors.

pub mod address;
pub mod buffer;

pub use address::Address;
pub use buffer::Buffer;
