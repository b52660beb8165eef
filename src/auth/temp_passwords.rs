//! Temporary passwords (CN107748991A): the owner of a stored-value account hands out a
//! server-generated password with conditions (validity window, number of uses, spending
//! limits) instead of sharing the long-term one.
//!
//! - Issuing checks the long-term password (`credentials::check`: Argon2id, generic
//!   error, equal work whether or not the user exists). The conditions themselves are
//!   `auth::conditions`.
//! - The temporary password is 16 characters from a 32-symbol alphabet without look-alike
//!   characters (80 bits), shown as `ABCD-EFGH-JKMN-PQRS`. It is shown once and stored only
//!   as HMAC-SHA256 under the server key, so a database leak alone reveals nothing and
//!   the hash can be looked up by index (it is keyed, so there is nothing to brute-force
//!   offline without the key). Input is case-insensitive; spaces and dashes are ignored.
//! - The server key is 32 random bytes kept in `<data_dir>/temp-password.key` (hex,
//!   created 0600 on first use). Every node that issues or accepts temporary passwords
//!   must use the SAME key: copy the file to each node (or give each the same
//!   `--temp-password-key`), or passwords issued on one node will not verify on another.
//! - The owner lists, pauses, resumes and revokes them; changing the long-term password
//!   revokes them all (`accounts::set_password`). Paying with them is `auth::payments`.

use std::{
    io::{self, Write},
    path::Path,
};

use diesel::{prelude::*, result::Error as DieselError};
use hmac::{Hmac, Mac};
use rand::{rngs::OsRng, Rng, RngCore};
use serde::Serialize;
use sha2::Sha256;

pub use super::conditions::{Conditions, TempPasswordRow, MAX_LABEL_CHARS};
use super::{
    accounts::{normalize_username, AccountError},
    audit,
    credentials::{self, find_account, Attempt, RefusalAudit},
    login::random_token,
    passwords,
};
use crate::store::{
    models::Account, schema::temp_passwords, states::TempPasswordStatus, Store, StoreError,
};

