//! `save`: images to an archive Docker and Podman load.

use std::io::Write;

use anyhow::{bail, Context};
use skiff_image::{archive, Store};

use super::*;

pub(super) fn save(store: &Store, a: SaveArgs) -> anyhow::Result<i32> {
    match &a.output {
        Some(p) => {
            // Write beside the target and rename: no half-written archive on failure.
            let dir = p
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
            {
                let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
                archive::save(store, &a.images, &mut w)?;
                w.flush()?;
            }
            use std::os::unix::fs::PermissionsExt;
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o644))?;
            tmp.persist(p)
                .with_context(|| format!("write {}", p.display()))?;
        }
        None => {
            use std::io::IsTerminal;
            if std::io::stdout().is_terminal() {
                bail!("refusing to write an archive to a terminal (use -o FILE or redirect)");
            }
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            archive::save(store, &a.images, &mut out)?;
            out.flush()?;
        }
    }
    Ok(0)
}
