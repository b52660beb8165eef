//! `dialgate simulate-call`: plays Asterisk placing one call to a FastAGI script and
//! prints the dialog in the transcript format (`> ` server, `< ` Asterisk).

use std::{net::SocketAddr, time::Duration};

use anyhow::anyhow;
use clap::Args;

use super::Failure;
use crate::agi::{
    server::RESULT_VARIABLE,
    sim::{place_call_observed, CallSpec, Direction},
};

#[derive(Debug, Args)]
pub struct SimulateCallArgs {
    /// The FastAGI server, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:4573")]
    pub target: String,

    /// The caller's number (agi_callerid).
    #[arg(long, value_name = "NUMBER")]
    pub from: String,

    /// The number dialled (agi_dnid, agi_extension and agi_arg_1).
    #[arg(long, value_name = "NUMBER")]
    pub to: String,

    /// What the caller types when asked (GET DATA / WAIT FOR DIGIT); `#` ends an entry.
    /// Without it, input times out.
    #[arg(long, value_name = "CODE")]
    pub digits: Option<String>,

    /// The channel name (its technology becomes agi_type).
    #[arg(long, value_name = "NAME", default_value = "PJSIP/carrier-00000001")]
    pub channel: String,

    /// Script path after `agi://host:port/`, query allowed (`verify?mode=code`).
    #[arg(long, default_value = "verify")]
    pub script: String,

    /// Present the caller's number as withheld (agi_callingpres 32).
    #[arg(long)]
    pub withheld: bool,

    /// The caller hangs up after this many replies (0: before the first command).
    #[arg(long, value_name = "N")]
    pub hangup_after: Option<usize>,

    /// Dialplan context (agi_context).
    #[arg(long, default_value = "dialin")]
    pub context: String,

    /// Also print the environment block sent first.
    #[arg(long)]
    pub show_env: bool,

    /// How long to wait for the connection and for each line the server sends.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

impl SimulateCallArgs {
    fn spec(&self) -> Result<CallSpec, Failure> {
        for (flag, value) in [("--from", &self.from), ("--to", &self.to)] {
            if value.trim().is_empty() {
                return Err(Failure::User(anyhow!("{flag} must not be empty")));
            }
        }
        if let Some(digits) = &self.digits {
            if let Some(c) = digits
                .chars()
                .find(|c| !(c.is_ascii_digit() || matches!(c, '*' | '#' | 'A'..='D')))
            {
                return Err(Failure::User(anyhow!(
                    "--digits may only contain 0-9, *, # and A-D (got {c:?})"
                )));
            }
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Ok(CallSpec {
            script: self.script.trim_start_matches('/').to_string(),
            channel: self.channel.clone(),
            caller: Some(self.from.clone()),
            caller_name: None,
            calling_pres: if self.withheld { 32 } else { 0 },
            dnid: Some(self.to.clone()),
            extension: self.to.clone(),
            context: self.context.clone(),
            args: vec![self.to.clone()],
            uniqueid: format!("{}.{}", now.as_secs(), now.subsec_micros() % 1000),
            digits: self.digits.clone(),
            hangup_after: self.hangup_after,
            version: "20.11.0".into(),
        })
    }
}

/// Splits HOST:PORT; the port is required (a bare host is a user error).
fn split_target(target: &str) -> Result<(String, u16), Failure> {
    let bad = || {
        Failure::User(anyhow!(
            "--target {target:?} is not HOST:PORT (e.g. 127.0.0.1:4573)"
        ))
    };
    let (host, port) = target.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

pub async fn run(args: SimulateCallArgs) -> Result<(), Failure> {
    let spec = args.spec()?;
    let (host, port) = split_target(&args.target)?;
    let addr: SocketAddr = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| Failure::System(anyhow!("cannot resolve {}: {e}", args.target)))?
        .next()
        .ok_or_else(|| Failure::System(anyhow!("{} resolves to no address", args.target)))?;

    let show_env = args.show_env;
    let mut in_env = true;
    let outcome = place_call_observed(addr, &spec, args.timeout, |direction, line| {
        if in_env {
            in_env = !line.is_empty();
            if !show_env {
                return;
            }
        }
        match direction {
            Direction::FromServer => println!("> {line}"),
            Direction::FromAsterisk if line.is_empty() => println!("<"),
            Direction::FromAsterisk => println!("< {line}"),
        }
    })
    .await
    .map_err(|e| {
        if e.is_unreachable() {
            Failure::System(e.into())
        } else {
            Failure::User(anyhow::Error::new(e).context("the call failed"))
        }
    })?;

    println!(
        "{RESULT_VARIABLE}={}",
        outcome.result.as_deref().unwrap_or("")
    );
    eprintln!(
        "call ended by the server after {:?}: {} commands, {}{}{}",
        outcome.duration,
        outcome.exchanges.len(),
        if outcome.answered {
            "answered"
        } else {
            "never answered"
        },
        if outcome.hung_up { ", hung up" } else { "" },
        if outcome.result.is_none() {
            ", DIALGATE_RESULT not set"
        } else {
            ""
        },
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            split_target("127.0.0.1:4573").ok(),
            Some(("127.0.0.1".into(), 4573))
        );
        assert_eq!(split_target("[::1]:1").ok(), Some(("::1".into(), 1)));
        assert!(split_target("localhost").is_err());
        assert!(split_target(":80").is_err());
        assert!(split_target("h:99999").is_err());
    }
}
