//! Arbitrary bytes through `AmiCodec` (banner, then messages) in pseudo-random segments,
//! stopping at the first error as `Framed` does, then `decode_eof`; every message through
//! its accessors and `CommandOutput`; every line through `parse_line`/`parse_banner`.
#![no_main]

use bytes::BytesMut;
use dialgate::ami::message::{parse_banner, parse_line, Line};
use dialgate::ami::{AmiCodec, CommandOutput, Frame, Kind, Message};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

fn codec(selector: u8) -> AmiCodec {
    match selector % 4 {
        0 => AmiCodec::default(),
        1 => AmiCodec::new(64, 256),
        2 => AmiCodec::new(16, 4096),
        _ => AmiCodec::new(1, 1),
    }
}

fn check_message(m: &Message) {
    assert!(!m.fields.is_empty(), "empty message");
    for (i, (k, _)) in m.fields.iter().enumerate() {
        assert!(!k.contains(':'), "key {k:?} holds a colon");
        // Lookups on the first fields only: checking them all is quadratic.
        if !k.is_empty() && i < 32 {
            assert!(m.get(k).is_some(), "own key {k:?} not found");
            assert!(!m.get_all(k).is_empty());
        }
    }
    let kind = m.kind();
    assert_eq!(
        m.response().is_some(),
        kind == Kind::Response && m.get("Response").is_some()
    );
    assert_eq!(
        m.event().is_some(),
        kind == Kind::Event && m.get("Event").is_some()
    );
    let _ = (
        m.action_id(),
        m.is_error_response(),
        m.event_list(),
        m.raw_lines(),
    );
    let out = CommandOutput::from_message(m);
    let _ = out.text();
}

fuzz_target!(|data: &[u8]| {
    let (selector, seed, stream) = match data {
        [a, b, rest @ ..] => (*a, *b, rest),
        _ => return,
    };
    for line in stream.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match parse_line(line) {
            Line::Field(k, _) => assert!(!k.is_empty() && !k.contains(':')),
            Line::Raw(_) => {}
        }
        if let Ok(version) = parse_banner(line) {
            assert!(!version.is_empty());
        }
    }
    let mut codec = codec(selector);
    let mut buf = BytesMut::new();
    let mut state = seed as usize;
    let mut offset = 0;
    let mut frames = 0usize;
    let mut banners = 0usize;
    let mut on_frame = |frame: Frame| match frame {
        Frame::Banner(_) => {
            banners += 1;
            assert_eq!(banners, 1, "second banner");
        }
        Frame::Message(m) => check_message(&m),
    };
    while offset < stream.len() {
        state = state.wrapping_mul(1103515245).wrapping_add(12345);
        let len = 1 + (state >> 16) % 64;
        let end = (offset + len).min(stream.len());
        buf.extend_from_slice(&stream[offset..end]);
        offset = end;
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    frames += 1;
                    on_frame(frame);
                }
                Ok(None) => break,
                Err(_) => return,
            }
            assert!(frames <= stream.len(), "more frames than input bytes");
        }
    }
    while let Ok(Some(frame)) = codec.decode_eof(&mut buf) {
        frames += 1;
        on_frame(frame);
        assert!(frames <= stream.len() + 1, "decode_eof does not terminate");
    }
});
