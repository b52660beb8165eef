//! Playing Asterisk: the simulated side of FastAGI calls, for `simulate-call`, `replay`,
//! the demo, the load generator and tests. Protocol only, like the rest of `agi`.
//!
//! * [`spec`]: the call placed ([`CallSpec`]) and its environment block;
//! * `channel`: res_agi's answers to every command on a channel without audio, shared
//!   by every player;
//! * [`peer`]: one call, every exchange recorded (and observable line by line);
//! * [`loadgen`]: the lean player of the load generator (template environment, no
//!   per-line records);
//! * [`transcript`]: recorded conversations and their byte-exact replay.
//!
//! The players read the server's lines through [`crate::lines::LineReader`] (CR stripped,
//! [`MAX_SERVER_LINE`] enforced before a line is buffered whole).

pub(crate) mod channel;
pub mod loadgen;
pub mod peer;
pub mod spec;
pub mod transcript;

pub use peer::{place_call, place_call_observed, CallOutcome, Exchange, PeerError};
pub use spec::CallSpec;
pub use transcript::{replay, Direction, ReplayOptions, ReplayReport, Transcript};

/// Longest line accepted from the server (Asterisk itself reads 2 KiB per command).
pub const MAX_SERVER_LINE: usize = 8 * 1024;

/// The other side closed the connection under a write or read: for a player this ends
/// the call (the server may close right after its last command).
pub(crate) fn is_reset(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
    )
}
