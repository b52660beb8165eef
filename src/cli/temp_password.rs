//! `dialgate temp-password`: issue, list, pause, resume and revoke the temporary
//! passwords of an account. Issuing asks for the account's long-term password; managing
//! is the operator's (already trusted) job and asks for none.

use clap::{Args, Subcommand};

use super::{serve::ServeOptions, Failure, GlobalArgs};
use crate::{
    auth::{
        payments::{format_amount, parse_amount, PaymentError},
        temp_passwords::{self, Conditions, Owner, TempPasswordError, TempPasswordSummary},
    },
    config::Config,
    store::now_ms,
    time,
};

#[derive(Debug, Args)]
pub struct TempPasswordArgs {
    #[command(subcommand)]
    pub action: Action,
}

/// The key temporary passwords are hashed with. Every node must use the same one.
#[derive(Debug, Args, Clone, Default)]
pub struct KeyArgs {
    /// The server key for temporary passwords, hex (at least 16 bytes). Default: the
    /// config file's `[serve] temp_password_key`, else the key in
    /// <data dir>/temp-password.key, created on first use. Nodes sharing a database
    /// must share this key.
    #[arg(long, env = "DIALGATE_TEMP_PASSWORD_KEY", hide_env_values = true)]
    pub temp_password_key: Option<String>,
}

impl KeyArgs {
    /// The key `serve` uses too: the flag or variable, else `[serve] temp_password_key`,
    /// else the data directory's key file.
    pub fn load(&self, config: &Config) -> Result<Vec<u8>, Failure> {
        let hex = match &self.temp_password_key {
            Some(hex) => Some(hex.clone()),
            None => match &config.file {
                None => None,
                Some(file) => file
                    .table::<ServeOptions>("serve", &[])
                    .map_err(|e| Failure::User(e.into()))?
                    .and_then(|serve| serve.temp_password_key),
            },
        };
        load_key(hex.as_deref(), config)
    }
}

