//! Arbitrary bytes through `AgiCodec`, split into arbitrary segments, the way a
//! `Framed` reader would drive it: decode until `None` after each segment, stop at the
//! first error, then `decode_eof` at the end of the stream.
#![no_main]

use bytes::BytesMut;
use dialgate::agi::AgiCodec;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

/// Small limits too, so the line/env/usage limit paths are reached by short inputs.
fn codec(selector: u8) -> AgiCodec {
    match selector % 4 {
        0 => AgiCodec::default(),
        1 => AgiCodec::new(64, 256),
        2 => AgiCodec::new(16, 4096),
        _ => AgiCodec::new(1, 1),
    }
}

fuzz_target!(|data: &[u8]| {
    // Byte 0 picks the limits, byte 1 seeds the segment sizes (1..=64), the rest is the stream.
    let (selector, seed, stream) = match data {
        [a, b, rest @ ..] => (*a, *b, rest),
        _ => return,
    };
    let mut codec = codec(selector);
    let mut buf = BytesMut::new();
    let mut state = seed as usize;
    let mut offset = 0;
    let mut frames = 0usize;
    while offset < stream.len() {
        state = state.wrapping_mul(1103515245).wrapping_add(12345);
        let len = 1 + (state >> 16) % 64;
        let end = (offset + len).min(stream.len());
        buf.extend_from_slice(&stream[offset..end]);
        offset = end;
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(_)) => frames += 1,
                Ok(None) => break,
                Err(_) => return,
            }
            assert!(frames <= stream.len(), "more frames than input bytes");
        }
    }
    while let Ok(Some(_)) = codec.decode_eof(&mut buf) {
        frames += 1;
        assert!(frames <= stream.len() + 1, "decode_eof does not terminate");
    }
});
