//! `dialgate accounts`: list, show, disable, enable, set-phone, set-password, delete.

use clap::{Args, Subcommand};

use super::{enroll::describe, read_password, Failure, GlobalArgs};
use crate::auth::{
    accounts::{self, normalize_username, AccountError, Status},
    passwords,
};

#[derive(Debug, Args)]
pub struct AccountsArgs {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, Subcommand)]
pub enum Action {
    /// Every account, with phones and documents.
    List,
    /// One account.
    Show {
        username: String,
    },
    /// Refuse logins (and end open sessions) until enabled again.
    Disable {
        username: String,
    },
    Enable {
        username: String,
    },
    /// Replace the enrolled phone; pending logins for the old number are cancelled.
    SetPhone {
        username: String,
        phone: String,
    },
    /// Set a new password; temporary passwords and sessions are revoked.
    SetPassword {
        username: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Delete the account with its phones, documents and history.
    Delete {
        username: String,
    },
}

pub fn run(global: &GlobalArgs, args: AccountsArgs) -> Result<(), Failure> {
    let config = global.config()?;
    // Validate what the user typed before touching the database.
    let username = match &args.action {
        Action::List => None,
        Action::Show { username }
        | Action::Disable { username }
        | Action::Enable { username }
        | Action::SetPhone { username, .. }
        | Action::SetPassword { username, .. }
        | Action::Delete { username } => Some(normalize_username(username)?),
    };
    let username = username.as_deref().unwrap_or_default();
    let new_phone = match &args.action {
        Action::SetPhone { phone, .. } => Some(
            crate::phone::normalize(phone, config.default_region).map_err(AccountError::from)?,
        ),
        _ => None,
    };
    let new_password_hash = match &args.action {
        Action::SetPassword { password_stdin, .. } => {
            let password = read_password(*password_stdin)?;
            passwords::check_policy(username, &password).map_err(AccountError::from)?;
            Some(passwords::hash(&password))
        }
        _ => None,
    };
    let store = global.open_store(&config)?;
    let summary = match args.action {
        Action::List => {
            let all = accounts::list(&store)?;
            global.emit(&all, |all| {
                if all.is_empty() {
                    "no accounts enrolled".into()
                } else {
                    all.iter().map(describe).collect::<Vec<_>>().join("\n")
                }
            });
            return Ok(());
        }
        Action::Delete { .. } => {
            accounts::delete(&store, username)?;
            let report = serde_json::json!({ "deleted": username });
            global.emit(&report, |_| {
                format!("deleted {username} with its phones and documents")
            });
            return Ok(());
        }
        Action::Show { .. } => accounts::show(&store, username)?,
        Action::Disable { .. } => accounts::set_status(&store, username, Status::Disabled)?,
        Action::Enable { .. } => accounts::set_status(&store, username, Status::Active)?,
        Action::SetPhone { .. } => accounts::set_phone(
            &store,
            username,
            new_phone.as_ref().expect("normalised above"),
        )?,
        Action::SetPassword { .. } => accounts::set_password(
            &store,
            username,
            new_password_hash.as_deref().expect("hashed above"),
        )?,
    };
    global.emit(&summary, describe);
    Ok(())
}
