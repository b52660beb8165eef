//! The temporary passwords page (`/payments`, issue 5) in a real browser: headless
//! Chromium driven through chromedriver's W3C WebDriver protocol, against the real
//! `dialgate demo` server, with the WebDriver session of tests/common/browser.rs.
//!
//! Flow: the demo balance is topped up with the CLI; `/payments` without a session shows
//! "Sign in first"; the owner signs in on `/` (simulated call), follows "Manage temporary
//! passwords", sees the balance 100.00, issues a password (1 use, spend limit 20.00) and
//! reads it from the page (shown once); the test pays 12.50 with it over HTTP; after a
//! reload the page shows 0 uses left and the balance 87.50; revoking it in the page shows
//! it revoked; a change refused by the server (409) shows "Cannot do that now".
//! Screenshots (PNG) go to the test's temporary directory, or to `DIALGATE_TEST_ARTIFACTS`.
//!
//! Needs Debian's `chromium` and `chromium-driver`, found as browser_login.rs finds them.

mod common;

use common::browser::*;
use std::path::Path;

use hyper::Method;
use serde_json::json;

// ------------------------------------------------------------------ the test

#[test]
fn browser_temporary_passwords() {
    let browser = BrowserBinaries::find();
    let tmp = tempfile::tempdir().unwrap();
    let server = DialgateDemo::start(tmp.path());
    top_up(&tmp.path().join("data").join("demo.sqlite3"), "100.00");
    let driver = ChromeDriver::start(&browser, tmp.path());
    let wd = WebDriver::new_session(&driver, &browser, tmp.path());
    payments_flow(&wd, &server, tmp.path());
}

