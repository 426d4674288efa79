//! The on-disk container of a snapshot and its parser, which treats the file as
//! hostile: size capped before reading, magic and version checked, checksum verified
//! before parsing, every count and length bounded, every KVM structure size matched.
//!
//! A snapshot is a directory:
//!
//! ```text
//! DIR/state    header (64 bytes) + JSON body (the `Snapshot`)
//! DIR/memory   guest RAM, regions back to back (sparse: zero pages are holes)
//! ```
//!
//! Header, little-endian: magic `SKIFFSNP` (8), format version u32, flags u32 (0),
//! body length u64, memory file length u64, SHA-256 of the body (32).

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::state::{DeviceBackend, Snapshot};
use crate::arch::layout::{ram_ranges, MAX_VIRTIO_DEVICES};
use crate::vmm_config::MAX_VCPUS;

/// First bytes of a state file.
pub const MAGIC: [u8; 8] = *b"SKIFFSNP";
/// The only format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// Header length.
pub const HEADER_LEN: usize = 64;
/// Largest body accepted (a 32-vCPU snapshot is well under 4 MiB).
pub const MAX_BODY_LEN: u64 = 16 << 20;
/// Name of the state file inside a snapshot directory.
pub const STATE_FILE: &str = "state";
/// Name of the guest memory file inside a snapshot directory.
pub const MEMORY_FILE: &str = "memory";

/// Most MSRs per vCPU, CPUID entries per vCPU, queues per device, string length.
const MAX_MSRS: usize = 1024;
const MAX_CPUID_ENTRIES: usize = kvm_bindings::KVM_MAX_CPUID_ENTRIES;
const MAX_QUEUES: usize = 16;
const MAX_STRING: usize = 4096;
const MAX_SERIAL_BUFFER: usize = 64 * 1024;

