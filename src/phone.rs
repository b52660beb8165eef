//! Caller-ID text to E.164.
//!
//! Two stages:
//!
//! 1. **Text** (nom): strip a caller-ID wrapper (`"Name" <num>`, `Name <num>`, `<num>`),
//!    a `tel:` URI scheme or the user part of a `sip:`/`sips:` URI, recognise withheld
//!    markers (`anonymous`, `unknown`, `restricted`, `private`, `withheld`, an empty
//!    `<>`), then tokenise an optional leading `+` and digits with visual separators
//!    (space, `-`, `.`, `(`, `)`). Anything else (letters, `#`, `*`, ...) is rejected.
//!    A leading `00` international prefix is read as `+`.
//! 2. **Number** (`phonenumber`, libphonenumber metadata): parse against the default
//!    region, require `is_valid`, format as E.164.
//!
//! The result, [`E164`], is always `+` followed by 1-15 digits, so two spellings of the
//! same line compare equal.

use std::fmt;
use std::str::FromStr;

use nom::{
    branch::alt,
    bytes::complete::{is_not, tag_no_case, take_till, take_while},
    character::complete::{anychar, char, multispace0, none_of},
    combinator::{all_consuming, opt, recognize},
    multi::many0,
    sequence::{delimited, preceded, tuple},
    IResult,
};
use phonenumber::{country::Id, metadata::DATABASE, Mode};
use thiserror::Error;

/// Most digits accepted before libphonenumber is even asked. E.164 allows 15; the slack
/// covers an international or trunk prefix and separators people type, while keeping
/// pathological caller-ID strings cheap to reject.
pub const MAX_DIGITS: usize = 32;

/// How much of a rejected input is kept in an error (errors end up in logs).
const MAX_ECHO_CHARS: usize = 64;

/// Words a PBX or carrier puts in the caller-ID field instead of a number.
const WITHHELD_WORDS: [&str; 6] = [
    "anonymous",
    "unknown",
    "restricted",
    "private",
    "withheld",
    "unavailable",
];

// ---------------------------------------------------------------------------------------
// Region
// ---------------------------------------------------------------------------------------

/// The region used to read numbers written without an international prefix
/// (ISO 3166-1 alpha-2, e.g. `CN`, `US`). Defaults to `CN`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Region(Id);

/// A region code that is not an ISO 3166-1 alpha-2 code known to libphonenumber.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown region {0:?}: use an ISO 3166 alpha-2 code such as CN or US")]
pub struct UnknownRegion(pub String);

impl Region {
    /// China, the default.
    pub const CN: Region = Region(Id::CN);
    /// United States.
    pub const US: Region = Region(Id::US);

    /// The `phonenumber` country id.
    pub fn id(&self) -> Id {
        self.0
    }

    /// The upper-case alpha-2 code, e.g. `"CN"`.
    pub fn code(&self) -> &str {
        self.0.as_ref()
    }

    /// The international calling code, e.g. 86 for CN.
    pub fn calling_code(&self) -> Option<u16> {
        DATABASE.by_id(self.code()).map(|m| m.country_code())
    }

    /// An example number in international form, for error messages.
    pub fn example(&self) -> String {
        if self.0 == Id::CN {
            return "+86 138 0013 8000".to_owned();
        }
        DATABASE
            .by_id(self.code())
            .and_then(|m| {
                let d = m.descriptors();
                d.mobile()
                    .and_then(|x| x.example())
                    .or_else(|| d.fixed_line().and_then(|x| x.example()))
                    .map(str::to_owned)
            })
            .and_then(|ex| phonenumber::parse(Some(self.0), ex).ok())
            .map(|n| n.format().mode(Mode::International).to_string())
            .unwrap_or_else(|| "+86 138 0013 8000".to_owned())
    }
}

impl Default for Region {
    fn default() -> Self {
        Region::CN
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Region {
    type Err = UnknownRegion;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let err = || UnknownRegion(echo(s));
        if t.len() != 2 || !t.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(err());
        }
        let upper = t.to_ascii_uppercase();
        let id = Id::from_str(&upper).map_err(|_| err())?;
        // Only regions with metadata can be used to read numbers.
        DATABASE.by_id(upper.as_str()).ok_or_else(err)?;
        Ok(Region(id))
    }
}

