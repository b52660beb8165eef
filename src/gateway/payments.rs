//! The JSON API of temporary passwords and payments (issue 5):
//!
//! - `POST /v1/temp-passwords` issues one (201, the password shown only here), for
//!   `{username, password}` or the signed-in owner (session cookie);
//! - `GET /v1/temp-passwords` (session) and `POST /v1/temp-passwords/list`
//!   (`{username, password}`, or the session) list them;
//! - `POST /v1/temp-passwords/{id}/pause|resume|revoke` (session or `{username, password}`);
//! - `POST /v1/payments` pays (200 approved, 402 declined) with an optional
//!   `Idempotency-Key` header: the same credential, amount and currency get the first
//!   answer again with `Idempotent-Replayed: true`, anything else 422;
//! - `GET /v1/balance` (session).
//!
//! Wrong passwords count toward the gateway's limiter (per client address and per
//! account, shared with the login) and a locked-out caller gets 429 before any Argon2id
//! or HMAC work. Argon2id runs on blocking threads behind `argon_permits`. Store errors
//! are 503 (fail closed). Passwords are never logged.

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{FromRequest, Path, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde::{de::DeserializeOwned, Deserialize};
use serde_json::{json, Value};
use tokio::sync::OwnedSemaphorePermit;
use tracing::info;

use super::{
    api::{bearer, blocking, cookie, from_json_object, rfc3339_ms, ClientIp, JsonBody},
    ApiError, Gateway, MAX_BODY_BYTES, SESSION_COOKIE,
};
use crate::{
    auth::{
        accounts::AccountError,
        login,
        payments::{self, DeclineReason, PayError, PayOutcome, PayRequest, PaySettings},
        temp_passwords::{
            self, Conditions, Issued, Owner, TempPasswordError, TempPasswordSummary, MIN_KEY_BYTES,
        },
    },
    store::now_ms,
    time,
};

type Shared = State<Arc<Gateway>>;

/// Header carrying the client's idempotency key of a payment.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// Response header marking a replayed answer (`true`), as Stripe does.
pub const IDEMPOTENT_REPLAYED_HEADER: &str = "idempotent-replayed";

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

async fn argon_permit(gw: &Gateway) -> Result<OwnedSemaphorePermit, ApiError> {
    Arc::clone(&gw.argon_permits)
        .acquire_owned()
        .await
        .map_err(|e| ApiError::internal("the Argon2 semaphore", e))
}

/// The server key, or 503 when none (or a too short one) is configured: an empty HMAC
/// key would make the stored hashes unkeyed.
fn server_key(gw: &Gateway) -> Result<Vec<u8>, ApiError> {
    let key = &gw.config.temp_password_key;
    if key.len() < MIN_KEY_BYTES {
        return Err(
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable")
                .detail("temporary passwords are not configured on this server"),
        );
    }
    Ok(key.clone())
}

/// The signed-in user of the session cookie (or bearer token), if any and still open.
async fn session_user(gw: &Gateway, headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(token) = cookie(headers, SESSION_COOKIE).or_else(|| bearer(headers)) else {
        return Ok(None);
    };
    let store = gw.store.clone();
    Ok(blocking(move || login::session_user(&store, &token)).await??)
}

/// The signed-in user, or 401.
async fn require_session(gw: &Gateway, headers: &HeaderMap) -> Result<String, ApiError> {
    session_user(gw, headers)
        .await?
        .ok_or_else(ApiError::unauthorized)
}

/// A JSON body that may also be empty (routes where the session cookie suffices).
pub struct OptionalJson<T>(pub Option<T>);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError {
                    status: StatusCode::PAYLOAD_TOO_LARGE,
                    ..ApiError::bad_request(format!(
                        "the body is larger than {MAX_BODY_BYTES} bytes"
                    ))
                }
            } else {
                ApiError::bad_request(format!("cannot read the body: {}", rejection.body_text()))
            }
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(None));
        }
        from_json_object(&bytes).map(|v| OptionalJson(Some(v)))
    }
}

/// Unix ms of the RFC 3339 time in body field `field` (`crate::time`), or 400 naming it.
/// Pure; also used by the fuzz targets.
pub fn parse_time(field: &str, text: &str) -> Result<i64, ApiError> {
    time::parse_rfc3339(text).map_err(|_| {
        ApiError::bad_request(format!(
            "{field} is not an RFC 3339 time like 2026-12-01T08:00:00Z"
        ))
    })
}

fn opt_time(ms: Option<i64>) -> Value {
    ms.map_or(Value::Null, |ms| json!(rfc3339_ms(ms)))
}

