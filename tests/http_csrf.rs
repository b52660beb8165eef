//! Cross-site request forgery on the real binary: with a real session cookie (password,
//! a FastAGI call, the exchange), forms, `text/plain` and other origins are refused with
//! 403; the page's own JSON and an allow-listed origin work.

mod common;

use common::{db::TestDb, http::http, ServeProcess};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

const USER: &str = "alice";
const PASSWORD: &str = "correct horse battery";
const PHONE: &str = "+8613800138000";
const DIALIN: &str = "+861055550100";
const ALLOWED: &str = "https://app.example.com";

struct Gate {
    _server: ServeProcess,
    base: String,
    /// `http://127.0.0.1:PORT`, the page's own origin.
    origin: String,
    session: String,
}

impl Gate {
    async fn start(db: &TestDb) -> Gate {
        let url = db.url();
        let args = [
            "--database-url",
            &url,
            "--dialin-number",
            DIALIN,
            "--trusted-trunk",
            "PJSIP/carrier",
            "--http-allow-origin",
            ALLOWED,
        ];
        let server = tokio::task::block_in_place(|| ServeProcess::start(&args, None));
        let origin = format!("http://{}", server.http_addr());
        let login = http(
            Method::POST,
            &format!("{origin}/v1/login"),
            &[("content-type", "application/json")],
            &json!({ "username": USER, "password": PASSWORD }).to_string(),
        )
        .await;
        assert_eq!(login.status, StatusCode::OK, "{:?}", login.body);
        let login = login.json();
        let agi = server.addr.to_string();
        let out = tokio::task::block_in_place(|| {
            assert_cmd::Command::cargo_bin("dialgate")
                .unwrap()
                .args(["simulate-call", "--target", &agi, "--from", PHONE])
                .args(["--to", login["dial_number"].as_str().unwrap()])
                .timeout(std::time::Duration::from_secs(15))
                .output()
                .unwrap()
        });
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("DIALGATE_RESULT=verified"), "{stdout}");
        let bearer = format!("Bearer {}", login["secret"].as_str().unwrap());
        let exchanged = http(
            Method::POST,
            &format!(
                "{origin}/v1/login/{}/session",
                login["challenge_id"].as_str().unwrap()
            ),
            &[("authorization", &bearer)],
            "",
        )
        .await;
        assert_eq!(exchanged.status, StatusCode::OK, "{:?}", exchanged.body);
        let token = exchanged.cookie("dialgate_session").unwrap();
        Gate {
            _server: server,
            base: origin.clone(),
            origin,
            session: format!("dialgate_session={token}"),
        }
    }

    async fn post(&self, path: &str, headers: &[(&str, &str)], body: &str) -> common::http::Reply {
        let mut all = vec![("cookie", self.session.as_str())];
        all.extend_from_slice(headers);
        http(Method::POST, &format!("{}{path}", self.base), &all, body).await
    }

    /// The page's own fetch: JSON, same origin.
    fn same_origin(&self) -> [(&str, &str); 3] {
        [
            ("content-type", "application/json"),
            ("origin", self.origin.as_str()),
            ("sec-fetch-site", "same-origin"),
        ]
    }

    async fn signed_in(&self) -> bool {
        let reply = http(
            Method::GET,
            &format!("{}/v1/auth", self.base),
            &[("cookie", self.session.as_str())],
            "",
        )
        .await;
        reply.status == StatusCode::OK
    }
}

fn refused(reply: &common::http::Reply, code: &str) {
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{:?}", reply.body);
    assert_eq!(reply.json()["error"], code, "{:?}", reply.body);
}

