//! The ADD payload parser (proto::parse_add).
//!
//! Input: an ADD request payload.
//! Checks: no panic; an accepted payload has a timeout of at most 7 days,
//! an id of 1..=64 bytes and 1..=32768 data bytes, and re-encodes to the
//! same bytes; a refusal is one of the documented status codes, and only
//! payloads under 8 bytes are fatal.
#![no_main]

use distcache_rs::proto::{encode_add, parse_add, status, AddParse, MAX_EXPIRY_MS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_add(data) {
        AddParse::Fatal => assert!(data.len() < 8),
        AddParse::Reject(code) => {
            assert!(data.len() >= 8);
            assert!(matches!(
                code,
                status::ADD_CORRUPT
                    | status::ADD_TIMEOUT_RANGE
                    | status::ADD_ID_RANGE
                    | status::ADD_DATA_RANGE
            ));
        }
        AddParse::Ok(req) => {
            assert!(u64::from(req.timeout_ms) <= MAX_EXPIRY_MS);
            assert!((1..=64).contains(&req.id.len()));
            assert!((1..=32768).contains(&req.data.len()));
            let mut enc = Vec::new();
            encode_add(&mut enc, req.timeout_ms, req.id, req.data);
            assert_eq!(enc, data);
        }
    }
});
