//! Login challenges after the password step: the call that verifies one (dial-in:
//! `match_call`, `settle_code` with a [`CodeEntry`]; call-back: `callback_target`, `pending_by_id`,
//! `mark_verified`, `mark_failed`) and the state the browser polls.
//!
//! Every transition is a conditional UPDATE checked by affected rows, so a challenge is
//! verified at most once, whatever runs concurrently; every write is a [`Store::write`]
//! (or `write_blocking`).

use diesel::{prelude::*, result::Error as DieselError};
use serde::Serialize;

use super::{hashes_equal, token_hash, LoginSettings};
use crate::{
    auth::audit,
    phone::E164,
    store::{
        now_ms,
        schema::{accounts, login_challenges, phones},
        states::{AccountStatus, LoginStatus},
        DbConnection, Store, StoreError,
    },
};

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
    pub fn code_matches(&self, digits: &str) -> bool {
        self.code_hash
            .as_deref()
            .is_some_and(|h| hashes_equal(h, &token_hash(digits)))
    }
}

/// id, account, code hash, node, attempts, username.
type PendingRow = (String, i64, Option<String>, Option<String>, i32, String);

/// The columns a [`PendingRow`] is read from (challenges joined with their account).
const PENDING_COLUMNS: (
    login_challenges::id,
    login_challenges::account_id,
    login_challenges::code_hash,
    login_challenges::node_url,
    login_challenges::attempts,
    accounts::username,
) = (
    login_challenges::id,
    login_challenges::account_id,
    login_challenges::code_hash,
    login_challenges::node_url,
    login_challenges::attempts,
    accounts::username,
);

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
                .filter(login_challenges::status.eq(LoginStatus::Pending));
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
                .filter(accounts::status.eq(AccountStatus::Active))
                .order(login_challenges::created_at.desc())
                .select(PENDING_COLUMNS)
                .first(conn)
                .optional()?;
            let found = match row {
                None => CallMatch::NoPending,
                Some((id, account_id, code_hash, node_url, attempts, username)) => {
                    let attempts = attempts + 1;
                    let over = attempts > max_call_attempts;
                    let verify_now = !over && code_hash.is_none();
                    let status = match (over, verify_now) {
                        (true, _) => LoginStatus::Failed,
                        (false, true) => LoginStatus::Verified,
                        (false, false) => LoginStatus::Pending,
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

/// How the keypad entry of a [`CallMatch::NeedsCode`] call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeEntry {
    /// The right code.
    Right,
    /// Digits, but not the code: `wrong_code`.
    Wrong,
    /// GET DATA timed out with no digit: `no_input`.
    NoInput,
    /// The caller hung up while asked (`200 result=-1`, `HANGUP`, 511): `hangup`.
    Hangup,
}

impl CodeEntry {
    /// The failure reason the browser is shown; `None` for the right code.
    pub fn failure_reason(self) -> Option<&'static str> {
        match self {
            CodeEntry::Right => None,
            CodeEntry::Wrong => Some("wrong_code"),
            CodeEntry::NoInput => Some("no_input"),
            CodeEntry::Hangup => Some("hangup"),
        }
    }
}

/// After the keypad code of a [`CallMatch::NeedsCode`] call: PENDING -> VERIFIED when
/// the code was right, PENDING -> FAILED with the entry's reason (`wrong_code`,
/// `no_input`, `hangup`) when not, with the call's audit row in the same transaction.
/// `true` when this call changed the challenge (`false`: it expired or was settled by
/// another call meanwhile).
pub async fn settle_code(
    store: &Store,
    challenge_id: String,
    entry: CodeEntry,
    audit: impl FnOnce(bool) -> audit::Event<'static> + Send + 'static,
) -> Result<bool, StoreError> {
    store
        .write(move |conn| {
            let changed = match entry.failure_reason() {
                None => set_verified(conn, &challenge_id)?,
                Some(reason) => set_failed(conn, &challenge_id, reason)?,
            };
            audit::record(conn, audit(changed))?;
            Ok(changed)
        })
        .await
}

/// PENDING -> VERIFIED, only if still pending and unexpired. `true` when this call did it.
/// Blocking (a [`Store::write_blocking`]).
pub fn mark_verified(store: &Store, challenge_id: &str) -> Result<bool, StoreError> {
    let challenge_id = challenge_id.to_string();
    store.write_blocking(move |conn| Ok(set_verified(conn, &challenge_id)?))
}

/// PENDING -> FAILED with a reason the browser is shown (e.g. `wrong_code`). Blocking.
pub fn mark_failed(store: &Store, challenge_id: &str, reason: &str) -> Result<bool, StoreError> {
    let (challenge_id, reason) = (challenge_id.to_string(), reason.to_string());
    store.write_blocking(move |conn| Ok(set_failed(conn, &challenge_id, &reason)?))
}

fn set_verified(conn: &mut DbConnection, challenge_id: &str) -> Result<bool, DieselError> {
    let now = now_ms();
    let changed = diesel::update(
        login_challenges::table
            .find(challenge_id)
            .filter(login_challenges::status.eq(LoginStatus::Pending))
            .filter(login_challenges::expires_at.gt(now)),
    )
    .set((
        login_challenges::status.eq(LoginStatus::Verified),
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
            .filter(login_challenges::status.eq(LoginStatus::Pending)),
    )
    .set((
        login_challenges::status.eq(LoginStatus::Failed),
        login_challenges::failure_reason.eq(Some(reason)),
    ))
    .execute(conn)?;
    Ok(changed == 1)
}

pub(super) type ChallengeRow = (String, String, Option<String>, i64);

pub(super) fn load_with_secret(
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
    let state = match status.parse::<LoginStatus>() {
        Ok(LoginStatus::Verified) => ChallengeState::Verified,
        Ok(LoginStatus::Consumed) => ChallengeState::Consumed,
        Ok(LoginStatus::Failed | LoginStatus::Cancelled) => ChallengeState::Failed {
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
    if status != LoginStatus::Pending || expires_at_ms <= now_ms() {
        return Err(ChallengeError::Gone);
    }
    let row: Option<(i64, String, Option<String>)> = login_challenges::table
        .inner_join(accounts::table)
        .filter(login_challenges::id.eq(&id))
        .filter(accounts::status.eq(AccountStatus::Active))
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
        .filter(login_challenges::status.eq(LoginStatus::Pending))
        .filter(login_challenges::expires_at.gt(now))
        .filter(accounts::status.eq(AccountStatus::Active))
        .select(PENDING_COLUMNS)
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
