//! The sessiond datagram parser and handler (distcache_tools::sessiond).
//!
//! Input: a sequence of datagrams, each preceded by a 2-byte big-endian
//! length (the last one takes the rest), handled in turn against one
//! small cache with the clock advancing one second per datagram.
//! Checks: no panic; parse accepts exactly the documented shapes; a GET
//! answer is the 36-byte header (+ value on a hit) with the request's
//! key; a hit returns the value of the latest NEW of that key.
#![no_main]

use std::collections::HashMap;

use distcache_rs::server::cache::Cache;
use distcache_tools::sessiond::{
    handle, parse, Request, SessiondStats, HEADER_LEN, MAX_VALUE, T_ERR, T_OK, VERSION,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut cache = Cache::new(8);
    let mut stats = SessiondStats::default();
    let mut latest: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    let mut reply = Vec::new();
    let mut rest = data;
    let mut now = 1_000u64;
    while !rest.is_empty() {
        let d = if rest.len() >= 2 {
            let n = u16::from_be_bytes([rest[0], rest[1]]) as usize;
            let body = &rest[2..];
            let n = n.min(body.len());
            let (d, r) = body.split_at(n);
            rest = r;
            d
        } else {
            let d = rest;
            rest = &[];
            d
        };
        now += 1000;
        let parsed = parse(d);
        match parsed {
            Ok(Request::New { key, value, .. }) => {
                assert!(d[0] == VERSION && d.len() > HEADER_LEN && d.len() <= HEADER_LEN + MAX_VALUE);
                assert_eq!(key.len(), 32);
                latest.insert(key.to_vec(), value.to_vec());
            }
            Ok(Request::Get { key }) | Ok(Request::Remove { key }) => {
                assert!(d.len() == HEADER_LEN && key.len() == 32);
            }
            Err(_) => {}
        }
        let r = handle(&mut cache, &mut stats, now, d, &mut reply);
        assert_eq!(r.is_err(), parsed.is_err());
        match (parsed, r) {
            (Ok(Request::Get { key }), Ok(true)) => {
                assert!(reply.len() >= HEADER_LEN);
                assert_eq!(reply[0], VERSION);
                assert_eq!(&reply[4..HEADER_LEN], key);
                if reply[1] == T_OK {
                    assert_eq!(
                        Some(&reply[HEADER_LEN..]),
                        latest.get(key).map(|v| &v[..]),
                        "GET returned a value that was never the latest NEW"
                    );
                } else {
                    assert_eq!(reply[1], T_ERR);
                    assert_eq!(reply.len(), HEADER_LEN);
                }
            }
            (Ok(Request::Get { .. }), other) => panic!("GET not answered: {other:?}"),
            (Ok(_), Ok(answered)) => assert!(!answered),
            (Err(_), _) => {}
            (Ok(_), Err(e)) => panic!("parsed but handler refused: {e}"),
        }
    }
});
