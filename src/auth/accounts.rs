//! Accounts: enrollment and the operator's management of them. Every change is one
//! write job (`Store::write_blocking`) with its audit row, so a failure leaves nothing
//! half-written. What enrollment needs from the configuration comes as plain values
//! (`EnrollmentRules`): `auth` knows nothing of `config`.

use diesel::{
    prelude::*,
    result::{DatabaseErrorKind, Error as DieselError},
};
use serde::Serialize;

use super::{
    audit,
    documents::{Document, DocumentError, DocumentKind},
    passwords::{self, PasswordPolicyError},
};
use crate::{
    phone::{PhoneError, Region, E164},
    store::{
        models::{Account, DocumentInfo, NewAccount, NewDocument, NewPhone, Phone},
        now_ms,
        schema::{
            accounts, identity_documents, login_challenges, phones, sessions, temp_passwords,
        },
        states::{LoginStatus, TempPasswordStatus},
        DbConnection, Store, StoreError,
    },
};

pub const MAX_USERNAME_CHARS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("invalid username {0:?}: use 1 to 64 of a-z, 0-9, '.', '_', '-', '@'")]
    InvalidUsername(String),
    #[error("invalid display name: {0}")]
    InvalidName(String),
    #[error(transparent)]
    Password(#[from] PasswordPolicyError),
    #[error(transparent)]
    Phone(#[from] PhoneError),
    #[error(transparent)]
    Document(#[from] DocumentError),
    #[error("the username {0:?} is already enrolled; choose another or manage it with `dialgate accounts`")]
    UsernameTaken(String),
    #[error("no account named {0:?}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AccountError {
    /// Whether the user can fix it (exit 1) rather than the system failing (exit 2).
    pub fn is_user_error(&self) -> bool {
        !matches!(self, AccountError::Store(_))
    }
}

impl From<DieselError> for AccountError {
    fn from(e: DieselError) -> Self {
        AccountError::Store(StoreError::Query(e))
    }
}

/// An account's status (`accounts.status`).
pub use crate::store::states::AccountStatus as Status;

/// What enrollment needs from the configuration, as plain values.
#[derive(Debug, Clone, Copy)]
pub struct EnrollmentRules<'a> {
    /// Region of phone numbers written without a country code.
    pub default_region: Region,
    pub max_document_bytes: usize,
    /// The new account's currency.
    pub currency: &'a str,
}

/// Usernames are compared case-insensitively: they are stored lower-case.
pub fn normalize_username(text: &str) -> Result<String, AccountError> {
    let name = text.trim().to_lowercase();
    let valid = !name.is_empty()
        && name.chars().count() <= MAX_USERNAME_CHARS
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if valid {
        Ok(name)
    } else {
        Err(AccountError::InvalidUsername(
            text.chars().take(80).collect(),
        ))
    }
}

pub fn check_display_name(name: &str) -> Result<String, AccountError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(AccountError::InvalidName("it is empty".into()));
    }
    if name.chars().count() > 255 {
        return Err(AccountError::InvalidName(
            "it is longer than 255 characters".into(),
        ));
    }
    if let Some(why) = super::text::refusal(name) {
        return Err(AccountError::InvalidName(why));
    }
    Ok(name.to_string())
}

/// Everything needed to enroll a user, already validated and hashed.
#[derive(Debug, Clone)]
pub struct Enrollment {
    pub username: String,
    pub display_name: String,
    pub phone: E164,
    pub password_hash: String,
    pub currency: String,
    pub documents: Vec<Document>,
}

