//! The protocol between skiff on the host and the guest agent (PID 1 in the microVM).
//!
//! One vsock stream carries a sequence of frames. Each frame is a 9-byte header (payload
//! length as u32 big-endian, a kind byte, a stream id as u32 big-endian) and a payload of
//! at most [`MAX_PAYLOAD`] bytes. Control frames carry a JSON [`Message`]; data frames
//! carry raw stdio bytes of one process stream. Both sides open with [`Message::Hello`]
//! and refuse a peer whose [`PROTOCOL_VERSION`] differs. The wire is hostile in both
//! directions: every length is checked before anything is allocated, and a malformed
//! frame is an error that ends the connection, never a panic.

mod frame;
mod message;

pub use frame::{read_frame, write_frame, DataKind, Frame, FrameError, HEADER_LEN, MAX_PAYLOAD};
pub use message::{
    Capabilities, ContainerConfig, ExitStatus, GuestInterface, GuestNetwork, GuestProcess, Message,
    MountEntry, MountKind, ProcessSpec, Rlimit, SeccompProgram, SharedDir, User, DEFAULT_PATH,
    MAX_ENTROPY, MAX_NET_FILE, MAX_PROCESSES, MAX_SECCOMP_INSNS,
};

/// Bumped on any incompatible change of frames or messages.
pub const PROTOCOL_VERSION: u32 = 1;

/// The vsock port the agent listens on for host-initiated connections
/// (`CONNECT 1024` through the VMM's UNIX socket).
pub const AGENT_PORT: u32 = 1024;

/// The vsock port on the host (CID 2) that the agent dials once it is ready; the VMM
/// forwards it to `<uds_path>_1025`, which the host listens on before boot.
pub const READY_PORT: u32 = 1025;

/// The host's vsock CID as seen from the guest.
pub const HOST_CID: u32 = 2;

/// The kernel command-line switch that makes the agent speak on the first serial port
/// (ttyS0) instead of vsock: VMs saved and restored with QEMU migration use it (QEMU
/// cannot migrate a vhost-user vsock device). The agent silences the kernel console
/// there once it takes the line.
pub const SERIAL_SWITCH: &str = "skiff.agent=ttyS0";

/// What the agent writes on the serial port once it waits for a host: a snapshot
/// template is saved when it appears.
pub const SERIAL_READY: &[u8] = b"\nskiff-agent: ready for a host\n";

/// The byte a host sends on the serial port to start a session; the agent answers
/// with its hello. (A serial line has no connect event of its own.)
pub const SERIAL_GO: u8 = 0x06;
