//! Replies Asterisk sends to AGI commands.

use nom::{
    branch::alt,
    bytes::complete::{tag, take_till, take_while, take_while1},
    character::complete::{char, digit1, space1},
    combinator::{all_consuming, map, rest},
    multi::many0,
    sequence::{preceded, separated_pair, tuple},
    IResult,
};

use super::ProtocolError;

/// A `200 result=...` reply: the result is a string (GET DATA returns the digits, leading
/// zeros and `*`/`#` included), the optional parenthesised data, and `key=value` attributes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Response {
    pub result: String,
    pub data: Option<String>,
    pub attributes: Vec<(String, String)>,
}

impl Response {
    /// The result as an integer, for the commands whose result is one.
    pub fn result_int(&self) -> Option<i64> {
        self.result.parse().ok()
    }

    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `result=-1` is Asterisk's "failure or hangup" for nearly every command.
    pub fn is_failure(&self) -> bool {
        self.result == "-1"
    }

    /// Whether the data says the input timed out (`200 result= (timeout)`).
    pub fn timed_out(&self) -> bool {
        self.data.as_deref() == Some("timeout")
    }
}

/// Everything Asterisk can answer to a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `200 result=...`
    Success(Response),
    /// `100 result=0 Trying...`: precedes GOSUB's real reply.
    Trying,
    /// `503 result=-2 Memory allocation failure`
    MemoryFailure(Response),
    /// `510 Invalid or unknown command`
    InvalidCommand,
    /// `511 Command Not Permitted on a dead channel...` (old and new wording)
    DeadChannel,
    /// `520 ...`: the usage text, empty when Asterisk said "Proper usage not available".
    Usage(Vec<String>),
    /// Any other status code, kept verbatim rather than refused.
    Other { code: u16, text: String },
}

impl Reply {
    pub fn code(&self) -> u16 {
        match self {
            Reply::Success(_) => 200,
            Reply::Trying => 100,
            Reply::MemoryFailure(_) => 503,
            Reply::InvalidCommand => 510,
            Reply::DeadChannel => 511,
            Reply::Usage(_) => 520,
            Reply::Other { code, .. } => *code,
        }
    }

    /// The 200 response, or an error naming what Asterisk said instead.
    pub fn into_success(self) -> Result<Response, ProtocolError> {
        match self {
            Reply::Success(response) => Ok(response),
            other => Err(ProtocolError::Refused(other)),
        }
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Success(r) => write!(f, "200 result={}", r.result)?,
            Reply::Trying => write!(f, "100 Trying")?,
            Reply::MemoryFailure(_) => write!(f, "503 memory allocation failure")?,
            Reply::InvalidCommand => write!(f, "510 invalid or unknown command")?,
            Reply::DeadChannel => write!(f, "511 command not permitted on a dead channel")?,
            Reply::Usage(_) => write!(f, "520 invalid command syntax")?,
            Reply::Other { code, text } => write!(f, "{code} {text}")?,
        }
        Ok(())
    }
}

/// A balanced parenthesised group, returned without its outer parentheses.
fn parenthesised(input: &[u8]) -> IResult<&[u8], &[u8]> {
    let (_, _) = char('(')(input)?;
    let mut depth = 0usize;
    for (i, &b) in input.iter().enumerate() {
        match b {
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return Ok((&input[i + 1..], &input[1..i]));
                }
            }
            _ => {}
        }
    }
    Err(nom::Err::Error(nom::error::Error::new(
        input,
        nom::error::ErrorKind::Char,
    )))
}

/// A `"..."` value in which a backslash escapes the next byte (`text0="hi \"joe\""`).
fn quoted_value(input: &[u8]) -> IResult<&[u8], Vec<u8>> {
    let (input, _) = char('"')(input)?;
    let mut out = Vec::new();
    let mut bytes = input.iter().enumerate();
    while let Some((i, &b)) = bytes.next() {
        match b {
            b'"' => return Ok((&input[i + 1..], out)),
            b'\\' => match bytes.next() {
                Some((_, &escaped)) => out.push(escaped),
                None => break,
            },
            _ => out.push(b),
        }
    }
    Err(nom::Err::Error(nom::error::Error::new(
        input,
        nom::error::ErrorKind::Char,
    )))
}

