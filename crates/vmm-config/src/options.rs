//! The device options of `skiff-vmm` (`--disk`, `--net`, `--fs`, `--console`, the vsock
//! device): their types, their parsers, and the formatting that is the exact inverse
//! of each parser (or refuses the value).
//!
//! Option strings are `,`-separated, so a comma can never be part of a value; parsing
//! and formatting work on bytes, so non-UTF-8 paths pass through unchanged.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// Longest virtio-blk serial (`id=`): what `GET_ID` can return.
pub const MAX_DISK_ID_LEN: usize = 20;
/// Longest virtio-fs mount tag.
pub const MAX_FS_TAG_LEN: usize = 36;
/// Longest network interface name (IFNAMSIZ less the NUL).
pub const MAX_TAP_LEN: usize = 15;

/// Why an option string was refused, or why a value cannot be written as one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    #[error("disk: empty path")]
    EmptyDiskPath,
    #[error("disk {}: id must be 1..=20 ASCII characters", .path.display())]
    BadDiskId { path: PathBuf },
    #[error("disk {}: unknown option `{option}` (ro, rw, id=SERIAL)", .path.display())]
    UnknownDiskOption { path: PathBuf, option: String },
    #[error("net: bad mac `{0}`")]
    BadMac(String),
    #[error("net: mac `{0}` needs 6 bytes")]
    MacLength(String),
    #[error("net: unknown option `{0}` (tap=NAME, mac=XX:..)")]
    UnknownNetOption(String),
    #[error("net: tap=NAME (1..=15 bytes of UTF-8) is required")]
    MissingTap,
    #[error("fs: unknown option `{0}` (tag=T, socket=PATH)")]
    UnknownFsOption(String),
    #[error("fs: tag=T (1..=36 bytes of UTF-8) is required")]
    MissingFsTag,
    #[error("fs: socket=PATH is required")]
    MissingFsSocket,
    #[error("console: empty path")]
    EmptyConsole,
    /// Formatting: the value would not parse back to itself.
    #[error("{what} {value:?} cannot be passed to skiff-vmm: {why}")]
    Unwritable {
        what: &'static str,
        /// The value, for the message only (lossy where it is not UTF-8).
        value: String,
        why: &'static str,
    },
}

fn unwritable(what: &'static str, value: &OsStr, why: &'static str) -> SpecError {
    SpecError::Unwritable {
        what,
        value: value.to_string_lossy().into_owned(),
        why,
    }
}