/// 32 symbols (5 bits each): digits 2-9 and letters without I and O, so nothing reads as
/// 0/O or 1/I/L... twice.
pub const ALPHABET: &[u8; 32] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZ";
/// Characters of a temporary password (16 x 5 = 80 bits).
pub const PASSWORD_CHARS: usize = 16;
/// Bytes of a generated server key.
pub const KEY_BYTES: usize = 32;
/// Shortest server key accepted from configuration.
pub const MIN_KEY_BYTES: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum TempPasswordError {
    /// Unknown user, wrong password, disabled or locked account: one answer for all.
    #[error("invalid username or password")]
    InvalidCredentials,
    #[error("invalid conditions: {0}")]
    InvalidConditions(String),
    #[error("no temporary password {id} on account {username:?}")]
    NotFound { id: i64, username: String },
    #[error("temporary password {id} is {state}; it cannot be {action}")]
    WrongState {
        id: i64,
        state: String,
        action: &'static str,
    },
    #[error(transparent)]
    Account(#[from] AccountError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl TempPasswordError {
    /// Whether the user can fix it (exit 1) rather than the system failing (exit 2).
    pub fn is_user_error(&self) -> bool {
        match self {
            TempPasswordError::Store(_) => false,
            TempPasswordError::Account(e) => e.is_user_error(),
            _ => true,
        }
    }
}

impl From<DieselError> for TempPasswordError {
    fn from(e: DieselError) -> Self {
        TempPasswordError::Store(StoreError::Query(e))
    }
}

/// Where a temporary password stands, as its owner sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TempPasswordSummary {
    pub id: i64,
    pub label: Option<String>,
    /// `active`, `paused` or `revoked` (as stored).
    pub state: String,
    /// What a payment would meet now: `usable`, `paused`, `revoked`, `not_yet_valid`,
    /// `expired`, `uses_exhausted` or `limit_exhausted`.
    pub status: String,
    pub valid_from_ms: Option<i64>,
    pub valid_until_ms: Option<i64>,
    pub max_uses: Option<i32>,
    pub uses: i32,
    pub remaining_uses: Option<i64>,
    pub spend_limit: Option<i64>,
    pub spent: i64,
    pub remaining_limit: Option<i64>,
    pub per_payment_limit: Option<i64>,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

/// A newly issued temporary password: `password` is shown here and never again.
#[derive(Debug, Clone, Serialize)]
pub struct Issued {
    pub password: String,
    pub username: String,
    pub currency: String,
    #[serde(flatten)]
    pub summary: TempPasswordSummary,
}

/// Who is managing the temporary passwords.
#[derive(Debug, Clone, Copy)]
pub enum Owner<'a> {
    /// Already authenticated (a signed-in session, or the operator's CLI).
    Authenticated(&'a str),
    /// Authenticates with the long-term password (Argon2id: call from a blocking thread).
    Password {
        username: &'a str,
        password: &'a str,
    },
}

impl TempPasswordRow {
    pub fn summary(&self, now: i64) -> TempPasswordSummary {
        TempPasswordSummary {
            id: self.id,
            label: self.label.clone(),
            state: self.status.clone(),
            status: self.status_at(now).to_string(),
            valid_from_ms: self.valid_from,
            valid_until_ms: self.valid_until,
            max_uses: self.max_uses,
            uses: self.uses,
            remaining_uses: self.remaining_uses(),
            spend_limit: self.spend_limit,
            spent: self.spent,
            remaining_limit: self.remaining_limit(),
            per_payment_limit: self.per_payment_limit,
            created_at_ms: self.created_at,
            revoked_at_ms: self.revoked_at,
        }
    }
}

/// A fresh temporary password, grouped for reading: `ABCD-EFGH-JKMN-PQRS`.
pub fn generate() -> String {
    let mut out = String::with_capacity(PASSWORD_CHARS + 3);
    for i in 0..PASSWORD_CHARS {
        if i > 0 && i % 4 == 0 {
            out.push('-');
        }
        out.push(char::from(ALPHABET[OsRng.gen_range(0..ALPHABET.len())]));
    }
    out
}

/// The canonical form of something typed as a temporary password (upper case, without
/// spaces and dashes), or `None` if it cannot be one.
pub fn canonical(input: &str) -> Option<String> {
    let text: String = input
        .chars()
        .filter(|c| !matches!(c, ' ' | '-'))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (text.len() == PASSWORD_CHARS && text.bytes().all(|b| ALPHABET.contains(&b))).then_some(text)
}

/// HMAC-SHA256(server key, canonical password), hex: what the database stores.
pub fn secret_hash(server_key: &[u8], canonical_password: &str) -> String {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(server_key).expect("HMAC takes any key length");
    mac.update(canonical_password.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Reads the server key from `path` (hex), or creates it there (32 random bytes, mode
/// 0600) when the file does not exist. Safe against several processes creating it at
/// once: the file appears atomically and everyone ends up with the same key.
pub fn load_or_create_key(path: &Path) -> io::Result<Vec<u8>> {
    match std::fs::read_to_string(path) {
        Ok(text) => return parse_key(&text, path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        crate::store::create_private_dir(parent)?;
    }
    let mut key = vec![0u8; KEY_BYTES];
    OsRng.fill_bytes(&mut key);
    let tmp = path.with_extension(format!("tmp.{}.{}", std::process::id(), random_token(6)));
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(format!("{}\n", hex::encode(&key)).as_bytes())?;
        file.sync_all()?;
    }
    // A hard link fails if the name exists: whoever links first wins, the rest read it.
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(key),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            parse_key(&std::fs::read_to_string(path)?, path)
        }
        Err(e) => Err(e),
    }
}

/// A key given as hex (configuration or key file).
pub fn parse_key(text: &str, origin: &Path) -> io::Result<Vec<u8>> {
    let invalid = |why: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("temporary-password key {}: {why}", origin.display()),
        )
    };
    let key = hex::decode(text.trim()).map_err(|e| invalid(format!("not hex: {e}")))?;
    if key.len() < MIN_KEY_BYTES {
        return Err(invalid(format!(
            "{} bytes is too short; use at least {MIN_KEY_BYTES} (32 recommended)",
            key.len()
        )));
    }
    Ok(key)
}

fn owner_account(
    store: &Store,
    owner: Owner<'_>,
    kind: &'static str,
) -> Result<Account, TempPasswordError> {
    match owner {
        Owner::Authenticated(username) => {
            let name = normalize_username(username)?;
            find_account(&mut *store.conn()?, &name)?.ok_or(AccountError::NotFound(name).into())
        }
        Owner::Password { username, password } => credentials::check(
            store,
            &Attempt::long_term(username, password),
            RefusalAudit::denied(kind),
        )?
        .map(|accepted| accepted.account)
        .ok_or(TempPasswordError::InvalidCredentials),
    }
}