impl Enrollment {
    /// Validates every field and hashes the password (slow: Argon2id). Nothing is
    /// written; the first problem found is returned.
    pub fn prepare(
        username: &str,
        password: &str,
        display_name: &str,
        phone: &str,
        documents: Vec<(DocumentKind, Vec<u8>)>,
        rules: &EnrollmentRules<'_>,
    ) -> Result<Enrollment, AccountError> {
        let username = normalize_username(username)?;
        let display_name = check_display_name(display_name)?;
        let phone = crate::phone::normalize(phone, rules.default_region)?;
        passwords::check_policy(&username, password)?;
        let documents = documents
            .into_iter()
            .map(|(kind, bytes)| Document::validate(kind, bytes, rules.max_document_bytes))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Enrollment {
            username,
            display_name,
            phone,
            password_hash: passwords::hash(password),
            currency: rules.currency.to_string(),
            documents,
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DocumentSummary {
    pub kind: String,
    pub media_type: String,
    pub size_bytes: i64,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AccountSummary {
    pub id: i64,
    pub username: String,
    pub display_name: String,
    pub status: String,
    pub phones: Vec<String>,
    pub documents: Vec<DocumentSummary>,
    pub created_at_ms: i64,
}

fn is_unique_violation(e: &DieselError) -> bool {
    matches!(
        e,
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)
    )
}

fn find(conn: &mut DbConnection, username: &str) -> Result<Account, AccountError> {
    accounts::table
        .filter(accounts::username.eq(username))
        .select(Account::as_select())
        .first(conn)
        .optional()?
        .ok_or_else(|| AccountError::NotFound(username.to_string()))
}

/// Creates the account, its phone and documents, and the audit row, in one transaction.
pub fn enroll(store: &Store, e: &Enrollment) -> Result<AccountSummary, AccountError> {
    let e = e.clone();
    let username = e.username.clone();
    let outcome = store.write_blocking(move |conn| -> Result<(), StoreError> {
        let now = now_ms();
        diesel::insert_into(accounts::table)
            .values(NewAccount {
                username: &e.username,
                password_hash: &e.password_hash,
                display_name: &e.display_name,
                status: Status::Active.as_str(),
                currency: &e.currency,
                password_changed_at: now,
                created_at: now,
                updated_at: now,
            })
            .execute(conn)?;
        let id: i64 = accounts::table
            .filter(accounts::username.eq(&e.username))
            .select(accounts::id)
            .first(conn)?;
        diesel::insert_into(phones::table)
            .values(NewPhone {
                account_id: id,
                e164: e.phone.as_str(),
                created_at: now,
            })
            .execute(conn)?;
        for doc in &e.documents {
            diesel::insert_into(identity_documents::table)
                .values(NewDocument {
                    account_id: id,
                    kind: doc.kind.as_str(),
                    media_type: doc.media_type,
                    size_bytes: doc.content.len() as i64,
                    sha256: &doc.sha256,
                    content: &doc.content,
                    created_at: now,
                })
                .execute(conn)?;
        }
        audit::record(
            conn,
            audit::Event::new("enrollment", "ok").account(id, &e.username),
        )?;
        Ok(())
    });
    match outcome {
        Ok(()) => show(store, &username),
        Err(StoreError::Query(err)) if is_unique_violation(&err) => {
            Err(AccountError::UsernameTaken(username))
        }
        Err(err) => Err(err.into()),
    }
}

pub fn show(store: &Store, username: &str) -> Result<AccountSummary, AccountError> {
    show_with(&mut *store.conn()?, username)
}

fn show_with(conn: &mut DbConnection, username: &str) -> Result<AccountSummary, AccountError> {
    let account = find(conn, username)?;
    summarize(conn, account)
}

fn summarize(conn: &mut DbConnection, account: Account) -> Result<AccountSummary, AccountError> {
    let phones = Phone::belonging_to(&account)
        .select(Phone::as_select())
        .order(phones::id)
        .load(conn)?
        .into_iter()
        .map(|p| p.e164)
        .collect();
    let documents = DocumentInfo::belonging_to(&account)
        .select(DocumentInfo::as_select())
        .order(identity_documents::kind)
        .load(conn)?
        .into_iter()
        .map(|d| DocumentSummary {
            kind: d.kind,
            media_type: d.media_type,
            size_bytes: d.size_bytes,
            sha256: d.sha256,
        })
        .collect();
    Ok(AccountSummary {
        id: account.id,
        username: account.username,
        display_name: account.display_name,
        status: account.status,
        phones,
        documents,
        created_at_ms: account.created_at,
    })
}

pub fn list(store: &Store) -> Result<Vec<AccountSummary>, AccountError> {
    let mut conn = store.conn()?;
    let all = accounts::table
        .select(Account::as_select())
        .order(accounts::username)
        .load(&mut conn)?;
    all.into_iter()
        .map(|account| summarize(&mut conn, account))
        .collect()
}

/// Runs `change` on the account in a transaction with its audit row.
fn change(
    store: &Store,
    username: &str,
    kind: &'static str,
    change: impl FnOnce(&mut DbConnection, &Account) -> Result<(), DieselError> + Send + 'static,
) -> Result<AccountSummary, AccountError> {
    let account = find(&mut *store.conn()?, username)?;
    let name = username.to_string();
    store.write_blocking(move |conn| -> Result<(), StoreError> {
        change(conn, &account)?;
        Ok(audit::record(
            conn,
            audit::Event::new(kind, "ok").account(account.id, &name),
        )?)
    })?;
    show(store, username)
}

pub fn set_status(
    store: &Store,
    username: &str,
    status: Status,
) -> Result<AccountSummary, AccountError> {
    let kind = match status {
        Status::Active => "account_enabled",
        Status::Disabled => "account_disabled",
    };
    change(store, username, kind, move |conn, account| {
        diesel::update(accounts::table.find(account.id))
            .set((
                accounts::status.eq(status),
                accounts::updated_at.eq(now_ms()),
            ))
            .execute(conn)?;
        if status == Status::Disabled {
            revoke_sessions(conn, account.id)?;
        }
        Ok(())
    })
}

/// Replaces the enrolled phone(s) with this one.
pub fn set_phone(
    store: &Store,
    username: &str,
    phone: &E164,
) -> Result<AccountSummary, AccountError> {
    let phone = phone.clone();
    change(store, username, "phone_changed", move |conn, account| {
        diesel::delete(phones::table.filter(phones::account_id.eq(account.id))).execute(conn)?;
        diesel::insert_into(phones::table)
            .values(NewPhone {
                account_id: account.id,
                e164: phone.as_str(),
                created_at: now_ms(),
            })
            .execute(conn)?;
        // Pending logins were bound to the old number.
        diesel::update(
            login_challenges::table
                .filter(login_challenges::account_id.eq(account.id))
                .filter(login_challenges::status.eq(LoginStatus::Pending)),
        )
        .set(login_challenges::status.eq(LoginStatus::Cancelled))
        .execute(conn)?;
        Ok(())
    })
}

/// Stores a new long-term password hash; every temporary password and session of the
/// account is revoked with it.
pub fn set_password(
    store: &Store,
    username: &str,
    password_hash: &str,
) -> Result<AccountSummary, AccountError> {
    let password_hash = password_hash.to_string();
    change(store, username, "password_changed", move |conn, account| {
        let now = now_ms();
        diesel::update(accounts::table.find(account.id))
            .set((
                accounts::password_hash.eq(&password_hash),
                accounts::password_changed_at.eq(now),
                accounts::failed_logins.eq(0),
                accounts::locked_until.eq(None::<i64>),
                accounts::updated_at.eq(now),
            ))
            .execute(conn)?;
        diesel::update(
            temp_passwords::table
                .filter(temp_passwords::account_id.eq(account.id))
                .filter(temp_passwords::status.ne(TempPasswordStatus::Revoked)),
        )
        .set((
            temp_passwords::status.eq(TempPasswordStatus::Revoked),
            temp_passwords::revoked_at.eq(Some(now)),
        ))
        .execute(conn)?;
        revoke_sessions(conn, account.id)
    })
}

fn revoke_sessions(conn: &mut DbConnection, account_id: i64) -> Result<(), DieselError> {
    diesel::update(
        sessions::table
            .filter(sessions::account_id.eq(account_id))
            .filter(sessions::revoked_at.is_null()),
    )
    .set(sessions::revoked_at.eq(Some(now_ms())))
    .execute(conn)?;
    Ok(())
}

/// Deletes the account with its phones, documents and everything else it owns. The
/// audit trail keeps a row saying it happened.
pub fn delete(store: &Store, username: &str) -> Result<(), AccountError> {
    let account = find(&mut *store.conn()?, username)?;
    let username = username.to_string();
    store.write_blocking(move |conn| -> Result<(), StoreError> {
        use crate::store::schema::{ledger_entries, payments};
        // Children first and explicitly, so the result does not depend on the backend
        // enforcing ON DELETE CASCADE.
        let id = account.id;
        diesel::delete(identity_documents::table.filter(identity_documents::account_id.eq(id)))
            .execute(conn)?;
        diesel::delete(phones::table.filter(phones::account_id.eq(id))).execute(conn)?;
        diesel::delete(sessions::table.filter(sessions::account_id.eq(id))).execute(conn)?;
        diesel::delete(login_challenges::table.filter(login_challenges::account_id.eq(id)))
            .execute(conn)?;
        diesel::delete(temp_passwords::table.filter(temp_passwords::account_id.eq(id)))
            .execute(conn)?;
        diesel::delete(ledger_entries::table.filter(ledger_entries::account_id.eq(id)))
            .execute(conn)?;
        diesel::delete(payments::table.filter(payments::account_id.eq(id))).execute(conn)?;
        diesel::delete(accounts::table.find(id)).execute(conn)?;
        Ok(audit::record(
            conn,
            audit::Event::new("account_deleted", "ok").account(id, &username),
        )?)
    })?;
    Ok(())
}