/// A value that may go between commas: not empty, no comma.
fn check_value(what: &'static str, value: &OsStr) -> Result<(), SpecError> {
    if value.is_empty() {
        Err(unwritable(what, value, "it is empty"))
    } else if value.as_bytes().contains(&b',') {
        Err(unwritable(what, value, "it contains a comma"))
    } else {
        Ok(())
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn os(bytes: &[u8]) -> OsString {
    OsString::from_vec(bytes.to_vec())
}

/// Joins `parts` into one option string.
fn join(parts: &[&[u8]]) -> OsString {
    OsString::from_vec(parts.join(&b","[..]))
}

/// How a disk is attached (`--disk PATH[,ro][,id=SERIAL]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    /// Raw image file on the host.
    pub path: PathBuf,
    /// Refuse guest writes (`VIRTIO_BLK_F_RO`, writes fail with IOERR).
    pub read_only: bool,
    /// Serial returned by `GET_ID` (at most 20 bytes are used).
    pub serial: Option<String>,
}

fn valid_disk_id(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_DISK_ID_LEN && id.is_ascii()
}

/// Parses `PATH[,ro][,id=SERIAL]`.
pub fn parse_disk_spec(spec: impl AsRef<OsStr>) -> Result<DiskConfig, SpecError> {
    let mut parts = spec.as_ref().as_bytes().split(|&b| b == b',');
    let path = parts
        .next()
        .filter(|p| !p.is_empty())
        .ok_or(SpecError::EmptyDiskPath)?;
    let mut disk = DiskConfig {
        path: PathBuf::from(os(path)),
        read_only: false,
        serial: None,
    };
    for opt in parts {
        match opt {
            b"ro" => disk.read_only = true,
            b"rw" => disk.read_only = false,
            _ => match opt.strip_prefix(b"id=") {
                Some(id) if valid_disk_id(id) => disk.serial = Some(lossy(id)),
                Some(_) => return Err(SpecError::BadDiskId { path: disk.path }),
                None => {
                    return Err(SpecError::UnknownDiskOption {
                        path: disk.path,
                        option: lossy(opt),
                    })
                }
            },
        }
    }
    Ok(disk)
}

impl DiskConfig {
    /// The `--disk` value that [`parse_disk_spec`] turns back into `self`.
    pub fn to_arg(&self) -> Result<OsString, SpecError> {
        check_value("disk path", self.path.as_os_str())?;
        let mut parts: Vec<&[u8]> = vec![self.path.as_os_str().as_bytes()];
        if self.read_only {
            parts.push(b"ro");
        }
        let id;
        if let Some(serial) = &self.serial {
            check_value("disk id", OsStr::new(serial))?;
            if !valid_disk_id(serial.as_bytes()) {
                return Err(unwritable(
                    "disk id",
                    OsStr::new(serial),
                    "it must be 1..=20 ASCII characters",
                ));
            }
            id = format!("id={serial}");
            parts.push(id.as_bytes());
        }
        Ok(join(&parts))
    }
}

/// A virtio-net device on a host TAP interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// TAP interface name (opened, or created with CAP_NET_ADMIN).
    pub tap: String,
    /// Guest MAC address.
    pub mac: [u8; 6],
}

/// A `--net` option as written: the MAC may be left to [`default_mac`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetSpec {
    pub tap: String,
    pub mac: Option<[u8; 6]>,
}

impl NetSpec {
    /// The device, with the default MAC of the `index`th `--net` where none was given.
    pub fn into_config(self, index: usize) -> NetConfig {
        NetConfig {
            tap: self.tap,
            mac: self.mac.unwrap_or_else(|| default_mac(index)),
        }
    }
}

/// The MAC of the `index`th `--net` that names none: `02:53:4b:49:46:<index>`.
pub fn default_mac(index: usize) -> [u8; 6] {
    [
        0x02,
        0x53,
        0x4b,
        0x49,
        0x46,
        u8::try_from(index).unwrap_or(0xff),
    ]
}

/// Parses `XX:XX:XX:XX:XX:XX` (hex digits, either case).
pub fn parse_mac(text: &str) -> Result<[u8; 6], SpecError> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|h| {
            if h.len() == 2 && h.bytes().all(|b| b.is_ascii_hexdigit()) {
                u8::from_str_radix(h, 16).ok()
            } else {
                None
            }
        })
        .collect::<Option<_>>()
        .ok_or_else(|| SpecError::BadMac(text.to_owned()))?;
    bytes
        .try_into()
        .map_err(|_| SpecError::MacLength(text.to_owned()))
}

/// Writes a MAC as [`parse_mac`] reads it (lower case).
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn valid_tap(tap: &str) -> bool {
    !tap.is_empty() && tap.len() <= MAX_TAP_LEN
}

/// Parses `tap=NAME[,mac=XX:XX:XX:XX:XX:XX]`, leaving a missing MAC unset.
pub fn parse_net_option(spec: impl AsRef<OsStr>) -> Result<NetSpec, SpecError> {
    let (mut tap, mut mac) = (None, None);
    for opt in spec.as_ref().as_bytes().split(|&b| b == b',') {
        if let Some(name) = opt.strip_prefix(b"tap=") {
            tap = Some(name);
        } else if let Some(text) = opt.strip_prefix(b"mac=") {
            let text = std::str::from_utf8(text).map_err(|_| SpecError::BadMac(lossy(text)))?;
            mac = Some(parse_mac(text)?);
        } else {
            return Err(SpecError::UnknownNetOption(lossy(opt)));
        }
    }
    let tap = tap
        .and_then(|t| std::str::from_utf8(t).ok())
        .filter(|t| valid_tap(t))
        .ok_or(SpecError::MissingTap)?;
    Ok(NetSpec {
        tap: tap.to_owned(),
        mac,
    })
}

