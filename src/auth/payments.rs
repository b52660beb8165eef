//! Payments from a stored-value account with a temporary (or the long-term) password.
//! Amounts, top-ups and the balance are `auth::balance` (re-exported here).
//!
//! Money is integer minor units (1250 = 12.50) in the account's currency. Every balance
//! change is one ledger row written in the same transaction, so the balance always
//! equals the sum of the ledger.
//!
//! Who pays is `credentials::check` (a temporary password by its keyed hash, else the
//! long-term password with equal work). A payment then checks AND consumes every
//! condition in one write job (`Store::write_blocking`: a savepoint of the SQLite
//! writer's transaction, or a MySQL transaction of its own), with conditional
//! UPDATEs checked by affected rows (no `SELECT ... FOR UPDATE`, so it works alike on
//! MySQL/MariaDB and SQLite):
//!
//! 1. the payment row is inserted first (status `pending`); with an idempotency key the
//!    UNIQUE (account_id, idempotency_key) constraint makes concurrent retries wait for
//!    the first and then find its answer;
//! 2. in a savepoint: `temp_passwords` uses+1 and spent+amount only if
//!    `conditions::admits` it (active, in its window, uses and limit left, amount within
//!    the per-payment limit);
//!    then `accounts` balance-amount only if the balance covers it; then the ledger row;
//! 3. if an UPDATE touched no row, the savepoint is rolled back (nothing is consumed),
//!    the reason (`conditions::decline`) is read from the row, and the payment row is
//!    kept as `declined`;
//! 4. the answer is stored as JSON in the payment row, so a retry returns it verbatim.
//!    A deadlock (MySQL) retries the whole write job, up to 10 times.
//!
//! The stored answer belongs to (account, credential, amount, currency): the row's
//! fingerprint covers all four (the credential is the temporary password's id, or the
//! long-term password). A replay is answered only for the same credential, after it
//! authenticated (a revoked or exhausted password still replays its own answers); any
//! other request with the key gets [`PayError::IdempotencyMismatch`] and learns nothing
//! of the first payment. A replayed answer is marked ([`Paid::replayed`]).
//!
//! Wrong passwords count toward the account's lockout (`accounts.failed_logins`, shared
//! with the dial-in login; at `login::MAX_CONSECUTIVE_FAILURES` every payment and login
//! is refused until an operator sets a new password). Per-client limits belong to the
//! HTTP layer.

