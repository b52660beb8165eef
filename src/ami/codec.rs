//! Framing of the AMI byte stream: the banner line first, then messages ended by an
//! empty line. Lines may arrive split over any number of TCP segments.

use bytes::{BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::lines::LineSplitter;

use super::{
    message::{parse_banner, parse_line, Line},
    Action, Message, ProtocolError,
};

/// Longest line accepted from Asterisk.
pub const DEFAULT_MAX_LINE: usize = 8 * 1024;
/// Largest message accepted (a long `Command` output or a busy `CoreShowChannels` item
/// is a few KiB).
pub const DEFAULT_MAX_MESSAGE: usize = 256 * 1024;
/// Marks the end of the raw text of an Asterisk <= 13 `Command` reply.
const END_COMMAND: &[u8] = b"--END COMMAND--";

/// What the client reads from Asterisk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The version from `Asterisk Call Manager/<version>`.
    Banner(String),
    Message(Message),
}

/// Where we are inside a `Response: Follows` (Asterisk <= 13 `Command`) reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Follows {
    No,
    /// After `Response: Follows`: `Privilege` and `ActionID` fields may still come.
    Header,
    /// Raw CLI text, empty lines included, up to `--END COMMAND--`.
    Raw,
    /// After `--END COMMAND--`: the empty line ends the message.
    Ended,
}

#[derive(Debug)]
pub struct AmiCodec {
    lines: LineSplitter,
    max_message: usize,
    banner_seen: bool,
    fields: Vec<(String, String)>,
    bytes: usize,
    follows: Follows,
}

impl Default for AmiCodec {
    fn default() -> Self {
        AmiCodec::new(DEFAULT_MAX_LINE, DEFAULT_MAX_MESSAGE)
    }
}

impl AmiCodec {
    pub fn new(max_line: usize, max_message: usize) -> AmiCodec {
        AmiCodec {
            lines: LineSplitter::new(max_line),
            max_message,
            banner_seen: false,
            fields: Vec::new(),
            bytes: 0,
            follows: Follows::No,
        }
    }

    fn finish(&mut self) -> Frame {
        self.bytes = 0;
        self.follows = Follows::No;
        Frame::Message(Message::new(std::mem::take(&mut self.fields)))
    }

    fn push_raw(&mut self, line: &[u8]) {
        self.fields
            .push((String::new(), String::from_utf8_lossy(line).into_owned()));
    }

    /// Raw CLI text of a `Response: Follows` reply; `--END COMMAND--` may be glued to
    /// the last line when the output did not end with a newline.
    fn follows_raw(&mut self, line: &[u8]) {
        self.follows = Follows::Raw;
        if let Some(text) = line.strip_suffix(END_COMMAND) {
            if !text.is_empty() {
                self.push_raw(text);
            }
            self.follows = Follows::Ended;
        } else {
            self.push_raw(line);
        }
    }
}

impl Decoder for AmiCodec {
    type Item = Frame;
    type Error = ProtocolError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
        while let Some(line) = self
            .lines
            .next_line(buf)
            .map_err(|e| ProtocolError::LineTooLong { limit: e.limit })?
        {
            if !self.banner_seen {
                if line.is_empty() {
                    continue;
                }
                let version = parse_banner(&line)?;
                self.banner_seen = true;
                return Ok(Some(Frame::Banner(version)));
            }
            self.bytes += line.len() + 2;
            if self.bytes > self.max_message {
                return Err(ProtocolError::MessageTooLarge {
                    limit: self.max_message,
                });
            }
            match self.follows {
                Follows::Raw => {
                    self.follows_raw(&line);
                    continue;
                }
                Follows::Header => match parse_line(&line) {
                    Line::Field(k, v)
                        if k.eq_ignore_ascii_case("ActionID")
                            || k.eq_ignore_ascii_case("Privilege") =>
                    {
                        self.fields.push((k, v));
                        continue;
                    }
                    _ => {
                        self.follows_raw(&line);
                        continue;
                    }
                },
                Follows::No | Follows::Ended => {}
            }
            if line.is_empty() {
                if self.fields.is_empty() {
                    // A stray empty line between messages.
                    self.bytes = 0;
                    continue;
                }
                return Ok(Some(self.finish()));
            }
            match parse_line(&line) {
                Line::Field(k, v) => {
                    let follows = self.fields.is_empty()
                        && k.eq_ignore_ascii_case("Response")
                        && v.eq_ignore_ascii_case("Follows");
                    self.fields.push((k, v));
                    if follows {
                        self.follows = Follows::Header;
                    }
                }
                Line::Raw(text) if self.fields.is_empty() => {
                    return Err(ProtocolError::MalformedLine(text));
                }
                Line::Raw(text) => self.fields.push((String::new(), text)),
            }
        }
        Ok(None)
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
        if let Some(frame) = self.decode(buf)? {
            return Ok(Some(frame));
        }
        if !buf.is_empty() || !self.fields.is_empty() {
            buf.clear();
            self.fields.clear();
            return Err(ProtocolError::Truncated);
        }
        Ok(None)
    }
}

impl Encoder<&Action> for AmiCodec {
    type Error = ProtocolError;

    /// Checks the whole action before writing a byte of it.
    fn encode(&mut self, action: &Action, buf: &mut BytesMut) -> Result<(), ProtocolError> {
        action.validate()?;
        for (key, value) in action.lines() {
            buf.reserve(key.len() + value.len() + 4);
            buf.put_slice(key.as_bytes());
            buf.put_slice(b": ");
            buf.put_slice(value.as_bytes());
            buf.put_slice(b"\r\n");
        }
        buf.put_slice(b"\r\n");
        Ok(())
    }
}

