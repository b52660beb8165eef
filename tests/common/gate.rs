//! The real `dialgate serve` for the end-to-end tests (dialin_e2e, callback_e2e), and
//! the page's side of a login over HTTP: start it, its status, its events, the session.

use std::{net::SocketAddr, time::Duration};

use hyper::{header, Method, StatusCode};
use serde_json::{json, Value};

use super::{
    db::TestDb,
    http::{http, send, Reply},
    sse::SseReader,
    ServeProcess,
};

/// The account every end-to-end scenario signs in as.
pub const USER: &str = "alice";
pub const PASSWORD: &str = "correct horse battery";
/// alice's enrolled phone.
pub const PHONE: &str = "+8613800138000";
/// The trunk whose caller ID `serve` trusts.
pub const TRUSTED_TRUNK: &str = "PJSIP/carrier";

/// Enrolls alice with her phone through the CLI.
pub fn enroll(db: &TestDb) {
    db.enroll(USER, PHONE, "Alice", PASSWORD);
}

/// A running `dialgate serve`: its HTTP base URL and FastAGI address.
pub struct Gate {
    pub process: ServeProcess,
    pub http: String,
    pub agi: SocketAddr,
}

/// The flags every scenario gives `serve`: the database, the numbers to call, the
/// trusted trunk and cookies without `Secure`; then `extra`.
fn serve_args(database_url: &str, dialin_numbers: &[&str], extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec!["--database-url".into(), database_url.into()];
    for number in dialin_numbers {
        args.extend(["--dialin-number".into(), number.to_string()]);
    }
    args.extend(
        ["--trusted-trunk", TRUSTED_TRUNK, "--insecure-cookies"]
            .iter()
            .chain(extra)
            .map(|s| s.to_string()),
    );
    args
}

impl Gate {
    /// `serve` on `database_url` with the common flags (see [`serve_args`]) and `extra`.
    pub fn start(database_url: &str, dialin_numbers: &[&str], extra: &[&str]) -> Gate {
        let args = serve_args(database_url, dialin_numbers, extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        tokio::task::block_in_place(|| Gate::from(ServeProcess::start(&args, None)))
    }

    /// Like [`Gate::start`], on a chosen HTTP address.
    pub fn start_on(
        database_url: &str,
        dialin_numbers: &[&str],
        http: SocketAddr,
        extra: &[&str],
    ) -> Gate {
        let args = serve_args(database_url, dialin_numbers, extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        tokio::task::block_in_place(|| Gate::from(ServeProcess::start_with_http(&args, http)))
    }

    fn from(process: ServeProcess) -> Gate {
        let http = format!("http://{}", process.http_addr());
        let agi = process.addr;
        Gate { process, http, agi }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.http)
    }

    pub fn log(&self) -> String {
        self.process.log_text()
    }

    /// `GET path` without headers.
    pub async fn get(&self, path: &str) -> Reply {
        http(Method::GET, &self.url(path), &[], "").await
    }

    /// `/healthz`, whatever it answers.
    pub async fn healthz(&self) -> Reply {
        self.get("/healthz").await
    }
}

/// A login started over HTTP: what the page got back.
pub struct Login {
    pub id: String,
    pub secret: String,
    pub dial_number: String,
    pub code: Option<String>,
}

impl Login {
    pub fn auth(&self) -> String {
        format!("Bearer {}", self.secret)
    }
}

/// `POST /v1/login` with alice's username and password.
pub async fn login_reply(gate: &Gate) -> Reply {
    http(
        Method::POST,
        &gate.url("/v1/login"),
        &[("content-type", "application/json")],
        &json!({ "username": USER, "password": PASSWORD }).to_string(),
    )
    .await
}

/// Starts alice's login, which must succeed.
pub async fn login(gate: &Gate) -> Login {
    let reply = login_reply(gate).await;
    assert_eq!(reply.status, StatusCode::OK, "login: {:?}", reply.body);
    let body = reply.json();
    Login {
        id: body["challenge_id"].as_str().unwrap().to_string(),
        secret: body["secret"].as_str().unwrap().to_string(),
        dial_number: body["dial_number"].as_str().unwrap().to_string(),
        code: body["code"].as_str().map(str::to_string),
    }
}

/// `method /v1/login/{id}{suffix}` with these headers and no body.
pub async fn on_login(
    gate: &Gate,
    method: Method,
    login: &Login,
    suffix: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let url = gate.url(&format!("/v1/login/{}{suffix}", login.id));
    http(method, &url, headers, "").await
}

/// [`on_login`] with the login's secret as the bearer token.
pub async fn with_secret(gate: &Gate, method: Method, login: &Login, suffix: &str) -> Reply {
    on_login(
        gate,
        method,
        login,
        suffix,
        &[("authorization", &login.auth())],
    )
    .await
}

/// GET /v1/login/{id} with the secret: (HTTP status, body).
pub async fn status(gate: &Gate, login: &Login) -> (StatusCode, Value) {
    let reply = with_secret(gate, Method::GET, login, "").await;
    let body = if reply.status == StatusCode::OK {
        reply.json()
    } else {
        Value::Null
    };
    (reply.status, body)
}

/// The login's status body, which must be there.
pub async fn state(gate: &Gate, login: &Login) -> Value {
    let (code, body) = status(gate, login).await;
    assert_eq!(code, StatusCode::OK, "status of {}", login.id);
    body
}

/// POST /v1/login/{id}/session with these headers.
pub async fn exchange_with(gate: &Gate, login: &Login, headers: &[(&str, &str)]) -> Reply {
    on_login(gate, Method::POST, login, "/session", headers).await
}

/// POST /v1/login/{id}/session with the secret.
pub async fn exchange(gate: &Gate, login: &Login) -> Reply {
    with_secret(gate, Method::POST, login, "/session").await
}

/// The login's event stream (`GET /v1/login/{id}/events` with the secret).
pub async fn events(gate: &Gate, login: &Login) -> SseReader {
    let response = send(
        Method::GET,
        &gate.url(&format!("/v1/login/{}/events", login.id)),
        &[("authorization", &login.auth())],
        "",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    SseReader::new(response.into_body())
}
