//! Caller-ID text to E.164 in a few default regions: `normalize` (and the caller-ID
//! wrapper forms of `parse_caller_id` before it), `mask`, and `Region::from_str`.
//! A result is `+` and 1-15 digits, and normalising it again gives it back.
#![no_main]

use std::str::FromStr;

use dialgate::agi::env::parse_caller_id;
use dialgate::phone::{mask, normalize, Region};
use libfuzzer_sys::fuzz_target;

const REGIONS: [&str; 8] = ["CN", "US", "GB", "DE", "IN", "FR", "BR", "JP"];

fn check(text: &str, region: Region) {
    let Ok(e164) = normalize(text, region) else {
        return;
    };
    let s = e164.as_str();
    assert!(s.starts_with('+'), "{s:?}");
    let digits = e164.digits();
    assert!((1..=15).contains(&digits.len()), "{s:?}");
    assert!(digits.bytes().all(|b| b.is_ascii_digit()), "{s:?}");
    assert_eq!(normalize(s, region).as_ref(), Ok(&e164), "not idempotent");
    assert_eq!(
        normalize(s, Region::US).as_ref(),
        Ok(&e164),
        "region-dependent E.164"
    );
    let masked = mask(&e164);
    assert!(masked.ends_with(&digits[digits.len().saturating_sub(4)..]));
}

fuzz_target!(|data: &[u8]| {
    let [selector, rest @ ..] = data else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let region = Region::from_str(REGIONS[*selector as usize % REGIONS.len()]).unwrap();
    if let Ok(r) = Region::from_str(&text) {
        assert_eq!(r.code().len(), 2);
        let _ = (r.calling_code(), r.example());
    }
    check(&text, region);
    if let Some(number) = parse_caller_id(&text).number {
        check(&number, region);
    }
});
