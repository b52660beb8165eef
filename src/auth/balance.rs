//! The stored value: amounts (parsing, formatting, bounds), top-ups and the balance with
//! its latest ledger rows. Every balance change is one ledger row written in the same
//! write (a [`Store::write_blocking`]), so the balance always equals the sum of the
//! ledger. Payments are `auth::payments`.

use diesel::{prelude::*, result::Error as DieselError};
use serde::Serialize;

use super::{
    accounts::{normalize_username, AccountError},
    audit,
    credentials::find_account,
    payments::PaymentError,
};
use crate::store::{
    models::Account,
    schema::{accounts, ledger_entries},
    DbConnection, Store, StoreError,
};

/// The largest amount one top-up or payment may move (10^12 minor units), far from
/// overflowing a balance.
pub const MAX_AMOUNT: i64 = 1_000_000_000_000;
pub const MAX_NOTE_CHARS: usize = 255;

#[derive(Debug, Clone, Serialize)]
pub struct LedgerEntry {
    pub id: i64,
    pub kind: String,
    pub amount: i64,
    pub balance_after: i64,
    pub payment_id: Option<i64>,
    pub note: Option<String>,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BalanceSummary {
    pub username: String,
    pub balance: i64,
    pub currency: String,
    /// The most recent ledger rows, newest first.
    pub recent: Vec<LedgerEntry>,
}

/// Parses a decimal amount in major units (`12.50`, `12.5`, `12`) into minor units
/// (1250). At most two decimals, more than zero, digits only.
pub fn parse_amount(text: &str) -> Result<i64, PaymentError> {
    let t = text.trim();
    let bad = |why: &str| {
        Err(PaymentError::InvalidAmount(format!(
            "{t:?} {why}; write it like 12.50"
        )))
    };
    if t.starts_with('-') {
        return bad("is negative");
    }
    let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return bad("is not a number");
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) || (t.contains('.') && frac.is_empty()) {
        return bad("is not a number");
    }
    if frac.len() > 2 {
        return bad("has more than two decimals");
    }
    if whole.len() > 13 {
        return bad("is too large");
    }
    let whole: i64 = whole.parse().expect("digits");
    let cents: i64 = format!("{frac:0<2}").parse().expect("digits");
    let amount = whole * 100 + cents;
    check_amount(amount).or_else(|_| bad("must be more than 0 and at most 10000000000.00"))
}

/// `1250` -> `12.50`.
pub fn format_amount(minor: i64) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let m = minor.unsigned_abs();
    format!("{sign}{}.{:02}", m / 100, m % 100)
}

pub fn check_amount(amount: i64) -> Result<i64, PaymentError> {
    if amount <= 0 {
        return Err(PaymentError::InvalidAmount(format!(
            "{amount} must be more than 0 (integer minor units: 1250 = 12.50)"
        )));
    }
    if amount > MAX_AMOUNT {
        return Err(PaymentError::InvalidAmount(format!(
            "{amount} is more than the maximum {MAX_AMOUNT}"
        )));
    }
    Ok(amount)
}

pub(super) fn account_by_name(
    conn: &mut DbConnection,
    username: &str,
) -> Result<Account, PaymentError> {
    let name = normalize_username(username)?;
    Ok(find_account(conn, &name)?.ok_or(AccountError::NotFound(name))?)
}

pub(super) fn current_balance(
    conn: &mut DbConnection,
    account_id: i64,
) -> Result<i64, DieselError> {
    accounts::table
        .find(account_id)
        .select(accounts::balance)
        .first(conn)
}

/// Adds `amount` (minor units, > 0) to the balance with its ledger row.
pub fn top_up(
    store: &Store,
    username: &str,
    amount: i64,
    note: Option<&str>,
    now: i64,
) -> Result<BalanceSummary, PaymentError> {
    check_amount(amount)?;
    let note = note.map(str::trim).filter(|n| !n.is_empty());
    if let Some(note) = note {
        if note.chars().count() > MAX_NOTE_CHARS || super::text::refusal(note).is_some() {
            return Err(PaymentError::InvalidRequest(
                "the note must be at most 255 characters without control or bidirectional characters".into(),
            ));
        }
    }
    let account = account_by_name(&mut *store.conn()?, username)?;
    let (account_id, name) = (account.id, account.username.clone());
    let note = note.map(str::to_string);
    store.write_blocking(move |conn| -> Result<(), StoreError> {
        // The write first: SQLite then takes the write lock at once.
        diesel::update(accounts::table.find(account_id))
            .set((
                accounts::balance.eq(accounts::balance + amount),
                accounts::updated_at.eq(now),
            ))
            .execute(conn)?;
        let balance = current_balance(conn, account_id)?;
        diesel::insert_into(ledger_entries::table)
            .values((
                ledger_entries::account_id.eq(account_id),
                ledger_entries::kind.eq("top_up"),
                ledger_entries::amount.eq(amount),
                ledger_entries::balance_after.eq(balance),
                ledger_entries::payment_id.eq(None::<i64>),
                ledger_entries::note.eq(note.as_deref()),
                ledger_entries::created_at.eq(now),
            ))
            .execute(conn)?;
        Ok(audit::record(
            conn,
            audit::Event::new("top_up", "ok")
                .account(account_id, &name)
                .detail(serde_json::json!({ "amount": amount, "balance": balance })),
        )?)
    })?;
    summary(&mut *store.conn()?, account)
}

/// The balance, its currency and the latest ledger rows.
pub fn balance(store: &Store, username: &str) -> Result<BalanceSummary, PaymentError> {
    let mut conn = store.conn()?;
    let account = account_by_name(&mut conn, username)?;
    summary(&mut conn, account)
}

fn summary(conn: &mut DbConnection, account: Account) -> Result<BalanceSummary, PaymentError> {
    let balance = current_balance(conn, account.id)?;
    type Row = (i64, String, i64, i64, Option<i64>, Option<String>, i64);
    let rows: Vec<Row> = ledger_entries::table
        .filter(ledger_entries::account_id.eq(account.id))
        .order(ledger_entries::id.desc())
        .limit(20)
        .select((
            ledger_entries::id,
            ledger_entries::kind,
            ledger_entries::amount,
            ledger_entries::balance_after,
            ledger_entries::payment_id,
            ledger_entries::note,
            ledger_entries::created_at,
        ))
        .load(conn)?;
    Ok(BalanceSummary {
        username: account.username,
        balance,
        currency: account.currency,
        recent: rows
            .into_iter()
            .map(
                |(id, kind, amount, balance_after, payment_id, note, created_at)| LedgerEntry {
                    id,
                    kind,
                    amount,
                    balance_after,
                    payment_id,
                    note,
                    created_at_ms: created_at,
                },
            )
            .collect(),
    })
}
