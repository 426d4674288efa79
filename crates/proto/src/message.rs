//! Control messages. JSON inside control frames, so new optional fields can be added
//! without a version bump; anything incompatible bumps [`crate::PROTOCOL_VERSION`].

use serde::{Deserialize, Serialize};

/// Most random bytes a `Reseed` carries (the kernel's input pool is 256 bits; more
/// only costs time).
pub const MAX_ENTROPY: usize = 256;

/// Used when a process spec carries no PATH, as Docker does.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Message {
    /// First message of each side. From the agent, `uptime_ms` is guest time since the
    /// kernel started (CLOCK_BOOTTIME), which is how boot time is measured.
    Hello {
        version: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        uptime_ms: Option<u64>,
    },
    /// Host -> agent: assemble the container's root filesystem. Answered by
    /// `ContainerCreated` or `Error { stream: None, .. }`.
    CreateContainer {
        /// Boxed: the largest message by far, and sent once per VM.
        config: Box<ContainerConfig>,
    },
    ContainerCreated,
    /// Host -> agent: start a process in the container. `main` marks the container's
    /// own process (there is one); others are `exec`s. Streams are numbered by the host,
    /// per connection, and must be non-zero and unused.
    Start {
        stream: u32,
        main: bool,
        process: ProcessSpec,
    },
    /// Agent -> host: the process runs with this guest pid.
    Started {
        stream: u32,
        pid: i32,
    },
    /// Host -> agent: deliver a signal to the process of `stream`.
    Signal {
        stream: u32,
        signal: i32,
    },
    /// Host -> agent: terminal window size of `stream`.
    Resize {
        stream: u32,
        rows: u16,
        cols: u16,
    },
    /// Agent -> host: the process ended; its stdout and stderr were drained first.
    Exited {
        stream: u32,
        status: ExitStatus,
    },
    /// Host -> agent: stop the container: `signal` to the main process, SIGKILL to
    /// everything after `grace_ms`, then sync, unmount and power off.
    Stop {
        signal: i32,
        grace_ms: u64,
    },
    /// Agent -> host: the container is stopped and the filesystems are unmounted; the
    /// VM powers off next.
    PoweringOff,
    /// Host -> agent: list the container's processes. Answered by `Processes` or
    /// `Error { stream: None, .. }`.
    ListProcesses,
    /// Agent -> host: the container's processes, numbered as its PID namespace sees
    /// them (at most [`MAX_PROCESSES`]).
    Processes {
        processes: Vec<GuestProcess>,
    },
    /// Host -> agent, first thing on a VM restored from a snapshot (which would
    /// otherwise repeat its twins' random numbers and carry the snapshot's clock): mix
    /// `entropy` (at most [`MAX_ENTROPY`] bytes) into the guest's random pool, reseed
    /// the kernel's CRNG, and set the wall clock to `realtime_ns` since the epoch.
    /// Answered by `Reseeded` or `Error { stream: None, .. }`.
    Reseed {
        entropy: Vec<u8>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        realtime_ns: Option<u64>,
    },
    Reseeded,
    /// Host -> agent: send the writable layer's changes (the overlay upper directory)
    /// as an OCI layer tar (`.wh.` whiteouts) in `Stdout` data frames on `stream`
    /// (non-zero, unused), then `Exited { stream, status: Exited(0) }`, or
    /// `Error { stream: Some(stream), .. }` if it cannot. The guest chooses these bytes:
    /// the host checks every entry before the tar becomes a layer.
    ExportChanges {
        stream: u32,
    },
    /// Either side: a request failed (`stream` names the process if there is one).
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stream: Option<u32>,
        message: String,
    },
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitStatus {
    Exited(i32),
    Signaled(i32),
}

impl ExitStatus {
    /// The status a shell (and Docker) reports: the exit code, or 128 + signal.
    pub fn code(self) -> i32 {
        match self {
            Self::Exited(c) => c,
            Self::Signaled(s) => 128 + s,
        }
    }
}

