//! The command line of the image commands (clap), apart from what they do.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use skiff_image::busybox;
use skiff_image::registry::RegistryOptions;

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Download an image from a registry
    Pull(PullArgs),
    /// Upload an image to a registry
    Push(PushArgs),
    /// List images
    Images(ImagesArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
    Tag(TagArgs),
    /// Remove one or more images
    Rmi(RmiArgs),
    /// Load images from an OCI layout or docker-archive (tar file or directory)
    Load(LoadArgs),
    /// Save images to a tar archive (OCI layout + docker-archive)
    Save(SaveArgs),
    /// Import a root filesystem tarball as a one-layer image
    Import(ImportArgs),
    /// Manage images
    #[command(subcommand)]
    Image(ImageSubcommand),
    /// Manage skiff
    #[command(subcommand)]
    System(SystemSubcommand),
}

#[derive(Subcommand, Debug)]
pub enum ImageSubcommand {
    /// List images
    #[command(alias = "list")]
    Ls(ImagesArgs),
    /// Display detailed information on one or more images (JSON)
    Inspect(InspectArgs),
    /// Show the history of an image
    History(HistoryArgs),
    /// Remove unused images (dangling ones; all unused with -a)
    Prune(PruneArgs),
    /// Remove one or more images
    #[command(alias = "remove")]
    Rm(RmiArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
    Tag(TagArgs),
    /// Build the offline starter image `busybox:latest` from Debian's busybox-static
    BuildBusybox(BuildBusyboxArgs),
}

#[derive(Subcommand, Debug)]
pub enum SystemSubcommand {
    /// Show disk usage of images (shared vs unique bytes)
    Df(DfArgs),
}

#[derive(Args, Debug)]
pub struct RegistryArgs {
    /// Allow plain HTTP to this registry (loopback registries always may)
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure: Vec<String>,
    /// Blobs transferred at once
    #[arg(long, default_value_t = 3)]
    pub parallel: usize,
}

impl RegistryArgs {
    pub fn options(&self, quiet: bool) -> RegistryOptions {
        let mut o = RegistryOptions::default();
        o.insecure.extend(self.insecure.iter().cloned());
        o.parallel = self.parallel.max(1);
        o.progress = !quiet;
        o
    }
}

#[derive(Args, Debug)]
pub struct PullArgs {
    /// Suppress verbose output
    #[arg(short, long)]
    pub quiet: bool,
    /// Platform (only linux/amd64 is supported)
    #[arg(long, default_value = "linux/amd64")]
    pub platform: String,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// NAME[:TAG|@DIGEST]
    pub name: String,
}

#[derive(Args, Debug)]
pub struct PushArgs {
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// NAME[:TAG] of a stored image (its registry part says where to push)
    pub name: String,
}

#[derive(Args, Debug, Default)]
pub struct ImagesArgs {
    /// Only show image IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Show digests
    #[arg(long)]
    pub digests: bool,
    /// Output format: table (default) or json (one object per line)
    #[arg(long)]
    pub format: Option<String>,
    /// Don't truncate IDs
    #[arg(long)]
    pub no_trunc: bool,
    /// Show all images (accepted for Docker compatibility)
    #[arg(short, long)]
    pub all: bool,
    /// Only images of this repository
    pub repository: Option<String>,
}

#[derive(Args, Debug)]
pub struct TagArgs {
    pub source: String,
    pub target: String,
}

#[derive(Args, Debug)]
pub struct RmiArgs {
    /// Remove even if tagged several times or used by containers
    #[arg(short, long)]
    pub force: bool,
    #[arg(required = true)]
    pub images: Vec<String>,
}

#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Read from this tar archive or OCI layout directory instead of stdin
    #[arg(short, long)]
    pub input: Option<PathBuf>,
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct SaveArgs {
    /// Write to this file instead of stdout
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    #[arg(required = true)]
    pub images: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Rootfs tarball (plain, gzip or zstd), or - for stdin
    pub file: String,
    /// REPOSITORY[:TAG]
    pub name: Option<String>,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    #[arg(required = true)]
    pub images: Vec<String>,
}

#[derive(Args, Debug)]
pub struct HistoryArgs {
    #[arg(short, long)]
    pub quiet: bool,
    #[arg(long)]
    pub no_trunc: bool,
    pub image: String,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Remove all images not used by containers, not just dangling ones
    #[arg(short, long)]
    pub all: bool,
    /// Do not prompt (skiff never prompts; accepted for Docker compatibility)
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct BuildBusyboxArgs {
    /// The static busybox binary to use
    #[arg(long, default_value = busybox::DEFAULT_BUSYBOX)]
    pub from: PathBuf,
    /// Name to tag the image with
    #[arg(short, long, default_value = busybox::DEFAULT_NAME)]
    pub tag: String,
}

#[derive(Args, Debug)]
pub struct DfArgs {
    /// Show per-image usage
    #[arg(short, long)]
    pub verbose: bool,
    /// Output format: table (default) or json
    #[arg(long)]
    pub format: Option<String>,
}
