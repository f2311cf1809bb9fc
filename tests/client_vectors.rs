//! DC_CTX against scripted peers replaying `wire.json` (groups
//! `lib-sequence` and `library-vs-fake-server`).
//!
//! Only `lib_sequence_replays_byte_for_byte` may use the per-process uid
//! counter in this binary (it checks that the counter starts at 1); every
//! other test gives its client a private uid source.

mod client_support;
mod common;

use std::os::raw::c_uint;

use client_support::{cases, parse_api_call, replay_peer, ApiCall};
use common::{unhex, Json};
use distcache_rs::capi::client::*;
use distcache_rs::client::{Client, Config, Error, UidSource};
use distcache_rs::proto::{decode_all, DecodeError, Direction};

/// Expected C API result: ret and, for get, used.
fn parse_result(s: &str) -> (i32, Option<u32>) {
    let mut ret = None;
    let mut used = None;
    for part in s.split_whitespace() {
        if let Some(v) = part.strip_prefix("ret=") {
            ret = Some(v.parse().unwrap());
        } else if let Some(v) = part.strip_prefix("used=") {
            used = Some(v.parse().unwrap());
        }
    }
    (ret.expect("ret= in api_result"), used)
}

struct CallResult {
    ret: i32,
    used: Option<u32>,
    data: Vec<u8>,
}

/// Perform a recorded call through the C API.
fn perform(ctx: *mut DC_CTX, c: &ApiCall) -> CallResult {
    let id = &c.args["id"];
    // SAFETY (all calls below): ctx is a live DC_CTX, the slices outlive
    // the calls and the lengths match.
    unsafe {
        match c.func.as_str() {
            "DC_CTX_add_session" => {
                let d = &c.args["data"];
                let ret = DC_CTX_add_session(
                    ctx,
                    id.as_ptr(),
                    id.len() as c_uint,
                    d.as_ptr(),
                    d.len() as c_uint,
                    c.timeout.unwrap() as _,
                );
                CallResult {
                    ret,
                    used: None,
                    data: vec![],
                }
            }
            "DC_CTX_get_session" => {
                let mut buf = vec![0u8; 40000];
                // The recording started from 0; a failed call leaves it so.
                let mut used: c_uint = 0;
                let ret = DC_CTX_get_session(
                    ctx,
                    id.as_ptr(),
                    id.len() as c_uint,
                    buf.as_mut_ptr(),
                    buf.len() as c_uint,
                    &mut used,
                );
                buf.truncate(used.min(40000) as usize);
                CallResult {
                    ret,
                    used: Some(used),
                    data: buf,
                }
            }
            "DC_CTX_has_session" => CallResult {
                ret: DC_CTX_has_session(ctx, id.as_ptr(), id.len() as c_uint),
                used: None,
                data: vec![],
            },
            "DC_CTX_remove_session" => CallResult {
                ret: DC_CTX_remove_session(ctx, id.as_ptr(), id.len() as c_uint),
                used: None,
                data: vec![],
            },
            f => panic!("unknown api function {f}"),
        }
    }
}

/// After a get hit: reget with a short and a full buffer answers from the
/// previous get without network traffic.
fn check_reget(ctx: *mut DC_CTX, id: &[u8], data: &[u8]) {
    let half = data.len() / 2;
    let mut small = vec![0u8; half];
    let mut used: c_uint = 0;
    // SAFETY: live ctx, valid buffers.
    let r = unsafe {
        DC_CTX_reget_session(
            ctx,
            id.as_ptr(),
            id.len() as c_uint,
            small.as_mut_ptr(),
            half as c_uint,
            &mut used,
        )
    };
    assert_eq!(r, 1);
    assert_eq!(used as usize, data.len());
    assert_eq!(&small[..], &data[..half]);
    let mut full = vec![0u8; data.len()];
    // SAFETY: as above.
    let r = unsafe {
        DC_CTX_reget_session(
            ctx,
            id.as_ptr(),
            id.len() as c_uint,
            full.as_mut_ptr(),
            full.len() as c_uint,
            &mut used,
        )
    };
    assert_eq!(r, 1);
    assert_eq!(&full[..], data);
    // A different id: no.
    // SAFETY: as above.
    let r = unsafe {
        DC_CTX_reget_session(
            ctx,
            b"other".as_ptr(),
            5,
            full.as_mut_ptr(),
            full.len() as c_uint,
            &mut used,
        )
    };
    assert_eq!(r, 0);
}

/// Ids our library refuses locally (the original sent them and the server
/// refused): such calls send nothing but still take a uid.
fn sent_by_us(c: &ApiCall) -> bool {
    let id = &c.args["id"];
    !id.is_empty() && id.len() <= 64
}

