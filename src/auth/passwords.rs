//! Long-term passwords: policy and Argon2id hashing (PHC strings).

use argon2::{
    password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
    Algorithm, Argon2, Params, Version,
};

pub const MIN_PASSWORD_CHARS: usize = 8;
pub const MAX_PASSWORD_CHARS: usize = 128;

/// OWASP's minimum for Argon2id: 19 MiB, 2 passes, 1 lane.
pub fn argon2() -> Argon2<'static> {
    let params = Params::new(19_456, 2, 1, None).expect("valid Argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordPolicyError {
    #[error("the password is too short: use at least {MIN_PASSWORD_CHARS} characters")]
    TooShort,
    #[error("the password is too long: use at most {MAX_PASSWORD_CHARS} characters")]
    TooLong,
    #[error("the password must not be the username")]
    SameAsUsername,
}

pub fn check_policy(username: &str, password: &str) -> Result<(), PasswordPolicyError> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(PasswordPolicyError::TooShort);
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(PasswordPolicyError::TooLong);
    }
    if password.eq_ignore_ascii_case(username) {
        return Err(PasswordPolicyError::SameAsUsername);
    }
    Ok(())
}

/// Hashes with Argon2id and a random salt. CPU- and memory-heavy: run it on a blocking
/// thread, never on an async worker.
pub fn hash(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .expect("Argon2 hashing with valid parameters cannot fail")
        .to_string()
}

/// Checks a password against a stored PHC string; a malformed hash never verifies.
pub fn verify(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|parsed| {
            argon2()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy() {
        assert_eq!(
            check_policy("alice", "short"),
            Err(PasswordPolicyError::TooShort)
        );
        assert_eq!(
            check_policy("alice1234", "ALICE1234"),
            Err(PasswordPolicyError::SameAsUsername)
        );
        assert_eq!(
            check_policy("a", &"x".repeat(129)),
            Err(PasswordPolicyError::TooLong)
        );
        assert!(check_policy("alice", "correct horse").is_ok());
        // Characters, not bytes: eight CJK characters are enough.
        assert!(check_policy("alice", "八个汉字的密码呀").is_ok());
    }

    #[test]
    fn hash_is_argon2id_with_owasp_parameters_and_verifies() {
        let phc = hash("correct horse");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify("correct horse", &phc));
        assert!(!verify("correct horsE", &phc));
        assert!(!verify("correct horse", "not a hash"));
    }
}
