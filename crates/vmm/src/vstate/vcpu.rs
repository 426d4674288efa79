//! vCPUs: 64-bit boot state (CPUID, MSRs, registers, FPU, LAPIC) and the run loop that
//! turns VM exits into device accesses.

use std::sync::mpsc::Receiver;
use std::sync::Arc;

use kvm_bindings::{
    kvm_fpu, kvm_lapic_state, kvm_msr_entry, kvm_regs, kvm_segment, CpuId, Msrs,
    KVM_MAX_CPUID_ENTRIES, KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET,
    KVM_SYSTEM_EVENT_SHUTDOWN,
};
use kvm_ioctls::{VcpuExit, VcpuFd};
use tracing::{debug, warn};

use super::control::{set_immediate_exit_target, VcpuCommand, VcpuControl};
use super::vm::{Vm, VmError};
use crate::arch::layout::{BOOT_STACK, GDT_ADDR, IDT_ADDR, PML4, ZERO_PAGE};
use crate::arch::paging::{CODE_SELECTOR, DATA_SELECTOR, GDT, TSS_SELECTOR};
use crate::devices::Devices;
use crate::exit::GuestExit;
use crate::snapshot::state::VcpuState;
use crate::snapshot::{kvm_state, SnapshotError};

const X86_CR0_PE: u64 = 0x1;
const X86_CR0_PG: u64 = 0x8000_0000;
const X86_CR4_PAE: u64 = 0x20;
const EFER_LME: u64 = 0x100;
const EFER_LMA: u64 = 0x400;

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

/// MSRs a 64-bit guest expects in a defined state (index, value).
const BOOT_MSRS: [(u32, u64); 11] = [
    (0x174, 0),             // SYSENTER_CS
    (0x175, 0),             // SYSENTER_ESP
    (0x176, 0),             // SYSENTER_EIP
    (0xc000_0081, 0),       // STAR
    (0xc000_0083, 0),       // CSTAR
    (0xc000_0102, 0),       // KERNEL_GS_BASE
    (0xc000_0084, 0),       // SYSCALL_MASK
    (0xc000_0082, 0),       // LSTAR
    (0x10, 0),              // TSC
    (0x1a0, 1),             // MISC_ENABLE: fast strings
    (0x2ff, (1 << 11) | 6), // MTRR default type: enabled, write-back
];

/// Indices of [`BOOT_MSRS`] (saved in snapshots even if KVM does not list them).
pub fn boot_msr_indices() -> Vec<u32> {
    BOOT_MSRS.iter().map(|&(index, _)| index).collect()
}

/// What a vCPU thread needs besides the vCPU: devices for its exits, the pause
/// control, its command channel and the MSRs a snapshot saves.
pub struct VcpuRunContext {
    pub devices: Arc<Devices>,
    pub control: Arc<VcpuControl>,
    pub commands: Receiver<VcpuCommand>,
    pub msr_list: Arc<Vec<u32>>,
}

/// One virtual CPU.
#[derive(Debug)]
pub struct Vcpu {
    id: u8,
    fd: VcpuFd,
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { what, source }
}

