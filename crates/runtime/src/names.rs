//! What containers and networks are called: Docker's rule for the names people choose,
//! and the random 64-hex-digit IDs skiff gives them.

use crate::{Error, Result};

/// Docker's rule for user-chosen names (containers, networks): `[a-zA-Z0-9][a-zA-Z0-9_.-]*`,
/// at most `max` bytes.
pub fn is_valid_name(name: &str, max: usize) -> bool {
    name.len() <= max
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A new random ID: 32 bytes from the kernel's CSPRNG as 64 hex digits.
pub fn new_id() -> Result<String> {
    skiff_sys::random::hex(32).map_err(Error::io("read /dev/urandom"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dockers_rule() {
        assert!(is_valid_name("web-1.a_b", 64));
        for bad in ["", "-web", ".x", "a b", "a/b", "ä"] {
            assert!(!is_valid_name(bad, 64), "{bad}");
        }
        assert!(!is_valid_name(&"a".repeat(65), 64));
        assert_eq!(new_id().expect("id").len(), 64);
    }
}
