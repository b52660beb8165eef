//! Call-backs this node placed and is waiting on: in memory, per process, because only
//! the node that placed a call-back may accept its `confirm` call.

use std::{collections::HashMap, sync::Mutex, time::Instant};

/// Challenges this node placed a call-back for and that no `confirm` call has judged yet.
/// `confirm` only acts on these, so the script cannot verify a challenge nobody called
/// back (e.g. a dialplan that reaches it by mistake).
#[derive(Debug, Default)]
pub struct PendingCallbacks {
    entries: Mutex<HashMap<String, Instant>>,
}

impl PendingCallbacks {
    /// Registers a call-back for `challenge_id`, valid until `until`.
    pub fn insert(&self, challenge_id: &str, until: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        entries.retain(|_, until| *until > now);
        entries.insert(challenge_id.to_string(), until);
    }

    /// Takes the registration (once): `true` if a live call-back was outstanding.
    pub fn take(&self, challenge_id: &str) -> bool {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .remove(challenge_id)
            .is_some_and(|until| until > Instant::now())
    }

    /// Forgets a call-back that failed (busy, no answer, ...).
    pub fn remove(&self, challenge_id: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.remove(challenge_id);
    }

    pub fn contains(&self, challenge_id: &str) -> bool {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(challenge_id)
            .is_some_and(|until| *until > Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn pending_callbacks_are_taken_once() {
        let p = PendingCallbacks::default();
        p.insert("abc", Instant::now() + Duration::from_secs(60));
        assert!(p.contains("abc"));
        assert!(p.take("abc"));
        assert!(!p.take("abc"));
        p.insert("old", Instant::now());
        assert!(!p.take("old"));
    }
}