impl Vcpu {
    /// Creates vCPU `id` of `count` and prepares it to enter the kernel at `entry`.
    pub fn new(vm: &Vm, id: u8, count: u8, entry: u64) -> Result<Self, VmError> {
        let fd = vm
            .fd()
            .create_vcpu(u64::from(id))
            .map_err(kvm_err("create vCPU"))?;
        let vcpu = Self { id, fd };
        let mut cpuid = vm
            .kvm()
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("get supported CPUID"))?;
        filter_cpuid(&mut cpuid, id, count);
        vcpu.fd.set_cpuid2(&cpuid).map_err(kvm_err("set CPUID"))?;
        vcpu.set_msrs()?;
        vcpu.set_lapic()?;
        let fpu = kvm_fpu {
            fcw: 0x37f,
            mxcsr: 0x1f80,
            ..Default::default()
        };
        vcpu.fd.set_fpu(&fpu).map_err(kvm_err("set FPU"))?;
        vcpu.set_sregs()?;
        let regs = kvm_regs {
            rflags: 0x2,
            rip: entry,
            rsp: BOOT_STACK,
            rbp: BOOT_STACK,
            rsi: ZERO_PAGE,
            ..Default::default()
        };
        vcpu.fd.set_regs(&regs).map_err(kvm_err("set registers"))?;
        Ok(vcpu)
    }

    /// Creates vCPU `state.id` and loads its saved state.
    pub fn restore(vm: &Vm, state: &VcpuState) -> Result<Self, SnapshotError> {
        let fd = vm
            .fd()
            .create_vcpu(u64::from(state.id))
            .map_err(|source| SnapshotError::Kvm {
                what: "create vCPU",
                source,
            })?;
        kvm_state::restore_vcpu(&fd, state)?;
        Ok(Self { id: state.id, fd })
    }

    fn set_msrs(&self) -> Result<(), VmError> {
        let entries: Vec<kvm_msr_entry> = BOOT_MSRS
            .iter()
            .map(|&(index, data)| kvm_msr_entry {
                index,
                data,
                ..Default::default()
            })
            .collect();
        let msrs = Msrs::from_entries(&entries).map_err(|_| VmError::MissingCap("MSR list"))?;
        let written = self.fd.set_msrs(&msrs).map_err(kvm_err("set MSRs"))?;
        if written != entries.len() {
            // Some hypervisors (PVM) refuse a few boot MSRs; guests cope.
            debug!(
                "vCPU {}: KVM accepted {written} of {} boot MSRs",
                self.id,
                entries.len()
            );
        }
        Ok(())
    }

    fn set_lapic(&self) -> Result<(), VmError> {
        let mut lapic = self.fd.get_lapic().map_err(kvm_err("get LAPIC"))?;
        set_lvt_mode(&mut lapic, APIC_LVT0, APIC_MODE_EXTINT);
        set_lvt_mode(&mut lapic, APIC_LVT1, APIC_MODE_NMI);
        self.fd.set_lapic(&lapic).map_err(kvm_err("set LAPIC"))
    }

    fn set_sregs(&self) -> Result<(), VmError> {
        let mut sregs = self
            .fd
            .get_sregs()
            .map_err(kvm_err("get special registers"))?;
        let code = segment(GDT[1], CODE_SELECTOR);
        let data = segment(GDT[2], DATA_SELECTOR);
        let tss = segment(GDT[3], TSS_SELECTOR);
        sregs.cs = code;
        sregs.ds = data;
        sregs.es = data;
        sregs.fs = data;
        sregs.gs = data;
        sregs.ss = data;
        sregs.tr = tss;
        sregs.gdt.base = GDT_ADDR;
        sregs.gdt.limit = u16::try_from(GDT.len() * 8 - 1).unwrap_or(u16::MAX);
        sregs.idt.base = IDT_ADDR;
        sregs.idt.limit = 7;
        sregs.cr3 = PML4;
        sregs.cr4 |= X86_CR4_PAE;
        sregs.cr0 |= X86_CR0_PE | X86_CR0_PG;
        sregs.efer |= EFER_LME | EFER_LMA;
        self.fd
            .set_sregs(&sregs)
            .map_err(kvm_err("set special registers"))
    }

    /// Runs the vCPU until the guest ends (the reason goes to `devices`), parking
    /// whenever the control asks for a pause.
    pub fn run(mut self, ctx: VcpuRunContext) {
        set_immediate_exit_target(&mut self.fd.get_kvm_run().immediate_exit);
        let reason = self.run_loop(&ctx);
        set_immediate_exit_target(std::ptr::null_mut());
        ctx.control.set_gone();
        if let Some(reason) = reason {
            ctx.devices.request_exit(reason);
        }
    }

    /// Parks at a consistent point and serves commands until resumed; returns how the
    /// guest ended if it did so while its last instruction completed.
    fn park(&mut self, ctx: &VcpuRunContext) -> Option<GuestExit> {
        // Re-entering with immediate_exit completes a pending port/MMIO read into the
        // guest's registers and returns EINTR without running guest code. Completing
        // an instruction can need another exit (a split access): those are handled
        // like any other, so nothing the guest did is dropped.
        self.fd.set_kvm_immediate_exit(1);
        for _ in 0..MAX_COMPLETION_EXITS {
            match self.step(&ctx.devices) {
                Step::Interrupted => break,
                Step::Ran => {}
                Step::Ended(exit) => return Some(exit),
            }
        }
        self.fd.set_kvm_immediate_exit(0);
        ctx.control.set_parked(true);
        while let Ok(command) = ctx.commands.recv() {
            match command {
                // KVM's vCPU state is read on the vCPU's own thread.
                VcpuCommand::Save(reply) => {
                    let _ = reply.send(kvm_state::save_vcpu(&self.fd, self.id, &ctx.msr_list));
                }
                // A resume sent before the latest pause is stale.
                VcpuCommand::Resume if !ctx.control.pause_requested() => break,
                VcpuCommand::Resume => {}
            }
        }
        ctx.control.set_parked(false);
        None
    }

    fn run_loop(&mut self, ctx: &VcpuRunContext) -> Option<GuestExit> {
        loop {
            // A kick that landed after the last pause was served (a second `pause`
            // while parked) left immediate_exit set: clear it before looking at the
            // flag, so a kick for a new pause (flag first, then kick) is never lost.
            self.fd.set_kvm_immediate_exit(0);
            if ctx.control.pause_requested() {
                if let Some(exit) = self.park(ctx) {
                    return Some(exit);
                }
                continue;
            }
            if ctx.devices.exit_requested() {
                return None;
            }
            if let Step::Ended(exit) = self.step(&ctx.devices) {
                return Some(exit);
            }
            if ctx.devices.exit_requested() {
                return None;
            }
        }
    }

    /// One KVM_RUN and the handling of its exit.
    fn step(&mut self, devices: &Devices) -> Step {
        let id = self.id;
        let ended = |exit| Step::Ended(exit);
        match self.fd.run() {
            Ok(VcpuExit::IoOut(port, data)) => devices.pio_write(port, data),
            Ok(VcpuExit::IoIn(port, data)) => devices.pio_read(port, data),
            Ok(VcpuExit::MmioRead(addr, data)) => devices.mmio_read(addr, data),
            Ok(VcpuExit::MmioWrite(addr, data)) => devices.mmio_write(addr, data),
            Ok(VcpuExit::Intr) | Ok(VcpuExit::IrqWindowOpen) => {}
            Ok(VcpuExit::Hlt) => return ended(GuestExit::Shutdown),
            Ok(VcpuExit::Shutdown) => {
                return ended(GuestExit::Crash(format!(
                    "vCPU {id}: triple fault ({})",
                    self.where_am_i()
                )))
            }
            Ok(VcpuExit::SystemEvent(kind, _)) => match kind {
                KVM_SYSTEM_EVENT_RESET => return ended(GuestExit::Reset),
                KVM_SYSTEM_EVENT_SHUTDOWN => return ended(GuestExit::Shutdown),
                KVM_SYSTEM_EVENT_CRASH => {
                    return ended(GuestExit::Crash(format!("vCPU {id}: guest crash event")))
                }
                other => warn!("vCPU {id}: ignoring system event {other}"),
            },
            Ok(VcpuExit::FailEntry(reason, cpu)) => {
                return ended(GuestExit::Crash(format!(
                    "vCPU {cpu}: entry failed, reason {reason:#x}"
                )))
            }
            Ok(VcpuExit::InternalError) => {
                return ended(GuestExit::Crash(format!("vCPU {id}: KVM internal error")))
            }
            Ok(other) => {
                return ended(GuestExit::Crash(format!(
                    "vCPU {id}: unexpected exit {other:?}"
                )))
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                return Step::Interrupted
            }
            Err(e) => return ended(GuestExit::Crash(format!("vCPU {id}: KVM_RUN failed: {e}"))),
        }
        Step::Ran
    }
}

