//! What the supervisor and the exec proxies share: signals picked up by a dedicated
//! thread, stdin pumped to the guest, the guest's output written to our stdio.

use skiff_runtime::vm::relay::{relay, Relayed, Stdio, Until};
use skiff_runtime::{AgentConn, AgentSender};

/// Signals meant for the container: blocked everywhere, taken by a sigwait thread.
const FORWARDED: [i32; 9] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGTERM,
    libc::SIGALRM,
    libc::SIGWINCH,
    libc::SIGCONT,
];

/// Blocks the forwarded signals; call before any thread starts.
pub fn block_signals() {
    if let Err(e) = skiff_sys::signals::block(&FORWARDED) {
        tracing::warn!("block signals: {e}");
    }
}

pub fn spawn_signal_thread(on_signal: impl Fn(i32) + Send + 'static) {
    skiff_sys::signals::spawn_forwarder(&FORWARDED, on_signal);
}

/// Copies our stdin to `stream` until EOF, then closes the process's stdin.
pub fn spawn_stdin_pump(sender: AgentSender, stream: u32) {
    sender.spawn_stdin_pump(stream, std::io::stdin());
}

/// Relays an exec'd process's output to our stdout/stderr until it exits.
pub fn relay_output(agent: &mut AgentConn, stream: u32) -> Relayed {
    let mut out = Stdio::new(Some(agent.sender()), stream);
    relay(agent, stream, Until::Exit, &mut out)
}
