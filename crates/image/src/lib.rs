//! skiff-image: the layered, content-addressed image store.
//!
//! (API overview: see the end of this comment once complete.)

pub mod archive;
pub mod auth;
pub mod busybox;
pub mod commit;
pub mod digest;
pub mod error;
pub mod fsutil;
pub mod layerdisk;
pub mod lock;
pub mod manifest;
pub mod reference;
pub mod registry;
pub mod store;
pub mod targuard;
pub mod unpack;
pub mod usage;

pub use digest::Digest;
pub use error::{Error, Result};
pub use reference::Reference;
pub use store::{Image, Layer, Limits, Store};

/// The tar crate, for callers that build layers (benchmarks, tests).
pub use tar;
