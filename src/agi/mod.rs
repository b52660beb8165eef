//! The AGI protocol over TCP (FastAGI): parsers, typed commands, codec, the per-call
//! session and the server. Protocol only: nothing here knows about logins or accounts.

pub mod call;
pub mod codec;
pub mod command;
pub mod env;
pub mod reply;
pub mod server;
pub mod sim;

pub use call::{AgiCall, CallError};
pub use codec::{AgiCodec, Frame};
pub use command::{Command, Verb};
pub use env::{AgiEnv, CallerId, Presentation};
pub use reply::{Reply, Response};
pub use server::{Router, Script, ScriptFuture, Server, ServerConfig};

/// Default FastAGI port, as in `agi://host` URLs without one.
pub const DEFAULT_PORT: u16 = 4573;

/// Something on the wire that is not what the AGI protocol allows, or a command that
/// must not be sent.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("malformed AGI environment line {0:?} (expected `agi_key: value`)")]
    MalformedEnvLine(String),
    #[error("malformed AGI reply {0:?}")]
    MalformedReply(String),
    #[error("line longer than {limit} bytes")]
    LineTooLong { limit: usize },
    #[error("AGI environment larger than {limit} bytes")]
    EnvTooLarge { limit: usize },
    #[error("520 usage reply longer than {limit} lines")]
    UsageTooLong { limit: usize },
    #[error("connection closed in the middle of a line")]
    TruncatedLine,
    #[error("connection closed before the end of the AGI environment ({lines} lines received)")]
    TruncatedEnv { lines: usize },
    #[error("argument {position} of {verb} contains CR, LF or NUL; refused (it would start a second command)")]
    UnsafeArgument { verb: &'static str, position: usize },
    #[error("{verb} takes {min} to {max} arguments, got {got}")]
    Arity {
        verb: &'static str,
        min: usize,
        max: usize,
        got: usize,
    },
    #[error("command line of {0} bytes exceeds Asterisk's 2047-byte command buffer")]
    CommandTooLong(usize),
    #[error("unknown AGI command {0:?}")]
    UnknownCommand(String),
    #[error("Asterisk answered {0}")]
    Refused(Reply),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