use diesel::{
    prelude::*,
    result::{DatabaseErrorKind, Error as DieselError},
    sql_types::BigInt,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use super::balance::{
    balance, check_amount, format_amount, parse_amount, top_up, BalanceSummary, LedgerEntry,
    MAX_AMOUNT, MAX_NOTE_CHARS,
};
pub use super::conditions::DeclineReason;
use super::{
    accounts::AccountError,
    audit,
    balance::current_balance,
    conditions::{self, TempPasswordRow},
    credentials::{self, Accepted, Attempt, Credential, RefusalAudit},
};
use crate::store::{
    models::Account,
    schema::{accounts, ledger_entries, payments},
    states::PaymentStatus,
    DbConnection, Store, StoreError,
};

pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 128;
/// Deadlocks (MySQL) are retried this many times before giving up.
const MAX_ATTEMPTS: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    #[error("invalid amount: {0}")]
    InvalidAmount(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("the account's currency is {expected}, not {given}")]
    CurrencyMismatch { expected: String, given: String },
    #[error(transparent)]
    Account(#[from] AccountError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PaymentError {
    pub fn is_user_error(&self) -> bool {
        match self {
            PaymentError::Store(_) => false,
            PaymentError::Account(e) => e.is_user_error(),
            _ => true,
        }
    }
}

impl From<DieselError> for PaymentError {
    fn from(e: DieselError) -> Self {
        PaymentError::Store(StoreError::Query(e))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PayError {
    /// The idempotency key was used before with another credential, amount or currency
    /// (HTTP 422). Says nothing about the first payment.
    #[error("this idempotency key was already used for a different payment; use a new key")]
    IdempotencyMismatch,
    /// Amount, currency or key malformed (HTTP 400).
    #[error(transparent)]
    Invalid(PaymentError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PayError {
    pub fn is_user_error(&self) -> bool {
        !matches!(self, PayError::Store(_))
    }
}

impl From<DieselError> for PayError {
    fn from(e: DieselError) -> Self {
        PayError::Store(StoreError::Query(e))
    }
}

/// The answer to a payment, as stored for retries and sent to the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum PayOutcome {
    Approved {
        payment_id: i64,
        amount: i64,
        currency: String,
        /// Uses the temporary password has left (`None`: unlimited, or the long-term
        /// password paid).
        remaining_uses: Option<i64>,
        /// Spending limit the temporary password has left.
        remaining_limit: Option<i64>,
        /// The balance after this payment. Only for the long-term password's holder: the
        /// holder of a temporary password does not see the owner's balance.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        balance: Option<i64>,
    },
    Declined {
        reason: DeclineReason,
        /// The declined payment's row (none when the credentials were wrong).
        #[serde(skip_serializing_if = "Option::is_none", default)]
        payment_id: Option<i64>,
    },
}

impl PayOutcome {
    pub fn payment_id(&self) -> Option<i64> {
        match self {
            PayOutcome::Approved { payment_id, .. } => Some(*payment_id),
            PayOutcome::Declined { payment_id, .. } => *payment_id,
        }
    }

    pub fn decline_reason(&self) -> Option<DeclineReason> {
        match self {
            PayOutcome::Declined { reason, .. } => Some(*reason),
            PayOutcome::Approved { .. } => None,
        }
    }
}

/// A payment's answer, and whether it is the stored answer of an earlier request with
/// the same idempotency key (nothing was charged this time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Paid {
    #[serde(flatten)]
    pub outcome: PayOutcome,
    /// Shown only when true.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
}

impl Paid {
    fn new(outcome: PayOutcome) -> Paid {
        Paid {
            outcome,
            replayed: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct PayRequest<'a> {
    pub username: &'a str,
    /// A temporary password, or the long-term one when allowed.
    pub password: &'a str,
    /// Minor units, > 0.
    pub amount: i64,
    /// Must be the account's when given.
    pub currency: Option<&'a str>,
    pub idempotency_key: Option<&'a str>,
    pub client_ip: Option<&'a str>,
}

#[derive(Debug, Clone)]
pub struct PaySettings<'a> {
    /// Whether the long-term password may pay too (default yes: it is the owner).
    pub allow_long_term: bool,
    pub server_key: &'a [u8],
}

impl<'a> PaySettings<'a> {
    pub fn new(server_key: &'a [u8]) -> PaySettings<'a> {
        PaySettings {
            allow_long_term: true,
            server_key,
        }
    }
}

fn is_retryable(e: &DieselError) -> bool {
    matches!(
        e,
        DieselError::DatabaseError(DatabaseErrorKind::SerializationFailure, _)
    ) || e.to_string().to_ascii_lowercase().contains("deadlock")
}

/// The id of the row this connection inserted last.
fn last_insert_id(conn: &mut DbConnection) -> Result<i64, DieselError> {
    match conn {
        DbConnection::Mysql(c) => diesel::select(diesel::dsl::sql::<BigInt>(
            "CAST(LAST_INSERT_ID() AS SIGNED)",
        ))
        .get_result(c),
        DbConnection::Sqlite(c) => {
            diesel::select(diesel::dsl::sql::<BigInt>("last_insert_rowid()")).get_result(c)
        }
    }
}

/// sha256(account | credential | amount | currency): what a reused idempotency key must
/// match. The credential is `temp:<id>` or `long_term`.
fn fingerprint(account_id: i64, credential: Credential, amount: i64, currency: &str) -> String {
    let credential = match credential {
        Credential::Temp(id) => format!("temp:{id}"),
        Credential::LongTerm => "long_term".to_string(),
    };
    hex::encode(Sha256::digest(
        format!("{account_id}|{credential}|{amount}|{currency}").as_bytes(),
    ))
}

/// The fingerprint of rows written before it named the credential; such a row matches
/// only when its `temp_password_id` is the credential too.
fn legacy_fingerprint(account_id: i64, amount: i64, currency: &str) -> String {
    hex::encode(Sha256::digest(
        format!("{account_id}|{amount}|{currency}").as_bytes(),
    ))
}

/// Why the transaction stopped early.
enum Abort {
    /// Another request holds (or held) this idempotency key.
    Duplicate,
    Db(DieselError),
    Store(StoreError),
}

impl From<StoreError> for Abort {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Query(e) => e.into(),
            e => Abort::Store(e),
        }
    }
}

impl From<DieselError> for Abort {
    fn from(e: DieselError) -> Self {
        match &e {
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => Abort::Duplicate,
            _ => Abort::Db(e),
        }
    }
}

/// A declined consumption: rolls the savepoint back.
enum Consume {
    Declined(DeclineReason),
    Db(DieselError),
}

impl From<DieselError> for Consume {
    fn from(e: DieselError) -> Self {
        Consume::Db(e)
    }
}

/// Pays `amount` from the account with a temporary password (or the long-term one, if
/// allowed). Argon2id may run (long-term password, unknown user): call from a blocking
/// thread. A retried idempotency key (same credential, amount and currency) returns the
/// first answer, marked replayed, and charges nothing twice.
pub fn pay(
    store: &Store,
    request: &PayRequest<'_>,
    settings: &PaySettings<'_>,
    now: i64,
) -> Result<Paid, PayError> {
    check_amount(request.amount).map_err(PayError::Invalid)?;
    if let Some(key) = request.idempotency_key {
        if key.is_empty()
            || key.chars().count() > MAX_IDEMPOTENCY_KEY_CHARS
            || key.chars().any(|c| c.is_control())
        {
            return Err(PayError::Invalid(PaymentError::InvalidRequest(format!(
                "the idempotency key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} printable characters"
            ))));
        }
    }
    // 1. Who is paying. A temporary password is found by its keyed hash (HMAC only);
    //    anything else costs one Argon2id verification, also for unknown users.
    let attempt = Attempt {
        username: request.username,
        password: request.password,
        long_term: settings.allow_long_term,
        temp_key: Some(settings.server_key),
        client_ip: request.client_ip,
    };
    let refused = RefusalAudit {
        kind: "payment",
        outcome: PaymentStatus::Declined.as_str(),
        detail: Some(serde_json::json!({
            "amount": request.amount,
            "decline": DeclineReason::InvalidCredentials.as_str(),
        })),
    };
    let Some(Accepted {
        account,
        credential,
    }) = credentials::check(store, &attempt, refused)?
    else {
        return Ok(Paid::new(PayOutcome::Declined {
            reason: DeclineReason::InvalidCredentials,
            payment_id: None,
        }));
    };
    if let Some(currency) = request.currency {
        if !currency.eq_ignore_ascii_case(&account.currency) {
            return Err(PayError::Invalid(PaymentError::CurrencyMismatch {
                expected: account.currency.clone(),
                given: currency.to_string(),
            }));
        }
    }

    // 2. Check and consume, in one transaction.
    let print = fingerprint(account.id, credential, request.amount, &account.currency);
    for attempt in 1.. {
        match charge(store, &account, credential, request, &print, now) {
            Ok(outcome) => return Ok(Paid::new(outcome)),
            Err(Abort::Duplicate) => {
                let mut conn = store.conn()?;
                if let Some(outcome) =
                    stored_answer(&mut conn, &account, credential, request, &print)?
                {
                    return Ok(Paid {
                        outcome,
                        replayed: true,
                    });
                }
                // The first request rolled back: this one may try again.
            }
            Err(Abort::Db(e)) if is_retryable(&e) && attempt < MAX_ATTEMPTS => {}
            Err(Abort::Db(e)) => return Err(e.into()),
            Err(Abort::Store(e)) => return Err(e.into()),
        }
        if attempt >= MAX_ATTEMPTS {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5 * attempt as u64));
    }
    Err(PayError::Store(StoreError::Query(
        DieselError::RollbackTransaction,
    )))
}

/// The answer stored under this idempotency key, or `None` if there is none (yet).
/// Another credential, amount or currency than the first request's is a mismatch.
fn stored_answer(
    conn: &mut DbConnection,
    account: &Account,
    credential: Credential,
    request: &PayRequest<'_>,
    print: &str,
) -> Result<Option<PayOutcome>, PayError> {
    let Some(key) = request.idempotency_key else {
        return Ok(None);
    };
    let row: Option<(Option<i64>, Option<String>, Option<String>)> = payments::table
        .filter(payments::account_id.eq(account.id))
        .filter(payments::idempotency_key.eq(key))
        .select((
            payments::temp_password_id,
            payments::fingerprint,
            payments::response,
        ))
        .first(conn)
        .optional()?;
    let Some((temp_id, stored_print, response)) = row else {
        return Ok(None);
    };
    let paid_by = temp_id.map_or(Credential::LongTerm, Credential::Temp);
    let same = paid_by == credential
        && (stored_print.as_deref() == Some(print)
            || stored_print.as_deref()
                == Some(&legacy_fingerprint(
                    account.id,
                    request.amount,
                    &account.currency,
                )));
    if !same {
        return Err(PayError::IdempotencyMismatch);
    }
    match response.map(|r| serde_json::from_str::<PayOutcome>(&r)) {
        Some(Ok(outcome)) => Ok(Some(outcome)),
        _ => Ok(None),
    }
}

/// One attempt at the payment transaction.
fn charge(
    store: &Store,
    account: &Account,
    credential: Credential,
    request: &PayRequest<'_>,
    print: &str,
    now: i64,
) -> Result<PayOutcome, Abort> {
    let amount = request.amount;
    let temp_id = match credential {
        Credential::Temp(id) => Some(id),
        Credential::LongTerm => None,
    };
    let account = account.clone();
    let idempotency_key = request.idempotency_key.map(str::to_string);
    let client_ip = request.client_ip.map(str::to_string);
    let print = print.to_string();
    store.write_blocking(move |conn| -> Result<PayOutcome, Abort> {
        let idempotency_key = idempotency_key.as_deref();
        let print = print.as_str();
        // Lock the account row first (a write, so SQLite takes its write lock at once).
        // Every payment of the account then queues here, in one order: on InnoDB the
        // foreign-key checks of the inserts below would otherwise hold shared locks on
        // this row that deadlock against the balance UPDATE.
        diesel::update(accounts::table.find(account.id))
            .set(accounts::updated_at.eq(now))
            .execute(conn)?;
        // Then the payment row: with an idempotency key the UNIQUE constraint finds a
        // retry of a committed payment here.
        diesel::insert_into(payments::table)
            .values((
                payments::account_id.eq(account.id),
                payments::temp_password_id.eq(temp_id),
                payments::amount.eq(amount),
                payments::currency.eq(&account.currency),
                payments::status.eq(PaymentStatus::Pending),
                payments::idempotency_key.eq(idempotency_key),
                payments::fingerprint.eq(idempotency_key.map(|_| print)),
                payments::created_at.eq(now),
            ))
            .execute(conn)?;
        let payment_id = last_insert_id(conn)?;

        let consumed = conn.transaction::<_, Consume, _>(|conn| {
            let mut row = None;
            if let Some(id) = temp_id {
                row = Some(conditions::consume(conn, id, amount, now)?.map_err(Consume::Declined)?);
            }
            let changed = diesel::update(
                accounts::table
                    .filter(accounts::id.eq(account.id))
                    .filter(accounts::balance.ge(amount)),
            )
            .set((
                accounts::balance.eq(accounts::balance - amount),
                accounts::updated_at.eq(now),
            ))
            .execute(conn)?;
            if changed != 1 {
                return Err(Consume::Declined(DeclineReason::InsufficientBalance));
            }
            let balance = current_balance(conn, account.id)?;
            diesel::insert_into(ledger_entries::table)
                .values((
                    ledger_entries::account_id.eq(account.id),
                    ledger_entries::kind.eq("payment"),
                    ledger_entries::amount.eq(-amount),
                    ledger_entries::balance_after.eq(balance),
                    ledger_entries::payment_id.eq(Some(payment_id)),
                    ledger_entries::note.eq(None::<&str>),
                    ledger_entries::created_at.eq(now),
                ))
                .execute(conn)?;
            Ok((row, balance))
        });
        let outcome = match consumed {
            Ok((row, balance)) => PayOutcome::Approved {
                payment_id,
                amount,
                currency: account.currency.clone(),
                remaining_uses: row.as_ref().and_then(TempPasswordRow::remaining_uses),
                remaining_limit: row.as_ref().and_then(TempPasswordRow::remaining_limit),
                balance: matches!(credential, Credential::LongTerm).then_some(balance),
            },
            Err(Consume::Declined(reason)) => PayOutcome::Declined {
                reason,
                payment_id: Some(payment_id),
            },
            Err(Consume::Db(e)) => return Err(Abort::Db(e)),
        };
        let (status, reason) = match &outcome {
            PayOutcome::Approved { .. } => (PaymentStatus::Approved, None),
            PayOutcome::Declined { reason, .. } => (PaymentStatus::Declined, Some(reason.as_str())),
        };
        diesel::update(payments::table.find(payment_id))
            .set((
                payments::status.eq(status),
                payments::reason.eq(reason),
                payments::response.eq(serde_json::to_string(&outcome).expect("serialisable")),
            ))
            .execute(conn)?;
        let mut event =
            audit::Event::new("payment", status.as_str()).account(account.id, &account.username);
        if let Some(reason) = reason {
            event = event.reason(reason);
        }
        if let Some(ip) = &client_ip {
            event = event.client_ip(ip);
        }
        audit::record(
            conn,
            event.detail(serde_json::json!({
                "payment_id": payment_id,
                "amount": amount,
                "currency": account.currency,
                "temp_password_id": temp_id,
                "credential": if temp_id.is_some() { "temporary" } else { "long_term" },
            })),
        )?;
        Ok(outcome)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts() {
        assert_eq!(parse_amount("12.50").unwrap(), 1250);
        assert_eq!(parse_amount("12.5").unwrap(), 1250);
        assert_eq!(parse_amount("12").unwrap(), 1200);
        assert_eq!(parse_amount("0.01").unwrap(), 1);
        for bad in [
            "", "-1", "1.234", "abc", "1e3", "0", "0.00", "1.", ".5", "1,00", "+1",
        ] {
            assert!(parse_amount(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_amount("1.234")
            .unwrap_err()
            .to_string()
            .contains("more than two decimals"));
        assert_eq!(format_amount(1250), "12.50");
        assert_eq!(format_amount(-5), "-0.05");
    }

    #[test]
    fn outcomes_serialise_as_the_api_says() {
        let approved = PayOutcome::Approved {
            payment_id: 7,
            amount: 100,
            currency: "CNY".into(),
            remaining_uses: Some(0),
            remaining_limit: None,
            balance: None,
        };
        let json = serde_json::to_value(&approved).unwrap();
        assert_eq!(json["status"], "approved");
        assert_eq!(json["payment_id"], 7);
        assert!(json.get("balance").is_none());
        let declined = PayOutcome::Declined {
            reason: DeclineReason::PerPaymentLimitExceeded,
            payment_id: None,
        };
        let json = serde_json::to_string(&declined).unwrap();
        assert_eq!(
            json,
            r#"{"status":"declined","reason":"per_payment_limit_exceeded"}"#
        );
        assert_eq!(serde_json::from_str::<PayOutcome>(&json).unwrap(), declined);
    }
}
