//! The domain: passwords, accounts and enrollment, audit. Uses `store` and `phone`;
//! knows nothing of AGI, AMI or HTTP.

pub mod accounts;
pub mod audit;
pub mod balance;
pub mod callbacks;
pub mod conditions;
pub mod credentials;
pub mod documents;
pub mod login;
pub mod passwords;
pub mod payments;
pub mod signal;
pub mod temp_passwords;
pub mod text;

/// Whether `id` has the shape of a challenge id (the ids are 32 hex digits; up to 64
/// letters and digits pass), so anything else costs no store lookup.
pub fn plausible_challenge_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    #[test]
    fn plausible_challenge_ids() {
        assert!(super::plausible_challenge_id(
            "0123456789abcdef0123456789abcdef"
        ));
        assert!(!super::plausible_challenge_id(""));
        assert!(!super::plausible_challenge_id("../x"));
        assert!(!super::plausible_challenge_id(&"a".repeat(65)));
    }
}
