//! The JSON API: login, challenge status and events, session exchange, forward-auth,
//! logout, and the node-to-node signal.

use std::{
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Request, State},
    http::{header, request::Parts, HeaderMap, HeaderName, HeaderValue, StatusCode},
    response::{
        sse::{Event, KeepAlive, Sse},
        IntoResponse, Response,
    },
    Json,
};
use futures::{stream, Stream};
use serde::{de::DeserializeOwned, Deserialize};
use serde_json::json;
use tracing::{info, warn};

use super::{
    hub::{verify_signature, Waiter, SIGNATURE_HEADER, TIMESTAMP_HEADER},
    ApiError, Gateway, CHALLENGE_COOKIE, MAX_BODY_BYTES, SESSION_COOKIE,
};
pub(super) use crate::rt::blocking;
use crate::{
    auth::{
        login::{self, ChallengeError, ChallengeState, ChallengeStatus, LoginError},
        plausible_challenge_id,
    },
    rt::Interrupted,
    store::now_ms,
};

type Shared = State<Arc<Gateway>>;

// ---------------------------------------------------------------------------------------
// Extractors and helpers
// ---------------------------------------------------------------------------------------

/// The peer address (the server runs with `ConnectInfo<SocketAddr>`; `None` without it).
pub struct ClientIp(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip().to_canonical()),
        ))
    }
}

impl ClientIp {
    fn text(&self) -> Option<String> {
        self.0.map(|ip| ip.to_string())
    }
}

/// A JSON body; anything unreadable is a 400 (413 when too large) in our error shape.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = body_bytes(req, state).await?;
        from_json_object(&bytes).map(JsonBody)
    }
}

/// A JSON object body as `T`. serde also reads a struct from an array of its fields
/// (`["alice", "pw"]`), which is not the documented shape: only an object is taken.
pub(super) fn from_json_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bad = |e: &dyn std::fmt::Display| {
        ApiError::bad_request(format!("the body is not the expected JSON: {e}"))
    };
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(bad(&"not a JSON object"));
    }
    serde_json::from_slice(bytes).map_err(|e| bad(&e))
}

async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                ..ApiError::bad_request(format!("the body is larger than {MAX_BODY_BYTES} bytes"))
            }
        } else {
            ApiError::bad_request(format!("cannot read the body: {}", rejection.body_text()))
        }
    })
}

/// Blocking work (store, Argon2id) that did not return is a 500.
impl From<Interrupted> for ApiError {
    fn from(e: Interrupted) -> Self {
        ApiError::internal("a blocking task", e)
    }
}

/// A challenge as the browser addresses it: the id from the path, the secret from
/// `Authorization: Bearer`, else the cookie. No secret, or an id that cannot be one, is
/// a 404 before any store work.
pub struct ChallengeKey {
    pub id: String,
    pub secret: String,
}

impl<S: Send + Sync> FromRequestParts<S> for ChallengeKey {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let secret = challenge_secret(&parts.headers)
            .filter(|_| plausible_challenge_id(&id))
            .ok_or_else(|| ApiError::not_found().into_response())?;
        Ok(ChallengeKey { id, secret })
    }
}

/// The token of the first `Authorization: Bearer <token>` header (scheme case-insensitive,
/// token trimmed, an empty one ignored). Pure; also used by the fuzz targets.
pub fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_string())
        })
        .filter(|t| !t.is_empty())
}

/// The value of the first cookie `name` in the `Cookie` headers (trimmed, surrounding
/// quotes removed, an empty one ignored). Pure; also used by the fuzz targets.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k.trim() == name).then(|| v.trim().trim_matches('"').to_string())
        })
        .filter(|v| !v.is_empty())
}

/// The challenge secret: `Authorization: Bearer` first, else the cookie. Also used by the
/// fuzz targets.
pub fn challenge_secret(headers: &HeaderMap) -> Option<String> {
    bearer(headers).or_else(|| cookie(headers, CHALLENGE_COOKIE))
}

/// The session token: the cookie first, else `Authorization: Bearer`. Also used by the fuzz
/// targets.
pub fn session_token(headers: &HeaderMap) -> Option<String> {
    cookie(headers, SESSION_COOKIE).or_else(|| bearer(headers))
}

