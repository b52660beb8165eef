//! The OpenAPI description (`GET /v1/openapi.json`, `src/gateway/openapi.json`) kept true
//! against the real `dialgate serve` over real TCP:
//!
//! - every route of the gateway router is in the document and every path of the document
//!   is routed, with the same methods (the router's `.route(...)` lines, and the `Allow`
//!   header of a 405 for each documented path);
//! - the main flows (login, status, events, call-back, the call over FastAGI, session,
//!   forward-auth, temporary passwords, payments, balance, health, pages, logout) answer
//!   with documented status codes, content types, headers and bodies (JSON Schema 2020-12);
//! - schemathesis (PyPI, pinned, installed into a venv under the target directory) fuzzes
//!   a live server with a session and a challenge secret: no 5xx, no dropped connection,
//!   every answer matches the document.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use common::{
    db::{bare_cmd, TestDb},
    http::{http, send, Reply},
    sse::SseReader,
    ServeProcess,
};
use dialgate::gateway::{OPENAPI_JSON, OPENAPI_PATH, SESSION_COOKIE, SIGNAL_PATH};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

const USER: &str = "alice";
const PASSWORD: &str = "correct horse battery";
const PHONE: &str = "+8613800138000";
const DIAL_IN: &str = "+861055550100";
const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const SIGNAL_KEY: &str = "the openapi test's signal key, 32+ characters";
const JSON: (&str, &str) = ("content-type", "application/json");

/// The pinned schemathesis; `tests/schemathesis-requirements.txt` pins what it pulls in.
const SCHEMATHESIS: &str = "4.32.5";

// ---------------------------------------------------------------------------------------
// The document
// ---------------------------------------------------------------------------------------

fn document() -> Value {
    serde_json::from_str(OPENAPI_JSON).expect("openapi.json is JSON")
}

/// `/v1/login/{id}` -> `/v1/login/{}`, so templates compare whatever their names.
fn shape(path: &str) -> String {
    let mut out = String::new();
    let mut in_param = false;
    for c in path.chars() {
        match c {
            '{' => {
                in_param = true;
                out.push_str("{}");
            }
            '}' => in_param = false,
            _ if !in_param => out.push(c),
            _ => {}
        }
    }
    out
}

/// The paths `router()` registers, read from its `.route(` lines (string literals and
/// the path constants it uses).
fn router_paths() -> BTreeSet<String> {
    let source =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/gateway/mod.rs"))
            .unwrap();
    let body = source
        .split("pub fn router(")
        .nth(1)
        .expect("src/gateway/mod.rs has pub fn router")
        .split("\n}\n")
        .next()
        .unwrap();
    let constants: BTreeMap<&str, &str> =
        [("SIGNAL_PATH", SIGNAL_PATH), ("OPENAPI_PATH", OPENAPI_PATH)]
            .into_iter()
            .collect();
    let mut paths = BTreeSet::new();
    for piece in body.split(".route(").skip(1) {
        let arg = piece.trim_start();
        let path = if let Some(rest) = arg.strip_prefix('"') {
            rest.split('"').next().unwrap().to_string()
        } else {
            let name = arg.split(',').next().unwrap().trim();
            constants
                .get(name)
                .unwrap_or_else(|| panic!("router path constant {name} unknown to this test"))
                .to_string()
        };
        paths.insert(shape(&path));
    }
    assert!(paths.len() > 10, "read only {paths:?} from the router");
    paths
}

/// A concrete URL path for a documented template.
fn concrete(template: &str) -> String {
    template
        .replace("{id}/{change}", "1/pause")
        .replace("{id}", "1")
}

/// Validates real answers against the document.
struct Spec {
    doc: Value,
}

impl Spec {
    fn new() -> Spec {
        Spec { doc: document() }
    }

