//! `POST /v1/login/{id}/callback`: "call me instead". dialgate places a call over AMI to
//! the enrolled phone of the challenge's account (never a number from the request); the
//! answered leg runs the FastAGI `confirm` script, where pressing 1 verifies the login.
//! A failed Originate (busy, no answer, congestion) fails the challenge with that
//! reason, which the waiting page receives as `failed`.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use serde_json::json;
use tracing::{info, warn};

use super::{
    api::{blocking, ChallengeKey, ClientIp},
    limit::seconds_up,
    ApiError, Gateway,
};
use crate::{
    ami::{AmiClient, AmiError, LinkState, Originate, OriginateReason},
    auth::callbacks::PendingCallbacks,
    auth::{
        audit,
        login::{self, CallbackTarget, ChallengeError},
        signal::ChallengeSignal,
    },
    phone::{self, mask},
    store::{now_ms, Store, StoreError},
};

/// The channel variable carrying the challenge id to the dialplan (and `confirm`).
pub const CHALLENGE_VARIABLE: &str = "DIALGATE_CHALLENGE";
/// The `Account` (CDR accountcode) of every call-back leg.
pub const CALLBACK_ACCOUNT: &str = "dialgate";
/// Placeholder of the enrolled number in the channel template.
pub const NUMBER_PLACEHOLDER: &str = "{number}";

/// How call-backs are placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackSettings {
    /// Dial string with `{number}` for the enrolled E.164 number, e.g.
    /// `PJSIP/{number}@carrier`.
    pub channel_template: String,
    pub context: String,
    pub exten: String,
    pub priority: u32,
    /// What the user's phone shows, e.g. `"dialgate" <+861055550100>`.
    pub caller_id: Option<String>,
    /// Ring time.
    pub timeout: Duration,
    /// Least time between two call-backs to one account, or to one number.
    pub min_interval: Duration,
    /// Most call-backs per account, and per number, in an hour.
    pub per_hour: usize,
}

impl CallbackSettings {
    /// The defaults, stated once (`dialgate serve --help` shows them too).
    pub const DEFAULT_CHANNEL_TEMPLATE: &'static str = "PJSIP/{number}@carrier";
    pub const DEFAULT_CONTEXT: &'static str = "dialgate-callback";
    pub const DEFAULT_EXTEN: &'static str = "s";
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
}

impl Default for CallbackSettings {
    fn default() -> Self {
        CallbackSettings {
            channel_template: Self::DEFAULT_CHANNEL_TEMPLATE.into(),
            context: Self::DEFAULT_CONTEXT.into(),
            exten: Self::DEFAULT_EXTEN.into(),
            priority: 1,
            caller_id: None,
            timeout: Self::DEFAULT_TIMEOUT,
            min_interval: Duration::from_secs(60),
            per_hour: 5,
        }
    }
}

/// Checks a channel template: it must contain `{number}` and no CR, LF or NUL.
pub fn check_channel_template(template: &str) -> Result<(), String> {
    if template.contains(['\r', '\n', '\0']) {
        return Err(format!(
            "the call-back channel template {template:?} contains CR, LF or NUL"
        ));
    }
    if !template.contains(NUMBER_PLACEHOLDER) {
        return Err(format!(
            "the call-back channel template {template:?} has no {NUMBER_PLACEHOLDER}: \
             the call must go to the enrolled number (e.g. PJSIP/{{number}}@carrier)"
        ));
    }
    if template.trim().is_empty() || template.contains(char::is_whitespace) {
        return Err(format!(
            "the call-back channel template {template:?} is empty or contains spaces"
        ));
    }
    Ok(())
}

impl CallbackSettings {
    /// The dial string for `number` (E.164: `+` and digits only).
    pub fn channel_for(&self, number: &str) -> String {
        self.channel_template.replace(NUMBER_PLACEHOLDER, number)
    }
}

/// Call-backs per account and per number: at most one per `min_interval` and
/// `per_hour` an hour. In memory, per node.
#[derive(Debug)]
pub struct CallbackLimiter {
    min_interval: Duration,
    per_hour: usize,
    calls: Mutex<HashMap<String, VecDeque<Instant>>>,
}

const HOUR: Duration = Duration::from_secs(3600);

