//! How a guest ended and which exit status the VMM process reports for it.

/// The VMM failed (bad configuration, missing kernel, KVM error): the guest never ran
/// or was stopped by the VMM. A one-line reason is printed on stderr.
pub const EXIT_VMM_ERROR: i32 = 125;
/// The guest crashed: triple fault, KVM internal error or failed VM entry.
pub const EXIT_GUEST_CRASH: i32 = 124;

/// Why the guest stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestExit {
    /// Reset through the i8042 controller (Linux `reboot=k`) or a KVM reset event.
    Reset,
    /// Power-off or halt.
    Shutdown,
    /// The guest can no longer run.
    Crash(String),
    /// The VMM stopped the guest after saving a snapshot (`snapshot DIR exit`).
    Snapshotted,
}

impl GuestExit {
    /// Exit status of the VMM process: the status the guest reported through the
    /// status port if any (clean exits only), else 0; [`EXIT_GUEST_CRASH`] on a crash.
    pub fn exit_code(&self, reported: Option<u8>) -> i32 {
        match self {
            GuestExit::Reset | GuestExit::Shutdown => reported.map_or(0, i32::from),
            GuestExit::Snapshotted => 0,
            GuestExit::Crash(_) => EXIT_GUEST_CRASH,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(GuestExit::Reset.exit_code(None), 0);
        assert_eq!(GuestExit::Reset.exit_code(Some(3)), 3);
        assert_eq!(GuestExit::Shutdown.exit_code(Some(0)), 0);
        assert_eq!(
            GuestExit::Crash("x".into()).exit_code(Some(0)),
            EXIT_GUEST_CRASH
        );
    }
}
