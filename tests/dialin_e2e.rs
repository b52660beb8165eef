//! The whole dial-in login as a user and Asterisk see it, against the real `dialgate
//! serve` binary on SQLite and on MariaDB: username and password over HTTP, then a real
//! FastAGI call to `verify` (played by `agi::sim::peer`), then the session cookie and
//! forward-auth. Also: the refusals (wrong caller, wrong number, withheld, untrusted
//! trunk, expired, replay, missing secret, wrong code, invalid number), the database
//! going away mid-flow (fail closed, then recover) and two nodes sharing one database.

mod common;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use common::{
    db::{on_both_backends, Backend, DbProxy, ProxyMode, TestDb},
    free_port,
    gate::{enroll, events, exchange, exchange_with, login_reply, state, Gate, Login, PHONE, USER},
    http::{http, Reply},
};
use dialgate::agi::sim::{
    peer::{place_call, place_call_observed, CallOutcome, CallSpec},
    transcript::Direction,
};
use hyper::{Method, StatusCode};
use serde_json::json;

on_both_backends! {
    async
    scenario_success => success_sqlite, success_mysql;
    scenario_wrong_caller_or_number => wrong_caller_or_number_sqlite, wrong_caller_or_number_mysql;
    scenario_withheld => withheld_sqlite, withheld_mysql;
    scenario_untrusted_trunk => untrusted_trunk_sqlite, untrusted_trunk_mysql;
    scenario_expired => expired_sqlite, expired_mysql;
    scenario_replay => replay_sqlite, replay_mysql;
    scenario_exchange_needs_secret => exchange_needs_secret_sqlite, exchange_needs_secret_mysql;
    scenario_code_mode => code_mode_sqlite, code_mode_mysql;
    scenario_invalid_number => invalid_number_sqlite, invalid_number_mysql;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn database_stops_mid_flow_mysql() {
    scenario_database_stops(&TestDb::mysql()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_share_the_database_mysql() {
    scenario_two_nodes(&TestDb::mysql()).await;
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

const OTHER_PHONE: &str = "+8613900139000";
const POOL: [&str; 2] = ["+861055550100", "+861055550101"];
const CHANNEL: &str = "PJSIP/carrier-0000001a";
const SIGNAL_KEY: &str = "a signal key the two nodes share, 32+";

/// Starts alice's login, which must get a number from the pool.
async fn login(gate: &Gate) -> Login {
    let login = common::gate::login(gate).await;
    assert!(
        POOL.contains(&login.dial_number.as_str()),
        "dial number {} is from the pool",
        login.dial_number
    );
    login
}

/// GET /v1/auth with a session cookie (or none).
async fn forward_auth(gate: &Gate, session: Option<&str>) -> Reply {
    let cookie = session.map(|s| format!("dialgate_session={s}"));
    let headers: Vec<(&str, &str)> = cookie.iter().map(|c| ("cookie", c.as_str())).collect();
    http(Method::GET, &gate.url("/v1/auth"), &headers, "").await
}

/// Exchanges a verified login and checks the session works for forward-auth.
async fn open_session(gate: &Gate, login: &Login) -> String {
    let reply = exchange(gate, login).await;
    assert_eq!(reply.status, StatusCode::OK, "exchange: {:?}", reply.body);
    assert_eq!(reply.json()["username"], USER);
    let (token, set_cookie) = reply
        .set_cookie("dialgate_session")
        .expect("the exchange sets dialgate_session");
    assert!(token.len() >= 43, "{set_cookie}");
    for attr in ["HttpOnly", "Path=/", "SameSite=Lax"] {
        assert!(set_cookie.contains(attr), "{attr} missing: {set_cookie}");
    }
    assert!(
        !set_cookie.contains("Secure"),
        "--insecure-cookies: {set_cookie}"
    );
    let auth = forward_auth(gate, Some(&token)).await;
    assert_eq!(auth.status, StatusCode::OK);
    assert_eq!(auth.header("x-dialgate-user"), Some(USER));
    token
}

/// The exchange is refused as gone (410), without a session cookie.
async fn exchange_gone(gate: &Gate, login: &Login) -> Reply {
    let reply = exchange(gate, login).await;
    assert_eq!(reply.status, StatusCode::GONE, "{:?}", reply.body);
    assert!(reply.cookie("dialgate_session").is_none());
    reply
}

/// The call Asterisk makes on the trusted trunk: caller, dialled number as `${EXTEN}`.
fn call_from(caller: Option<&str>, dialled: &str) -> CallSpec {
    CallSpec {
        script: "verify".into(),
        channel: CHANNEL.into(),
        caller: caller.map(str::to_string),
        args: vec![dialled.to_string()],
        ..CallSpec::default()
    }
}

async fn dial(agi: SocketAddr, spec: &CallSpec) -> CallOutcome {
    place_call(agi, spec, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("the call to {agi} failed: {e}"))
}

/// Places the call and returns DIALGATE_RESULT (which must be set).
async fn verdict(gate: &Gate, spec: &CallSpec) -> String {
    let outcome = dial(gate.agi, spec).await;
    outcome.result.unwrap_or_else(|| {
        panic!(
            "no DIALGATE_RESULT for {spec:?}: {:?}\nlog:\n{}",
            outcome.exchanges,
            gate.log()
        )
    })
}

/// A database already holding alice, and `serve` on it.
fn setup(db: &TestDb, extra: &[&str]) -> Gate {
    enroll(db);
    Gate::start(&db.url(), &POOL, extra)
}

/// The `call` audit rows with this verdict that name this challenge.
fn call_audit_rows(db: &TestDb, verdict: &str, challenge_id: &str) -> i64 {
    assert!(verdict.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
    assert!(challenge_id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    db.query_i64(&format!(
        "SELECT COUNT(*) AS n FROM audit_events WHERE kind = 'call' AND outcome = '{verdict}' \
         AND detail LIKE '%\"challenge_id\":\"{challenge_id}\"%'"
    ))
}

fn other_pool_number(number: &str) -> &'static str {
    if number == POOL[0] {
        POOL[1]
    } else {
        POOL[0]
    }
}

// ---------------------------------------------------------------------------------------
// 1. The happy path
// ---------------------------------------------------------------------------------------

async fn scenario_success(db: &TestDb) {
    let gate = setup(db, &[]);
    let started = Instant::now();
    let login = login(&gate).await;
    let mut sse = events(&gate, &login).await;
    let (event, data) = sse.next(Duration::from_secs(5)).await;
    assert_eq!(
        (event.as_str(), &data["state"]),
        ("pending", &json!("pending"))
    );

    let outcome = dial(gate.agi, &call_from(Some(PHONE), &login.dial_number)).await;
    assert_eq!(outcome.result.as_deref(), Some("verified"), "{outcome:?}");
    assert!(!outcome.answered, "missed-call mode never answers");
    let call_ended = Instant::now();
    let (event, data) = sse.next(Duration::from_secs(5)).await;
    assert_eq!(event, "verified", "{data}");
    assert_eq!(data["state"], "verified");
    let waited = call_ended.elapsed();
    assert!(
        waited < Duration::from_secs(1),
        "same node: SSE woken at once, took {waited:?}"
    );
    assert_eq!(state(&gate, &login).await["state"], "verified");
    assert_eq!(
        call_audit_rows(db, "verified", &login.id),
        1,
        "the verification is committed with its audit row"
    );

    open_session(&gate, &login).await;
    assert_eq!(state(&gate, &login).await["state"], "consumed");
    assert_eq!(db.count("sessions"), 1);
    eprintln!(
        "success ({:?}): login to session in {:?} (call {:?})",
        db.backend(),
        started.elapsed(),
        outcome.duration
    );
}

// ---------------------------------------------------------------------------------------
// 2. The wrong phone, or the right phone on the wrong number
// ---------------------------------------------------------------------------------------

async fn scenario_wrong_caller_or_number(db: &TestDb) {
    let gate = setup(db, &[]);
    let login = login(&gate).await;

    let wrong_caller = call_from(Some(OTHER_PHONE), &login.dial_number);
    assert_eq!(verdict(&gate, &wrong_caller).await, "no_pending");
    assert_eq!(
        db.query_i64(
            "SELECT COUNT(*) AS n FROM audit_events WHERE kind = 'call' AND outcome = 'no_pending' \
             AND detail LIKE '%\"caller\":\"+8613900139000\"%'"
        ),
        1,
        "a refused call is audited too"
    );
    assert_eq!(state(&gate, &login).await["state"], "pending");
    let reply = exchange(&gate, &login).await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{:?}", reply.body);
    assert_eq!(reply.json()["error"], "not_verified");
    assert!(reply.cookie("dialgate_session").is_none());

    let wrong_number = call_from(Some(PHONE), other_pool_number(&login.dial_number));
    assert_eq!(verdict(&gate, &wrong_number).await, "no_pending");
    assert_eq!(state(&gate, &login).await["state"], "pending");
    assert_eq!(exchange(&gate, &login).await.status, StatusCode::CONFLICT);

    // Neither refused call used the login up: the right call still opens it.
    let right = call_from(Some(PHONE), &login.dial_number);
    assert_eq!(verdict(&gate, &right).await, "verified");
    open_session(&gate, &login).await;
}

// ---------------------------------------------------------------------------------------
// 3. Withheld numbers
// ---------------------------------------------------------------------------------------

async fn scenario_withheld(db: &TestDb) {
    let gate = setup(db, &[]);
    let login = login(&gate).await;

    let restricted = CallSpec {
        calling_pres: 32,
        ..call_from(Some(PHONE), &login.dial_number)
    };
    assert_eq!(verdict(&gate, &restricted).await, "withheld");
    for caller in [Some("anonymous"), None] {
        let spec = call_from(caller, &login.dial_number);
        assert_eq!(verdict(&gate, &spec).await, "withheld", "caller {caller:?}");
    }
    assert_eq!(
        db.query_i64_until(
            "SELECT COUNT(*) AS n FROM audit_events WHERE kind = 'call' AND outcome = 'withheld'",
            3
        ),
        3,
        "each refused call is audited (after its connection closes)"
    );
    assert_eq!(state(&gate, &login).await["state"], "pending");
    assert_eq!(exchange(&gate, &login).await.status, StatusCode::CONFLICT);
}

// ---------------------------------------------------------------------------------------
// 4. Caller ID from a channel that is not the trusted trunk
// ---------------------------------------------------------------------------------------

async fn scenario_untrusted_trunk(db: &TestDb) {
    let gate = setup(db, &[]);
    let login = login(&gate).await;

    // carrier2 shares carrier's prefix: matching must be exact, not by prefix.
    for channel in [
        "SIP/carrier2-00000001",
        "PJSIP/carrier2-00000001",
        "SIP/carrier-0000001a",
    ] {
        let spec = CallSpec {
            channel: channel.into(),
            ..call_from(Some(PHONE), &login.dial_number)
        };
        assert_eq!(verdict(&gate, &spec).await, "untrusted", "{channel}");
    }
    assert_eq!(state(&gate, &login).await["state"], "pending");
    assert_eq!(exchange(&gate, &login).await.status, StatusCode::CONFLICT);
}

// ---------------------------------------------------------------------------------------
// 5. The login expired before the call
// ---------------------------------------------------------------------------------------

async fn scenario_expired(db: &TestDb) {
    let gate = setup(db, &[]);
    let login = login(&gate).await;
    assert_eq!(state(&gate, &login).await["state"], "pending");

    let past = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 1_000;
    let changed = db.execute(&format!(
        "UPDATE login_challenges SET expires_at = {past} WHERE id = '{}'",
        login.id
    ));
    assert_eq!(changed, 1);

    let spec = call_from(Some(PHONE), &login.dial_number);
    assert_eq!(verdict(&gate, &spec).await, "no_pending");
    assert_eq!(state(&gate, &login).await["state"], "expired");
    exchange_gone(&gate, &login).await;
    assert_eq!(db.count("sessions"), 0);
}

// ---------------------------------------------------------------------------------------
// 6. Replays: a second call and a second exchange
// ---------------------------------------------------------------------------------------

async fn scenario_replay(db: &TestDb) {
    let gate = setup(db, &[]);
    let login = login(&gate).await;
    let spec = call_from(Some(PHONE), &login.dial_number);
    assert_eq!(verdict(&gate, &spec).await, "verified");
    assert_eq!(verdict(&gate, &spec).await, "no_pending");
    open_session(&gate, &login).await;

    assert_eq!(verdict(&gate, &spec).await, "no_pending");
    let again = exchange_gone(&gate, &login).await;
    assert_eq!(again.json()["error"], "gone");
    assert_eq!(db.count("sessions"), 1);
}

// ---------------------------------------------------------------------------------------
// 7. The exchange needs the secret; forward-auth needs the session
// ---------------------------------------------------------------------------------------

async fn scenario_exchange_needs_secret(db: &TestDb) {
    let gate = setup(db, &[]);
    let login = login(&gate).await;
    let spec = call_from(Some(PHONE), &login.dial_number);
    assert_eq!(verdict(&gate, &spec).await, "verified");

    let wrong = format!("Bearer {}x", login.secret);
    let attempts: [&[(&str, &str)]; 4] = [
        &[],
        &[("authorization", &wrong)],
        &[("authorization", "Bearer ")],
        &[("cookie", "dialgate_challenge=not-the-secret")],
    ];
    for headers in attempts {
        let reply = exchange_with(&gate, &login, headers).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{headers:?}");
        assert!(reply.cookie("dialgate_session").is_none());
    }
    assert_eq!(state(&gate, &login).await["state"], "verified");

    let auth = forward_auth(&gate, None).await;
    assert_eq!(auth.status, StatusCode::UNAUTHORIZED);
    assert!(auth.header("x-dialgate-user").is_none());
    let bogus = forward_auth(&gate, Some("bm90IGEgc2Vzc2lvbg")).await;
    assert_eq!(bogus.status, StatusCode::UNAUTHORIZED);

    // The refused exchanges used nothing up; the secret's holder still gets the session.
    open_session(&gate, &login).await;
}

// ---------------------------------------------------------------------------------------
// 8. Answer mode with a keypad code
// ---------------------------------------------------------------------------------------

async fn scenario_code_mode(db: &TestDb) {
    let gate = setup(db, &["--mode", "answer", "--code-digits", "4"]);

    let first = login(&gate).await;
    let code = first.code.clone().expect("login returns the code");
    assert!(code.len() == 4 && code.bytes().all(|b| b.is_ascii_digit()));
    let spec = CallSpec {
        digits: Some(code.clone()),
        ..call_from(Some(PHONE), &first.dial_number)
    };
    let outcome = dial(gate.agi, &spec).await;
    assert_eq!(outcome.result.as_deref(), Some("verified"), "{outcome:?}");
    assert!(outcome.answered, "answer mode answers");
    assert!(
        outcome
            .exchanges
            .iter()
            .any(|e| e.command.starts_with("GET DATA")),
        "the code was asked for: {:?}",
        outcome.exchanges
    );
    open_session(&gate, &first).await;

    let second = login(&gate).await;
    let code = second.code.clone().expect("login returns the code");
    let wrong: String = code
        .bytes()
        .map(|b| char::from(b'0' + (b - b'0' + 1) % 10))
        .collect();
    let mut sse = events(&gate, &second).await;
    assert_eq!(sse.next(Duration::from_secs(5)).await.0, "pending");
    let spec = CallSpec {
        digits: Some(wrong),
        ..call_from(Some(PHONE), &second.dial_number)
    };
    let outcome = dial(gate.agi, &spec).await;
    assert_eq!(outcome.result.as_deref(), Some("wrong_code"), "{outcome:?}");
    assert!(outcome.answered);
    assert_eq!(call_audit_rows(db, "verified", &first.id), 1);
    assert_eq!(call_audit_rows(db, "wrong_code", &second.id), 1);
    let (event, data) = sse.next(Duration::from_secs(3)).await;
    assert_eq!(event, "failed");
    assert_eq!(data["reason"], "wrong_code");
    let body = state(&gate, &second).await;
    assert_eq!(body["state"], "failed");
    assert_eq!(body["reason"], "wrong_code");
    assert_eq!(exchange(&gate, &second).await.status, StatusCode::GONE);

    // The failed login stays failed: the right code afterwards finds nothing.
    let spec = CallSpec {
        digits: Some(code),
        ..call_from(Some(PHONE), &second.dial_number)
    };
    assert_eq!(verdict(&gate, &spec).await, "no_pending");
}

// ---------------------------------------------------------------------------------------
// 9. A caller number that is no phone number
// ---------------------------------------------------------------------------------------

async fn scenario_invalid_number(db: &TestDb) {
    let gate = setup(db, &[]);
    let login = login(&gate).await;
    let spec = call_from(Some("12345"), &login.dial_number);
    assert_eq!(verdict(&gate, &spec).await, "invalid_number");
    assert_eq!(state(&gate, &login).await["state"], "pending");
}

// ---------------------------------------------------------------------------------------
// 10. MariaDB goes away mid-flow (through a TCP forwarder the test can cut)
// ---------------------------------------------------------------------------------------

async fn scenario_database_stops(db: &TestDb) {
    assert_eq!(db.backend(), Backend::Mysql);
    enroll(db);
    let proxy = DbProxy::to(db).await;
    let gate = Gate::start(&proxy.url, &POOL, &[]);

    let health = gate.healthz().await;
    assert_eq!(health.status, StatusCode::OK);
    let login = login(&gate).await;
    let spec = call_from(Some(PHONE), &login.dial_number);

    proxy.set(ProxyMode::Refuse);
    let started = Instant::now();
    let mut result_after = None;
    let outcome = place_call_observed(gate.agi, &spec, Duration::from_secs(30), |dir, line| {
        if dir == Direction::FromServer && line.contains("DIALGATE_RESULT") {
            result_after.get_or_insert(started.elapsed());
        }
    })
    .await
    .expect("the call completes");
    let call_took = started.elapsed();
    let result_after = result_after.expect("DIALGATE_RESULT was set");
    assert_eq!(
        outcome.result.as_deref(),
        Some("error"),
        "fail closed: {outcome:?}\nlog:\n{}",
        gate.log()
    );
    assert!(
        result_after < Duration::from_secs(15) && call_took < Duration::from_secs(15),
        "the call with the database down hung: result after {result_after:?}, \
         ended after {call_took:?}"
    );
    let started = Instant::now();
    let health = gate.healthz().await;
    let health_took = started.elapsed();
    assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE);
    let started = Instant::now();
    let refused = login_reply(&gate).await;
    let login_took = started.elapsed();
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        refused.body
    );
    assert!(refused.cookie("dialgate_challenge").is_none());
    assert!(health_took < Duration::from_secs(15) && login_took < Duration::from_secs(15));
    eprintln!(
        "database down: DIALGATE_RESULT=error after {result_after:?}, call ended after \
         {call_took:?}, /healthz 503 in {health_took:?}, login 503 in {login_took:?}"
    );

    proxy.set(ProxyMode::Forward);
    let started = Instant::now();
    let outcome = dial(gate.agi, &spec).await;
    assert_eq!(
        outcome.result.as_deref(),
        Some("verified"),
        "after the database came back: {outcome:?}\nlog:\n{}",
        gate.log()
    );
    let recovered = started.elapsed();
    let health = gate.healthz().await;
    assert_eq!(health.status, StatusCode::OK);
    open_session(&gate, &login).await;
    eprintln!("database back: verified in {recovered:?}");
}

// ---------------------------------------------------------------------------------------
// 11. Two nodes on one database: the call reaches B, the browser waits on A
// ---------------------------------------------------------------------------------------

async fn scenario_two_nodes(db: &TestDb) {
    assert_eq!(db.backend(), Backend::Mysql);
    enroll(db);
    let url = db.url();
    let node = |http: SocketAddr, key: &str| {
        let node_url = format!("http://{http}");
        Gate::start_on(
            &url,
            &POOL,
            http,
            &["--node-url", &node_url, "--signal-key", key],
        )
    };
    let a = node(free_port(), SIGNAL_KEY);
    let b = node(free_port(), SIGNAL_KEY);
    let wrong_key = "not the key the other nodes share!!";
    let b_wrong = node(free_port(), wrong_key);

    // The signal: B tells A at once.
    let first = login(&a).await;
    let mut sse = events(&a, &first).await;
    assert_eq!(sse.next(Duration::from_secs(5)).await.0, "pending");
    let call_started = Instant::now();
    let outcome = dial(b.agi, &call_from(Some(PHONE), &first.dial_number)).await;
    assert_eq!(outcome.result.as_deref(), Some("verified"), "{outcome:?}");
    let call_ended = Instant::now();
    let (event, _) = sse.next(Duration::from_secs(5)).await;
    let signalled = call_ended.elapsed();
    let from_call_start = call_started.elapsed();
    assert_eq!(event, "verified");
    assert!(
        signalled < Duration::from_secs(1),
        "A's browser heard of B's call after {signalled:?}\nA:\n{}\nB:\n{}",
        a.log(),
        b.log()
    );
    open_session(&a, &first).await;

    // A signal A refuses (keys differ): A's stream still finds out from the store.
    let second = login(&a).await;
    let mut sse = events(&a, &second).await;
    assert_eq!(sse.next(Duration::from_secs(5)).await.0, "pending");
    let outcome = dial(b_wrong.agi, &call_from(Some(PHONE), &second.dial_number)).await;
    assert_eq!(outcome.result.as_deref(), Some("verified"), "{outcome:?}");
    let call_ended = Instant::now();
    let (event, _) = sse.next(Duration::from_secs(5)).await;
    let polled = call_ended.elapsed();
    assert_eq!(event, "verified");
    assert!(
        polled < Duration::from_secs(3),
        "A's poll found the verification after {polled:?}"
    );
    tokio::task::block_in_place(|| b_wrong.process.wait_for_log("keys differ"));
    open_session(&b, &second).await;
    eprintln!(
        "two nodes: signalled {signalled:?} after the call ended ({from_call_start:?} after \
         it began), by the store poll {polled:?} after the call ended"
    );
}