fn set_cookie(
    gw: &Gateway,
    name: &str,
    value: &str,
    path: &str,
    same_site: &str,
    max_age: u64,
) -> HeaderValue {
    let secure = if gw.config.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{name}={value}; HttpOnly; SameSite={same_site}; Path={path}; Max-Age={max_age}{secure}"
    ))
    .expect("cookie values are URL-safe base64")
}

fn challenge_cookie(gw: &Gateway, secret: &str, max_age: u64) -> HeaderValue {
    set_cookie(gw, CHALLENGE_COOKIE, secret, "/v1/login", "Strict", max_age)
}

fn session_cookie(gw: &Gateway, token: &str, max_age: u64) -> HeaderValue {
    set_cookie(gw, SESSION_COOKIE, token, "/", "Lax", max_age)
}

/// RFC 3339 (UTC, seconds) of a store timestamp.
pub use crate::time::format_rfc3339 as rfc3339_ms;

/// Seconds from now until `ms`, rounded up, at least 0.
fn secs_until(ms: i64) -> u64 {
    let left = ms.saturating_sub(now_ms()).max(0) as u64;
    left.div_ceil(1000)
}

/// A dial-in number grouped for reading (`+86 10 5555 0100`); the E.164 form if
/// libphonenumber does not know how to group it.
pub fn dial_display(e164: &str) -> String {
    phonenumber::parse(None, e164)
        .map(|n| {
            n.format()
                .mode(phonenumber::Mode::International)
                .to_string()
        })
        .unwrap_or_else(|_| e164.to_string())
}

fn state_json(status: &ChallengeStatus) -> serde_json::Value {
    let mut body = serde_json::to_value(&status.state).unwrap_or_else(|_| json!({}));
    body["expires_at"] = json!(rfc3339_ms(status.expires_at_ms));
    body
}

// ---------------------------------------------------------------------------------------
// POST /v1/login
// ---------------------------------------------------------------------------------------

#[derive(Deserialize)]
pub struct LoginRequest {
    username: String,
    password: String,
}

pub async fn login(
    State(gw): Shared,
    ip: ClientIp,
    JsonBody(req): JsonBody<LoginRequest>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let outcome = login_inner(&gw, &ip, req).await;
    let label = match &outcome {
        Ok(_) => "challenge",
        Err(e) => match e.code {
            "invalid_credentials" | "rate_limited" => e.code,
            "no_phone" => "no_phone",
            _ => "error",
        },
    };
    gw.metrics.login(label, started.elapsed().as_secs_f64());
    outcome
}

async fn login_inner(
    gw: &Arc<Gateway>,
    ip: &ClientIp,
    req: LoginRequest,
) -> Result<Response, ApiError> {
    if let Some(wait) = gw.limiter.check(ip.0, &req.username) {
        return Err(ApiError::rate_limited(wait));
    }
    let permit = Arc::clone(&gw.argon_permits)
        .acquire_owned()
        .await
        .map_err(|e| ApiError::internal("the Argon2 semaphore", e))?;
    let result = {
        let (store, settings, client_ip) = (gw.store.clone(), gw.config.login.clone(), ip.text());
        let (username, password) = (req.username.clone(), req.password);
        blocking(move || {
            let _permit = permit;
            login::start(
                &store,
                &settings,
                &username,
                &password,
                client_ip.as_deref(),
            )
        })
        .await?
    };
    let start = match result {
        Ok(start) => start,
        Err(LoginError::InvalidCredentials) => {
            if let Some(wait) = gw.limiter.failure(ip.0, &req.username) {
                info!(client_ip = ?ip.0, wait, "failed logins: locked out");
            }
            return Err(LoginError::InvalidCredentials.into());
        }
        Err(e) => return Err(e.into()),
    };
    gw.limiter.success(&req.username);
    let mut body = json!({
        "challenge_id": start.challenge_id,
        "secret": start.secret,
        "dial_number": start.dial_number,
        "dial_display": dial_display(&start.dial_number),
        "expires_at": rfc3339_ms(start.expires_at_ms),
        "phone_hint": start.phone_hint,
        "username": start.username,
    });
    if let Some(code) = &start.code {
        body["code"] = json!(code);
    }
    let mut response = Json(body).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        challenge_cookie(gw, &start.secret, secs_until(start.expires_at_ms)),
    );
    Ok(response)
}

