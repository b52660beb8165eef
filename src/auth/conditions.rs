//! The conditions of a temporary password, in one place: their validation, the
//! conditional-UPDATE filter a payment consumes them with, the reason a payment is
//! declined, and the live status its owner sees.
//!
//! [`decline`] is the rule; [`admits`] is the same rule as SQL. A property test runs the
//! SQL against SQLite over random rows, amounts and times and checks that it admits
//! exactly what [`decline`] lets through. [`TempPasswordRow::status_at`] is [`decline`]
//! for the smallest amount (1 minor unit).

use diesel::{dsl::auto_type, prelude::*, result::Error as DieselError};
use serde::{Deserialize, Serialize};

use super::temp_passwords::TempPasswordError;
use crate::store::{schema::temp_passwords as tp, states::TempPasswordStatus, DbConnection};

pub const MAX_LABEL_CHARS: usize = 64;

/// What the owner allows a temporary password to do. `None` = no such limit. Times are
/// Unix ms; money is integer minor units in the account's currency.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Conditions {
    pub label: Option<String>,
    pub valid_from: Option<i64>,
    pub valid_until: Option<i64>,
    pub max_uses: Option<i32>,
    pub spend_limit: Option<i64>,
    pub per_payment_limit: Option<i64>,
}

impl Conditions {
    /// Trims the label and refuses limits that could never allow a payment.
    pub fn validated(mut self, now: i64) -> Result<Conditions, TempPasswordError> {
        let bad = |m: &str| Err(TempPasswordError::InvalidConditions(m.to_string()));
        if let Some(label) = self.label.take() {
            let label = label.trim().to_string();
            if label.chars().count() > MAX_LABEL_CHARS {
                return bad("the label is longer than 64 characters");
            }
            super::text::check("label", &label).map_err(TempPasswordError::InvalidConditions)?;
            self.label = (!label.is_empty()).then_some(label);
        }
        if let (Some(from), Some(until)) = (self.valid_from, self.valid_until) {
            if until <= from {
                return bad("the end of validity must be after its start");
            }
        }
        // Beyond it a time cannot be printed (RFC 3339 ends with year 9999).
        if [self.valid_from, self.valid_until]
            .iter()
            .flatten()
            .any(|&t| !(0..=crate::time::MAX_TIME_MS).contains(&t))
        {
            return bad("a validity time is outside 1970..9999");
        }
        if self.valid_until.is_some_and(|until| until <= now) {
            return bad("the end of validity is in the past");
        }
        if self.max_uses.is_some_and(|n| n < 1) {
            return bad("the number of uses must be at least 1");
        }
        if self.spend_limit.is_some_and(|n| n < 1) {
            return bad("the spending limit must be more than 0");
        }
        if self.per_payment_limit.is_some_and(|n| n < 1) {
            return bad("the per-payment limit must be more than 0");
        }
        Ok(self)
    }
}

/// Why a payment was declined (HTTP 402).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeclineReason {
    InvalidCredentials,
    NotYetValid,
    Expired,
    UsesExhausted,
    LimitExceeded,
    PerPaymentLimitExceeded,
    InsufficientBalance,
    Paused,
    Revoked,
}

impl DeclineReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeclineReason::InvalidCredentials => "invalid_credentials",
            DeclineReason::NotYetValid => "not_yet_valid",
            DeclineReason::Expired => "expired",
            DeclineReason::UsesExhausted => "uses_exhausted",
            DeclineReason::LimitExceeded => "limit_exceeded",
            DeclineReason::PerPaymentLimitExceeded => "per_payment_limit_exceeded",
            DeclineReason::InsufficientBalance => "insufficient_balance",
            DeclineReason::Paused => "paused",
            DeclineReason::Revoked => "revoked",
        }
    }

    pub const ALL: [DeclineReason; 9] = [
        DeclineReason::InvalidCredentials,
        DeclineReason::NotYetValid,
        DeclineReason::Expired,
        DeclineReason::UsesExhausted,
        DeclineReason::LimitExceeded,
        DeclineReason::PerPaymentLimitExceeded,
        DeclineReason::InsufficientBalance,
        DeclineReason::Paused,
        DeclineReason::Revoked,
    ];
}

