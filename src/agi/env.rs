//! The environment block Asterisk sends first on every AGI connection.

use nom::{
    bytes::complete::{tag, take_until, take_while1},
    combinator::{opt, rest},
    sequence::{pair, preceded},
    IResult,
};

use super::ProtocolError;

/// One parsed environment block. Every line is kept in order (unknown keys included,
/// values as raw bytes because carriers send non-UTF-8 caller names); the keys Asterisk
/// types are offered through typed accessors.
///
/// A call keeps its environment for as long as it lasts, so it is stored compactly: all
/// keys and values back to back in one buffer, and where each line's key and value end
/// (two heap blocks per call rather than two per line).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AgiEnv {
    text: Vec<u8>,
    lines: Vec<LineEnds>,
}

/// Where one line's key and value end in `AgiEnv::text`; the key starts where the
/// previous line's value ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LineEnds {
    key: u32,
    value: u32,
}

/// Shown as the list of lines, as when the lines were stored one by one.
impl std::fmt::Debug for AgiEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        struct Entries<'a>(&'a AgiEnv);
        impl std::fmt::Debug for Entries<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_list().entries(self.0.entries()).finish()
            }
        }
        f.debug_struct("AgiEnv")
            .field("entries", &Entries(self))
            .finish()
    }
}

/// A caller ID as Asterisk 1.0/1.2 sent it (`"Name" <1234>`) or as later versions do
/// (the bare number, with the name in `agi_calleridname`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerId {
    pub name: Option<String>,
    pub number: Option<String>,
}

/// Q.931 presentation of the calling number (`agi_callingpres`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presentation {
    Allowed,
    Restricted,
    NotAvailable,
}

impl Presentation {
    /// Decodes the presentation+screening byte: bits 0x60 carry the presentation.
    pub fn from_callingpres(value: u8) -> Presentation {
        match value & 0x60 {
            0x00 => Presentation::Allowed,
            0x20 => Presentation::Restricted,
            _ => Presentation::NotAvailable,
        }
    }
}

/// Splits one environment line into key and value: the FIRST `": "` separates them,
/// so values may carry colons (`IAX2/127.0.0.1:4569-123`, URLs, free-text names).
pub fn parse_env_line(line: &[u8]) -> Result<(&str, &[u8]), ProtocolError> {
    fn key_char(b: u8) -> bool {
        b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
    }
    fn with_value(input: &[u8]) -> IResult<&[u8], (&[u8], &[u8])> {
        let (input, key) = take_until(": ")(input)?;
        let (input, value) = preceded(tag(": "), rest)(input)?;
        Ok((input, (key, value)))
    }
    // Some builds trim the space after an empty value ("agi_accountcode:").
    fn empty_value(input: &[u8]) -> IResult<&[u8], (&[u8], &[u8])> {
        let (input, (key, _)) = pair(take_while1(key_char), tag(":"))(input)?;
        let (input, _) = opt(tag(" "))(input)?;
        Ok((input, (key, &b""[..])))
    }
    let parsed = with_value(line)
        .ok()
        .filter(|(_, (key, _))| !key.is_empty() && key.iter().all(|&b| key_char(b)))
        .or_else(|| empty_value(line).ok().filter(|(left, _)| left.is_empty()));
    match parsed {
        Some((_, (key, value))) => Ok((std::str::from_utf8(key).expect("ascii key"), value)),
        None => Err(ProtocolError::MalformedEnvLine(
            String::from_utf8_lossy(line).into_owned(),
        )),
    }
}

