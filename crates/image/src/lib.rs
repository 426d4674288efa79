//! skiff-image: the layered, content-addressed image store.
//!
//! Images are immutable stacks of layers. Blobs (manifests, configs, layer
//! tars exactly as received) live under their sha256; each uncompressed layer
//! (named by its diff_id) is converted once into a read-only erofs disk that
//! every image and container containing it shares. See `store` for the
//! on-disk layout and crash-consistency rules, `store::layerdisk` for why erofs.
//!
//! # API for the runtime (`skiff run`, `commit`, `rm`)
//! ```no_run
//! # fn main() -> skiff_image::Result<()> {
//! use skiff_image::{commit::ConfigChange, registry, Reference, Store};
//! let store = Store::open(Store::default_root())?; // --root / SKIFF_ROOT
//!
//! // Resolve what the user typed (name[:tag], name@digest, ID or ID prefix).
//! // Not found => the CLI decides whether to pull:
//! if store.image("busybox").is_err() {
//!     let r = Reference::parse("busybox")?; // docker.io/library/busybox:latest
//!     registry::pull(&store, &r, &registry::RegistryOptions::default())?;
//! }
//!
//! // Record the container as a user (rmi refuses, prune and GC keep the
//! // image) and get everything needed to boot it.
//! let image = store.use_image("container-id", "busybox")?;
//! let cfg = image.config.config().clone().unwrap_or_default();
//! let (_entrypoint, _cmd, _env) = (cfg.entrypoint(), cfg.cmd(), cfg.env());
//! let (_workdir, _user, _stop, _ports) =
//!     (cfg.working_dir(), cfg.user(), cfg.stop_signal(), cfg.exposed_ports());
//! // Read-only erofs layer disks, bottom layer first (attach read-only; in
//! // the guest: overlay lowerdir=top:...:bottom).
//! let _disks: Vec<std::path::PathBuf> = store.layer_disks(&image)?;
//!
//! // `skiff commit`: the layer tar the container's guest streams (OCI whiteouts;
//! // hostile, checked entry by entry) becomes a new layer on top of the parent
//! // image, with a config change.
//! let change = ConfigChange { cmd: Some(vec!["sh".into()]), created_by: "skiff commit".into(), ..Default::default() };
//! let mut layer: &[u8] = &skiff_image::commit::empty_layer();
//! let _new = skiff_image::commit::commit(&store, image.id.as_str(), &mut layer, &change, Some("mine:1"))?;
//!
//! // `skiff rm`: release the image.
//! store.release_image("container-id")?;
//! # Ok(()) }
//! ```
//!
//! Other entry points: `archive::{load, save, import}` (OCI layouts,
//! docker-archive), `busybox::build` (the offline starter image),
//! `registry::{pull, push}`, `Store::{images, tag, remove, prune, gc}`,
//! `usage::disk_usage`. Converting layers needs root (mknod for whiteouts and
//! device nodes, chown, `trusted.*` xattrs); without root it fails with an
//! `Error::Unsupported` that says so.

pub mod archive;
pub mod auth;
pub mod busybox;
pub mod chunks;
pub mod commit;
pub mod compression;
pub mod digest;
pub mod erofs;
pub mod error;
pub mod extract;
pub mod fsutil;
mod gunzip;
pub mod limits;
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
