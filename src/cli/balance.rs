//! `dialgate balance`: top up a stored-value account and show its balance and ledger.

use clap::{Args, Subcommand};

use super::{
    temp_password::{format_time, payment_failure},
    Failure, GlobalArgs,
};
use crate::{
    auth::payments::{self, format_amount, parse_amount, BalanceSummary},
    store::now_ms,
};

#[derive(Debug, Args)]
pub struct BalanceArgs {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, Subcommand)]
pub enum Action {
    /// Add money to the account (recorded in the ledger).
    TopUp {
        #[arg(long)]
        username: String,
        /// In major units, e.g. 12.50.
        #[arg(long, value_name = "AMOUNT", allow_hyphen_values = true)]
        amount: String,
        /// Why, for the ledger (e.g. a receipt number).
        #[arg(long)]
        note: Option<String>,
    },
    /// The balance and the latest ledger rows.
    Show {
        #[arg(long)]
        username: String,
    },
}

/// The balance and recent ledger rows for people.
pub fn describe(b: &BalanceSummary) -> String {
    let mut text = format!(
        "{}: balance {} {}",
        b.username,
        format_amount(b.balance),
        b.currency
    );
    for e in &b.recent {
        text.push_str(&format!(
            "\n  {} {:<7} {:>12} -> {}",
            format_time(e.created_at_ms),
            e.kind,
            format_amount(e.amount),
            format_amount(e.balance_after)
        ));
        if let Some(id) = e.payment_id {
            text.push_str(&format!("  payment #{id}"));
        }
        if let Some(note) = &e.note {
            text.push_str(&format!("  {note}"));
        }
    }
    text
}

pub fn run(global: &GlobalArgs, args: BalanceArgs) -> Result<(), Failure> {
    let config = global.config()?;
    let summary = match args.action {
        Action::TopUp {
            username,
            amount,
            note,
        } => {
            let amount = parse_amount(&amount)
                .map_err(|e| Failure::User(anyhow::anyhow!("--amount: {e}")))?;
            let store = global.open_store(&config)?;
            payments::top_up(&store, &username, amount, note.as_deref(), now_ms())
                .map_err(payment_failure)?
        }
        Action::Show { username } => {
            let store = global.open_store(&config)?;
            payments::balance(&store, &username).map_err(payment_failure)?
        }
    };
    global.emit(&summary, describe);
    Ok(())
}
