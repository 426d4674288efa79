//! The control API of a running microVM: one request line, one reply line, over a
//! UNIX socket (`--api-socket`), one client at a time.
//!
//! ```text
//! pause                       -> ok paused
//! resume                      -> ok running
//! status                      -> ok running|paused
//! snapshot DIR [then]         -> ok {"dir":..,"state_bytes":..,"memory_bytes":..,
//!                                    "memory_allocated_bytes":..,"pause_us":..,"save_us":..}
//!   then = resume (run again), pause (stay paused) or exit (the VMM exits, status 0);
//!   default: the state before the request.
//! anything else / failure     -> error <one line>
//! ```
//!
//! The client is whoever can open the socket (created 0600 by the VMM's user); lines
//! are still capped and parsed strictly.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::devices::Devices;
use crate::exit::GuestExit;
use crate::snapshot::format::MEMORY_FILE;
use crate::snapshot::state::{DeviceBackend, DeviceState, MachineState, Snapshot, VmShape};
use crate::snapshot::{
    kvm_state, memory_regions, write_memory, write_state, HostInfo, SnapshotError, STATE_FILE,
};
use crate::vstate::control::{ControlError, VcpuControl};
use crate::vstate::vm::Vm;
use crate::GuestMemoryMmap;

/// Longest request line.
const MAX_LINE: u64 = 4096;
/// How long vCPUs may take to stop (generous: on a busy host a vCPU thread may wait
/// a long time to be scheduled; a timeout is an error reply, never a hang).
const PAUSE_TIMEOUT: Duration = Duration::from_secs(60);

/// Creates the API socket (refusing to replace an existing file), mode 0600.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Everything the API thread acts on.
pub struct Api {
    pub vm: Arc<Vm>,
    pub mem: Arc<GuestMemoryMmap>,
    pub devices: Arc<Devices>,
    pub control: Arc<VcpuControl>,
    pub shape: VmShape,
}

/// What to do after a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    Resume,
    Pause,
    Exit,
}

/// A parsed request.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    Pause,
    Resume,
    Status,
    Snapshot { dir: PathBuf, then: Option<Then> },
}

fn parse(line: &str) -> Result<Request, String> {
    let mut words = line.split_ascii_whitespace();
    let request = match words.next() {
        Some("pause") => Request::Pause,
        Some("resume") => Request::Resume,
        Some("status") => Request::Status,
        Some("snapshot") => {
            let dir = words
                .next()
                .ok_or("usage: snapshot DIR [resume|pause|exit]")?;
            let then = match words.next() {
                None => None,
                Some("resume") => Some(Then::Resume),
                Some("pause") => Some(Then::Pause),
                Some("exit") => Some(Then::Exit),
                Some(other) => {
                    return Err(format!("snapshot: unknown `{other}` (resume, pause, exit)"))
                }
            };
            Request::Snapshot {
                dir: PathBuf::from(dir),
                then,
            }
        }
        Some(other) => {
            return Err(format!(
                "unknown request `{other}` (pause, resume, status, snapshot)"
            ))
        }
        None => return Err("empty request".into()),
    };
    if words.next().is_some() {
        return Err("too many arguments".into());
    }
    Ok(request)
}

/// Sizes and timings of one snapshot.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotReport {
    pub state_bytes: u64,
    pub memory_bytes: u64,
    pub memory_allocated_bytes: u64,
    pub pause_us: u128,
    pub save_us: u128,
}

impl Api {
    /// Serves clients until the process exits.
    pub fn serve(self, listener: UnixListener) {
        for stream in listener.incoming() {
            match stream {
                Ok(stream) => self.serve_client(stream),
                Err(e) => warn!("API socket: {e}"),
            }
        }
    }

    fn serve_client(&self, stream: UnixStream) {
        let Ok(mut writer) = stream.try_clone() else {
            warn!("API socket: cannot clone the client stream");
            return;
        };
        let mut reader = BufReader::new(std::io::Read::take(stream, u64::MAX));
        loop {
            reader.get_mut().set_limit(MAX_LINE + 1);
            let mut line = String::new();
            let request = match reader.read_line(&mut line) {
                Ok(0) => return,
                Ok(_) if !line.ends_with('\n') => {
                    Err("request line too long or unterminated".to_string())
                }
                Ok(_) => parse(line.trim_end()),
                Err(e) => Err(format!("reading the request: {e}")),
            };
            let fatal = request.is_err() && !line.ends_with('\n');
            let (reply, exit) = match request {
                Ok(request) => self.handle(request),
                Err(e) => (Err(e), None),
            };
            let text = match reply {
                Ok(ok) => format!("ok {ok}\n"),
                Err(e) => format!("error {}\n", e.replace('\n', " ")),
            };
            // The reply is on its way before the VMM may exit: a client never sees a
            // dropped connection instead of the answer to its request.
            let sent = writer
                .write_all(text.as_bytes())
                .and_then(|()| writer.flush());
            if let Err(e) = &sent {
                warn!("API socket: cannot send the reply: {e}");
            }
            if let Some(exit) = exit {
                let _ = writer.shutdown(std::net::Shutdown::Both);
                self.devices.request_exit(exit);
                return;
            }
            if sent.is_err() || fatal {
                return;
            }
        }
    }

