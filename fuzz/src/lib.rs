//! Helpers shared by the fuzz targets.

use distcache_rs::proto::{Decoder, Direction, Event, Message};

/// The outcome of decoding a whole stream: the messages, and how it ended
/// (`None`: clean, waiting for more; `Some(e)`: rejected).
pub type Decoded = (Vec<Message>, Option<distcache_rs::proto::DecodeError>);

/// Decode `stream` delivered in pieces of `chunk` bytes (0: all at once),
/// keeping undecoded bytes between deliveries as a network reader does.
pub fn decode_chunked(dir: Direction, stream: &[u8], chunk: usize) -> Decoded {
    let mut d = Decoder::new(dir);
    let mut msgs = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let step = if chunk == 0 { stream.len().max(1) } else { chunk };
    for piece in stream.chunks(step) {
        pending.extend_from_slice(piece);
        let mut off = 0;
        loop {
            match d.feed(&pending[off..]) {
                Err(e) => return (msgs, Some(e)),
                Ok(Event::NeedMore) => break,
                Ok(Event::Fragment { consumed }) => {
                    assert!(consumed > 0 && consumed <= pending.len() - off);
                    off += consumed;
                }
                Ok(Event::Message { consumed, msg }) => {
                    assert!(consumed > 0 && consumed <= pending.len() - off);
                    assert!(msg.payload.len() <= distcache_rs::proto::MAX_TOTAL_DATA);
                    msgs.push(msg.to_owned());
                    off += consumed;
                }
            }
        }
        pending.drain(..off);
        // Never more than one partial frame is left waiting.
        assert!(pending.len() < distcache_rs::proto::MAX_FRAME_LEN);
    }
    (msgs, None)
}
