//! Temporary passwords and payments from a stored-value account, on SQLite and on
//! MariaDB/MySQL: the domain functions under real concurrency (64 threads against one
//! store), every decline reason, time conditions with an injected clock, and the
//! commands end to end.
//!
//! The MySQL tests need the server from `DIALGATE_TEST_MYSQL_URL` (default
//! `mysql://root@127.0.0.1:3306`) and fail, never skip, without it.

mod common;

use std::{
    process::Output,
    sync::{Arc, Barrier},
    time::Duration,
};

use common::db::{expect, on_both_backends, stdout, TestDb};
use dialgate::{
    auth::{
        accounts::{self, Enrollment},
        passwords,
        payments::{self, DeclineReason, Paid, PayError, PayOutcome, PayRequest, PaySettings},
        temp_passwords::{self, Conditions, Issued, Owner, TempPasswordError},
    },
    store::{DatabaseUrl, OpenOptions, Store},
};
use serde_json::Value;

on_both_backends! {
    scenario_max_uses_race => max_uses_race_sqlite, max_uses_race_mysql;
    scenario_spend_limit_race => spend_limit_race_sqlite, spend_limit_race_mysql;
    scenario_balance_race => balance_race_sqlite, balance_race_mysql;
    scenario_idempotency_race => idempotency_race_sqlite, idempotency_race_mysql;
    scenario_idempotency_bound_to_payer => idempotency_bound_to_payer_sqlite, idempotency_bound_to_payer_mysql;
    scenario_every_decline_reason => every_decline_reason_sqlite, every_decline_reason_mysql;
    scenario_manage => manage_sqlite, manage_mysql;
    scenario_cli => cli_sqlite, cli_mysql;
}

const PASSWORD: &str = "correct horse battery";
const KEY: [u8; 32] = [7; 32];
/// The injected clock's "now": 2026-12-01T00:00:00Z.
const T0: i64 = 1_796_083_200_000;
const HOUR: i64 = 3_600_000;
const THREADS: usize = 64;

fn open(db: &TestDb) -> Store {
    let url = DatabaseUrl::parse(&db.url()).unwrap();
    let options = OpenOptions {
        max_connections: 16,
        migrate: true,
        connect_timeout: Duration::from_secs(60),
    };
    Store::open(&url, &options).unwrap()
}

/// Enrolls `username` (long-term password [`PASSWORD`]) with `balance` topped up.
fn account(store: &Store, username: &str, balance: i64) {
    let enrollment = Enrollment {
        username: username.into(),
        display_name: format!("{username} Example"),
        phone: dialgate::phone::normalize("+8613800138000", Default::default()).unwrap(),
        password_hash: passwords::hash(PASSWORD),
        currency: "CNY".into(),
        documents: Vec::new(),
    };
    accounts::enroll(store, &enrollment).unwrap();
    if balance > 0 {
        payments::top_up(store, username, balance, Some("opening"), T0).unwrap();
    }
}

fn issue(store: &Store, username: &str, conditions: Conditions) -> Issued {
    temp_passwords::issue(store, username, PASSWORD, conditions, &KEY, T0).unwrap()
}

/// The answer and whether it was a replay.
fn paid_at(
    store: &Store,
    username: &str,
    password: &str,
    amount: i64,
    key: Option<&str>,
    now: i64,
) -> Result<Paid, PayError> {
    payments::pay(
        store,
        &PayRequest {
            username,
            password,
            amount,
            currency: None,
            idempotency_key: key,
            client_ip: Some("192.0.2.1"),
        },
        &PaySettings::new(&KEY),
        now,
    )
}

fn pay_at(
    store: &Store,
    username: &str,
    password: &str,
    amount: i64,
    key: Option<&str>,
    now: i64,
) -> Result<PayOutcome, PayError> {
    paid_at(store, username, password, amount, key, now).map(|paid| paid.outcome)
}

/// A payment with an idempotency key at T0.
fn paid_with(store: &Store, password: &str, amount: i64, key: &str) -> Result<Paid, PayError> {
    paid_at(store, "alice", password, amount, Some(key), T0)
}

#[track_caller]
fn mismatch(result: Result<Paid, PayError>) {
    assert!(
        matches!(result, Err(PayError::IdempotencyMismatch)),
        "{result:?}"
    );
}

