//! The one rule for free text a person types into a field that is stored and shown to
//! others (display names, temporary-password labels, ledger notes): no control
//! characters and no invisible formatting that changes how the text reads.

/// Why `text` is refused, or `None` when it is fine: C0 and C1 control characters
/// (including CR, LF, TAB, NUL and DEL), bidirectional embeddings, overrides and isolates
/// (U+202A-U+202E, U+2066-U+2069) and marks (U+200E, U+200F, U+061C), which make text
/// display in another order than it is stored, and other invisible format characters
/// (soft hyphen U+00AD, zero-width space U+200B, U+2060-U+2064, U+FEFF, the interlinear
/// annotation marks U+FFF9-U+FFFB). Zero-width joiner and non-joiner (U+200C, U+200D)
/// stay allowed: scripts such as Persian and Devanagari and emoji need them.
pub fn refusal(text: &str) -> Option<String> {
    text.chars().find_map(|c| {
        let what = if c.is_control() {
            "a control character"
        } else if matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}') {
            "a bidirectional override"
        } else if matches!(c, '\u{200E}' | '\u{200F}' | '\u{061C}') {
            "a bidirectional mark"
        } else if matches!(
            c,
            '\u{200B}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}' | '\u{00AD}'
        ) {
            "an invisible format character"
        } else {
            return None;
        };
        Some(format!("it contains {what} (U+{:04X})", c as u32))
    })
}

/// `refusal` as a sentence naming the field: `Err("the display name contains ...")`.
pub fn check(field: &str, text: &str) -> Result<(), String> {
    match refusal(text) {
        None => Ok(()),
        Some(why) => Err(format!("the {field} {}", why.trim_start_matches("it "))),
    }
}

#[cfg(test)]
mod tests {
    use super::{check, refusal};

    #[test]
    fn refuses_controls_and_bidi_but_not_scripts() {
        for bad in [
            "a\nb",
            "a\tb",
            "a\0b",
            "a\u{7F}",
            "a\u{85}b",
            "a\u{9B}b",
            "alice\u{202E}gpj.exe",
            "\u{202A}x",
            "\u{2066}x",
            "x\u{2069}",
            "\u{200E}x",
            "\u{200F}",
            "\u{061C}",
            "a\u{200B}b",
            "\u{FEFF}x",
            "a\u{00AD}b",
        ] {
            assert!(refusal(bad).is_some(), "{bad:?} passed");
        }
        for good in [
            "Alice Li",
            "李小龙",
            "Zoë O'Brien-Smith",
            "محمد",
            "नमस्ते",
            "می‌خواهم",
            "👩‍💻",
            "",
        ] {
            assert_eq!(refusal(good), None, "{good:?} refused");
        }
        assert_eq!(
            check("display name", "a\u{202E}b").unwrap_err(),
            "the display name contains a bidirectional override (U+202E)"
        );
    }
}