impl std::fmt::Display for DeclineReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `temp_passwords` row.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = tp)]
pub struct TempPasswordRow {
    pub id: i64,
    pub account_id: i64,
    pub label: Option<String>,
    pub secret_hash: String,
    pub status: String,
    pub valid_from: Option<i64>,
    pub valid_until: Option<i64>,
    pub max_uses: Option<i32>,
    pub uses: i32,
    pub spend_limit: Option<i64>,
    pub spent: i64,
    pub per_payment_limit: Option<i64>,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

impl TempPasswordRow {
    pub fn remaining_uses(&self) -> Option<i64> {
        self.max_uses
            .map(|max| (i64::from(max) - i64::from(self.uses)).max(0))
    }

    pub fn remaining_limit(&self) -> Option<i64> {
        self.spend_limit.map(|limit| (limit - self.spent).max(0))
    }

    /// What a payment would meet at `now`, leaving amounts aside: `usable`, `paused`,
    /// `revoked`, `not_yet_valid`, `expired`, `uses_exhausted` or `limit_exhausted`.
    /// [`decline`] for the smallest amount.
    pub fn status_at(&self, now: i64) -> &'static str {
        match decline(self, 1, now) {
            None => "usable",
            Some(DeclineReason::LimitExceeded | DeclineReason::PerPaymentLimitExceeded) => {
                "limit_exhausted"
            }
            Some(reason) => reason.as_str(),
        }
    }
}

/// Why a payment of `amount` at `now` may not use this row, or `None` when it may: the
/// rule [`admits`] writes as SQL, checked in the order the owner is told.
pub fn decline(row: &TempPasswordRow, amount: i64, now: i64) -> Option<DeclineReason> {
    if row.status == TempPasswordStatus::Revoked {
        Some(DeclineReason::Revoked)
    } else if row.status != TempPasswordStatus::Active {
        Some(DeclineReason::Paused)
    } else if row.valid_from.is_some_and(|from| from > now) {
        Some(DeclineReason::NotYetValid)
    } else if row.valid_until.is_some_and(|until| until <= now) {
        Some(DeclineReason::Expired)
    } else if row.per_payment_limit.is_some_and(|limit| amount > limit) {
        Some(DeclineReason::PerPaymentLimitExceeded)
    } else if row.max_uses.is_some_and(|max| row.uses >= max) {
        Some(DeclineReason::UsesExhausted)
    } else if row
        .spend_limit
        .is_some_and(|limit| row.spent + amount > limit)
    {
        Some(DeclineReason::LimitExceeded)
    } else {
        None
    }
}

/// [`decline`] as a SQL filter on `temp_passwords`: true for the rows a payment of
/// `amount` at `now` may consume.
#[auto_type]
pub fn admits(amount: i64, now: i64) -> _ {
    let active: TempPasswordStatus = TempPasswordStatus::Active;
    tp::status
        .eq(active)
        .and(tp::valid_from.is_null().or(tp::valid_from.le(now)))
        .and(tp::valid_until.is_null().or(tp::valid_until.gt(now)))
        .and(
            tp::per_payment_limit
                .is_null()
                .or(tp::per_payment_limit.ge(amount)),
        )
        .and(
            tp::max_uses
                .is_null()
                .or(tp::uses.lt(tp::max_uses.assume_not_null())),
        )
        .and(
            tp::spend_limit
                .is_null()
                .or((tp::spent + amount).le(tp::spend_limit.assume_not_null())),
        )
}

/// Consumes one use and `amount` of temporary password `id` if [`admits`] lets it:
/// the row after the payment, or why not (read from the row as it is now).
pub fn consume(
    conn: &mut DbConnection,
    id: i64,
    amount: i64,
    now: i64,
) -> Result<Result<TempPasswordRow, DeclineReason>, DieselError> {
    let changed = diesel::update(tp::table.filter(tp::id.eq(id)).filter(admits(amount, now)))
        .set((tp::uses.eq(tp::uses + 1), tp::spent.eq(tp::spent + amount)))
        .execute(conn)?;
    let current: TempPasswordRow = tp::table
        .find(id)
        .select(TempPasswordRow::as_select())
        .first(conn)?;
    if changed == 1 {
        return Ok(Ok(current));
    }
    Ok(Err(decline(&current, amount, now).unwrap_or(
        // Changed between the UPDATE and this read (MySQL): the likeliest cause.
        if current.max_uses.is_some() {
            DeclineReason::UsesExhausted
        } else {
            DeclineReason::LimitExceeded
        },
    )))
}

#[cfg(test)]
mod tests {
    use proptest::{prelude::*, test_runner::TestRunner};

