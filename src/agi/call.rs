//! One AGI call: the environment Asterisk sent, and a command/reply dialog that knows
//! when the caller has hung up.

use std::{net::SocketAddr, time::Duration};

use futures::{FutureExt, SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use super::{AgiCodec, AgiEnv, Command, Frame, ProtocolError, Reply, Verb};

/// Default time Asterisk may take to answer one command. Prompt-playing commands take as
/// long as the prompt; pass a longer timeout to [`AgiCall::send_with_timeout`] for those.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("the caller hung up; {0} is not allowed on a dead channel and was not sent")]
    ChannelDead(&'static str),
    #[error("Asterisk closed the connection")]
    Closed,
    #[error("no reply to {command} within {timeout:?}; the call is abandoned")]
    Timeout {
        command: &'static str,
        timeout: Duration,
    },
    #[error("the call is unusable after an earlier failure")]
    Broken,
    #[error("unexpected {0:?} from Asterisk while idle")]
    Unsolicited(Frame),
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

/// An AGI call in progress. Commands are sent one at a time; an unsolicited `HANGUP`
/// marks the channel dead, after which only dead-channel commands are written (the
/// others fail fast, unless [`let_asterisk_judge_dead_channel`] is set).
///
/// [`let_asterisk_judge_dead_channel`]: AgiCall::let_asterisk_judge_dead_channel
pub struct AgiCall {
    env: AgiEnv,
    framed: Framed<TcpStream, AgiCodec>,
    peer: SocketAddr,
    dead: bool,
    closed: bool,
    broken: bool,
    strict_dead_channel: bool,
    command_timeout: Duration,
}

impl AgiCall {
    /// Wraps a connection whose environment block has already been read.
    pub fn new(env: AgiEnv, framed: Framed<TcpStream, AgiCodec>, peer: SocketAddr) -> AgiCall {
        AgiCall {
            env,
            framed,
            peer,
            dead: false,
            closed: false,
            broken: false,
            strict_dead_channel: true,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
        }
    }

    pub fn env(&self) -> &AgiEnv {
        &self.env
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Whether the caller has hung up (a `HANGUP` line, a 511 reply, our own successful
    /// HANGUP, or the connection closing).
    pub fn is_dead(&self) -> bool {
        self.dead
    }

    pub fn set_command_timeout(&mut self, timeout: Duration) {
        self.command_timeout = timeout;
    }

    /// Write every command even after a hangup and let Asterisk answer 511, as scripts
    /// written for other AGI libraries expect. Off by default.
    pub fn let_asterisk_judge_dead_channel(&mut self, yes: bool) {
        self.strict_dead_channel = !yes;
    }

    /// Sends a command and waits for its reply with the call's command timeout.
    pub async fn send(&mut self, command: &Command) -> Result<Reply, CallError> {
        self.send_with_timeout(command, self.command_timeout).await
    }

    /// Sends a command and returns the 200 response, or an error naming what Asterisk
    /// answered instead (510, 511, 520...).
    pub async fn send_ok(&mut self, command: &Command) -> Result<super::Response, CallError> {
        Ok(self.send(command).await?.into_success()?)
    }

    pub async fn send_with_timeout(
        &mut self,
        command: &Command,
        timeout: Duration,
    ) -> Result<Reply, CallError> {
        if self.broken {
            return Err(CallError::Broken);
        }
        self.take_pending_events()?;
        let verb = command.verb();
        if self.dead && self.strict_dead_channel && !verb.allowed_on_dead_channel() {
            return Err(CallError::ChannelDead(verb.words()));
        }
        if self.closed {
            return Err(CallError::Closed);
        }
        let exchange = async {
            self.framed.send(command).await?;
            loop {
                match self.framed.next().await {
                    Some(Ok(Frame::Hangup)) => self.dead = true,
                    Some(Ok(Frame::Reply(Reply::Trying))) => {}
                    Some(Ok(Frame::Reply(reply))) => return Ok(reply),
                    Some(Ok(frame @ Frame::Env(_))) => return Err(CallError::Unsolicited(frame)),
                    Some(Err(e)) => return Err(CallError::Protocol(e)),
                    None => {
                        self.closed = true;
                        self.dead = true;
                        return Err(CallError::Closed);
                    }
                }
            }
        };
        let outcome = match tokio::time::timeout(timeout, exchange).await {
            Ok(outcome) => outcome,
            Err(_) => Err(CallError::Timeout {
                command: verb.words(),
                timeout,
            }),
        };
        match &outcome {
            Ok(Reply::DeadChannel) => self.dead = true,
            Ok(Reply::Success(r)) if verb == Verb::Hangup && command.args().is_empty() => {
                // Our own HANGUP of this channel succeeded: it is dead from now on.
                self.dead |= r.result == "1";
            }
            Ok(_) | Err(CallError::ChannelDead(_)) | Err(CallError::Closed) => {}
            // A late reply would be taken for the next command's: stop using the call.
            Err(_) => self.broken = true,
        }
        outcome
    }

    /// Consumes `HANGUP` lines (and EOF) that arrived while no command was in flight,
    /// without waiting for more.
    fn take_pending_events(&mut self) -> Result<(), CallError> {
        while !self.closed {
            match self.framed.next().now_or_never() {
                None => break,
                Some(Some(Ok(Frame::Hangup))) => self.dead = true,
                Some(None) => {
                    self.closed = true;
                    self.dead = true;
                }
                Some(Some(Ok(frame))) => {
                    self.broken = true;
                    return Err(CallError::Unsolicited(frame));
                }
                Some(Some(Err(e))) => {
                    self.broken = true;
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }

    /// Sets a channel variable the dialplan reads after `AGI()` returns. Allowed on a
    /// dead channel, so a result is recorded even when the caller already hung up.
    pub async fn set_variable(&mut self, name: &str, value: &str) -> Result<(), CallError> {
        self.send_ok(&Command::set_variable(name, value)).await?;
        Ok(())
    }

    /// Ends the AGI: flushes what was written and closes the connection, so the dialplan
    /// continues after `AGI()`.
    pub async fn close(mut self) {
        let _ = self.framed.flush().await;
        let _ = tokio::io::AsyncWriteExt::shutdown(self.framed.get_mut()).await;
    }
}
