//! The HTTP API's JSON bodies and the value parsers behind them, without a store:
//! byte 0 picks what the rest is.
//! - 0-3: a body (`serde_json`) of `POST /v1/login`, `/v1/temp-passwords` (then its
//!   times and `valid_for` through `issue_conditions`, `Conditions::validated`, and the
//!   times printed as the response prints them), the owner bodies, `/v1/payments` (its
//!   amount checked and printed);
//! - 4: an amount (`parse_amount`; what it accepts prints back to itself);
//! - 5: a time (`parse_time`, printed back with `rfc3339_ms`);
//! - 6: a duration (`HumanDuration`, as `--valid-for` and the config file read them).
#![no_main]

use std::str::FromStr;

use dialgate::auth::payments::{check_amount, format_amount, parse_amount};
use dialgate::config::HumanDuration;
use dialgate::gateway::{
    issue_conditions, parse_time, rfc3339_ms, IssueRequest, LoginRequest, OwnerRequest,
    PaymentRequest,
};
use libfuzzer_sys::fuzz_target;

/// 2026-11-29T00:00:00Z: a fixed "now" keeps runs reproducible.
const NOW_MS: i64 = 1_795_910_400_000;

fn issue(body: &[u8]) {
    let Ok(req) = serde_json::from_slice::<IssueRequest>(body) else {
        return;
    };
    let Ok(conditions) = issue_conditions(&req, NOW_MS) else {
        return;
    };
    let Ok(conditions) = conditions.validated(NOW_MS) else {
        return;
    };
    // What the 201 response prints.
    for ms in [conditions.valid_from, conditions.valid_until]
        .into_iter()
        .flatten()
    {
        let _ = rfc3339_ms(ms);
    }
    for minor in [conditions.spend_limit, conditions.per_payment_limit]
        .into_iter()
        .flatten()
    {
        let _ = format_amount(minor);
    }
}

fuzz_target!(|data: &[u8]| {
    let [selector, body @ ..] = data else {
        return;
    };
    let text = String::from_utf8_lossy(body);
    match selector % 7 {
        0 => {
            let _ = serde_json::from_slice::<LoginRequest>(body);
        }
        1 => issue(body),
        2 => {
            let _ = serde_json::from_slice::<OwnerRequest>(body);
        }
        3 => {
            if let Ok(req) = serde_json::from_slice::<PaymentRequest>(body) {
                let _ = req;
            }
        }
        4 => {
            if let Ok(minor) = parse_amount(&text) {
                assert!(check_amount(minor).is_ok());
                let printed = format_amount(minor);
                assert_eq!(parse_amount(&printed).ok(), Some(minor), "{printed}");
            }
            if let Ok(minor) = text.trim().parse::<i64>() {
                let _ = format_amount(minor);
            }
        }
        5 => {
            if let Ok(ms) = parse_time("t", &text) {
                let printed = rfc3339_ms(ms);
                if ms >= 0 {
                    // Printed to the second: parses back to the same second.
                    let again = parse_time("t", &printed).expect("rfc3339_ms output parses");
                    assert_eq!(again, ms - ms % 1000, "{printed}");
                }
            }
        }
        _ => {
            if let Ok(d) = HumanDuration::from_str(&text) {
                let _ = d.to_string();
            }
        }
    }
});
