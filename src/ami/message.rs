//! AMI messages: `Key: Value` lines ended by an empty line. Keys are case-insensitive and
//! may repeat (`Variable`, `ChanVariable`, `Output`); order is kept.

use nom::{
    branch::alt,
    bytes::complete::{tag, take_till, take_till1},
    combinator::{eof, rest, verify},
    sequence::{preceded, terminated},
    IResult,
};

use super::ProtocolError;

/// What a message is, from its first key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `Response:` first: the answer to an action.
    Response,
    /// `Event:` first.
    Event,
    /// `Action:` first (what a client sends).
    Action,
    /// Anything else.
    Unknown,
}

/// One AMI message as received. A line without `": "` (e.g. `From 192.168.0.1:1234` in
/// `RTCPReceived`, or the raw text of an Asterisk <= 13 `Command` reply) is kept as a
/// field with an empty key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    pub fields: Vec<(String, String)>,
}

impl Message {
    pub fn new(fields: Vec<(String, String)>) -> Message {
        Message { fields }
    }

    /// The first value under `key`, compared case-insensitively.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| !k.is_empty() && k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// Every value under `key`, in order.
    pub fn get_all(&self, key: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(k, _)| !k.is_empty() && k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Lines that had no `": "`, in order.
    pub fn raw_lines(&self) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(k, _)| k.is_empty())
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn kind(&self) -> Kind {
        match self.fields.first() {
            Some((k, _)) if k.eq_ignore_ascii_case("Response") => Kind::Response,
            Some((k, _)) if k.eq_ignore_ascii_case("Event") => Kind::Event,
            Some((k, _)) if k.eq_ignore_ascii_case("Action") => Kind::Action,
            _ => Kind::Unknown,
        }
    }

    pub fn action_id(&self) -> Option<&str> {
        self.get("ActionID")
    }

    /// The `Response:` value of a response (`Success`, `Error`, `Follows`, `Goodbye`, ...).
    pub fn response(&self) -> Option<&str> {
        (self.kind() == Kind::Response)
            .then(|| self.get("Response"))
            .flatten()
    }

    /// The event name of an event.
    pub fn event(&self) -> Option<&str> {
        (self.kind() == Kind::Event)
            .then(|| self.get("Event"))
            .flatten()
    }

    /// Whether this is a response that refuses its action (`Error`, `Failure`).
    pub fn is_error_response(&self) -> bool {
        self.response()
            .is_some_and(|r| r.eq_ignore_ascii_case("Error") || r.eq_ignore_ascii_case("Failure"))
    }

    /// `EventList: start` in a response, or `EventList: Complete` in the final event.
    pub fn event_list(&self) -> Option<&str> {
        self.get("EventList")
    }
}

/// An action to send. The client assigns the `ActionID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    name: String,
    action_id: Option<String>,
    fields: Vec<(String, String)>,
}

impl Action {
    pub fn new(name: &str) -> Action {
        Action {
            name: name.to_string(),
            action_id: None,
            fields: Vec::new(),
        }
    }

    /// Adds a field (builder style); repeated keys are sent in order.
    pub fn field(mut self, key: &str, value: impl Into<String>) -> Action {
        self.push(key, value);
        self
    }

    pub fn push(&mut self, key: &str, value: impl Into<String>) {
        self.fields.push((key.to_string(), value.into()));
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn fields(&self) -> &[(String, String)] {
        &self.fields
    }

    pub fn action_id(&self) -> Option<&str> {
        self.action_id.as_deref()
    }

    pub fn set_action_id(&mut self, id: impl Into<String>) {
        self.action_id = Some(id.into());
    }

    pub fn with_action_id(mut self, id: impl Into<String>) -> Action {
        self.set_action_id(id);
        self
    }

    /// The lines as written, `Action` then `ActionID` then the fields in order.
    pub fn lines(&self) -> impl Iterator<Item = (&str, &str)> {
        std::iter::once(("Action", self.name.as_str()))
            .chain(self.action_id.as_deref().map(|id| ("ActionID", id)))
            .chain(self.fields.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// Refuses keys and values that would break the framing (CR, LF, NUL) before a byte
    /// of the action is written.
    pub fn validate(&self) -> Result<(), ProtocolError> {
        for (key, value) in self.lines() {
            let bad_key = key.is_empty()
                || key
                    .bytes()
                    .any(|b| matches!(b, b':' | b' ' | b'\r' | b'\n' | 0));
            if bad_key {
                return Err(ProtocolError::UnsafeKey(key.to_string()));
            }
            if value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0))
                || (key == "Action" && value.is_empty())
            {
                return Err(ProtocolError::UnsafeValue {
                    key: key.to_string(),
                });
            }
        }
        Ok(())
    }
}

/// The text of a `Command` (CLI) reply, one entry per line, from either format:
/// Asterisk >= 14 (`Response: Success`, one `Output:` field per line) or <= 13
/// (`Response: Follows`, raw text up to `--END COMMAND--`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandOutput(pub Vec<String>);

impl CommandOutput {
    pub fn from_message(message: &Message) -> CommandOutput {
        let follows = message
            .response()
            .is_some_and(|r| r.eq_ignore_ascii_case("Follows"));
        let lines = if follows {
            message.raw_lines()
        } else {
            message.get_all("Output")
        };
        CommandOutput(lines.into_iter().map(str::to_string).collect())
    }

