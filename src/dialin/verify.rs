//! `AGI(agi://HOST/verify,${EXTEN})`: the call that proves possession of the enrolled
//! phone. Trust and presentation checks, E.164 normalisation, match on caller + dialled
//! number, optional keypad code, atomic PENDING -> VERIFIED; every path ends in a
//! `DIALGATE_RESULT` and an audit row. Nothing is granted on an error.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tracing::{info, warn};

use crate::{
    agi::{
        server::RESULT_VARIABLE, AgiCall, CallError, Command, Presentation, Reply, Script,
        ScriptFuture,
    },
    auth::{
        audit,
        login::{self, CodeEntry, LoginSettings, PendingChallenge},
        signal::ChallengeSignal,
    },
    metrics::Metrics,
    phone::{self, PhoneError, Region},
    store::{Store, StoreError},
};

/// Whether the call is answered.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Deserialize,
    serde::Serialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Never answer: the dialplan rejects the call afterwards, so the caller pays nothing.
    #[default]
    MissedCall,
    /// Answer, ask for the keypad code when codes are on, and play a closing prompt.
    Answer,
}

/// A trusted trunk: channel technology and endpoint (`PJSIP/carrier`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trunk {
    pub technology: String,
    pub endpoint: String,
}

impl std::str::FromStr for Trunk {
    type Err = String;

    fn from_str(text: &str) -> Result<Trunk, String> {
        match text.trim().split_once('/') {
            Some((tech, endpoint))
                if !tech.is_empty() && !endpoint.is_empty() && !endpoint.contains('/') =>
            {
                Ok(Trunk {
                    technology: tech.to_string(),
                    endpoint: endpoint.to_string(),
                })
            }
            _ => Err(format!(
                "{text:?} is not a trunk: write TECHNOLOGY/ENDPOINT, e.g. PJSIP/carrier"
            )),
        }
    }
}

impl std::fmt::Display for Trunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.technology, self.endpoint)
    }
}

#[derive(Debug, Clone)]
pub struct VerifyConfig {
    /// Empty: every channel is believed (startup warns).
    pub trusted_trunks: Vec<Trunk>,
    pub default_region: Region,
    pub mode: Mode,
    pub login: LoginSettings,
    /// Prompt played before GET DATA (Asterisk core sound: "please enter your password
    /// followed by the pound key").
    pub code_prompt: String,
    pub code_timeout_ms: u32,
    pub verified_prompt: String,
    pub refused_prompt: String,
    /// Budget of each store step of a call (`--store-timeout`): past it the caller is told
    /// `error` at once. The store job itself runs on to its commit or rollback.
    pub store_timeout: Duration,
}

impl VerifyConfig {
    /// The default `store_timeout`.
    pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_secs(3);

    pub fn new(login: LoginSettings, default_region: Region) -> VerifyConfig {
        VerifyConfig {
            trusted_trunks: Vec::new(),
            default_region,
            mode: Mode::default(),
            login,
            code_prompt: "agent-pass".into(),
            code_timeout_ms: 10_000,
            verified_prompt: "auth-thankyou".into(),
            refused_prompt: "vm-goodbye".into(),
            store_timeout: Self::DEFAULT_STORE_TIMEOUT,
        }
    }
}

/// The verdict, as the dialplan reads it in `DIALGATE_RESULT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Verified,
    NoPending,
    Withheld,
    Untrusted,
    InvalidNumber,
    WrongCode,
    /// GET DATA timed out without a digit.
    NoInput,
    /// The caller hung up while asked for the code.
    Hangup,
    Error,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Verified => "verified",
            Verdict::NoPending => "no_pending",
            Verdict::Withheld => "withheld",
            Verdict::Untrusted => "untrusted",
            Verdict::InvalidNumber => "invalid_number",
            Verdict::WrongCode => "wrong_code",
            Verdict::NoInput => "no_input",
            Verdict::Hangup => "hangup",
            Verdict::Error => "error",
        }
    }
}

/// The `verify` script with what it needs.
pub struct Verify {
    pub store: Store,
    pub config: VerifyConfig,
    pub signal: Arc<dyn ChallengeSignal>,
    pub metrics: Arc<Metrics>,
}