fn attribute(input: &[u8]) -> IResult<&[u8], (Vec<u8>, Vec<u8>)> {
    let key = take_while1(|b: u8| b != b'=' && b != b' ');
    let unquoted = map(take_till(|b| b == b' '), <[u8]>::to_vec);
    preceded(
        space1,
        alt((
            map(
                separated_pair(key, char('='), alt((quoted_value, unquoted))),
                |(k, v): (&[u8], Vec<u8>)| (k.to_vec(), v),
            ),
            // A bare word (no `=`): kept as a key with an empty value.
            map(take_while1(|b: u8| b != b' '), |k: &[u8]| {
                (k.to_vec(), Vec::new())
            }),
        )),
    )(input)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `result=<value>[ (<data>)][ key=value ...]`, the part after the status code.
fn response_body(input: &[u8]) -> IResult<&[u8], Response> {
    let (input, result) = preceded(tag("result="), take_while(|b| b != b' '))(input)?;
    // Data, when present, must be a balanced group; otherwise use the fallback below.
    fn data(i: &[u8]) -> IResult<&[u8], Option<&[u8]>> {
        match i {
            [b' ', b'(', ..] => map(preceded(char(' '), parenthesised), Some)(i),
            _ => Ok((i, None)),
        }
    }
    let structured =
        all_consuming(tuple((data, many0(attribute), take_while(|b| b == b' '))))(input);
    let response = match structured {
        Ok((_, (data, attributes, _))) => Response {
            result: text(result),
            data: data.map(text),
            attributes: attributes
                .into_iter()
                .map(|(k, v)| (text(&k), text(&v)))
                .collect(),
        },
        // A value with unbalanced parentheses (GET VARIABLE of "a)b" is sent as
        // "(a)b)"): the data runs from the first '(' to the last ')'.
        Err(_) => {
            let rest = input.strip_prefix(b" ").unwrap_or(input);
            let data = rest
                .strip_prefix(b"(")
                .and_then(|r| r.strip_suffix(b")"))
                .unwrap_or(rest);
            Response {
                result: text(result),
                data: Some(text(data)),
                attributes: Vec::new(),
            }
        }
    };
    Ok((&input[input.len()..], response))
}

/// Parses one reply line (without its line end). The continuation lines of a multi-line
/// `520-` usage reply are collected by the codec, not here.
pub fn parse_reply_line(line: &[u8]) -> Result<Reply, ProtocolError> {
    let malformed = || ProtocolError::MalformedReply(text(line));
    let (body, code) = digit1::<_, nom::error::Error<&[u8]>>(line).map_err(|_| malformed())?;
    let code: u16 = std::str::from_utf8(code)
        .ok()
        .and_then(|c| c.parse().ok())
        .filter(|c| (100..=999).contains(c))
        .ok_or_else(malformed)?;
    let after_space = body.strip_prefix(b" ").unwrap_or(body);
    match code {
        200 | 503 => {
            let (_, response) = response_body(after_space).map_err(|_| malformed())?;
            Ok(if code == 200 {
                Reply::Success(response)
            } else {
                Reply::MemoryFailure(response)
            })
        }
        100 => Ok(Reply::Trying),
        510 => Ok(Reply::InvalidCommand),
        511 => Ok(Reply::DeadChannel),
        520 => Ok(Reply::Usage(Vec::new())),
        _ => Ok(Reply::Other {
            code,
            text: text(rest::<_, nom::error::Error<&[u8]>>(after_space).unwrap().1),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(line: &str) -> Response {
        match parse_reply_line(line.as_bytes()).unwrap() {
            Reply::Success(r) => r,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn results_are_strings() {
        assert_eq!(ok("200 result=0042").result, "0042");
        assert_eq!(ok("200 result=12*#").result, "12*#");
        let timeout = ok("200 result= (timeout)");
        assert_eq!(timeout.result, "");
        assert!(timeout.timed_out());
        assert_eq!(ok("200 result=-1").result_int(), Some(-1));
    }

    #[test]
    fn data_and_attributes() {
        let r = ok("200 result=1 (5145552255)");
        assert_eq!(r.data.as_deref(), Some("5145552255"));
        let r = ok("200 result=0 endpos=8000");
        assert_eq!(r.data, None);
        assert_eq!(r.attribute("endpos"), Some("8000"));
        let r = ok("200 result=-1 (hangup) endpos=25280");
        assert_eq!(r.data.as_deref(), Some("hangup"));
        assert_eq!(r.attribute("endpos"), Some("25280"));
        let r = ok("200 result=1 ((hello)(world))");
        assert_eq!(r.data.as_deref(), Some("(hello)(world)"));
        let r = ok(r#"200 result=1 (speech) text0="hi \"joe\"" score0=900"#);
        assert_eq!(r.attribute("text0"), Some(r#"hi "joe""#));
        assert_eq!(r.attribute("score0"), Some("900"));
        let r = ok("200 result=1 (a value with spaces)");
        assert_eq!(r.data.as_deref(), Some("a value with spaces"));
    }

    #[test]
    fn unbalanced_data_falls_back_to_outer_parentheses() {
        let r = ok("200 result=1 (a)b)");
        assert_eq!(r.data.as_deref(), Some("a)b"));
        let r = ok("200 result=1 (a(b)");
        assert_eq!(r.data.as_deref(), Some("a(b"));
    }

    #[test]
    fn status_codes() {
        assert_eq!(
            parse_reply_line(b"100 result=0 Trying...").unwrap(),
            Reply::Trying
        );
        let r = parse_reply_line(b"503 result=-2 Memory allocation failure").unwrap();
        assert_eq!(r.code(), 503);
        assert_eq!(
            parse_reply_line(b"510 Invalid or unknown command").unwrap(),
            Reply::InvalidCommand
        );
        for line in [
            &b"511 Command Not Permitted on a dead channel or intercept routine"[..],
            b"511 Command Not Permitted on a dead channel",
        ] {
            assert_eq!(parse_reply_line(line).unwrap(), Reply::DeadChannel);
        }
        assert_eq!(
            parse_reply_line(b"520 Invalid command syntax.  Proper usage not available.").unwrap(),
            Reply::Usage(vec![])
        );
        assert_eq!(
            parse_reply_line(b"404 nope").unwrap(),
            Reply::Other {
                code: 404,
                text: "nope".into()
            }
        );
    }

    #[test]
    fn garbage_is_an_error() {
        for line in [&b""[..], b"HELLO", b"200", b"200 foo", b"99999 x", b"-1"] {
            assert!(parse_reply_line(line).is_err(), "{line:?}");
        }
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_reply_line(&bytes);
        }

        #[test]
        fn random_200_lines_never_panic(tail in "[ -~]{0,80}") {
            let _ = parse_reply_line(format!("200 result={tail}").as_bytes());
        }

        #[test]
        fn data_round_trips(result in "[0-9*#-]{0,6}", data in "[a-zA-Z0-9 ]{0,30}", endpos in 0u32..100000) {
            let line = format!("200 result={result} ({data}) endpos={endpos}");
            let r = ok(&line);
            let endpos = endpos.to_string();
            prop_assert_eq!(r.attribute("endpos"), Some(endpos.as_str()));
            prop_assert_eq!(r.data.as_deref(), Some(data.as_str()));
            prop_assert_eq!(r.result, result);
        }
    }
}