/// The key given in hex, else the one in the data directory (created on first use).
pub fn load_key(hex: Option<&str>, config: &Config) -> Result<Vec<u8>, Failure> {
    match hex {
        Some(hex) => temp_passwords::parse_key(hex, "--temp-password-key".as_ref())
            .map_err(|e| Failure::User(e.into())),
        None => {
            let path = config.data_dir.join("temp-password.key");
            temp_passwords::load_or_create_key(&path).map_err(|e| {
                Failure::System(anyhow::anyhow!(
                    "cannot read or create the temporary-password key {}: {e}",
                    path.display()
                ))
            })
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Action {
    /// Issue a temporary password (asks for the account's long-term password).
    Issue {
        #[arg(long)]
        username: String,
        /// Valid for this long from now, e.g. 2h, 30min, 7days.
        #[arg(long, value_name = "DURATION", conflicts_with = "valid_until")]
        valid_for: Option<String>,
        /// Valid from this time (RFC 3339 in UTC, e.g. 2026-12-01T09:00:00Z).
        #[arg(long, value_name = "TIME")]
        valid_from: Option<String>,
        /// Valid until this time (RFC 3339 in UTC, e.g. 2026-12-01T18:00:00Z).
        #[arg(long, value_name = "TIME")]
        valid_until: Option<String>,
        /// How many payments it may make.
        #[arg(long, value_name = "N")]
        max_uses: Option<i32>,
        /// The most it may spend in total, e.g. 50.00.
        #[arg(long, value_name = "AMOUNT", allow_hyphen_values = true)]
        spend_limit: Option<String>,
        /// The most one payment may be, e.g. 20.00.
        #[arg(long, value_name = "AMOUNT", allow_hyphen_values = true)]
        per_payment_limit: Option<String>,
        /// A name for it, e.g. who it is for.
        #[arg(long)]
        label: Option<String>,
        /// Read the long-term password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// The account's temporary passwords with uses and limit left, validity and state.
    List {
        #[arg(long)]
        username: String,
    },
    /// Decline payments with it until resumed.
    Pause {
        #[arg(long)]
        username: String,
        id: i64,
    },
    /// Accept payments with a paused one again.
    Resume {
        #[arg(long)]
        username: String,
        id: i64,
    },
    /// Revoke it for good.
    Revoke {
        #[arg(long)]
        username: String,
        id: i64,
    },
}

pub(crate) fn tp_failure(e: TempPasswordError) -> Failure {
    if e.is_user_error() {
        Failure::User(e.into())
    } else {
        Failure::System(e.into())
    }
}

pub(crate) fn payment_failure(e: PaymentError) -> Failure {
    if e.is_user_error() {
        Failure::User(e.into())
    } else {
        Failure::System(e.into())
    }
}

/// Reads a password once: a line from stdin with --password-stdin, else from the
/// terminal without echo.
pub(crate) fn read_secret(from_stdin: bool, prompt: &str) -> Result<String, Failure> {
    use std::io::IsTerminal;
    if from_stdin {
        return super::read_password(true);
    }
    if !std::io::stdin().is_terminal() {
        return Err(Failure::User(anyhow::anyhow!(
            "no terminal to read the password from: use --password-stdin"
        )));
    }
    rpassword::prompt_password(prompt)
        .map_err(|e| Failure::System(anyhow::anyhow!("reading the password: {e}")))
}

fn parse_time(flag: &str, text: &str) -> Result<i64, Failure> {
    time::parse_rfc3339(text).map_err(|e| Failure::User(anyhow::anyhow!("--{flag} {text:?}: {e}")))
}

fn parse_money(flag: &str, text: &str) -> Result<i64, Failure> {
    parse_amount(text).map_err(|e| Failure::User(anyhow::anyhow!("--{flag}: {e}")))
}

/// The end of validity `--valid-for` gives from `start`; one past the year 9999 (which
/// `format_time` cannot print) is refused.
fn valid_for_end(text: &str, start: i64) -> Result<i64, Failure> {
    let d = humantime::parse_duration(text.trim()).map_err(|e| {
        Failure::User(anyhow::anyhow!(
            "--valid-for {text:?}: {e}; write it like 2h, 30min or 7days"
        ))
    })?;
    time::checked_end(start, d).ok_or_else(|| {
        Failure::User(anyhow::anyhow!(
            "--valid-for {text:?} ends after the year 9999"
        ))
    })
}

/// A time for people: `2026-12-01T18:00:00Z`.
pub(crate) use crate::time::format_rfc3339 as format_time;

/// One temporary password in a few human lines.
pub fn describe(s: &TempPasswordSummary) -> String {
    let mut text = format!("#{} {}", s.id, s.status);
    if let Some(label) = &s.label {
        text.push_str(&format!(" \"{label}\""));
    }
    let window = match (s.valid_from_ms, s.valid_until_ms) {
        (None, None) => "no time limit".to_string(),
        (Some(f), None) => format!("from {}", format_time(f)),
        (None, Some(u)) => format!("until {}", format_time(u)),
        (Some(f), Some(u)) => format!("from {} until {}", format_time(f), format_time(u)),
    };
    text.push_str(&format!("\n  valid: {window}"));
    text.push_str(&match (s.max_uses, s.remaining_uses) {
        (Some(max), Some(left)) => format!("\n  uses: {} of {max} ({left} left)", s.uses),
        _ => format!("\n  uses: {} (unlimited)", s.uses),
    });
    text.push_str(&match (s.spend_limit, s.remaining_limit) {
        (Some(limit), Some(left)) => format!(
            "\n  spent: {} of {} ({} left)",
            format_amount(s.spent),
            format_amount(limit),
            format_amount(left)
        ),
        _ => format!("\n  spent: {} (no limit)", format_amount(s.spent)),
    });
    if let Some(per) = s.per_payment_limit {
        text.push_str(&format!("\n  per payment: at most {}", format_amount(per)));
    }
    text
}

pub fn run(global: &GlobalArgs, args: TempPasswordArgs) -> Result<(), Failure> {
    let config = global.config()?;
    let now = now_ms();
    match args.action {
        Action::Issue {
            username,
            valid_for,
            valid_from,
            valid_until,
            max_uses,
            spend_limit,
            per_payment_limit,
            label,
            password_stdin,
            key,
        } => {
            let valid_from = valid_from
                .map(|t| parse_time("valid-from", &t))
                .transpose()?;
            let valid_until = match (valid_for, valid_until) {
                (Some(d), _) => Some(valid_for_end(&d, valid_from.unwrap_or(now).max(now))?),
                (None, Some(t)) => Some(parse_time("valid-until", &t)?),
                (None, None) => None,
            };
            let conditions = Conditions {
                label,
                valid_from,
                valid_until,
                max_uses,
                spend_limit: spend_limit
                    .map(|a| parse_money("spend-limit", &a))
                    .transpose()?,
                per_payment_limit: per_payment_limit
                    .map(|a| parse_money("per-payment-limit", &a))
                    .transpose()?,
            }
            .validated(now)
            .map_err(tp_failure)?;
            let server_key = key.load(&config)?;
            let password = read_secret(password_stdin, "Long-term password: ")?;
            let store = global.open_store(&config)?;
            let issued =
                temp_passwords::issue(&store, &username, &password, conditions, &server_key, now)
                    .map_err(tp_failure)?;
            global.emit(&issued, |i| {
                format!(
                    "temporary password for {} (shown only now): {}\n{}\n  currency: {}",
                    i.username,
                    i.password,
                    describe(&i.summary),
                    i.currency
                )
            });
        }
        Action::List { username } => {
            let store = global.open_store(&config)?;
            let all = temp_passwords::list(&store, Owner::Authenticated(&username), now)
                .map_err(tp_failure)?;
            global.emit(&all, |all| {
                if all.is_empty() {
                    format!("{} has no temporary passwords", username.trim())
                } else {
                    all.iter().map(describe).collect::<Vec<_>>().join("\n")
                }
            });
        }
        Action::Pause { username, id } => {
            manage(
                global,
                &config,
                &username,
                id,
                now,
                temp_passwords::pause,
                "paused",
            )?;
        }
        Action::Resume { username, id } => {
            manage(
                global,
                &config,
                &username,
                id,
                now,
                temp_passwords::resume,
                "resumed",
            )?;
        }
        Action::Revoke { username, id } => {
            manage(
                global,
                &config,
                &username,
                id,
                now,
                temp_passwords::revoke,
                "revoked",
            )?;
        }
    }
    Ok(())
}

type Transition =
    fn(&crate::store::Store, Owner<'_>, i64, i64) -> Result<TempPasswordSummary, TempPasswordError>;

fn manage(
    global: &GlobalArgs,
    config: &Config,
    username: &str,
    id: i64,
    now: i64,
    transition: Transition,
    done: &str,
) -> Result<(), Failure> {
    let store = global.open_store(config)?;
    let summary =
        transition(&store, Owner::Authenticated(username), id, now).map_err(tp_failure)?;
    global.emit(&summary, |s| format!("{done} {}", describe(s)));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bug `fuzz/http_json` found in the HTTP API, on the CLI's `--valid-for`: the
    /// end was computed unchecked and panicked when printed past the year 9999.
    #[test]
    fn valid_for_past_year_9999_is_refused() {
        let now = 1_795_910_400_000;
        assert_eq!(valid_for_end("2h", now).unwrap(), now + 7_200_000);
        assert_eq!(
            format_time(valid_for_end("2h", now).unwrap()),
            "2026-11-29T02:00:00Z"
        );
        for far in ["10000years", "300000000years", "18446744073709551615s"] {
            assert!(valid_for_end(far, now).is_err(), "{far} accepted");
        }
    }
}