/// What the agent needs to build the container's root filesystem. Disks are named by
/// their virtio-blk serial (device ID), which is stable where device order is not.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerConfig {
    pub id: String,
    #[serde(default)]
    pub hostname: String,
    /// Read-only layer disks, bottom layer first.
    pub layers: Vec<String>,
    /// The writable layer's disk; `None` keeps the upper layer in guest memory.
    #[serde(default)]
    pub writable: Option<String>,
    /// Mount the root filesystem read-only (`--read-only`).
    #[serde(default)]
    pub readonly_rootfs: bool,
    /// Host directories shared into the container (`-v`), found by their mount tag
    /// (virtio-fs, or virtio-9p).
    /// Omitted when empty so agents that predate it still accept the message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shares: Vec<SharedDir>,
    /// The tag of a host directory to mount as the container's root instead of layers
    /// plus overlay (an OCI bundle's rootfs): writes go straight to the host directory.
    /// Omitted when unset so agents that predate it still accept the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_share: Option<String>,
    /// OCI `linux.maskedPaths`: hidden behind /dev/null (files) or an empty read-only
    /// tmpfs (directories). Omitted when empty so agents that predate it still accept it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub masked_paths: Vec<String>,
    /// OCI `linux.readonlyPaths`: bound onto themselves and remounted read-only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub readonly_paths: Vec<String>,
    /// The container's network: its interface and the /etc/hosts and /etc/resolv.conf
    /// to give it. `None` leaves the guest's network alone (only lo comes up).
    /// Omitted when unset so agents that predate it still accept the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Box<GuestNetwork>>,
    /// An OCI bundle's mount list in spec order, replacing the agent's default /proc,
    /// /sys and /dev. `None` (skiff's own containers) keeps the defaults and `shares`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mounts: Option<Vec<MountEntry>>,
}

/// Largest /etc/hosts or /etc/resolv.conf the agent writes.
pub const MAX_NET_FILE: usize = 64 * 1024;

/// How the agent sets up the guest's network before the container starts.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestNetwork {
    /// The virtio-net interface to configure; `None` means loopback only.
    #[serde(default)]
    pub interface: Option<GuestInterface>,
    /// Contents of the container's /etc/hosts (at most [`MAX_NET_FILE`] bytes).
    #[serde(default)]
    pub hosts: String,
    /// Contents of the container's /etc/resolv.conf (at most [`MAX_NET_FILE`] bytes).
    #[serde(default)]
    pub resolv_conf: String,
}

/// One interface, found by its MAC address, with a static IPv4 address.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestInterface {
    /// `02:73:0a:59:00:02`.
    pub mac: String,
    /// Dotted IPv4 address.
    pub address: String,
    pub prefix_len: u8,
    /// Default route via this address.
    #[serde(default)]
    pub gateway: Option<String>,
    /// The interface's MTU (68..=65535); `None` keeps the device's default. Omitted
    /// when unset so agents that predate it still accept the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

/// One mount of an OCI bundle, made at `target` (absolute, inside the container).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountEntry {
    pub target: String,
    pub kind: MountKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum MountKind {
    /// A bind of the share `tag`: the whole shared directory, or with `file` the
    /// one file of that name in it (single-file binds share the file's directory).
    Share {
        tag: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file: Option<String>,
        #[serde(default)]
        readonly: bool,
    },
    /// A filesystem by type (proc, sysfs, tmpfs, devpts, mqueue, cgroup, cgroup2) with
    /// `MS_*` flags and the filesystem's own options (`size=...,mode=...`).
    Fs {
        fstype: String,
        source: String,
        #[serde(default)]
        flags: u64,
        #[serde(default)]
        data: String,
    },
}

/// Most processes one `Processes` reply lists.
pub const MAX_PROCESSES: usize = 4096;

/// One process of the container, as `ps` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestProcess {
    /// In the container's PID namespace (its process is 1).
    pub pid: i32,
    /// 0 when the parent is outside the namespace (the agent, for execs).
    pub ppid: i32,
    pub uid: u32,
    /// The command line, or `[comm]` when it is empty; at most 4 KiB.
    pub cmd: String,
}

/// A host directory the VM exposes as a virtio-fs (or virtio-9p) device, mounted at
/// `target` (an absolute path inside the container).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedDir {
    pub tag: String,
    pub target: String,
    #[serde(default)]
    pub readonly: bool,
}

/// The parts of an OCI runtime-spec `process` that the agent applies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessSpec {
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default = "root_dir")]
    pub cwd: String,
    #[serde(default)]
    pub user: User,
    /// `-u` as typed (`NAME`, `UID`, `NAME:GROUP`...): when set, the agent resolves it
    /// against the container's /etc/passwd and /etc/group and it replaces `user`.
    /// Omitted when unset so agents that predate it still accept the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    #[serde(default)]
    pub rlimits: Vec<Rlimit>,
    #[serde(default)]
    pub no_new_privileges: bool,
    /// Run on a pseudo-terminal (`-t`); stdout and stderr are then one stream.
    #[serde(default)]
    pub terminal: bool,
    /// Initial terminal size as (rows, cols).
    #[serde(default)]
    pub console_size: Option<(u16, u16)>,
    /// Keep stdin open for `Stdin` data frames; otherwise it is /dev/null.
    #[serde(default)]
    pub stdin: bool,
    /// OCI `process.capabilities` as capability numbers; `None` keeps every capability
    /// (what `skiff` gives root). Omitted when unset so older agents accept the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Box<Capabilities>>,
    /// A seccomp filter compiled on the host, installed right before exec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp: Option<SeccompProgram>,
}

