//! Failed-login limits (security.md "Abuse limits").
//!
//! Two counters per attempt: the client address and the username. Only failures count.
//! An address that reaches its limit is locked out, for one window the first time and
//! twice as long each time after (up to `max_lockout`). An account has a higher limit and
//! a lockout of one window that never grows: it only slows a guesser spread over many
//! addresses down, so nobody can lock a victim out of their own account for long.
//! In memory, per node.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// Failed logins from one client address within `window` before it is locked out.
    pub per_ip: u32,
    /// Failed logins for one username (from any address) within `window` before further
    /// attempts on it wait out the window.
    pub per_account: u32,
    pub window: Duration,
    /// Longest lockout of an address (repeated lockouts double up to this).
    pub max_lockout: Duration,
}

impl RateLimit {
    /// The defaults, stated once (`dialgate serve --help` shows them too).
    pub const DEFAULT: RateLimit = RateLimit {
        per_ip: 10,
        per_account: 30,
        window: Duration::from_secs(60),
        max_lockout: Duration::from_secs(3600),
    };
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit::DEFAULT
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    /// IPv4 address, or the /64 of an IPv6 address (one host usually owns a whole /64).
    Ip(IpAddr),
    Account(String),
}

#[derive(Debug)]
struct Entry {
    window_start: Instant,
    failures: u32,
    locked_until: Option<Instant>,
    /// Lockouts so far (the next one lasts `window * 2^lockouts`).
    lockouts: u32,
    last_seen: Instant,
}

/// Entries kept before stale ones are swept.
const SWEEP_AT: usize = 10_000;

#[derive(Debug)]
pub struct Limiter {
    limit: RateLimit,
    entries: Mutex<HashMap<Key, Entry>>,
}

fn ip_key(ip: IpAddr) -> Key {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            Key::Ip(IpAddr::V6(bits.into()))
        }
        v4 => Key::Ip(v4),
    }
}

fn account_key(username: &str) -> Key {
    let name: String = username.trim().to_lowercase().chars().take(128).collect();
    Key::Account(name)
}

/// Whole seconds to wait, rounded up, at least 1 (for `Retry-After`).
pub(super) fn seconds_up(d: Duration) -> u64 {
    (d.as_millis().div_ceil(1000) as u64).max(1)
}

impl Limiter {
    pub fn new(limit: RateLimit) -> Limiter {
        Limiter {
            limit,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn keys(ip: Option<IpAddr>, username: &str) -> Vec<Key> {
        let mut keys = vec![account_key(username)];
        keys.extend(ip.map(ip_key));
        keys
    }

    /// `Some(seconds)` to wait when this address or account is locked out now.
    pub fn check(&self, ip: Option<IpAddr>, username: &str) -> Option<u64> {
        let now = Instant::now();
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        Self::keys(ip, username)
            .iter()
            .filter_map(|k| entries.get(k)?.locked_until)
            .filter(|until| *until > now)
            .max()
            .map(|until| seconds_up(until - now))
    }

    /// Counts a failed login. `Some(seconds)` when it started a lockout.
    pub fn failure(&self, ip: Option<IpAddr>, username: &str) -> Option<u64> {
        let now = Instant::now();
        let limit = &self.limit;
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= SWEEP_AT {
            let stale = limit.window + limit.max_lockout;
            entries.retain(|_, e| now.duration_since(e.last_seen) < stale);
        }
        let mut locked = None;
        for key in Self::keys(ip, username) {
            let (threshold, grows) = match key {
                Key::Ip(_) => (limit.per_ip, true),
                Key::Account(_) => (limit.per_account, false),
            };
            let entry = entries.entry(key).or_insert(Entry {
                window_start: now,
                failures: 0,
                locked_until: None,
                lockouts: 0,
                last_seen: now,
            });
            // A long quiet spell forgives earlier lockouts.
            if now.duration_since(entry.last_seen) >= limit.window + limit.max_lockout {
                entry.lockouts = 0;
            }
            entry.last_seen = now;
            if now.duration_since(entry.window_start) >= limit.window {
                entry.window_start = now;
                entry.failures = 0;
            }
            entry.failures += 1;
            if entry.failures >= threshold.max(1) {
                let factor = if grows {
                    1u32.checked_shl(entry.lockouts).unwrap_or(u32::MAX)
                } else {
                    1
                };
                let lockout = limit
                    .window
                    .saturating_mul(factor)
                    .min(limit.max_lockout.max(limit.window));
                entry.locked_until = Some(now + lockout);
                entry.lockouts = entry.lockouts.saturating_add(1);
                entry.failures = 0;
                entry.window_start = now;
                locked = locked.max(Some(seconds_up(lockout)));
            }
        }
        locked
    }

    /// A successful login clears the account's count (never the address's: a guesser
    /// with one valid account must not reset their own limit by using it).
    pub fn success(&self, username: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = entries.get_mut(&account_key(username)) {
            entry.failures = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_ip: u32, per_account: u32) -> Limiter {
        Limiter::new(RateLimit {
            per_ip,
            per_account,
            window: Duration::from_secs(60),
            max_lockout: Duration::from_secs(300),
        })
    }

    #[test]
    fn address_locks_after_limit_and_doubles() {
        let l = limiter(3, 100);
        let ip = Some("10.0.0.1".parse().unwrap());
        assert_eq!(l.failure(ip, "a"), None);
        assert_eq!(l.failure(ip, "b"), None);
        assert_eq!(l.check(ip, "c"), None);
        assert_eq!(l.failure(ip, "c"), Some(60));
        assert!(l.check(ip, "anyone").is_some());
        // Another address is not affected.
        assert_eq!(l.check(Some("10.0.0.2".parse().unwrap()), "a"), None);
        for _ in 0..2 {
            l.failure(ip, "x");
        }
        assert_eq!(l.failure(ip, "x"), Some(120));
        for _ in 0..3 {
            l.failure(ip, "x");
        }
        for _ in 0..3 {
            l.failure(ip, "x");
        }
        // Capped at max_lockout.
        for _ in 0..2 {
            l.failure(ip, "x");
        }
        assert_eq!(l.failure(ip, "x"), Some(300));
    }

    #[test]
    fn account_lockout_does_not_grow_and_success_resets() {
        let l = limiter(100, 2);
        let a = Some("10.0.0.1".parse().unwrap());
        let b = Some("10.0.0.2".parse().unwrap());
        assert_eq!(l.failure(a, "Victim"), None);
        l.success("victim");
        assert_eq!(l.failure(b, "victim"), None);
        assert_eq!(l.failure(a, "victim"), Some(60));
        assert!(l.check(None, "VICTIM").is_some());
        l.failure(a, "victim");
        assert_eq!(l.failure(b, "victim"), Some(60));
    }

    #[test]
    fn ipv6_counts_per_64() {
        let l = limiter(2, 100);
        l.failure(Some("2001:db8::1".parse().unwrap()), "a");
        l.failure(Some("2001:db8::2".parse().unwrap()), "b");
        assert!(l
            .check(Some("2001:db8::ffff".parse().unwrap()), "c")
            .is_some());
        assert!(l
            .check(Some("2001:db8:0:1::1".parse().unwrap()), "c")
            .is_none());
    }
}
