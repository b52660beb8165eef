//! Framing of the AGI byte stream: the environment block first, then replies and
//! unsolicited `HANGUP` lines. Lines may arrive split over any number of TCP segments.

use bytes::{BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::lines::LineSplitter;

use super::{env::AgiEnv, reply::parse_reply_line, Command, ProtocolError, Reply};

/// Longest line accepted from Asterisk, environment or reply.
pub const DEFAULT_MAX_LINE: usize = 8 * 1024;
/// Largest environment block accepted (a real one is about 600 bytes plus arguments).
pub const DEFAULT_MAX_ENV: usize = 64 * 1024;
/// Most continuation lines accepted in one `520-` usage reply.
pub const MAX_USAGE_LINES: usize = 256;
const USAGE_END: &[u8] = b"520 End of proper usage.";

/// What the server reads from Asterisk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Env(AgiEnv),
    Reply(Reply),
    /// The caller hung up (sent unsolicited, not a reply).
    Hangup,
}

#[derive(Debug)]
enum State {
    Env { env: AgiEnv, bytes: usize },
    Replies { usage: Option<Vec<String>> },
}

#[derive(Debug)]
pub struct AgiCodec {
    lines: LineSplitter,
    max_env: usize,
    state: State,
}

impl Default for AgiCodec {
    fn default() -> Self {
        AgiCodec::new(DEFAULT_MAX_LINE, DEFAULT_MAX_ENV)
    }
}

impl AgiCodec {
    pub fn new(max_line: usize, max_env: usize) -> AgiCodec {
        AgiCodec {
            lines: LineSplitter::new(max_line),
            max_env,
            state: State::Env {
                env: AgiEnv::default(),
                bytes: 0,
            },
        }
    }

    /// Whether the environment block has been fully received.
    pub fn in_environment(&self) -> bool {
        matches!(self.state, State::Env { .. })
    }
}

impl Decoder for AgiCodec {
    type Item = Frame;
    type Error = ProtocolError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
        while let Some(line) = self
            .lines
            .next_line(buf)
            .map_err(|e| ProtocolError::LineTooLong { limit: e.limit })?
        {
            match &mut self.state {
                State::Env { env, bytes } => {
                    if line.is_empty() {
                        let mut env = std::mem::take(env);
                        env.shrink_to_fit();
                        self.state = State::Replies { usage: None };
                        return Ok(Some(Frame::Env(env)));
                    }
                    *bytes += line.len() + 1;
                    if *bytes > self.max_env {
                        return Err(ProtocolError::EnvTooLarge {
                            limit: self.max_env,
                        });
                    }
                    env.push_line(&line)?;
                }
                State::Replies { usage: Some(usage) } => {
                    // Asterisk 1.8/11 print the usage without a final newline, so the end
                    // marker can be glued to the last usage line.
                    let glued = line
                        .strip_suffix(USAGE_END)
                        .filter(|text| !text.is_empty() && !line.starts_with(b"520 "));
                    if let Some(text) = glued {
                        usage.push(String::from_utf8_lossy(text).into_owned());
                    }
                    if line.starts_with(b"520 ") || glued.is_some() {
                        let usage = std::mem::take(usage);
                        self.state = State::Replies { usage: None };
                        return Ok(Some(Frame::Reply(Reply::Usage(usage))));
                    }
                    if usage.len() >= MAX_USAGE_LINES {
                        return Err(ProtocolError::UsageTooLong {
                            limit: MAX_USAGE_LINES,
                        });
                    }
                    // Usage text may hold raw XML markup and invalid UTF-8.
                    usage.push(String::from_utf8_lossy(&line).into_owned());
                }
                State::Replies { usage } => {
                    if &line[..] == b"HANGUP" {
                        return Ok(Some(Frame::Hangup));
                    }
                    if line.starts_with(b"520-") {
                        *usage = Some(Vec::new());
                        continue;
                    }
                    return parse_reply_line(&line).map(|reply| Some(Frame::Reply(reply)));
                }
            }
        }
        Ok(None)
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
        if let Some(frame) = self.decode(buf)? {
            return Ok(Some(frame));
        }
        match &self.state {
            State::Env { env, .. } => Err(ProtocolError::TruncatedEnv {
                lines: env.entries().count(),
            }),
            _ if !buf.is_empty() => Err(ProtocolError::TruncatedLine),
            State::Replies { usage: Some(_) } => Err(ProtocolError::TruncatedLine),
            State::Replies { usage: None } => Ok(None),
        }
    }
}

