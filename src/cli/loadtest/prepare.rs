//! Bench-only preparation: `loadtest prepare-challenges` (an account per caller and
//! pending login challenges, so `loadtest agi --script verify` gets successful
//! verifications) and the accounts of `loadtest login --prepare`. Accounts are enrolled
//! like any other (their audit rows included), all with one shared Argon2 hash.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use clap::Args;
use diesel::prelude::*;
use serde::Serialize;

use super::{user, CallerRange, Failure, GlobalArgs};
use crate::{
    auth::{
        accounts::{self, Enrollment},
        login::token_hash,
        passwords,
    },
    phone::{self, E164},
    store::{
        now_ms,
        schema::{accounts as accounts_table, login_challenges},
        Store, StoreError,
    },
};

#[derive(Debug, Args)]
pub struct PrepareArgs {
    /// Pending challenges to create.
    #[arg(long)]
    pub count: u64,

    /// Caller numbers A..=B; challenge i belongs to caller A + i modulo the range.
    #[arg(long, value_name = "A-B")]
    pub caller_range: String,

    /// The dial-in number the challenges wait on (match `loadtest agi --to`).
    #[arg(long, value_name = "NUMBER", default_value = "+861055550100")]
    pub to: String,

    /// Password of the created accounts (hashed once, shared by all).
    #[arg(long, default_value = "loadtest-password")]
    pub password: String,

    /// Usernames are PREFIX + the caller's digits.
    #[arg(long, default_value = "loadtest-")]
    pub username_prefix: String,

    /// How long the challenges stay pending (bench only: longer than logins allow).
    #[arg(long, default_value = "2h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
}

#[derive(Debug, Serialize)]
pub struct PrepareReport {
    pub database: String,
    pub challenges_created: u64,
    pub accounts_created: u64,
    pub callers: u64,
    pub dial_number: String,
    pub expires_at_ms: i64,
    pub seconds: f64,
}

pub(super) fn run(global: &GlobalArgs, args: PrepareArgs) -> Result<(), Failure> {
    let started = Instant::now();
    let config = global.config()?;
    let range = CallerRange::parse(&args.caller_range).map_err(user)?;
    let region = config.default_region;
    let to =
        phone::normalize(&args.to, region).map_err(|e| user(format!("--to {:?}: {e}", args.to)))?;
    let callers_used = range.len().min(args.count.max(1));
    let callers: Vec<E164> = (0..callers_used)
        .map(|i| {
            let n = range.number(i);
            phone::normalize(&n, region).map_err(|e| user(format!("caller {n:?}: {e}")))
        })
        .collect::<Result<_, _>>()?;
    let store = global.open_store(&config)?;
    let hash = passwords::hash(&args.password);
    let now = now_ms();
    let expires_at_ms = now + args.ttl.as_millis() as i64;
    let (accounts_created, ids) = ensure_accounts(
        &store,
        &callers,
        &args.username_prefix,
        &hash,
        &config.currency,
    )?;
    let count = args.count;
    let dial_number = to.to_string();
    let owners: Vec<(i64, String)> = ids
        .iter()
        .zip(&callers)
        .map(|(id, caller)| (*id, caller.to_string()))
        .collect();
    // One write job: the whole batch in one transaction, through the store's one writer.
    let challenges_created = store
        .write_blocking(move |conn| -> Result<u64, StoreError> {
            for i in 0..count {
                let (account_id, caller) = &owners[(i % owners.len() as u64) as usize];
                let id = crate::auth::login::random_token(12);
                diesel::insert_into(login_challenges::table)
                    .values((
                        login_challenges::id.eq(&id),
                        login_challenges::account_id.eq(account_id),
                        login_challenges::caller_e164.eq(caller),
                        login_challenges::dial_number.eq(&dial_number),
                        login_challenges::secret_hash.eq(token_hash(&id)),
                        login_challenges::status.eq(crate::store::states::LoginStatus::Pending),
                        login_challenges::attempts.eq(0),
                        login_challenges::created_at.eq(now),
                        login_challenges::expires_at.eq(expires_at_ms),
                    ))
                    .execute(conn)?;
            }
            Ok(count)
        })
        .map_err(system)?;
    let report = PrepareReport {
        database: store.url().to_string(),
        challenges_created,
        accounts_created,
        callers: callers.len() as u64,
        dial_number: to.to_string(),
        expires_at_ms,
        seconds: started.elapsed().as_secs_f64(),
    };
    global.emit(&report, |r| {
        format!(
            "{} pending challenges for {} callers on {} in {} ({} new accounts, {:.1} s)\n\
             load them with: dialgate loadtest agi --script verify --caller-range {} --to {} --calls {}",
            r.challenges_created,
            r.callers,
            r.dial_number,
            r.database,
            r.accounts_created,
            r.seconds,
            args.caller_range,
            r.dial_number,
            r.challenges_created,
        )
    });
    Ok(())
}

/// Enrolls the account of every caller that has none yet (username PREFIX + digits,
/// password `hash`); returns how many were created and every caller's account id.
fn ensure_accounts(
    store: &Store,
    callers: &[E164],
    prefix: &str,
    hash: &str,
    currency: &str,
) -> Result<(u64, Vec<i64>), Failure> {
    let existing: BTreeMap<String, i64> = accounts_table::table
        .filter(accounts_table::username.like(format!("{prefix}%")))
        .select((accounts_table::username, accounts_table::id))
        .load::<(String, i64)>(&mut *store.conn().map_err(system)?)
        .map_err(system)?
        .into_iter()
        .collect();
    let mut created = 0u64;
    let mut ids = Vec::with_capacity(callers.len());
    for e164 in callers {
        let username = format!("{prefix}{}", e164.digits());
        let id = match existing.get(&username) {
            Some(&id) => id,
            None => {
                created += 1;
                enroll(store, username, e164, hash, currency)?
            }
        };
        ids.push(id);
    }
    Ok((created, ids))
}

/// The one place accounts are made: a real enrollment (account, phone, audit row).
fn enroll(
    store: &Store,
    username: String,
    phone: &E164,
    hash: &str,
    currency: &str,
) -> Result<i64, Failure> {
    let enrollment = Enrollment {
        username,
        display_name: "Load Test".into(),
        phone: phone.clone(),
        password_hash: hash.to_string(),
        currency: currency.to_string(),
        documents: Vec::new(),
    };
    let account = accounts::enroll(store, &enrollment).map_err(system)?;
    Ok(account.id)
}

/// The accounts of `loadtest login --prepare`; returns how many were created.
pub(super) fn login_accounts(
    global: &GlobalArgs,
    callers: &[E164],
    prefix: &str,
    password: &str,
) -> Result<u64, Failure> {
    let config = global.config()?;
    let store = global.open_store(&config)?;
    let hash = passwords::hash(password);
    let (created, _) = ensure_accounts(&store, callers, prefix, &hash, &config.currency)?;
    Ok(created)
}

fn system(e: impl Into<anyhow::Error>) -> Failure {
    Failure::System(e.into())
}
