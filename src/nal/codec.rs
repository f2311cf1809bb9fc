//! Big-endian encode/decode helpers (NAL_encode_* / NAL_decode_*).
//!
//! Each function works on a cursor: decoding takes from the front of a
//! `&[u8]` and advances it, encoding writes at the front of a `&mut [u8]`
//! and advances it. On short input or output nothing changes and the
//! result is None / false.

/// Take `n` bytes from the front of `bin`.
fn take<'a>(bin: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if bin.len() < n {
        return None;
    }
    let (head, tail) = bin.split_at(n);
    *bin = tail;
    Some(head)
}

/// Decode a 32-bit big-endian value.
pub fn decode_u32(bin: &mut &[u8]) -> Option<u32> {
    take(bin, 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Decode a 16-bit big-endian value.
pub fn decode_u16(bin: &mut &[u8]) -> Option<u16> {
    take(bin, 2).map(|b| u16::from_be_bytes([b[0], b[1]]))
}

/// Decode one byte.
pub fn decode_u8(bin: &mut &[u8]) -> Option<u8> {
    take(bin, 1).map(|b| b[0])
}

/// Decode `out.len()` raw bytes into `out`.
pub fn decode_bin(bin: &mut &[u8], out: &mut [u8]) -> bool {
    match take(bin, out.len()) {
        Some(b) => {
            out.copy_from_slice(b);
            true
        }
        None => false,
    }
}

/// Write `src` at the front of `out` and advance it.
pub fn encode_bin(out: &mut &mut [u8], src: &[u8]) -> bool {
    if out.len() < src.len() {
        return false;
    }
    let (head, tail) = std::mem::take(out).split_at_mut(src.len());
    head.copy_from_slice(src);
    *out = tail;
    true
}

/// Encode a 32-bit big-endian value.
pub fn encode_u32(out: &mut &mut [u8], v: u32) -> bool {
    encode_bin(out, &v.to_be_bytes())
}

/// Encode a 16-bit big-endian value.
pub fn encode_u16(out: &mut &mut [u8], v: u16) -> bool {
    encode_bin(out, &v.to_be_bytes())
}

/// Encode one byte.
pub fn encode_u8(out: &mut &mut [u8], v: u8) -> bool {
    encode_bin(out, &[v])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let mut store = [0u8; 11];
        let mut out: &mut [u8] = &mut store;
        assert!(encode_u32(&mut out, 0x0102_0304));
        assert!(encode_u16(&mut out, 0xA0B0));
        assert!(encode_u8(&mut out, 7));
        assert!(encode_bin(&mut out, b"xyz"));
        assert_eq!(out.len(), 1);
        assert!(!encode_u16(&mut out, 1));
        assert_eq!(out.len(), 1);
        assert!(encode_bin(&mut out, b""));
        assert_eq!(&store[..10], b"\x01\x02\x03\x04\xA0\xB0\x07xyz");

        let mut bin: &[u8] = &store[..10];
        assert_eq!(decode_u32(&mut bin), Some(0x0102_0304));
        assert_eq!(decode_u16(&mut bin), Some(0xA0B0));
        assert_eq!(decode_u8(&mut bin), Some(7));
        let mut three = [0u8; 3];
        assert!(decode_bin(&mut bin, &mut three));
        assert_eq!(&three, b"xyz");
        assert!(bin.is_empty());
        assert_eq!(decode_u8(&mut bin), None);
    }

    #[test]
    fn short_input_leaves_cursor() {
        let data = [1u8, 2, 3];
        let mut bin: &[u8] = &data;
        assert_eq!(decode_u32(&mut bin), None);
        assert_eq!(bin.len(), 3);
        let mut four = [0u8; 4];
        assert!(!decode_bin(&mut bin, &mut four));
        assert_eq!(four, [0; 4]);
        assert_eq!(decode_u16(&mut bin), Some(0x0102));
        assert_eq!(decode_u16(&mut bin), None);
        assert_eq!(bin, &[3]);
        let mut empty = [0u8; 0];
        let mut out: &mut [u8] = &mut empty;
        assert!(!encode_u8(&mut out, 1));
        assert!(!encode_u32(&mut out, 1));
    }
}
