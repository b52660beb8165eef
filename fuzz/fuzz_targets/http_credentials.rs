//! The credentials the gateway reads from request headers: `Authorization: Bearer` and
//! the `Cookie` pairs (challenge secret, session token), plus the challenge id shape
//! check. Input: lines; the first byte of each picks the header (even: Cookie, odd:
//! Authorization), the rest is its value (lines that are not valid header values are
//! dropped, as hyper would refuse them). The first line is also the path id.
#![no_main]

use dialgate::auth::plausible_challenge_id;
use dialgate::gateway::{
    bearer, challenge_secret, cookie, session_token, CHALLENGE_COOKIE, SESSION_COOKIE,
};
use http::{header, HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

fn non_empty(v: &Option<String>) {
    assert!(v.as_ref().is_none_or(|v| !v.is_empty()));
}

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    if let Some(first) = data.split(|&b| b == b'\n').next() {
        let _ = plausible_challenge_id(&String::from_utf8_lossy(first));
    }
    for line in data.split(|&b| b == b'\n') {
        let [selector, value @ ..] = line else {
            continue;
        };
        let Ok(value) = HeaderValue::from_bytes(value) else {
            continue;
        };
        let name = if selector % 2 == 0 {
            header::COOKIE
        } else {
            header::AUTHORIZATION
        };
        headers.append(name, value);
    }
    let b = bearer(&headers);
    non_empty(&b);
    if let Some(token) = &b {
        assert_eq!(token.trim(), token, "untrimmed {token:?}");
    }
    let challenge = cookie(&headers, CHALLENGE_COOKIE);
    let session = cookie(&headers, SESSION_COOKIE);
    non_empty(&challenge);
    non_empty(&session);
    assert_eq!(challenge_secret(&headers), b.clone().or(challenge));
    assert_eq!(session_token(&headers), session.or(b));
});
