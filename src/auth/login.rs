//! Dial-in login: password check, the login challenge bound to one dial-in number, its
//! atomic PENDING -> VERIFIED -> CONSUMED life, and the sessions it opens.
//!
//! Every transition is a conditional UPDATE checked by affected rows, so a challenge is
//! verified at most once and exchanged at most once, whatever runs concurrently.

use std::time::Duration;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use diesel::{prelude::*, result::Error as DieselError};
use rand::{rngs::OsRng, Rng, RngCore};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{accounts::normalize_username, audit, passwords};
use crate::{
    phone::{mask, E164},
    store::{
        models::Account,
        now_ms,
        schema::{accounts, login_challenges, phones, sessions},
        DbConnection, Store, StoreError,
    },
};

/// Challenges never live longer than this, whatever the configuration says.
pub const MAX_CHALLENGE_TTL: Duration = Duration::from_secs(600);
/// After this many consecutive wrong passwords an account is locked for good until an
/// operator sets a new password (security.md: at most 100).
pub const MAX_CONSECUTIVE_FAILURES: i32 = 100;

/// Why the holder of a known account who gave its long-term password (right or wrong)
/// is refused, as the audit names it; `None` lets them in. One order for logins,
/// temporary passwords and payments: a wrong password is always reported as such.
pub fn refusal(account: &Account, password_ok: bool) -> Option<&'static str> {
    if !password_ok {
        Some("wrong_password")
    } else if account.status != "active" {
        Some("disabled")
    } else if account.failed_logins >= MAX_CONSECUTIVE_FAILURES {
        Some("locked")
    } else {
        None
    }
}

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

