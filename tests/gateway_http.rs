//! The HTTP gateway over real TCP, with a real SQLite file: login, status, SSE, session
//! exchange, forward-auth, logout, limits, node-to-node signals, health.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{
    http::{fetch, Reply},
    node::Node,
};
use dialgate::{
    auth::{
        accounts::{enroll, Enrollment},
        login::{self},
        signal::ChallengeSignal,
    },
    cli::enroll::rules,
    config::{Config, GlobalOptions},
    gateway::{sign, GatewayConfig, RateLimit},
    store::{DatabaseUrl, OpenOptions, Store},
};
use hyper::{
    body::Incoming,
    header::{self, HeaderValue},
    Method, Response, StatusCode,
};
use serde_json::json;

const USER: &str = "alice";
const PASSWORD: &str = "correct horse battery";
const SIGNAL_KEY: &[u8] = b"test signal key shared by the nodes";

/// A data directory with an enrolled user, and the store on it.
struct Db {
    _dir: tempfile::TempDir,
    config: Config,
    store: Store,
}

fn db() -> Db {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::resolve(&GlobalOptions {
        data_dir: Some(dir.path().to_path_buf()),
        ..GlobalOptions::default()
    })
    .unwrap();
    let store = Store::open(&config.database_url, &OpenOptions::default()).unwrap();
    let enrollment = Enrollment::prepare(
        USER,
        PASSWORD,
        "Alice",
        "+8613800138000",
        vec![],
        &rules(&config),
    )
    .unwrap();
    enroll(&store, &enrollment).unwrap();
    Db {
        _dir: dir,
        config,
        store,
    }
}

/// A gateway serving `store` until dropped (tests/common/node.rs).
async fn start(store: Store, configure: impl FnOnce(&mut GatewayConfig)) -> Node {
    Node::start(store, configure).await
}

async fn send(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Response<Incoming> {
    common::http::send(method, url, headers, body, Duration::from_secs(10)).await
}

async fn call(method: Method, url: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    fetch(
        method,
        url,
        headers,
        body.to_string(),
        Duration::from_secs(10),
    )
    .await
}

async fn login(node: &Node, username: &str, password: &str) -> Reply {
    call(
        Method::POST,
        &format!("{}/v1/login", node.url),
        &[("content-type", "application/json")],
        &json!({ "username": username, "password": password }).to_string(),
    )
    .await
}

/// Logs in and returns (challenge id, secret).
async fn challenge(node: &Node) -> (String, String) {
    let reply = login(node, USER, PASSWORD).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let body = reply.json();
    (
        body["challenge_id"].as_str().unwrap().to_string(),
        body["secret"].as_str().unwrap().to_string(),
    )
}

fn bearer(secret: &str) -> String {
    format!("Bearer {secret}")
}

use common::sse::SseReader as Sse;

impl Sse {
    async fn open(node: &Node, id: &str, secret: &str) -> Sse {
        let auth = bearer(secret);
        let response = send(
            Method::GET,
            &format!("{}/v1/login/{id}/events", node.url),
            &[("authorization", &auth)],
            Bytes::new(),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            HeaderValue::from_static("text/event-stream")
        );
        Sse::new(response.into_body())
    }
}

async fn verify(store: &Store, id: &str) {
    let (store, id) = (store.clone(), id.to_string());
    let done = tokio::task::spawn_blocking(move || login::mark_verified(&store, &id))
        .await
        .unwrap()
        .unwrap();
    assert!(done, "the challenge was pending");
}

#[tokio::test]
async fn login_answers_the_number_and_sets_a_strict_cookie() {
    let db = db();
    let node = start(db.store.clone(), |_| {}).await;
    let reply = login(&node, "Alice", PASSWORD).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let body = reply.json();
    assert_eq!(body["challenge_id"].as_str().unwrap().len(), 32);
    assert!(body["secret"].as_str().unwrap().len() >= 43);
    assert_eq!(body["dial_number"], "+861055550100");
    assert_eq!(body["dial_display"], "+86 10 5555 0100");
    assert_eq!(body["phone_hint"], "•••• 8000");
    assert!(body.get("code").is_none(), "no code unless codes are on");
    let expires = humantime::parse_rfc3339(body["expires_at"].as_str().unwrap()).unwrap();
    let left = expires
        .duration_since(std::time::SystemTime::now())
        .unwrap();
    assert!(left > Duration::from_secs(170) && left <= Duration::from_secs(181));

    let cookies = reply.cookies();
    assert_eq!(cookies.len(), 1);
    let cookie = &cookies[0];
    assert_eq!(
        reply.cookie("dialgate_challenge").as_deref(),
        body["secret"].as_str()
    );
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/v1/login", "Secure"] {
        assert!(cookie.contains(attr), "{attr} missing in {cookie}");
    }
    let max_age: u64 = cookie
        .split("; ")
        .find_map(|a| a.strip_prefix("Max-Age="))
        .unwrap()
        .parse()
        .unwrap();
    assert!((175..=180).contains(&max_age), "{max_age}");
}