    use super::*;
    use crate::store::{schema::accounts, states::AccountStatus, DatabaseUrl, OpenOptions, Store};

    const NOW: i64 = 1_000;

    fn row() -> impl Strategy<Value = (TempPasswordRow, i64, i64)> {
        let status = prop::sample::select(TempPasswordStatus::ALL);
        let time = || prop::option::of(NOW - 3..NOW + 3);
        let limits = (
            prop::option::of(0..4i32),
            0..5i32,
            prop::option::of(0..40i64),
            0..40i64,
            prop::option::of(0..20i64),
        );
        (status, time(), time(), limits, 1..25i64, NOW - 2..NOW + 2).prop_map(
            |(status, valid_from, valid_until, limits, amount, now)| {
                let (max_uses, uses, spend_limit, spent, per_payment_limit) = limits;
                let row = TempPasswordRow {
                    id: 0,
                    account_id: 0,
                    label: None,
                    secret_hash: String::new(),
                    status: status.as_str().to_string(),
                    valid_from,
                    valid_until,
                    max_uses,
                    uses,
                    spend_limit,
                    spent,
                    per_payment_limit,
                    created_at: 0,
                    revoked_at: None,
                };
                (row, amount, now)
            },
        )
    }

    /// The SQL filter, run for real against SQLite, admits exactly the rows, amounts and
    /// times [`decline`] lets through, and a decline names [`decline`]'s reason.
    #[test]
    fn the_sql_filter_admits_what_decline_allows() {
        let dir = tempfile::tempdir().unwrap();
        let url = DatabaseUrl::Sqlite(dir.path().join("conditions.sqlite3"));
        let store = Store::open(&url, &OpenOptions::default()).unwrap();
        let mut conn = store.conn().unwrap();
        diesel::insert_into(accounts::table)
            .values((
                accounts::id.eq(1i64),
                accounts::username.eq("owner"),
                accounts::password_hash.eq("x"),
                accounts::display_name.eq("Owner"),
                accounts::status.eq(AccountStatus::Active),
                accounts::currency.eq("CNY"),
                accounts::password_changed_at.eq(0i64),
                accounts::created_at.eq(0i64),
                accounts::updated_at.eq(0i64),
            ))
            .execute(&mut *conn)
            .unwrap();
        // One transaction that is never committed: each case is a savepoint in it, so the
        // property costs no disk writes (and does not slow the WAL tests beside it).
        conn.begin_test_transaction().unwrap();
        let conn = std::cell::RefCell::new(conn);
        let mut runner = TestRunner::new(ProptestConfig::with_cases(1_000));
        runner
            .run(&row(), |(row, amount, now)| {
                let expected = decline(&row, amount, now);
                let outcome = conn
                    .borrow_mut()
                    .transaction::<_, DieselError, _>(|conn| {
                        diesel::insert_into(tp::table)
                            .values((
                                tp::id.eq(7i64),
                                tp::account_id.eq(1i64),
                                tp::secret_hash.eq("h"),
                                tp::status.eq(&row.status),
                                tp::valid_from.eq(row.valid_from),
                                tp::valid_until.eq(row.valid_until),
                                tp::max_uses.eq(row.max_uses),
                                tp::uses.eq(row.uses),
                                tp::spend_limit.eq(row.spend_limit),
                                tp::spent.eq(row.spent),
                                tp::per_payment_limit.eq(row.per_payment_limit),
                                tp::created_at.eq(0i64),
                            ))
                            .execute(conn)?;
                        let outcome = consume(conn, 7, amount, now)?;
                        // Leave nothing behind for the next case.
                        diesel::delete(tp::table.find(7i64)).execute(conn)?;
                        Ok(outcome)
                    })
                    .unwrap();
                match (&outcome, expected) {
                    (Ok(after), None) => {
                        prop_assert_eq!(after.uses, row.uses + 1);
                        prop_assert_eq!(after.spent, row.spent + amount);
                    }
                    (Err(reason), Some(expected)) => prop_assert_eq!(*reason, expected),
                    _ => prop_assert!(
                        false,
                        "{row:?} amount {amount} at {now}: SQL {outcome:?}, rule {expected:?}"
                    ),
                }
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn status_is_decline_for_one_unit() {
        let mut runner = TestRunner::default();
        runner
            .run(&row(), |(row, _, now)| {
                let status = row.status_at(now);
                prop_assert_eq!(status == "usable", decline(&row, 1, now).is_none());
                Ok(())
            })
            .unwrap();
    }
}
