//! The sign-in page in a real browser: headless Chromium driven through chromedriver's
//! W3C WebDriver protocol, against the real `dialgate demo` server.
//!
//! Flow: open `/`, a wrong password shows the generic error, the right one shows the
//! number to call (a `tel:` link) and the masked enrolled phone, "Simulate the call"
//! signs in ("Signed in as demo"), "Sign out" returns to the form. Screenshots (PNG) go
//! to the test's temporary directory, or to `DIALGATE_TEST_ARTIFACTS` when that is set.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`apt-get install -y chromium
//! chromium-driver`); `.ci/run` installs them. The binaries are looked up in
//! `DIALGATE_CHROMEDRIVER` / `CHROMEDRIVER` and `DIALGATE_CHROMIUM` / `CHROME_BIN`
//! first, then /usr/bin/chromedriver and /usr/bin/chromium, then `$PATH`. Missing
//! binaries fail the test with that install command; the test never skips.
//!
//! The WebDriver session (fantoccini) and the demo server process live in
//! tests/common/browser.rs.

mod common;

use common::browser::*;
use std::path::Path;

use serde_json::json;

// ------------------------------------------------------------------ the tests

#[test]
fn browser_login_with_simulated_call() {
    let browser = BrowserBinaries::find();
    let tmp = tempfile::tempdir().unwrap();
    let server = DialgateDemo::start(tmp.path());
    let driver = ChromeDriver::start(&browser, tmp.path());
    let wd = WebDriver::new_session(&driver, &browser, tmp.path());
    login_flow(
        &wd,
        &server.base_url,
        &server.username,
        &server.password,
        tmp.path(),
    );
}

#[test]
fn credentials_line_parsing() {
    assert_eq!(
        parse_credentials("username: demo  password: s3cr3t-Pw"),
        (Some("demo".into()), Some("s3cr3t-Pw".into()))
    );
    assert_eq!(
        parse_credentials("  Demo account -> Username = \"demo\", Password = `a b`"),
        (Some("demo".into()), Some("a".into()))
    );
    assert_eq!(parse_credentials("password:x1"), (None, Some("x1".into())));
    assert_eq!(
        parse_credentials("User: alice"),
        (Some("alice".into()), None)
    );
    assert_eq!(parse_credentials("listening on 127.0.0.1:80"), (None, None));
    assert_eq!(
        parse_credentials("password hashing uses argon2id"),
        (None, None)
    );
}

fn login_flow(wd: &WebDriver, base_url: &str, username: &str, password: &str, out: &Path) {
    // The page is served with a CSP that forbids inline script and style.
    get_page(base_url, "/");

    wd.desktop();
    wd.goto(&format!("{base_url}/"));
    wd.wait_until("the sign-in form", || wd.is_displayed("#login-form"));
    assert_eq!(wd.exec_str("return document.title"), "Sign in · dialgate");

    // 320 px wide: nothing wider than the viewport.
    wd.narrow();
    wd.wait_until("the narrow viewport", || {
        wd.exec_bool("return window.innerWidth === 320")
    });
    assert_no_horizontal_overflow(wd, "login step at 320 px");

    // A wrong password: the generic message, in the live region, without layout shift.
    let card_height =
        wd.exec_f64("return document.getElementById('main').getBoundingClientRect().height");
    wd.type_into("#username", username);
    wd.type_into("#password", "definitely-not-the-password");
    wd.click("#login-submit");
    wd.wait_until("the invalid-credentials message", || {
        wd.text("#login-error")
            .contains("Invalid username or password")
    });
    let live = wd
        .exec_str("return document.getElementById('login-error').getAttribute('aria-live') || ''");
    assert!(
        !live.is_empty(),
        "the login error must be in an aria-live region"
    );
    assert!(
        wd.is_displayed("#login-form"),
        "a wrong password must keep the form"
    );
    let after =
        wd.exec_f64("return document.getElementById('main').getBoundingClientRect().height");
    assert!(
        (after - card_height).abs() < 1.0,
        "showing the error moved the layout: card height {card_height} -> {after}"
    );
    wd.screenshot_to(&out.join("01-wrong-password-320.png"));

    // The right password: the number to call.
    wd.clear("#password");
    wd.type_into("#password", password);
    wd.click("#login-submit");
    wd.wait_until("the number to call", || wd.is_displayed("#dial-link"));
    let href = wd.attribute("#dial-link", "href");
    assert!(
        href.starts_with("tel:+")
            && href[5..].chars().all(|c| c.is_ascii_digit())
            && href.len() > 8,
        "the number must be a tel: link to an E.164 number, got {href:?}"
    );
    let shown_digits: String = wd
        .text("#dial-display")
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    assert_eq!(
        format!("tel:+{shown_digits}"),
        href,
        "the number shown must be the number dialled"
    );
    let hint = wd.text("#phone-hint");
    assert!(
        hint.contains("Call from your phone") && hint.contains('•'),
        "the enrolled phone must be shown masked, got {hint:?}"
    );
    assert_eq!(
        wd.exec_str("return document.activeElement ? document.activeElement.id : ''"),
        "call-heading",
        "focus must move to the call step's heading"
    );
    wd.wait_until("the waiting status", || {
        wd.text("#call-status").contains("Waiting for your call")
    });
    let countdown = wd.text("#countdown");
    assert!(
        countdown.len() == 5 && countdown.as_bytes()[2] == b':' && countdown != "00:00",
        "the countdown must read mm:ss, got {countdown:?}"
    );
    wd.wait_until("the demo's \"Simulate the call\" button", || {
        wd.is_displayed("#simulate-call")
    });
    assert_no_horizontal_overflow(wd, "call step at 320 px");
    wd.screenshot_to(&out.join("02-call-320.png"));

    // The simulated call signs in.
    wd.desktop();
    wd.click("#simulate-call");
    wd.wait_until("\"Signed in as ...\"", || wd.is_displayed("#signed-in"));
    let signed_in = wd.text("#signed-in");
    assert_eq!(signed_in.trim(), format!("Signed in as {username}"));
    assert_eq!(
        wd.exec_str("return document.activeElement ? document.activeElement.id : ''"),
        "done-heading",
        "focus must move to the signed-in step's heading"
    );
    let png = wd.screenshot_to(&out.join("03-signed-in.png"));
    assert!(
        png.len() > 1000,
        "suspiciously small screenshot ({} bytes)",
        png.len()
    );

    // Dark mode follows prefers-color-scheme.
    let light = wd.exec_str("return getComputedStyle(document.body).backgroundColor");
    wd.cdp(
        "Emulation.setEmulatedMedia",
        json!({"features": [{"name": "prefers-color-scheme", "value": "dark"}]}),
    );
    let dark = wd.exec_str("return getComputedStyle(document.body).backgroundColor");
    assert_ne!(light, dark, "the page must follow prefers-color-scheme");
    wd.screenshot_to(&out.join("04-signed-in-dark.png"));
    wd.cdp("Emulation.setEmulatedMedia", json!({"features": []}));

    // Sign out returns to the form.
    wd.click("#logout");
    wd.wait_until("the sign-in form after signing out", || {
        wd.is_displayed("#login-form")
    });
    assert!(!wd.is_displayed("#signed-in"));

    // No script errors and no CSP violations in the console.
    wd.assert_clean_console();
    keep_screenshots(out);
}
