//! `dialgate pay`: pay from a stored-value account with a temporary password (or the
//! long-term one). A declined payment prints its reason and exits 1.

use clap::Args;

use super::{
    temp_password::{read_secret, KeyArgs},
    Failure, GlobalArgs,
};
use crate::{
    auth::payments::{
        self, format_amount, parse_amount, Paid, PayError, PayOutcome, PayRequest, PaySettings,
    },
    store::now_ms,
};

#[derive(Debug, Args)]
pub struct PayArgs {
    #[arg(long)]
    pub username: String,
    /// In major units, e.g. 12.50.
    #[arg(long, value_name = "AMOUNT", allow_hyphen_values = true)]
    pub amount: String,
    /// Must be the account's currency when given (e.g. CNY).
    #[arg(long)]
    pub currency: Option<String>,
    /// Retrying with the same key, password and amount returns the first answer (marked
    /// as a replay) and charges nothing twice; any other use of the key is refused.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    /// Refuse the account's long-term password: only temporary passwords pay.
    #[arg(long)]
    pub temporary_only: bool,
    /// Read the password (temporary or long-term) from the first line of standard input.
    #[arg(long)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub key: KeyArgs,
}

fn describe(paid: &Paid) -> String {
    let text = describe_outcome(&paid.outcome);
    if paid.replayed {
        format!("{text}\n  replayed: the first answer to this idempotency key; nothing charged now")
    } else {
        text
    }
}

fn describe_outcome(outcome: &PayOutcome) -> String {
    match outcome {
        PayOutcome::Approved {
            payment_id,
            amount,
            currency,
            remaining_uses,
            remaining_limit,
            balance,
        } => {
            let mut text = format!(
                "approved: payment #{payment_id}, {} {currency}",
                format_amount(*amount)
            );
            if let Some(n) = remaining_uses {
                text.push_str(&format!("\n  uses left: {n}"));
            }
            if let Some(left) = remaining_limit {
                text.push_str(&format!("\n  limit left: {}", format_amount(*left)));
            }
            if let Some(b) = balance {
                text.push_str(&format!("\n  balance: {}", format_amount(*b)));
            }
            text
        }
        PayOutcome::Declined { reason, payment_id } => match payment_id {
            Some(id) => format!("declined: {reason} (payment #{id})"),
            None => format!("declined: {reason}"),
        },
    }
}

pub fn run(global: &GlobalArgs, args: PayArgs) -> Result<(), Failure> {
    let config = global.config()?;
    let amount =
        parse_amount(&args.amount).map_err(|e| Failure::User(anyhow::anyhow!("--amount: {e}")))?;
    let server_key = args.key.load(&config)?;
    let password = read_secret(args.password_stdin, "Password: ")?;
    let store = global.open_store(&config)?;
    let request = PayRequest {
        username: &args.username,
        password: &password,
        amount,
        currency: args.currency.as_deref(),
        idempotency_key: args.idempotency_key.as_deref(),
        client_ip: None,
    };
    let settings = PaySettings {
        allow_long_term: !args.temporary_only,
        server_key: &server_key,
    };
    let paid = payments::pay(&store, &request, &settings, now_ms()).map_err(|e| match e {
        PayError::Store(_) => Failure::System(e.into()),
        _ => Failure::User(e.into()),
    })?;
    global.emit(&paid, describe);
    match paid.outcome.decline_reason() {
        Some(reason) => Err(Failure::User(anyhow::anyhow!("payment declined: {reason}"))),
        None => Ok(()),
    }
}