impl Encoder<&Command> for AgiCodec {
    type Error = ProtocolError;

    /// Checks the whole command before writing a byte of it.
    fn encode(&mut self, command: &Command, buf: &mut BytesMut) -> Result<(), ProtocolError> {
        let line = command.to_line()?;
        buf.reserve(line.len() + 1);
        buf.put_slice(line.as_bytes());
        buf.put_u8(b'\n');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(codec: &mut AgiCodec, input: &[u8]) -> Result<Vec<Frame>, ProtocolError> {
        crate::lines::decode_bytewise(codec, input)
    }

    #[test]
    fn env_then_replies_hangup_and_multiline_usage() {
        let input = b"agi_network: yes\r\nagi_channel: SIP/a-1\n\n200 result=1\nHANGUP\n\
520-Invalid command syntax.  Proper usage follows:\nUsage: STREAM FILE <x>\n\xff<para>\n\
520 End of proper usage.\n511 Command Not Permitted on a dead channel\n";
        let frames = decode_all(&mut AgiCodec::default(), input).unwrap();
        assert_eq!(frames.len(), 5);
        let Frame::Env(env) = &frames[0] else {
            panic!()
        };
        assert!(env.network());
        assert_eq!(env.channel().as_deref(), Some("SIP/a-1"));
        assert_eq!(frames[2], Frame::Hangup);
        let Frame::Reply(Reply::Usage(lines)) = &frames[3] else {
            panic!("{:?}", frames[3])
        };
        assert_eq!(lines, &["Usage: STREAM FILE <x>", "\u{fffd}<para>"]);
        assert_eq!(frames[4], Frame::Reply(Reply::DeadChannel));
    }

    #[test]
    fn usage_end_marker_glued_to_the_last_line_as_asterisk_11_sends_it() {
        let input = b"agi_network: yes\n\n520-Invalid command syntax.  Proper usage follows:\n\
 Usage: WAIT FOR DIGIT <timeout>\n Waits up to 'timeout' milliseconds.520 End of proper usage.\n\
200 result=0\n";
        let frames = decode_all(&mut AgiCodec::default(), input).unwrap();
        assert_eq!(
            frames[1..],
            [
                Frame::Reply(Reply::Usage(vec![
                    "Usage: WAIT FOR DIGIT <timeout>".into(),
                    " Waits up to 'timeout' milliseconds.".into()
                ])),
                Frame::Reply(Reply::Success(crate::agi::Response {
                    result: "0".into(),
                    ..Default::default()
                }))
            ]
        );
    }

    #[test]
    fn limits() {
        let long = vec![b'a'; 9000];
        assert!(matches!(
            decode_all(&mut AgiCodec::default(), &long),
            Err(ProtocolError::LineTooLong { .. })
        ));
        let endless: Vec<u8> = b"agi_x: 1234567890\n".repeat(5000);
        assert!(matches!(
            decode_all(&mut AgiCodec::default(), &endless),
            Err(ProtocolError::EnvTooLarge { .. })
        ));
        assert!(matches!(
            decode_all(&mut AgiCodec::default(), b"agi_network: yes\n"),
            Err(ProtocolError::TruncatedEnv { lines: 1 })
        ));
    }

    #[test]
    fn encoder_refuses_unsafe_command_without_writing() {
        let mut buf = BytesMut::new();
        let bad = Command::set_variable("X", "a\nEXEC System id");
        assert!(AgiCodec::default().encode(&bad, &mut buf).is_err());
        assert!(buf.is_empty());
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode_all(&mut AgiCodec::default(), &bytes);
            let mut after_env = b"agi_network: yes\n\n".to_vec();
            after_env.extend_from_slice(&bytes);
            let _ = decode_all(&mut AgiCodec::default(), &after_env);
        }
    }
}
