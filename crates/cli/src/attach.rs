//! Attaching the local terminal to a process in a microVM: stdout/stderr out, stdin in,
//! signals and window-size changes forwarded. Shared by `vm run`, `run`, `start -a` and
//! `exec`.

use skiff_proto::ExitStatus;
use skiff_runtime::AgentSender;

/// Shell-style exit code of a process status, for our own exit.
pub fn exit_code(s: ExitStatus) -> u8 {
    u8::try_from(s.code().clamp(0, 255)).unwrap_or(255)
}

/// Copies our stdin to `stream` until EOF, then closes the process's stdin.
pub fn spawn_stdin_pump(sender: AgentSender, stream: u32) {
    sender.spawn_stdin_pump(stream, std::io::stdin());
}

pub use skiff_runtime::vm::forward::SignalTarget;
