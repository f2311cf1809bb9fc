//! A fixed-capacity byte FIFO (NAL_BUFFER): data always starts at offset 0,
//! writes append after it, reads take from the front.

use super::address::MAX_BUFFER_SIZE;

/// A fixed-capacity byte FIFO.
#[derive(Debug, Default, Clone)]
pub struct Buffer {
    /// Storage; its length is the buffer's size.
    store: Box<[u8]>,
    /// Bytes of data held, at the front of `store`.
    used: usize,
}

impl Buffer {
    /// An empty buffer of size 0 (NAL_BUFFER_new); call [`Buffer::set_size`].
    pub fn new() -> Self {
        Buffer::default()
    }

    /// A buffer of `size` bytes.
    pub fn with_size(size: usize) -> Option<Self> {
        let mut b = Buffer::new();
        if b.set_size(size) {
            Some(b)
        } else {
            None
        }
    }

    /// Resize to `size` bytes (0..=32768), as the original's
    /// NAL_BUFFER_set_size: the data is kept when it fits and dropped
    /// (the buffer then holds nothing) when `size` is smaller than the data
    /// held. A size of 0 gives a buffer that is empty and full at once.
    /// Fails, changing nothing, only when `size` is over 32768.
    pub fn set_size(&mut self, size: usize) -> bool {
        if size > MAX_BUFFER_SIZE {
            return false;
        }
        if size < self.used {
            self.used = 0;
        }
        if size != self.store.len() {
            let mut s = vec![0u8; size].into_boxed_slice();
            s[..self.used].copy_from_slice(&self.store[..self.used]);
            self.store = s;
        }
        true
    }

    /// Drop all data (the size is kept).
    pub fn clear(&mut self) {
        self.used = 0;
    }

    pub fn size(&self) -> usize {
        self.store.len()
    }
    pub fn used(&self) -> usize {
        self.used
    }
    pub fn unused(&self) -> usize {
        self.store.len() - self.used
    }
    pub fn is_empty(&self) -> bool {
        self.used == 0
    }
    pub fn is_full(&self) -> bool {
        self.used == self.store.len()
    }

    /// The data held.
    pub fn data(&self) -> &[u8] {
        &self.store[..self.used]
    }

    /// Append as much of `src` as fits; returns the number of bytes taken.
    pub fn write(&mut self, src: &[u8]) -> usize {
        let n = src.len().min(self.unused());
        self.store[self.used..self.used + n].copy_from_slice(&src[..n]);
        self.used += n;
        n
    }

    /// Move as much data as fits into `dst` from the front; returns the count.
    pub fn read(&mut self, dst: &mut [u8]) -> usize {
        let n = dst.len().min(self.used);
        dst[..n].copy_from_slice(&self.store[..n]);
        self.consume(n);
        n
    }

    /// Drop `n` bytes (at most all of them) from the front.
    pub fn consume(&mut self, n: usize) -> usize {
        let n = n.min(self.used);
        self.store.copy_within(n..self.used, 0);
        self.used -= n;
        n
    }

    /// Move up to `max` bytes from the front of `src` to the end of `self`
    /// (`usize::MAX` for as much as fits; the C entry point maps its
    /// `max == 0` to that).
    pub fn transfer_from(&mut self, src: &mut Buffer, max: usize) -> usize {
        let n = max.min(src.used).min(self.unused());
        self.store[self.used..self.used + n].copy_from_slice(&src.store[..n]);
        self.used += n;
        src.consume(n);
        n
    }

    /// The free space after the data, for direct writes (e.g. `read(2)`);
    /// follow with [`Buffer::wrote`].
    pub fn spare_mut(&mut self) -> &mut [u8] {
        let used = self.used;
        &mut self.store[used..]
    }

    /// Pointer to the first free byte (NAL_BUFFER_write_ptr).
    pub fn write_ptr(&mut self) -> *mut u8 {
        let used = self.used;
        // A pointer one past the data; valid (possibly one-past-the-end) even
        // when the buffer is full.
        self.store[used..].as_mut_ptr()
    }

    /// Mark `n` more bytes as data after a direct write (at most the free
    /// space; larger values are clamped).
    pub fn wrote(&mut self, n: usize) -> usize {
        let n = n.min(self.unused());
        self.used += n;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo() {
        let mut b = Buffer::with_size(8).unwrap();
        assert!(b.is_empty() && !b.is_full());
        assert_eq!(b.write(b"hello world"), 8);
        assert!(b.is_full());
        assert_eq!(b.data(), b"hello wo");
        let mut out = [0u8; 3];
        assert_eq!(b.read(&mut out), 3);
        assert_eq!(&out, b"hel");
        assert_eq!(b.data(), b"lo wo");
        assert_eq!(b.unused(), 3);
        b.spare_mut()[..2].copy_from_slice(b"XY");
        assert_eq!(b.wrote(2), 2);
        assert_eq!(b.data(), b"lo woXY");
        assert_eq!(b.wrote(100), 1);
        assert!(b.is_full());
    }

    #[test]
    fn sizes() {
        let mut b = Buffer::new();
        assert_eq!(b.size(), 0);
        assert!(b.is_full() && b.is_empty());
        assert!(b.set_size(0));
        assert_eq!(b.size(), 0);
        assert!(!b.set_size(MAX_BUFFER_SIZE + 1));
        assert!(b.set_size(MAX_BUFFER_SIZE));
        b.write(b"abcdef");
        assert!(!b.set_size(MAX_BUFFER_SIZE + 1));
        assert_eq!((b.size(), b.data()), (MAX_BUFFER_SIZE, &b"abcdef"[..]));
        // Shrinking to what the data still fits in keeps it.
        assert!(b.set_size(6));
        assert_eq!(b.data(), b"abcdef");
        // Shrinking below the data held drops it, as the original does.
        assert!(b.set_size(5));
        assert_eq!((b.size(), b.used()), (5, 0));
        b.write(b"xy");
        assert!(b.set_size(0));
        assert!(b.is_empty() && b.is_full());
        assert_eq!(b.write(b"z"), 0);
    }

    #[test]
    fn transfer() {
        let mut a = Buffer::with_size(4).unwrap();
        let mut b = Buffer::with_size(10).unwrap();
        b.write(b"0123456789");
        assert_eq!(a.transfer_from(&mut b, 100), 4);
        assert_eq!(a.data(), b"0123");
        assert_eq!(b.data(), b"456789");
        a.clear();
        assert_eq!(a.transfer_from(&mut b, 2), 2);
        assert_eq!(b.data(), b"6789");
    }
}
