//! Temporary passwords and payments over HTTP (real TCP, a real SQLite file): issue,
//! list/pause/resume/revoke (with the long-term password and with a session), payments
//! with every decline reason, idempotency keys (also concurrent), a max_uses race, and
//! the failed-payment limiter.

mod common;

use std::{sync::Arc, time::Duration};

use common::{
    db::DataDir,
    http::{fetch, Reply},
};
use dialgate::{
    auth::{
        login::{self},
        payments,
    },
    gateway::{self, GatewayConfig, RateLimit},
    store::{OpenOptions, Store},
};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

const USER: &str = "alice";
const OTHER: &str = "bob";
const PASSWORD: &str = "correct horse battery";
const KEY: [u8; 32] = [9; 32];
const OPENING: i64 = 100_000;

/// A SQLite data directory with `alice` (balance [`OPENING`]) and `bob` (empty).
fn db() -> DataDir {
    let db = DataDir::open(&OpenOptions {
        max_connections: 16,
        connect_timeout: Duration::from_secs(30),
        ..OpenOptions::default()
    });
    for (name, display) in [(USER, "Alice"), (OTHER, "Bob")] {
        db.enroll(name, PASSWORD, display, "+8613800138000");
    }
    payments::top_up(
        &db.store,
        USER,
        OPENING,
        Some("opening"),
        dialgate::store::now_ms(),
    )
    .unwrap();
    db
}

/// A gateway serving on a loopback port until dropped, with its store.
struct Node {
    url: String,
    store: Store,
    _gateway: common::node::Node,
    _db: DataDir,
}

/// A gateway on a fresh [`db`], configured by `configure`.
async fn start(configure: impl FnOnce(&mut GatewayConfig)) -> Node {
    let db = db();
    let gateway = common::node::Node::start(db.store.clone(), |config| {
        config.temp_password_key = KEY.to_vec();
        configure(config);
    })
    .await;
    Node {
        url: gateway.url.clone(),
        store: db.store.clone(),
        _gateway: gateway,
        _db: db,
    }
}

const JSON: (&str, &str) = ("content-type", "application/json");

/// alice's username and `password`, the body that proves who she is.
fn alice(password: &str) -> Value {
    json!({ "username": USER, "password": password })
}

/// alice's credentials and these conditions: the body that issues with them.
fn alice_with(conditions: &Value) -> Value {
    let mut body = alice(PASSWORD);
    body.as_object_mut()
        .unwrap()
        .extend(conditions.as_object().unwrap().clone());
    body
}

impl Node {
    /// `method path` with exactly these headers and this body.
    async fn raw(&self, method: Method, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        let url = format!("{}{path}", self.url);
        fetch(
            method,
            &url,
            headers,
            body.to_string(),
            Duration::from_secs(30),
        )
        .await
    }

    async fn post(&self, path: &str, headers: &[(&str, &str)], body: &Value) -> Reply {
        let mut all = vec![JSON];
        all.extend_from_slice(headers);
        self.raw(Method::POST, path, &all, &body.to_string()).await
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.raw(Method::GET, path, headers, "").await
    }

    /// Issues with the long-term password; the 201 body.
    async fn issue(&self, conditions: Value) -> Value {
        let reply = self
            .post("/v1/temp-passwords", &[], &alice_with(&conditions))
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        reply.json()
    }

    async fn pay(&self, password: &str, amount: i64, key: Option<&str>) -> Reply {
        let headers: Vec<(&str, &str)> = key.map(|k| ("idempotency-key", k)).into_iter().collect();
        self.post(
            "/v1/payments",
            &headers,
            &json!({ "username": USER, "password": password, "amount": amount }),
        )
        .await
    }

    async fn balance(&self) -> i64 {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || payments::balance(&store, USER).unwrap().balance)
            .await
            .unwrap()
    }

    /// A signed-in session of `alice` (password step, the call verified, exchanged).
    async fn session_cookie(&self) -> String {
        let store = self.store.clone();
        let token = tokio::task::spawn_blocking(move || {
            let settings = common::node::login_settings();
            let start = login::start(&store, &settings, USER, PASSWORD, None).unwrap();
            assert!(login::mark_verified(&store, &start.challenge_id).unwrap());
            login::exchange(&store, &settings, &start.challenge_id, &start.secret, None)
                .unwrap()
                .token
        })
        .await
        .unwrap();
        format!("{}={token}", gateway::SESSION_COOKIE)
    }
}