// ---------------------------------------------------------------------------------------
// GET /v1/login/{id}
// ---------------------------------------------------------------------------------------

async fn read_status(
    gw: &Gateway,
    id: &str,
    secret: &str,
) -> Result<Result<ChallengeStatus, ChallengeError>, ApiError> {
    let (store, id, secret) = (gw.store.clone(), id.to_string(), secret.to_string());
    Ok(blocking(move || login::status(&store, &id, &secret)).await?)
}

pub async fn status(
    State(gw): Shared,
    ChallengeKey { id, secret }: ChallengeKey,
) -> Result<Response, ApiError> {
    let status = read_status(&gw, &id, &secret).await??;
    Ok(Json(state_json(&status)).into_response())
}

// ---------------------------------------------------------------------------------------
// GET /v1/login/{id}/events
// ---------------------------------------------------------------------------------------

struct EventWatch {
    gw: Arc<Gateway>,
    id: String,
    secret: String,
    waiter: Waiter,
    closing: tokio::sync::watch::Receiver<bool>,
    first: Option<ChallengeStatus>,
    expires_at_ms: i64,
    done: bool,
}

/// The SSE event for a state, and whether it ends the stream.
fn sse_event(status: &ChallengeStatus) -> (Event, bool) {
    let (name, data, last) = match &status.state {
        ChallengeState::Pending => ("pending", state_json(status), false),
        ChallengeState::Verified => ("verified", state_json(status), true),
        ChallengeState::Failed { .. } => ("failed", state_json(status), true),
        ChallengeState::Expired => ("expired", state_json(status), true),
        // Already exchanged (e.g. in another tab): nothing more to wait for.
        ChallengeState::Consumed => (
            "failed",
            json!({ "state": "failed", "reason": "consumed",
                    "expires_at": rfc3339_ms(status.expires_at_ms) }),
            true,
        ),
    };
    (Event::default().event(name).data(data.to_string()), last)
}

impl EventWatch {
    /// The next event, or `None` when the stream ends.
    async fn next(&mut self) -> Option<Event> {
        if self.done {
            return None;
        }
        if let Some(first) = self.first.take() {
            let (event, last) = sse_event(&first);
            self.done = last;
            return Some(event);
        }
        loop {
            let poll = self.gw.config.sse_poll;
            let to_expiry =
                Duration::from_millis((self.expires_at_ms - now_ms()).max(0) as u64 + 50);
            let wait = poll.min(to_expiry.max(Duration::from_millis(250)));
            tokio::select! {
                _ = self.waiter.changed() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = self.closing.wait_for(|closing| *closing) => return None,
            }
            match read_status(&self.gw, &self.id, &self.secret).await {
                Ok(Ok(status)) if status.state == ChallengeState::Pending => {
                    self.expires_at_ms = status.expires_at_ms;
                }
                Ok(Ok(status)) => {
                    self.done = true;
                    return Some(sse_event(&status).0);
                }
                // The challenge disappeared (account deleted): nothing to wait for.
                Ok(Err(ChallengeError::NotFound)) => return None,
                // Store down: keep waiting, fail closed (never report verified).
                Ok(Err(e)) => warn!(challenge_id = %self.id, error = %e, "SSE re-read failed"),
                Err(_) => return None,
            }
        }
    }
}

pub async fn events(
    State(gw): Shared,
    ChallengeKey { id, secret }: ChallengeKey,
) -> Result<Response, ApiError> {
    // Subscribe before reading, so a change in between is not lost.
    let waiter = gw.hub.subscribe(&id);
    let first = read_status(&gw, &id, &secret).await??;
    let watch = EventWatch {
        closing: gw.closing(),
        expires_at_ms: first.expires_at_ms,
        first: Some(first),
        gw,
        id,
        secret,
        waiter,
        done: false,
    };
    let events: std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>> =
        Box::pin(stream::unfold(watch, |mut watch| async move {
            let event = watch.next().await?;
            Some((Ok(event), watch))
        }));
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response();
    // Tell nginx not to buffer the stream.
    response.headers_mut().insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    Ok(response)
}

// ---------------------------------------------------------------------------------------
// POST /v1/login/{id}/session
// ---------------------------------------------------------------------------------------