/// Checks the owner's long-term password (Argon2id: call from a blocking thread) and
/// issues a temporary password with these conditions. The password is returned once.
pub fn issue(
    store: &Store,
    username: &str,
    long_term_password: &str,
    conditions: Conditions,
    server_key: &[u8],
    now: i64,
) -> Result<Issued, TempPasswordError> {
    let account = owner_account(
        store,
        Owner::Password {
            username,
            password: long_term_password,
        },
        "temp_password_issue",
    )?;
    issue_for(store, account, conditions, server_key, now)
}

/// Issues a temporary password for an owner who is already authenticated (a signed-in
/// session): no long-term password check here.
pub fn issue_authenticated(
    store: &Store,
    username: &str,
    conditions: Conditions,
    server_key: &[u8],
    now: i64,
) -> Result<Issued, TempPasswordError> {
    let account = owner_account(store, Owner::Authenticated(username), "temp_password_issue")?;
    issue_for(store, account, conditions, server_key, now)
}

fn issue_for(
    store: &Store,
    account: Account,
    conditions: Conditions,
    server_key: &[u8],
    now: i64,
) -> Result<Issued, TempPasswordError> {
    let conditions = conditions.validated(now)?;
    // Never the long-term password (it cannot practically happen with 80 random bits,
    // but it is cheap to be sure) and never a hash already stored.
    let (password, hash) = loop {
        let password = generate();
        if passwords::verify(&password, &account.password_hash) {
            continue;
        }
        let hash = secret_hash(server_key, &canonical(&password).expect("generated"));
        let taken: i64 = temp_passwords::table
            .filter(temp_passwords::secret_hash.eq(&hash))
            .count()
            .get_result(&mut *store.conn()?)?;
        if taken == 0 {
            break (password, hash);
        }
    };
    let (account_id, username) = (account.id, account.username.clone());
    let row = store.write_blocking(move |conn| -> Result<_, StoreError> {
        diesel::insert_into(temp_passwords::table)
            .values((
                temp_passwords::account_id.eq(account_id),
                temp_passwords::label.eq(conditions.label.as_deref()),
                temp_passwords::secret_hash.eq(&hash),
                temp_passwords::status.eq(TempPasswordStatus::Active),
                temp_passwords::valid_from.eq(conditions.valid_from),
                temp_passwords::valid_until.eq(conditions.valid_until),
                temp_passwords::max_uses.eq(conditions.max_uses),
                temp_passwords::uses.eq(0),
                temp_passwords::spend_limit.eq(conditions.spend_limit),
                temp_passwords::spent.eq(0i64),
                temp_passwords::per_payment_limit.eq(conditions.per_payment_limit),
                temp_passwords::created_at.eq(now),
            ))
            .execute(conn)?;
        let row: TempPasswordRow = temp_passwords::table
            .filter(temp_passwords::secret_hash.eq(&hash))
            .select(TempPasswordRow::as_select())
            .first(conn)?;
        audit::record(
            conn,
            audit::Event::new("temp_password_issue", "ok")
                .account(account_id, &username)
                .detail(serde_json::json!({
                    "temp_password_id": row.id,
                    "label": row.label,
                    "valid_from": row.valid_from,
                    "valid_until": row.valid_until,
                    "max_uses": row.max_uses,
                    "spend_limit": row.spend_limit,
                    "per_payment_limit": row.per_payment_limit,
                })),
        )?;
        Ok(row)
    })?;
    Ok(Issued {
        password,
        username: account.username,
        currency: account.currency,
        summary: row.summary(now),
    })
}

/// The owner's temporary passwords, newest first.
pub fn list(
    store: &Store,
    owner: Owner<'_>,
    now: i64,
) -> Result<Vec<TempPasswordSummary>, TempPasswordError> {
    let account = owner_account(store, owner, "temp_password_list")?;
    let rows: Vec<TempPasswordRow> = temp_passwords::table
        .filter(temp_passwords::account_id.eq(account.id))
        .order(temp_passwords::id.desc())
        .select(TempPasswordRow::as_select())
        .load(&mut *store.conn()?)?;
    Ok(rows.iter().map(|r| r.summary(now)).collect())
}

