//! Frame decoder (proto::Decoder) in every direction, whole and chunked.
//!
//! Input: byte 0 picks the delivery chunk size (0 = the whole stream at
//! once), the rest is the byte stream.
//! Checks: no panic; chunked delivery gives exactly the same messages and
//! the same verdict as whole delivery; a decoded message re-encodes and
//! decodes to itself; Direction::Any accepts a superset of the other two.
#![no_main]

use distcache_rs::proto::{decode_all, Direction};
use fuzzcommon::decode_chunked;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&c, stream)) = data.split_first() else {
        return;
    };
    for dir in [Direction::Requests, Direction::Responses, Direction::Any] {
        let whole = decode_chunked(dir, stream, 0);
        let chunked = decode_chunked(dir, stream, c as usize);
        assert_eq!(whole, chunked, "chunk size {c} changes the result ({dir:?})");
        // Byte by byte costs a decoder call per byte: only for inputs
        // of up to two frames (the chunked run covers the rest).
        if stream.len() <= 2 * distcache_rs::proto::MAX_FRAME_LEN {
            let bytewise = decode_chunked(dir, stream, 1);
            assert_eq!(whole, bytewise, "byte-by-byte delivery changes the result ({dir:?})");
        }
        for m in &whole.0 {
            match dir {
                Direction::Requests => assert!(!m.is_response),
                Direction::Responses => assert!(m.is_response),
                Direction::Any => {}
            }
            let mut enc = Vec::new();
            m.encode(&mut enc).expect("a decoded message always re-encodes");
            let (again, used) = decode_all(dir, &enc).expect("re-encoded message decodes");
            assert_eq!(used, enc.len());
            assert_eq!(again, vec![m.clone()]);
        }
        if dir != Direction::Any {
            // Whatever one direction accepts, the monitor accepts too.
            let any = decode_chunked(Direction::Any, stream, 0);
            assert!(any.0.len() >= whole.0.len());
            assert_eq!(&any.0[..whole.0.len()], &whole.0[..]);
        }
    }
});
