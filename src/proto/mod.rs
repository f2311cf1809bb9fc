//! The distcache wire protocol: frame layout, message (de)fragmentation and
//! the payload formats of the four commands.
//!
//! Everything here is pure: it works on byte slices and never does I/O, so
//! the same code serves DC_PLUG, DC_CTX, DC_SERVER and the tools, and it can
//! be fuzzed on its own. The format itself is described in
//! `tests/vectors/README.md` (14-byte header, 2048-byte frames, at most
//! 32768 bytes per message).

mod frame;
mod payload;

pub use frame::*;
pub use payload::*;