#[test]
fn lib_sequence_replays_byte_for_byte() {
    let cs = cases("lib-sequence");
    assert_eq!(cs.len(), 27, "lib-sequence cases");
    let calls: Vec<ApiCall> = cs
        .iter()
        .map(|c| parse_api_call(c.str("api_call").unwrap()))
        .collect();
    let script: Vec<(usize, Vec<u8>)> = cs
        .iter()
        .zip(&calls)
        .filter(|(_, call)| sent_by_us(call))
        .map(|(c, _)| {
            (
                c.str("request_hex").unwrap().len() / 2,
                unhex(c.str("response_hex").unwrap()),
            )
        })
        .collect();
    let peer = replay_peer(script);
    let target = std::ffi::CString::new(peer.addr()).unwrap();
    // The real C entry point, flags 0: one connection per call, uids from
    // the per-process counter, which starts at 1.
    // SAFETY: valid NUL-terminated string.
    let ctx = unsafe { DC_CTX_new(target.as_ptr(), 0) };
    assert!(!ctx.is_null());
    let mut conn = 0;
    for (c, call) in cs.iter().zip(&calls) {
        let name = c.str("name").unwrap();
        let req = unhex(c.str("request_hex").unwrap());
        let uid = match c.get("request_uid") {
            Some(Json::Num(n)) => *n as u32,
            other => panic!("{name}: request_uid {other:?}"),
        };
        let (want_ret, want_used) = parse_result(c.str("api_result").unwrap());
        let got = perform(ctx, call);
        assert_eq!(got.ret, want_ret, "{name}: return value");
        if let Some(u) = want_used {
            assert_eq!(got.used, Some(u), "{name}: result_used");
        }
        if sent_by_us(call) {
            let log = peer.stats.log();
            assert_eq!(log.len(), conn + 1, "{name}: one new connection");
            assert_eq!(log[conn].received, req, "{name}: request bytes (uid {uid})");
            conn += 1;
            if got.ret == 1 && got.used.is_some() {
                // The session data is the recorded answer payload.
                let resp = unhex(c.str("response_hex").unwrap());
                let (msgs, _) = decode_all(Direction::Responses, &resp).unwrap();
                assert_eq!(got.data, msgs[0].payload, "{name}: session data");
                check_reget(ctx, &call.args["id"], &got.data);
            }
        } else {
            assert_eq!(peer.stats.conn_count(), conn, "{name}: refused locally");
        }
    }
    assert_eq!(conn, 26);
    // SAFETY: ctx came from DC_CTX_new.
    unsafe { DC_CTX_free(ctx) };
}

fn private_ctx(addr: &str, first_uid: u32) -> *mut DC_CTX {
    let cfg = Config {
        uids: UidSource::Private(first_uid),
        ..Config::default()
    };
    Box::into_raw(Box::new(Client::with_config(addr, 0, cfg).unwrap()))
}

#[test]
fn library_vs_fake_server() {
    let cs = cases("library-vs-fake-server");
    assert_eq!(cs.len(), 9);
    for c in &cs {
        let name = c.str("name").unwrap();
        let req = unhex(c.str("request_hex").unwrap());
        let uid = u32::from_be_bytes(req[5..9].try_into().unwrap());
        let call = parse_api_call(c.str("api_call").unwrap());
        let recorded = c.str("api_result").unwrap();
        // The original aborted the application on a bad proto level; ours
        // fails the call.
        let (want_ret, want_used) = if recorded.starts_with("process aborted") {
            assert!(recorded.contains("peer's is 00100000"), "{name}");
            (0, None)
        } else {
            parse_result(recorded)
        };
        let peer = replay_peer(vec![(req.len(), unhex(c.str("response_hex").unwrap()))]);
        let ctx = private_ctx(&peer.addr(), uid);
        let got = perform(ctx, &call);
        assert_eq!(got.ret, want_ret, "{name}: return value");
        if let Some(u) = want_used {
            assert_eq!(got.used, Some(u), "{name}: result_used");
        }
        assert_eq!(peer.stats.log()[0].received, req, "{name}: request bytes");
        // SAFETY: ctx came from Box::into_raw of a Client.
        unsafe { DC_CTX_free(ctx) };
    }
}

/// The same scripted answers through the Rust API give precise errors.
#[test]
fn fake_server_errors_are_precise() {
    let cs = cases("library-vs-fake-server");
    for c in &cs {
        let name = c.str("name").unwrap();
        let req = unhex(c.str("request_hex").unwrap());
        let uid = u32::from_be_bytes(req[5..9].try_into().unwrap());
        let call = parse_api_call(c.str("api_call").unwrap());
        let peer = replay_peer(vec![(req.len(), unhex(c.str("response_hex").unwrap()))]);
        let cfg = Config {
            uids: UidSource::Private(uid),
            ..Config::default()
        };
        let cl = Client::with_config(&peer.addr(), 0, cfg).unwrap();
        let id = &call.args["id"];
        let err = if call.func == "DC_CTX_add_session" {
            cl.add(id, &call.args["data"], call.timeout.unwrap()).err()
        } else {
            cl.get(id).err()
        };
        let expect = name.rsplit_once('_').unwrap().0;
        match (expect, err) {
            ("lib_fake_badproto", Some(Error::Protocol(DecodeError::BadLevel(l)))) => {
                assert_eq!(l, 0x0010_0000);
                let msg = Error::Protocol(DecodeError::BadLevel(l)).to_string();
                assert!(msg.contains("my level is 00110000, the peer's is 00100000"));
            }
            ("lib_fake_wronguid", Some(Error::UidMismatch { sent, got })) => {
                assert_eq!((sent, got), (uid, uid + 1000));
            }
            ("lib_fake_isresp0", Some(Error::Protocol(DecodeError::WrongDirection(false)))) => {}
            ("lib_fake_empty", Some(Error::EmptyAnswer)) => {}
            // 00 to a GET is a (1-byte) miss, not an error.
            ("lib_fake_echo_ok", None) => {}
            (e, got) => panic!("{name}: expected {e}, got {got:?}"),
        }
    }
}

#[test]
fn api_call_parser_understands_the_forms() {
    let c = parse_api_call(
        "DC_CTX_add_session(id=\"X\"*3, data=bytes((i*7+0x31)&0xff for i in range(3)), timeout_msecs=5)",
    );
    assert_eq!(c.func, "DC_CTX_add_session");
    assert_eq!(c.args["id"], b"XXX");
    assert_eq!(c.args["data"], vec![0x31, 0x38, 0x3f]);
    assert_eq!(c.timeout, Some(5));
    let c = parse_api_call("DC_CTX_add_session(id=\"a\", data=\"\\x01\", timeout_msecs=1)");
    assert_eq!(c.args["data"], vec![1]);
}