/// One temporary password as the API shows it to its owner.
fn item_json(s: &TempPasswordSummary) -> Value {
    json!({
        "id": s.id,
        "label": s.label,
        "state": s.state,
        "status": s.status,
        "valid_from": opt_time(s.valid_from_ms),
        "valid_until": opt_time(s.valid_until_ms),
        "max_uses": s.max_uses,
        "uses": s.uses,
        "remaining_uses": s.remaining_uses,
        "spend_limit": s.spend_limit,
        "spent": s.spent,
        "remaining_limit": s.remaining_limit,
        "per_payment_limit": s.per_payment_limit,
        "created_at": rfc3339_ms(s.created_at_ms),
        "revoked_at": opt_time(s.revoked_at_ms),
    })
}

fn issued_json(issued: &Issued) -> Value {
    let mut body = item_json(&issued.summary);
    body["password"] = json!(issued.password);
    body["username"] = json!(issued.username);
    body["currency"] = json!(issued.currency);
    body
}

impl From<TempPasswordError> for ApiError {
    fn from(e: TempPasswordError) -> Self {
        match e {
            TempPasswordError::InvalidCredentials => {
                ApiError::new(StatusCode::UNAUTHORIZED, "invalid_credentials")
            }
            TempPasswordError::InvalidConditions(detail) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_conditions").detail(detail)
            }
            TempPasswordError::NotFound { .. } => ApiError::not_found(),
            TempPasswordError::WrongState { state, action, .. } => {
                ApiError::new(StatusCode::CONFLICT, "wrong_state").detail(format!(
                    "the temporary password is {state}; it cannot be {action}"
                ))
            }
            // The session's account went away (or its name is unusable): signed out.
            TempPasswordError::Account(AccountError::Store(e)) | TempPasswordError::Store(e) => {
                ApiError::store(&e)
            }
            TempPasswordError::Account(_) => ApiError::unauthorized(),
        }
    }
}

/// Who manages: the body's `{username, password}` when a password is given, else the
/// session.
enum Who {
    Password { username: String, password: String },
    Session(String),
}

impl Who {
    async fn resolve(
        gw: &Gateway,
        headers: &HeaderMap,
        username: Option<String>,
        password: Option<String>,
    ) -> Result<Who, ApiError> {
        match (username, password) {
            (Some(username), Some(password)) => Ok(Who::Password { username, password }),
            (None, Some(_)) => Err(ApiError::bad_request("a password needs its username")),
            _ => Ok(Who::Session(require_session(gw, headers).await?)),
        }
    }

    fn username(&self) -> &str {
        match self {
            Who::Password { username, .. } | Who::Session(username) => username,
        }
    }

    fn owner(&self) -> Owner<'_> {
        match self {
            Who::Password { username, password } => Owner::Password { username, password },
            Who::Session(username) => Owner::Authenticated(username),
        }
    }

    /// 429 when the password path is locked out (before any Argon2id work).
    fn check_limit(&self, gw: &Gateway, ip: &ClientIp) -> Result<(), ApiError> {
        if let Who::Password { username, .. } = self {
            if let Some(wait) = gw.limiter.check(ip.0, username) {
                return Err(ApiError::rate_limited(wait));
            }
        }
        Ok(())
    }

    /// Counts a wrong long-term password toward the limiter.
    fn after<T>(&self, gw: &Gateway, ip: &ClientIp, result: &Result<T, TempPasswordError>) {
        if let (Who::Password { username, .. }, Err(TempPasswordError::InvalidCredentials)) =
            (self, result)
        {
            if let Some(wait) = gw.limiter.failure(ip.0, username) {
                info!(client_ip = ?ip.0, wait, "failed temporary-password management: locked out");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// POST /v1/temp-passwords
// ---------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueRequest {
    username: Option<String>,
    password: Option<String>,
    label: Option<String>,
    valid_from: Option<String>,
    valid_until: Option<String>,
    /// Seconds from now (instead of `valid_until`).
    valid_for: Option<u64>,
    max_uses: Option<i32>,
    spend_limit: Option<i64>,
    per_payment_limit: Option<i64>,
}

/// The conditions of a `POST /v1/temp-passwords` body (times and `valid_for` read, not yet
/// validated). Pure; also used by the fuzz targets.
pub fn issue_conditions(req: &IssueRequest, now: i64) -> Result<Conditions, ApiError> {
    let valid_from = req
        .valid_from
        .as_deref()
        .map(|t| parse_time("valid_from", t))
        .transpose()?;
    let valid_until = match (&req.valid_until, req.valid_for) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "give valid_until or valid_for, not both",
            ))
        }
        (Some(t), None) => Some(parse_time("valid_until", t)?),
        (None, Some(secs)) => {
            let end = time::checked_end(now, std::time::Duration::from_secs(secs))
                .ok_or_else(|| ApiError::bad_request("valid_for is too large"))?;
            Some(end)
        }
        (None, None) => None,
    };
    Ok(Conditions {
        label: req.label.clone(),
        valid_from,
        valid_until,
        max_uses: req.max_uses,
        spend_limit: req.spend_limit,
        per_payment_limit: req.per_payment_limit,
    })
}

