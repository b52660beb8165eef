//! Sessions: the VERIFIED -> CONSUMED exchange that opens one (once per challenge), the
//! user behind a session token, and logout.

use diesel::prelude::*;
use serde::Serialize;

use super::{
    challenge::{load_with_secret, ChallengeError},
    random_token, token_hash, LoginSettings,
};
use crate::{
    auth::audit,
    store::{
        now_ms,
        schema::{accounts, login_challenges, sessions},
        states::{AccountStatus, LoginStatus},
        Store, StoreError,
    },
};

#[derive(Debug, Clone, Serialize)]
pub struct SessionIssued {
    pub token: String,
    pub username: String,
    pub expires_at_ms: i64,
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
    match status.parse::<LoginStatus>() {
        Ok(LoginStatus::Pending) if expires_at_ms > now => return Err(ChallengeError::NotVerified),
        Ok(LoginStatus::Verified) => {}
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
                .filter(login_challenges::status.eq(LoginStatus::Verified)),
        )
        .set((
            login_challenges::status.eq(LoginStatus::Consumed),
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
        .filter(accounts::status.eq(AccountStatus::Active))
        .select(accounts::username)
        .first(&mut *store.conn()?)
        .optional()?)
}

/// Ends a session. `true` if it was open.
pub fn logout(store: &Store, token: &str) -> Result<bool, StoreError> {
    let hash = token_hash(token);
    store.write_blocking(move |conn| -> Result<bool, StoreError> {
        let changed = diesel::update(
            sessions::table
                .filter(sessions::token_hash.eq(&hash))
                .filter(sessions::revoked_at.is_null()),
        )
        .set(sessions::revoked_at.eq(Some(now_ms())))
        .execute(conn)?;
        Ok(changed == 1)
    })
}