/// Where a challenge stands, as the browser sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ChallengeState {
    Pending,
    Verified,
    Failed {
        reason: String,
    },
    Expired,
    /// Already exchanged for a session.
    Consumed,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChallengeStatus {
    #[serde(flatten)]
    pub state: ChallengeState,
    pub expires_at_ms: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ChallengeError {
    /// Unknown id or wrong secret: indistinguishable on purpose.
    #[error("unknown login or wrong secret")]
    NotFound,
    #[error("the call has not verified this login yet")]
    NotVerified,
    #[error("this login expired or was already used")]
    Gone,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<DieselError> for ChallengeError {
    fn from(e: DieselError) -> Self {
        ChallengeError::Store(StoreError::Query(e))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SessionIssued {
    pub token: String,
    pub username: String,
    pub expires_at_ms: i64,
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

fn hashes_equal(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// A PHC string for a password nobody has, verified when the username is unknown so a
/// wrong username costs the same work as a wrong password.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| passwords::hash(&random_token(24)))
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
    let mut conn = store.conn()?;
    let name = normalize_username(username).ok();
    let account: Option<Account> = match &name {
        Some(name) => accounts::table
            .filter(accounts::username.eq(name))
            .select(Account::as_select())
            .first(&mut conn)
            .optional()?,
        None => None,
    };
    let hash = account
        .as_ref()
        .map_or(dummy_hash(), |a| a.password_hash.as_str());
    let password_ok = passwords::verify(password, hash);
    let now = now_ms();
    let Some(account) = account else {
        let event = audit::Event::new("login_password", "denied").reason("unknown_user");
        let event = match (&name, client_ip) {
            (Some(n), Some(ip)) => event.username(n).client_ip(ip),
            (Some(n), None) => event.username(n),
            (None, Some(ip)) => event.client_ip(ip),
            (None, None) => event,
        };
        audit::record(&mut conn, event)?;
        return Err(LoginError::InvalidCredentials);
    };
    let refusal = refusal(&account, password_ok);
    if let Some(reason) = refusal {
        drop(conn);
        let (account_id, username) = (account.id, account.username.clone());
        let client_ip = client_ip.map(str::to_string);
        store.write_blocking(move |conn| -> Result<(), StoreError> {
            if reason == "wrong_password" {
                diesel::update(accounts::table.find(account_id))
                    .set(accounts::failed_logins.eq(accounts::failed_logins + 1))
                    .execute(conn)?;
            }
            let mut event = audit::Event::new("login_password", "denied")
                .account(account_id, &username)
                .reason(reason);
            if let Some(ip) = &client_ip {
                event = event.client_ip(ip);
            }
            Ok(audit::record(conn, event)?)
        })?;
        return Err(LoginError::InvalidCredentials);
    }
    let phone: String = phones::table
        .filter(phones::account_id.eq(account.id))
        .select(phones::e164)
        .order(phones::id)
        .first(&mut conn)
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
    drop(conn);
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
        diesel::update(accounts::table.find(c.account_id))
            .set(accounts::failed_logins.eq(0))
            .execute(conn)?;
        // Numbers this caller's other pending challenges hold.
        let held: Vec<(String, String)> = login_challenges::table
            .filter(login_challenges::caller_e164.eq(&c.caller))
            .filter(login_challenges::status.eq("pending"))
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
                        .filter(login_challenges::status.eq("pending")),
                )
                .set((
                    login_challenges::status.eq("failed"),
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
                login_challenges::status.eq("pending"),
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

/// A pending challenge a call can verify.
#[derive(Debug, Clone)]
pub struct PendingChallenge {
    pub id: String,
    pub account_id: i64,
    pub username: String,
    pub code_hash: Option<String>,
    pub node_url: Option<String>,
    pub attempts: i32,
}

impl PendingChallenge {
    pub fn needs_code(&self) -> bool {
        self.code_hash.is_some()
    }

    pub fn code_matches(&self, digits: &str) -> bool {
        self.code_hash
            .as_deref()
            .is_some_and(|h| hashes_equal(h, &token_hash(digits)))
    }
}

/// id, account, code hash, node, attempts, username.
type PendingRow = (String, i64, Option<String>, Option<String>, i32, String);

/// What a call to a dial-in number found, decided in one transaction.
#[derive(Debug)]
pub enum CallMatch {
    /// No live pending challenge for this caller on this number, or the call cap was hit.
    NoPending,
    /// Counted against a challenge that wants the keypad code: not verified yet.
    NeedsCode(PendingChallenge),
    /// Verified by this call.
    Verified(PendingChallenge),
}

/// Matches a call against the newest live pending challenge for this caller on this
/// dial-in number, counts the call against it (before evaluation, capped) and, when no
/// keypad code is wanted, verifies it. The audit row `audit` returns is written in the
/// same transaction, so a verification is never without its audit row nor the reverse.
pub async fn match_call(
    store: &Store,
    settings: &LoginSettings,
    caller: E164,
    dialled: E164,
    audit: impl FnOnce(&CallMatch) -> Option<audit::Event<'static>> + Send + 'static,
) -> Result<CallMatch, StoreError> {
    let max_call_attempts = settings.max_call_attempts;
    store
        .write(move |conn| {
            let now = now_ms();
            let matching = login_challenges::table
                .filter(login_challenges::caller_e164.eq(caller.as_str()))
                .filter(login_challenges::dial_number.eq(dialled.as_str()))
                .filter(login_challenges::status.eq("pending"));
            if matches!(conn, DbConnection::Mysql(_)) {
                // InnoDB: lock the caller's pending rows before reading them, so two calls
                // of one caller take turns (SQLite's BEGIN IMMEDIATE already serialises).
                diesel::update(matching)
                    .set(login_challenges::attempts.eq(login_challenges::attempts))
                    .execute(conn)?;
            }
            let row: Option<PendingRow> = matching
                .inner_join(accounts::table)
                .filter(login_challenges::expires_at.gt(now))
                .filter(accounts::status.eq("active"))
                .order(login_challenges::created_at.desc())
                .select((
                    login_challenges::id,
                    login_challenges::account_id,
                    login_challenges::code_hash,
                    login_challenges::node_url,
                    login_challenges::attempts,
                    accounts::username,
                ))
                .first(conn)
                .optional()?;
            let found = match row {
                None => CallMatch::NoPending,
                Some((id, account_id, code_hash, node_url, attempts, username)) => {
                    let attempts = attempts + 1;
                    let over = attempts > max_call_attempts;
                    let verify_now = !over && code_hash.is_none();
                    let status = match (over, verify_now) {
                        (true, _) => "failed",
                        (false, true) => "verified",
                        (false, false) => "pending",
                    };
                    diesel::update(login_challenges::table.find(&id))
                        .set((
                            login_challenges::attempts.eq(attempts),
                            login_challenges::status.eq(status),
                            login_challenges::failure_reason.eq(over.then_some("too_many_calls")),
                            login_challenges::verified_at.eq(verify_now.then_some(now)),
                        ))
                        .execute(conn)?;
                    let pending = PendingChallenge {
                        id,
                        account_id,
                        username,
                        code_hash,
                        node_url,
                        attempts,
                    };
                    match (over, verify_now) {
                        (true, _) => CallMatch::NoPending,
                        (false, true) => CallMatch::Verified(pending),
                        (false, false) => CallMatch::NeedsCode(pending),
                    }
                }
            };
            if let Some(event) = audit(&found) {
                audit::record(conn, event)?;
            }
            Ok(found)
        })
        .await
}

/// After the keypad code of a [`CallMatch::NeedsCode`] call: PENDING -> VERIFIED when
/// the code was right, PENDING -> FAILED (`wrong_code`) when not, with the call's audit
/// row in the same transaction. `true` when this call changed the challenge (`false`:
/// it expired or was settled by another call meanwhile).
pub async fn settle_code(
    store: &Store,
    challenge_id: String,
    code_right: bool,
    audit: impl FnOnce(bool) -> audit::Event<'static> + Send + 'static,
) -> Result<bool, StoreError> {
    store
        .write(move |conn| {
            let changed = if code_right {
                set_verified(conn, &challenge_id)?
            } else {
                set_failed(conn, &challenge_id, "wrong_code")?
            };
            audit::record(conn, audit(changed))?;
            Ok(changed)
        })
        .await
}

/// PENDING -> VERIFIED, only if still pending and unexpired. `true` when this call did it.
pub fn mark_verified(store: &Store, challenge_id: &str) -> Result<bool, StoreError> {
    Ok(set_verified(&mut *store.conn()?, challenge_id)?)
}

/// PENDING -> FAILED with a reason the browser is shown (e.g. `wrong_code`).
pub fn mark_failed(store: &Store, challenge_id: &str, reason: &str) -> Result<bool, StoreError> {
    Ok(set_failed(&mut *store.conn()?, challenge_id, reason)?)
}

fn set_verified(conn: &mut DbConnection, challenge_id: &str) -> Result<bool, DieselError> {
    let now = now_ms();
    let changed = diesel::update(
        login_challenges::table
            .find(challenge_id)
            .filter(login_challenges::status.eq("pending"))
            .filter(login_challenges::expires_at.gt(now)),
    )
    .set((
        login_challenges::status.eq("verified"),
        login_challenges::verified_at.eq(Some(now)),
    ))
    .execute(conn)?;
    Ok(changed == 1)
}

fn set_failed(
    conn: &mut DbConnection,
    challenge_id: &str,
    reason: &str,
) -> Result<bool, DieselError> {
    let changed = diesel::update(
        login_challenges::table
            .find(challenge_id)
            .filter(login_challenges::status.eq("pending")),
    )
    .set((
        login_challenges::status.eq("failed"),
        login_challenges::failure_reason.eq(Some(reason)),
    ))
    .execute(conn)?;
    Ok(changed == 1)
}

type ChallengeRow = (String, String, Option<String>, i64);

fn load_with_secret(
    conn: &mut DbConnection,
    challenge_id: &str,
    secret: &str,
) -> Result<ChallengeRow, ChallengeError> {
    let row: Option<(String, String, String, Option<String>, i64)> = login_challenges::table
        .find(challenge_id)
        .select((
            login_challenges::secret_hash,
            login_challenges::id,
            login_challenges::status,
            login_challenges::failure_reason,
            login_challenges::expires_at,
        ))
        .first(conn)
        .optional()?;
    match row {
        Some((hash, id, status, reason, expires)) if hashes_equal(&hash, &token_hash(secret)) => {
            Ok((id, status, reason, expires))
        }
        _ => Err(ChallengeError::NotFound),
    }
}

/// The challenge's state, for the holder of its secret only.
pub fn status(
    store: &Store,
    challenge_id: &str,
    secret: &str,
) -> Result<ChallengeStatus, ChallengeError> {
    let (_, status, reason, expires_at_ms) =
        load_with_secret(&mut *store.conn()?, challenge_id, secret)?;
    let state = match status.as_str() {
        "verified" => ChallengeState::Verified,
        "consumed" => ChallengeState::Consumed,
        "failed" | "cancelled" => ChallengeState::Failed {
            reason: reason.unwrap_or_else(|| status.clone()),
        },
        _ if expires_at_ms <= now_ms() => ChallengeState::Expired,
        _ => ChallengeState::Pending,
    };
    Ok(ChallengeStatus {
        state,
        expires_at_ms,
    })
}

/// VERIFIED -> CONSUMED and a new session, for the holder of the secret, once.
pub fn exchange(
    store: &Store,
    settings: &LoginSettings,
    challenge_id: &str,
    secret: &str,
    client_ip: Option<&str>,
) -> Result<SessionIssued, ChallengeError> {
    let mut conn = store.conn()?;
    let (_, status, _, expires_at_ms) = load_with_secret(&mut conn, challenge_id, secret)?;
    let now = now_ms();
    match status.as_str() {
        "pending" if expires_at_ms > now => return Err(ChallengeError::NotVerified),
        "verified" => {}
        _ => return Err(ChallengeError::Gone),
    }
    let token = random_token(32);
    let expires_at_ms = now + settings.session_ttl.as_millis() as i64;
    drop(conn);
    let challenge_id = challenge_id.to_string();
    let session_hash = token_hash(&token);
    let client_ip = client_ip.map(str::to_string);
    let issued = store.write_blocking(move |conn| -> Result<Option<String>, StoreError> {
        let changed = diesel::update(
            login_challenges::table
                .find(&challenge_id)
                .filter(login_challenges::status.eq("verified")),
        )
        .set((
            login_challenges::status.eq("consumed"),
            login_challenges::consumed_at.eq(Some(now)),
        ))
        .execute(conn)?;
        if changed != 1 {
            return Ok(None);
        }
        let (account_id, username): (i64, String) = login_challenges::table
            .inner_join(accounts::table)
            .filter(login_challenges::id.eq(&challenge_id))
            .select((accounts::id, accounts::username))
            .first(conn)?;
        diesel::insert_into(sessions::table)
            .values((
                sessions::token_hash.eq(&session_hash),
                sessions::account_id.eq(account_id),
                sessions::challenge_id.eq(Some(&challenge_id)),
                sessions::client_ip.eq(client_ip.as_deref()),
                sessions::created_at.eq(now),
                sessions::expires_at.eq(expires_at_ms),
            ))
            .execute(conn)?;
        let mut event = audit::Event::new("session", "opened").account(account_id, &username);
        if let Some(ip) = &client_ip {
            event = event.client_ip(ip);
        }
        audit::record(
            conn,
            event.detail(serde_json::json!({ "challenge_id": challenge_id })),
        )?;
        Ok(Some(username))
    })?;
    match issued {
        Some(username) => Ok(SessionIssued {
            token,
            username,
            expires_at_ms,
        }),
        None => Err(ChallengeError::Gone),
    }
}

/// The user behind a session token, if the session is open and the account active.
pub fn session_user(store: &Store, token: &str) -> Result<Option<String>, StoreError> {
    let now = now_ms();
    Ok(sessions::table
        .inner_join(accounts::table)
        .filter(sessions::token_hash.eq(token_hash(token)))
        .filter(sessions::revoked_at.is_null())
        .filter(sessions::expires_at.gt(now))
        .filter(accounts::status.eq("active"))
        .select(accounts::username)
        .first(&mut *store.conn()?)
        .optional()?)
}

/// Ends a session. `true` if it was open.
pub fn logout(store: &Store, token: &str) -> Result<bool, StoreError> {
    let changed = diesel::update(
        sessions::table
            .filter(sessions::token_hash.eq(token_hash(token)))
            .filter(sessions::revoked_at.is_null()),
    )
    .set(sessions::revoked_at.eq(Some(now_ms())))
    .execute(&mut *store.conn()?)?;
    Ok(changed == 1)
}

/// Whether the store answers (for `/healthz`).
pub fn ping(store: &Store) -> Result<(), StoreError> {
    use diesel::r2d2::R2D2Connection;
    store.conn()?.ping().map_err(StoreError::Query)
}

/// Where a call-back for a challenge goes: the account's enrolled phone, never a number
/// from the request.
#[derive(Debug, Clone)]
pub struct CallbackTarget {
    pub challenge_id: String,
    pub account_id: i64,
    pub username: String,
    /// The enrolled phone (E.164).
    pub phone: String,
    pub node_url: Option<String>,
    pub expires_at_ms: i64,
}

/// For the holder of the secret: the enrolled phone of a PENDING, unexpired challenge's
/// (active) account. Anything else is `Gone`; an unknown id or a wrong secret `NotFound`.
pub fn callback_target(
    store: &Store,
    challenge_id: &str,
    secret: &str,
) -> Result<CallbackTarget, ChallengeError> {
    let mut conn = store.conn()?;
    let (id, status, _, expires_at_ms) = load_with_secret(&mut conn, challenge_id, secret)?;
    if status != "pending" || expires_at_ms <= now_ms() {
        return Err(ChallengeError::Gone);
    }
    let row: Option<(i64, String, Option<String>)> = login_challenges::table
        .inner_join(accounts::table)
        .filter(login_challenges::id.eq(&id))
        .filter(accounts::status.eq("active"))
        .select((accounts::id, accounts::username, login_challenges::node_url))
        .first(&mut conn)
        .optional()?;
    let Some((account_id, username, node_url)) = row else {
        return Err(ChallengeError::Gone);
    };
    let phone: Option<String> = phones::table
        .filter(phones::account_id.eq(account_id))
        .select(phones::e164)
        .order(phones::id)
        .first(&mut conn)
        .optional()?;
    let phone = phone.ok_or(ChallengeError::Gone)?;
    Ok(CallbackTarget {
        challenge_id: id,
        account_id,
        username,
        phone,
        node_url,
        expires_at_ms,
    })
}

/// A PENDING, unexpired challenge of an active account, by id (for the call-back's
/// `confirm` script, which knows the id from the dialplan and no secret).
pub fn pending_by_id(
    store: &Store,
    challenge_id: &str,
) -> Result<Option<PendingChallenge>, StoreError> {
    let now = now_ms();
    let row: Option<PendingRow> = login_challenges::table
        .inner_join(accounts::table)
        .filter(login_challenges::id.eq(challenge_id))
        .filter(login_challenges::status.eq("pending"))
        .filter(login_challenges::expires_at.gt(now))
        .filter(accounts::status.eq("active"))
        .select((
            login_challenges::id,
            login_challenges::account_id,
            login_challenges::code_hash,
            login_challenges::node_url,
            login_challenges::attempts,
            accounts::username,
        ))
        .first(&mut *store.conn()?)
        .optional()?;
    Ok(row.map(
        |(id, account_id, code_hash, node_url, attempts, username)| PendingChallenge {
            id,
            account_id,
            username,
            code_hash,
            node_url,
            attempts,
        },
    ))
}
