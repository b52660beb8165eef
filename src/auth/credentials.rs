//! The long-term credential check, one for the login, temporary passwords and payments.
//!
//! - Equal work for unknown users: the password is verified against a dummy Argon2id hash
//!   (one per process) when the username is unknown or malformed.
//! - One refusal order ([`refusal`]): a wrong password is always reported as such, then a
//!   disabled account, then a locked one.
//! - A wrong password counts toward the account's lockout (`accounts.failed_logins`, one
//!   counter for every caller); at [`MAX_CONSECUTIVE_FAILURES`] only an operator's new
//!   password unlocks it. A right long-term password resets the count.
//! - Every refusal writes one audit row (the caller names its kind and outcome), in the
//!   same write as the failure count. Writes go through [`Store::write_blocking`].
//!
//! Argon2id runs here: call from a blocking thread.

use diesel::{prelude::*, result::Error as DieselError};
use subtle::ConstantTimeEq;

use super::{accounts::normalize_username, audit, passwords, temp_passwords};
use crate::store::{
    models::Account,
    schema::{accounts, temp_passwords as tp},
    states::AccountStatus,
    DbConnection, Store, StoreError,
};

/// After this many consecutive wrong passwords an account is locked for good until an
/// operator sets a new password (security.md: at most 100).
pub const MAX_CONSECUTIVE_FAILURES: i32 = 100;

/// Why the holder of a known account who gave its password (right or wrong) is refused,
/// as the audit names it; `None` lets them in. One order for logins, temporary passwords
/// and payments: a wrong password is always reported as such.
pub fn refusal(account: &Account, password_ok: bool) -> Option<&'static str> {
    if !password_ok {
        Some("wrong_password")
    } else if account.status != AccountStatus::Active {
        Some("disabled")
    } else if account.failed_logins >= MAX_CONSECUTIVE_FAILURES {
        Some("locked")
    } else {
        None
    }
}

/// A PHC string for a password nobody has, verified when the username is unknown so a
/// wrong username costs the same work as a wrong password. The only one in the process.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| passwords::hash(&super::login::random_token(24)))
}

/// The account of a (normalised) username.
pub(crate) fn find_account(
    conn: &mut DbConnection,
    username: &str,
) -> Result<Option<Account>, DieselError> {
    accounts::table
        .filter(accounts::username.eq(username))
        .select(Account::as_select())
        .first(conn)
        .optional()
}

/// What is presented and what is acceptable.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    pub username: &'a str,
    pub password: &'a str,
    /// Whether the long-term password is acceptable (payments may refuse it).
    pub long_term: bool,
    /// Also accept a temporary password of the account, keyed with this server key
    /// (payments). Looked up by its HMAC first: no Argon2id when it matches.
    pub temp_key: Option<&'a [u8]>,
    pub client_ip: Option<&'a str>,
}

impl<'a> Attempt<'a> {
    /// The long-term password only.
    pub fn long_term(username: &'a str, password: &'a str) -> Attempt<'a> {
        Attempt {
            username,
            password,
            long_term: true,
            temp_key: None,
            client_ip: None,
        }
    }

    pub fn client_ip(self, client_ip: Option<&'a str>) -> Attempt<'a> {
        Attempt { client_ip, ..self }
    }
}

/// How a refusal is written to the audit trail.
#[derive(Debug, Clone)]
pub struct RefusalAudit {
    pub kind: &'static str,
    pub outcome: &'static str,
    pub detail: Option<serde_json::Value>,
}

impl RefusalAudit {
    /// `kind` / `denied`, no detail.
    pub fn denied(kind: &'static str) -> RefusalAudit {
        RefusalAudit {
            kind,
            outcome: "denied",
            detail: None,
        }
    }
}

/// Which credential let the holder in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    LongTerm,
    /// A temporary password of the account (its id).
    Temp(i64),
}

/// An accepted attempt.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub account: Account,
    pub credential: Credential,
}

/// Checks the attempt: `Some` when accepted, `None` when refused (the refusal, with its
/// audit row and failure count, is already written).
pub fn check(
    store: &Store,
    attempt: &Attempt<'_>,
    refused: RefusalAudit,
) -> Result<Option<Accepted>, StoreError> {
    let name = normalize_username(attempt.username).ok();
    let account = match &name {
        Some(name) => find_account(&mut *store.conn()?, name)?,
        None => None,
    };
    let mut credential = None;
    if let (Some(key), Some(account)) = (attempt.temp_key, &account) {
        credential = temp_credential(store, key, account, attempt.password)?;
    }
    if credential.is_none() && attempt.long_term {
        let hash = account
            .as_ref()
            .map_or(dummy_hash(), |a| a.password_hash.as_str());
        if passwords::verify(attempt.password, hash) {
            credential = Some(Credential::LongTerm);
        }
    }
    let refusal = match (&account, credential) {
        (None, _) => Some("unknown_user"),
        (Some(a), credential) => refusal(a, credential.is_some()),
    };
    match (account, credential, refusal) {
        (Some(account), Some(credential), None) => {
            if credential == Credential::LongTerm && account.failed_logins != 0 {
                let id = account.id;
                store.write_blocking(move |conn| -> Result<(), StoreError> {
                    diesel::update(accounts::table.find(id))
                        .set(accounts::failed_logins.eq(0))
                        .execute(conn)?;
                    Ok(())
                })?;
            }
            Ok(Some(Accepted {
                account,
                credential,
            }))
        }
        (account, _, refusal) => {
            let reason = refusal.expect("a refusal when anything is missing");
            let client_ip = attempt.client_ip.map(str::to_string);
            store.write_blocking(move |conn| -> Result<(), StoreError> {
                let mut event = audit::Event::new(refused.kind, refused.outcome).reason(reason);
                match (&account, &name) {
                    (Some(account), _) => {
                        if reason == "wrong_password" {
                            count_failure(conn, account.id)?;
                        }
                        event = event.account(account.id, &account.username);
                    }
                    (None, Some(name)) => event = event.username(name),
                    (None, None) => {}
                }
                if let Some(ip) = &client_ip {
                    event = event.client_ip(ip);
                }
                if let Some(detail) = refused.detail {
                    event = event.detail(detail);
                }
                Ok(audit::record(conn, event)?)
            })?;
            Ok(None)
        }
    }
}

/// The account's temporary password this text is, found by its keyed hash.
fn temp_credential(
    store: &Store,
    key: &[u8],
    account: &Account,
    password: &str,
) -> Result<Option<Credential>, StoreError> {
    let Some(hash) =
        temp_passwords::canonical(password).map(|c| temp_passwords::secret_hash(key, &c))
    else {
        return Ok(None);
    };
    let stored: Option<(i64, String)> = tp::table
        .filter(tp::secret_hash.eq(&hash))
        .filter(tp::account_id.eq(account.id))
        .select((tp::id, tp::secret_hash))
        .first(&mut *store.conn()?)
        .optional()?;
    Ok(stored
        .filter(|(_, stored)| bool::from(stored.as_bytes().ct_eq(hash.as_bytes())))
        .map(|(id, _)| Credential::Temp(id)))
}

/// Counts a wrong password toward the account's lockout.
fn count_failure(conn: &mut DbConnection, account_id: i64) -> Result<(), DieselError> {
    diesel::update(accounts::table.find(account_id))
        .set(accounts::failed_logins.eq(accounts::failed_logins + 1))
        .execute(conn)?;
    Ok(())
}
