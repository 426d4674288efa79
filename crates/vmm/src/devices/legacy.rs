//! Legacy PC devices: the COM1 8250 UART (guest output only) and the i8042 controller
//! (only its reset line matters), both from the vm-superio crate.

use std::io::Write;

use tracing::warn;
use vm_superio::serial::{NoEvents, SerialState};
use vm_superio::{I8042Device, Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::snapshot::state::SerialRegs;

/// Raises an interrupt line through an eventfd registered as an irqfd.
#[derive(Debug)]
pub struct IrqLine(pub EventFd);

impl Trigger for IrqLine {
    type E = std::io::Error;

    fn trigger(&self) -> Result<(), Self::E> {
        self.0.write(1)
    }
}

/// Console output sink: a file, stdout, or nothing.
pub type ConsoleOut = Box<dyn Write + Send>;

/// The COM1 UART.
pub struct SerialConsole {
    uart: Serial<IrqLine, NoEvents, ConsoleOut>,
}

impl SerialConsole {
    /// A UART whose output goes to `out` and whose interrupt raises `irq`.
    pub fn new(irq: IrqLine, out: ConsoleOut) -> Self {
        Self {
            uart: Serial::new(irq, out),
        }
    }

    /// Register write at `offset` (0..8).
    pub fn write(&mut self, offset: u16, value: u8) {
        let Ok(offset) = u8::try_from(offset) else {
            return;
        };
        if let Err(e) = self.uart.write(offset, value) {
            warn!("serial: {e:?}");
        }
    }

    /// Register read at `offset`.
    pub fn read(&mut self, offset: u16) -> u8 {
        u8::try_from(offset).map_or(0xff, |o| self.uart.read(o))
    }

    /// The UART's registers, for a snapshot.
    pub fn save(&self) -> SerialRegs {
        let s = self.uart.state();
        SerialRegs {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer,
        }
    }

    /// A UART in the saved state `regs` (a too-long input buffer is refused).
    pub fn restore(regs: &SerialRegs, irq: IrqLine, out: ConsoleOut) -> Result<Self, String> {
        let state = SerialState {
            baud_divisor_low: regs.baud_divisor_low,
            baud_divisor_high: regs.baud_divisor_high,
            interrupt_enable: regs.interrupt_enable,
            interrupt_identification: regs.interrupt_identification,
            line_control: regs.line_control,
            line_status: regs.line_status,
            modem_control: regs.modem_control,
            modem_status: regs.modem_status,
            scratch: regs.scratch,
            in_buffer: regs.in_buffer.clone(),
        };
        Serial::from_state(&state, irq, NoEvents, out)
            .map(|uart| Self { uart })
            .map_err(|e| format!("serial state: {e:?}"))
    }

    /// Flushes buffered output.
    pub fn flush(&mut self) {
        let _ = self.uart.writer_mut().flush();
    }
}

/// Remembers that the guest pulsed the reset line.
#[derive(Debug, Default)]
pub struct ResetLine(std::sync::atomic::AtomicBool);

impl Trigger for ResetLine {
    type E = std::convert::Infallible;

    fn trigger(&self) -> Result<(), Self::E> {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

/// The i8042 keyboard controller.
pub struct I8042 {
    dev: I8042Device<ResetLine>,
}

impl Default for I8042 {
    fn default() -> Self {
        Self {
            dev: I8042Device::new(ResetLine::default()),
        }
    }
}

impl I8042 {
    /// Register write at `offset` from 0x60; returns true when the guest requested a
    /// CPU reset.
    pub fn write(&mut self, offset: u16, value: u8) -> bool {
        let Ok(offset) = u8::try_from(offset) else {
            return false;
        };
        let _ = self.dev.write(offset, value);
        self.dev
            .reset_evt()
            .0
            .swap(false, std::sync::atomic::Ordering::SeqCst)
    }

    /// Register read at `offset` from 0x60.
    pub fn read(&mut self, offset: u16) -> u8 {
        u8::try_from(offset).map_or(0xff, |o| self.dev.read(o))
    }
}