// ---------------------------------------------------------------------------------------
// E164
// ---------------------------------------------------------------------------------------

/// A validated phone number in E.164 form: `+` followed by the country code and national
/// number, digits only (e.g. `+8613800138000`). Only [`normalize`] makes one.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct E164(String);

impl E164 {
    /// The number as text, `+` included.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The digits without the leading `+`.
    pub fn digits(&self) -> &str {
        &self.0[1..]
    }
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for E164 {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<E164> for String {
    fn from(n: E164) -> String {
        n.0
    }
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// Why a caller-ID text is not a usable phone number. Inputs echoed in messages are
/// truncated and escaped, since caller ID is attacker-controlled and ends up in logs.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PhoneError {
    /// Nothing was given.
    #[error("phone number is empty: enter a number such as +86 138 0013 8000")]
    Empty,
    /// The network says the number is withheld (`anonymous`, `unknown`, `restricted`,
    /// `private`, `withheld`, `unavailable`, or an empty `<>`).
    #[error(
        "caller ID is withheld or unavailable: call from a phone that shows its number \
         (do not dial with a number-hiding prefix)"
    )]
    Withheld,
    /// The text contains something other than digits, spaces, `-`, `.`, `(`, `)` and a
    /// leading `+`.
    #[error(
        "{0:?} is not a phone number: use only digits, spaces, dashes, dots, parentheses \
         and a leading +, e.g. +86 138 0013 8000"
    )]
    NotANumber(String),
    /// More than [`MAX_DIGITS`] digits.
    #[error(
        "phone number has more than {MAX_DIGITS} digits: enter a single number in \
         international form, e.g. +86 138 0013 8000"
    )]
    TooLong,
    /// Well-formed text, but libphonenumber says no such number exists.
    #[error(
        "{input:?} is not a valid phone number for region {region}; write it in \
         international form, e.g. {}",
        .region.example()
    )]
    Invalid { input: String, region: Region },
}

/// Truncate (on a char boundary) an untrusted input for inclusion in an error.
fn echo(s: &str) -> String {
    let mut chars = s.chars();
    let mut out: String = chars.by_ref().take(MAX_ECHO_CHARS).collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

// ---------------------------------------------------------------------------------------
// Text stage (nom)
// ---------------------------------------------------------------------------------------

/// `"..."` with backslash escapes.
fn quoted(i: &str) -> IResult<&str, &str> {
    recognize(delimited(
        char('"'),
        many0(alt((
            recognize(none_of("\\\"")),
            recognize(preceded(char('\\'), anychar)),
        ))),
        char('"'),
    ))(i)
}

/// `[display-name] <inside>`; returns `inside`.
fn wrapper(i: &str) -> IResult<&str, &str> {
    let display = recognize(many0(alt((quoted, is_not("<\"")))));
    let (rest, (_, _, inside, _)) = all_consuming(tuple((
        multispace0,
        opt(display),
        delimited(char('<'), take_till(|c| c == '>'), char('>')),
        multispace0,
    )))(i)?;
    Ok((rest, inside))
}

/// `tel:` URI: the number up to any `;parameter`.
fn tel_uri(i: &str) -> IResult<&str, &str> {
    preceded(tag_no_case("tel:"), take_till(|c| c == ';'))(i)
}

/// `sip:`/`sips:` URI: the user part (before `@`, without `;user-params`).
fn sip_uri(i: &str) -> IResult<&str, &str> {
    preceded(
        alt((tag_no_case("sips:"), tag_no_case("sip:"))),
        take_till(|c| c == '@' || c == ';'),
    )(i)
}

fn is_sep(c: char) -> bool {
    matches!(c, ' ' | '\t' | '-' | '.' | '(' | ')')
}

/// `[separators] [+] (digit | separator)*`, all of the input. Returns (has_plus, body).
fn number_token(i: &str) -> IResult<&str, (bool, &str)> {
    let (rest, (_, plus, body)) = all_consuming(tuple((
        take_while(is_sep),
        opt(char('+')),
        take_while(|c: char| c.is_ascii_digit() || is_sep(c)),
    )))(i)?;
    Ok((rest, (plus.is_some(), body)))
}

fn is_withheld_word(s: &str) -> bool {
    WITHHELD_WORDS.iter().any(|w| s.eq_ignore_ascii_case(w))
}

/// The text stage: returns (has international prefix, digits).
fn tokenize(text: &str) -> Result<(bool, String), PhoneError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(PhoneError::Empty);
    }
    let not_a_number = || PhoneError::NotANumber(echo(trimmed));

    // Caller-ID wrapper: take what is inside <>.
    let mut part = if trimmed.contains('<') || trimmed.contains('>') {
        let (_, inside) = wrapper(trimmed).map_err(|_| not_a_number())?;
        inside.trim()
    } else {
        trimmed
    };
    if part.is_empty() || is_withheld_word(part) {
        return Err(PhoneError::Withheld);
    }

    // URI forms.
    if let Ok((_, n)) = tel_uri(part) {
        part = n.trim();
    } else if let Ok((_, user)) = sip_uri(part) {
        part = user.trim();
    }
    if part.is_empty() || is_withheld_word(part) {
        return Err(PhoneError::Withheld);
    }

    let (_, (mut plus, body)) = number_token(part).map_err(|_| not_a_number())?;
    let mut digits: String = body.chars().filter(char::is_ascii_digit).collect();
    if digits.is_empty() {
        return Err(not_a_number());
    }
    if digits.len() > MAX_DIGITS {
        return Err(PhoneError::TooLong);
    }
    if !plus && digits.starts_with("00") {
        plus = true;
        digits.drain(..2);
    }
    Ok((plus, digits))
}