/// The five capability sets, each a list of capability numbers (CAP_CHOWN = 0...).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    #[serde(default)]
    pub bounding: Vec<u8>,
    #[serde(default)]
    pub effective: Vec<u8>,
    #[serde(default)]
    pub permitted: Vec<u8>,
    #[serde(default)]
    pub inheritable: Vec<u8>,
    #[serde(default)]
    pub ambient: Vec<u8>,
}

/// Longest seccomp program accepted (the kernel's BPF_MAXINSNS).
pub const MAX_SECCOMP_INSNS: usize = 4096;

/// A classic BPF seccomp program: each instruction is (code, jt, jf, k).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeccompProgram {
    pub instructions: Vec<(u16, u8, u8, u32)>,
    /// `seccomp(2)` filter flags: TSYNC (1), LOG (2), SPEC_ALLOW (4).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub flags: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

fn root_dir() -> String {
    "/".to_owned()
}

impl ProcessSpec {
    pub fn new(args: Vec<String>) -> Self {
        Self {
            args,
            env: vec![format!("PATH={DEFAULT_PATH}")],
            cwd: root_dir(),
            user: User::default(),
            user_name: None,
            rlimits: Vec::new(),
            no_new_privileges: false,
            terminal: false,
            console_size: None,
            stdin: false,
            capabilities: None,
            seccomp: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    #[serde(default)]
    pub additional_gids: Vec<u32>,
    #[serde(default)]
    pub umask: Option<u32>,
}

/// An OCI rlimit: `kind` as in the spec ("RLIMIT_NOFILE").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rlimit {
    #[serde(rename = "type")]
    pub kind: String,
    pub soft: u64,
    pub hard: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(ExitStatus::Exited(3).code(), 3);
        assert_eq!(ExitStatus::Signaled(9).code(), 137);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let json = r#"{"type":"stop","signal":15,"grace_ms":10,"extra":1}"#;
        assert!(serde_json::from_str::<Message>(json).is_err());
        let json = r#"{"type":"stop","signal":15,"grace_ms":10}"#;
        assert!(serde_json::from_str::<Message>(json).is_ok());
    }

    #[test]
    fn configs_without_shares_keep_the_old_wire_form() {
        let json = serde_json::to_string(&ContainerConfig::default()).unwrap();
        assert!(!json.contains("shares"), "{json}");
        assert!(!json.contains("network"), "{json}");
        let with = ContainerConfig {
            shares: vec![SharedDir {
                tag: "v0".into(),
                target: "/data".into(),
                readonly: true,
            }],
            ..ContainerConfig::default()
        };
        let back: ContainerConfig =
            serde_json::from_str(&serde_json::to_string(&with).unwrap()).unwrap();
        assert_eq!(back, with);
    }

    #[test]
    fn network_settings_round_trip() {
        let with = ContainerConfig {
            network: Some(Box::new(GuestNetwork {
                interface: Some(GuestInterface {
                    mac: "02:73:0a:59:00:02".into(),
                    address: "10.89.0.2".into(),
                    prefix_len: 24,
                    gateway: Some("10.89.0.1".into()),
                    mtu: Some(1400),
                }),
                hosts: "127.0.0.1\tlocalhost\n".into(),
                resolv_conf: "nameserver 10.0.0.53\n".into(),
            })),
            ..ContainerConfig::default()
        };
        let back: ContainerConfig =
            serde_json::from_str(&serde_json::to_string(&with).unwrap()).unwrap();
        assert_eq!(back, with);
    }

    #[test]
    fn processes_without_capabilities_or_seccomp_keep_the_old_wire_form() {
        let plain = ProcessSpec::new(vec!["true".into()]);
        let json = serde_json::to_string(&plain).unwrap();
        assert!(
            !json.contains("capabilities") && !json.contains("seccomp"),
            "{json}"
        );
        let with = ProcessSpec {
            capabilities: Some(Box::new(Capabilities {
                bounding: vec![0],
                ..Capabilities::default()
            })),
            seccomp: Some(SeccompProgram {
                instructions: vec![(6, 0, 0, 0x7fff_0000)],
                flags: 2,
            }),
            ..plain
        };
        let back: ProcessSpec =
            serde_json::from_str(&serde_json::to_string(&with).unwrap()).unwrap();
        assert_eq!(back, with);
        let json = serde_json::to_string(&ContainerConfig::default()).unwrap();
        assert!(
            !json.contains("masked") && !json.contains("readonly_paths"),
            "{json}"
        );
    }

    #[test]
    fn wrong_types_are_refused() {
        let json = r#"{"type":"signal","stream":"one","signal":15}"#;
        assert!(serde_json::from_str::<Message>(json).is_err());
        let json = r#"{"type":"signal","stream":-1,"signal":15}"#;
        assert!(serde_json::from_str::<Message>(json).is_err());
    }
}