pub async fn issue(
    State(gw): Shared,
    ip: ClientIp,
    headers: HeaderMap,
    JsonBody(req): JsonBody<IssueRequest>,
) -> Result<Response, ApiError> {
    let key = server_key(&gw)?;
    let now = now_ms();
    let conditions = issue_conditions(&req, now)?;
    let who = Who::resolve(&gw, &headers, req.username, req.password).await?;
    who.check_limit(&gw, &ip)?;
    // Both paths run Argon2id (the password check; the issued password is compared with
    // the long-term one).
    let permit = argon_permit(&gw).await?;
    let (store, who) = (gw.store.clone(), Arc::new(who));
    let result = {
        let who = Arc::clone(&who);
        blocking(move || {
            let _permit = permit;
            match &*who {
                Who::Password { username, password } => {
                    temp_passwords::issue(&store, username, password, conditions, &key, now)
                }
                Who::Session(username) => {
                    temp_passwords::issue_authenticated(&store, username, conditions, &key, now)
                }
            }
        })
        .await?
    };
    who.after(&gw, &ip, &result);
    let issued = result?;
    if matches!(*who, Who::Password { .. }) {
        gw.limiter.success(who.username());
    }
    Ok((StatusCode::CREATED, Json(issued_json(&issued))).into_response())
}

// ---------------------------------------------------------------------------------------
// GET /v1/temp-passwords, POST /v1/temp-passwords/list, pause/resume/revoke
// ---------------------------------------------------------------------------------------

#[derive(Deserialize, Default)]
pub struct OwnerRequest {
    username: Option<String>,
    password: Option<String>,
}

#[derive(Clone, Copy)]
enum Action {
    List,
    Pause(i64),
    Resume(i64),
    Revoke(i64),
}

enum Managed {
    List(Vec<TempPasswordSummary>),
    One(TempPasswordSummary),
}

async fn manage(
    gw: &Gateway,
    ip: &ClientIp,
    headers: &HeaderMap,
    body: Option<OwnerRequest>,
    action: Action,
) -> Result<Response, ApiError> {
    let body = body.unwrap_or_default();
    let who = Arc::new(Who::resolve(gw, headers, body.username, body.password).await?);
    who.check_limit(gw, ip)?;
    let permit = match *who {
        Who::Password { .. } => Some(argon_permit(gw).await?),
        Who::Session(_) => None,
    };
    let store = gw.store.clone();
    let result = {
        let who = Arc::clone(&who);
        blocking(move || {
            let _permit = permit;
            let (owner, now) = (who.owner(), now_ms());
            match action {
                Action::List => temp_passwords::list(&store, owner, now).map(Managed::List),
                Action::Pause(id) => {
                    temp_passwords::pause(&store, owner, id, now).map(Managed::One)
                }
                Action::Resume(id) => {
                    temp_passwords::resume(&store, owner, id, now).map(Managed::One)
                }
                Action::Revoke(id) => {
                    temp_passwords::revoke(&store, owner, id, now).map(Managed::One)
                }
            }
        })
        .await?
    };
    who.after(gw, ip, &result);
    let body = match result? {
        Managed::List(items) => json!({ "items": items.iter().map(item_json).collect::<Vec<_>>() }),
        Managed::One(item) => item_json(&item),
    };
    Ok(Json(body).into_response())
}

/// `GET /v1/temp-passwords`: the signed-in owner's list.
pub async fn list(
    State(gw): Shared,
    ip: ClientIp,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    manage(&gw, &ip, &headers, None, Action::List).await
}

/// `POST /v1/temp-passwords/list`: with `{username, password}` (or the session).
pub async fn list_post(
    State(gw): Shared,
    ip: ClientIp,
    headers: HeaderMap,
    OptionalJson(body): OptionalJson<OwnerRequest>,
) -> Result<Response, ApiError> {
    manage(&gw, &ip, &headers, body, Action::List).await
}

fn temp_password_id(text: &str) -> Result<i64, ApiError> {
    text.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(ApiError::not_found)
}

/// `POST /v1/temp-passwords/{id}/pause|resume|revoke`.
pub async fn change_state(
    State(gw): Shared,
    Path((id, change)): Path<(String, String)>,
    ip: ClientIp,
    headers: HeaderMap,
    OptionalJson(body): OptionalJson<OwnerRequest>,
) -> Result<Response, ApiError> {
    let id = temp_password_id(&id)?;
    let action = match change.as_str() {
        "pause" => Action::Pause(id),
        "resume" => Action::Resume(id),
        "revoke" => Action::Revoke(id),
        _ => return Err(ApiError::not_found()),
    };
    manage(&gw, &ip, &headers, body, action).await
}

