//! Diesel table definitions, shared by the MySQL and SQLite migrations.
// Written by hand to match both `migrations/*/up.sql`; the column types are the ones
// both backends map alike (BIGINT, INTEGER, TEXT, BLOB).

diesel::table! {
    accounts (id) {
        id -> BigInt,
        username -> Text,
        password_hash -> Text,
        display_name -> Text,
        status -> Text,
        failed_logins -> Integer,
        locked_until -> Nullable<BigInt>,
        balance -> BigInt,
        currency -> Text,
        password_changed_at -> BigInt,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    phones (id) {
        id -> BigInt,
        account_id -> BigInt,
        e164 -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    identity_documents (id) {
        id -> BigInt,
        account_id -> BigInt,
        kind -> Text,
        media_type -> Text,
        size_bytes -> BigInt,
        sha256 -> Text,
        content -> Binary,
        created_at -> BigInt,
    }
}

diesel::table! {
    login_challenges (id) {
        id -> Text,
        account_id -> BigInt,
        caller_e164 -> Text,
        dial_number -> Text,
        secret_hash -> Text,
        code_hash -> Nullable<Text>,
        status -> Text,
        failure_reason -> Nullable<Text>,
        node_url -> Nullable<Text>,
        attempts -> Integer,
        client_ip -> Nullable<Text>,
        created_at -> BigInt,
        expires_at -> BigInt,
        verified_at -> Nullable<BigInt>,
        consumed_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    sessions (id) {
        id -> BigInt,
        token_hash -> Text,
        account_id -> BigInt,
        challenge_id -> Nullable<Text>,
        client_ip -> Nullable<Text>,
        created_at -> BigInt,
        expires_at -> BigInt,
        revoked_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    temp_passwords (id) {
        id -> BigInt,
        account_id -> BigInt,
        label -> Nullable<Text>,
        secret_hash -> Text,
        status -> Text,
        valid_from -> Nullable<BigInt>,
        valid_until -> Nullable<BigInt>,
        max_uses -> Nullable<Integer>,
        uses -> Integer,
        spend_limit -> Nullable<BigInt>,
        spent -> BigInt,
        per_payment_limit -> Nullable<BigInt>,
        created_at -> BigInt,
        revoked_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    payments (id) {
        id -> BigInt,
        account_id -> BigInt,
        temp_password_id -> Nullable<BigInt>,
        amount -> BigInt,
        currency -> Text,
        status -> Text,
        reason -> Nullable<Text>,
        idempotency_key -> Nullable<Text>,
        fingerprint -> Nullable<Text>,
        response -> Nullable<Text>,
        created_at -> BigInt,
    }
}

diesel::table! {
    ledger_entries (id) {
        id -> BigInt,
        account_id -> BigInt,
        kind -> Text,
        amount -> BigInt,
        balance_after -> BigInt,
        payment_id -> Nullable<BigInt>,
        note -> Nullable<Text>,
        created_at -> BigInt,
    }
}

diesel::table! {
    audit_events (id) {
        id -> BigInt,
        at -> BigInt,
        kind -> Text,
        outcome -> Text,
        reason -> Nullable<Text>,
        account_id -> Nullable<BigInt>,
        username -> Nullable<Text>,
        client_ip -> Nullable<Text>,
        detail -> Nullable<Text>,
    }
}

diesel::joinable!(phones -> accounts (account_id));
diesel::joinable!(identity_documents -> accounts (account_id));
diesel::joinable!(login_challenges -> accounts (account_id));
diesel::joinable!(sessions -> accounts (account_id));
diesel::joinable!(temp_passwords -> accounts (account_id));
diesel::joinable!(payments -> accounts (account_id));
diesel::joinable!(ledger_entries -> accounts (account_id));

diesel::allow_tables_to_appear_in_same_query!(
    accounts,
    phones,
    identity_documents,
    login_challenges,
    sessions,
    temp_passwords,
    payments,
    ledger_entries,
    audit_events,
);
