//! How calls end, as a real Asterisk plays them (the transcripts in `fixtures/dialin/`,
//! Asterisk's lines taken from `/work/shared/fixtures/asterisk-recorded`), against the
//! real `dialgate serve` on SQLite and on MariaDB: a hang-up during GET DATA is `hangup`,
//! silence `no_input`, wrong digits still `wrong_code`, each on the page, in the audit
//! row and in the log; without an AGI argument the matched extension wins over the raw
//! dialled string; an `invalid_number` audit row names the number it refused.

mod common;

use std::path::Path;

use common::{
    db::{on_both_backends, TestDb},
    gate::{enroll, events, login, state, Gate, Login, PHONE},
};
use dialgate::agi::sim::{
    peer::{place_call, CallSpec},
    transcript::{replay, ReplayOptions, Transcript},
};
use std::time::Duration;

on_both_backends! {
    async
    scenario_hangup_during_get_data => hangup_during_get_data_sqlite, hangup_during_get_data_mysql;
    scenario_hangup_without_hangup_line => hangup_without_hangup_line_sqlite, hangup_without_hangup_line_mysql;
    scenario_silence_then_wrong_digits => silence_then_wrong_digits_sqlite, silence_then_wrong_digits_mysql;
    scenario_extension_before_dnid => extension_before_dnid_sqlite, extension_before_dnid_mysql;
    scenario_invalid_number_names_the_field => invalid_number_names_the_field_sqlite, invalid_number_names_the_field_mysql;
}

/// The one number the transcripts dial.
const DID: &str = "+861055550100";
const CHANNEL: &str = "PJSIP/carrier-0000000a";

fn setup(db: &TestDb, extra: &[&str]) -> Gate {
    enroll(db);
    Gate::start(&db.url(), &[DID], extra)
}

fn answer_mode_with_code(db: &TestDb) -> Gate {
    setup(db, &["--mode", "answer", "--code-digits", "4"])
}

/// Loads `fixtures/dialin/<name>`, with `WRONG_CODE` replaced by `wrong`.
fn transcript(name: &str, wrong: &str) -> Transcript {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/dialin")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .replace("WRONG_CODE", wrong);
    Transcript::parse(name, text.as_bytes()).unwrap()
}

/// Plays Asterisk's side of the transcript; dialgate must send exactly its lines.
async fn play(gate: &Gate, name: &str, wrong: &str) -> Option<String> {
    let t = transcript(name, wrong);
    match replay(&t, gate.agi, ReplayOptions::default()).await {
        Ok(report) => report.result,
        Err(e) => panic!("{name}: {e}\nlog:\n{}", gate.log()),
    }
}

/// The `call` audit rows with this outcome whose detail contains `needle`.
/// The `call` audit rows with `outcome` whose detail contains `needle`, once they are
/// `expected` (or after 5 s): a verdict decided before the store is audited after the
/// caller's socket closes.
fn call_rows(db: &TestDb, outcome: &str, needle: &str, expected: i64) -> i64 {
    assert!(outcome.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
    assert!(!needle.contains('\''));
    db.query_i64_until(
        &format!(
            "SELECT COUNT(*) AS n FROM audit_events WHERE kind = 'call' AND outcome = '{outcome}' \
             AND detail LIKE '%{needle}%'"
        ),
        expected,
    )
}

async fn code_login(gate: &Gate) -> Login {
    let login = login(gate).await;
    assert_eq!(login.dial_number, DID);
    login
}

/// The page's status and stream say failed with `reason`; the audit row has the outcome.
async fn failed_with(db: &TestDb, gate: &Gate, login: &Login, reason: &str) {
    let body = state(gate, login).await;
    assert_eq!(body["state"], "failed", "{body}");
    assert_eq!(body["reason"], reason, "{body}");
    let needle = format!("\"challenge_id\":\"{}\"", login.id);
    assert_eq!(call_rows(db, reason, &needle, 1), 1, "audit row {reason}");
    let log = gate.log();
    assert!(
        log.lines()
            .any(|l| l.contains("verify call") && l.contains(reason)),
        "the log names {reason}:\n{log}"
    );
}

async fn scenario_hangup_during_get_data(db: &TestDb) {
    let gate = answer_mode_with_code(db);
    let login = code_login(&gate).await;
    let mut sse = events(&gate, &login).await;
    assert_eq!(sse.next(Duration::from_secs(5)).await.0, "pending");
    let result = play(&gate, "code-bye-during-get-data.agi", "").await;
    assert_eq!(result.as_deref(), Some("hangup"));
    let (event, data) = sse.next(Duration::from_secs(3)).await;
    assert_eq!(event, "failed");
    assert_eq!(data["reason"], "hangup");
    failed_with(db, &gate, &login, "hangup").await;
    assert_eq!(call_rows(db, "wrong_code", "", 0), 0);
}

async fn scenario_hangup_without_hangup_line(db: &TestDb) {
    let gate = answer_mode_with_code(db);
    let login = code_login(&gate).await;
    let result = play(&gate, "code-bye-agisighup-no.agi", "").await;
    assert_eq!(result.as_deref(), Some("hangup"));
    failed_with(db, &gate, &login, "hangup").await;
}

/// Silence is `no_input`; wrong digits afterwards are still `wrong_code`.
async fn scenario_silence_then_wrong_digits(db: &TestDb) {
    let gate = answer_mode_with_code(db);
    let login = code_login(&gate).await;
    let result = play(&gate, "code-silence.agi", "").await;
    assert_eq!(result.as_deref(), Some("no_input"));
    failed_with(db, &gate, &login, "no_input").await;
    assert_eq!(call_rows(db, "wrong_code", "", 0), 0);

    let login = code_login(&gate).await;
    let code = login.code.clone().expect("the page shows a code");
    let wrong: String = code
        .bytes()
        .map(|b| char::from(b'0' + (b - b'0' + 1) % 10))
        .collect();
    let result = play(&gate, "code-wrong-digits.agi", &wrong).await;
    assert_eq!(result.as_deref(), Some("wrong_code"));
    failed_with(db, &gate, &login, "wrong_code").await;
}

async fn scenario_extension_before_dnid(db: &TestDb) {
    let gate = setup(db, &[]);
    let login = code_login(&gate).await;
    let result = play(&gate, "goto-short-code-no-argument.agi", "").await;
    assert_eq!(result.as_deref(), Some("verified"));
    assert_eq!(state(&gate, &login).await["state"], "verified");
}

async fn scenario_invalid_number_names_the_field(db: &TestDb) {
    let gate = setup(db, &[]);
    let login = code_login(&gate).await;
    let call = |caller: &str, dialled: &str| CallSpec {
        script: "verify".into(),
        channel: CHANNEL.into(),
        caller: Some(caller.into()),
        args: vec![dialled.into()],
        ..CallSpec::default()
    };
    for (spec, field, text) in [
        (call("12345", DID), "caller", "12345"),
        (call(PHONE, "12"), "dialled", "12"),
    ] {
        let outcome = place_call(gate.agi, &spec, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(outcome.result.as_deref(), Some("invalid_number"));
        let needle = format!("\"field\":\"{field}\"%\"text\":\"{text}\"");
        assert_eq!(
            call_rows(db, "invalid_number", &needle, 1),
            1,
            "the audit row names the {field} number"
        );
    }
    assert_eq!(state(&gate, &login).await["state"], "pending");
    let log = gate.log();
    assert!(
        log.contains("field=\"caller\"") || log.contains("field=caller"),
        "{log}"
    );
    assert!(
        !log.contains(&PHONE[1..]),
        "the log masks the caller's number:\n{log}"
    );
}
