//! The command line: one file per subcommand.

pub mod replay;
pub mod serve;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "dialgate",
    version,
    about = "A real phone line as a login factor (FastAGI/AMI server)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the FastAGI server.
    Serve(serve::ServeArgs),
    /// Play Asterisk's side of recorded AGI transcripts against a FastAGI server.
    Replay(replay::ReplayArgs),
}

/// How a command failed, for the process exit code.
#[derive(Debug)]
pub enum Failure {
    /// Something the user can fix (bad input, a divergence they asked us to find): exit 1.
    User(anyhow::Error),
    /// The system failed (cannot bind, I/O): exit 2.
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

pub async fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Replay(args) => replay::run(args).await,
    }
}
