//! The audit trail: who did what, with which outcome and why. Never passwords, tokens
//! or document contents.

use diesel::{prelude::*, result::Error as DieselError};

use crate::store::{models::NewAuditEvent, now_ms, schema::audit_events, DbConnection};

/// One audit row being built.
#[derive(Debug, Default)]
pub struct Event<'a> {
    row: NewAuditEvent<'a>,
}

impl<'a> Event<'a> {
    pub fn new(kind: &'a str, outcome: &'a str) -> Event<'a> {
        Event {
            row: NewAuditEvent {
                at: now_ms(),
                kind,
                outcome,
                ..NewAuditEvent::default()
            },
        }
    }

    pub fn account(mut self, id: i64, username: &'a str) -> Self {
        self.row.account_id = Some(id);
        self.row.username = Some(username);
        self
    }

    pub fn username(mut self, username: &'a str) -> Self {
        self.row.username = Some(username);
        self
    }

    pub fn reason(mut self, reason: &'a str) -> Self {
        self.row.reason = Some(reason);
        self
    }

    pub fn client_ip(mut self, ip: &'a str) -> Self {
        self.row.client_ip = Some(ip);
        self
    }

    /// Structured detail (JSON), e.g. caller, channel and uniqueid of a call.
    pub fn detail(mut self, detail: serde_json::Value) -> Self {
        self.row.detail = Some(detail.to_string());
        self
    }
}

pub fn record(conn: &mut DbConnection, event: Event<'_>) -> Result<(), DieselError> {
    let row = event.row;
    // Every column bound (NULL included), not `.values(&row)`: diesel writes absent
    // options as DEFAULT, so the SQL varied with the event and was prepared anew each time.
    diesel::insert_into(audit_events::table)
        .values((
            audit_events::at.eq(row.at),
            audit_events::kind.eq(row.kind),
            audit_events::outcome.eq(row.outcome),
            audit_events::reason.eq(row.reason),
            audit_events::account_id.eq(row.account_id),
            audit_events::username.eq(row.username),
            audit_events::client_ip.eq(row.client_ip),
            audit_events::detail.eq(row.detail),
        ))
        .execute(conn)?;
    Ok(())
}