/// Parses `tap=NAME[,mac=XX:XX:XX:XX:XX:XX]`; `index` picks the default MAC.
pub fn parse_net_spec(spec: impl AsRef<OsStr>, index: usize) -> Result<NetConfig, SpecError> {
    Ok(parse_net_option(spec)?.into_config(index))
}

impl NetConfig {
    /// The `--net` value that [`parse_net_spec`] turns back into `self` (the MAC is
    /// always written, so the device's position does not matter).
    pub fn to_arg(&self) -> Result<OsString, SpecError> {
        check_value("tap name", OsStr::new(&self.tap))?;
        if !valid_tap(&self.tap) {
            return Err(unwritable(
                "tap name",
                OsStr::new(&self.tap),
                "it must be 1..=15 bytes",
            ));
        }
        Ok(format!("tap={},mac={}", self.tap, format_mac(&self.mac)).into())
    }
}

/// A virtio-fs device served by a vhost-user backend (`virtiofsd`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsConfig {
    /// Mount tag the guest sees (1..=36 bytes).
    pub tag: String,
    /// The backend's vhost-user socket.
    pub socket: PathBuf,
}

fn valid_fs_tag(tag: &str) -> bool {
    !tag.is_empty() && tag.len() <= MAX_FS_TAG_LEN
}

/// Parses `tag=T,socket=PATH`.
pub fn parse_fs_spec(spec: impl AsRef<OsStr>) -> Result<FsConfig, SpecError> {
    let (mut tag, mut socket) = (None, None);
    for opt in spec.as_ref().as_bytes().split(|&b| b == b',') {
        if let Some(t) = opt.strip_prefix(b"tag=") {
            tag = Some(t);
        } else if let Some(p) = opt.strip_prefix(b"socket=") {
            socket = Some(p);
        } else {
            return Err(SpecError::UnknownFsOption(lossy(opt)));
        }
    }
    let tag = tag
        .and_then(|t| std::str::from_utf8(t).ok())
        .filter(|t| valid_fs_tag(t))
        .ok_or(SpecError::MissingFsTag)?;
    let socket = socket
        .filter(|p| !p.is_empty())
        .ok_or(SpecError::MissingFsSocket)?;
    Ok(FsConfig {
        tag: tag.to_owned(),
        socket: PathBuf::from(os(socket)),
    })
}

impl FsConfig {
    /// The `--fs` value that [`parse_fs_spec`] turns back into `self`.
    pub fn to_arg(&self) -> Result<OsString, SpecError> {
        check_value("fs tag", OsStr::new(&self.tag))?;
        if !valid_fs_tag(&self.tag) {
            return Err(unwritable(
                "fs tag",
                OsStr::new(&self.tag),
                "it must be 1..=36 bytes",
            ));
        }
        check_value("fs socket", self.socket.as_os_str())?;
        let tag = format!("tag={}", self.tag);
        let mut socket = b"socket=".to_vec();
        socket.extend_from_slice(self.socket.as_os_str().as_bytes());
        Ok(join(&[tag.as_bytes(), &socket]))
    }
}

/// A vsock device with the UNIX-socket host side (`--vsock UDS_PATH --guest-cid N`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsockConfig {
    /// Guest context ID (3 or more).
    pub guest_cid: u64,
    /// Host UNIX socket path `U`; guest connections to port P go to `U_P`.
    pub uds_path: PathBuf,
}

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

