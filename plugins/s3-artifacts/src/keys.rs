//! The artifact-store key rules from the WIT contract.

use crate::crownest::host::types::Error;

const MAX_KEY_BYTES: usize = 1024;

/// Refuse any key that could address something outside the store.
pub fn validate(key: &str) -> Result<(), Error> {
    let bad = |why: &str| Err(Error::Invalid(format!("invalid key `{}`: {why}", key.escape_default())));
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

#[cfg(test)]
mod tests {
    use super::validate;

    #[test]
    fn accepts_plain_keys_and_refuses_escapes() {
        assert!(validate("artifacts/wsr_1/art_2").is_ok());
        for bad in ["", "/abs", "a/../b", "..", "a//b", "a/./b", "a\\b", "a b", "a\0b", "trailing/"] {
            assert!(validate(bad).is_err(), "{bad:?} must be refused");
        }
    }
}

pub fn validate_sha256(sha: &str) -> Result<(), Error> {
    if sha.len() == 64 && sha.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(Error::Invalid(format!("sha256 must be 64 lowercase hex characters, got `{}`", sha.escape_default())))
    }
}