/// Parses a caller-ID text in any of the forms Asterisk has used:
/// `"Name" <num>`, `<num>`, `Name <num>` and a bare number. `unknown` and empty mean absent.
pub fn parse_caller_id(text: &str) -> CallerId {
    fn absent(s: &str) -> Option<String> {
        let s = s.trim();
        (!s.is_empty() && !s.eq_ignore_ascii_case("unknown")).then(|| s.to_string())
    }
    fn bracketed(input: &str) -> IResult<&str, (&str, &str)> {
        let (input, name) = take_until("<")(input)?;
        let (input, number) = preceded(tag("<"), take_until(">"))(input)?;
        let (input, _) = tag(">")(input)?;
        Ok((input, (name, number)))
    }
    match bracketed(text) {
        Ok((_, (name, number))) => CallerId {
            name: absent(name.trim().trim_matches('"')),
            number: absent(number),
        },
        Err(_) => CallerId {
            name: None,
            number: absent(text),
        },
    }
}

impl AgiEnv {
    /// Builds an environment from raw lines (without line ends).
    pub fn from_lines<'a>(
        lines: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<AgiEnv, ProtocolError> {
        let mut env = AgiEnv::default();
        for line in lines {
            env.push_line(line)?;
        }
        env.shrink_to_fit();
        Ok(env)
    }

    pub(crate) fn push_line(&mut self, line: &[u8]) -> Result<(), ProtocolError> {
        let (key, value) = parse_env_line(line)?;
        let key_end = self.text.len() + key.len();
        // u32 offsets keep the index small; the codec caps a block far below 4 GiB.
        let (Ok(key_end), Ok(value_end)) =
            (u32::try_from(key_end), u32::try_from(key_end + value.len()))
        else {
            return Err(ProtocolError::EnvTooLarge {
                limit: u32::MAX as usize,
            });
        };
        self.text.extend_from_slice(key.as_bytes());
        self.text.extend_from_slice(value);
        self.lines.push(LineEnds {
            key: key_end,
            value: value_end,
        });
        Ok(())
    }

    /// Gives back the spare capacity left by growing: called once the block is complete,
    /// since the environment then lives as long as the call.
    pub(crate) fn shrink_to_fit(&mut self) {
        self.text.shrink_to_fit();
        self.lines.shrink_to_fit();
    }

    /// Keys and values as bytes, in arrival order.
    fn raw_entries(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let mut start = 0;
        self.lines.iter().map(move |ends| {
            let (key_end, value_end) = (ends.key as usize, ends.value as usize);
            let entry = (&self.text[start..key_end], &self.text[key_end..value_end]);
            start = value_end;
            entry
        })
    }