impl Encoder<Action> for AmiCodec {
    type Error = ProtocolError;

    fn encode(&mut self, action: Action, buf: &mut BytesMut) -> Result<(), ProtocolError> {
        self.encode(&action, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(codec: &mut AmiCodec, input: &[u8]) -> Result<Vec<Frame>, ProtocolError> {
        crate::lines::decode_bytewise(codec, input)
    }

    fn messages(input: &[u8]) -> Vec<Message> {
        decode_all(&mut AmiCodec::default(), input)
            .unwrap()
            .into_iter()
            .filter_map(|f| match f {
                Frame::Message(m) => Some(m),
                Frame::Banner(_) => None,
            })
            .collect()
    }

    #[test]
    fn banner_then_messages_with_quirks() {
        let input = b"Asterisk Call Manager/5.0.2\r\n\
Response: Success\r\nActionID: 1\r\nMessage: Authentication accepted\r\n\r\n\
Event: CoreShowChannelsComplete\r\nActionID: 2\r\nEventList: Complete\r\nListItems: 0\r\n\n\
Event: RTCPReceived\r\nFrom 192.168.0.1:1234\r\nSSRC: 0x1\r\n\r\n";
        let frames = decode_all(&mut AmiCodec::default(), input).unwrap();
        assert_eq!(frames[0], Frame::Banner("5.0.2".into()));
        assert_eq!(frames.len(), 4);
        let Frame::Message(complete) = &frames[2] else {
            panic!()
        };
        assert_eq!(complete.event_list(), Some("Complete"));
        assert_eq!(complete.get("listitems"), Some("0"));
        let Frame::Message(rtcp) = &frames[3] else {
            panic!()
        };
        assert_eq!(rtcp.raw_lines(), ["From 192.168.0.1:1234"]);
        assert_eq!(rtcp.get("SSRC"), Some("0x1"));
    }

    #[test]
    fn old_command_output_keeps_empty_and_colon_lines() {
        let input = b"Asterisk Call Manager/1.1\r\n\
Response: Follows\r\nPrivilege: Command\r\nActionID: 9\r\n\
Name: one\n\nlast--END COMMAND--\r\n\r\n\
Response: Follows\r\nPrivilege: Command\r\nActionID: 10\r\nx\n--END COMMAND--\r\n\r\n";
        let m = messages(input);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].action_id(), Some("9"));
        assert_eq!(
            crate::ami::CommandOutput::from_message(&m[0]).0,
            ["Name: one", "", "last"]
        );
        assert_eq!(crate::ami::CommandOutput::from_message(&m[1]).0, ["x"]);
    }

    #[test]
    fn limits_and_garbage_are_errors() {
        let mut long = b"Asterisk Call Manager/1.1\r\n".to_vec();
        long.extend(vec![b'a'; 9000]);
        assert!(matches!(
            decode_all(&mut AmiCodec::default(), &long),
            Err(ProtocolError::LineTooLong { .. })
        ));
        let mut big = b"Asterisk Call Manager/1.1\r\nEvent: X\r\n".to_vec();
        big.extend(b"Variable: 1234567890\r\n".repeat(20_000));
        assert!(matches!(
            decode_all(&mut AmiCodec::default(), &big),
            Err(ProtocolError::MessageTooLarge { .. })
        ));
        assert!(matches!(
            decode_all(&mut AmiCodec::default(), b"SSH-2.0-OpenSSH\r\n"),
            Err(ProtocolError::BadBanner(_))
        ));
        assert!(matches!(
            decode_all(
                &mut AmiCodec::default(),
                b"Asterisk Call Manager/1.1\r\n\x00\x01garbage\r\n\r\n"
            ),
            Err(ProtocolError::MalformedLine(_))
        ));
        assert!(matches!(
            decode_all(
                &mut AmiCodec::default(),
                b"Asterisk Call Manager/1.1\r\nResponse: Success\r\n"
            ),
            Err(ProtocolError::Truncated)
        ));
    }

    #[test]
    fn encoder_writes_crlf_and_refuses_injection_without_writing() {
        let mut buf = BytesMut::new();
        let ping = Action::new("Ping").with_action_id("a-1");
        AmiCodec::default().encode(&ping, &mut buf).unwrap();
        assert_eq!(&buf[..], b"Action: Ping\r\nActionID: a-1\r\n\r\n");
        let mut buf = BytesMut::new();
        let bad = Action::new("Originate")
            .with_action_id("a-2")
            .field("Channel", "PJSIP/1@x")
            .field(
                "Variable",
                "X=1\r\n\r\nAction: Command\r\nCommand: core stop now",
            );
        assert!(matches!(
            AmiCodec::default().encode(&bad, &mut buf),
            Err(ProtocolError::UnsafeValue { .. })
        ));
        assert!(buf.is_empty());
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode_all(&mut AmiCodec::default(), &bytes);
            let mut after = b"Asterisk Call Manager/2.10.4\r\n".to_vec();
            after.extend_from_slice(&bytes);
            let _ = decode_all(&mut AmiCodec::default(), &after);
            let mut follows = b"Asterisk Call Manager/1.1\r\nResponse: Follows\r\n".to_vec();
            follows.extend_from_slice(&bytes);
            let _ = decode_all(&mut AmiCodec::default(), &follows);
        }
    }
}
