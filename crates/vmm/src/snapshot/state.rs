//! What a snapshot holds, as plain serde types. KVM structures are stored as their
//! exact bytes ([`Raw`]) and only turned back into structures after their length was
//! checked against the structure, so a hostile file cannot smuggle in a short or long
//! one.

use serde::{Deserialize, Serialize};
use skiff_virtio::transport::TransportState;
use zerocopy::{FromBytes, Immutable, IntoBytes};

use super::format::SnapshotError;

/// Bytes of one KVM structure, hex-encoded in the file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Raw(pub Vec<u8>);

impl Raw {
    /// The bytes of `value`.
    pub fn of<T: IntoBytes + Immutable>(value: &T) -> Self {
        Self(value.as_bytes().to_vec())
    }

    /// `T` from these bytes, which must be exactly `size_of::<T>()` long.
    pub fn to<T: FromBytes>(&self, what: &'static str) -> Result<T, SnapshotError> {
        T::read_from_bytes(&self.0).map_err(|_| SnapshotError::FieldSize {
            what,
            expected: std::mem::size_of::<T>(),
            found: self.0.len(),
        })
    }
}

impl Serialize for Raw {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut text = String::with_capacity(self.0.len() * 2);
        for b in &self.0 {
            text.push(char::from(HEX[usize::from(b >> 4)]));
            text.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        s.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let digits = text.as_bytes();
        if digits.len() % 2 != 0 || digits.len() > 2 * MAX_RAW_BYTES {
            return Err(serde::de::Error::custom("raw field: bad hex length"));
        }
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            _ => Err(serde::de::Error::custom("raw field: not lowercase hex")),
        };
        digits
            .chunks_exact(2)
            .map(|pair| Ok((nibble(pair[0])? << 4) | nibble(pair[1])?))
            .collect::<Result<Vec<u8>, D::Error>>()
            .map(Raw)
    }
}

/// Largest KVM structure stored (kvm_xsave is 4 KiB; margin for growth).
pub const MAX_RAW_BYTES: usize = 16 * 1024;

/// Where the snapshot was taken: restore refuses a host it cannot run on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostInfo {
    /// CPUID vendor string (`GenuineIntel`, `AuthenticAMD`).
    pub cpu_vendor: String,
    /// KVM API version.
    pub kvm_api: i32,
    /// Whether KVM was the PVM (software) flavour.
    pub pvm: bool,
    /// Host kernel release (informational).
    pub kernel: String,
}

/// Machine shape the guest was booted with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineState {
    pub memory_mib: u64,
    pub vcpus: u8,
    /// Guest memory regions in file order: (guest physical address, length).
    pub regions: Vec<(u64, u64)>,
    /// Status byte the guest reported on port 0x501 so far, if any.
    pub reported_status: Option<u8>,
}

/// VM-wide KVM state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmState {
    /// kvm_irqchip for the PIC master, PIC slave and IOAPIC, in that order.
    pub irqchips: Vec<Raw>,
    /// kvm_pit_state2.
    pub pit: Raw,
    /// kvm_clock_data (kvmclock).
    pub clock: Raw,
}

/// One vCPU's KVM state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VcpuState {
    pub id: u8,
    /// kvm_cpuid_entry2 entries the vCPU ran with.
    pub cpuid: Vec<Raw>,
    pub regs: Raw,
    pub sregs: Raw,
    /// kvm_xsave (covers the x87/SSE/AVX state KVM_GET_FPU would give).
    pub xsave: Raw,
    pub xcrs: Raw,
    pub debugregs: Raw,
    /// (index, value) of every MSR KVM lists as needing save plus the boot MSRs.
    pub msrs: Vec<(u32, u64)>,
    pub lapic: Raw,
    pub events: Raw,
    pub mp_state: Raw,
    /// Guest TSC frequency, when KVM reports it.
    pub tsc_khz: Option<u32>,
}

/// The 8250 UART's registers (vm-superio's SerialState).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialRegs {
    pub baud_divisor_low: u8,
    pub baud_divisor_high: u8,
    pub interrupt_enable: u8,
    pub interrupt_identification: u8,
    pub line_control: u8,
    pub line_status: u8,
    pub modem_control: u8,
    pub modem_status: u8,
    pub scratch: u8,
    pub in_buffer: Vec<u8>,
}

/// What backs a virtio device on the host (re-opened on restore, overridable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum DeviceBackend {
    Block {
        path: String,
        read_only: bool,
        serial: Option<String>,
        /// Disk size in 512-byte sectors the guest saw.
        sectors: u64,
    },
    Net {
        tap: String,
        mac: [u8; 6],
    },
    Vsock {
        guest_cid: u64,
        uds_path: String,
    },
}

/// One virtio-mmio device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceState {
    pub backend: DeviceBackend,
    pub transport: TransportState,
}

/// Everything in a snapshot's state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    pub host: HostInfo,
    pub machine: MachineState,
    pub vm: VmState,
    pub vcpus: Vec<VcpuState>,
    pub serial: SerialRegs,
    pub devices: Vec<DeviceState>,
}

/// The machine's size and device backends, in device order (a device without a
/// backend description cannot be snapshotted).
#[derive(Debug, Clone)]
pub struct VmShape {
    pub memory_mib: u64,
    pub vcpus: u8,
    pub backends: Vec<DeviceBackend>,
}
