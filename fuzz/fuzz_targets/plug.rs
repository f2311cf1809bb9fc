//! The plug reader (plug::PlugCore) fed arbitrary bytes through a
//! connection-sized read buffer, in chunks, answering every message.
//!
//! Input: byte 0 bit 0 picks the side (1: client side, reads responses;
//! 0: server side, reads requests), bits 1-3 the connection buffer size,
//! byte 1 the delivery chunk size (0 = as much as fits); the rest is the
//! stream from the peer.
//! Checks: no panic, no endless loop; the messages read are exactly those
//! the decoder finds in the whole stream (only a prefix when the stream
//! is corrupt: a plug drops its queue when it dies); a corrupt stream
//! kills the plug with the decoder's error; everything written decodes
//! back to what was written.
#![no_main]

use distcache_rs::nal::Buffer;
use distcache_rs::plug::PlugCore;
use distcache_rs::proto::{decode_all, Direction, Message};
use fuzzcommon::decode_chunked;
use libfuzzer_sys::fuzz_target;

const SIZES: [usize; 8] = [1, 13, 14, 100, 2048, 2062, 4096, 32768];

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let to_server = data[0] & 1 == 1;
    let bufsize = SIZES[((data[0] >> 1) & 7) as usize];
    let chunk = if data[1] == 0 { usize::MAX } else { data[1] as usize };
    let stream = &data[2..];
    let dir = if to_server {
        Direction::Responses
    } else {
        Direction::Requests
    };
    let (expected, verdict) = decode_chunked(dir, stream, 0);

    let mut core = PlugCore::new(to_server);
    let mut rd = Buffer::with_size(bufsize).unwrap();
    let mut sd = Buffer::with_size(bufsize).unwrap();
    let mut wire_out: Vec<u8> = Vec::new();
    let mut written: Vec<Message> = Vec::new();
    let mut got: Vec<Message> = Vec::new();
    let mut off = 0;
    let mut rounds = 0usize;
    loop {
        rounds += 1;
        assert!(rounds < 4 * stream.len() + 64, "plug makes no progress");
        let end = off + chunk.min(stream.len() - off);
        let n = rd.write(&stream[off..end]);
        off += n;
        let alive = core.after_io(&mut rd, &mut sd).is_ok();
        while let Some(m) = core.read(&mut rd, false) {
            let m = Message {
                is_response: to_server,
                uid: m.uid,
                cmd: m.cmd,
                payload: m.payload.to_vec(),
            };
            // Reading again without resume fails; with resume gives the same.
            assert!(core.read(&mut rd, false).is_none());
            let again = core.read(&mut rd, true).expect("resume re-opens");
            assert_eq!((again.uid, again.cmd, again.payload), (m.uid, m.cmd, &m.payload[..]));
            assert!(core.consume());
            assert!(!core.consume());
            // Answer (or ask) with a message derived from the one read.
            let keep = m.payload.len().min(3000);
            core.write(false, m.uid, m.cmd, &m.payload[..keep]).unwrap();
            core.write_more(&m.payload[..keep.min(7)]).unwrap();
            core.commit(&mut sd).unwrap();
            let mut p = m.payload[..keep].to_vec();
            p.extend_from_slice(&m.payload[..keep.min(7)]);
            written.push(Message {
                is_response: !to_server,
                uid: m.uid,
                cmd: m.cmd,
                payload: p,
            });
            got.push(m);
            // The network drains the send buffer.
            wire_out.extend_from_slice(sd.data());
            sd.clear();
            core.push(&mut sd);
        }
        wire_out.extend_from_slice(sd.data());
        sd.clear();
        core.push(&mut sd);
        if !alive {
            break;
        }
        if off == stream.len() && n == 0 && rd.is_empty() {
            break;
        }
    }
    while core.pending_output() > 0 || !sd.is_empty() {
        wire_out.extend_from_slice(sd.data());
        sd.clear();
        core.push(&mut sd);
    }
    match verdict {
        None => {
            assert_eq!(got, expected);
            assert!(core.is_alive());
        }
        Some(e) => {
            assert!(got.len() <= expected.len());
            assert_eq!(&got[..], &expected[..got.len()]);
            assert_eq!(core.error(), Some(e));
            assert!(core.read(&mut rd, false).is_none());
        }
    }
    let out_dir = if to_server {
        Direction::Requests
    } else {
        Direction::Responses
    };
    let (back, used) = decode_all(out_dir, &wire_out).expect("our own output decodes");
    assert_eq!(used, wire_out.len());
    assert_eq!(back, written);
});