    /// Every line in arrival order, unknown keys included.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.raw_entries().map(|(key, value)| {
            let key = std::str::from_utf8(key).expect("parse_env_line accepts ASCII keys only");
            (key, value)
        })
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The raw value of the first line with this key.
    pub fn get_raw(&self, key: &str) -> Option<&[u8]> {
        self.raw_entries()
            .find(|(k, _)| *k == key.as_bytes())
            .map(|(_, v)| v)
    }

    /// The value as text (invalid UTF-8 replaced, never rejected).
    pub fn get(&self, key: &str) -> Option<String> {
        self.get_raw(key)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// Like [`get`](Self::get), with Asterisk's literal `unknown` and empty meaning absent.
    fn get_known(&self, key: &str) -> Option<String> {
        self.get(key)
            .filter(|v| !v.is_empty() && !v.eq_ignore_ascii_case("unknown"))
    }

    fn get_parsed<T: std::str::FromStr>(&self, key: &str) -> Option<T> {
        self.get(key).and_then(|v| v.trim().parse().ok())
    }

    pub fn network(&self) -> bool {
        self.get("agi_network").as_deref() == Some("yes")
    }

    /// `agi_network_script`: everything after the first `/` of the URL, query included.
    pub fn network_script(&self) -> Option<String> {
        self.get("agi_network_script")
    }

    /// The script name the server routes on: the path without its query, without slashes
    /// at either end. Empty for a script-less URL (`agi://host`).
    pub fn script_path(&self) -> String {
        let script = self.network_script().unwrap_or_default();
        let path = script.split('?').next().unwrap_or_default();
        path.trim_matches('/').to_string()
    }

    /// Query parameters of the AGI URL (`agi://host/verify?mode=code&x=1`), percent-decoded.
    pub fn query_params(&self) -> Vec<(String, String)> {
        let script = self.network_script().unwrap_or_default();
        let Some((_, query)) = script.split_once('?') else {
            return Vec::new();
        };
        query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect()
    }

    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query_params()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    pub fn request(&self) -> Option<String> {
        self.get("agi_request")
    }

    pub fn channel(&self) -> Option<String> {
        self.get("agi_channel")
    }

    /// Channel technology and endpoint: `PJSIP/carrier-0000001a` -> (`PJSIP`, `carrier`),
    /// `IAX2/127.0.0.1:4569-123` -> (`IAX2`, `127.0.0.1:4569`),
    /// `Local/9000@dialin-00000007;2` -> (`Local`, `9000@dialin`).
    pub fn channel_technology_endpoint(&self) -> Option<(String, String)> {
        let channel = self.channel()?;
        let (tech, rest) = channel.split_once('/')?;
        let rest = rest.split(';').next().unwrap_or(rest);
        // The part after the last '-' is Asterisk's sequence number (hex digits).
        let endpoint = match rest.rsplit_once('-') {
            Some((endpoint, seq))
                if !endpoint.is_empty()
                    && !seq.is_empty()
                    && seq.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                endpoint
            }
            _ => rest,
        };
        Some((tech.to_string(), endpoint.to_string()))
    }

    pub fn language(&self) -> Option<String> {
        self.get("agi_language")
    }

    pub fn channel_type(&self) -> Option<String> {
        self.get("agi_type")
    }

    pub fn uniqueid(&self) -> Option<String> {
        self.get("agi_uniqueid")
    }

    pub fn version(&self) -> Option<String> {
        self.get("agi_version")
    }

    /// The caller ID, whichever form Asterisk used; the name falls back to
    /// `agi_calleridname` when the old bracketed form did not carry one.
    pub fn caller_id(&self) -> CallerId {
        let mut id = parse_caller_id(&self.get("agi_callerid").unwrap_or_default());
        if id.name.is_none() {
            id.name = self.get_known("agi_calleridname");
        }
        id
    }

    pub fn caller_number(&self) -> Option<String> {
        self.caller_id().number
    }

    pub fn caller_name(&self) -> Option<String> {
        self.caller_id().name
    }

    /// The raw `agi_callingpres` byte; `None` when absent or not a number.
    pub fn calling_pres(&self) -> Option<u8> {
        self.get_parsed("agi_callingpres")
    }

    /// Presentation of the caller number. An absent or unreadable value is reported as
    /// `None`: callers that must fail closed treat it as not available.
    pub fn presentation(&self) -> Option<Presentation> {
        self.calling_pres().map(Presentation::from_callingpres)
    }

    pub fn calling_ani2(&self) -> Option<i32> {
        self.get_parsed("agi_callingani2")
    }

    pub fn calling_ton(&self) -> Option<i32> {
        self.get_parsed("agi_callington")
    }

    pub fn calling_tns(&self) -> Option<i32> {
        self.get_parsed("agi_callingtns")
    }

    pub fn dnid(&self) -> Option<String> {
        self.get_known("agi_dnid")
    }

    pub fn rdnis(&self) -> Option<String> {
        self.get_known("agi_rdnis")
    }

    pub fn context(&self) -> Option<String> {
        self.get("agi_context")
    }

    pub fn extension(&self) -> Option<String> {
        self.get("agi_extension")
    }

    pub fn priority(&self) -> Option<i32> {
        self.get_parsed("agi_priority")
    }

    /// `agi_enhanced: 1.0` means EAGI (audio on fd 3), which FastAGI never carries.
    pub fn enhanced(&self) -> bool {
        self.get_parsed::<f32>("agi_enhanced")
            .is_some_and(|v| v != 0.0)
    }

    pub fn account_code(&self) -> Option<String> {
        self.get("agi_accountcode").filter(|v| !v.is_empty())
    }

    /// Signed: 32-bit builds print negative thread ids.
    pub fn thread_id(&self) -> Option<i64> {
        self.get_parsed("agi_threadid")
    }

    /// `agi_arg_1` ... `agi_arg_N` in order, stopping at the first gap.
    pub fn args(&self) -> Vec<String> {
        (1..)
            .map_while(|n| self.get(&format!("agi_arg_{n}")))
            .collect()
    }

    /// `agi_arg_N`, 1-based as in the dialplan.
    pub fn arg(&self, n: usize) -> Option<String> {
        self.get(&format!("agi_arg_{n}"))
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn env(lines: &[&[u8]]) -> AgiEnv {
        AgiEnv::from_lines(lines.iter().copied()).unwrap()
    }

    #[test]
    fn splits_on_first_colon_space_only() {
        let e = env(&[
            b"agi_request: agi://10.0.0.1:4573/verify?a=1",
            b"agi_calleridname: Dr: Who",
        ]);
        assert_eq!(
            e.request().as_deref(),
            Some("agi://10.0.0.1:4573/verify?a=1")
        );
        assert_eq!(e.caller_name().as_deref(), Some("Dr: Who"));
    }

    #[test]
    fn empty_values_with_and_without_trailing_space() {
        let e = env(&[b"agi_accountcode: ", b"agi_foo:"]);
        assert_eq!(e.get("agi_accountcode").as_deref(), Some(""));
        assert_eq!(e.account_code(), None);
        assert_eq!(e.get("agi_foo").as_deref(), Some(""));
    }

    #[test]
    fn rejects_lines_that_are_not_key_value() {
        assert!(parse_env_line(b"GET / HTTP/1.1").is_err());
        assert!(parse_env_line(b": value").is_err());
        assert!(parse_env_line(b"").is_err());
    }

    #[test]
    fn unknown_means_absent_and_unknown_keys_are_kept() {
        let e = env(&[
            b"agi_callerid: unknown",
            b"agi_dnid: unknown",
            b"agi_x_custom: 42",
        ]);
        assert_eq!(e.caller_number(), None);
        assert_eq!(e.dnid(), None);
        assert_eq!(e.get("agi_x_custom").as_deref(), Some("42"));
    }

    #[test]
    fn old_caller_id_forms() {
        for (text, name, number) in [
            ("\"John Doe\" <5551234>", Some("John Doe"), Some("5551234")),
            ("<5551234>", None, Some("5551234")),
            ("John <5551234>", Some("John"), Some("5551234")),
            ("+8613800138000", None, Some("+8613800138000")),
            ("\"Anonymous\" <unknown>", Some("Anonymous"), None),
        ] {
            let id = parse_caller_id(text);
            assert_eq!(id.name.as_deref(), name, "{text}");
            assert_eq!(id.number.as_deref(), number, "{text}");
        }
    }

    #[test]
    fn non_utf8_caller_name_is_tolerated() {
        let e = env(&[b"agi_calleridname: Jos\xe9", b"agi_callerid: 100"]);
        assert_eq!(e.get_raw("agi_calleridname"), Some(&b"Jos\xe9"[..]));
        assert_eq!(e.caller_name().as_deref(), Some("Jos\u{fffd}"));
    }

    #[test]
    fn typed_fields() {
        let e = env(&[
            b"agi_callingpres: 35",
            b"agi_threadid: -1225491568",
            b"agi_enhanced: 0.0",
            b"agi_priority: 4",
            b"agi_arg_1: 9000",
            b"agi_arg_2: a b",
            b"agi_arg_4: gap",
        ]);
        assert_eq!(e.presentation(), Some(Presentation::Restricted));
        assert_eq!(e.thread_id(), Some(-1225491568));
        assert!(!e.enhanced());
        assert_eq!(e.priority(), Some(4));
        assert_eq!(e.args(), vec!["9000", "a b"]);
        assert_eq!(
            Presentation::from_callingpres(67),
            Presentation::NotAvailable
        );
        assert_eq!(Presentation::from_callingpres(3), Presentation::Allowed);
    }

    #[test]
    fn script_path_and_query() {
        let e = env(&[b"agi_network_script: verify/?mode=code&n=%2B86+1"]);
        assert_eq!(e.script_path(), "verify");
        assert_eq!(e.query_param("mode").as_deref(), Some("code"));
        assert_eq!(e.query_param("n").as_deref(), Some("+86 1"));
        assert_eq!(env(&[]).script_path(), "");
    }

    #[test]
    fn channel_technology_and_endpoint() {
        for (channel, tech, endpoint) in [
            ("PJSIP/carrier-0000001a", "PJSIP", "carrier"),
            ("SIP/carrier2-00000004", "SIP", "carrier2"),
            ("IAX2/127.0.0.1:4569-1234", "IAX2", "127.0.0.1:4569"),
            ("Local/9000@dialin-00000007;2", "Local", "9000@dialin"),
            ("DAHDI/1-1", "DAHDI", "1"),
        ] {
            let line = format!("agi_channel: {channel}");
            let e = env(&[line.as_bytes()]);
            assert_eq!(
                e.channel_technology_endpoint(),
                Some((tech.to_string(), endpoint.to_string())),
                "{channel}"
            );
        }
    }

    #[test]
    fn lines_are_kept_in_order_with_duplicates_and_the_first_wins() {
        let e = env(&[b"agi_arg_1: a", b"agi_x:", b"agi_arg_1: b"]);
        let entries: Vec<_> = e.entries().collect();
        assert_eq!(
            entries,
            [
                ("agi_arg_1", &b"a"[..]),
                ("agi_x", &b""[..]),
                ("agi_arg_1", &b"b"[..])
            ]
        );
        assert_eq!(e.get("agi_arg_1").as_deref(), Some("a"));
        assert_eq!(e.get_raw("agi_missing"), None);
        assert!(!e.is_empty());
        assert!(AgiEnv::default().is_empty());
        assert_eq!(e.clone(), e);
    }

    #[test]
    fn equality_is_per_line_not_per_byte() {
        // Same bytes back to back, split differently into key and value.
        assert_ne!(env(&[b"agi_a: bc"]), env(&[b"agi_ab: c"]));
        assert_ne!(
            env(&[b"agi_a: b", b"agi_c: d"]),
            env(&[b"agi_a: bagi_c: d"])
        );
        assert_eq!(env(&[b"agi_a: b"]), env(&[b"agi_a: b"]));
    }

    #[test]
    fn debug_shows_the_lines() {
        let e = env(&[b"agi_network: yes", b"agi_foo:"]);
        assert_eq!(
            format!("{e:?}"),
            r#"AgiEnv { entries: [("agi_network", [121, 101, 115]), ("agi_foo", [])] }"#
        );
    }

    #[test]
    fn from_lines_leaves_no_spare_capacity() {
        let e = env(&[b"agi_network: yes", b"agi_channel: PJSIP/carrier-0000001a"]);
        assert_eq!(e.text.capacity(), e.text.len());
        assert_eq!(e.lines.capacity(), e.lines.len());
    }

    proptest! {
        #[test]
        fn entries_give_back_what_was_pushed(
            lines in proptest::collection::vec(
                ("[a-z_][a-z0-9_-]{0,12}", proptest::collection::vec(any::<u8>(), 0..40)),
                0..30,
            )
        ) {
            let raw: Vec<Vec<u8>> = lines
                .iter()
                .map(|(k, v)| [k.as_bytes(), b": ", v].concat())
                .collect();
            let e = AgiEnv::from_lines(raw.iter().map(Vec::as_slice)).unwrap();
            let back: Vec<(String, Vec<u8>)> =
                e.entries().map(|(k, v)| (k.to_string(), v.to_vec())).collect();
            prop_assert_eq!(back, lines);
        }
    }
}
