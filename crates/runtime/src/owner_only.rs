//! Files and directories only their owner may read: a container's spec (its
//! environment holds passwords), state, logs, writable disk, console and snapshot
//! memory. Directories are 0700 (an existing one is narrowed when opened, so older
//! installs are fixed), files 0600 from the moment they exist.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::{Error, Result};

pub const DIR_MODE: u32 = 0o700;
pub const FILE_MODE: u32 = 0o600;

/// Creates `path` and any missing parents 0700; an existing `path` is narrowed to
/// 0700 (parents that already exist are left as they are).
pub fn dir(path: &Path) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
        .map_err(Error::io(format!("create {}", path.display())))?;
    narrow(path, DIR_MODE)
}

/// A new directory `<parent>/<prefix>XXXXXX`, 0700 (tempfile's default follows the
/// umask), removed when dropped.
pub fn temp_dir(parent: &Path, prefix: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .permissions(Permissions::from_mode(DIR_MODE))
        .tempdir_in(parent)
        .map_err(Error::io(format!(
            "create a directory in {}",
            parent.display()
        )))
}

/// Creates (or truncates) `path` for writing, 0600.
pub fn create(path: &Path) -> Result<File> {
    open(
        path,
        OpenOptions::new().write(true).create(true).truncate(true),
    )
}

/// Opens `path` for appending, creating it 0600; an existing file is narrowed.
pub fn append(path: &Path) -> Result<File> {
    open(path, OpenOptions::new().append(true).create(true))
}

/// Opens `path` read-write, creating it 0600 (lock files); an existing file is
/// narrowed.
pub fn read_write(path: &Path) -> Result<File> {
    open(
        path,
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false),
    )
}

/// Replaces `path` with `bytes` atomically (a 0600 temp file beside it, fsynced, then
/// renamed over it): readers see the old content or the new.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| Error::Config(format!("invalid file name {}", path.display())))?;
    let tmp = path.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
    let mut f = create(&tmp)?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(Error::io(format!("write {}", tmp.display())))?;
    fs::rename(&tmp, path).map_err(Error::io(format!("rename to {}", path.display())))
}

fn open(path: &Path, options: &mut OpenOptions) -> Result<File> {
    let f = options
        .mode(FILE_MODE)
        .open(path)
        .map_err(Error::io(format!("open {}", path.display())))?;
    let mode = f
        .metadata()
        .map_err(Error::io(format!("stat {}", path.display())))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        f.set_permissions(Permissions::from_mode(FILE_MODE))
            .map_err(Error::io(format!("chmod {}", path.display())))?;
    }
    Ok(f)
}

fn narrow(path: &Path, mode: u32) -> Result<()> {
    let meta = fs::metadata(path).map_err(Error::io(format!("stat {}", path.display())))?;
    if meta.permissions().mode() & 0o7777 != mode {
        fs::set_permissions(path, Permissions::from_mode(mode))
            .map_err(Error::io(format!("chmod {}", path.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn directories_are_created_and_narrowed_to_0700() {
        let d = tempfile::tempdir().unwrap();
        let deep = d.path().join("a/b/c");
        dir(&deep).unwrap();
        assert_eq!(mode(&deep), 0o700);
        assert_eq!(mode(&d.path().join("a")), 0o700);
        let old = d.path().join("old");
        fs::create_dir(&old).unwrap();
        fs::set_permissions(&old, Permissions::from_mode(0o755)).unwrap();
        dir(&old).unwrap();
        assert_eq!(mode(&old), 0o700);
        let t = temp_dir(d.path(), "vm-").unwrap();
        assert_eq!(mode(t.path()), 0o700);
    }

    #[test]
    fn files_are_0600_new_or_old() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("spec.json");
        write_atomic(&p, b"{}").unwrap();
        assert_eq!(mode(&p), 0o600);
        assert_eq!(fs::read(&p).unwrap(), b"{}");
        write_atomic(&p, b"[]").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"[]");
        assert_eq!(
            fs::read_dir(d.path()).unwrap().count(),
            1,
            "no temp file left"
        );

        let log = d.path().join("log.json");
        fs::write(&log, b"old\n").unwrap();
        fs::set_permissions(&log, Permissions::from_mode(0o644)).unwrap();
        append(&log).unwrap().write_all(b"new\n").unwrap();
        assert_eq!(mode(&log), 0o600);
        assert_eq!(fs::read(&log).unwrap(), b"old\nnew\n");
        for (p, open) in [
            ("rw.img", create as fn(&Path) -> Result<File>),
            ("x.lock", read_write),
        ] {
            open(&d.path().join(p)).unwrap();
            assert_eq!(mode(&d.path().join(p)), 0o600, "{p}");
        }
    }
}