    pub fn lines(&self) -> &[String] {
        &self.0
    }

    pub fn text(&self) -> String {
        self.0.join("\n")
    }
}

/// One line of a message, CR/LF already removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Field(String, String),
    /// A line without `": "`.
    Raw(String),
}

/// `Key: Value`, or `Key:` with an empty value. The key runs to the first colon, which
/// must be followed by a space or end the line.
fn field(input: &[u8]) -> IResult<&[u8], (&[u8], &[u8])> {
    let (input, key) = take_till1(|b| b == b':')(input)?;
    let (value, _) = alt((tag(": "), terminated(tag(":"), eof)))(input)?;
    Ok((&[], (key, value)))
}

pub fn parse_line(line: &[u8]) -> Line {
    match field(line) {
        Ok((_, (key, value))) => Line::Field(lossy(key), lossy(value)),
        Err(_) => Line::Raw(lossy(line)),
    }
}

/// `Asterisk Call Manager/<version>` (also `... Manager Proxy/...`), any version.
fn banner(input: &[u8]) -> IResult<&[u8], &[u8]> {
    preceded(
        terminated(
            tag("Asterisk Call Manager"),
            terminated(take_till(|b| b == b'/'), tag("/")),
        ),
        verify(rest, |v: &[u8]| {
            !v.is_empty() && v.iter().all(|b| b.is_ascii_graphic())
        }),
    )(input)
}

/// The version in a banner line.
pub fn parse_banner(line: &[u8]) -> Result<String, ProtocolError> {
    banner(line)
        .map(|(_, version)| lossy(version))
        .map_err(|_| ProtocolError::BadBanner(lossy(line)))
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_with_and_without_colon_space() {
        assert_eq!(
            parse_line(b"Output: a: b"),
            Line::Field("Output".into(), "a: b".into())
        );
        assert_eq!(parse_line(b"Data:"), Line::Field("Data".into(), "".into()));
        assert_eq!(parse_line(b"Data: "), Line::Field("Data".into(), "".into()));
        assert_eq!(
            parse_line(b"From 192.168.0.1:1234"),
            Line::Raw("From 192.168.0.1:1234".into())
        );
        assert_eq!(parse_line(b": x"), Line::Raw(": x".into()));
    }

    #[test]
    fn banners_of_any_version() {
        for v in [
            "1.0",
            "1.1",
            "1.3",
            "2.10.4",
            "5.0.2",
            "11.0.0",
            "99.1-beta",
        ] {
            let line = format!("Asterisk Call Manager/{v}");
            assert_eq!(parse_banner(line.as_bytes()).unwrap(), v);
        }
        assert_eq!(
            parse_banner(b"Asterisk Call Manager Proxy/1.0").unwrap(),
            "1.0"
        );
        for bad in [
            &b"HTTP/1.1 400 Bad Request"[..],
            b"Asterisk Call Manager/",
            b"",
        ] {
            assert!(matches!(
                parse_banner(bad),
                Err(ProtocolError::BadBanner(_))
            ));
        }
    }

    #[test]
    fn case_insensitive_and_repeated_keys() {
        let m = Message::new(vec![
            ("Event".into(), "VarSet".into()),
            ("actionid".into(), "7".into()),
            ("Variable".into(), "A=1".into()),
            ("VARIABLE".into(), "B=2".into()),
            ("".into(), "raw".into()),
        ]);
        assert_eq!(m.kind(), Kind::Event);
        assert_eq!(m.action_id(), Some("7"));
        assert_eq!(m.get("variable"), Some("A=1"));
        assert_eq!(m.get_all("Variable"), ["A=1", "B=2"]);
        assert_eq!(m.raw_lines(), ["raw"]);
        assert_eq!(m.event(), Some("VarSet"));
        assert_eq!(m.response(), None);
    }

    #[test]
    fn both_command_formats() {
        let new = Message::new(vec![
            ("Response".into(), "Success".into()),
            ("Message".into(), "Command output follows".into()),
            ("Output".into(), "one".into()),
            ("Output".into(), "".into()),
        ]);
        assert_eq!(CommandOutput::from_message(&new).0, ["one", ""]);
        let old = Message::new(vec![
            ("Response".into(), "Follows".into()),
            ("Privilege".into(), "Command".into()),
            ("".into(), "one".into()),
            ("".into(), "Name: x".into()),
        ]);
        assert_eq!(CommandOutput::from_message(&old).0, ["one", "Name: x"]);
    }

    #[test]
    fn validate_refuses_injection() {
        let ok = Action::new("Originate").field("Variable", "A=b c");
        assert!(ok.validate().is_ok());
        for bad in [
            Action::new("Originate").field("Variable", "A=1\r\nAction: Command"),
            Action::new("Originate").field("Variable", "A=1\n"),
            Action::new("Originate").field("Variable", "A=\0"),
            Action::new("Ping\r\nAction: Command"),
            Action::new(""),
        ] {
            assert!(
                matches!(bad.validate(), Err(ProtocolError::UnsafeValue { .. })),
                "{bad:?}"
            );
        }
        for key in ["", "A:B", "A\r\nB", "A B"] {
            assert!(matches!(
                Action::new("Ping").field(key, "x").validate(),
                Err(ProtocolError::UnsafeKey(_))
            ));
        }
    }
}