/// What one KVM_RUN did.
enum Step {
    /// The guest ran (or an exit was handled) and can carry on.
    Ran,
    /// KVM_RUN returned without running the guest (a kick: EINTR).
    Interrupted,
    /// The guest ended.
    Ended(GuestExit),
}

/// Exits a parking vCPU handles while completing its last instruction (a bound, in
/// case KVM never returns EINTR).
const MAX_COMPLETION_EXITS: usize = 16;

impl Vcpu {
    /// Registers worth printing when a guest dies.
    fn where_am_i(&self) -> String {
        match (self.fd.get_regs(), self.fd.get_sregs()) {
            (Ok(r), Ok(s)) => format!(
                "rip {:#x} rsp {:#x} cr0 {:#x} cr3 {:#x} cr4 {:#x} efer {:#x}",
                r.rip, r.rsp, s.cr0, s.cr3, s.cr4, s.efer
            ),
            _ => "registers unavailable".into(),
        }
    }
}

fn set_lvt_mode(lapic: &mut kvm_lapic_state, reg: usize, mode: u32) {
    let bytes = &mut lapic.regs[reg..reg + 4];
    let mut raw = [0u8; 4];
    for (dst, src) in raw.iter_mut().zip(bytes.iter()) {
        *dst = src.to_ne_bytes()[0];
    }
    let value = (u32::from_le_bytes(raw) & !0x700) | (mode << 8);
    for (dst, src) in bytes.iter_mut().zip(value.to_le_bytes()) {
        *dst = i8::from_ne_bytes([src]) as _;
    }
}