    fn state_word(&self) -> &'static str {
        if self.control.pause_requested() {
            "paused"
        } else {
            "running"
        }
    }

    /// Carries out `request`: the reply line, and how the VM must end once the reply
    /// is sent (`snapshot DIR exit`).
    fn handle(&self, request: Request) -> (Result<String, String>, Option<GuestExit>) {
        match request {
            Request::Pause => (
                self.control
                    .pause(PAUSE_TIMEOUT)
                    .map(|()| "paused".into())
                    .map_err(|e| e.to_string()),
                None,
            ),
            Request::Resume => {
                self.control.resume();
                (Ok("running".into()), None)
            }
            Request::Status => (Ok(self.state_word().into()), None),
            Request::Snapshot { dir, then } => self.handle_snapshot(&dir, then),
        }
    }

    fn handle_snapshot(
        &self,
        dir: &Path,
        then: Option<Then>,
    ) -> (Result<String, String>, Option<GuestExit>) {
        let was_paused = self.control.pause_requested();
        let started = Instant::now();
        let result = self
            .control
            .pause(PAUSE_TIMEOUT)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                let pause_us = started.elapsed().as_micros();
                self.snapshot(dir, pause_us).map_err(|e| e.to_string())
            });
        let then = then.unwrap_or(if was_paused {
            Then::Pause
        } else {
            Then::Resume
        });
        let mut exit = None;
        match (&result, then) {
            (Ok(_), Then::Exit) => {
                info!("snapshot written to {}; exiting", dir.display());
                exit = Some(GuestExit::Snapshotted);
            }
            (Ok(_), Then::Pause) => {}
            // A failed snapshot never leaves the guest stopped by surprise.
            _ if !was_paused || then == Then::Resume => self.control.resume(),
            _ => {}
        }
        let reply = result.map(|r| {
            format!(
                "{{\"dir\":{},\"state_bytes\":{},\"memory_bytes\":{},\"memory_allocated_bytes\":{},\"pause_us\":{},\"save_us\":{}}}",
                serde_json::Value::String(dir.display().to_string()),
                r.state_bytes,
                r.memory_bytes,
                r.memory_allocated_bytes,
                r.pause_us,
                r.save_us
            )
        });
        (reply, exit)
    }

    /// Saves the (paused) VM into `dir`. Every transport stays locked throughout, so
    /// the device thread cannot touch guest memory or queues while they are saved.
    fn snapshot(&self, dir: &Path, pause_us: u128) -> Result<SnapshotReport, ControlError> {
        let started = Instant::now();
        let slots = self.devices.virtio_slots();
        let guards: Vec<_> = slots
            .iter()
            .map(|s| s.transport.lock().unwrap_or_else(PoisonError::into_inner))
            .collect();
        let mut devices = Vec::with_capacity(guards.len());
        for (i, transport) in guards.iter().enumerate() {
            let unsupported = |why: String| {
                SnapshotError::Unsupported(format!(
                    "device {i} (virtio type {}): {why}",
                    transport.device().device_type()
                ))
            };
            let state = transport
                .save_state()
                .map_err(|e| unsupported(e.to_string()))?;
            let backend = self
                .shape
                .backends
                .get(i)
                .filter(|b| backend_type(b) == state.device_type)
                .cloned()
                .ok_or_else(|| unsupported("no backend description to restore it from".into()))?;
            devices.push(DeviceState {
                backend,
                transport: state,
            });
        }
        let vcpus = self.control.save_all()?;
        let vm = kvm_state::save_vm(self.vm.fd())?;
        let (serial, reported_status) = self.devices.save_legacy();
        let snapshot = Snapshot {
            host: HostInfo::current(self.vm.kvm().get_api_version()),
            machine: MachineState {
                memory_mib: self.shape.memory_mib,
                vcpus: self.shape.vcpus,
                regions: memory_regions(&self.mem),
                reported_status,
            },
            vm,
            vcpus,
            serial,
            devices,
        };
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SnapshotError::Io {
                path: path.display().to_string(),
                source,
            }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        // The state file marks a complete snapshot: drop an old one before the memory
        // file changes under it.
        let state_path = dir.join(STATE_FILE);
        match std::fs::remove_file(&state_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io(&state_path)(e).into())
            }
            _ => {}
        }
        let memory_tmp = dir.join(format!("{MEMORY_FILE}.tmp"));
        let memory_bytes = write_memory(&self.mem, &memory_tmp)?;
        let memory_path = dir.join(MEMORY_FILE);
        std::fs::rename(&memory_tmp, &memory_path).map_err(io(&memory_path))?;
        let memory_allocated_bytes = std::fs::metadata(&memory_path)
            .map(|m| m.blocks() * 512)
            .unwrap_or(0);
        let state_bytes = write_state(dir, &snapshot, memory_bytes)?;
        drop(guards);
        Ok(SnapshotReport {
            state_bytes,
            memory_bytes,
            memory_allocated_bytes,
            pause_us,
            save_us: started.elapsed().as_micros(),
        })
    }
}

fn backend_type(b: &DeviceBackend) -> u32 {
    use skiff_virtio::device_type;
    match b {
        DeviceBackend::Block { .. } => device_type::BLOCK,
        DeviceBackend::Net { .. } => device_type::NET,
        DeviceBackend::Vsock { .. } => device_type::VSOCK,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_strictly() {
        assert_eq!(parse("pause"), Ok(Request::Pause));
        assert_eq!(parse("resume"), Ok(Request::Resume));
        assert_eq!(parse("status"), Ok(Request::Status));
        assert_eq!(
            parse("snapshot /tmp/s exit"),
            Ok(Request::Snapshot {
                dir: "/tmp/s".into(),
                then: Some(Then::Exit)
            })
        );
        assert_eq!(
            parse("snapshot /tmp/s"),
            Ok(Request::Snapshot {
                dir: "/tmp/s".into(),
                then: None
            })
        );
        for bad in ["", "snapshot", "snapshot d later", "pause now", "reboot"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
