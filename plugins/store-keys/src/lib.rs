//! The artifact-store key rules from the WIT contract
//! (`wit/artifact-store/store.wit`), shared by every default store. Errors
//! are messages; each plugin wraps them in its own `invalid` error.

const MAX_KEY_BYTES: usize = 1024;

/// Refuse any key that could address something outside the store.
pub fn validate(key: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("invalid key `{}`: {why}", key.escape_default()));
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return bad("must be 1 to 1024 bytes");
    }
    if let Some(c) = key.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))) {
        return bad(&format!("character {c:?} is not allowed (use a-z A-Z 0-9 . _ - /)"));
    }
    if key.split('/').any(|seg| seg.is_empty() || seg == "." || seg == "..") {
        return bad("empty, `.` and `..` path segments are not allowed");
    }
    Ok(())
}

/// A digest as the host hands it over: 64 lowercase hex characters.
pub fn validate_sha256(sha: &str) -> Result<(), String> {
    if sha.len() == 64 && sha.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(format!("sha256 must be 64 lowercase hex characters, got `{}`", sha.escape_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_keys_and_refuses_escapes() {
        assert!(validate("artifacts/wsr_1/art_2").is_ok());
        for bad in ["", "/abs", "a/../b", "..", "a//b", "a/./b", "a\\b", "a b", "a\0b", "trailing/"] {
            assert!(validate(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn digests_are_lowercase_hex() {
        assert!(validate_sha256(&"a".repeat(64)).is_ok());
        assert!(validate_sha256(&"A".repeat(64)).is_err());
        assert!(validate_sha256("abc").is_err());
    }
}
