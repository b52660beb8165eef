//! `dialgate replay`: plays Asterisk's side of recorded AGI transcripts against a server.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::anyhow;
use clap::Args;

use super::Failure;
use crate::agi::sim::{replay, ReplayOptions, Transcript};

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Transcript files (`fixtures/agi/*.agi` format).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,

    /// The FastAGI server to play against.
    #[arg(long, default_value = "127.0.0.1:4573")]
    pub target: SocketAddr,

    /// End Asterisk's lines with CRLF instead of LF.
    #[arg(long)]
    pub crlf: bool,

    /// Send one byte per TCP segment.
    #[arg(long)]
    pub bytewise: bool,

    /// How long to wait for each line the server should send.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

pub async fn run(args: ReplayArgs) -> Result<(), Failure> {
    let options = ReplayOptions {
        crlf: args.crlf,
        bytewise: args.bytewise,
        timeout: args.timeout,
    };
    let mut failed = 0;
    for file in &args.files {
        let transcript = Transcript::load(file).map_err(|e| Failure::User(e.into()))?;
        match replay(&transcript, args.target, options).await {
            Ok(report) => println!(
                "ok    {} ({} lines, DIALGATE_RESULT={})",
                file.display(),
                report.lines,
                report.result.as_deref().unwrap_or("(not set)")
            ),
            Err(divergence) => {
                failed += 1;
                println!("FAIL  {divergence}");
            }
        }
    }
    match failed {
        0 => Ok(()),
        n => Err(Failure::User(anyhow!(
            "{n} of {} transcripts diverged",
            args.files.len()
        ))),
    }
}