pub async fn exchange(
    State(gw): Shared,
    ChallengeKey { id, secret }: ChallengeKey,
    ip: ClientIp,
) -> Result<Response, ApiError> {
    let result = {
        let (store, settings, client_ip) = (gw.store.clone(), gw.config.login.clone(), ip.text());
        blocking(move || login::exchange(&store, &settings, &id, &secret, client_ip.as_deref()))
            .await?
    };
    match result {
        Ok(issued) => {
            gw.metrics.sessions.inc();
            let mut response = Json(json!({
                "username": issued.username,
                "expires_at": rfc3339_ms(issued.expires_at_ms),
            }))
            .into_response();
            let headers = response.headers_mut();
            headers.append(
                header::SET_COOKIE,
                session_cookie(&gw, &issued.token, secs_until(issued.expires_at_ms)),
            );
            headers.append(header::SET_COOKIE, challenge_cookie(&gw, "", 0));
            Ok(response)
        }
        Err(ChallengeError::Gone) => {
            let mut response = ApiError::from(ChallengeError::Gone).into_response();
            response
                .headers_mut()
                .append(header::SET_COOKIE, challenge_cookie(&gw, "", 0));
            Ok(response)
        }
        Err(e) => Err(e.into()),
    }
}

// ---------------------------------------------------------------------------------------
// GET /v1/auth, POST /v1/logout
// ---------------------------------------------------------------------------------------

pub async fn forward_auth(State(gw): Shared, headers: HeaderMap) -> Result<Response, ApiError> {
    let token = session_token(&headers).ok_or_else(ApiError::unauthorized)?;
    let store = gw.store.clone();
    let user = blocking(move || login::session_user(&store, &token)).await??;
    let user = user.ok_or_else(ApiError::unauthorized)?;
    let value = HeaderValue::from_str(&user)
        .map_err(|e| ApiError::internal("the X-Dialgate-User header", e))?;
    Ok((
        StatusCode::OK,
        [(HeaderName::from_static("x-dialgate-user"), value)],
    )
        .into_response())
}

pub async fn logout(State(gw): Shared, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some(token) = session_token(&headers) {
        let store = gw.store.clone();
        blocking(move || login::logout(&store, &token)).await??;
    }
    Ok((
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, session_cookie(&gw, "", 0))],
    )
        .into_response())
}

// ---------------------------------------------------------------------------------------
// POST /v1/internal/signal
// ---------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct SignalRequest {
    challenge_id: String,
}

pub async fn signal(
    State(gw): Shared,
    headers: HeaderMap,
    req: Request,
) -> Result<Response, ApiError> {
    let Some(key) = gw.hub.signal_key().map(<[u8]>::to_vec) else {
        return Err(ApiError::not_found());
    };
    let header_text = |name: &str| -> Option<String> {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let timestamp = header_text(TIMESTAMP_HEADER).and_then(|t| t.trim().parse::<i64>().ok());
    let signature = header_text(SIGNATURE_HEADER);
    let body = body_bytes(req, &gw).await?;
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
        return Err(ApiError::unauthorized());
    };
    if !verify_signature(&key, timestamp, &signature, &body, now_ms() / 1000) {
        warn!("refused a node signal: bad signature or timestamp out of window");
        return Err(ApiError::unauthorized());
    }
    let req: SignalRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body is not the expected JSON: {e}")))?;
    gw.hub.notify_local(&req.challenge_id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_from_headers() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            "a=1; dialgate_challenge=s3c; b=2".parse().unwrap(),
        );
        assert_eq!(challenge_secret(&h).as_deref(), Some("s3c"));
        h.append(header::AUTHORIZATION, "bearer  tok ".parse().unwrap());
        assert_eq!(challenge_secret(&h).as_deref(), Some("tok"));
        assert_eq!(cookie(&h, "dialgate_session"), None);
        let mut h = HeaderMap::new();
        h.append(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn bodies_are_objects() {
        let login = |body: &str| from_json_object::<LoginRequest>(body.as_bytes());
        assert!(login(r#" {"username": "a", "password": "b"}"#).is_ok());
        for bad in [r#"["a", "b"]"#, "null", "", "1", r#"{"username": "a"}"#] {
            let e = login(bad).err().unwrap();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad:?}");
        }
    }

    #[test]
    fn formats() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00Z");
        assert_eq!(dial_display("+861055550100"), "+86 10 5555 0100");
    }
}