// ---------------------------------------------------------------------------------------
// Number stage (phonenumber)
// ---------------------------------------------------------------------------------------

fn parse_valid(text: &str, region: Option<Id>) -> Option<phonenumber::PhoneNumber> {
    phonenumber::parse(region, text)
        .ok()
        .filter(phonenumber::is_valid)
}

/// Length of the region's international (IDD) prefix at the start of `digits`, if any:
/// 011 in the US, 00 or an IP-dialling prefix such as 17951 00 in CN.
fn idd_len(digits: &str, region: Region) -> Option<usize> {
    let re = DATABASE.by_id(region.code())?.international_prefix()?;
    re.find(digits).filter(|m| m.start() == 0).map(|m| m.end())
}

fn to_e164(plus: bool, digits: &str, region: Region) -> Option<String> {
    let own_code = region.calling_code()?;
    let number = if plus {
        // No region here: phonenumber 0.3 strips the *default region's* national prefix
        // even from `+CC` numbers (with US, `+86 138...` loses its leading 1).
        parse_valid(&format!("+{digits}"), None)?
    } else if let Some(n) = idd_len(digits, region)
        .filter(|&k| k < digits.len())
        .and_then(|k| parse_valid(&format!("+{}", &digits[k..]), None))
    {
        // International prefix of the region: same caveat, so strip it ourselves.
        n
    } else if let Some(n) =
        parse_valid(digits, Some(region.id())).filter(|n| n.code().value() == own_code)
    {
        n
    } else if digits.starts_with(&own_code.to_string()) {
        // Country code written without `+`/`00`, e.g. 8613800138000 for CN.
        parse_valid(&format!("+{digits}"), None)?
    } else {
        return None;
    };
    let out = number.format().mode(Mode::E164).to_string();
    // Belt and braces: the type promises `+` and 1-15 digits.
    let ok = out.len() >= 2
        && out.len() <= 16
        && out.starts_with('+')
        && out[1..].bytes().all(|b| b.is_ascii_digit());
    ok.then_some(out)
}

/// Read a caller-ID text (as Asterisk's `agi_callerid`, a SIP `From` display, or what a
/// user typed at enrolment) and return the number in E.164 form. Numbers without `+` or
/// `00` are read as dialled in `default_region`.
pub fn normalize(text: &str, default_region: Region) -> Result<E164, PhoneError> {
    let (plus, digits) = tokenize(text)?;
    to_e164(plus, &digits, default_region)
        .map(E164)
        .ok_or_else(|| PhoneError::Invalid {
            input: echo(text.trim()),
            region: default_region,
        })
}

/// For logs and the web page: `•••• 8000` (only the last four digits shown).
pub fn mask(e164: &E164) -> String {
    mask_text(e164.digits())
}

