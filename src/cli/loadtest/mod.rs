//! `dialgate loadtest`: measures a FastAGI server (dialgate or any other) and the
//! gateway under load. One file per subcommand:
//!
//! * `agi`: plays Asterisk over real TCP, N calls C at a time (optionally at a fixed
//!   rate); calls/s, latency percentiles, results, errors; `--hold` for concurrency.
//! * `prepare` (bench only, `prepare-challenges` and `login --prepare`): enrolled
//!   accounts and pending login challenges, so `verify` can be loaded with calls that
//!   succeed.
//! * `baseline` (hidden `baseline-server`): the protocol ceiling, a FastAGI responder
//!   that parses nothing and answers one canned line.
//! * `login`: the whole dial-in login per simulated user (HTTP login, SSE, the FastAGI
//!   verify call, the `verified` event, the session exchange).
//! * `payments`: concurrent payments on one temporary password.
//! * `argon2` (hidden): the raw Argon2id rate on every core, the ceiling of `login`.
//!
//! They share `report` (latency percentiles, tallies, merging the workers' stats) and
//! [`http`] (the HTTP/1.1 client and SSE reader, which the tests use too).

mod agi;
mod argon2;
mod baseline;
pub mod http;
mod login;
mod payments;
mod prepare;
mod report;

use std::{net::SocketAddr, time::Duration};

use anyhow::anyhow;
use clap::{Args, Subcommand};

pub use self::{
    agi::AgiLoadArgs, argon2::Argon2Args, baseline::BaselineArgs, login::LoginLoadArgs,
    payments::PaymentsLoadArgs, prepare::PrepareArgs,
};
use super::{Failure, GlobalArgs};

#[derive(Debug, Args)]
pub struct LoadtestArgs {
    #[command(subcommand)]
    pub command: LoadtestCommand,
}

#[derive(Debug, Subcommand)]
pub enum LoadtestCommand {
    /// Play Asterisk: place N calls to a FastAGI script, C at a time, and report calls/s,
    /// latency percentiles, results and errors.
    Agi(AgiLoadArgs),
    /// BENCH ONLY: enroll an account per caller (one Argon2 hash for all) and write COUNT
    /// pending login challenges straight into the database, so `loadtest agi --script
    /// verify` gets successful verifications. Never run it on a production database.
    PrepareChallenges(PrepareArgs),
    /// The protocol ceiling: a FastAGI responder that parses nothing (reads to the blank
    /// line, writes `SET VARIABLE DIALGATE_RESULT pong`, reads one line, closes).
    #[command(hide = true)]
    BaselineServer(BaselineArgs),
    /// The whole dial-in login per simulated user: POST /v1/login, the SSE stream, the
    /// FastAGI verify call from the user's phone, the `verified` event, POST
    /// /v1/login/{id}/session. Reports flows/s, latency per step and failures by step.
    Login(LoginLoadArgs),
    /// Concurrent POST /v1/payments on one temporary password, each with its own
    /// Idempotency-Key; reports approved/declined by reason, payments/s and latency.
    Payments(PaymentsLoadArgs),
    /// The raw Argon2id rate: hash (or verify) on every core for a while, report per second.
    #[command(hide = true)]
    Argon2(Argon2Args),
}

pub async fn run(global: &GlobalArgs, args: LoadtestArgs) -> Result<(), Failure> {
    match args.command {
        LoadtestCommand::Agi(args) => agi::run(global, args).await,
        LoadtestCommand::BaselineServer(args) => baseline::run(args).await,
        LoadtestCommand::Login(args) => login::run(global, args).await,
        LoadtestCommand::Payments(args) => payments::run(global, args).await,
        LoadtestCommand::Argon2(args) => {
            let global = global.clone();
            super::off_runtime("argon2", move || argon2::run(global, args)).await
        }
        LoadtestCommand::PrepareChallenges(args) => {
            let global = global.clone();
            super::off_runtime("preparing", move || prepare::run(&global, args)).await
        }
    }
}

fn user(message: String) -> Failure {
    Failure::User(anyhow!(message))
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    if let Ok(seconds) = text.parse::<f64>() {
        if seconds.is_finite() && seconds >= 0.0 {
            return Ok(Duration::from_secs_f64(seconds));
        }
    }
    humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e} (write e.g. 20 or 20s)"))
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct CallerRange {
    plus: bool,
    width: usize,
    first: u64,
    count: u64,
}

impl CallerRange {
    fn parse(text: &str) -> Result<CallerRange, String> {
        let bad =
            || format!("{text:?} is not a caller range A-B (e.g. +8613900000000-+8613900009999)");
        let (a, b) = text.trim().split_once('-').ok_or_else(bad)?;
        let digits = |s: &str| -> Result<(bool, String), String> {
            let s = s.trim();
            let (plus, rest) = match s.strip_prefix('+') {
                Some(rest) => (true, rest),
                None => (false, s),
            };
            if rest.is_empty() || rest.len() > 18 || !rest.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            Ok((plus, rest.to_string()))
        };
        let (plus, a) = digits(a)?;
        let (_, b) = digits(b)?;
        let first: u64 = a.parse().map_err(|_| bad())?;
        let last: u64 = b.parse().map_err(|_| bad())?;
        if last < first {
            return Err(format!("caller range {text:?}: B is below A"));
        }
        Ok(CallerRange {
            plus,
            width: a.len(),
            first,
            count: last - first + 1,
        })
    }

    fn len(&self) -> u64 {
        self.count
    }

    /// The i-th number (wrapping around).
    fn number(&self, i: u64) -> String {
        let n = self.first + i % self.count;
        format!(
            "{}{n:0width$}",
            if self.plus { "+" } else { "" },
            width = self.width
        )
    }
}

fn resolve_target(target: &str) -> Result<SocketAddr, Failure> {
    use std::net::ToSocketAddrs;
    target
        .to_socket_addrs()
        .map_err(|e| user(format!("--target {target:?}: {e} (write HOST:PORT)")))?
        .next()
        .ok_or_else(|| user(format!("--target {target:?} resolves to no address")))
}

/// A number unique to this run (microseconds since the epoch), for ids and keys.
fn run_id() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_ranges() {
        let r = CallerRange::parse("+8613900000000-+8613900000009").unwrap();
        assert_eq!(r.len(), 10);
        assert_eq!(r.number(0), "+8613900000000");
        assert_eq!(r.number(12), "+8613900000002");
        let r = CallerRange::parse("0100-0101").unwrap();
        assert_eq!(r.number(1), "0101");
        assert!(CallerRange::parse("5-4").is_err());
        assert!(CallerRange::parse("+86").is_err());
        assert!(CallerRange::parse("a-b").is_err());
    }

    #[test]
    fn seconds() {
        assert_eq!(parse_seconds("20").unwrap(), Duration::from_secs(20));
        assert_eq!(parse_seconds("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_seconds("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_seconds("-1").is_err());
    }
}
