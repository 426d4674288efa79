//! MicroVM runtime.