/// [`mask`] for caller-ID text that is not (yet) a valid number: its last four
/// characters only.
pub fn mask_text(text: &str) -> String {
    let text = text.trim();
    let tail_at = text.char_indices().rev().nth(3).map_or(0, |(i, _)| i);
    format!("•••• {}", &text[tail_at..])
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cn(s: &str) -> Result<String, PhoneError> {
        normalize(s, Region::CN).map(|n| n.to_string())
    }

    fn us(s: &str) -> Result<String, PhoneError> {
        normalize(s, Region::US).map(|n| n.to_string())
    }

    const MOBILE: &str = "+8613800138000";

    #[test]
    fn cn_mobile_spellings() {
        for s in [
            "+86 138 0013 8000",
            "+86-138-0013-8000",
            "+86 (138) 0013.8000",
            "(+86) 138 0013 8000",
            "8613800138000",
            "008613800138000",
            "0086 138 0013 8000",
            "13800138000",
            "138 0013 8000",
            "  13800138000\t",
        ] {
            assert_eq!(cn(s).as_deref(), Ok(MOBILE), "{s}");
        }
    }

    #[test]
    fn caller_id_wrappers_and_uris() {
        for s in [
            "\"Zhang San\" <13800138000>",
            "\"Zhang \\\"Z\\\" <San>\" <+8613800138000>",
            "<13800138000>",
            "Zhang <008613800138000>",
            "tel:+86-138-0013-8000",
            "TEL:+8613800138000;phone-context=example.com",
            "sip:+8613800138000@carrier.example",
            "sips:13800138000;user=phone@carrier.example",
            "\"Bob\" <sip:8613800138000@10.0.0.1:5060>",
        ] {
            assert_eq!(cn(s).as_deref(), Ok(MOBILE), "{s}");
        }
    }

    #[test]
    fn cn_landline_with_trunk_prefix() {
        // Beijing, area code 10, trunk prefix 0.
        assert_eq!(cn("010 5555 0100").as_deref(), Ok("+861055550100"));
        assert_eq!(cn("010-6552-9988").as_deref(), Ok("+861065529988"));
    }

    #[test]
    fn us_numbers() {
        assert_eq!(us("(201) 555-0123").as_deref(), Ok("+12015550123"));
        assert_eq!(us("202.456.1111").as_deref(), Ok("+12024561111"));
        assert_eq!(us("1 202 456 1111").as_deref(), Ok("+12024561111"));
        // Foreign number stays foreign whatever the default region.
        assert_eq!(cn("+1 202 456 1111").as_deref(), Ok("+12024561111"));
        // phonenumber 0.3 would strip the US trunk prefix 1 from these if given region US.
        assert_eq!(us("+86 138 0013 8000").as_deref(), Ok(MOBILE));
        assert_eq!(us("+1 202 456 1111").as_deref(), Ok("+12024561111"));
        // US international prefix.
        assert_eq!(us("011 86 138 0013 8000").as_deref(), Ok(MOBILE));
        assert_eq!(us("00 86 138 0013 8000").as_deref(), Ok(MOBILE));
        assert_eq!(us("011 1 202 456 1111").as_deref(), Ok("+12024561111"));
        // CN IP-dialling prefix 17951 + 00.
        assert_eq!(cn("17951 00 1 202 456 1111").as_deref(), Ok("+12024561111"));
        // Same digits, different reading per region.
        assert_eq!(us("(202) 555-0143").as_deref(), Ok("+12025550143"));
        assert_eq!(cn("(202) 555-0143").as_deref(), Ok("+862025550143"));
    }

    #[test]
    fn errors() {
        assert!(matches!(cn("abc"), Err(PhoneError::NotANumber(_))));
        assert!(matches!(
            cn("138-0013-800O"),
            Err(PhoneError::NotANumber(_))
        ));
        assert!(matches!(
            cn("*31#13800138000"),
            Err(PhoneError::NotANumber(_))
        ));
        assert!(matches!(cn("1380013+8000"), Err(PhoneError::NotANumber(_))));
        assert!(matches!(cn("<13800138000"), Err(PhoneError::NotANumber(_))));
        assert!(matches!(cn("---"), Err(PhoneError::NotANumber(_))));
        assert_eq!(cn(""), Err(PhoneError::Empty));
        assert_eq!(cn("   "), Err(PhoneError::Empty));
        for s in [
            "anonymous",
            "Anonymous",
            "UNKNOWN",
            "restricted",
            "Private",
            "withheld",
            "unavailable",
            "\"Anonymous\" <anonymous>",
            "\"Anonymous\" <>",
            "<sip:anonymous@anonymous.invalid>",
        ] {
            assert_eq!(cn(s), Err(PhoneError::Withheld), "{s}");
        }
        assert!(matches!(cn("12"), Err(PhoneError::Invalid { .. })));
        assert!(matches!(cn("+999 123"), Err(PhoneError::Invalid { .. })));
        assert_eq!(cn(&"1".repeat(40)), Err(PhoneError::TooLong));
        assert_eq!(cn(&"9".repeat(33)), Err(PhoneError::TooLong));
        assert!(matches!(
            cn(&"9".repeat(32)),
            Err(PhoneError::Invalid { .. })
        ));
    }

    #[test]
    fn error_messages_say_what_to_do() {
        let e = cn("12").unwrap_err().to_string();
        assert_eq!(
            e,
            "\"12\" is not a valid phone number for region CN; write it in international \
             form, e.g. +86 138 0013 8000"
        );
        let e = us("12").unwrap_err().to_string();
        assert!(e.contains("region US") && e.contains("e.g. +1 "), "{e}");
        let e = cn("abc").unwrap_err().to_string();
        assert!(e.starts_with("\"abc\" is not a phone number"), "{e}");
        // Untrusted input is escaped and truncated.
        let e = cn(&format!("x\n{}", "y".repeat(500)))
            .unwrap_err()
            .to_string();
        assert!(!e.contains('\n') && e.len() < 300, "{e}");
    }

    #[test]
    fn region_parsing() {
        assert_eq!("CN".parse::<Region>(), Ok(Region::CN));
        assert_eq!("us".parse::<Region>(), Ok(Region::US));
        assert_eq!(
            " Gb ".parse::<Region>().map(|r| r.to_string()).as_deref(),
            Ok("GB")
        );
        assert_eq!(Region::default(), Region::CN);
        assert_eq!(Region::CN.calling_code(), Some(86));
        let e = "XX".parse::<Region>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown region \"XX\": use an ISO 3166 alpha-2 code such as CN or US"
        );
        for bad in ["", "C", "CHN", "86", "001", "c n"] {
            assert!(bad.parse::<Region>().is_err(), "{bad}");
        }
    }

    #[test]
    fn mask_shows_last_four() {
        let n = normalize("+86 138 0013 8000", Region::CN).unwrap();
        assert_eq!(mask(&n), "•••• 8000");
        assert_eq!(mask_text(" 12€45 "), "•••• 2€45");
        assert_eq!(mask_text("12"), "•••• 12");
        assert_eq!(n.as_str(), MOBILE);
        assert_eq!(n.digits(), "8613800138000");
    }

    proptest! {
        // Do not write proptest-regressions/ into the source tree.
        #![proptest_config(ProptestConfig {
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn never_panics(s in "\\PC{0,80}") {
            let _ = normalize(&s, Region::CN);
            let _ = normalize(&s, Region::US);
        }

        #[test]
        fn never_panics_on_number_like(s in "[+0-9 ()<>\"@;:.a-z-]{0,60}") {
            if let Ok(n) = normalize(&s, Region::CN) {
                prop_assert!(n.as_str().starts_with('+'));
                prop_assert!(n.digits().bytes().all(|b| b.is_ascii_digit()));
                let _ = mask(&n);
            }
        }

        #[test]
        fn normalized_is_fixed_point(
            d in "0?[1-9][0-9]{5,12}",
            r in prop::sample::select(vec!["CN", "US", "GB", "DE", "JP", "HK", "IN"]),
        ) {
            let region: Region = r.parse().unwrap();
            if let Ok(n) = normalize(&d, region) {
                for other in ["CN", "US", "GB", "DE", "JP", "HK", "IN"] {
                    let again = normalize(n.as_str(), other.parse().unwrap());
                    prop_assert_eq!(again.as_ref(), Ok(&n), "{} via {}", d, other);
                }
            }
        }
    }
}
