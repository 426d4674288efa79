//! The caps applied to everything read from archives and registries: documents,
//! blobs, uncompressed layers (decompression bombs stop here), tar entries and headers.

/// Caps applied to everything read from archives and registries.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest manifest, index or config document.
    pub max_document: u64,
    /// Largest blob (compressed layer).
    pub max_blob: u64,
    /// Largest uncompressed layer: decompression bombs stop here.
    pub max_layer_uncompressed: u64,
    /// Most entries in one layer tar.
    pub max_entries: u64,
    /// Largest tar extension header (GNU long name, PAX record).
    pub max_tar_extension: u64,
    /// Most layers in one image.
    pub max_layers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_document: 4 << 20,
            max_blob: 64 << 30,
            max_layer_uncompressed: 64 << 30,
            max_entries: 2_000_000,
            max_tar_extension: 1 << 20,
            max_layers: 256,
        }
    }
}
