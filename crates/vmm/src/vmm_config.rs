//! Plain configuration of a microVM, independent of how it was given (CLI, runtime).

use std::path::PathBuf;

pub use skiff_virtio::block::DiskConfig;

/// Default kernel command line when none is given.
pub const DEFAULT_CMDLINE: &str =
    "console=ttyS0 reboot=k panic=-1 i8042.noaux i8042.nomux i8042.dumbkbd";
/// Most vCPUs (bounded by the MP table fitting in the EBDA).
pub const MAX_VCPUS: u8 = 32;

/// Where guest console (COM1) output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleConfig {
    /// The VMM's stdout.
    Stdout,
    /// Appended to a file (created if missing).
    File(PathBuf),
    /// Discarded.
    Off,
}

/// A vsock device with the UNIX-socket host side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsockConfig {
    /// Guest context ID (3 or more).
    pub guest_cid: u64,
    /// Host UNIX socket path `U`; guest connections to port P go to `U_P`.
    pub uds_path: PathBuf,
}

/// A virtio-net device on a host TAP interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// TAP interface name (opened, or created with CAP_NET_ADMIN).
    pub tap: String,
    /// Guest MAC address.
    pub mac: [u8; 6],
}

/// Parses `tap=NAME[,mac=XX:XX:XX:XX:XX:XX]`; `index` picks the default MAC.
pub fn parse_net_spec(spec: &str, index: usize) -> Result<NetConfig, String> {
    let mut tap = None;
    let mut mac = [
        0x02,
        0x53,
        0x4b,
        0x49,
        0x46,
        u8::try_from(index).unwrap_or(0xff),
    ];
    for opt in spec.split(',') {
        if let Some(name) = opt.strip_prefix("tap=") {
            tap = Some(name.to_string());
        } else if let Some(text) = opt.strip_prefix("mac=") {
            let bytes: Vec<u8> = text
                .split(':')
                .map(|h| {
                    if h.len() == 2 {
                        u8::from_str_radix(h, 16).ok()
                    } else {
                        None
                    }
                })
                .collect::<Option<_>>()
                .ok_or(format!("net: bad mac `{text}`"))?;
            mac = bytes
                .try_into()
                .map_err(|_| format!("net: mac `{text}` needs 6 bytes"))?;
        } else {
            return Err(format!("net: unknown option `{opt}` (tap=NAME, mac=XX:..)"));
        }
    }
    let tap = tap
        .filter(|t| !t.is_empty())
        .ok_or("net: tap=NAME is required")?;
    Ok(NetConfig { tap, mac })
}

/// A virtio-fs device served by a vhost-user backend (`virtiofsd`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsConfig {
    /// Mount tag the guest sees (1..=36 bytes).
    pub tag: String,
    /// The backend's vhost-user socket.
    pub socket: PathBuf,
}

/// Parses `tag=T,socket=PATH`.
pub fn parse_fs_spec(spec: &str) -> Result<FsConfig, String> {
    let (mut tag, mut socket) = (None, None);
    for opt in spec.split(',') {
        if let Some(t) = opt.strip_prefix("tag=") {
            tag = Some(t.to_string());
        } else if let Some(p) = opt.strip_prefix("socket=") {
            socket = Some(PathBuf::from(p));
        } else {
            return Err(format!("fs: unknown option `{opt}` (tag=T, socket=PATH)"));
        }
    }
    let tag = tag
        .filter(|t| !t.is_empty() && t.len() <= 36)
        .ok_or("fs: tag=T (1..=36 bytes) is required")?;
    let socket = socket
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or("fs: socket=PATH is required")?;
    Ok(FsConfig { tag, socket })
}

