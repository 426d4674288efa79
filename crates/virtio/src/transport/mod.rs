//! Transports that expose device models to a guest.

pub mod mmio;

pub use mmio::{IrqTrigger, MmioTransport, MMIO_WINDOW_SIZE};
pub use mmio::{QueueSnapshot, TransportState, TransportStateError};
