//! The AMI protocol (Asterisk Manager Interface) over TCP: message parser, codec and a
//! reconnecting client. Protocol only: nothing here knows about logins or accounts.

pub mod client;
pub mod codec;
mod connection;
pub mod message;
pub mod originate;

pub use client::{AmiClient, AmiConfig, AmiError, AmiStats, EventList, LinkState};
pub use codec::{AmiCodec, Frame};
pub use connection::Backoff;
pub use message::{Action, CommandOutput, Kind, Message};
pub use originate::{Originate, OriginateOutcome, OriginateReason, OriginateResult};

/// Default AMI port (manager.conf `port`).
pub const DEFAULT_PORT: u16 = 5038;

/// Something on the wire that is not what the AMI protocol allows, or an action that
/// must not be sent.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("AMI banner {0:?} is not `Asterisk Call Manager/<version>`")]
    BadBanner(String),
    #[error("malformed AMI line {0:?} (expected `Key: Value` to start a message)")]
    MalformedLine(String),
    #[error("AMI line longer than {limit} bytes")]
    LineTooLong { limit: usize },
    #[error("AMI message larger than {limit} bytes")]
    MessageTooLarge { limit: usize },
    #[error("connection closed in the middle of an AMI message")]
    Truncated,
    #[error("AMI key {0:?} is empty or contains `:`, a space, CR, LF or NUL; refused")]
    UnsafeKey(String),
    #[error("value of AMI field {key} contains CR, LF or NUL; refused (it would inject a header or a second action)")]
    UnsafeValue { key: String },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