#[tokio::test]
async fn codes_and_plain_http_cookies_when_configured() {
    let db = db();
    let node = start(db.store.clone(), |c| {
        c.secure_cookies = false;
        c.login.code_digits = 6;
    })
    .await;
    let reply = login(&node, USER, PASSWORD).await;
    assert_eq!(reply.status, StatusCode::OK);
    let code = reply.json()["code"].as_str().unwrap().to_string();
    assert!(code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()));
    assert!(!reply.cookies()[0].contains("Secure"));
}

#[tokio::test]
async fn wrong_password_and_unknown_user_look_the_same() {
    let db = db();
    let node = start(db.store.clone(), |_| {}).await;
    let wrong = login(&node, USER, "not the password").await;
    let unknown = login(&node, "mallory", PASSWORD).await;
    let invalid = login(&node, "not a valid name!", PASSWORD).await;
    for reply in [&wrong, &unknown, &invalid] {
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.body, wrong.body);
        assert!(reply.cookies().is_empty());
    }
    assert_eq!(wrong.json(), json!({ "error": "invalid_credentials" }));
}

#[tokio::test]
async fn failures_from_one_address_are_limited() {
    let db = db();
    let node = start(db.store.clone(), |c| {
        c.login_rate = RateLimit {
            per_ip: 3,
            per_account: 100,
            window: Duration::from_secs(60),
            max_lockout: Duration::from_secs(600),
        };
    })
    .await;
    for user in ["alice", "bob", "carol"] {
        assert_eq!(
            login(&node, user, "guess").await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    // Locked out now, even with the right password.
    let reply = login(&node, USER, PASSWORD).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!((55..=60).contains(&retry), "{retry}");
    let body = reply.json();
    assert_eq!(body["error"], "rate_limited");
    assert_eq!(body["retry_after"], retry);
    let metrics = call(Method::GET, &format!("{}/metrics", node.url), &[], "").await;
    let text = String::from_utf8(metrics.body.to_vec()).unwrap();
    assert!(text.contains("outcome=\"rate_limited\""), "{text}");
}

#[tokio::test]
async fn status_needs_the_secret() {
    let db = db();
    let node = start(db.store.clone(), |_| {}).await;
    let (id, secret) = challenge(&node).await;
    let url = format!("{}/v1/login/{id}", node.url);

    let with_bearer = call(
        Method::GET,
        &url,
        &[("authorization", &bearer(&secret))],
        "",
    )
    .await;
    assert_eq!(with_bearer.status, StatusCode::OK);
    let body = with_bearer.json();
    assert_eq!(body["state"], "pending");
    assert!(humantime::parse_rfc3339(body["expires_at"].as_str().unwrap()).is_ok());

    let cookie = format!("other=1; dialgate_challenge={secret}");
    let with_cookie = call(Method::GET, &url, &[("cookie", &cookie)], "").await;
    assert_eq!(with_cookie.status, StatusCode::OK);
    assert_eq!(with_cookie.json()["state"], "pending");

    for headers in [
        vec![("authorization", "Bearer wrong-secret")],
        vec![("cookie", "dialgate_challenge=wrong")],
        vec![],
    ] {
        let reply = call(Method::GET, &url, &headers, "").await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        assert_eq!(reply.json(), json!({ "error": "not_found" }));
    }
    let unknown = format!("{}/v1/login/{}", node.url, "0".repeat(32));
    let reply = call(
        Method::GET,
        &unknown,
        &[("authorization", &bearer(&secret))],
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let events = call(
        Method::GET,
        &format!("{url}/events"),
        &[("authorization", "Bearer wrong")],
        "",
    )
    .await;
    assert_eq!(events.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn verified_login_becomes_a_session_once() {
    let db = db();
    let node = start(db.store.clone(), |_| {}).await;
    let (id, secret) = challenge(&node).await;
    let auth = bearer(&secret);
    let session_url = format!("{}/v1/login/{id}/session", node.url);

    let early = call(Method::POST, &session_url, &[("authorization", &auth)], "").await;
    assert_eq!(early.status, StatusCode::CONFLICT);
    assert_eq!(early.json(), json!({ "error": "not_verified" }));
    let wrong = call(
        Method::POST,
        &session_url,
        &[("authorization", "Bearer nope")],
        "",
    )
    .await;
    assert_eq!(wrong.status, StatusCode::NOT_FOUND);

    let mut sse = Sse::open(&node, &id, &secret).await;
    let pending = sse.event("pending", Duration::from_secs(2)).await;
    assert_eq!(pending["state"], "pending");
    assert!(pending["expires_at"].is_string());

    let started = Instant::now();
    verify(&db.store, &id).await;
    node.gateway.hub.challenge_changed(&id, None);
    let verified = sse.event("verified", Duration::from_secs(1)).await;
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(verified["state"], "verified");
    assert!(sse.ends(Duration::from_secs(1)).await, "the stream ends");
    assert_eq!(node.gateway.hub.waiting(), 0);

    // The browser path: the challenge cookie.
    let cookie = format!("dialgate_challenge={secret}");
    let session = call(Method::POST, &session_url, &[("cookie", &cookie)], "").await;
    assert_eq!(session.status, StatusCode::OK, "{:?}", session.body);
    let body = session.json();
    assert_eq!(body["username"], USER);
    assert!(humantime::parse_rfc3339(body["expires_at"].as_str().unwrap()).is_ok());
    let token = session.cookie("dialgate_session").unwrap();
    assert!(token.len() >= 43);
    let set = session.cookies();
    let session_cookie = set
        .iter()
        .find(|c| c.starts_with("dialgate_session="))
        .unwrap();
    for attr in [
        "HttpOnly",
        "SameSite=Lax",
        "Path=/;",
        "Secure",
        "Max-Age=43200",
    ] {
        assert!(
            session_cookie.contains(attr),
            "{attr} missing: {session_cookie}"
        );
    }
    let cleared = set
        .iter()
        .find(|c| c.starts_with("dialgate_challenge="))
        .expect("the challenge cookie is cleared");
    assert!(cleared.contains("Max-Age=0"));

    let again = call(Method::POST, &session_url, &[("authorization", &auth)], "").await;
    assert_eq!(again.status, StatusCode::GONE);
    assert_eq!(again.json(), json!({ "error": "gone" }));
    let status = call(
        Method::GET,
        &format!("{}/v1/login/{id}", node.url),
        &[("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(status.json()["state"], "consumed");

    // Forward-auth with the cookie and with a bearer token, then logout.
    let auth_url = format!("{}/v1/auth", node.url);
    let session_cookie = format!("dialgate_session={token}");
    let ok = call(Method::GET, &auth_url, &[("cookie", &session_cookie)], "").await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.header("x-dialgate-user"), Some(USER));
    let ok = call(
        Method::GET,
        &auth_url,
        &[("authorization", &bearer(&token))],
        "",
    )
    .await;
    assert_eq!(ok.header("x-dialgate-user"), Some(USER));
    let none = call(Method::GET, &auth_url, &[], "").await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert!(none.header("x-dialgate-user").is_none());

    let out = call(
        Method::POST,
        &format!("{}/v1/logout", node.url),
        &[("cookie", &session_cookie)],
        "",
    )
    .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    assert!(out.cookies()[0].starts_with("dialgate_session=;"));
    assert!(out.cookies()[0].contains("Max-Age=0"));
    let after = call(Method::GET, &auth_url, &[("cookie", &session_cookie)], "").await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);

    let metrics = call(Method::GET, &format!("{}/metrics", node.url), &[], "").await;
    let text = String::from_utf8(metrics.body.to_vec()).unwrap();
    assert!(text.contains("dialgate_sessions_opened_total 1"), "{text}");
    assert!(text.contains("outcome=\"challenge\""), "{text}");
}

#[tokio::test]
async fn stream_reports_failure_and_expiry() {
    let db = db();
    let node = start(db.store.clone(), |c| {
        c.login.challenge_ttl = Duration::from_secs(1)
    })
    .await;
    let (id, secret) = challenge(&node).await;
    let mut sse = Sse::open(&node, &id, &secret).await;
    sse.event("pending", Duration::from_secs(1)).await;
    let started = Instant::now();
    let expired = sse.event("expired", Duration::from_secs(3)).await;
    assert_eq!(expired["state"], "expired");
    assert!(started.elapsed() < Duration::from_millis(1500));

    // A failure found by the periodic re-read, with no signal at all.
    let node = start(db.store.clone(), |_| {}).await;
    let (id, secret) = challenge(&node).await;
    let mut sse = Sse::open(&node, &id, &secret).await;
    sse.event("pending", Duration::from_secs(1)).await;
    let (store, failed_id) = (db.store.clone(), id.clone());
    tokio::task::spawn_blocking(move || login::mark_failed(&store, &failed_id, "wrong_code"))
        .await
        .unwrap()
        .unwrap();
    let failed = sse.event("failed", Duration::from_secs(3)).await;
    assert_eq!(failed["reason"], "wrong_code");
}

#[tokio::test]
async fn bad_bodies_are_400_not_panics() {
    let db = db();
    let node = start(db.store.clone(), |_| {}).await;
    let url = format!("{}/v1/login", node.url);
    let json_type = [("content-type", "application/json")];
    for body in [
        "{not json",
        "",
        "[]",
        r#"{"username":"alice"}"#,
        r#"{"username":1,"password":2}"#,
    ] {
        let reply = call(Method::POST, &url, &json_type, body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        let json = reply.json();
        assert_eq!(json["error"], "bad_request");
        assert!(json["detail"].is_string());
    }
    let huge = json!({ "username": "alice", "password": "x".repeat(64 * 1024) }).to_string();
    let reply = call(Method::POST, &url, &json_type, &huge).await;
    assert!(
        reply.status == StatusCode::PAYLOAD_TOO_LARGE || reply.status == StatusCode::BAD_REQUEST,
        "{}",
        reply.status
    );
    assert_eq!(reply.json()["error"], "bad_request");
    let unknown = call(Method::GET, &format!("{}/nowhere", node.url), &[], "").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn signed_signal_wakes_the_node_holding_the_browser() {
    let db = db();
    // Two nodes on one database, sharing the key.
    let a = start(db.store.clone(), |c| {
        c.signal_key = Some(SIGNAL_KEY.to_vec())
    })
    .await;
    let store_b = Store::open(&db.config.database_url, &OpenOptions::default()).unwrap();
    let b = start(store_b.clone(), |c| {
        c.signal_key = Some(SIGNAL_KEY.to_vec())
    })
    .await;
    let signal_url = format!("{}/v1/internal/signal", a.url);

    let (id, secret) = challenge(&a).await;
    let body = json!({ "challenge_id": id }).to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for (timestamp, signature) in [
        (now, sign(b"another key", now, body.as_bytes())),
        (now - 120, sign(SIGNAL_KEY, now - 120, body.as_bytes())),
        (now, "not hex".to_string()),
    ] {
        let ts = timestamp.to_string();
        let reply = call(
            Method::POST,
            &signal_url,
            &[
                ("x-dialgate-timestamp", &ts),
                ("x-dialgate-signature", &signature),
            ],
            &body,
        )
        .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    let unsigned = call(Method::POST, &signal_url, &[], &body).await;
    assert_eq!(unsigned.status, StatusCode::UNAUTHORIZED);
    let ts = now.to_string();
    let good = sign(SIGNAL_KEY, now, body.as_bytes());
    let signed = [
        ("x-dialgate-timestamp", ts.as_str()),
        ("x-dialgate-signature", good.as_str()),
    ];
    assert_eq!(
        call(Method::POST, &signal_url, &signed, &body).await.status,
        StatusCode::NO_CONTENT
    );

    // The browser waits on A; the call is taken "on B", which signals A.
    let mut sse = Sse::open(&a, &id, &secret).await;
    sse.event("pending", Duration::from_secs(1)).await;
    let started = Instant::now();
    verify(&store_b, &id).await;
    b.gateway.hub.challenge_changed(&id, Some(&a.url));
    sse.event("verified", Duration::from_secs(1)).await;
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(b.gateway.hub.waiting() == 0);

    // Without a key the route does not exist.
    let plain = start(db.store.clone(), |_| {}).await;
    let reply = call(
        Method::POST,
        &format!("{}/v1/internal/signal", plain.url),
        &signed,
        &body,
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn health_metrics_and_pages() {
    let db = db();
    let node = start(db.store.clone(), |_| {}).await;
    let health = call(Method::GET, &format!("{}/healthz", node.url), &[], "").await;
    assert_eq!(health.status, StatusCode::OK);
    // No AMI configured: call-backs are off, and that never makes the node unhealthy.
    assert_eq!(
        health.json(),
        json!({ "status": "ok", "database": "ok", "ami": "disabled" })
    );

    let metrics = call(Method::GET, &format!("{}/metrics", node.url), &[], "").await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(metrics
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));

    let index = call(Method::GET, &format!("{}/", node.url), &[], "").await;
    assert_eq!(index.status, StatusCode::OK);
    assert!(index
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert_eq!(index.header("cache-control"), Some("no-store"));
    assert_eq!(
        index.header("content-security-policy"),
        Some("default-src 'self'")
    );
    assert_eq!(index.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(index.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(index.header("x-frame-options"), Some("DENY"));
    let js = call(Method::GET, &format!("{}/app.js", node.url), &[], "").await;
    assert!(js
        .header("content-type")
        .unwrap()
        .starts_with("text/javascript"));
    let css = call(Method::GET, &format!("{}/style.css", node.url), &[], "").await;
    assert!(css.header("content-type").unwrap().starts_with("text/css"));
}

#[tokio::test]
async fn store_failures_fail_closed() {
    // A database without tables: every query fails.
    let dir = tempfile::tempdir().unwrap();
    let url = DatabaseUrl::Sqlite(dir.path().join("empty.sqlite3"));
    let store = Store::open(
        &url,
        &OpenOptions {
            migrate: false,
            ..OpenOptions::default()
        },
    )
    .unwrap();
    let node = start(store, |_| {}).await;
    let reply = login(&node, USER, PASSWORD).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.json(), json!({ "error": "unavailable" }));
    let reply = call(
        Method::GET,
        &format!("{}/v1/auth", node.url),
        &[("cookie", "dialgate_session=whatever")],
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    let reply = call(
        Method::GET,
        &format!("{}/v1/login/{}", node.url, "a".repeat(32)),
        &[("authorization", "Bearer x")],
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);

    // No dial-in number configured.
    let db = db();
    let node = start(db.store.clone(), |c| c.login.dialin_numbers.clear()).await;
    let reply = login(&node, USER, PASSWORD).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.json(), json!({ "error": "no_dialin_number" }));
}