/// Everything needed to build and boot one microVM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    /// ELF vmlinux (or test guest ELF) or bzImage.
    pub kernel: PathBuf,
    /// Optional initramfs (cpio, possibly compressed).
    pub initramfs: Option<PathBuf>,
    /// Kernel command line; virtio-mmio devices are appended to it.
    pub cmdline: String,
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// Number of vCPUs.
    pub vcpus: u8,
    /// virtio-blk disks, in order (the guest sees vda, vdb, ...).
    pub disks: Vec<DiskConfig>,
    /// virtio-net devices, in order (after the disks).
    pub nets: Vec<NetConfig>,
    /// Optional vsock device (after disks and nets).
    pub vsock: Option<VsockConfig>,
    /// virtio-fs devices served by vhost-user backends (after vsock). Guest RAM is a
    /// shared memfd when there is any.
    pub fs: Vec<FsConfig>,
    /// Console destination.
    pub console: ConsoleConfig,
    /// Print the boot-timer result on stderr.
    pub report_boot_time: bool,
    /// Install the per-thread seccomp filters (see [`crate::seccomp`]).
    pub seccomp: bool,
}

/// Parses `PATH[,ro][,id=SERIAL]`.
pub fn parse_disk_spec(spec: &str) -> Result<DiskConfig, String> {
    let mut parts = spec.split(',');
    let path = parts
        .next()
        .filter(|p| !p.is_empty())
        .ok_or("disk: empty path")?;
    let mut disk = DiskConfig {
        path: PathBuf::from(path),
        read_only: false,
        serial: None,
    };
    for opt in parts {
        match opt {
            "ro" => disk.read_only = true,
            "rw" => disk.read_only = false,
            _ => match opt.strip_prefix("id=") {
                Some(id) if !id.is_empty() && id.len() <= 20 && id.is_ascii() => {
                    disk.serial = Some(id.to_string())
                }
                Some(_) => return Err(format!("disk {path}: id must be 1..=20 ASCII characters")),
                None => {
                    return Err(format!(
                        "disk {path}: unknown option `{opt}` (ro, rw, id=SERIAL)"
                    ))
                }
            },
        }
    }
    Ok(disk)
}

/// Parses `stdout`, `off` or a file path.
pub fn parse_console(spec: &str) -> ConsoleConfig {
    match spec {
        "stdout" | "-" => ConsoleConfig::Stdout,
        "off" | "none" => ConsoleConfig::Off,
        path => ConsoleConfig::File(PathBuf::from(path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_specs() {
        let d = parse_disk_spec("/a/b.img,ro,id=layer0").unwrap();
        assert_eq!(d.path, PathBuf::from("/a/b.img"));
        assert!(d.read_only);
        assert_eq!(d.serial.as_deref(), Some("layer0"));
        assert!(!parse_disk_spec("x.img").unwrap().read_only);
        assert!(parse_disk_spec("").is_err());
        assert!(parse_disk_spec("x,bogus").is_err());
        assert!(parse_disk_spec("x,id=").is_err());
        assert!(parse_disk_spec("x,id=123456789012345678901").is_err());
    }

    #[test]
    fn net_specs() {
        let n = parse_net_spec("tap=tap0,mac=02:00:00:00:00:0a", 0).unwrap();
        assert_eq!((n.tap.as_str(), n.mac), ("tap0", [2, 0, 0, 0, 0, 10]));
        assert_eq!(parse_net_spec("tap=t1", 3).unwrap().mac[5], 3);
        assert!(parse_net_spec("mac=02:00:00:00:00:0a", 0).is_err());
        assert!(parse_net_spec("tap=t,mac=02:00", 0).is_err());
        assert!(parse_net_spec("tap=t,mac=zz:00:00:00:00:00", 0).is_err());
        assert!(parse_net_spec("tap=t,x=1", 0).is_err());
    }

    #[test]
    fn fs_specs() {
        let f = parse_fs_spec("tag=data,socket=/run/v.sock").unwrap();
        assert_eq!(
            (f.tag.as_str(), f.socket),
            ("data", PathBuf::from("/run/v.sock"))
        );
        assert!(parse_fs_spec("tag=data").is_err());
        assert!(parse_fs_spec("socket=/x").is_err());
        assert!(parse_fs_spec(&format!("tag={},socket=/x", "t".repeat(37))).is_err());
        assert!(parse_fs_spec("tag=a,socket=/x,cache=never").is_err());
    }

    #[test]
    fn console_specs() {
        assert_eq!(parse_console("stdout"), ConsoleConfig::Stdout);
        assert_eq!(parse_console("off"), ConsoleConfig::Off);
        assert_eq!(
            parse_console("/tmp/c"),
            ConsoleConfig::File("/tmp/c".into())
        );
    }
}
