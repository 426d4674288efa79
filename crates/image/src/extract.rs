//! Extract an untrusted tar stream under a host directory as a plain user's files:
//! the stream a guest sends for `skiff cp CONTAINER:PATH DEST`. The guest chooses every
//! byte of it, so nothing in it is trusted:
//!
//! - every path is resolved from DEST with openat2(`RESOLVE_BENEATH |
//!   RESOLVE_NO_SYMLINKS`): no entry lands outside DEST or passes through a symlink,
//!   whether one already there or one the stream planted; an entry replaces an existing
//!   symlink instead of writing through it;
//! - only entries under the name that was asked for are accepted (no extra files);
//! - device nodes, fifos and sockets are skipped (reported), set-id bits dropped,
//!   xattrs (file capabilities, security labels) ignored, owners kept only when asked;
//! - hardlinks may only point at regular files this stream created;
//! - the stream's size, its entry count and the bytes written (sparse files expand)
//!   are capped.

use std::collections::HashSet;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::targuard::TarGuard;
use crate::unpack::clean_path;

/// What the extraction may do and how much it may write.
#[derive(Debug, Clone)]
pub struct ExtractOptions {
    /// The one top-level name the stream may hold (`passwd` for `CTR:/etc/passwd`).
    pub root_name: Option<OsString>,
    /// Keep the owners the stream names (`cp -a`); otherwise files belong to the caller.
    pub keep_owners: bool,
    /// Largest stream (tar bytes) and largest total of file data written.
    pub max_bytes: u64,
    pub max_entries: u64,
    /// Largest tar extension header (GNU long name, PAX record).
    pub max_extension: u64,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        Self {
            root_name: None,
            keep_owners: false,
            max_bytes: 64 << 30,
            max_entries: 1_000_000,
            max_extension: 1 << 20,
        }
    }
}

/// What was extracted, and what was left out on purpose.
#[derive(Debug, Default, Clone)]
pub struct ExtractReport {
    pub entries: u64,
    pub bytes: u64,
    /// Entries not created (device nodes, fifos, unknown kinds), by path.
    pub skipped: Vec<String>,
    /// Entries whose setuid/setgid bits were dropped.
    pub setid_dropped: u64,
}

fn hostile(msg: impl Into<String>) -> Error {
    Error::HostileStream(msg.into())
}

fn stream_error(e: io::Error) -> Error {
    crate::unpack::stream_error_as(e, Error::HostileStream, "read the tar stream")
}

/// Extracts `stream` under `dest` (an existing directory the caller chose).
pub fn extract_untrusted<R: Read>(
    stream: R,
    dest: &Path,
    opts: &ExtractOptions,
) -> Result<ExtractReport> {
    let root = open_dir(dest)?;
    let guard = TarGuard::new(stream, opts.max_bytes, opts.max_entries, opts.max_extension);
    let mut archive = tar::Archive::new(guard);
    let mut x = Extraction {
        root,
        opts,
        report: ExtractReport::default(),
        files: HashSet::new(),
        dirs: Vec::new(),
    };
    for entry in archive.entries().map_err(stream_error)? {
        let mut entry = entry.map_err(stream_error)?;
        x.report.entries += 1;
        x.entry(&mut entry)?;
    }
    x.finish_dirs()?;
    Ok(x.report)
}

struct Extraction<'a> {
    root: OwnedFd,
    opts: &'a ExtractOptions,
    report: ExtractReport,
    /// Regular files this stream created: the only hardlink targets allowed.
    files: HashSet<Vec<OsString>>,
    /// Directories to give their mode and time once everything inside is written.
    dirs: Vec<(Vec<OsString>, u32, u64)>,
}

