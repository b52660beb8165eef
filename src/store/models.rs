//! Row types. Times are Unix milliseconds, money is integer minor units.

use diesel::prelude::*;

use super::schema::{accounts, audit_events, identity_documents, phones};

#[derive(Debug, Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = accounts)]
pub struct Account {
    pub id: i64,
    pub username: String,
    pub password_hash: String,
    pub display_name: String,
    pub status: String,
    pub failed_logins: i32,
    pub locked_until: Option<i64>,
    pub balance: i64,
    pub currency: String,
    pub password_changed_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = accounts)]
pub struct NewAccount<'a> {
    pub username: &'a str,
    pub password_hash: &'a str,
    pub display_name: &'a str,
    pub status: &'a str,
    pub currency: &'a str,
    pub password_changed_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Queryable, Selectable, Identifiable, Associations)]
#[diesel(table_name = phones, belongs_to(Account))]
pub struct Phone {
    pub id: i64,
    pub account_id: i64,
    pub e164: String,
    pub created_at: i64,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = phones)]
pub struct NewPhone<'a> {
    pub account_id: i64,
    pub e164: &'a str,
    pub created_at: i64,
}

/// An identity document without its content (listing never loads the bytes).
#[derive(Debug, Clone, Queryable, Selectable, Identifiable, Associations)]
#[diesel(table_name = identity_documents, belongs_to(Account))]
pub struct DocumentInfo {
    pub id: i64,
    pub account_id: i64,
    pub kind: String,
    pub media_type: String,
    pub size_bytes: i64,
    pub sha256: String,
    pub created_at: i64,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = identity_documents)]
pub struct NewDocument<'a> {
    pub account_id: i64,
    pub kind: &'a str,
    pub media_type: &'a str,
    pub size_bytes: i64,
    pub sha256: &'a str,
    pub content: &'a [u8],
    pub created_at: i64,
}

#[derive(Debug, Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = audit_events)]
pub struct AuditEvent {
    pub id: i64,
    pub at: i64,
    pub kind: String,
    pub outcome: String,
    pub reason: Option<String>,
    pub account_id: Option<i64>,
    pub username: Option<String>,
    pub client_ip: Option<String>,
    pub detail: Option<String>,
}

#[derive(Debug, Default, Insertable)]
#[diesel(table_name = audit_events)]
pub struct NewAuditEvent<'a> {
    pub at: i64,
    pub kind: &'a str,
    pub outcome: &'a str,
    pub reason: Option<&'a str>,
    pub account_id: Option<i64>,
    pub username: Option<&'a str>,
    pub client_ip: Option<&'a str>,
    pub detail: Option<String>,
}
