//! Asterisk's side of a FastAGI call: connects to a server, sends the environment block
//! and answers each command the way res_agi does (`channel`), until the server
//! closes the socket. Used by `dialgate simulate-call`, the demo and tests.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use tokio::{io::AsyncWriteExt, net::TcpStream};

pub use super::spec::CallSpec;
use super::{channel::Channel, is_reset, transcript::Direction, MAX_SERVER_LINE};
use crate::lines::{LineReader, ReadLineError};

/// One command the server sent and the reply line Asterisk gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub command: String,
    pub reply: String,
    /// An unsolicited `HANGUP` line followed the reply (our HANGUP, or `hangup_after`).
    pub hangup: bool,
}

/// What happened on a call the server ended by closing the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallOutcome {
    pub exchanges: Vec<Exchange>,
    /// Every `SET VARIABLE name value`, in order.
    pub variables: Vec<(String, String)>,
    /// The last value given to `DIALGATE_RESULT`.
    pub result: Option<String>,
    /// The server sent ANSWER (while the channel was alive).
    pub answered: bool,
    /// The channel was hung up (by the server's HANGUP or `hangup_after`).
    pub hung_up: bool,
    /// From the start of the connect to the server's close.
    pub duration: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("the call spec's {0} contains CR, LF or NUL, which would break the environment block")]
    InvalidSpec(&'static str),
    #[error("cannot connect to {target}: {source}")]
    Connect {
        target: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot connect to {target}: no answer within {timeout:?}")]
    ConnectTimeout {
        target: SocketAddr,
        timeout: Duration,
    },
    #[error("the server sent nothing for {timeout:?} after {exchanges} commands (and did not close the connection)")]
    Timeout { timeout: Duration, exchanges: usize },
    #[error("the server sent a line longer than {limit} bytes after {exchanges} commands")]
    LineTooLong { limit: usize, exchanges: usize },
    #[error("connection error after {exchanges} commands: {source}")]
    Io {
        exchanges: usize,
        source: std::io::Error,
    },
}

impl PeerError {
    /// The server could not be reached at all (as opposed to misbehaving mid-call).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            PeerError::Connect { .. } | PeerError::ConnectTimeout { .. }
        )
    }
}

/// Places a call to the FastAGI server at `target` and plays Asterisk until the server
/// closes the connection. `timeout` bounds the connect and each wait for the server's
/// next line.
pub async fn place_call(
    target: SocketAddr,
    spec: &CallSpec,
    timeout: Duration,
) -> Result<CallOutcome, PeerError> {
    place_call_observed(target, spec, timeout, |_, _| {}).await
}

/// [`place_call`], reporting every line as it crosses the wire (without its line end):
/// the environment (ending with an empty line), commands, replies and `HANGUP` events.
pub async fn place_call_observed(
    target: SocketAddr,
    spec: &CallSpec,
    timeout: Duration,
    mut observe: impl FnMut(Direction, &str),
) -> Result<CallOutcome, PeerError> {
    if let Some(field) = spec.unsafe_field() {
        return Err(PeerError::InvalidSpec(field));
    }
    let started = Instant::now();
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(target)).await {
        Err(_) => return Err(PeerError::ConnectTimeout { target, timeout }),
        Ok(Err(source)) => return Err(PeerError::Connect { target, source }),
        Ok(Ok(stream)) => stream,
    };
    stream.set_nodelay(true).ok();
    let (mut read, mut write) = stream.into_split();
    let mut reader = LineReader::new(MAX_SERVER_LINE);
    let mut channel = Channel::for_spec(spec);
    let mut outcome = CallOutcome {
        exchanges: Vec::new(),
        variables: Vec::new(),
        result: None,
        answered: false,
        hung_up: false,
        duration: Duration::ZERO,
    };
    let io_error = |exchanges: usize| move |source| PeerError::Io { exchanges, source };

    let env = spec.env_block(&target.ip().to_string(), target.port());
    for line in env
        .strip_suffix(b"\n")
        .unwrap_or(&env)
        .split(|&b| b == b'\n')
    {
        observe(Direction::FromAsterisk, &String::from_utf8_lossy(line));
    }
    let mut out = env;
    if spec.hangup_after == Some(0) {
        channel.dead = true;
        out.extend_from_slice(b"HANGUP\n");
        observe(Direction::FromAsterisk, "HANGUP");
    }
    if let Err(e) = write.write_all(&out).await {
        if !is_reset(&e) {
            return Err(io_error(0)(e));
        }
    }

    loop {
        let exchanges = outcome.exchanges.len();
        let line = match tokio::time::timeout(timeout, reader.next_line(&mut read)).await {
            Err(_) => return Err(PeerError::Timeout { timeout, exchanges }),
            Ok(Err(ReadLineError::TooLong(too_long))) => {
                return Err(PeerError::LineTooLong {
                    limit: too_long.limit,
                    exchanges,
                })
            }
            Ok(Err(ReadLineError::Io(e))) if is_reset(&e) => break,
            Ok(Err(ReadLineError::Io(e))) => return Err(io_error(exchanges)(e)),
            // EOF: the server ended the AGI, the dialplan continues.
            Ok(Ok(None)) => break,
            Ok(Ok(Some(line))) => line,
        };
        let command = String::from_utf8_lossy(&line).into_owned();
        observe(Direction::FromServer, &command);

        let caller_hangs_up = spec.hangup_after == Some(exchanges + 1);
        let mut out = Vec::new();
        let (reply, hangup_event) = channel.reply_to(&command, caller_hangs_up, &mut out);
        observe(Direction::FromAsterisk, &reply);
        if hangup_event {
            observe(Direction::FromAsterisk, "HANGUP");
        }
        outcome.exchanges.push(Exchange {
            command,
            reply,
            hangup: hangup_event,
        });
        if let Err(e) = write.write_all(&out).await {
            // The server may close right after its last command; that ends the call.
            if is_reset(&e) {
                break;
            }
            return Err(io_error(exchanges + 1)(e));
        }
    }

    outcome.answered = channel.answered;
    outcome.hung_up = channel.dead;
    outcome.result = channel.result();
    outcome.variables = channel.set_variables;
    outcome.duration = started.elapsed();
    Ok(outcome)
}