/// A KVM segment for a GDT entry.
fn segment(entry: u64, selector: u16) -> kvm_segment {
    let bits = |shift: u32, mask: u64| ((entry >> shift) & mask) as u8;
    let base = ((entry >> 16) & 0xff_ffff) | (((entry >> 56) & 0xff) << 24);
    let limit = (entry & 0xffff) | (((entry >> 48) & 0xf) << 16);
    kvm_segment {
        base,
        limit: u32::try_from(limit).unwrap_or(u32::MAX),
        selector,
        type_: bits(40, 0xf),
        present: bits(47, 1),
        dpl: bits(45, 0x3),
        db: bits(54, 1),
        s: bits(44, 1),
        l: bits(53, 1),
        g: bits(55, 1),
        avl: bits(52, 1),
        unusable: u8::from(bits(47, 1) == 0),
        padding: 0,
    }
}

/// Tailors KVM's supported CPUID to vCPU `id` of `count`.
fn filter_cpuid(cpuid: &mut CpuId, id: u8, count: u8) {
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            0x1 => {
                entry.ebx =
                    (entry.ebx & 0x0000_ffff) | (u32::from(id) << 24) | (u32::from(count) << 16);
                entry.ecx |= 1 << 31; // running on a hypervisor
                if count > 1 {
                    entry.edx |= 1 << 28; // HTT: more than one logical CPU
                }
            }
            0x4 => {
                entry.eax = (entry.eax & 0x03ff_ffff) | (u32::from(count.saturating_sub(1)) << 26);
            }
            0xb | 0x1f => entry.edx = u32::from(id),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_entries_decode_to_flat_segments() {
        let code = segment(GDT[1], CODE_SELECTOR);
        assert_eq!(
            (
                code.base,
                code.limit,
                code.l,
                code.g,
                code.present,
                code.type_
            ),
            (0, 0xfffff, 1, 1, 1, 0xb)
        );
        let data = segment(GDT[2], DATA_SELECTOR);
        assert_eq!((data.db, data.l, data.type_, data.s), (1, 0, 3, 1));
        let tss = segment(GDT[3], TSS_SELECTOR);
        assert_eq!((tss.s, tss.type_), (0, 0xb));
    }

    #[test]
    fn lvt_mode_is_replaced() {
        let mut lapic = kvm_lapic_state::default();
        lapic.regs[APIC_LVT0] = 0x10;
        lapic.regs[APIC_LVT0 + 1] = 0x7f;
        set_lvt_mode(&mut lapic, APIC_LVT0, APIC_MODE_NMI);
        assert_eq!(lapic.regs[APIC_LVT0], 0x10);
        assert_eq!(lapic.regs[APIC_LVT0 + 1] as u8, 0x78 | 0x4);
    }
}
