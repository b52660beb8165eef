//! Dial-in login: the password step (`start`: the long-term credential check, then a
//! login challenge bound to one dial-in number), the challenge's atomic PENDING ->
//! VERIFIED -> CONSUMED life (`challenge`) and the sessions it opens (`session`).
//!
//! Every transition is a conditional UPDATE checked by affected rows, so a challenge is
//! verified at most once and exchanged at most once, whatever runs concurrently.

mod challenge;
mod session;

use std::time::Duration;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use diesel::{prelude::*, result::Error as DieselError};
use rand::{rngs::OsRng, Rng, RngCore};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use super::credentials::{refusal, MAX_CONSECUTIVE_FAILURES};
pub use challenge::{
    callback_target, mark_failed, mark_verified, match_call, pending_by_id, settle_code, status,
    CallMatch, CallbackTarget, ChallengeError, ChallengeState, ChallengeStatus, CodeEntry,
    PendingChallenge,
};
pub use session::{exchange, logout, session_user, SessionIssued};

use super::{
    audit,
    credentials::{self, Attempt, RefusalAudit},
};
use crate::{
    phone::{mask, E164},
    store::{
        now_ms,
        schema::{login_challenges, phones},
        states::LoginStatus,
        Store, StoreError,
    },
};

/// Challenges never live longer than this, whatever the configuration says.
pub const MAX_CHALLENGE_TTL: Duration = Duration::from_secs(600);
#[derive(Debug, Clone)]
pub struct LoginSettings {
    /// The pool of numbers users call; a challenge gets one no other pending challenge
    /// of the same caller holds.
    pub dialin_numbers: Vec<E164>,
    pub challenge_ttl: Duration,
    /// Digits of the keypad code the caller types; 0 = no code.
    pub code_digits: u8,
    pub session_ttl: Duration,
    /// Failed calls counted against one challenge before it fails.
    pub max_call_attempts: i32,
    /// This node's base URL, recorded on its challenges so another node that takes the
    /// call can signal it.
    pub node_url: Option<String>,
}

impl LoginSettings {
    /// The defaults, stated once (`dialgate serve --help` shows them too).
    pub const DEFAULT: LoginSettings = LoginSettings {
        dialin_numbers: Vec::new(),
        challenge_ttl: Duration::from_secs(180),
        code_digits: 0,
        session_ttl: Duration::from_secs(12 * 3600),
        max_call_attempts: 3,
        node_url: None,
    };
}