impl Extraction<'_> {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let raw = entry.path_bytes().into_owned();
        let comps: Vec<OsString> = clean_path(&raw)
            .map_err(relabel)?
            .into_iter()
            .map(OsStr::to_os_string)
            .collect();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let kind = entry.header().entry_type();
        let Some(first) = comps.first() else {
            // The archive's root ("./"): nothing to create.
            return if kind.is_dir() {
                Ok(())
            } else {
                Err(hostile(format!("a {kind:?} entry with an empty name")))
            };
        };
        if let Some(want) = &self.opts.root_name {
            if first != want {
                return Err(hostile(format!(
                    "entry {shown:?} is outside the path asked for ({})",
                    want.to_string_lossy()
                )));
            }
        }
        let (name, parents) = comps.split_last().unwrap_or((first, &[]));
        let meta = crate::unpack::header_meta(entry.header()).map_err(relabel)?;
        if meta.mode & 0o6000 != 0 && !matches!(kind, tar::EntryType::Symlink) {
            self.report.setid_dropped += 1;
        }
        let mode = meta.mode & 0o1777;
        use tar::EntryType as T;
        match kind {
            T::Regular | T::Continuous | T::GNUSparse => {
                let parent = self.ensure_dir(parents)?;
                replace_non_dir(&parent, name, &shown)?;
                let fd = openat2(
                    &parent,
                    Path::new(name),
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                    0o600,
                )
                .ctx(|| format!("create {shown}"))?;
                let mut file = File::from(fd);
                self.copy_data(entry, &mut file, &shown)?;
                self.own(file.as_raw_fd(), None, &meta, &shown)?;
                fchmod(&file, mode).ctx(|| format!("chmod {shown}"))?;
                set_times(file.as_raw_fd(), None, meta.mtime).ctx(|| format!("times {shown}"))?;
                self.files.insert(comps.clone());
            }
            T::Directory => {
                let parent = self.ensure_dir(parents)?;
                match stat_at(&parent, name) {
                    Some(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {}
                    Some(_) => {
                        unlink_at(&parent, name, false).ctx(|| format!("replace {shown}"))?;
                        mkdir_at(&parent, name).ctx(|| format!("mkdir {shown}"))?;
                    }
                    None => mkdir_at(&parent, name).ctx(|| format!("mkdir {shown}"))?,
                }
                self.dirs.push((comps.clone(), mode, meta.mtime));
                if self.opts.keep_owners {
                    let dir = self.resolve(&comps, libc::O_RDONLY | libc::O_DIRECTORY)?;
                    self.own(dir.as_raw_fd(), None, &meta, &shown)?;
                }
            }
            T::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| hostile(format!("symlink {shown:?} without a target")))?;
                if target.len() > 4096 || target.contains(&0) || target.is_empty() {
                    return Err(hostile(format!("symlink {shown:?} with a bad target")));
                }
                let parent = self.ensure_dir(parents)?;
                replace_non_dir(&parent, name, &shown)?;
                // The target is data: every later lookup refuses to pass through it.
                symlink_at(&target, &parent, name).ctx(|| format!("symlink {shown}"))?;
                self.own(parent.as_raw_fd(), Some(name), &meta, &shown)?;
                set_times(parent.as_raw_fd(), Some(name), meta.mtime)
                    .ctx(|| format!("times {shown}"))?;
            }
            T::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| hostile(format!("hardlink {shown:?} without a target")))?;
                let tcomps: Vec<OsString> = clean_path(&target)
                    .map_err(relabel)?
                    .into_iter()
                    .map(OsStr::to_os_string)
                    .collect();
                if !self.files.contains(&tcomps) {
                    return Err(hostile(format!(
                        "hardlink {shown:?} to {:?}, which is not a file of this copy",
                        String::from_utf8_lossy(&target)
                    )));
                }
                let (tname, tparents) = tcomps
                    .split_last()
                    .ok_or_else(|| hostile("hardlink to the root"))?;
                let from = self.resolve(tparents, libc::O_PATH | libc::O_DIRECTORY)?;
                let parent = self.ensure_dir(parents)?;
                replace_non_dir(&parent, name, &shown)?;
                link_at(&from, tname, &parent, name).ctx(|| format!("hardlink {shown}"))?;
                self.files.insert(comps.clone());
                return Ok(());
            }
            T::Char | T::Block | T::Fifo => {
                tracing::warn!("cp: skipping device node or fifo {shown}");
                self.report.skipped.push(shown);
                return Ok(());
            }
            other => {
                tracing::warn!("cp: skipping {shown} of type {other:?}");
                self.report.skipped.push(shown);
                return Ok(());
            }
        }
        // Whatever replaced a file of this copy is no longer a hardlink target.
        if kind != T::Regular && kind != T::Continuous && kind != T::GNUSparse {
            self.files.remove(&comps);
        }
        Ok(())
    }

    fn copy_data(&mut self, r: &mut dyn Read, f: &mut File, shown: &str) -> Result<()> {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = r.read(&mut buf).map_err(stream_error)?;
            if n == 0 {
                return Ok(());
            }
            self.report.bytes += n as u64;
            if self.report.bytes > self.opts.max_bytes {
                return Err(Error::LimitExceeded(format!(
                    "more than {} bytes of file data (at {shown})",
                    self.opts.max_bytes
                )));
            }
            f.write_all(&buf[..n]).ctx(|| format!("write {shown}"))?;
        }
    }

    /// Owner from the stream (`keep_owners`), of the fd itself or of `name` in it.
    fn own(
        &self,
        fd: RawFd,
        name: Option<&OsStr>,
        meta: &crate::unpack::HeaderMeta,
        shown: &str,
    ) -> Result<()> {
        if !self.opts.keep_owners {
            return Ok(());
        }
        let (path, flags) = match name {
            Some(n) => (cstr(n)?, libc::AT_SYMLINK_NOFOLLOW),
            None => (CString::default(), libc::AT_EMPTY_PATH),
        };
        // SAFETY: a valid fd and NUL-terminated name; fchownat never follows a symlink
        // with AT_SYMLINK_NOFOLLOW and acts on `fd` itself with AT_EMPTY_PATH.
        let rc = unsafe { libc::fchownat(fd, path.as_ptr(), meta.uid, meta.gid, flags) };
        if rc != 0 {
            return Err(io::Error::last_os_error()).ctx(|| format!("chown {shown}"));
        }
        Ok(())
    }

    /// Opens `comps` under the root without passing through a symlink.
    fn resolve(&self, comps: &[OsString], flags: i32) -> Result<OwnedFd> {
        let path = join(comps);
        openat2(&self.root, &path, flags, 0).map_err(|e| through(e, &path))
    }

    /// The directory `parents` under the root, created (0700 until finished) where
    /// missing; never through a symlink or a non-directory.
    fn ensure_dir(&self, parents: &[OsString]) -> Result<OwnedFd> {
        let flags = libc::O_PATH | libc::O_DIRECTORY;
        match self.resolve(parents, flags) {
            Ok(fd) => return Ok(fd),
            Err(Error::Io { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
        let mut dir = self.resolve(&[], flags)?;
        for (i, c) in parents.iter().enumerate() {
            match openat2(&dir, Path::new(c), flags, 0) {
                Ok(next) => dir = next,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    let shown = join(&parents[..=i]);
                    mkdir_at(&dir, c).ctx(|| format!("mkdir {}", shown.display()))?;
                    dir = openat2(&dir, Path::new(c), flags, 0).map_err(|e| through(e, &shown))?;
                }
                Err(e) => return Err(through(e, &join(&parents[..=i]))),
            }
        }
        Ok(dir)
    }

    /// Directory modes and times last: creating entries inside changed them, and a
    /// read-only directory must stay writable until its entries are in.
    fn finish_dirs(&mut self) -> Result<()> {
        for (comps, mode, mtime) in self.dirs.iter().rev() {
            let shown = join(comps);
            let dir = self.resolve(comps, libc::O_RDONLY | libc::O_DIRECTORY)?;
            let f = File::from(dir);
            fchmod(&f, *mode).ctx(|| format!("chmod {}", shown.display()))?;
            set_times(f.as_raw_fd(), None, *mtime).ctx(|| format!("times {}", shown.display()))?;
        }
        Ok(())
    }
}

/// Errors of `clean_path` and the header reader name a layer; for a guest's stream
/// they name the guest.
pub(crate) fn relabel(e: Error) -> Error {
    match e {
        Error::HostileLayer(m) => Error::HostileStream(m),
        other => other,
    }
}

fn through(e: io::Error, path: &Path) -> Error {
    match e.raw_os_error() {
        Some(libc::ELOOP | libc::EXDEV | libc::ENOTDIR) => hostile(format!(
            "path through a symlink or non-directory: {}",
            path.display()
        )),
        _ => Error::Io {
            context: format!("open {}", path.display()),
            source: e,
        },
    }
}

fn join(comps: &[OsString]) -> std::path::PathBuf {
    if comps.is_empty() {
        return ".".into();
    }
    comps.iter().collect()
}

fn cstr(s: &OsStr) -> Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| hostile("a name containing NUL"))
}

