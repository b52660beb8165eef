//! The command line: one file per subcommand.

pub mod accounts;
pub mod balance;
pub mod demo;
pub mod enroll;
pub mod import;
pub mod loadtest;
pub mod migrate;
pub mod pay;
pub mod replay;
pub mod serve;
pub mod simulate_call;
pub mod temp_password;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::{
    auth::accounts::AccountError,
    config::{Config, Given, GlobalOptions},
    store::{OpenOptions, Store},
};

#[derive(Debug, Parser)]
#[command(
    name = "dialgate",
    version,
    about = "A real phone line as a login factor (FastAGI/AMI server)"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand takes.
#[derive(Debug, Args, Clone)]
pub struct GlobalArgs {
    /// TOML configuration file; flags and DIALGATE_* variables override it.
    #[arg(long, global = true, env = "DIALGATE_CONFIG")]
    pub config: Option<PathBuf>,

    /// The settings the config file's top level has too.
    #[command(flatten)]
    pub options: Given<GlobalOptions>,

    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the FastAGI server and the HTTP gateway.
    Serve(Given<serve::ServeOptions>),
    /// Try dialgate now: a demo account, a fictional dial-in number, a simulated call.
    Demo(demo::DemoArgs),
    /// Play Asterisk's side of recorded AGI transcripts against a FastAGI server.
    Replay(replay::ReplayArgs),
    /// Enroll a user: username, password, phone, name, ID scan and photo.
    Enroll(enroll::EnrollArgs),
    /// List and manage enrolled accounts.
    Accounts(accounts::AccountsArgs),
    /// Enroll users in bulk from a CSV file.
    Import(import::ImportArgs),
    /// Apply pending database migrations.
    Migrate,
    /// Play Asterisk: place a simulated call to a FastAGI script and print the dialog.
    SimulateCall(simulate_call::SimulateCallArgs),
    /// Issue and manage temporary passwords for paying from an account.
    TempPassword(temp_password::TempPasswordArgs),
    /// Top up a stored-value account or show its balance.
    Balance(balance::BalanceArgs),
    /// Pay from an account with a temporary (or the long-term) password.
    Pay(pay::PayArgs),
    /// Measure calls per second, latency and memory against a FastAGI server.
    Loadtest(loadtest::LoadtestArgs),
}

/// How a command failed, for the process exit code.
#[derive(Debug)]
pub enum Failure {
    /// Something the user can fix (bad input, a divergence they asked us to find): exit 1.
    User(anyhow::Error),
    /// The system failed (cannot bind, database unreachable, I/O): exit 2.
    System(anyhow::Error),
}

impl Failure {
    pub fn exit_code(&self) -> i32 {
        match self {
            Failure::User(_) => 1,
            Failure::System(_) => 2,
        }
    }

    pub fn error(&self) -> &anyhow::Error {
        match self {
            Failure::User(e) | Failure::System(e) => e,
        }
    }
}

impl From<AccountError> for Failure {
    fn from(e: AccountError) -> Self {
        if e.is_user_error() {
            Failure::User(e.into())
        } else {
            Failure::System(e.into())
        }
    }
}

impl GlobalArgs {
    pub fn config(&self) -> Result<Config, Failure> {
        Config::load(self.options.clone(), self.config.as_deref()).map_err(|e| match e {
            crate::config::ConfigError::Read { .. } => Failure::System(e.into()),
            _ => Failure::User(e.into()),
        })
    }

    /// Opens the configured database (migrating it unless told not to).
    pub fn open_store(&self, config: &Config) -> Result<Store, Failure> {
        let options = OpenOptions {
            migrate: config.migrate_on_start,
            ..OpenOptions::default()
        };
        let store =
            Store::open(&config.database_url, &options).map_err(|e| Failure::System(e.into()))?;
        if !options.migrate {
            let pending = store
                .pending_migrations()
                .map_err(|e| Failure::System(e.into()))?;
            if !pending.is_empty() {
                return Err(Failure::System(anyhow::anyhow!(
                    "{} lacks migrations ({}) and --no-migrate is set: run `dialgate migrate` first",
                    config.database_url,
                    pending.join(", ")
                )));
            }
        }
        Ok(store)
    }

    /// Prints `value` as JSON with --json, else the human text.
    pub fn emit<T: Serialize>(&self, value: &T, human: impl FnOnce(&T) -> String) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(value).expect("serialisable output")
            );
        } else {
            println!("{}", human(value));
        }
    }
}

pub async fn run(cli: Cli) -> Result<(), Failure> {
    let global = cli.global;
    // Database work blocks: it runs off the async workers.
    let work: Box<dyn FnOnce() -> Result<(), Failure> + Send> = match cli.command {
        Command::Serve(args) => return serve::run(&global, args).await,
        Command::Demo(args) => return demo::run(&global, args).await,
        Command::Replay(args) => return replay::run(args).await,
        Command::SimulateCall(args) => return simulate_call::run(args).await,
        Command::Loadtest(args) => return loadtest::run(&global, args).await,
        Command::Enroll(args) => Box::new(move || enroll::run(&global, args)),
        Command::Accounts(args) => Box::new(move || accounts::run(&global, args)),
        Command::Import(args) => Box::new(move || import::run(&global, args)),
        Command::Migrate => Box::new(move || migrate::run(&global)),
        Command::TempPassword(args) => Box::new(move || temp_password::run(&global, args)),
        Command::Balance(args) => Box::new(move || balance::run(&global, args)),
        Command::Pay(args) => Box::new(move || pay::run(&global, args)),
    };
    off_runtime("command failed", work).await
}

/// Runs a command's blocking work (database, Argon2id) on tokio's blocking pool; a panic
/// there is a system failure, reported as `{what}: ...`.
pub(crate) async fn off_runtime<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure> {
    crate::rt::blocking(work)
        .await
        .unwrap_or_else(|e| Err(Failure::System(anyhow::anyhow!("{what}: {e}"))))
}

/// Reads a password: one line from stdin with --password-stdin, else twice from the
/// terminal without echo.
pub fn read_password(from_stdin: bool) -> Result<String, Failure> {
    use std::io::{BufRead, IsTerminal};
    if from_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map_err(|e| {
            Failure::System(anyhow::anyhow!("reading the password from stdin: {e}"))
        })?;
        let password = line.trim_end_matches(['\r', '\n']).to_string();
        if password.is_empty() {
            return Err(Failure::User(anyhow::anyhow!(
                "no password on stdin: pipe it in, e.g. `printf '%s\\n' \"$PASSWORD\" | dialgate ...`"
            )));
        }
        return Ok(password);
    }
    if !std::io::stdin().is_terminal() {
        return Err(Failure::User(anyhow::anyhow!(
            "no terminal to read the password from: use --password-stdin"
        )));
    }
    let first = rpassword::prompt_password("Password: ")
        .map_err(|e| Failure::System(anyhow::anyhow!("reading the password: {e}")))?;
    let second = rpassword::prompt_password("Repeat password: ")
        .map_err(|e| Failure::System(anyhow::anyhow!("reading the password: {e}")))?;
    if first != second {
        return Err(Failure::User(anyhow::anyhow!(
            "the two passwords differ; try again"
        )));
    }
    Ok(first)
}
