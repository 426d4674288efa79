//! Random bytes from the kernel's CSPRNG (getrandom(2) through /dev/urandom), for IDs,
//! names and a restored guest's entropy.

use std::fs::File;
use std::io::{self, Read};

/// `n` bytes from /dev/urandom.
pub fn bytes(n: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf)
}

/// `n` random bytes as 2n lowercase hex digits.
pub fn hex(n: usize) -> io::Result<String> {
    Ok(bytes(n)?.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_is_twice_as_long_and_varies() {
        let a = super::hex(16).expect("random");
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, super::hex(16).expect("random"));
    }
}