    fn resolve<'a>(&'a self, mut v: &'a Value) -> (&'a Value, String) {
        let mut pointer = String::new();
        while let Some(r) = v.get("$ref").and_then(Value::as_str) {
            pointer = r.trim_start_matches('#').to_string();
            v = self
                .doc
                .pointer(&pointer)
                .unwrap_or_else(|| panic!("dangling {r}"));
        }
        (v, pointer)
    }

    /// The response object documented for `status`, and its JSON pointer.
    fn response(&self, method: &Method, template: &str, status: StatusCode) -> (&Value, String) {
        let op = &self.doc["paths"][template][method.as_str().to_lowercase()];
        assert!(op.is_object(), "{method} {template} is not documented");
        let code = status.as_str();
        let Some(response) = op["responses"].get(code) else {
            panic!("{method} {template} answered {status}, which is not documented");
        };
        let (resolved, pointer) = self.resolve(response);
        let pointer = if pointer.is_empty() {
            format!(
                "/paths/{}/{}/responses/{code}",
                template.replace('~', "~0").replace('/', "~1"),
                method.as_str().to_lowercase()
            )
        } else {
            pointer
        };
        (resolved, pointer)
    }

    /// Checks one value against the schema at `pointer` (inside the document, so its
    /// `$ref`s resolve).
    fn validate(&self, pointer: &str, value: &Value, what: &str) {
        let mut root = self.doc.clone();
        let fragment = pointer.replace('{', "%7B").replace('}', "%7D");
        root["$ref"] = json!(format!("#{fragment}"));
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&root)
            .unwrap_or_else(|e| panic!("schema at {pointer}: {e}"));
        let errors: Vec<String> = validator
            .iter_errors(value)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{what}: {value} does not match {pointer}:\n{}",
            errors.join("\n")
        );
    }

    /// Checks a whole reply: documented status, required headers, content type, body.
    fn check(&self, method: Method, template: &str, reply: &Reply) {
        let what = format!("{method} {template} -> {}", reply.status);
        let (response, pointer) = self.response(&method, template, reply.status);
        if let Some(headers) = response.get("headers").and_then(Value::as_object) {
            for (name, header) in headers {
                let (header, _) = self.resolve(header);
                if header["required"] == json!(true) {
                    assert!(reply.header(name).is_some(), "{what}: no {name} header");
                }
            }
        }
        let Some(content) = response.get("content").and_then(Value::as_object) else {
            assert!(
                reply.body.is_empty(),
                "{what}: a body where none is documented"
            );
            return;
        };
        let ctype = reply
            .header("content-type")
            .unwrap_or_else(|| panic!("{what}: no content-type"));
        let media = ctype.split(';').next().unwrap().trim();
        assert!(
            content.contains_key(media),
            "{what}: content-type {ctype} is not documented ({:?})",
            content.keys().collect::<Vec<_>>()
        );
        if media == "application/json" {
            let pointer = format!("{pointer}/content/application~1json/schema");
            self.validate(&pointer, &reply.json(), &what);
        }
    }

    /// Checks an SSE event: its name, and its data (a `ChallengeStatus`).
    fn check_event(&self, name: &str, data: &Value) {
        let event =
            "/paths/~1v1~1login~1{id}~1events/get/responses/200/content/text~1event-stream/schema";
        self.validate(
            event,
            &json!({ "event": name, "data": data.to_string() }),
            name,
        );
        self.validate("/components/schemas/ChallengeStatus", data, name);
    }
}

// ---------------------------------------------------------------------------------------
// A live server
// ---------------------------------------------------------------------------------------

/// A minimal Asterisk manager: accepts the login, answers pings, and answers every
/// Originate with an OriginateResponse of reason 5 (busy). So call-backs are available
/// (202) and a called-back login fails with `callback_busy`.
struct FakeAmi {
    addr: SocketAddr,
}

