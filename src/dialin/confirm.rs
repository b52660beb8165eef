//! `AGI(agi://HOST/confirm,${DIALGATE_CHALLENGE})`: the answered call-back leg that
//! dialgate placed over AMI (`POST /v1/login/{id}/callback`). The user hears a prompt
//! and presses 1 to confirm the sign-in; any other key, silence or a hang-up refuses it.
//! Every path ends in a `DIALGATE_RESULT` and an audit row; nothing is granted on an error.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tracing::{info, warn};

use super::verify::within;

use crate::{
    agi::{server::RESULT_VARIABLE, AgiCall, CallError, Command, Script, ScriptFuture},
    auth::{
        audit, callbacks::PendingCallbacks, login, plausible_challenge_id, signal::ChallengeSignal,
    },
    metrics::Metrics,
    rt::blocking,
    store::{Store, StoreError},
};

/// Failure reason recorded on the challenge when the user does not press 1.
pub const REFUSED_REASON: &str = "callback_refused";

#[derive(Debug, Clone)]
pub struct ConfirmConfig {
    /// Played by GET DATA before waiting for the key (a sound file name without extension).
    pub prompt: String,
    /// How long GET DATA waits for the key.
    pub digit_timeout_ms: u32,
    pub verified_prompt: String,
    pub refused_prompt: String,
    /// Budget of each store step (`--store-timeout`), as for `verify`.
    pub store_timeout: Duration,
}

impl ConfirmConfig {
    /// The default `prompt` (`dialgate serve --help` shows it too).
    pub const DEFAULT_PROMPT: &'static str = "beep";
}

impl Default for ConfirmConfig {
    fn default() -> Self {
        ConfirmConfig {
            prompt: Self::DEFAULT_PROMPT.into(),
            digit_timeout_ms: 10_000,
            verified_prompt: "auth-thankyou".into(),
            refused_prompt: "vm-goodbye".into(),
            store_timeout: super::verify::VerifyConfig::DEFAULT_STORE_TIMEOUT,
        }
    }
}

/// `DIALGATE_RESULT` of a `confirm` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Verified,
    Refused,
    NoPending,
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Verified => "verified",
            Outcome::Refused => "refused",
            Outcome::NoPending => "no_pending",
            Outcome::Error => "error",
        }
    }
}

/// The `confirm` script with what it needs.
pub struct Confirm {
    pub store: Store,
    pub config: ConfirmConfig,
    pub signal: Arc<dyn ChallengeSignal>,
    pub metrics: Arc<Metrics>,
    pub callbacks: Arc<PendingCallbacks>,
}

#[derive(Debug, Default, serde::Serialize)]
struct CallFacts {
    challenge_id: Option<String>,
    channel: Option<String>,
    uniqueid: Option<String>,
    callee: Option<String>,
    detail: Option<String>,
}

impl Script for Arc<Confirm> {
    fn run(&self, call: AgiCall) -> ScriptFuture {
        let confirm = self.clone();
        Box::pin(async move { confirm.handle(call).await })
    }
}

impl Confirm {
    async fn handle(self: Arc<Self>, mut call: AgiCall) -> anyhow::Result<()> {
        let started = Instant::now();
        let env = call.env().clone();
        let mut facts = CallFacts {
            challenge_id: env.arg(1).map(|a| a.trim().to_string()),
            channel: env.channel(),
            uniqueid: env.uniqueid(),
            // On an originated leg the "extension" side is the user's phone.
            callee: env.get("agi_dnid").filter(|d| d != "unknown"),
            detail: None,
        };
        let outcome = match self.judge(&mut call, &mut facts).await {
            Ok(outcome) => outcome,
            Err(e) => {
                warn!(error = %format!("{e:#}"), "confirm failed closed");
                facts.detail = Some(format!("{e:#}"));
                Outcome::Error
            }
        };
        if let Err(e) = call.set_variable(RESULT_VARIABLE, outcome.as_str()).await {
            warn!(error = %e, "could not set DIALGATE_RESULT; the dialplan sees no result");
        }
        if !call.is_dead() {
            let prompt = match outcome {
                Outcome::Verified => &self.config.verified_prompt,
                _ => &self.config.refused_prompt,
            };
            let _ = call.send(&Command::stream_file(prompt, "")).await;
        }
        self.metrics.callback(match outcome {
            Outcome::Verified => "confirmed",
            Outcome::Refused => "refused",
            Outcome::NoPending => "confirm_no_pending",
            Outcome::Error => "confirm_error",
        });
        info!(result = outcome.as_str(), challenge_id = ?facts.challenge_id,
            took_ms = started.elapsed().as_millis() as u64, "confirm call");
        // The caller has its outcome: hang up before a late audit write can hold it.
        call.close().await;
        let audited = within(
            self.config.store_timeout,
            self.store.write(move |conn| -> Result<(), StoreError> {
                let detail = serde_json::to_value(&facts).unwrap_or_default();
                Ok(audit::record(
                    conn,
                    audit::Event::new("callback_call", outcome.as_str()).detail(detail),
                )?)
            }),
        )
        .await;
        if let Err(e) = audited {
            warn!(error = %format!("{e:#}"), "could not write the confirm call's audit row");
        }
        Ok(())
    }

    async fn judge(&self, call: &mut AgiCall, facts: &mut CallFacts) -> anyhow::Result<Outcome> {
        let Some(id) = facts
            .challenge_id
            .clone()
            .filter(|id| plausible_challenge_id(id))
        else {
            return Ok(Outcome::NoPending);
        };
        // Only a call-back this node placed, judged once.
        if !self.callbacks.take(&id) {
            facts.detail = Some("no call-back outstanding for this challenge".into());
            return Ok(Outcome::NoPending);
        }
        let store = self.store.clone();
        let lookup = id.clone();
        let budget = self.config.store_timeout;
        let Some(pending) = within(budget, async move {
            Ok::<_, anyhow::Error>(blocking(move || login::pending_by_id(&store, &lookup)).await??)
        })
        .await?
        else {
            return Ok(Outcome::NoPending);
        };
        let pressed_one = self.pressed_one(call).await?;
        let store = self.store.clone();
        if pressed_one {
            let changed = within(budget, async move {
                Ok::<_, anyhow::Error>(blocking(move || login::mark_verified(&store, &id)).await??)
            })
            .await?;
            if !changed {
                return Ok(Outcome::NoPending);
            }
            self.signal
                .challenge_changed(&pending.id, pending.node_url.as_deref());
            Ok(Outcome::Verified)
        } else {
            let changed = within(budget, async move {
                Ok::<_, anyhow::Error>(
                    blocking(move || login::mark_failed(&store, &id, REFUSED_REASON)).await??,
                )
            })
            .await?;
            if changed {
                self.signal
                    .challenge_changed(&pending.id, pending.node_url.as_deref());
            }
            Ok(Outcome::Refused)
        }
    }

    /// Plays the prompt and waits for one key: `true` only for `1`.
    async fn pressed_one(&self, call: &mut AgiCall) -> anyhow::Result<bool> {
        let ask = Command::get_data(&self.config.prompt, self.config.digit_timeout_ms, 1);
        let timeout = Duration::from_millis(u64::from(self.config.digit_timeout_ms))
            + Duration::from_secs(30);
        match call.send_with_timeout(&ask, timeout).await {
            Ok(reply) => Ok(reply
                .into_success()
                .is_ok_and(|r| !r.timed_out() && r.result == "1")),
            Err(CallError::ChannelDead(_) | CallError::Closed) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}