impl CallbackLimiter {
    pub fn new(settings: &CallbackSettings) -> CallbackLimiter {
        CallbackLimiter {
            min_interval: settings.min_interval,
            per_hour: settings.per_hour.max(1),
            calls: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a call-back to these keys, or returns the seconds to wait.
    pub fn try_acquire(&self, keys: &[String]) -> Result<(), u64> {
        let now = Instant::now();
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        calls.retain(|_, times| {
            while times
                .front()
                .is_some_and(|t| now.duration_since(*t) >= HOUR)
            {
                times.pop_front();
            }
            !times.is_empty()
        });
        let mut wait = Duration::ZERO;
        for key in keys {
            let Some(times) = calls.get(key) else {
                continue;
            };
            if let Some(last) = times.back() {
                let since = now.duration_since(*last);
                if since < self.min_interval {
                    wait = wait.max(self.min_interval - since);
                }
            }
            if times.len() >= self.per_hour {
                let oldest = times[times.len() - self.per_hour];
                wait = wait.max(HOUR.saturating_sub(now.duration_since(oldest)));
            }
        }
        if !wait.is_zero() {
            return Err(seconds_up(wait));
        }
        for key in keys {
            calls.entry(key.clone()).or_default().push_back(now);
        }
        Ok(())
    }
}

/// The failure reason the browser is shown for an Originate that was not answered.
fn failure_reason(reason: OriginateReason) -> &'static str {
    match reason {
        OriginateReason::Busy => "callback_busy",
        OriginateReason::HungUp | OriginateReason::NoAnswer => "callback_no_answer",
        OriginateReason::Congestion => "callback_congestion",
        OriginateReason::Failed | OriginateReason::Answered | OriginateReason::Other(_) => {
            "callback_failed"
        }
    }
}

fn unavailable(detail: &str) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "callback_unavailable").detail(detail)
}

/// Writes an audit row; a store failure is only logged.
async fn audit_row(
    store: &Store,
    outcome: &'static str,
    reason: Option<&'static str>,
    target: &CallbackTarget,
    client_ip: Option<String>,
    detail: serde_json::Value,
) {
    let target = target.clone();
    let written = store
        .write(move |conn| -> Result<(), StoreError> {
            let mut event = audit::Event::new("callback", outcome)
                .account(target.account_id, &target.username)
                .detail(detail);
            if let Some(reason) = reason {
                event = event.reason(reason);
            }
            if let Some(ip) = &client_ip {
                event = event.client_ip(ip);
            }
            Ok(audit::record(conn, event)?)
        })
        .await;
    if let Err(e) = written {
        warn!(error = %e, "could not write the call-back's audit row");
    }
}

pub async fn request(
    State(gw): State<Arc<Gateway>>,
    ChallengeKey { id, secret }: ChallengeKey,
    ip: ClientIp,
    body: Bytes,
) -> Result<Response, ApiError> {
    // The number is never the caller's to choose: refuse any body that says more than `{}`.
    let text = std::str::from_utf8(&body).unwrap_or("?").trim();
    if !(text.is_empty() || text == "{}" || text == "null") {
        return Err(ApiError::bad_request(
            "a call-back always goes to the enrolled phone; send no body",
        ));
    }
    match gw.ami.state() {
        LinkState::Disabled => {
            gw.metrics.callback("unavailable");
            return Err(unavailable("call-back is not configured on this server"));
        }
        LinkState::Reconnecting { .. } => {
            gw.metrics.callback("unavailable");
            return Err(unavailable("the link to the phone system is down"));
        }
        LinkState::Connected { .. } => {}
    }
    let target = {
        let (store, id, secret) = (gw.store.clone(), id.clone(), secret.clone());
        blocking(move || login::callback_target(&store, &id, &secret)).await?
    };
    let target = match target {
        Ok(t) => t,
        Err(ChallengeError::Gone) => {
            return Err(ApiError::new(StatusCode::CONFLICT, "not_pending")
                .detail("this sign-in is no longer waiting for a call"))
        }
        Err(e) => return Err(e.into()),
    };
    let keys = [
        format!("account:{}", target.account_id),
        format!("number:{}", target.phone),
    ];
    if let Err(wait) = gw.callback_limiter.try_acquire(&keys) {
        gw.metrics.callback("rate_limited");
        audit_row(
            &gw.store,
            "denied",
            Some("rate_limited"),
            &target,
            ip.0.map(|i| i.to_string()),
            json!({ "challenge_id": target.challenge_id }),
        )
        .await;
        return Err(ApiError::rate_limited(wait));
    }
    let settings = &gw.callback;
    let channel = settings.channel_for(&target.phone);
    let originate = Originate {
        channel: channel.clone(),
        context: Some(settings.context.clone()),
        exten: Some(settings.exten.clone()),
        priority: Some(settings.priority),
        timeout_ms: settings.timeout.as_millis() as u64,
        caller_id: settings.caller_id.clone(),
        variables: vec![(CHALLENGE_VARIABLE.into(), target.challenge_id.clone())],
        account: Some(CALLBACK_ACCOUNT.into()),
        ..Originate::default()
    };
    // Refused before anything is sent (e.g. a template that yields a bad dial string).
    if let Err(e) = originate.to_action() {
        warn!(error = %e, "call-back Originate refused locally");
        return Err(unavailable("the call-back is misconfigured on this server"));
    }
    // The `confirm` call may arrive until the login expires.
    let left = Duration::from_millis((target.expires_at_ms - now_ms()).max(0) as u64);
    gw.callbacks.insert(
        &target.challenge_id,
        Instant::now() + left + settings.timeout,
    );
    gw.metrics.callback("requested");
    audit_row(
        &gw.store,
        "requested",
        None,
        &target,
        ip.0.map(|i| i.to_string()),
        json!({ "challenge_id": target.challenge_id, "channel": channel }),
    )
    .await;
    info!(challenge_id = %target.challenge_id, %channel, "call-back requested");
    let hint = phone::normalize(&target.phone, Default::default())
        .map(|p| mask(&p))
        .unwrap_or_else(|_| "••••".into());
    tokio::spawn(place(
        gw.ami.clone(),
        gw.store.clone(),
        gw.hub.clone(),
        gw.metrics.clone(),
        gw.callbacks.clone(),
        originate,
        target,
    ));
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "status": "calling", "phone_hint": hint })),
    )
        .into_response())
}