/// What one call said about itself, for the audit row.
#[derive(Debug, Clone, Default, serde::Serialize)]
struct CallFacts {
    caller: Option<String>,
    presentation: Option<u8>,
    channel: Option<String>,
    uniqueid: Option<String>,
    dialled: Option<String>,
    challenge_id: Option<String>,
    /// For `invalid_number`: which number was no phone number, and its text.
    invalid: Option<InvalidNumber>,
    detail: Option<String>,
}

/// The number an `invalid_number` verdict refused. The audit row keeps the text as
/// Asterisk sent it (capped), as it keeps the caller; the log shows it masked.
#[derive(Debug, Clone, serde::Serialize)]
struct InvalidNumber {
    /// `caller` or `dialled`.
    field: &'static str,
    /// Where the text came from (`agi_callerid`, `agi_arg_1`, `agi_extension`, `agi_dnid`).
    source: &'static str,
    text: String,
}

impl InvalidNumber {
    const MAX_TEXT: usize = 64;

    fn new(field: &'static str, source: &'static str, text: &str) -> InvalidNumber {
        InvalidNumber {
            field,
            source,
            text: text.chars().take(Self::MAX_TEXT).collect(),
        }
    }
}

impl Script for Arc<Verify> {
    fn run(&self, call: AgiCall) -> ScriptFuture {
        let verify = self.clone();
        Box::pin(async move { verify.handle(call).await })
    }
}

/// `work` (a store step of the call) within `budget`, else an error: the caller is told
/// `error` (fail closed). The step itself is not cancelled: a blocking job or the SQLite
/// writer's job runs on to its commit or rollback, and a late VERIFIED is the true state
/// of the challenge (the caller did call from the enrolled phone), which the browser
/// then reads on its next store poll; the verdict the call got stays `error`.
pub(super) async fn within<T, E>(
    budget: Duration,
    work: impl std::future::Future<Output = Result<T, E>>,
) -> anyhow::Result<T>
where
    E: Into<anyhow::Error>,
{
    match tokio::time::timeout(budget, work).await {
        Ok(done) => done.map_err(Into::into),
        Err(_) => Err(anyhow::anyhow!(
            "the store did not answer within {budget:?} (--store-timeout)"
        )),
    }
}

/// The call's audit row.
fn call_event(facts: &CallFacts, verdict: Verdict) -> audit::Event<'static> {
    audit::Event::new("call", verdict.as_str())
        .detail(serde_json::to_value(facts).unwrap_or_default())
}

/// A verdict, and whether its audit row is already written (in the verdict's own
/// transaction).
struct Judged {
    verdict: Verdict,
    audited: bool,
}

impl From<Verdict> for Judged {
    fn from(verdict: Verdict) -> Judged {
        Judged {
            verdict,
            audited: false,
        }
    }
}