/// Why a snapshot cannot be written, read or restored.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("not a skiff snapshot (bad magic)")]
    BadMagic,
    #[error("snapshot format version {found} is not supported (this build reads {supported})")]
    Version { found: u32, supported: u32 },
    #[error("snapshot state is truncated: {0}")]
    Truncated(&'static str),
    #[error("snapshot state is too large: {0} bytes (limit {MAX_BODY_LEN})")]
    TooLarge(u64),
    #[error("snapshot state has {0} bytes after the body")]
    TrailingBytes(u64),
    #[error("snapshot state checksum mismatch (file corrupt or modified)")]
    Checksum,
    #[error("snapshot state is malformed: {0}")]
    Malformed(String),
    #[error("snapshot state is invalid: {0}")]
    Invalid(String),
    #[error("snapshot field {what}: {found} bytes, expected {expected}")]
    FieldSize {
        what: &'static str,
        expected: usize,
        found: usize,
    },
    #[error("guest memory file is {found} bytes, the snapshot says {expected}")]
    MemorySize { expected: u64, found: u64 },
    #[error("snapshot was taken on {taken}, this host is {here}: {why}")]
    Host {
        taken: String,
        here: String,
        why: &'static str,
    },
    #[error("snapshot does not match the restore request: {0}")]
    Mismatch(String),
    #[error("cannot snapshot: {0}")]
    Unsupported(String),
    #[error("KVM {what}: {source}")]
    Kvm {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Header + body bytes of `snapshot`, whose memory file is `memory_len` bytes.
pub fn encode(snapshot: &Snapshot, memory_len: u64) -> Result<Vec<u8>, SnapshotError> {
    let body = serde_json::to_vec(snapshot).map_err(|e| SnapshotError::Malformed(e.to_string()))?;
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&memory_len.to_le_bytes());
    out.extend_from_slice(&Sha256::digest(&body));
    out.extend_from_slice(&body);
    Ok(out)
}

/// A parsed, verified and validated state file.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub snapshot: Snapshot,
    /// Length the memory file must have.
    pub memory_len: u64,
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Parses state-file bytes (never panics, whatever the input).
pub fn decode(bytes: &[u8]) -> Result<Parsed, SnapshotError> {
    if bytes.len() < MAGIC.len() {
        return Err(SnapshotError::Truncated("header"));
    }
    if bytes[..MAGIC.len()] != MAGIC {
        return Err(SnapshotError::BadMagic);
    }
    if bytes.len() < HEADER_LEN {
        return Err(SnapshotError::Truncated("header"));
    }
    let version = le_u32(bytes, 8);
    if version != FORMAT_VERSION {
        return Err(SnapshotError::Version {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    if le_u32(bytes, 12) != 0 {
        return Err(SnapshotError::Invalid("unknown header flags".into()));
    }
    let body_len = le_u64(bytes, 16);
    if body_len > MAX_BODY_LEN {
        return Err(SnapshotError::TooLarge(body_len));
    }
    let memory_len = le_u64(bytes, 24);
    let have = (bytes.len() - HEADER_LEN) as u64;
    if have < body_len {
        return Err(SnapshotError::Truncated("body"));
    }
    if have > body_len {
        return Err(SnapshotError::TrailingBytes(have - body_len));
    }
    let body = &bytes[HEADER_LEN..];
    if Sha256::digest(body).as_slice() != &bytes[32..64] {
        return Err(SnapshotError::Checksum);
    }
    let snapshot: Snapshot =
        serde_json::from_slice(body).map_err(|e| SnapshotError::Malformed(e.to_string()))?;
    validate(&snapshot, memory_len)?;
    Ok(Parsed {
        snapshot,
        memory_len,
    })
}

/// Reads and parses `dir/state`, reading at most the largest valid size.
pub fn read_state(dir: &Path) -> Result<Parsed, SnapshotError> {
    let path = dir.join(STATE_FILE);
    let file = std::fs::File::open(&path).map_err(io_err(&path))?;
    let limit = HEADER_LEN as u64 + MAX_BODY_LEN;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err(&path))?;
    if bytes.len() as u64 > limit {
        return Err(SnapshotError::TooLarge(bytes.len() as u64));
    }
    decode(&bytes)
}

fn invalid(why: impl Into<String>) -> SnapshotError {
    SnapshotError::Invalid(why.into())
}

/// Bounds every count and length and checks internal consistency; also decodes every
/// KVM structure once so a wrong size is reported before anything is restored.
pub fn validate(s: &Snapshot, memory_len: u64) -> Result<(), SnapshotError> {
    let m = &s.machine;
    if m.memory_mib == 0 || m.memory_mib > 65536 {
        return Err(invalid(format!("memory of {} MiB", m.memory_mib)));
    }
    let expected: Vec<(u64, u64)> = ram_ranges(m.memory_mib << 20);
    if m.regions != expected {
        return Err(invalid("memory regions do not match the memory size"));
    }
    let total: u64 = expected.iter().map(|r| r.1).sum();
    if memory_len != total {
        return Err(SnapshotError::MemorySize {
            expected: total,
            found: memory_len,
        });
    }
    if m.vcpus == 0 || m.vcpus > MAX_VCPUS || s.vcpus.len() != usize::from(m.vcpus) {
        return Err(invalid(format!(
            "{} vCPU states for {} vCPUs (1..={MAX_VCPUS})",
            s.vcpus.len(),
            m.vcpus
        )));
    }
    for (i, v) in s.vcpus.iter().enumerate() {
        if usize::from(v.id) != i {
            return Err(invalid("vCPU ids out of order"));
        }
        if v.cpuid.is_empty() || v.cpuid.len() > MAX_CPUID_ENTRIES {
            return Err(invalid(format!(
                "vCPU {i}: {} CPUID entries",
                v.cpuid.len()
            )));
        }
        if v.msrs.len() > MAX_MSRS {
            return Err(invalid(format!("vCPU {i}: {} MSRs", v.msrs.len())));
        }
        super::kvm_state::decode_vcpu(v)?;
    }
    if s.vm.irqchips.len() != 3 {
        return Err(invalid("expected 3 irqchip states (PIC, PIC, IOAPIC)"));
    }
    super::kvm_state::decode_vm(&s.vm)?;
    if s.serial.in_buffer.len() > MAX_SERIAL_BUFFER {
        return Err(invalid("serial input buffer too large"));
    }
    if s.devices.len() > MAX_VIRTIO_DEVICES {
        return Err(invalid(format!("{} devices", s.devices.len())));
    }
    for (i, d) in s.devices.iter().enumerate() {
        if d.transport.queues.len() > MAX_QUEUES {
            return Err(invalid(format!("device {i}: too many queues")));
        }
        let strings: Vec<&str> = match &d.backend {
            DeviceBackend::Block { path, serial, .. } => [Some(path.as_str()), serial.as_deref()]
                .into_iter()
                .flatten()
                .collect(),
            DeviceBackend::Net { tap, .. } => vec![tap.as_str()],
            DeviceBackend::Vsock { uds_path, .. } => vec![uds_path.as_str()],
        };
        if strings
            .iter()
            .any(|t| t.len() > MAX_STRING || t.contains('\0'))
        {
            return Err(invalid(format!("device {i}: bad path or name")));
        }
    }
    if s.host.cpu_vendor.len() > 64 || s.host.kernel.len() > 256 {
        return Err(invalid("host description too long"));
    }
    // Each raw field's size is bounded by its decoder (MAX_RAW_BYTES).
    Ok(())
}

#[cfg(test)]
mod tests {
    use kvm_bindings::{
        kvm_clock_data, kvm_cpuid_entry2, kvm_debugregs, kvm_irqchip, kvm_lapic_state,
        kvm_mp_state, kvm_pit_state2, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
    };
    use proptest::prelude::*;
    use skiff_virtio::transport::{QueueSnapshot, TransportState};

    use super::*;
    use crate::snapshot::state::{
        DeviceState, HostInfo, MachineState, Raw, SerialRegs, VcpuState, VmState,
    };

    fn sample() -> (Snapshot, u64) {
        let memory_mib = 128;
        let regions = ram_ranges(memory_mib << 20);
        let memory_len = regions.iter().map(|r| r.1).sum();
        let irqchips = [0u32, 1, 2]
            .iter()
            .map(|&chip_id| {
                Raw::of(&kvm_irqchip {
                    chip_id,
                    ..Default::default()
                })
            })
            .collect();
        let vcpu = VcpuState {
            id: 0,
            cpuid: vec![Raw::of(&kvm_cpuid_entry2::default())],
            regs: Raw::of(&kvm_regs::default()),
            sregs: Raw::of(&kvm_sregs::default()),
            xsave: Raw::of(&kvm_xsave::default()),
            xcrs: Raw::of(&kvm_xcrs::default()),
            debugregs: Raw::of(&kvm_debugregs::default()),
            msrs: vec![(0x10, 1234), (0x1a0, 1)],
            lapic: Raw::of(&kvm_lapic_state::default()),
            events: Raw::of(&kvm_vcpu_events::default()),
            mp_state: Raw::of(&kvm_mp_state::default()),
            tsc_khz: Some(2_000_000),
        };
        let queue = QueueSnapshot {
            max_size: 256,
            size: 16,
            ready: true,
            desc_table: 0x200_0000,
            avail_ring: 0x200_0100,
            used_ring: 0x200_0200,
            next_avail: 7,
            next_used: 7,
            event_idx: false,
        };
        let snapshot = Snapshot {
            host: HostInfo {
                cpu_vendor: "GenuineIntel".into(),
                kvm_api: 12,
                pvm: true,
                kernel: "6.1.0".into(),
            },
            machine: MachineState {
                memory_mib,
                vcpus: 1,
                regions,
                reported_status: None,
            },
            vm: VmState {
                irqchips,
                pit: Raw::of(&kvm_pit_state2::default()),
                clock: Raw::of(&kvm_clock_data::default()),
            },
            vcpus: vec![vcpu],
            serial: SerialRegs {
                baud_divisor_low: 12,
                baud_divisor_high: 0,
                interrupt_enable: 0,
                interrupt_identification: 1,
                line_control: 3,
                line_status: 0x60,
                modem_control: 8,
                modem_status: 0,
                scratch: 0,
                in_buffer: Vec::new(),
            },
            devices: vec![DeviceState {
                backend: DeviceBackend::Block {
                    path: "/tmp/disk.img".into(),
                    read_only: false,
                    serial: Some("disk0".into()),
                    sectors: 2048,
                },
                transport: TransportState {
                    device_type: 2,
                    device_features_sel: 1,
                    driver_features_sel: 1,
                    driver_features: 1 << 32,
                    queue_sel: 0,
                    status: 0xf,
                    config_generation: 0,
                    interrupt_status: 0,
                    activated: true,
                    queues: vec![queue],
                },
            }],
        };
        (snapshot, memory_len)
    }

    fn encoded() -> Vec<u8> {
        let (s, len) = sample();
        encode(&s, len).unwrap()
    }

    /// A state file with `body` and a correct checksum.
    fn with_body(body: &[u8], memory_len: u64) -> Vec<u8> {
        let mut out = encoded()[..HEADER_LEN].to_vec();
        out[16..24].copy_from_slice(&(body.len() as u64).to_le_bytes());
        out[24..32].copy_from_slice(&memory_len.to_le_bytes());
        out[32..64].copy_from_slice(&Sha256::digest(body));
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn round_trips() {
        let (s, len) = sample();
        let parsed = decode(&encode(&s, len).unwrap()).unwrap();
        assert_eq!(parsed.snapshot, s);
        assert_eq!(parsed.memory_len, len);
    }

    #[test]
    fn header_damage_is_named() {
        let good = encoded();
        let mut bad = good.clone();
        bad[0] = b'X';
        assert!(matches!(decode(&bad), Err(SnapshotError::BadMagic)));
        let mut bad = good.clone();
        bad[8] = 2;
        assert!(matches!(
            decode(&bad),
            Err(SnapshotError::Version { found: 2, .. })
        ));
        let mut bad = good.clone();
        bad[12] = 1;
        assert!(matches!(decode(&bad), Err(SnapshotError::Invalid(_))));
        let mut bad = good.clone();
        bad[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(decode(&bad), Err(SnapshotError::TooLarge(_))));
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(matches!(decode(&bad), Err(SnapshotError::Checksum)));
        let mut bad = good.clone();
        bad.push(b' ');
        assert!(matches!(decode(&bad), Err(SnapshotError::TrailingBytes(1))));
        let (s, len) = sample();
        assert!(matches!(
            decode(&encode(&s, len + 4096).unwrap()),
            Err(SnapshotError::MemorySize { .. })
        ));
    }

    #[test]
    fn every_truncation_is_refused() {
        let good = encoded();
        for n in 0..good.len() {
            match decode(&good[..n]) {
                Err(SnapshotError::Truncated(_)) => {}
                // A prefix shorter than the magic cannot be told from another file.
                Err(SnapshotError::BadMagic) if n < MAGIC.len() => {}
                other => panic!("prefix of {n} bytes: {other:?}"),
            }
        }
    }

    #[test]
    fn inconsistent_contents_are_refused() {
        let (s, len) = sample();
        let mut bad = s.clone();
        bad.vcpus[0].regs = Raw(vec![0; 3]);
        assert!(matches!(
            decode(&encode(&bad, len).unwrap()),
            Err(SnapshotError::FieldSize { what: "regs", .. })
        ));
        let mut bad = s.clone();
        bad.machine.vcpus = 2;
        assert!(decode(&encode(&bad, len).unwrap()).is_err());
        let mut bad = s.clone();
        bad.machine.memory_mib = 0;
        assert!(decode(&encode(&bad, len).unwrap()).is_err());
        let mut bad = s.clone();
        bad.vm.irqchips.swap(0, 2);
        assert!(decode(&encode(&bad, len).unwrap()).is_err());
        let mut bad = s.clone();
        bad.machine.regions[0].1 += 4096;
        assert!(decode(&encode(&bad, len).unwrap()).is_err());
        // Unknown fields are refused, not ignored.
        let body = serde_json::to_string(&s).unwrap();
        let extended = body.replacen("{", "{\"extra\":1,", 1);
        assert!(matches!(
            decode(&with_body(extended.as_bytes(), len)),
            Err(SnapshotError::Malformed(_))
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn any_bytes_are_an_error_not_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
            let mut framed = MAGIC.to_vec();
            framed.extend_from_slice(&bytes);
            prop_assert!(decode(&framed).is_err());
        }

        #[test]
        fn any_changed_byte_is_refused(at in any::<prop::sample::Index>(), flip in 1u8..=255) {
            let mut bytes = encoded();
            let i = at.index(bytes.len());
            bytes[i] ^= flip;
            prop_assert!(decode(&bytes).is_err(), "byte {} changed and still accepted", i);
        }

        /// Past the checksum (a file written to attack the parser, not a damaged one):
        /// any body is parsed without panicking.
        #[test]
        fn hostile_bodies_with_valid_checksums_never_panic(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let (s, len) = sample();
            let mut body = serde_json::to_vec(&s).unwrap();
            for (at, value) in edits {
                let i = at.index(body.len());
                body[i] = value;
            }
            let _ = decode(&with_body(&body, len));
            let keep = cut.index(body.len());
            let _ = decode(&with_body(&body[..keep], len));
        }
    }
}