/// `dialgate --database-url <demo db> balance top-up --username demo --amount <amount>`.
fn top_up(db: &Path, amount: &str) {
    let out = common::db::bare_cmd()
        .arg("--database-url")
        .arg(db)
        .args([
            "balance",
            "top-up",
            "--username",
            "demo",
            "--amount",
            amount,
        ])
        .output()
        .expect("run dialgate balance top-up");
    assert!(
        out.status.success(),
        "dialgate balance top-up failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn payments_flow(wd: &WebDriver, server: &Server, out: &Path) {
    let base_url = &server.base_url;

    // The page and its script are served with the same headers as the sign-in page.
    for (path, kind) in [
        ("/payments", "text/html"),
        ("/payments.js", "text/javascript"),
    ] {
        let reply = get_page(base_url, path);
        let ct = reply.header("content-type").unwrap_or_default();
        assert!(ct.starts_with(kind), "GET {path}: Content-Type {ct:?}");
    }

    // Not signed in: a link to sign in first.
    wd.desktop();
    wd.goto(&format!("{base_url}/payments"));
    wd.wait_until("\"Sign in first\"", || wd.is_displayed("#sign-in-link"));
    assert_eq!(wd.text("#sign-in-link").trim(), "Sign in first");
    assert_eq!(
        wd.exec_str("return document.getElementById('sign-in-link').getAttribute('href')"),
        "/"
    );
    assert!(!wd.is_displayed("#issue-form"));
    wd.screenshot_to(&out.join("payments-01-signed-out.png"));

    // Sign in on / with the simulated call, then follow the link.
    wd.click("#sign-in-link");
    wd.wait_until("the sign-in form", || wd.is_displayed("#login-form"));
    wd.type_into("#username", &server.username);
    wd.type_into("#password", &server.password);
    wd.click("#login-submit");
    wd.wait_until("the demo's \"Simulate the call\" button", || {
        wd.is_displayed("#simulate-call")
    });
    wd.click("#simulate-call");
    wd.wait_until("\"Signed in as ...\"", || wd.is_displayed("#signed-in"));
    wd.wait_until("the \"Manage temporary passwords\" link", || {
        wd.is_displayed("#payments-link")
    });
    assert_eq!(
        wd.text("#payments-link").trim(),
        "Manage temporary passwords"
    );
    wd.click("#payments-link");
    wd.wait_until("the temporary passwords page", || {
        wd.is_displayed("#issue-form")
    });
    assert!(wd.exec_str("return location.pathname") == "/payments");
    assert_eq!(
        wd.exec_str("return document.title"),
        "Temporary passwords · dialgate"
    );

    // The balance, in major units.
    wd.wait_until("the balance 100.00", || {
        wd.text("#balance-amount").trim() == "100.00"
    });
    let currency = wd.text("#balance-currency").trim().to_string();
    assert!(
        currency.len() == 3 && currency.chars().all(|c| c.is_ascii_uppercase()),
        "the currency must be shown (ISO code), got {currency:?}"
    );
    assert!(wd.is_displayed("#tp-empty"), "no passwords yet");

    // Every field has a label.
    let unlabelled = wd.exec_str(
        "return Array.from(document.querySelectorAll('#issue-form input, #issue-form select'))\
         .filter(e => !e.labels || e.labels.length === 0).map(e => e.id).join(',')",
    );
    assert_eq!(unlabelled, "", "form fields without a label");

    // 320 px wide works.
    wd.narrow();
    wd.wait_until("the narrow viewport", || {
        wd.exec_bool("return window.innerWidth === 320")
    });
    assert_no_horizontal_overflow(wd, "payments page at 320 px");
    wd.screenshot_to(&out.join("payments-02-form-320.png"));
    wd.desktop();

    // Issue one: 1 use, at most 20.00 in total.
    wd.type_into("#tp-label", "Browser test");
    wd.type_into("#tp-max-uses", "1");
    wd.type_into("#tp-spend-limit", "20.00");
    wd.click("#issue-submit");
    wd.wait_until("the new password", || wd.is_displayed("#issued-password"));
    let password = wd.text("#issued-password").trim().to_string();
    assert!(
        password.len() >= 8 && !password.contains(' '),
        "the password shown is {password:?}"
    );
    let note = wd.text("#issued-note");
    assert!(
        note.contains("It will not be shown again"),
        "the shown-once note reads {note:?}"
    );
    assert!(wd.is_displayed("#copy-password"));
    // Copying says how it went (headless Chromium may refuse the clipboard: either way
    // the button and the live status must say which).
    wd.click("#copy-password");
    wd.wait_until("the copy button to report", || {
        wd.text("#copy-password-label") != "Copy password"
    });
    let (label, status) = (
        wd.text("#copy-password-label"),
        wd.text("#copy-password-status"),
    );
    assert!(
        (label == "Copied" && status == "Password copied to the clipboard.")
            || (label == "Copy failed"
                && status == "Could not copy. Select the password and copy it instead."),
        "copy feedback: {label:?} / {status:?}"
    );
    let font = wd
        .exec_str("return getComputedStyle(document.getElementById('issued-password')).fontFamily");
    assert!(
        font.to_ascii_lowercase().contains("mono"),
        "the password must be in a monospace font, got {font:?}"
    );
    wd.wait_until("the new password in the list", || {
        wd.exec_bool("return document.querySelectorAll('#tp-list li[data-id]').length === 1")
    });
    let id = wd.exec_str("return document.querySelector('#tp-list li[data-id]').dataset.id");
    let row = format!("#tp-list li[data-id=\"{id}\"]");
    assert_eq!(wd.attribute(&row, "data-state"), "active");
    assert_eq!(wd.text(&format!("{row} .tp-uses")).trim(), "1");
    assert_eq!(
        wd.text(&format!("{row} .tp-limit")).trim(),
        format!("20.00 {currency}")
    );
    assert!(
        wd.text("#status").contains("issued"),
        "the status region must say it was issued, got {:?}",
        wd.text("#status")
    );
    wd.screenshot_to(&out.join("payments-03-issued.png"));
    wd.narrow();
    wd.wait_until("the narrow viewport", || {
        wd.exec_bool("return window.innerWidth === 320")
    });
    assert_no_horizontal_overflow(wd, "the new password at 320 px");
    wd.exec(
        "document.getElementById('issued').scrollIntoView()",
        json!([]),
    );
    wd.screenshot_to(&out.join("payments-03-issued-320.png"));
    wd.desktop();

    // Done hides it for good.
    wd.click("#issued-done");
    wd.wait_until("the password hidden", || !wd.is_displayed("#issued"));
    assert!(
        !wd.exec_bool_args(
            "return document.body.innerHTML.includes(arguments[0])",
            json!([password])
        ),
        "the password must leave the page after Done"
    );

    // Pay 12.50 with it.
    let pay = |key: &str| {
        request(
            Method::POST,
            &format!("{base_url}/v1/payments"),
            &[
                ("content-type", "application/json"),
                ("Idempotency-Key", key),
            ],
            &json!({"username": server.username, "password": password, "amount": 1250}).to_string(),
        )
    };
    let reply = pay("browser-payments-1");
    assert_eq!(
        reply.status,
        200,
        "the payment must be approved: {}",
        String::from_utf8_lossy(&reply.body)
    );

    // After a reload: no uses left, 7.50 of the limit left, the balance 87.50.
    wd.refresh();
    wd.wait_until("the balance 87.50", || {
        wd.is_displayed("#balance-amount") && wd.text("#balance-amount").trim() == "87.50"
    });
    wd.wait_until("the row after the payment", || wd.is_displayed(&row));
    assert_eq!(wd.text(&format!("{row} .tp-uses")).trim(), "0");
    assert_eq!(
        wd.text(&format!("{row} .tp-limit")).trim(),
        format!("7.50 {currency}")
    );
    assert_eq!(wd.attribute(&row, "data-status"), "uses_exhausted");
    wd.screenshot_to(&out.join("payments-04-after-payment.png"));

    // Revoke it in the page (asked once more, in place).
    wd.click(&format!("{row} button[data-action=\"revoke\"]"));
    wd.wait_until("the revoke confirmation", || {
        wd.is_displayed(&format!("{row} button[data-action=\"confirm-revoke\"]"))
    });
    wd.click(&format!("{row} button[data-action=\"confirm-revoke\"]"));
    wd.wait_until("the row revoked", || {
        wd.attribute(&row, "data-state") == "revoked"
    });
    assert_eq!(wd.text(&format!("{row} .tp-state")).trim(), "Revoked");
    assert!(
        !wd.is_displayed(&format!("{row} button[data-action]")),
        "a revoked password has no actions"
    );
    assert!(
        wd.text("#status").contains("revoked"),
        "the status region must say it was revoked, got {:?}",
        wd.text("#status")
    );
    let status = pay("browser-payments-2").status;
    assert_ne!(status, 200, "a revoked password must not pay");

    // A change the server refuses (409): pause a second one in the page, revoke it
    // behind the page's back, then "Resume" in the page.
    wd.clear("#tp-label");
    wd.type_into("#tp-label", "Second");
    wd.click("#issue-submit");
    wd.wait_until("the second password", || {
        wd.is_displayed("#issued-password")
    });
    wd.click("#issued-done");
    wd.wait_until("two rows", || {
        wd.exec_bool("return document.querySelectorAll('#tp-list li[data-id]').length === 2")
    });
    let second = wd.exec_str(
        "return Array.from(document.querySelectorAll('#tp-list li[data-id]'))\
         .find(li => li.dataset.state === 'active').dataset.id",
    );
    let row2 = format!("#tp-list li[data-id=\"{second}\"]");
    wd.click(&format!("{row2} button[data-action=\"pause\"]"));
    wd.wait_until("the second one paused", || {
        wd.attribute(&row2, "data-state") == "paused"
    });
    assert_eq!(wd.text(&format!("{row2} .tp-state")).trim(), "Paused");
    let cookie = wd.cookie("dialgate_session").expect("the session cookie");
    let reply = request(
        Method::POST,
        &format!("{base_url}/v1/temp-passwords/{second}/revoke"),
        &[("Cookie", &format!("dialgate_session={cookie}"))],
        "",
    );
    assert_eq!(
        reply.status,
        200,
        "revoke with the session cookie: {}",
        String::from_utf8_lossy(&reply.body)
    );
    wd.click(&format!("{row2} button[data-action=\"resume\"]"));
    wd.wait_until("\"Cannot do that now\"", || {
        wd.text("#status").contains("Cannot do that now")
    });
    wd.wait_until("the row updated to revoked", || {
        wd.attribute(&row2, "data-state") == "revoked"
    });
    assert_no_horizontal_overflow(wd, "payments list");
    wd.narrow();
    wd.wait_until("the narrow viewport", || {
        wd.exec_bool("return window.innerWidth === 320")
    });
    assert_no_horizontal_overflow(wd, "payments list at 320 px");
    wd.exec(
        "document.getElementById('list-section').scrollIntoView()",
        json!([]),
    );
    wd.screenshot_to(&out.join("payments-05-list-320.png"));
    wd.desktop();

    // No script errors and no CSP violations in the console.
    wd.assert_clean_console();
    keep_screenshots(out);
}