/// active -> paused: payments are declined (`paused`) until resumed.
pub fn pause(
    store: &Store,
    owner: Owner<'_>,
    id: i64,
    now: i64,
) -> Result<TempPasswordSummary, TempPasswordError> {
    use TempPasswordStatus::*;
    transition(store, owner, id, now, &[Active], Paused, "paused")
}

/// paused -> active.
pub fn resume(
    store: &Store,
    owner: Owner<'_>,
    id: i64,
    now: i64,
) -> Result<TempPasswordSummary, TempPasswordError> {
    use TempPasswordStatus::*;
    transition(store, owner, id, now, &[Paused], Active, "resumed")
}

/// active or paused -> revoked, for good.
pub fn revoke(
    store: &Store,
    owner: Owner<'_>,
    id: i64,
    now: i64,
) -> Result<TempPasswordSummary, TempPasswordError> {
    use TempPasswordStatus::*;
    transition(store, owner, id, now, &[Active, Paused], Revoked, "revoked")
}

fn transition(
    store: &Store,
    owner: Owner<'_>,
    id: i64,
    now: i64,
    from: &'static [TempPasswordStatus],
    to: TempPasswordStatus,
    action: &'static str,
) -> Result<TempPasswordSummary, TempPasswordError> {
    let kind = match to {
        TempPasswordStatus::Paused => "temp_password_pause",
        TempPasswordStatus::Active => "temp_password_resume",
        TempPasswordStatus::Revoked => "temp_password_revoke",
    };
    let account = owner_account(store, owner, kind)?;
    let (account_id, username) = (account.id, account.username.clone());
    let changed = store.write_blocking(move |conn| -> Result<bool, StoreError> {
        let revoked_at = (to == TempPasswordStatus::Revoked).then_some(now);
        // Conditional on the current state: concurrent changes cannot undo a revocation.
        let changed = diesel::update(
            temp_passwords::table
                .filter(temp_passwords::id.eq(id))
                .filter(temp_passwords::account_id.eq(account_id))
                .filter(temp_passwords::status.eq_any(from)),
        )
        .set((
            temp_passwords::status.eq(to),
            temp_passwords::revoked_at.eq(revoked_at),
        ))
        .execute(conn)?;
        if changed == 1 {
            audit::record(
                conn,
                audit::Event::new(kind, "ok")
                    .account(account_id, &username)
                    .detail(serde_json::json!({ "temp_password_id": id })),
            )?;
        }
        Ok(changed == 1)
    })?;
    let row: Option<TempPasswordRow> = temp_passwords::table
        .filter(temp_passwords::id.eq(id))
        .filter(temp_passwords::account_id.eq(account.id))
        .select(TempPasswordRow::as_select())
        .first(&mut *store.conn()?)
        .optional()?;
    match row {
        None => Err(TempPasswordError::NotFound {
            id,
            username: account.username,
        }),
        Some(row) if !changed => Err(TempPasswordError::WrongState {
            id,
            state: row.status,
            action,
        }),
        Some(row) => Ok(row.summary(now)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_passwords_are_typeable_and_canonical() {
        let p = generate();
        assert_eq!(p.len(), 19, "{p}");
        assert_eq!(p.matches('-').count(), 3);
        let c = canonical(&p).unwrap();
        assert_eq!(c.len(), PASSWORD_CHARS);
        assert_eq!(canonical(&p.to_lowercase().replace('-', " ")), Some(c));
        assert_eq!(canonical("correct horse battery"), None);
        assert_eq!(canonical("ABCD-EFGH-JKMN-PQR0"), None);
        assert_ne!(generate(), generate());
    }

    #[test]
    fn secret_hash_is_keyed() {
        let a = secret_hash(b"k1k1k1k1k1k1k1k1", "ABCDEFGHJKMNPQRS");
        assert_eq!(a.len(), 64);
        assert_ne!(a, secret_hash(b"k2k2k2k2k2k2k2k2", "ABCDEFGHJKMNPQRS"));
    }

    #[test]
    fn key_file_is_created_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/temp-password.key");
        let key = load_or_create_key(&path).unwrap();
        assert_eq!(key.len(), KEY_BYTES);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load_or_create_key(&path).unwrap(), key);
        std::fs::write(&path, "abcd").unwrap();
        assert!(load_or_create_key(&path).is_err());
    }
}
