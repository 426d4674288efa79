//! What the supervisor and the exec proxies share: signals picked up by a dedicated
//! thread, stdin pumped to the guest, the guest's output written to our stdio.

use std::io::Write;

use skiff_proto::ExitStatus;
use skiff_runtime::{AgentConn, AgentSender, Event};

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

/// Relays `stream`'s output to our stdout/stderr until the agent reports its exit (or
/// with `until_power_off`, until the VM powers off). Returns the status if reported.
pub fn relay_output(
    agent: &mut AgentConn,
    stream: u32,
    until_power_off: bool,
) -> (Option<ExitStatus>, Option<String>) {
    let mut status = None;
    let mut error = None;
    loop {
        match agent.next_event() {
            Ok(Some(Event::Stdout { stream: s, bytes })) if s == stream => {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(&bytes).and_then(|()| out.flush());
            }
            Ok(Some(Event::Stderr { stream: s, bytes })) if s == stream => {
                let _ = std::io::stderr().write_all(&bytes);
            }
            Ok(Some(Event::Exited {
                stream: s,
                status: st,
            })) if s == stream => {
                status = Some(st);
                if !until_power_off {
                    break;
                }
            }
            Ok(Some(Event::Error { message, .. })) => {
                tracing::warn!("guest agent: {message}");
                error = Some(message);
            }
            Ok(Some(Event::PoweringOff)) | Ok(None) => break,
            Ok(Some(_)) => {}
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        }
    }
    (status, error)
}
