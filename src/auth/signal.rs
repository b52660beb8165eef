//! How a verification reaches the browser that waits for it. The gateway implements it:
//! directly in its own process, by a signed HTTP call to the node recorded on the
//! challenge otherwise.

/// Told whenever a challenge changes state (verified, failed).
pub trait ChallengeSignal: Send + Sync + 'static {
    /// `node_url` is the node that holds the waiting browser (None: this node).
    fn challenge_changed(&self, challenge_id: &str, node_url: Option<&str>);
}

/// For processes with no browsers to wake (CLI tools).
pub struct NoSignal;

impl ChallengeSignal for NoSignal {
    fn challenge_changed(&self, _challenge_id: &str, _node_url: Option<&str>) {}
}
