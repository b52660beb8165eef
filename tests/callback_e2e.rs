//! "Call me instead", end to end against the real `dialgate serve` binary on SQLite: the
//! password step over HTTP, `POST /v1/login/{id}/callback`, the scripted AMI server
//! (tests/common/ami_server.rs, transcripts in fixtures/ami/callback/) receiving the
//! Originate to the ENROLLED number with `DIALGATE_CHALLENGE`, and Asterisk's side of the
//! answered leg played with `agi::sim::peer` against the FastAGI script `confirm`.
//! Also: a busy phone, AMI disabled or down, the rate limit, a body trying to redirect
//! the call, and `/healthz` / `/metrics`.

mod common;

use std::time::Duration;

use common::{
    ami_server::{AmiScript, ScriptedAmi},
    db::{bare_cmd, TestDb},
    free_port,
    gate::{enroll, events, exchange, login, state, with_secret, Gate, Login, PHONE, USER},
    http::{http, Reply},
};
use dialgate::agi::sim::peer::{place_call, CallOutcome, CallSpec};
use hyper::{header, Method, StatusCode};
use serde_json::{json, Value};

const DIALIN: &str = "+861055550100";
const CALLER_ID: &str = "\"dialgate\" <+861055550100>";

fn script(name: &str) -> AmiScript {
    AmiScript::load(
        &common::ami_server::ami_fixture_dir()
            .join("callback")
            .join(name),
    )
}