impl FakeAmi {
    fn start() -> FakeAmi {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let _ = FakeAmi::serve(stream);
                });
            }
        });
        FakeAmi { addr }
    }

    fn serve(stream: TcpStream) -> std::io::Result<()> {
        let mut out = stream.try_clone()?;
        out.write_all(b"Asterisk Call Manager/5.0.2\r\n")?;
        let mut lines = BufReader::new(stream);
        let mut fields: BTreeMap<String, String> = BTreeMap::new();
        let mut line = String::new();
        loop {
            line.clear();
            if lines.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let text = line.trim_end();
            if !text.is_empty() {
                if let Some((k, v)) = text.split_once(':') {
                    fields.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                }
                continue;
            }
            let id = fields.get("actionid").cloned().unwrap_or_default();
            let reply = match fields.get("action").map(|a| a.to_ascii_lowercase()).as_deref() {
                Some("ping") => format!("Response: Success\r\nActionID: {id}\r\nPing: Pong\r\n\r\n"),
                Some("originate") => format!(
                    "Response: Success\r\nActionID: {id}\r\nMessage: Originate successfully queued\r\n\r\n\
                     Event: OriginateResponse\r\nPrivilege: call,all\r\nActionID: {id}\r\n\
                     Response: Failure\r\nChannel: PJSIP/carrier\r\nContext: dialgate-callback\r\n\
                     Exten: s\r\nReason: 5\r\nUniqueid: <null>\r\nCallerIDNum: <unknown>\r\n\
                     CallerIDName: <unknown>\r\n\r\n"
                ),
                Some("logoff") => {
                    out.write_all(
                        format!("Response: Goodbye\r\nActionID: {id}\r\n\r\n").as_bytes(),
                    )?;
                    return Ok(());
                }
                _ => format!(
                    "Response: Success\r\nActionID: {id}\r\nMessage: Authentication accepted\r\n\r\n"
                ),
            };
            out.write_all(reply.as_bytes())?;
            fields.clear();
        }
    }
}

/// `dialgate serve` on a fresh SQLite database with alice enrolled and topped up.
struct Live {
    _db: TestDb,
    _ami: FakeAmi,
    process: ServeProcess,
    base: String,
}