/// The words `--console` reads as something other than a file.
const CONSOLE_WORDS: [&str; 4] = ["stdout", "-", "off", "none"];

/// Parses `stdout` (or `-`), `off` (or `none`) or a file path.
pub fn parse_console(spec: impl AsRef<OsStr>) -> Result<ConsoleConfig, SpecError> {
    let spec = spec.as_ref();
    Ok(match spec.to_str() {
        Some("stdout" | "-") => ConsoleConfig::Stdout,
        Some("off" | "none") => ConsoleConfig::Off,
        Some("") => return Err(SpecError::EmptyConsole),
        _ => ConsoleConfig::File(PathBuf::from(spec)),
    })
}

impl ConsoleConfig {
    /// The `--console` value that [`parse_console`] turns back into `self`.
    pub fn to_arg(&self) -> Result<OsString, SpecError> {
        match self {
            Self::Stdout => Ok("stdout".into()),
            Self::Off => Ok("off".into()),
            Self::File(path) => {
                let p = path.as_os_str();
                if p.is_empty() {
                    Err(unwritable("console file", p, "it is empty"))
                } else if CONSOLE_WORDS.iter().any(|w| p == OsStr::new(w)) {
                    Err(unwritable(
                        "console file",
                        p,
                        "it would be read as a keyword (write ./NAME)",
                    ))
                } else {
                    Ok(p.to_owned())
                }
            }
        }
    }
}

/// `--NAME=VALUE` as one argument: a value starting with `-` stays a value.
pub(crate) fn flag(name: &str, value: impl AsRef<OsStr>) -> OsString {
    let mut arg = OsString::from(format!("--{name}="));
    arg.push(value.as_ref());
    arg
}

