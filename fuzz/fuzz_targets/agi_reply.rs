//! `parse_reply_line` on arbitrary bytes, then the same bytes as the reply stream after
//! a fixed, valid environment block (one line per segment, then whole).
#![no_main]

use bytes::BytesMut;
use dialgate::agi::reply::parse_reply_line;
use dialgate::agi::{AgiCodec, Frame, Reply};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

const ENV: &[u8] = b"agi_network: yes\n\
agi_network_script: verify\n\
agi_request: agi://127.0.0.1/verify\n\
agi_channel: PJSIP/carrier-0000002a\n\
agi_language: en\n\
agi_type: PJSIP\n\
agi_uniqueid: 1795301234.42\n\
agi_version: 20.11.0\n\
agi_callerid: +8613800138000\n\
agi_calleridname: unknown\n\
agi_callingpres: 0\n\
agi_context: dialgate-verify\n\
agi_extension: s\n\
agi_priority: 1\n\
agi_enhanced: 0.0\n\
agi_accountcode: \n\
agi_threadid: 140234871391808\n\
\n";

fn check_reply(reply: &Reply) {
    let code = reply.code();
    assert!((100..=999).contains(&code), "code {code} out of range");
    // Exercise the accessors and Display as the server does.
    let _ = reply.to_string();
    if let Reply::Success(r) = reply {
        let _ = (
            r.result_int(),
            r.is_failure(),
            r.timed_out(),
            r.attribute("endpos"),
        );
    }
}

fn run_stream(stream: &[u8], per_line: bool) {
    let mut codec = AgiCodec::default();
    let mut buf = BytesMut::from(ENV);
    match codec.decode(&mut buf) {
        Ok(Some(Frame::Env(env))) => assert_eq!(env.script_path(), "verify"),
        other => panic!("fixed env block not decoded: {other:?}"),
    }
    assert!(!codec.in_environment());
    let segments: Vec<&[u8]> = if per_line {
        stream.split_inclusive(|&b| b == b'\n').collect()
    } else {
        vec![stream]
    };
    for segment in segments {
        buf.extend_from_slice(segment);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(Frame::Reply(reply))) => check_reply(&reply),
                Ok(Some(Frame::Hangup)) => {}
                Ok(Some(Frame::Env(_))) => panic!("second environment after the first"),
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    while let Ok(Some(_)) = codec.decode_eof(&mut buf) {}
}

fuzz_target!(|data: &[u8]| {
    if let Ok(reply) = parse_reply_line(data) {
        check_reply(&reply);
        // Parsing is a pure function of the bytes.
        assert_eq!(parse_reply_line(data).ok(), Some(reply));
    }
    run_stream(data, true);
    run_stream(data, false);
});