impl Verify {
    async fn handle(self: Arc<Self>, mut call: AgiCall) -> anyhow::Result<()> {
        let started = Instant::now();
        let env = call.env();
        let mut facts = CallFacts {
            caller: env.get("agi_callerid"),
            presentation: env.calling_pres(),
            channel: env.channel(),
            uniqueid: env.uniqueid(),
            ..CallFacts::default()
        };
        if self.config.mode == Mode::Answer {
            // An unanswered answer-mode call can still be judged; only prompts are lost.
            if let Err(e) = call.send_ok(&Command::answer()).await {
                facts.detail = Some(format!("answer failed: {e}"));
            }
        }
        let Judged { verdict, audited } = match self.judge(&mut call, &mut facts).await {
            Ok(judged) => judged,
            Err(e) => {
                warn!(error = %format!("{e:#}"), "verify failed closed");
                facts.detail = Some(format!("{e:#}"));
                Verdict::Error.into()
            }
        };
        if let Err(e) = call.set_variable(RESULT_VARIABLE, verdict.as_str()).await {
            warn!(error = %e, "could not set DIALGATE_RESULT; the dialplan sees no result");
        }
        // A caller who hung up hears nothing (with `AGISIGHUP=no` no HANGUP line came).
        if self.config.mode == Mode::Answer && !call.is_dead() && verdict != Verdict::Hangup {
            let prompt = match verdict {
                Verdict::Verified => &self.config.verified_prompt,
                _ => &self.config.refused_prompt,
            };
            let _ = call.send(&Command::stream_file(prompt, "")).await;
        }
        self.metrics
            .call(verdict.as_str(), started.elapsed().as_secs_f64());
        match &facts.invalid {
            Some(invalid) => info!(
                result = verdict.as_str(),
                field = invalid.field,
                source = invalid.source,
                number = %phone::mask_text(&invalid.text),
                "verify call"
            ),
            None => info!(
                result = verdict.as_str(),
                caller = facts.caller.as_deref().map(phone::mask_text),
                "verify call"
            ),
        }
        // The caller has its verdict: hang up before a late audit write can hold it.
        call.close().await;
        if !audited {
            let written = within(
                self.config.store_timeout,
                self.store.write(move |conn| -> Result<(), StoreError> {
                    Ok(audit::record(conn, call_event(&facts, verdict))?)
                }),
            )
            .await;
            if let Err(e) = written {
                warn!(error = %format!("{e:#}"), "could not write the call's audit row");
            }
        }
        Ok(())
    }

    /// Decides the call. The store is reached once for a call without a keypad code
    /// (match, verify and audit row in one transaction) and twice with one (the caller
    /// types between the two).
    async fn judge(&self, call: &mut AgiCall, facts: &mut CallFacts) -> anyhow::Result<Judged> {
        let env = call.env();
        if !self.config.trusted_trunks.is_empty() {
            let trusted =
                env.channel_technology_endpoint()
                    .is_some_and(|(tech, endpoint)| {
                        self.config.trusted_trunks.iter().any(|t| {
                            t.technology.eq_ignore_ascii_case(&tech) && t.endpoint == endpoint
                        })
                    });
            if !trusted {
                return Ok(Verdict::Untrusted.into());
            }
        }
        // Unknown presentation is treated like a withheld number: fail closed.
        if env.presentation() != Some(Presentation::Allowed) {
            return Ok(Verdict::Withheld.into());
        }
        let Some(caller_text) = env.caller_number() else {
            return Ok(Verdict::Withheld.into());
        };
        let caller = match phone::normalize(&caller_text, self.config.default_region) {
            Ok(number) => number,
            Err(PhoneError::Withheld | PhoneError::Empty) => return Ok(Verdict::Withheld.into()),
            Err(_) => {
                facts.invalid = Some(InvalidNumber::new("caller", "agi_callerid", &caller_text));
                return Ok(Verdict::InvalidNumber.into());
            }
        };
        facts.caller = Some(caller.to_string());
        // The argument (`${EXTEN}` in the sample dialplan), else the extension the
        // dialplan matched (after any `Goto`), else the raw dialled string of the
        // request (`agi_dnid`: a short code, or `unknown` on Local and IAX2 channels). An
        // extension without a digit (`s`) is no number.
        let dialled_text = env
            .arg(1)
            .filter(|a| !a.trim().is_empty())
            .map(|a| ("agi_arg_1", a))
            .or_else(|| {
                env.extension()
                    .filter(|e| e.bytes().any(|b| b.is_ascii_digit()))
                    .map(|e| ("agi_extension", e))
            })
            .or_else(|| env.dnid().map(|d| ("agi_dnid", d)));
        // A DID delivered exactly as one of the pool's E.164 numbers needs no parsing.
        let pool_number = |d: &str| {
            let d = d.trim();
            self.config
                .login
                .dialin_numbers
                .iter()
                .find(|n| n.as_str() == d)
                .cloned()
        };
        let Some((source, dialled_text)) = dialled_text else {
            facts.invalid = Some(InvalidNumber::new("dialled", "none", ""));
            return Ok(Verdict::InvalidNumber.into());
        };
        let dialled = match pool_number(&dialled_text).map_or_else(
            || phone::normalize(&dialled_text, self.config.default_region),
            Ok,
        ) {
            Ok(number) => number,
            Err(_) => {
                facts.invalid = Some(InvalidNumber::new("dialled", source, &dialled_text));
                return Ok(Verdict::InvalidNumber.into());
            }
        };
        facts.dialled = Some(dialled.to_string());

        let audit_facts = facts.clone();
        let found = within(
            self.config.store_timeout,
            login::match_call(
                &self.store,
                &self.config.login,
                caller,
                dialled,
                move |found| {
                    let (verdict, challenge_id) = match found {
                        login::CallMatch::NeedsCode(_) => return None,
                        login::CallMatch::NoPending => (Verdict::NoPending, None),
                        login::CallMatch::Verified(p) => (Verdict::Verified, Some(p.id.clone())),
                    };
                    let facts = CallFacts {
                        challenge_id,
                        ..audit_facts
                    };
                    Some(call_event(&facts, verdict))
                },
            ),
        )
        .await?;
        let pending = match found {
            login::CallMatch::NoPending => {
                return Ok(Judged {
                    verdict: Verdict::NoPending,
                    audited: true,
                })
            }
            login::CallMatch::Verified(pending) => {
                facts.challenge_id = Some(pending.id.clone());
                self.signal
                    .challenge_changed(&pending.id, pending.node_url.as_deref());
                return Ok(Judged {
                    verdict: Verdict::Verified,
                    audited: true,
                });
            }
            login::CallMatch::NeedsCode(pending) => pending,
        };
        facts.challenge_id = Some(pending.id.clone());
        let entry = self.code_entered(call, &pending).await?;
        let audit_facts = facts.clone();
        let verdict = move |changed| match (entry, changed) {
            (CodeEntry::Right, true) => Verdict::Verified,
            // Expired or settled by a concurrent call in between.
            (CodeEntry::Right, false) => Verdict::NoPending,
            (CodeEntry::Wrong, _) => Verdict::WrongCode,
            (CodeEntry::NoInput, _) => Verdict::NoInput,
            (CodeEntry::Hangup, _) => Verdict::Hangup,
        };
        let changed = within(
            self.config.store_timeout,
            login::settle_code(&self.store, pending.id.clone(), entry, move |changed| {
                call_event(&audit_facts, verdict(changed))
            }),
        )
        .await?;
        let verdict = verdict(changed);
        if changed {
            self.signal
                .challenge_changed(&pending.id, pending.node_url.as_deref());
        }
        Ok(Judged {
            verdict,
            audited: true,
        })
    }