/// `--NAME=PATH`.
pub(crate) fn path_flag(name: &str, path: &Path) -> OsString {
    flag(name, path.as_os_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn disk_specs() {
        let d = parse_disk_spec("/a/b.img,ro,id=layer0").unwrap();
        assert_eq!(d.path, PathBuf::from("/a/b.img"));
        assert!(d.read_only);
        assert_eq!(d.serial.as_deref(), Some("layer0"));
        assert!(!parse_disk_spec("x.img").unwrap().read_only);
        assert!(!parse_disk_spec("x.img,ro,rw").unwrap().read_only);
        assert_eq!(parse_disk_spec(""), Err(SpecError::EmptyDiskPath));
        assert_eq!(parse_disk_spec(",ro"), Err(SpecError::EmptyDiskPath));
        assert!(parse_disk_spec("x,bogus").is_err());
        assert!(parse_disk_spec("x,,ro").is_err());
        assert!(parse_disk_spec("x,id=").is_err());
        assert!(parse_disk_spec("x,id=123456789012345678901").is_err());
        assert!(parse_disk_spec("x,id=été").is_err());
    }

    #[test]
    fn disk_round_trips_odd_paths() {
        for path in [
            "/a/b.img",
            "/with space/x y.img",
            "-leading-dash",
            "ro",
            "id=x",
            "/a=b/c",
            "rel/a.img",
        ] {
            for (read_only, serial) in [(false, None), (true, Some("layer0")), (false, Some("rw"))]
            {
                let d = DiskConfig {
                    path: path.into(),
                    read_only,
                    serial: serial.map(Into::into),
                };
                assert_eq!(parse_disk_spec(d.to_arg().unwrap()).unwrap(), d, "{path}");
            }
        }
        let non_utf8 = DiskConfig {
            path: PathBuf::from(OsStr::from_bytes(b"/x/\xff\xfe.img")),
            read_only: true,
            serial: Some("a".into()),
        };
        assert_eq!(
            parse_disk_spec(non_utf8.to_arg().unwrap()).unwrap(),
            non_utf8
        );
    }

    #[test]
    fn disk_formatting_refuses_what_would_not_parse_back() {
        let disk = |path: &str, serial: Option<&str>| DiskConfig {
            path: path.into(),
            read_only: false,
            serial: serial.map(Into::into),
        };
        assert!(disk("/a,b.img", None).to_arg().is_err());
        assert!(disk("/a/b.img,ro", None).to_arg().is_err());
        assert!(disk("", None).to_arg().is_err());
        assert!(disk("/a", Some("")).to_arg().is_err());
        assert!(disk("/a", Some("a,b")).to_arg().is_err());
        assert!(disk("/a", Some(&"x".repeat(21))).to_arg().is_err());
        assert!(disk("/a", Some("été")).to_arg().is_err());
    }

    #[test]
    fn net_specs() {
        let n = parse_net_spec("tap=tap0,mac=02:00:00:00:00:0a", 0).unwrap();
        assert_eq!((n.tap.as_str(), n.mac), ("tap0", [2, 0, 0, 0, 0, 10]));
        assert_eq!(parse_net_spec("tap=t1", 3).unwrap().mac[5], 3);
        assert_eq!(parse_net_spec("tap=t1", 300).unwrap().mac[5], 0xff);
        assert_eq!(
            parse_net_spec("mac=02:00:00:00:00:0a", 0),
            Err(SpecError::MissingTap)
        );
        assert_eq!(parse_net_spec("tap=", 0), Err(SpecError::MissingTap));
        assert_eq!(
            parse_net_spec("", 0),
            Err(SpecError::UnknownNetOption("".into()))
        );
        assert_eq!(
            parse_net_spec("tap=0123456789abcdef", 0),
            Err(SpecError::MissingTap)
        );
        assert!(parse_net_spec("tap=t,mac=02:00", 0).is_err());
        assert!(parse_net_spec("tap=t,mac=zz:00:00:00:00:00", 0).is_err());
        assert!(parse_net_spec("tap=t,mac=+2:00:00:00:00:00", 0).is_err());
        assert!(parse_net_spec("tap=t,mac=02:00:00:00:00:00:00", 0).is_err());
        assert!(parse_net_spec("tap=t,mac=", 0).is_err());
        assert!(parse_net_spec("tap=t,x=1", 0).is_err());
        assert!(parse_net_spec(OsStr::from_bytes(b"tap=\xff"), 0).is_err());
    }

    #[test]
    fn net_round_trips() {
        for (tap, mac) in [("tap0", [2, 0x73, 0xa, 0x59, 0, 2]), ("t", [0xff; 6])] {
            let n = NetConfig {
                tap: tap.into(),
                mac,
            };
            // Any index: the MAC is written out.
            assert_eq!(parse_net_spec(n.to_arg().unwrap(), 7).unwrap(), n);
        }
        assert_eq!(
            parse_mac("02:AB:cd:00:00:01").unwrap(),
            [2, 0xab, 0xcd, 0, 0, 1]
        );
        assert_eq!(format_mac(&[2, 0xab, 0xcd, 0, 0, 1]), "02:ab:cd:00:00:01");
        let bad = |tap: &str| {
            NetConfig {
                tap: tap.into(),
                mac: [0; 6],
            }
            .to_arg()
        };
        assert!(bad("").is_err());
        assert!(bad("a,mac=00:00:00:00:00:01").is_err());
        assert!(bad("0123456789abcdef").is_err());
    }

    #[test]
    fn fs_specs() {
        let f = parse_fs_spec("tag=data,socket=/run/v.sock").unwrap();
        assert_eq!(
            (f.tag.as_str(), f.socket),
            ("data", PathBuf::from("/run/v.sock"))
        );
        assert_eq!(parse_fs_spec("tag=data"), Err(SpecError::MissingFsSocket));
        assert_eq!(parse_fs_spec("socket=/x"), Err(SpecError::MissingFsTag));
        assert_eq!(
            parse_fs_spec("tag=x,socket="),
            Err(SpecError::MissingFsSocket)
        );
        assert!(parse_fs_spec(format!("tag={},socket=/x", "t".repeat(37))).is_err());
        assert!(parse_fs_spec("tag=a,socket=/x,cache=never").is_err());
        assert!(parse_fs_spec("").is_err());
    }

    #[test]
    fn fs_round_trips_and_refuses_commas() {
        for (tag, socket) in [
            ("data", "/run/v.sock"),
            (&*"t".repeat(36), "/with space/tag=x/socket=y.sock"),
        ] {
            let f = FsConfig {
                tag: tag.into(),
                socket: socket.into(),
            };
            assert_eq!(parse_fs_spec(f.to_arg().unwrap()).unwrap(), f);
        }
        let fs = |tag: &str, socket: &str| {
            FsConfig {
                tag: tag.into(),
                socket: socket.into(),
            }
            .to_arg()
        };
        assert!(fs("a,b", "/x").is_err());
        assert!(fs("a", "/x,y").is_err());
        assert!(fs("", "/x").is_err());
        assert!(fs("a", "").is_err());
        assert!(fs(&"t".repeat(37), "/x").is_err());
    }

    #[test]
    fn console_specs() {
        assert_eq!(parse_console("stdout"), Ok(ConsoleConfig::Stdout));
        assert_eq!(parse_console("-"), Ok(ConsoleConfig::Stdout));
        assert_eq!(parse_console("off"), Ok(ConsoleConfig::Off));
        assert_eq!(parse_console("none"), Ok(ConsoleConfig::Off));
        assert_eq!(
            parse_console("/tmp/c"),
            Ok(ConsoleConfig::File("/tmp/c".into()))
        );
        assert_eq!(parse_console(""), Err(SpecError::EmptyConsole));
        for c in [
            ConsoleConfig::Stdout,
            ConsoleConfig::Off,
            ConsoleConfig::File("/a b,c/console".into()),
            ConsoleConfig::File("./off".into()),
        ] {
            assert_eq!(parse_console(c.to_arg().unwrap()).unwrap(), c);
        }
        for word in ["off", "none", "stdout", "-", ""] {
            assert!(ConsoleConfig::File(word.into()).to_arg().is_err(), "{word}");
        }
    }

    fn path_bytes() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>().prop_filter("no NUL", |b| *b != 0), 0..40)
    }

    proptest! {
        /// Formatting either refuses a disk or writes one that parses back to it.
        #[test]
        fn any_disk_round_trips_or_is_refused(
            path in path_bytes(),
            read_only in any::<bool>(),
            serial in proptest::option::of("[ -~]{0,22}"),
        ) {
            let d = DiskConfig { path: PathBuf::from(OsString::from_vec(path)), read_only, serial };
            if let Ok(arg) = d.to_arg() {
                prop_assert_eq!(parse_disk_spec(arg), Ok(d));
            }
        }

        #[test]
        fn any_fs_round_trips_or_is_refused(tag in "\\PC{0,40}", socket in path_bytes()) {
            let f = FsConfig { tag, socket: PathBuf::from(OsString::from_vec(socket)) };
            if let Ok(arg) = f.to_arg() {
                prop_assert_eq!(parse_fs_spec(arg), Ok(f));
            }
        }

        #[test]
        fn any_console_round_trips_or_is_refused(path in path_bytes()) {
            let c = ConsoleConfig::File(PathBuf::from(OsString::from_vec(path)));
            if let Ok(arg) = c.to_arg() {
                prop_assert_eq!(parse_console(arg), Ok(c));
            }
        }

        /// Parsing never panics, whatever the bytes.
        #[test]
        fn parsers_take_any_bytes(spec in proptest::collection::vec(any::<u8>(), 0..60)) {
            let spec = OsString::from_vec(spec);
            let _ = parse_disk_spec(&spec);
            let _ = parse_net_spec(&spec, 0);
            let _ = parse_fs_spec(&spec);
            let _ = parse_console(&spec);
        }
    }
}
