//! Long-term passwords: policy and Argon2id hashing (PHC strings).

use std::sync::{Mutex, OnceLock};

use argon2::{
    password_hash::{rand_core::OsRng, Output, ParamsString, PasswordHash, SaltString},
    Algorithm, Argon2, Block, Params, Version,
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
/// A PHC string of `password` under fresh salt with [`argon2`]'s parameters, computed in
/// a reused block buffer (see [`with_blocks`]).
pub fn hash(password: &str) -> String {
    const INFALLIBLE: &str = "Argon2id with valid parameters and a generated salt cannot fail";
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let raw_salt = salt.decode_b64(&mut salt_bytes).expect(INFALLIBLE);
    let argon2 = argon2();
    let output = with_blocks(&SPARE_BLOCKS, argon2.params().block_count(), |blocks| {
        Output::init_with(Params::DEFAULT_OUTPUT_LEN, |out| {
            argon2
                .hash_password_into_with_memory(password.as_bytes(), raw_salt, out, blocks)
                .map_err(Into::into)
        })
    })
    .expect(INFALLIBLE);
    PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(argon2.params()).expect(INFALLIBLE),
        salt: Some(salt.as_salt()),
        hash: Some(output),
    }
    .to_string()
}

/// Whether `password` matches the PHC string `phc` (any Argon2 variant, version and
/// parameters; a malformed string never matches). Same result as argon2's
/// `verify_password`, computed in a reused block buffer (see [`with_blocks`]).
pub fn verify(password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(version)) => version,
        Some(Err(_)) => return false,
    };
    // Takes the output length from the stored hash.
    let Ok(params) = Params::try_from(&parsed) else {
        return false;
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let argon2 = Argon2::new(algorithm, version, params);
    let computed = with_blocks(&SPARE_BLOCKS, argon2.params().block_count(), |blocks| {
        Output::init_with(expected.len(), |out| {
            argon2
                .hash_password_into_with_memory(password.as_bytes(), salt, out, blocks)
                .map_err(Into::into)
        })
    });
    // `Output`'s equality is constant-time.
    computed.is_ok_and(|computed| computed == expected)
}

/// Block buffers kept between Argon2 computations. Allocating them per login meant
/// mapping, faulting in and unmapping 19 MiB every time: about a fifth of a login's
/// CPU. At most one per core is kept (the gateway runs one Argon2 per core at a time).
static SPARE_BLOCKS: Mutex<Vec<Vec<Block>>> = Mutex::new(Vec::new());

/// Runs `work` with at least `count` Argon2 blocks, and zeroes them before they are
/// kept: a filled block would let anyone who reads process memory test password
/// guesses at Blake2b speed instead of Argon2's.
fn with_blocks<T>(
    pool: &Mutex<Vec<Vec<Block>>>,
    count: usize,
    work: impl FnOnce(&mut [Block]) -> T,
) -> T {
    let spare = |spares: &mut Vec<Vec<Block>>| spares.pop().filter(|b| b.len() >= count);
    let mut blocks = pool
        .lock()
        .map(|mut spares| spare(&mut spares))
        .unwrap_or_default()
        .unwrap_or_else(|| vec![Block::default(); count]);
    let result = work(&mut blocks);
    blocks.fill(Block::default());
    // Asked once: on Linux the answer comes from reading cgroup files.
    static KEEP: OnceLock<usize> = OnceLock::new();
    let keep = *KEEP.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if let Ok(mut spares) = pool.lock() {
        if spares.len() < keep {
            spares.push(blocks);
        }
    }
    result
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
        use argon2::password_hash::PasswordVerifier;
        let phc = hash("correct horse");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        let parsed = PasswordHash::new(&phc).unwrap();
        assert!(argon2().verify_password(b"correct horse", &parsed).is_ok());
        assert!(argon2().verify_password(b"correct horsE", &parsed).is_err());
        assert_ne!(hash("correct horse"), phc, "fresh salt every time");
        assert!(verify("correct horse", &phc));
        assert!(!verify("correct horsE", &phc));
        assert!(!verify("correct horse", "not a hash"));
    }

    /// The reused-buffer verify agrees with argon2's own `verify_password` on hashes of
    /// other variants, versions and parameters (accounts hashed before a parameter
    /// change), and refuses damaged strings.
    #[test]
    fn verify_matches_the_reference_implementation() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let variants = [
            (
                Algorithm::Argon2id,
                Version::V0x13,
                Params::new(19_456, 2, 1, None),
            ),
            (
                Algorithm::Argon2id,
                Version::V0x13,
                Params::new(8_192, 3, 2, Some(48)),
            ),
            (
                Algorithm::Argon2i,
                Version::V0x13,
                Params::new(4_096, 2, 1, None),
            ),
            (
                Algorithm::Argon2d,
                Version::V0x10,
                Params::new(4_096, 1, 1, Some(16)),
            ),
        ];
        for (algorithm, version, params) in variants {
            let argon2 = Argon2::new(algorithm, version, params.unwrap());
            let salt = SaltString::generate(&mut OsRng);
            let phc = argon2
                .hash_password(b"correct horse", &salt)
                .unwrap()
                .to_string();
            let parsed = PasswordHash::new(&phc).unwrap();
            for guess in ["correct horse", "correct horsE", "", "correct horse "] {
                assert_eq!(
                    verify(guess, &phc),
                    argon2.verify_password(guess.as_bytes(), &parsed).is_ok(),
                    "{guess:?} against {phc}"
                );
            }
            assert!(verify("correct horse", &phc), "{phc}");
            // Another character inside the stored hash never matches.
            let at = phc.len() - 10;
            let other = if &phc[at..at + 1] == "A" { "B" } else { "A" };
            let damaged = format!("{}{other}{}", &phc[..at], &phc[at + 1..]);
            assert!(!verify("correct horse", &damaged), "{damaged}");
            assert!(!verify(
                "correct horse",
                &phc.replacen("$argon2", "$argon3", 1)
            ));
        }
    }

    #[test]
    fn kept_blocks_are_zeroed_and_reused() {
        let pool = Mutex::new(Vec::new());
        let first = with_blocks(&pool, 64, |blocks| {
            blocks.iter_mut().for_each(|b| b.as_mut().fill(0xA5));
            blocks.as_ptr()
        });
        {
            let spares = pool.lock().unwrap();
            assert_eq!(
                spares.len(),
                1,
                "the buffer is kept for the next computation"
            );
            assert!(spares[0].iter().all(|b| b.as_ref().iter().all(|&w| w == 0)));
        }
        let again = with_blocks(&pool, 64, |blocks| blocks.as_ptr());
        assert_eq!(first, again, "the kept buffer is used again");
        // A computation needing more blocks than the kept buffer gets a new one.
        let bigger = with_blocks(&pool, 128, |blocks| blocks.len());
        assert_eq!(bigger, 128);
    }
}