fn password_of(issued: &Value) -> String {
    issued["password"].as_str().unwrap().to_string()
}

#[track_caller]
fn approved(reply: &Reply) -> Value {
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let body = reply.json();
    assert_eq!(body["status"], "approved", "{body}");
    assert!(body["payment_id"].as_i64().unwrap() > 0);
    body
}

#[track_caller]
fn declined(reply: &Reply, reason: &str) {
    assert_eq!(
        reply.status,
        StatusCode::PAYMENT_REQUIRED,
        "{:?}",
        reply.body
    );
    let body = reply.json();
    assert_eq!(body["status"], "declined", "{body}");
    assert_eq!(body["reason"], reason, "{body}");
}

#[track_caller]
fn error(reply: &Reply, status: StatusCode, code: &str) {
    assert_eq!(reply.status, status, "{:?}", reply.body);
    assert_eq!(reply.json()["error"], code, "{:?}", reply.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn issue_then_pay_with_the_temporary_password() {
    let node = start(|_| {}).await;
    let issued = node
        .issue(json!({
            "label": "  cleaner  ",
            "valid_for": 3600,
            "max_uses": 3,
            "spend_limit": 1000,
            "per_payment_limit": 600,
        }))
        .await;
    let password = password_of(&issued);
    assert_eq!(password.len(), 19, "{issued}");
    assert_eq!(issued["label"], "cleaner");
    assert_eq!(issued["currency"], "CNY");
    assert_eq!(issued["max_uses"], 3);
    assert_eq!(issued["remaining_uses"], 3);
    assert_eq!(issued["spend_limit"], 1000);
    assert_eq!(issued["per_payment_limit"], 600);
    assert_eq!(issued["state"], "active");
    assert_eq!(issued["status"], "usable");
    assert!(issued["valid_from"].is_null());
    let until = issued["valid_until"].as_str().unwrap();
    assert!(until.ends_with('Z') && until.len() == 20, "{until}");
    assert!(issued["id"].as_i64().unwrap() > 0);

    // Typed loosely (lower case, spaces) it still works.
    let typed = password.to_lowercase().replace('-', " ");
    let body = approved(&node.pay(&typed, 250, None).await);
    assert_eq!(body["remaining_uses"], 2);
    assert_eq!(body["remaining_limit"], 750);
    assert_eq!(body["amount"], 250);
    assert!(body.get("balance").is_none(), "{body}");
    assert_eq!(node.balance().await, OPENING - 250);

    // The long-term password pays too (default) and sees the balance.
    let body = approved(&node.pay(PASSWORD, 100, None).await);
    assert_eq!(body["balance"], OPENING - 350);
    assert!(body["remaining_uses"].is_null());

    // Explicit times, with an offset.
    let issued = node
        .issue(json!({ "valid_from": "2020-01-01T08:00:00+08:00",
                       "valid_until": "2999-01-01T00:00:00Z" }))
        .await;
    assert_eq!(issued["valid_from"], "2020-01-01T00:00:00Z");
    assert_eq!(issued["valid_until"], "2999-01-01T00:00:00Z");
    assert!(issued["max_uses"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn issue_refusals() {
    let node = start(|_| {}).await;
    let wrong = node
        .post("/v1/temp-passwords", &[], &alice("wrong password here"))
        .await;
    error(&wrong, StatusCode::UNAUTHORIZED, "invalid_credentials");
    let unknown = node
        .post(
            "/v1/temp-passwords",
            &[],
            &json!({ "username": "nobody", "password": PASSWORD }),
        )
        .await;
    error(&unknown, StatusCode::UNAUTHORIZED, "invalid_credentials");
    // Neither a password nor a session.
    let anonymous = node
        .post("/v1/temp-passwords", &[], &json!({ "max_uses": 1 }))
        .await;
    error(&anonymous, StatusCode::UNAUTHORIZED, "unauthorized");

    for (conditions, code) in [
        (json!({ "max_uses": 0 }), "invalid_conditions"),
        (json!({ "spend_limit": -5 }), "invalid_conditions"),
        (
            json!({ "valid_until": "2001-01-01T00:00:00Z" }),
            "invalid_conditions",
        ),
        (
            json!({ "valid_from": "2999-01-02T00:00:00Z", "valid_until": "2999-01-01T00:00:00Z" }),
            "invalid_conditions",
        ),
        (
            json!({ "valid_for": 60, "valid_until": "2999-01-01T00:00:00Z" }),
            "bad_request",
        ),
        (json!({ "valid_until": "tomorrow" }), "bad_request"),
        (json!({ "max_uses": "three" }), "bad_request"),
        // A misspelt condition must not issue an unrestricted password.
        (json!({ "maxUses": 1 }), "bad_request"),
    ] {
        let reply = node
            .post("/v1/temp-passwords", &[], &alice_with(&conditions))
            .await;
        error(&reply, StatusCode::BAD_REQUEST, code);
        assert!(
            reply.json()["detail"].as_str().is_some(),
            "{conditions}: {:?}",
            reply.body
        );
    }
    let garbage = node
        .raw(Method::POST, "/v1/temp-passwords", &[JSON], "{not json")
        .await;
    error(&garbage, StatusCode::BAD_REQUEST, "bad_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_decline_reason_over_http() {
    let node = start(|_| {}).await;

    let once = password_of(&node.issue(json!({ "max_uses": 1 })).await);
    approved(&node.pay(&once, 100, None).await);
    declined(&node.pay(&once, 100, None).await, "uses_exhausted");

    let limited = password_of(&node.issue(json!({ "spend_limit": 500 })).await);
    approved(&node.pay(&limited, 300, None).await);
    declined(&node.pay(&limited, 300, None).await, "limit_exceeded");

    let small = password_of(&node.issue(json!({ "per_payment_limit": 200 })).await);
    declined(
        &node.pay(&small, 201, None).await,
        "per_payment_limit_exceeded",
    );
    approved(&node.pay(&small, 200, None).await);

    let any = password_of(&node.issue(json!({})).await);
    declined(
        &node.pay(&any, OPENING * 2, None).await,
        "insufficient_balance",
    );

    let later = password_of(
        &node
            .issue(json!({ "valid_from": "2999-01-01T00:00:00Z" }))
            .await,
    );
    declined(&node.pay(&later, 100, None).await, "not_yet_valid");

    let paused = node.issue(json!({})).await;
    let creds = alice(PASSWORD);
    let id = paused["id"].as_i64().unwrap();
    let reply = node
        .post(&format!("/v1/temp-passwords/{id}/pause"), &[], &creds)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    declined(&node.pay(&password_of(&paused), 100, None).await, "paused");

    let revoked = node.issue(json!({})).await;
    let id = revoked["id"].as_i64().unwrap();
    let reply = node
        .post(&format!("/v1/temp-passwords/{id}/revoke"), &[], &creds)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    declined(
        &node.pay(&password_of(&revoked), 100, None).await,
        "revoked",
    );

    let short = password_of(&node.issue(json!({ "valid_for": 1 })).await);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    declined(&node.pay(&short, 100, None).await, "expired");

    declined(
        &node.pay("ABCD-EFGH-JKMN-PQRS", 100, None).await,
        "invalid_credentials",
    );
    declined(
        &node.pay("not the password", 100, None).await,
        "invalid_credentials",
    );

    // Nothing was charged by any decline.
    assert_eq!(node.balance().await, OPENING - 100 - 300 - 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_payments_are_400() {
    let node = start(|_| {}).await;
    let password = password_of(&node.issue(json!({})).await);
    for body in [
        json!({ "username": USER, "password": password, "amount": 0 }),
        json!({ "username": USER, "password": password, "amount": -100 }),
        json!({ "username": USER, "password": password, "amount": 12.5 }),
        json!({ "username": USER, "password": password, "amount": "12.50" }),
        json!({ "username": USER, "password": password }),
        json!({ "username": USER, "password": password, "amount": 100, "currency": "USD" }),
    ] {
        let reply = node.post("/v1/payments", &[], &body).await;
        error(&reply, StatusCode::BAD_REQUEST, "bad_request");
    }
    let garbage = node
        .raw(Method::POST, "/v1/payments", &[JSON], "amount=100")
        .await;
    error(&garbage, StatusCode::BAD_REQUEST, "bad_request");
    let long_key = "k".repeat(200);
    let reply = node.pay(&password, 100, Some(&long_key)).await;
    error(&reply, StatusCode::BAD_REQUEST, "bad_request");
    // The account's own currency, any case, is fine.
    let reply = node
        .post(
            "/v1/payments",
            &[],
            &json!({ "username": USER, "password": password, "amount": 100, "currency": "cny" }),
        )
        .await;
    approved(&reply);
    assert_eq!(node.balance().await, OPENING - 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotency_keys() {
    let node = start(|_| {}).await;
    let password = password_of(&node.issue(json!({ "max_uses": 10 })).await);

    let first = node.pay(&password, 700, Some("order-1")).await;
    let body = approved(&first);
    assert_eq!(body["remaining_uses"], 9);
    assert_eq!(first.header("idempotent-replayed"), None);
    let again = node.pay(&password, 700, Some("order-1")).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(
        again.body, first.body,
        "a retry returns the first answer verbatim"
    );
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(node.balance().await, OPENING - 700);

    let other = node.pay(&password, 701, Some("order-1")).await;
    error(
        &other,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    );
    assert_eq!(node.balance().await, OPENING - 700);

    // A declined answer is stored and repeated too.
    let big = node.pay(&password, OPENING, Some("order-2")).await;
    declined(&big, "insufficient_balance");
    let big_again = node.pay(&password, OPENING, Some("order-2")).await;
    assert_eq!(big_again.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(big_again.body, big.body);
    assert_eq!(big_again.header("idempotent-replayed"), Some("true"));

    // 16 at once with one key: one charge, the same answer for all.
    let node = Arc::new(node);
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (node, password) = (node.clone(), password.clone());
            tokio::spawn(async move { node.pay(&password, 1000, Some("order-3")).await })
        })
        .collect();
    let mut replies = Vec::new();
    for task in tasks {
        replies.push(task.await.unwrap());
    }
    for reply in &replies {
        approved(reply);
        assert_eq!(reply.body, replies[0].body);
    }
    let fresh = replies
        .iter()
        .filter(|r| r.header("idempotent-replayed").is_none())
        .count();
    assert_eq!(fresh, 1, "one charged, the others replayed");
    assert_eq!(node.balance().await, OPENING - 700 - 1000);
    // uses: order-1, order-2 (declined consumes nothing), order-3.
    assert_eq!(replies[0].json()["remaining_uses"], 8);
}

/// Issue 12 item 8: a key's answer belongs to the credential that paid.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotency_keys_are_bound_to_the_payer() {
    let node = start(|_| {}).await;
    let a = password_of(&node.issue(json!({ "max_uses": 10 })).await);
    let b = password_of(&node.issue(json!({ "max_uses": 1 })).await);

    let first = node.pay(&a, 700, Some("order-1")).await;
    approved(&first);
    // B with A's key: 422 with nothing of A's payment, and B is not charged.
    let stolen = node.pay(&b, 700, Some("order-1")).await;
    error(
        &stolen,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    );
    assert_eq!(stolen.header("idempotent-replayed"), None);
    let text = String::from_utf8_lossy(&stolen.body);
    for leak in ["payment_id", "approved", "remaining", "balance", "700"] {
        assert!(!text.contains(leak), "{leak} in {text}");
    }
    assert_eq!(node.balance().await, OPENING - 700);
    // B still has its one use.
    approved(&node.pay(&b, 100, Some("b-1")).await);
    assert_eq!(node.balance().await, OPENING - 800);

    // The long-term password's key: a temporary password gets 422 without the balance.
    let owner = node.pay(PASSWORD, 300, Some("lt-1")).await;
    assert_eq!(approved(&owner)["balance"], OPENING - 1100);
    let temp = node.pay(&a, 300, Some("lt-1")).await;
    error(
        &temp,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    );
    let text = String::from_utf8_lossy(&temp.body);
    assert!(!text.contains("balance"), "{text}");
    assert!(!text.contains(&(OPENING - 1100).to_string()), "{text}");
    let replay = node.pay(PASSWORD, 300, Some("lt-1")).await;
    assert_eq!(replay.body, owner.body);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(node.balance().await, OPENING - 1100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_payments_against_one_use() {
    let node = Arc::new(start(|_| {}).await);
    let password = password_of(&node.issue(json!({ "max_uses": 1 })).await);
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (node, password) = (node.clone(), password.clone());
            tokio::spawn(async move { node.pay(&password, 100, None).await })
        })
        .collect();
    let mut ok = 0;
    for task in tasks {
        let reply = task.await.unwrap();
        if reply.status == StatusCode::OK {
            ok += 1;
        } else {
            declined(&reply, "uses_exhausted");
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(node.balance().await, OPENING - 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_passwords_are_rate_limited() {
    let node = start(|config| {
        config.login_rate = RateLimit {
            per_ip: 3,
            per_account: 100,
            ..RateLimit::default()
        };
    })
    .await;
    let password = password_of(&node.issue(json!({})).await);
    for _ in 0..3 {
        declined(
            &node.pay("ABCD-EFGH-JKMN-PQRS", 100, None).await,
            "invalid_credentials",
        );
    }
    // Locked out: even the right password waits, and nothing is charged.
    let reply = node.pay(&password, 100, None).await;
    error(&reply, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let wait: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    assert_eq!(node.balance().await, OPENING);
    // The limiter is shared with issuing and managing with the long-term password.
    let reply = node.post("/v1/temp-passwords", &[], &alice(PASSWORD)).await;
    error(&reply, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_long_term_password_can_be_switched_off() {
    let node = start(|config| config.allow_long_term_payments = false).await;
    declined(&node.pay(PASSWORD, 100, None).await, "invalid_credentials");
    let password = password_of(&node.issue(json!({})).await);
    approved(&node.pay(&password, 100, None).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_server_key_it_fails_closed() {
    let node = start(|config| config.temp_password_key = Vec::new()).await;
    let reply = node.post("/v1/temp-passwords", &[], &alice(PASSWORD)).await;
    error(&reply, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    error(
        &node.pay(PASSWORD, 100, None).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    );
    assert_eq!(node.balance().await, OPENING);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn manage_with_the_long_term_password() {
    let node = start(|_| {}).await;
    let creds = alice(PASSWORD);
    let first = node.issue(json!({ "label": "first", "max_uses": 2 })).await;
    let second = node.issue(json!({ "label": "second" })).await;
    approved(&node.pay(&password_of(&first), 100, None).await);

    let list = node.post("/v1/temp-passwords/list", &[], &creds).await;
    assert_eq!(list.status, StatusCode::OK, "{:?}", list.body);
    let items = list.json()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["label"], "second", "newest first");
    assert_eq!(items[1]["remaining_uses"], 1);
    assert!(items[1]["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(
        items.iter().all(|i| i.get("password").is_none()),
        "the password is shown only when issued"
    );
    let wrong = node
        .post(
            "/v1/temp-passwords/list",
            &[],
            &alice("wrong password here"),
        )
        .await;
    error(&wrong, StatusCode::UNAUTHORIZED, "invalid_credentials");

    let id = first["id"].as_i64().unwrap();
    let path = |action: &str| format!("/v1/temp-passwords/{id}/{action}");
    let paused = node.post(&path("pause"), &[], &creds).await;
    assert_eq!(paused.status, StatusCode::OK, "{:?}", paused.body);
    assert_eq!(paused.json()["state"], "paused");
    assert_eq!(paused.json()["status"], "paused");
    error(
        &node.post(&path("pause"), &[], &creds).await,
        StatusCode::CONFLICT,
        "wrong_state",
    );
    let resumed = node.post(&path("resume"), &[], &creds).await;
    assert_eq!(resumed.status, StatusCode::OK);
    assert_eq!(resumed.json()["state"], "active");
    approved(&node.pay(&password_of(&first), 100, None).await);
    let revoked = node.post(&path("revoke"), &[], &creds).await;
    assert_eq!(revoked.status, StatusCode::OK);
    assert_eq!(revoked.json()["state"], "revoked");
    assert!(revoked.json()["revoked_at"].as_str().is_some());
    error(
        &node.post(&path("resume"), &[], &creds).await,
        StatusCode::CONFLICT,
        "wrong_state",
    );
    error(
        &node.post(&path("revoke"), &[], &creds).await,
        StatusCode::CONFLICT,
        "wrong_state",
    );

    // Unknown ids, and another account's, are 404.
    for bad in ["999999", "abc", "-1"] {
        error(
            &node
                .post(&format!("/v1/temp-passwords/{bad}/pause"), &[], &creds)
                .await,
            StatusCode::NOT_FOUND,
            "not_found",
        );
    }
    let second_id = second["id"].as_i64().unwrap();
    let bob = json!({ "username": OTHER, "password": PASSWORD });
    error(
        &node
            .post(&format!("/v1/temp-passwords/{second_id}/revoke"), &[], &bob)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    // A wrong password is 401 whatever the id.
    error(
        &node
            .post(
                &format!("/v1/temp-passwords/{second_id}/revoke"),
                &[],
                &alice("wrong password here"),
            )
            .await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    );
    // Neither credentials nor a session.
    let anonymous = node
        .raw(
            Method::POST,
            &format!("/v1/temp-passwords/{second_id}/revoke"),
            &[],
            "",
        )
        .await;
    error(&anonymous, StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn manage_with_a_session() {
    let node = start(|_| {}).await;
    let cookie = node.session_cookie().await;
    let with_cookie = [("cookie", cookie.as_str())];

    // Without a session: 401.
    error(
        &node.get("/v1/temp-passwords", &[]).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    error(
        &node
            .get(
                "/v1/temp-passwords",
                &[("cookie", "dialgate_session=not-a-session")],
            )
            .await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    error(
        &node.get("/v1/balance", &[]).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );

    let reply = node
        .post(
            "/v1/temp-passwords",
            &with_cookie,
            &json!({ "label": "from the page", "max_uses": 1, "spend_limit": 900 }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    let issued = reply.json();
    assert_eq!(issued["label"], "from the page");
    let id = issued["id"].as_i64().unwrap();
    let path = |action: &str| format!("/v1/temp-passwords/{id}/{action}");

    let list = node.get("/v1/temp-passwords", &with_cookie).await;
    assert_eq!(list.status, StatusCode::OK, "{:?}", list.body);
    let items = list.json()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], id);
    assert_eq!(items[0]["remaining_limit"], 900);
    assert_eq!(items[0]["status"], "usable");
    // POST .../list works with the session too (empty body).
    let list = node
        .raw(Method::POST, "/v1/temp-passwords/list", &with_cookie, "")
        .await;
    assert_eq!(list.status, StatusCode::OK, "{:?}", list.body);

    // Empty body (the page's fetch) and an empty JSON object both work.
    let paused = node
        .raw(Method::POST, &path("pause"), &with_cookie, "")
        .await;
    assert_eq!(paused.status, StatusCode::OK, "{:?}", paused.body);
    assert_eq!(paused.json()["state"], "paused");
    declined(&node.pay(&password_of(&issued), 100, None).await, "paused");
    let resumed = node.post(&path("resume"), &with_cookie, &json!({})).await;
    assert_eq!(resumed.status, StatusCode::OK, "{:?}", resumed.body);
    approved(&node.pay(&password_of(&issued), 100, None).await);
    let list = node.get("/v1/temp-passwords", &with_cookie).await;
    assert_eq!(list.json()["items"][0]["status"], "uses_exhausted");
    assert_eq!(list.json()["items"][0]["remaining_uses"], 0);

    let balance = node.get("/v1/balance", &with_cookie).await;
    assert_eq!(balance.status, StatusCode::OK, "{:?}", balance.body);
    assert_eq!(
        balance.json(),
        json!({ "username": USER, "balance": OPENING - 100, "currency": "CNY" })
    );

    let revoked = node.post(&path("revoke"), &with_cookie, &json!({})).await;
    assert_eq!(revoked.status, StatusCode::OK, "{:?}", revoked.body);
    assert_eq!(revoked.json()["state"], "revoked");

    // A body that is there but not JSON is a 400, even with a session.
    let garbage = node
        .raw(
            Method::POST,
            &path("pause"),
            &[JSON, with_cookie[0]],
            "{oops",
        )
        .await;
    error(&garbage, StatusCode::BAD_REQUEST, "bad_request");
    // With the cookie, a body must say it is JSON (CSRF: a form or text/plain is a 403).
    let untyped = node
        .raw(Method::POST, &path("pause"), &with_cookie, "{oops")
        .await;
    error(&untyped, StatusCode::FORBIDDEN, "json_required");
}