/// Waits for the Originate's outcome; a call that was not answered fails the challenge.
async fn place(
    ami: AmiClient,
    store: Store,
    signal: Arc<dyn ChallengeSignal>,
    metrics: Arc<crate::metrics::Metrics>,
    callbacks: Arc<PendingCallbacks>,
    originate: Originate,
    target: CallbackTarget,
) {
    let id = target.challenge_id.clone();
    let (reason, detail) = match ami.originate(originate).await {
        Ok(outcome) if outcome.answered() => {
            metrics.callback("answered");
            audit_row(
                &store,
                "answered",
                None,
                &target,
                None,
                json!({ "challenge_id": id, "channel": outcome.channel,
                        "uniqueid": outcome.uniqueid }),
            )
            .await;
            info!(challenge_id = %id, "call-back answered; waiting for confirm");
            return;
        }
        Ok(outcome) => (
            failure_reason(outcome.reason),
            json!({ "challenge_id": id, "reason_code": outcome.reason.code(),
                    "reason_text": outcome.reason.as_str(), "channel": outcome.channel,
                    "uniqueid": outcome.uniqueid }),
        ),
        Err(e) => {
            let error: &AmiError = &e;
            (
                "callback_failed",
                json!({ "challenge_id": id, "error": error.to_string() }),
            )
        }
    };
    metrics.callback(reason.trim_start_matches("callback_"));
    // A `confirm` call already took the call-back (the outcome arrived late, or the link
    // dropped after the answer): its verdict stands.
    if !callbacks.contains(&id) {
        info!(challenge_id = %id, reason, "call-back outcome after confirm; ignored");
        return;
    }
    callbacks.remove(&id);
    info!(challenge_id = %id, reason, "call-back failed");
    audit_row(&store, "failed", Some(reason), &target, None, detail).await;
    let (s, failed_id) = (store.clone(), id.clone());
    match blocking(move || login::mark_failed(&s, &failed_id, reason)).await {
        Ok(Ok(true)) => signal.challenge_changed(&id, target.node_url.as_deref()),
        Ok(Ok(false)) => {}
        Ok(Err(e)) => warn!(error = %e, challenge_id = %id, "could not fail the challenge"),
        Err(e) => warn!(error = %e, "the call-back task failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        assert!(check_channel_template("PJSIP/{number}@carrier").is_ok());
        assert!(check_channel_template("PJSIP/carrier").is_err());
        assert!(check_channel_template("PJSIP/{number}@c\r\nAction: Command").is_err());
        let s = CallbackSettings::default();
        assert_eq!(
            s.channel_for("+8613800138000"),
            "PJSIP/+8613800138000@carrier"
        );
    }

    #[test]
    fn limiter_interval_and_hourly_cap() {
        let settings = CallbackSettings {
            min_interval: Duration::ZERO,
            per_hour: 2,
            ..CallbackSettings::default()
        };
        let l = CallbackLimiter::new(&settings);
        let a = ["account:1".to_string(), "number:+1".to_string()];
        let b = ["account:2".to_string(), "number:+1".to_string()];
        assert!(l.try_acquire(&a).is_ok());
        assert!(l.try_acquire(&a).is_ok());
        assert!(l.try_acquire(&a).is_err());
        // Another account, same number: the number's cap holds.
        assert!(l.try_acquire(&b).is_err());
        let l = CallbackLimiter::new(&CallbackSettings::default());
        assert!(l.try_acquire(&a).is_ok());
        let wait = l.try_acquire(&a).unwrap_err();
        assert!((59..=60).contains(&wait), "{wait}");
    }
}