/// `serve` on a fresh SQLite database holding alice; `ami` = the AMI address.
fn start(db: &TestDb, ami: Option<String>) -> Gate {
    enroll(db);
    let mut args: Vec<String> = vec!["--callback-caller-id".into(), CALLER_ID.into()];
    if let Some(ami) = ami {
        args.extend([
            "--ami-address".into(),
            ami,
            "--ami-username".into(),
            "dialgate".into(),
            "--ami-secret".into(),
            "s3cret".into(),
        ]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Gate::start(&db.url(), &[DIALIN], &args)
}

async fn callback_with(gate: &Gate, login: &Login, headers: &[(&str, &str)], body: &str) -> Reply {
    http(
        Method::POST,
        &gate.url(&format!("/v1/login/{}/callback", login.id)),
        headers,
        body,
    )
    .await
}

async fn callback(gate: &Gate, login: &Login) -> Reply {
    with_secret(gate, Method::POST, login, "/callback").await
}

async fn health(gate: &Gate) -> Value {
    let reply = gate.healthz().await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    reply.json()
}

/// Waits until `/healthz` reports the AMI link in `wanted`.
async fn wait_ami(gate: &Gate, wanted: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let body = health(gate).await;
        if body["ami"]["state"] == wanted {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "AMI never {wanted}: {body}\nlog:\n{}",
            gate.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asterisk runs `AGI(agi://127.0.0.1:4573/confirm,${DIALGATE_CHALLENGE})` on the
/// answered call-back leg; the user presses `digits`.
async fn confirm_call(gate: &Gate, challenge: &str, digits: Option<&str>) -> CallOutcome {
    let spec = CallSpec {
        script: "confirm".into(),
        channel: "PJSIP/carrier-00000021".into(),
        caller: Some(DIALIN.into()),
        caller_name: Some("dialgate".into()),
        context: "dialgate-callback".into(),
        extension: "s".into(),
        args: vec![challenge.to_string()],
        uniqueid: "1700000100.33".into(),
        digits: digits.map(str::to_string),
        ..CallSpec::default()
    };
    place_call(gate.process.addr, &spec, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("the confirm call failed: {e}\nlog:\n{}", gate.log()))
}

/// Waits until the scripted AMI server got the Originate, and checks where it dials.
async fn originate_seen(ami: &ScriptedAmi, login: &Login) {
    ami.assert_played(1).await;
    let lines = ami.received();
    assert!(
        lines.contains(&format!("Channel: PJSIP/{PHONE}@carrier")),
        "the call-back goes to the enrolled number: {lines:?}"
    );
    assert!(
        lines.contains(&format!("Variable: DIALGATE_CHALLENGE={}", login.id)),
        "{lines:?}"
    );
    assert!(lines.contains(&"Async: true".to_string()), "{lines:?}");
    assert!(
        !lines.iter().any(|l| l.contains("15550000000")),
        "a number from the request was never dialled: {lines:?}"
    );
}

/// A scripted AMI server playing `fixture` (in fixtures/ami/callback/), `serve` on a
/// fresh SQLite database connected to it, and what `/healthz` said once it was.
async fn with_ami(fixture: &str) -> (ScriptedAmi, TestDb, Gate, Value) {
    let ami = ScriptedAmi::start(vec![script(fixture)]).await;
    let db = TestDb::sqlite();
    let gate = start(&db, Some(ami.addr.to_string()));
    let healthz = wait_ami(&gate, "connected").await;
    (ami, db, gate, healthz)
}

/// Asks for the call-back, which is accepted, and checks the Originate it sent.
async fn called_back(gate: &Gate, ami: &ScriptedAmi, login: &Login) -> Reply {
    let reply = callback(gate, login).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{:?}", reply.body);
    originate_seen(ami, login).await;
    reply
}

/// Asks for the call-back, which cannot be placed: 503 `callback_unavailable`.
async fn callback_unavailable(gate: &Gate, login: &Login) {
    let reply = callback(gate, login).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.json()["error"], "callback_unavailable");
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

// ---------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_callback_and_1_signs_in() {
    let (ami, db, gate, healthz) = with_ami("originate-answered.ami").await;
    assert_eq!(healthz["status"], "ok");
    assert!(healthz["ami"]["since"].as_str().unwrap().ends_with('Z'));
    let login = login(&gate).await;
    let mut sse = events(&gate, &login).await;
    assert_eq!(sse.next(Duration::from_secs(5)).await.0, "pending");

    // No secret: nothing to call.
    let anonymous = callback_with(&gate, &login, &[], "").await;
    assert_eq!(anonymous.status, StatusCode::NOT_FOUND);
    // The request cannot choose the number.
    let redirected = callback_with(
        &gate,
        &login,
        &[
            ("authorization", &login.auth()),
            ("content-type", "application/json"),
        ],
        &json!({ "number": "+15550000000" }).to_string(),
    )
    .await;
    assert_eq!(redirected.status, StatusCode::BAD_REQUEST);
    assert_eq!(ami.received().len(), 6, "only the Login reached AMI");

    let reply = called_back(&gate, &ami, &login).await;
    assert_eq!(reply.json()["status"], "calling");
    assert_eq!(reply.json()["phone_hint"], "•••• 8000");

    // A second call-back right away: rate limited (per account and per number).
    let again = callback(&gate, &login).await;
    assert_eq!(
        again.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{:?}",
        again.body
    );
    let retry: u64 = again.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");

    // The answered call reached no verdict by itself.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(state(&gate, &login).await["state"], "pending");

    let outcome = confirm_call(&gate, &login.id, Some("1")).await;
    assert_eq!(outcome.result.as_deref(), Some("verified"), "{outcome:?}");
    assert!(outcome
        .exchanges
        .iter()
        .any(|e| e.command.starts_with("GET DATA beep 10000 1")));
    let (event, _) = sse.next(Duration::from_secs(5)).await;
    assert_eq!(event, "verified");
    assert_eq!(state(&gate, &login).await["state"], "verified");
    let session = exchange(&gate, &login).await;
    assert_eq!(session.status, StatusCode::OK, "{:?}", session.body);
    assert_eq!(session.json()["username"], USER);

    // The same call-back cannot confirm twice.
    let replay = confirm_call(&gate, &login.id, Some("1")).await;
    assert_eq!(replay.result.as_deref(), Some("no_pending"));

    let metrics = gate.get("/metrics").await;
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    for (name, value) in [
        ("dialgate_callbacks_total{outcome=\"requested\"}", 1.0),
        ("dialgate_callbacks_total{outcome=\"answered\"}", 1.0),
        ("dialgate_callbacks_total{outcome=\"confirmed\"}", 1.0),
        ("dialgate_callbacks_total{outcome=\"rate_limited\"}", 1.0),
        ("dialgate_ami_reconnects", 0.0),
        ("dialgate_ami_connected", 1.0),
    ] {
        assert_eq!(metric(&text, name), Some(value), "{name} in:\n{text}");
    }
    assert_eq!(db.audit_count("callback"), 3, "requested, denied, answered");
    assert_eq!(db.audit_count("callback_call"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_callback_and_2_refuses() {
    let (ami, _db, gate, _) = with_ami("originate-answered.ami").await;
    let login = login(&gate).await;
    called_back(&gate, &ami, &login).await;
    let outcome = confirm_call(&gate, &login.id, Some("2")).await;
    assert_eq!(outcome.result.as_deref(), Some("refused"), "{outcome:?}");
    let status = state(&gate, &login).await;
    assert_eq!(status["state"], "failed");
    assert_eq!(status["reason"], "callback_refused");
    let session = exchange(&gate, &login).await;
    assert_eq!(session.status, StatusCode::GONE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_on_the_answered_callback_refuses() {
    let (ami, _db, gate, _) = with_ami("originate-answered.ami").await;
    let login = login(&gate).await;
    called_back(&gate, &ami, &login).await;
    let outcome = confirm_call(&gate, &login.id, None).await;
    assert_eq!(outcome.result.as_deref(), Some("refused"), "{outcome:?}");
    assert_eq!(state(&gate, &login).await["reason"], "callback_refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_phone_fails_the_login_with_the_reason() {
    let (ami, _db, gate, _) = with_ami("originate-busy.ami").await;
    let login = login(&gate).await;
    let mut sse = events(&gate, &login).await;
    assert_eq!(sse.next(Duration::from_secs(5)).await.0, "pending");
    called_back(&gate, &ami, &login).await;
    let (event, data) = sse.next(Duration::from_secs(10)).await;
    assert_eq!(event, "failed", "{data}");
    assert_eq!(data["reason"], "callback_busy");
    let status = state(&gate, &login).await;
    assert_eq!(status["reason"], "callback_busy");
    // A late confirm call for it changes nothing.
    let outcome = confirm_call(&gate, &login.id, Some("1")).await;
    assert_eq!(outcome.result.as_deref(), Some("no_pending"));
    assert_eq!(state(&gate, &login).await["state"], "failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ami_disabled_answers_503_and_health_says_disabled() {
    let db = TestDb::sqlite();
    let gate = start(&db, None);
    let healthz = health(&gate).await;
    assert_eq!(healthz["status"], "ok");
    assert_eq!(healthz["ami"], "disabled");
    let login = login(&gate).await;
    callback_unavailable(&gate, &login).await;
    // No call-back was placed: `confirm` cannot verify the login.
    let outcome = confirm_call(&gate, &login.id, Some("1")).await;
    assert_eq!(outcome.result.as_deref(), Some("no_pending"));
    assert_eq!(state(&gate, &login).await["state"], "pending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ami_link_down_answers_503_and_health_says_reconnecting() {
    let db = TestDb::sqlite();
    // Nothing listens there.
    let gate = start(&db, Some(free_port().to_string()));
    let healthz = wait_ami(&gate, "reconnecting").await;
    assert_eq!(
        healthz["status"], "ok",
        "AMI never makes the node unhealthy"
    );
    let login = login(&gate).await;
    callback_unavailable(&gate, &login).await;
    assert_eq!(state(&gate, &login).await["state"], "pending");
}

#[test]
fn channel_template_must_contain_the_number() {
    for template in ["PJSIP/carrier", "PJSIP/{number}@c\nAction: Command"] {
        let out = bare_cmd()
            .args(["serve", "--callback-channel", template])
            .args([
                "--ami-address",
                "127.0.0.1:5038",
                "--ami-username",
                "dialgate",
            ])
            .timeout(Duration::from_secs(20))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{template:?} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--callback-channel"), "{stderr}");
    }
}
