//! Signals skiff receives are for the container: blocked in every thread, picked up by
//! one thread and handed on (`skiff_runtime::vm::forward`).

pub use skiff_runtime::vm::forward::block;