// ---------------------------------------------------------------------------------------
// POST /v1/payments
// ---------------------------------------------------------------------------------------

#[derive(Deserialize)]
pub struct PaymentRequest {
    username: String,
    password: String,
    /// Integer minor units (1250 = 12.50).
    amount: i64,
    currency: Option<String>,
}

pub async fn pay(
    State(gw): Shared,
    ip: ClientIp,
    headers: HeaderMap,
    JsonBody(req): JsonBody<PaymentRequest>,
) -> Result<Response, ApiError> {
    let key = server_key(&gw)?;
    let idempotency_key = match headers.get(IDEMPOTENCY_KEY_HEADER) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| ApiError::bad_request("the Idempotency-Key must be printable ASCII"))?
                .to_string(),
        ),
    };
    payments::check_amount(req.amount).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if let Some(wait) = gw.limiter.check(ip.0, &req.username) {
        return Err(ApiError::rate_limited(wait));
    }
    // Anything but a matching temporary password costs one Argon2id verification when
    // the long-term password may pay (also for unknown users).
    let allow_long_term = gw.config.allow_long_term_payments;
    let permit = if allow_long_term {
        Some(argon_permit(&gw).await?)
    } else {
        None
    };
    let (store, client_ip) = (gw.store.clone(), ip.0.map(|ip| ip.to_string()));
    let username = req.username.clone();
    let result = blocking(move || {
        let _permit = permit;
        let request = PayRequest {
            username: &req.username,
            password: &req.password,
            amount: req.amount,
            currency: req.currency.as_deref(),
            idempotency_key: idempotency_key.as_deref(),
            client_ip: client_ip.as_deref(),
        };
        let settings = PaySettings {
            allow_long_term,
            server_key: &key,
        };
        payments::pay(&store, &request, &settings, now_ms())
    })
    .await?;
    let (outcome, replayed) = match result {
        Ok(paid) => (paid.outcome, paid.replayed),
        Err(PayError::IdempotencyMismatch) => {
            return Err(
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
                    .detail(PayError::IdempotencyMismatch.to_string()),
            )
        }
        Err(PayError::Invalid(e)) => return Err(ApiError::bad_request(e.to_string())),
        Err(PayError::Store(e)) => return Err(ApiError::store(&e)),
    };
    let status = match &outcome {
        PayOutcome::Approved { balance, .. } => {
            // Only the long-term password proves the owner: a temporary password's
            // success must not reset the account's count.
            if balance.is_some() {
                gw.limiter.success(&username);
            }
            StatusCode::OK
        }
        PayOutcome::Declined {
            reason: DeclineReason::InvalidCredentials,
            ..
        } => {
            if let Some(wait) = gw.limiter.failure(ip.0, &username) {
                info!(client_ip = ?ip.0, wait, "failed payments: locked out");
            }
            StatusCode::PAYMENT_REQUIRED
        }
        PayOutcome::Declined { .. } => StatusCode::PAYMENT_REQUIRED,
    };
    let mut response = (status, Json(outcome)).into_response();
    if replayed {
        response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED_HEADER, HeaderValue::from_static("true"));
    }
    Ok(response)
}

// ---------------------------------------------------------------------------------------
// GET /v1/balance
// ---------------------------------------------------------------------------------------

pub async fn balance(State(gw): Shared, headers: HeaderMap) -> Result<Response, ApiError> {
    let username = require_session(&gw, &headers).await?;
    let store = gw.store.clone();
    let summary = blocking(move || payments::balance(&store, &username))
        .await?
        .map_err(|e| match e {
            payments::PaymentError::Store(e)
            | payments::PaymentError::Account(AccountError::Store(e)) => ApiError::store(&e),
            _ => ApiError::unauthorized(),
        })?;
    Ok(Json(json!({
        "username": summary.username,
        "balance": summary.balance,
        "currency": summary.currency,
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzz/http_json: a `valid_for` past year 9999 panicked when printed.
    #[test]
    fn valid_for_past_year_9999_is_refused() {
        let req: IssueRequest = serde_json::from_str(r#"{"valid_for":1000000000000}"#).unwrap();
        let e = issue_conditions(&req, 1_795_910_400_000).err().unwrap();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let req: IssueRequest = serde_json::from_str(r#"{"valid_for":7200}"#).unwrap();
        let c = issue_conditions(&req, 1_795_910_400_000).unwrap();
        assert_eq!(c.valid_until, Some(1_795_917_600_000));
    }
}
