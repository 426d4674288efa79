//! Who this process runs as: what decides whether a host helper can drop to another
//! user or sandbox itself with namespaces.

/// The effective user id.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    euid() == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn euid_owns_what_we_create() {
        let f = tempfile::tempfile().unwrap();
        assert_eq!(f.metadata().unwrap().uid(), euid());
        assert_eq!(is_root(), euid() == 0);
    }
}