/// Removes whatever non-directory sits at `name` (a symlink is removed, never
/// followed), so the entry is created fresh.
fn replace_non_dir(parent: &OwnedFd, name: &OsStr, shown: &str) -> Result<()> {
    match stat_at(parent, name) {
        None => Ok(()),
        Some(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => Err(Error::Io {
            context: format!("create {shown}"),
            source: io::Error::from_raw_os_error(libc::EISDIR),
        }),
        Some(_) => unlink_at(parent, name, false).ctx(|| format!("replace {shown}")),
    }
}

fn open_dir(dest: &Path) -> Result<OwnedFd> {
    let c = cstr(dest.as_os_str())?;
    // SAFETY: a valid NUL-terminated path; the returned fd is checked before use.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error()).ctx(|| format!("open {}", dest.display()));
    }
    // SAFETY: `fd` was just returned by open(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// openat2 beneath `dir`, never following a symlink (nor a magic link).
fn openat2(dir: &OwnedFd, path: &Path, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: open_how is plain data; all-zero is its documented "no options" value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = u64::try_from(flags | libc::O_CLOEXEC).unwrap_or(0);
    if flags & libc::O_CREAT != 0 {
        how.mode = u64::from(mode);
    }
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: `how` is a valid open_how of the size passed; `c` is NUL-terminated and
    // outlives the call; the result is checked before it is wrapped.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn stat_at(dir: &OwnedFd, name: &OsStr) -> Option<libc::stat> {
    let c = CString::new(name.as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: valid fd and name; `st` is written by the kernel before it is read, and
    // AT_SYMLINK_NOFOLLOW stats a symlink itself.
    let rc = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            c.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    // SAFETY: fstatat succeeded, so it filled `st`.
    (rc == 0).then(|| unsafe { st.assume_init() })
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn name_c(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn mkdir_at(dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
    let c = name_c(name)?;
    // SAFETY: valid fd and NUL-terminated name.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), 0o700) })
}

fn unlink_at(dir: &OwnedFd, name: &OsStr, is_dir: bool) -> io::Result<()> {
    let c = name_c(name)?;
    let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: valid fd and NUL-terminated name; unlinkat never follows a symlink.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), flags) })
}

