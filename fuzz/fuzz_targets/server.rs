//! The request handler (server::handle_request) over the built-in cache,
//! driven by a decoded request stream: what dc_server does per message.
//!
//! Input: byte 0 picks the cache capacity (1..=256), byte 1 the seconds
//! the clock advances per request, byte 2 the -mintimeout in seconds; the
//! rest is the request stream (decoded as a server decodes it).
//! Checks: no panic; one response per request with the request's uid and
//! operation, decodable as a response; the cache never holds more than its
//! capacity; a GET hit returns exactly the data of the latest accepted ADD
//! of that id (never another session's or an older one's); an accepted ADD
//! with a non-zero timeout is visible at once, a REMOVE that succeeded
//! leaves nothing behind.
#![no_main]

use std::collections::HashMap;

use distcache_rs::proto::{decode_all, parse_add, status, AddParse, Cmd, Direction};
use distcache_rs::server::cache::Cache;
use distcache_rs::server::{handle_request, Policy, SessionCache, Stats};
use fuzzcommon::decode_chunked;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let capacity = data[0] as usize + 1;
    let step_ms = data[1] as u64 * 1000;
    let policy = Policy {
        min_timeout_ms: data[2] as u64 * 1000,
    };
    let (reqs, _) = decode_chunked(Direction::Requests, &data[3..], 0);
    let mut cache = Cache::new(capacity);
    let mut stats = Stats::default();
    let mut latest: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    let mut now = 1_000_000u64;
    for m in &reqs {
        now += step_ms;
        let mut out = Vec::new();
        let msg = distcache_rs::proto::MsgRef {
            is_response: false,
            uid: m.uid,
            cmd: m.cmd,
            level: distcache_rs::proto::PROTO_LEVEL,
            payload: &m.payload,
        };
        let r = handle_request(&mut cache, &policy, &mut stats, now, msg, &mut out);
        if m.cmd == Cmd::Add && m.payload.len() < 8 {
            assert!(r.is_err() && out.is_empty());
            continue;
        }
        assert!(r.is_ok());
        let (resp, used) = decode_all(Direction::Responses, &out).expect("response decodes");
        assert_eq!(used, out.len());
        assert_eq!(resp.len(), 1);
        let resp = &resp[0];
        assert_eq!((resp.uid, resp.cmd), (m.uid, m.cmd));
        assert!(cache.num_items(now) <= capacity);
        match m.cmd {
            Cmd::Add => {
                assert_eq!(resp.payload.len(), 1);
                if resp.payload[0] == status::OK {
                    let AddParse::Ok(req) = parse_add(&m.payload) else {
                        panic!("ADD accepted a payload the parser rejects");
                    };
                    latest.insert(req.id.to_vec(), req.data.to_vec());
                    let timeout = u64::from(req.timeout_ms).max(policy.min_timeout_ms);
                    if timeout > 0 {
                        let mut seen = None;
                        assert!(cache.get_with(now, req.id, &mut |d| seen = Some(d.to_vec())));
                        assert_eq!(seen.as_deref(), Some(req.data));
                    }
                }
            }
            Cmd::Get => {
                if resp.payload != [status::NOTOK] {
                    assert_eq!(
                        Some(&resp.payload),
                        latest.get(&m.payload[..]),
                        "GET hit returned data that is not the latest ADD of this id"
                    );
                }
            }
            Cmd::Remove => {
                assert_eq!(resp.payload.len(), 1);
                assert!(!cache.have(now, &m.payload));
            }
            Cmd::Have => {
                assert_eq!(resp.payload.len(), 1);
                let mut seen = false;
                let hit = cache.get_with(now, &m.payload, &mut |_| seen = true);
                assert_eq!(resp.payload[0] == status::OK, hit);
            }
        }
    }
});