impl Live {
    fn start(extra: &[&str]) -> Live {
        let db = TestDb::sqlite();
        db.enroll(USER, PHONE, "Alice", PASSWORD);
        db.cmd()
            .args([
                "balance",
                "top-up",
                "--username",
                USER,
                "--amount",
                "1000.00",
            ])
            .assert()
            .success();
        let ami = FakeAmi::start();
        let url = db.url();
        let ami_addr = ami.addr.to_string();
        let mut args = vec![
            "--database-url",
            &url,
            "--dialin-number",
            DIAL_IN,
            "--trusted-trunk",
            "PJSIP/carrier",
            "--insecure-cookies",
            "--temp-password-key",
            KEY_HEX,
            "--signal-key",
            SIGNAL_KEY,
            "--ami-address",
            &ami_addr,
            "--ami-username",
            "dialgate",
            "--ami-secret",
            "s3cret",
        ];
        args.extend_from_slice(extra);
        let process = ServeProcess::start(&args, None);
        let base = format!("http://{}", process.http_addr());
        process.wait_for_log("AMI");
        Live {
            _db: db,
            _ami: ami,
            process,
            base,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A POST with a JSON content type; `Value::Null` sends no body.
    async fn post(&self, path: &str, headers: &[(&str, &str)], body: Value) -> Reply {
        let mut all = vec![JSON];
        all.extend_from_slice(headers);
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        self.call(Method::POST, path, &all, &body).await
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        http(method, &self.url(path), headers, body).await
    }

    /// Waits until `/healthz` shows the AMI link connected (call-backs need it).
    async fn wait_for_ami(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let reply = self.call(Method::GET, "/healthz", &[], "").await;
            if reply.json()["ami"]["state"] == "connected" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the AMI link never connected: {}\n{}",
                reply.json(),
                self.process.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The password step; (challenge id, secret).
    async fn login(&self) -> (String, String) {
        let reply = self
            .call(
                Method::POST,
                "/v1/login",
                &[JSON],
                &json!({ "username": USER, "password": PASSWORD }).to_string(),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        let body = reply.json();
        (
            body["challenge_id"].as_str().unwrap().to_string(),
            body["secret"].as_str().unwrap().to_string(),
        )
    }

    /// The call from the enrolled phone, over real FastAGI.
    fn place_call(&self) {
        let out = bare_cmd()
            .args(["simulate-call", "--target", &self.process.addr.to_string()])
            .args(["--from", PHONE, "--to", DIAL_IN])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("DIALGATE_RESULT=verified"),
            "the call did not verify: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A signed-in session: login, the call, the exchange; the session token.
    async fn session(&self) -> String {
        let (id, secret) = self.login().await;
        tokio::task::block_in_place(|| self.place_call());
        let reply = self
            .call(
                Method::POST,
                &format!("/v1/login/{id}/session"),
                &[("authorization", &format!("Bearer {secret}"))],
                "",
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        reply.cookie(SESSION_COOKIE).expect("a session cookie")
    }
}

// ---------------------------------------------------------------------------------------
// Routes
// ---------------------------------------------------------------------------------------

#[test]
fn every_route_is_documented_and_every_documented_path_is_routed() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let documented: BTreeSet<String> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(|p| shape(p))
        .collect();
    let routed = router_paths();
    let missing: Vec<_> = routed.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&routed).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "routed but not documented: {missing:?}; documented but not routed: {extra:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_methods_are_the_routed_ones() {
    let live = tokio::task::block_in_place(|| Live::start(&[]));
    let doc = document();
    for (template, item) in doc["paths"].as_object().unwrap() {
        let documented: BTreeSet<String> = item
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| matches!(k.as_str(), "get" | "post" | "put" | "patch" | "delete"))
            .map(|k| k.to_uppercase())
            .collect();
        // No route takes DELETE: a routed path answers 405 with its methods in `Allow`.
        let reply = live
            .call(Method::DELETE, &concrete(template), &[], "")
            .await;
        assert_eq!(
            reply.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "DELETE {template}: {:?}",
            reply.body
        );
        let allowed: BTreeSet<String> = reply
            .header("allow")
            .unwrap_or_default()
            .split(',')
            .map(|m| m.trim().to_string())
            .filter(|m| !m.is_empty() && m != "HEAD")
            .collect();
        assert_eq!(allowed, documented, "methods of {template}");
    }
    // The document is served as it is compiled in.
    let reply = live.call(Method::GET, OPENAPI_PATH, &[], "").await;
    Spec::new().check(Method::GET, OPENAPI_PATH, &reply);
    assert_eq!(reply.json(), doc);
}

// ---------------------------------------------------------------------------------------
// Real answers of the main flows
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn real_answers_match_the_document() {
    let live = tokio::task::block_in_place(|| {
        Live::start(&["--login-limit-per-account", "3", "--challenge-ttl", "60s"])
    });
    live.wait_for_ami().await;
    let spec = Spec::new();

    // Meta and pages.
    for path in [
        "/healthz",
        "/metrics",
        "/",
        "/payments",
        "/app.js",
        "/shared.js",
        "/payments.js",
        "/style.css",
    ] {
        let reply = live.call(Method::GET, path, &[], "").await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        spec.check(Method::GET, path, &reply);
    }

    // The password step: a bad body, a wrong password, the limiter, then alice.
    let reply = live
        .call(Method::POST, "/v1/login", &[JSON], "{\"username\": 1}")
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    spec.check(Method::POST, "/v1/login", &reply);
    let wrong = json!({ "username": "mallory", "password": "not the password" }).to_string();
    let mut limited = false;
    for _ in 0..5 {
        let reply = live.call(Method::POST, "/v1/login", &[JSON], &wrong).await;
        spec.check(Method::POST, "/v1/login", &reply);
        limited |= reply.status == StatusCode::TOO_MANY_REQUESTS;
    }
    assert!(limited, "the account limit never answered 429");
    let reply = live
        .call(
            Method::POST,
            "/v1/login",
            &[JSON],
            &json!({ "username": USER, "password": PASSWORD }).to_string(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    spec.check(Method::POST, "/v1/login", &reply);
    let body = reply.json();
    let (id, secret) = (
        body["challenge_id"].as_str().unwrap().to_string(),
        body["secret"].as_str().unwrap().to_string(),
    );
    let bearer = format!("Bearer {secret}");
    let auth = [("authorization", bearer.as_str())];

    // Waiting: status, the first event, an early exchange, no secret.
    let path = format!("/v1/login/{id}");
    let reply = live
        .call(Method::GET, &path, &[("authorization", &bearer)], "")
        .await;
    spec.check(Method::GET, "/v1/login/{id}", &reply);
    assert_eq!(reply.json()["state"], "pending");
    let reply = live.call(Method::GET, &path, &[], "").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    spec.check(Method::GET, "/v1/login/{id}", &reply);
    let response = send(
        Method::GET,
        &live.url(&format!("{path}/events")),
        &[("authorization", &bearer)],
        "",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let ctype = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(ctype.starts_with("text/event-stream"), "{ctype}");
    let mut events = SseReader::new(response.into_body());
    let (name, data) = events.next(Duration::from_secs(5)).await;
    assert_eq!(name, "pending");
    spec.check_event(&name, &data);
    let session_path = format!("{path}/session");
    let reply = live.post(&session_path, &auth, Value::Null).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    spec.check(Method::POST, "/v1/login/{id}/session", &reply);

    // The call verifies it: the event, the status, the session once.
    tokio::task::block_in_place(|| live.place_call());
    let (name, data) = events.next(Duration::from_secs(10)).await;
    assert_eq!(name, "verified");
    spec.check_event(&name, &data);
    let reply = live
        .call(Method::GET, &path, &[("authorization", &bearer)], "")
        .await;
    spec.check(Method::GET, "/v1/login/{id}", &reply);
    assert_eq!(reply.json()["state"], "verified");
    let reply = live.post(&session_path, &auth, Value::Null).await;
    assert_eq!(reply.status, StatusCode::OK);
    spec.check(Method::POST, "/v1/login/{id}/session", &reply);
    let token = reply.cookie(SESSION_COOKIE).unwrap();
    let reply = live.post(&session_path, &auth, Value::Null).await;
    assert_eq!(reply.status, StatusCode::GONE);
    spec.check(Method::POST, "/v1/login/{id}/session", &reply);
    let reply = live
        .call(Method::GET, &path, &[("authorization", &bearer)], "")
        .await;
    assert_eq!(reply.json()["state"], "consumed");
    spec.check(Method::GET, "/v1/login/{id}", &reply);

    // Call me instead: a body is refused, the call is placed, busy fails the login.
    let (id2, secret2) = live.login().await;
    let cb_path = format!("/v1/login/{id2}/callback");
    let bearer2 = format!("Bearer {secret2}");
    let auth2 = [("authorization", bearer2.as_str())];
    let reply = live
        .post(&cb_path, &auth2, json!({ "number": "+8613900139000" }))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    spec.check(Method::POST, "/v1/login/{id}/callback", &reply);
    let reply = live.post(&cb_path, &auth2, Value::Null).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{:?}", reply.body);
    spec.check(Method::POST, "/v1/login/{id}/callback", &reply);
    let status_path = format!("/v1/login/{id2}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = live.call(Method::GET, &status_path, &auth2, "").await;
        spec.check(Method::GET, "/v1/login/{id}", &reply);
        if reply.json()["state"] == "failed" {
            assert_eq!(reply.json()["reason"], "callback_busy");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the busy call-back never failed the login"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reply = live.post(&cb_path, &auth2, Value::Null).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    spec.check(Method::POST, "/v1/login/{id}/callback", &reply);

    // Forward-auth.
    let cookie = format!("{SESSION_COOKIE}={token}");
    let reply = live
        .call(Method::GET, "/v1/auth", &[("cookie", &cookie)], "")
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-dialgate-user"), Some(USER));
    spec.check(Method::GET, "/v1/auth", &reply);
    let reply = live.call(Method::GET, "/v1/auth", &[], "").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    spec.check(Method::GET, "/v1/auth", &reply);

    // Temporary passwords, with the session and with the password.
    let session = [("cookie", cookie.as_str())];
    let reply = live
        .post(
            "/v1/temp-passwords",
            &session,
            json!({ "label": "for Bob", "valid_for": 3600, "max_uses": 3, "spend_limit": 5000,
                "per_payment_limit": 2000 }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    spec.check(Method::POST, "/v1/temp-passwords", &reply);
    let issued = reply.json();
    let (tp_id, tp_password) = (
        issued["id"].as_i64().unwrap(),
        issued["password"].as_str().unwrap().to_string(),
    );
    let reply = live.post(
        "/v1/temp-passwords",
        &[],
        json!({ "username": USER, "password": PASSWORD, "valid_from": "2030-01-01T08:00:00+08:00" }),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    spec.check(Method::POST, "/v1/temp-passwords", &reply);
    for bad in [
        json!({ "valid_from": "tomorrow" }),
        json!({ "max_uses": 0 }),
        json!({ "colour": "red" }),
    ] {
        let reply = live.post("/v1/temp-passwords", &session, bad).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        spec.check(Method::POST, "/v1/temp-passwords", &reply);
    }
    let reply = live
        .call(
            Method::GET,
            "/v1/temp-passwords",
            &[("cookie", &cookie)],
            "",
        )
        .await;
    spec.check(Method::GET, "/v1/temp-passwords", &reply);
    assert_eq!(reply.json()["items"].as_array().unwrap().len(), 2);
    let reply = live.call(Method::GET, "/v1/temp-passwords", &[], "").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    spec.check(Method::GET, "/v1/temp-passwords", &reply);
    let reply = live
        .post(
            "/v1/temp-passwords/list",
            &[],
            json!({ "username": USER, "password": PASSWORD }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    spec.check(Method::POST, "/v1/temp-passwords/list", &reply);
    let reply = live
        .post(
            "/v1/temp-passwords/list",
            &[],
            json!({ "username": USER, "password": "wrong password" }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    spec.check(Method::POST, "/v1/temp-passwords/list", &reply);
    let change = "/v1/temp-passwords/{id}/{change}";
    for (action, expected) in [
        ("pause", StatusCode::OK),
        ("pause", StatusCode::CONFLICT),
        ("resume", StatusCode::OK),
        ("frobnicate", StatusCode::NOT_FOUND),
    ] {
        let path = format!("/v1/temp-passwords/{tp_id}/{action}");
        let reply = live.post(&path, &session, Value::Null).await;
        assert_eq!(reply.status, expected, "{action}: {:?}", reply.body);
        spec.check(Method::POST, change, &reply);
    }
    let reply = live
        .post("/v1/temp-passwords/999999/revoke", &session, Value::Null)
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    spec.check(Method::POST, change, &reply);

    // Payments: approved (temporary and long-term), declined, a reused key, a bad amount.
    let pay = |password: &str, amount: i64| json!({ "username": USER, "password": password, "amount": amount });
    let key = [("idempotency-key", "order-1")];
    let reply = live
        .post("/v1/payments", &key, pay(&tp_password, 1250))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    spec.check(Method::POST, "/v1/payments", &reply);
    let reply = live
        .post("/v1/payments", &key, pay(&tp_password, 1250))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("idempotent-replayed"), Some("true"));
    spec.check(Method::POST, "/v1/payments", &reply);
    let reply = live
        .post("/v1/payments", &key, pay(&tp_password, 1300))
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    spec.check(Method::POST, "/v1/payments", &reply);
    let reply = live
        .post("/v1/payments", &[], pay(&tp_password, 2001))
        .await;
    assert_eq!(reply.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(reply.json()["reason"], "per_payment_limit_exceeded");
    spec.check(Method::POST, "/v1/payments", &reply);
    let reply = live.post("/v1/payments", &[], pay(PASSWORD, 100)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.json()["balance"].is_i64());
    spec.check(Method::POST, "/v1/payments", &reply);
    let reply = live
        .post("/v1/payments", &[], pay("AAAA-BBBB-CCCC-DDDD", 100))
        .await;
    assert_eq!(reply.status, StatusCode::PAYMENT_REQUIRED);
    spec.check(Method::POST, "/v1/payments", &reply);
    let reply = live.post("/v1/payments", &[], pay(PASSWORD, 0)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    spec.check(Method::POST, "/v1/payments", &reply);
    let path = format!("/v1/temp-passwords/{tp_id}/revoke");
    let reply = live
        .post(
            &path,
            &[],
            json!({ "username": USER, "password": PASSWORD }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["state"], "revoked");
    spec.check(Method::POST, change, &reply);
    let reply = live
        .call(Method::GET, "/v1/balance", &[("cookie", &cookie)], "")
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    spec.check(Method::GET, "/v1/balance", &reply);

    // The node signal: signed or not.
    let reply = live
        .post(SIGNAL_PATH, &[], json!({ "challenge_id": id }))
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    spec.check(Method::POST, SIGNAL_PATH, &reply);
    let body = json!({ "challenge_id": id }).to_string();
    let now = dialgate::store::now_ms() / 1000;
    let signature = dialgate::gateway::sign(SIGNAL_KEY.as_bytes(), now, body.as_bytes());
    let reply = live
        .call(
            Method::POST,
            SIGNAL_PATH,
            &[
                JSON,
                ("x-dialgate-timestamp", &now.to_string()),
                ("x-dialgate-signature", &signature),
            ],
            &body,
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{:?}", reply.body);
    spec.check(Method::POST, SIGNAL_PATH, &reply);

    // Cookie-carrying state changes from another origin, or with a body not declared
    // JSON, are refused.
    let evil = [
        ("cookie", cookie.as_str()),
        ("origin", "http://evil.example"),
    ];
    let reply = live.post("/v1/logout", &evil, Value::Null).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.json()["error"], "cross_site_request");
    spec.check(Method::POST, "/v1/logout", &reply);
    let form = [
        ("cookie", cookie.as_str()),
        ("content-type", "application/x-www-form-urlencoded"),
    ];
    let reply = live
        .call(Method::POST, "/v1/temp-passwords", &form, "label=x")
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.json()["error"], "json_required");
    spec.check(Method::POST, "/v1/temp-passwords", &reply);

    // Logout ends the session.
    let reply = live.post("/v1/logout", &session, Value::Null).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    spec.check(Method::POST, "/v1/logout", &reply);
    let reply = live
        .call(Method::GET, "/v1/balance", &[("cookie", &cookie)], "")
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    spec.check(Method::GET, "/v1/balance", &reply);
    let log = live.process.log_text();
    assert!(!log.contains("panicked"), "the server panicked:\n{log}");
}

// ---------------------------------------------------------------------------------------
// schemathesis
// ---------------------------------------------------------------------------------------

fn run(cmd: &mut Command, what: &str) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {:?}: {e}", cmd.get_program()));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The `st` of a venv under the target directory, installed (from PyPI, pinned) when
/// missing. No python3 or pip is a failure, not a skip.
fn schemathesis() -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("schemathesis-{SCHEMATHESIS}"));
    let st = venv.join("bin/st");
    let marker = venv.join(".installed");
    // Test runs sharing the target directory install one at a time (held until return).
    let lock =
        std::fs::File::create(venv.with_file_name(format!("schemathesis-{SCHEMATHESIS}.lock")))
            .unwrap();
    // SAFETY: flock on a descriptor this function owns; released when `lock` closes.
    let locked = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
    assert_eq!(locked, 0, "flock: {}", std::io::Error::last_os_error());
    if marker.exists() && st.exists() {
        return st;
    }
    let _ = std::fs::remove_dir_all(&venv);
    run(
        Command::new("python3").arg("-m").arg("venv").arg(&venv),
        "python3 -m venv (install python3 and python3-venv)",
    );
    let requirements =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis-requirements.txt");
    run(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(&requirements),
        "pip install schemathesis",
    );
    let out = run(Command::new(&st).arg("--version"), "st --version");
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(version.contains(SCHEMATHESIS), "installed {version}");
    std::fs::write(&marker, version.as_bytes()).unwrap();
    st
}

/// One `st run` against the live server; panics with its report on any failure.
fn schemathesis_run(st: &Path, live: &Live, dir: &Path, name: &str, config: &str, args: &[&str]) {
    let config_file = dir.join(format!("{name}.toml"));
    std::fs::write(&config_file, config).unwrap();
    let seed = std::env::var("DIALGATE_SCHEMATHESIS_SEED").unwrap_or_else(|_| "20261129".into());
    let started = Instant::now();
    let out = Command::new(st)
        .current_dir(dir)
        .arg("--config-file")
        .arg(&config_file)
        .arg("run")
        .arg(live.url(OPENAPI_PATH))
        .args(["--url", &live.base])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_headers_conformance,response_schema_conformance,negative_data_rejection",
        ])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", "25", "--workers", "2"])
        .args(["--request-timeout", "10", "--seed", &seed, "--no-color"])
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", st.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "schemathesis {name} ({:?}):\n{stdout}\n{stderr}",
        started.elapsed()
    );
    assert!(
        out.status.success(),
        "schemathesis {name} found failures (seed {seed}; set DIALGATE_SCHEMATHESIS_SEED to \
         replay):\n{stdout}\n{stderr}\nserver log tail:\n{}",
        tail(&live.process.log_text(), 60)
    );
    let log = live.process.log_text();
    assert!(
        !log.contains("panicked"),
        "the server panicked:\n{}",
        tail(&log, 80)
    );
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing() {
    let st = tokio::task::block_in_place(schemathesis);
    let live = tokio::task::block_in_place(|| {
        Live::start(&[
            "--login-limit-per-ip",
            "1000000",
            "--login-limit-per-account",
            "1000000",
        ])
    });
    live.wait_for_ami().await;
    // A session and a pending login's secret for the authenticated operations, and a
    // second session for logout (which ends the session it is given).
    let session = live.session().await;
    let spare = live.session().await;
    let (id, secret) = live.login().await;
    let dir = tempfile::tempdir().unwrap();
    let auth = |token: &str| {
        format!(
            "[auth.openapi.session]\napi_key = \"{token}\"\n\n\
             [auth.openapi.challenge]\napi_key = \"{secret}\"\n\n\
             [[operations]]\ninclude-path-regex = \"^/v1/login/\\\\{{id\\\\}}\"\n\
             parameters = {{ \"path.id\" = \"{id}\" }}\nmax-stream-events = 1\n"
        )
    };
    tokio::task::block_in_place(|| {
        schemathesis_run(
            &st,
            &live,
            dir.path(),
            "api",
            &auth(&session),
            &["--exclude-path", "/v1/logout", "--max-time", "40"],
        );
        schemathesis_run(
            &st,
            &live,
            dir.path(),
            "logout",
            &auth(&spare),
            &["--include-path", "/v1/logout", "--max-time", "10"],
        );
    });
}

#[test]
#[should_panic(expected = "does not match")]
fn the_checker_refuses_an_undocumented_body() {
    Spec::new().validate(
        "/components/schemas/Error",
        &json!({ "error": "not_a_code", "extra": 1 }),
        "a made-up error",
    );
}