fn symlink_at(target: &[u8], dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
    let t = CString::new(target).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let c = name_c(name)?;
    // SAFETY: valid fd and NUL-terminated strings.
    check(unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), c.as_ptr()) })
}

fn link_at(from: &OwnedFd, from_name: &OsStr, to: &OwnedFd, name: &OsStr) -> io::Result<()> {
    let a = name_c(from_name)?;
    let b = name_c(name)?;
    // SAFETY: valid fds and NUL-terminated names; flags 0 never follows a symlink.
    check(unsafe { libc::linkat(from.as_raw_fd(), a.as_ptr(), to.as_raw_fd(), b.as_ptr(), 0) })
}

fn fchmod(f: &File, mode: u32) -> io::Result<()> {
    // SAFETY: a valid open fd.
    check(unsafe { libc::fchmod(f.as_raw_fd(), mode) })
}

/// Access and modification time of `fd` itself, or of `name` in it (not followed).
fn set_times(fd: RawFd, name: Option<&OsStr>, mtime: u64) -> io::Result<()> {
    let t = libc::timespec {
        tv_sec: libc::time_t::try_from(mtime).unwrap_or(0),
        tv_nsec: 0,
    };
    let times = [t, t];
    match name {
        // SAFETY: a valid fd and a two-element timespec array.
        None => check(unsafe { libc::futimens(fd, times.as_ptr()) }),
        Some(n) => {
            let c = name_c(n)?;
            // SAFETY: valid fd, NUL-terminated name and a two-element timespec array.
            check(unsafe {
                libc::utimensat(fd, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn tar_of(build: impl FnOnce(&mut tar::Builder<&mut Vec<u8>>)) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut b = tar::Builder::new(&mut out);
            build(&mut b);
            b.finish().unwrap();
        }
        out
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(4242);
        h.set_gid(4242);
        h.set_mtime(1_000_000);
        h.set_size(size);
        h
    }

    fn file(b: &mut tar::Builder<&mut Vec<u8>>, path: &str, mode: u32, data: &[u8]) {
        let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
        b.append_data(&mut h, path, data).unwrap();
    }

    /// Writes the raw name into the header, bypassing the tar crate's own checks
    /// (a hostile producer does not use them).
    fn raw(b: &mut tar::Builder<&mut Vec<u8>>, kind: tar::EntryType, name: &str, link: &str) {
        let mut h = header(kind, 0o644, 0);
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_cksum();
        b.append(&h, io::empty()).unwrap();
    }

    fn opts(root: &str) -> ExtractOptions {
        ExtractOptions {
            root_name: Some(root.into()),
            ..ExtractOptions::default()
        }
    }

    /// Every path under `dir`, to compare the host tree before and after.
    fn listing(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                out.push(p.display().to_string());
                if p.is_dir() && !p.is_symlink() {
                    stack.push(p);
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn an_honest_tree_arrives_with_modes_links_and_times() {
        let t = tempfile::tempdir().unwrap();
        let stream = tar_of(|b| {
            let mut h = header(tar::EntryType::Directory, 0o755, 0);
            b.append_data(&mut h, "app", io::empty()).unwrap();
            file(b, "app/run.sh", 0o755, b"#!/bin/sh\n");
            let mut h = header(tar::EntryType::Symlink, 0o777, 0);
            b.append_link(&mut h, "app/link", "run.sh").unwrap();
            let mut h = header(tar::EntryType::Link, 0o755, 0);
            b.append_link(&mut h, "app/hard", "app/run.sh").unwrap();
            let mut h = header(tar::EntryType::Directory, 0o555, 0);
            b.append_data(&mut h, "app/ro", io::empty()).unwrap();
            file(b, "app/ro/inside", 0o644, b"x");
        });
        let r = extract_untrusted(&stream[..], t.path(), &opts("app")).unwrap();
        assert_eq!(r.entries, 6);
        let app = t.path().join("app");
        assert_eq!(std::fs::read(app.join("run.sh")).unwrap(), b"#!/bin/sh\n");
        let m = std::fs::metadata(app.join("run.sh")).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o755);
        assert_eq!(m.mtime(), 1_000_000);
        assert_eq!(m.nlink(), 2);
        assert_eq!(
            std::fs::read_link(app.join("link")).unwrap(),
            Path::new("run.sh")
        );
        let ro = std::fs::metadata(app.join("ro")).unwrap();
        assert_eq!(ro.permissions().mode() & 0o7777, 0o555);
        // Owners are the caller's unless asked.
        // SAFETY: geteuid has no preconditions.
        assert_eq!(m.uid(), unsafe { libc::geteuid() });
        std::fs::set_permissions(app.join("ro"), std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn traversal_absolute_paths_and_extra_names_are_refused() {
        for (name, root) in [
            ("../escape", "escape"),
            ("app/../../escape", "app"),
            ("/etc/passwd-skiff-test", "etc"),
            (".ssh/authorized_keys", "app"),
        ] {
            let t = tempfile::tempdir().unwrap();
            let inner = t.path().join("dest");
            std::fs::create_dir(&inner).unwrap();
            let stream = tar_of(|b| raw(b, tar::EntryType::Regular, name, ""));
            let before = listing(t.path());
            let e = extract_untrusted(&stream[..], &inner, &opts(root)).unwrap_err();
            assert!(matches!(e, Error::HostileStream(_)), "{name}: {e}");
            assert_eq!(listing(t.path()), before, "{name}");
        }
    }

    #[test]
    fn a_planted_symlink_is_never_written_through() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let dest = t.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        // The same stream plants the link and then writes through it.
        let target = outside.to_str().unwrap().to_owned();
        let stream = tar_of(|b| {
            let mut h = header(tar::EntryType::Symlink, 0o777, 0);
            b.append_link(&mut h, "app/evil", &target).unwrap();
            raw(b, tar::EntryType::Regular, "app/evil/owned", "");
        });
        let e = extract_untrusted(&stream[..], &dest, &opts("app")).unwrap_err();
        assert!(matches!(e, Error::HostileStream(_)), "{e}");
        assert!(std::fs::read_dir(&outside).unwrap().next().is_none());
        // A second copy into the same place, through the link the first one left.
        let stream = tar_of(|b| file(b, "app/evil/owned", 0o644, b"pwned"));
        let e = extract_untrusted(&stream[..], &dest, &opts("app")).unwrap_err();
        assert!(matches!(e, Error::HostileStream(_)), "{e}");
        assert!(std::fs::read_dir(&outside).unwrap().next().is_none());
        // A file entry over the link replaces the link, not its target.
        let stream = tar_of(|b| file(b, "app/evil", 0o644, b"plain"));
        extract_untrusted(&stream[..], &dest, &opts("app")).unwrap();
        assert_eq!(std::fs::read(dest.join("app/evil")).unwrap(), b"plain");
        assert!(std::fs::read_dir(&outside).unwrap().next().is_none());
    }

    #[test]
    fn devices_setid_bits_and_foreign_hardlinks_are_neutralised() {
        let t = tempfile::tempdir().unwrap();
        let secret = t.path().join("secret");
        std::fs::write(&secret, "host data").unwrap();
        let dest = t.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        let stream = tar_of(|b| {
            let mut h = header(tar::EntryType::Block, 0o666, 0);
            h.set_device_major(254).unwrap();
            h.set_device_minor(0).unwrap();
            b.append_data(&mut h, "app/disk", io::empty()).unwrap();
            let mut h = header(tar::EntryType::Char, 0o666, 0);
            h.set_device_major(1).unwrap();
            h.set_device_minor(1).unwrap();
            b.append_data(&mut h, "app/mem", io::empty()).unwrap();
            file(b, "app/suid", 0o4755, b"#!/bin/sh\n");
        });
        let r = extract_untrusted(&stream[..], &dest, &opts("app")).unwrap();
        assert_eq!(r.skipped, ["app/disk", "app/mem"]);
        assert_eq!(r.setid_dropped, 1);
        assert!(!dest.join("app/disk").exists() && !dest.join("app/mem").exists());
        let m = std::fs::metadata(dest.join("app/suid")).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o755);
        // Hardlinks to host files (by a path inside DEST that this copy did not make).
        std::fs::hard_link(&secret, dest.join("app/mine")).unwrap();
        for link in ["app/mine", "../secret", "/etc/shadow"] {
            let stream = tar_of(|b| raw(b, tar::EntryType::Link, "app/stolen", link));
            let e = extract_untrusted(&stream[..], &dest, &opts("app")).unwrap_err();
            assert!(matches!(e, Error::HostileStream(_)), "{link}: {e}");
            assert!(!dest.join("app/stolen").exists());
        }
    }

    #[test]
    fn sizes_and_entry_counts_are_capped() {
        let t = tempfile::tempdir().unwrap();
        let big = vec![7u8; 1 << 20];
        let stream = tar_of(|b| file(b, "app", 0o644, &big));
        let small = ExtractOptions {
            max_bytes: 64 << 10,
            ..opts("app")
        };
        let e = extract_untrusted(&stream[..], t.path(), &small).unwrap_err();
        assert!(matches!(e, Error::LimitExceeded(_)), "{e}");
        let stream = tar_of(|b| {
            for i in 0..20 {
                file(b, &format!("app/{i}"), 0o644, b"");
            }
        });
        let few = ExtractOptions {
            max_entries: 5,
            ..opts("app")
        };
        let e = extract_untrusted(&stream[..], t.path(), &few).unwrap_err();
        assert!(matches!(e, Error::LimitExceeded(_)), "{e}");
    }

    #[test]
    fn garbage_never_panics() {
        let t = tempfile::tempdir().unwrap();
        for seed in 0u32..200 {
            let mut x = seed.wrapping_mul(2_654_435_761) | 1;
            let bytes: Vec<u8> = (0..2048)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x.to_le_bytes()[0]
                })
                .collect();
            let _ = extract_untrusted(&bytes[..], t.path(), &ExtractOptions::default());
        }
    }
}