impl Default for LoginSettings {
    fn default() -> Self {
        LoginSettings::DEFAULT
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Wrong username, wrong password, disabled or locked account: one answer for all.
    #[error("invalid username or password")]
    InvalidCredentials,
    #[error("no dial-in number is configured (--dialin-number)")]
    NoDialinNumber,
    #[error("the account has no enrolled phone")]
    NoPhone,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<DieselError> for LoginError {
    fn from(e: DieselError) -> Self {
        LoginError::Store(StoreError::Query(e))
    }
}

/// What the browser needs after the password step. `secret` and `code` are shown once.
#[derive(Debug, Clone, Serialize)]
pub struct LoginStart {
    pub challenge_id: String,
    pub secret: String,
    pub dial_number: String,
    pub expires_at_ms: i64,
    /// The keypad code to type during the call, when codes are on.
    pub code: Option<String>,
    /// The enrolled phone, masked (`•••• 8000`).
    pub phone_hint: String,
    pub username: String,
}

/// Random bytes from the OS, URL-safe base64.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    OsRng.fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// Secrets and tokens are stored only as SHA-256 (they are 256-bit random, so a plain
/// hash is enough; there is nothing to brute-force).
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub(super) fn hashes_equal(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// Checks username + password (Argon2id: call from a blocking thread) and opens a
/// challenge with a dial-in number from the pool.
pub fn start(
    store: &Store,
    settings: &LoginSettings,
    username: &str,
    password: &str,
    client_ip: Option<&str>,
) -> Result<LoginStart, LoginError> {
    if settings.dialin_numbers.is_empty() {
        return Err(LoginError::NoDialinNumber);
    }
    let attempt = Attempt::long_term(username, password).client_ip(client_ip);
    let Some(accepted) =
        credentials::check(store, &attempt, RefusalAudit::denied("login_password"))?
    else {
        return Err(LoginError::InvalidCredentials);
    };
    let account = accepted.account;
    let now = now_ms();
    let phone: String = phones::table
        .filter(phones::account_id.eq(account.id))
        .select(phones::e164)
        .order(phones::id)
        .first(&mut *store.conn()?)
        .optional()?
        .ok_or(LoginError::NoPhone)?;
    let ttl = settings.challenge_ttl.min(MAX_CHALLENGE_TTL);
    let expires_at_ms = now + ttl.as_millis() as i64;
    let challenge_id = hex::encode({
        let mut id = [0u8; 16];
        OsRng.fill_bytes(&mut id);
        id
    });
    let secret = random_token(32);
    let code = (settings.code_digits > 0).then(|| {
        (0..settings.code_digits)
            .map(|_| char::from(b'0' + OsRng.gen_range(0..10u8)))
            .collect::<String>()
    });
    let challenge = NewChallenge {
        id: challenge_id.clone(),
        account_id: account.id,
        username: account.username.clone(),
        caller: phone.clone(),
        secret_hash: token_hash(&secret),
        code_hash: code.as_deref().map(token_hash),
        client_ip: client_ip.map(str::to_string),
        created_at: now,
        expires_at: expires_at_ms,
    };
    let pool = settings.dialin_numbers.clone();
    let node_url = settings.node_url.clone();
    let dial_number = store.write_blocking(move |conn| -> Result<String, StoreError> {
        let c = &challenge;
        // Numbers this caller's other pending challenges hold.
        let held: Vec<(String, String)> = login_challenges::table
            .filter(login_challenges::caller_e164.eq(&c.caller))
            .filter(login_challenges::status.eq(LoginStatus::Pending))
            .filter(login_challenges::expires_at.gt(c.created_at))
            .order(login_challenges::created_at)
            .select((login_challenges::id, login_challenges::dial_number))
            .load(conn)?;
        let free = pool
            .iter()
            .find(|n| !held.iter().any(|(_, held)| held == n.as_str()));
        let number = match free {
            Some(n) => n.as_str().to_string(),
            None => {
                // Every number is taken by this caller: the oldest login gives its up.
                let (oldest, number) = held[0].clone();
                diesel::update(
                    login_challenges::table
                        .find(&oldest)
                        .filter(login_challenges::status.eq(LoginStatus::Pending)),
                )
                .set((
                    login_challenges::status.eq(LoginStatus::Failed),
                    login_challenges::failure_reason.eq(Some("superseded")),
                ))
                .execute(conn)?;
                number
            }
        };
        diesel::insert_into(login_challenges::table)
            .values((
                login_challenges::id.eq(&c.id),
                login_challenges::account_id.eq(c.account_id),
                login_challenges::caller_e164.eq(&c.caller),
                login_challenges::dial_number.eq(&number),
                login_challenges::secret_hash.eq(&c.secret_hash),
                login_challenges::code_hash.eq(&c.code_hash),
                login_challenges::status.eq(LoginStatus::Pending),
                login_challenges::node_url.eq(node_url.as_deref()),
                login_challenges::attempts.eq(0),
                login_challenges::client_ip.eq(c.client_ip.as_deref()),
                login_challenges::created_at.eq(c.created_at),
                login_challenges::expires_at.eq(c.expires_at),
            ))
            .execute(conn)?;
        let mut event =
            audit::Event::new("login_challenge", "pending").account(c.account_id, &c.username);
        if let Some(ip) = &c.client_ip {
            event = event.client_ip(ip);
        }
        audit::record(
            conn,
            event.detail(serde_json::json!({ "challenge_id": c.id, "dial_number": number })),
        )?;
        Ok(number)
    })?;
    // Stored numbers are E.164 already, so the region plays no part.
    let phone_hint = crate::phone::normalize(&phone, Default::default())
        .map(|p| mask(&p))
        .unwrap_or_else(|_| "••••".into());
    Ok(LoginStart {
        challenge_id,
        secret,
        dial_number,
        expires_at_ms,
        code,
        phone_hint,
        username: account.username,
    })
}

/// A challenge row as `start` writes it, moved into the write job.
struct NewChallenge {
    id: String,
    account_id: i64,
    username: String,
    caller: String,
    secret_hash: String,
    code_hash: Option<String>,
    client_ip: Option<String>,
    created_at: i64,
    expires_at: i64,
}