    /// Asks for the keypad code. Asterisk answers GET DATA with the digits, with
    /// `200 result= (timeout)` when nothing was typed, and with `200 result=-1` when the
    /// caller hung up (then `HANGUP`, unless `AGISIGHUP=no`); a dead channel gets 511.
    async fn code_entered(
        &self,
        call: &mut AgiCall,
        pending: &PendingChallenge,
    ) -> anyhow::Result<CodeEntry> {
        let max_digits = u32::from(self.config.login.code_digits.max(1));
        let ask = Command::get_data(
            &self.config.code_prompt,
            self.config.code_timeout_ms,
            max_digits,
        );
        let timeout =
            std::time::Duration::from_millis(u64::from(self.config.code_timeout_ms) + 30_000);
        match call.send_with_timeout(&ask, timeout).await {
            Ok(Reply::Success(r)) if r.is_failure() => Ok(CodeEntry::Hangup),
            Ok(Reply::Success(r)) if r.result.is_empty() => Ok(CodeEntry::NoInput),
            Ok(Reply::Success(r)) if !r.timed_out() && pending.code_matches(&r.result) => {
                Ok(CodeEntry::Right)
            }
            Ok(Reply::DeadChannel) => Ok(CodeEntry::Hangup),
            Ok(_) if call.is_dead() => Ok(CodeEntry::Hangup),
            Ok(_) => Ok(CodeEntry::Wrong),
            Err(CallError::ChannelDead(_) | CallError::Closed) => Ok(CodeEntry::Hangup),
            Err(e) => Err(e.into()),
        }
    }
}
