//! Reading KVM state into a snapshot and writing it back: per vCPU (registers,
//! special registers, xsave, xcrs, debug registers, MSRs, LAPIC, events, MP state,
//! TSC frequency) and per VM (PIC/IOAPIC, PIT, kvmclock).

use kvm_bindings::{
    kvm_clock_data, kvm_cpuid_entry2, kvm_debugregs, kvm_irqchip, kvm_lapic_state, kvm_mp_state,
    kvm_msr_entry, kvm_pit_state2, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
    CpuId, Msrs, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
    KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::{VcpuFd, VmFd};

use super::format::SnapshotError;
use super::state::{Raw, VcpuState, VmState};

fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> SnapshotError {
    move |source| SnapshotError::Kvm { what, source }
}

const IRQCHIPS: [u32; 3] = [
    KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE,
    KVM_IRQCHIP_IOAPIC,
];

/// A vCPU's state in KVM structures (after size checks).
pub struct DecodedVcpu {
    pub cpuid: Vec<kvm_cpuid_entry2>,
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    pub xsave: kvm_xsave,
    pub xcrs: kvm_xcrs,
    pub debugregs: kvm_debugregs,
    pub lapic: kvm_lapic_state,
    pub events: kvm_vcpu_events,
    pub mp_state: kvm_mp_state,
}

/// Checks every raw field of `v` and converts it.
pub fn decode_vcpu(v: &VcpuState) -> Result<DecodedVcpu, SnapshotError> {
    Ok(DecodedVcpu {
        cpuid: v
            .cpuid
            .iter()
            .map(|e| e.to("cpuid entry"))
            .collect::<Result<_, _>>()?,
        regs: v.regs.to("regs")?,
        sregs: v.sregs.to("sregs")?,
        xsave: v.xsave.to("xsave")?,
        xcrs: v.xcrs.to("xcrs")?,
        debugregs: v.debugregs.to("debugregs")?,
        lapic: v.lapic.to("lapic")?,
        events: v.events.to("vcpu events")?,
        mp_state: v.mp_state.to("mp state")?,
    })
}

/// VM state in KVM structures.
pub struct DecodedVm {
    pub irqchips: Vec<kvm_irqchip>,
    pub pit: kvm_pit_state2,
    pub clock: kvm_clock_data,
}

/// Checks every raw field of `vm` and converts it; irqchip ids must be the expected
/// three in order.
pub fn decode_vm(vm: &VmState) -> Result<DecodedVm, SnapshotError> {
    let irqchips = vm
        .irqchips
        .iter()
        .map(|c| c.to::<kvm_irqchip>("irqchip"))
        .collect::<Result<Vec<_>, _>>()?;
    if irqchips.iter().map(|c| c.chip_id).ne(IRQCHIPS) {
        return Err(SnapshotError::Invalid("irqchip ids".into()));
    }
    Ok(DecodedVm {
        irqchips,
        pit: vm.pit.to("pit")?,
        clock: vm.clock.to("clock")?,
    })
}

/// MSRs to save: what KVM lists as needing save (KVM_GET_MSR_INDEX_LIST), plus the
/// ones the VMM sets at boot.
pub fn msr_indices(kvm: &kvm_ioctls::Kvm, boot: &[u32]) -> Vec<u32> {
    let mut list: Vec<u32> = kvm
        .get_msr_index_list()
        .map(|l| l.as_slice().to_vec())
        .unwrap_or_default();
    for &b in boot {
        if !list.contains(&b) {
            list.push(b);
        }
    }
    list
}

/// Reads the MSRs in `indices` one by one where a batch read stops early (KVM stops at
/// the first MSR it cannot read; PVM refuses some that it lists).
fn read_msrs(fd: &VcpuFd, indices: &[u32]) -> Result<Vec<(u32, u64)>, SnapshotError> {
    let mut out = Vec::with_capacity(indices.len());
    let mut rest = indices;
    while !rest.is_empty() {
        let entries: Vec<kvm_msr_entry> = rest
            .iter()
            .map(|&index| kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs = Msrs::from_entries(&entries)
            .map_err(|_| SnapshotError::Unsupported("MSR list too long".into()))?;
        let n = fd.get_msrs(&mut msrs).map_err(kvm("get MSRs"))?;
        out.extend(msrs.as_slice()[..n].iter().map(|e| (e.index, e.data)));
        // Skip the MSR KVM refused and carry on after it.
        rest = rest.get(n + 1..).unwrap_or(&[]);
    }
    Ok(out)
}

/// Saves vCPU `id`. The vCPU must not be inside KVM_RUN, and must have completed its
/// last I/O exit (see [`crate::vstate::vcpu`]).
pub fn save_vcpu(fd: &VcpuFd, id: u8, msr_list: &[u32]) -> Result<VcpuState, SnapshotError> {
    let cpuid = fd
        .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm("get CPUID"))?;
    Ok(VcpuState {
        id,
        cpuid: cpuid.as_slice().iter().map(Raw::of).collect(),
        regs: Raw::of(&fd.get_regs().map_err(kvm("get registers"))?),
        sregs: Raw::of(&fd.get_sregs().map_err(kvm("get special registers"))?),
        xsave: Raw::of(&fd.get_xsave().map_err(kvm("get xsave"))?),
        xcrs: Raw::of(&fd.get_xcrs().map_err(kvm("get xcrs"))?),
        debugregs: Raw::of(&fd.get_debug_regs().map_err(kvm("get debug registers"))?),
        msrs: read_msrs(fd, msr_list)?,
        lapic: Raw::of(&fd.get_lapic().map_err(kvm("get LAPIC"))?),
        events: Raw::of(&fd.get_vcpu_events().map_err(kvm("get vCPU events"))?),
        mp_state: Raw::of(&fd.get_mp_state().map_err(kvm("get MP state"))?),
        tsc_khz: fd.get_tsc_khz().ok(),
    })
}

/// Restores a freshly created vCPU (order as KVM needs it: CPUID before MSRs, special
/// registers before the LAPIC, events last).
pub fn restore_vcpu(fd: &VcpuFd, v: &VcpuState) -> Result<(), SnapshotError> {
    let d = decode_vcpu(v)?;
    let cpuid = CpuId::from_entries(&d.cpuid)
        .map_err(|_| SnapshotError::Invalid("CPUID entries".into()))?;
    fd.set_cpuid2(&cpuid).map_err(kvm("set CPUID"))?;
    if let Some(khz) = v.tsc_khz {
        if fd.get_tsc_khz().ok() != Some(khz) {
            // Without TSC scaling the guest sees the host's rate; it keeps running.
            if let Err(e) = fd.set_tsc_khz(khz) {
                tracing::warn!("vCPU {}: cannot set TSC to {khz} kHz: {e}", v.id);
            }
        }
    }
    fd.set_sregs(&d.sregs)
        .map_err(kvm("set special registers"))?;
    fd.set_regs(&d.regs).map_err(kvm("set registers"))?;
    // SAFETY: `d.xsave` is a complete kvm_xsave (its size was checked when decoding),
    // the legacy 4 KiB layout KVM_SET_XSAVE reads.
    unsafe { fd.set_xsave(&d.xsave) }.map_err(kvm("set xsave"))?;
    fd.set_xcrs(&d.xcrs).map_err(kvm("set xcrs"))?;
    fd.set_debug_regs(&d.debugregs)
        .map_err(kvm("set debug registers"))?;
    let entries: Vec<kvm_msr_entry> = v
        .msrs
        .iter()
        .map(|&(index, data)| kvm_msr_entry {
            index,
            data,
            ..Default::default()
        })
        .collect();
    let msrs = Msrs::from_entries(&entries)
        .map_err(|_| SnapshotError::Invalid("MSR list too long".into()))?;
    let written = fd.set_msrs(&msrs).map_err(kvm("set MSRs"))?;
    if written != entries.len() {
        let refused = entries.get(written).map_or(0, |e| e.index);
        return Err(SnapshotError::Mismatch(format!(
            "vCPU {}: KVM refused MSR {refused:#x} ({written} of {} restored)",
            v.id,
            entries.len()
        )));
    }
    fd.set_lapic(&d.lapic).map_err(kvm("set LAPIC"))?;
    fd.set_mp_state(d.mp_state).map_err(kvm("set MP state"))?;
    fd.set_vcpu_events(&d.events)
        .map_err(kvm("set vCPU events"))?;
    Ok(())
}

/// Saves irqchip, PIT and kvmclock.
pub fn save_vm(fd: &VmFd) -> Result<VmState, SnapshotError> {
    let mut irqchips = Vec::with_capacity(IRQCHIPS.len());
    for id in IRQCHIPS {
        let mut chip = kvm_irqchip {
            chip_id: id,
            ..Default::default()
        };
        fd.get_irqchip(&mut chip).map_err(kvm("get irqchip"))?;
        irqchips.push(Raw::of(&chip));
    }
    Ok(VmState {
        irqchips,
        pit: Raw::of(&fd.get_pit2().map_err(kvm("get PIT"))?),
        clock: Raw::of(&fd.get_clock().map_err(kvm("get clock"))?),
    })
}

/// Restores irqchip, PIT and kvmclock into a fresh VM.
pub fn restore_vm(fd: &VmFd, vm: &VmState) -> Result<(), SnapshotError> {
    let d = decode_vm(vm)?;
    fd.set_pit2(&d.pit).map_err(kvm("set PIT"))?;
    let mut clock = d.clock;
    // Only the clock value is restored; the flags describe the source host's clock.
    clock.flags = 0;
    fd.set_clock(&clock).map_err(kvm("set clock"))?;
    for chip in &d.irqchips {
        fd.set_irqchip(chip).map_err(kvm("set irqchip"))?;
    }
    Ok(())
}