fn issue_body() -> String {
    json!({ "label": "csrf", "max_uses": 1, "spend_limit": 100 }).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_authenticated_posts_need_json_from_the_same_origin() {
    let db = TestDb::sqlite();
    db.enroll(USER, PHONE, "Alice", PASSWORD);
    let gate = Gate::start(&db).await;

    // What a cross-site form or a `text/plain` fetch sends: refused, nothing issued.
    let text_plain = gate
        .post(
            "/v1/temp-passwords",
            &[("content-type", "text/plain;charset=UTF-8")],
            &issue_body(),
        )
        .await;
    refused(&text_plain, "json_required");
    let form = gate
        .post(
            "/v1/temp-passwords",
            &[("content-type", "application/x-www-form-urlencoded")],
            "label=csrf&max_uses=1",
        )
        .await;
    refused(&form, "json_required");
    let untyped = gate.post("/v1/temp-passwords", &[], &issue_body()).await;
    refused(&untyped, "json_required");

    // JSON, but from another site (a sibling subdomain is "same-site": still refused).
    for (origin, site) in [
        ("https://evil.example", "cross-site"),
        ("https://evil.example.com", "same-site"),
    ] {
        let reply = gate
            .post(
                "/v1/temp-passwords",
                &[
                    ("content-type", "application/json"),
                    ("origin", origin),
                    ("sec-fetch-site", site),
                ],
                &issue_body(),
            )
            .await;
        refused(&reply, "cross_site_request");
    }
    // An older browser: no Sec-Fetch-Site, an Origin that is not the Host.
    let old = gate
        .post(
            "/v1/temp-passwords",
            &[
                ("content-type", "application/json"),
                ("origin", "https://evil.example"),
            ],
            &issue_body(),
        )
        .await;
    refused(&old, "cross_site_request");

    // The page's own JSON works.
    let issued = gate
        .post("/v1/temp-passwords", &gate.same_origin(), &issue_body())
        .await;
    assert_eq!(issued.status, StatusCode::CREATED, "{:?}", issued.body);
    let id = issued.json()["id"].as_i64().unwrap();
    // So does an allow-listed origin.
    let listed = gate
        .post(
            "/v1/temp-passwords",
            &[
                ("content-type", "application/json"),
                ("origin", ALLOWED),
                ("sec-fetch-site", "same-site"),
            ],
            &issue_body(),
        )
        .await;
    assert_eq!(listed.status, StatusCode::CREATED, "{:?}", listed.body);

    // Pause: a cross-site form is refused, the page's bodiless POST works.
    let pause = format!("/v1/temp-passwords/{id}/pause");
    let form = gate
        .post(
            &pause,
            &[("content-type", "application/x-www-form-urlencoded")],
            "",
        )
        .await;
    refused(&form, "json_required");
    let cross = gate
        .post(
            &pause,
            &[
                ("origin", "https://evil.example"),
                ("sec-fetch-site", "cross-site"),
            ],
            "",
        )
        .await;
    refused(&cross, "cross_site_request");
    let own = gate
        .post(
            &pause,
            &[
                ("origin", gate.origin.as_str()),
                ("sec-fetch-site", "same-origin"),
            ],
            "",
        )
        .await;
    assert_eq!(own.status, StatusCode::OK, "{:?}", own.body);
    assert_eq!(own.json()["state"], "paused");

    // Logout by a cross-site form does not end the session; the page's does.
    let logout = gate
        .post("/v1/logout", &[("content-type", "text/plain")], "x")
        .await;
    refused(&logout, "json_required");
    assert!(gate.signed_in().await);
    let list = http(
        Method::GET,
        &format!("{}/v1/temp-passwords", gate.base),
        &[("cookie", gate.session.as_str())],
        "",
    )
    .await;
    let items: Vec<Value> = list.json()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 2, "only the two same-origin issues: {items:?}");
    let logout = gate
        .post(
            "/v1/logout",
            &[
                ("origin", gate.origin.as_str()),
                ("sec-fetch-site", "same-origin"),
            ],
            "",
        )
        .await;
    assert_eq!(logout.status, StatusCode::NO_CONTENT, "{:?}", logout.body);
    assert!(!gate.signed_in().await);
}