fn pay(store: &Store, username: &str, password: &str, amount: i64) -> PayOutcome {
    pay_at(store, username, password, amount, None, T0).unwrap()
}

#[track_caller]
fn declined(outcome: &PayOutcome, reason: DeclineReason) {
    assert_eq!(outcome.decline_reason(), Some(reason), "{outcome:?}");
}

/// `THREADS` payments of `amount` at once (each with `key(i)`), all released together.
fn race(
    store: &Store,
    username: &str,
    password: &str,
    amount: i64,
    threads: usize,
    key: impl Fn(usize) -> Option<String> + Sync,
) -> Vec<Paid> {
    let barrier = Arc::new(Barrier::new(threads));
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let barrier = barrier.clone();
                let key = key(i);
                s.spawn(move || {
                    barrier.wait();
                    paid_at(store, username, password, amount, key.as_deref(), T0).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

trait Approved {
    fn is_approved(&self) -> bool;
}

impl Approved for PayOutcome {
    fn is_approved(&self) -> bool {
        matches!(self, PayOutcome::Approved { .. })
    }
}

/// alice with `balance`, a temporary password with `conditions`, and `threads` payments
/// of `amount` with it at once (each with `key(i)`).
fn race_alice(
    db: &TestDb,
    balance: i64,
    conditions: Conditions,
    amount: i64,
    threads: usize,
    key: impl Fn(usize) -> Option<String> + Sync,
) -> (Store, Issued, Vec<PayOutcome>) {
    let store = open(db);
    account(&store, "alice", balance);
    let issued = issue(&store, "alice", conditions);
    let outcomes = race(&store, "alice", &issued.password, amount, threads, key);
    let outcomes = outcomes.into_iter().map(|paid| paid.outcome).collect();
    (store, issued, outcomes)
}

fn approved(outcomes: &[PayOutcome]) -> usize {
    outcomes.iter().filter(|o| o.is_approved()).count()
}

#[track_caller]
fn assert_ledger_matches(store: &Store, username: &str, expected: i64) {
    let balance = payments::balance(store, username).unwrap().balance;
    assert_eq!(balance, expected, "balance");
    assert_eq!(ledger_sum(store, username), balance);
}

/// The sum of the account's ledger (must equal the balance, always).
fn ledger_sum(store: &Store, username: &str) -> i64 {
    use dialgate::store::schema::{accounts, ledger_entries};
    use diesel::prelude::*;
    let amounts: Vec<i64> = ledger_entries::table
        .inner_join(accounts::table)
        .filter(accounts::username.eq(username))
        .select(ledger_entries::amount)
        .load(&mut *store.conn().unwrap())
        .unwrap();
    amounts.iter().sum()
}

// ---------------------------------------------------------------------------------------
// Concurrency
// ---------------------------------------------------------------------------------------

fn scenario_max_uses_race(db: &TestDb) {
    let max_uses = Conditions {
        max_uses: Some(1),
        ..Conditions::default()
    };
    let (store, _, outcomes) = race_alice(db, 100_000, max_uses, 100, THREADS, |_| None);
    assert_eq!(approved(&outcomes), 1, "{outcomes:?}");
    for o in outcomes.iter().filter(|o| !o.is_approved()) {
        declined(o, DeclineReason::UsesExhausted);
    }
    let winner = outcomes.iter().find(|o| o.is_approved()).unwrap();
    assert!(matches!(
        winner,
        PayOutcome::Approved {
            remaining_uses: Some(0),
            balance: None,
            ..
        }
    ));
    assert_ledger_matches(&store, "alice", 100_000 - 100);
    assert_eq!(db.count("payments"), THREADS as i64);
    assert_eq!(
        db.query_i64("SELECT COUNT(*) AS n FROM payments WHERE status = 'approved'"),
        1
    );
    assert_eq!(db.audit_count("payment"), THREADS as i64);
}

fn scenario_spend_limit_race(db: &TestDb) {
    let spend_limit = Conditions {
        spend_limit: Some(1000),
        ..Conditions::default()
    };
    let (store, _, outcomes) = race_alice(db, 100_000, spend_limit, 100, THREADS, |_| None);
    assert_eq!(approved(&outcomes), 10, "{outcomes:?}");
    for o in outcomes.iter().filter(|o| !o.is_approved()) {
        declined(o, DeclineReason::LimitExceeded);
    }
    let list = temp_passwords::list(&store, Owner::Authenticated("alice"), T0).unwrap();
    assert_eq!(list[0].spent, 1000);
    assert_eq!(list[0].uses, 10);
    assert_eq!(list[0].remaining_limit, Some(0));
    assert_eq!(list[0].status, "limit_exhausted");
    assert_ledger_matches(&store, "alice", 100_000 - 1000);
}

fn scenario_balance_race(db: &TestDb) {
    let (store, _, outcomes) = race_alice(db, 1000, Conditions::default(), 100, THREADS, |_| None);
    assert_eq!(approved(&outcomes), 10, "{outcomes:?}");
    for o in outcomes.iter().filter(|o| !o.is_approved()) {
        declined(o, DeclineReason::InsufficientBalance);
    }
    assert_ledger_matches(&store, "alice", 0);
    assert_eq!(
        db.query_i64("SELECT COUNT(*) AS n FROM accounts WHERE balance < 0"),
        0
    );
    // Declined payments consumed nothing from the temporary password either.
    let list = temp_passwords::list(&store, Owner::Authenticated("alice"), T0).unwrap();
    assert_eq!((list[0].uses, list[0].spent), (10, 1000));
}

fn scenario_idempotency_race(db: &TestDb) {
    let store = open(db);
    account(&store, "alice", 10_000);
    let issued = issue(&store, "alice", Conditions::default());
    let paid = race(&store, "alice", &issued.password, 250, 16, |_| {
        Some("order-42".into())
    });
    let outcomes: Vec<PayOutcome> = paid.iter().map(|p| p.outcome.clone()).collect();
    assert_eq!(approved(&outcomes), 16, "{outcomes:?}");
    let first = &outcomes[0];
    assert!(outcomes.iter().all(|o| o == first), "{outcomes:?}");
    // One charged, the other 15 got its answer replayed.
    assert_eq!(paid.iter().filter(|p| !p.replayed).count(), 1, "{paid:?}");
    assert_eq!(db.count("payments"), 1);
    assert_ledger_matches(&store, "alice", 10_000 - 250);

    // Later retries with the same password still get the first answer, marked replayed.
    let again = paid_with(&store, &issued.password, 250, "order-42").unwrap();
    assert_eq!(&again.outcome, first);
    assert!(again.replayed);
    // The long-term password is another credential: the key is not its to replay.
    mismatch(paid_with(&store, PASSWORD, 250, "order-42"));
    // The same key for another amount is refused.
    assert!(matches!(
        pay_at(&store, "alice", &issued.password, 300, Some("order-42"), T0),
        Err(PayError::IdempotencyMismatch)
    ));
    // A wrong password never reaches the stored answer.
    declined(
        &pay_at(
            &store,
            "alice",
            "WRONG-WRON-GWRO-NGWR",
            250,
            Some("order-42"),
            T0,
        )
        .unwrap(),
        DeclineReason::InvalidCredentials,
    );
    assert_ledger_matches(&store, "alice", 10_000 - 250);
}

/// An idempotency key's answer belongs to the credential that paid (issue 12 item 8):
/// another temporary password, an exhausted one, or a temporary password replaying the
/// long-term password's key gets 422 and nothing of the first payment.
fn scenario_idempotency_bound_to_payer(db: &TestDb) {
    let store = open(db);
    account(&store, "alice", 10_000);
    let once = || Conditions {
        max_uses: Some(1),
        ..Conditions::default()
    };
    let a_issued = issue(&store, "alice", Conditions::default());
    let b_issued = issue(&store, "alice", once());
    let (a, b) = (&a_issued.password, &b_issued.password);
    let c = &issue(&store, "alice", once()).password;

    // A pays; A's retry is a replay.
    let first = paid_with(&store, a, 250, "order-1").unwrap();
    assert!(first.outcome.is_approved() && !first.replayed, "{first:?}");
    let again = paid_with(&store, a, 250, "order-1").unwrap();
    assert_eq!(again.outcome, first.outcome);
    assert!(again.replayed);

    // B with A's key: refused, B not charged, A's payment unchanged.
    mismatch(paid_with(&store, b, 250, "order-1"));
    assert_eq!(db.count("payments"), 1);
    assert_eq!(
        db.query_i64(&format!(
            "SELECT COUNT(*) AS n FROM payments WHERE idempotency_key = 'order-1' \
             AND status = 'approved' AND amount = 250 AND temp_password_id = {}",
            a_issued.summary.id
        )),
        1
    );
    let list = temp_passwords::list(&store, Owner::Authenticated("alice"), T0).unwrap();
    let b_row = list.iter().find(|t| t.id == b_issued.summary.id).unwrap();
    assert_eq!((b_row.uses, b_row.spent), (0, 0));
    assert_ledger_matches(&store, "alice", 10_000 - 250);

    // B pays once and is exhausted; its own key still replays its own answers.
    let b_paid = paid_with(&store, b, 100, "b-1").unwrap();
    assert!(matches!(
        b_paid.outcome,
        PayOutcome::Approved {
            remaining_uses: Some(0),
            ..
        }
    ));
    let b_declined = paid_with(&store, b, 100, "b-2").unwrap();
    declined(&b_declined.outcome, DeclineReason::UsesExhausted);
    assert!(!b_declined.replayed);
    for (key, answer) in [("b-1", &b_paid), ("b-2", &b_declined)] {
        let replay = paid_with(&store, b, 100, key).unwrap();
        assert_eq!(replay.outcome, answer.outcome, "{key}");
        assert!(replay.replayed, "{key}");
    }
    // A different exhausted password with those keys (or A's): refused.
    assert!(paid_with(&store, c, 100, "c-1")
        .unwrap()
        .outcome
        .is_approved());
    for (key, amount) in [("b-1", 100), ("b-2", 100), ("order-1", 250)] {
        mismatch(paid_with(&store, c, amount, key));
    }
    assert_ledger_matches(&store, "alice", 10_000 - 250 - 100 - 100);

    // The long-term password's key: a temporary password gets 422, never the balance.
    let owner = paid_with(&store, PASSWORD, 300, "lt-1").unwrap();
    assert!(matches!(
        owner.outcome,
        PayOutcome::Approved {
            balance: Some(9_250),
            ..
        }
    ));
    mismatch(paid_with(&store, a, 300, "lt-1"));
    let replay = paid_with(&store, PASSWORD, 300, "lt-1").unwrap();
    assert_eq!(replay.outcome, owner.outcome);
    assert!(replay.replayed);
    assert_ledger_matches(&store, "alice", 10_000 - 250 - 100 - 100 - 300);
    assert_eq!(db.count("payments"), 5);

    // Rows stored before the fingerprint named the credential (sha256 of
    // `account|amount|currency`) replay only for the credential in `temp_password_id`.
    let account_id = db.query_i64("SELECT id AS n FROM accounts WHERE username = 'alice'");
    let legacy = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(format!("{account_id}|250|CNY")))
    };
    let changed = db.execute(&format!(
        "UPDATE payments SET fingerprint = '{legacy}' WHERE idempotency_key = 'order-1'"
    ));
    assert_eq!(changed, 1);
    let replay = paid_with(&store, a, 250, "order-1").unwrap();
    assert_eq!((replay.outcome, replay.replayed), (first.outcome, true));
    mismatch(paid_with(&store, b, 250, "order-1"));
    mismatch(paid_with(&store, PASSWORD, 250, "order-1"));
}

// ---------------------------------------------------------------------------------------
// Every decline reason, time conditions with the injected clock
// ---------------------------------------------------------------------------------------

fn scenario_every_decline_reason(db: &TestDb) {
    let store = open(db);
    account(&store, "alice", 10_000);
    let mut seen = std::collections::BTreeSet::new();
    let mut check = |outcome: PayOutcome, reason: DeclineReason| {
        declined(&outcome, reason);
        seen.insert(reason.as_str());
    };

    // A window from T0+1h to T0+2h.
    let window = issue(
        &store,
        "alice",
        Conditions {
            label: Some("window".into()),
            valid_from: Some(T0 + HOUR),
            valid_until: Some(T0 + 2 * HOUR),
            ..Conditions::default()
        },
    );
    let at = |now| pay_at(&store, "alice", &window.password, 100, None, now).unwrap();
    check(at(T0), DeclineReason::NotYetValid);
    check(at(T0 + HOUR - 1), DeclineReason::NotYetValid);
    assert!(at(T0 + HOUR).is_approved());
    assert!(at(T0 + 2 * HOUR - 1).is_approved());
    check(at(T0 + 2 * HOUR), DeclineReason::Expired);

    let limited = issue(
        &store,
        "alice",
        Conditions {
            max_uses: Some(2),
            spend_limit: Some(500),
            per_payment_limit: Some(300),
            ..Conditions::default()
        },
    );
    // Lower case and spaces are accepted for the typed password.
    let typed = limited.password.to_lowercase().replace('-', " ");
    check(
        pay(&store, "alice", &typed, 301),
        DeclineReason::PerPaymentLimitExceeded,
    );
    assert!(pay(&store, "alice", &typed, 300).is_approved());
    check(
        pay(&store, "alice", &limited.password, 201),
        DeclineReason::LimitExceeded,
    );
    match pay(&store, "alice", &limited.password, 200) {
        PayOutcome::Approved {
            remaining_uses,
            remaining_limit,
            ..
        } => assert_eq!((remaining_uses, remaining_limit), (Some(0), Some(0))),
        other => panic!("{other:?}"),
    }
    check(
        pay(&store, "alice", &limited.password, 1),
        DeclineReason::UsesExhausted,
    );

    let open_ended = issue(&store, "alice", Conditions::default());
    let id = open_ended.summary.id;
    temp_passwords::pause(&store, Owner::Authenticated("alice"), id, T0).unwrap();
    check(
        pay(&store, "alice", &open_ended.password, 100),
        DeclineReason::Paused,
    );
    temp_passwords::resume(&store, Owner::Authenticated("alice"), id, T0).unwrap();
    check(
        pay(&store, "alice", &open_ended.password, 1_000_000),
        DeclineReason::InsufficientBalance,
    );
    assert!(pay(&store, "alice", &open_ended.password, 100).is_approved());
    temp_passwords::revoke(
        &store,
        Owner::Password {
            username: "alice",
            password: PASSWORD,
        },
        id,
        T0,
    )
    .unwrap();
    check(
        pay(&store, "alice", &open_ended.password, 100),
        DeclineReason::Revoked,
    );

    // Wrong password, unknown user, another account's temporary password.
    check(
        pay(&store, "alice", "not the password", 100),
        DeclineReason::InvalidCredentials,
    );
    check(
        pay(&store, "nobody", &open_ended.password, 100),
        DeclineReason::InvalidCredentials,
    );
    account(&store, "bob", 1000);
    check(
        pay(&store, "bob", &limited.password, 100),
        DeclineReason::InvalidCredentials,
    );
    assert_eq!(
        db.query_i64("SELECT failed_logins AS n FROM accounts WHERE username = 'alice'"),
        1
    );

    // The long-term password pays (and shows the balance), unless switched off.
    match pay(&store, "alice", PASSWORD, 100) {
        PayOutcome::Approved {
            balance,
            remaining_uses,
            ..
        } => {
            assert_eq!(balance, Some(10_000 - 100 - 100 - 300 - 200 - 100 - 100));
            assert_eq!(remaining_uses, None);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        db.query_i64("SELECT failed_logins AS n FROM accounts WHERE username = 'alice'"),
        0,
        "a right long-term password resets the count"
    );
    let strict = PaySettings {
        allow_long_term: false,
        server_key: &KEY,
    };
    let request = PayRequest {
        username: "alice",
        password: PASSWORD,
        amount: 100,
        currency: Some("CNY"),
        idempotency_key: None,
        client_ip: None,
    };
    check(
        payments::pay(&store, &request, &strict, T0)
            .unwrap()
            .outcome,
        DeclineReason::InvalidCredentials,
    );

    // Malformed requests are errors, not declines.
    let usd = PayRequest {
        currency: Some("USD"),
        ..request.clone()
    };
    assert!(matches!(
        payments::pay(&store, &usd, &PaySettings::new(&KEY), T0),
        Err(PayError::Invalid(_))
    ));
    assert!(matches!(
        pay_at(&store, "alice", PASSWORD, 0, None, T0),
        Err(PayError::Invalid(_))
    ));
    assert!(matches!(
        pay_at(&store, "alice", PASSWORD, -5, None, T0),
        Err(PayError::Invalid(_))
    ));

    // A different server key recognises no temporary password.
    let other_key = PaySettings {
        allow_long_term: true,
        server_key: &[9; 32],
    };
    let with_other_key = PayRequest {
        password: &window.password,
        currency: None,
        ..request.clone()
    };
    declined(
        &payments::pay(&store, &with_other_key, &other_key, T0 + HOUR)
            .unwrap()
            .outcome,
        DeclineReason::InvalidCredentials,
    );

    let all: Vec<&str> = DeclineReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(seen.into_iter().collect::<Vec<_>>().len(), all.len());
    assert_ledger_matches(&store, "alice", 10_000 - 100 - 100 - 300 - 200 - 100 - 100);
    assert_ledger_matches(&store, "bob", 1000);
    // Nothing in the audit trail holds a password.
    for secret in [
        PASSWORD,
        window.password.as_str(),
        limited.password.as_str(),
    ] {
        assert_eq!(
            db.query_i64(&format!(
                "SELECT COUNT(*) AS n FROM audit_events WHERE detail LIKE '%{secret}%'"
            )),
            0
        );
    }
    assert!(db.audit_count("temp_password_issue") >= 3);
}

// ---------------------------------------------------------------------------------------
// Issuing and managing
// ---------------------------------------------------------------------------------------

fn scenario_manage(db: &TestDb) {
    let store = open(db);
    account(&store, "alice", 5000);

    // The long-term password is checked; a wrong one (or an unknown user) is refused
    // with the same generic error and counts toward the lockout.
    for (user, password) in [("alice", "wrong password"), ("nobody", PASSWORD)] {
        let err = temp_passwords::issue(&store, user, password, Conditions::default(), &KEY, T0)
            .unwrap_err();
        assert!(
            matches!(err, TempPasswordError::InvalidCredentials),
            "{err}"
        );
        assert_eq!(err.to_string(), "invalid username or password");
    }
    assert_eq!(
        db.query_i64("SELECT failed_logins AS n FROM accounts WHERE username = 'alice'"),
        1
    );
    // Conditions that could never pay are refused.
    let bad = temp_passwords::issue(
        &store,
        "alice",
        PASSWORD,
        Conditions {
            valid_until: Some(T0 - 1),
            ..Conditions::default()
        },
        &KEY,
        T0,
    );
    assert!(matches!(bad, Err(TempPasswordError::InvalidConditions(_))));

    let issued = issue(
        &store,
        "Alice",
        Conditions {
            label: Some("  for Bob ".into()),
            max_uses: Some(3),
            spend_limit: Some(1000),
            valid_until: Some(T0 + HOUR),
            ..Conditions::default()
        },
    );
    assert_eq!(issued.password.len(), 19);
    assert_ne!(issued.password, PASSWORD);
    assert_eq!(issued.summary.label.as_deref(), Some("for Bob"));
    // Stored only as the keyed hash.
    let canonical = temp_passwords::canonical(&issued.password).unwrap();
    let hash = temp_passwords::secret_hash(&KEY, &canonical);
    assert_eq!(
        db.query_i64(&format!(
            "SELECT COUNT(*) AS n FROM temp_passwords WHERE secret_hash = '{hash}'"
        )),
        1
    );

    assert!(pay(&store, "alice", &issued.password, 400).is_approved());
    let list = temp_passwords::list(&store, Owner::Authenticated("alice"), T0).unwrap();
    assert_eq!(list.len(), 1);
    let s = &list[0];
    assert_eq!(
        (s.uses, s.remaining_uses, s.spent, s.remaining_limit),
        (1, Some(2), 400, Some(600))
    );
    assert_eq!((s.state.as_str(), s.status.as_str()), ("active", "usable"));
    let later = temp_passwords::list(&store, Owner::Authenticated("alice"), T0 + HOUR).unwrap();
    assert_eq!(later[0].status, "expired");
    // The owner by password; a wrong password is refused.
    assert!(matches!(
        temp_passwords::list(
            &store,
            Owner::Password {
                username: "alice",
                password: "nope nope"
            },
            T0
        ),
        Err(TempPasswordError::InvalidCredentials)
    ));

    let id = issued.summary.id;
    let owner = Owner::Authenticated("alice");
    assert_eq!(
        temp_passwords::pause(&store, owner, id, T0).unwrap().state,
        "paused"
    );
    assert!(matches!(
        temp_passwords::pause(&store, owner, id, T0),
        Err(TempPasswordError::WrongState { .. })
    ));
    assert_eq!(
        temp_passwords::resume(&store, owner, id, T0).unwrap().state,
        "active"
    );
    // Another account cannot touch it.
    account(&store, "bob", 0);
    assert!(matches!(
        temp_passwords::revoke(&store, Owner::Authenticated("bob"), id, T0),
        Err(TempPasswordError::NotFound { .. })
    ));

    // Changing the long-term password revokes them all.
    let second = issue(&store, "alice", Conditions::default());
    accounts::set_password(&store, "alice", &passwords::hash("a brand new password")).unwrap();
    let list = temp_passwords::list(&store, owner, T0).unwrap();
    assert!(list.iter().all(|s| s.state == "revoked"), "{list:?}");
    declined(
        &pay(&store, "alice", &second.password, 100),
        DeclineReason::Revoked,
    );
    assert!(matches!(
        temp_passwords::resume(&store, owner, id, T0),
        Err(TempPasswordError::WrongState { .. })
    ));

    // Top-ups: positive amounts only; the ledger follows the balance.
    assert!(payments::top_up(&store, "alice", 0, None, T0).is_err());
    assert!(payments::top_up(&store, "nobody", 10, None, T0).is_err());
    let b = payments::top_up(&store, "alice", 250, Some("cash"), T0).unwrap();
    assert_eq!(b.balance, 5000 - 400 + 250);
    assert_eq!(b.recent[0].kind, "top_up");
    assert_eq!(b.recent[0].note.as_deref(), Some("cash"));
    assert_eq!(b.recent[1].kind, "payment");
    assert_eq!(b.recent[1].amount, -400);
    assert_ledger_matches(&store, "alice", 4850);
}

// ---------------------------------------------------------------------------------------
// The commands
// ---------------------------------------------------------------------------------------

/// `pay --username alice --amount <amount> [extra...] --password-stdin`.
fn pay_args<'a>(amount: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["pay", "--username", "alice", "--amount", amount];
    args.extend_from_slice(extra);
    args.push("--password-stdin");
    args
}

/// `temp-password issue --username alice [extra...] --password-stdin`.
fn issue_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["temp-password", "issue", "--username", "alice"];
    args.extend_from_slice(extra);
    args.push("--password-stdin");
    args
}

