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
    // Boxed: scripts take the call by value and keep it in their futures for the whole
    // call (an async fn often stores a by-value argument twice), so a one-pointer handle
    // keeps every held call's futures small.
    state: Box<CallState>,
}

struct CallState {
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
            state: Box::new(CallState {
                env,
                framed,
                peer,
                dead: false,
                closed: false,
                broken: false,
                strict_dead_channel: true,
                command_timeout: DEFAULT_COMMAND_TIMEOUT,
            }),
        }
    }

    pub fn env(&self) -> &AgiEnv {
        &self.state.env
    }

    pub fn peer(&self) -> SocketAddr {
        self.state.peer
    }

    /// Whether the caller has hung up (a `HANGUP` line, a 511 reply, our own successful
    /// HANGUP, or the connection closing).
    pub fn is_dead(&self) -> bool {
        self.state.dead
    }

    pub fn set_command_timeout(&mut self, timeout: Duration) {
        self.state.command_timeout = timeout;
    }

    /// Write every command even after a hangup and let Asterisk answer 511, as scripts
    /// written for other AGI libraries expect. Off by default.
    pub fn let_asterisk_judge_dead_channel(&mut self, yes: bool) {
        self.state.strict_dead_channel = !yes;
    }

    /// Sends a command and waits for its reply with the call's command timeout.
    pub async fn send(&mut self, command: &Command) -> Result<Reply, CallError> {
        self.send_with_timeout(command, self.state.command_timeout)
            .await
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
        if self.state.broken {
            return Err(CallError::Broken);
        }
        self.take_pending_events()?;
        let verb = command.verb();
        if self.state.dead && self.state.strict_dead_channel && !verb.allowed_on_dead_channel() {
            return Err(CallError::ChannelDead(verb.words()));
        }
        if self.state.closed {
            return Err(CallError::Closed);
        }
        let exchange = async {
            self.state.framed.send(command).await?;
            loop {
                match self.state.framed.next().await {
                    Some(Ok(Frame::Hangup)) => self.state.dead = true,
                    Some(Ok(Frame::Reply(Reply::Trying))) => {}
                    Some(Ok(Frame::Reply(reply))) => return Ok(reply),
                    Some(Ok(frame @ Frame::Env(_))) => return Err(CallError::Unsolicited(frame)),
                    Some(Err(e)) => return Err(CallError::Protocol(e)),
                    None => {
                        self.state.closed = true;
                        self.state.dead = true;
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
            Ok(Reply::DeadChannel) => self.state.dead = true,
            Ok(Reply::Success(r)) if verb == Verb::Hangup && command.args().is_empty() => {
                // Our own HANGUP of this channel succeeded: it is dead from now on.
                self.state.dead |= r.result == "1";
            }
            Ok(_) | Err(CallError::ChannelDead(_)) | Err(CallError::Closed) => {}
            // A late reply would be taken for the next command's: stop using the call.
            Err(_) => self.state.broken = true,
        }
        outcome
    }

    /// Consumes `HANGUP` lines (and EOF) that arrived while no command was in flight,
    /// without waiting for more.
    fn take_pending_events(&mut self) -> Result<(), CallError> {
        while !self.state.closed {
            match self.state.framed.next().now_or_never() {
                None => break,
                Some(Some(Ok(Frame::Hangup))) => self.state.dead = true,
                Some(None) => {
                    self.state.closed = true;
                    self.state.dead = true;
                }
                Some(Some(Ok(frame))) => {
                    self.state.broken = true;
                    return Err(CallError::Unsolicited(frame));
                }
                Some(Some(Err(e))) => {
                    self.state.broken = true;
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
        let _ = self.state.framed.flush().await;
        let _ = tokio::io::AsyncWriteExt::shutdown(self.state.framed.get_mut()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_is_one_pointer() {
        // Scripts' futures hold it for the whole call (see `AgiCall::state`).
        assert_eq!(std::mem::size_of::<AgiCall>(), std::mem::size_of::<usize>());
    }
}