fn scenario_cli(db: &TestDb) {
    let data = db.scratch_dir();
    let data_dir = data.path().to_str().unwrap().to_string();
    let cli = |args: &[&str], stdin: Option<&str>| -> Output {
        let mut cmd = db.cmd();
        cmd.args(["--data-dir", &data_dir]).args(args);
        if let Some(input) = stdin {
            cmd.write_stdin(format!("{input}\n"));
        }
        cmd.output().unwrap()
    };
    let json = |args: &[&str], stdin: Option<&str>, code: i32| -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = cli(&all, stdin);
        expect(&out, code, "");
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: invalid JSON ({e}): {}", stdout(&out)))
    };

    let out = cli(
        &[
            "enroll",
            "--username",
            "alice",
            "--phone",
            "+8613800138000",
            "--name",
            "Alice",
            "--password-stdin",
        ],
        Some(PASSWORD),
    );
    expect(&out, 0, "enrolled");

    // Top-up and show.
    let out = cli(
        &[
            "balance",
            "top-up",
            "--username",
            "alice",
            "--amount",
            "12.50",
            "--note",
            "cash",
        ],
        None,
    );
    expect(&out, 0, "alice: balance 12.50 CNY");
    for (bad, why) in [
        ("1.234", "more than two decimals"),
        ("-3", "negative"),
        ("abc", "not a number"),
        ("0", "more than 0"),
    ] {
        let out = cli(
            &["balance", "top-up", "--username", "alice", "--amount", bad],
            None,
        );
        expect(&out, 1, why);
        assert_eq!(stdout(&out), "");
    }
    let out = cli(
        &["balance", "top-up", "--username", "nobody", "--amount", "1"],
        None,
    );
    expect(&out, 1, "no account named");
    let shown = json(&["balance", "show", "--username", "alice"], None, 0);
    assert_eq!(shown["balance"], 1250);
    assert_eq!(shown["currency"], "CNY");

    // Issue: wrong password, then right.
    let out = cli(&issue_args(&[]), Some("wrong password"));
    expect(&out, 1, "invalid username or password");
    let out = cli(
        &issue_args(&[
            "--valid-for",
            "2h",
            "--max-uses",
            "2",
            "--spend-limit",
            "10.00",
            "--per-payment-limit",
            "6",
            "--label",
            "for Bob",
        ]),
        Some(PASSWORD),
    );
    expect(&out, 0, "temporary password for alice (shown only now): ");
    let printed = stdout(&out);
    assert!(printed.contains("uses: 0 of 2 (2 left)"), "{printed}");
    assert!(
        printed.contains("spent: 0.00 of 10.00 (10.00 left)"),
        "{printed}"
    );
    assert!(printed.contains("per payment: at most 6.00"), "{printed}");
    let key_file = data.path().join("temp-password.key");
    assert!(key_file.exists(), "the key file is created on first use");
    let issued = json(
        &issue_args(&["--valid-until", "2099-01-01T00:00:00Z"]),
        Some(PASSWORD),
        0,
    );
    let temp = issued["password"].as_str().unwrap().to_string();
    let id = issued["id"].as_i64().unwrap();
    assert_eq!(issued["valid_until_ms"], 4_070_908_800_000i64);
    let out = cli(&issue_args(&["--valid-until", "tomorrow"]), Some(PASSWORD));
    expect(&out, 1, "RFC 3339");

    // List, pause, pay declined, resume, pay approved (with retry), revoke.
    let list = json(&["temp-password", "list", "--username", "alice"], None, 0);
    assert_eq!(list.as_array().unwrap().len(), 2);
    let id_s = id.to_string();
    let manage = |action: &str| {
        cli(
            &["temp-password", action, "--username", "alice", &id_s],
            None,
        )
    };
    expect(&manage("pause"), 0, "paused");
    let out = cli(&pay_args("2.00", &[]), Some(&temp));
    expect(&out, 1, "declined: paused");
    expect(&manage("resume"), 0, "resumed");
    let paid = json(
        &pay_args("2.00", &["--idempotency-key", "k1"]),
        Some(&temp),
        0,
    );
    assert_eq!(paid["status"], "approved");
    assert_eq!(paid["amount"], 200);
    assert!(paid.get("replayed").is_none(), "{paid}");
    let mut again = json(
        &pay_args("2.00", &["--idempotency-key", "k1"]),
        Some(&temp),
        0,
    );
    assert_eq!(again["replayed"], true);
    again.as_object_mut().unwrap().remove("replayed");
    assert_eq!(again, paid);
    let out = cli(&pay_args("2.00", &["--idempotency-key", "k1"]), Some(&temp));
    expect(
        &out,
        0,
        "replayed: the first answer to this idempotency key",
    );
    // The long-term password did not pay with k1: refused, not replayed.
    let out = cli(
        &pay_args("2.00", &["--idempotency-key", "k1"]),
        Some(PASSWORD),
    );
    expect(&out, 1, "idempotency key was already used");
    let out = cli(&pay_args("3.00", &["--idempotency-key", "k1"]), Some(&temp));
    expect(&out, 1, "idempotency key was already used");
    let declined = json(&pay_args("20.00", &[]), Some(&temp), 1);
    assert_eq!(declined["status"], "declined");
    assert_eq!(declined["reason"], "insufficient_balance");
    // The long-term password pays too, unless --temporary-only.
    let out = cli(&pay_args("1", &[]), Some(PASSWORD));
    expect(&out, 0, "balance: 9.50");
    let out = cli(&pay_args("1", &["--temporary-only"]), Some(PASSWORD));
    expect(&out, 1, "invalid_credentials");
    expect(&manage("revoke"), 0, "revoked");
    expect(&manage("revoke"), 1, "is revoked");
    let out = cli(&pay_args("1", &[]), Some(&temp));
    expect(&out, 1, "declined: revoked");
    let out = cli(&["temp-password", "list", "--username", "alice"], None);
    expect(&out, 0, &format!("#{id} revoked"));

    let shown = json(&["balance", "show", "--username", "alice"], None, 0);
    assert_eq!(shown["balance"], 1250 - 200 - 100);
    let store = open(db);
    assert_ledger_matches(&store, "alice", 950);
}
