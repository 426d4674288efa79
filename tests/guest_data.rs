//! The host never trusts data a guest made: `skiff cp` out of a container whose own
//! `tar` is replaced by one that sends crafted streams, and `skiff commit` of a
//! writable disk whose filesystem the guest crafted. Nothing may land outside DEST,
//! device nodes and set-id bits never reach the host, and the host kernel never mounts
//! a guest-written filesystem.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use skiff_tests::cli::{text, Skiff};
use skiff_tests::{prerequisite, skiff_bin};

/// A failed command with exactly one line on stderr; returns it.
fn fails(s: &Skiff, args: &[&str]) -> String {
    let out = s.run(args);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "skiff {args:?} succeeded: {err}");
    assert_eq!(err.trim().lines().count(), 1, "skiff {args:?}: {err}");
    err
}

/// Every path under `dir` with its kind, mode and size, to compare before and after.
fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            out.push(format!("{} {:o} {}", p.display(), m.mode(), m.len()));
            if m.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A tar header written field by field, so names a well-behaved tar would refuse
/// (`..`, absolute paths) go in as a hostile producer writes them.
fn entry(out: &mut Vec<u8>, kind: tar::EntryType, name: &str, link: &str, mode: u32, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(data.len() as u64);
    h.set_mtime(1);
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    if matches!(kind, tar::EntryType::Block | tar::EntryType::Char) {
        let (major, minor) = if kind == tar::EntryType::Block {
            (254, 0)
        } else {
            (1, 1)
        };
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
    }
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fn finished(mut t: Vec<u8>) -> Vec<u8> {
    t.extend_from_slice(&[0u8; 1024]);
    t
}

#[test]
fn cp_out_of_a_container_with_a_hostile_tar_writes_nothing_outside_dest() {
    let Some(s) = Skiff::new(
        "cp_out_of_a_container_with_a_hostile_tar_writes_nothing_outside_dest",
        "skiff-gd",
    ) else {
        return;
    };
    use tar::EntryType as T;
    let host = s.root.path().join("host");
    let dest = host.join("dest");
    let outside = host.join("outside");
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(host.join("secret"), "host secret\n").unwrap();
    let outside_s = outside.to_str().unwrap().to_owned();

    // Each stream answers `skiff cp evil:/data/x DEST`: entries may only be `x...`.
    let mut streams: Vec<(&str, Vec<u8>, bool)> = Vec::new();
    let mut t = Vec::new();
    entry(&mut t, T::Regular, "x/../../escape", "", 0o644, b"pwned");
    streams.push(("dotdot", finished(t), false));
    let mut t = Vec::new();
    entry(
        &mut t,
        T::Regular,
        "/tmp/skiff-gd-absolute",
        "",
        0o644,
        b"pwned",
    );
    streams.push(("absolute", finished(t), false));
    let mut t = Vec::new();
    entry(&mut t, T::Regular, "x", "", 0o644, b"ok");
    entry(
        &mut t,
        T::Regular,
        ".ssh/authorized_keys",
        "",
        0o600,
        b"ssh-ed25519 AAAA",
    );
    streams.push(("extra-name", finished(t), false));
    let mut t = Vec::new();
    entry(&mut t, T::Symlink, "x", &outside_s, 0o777, b"");
    entry(&mut t, T::Regular, "x/pwned", "", 0o644, b"pwned");
    streams.push(("symlink-then-write", finished(t), false));
    let mut t = Vec::new();
    entry(&mut t, T::Directory, "x/", "", 0o755, b"");
    entry(&mut t, T::Link, "x/shadow", "../secret", 0o644, b"");
    streams.push(("hardlink-out", finished(t), false));
    let mut t = Vec::new();
    entry(&mut t, T::Directory, "x/", "", 0o755, b"");
    entry(&mut t, T::Link, "x/shadow", "/etc/shadow", 0o644, b"");
    streams.push(("hardlink-abs", finished(t), false));
    let mut t = Vec::new();
    // 1 TiB claimed, a few bytes sent: refused or failed, never written out.
    let mut h = tar::Header::new_gnu();
    h.set_path("x").unwrap();
    h.set_size(1 << 40);
    h.set_mode(0o644);
    h.set_cksum();
    t.extend_from_slice(h.as_bytes());
    t.extend_from_slice(&[b'A'; 4096]);
    streams.push(("huge", t, false));
    // Neutralised, not refused: devices left out, set-id bits dropped.
    let mut t = Vec::new();
    entry(&mut t, T::Directory, "x/", "", 0o755, b"");
    entry(&mut t, T::Block, "x/hostdisk", "", 0o666, b"");
    entry(&mut t, T::Char, "x/mem", "", 0o666, b"");
    entry(&mut t, T::Regular, "x/suid", "", 0o4755, b"#!/bin/sh\n");
    streams.push(("devices-setuid", finished(t), true));
    // Two copies in a row: the first plants a symlink (allowed as data)...
    let mut t = Vec::new();
    entry(&mut t, T::Directory, "x/", "", 0o755, b"");
    entry(&mut t, T::Symlink, "x/link", &outside_s, 0o777, b"");
    streams.push(("plant", finished(t), true));
    // ...the second writes through it.
    let mut t = Vec::new();
    entry(&mut t, T::Regular, "x/link/pwned", "", 0o644, b"pwned");
    streams.push(("write-through", finished(t), false));

    let tars = s.root.path().join("tars");
    std::fs::create_dir_all(&tars).unwrap();
    for (name, bytes, _) in &streams {
        std::fs::write(tars.join(name), bytes).unwrap();
    }
    s.ok(&["run", "-d", "--name", "evil", "busybox", "sleep", "3600"]);
    s.ok(&["exec", "evil", "mkdir", "-p", "/data/x"]);
    s.ok(&["cp", tars.to_str().unwrap(), "evil:/tars"]);
    // The container's own `tar` now sends whichever stream /tars/current names.
    s.ok(&[
        "exec",
        "evil",
        "sh",
        "-c",
        "rm /bin/tar; printf '#!/bin/sh\\ncat /tars/$(cat /tars/current)\\n' > /bin/tar; chmod 755 /bin/tar",
    ]);
    let dest_arg = dest.to_str().unwrap();
    for (name, _, accepted) in &streams {
        s.ok(&[
            "exec",
            "evil",
            "sh",
            "-c",
            &format!("echo {name} > /tars/current"),
        ]);
        let before_outside = listing(&outside);
        let before_host: Vec<String> = listing(&host)
            .into_iter()
            .filter(|l| !l.starts_with(dest_arg))
            .collect();
        if *accepted {
            s.ok(&["cp", "evil:/data/x", dest_arg]);
        } else {
            let err = fails(&s, &["cp", "evil:/data/x", dest_arg]);
            eprintln!("{name}: {err}");
            assert!(
                err.contains("refus") || err.contains("fail"),
                "{name}: {err}"
            );
        }
        assert_eq!(listing(&outside), before_outside, "{name}");
        let after_host: Vec<String> = listing(&host)
            .into_iter()
            .filter(|l| !l.starts_with(dest_arg))
            .collect();
        assert_eq!(after_host, before_host, "{name}");
        assert!(!Path::new("/tmp/skiff-gd-absolute").exists(), "{name}");
        assert!(!s.root.path().join("escape").exists(), "{name}");
        for e in listing(&dest) {
            assert!(!e.contains("authorized_keys"), "{name}: {e}");
        }
    }
    // What the neutralised stream left: no device node, no set-id bit.
    let x = dest.join("x");
    assert!(!x.join("hostdisk").exists() && !x.join("mem").exists());
    let m = std::fs::metadata(x.join("suid")).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, 0o755);
    assert_eq!(std::fs::read_link(x.join("link")).unwrap(), outside);
    assert_eq!(
        std::fs::read_to_string(host.join("secret")).unwrap(),
        "host secret\n"
    );
}

/// Runs `skiff commit` under strace and returns (its output, the mount calls seen).
fn commit_traced(s: &Skiff, args: &[&str]) -> (Output, Vec<String>) {
    let log = s.root.path().join("strace.log");
    let out = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-e",
            "trace=mount,fsmount,fsopen,move_mount,mount_setattr",
        ])
        .arg("-o")
        .arg(&log)
        .arg(skiff_bin())
        .arg("--root")
        .arg(s.root.path())
        .arg("commit")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let calls = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("mount(") || l.contains("fsopen(") || l.contains("fsmount("))
        .map(str::to_owned)
        .collect();
    (out, calls)
}

fn rw_img(s: &Skiff, name: &str) -> PathBuf {
    let id = s.ok(&["inspect", "-f", "{{.Id}}", name]).trim().to_owned();
    s.root.path().join("containers").join(id).join("rw.img")
}

#[test]
fn commit_never_mounts_the_guest_disk_and_checks_what_the_guest_sends() {
    let Some(s) = Skiff::new(
        "commit_never_mounts_the_guest_disk_and_checks_what_the_guest_sends",
        "skiff-gd",
    ) else {
        return;
    };
    if !prerequisite(
        "commit_never_mounts_the_guest_disk_and_checks_what_the_guest_sends",
        which("strace").and(which("mkfs.ext4")),
    ) {
        return;
    }
    // An honest container: its changes become a layer, without a host mount.
    s.ok(&[
        "run",
        "--name",
        "honest",
        "busybox",
        "sh",
        "-c",
        "echo kept > /etc/added; rm /etc/passwd; mkdir -p /opt/o; ln /etc/added /opt/o/hard",
    ]);
    let (out, mounts) = commit_traced(&s, &["honest", "honest:1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(mounts.is_empty(), "the host mounted: {mounts:?}");
    let got = s.ok(&[
        "run",
        "--rm",
        "honest:1",
        "sh",
        "-c",
        "cat /etc/added /opt/o/hard; test -e /etc/passwd || echo gone",
    ]);
    assert_eq!(got, "kept\nkept\ngone\n");

    // A writable disk whose filesystem the guest crafted: set-id root files, device
    // nodes, a symlink to a host secret. They stay data inside the image.
    s.ok(&["create", "--name", "crafted", "busybox", "true"]);
    let tree = s.root.path().join("crafted-tree");
    std::fs::create_dir_all(tree.join("upper/bin")).unwrap();
    std::fs::create_dir_all(tree.join("work")).unwrap();
    std::fs::write(tree.join("upper/bin/rootshell"), "#!/bin/sh\nid -u\n").unwrap();
    std::fs::set_permissions(
        tree.join("upper/bin/rootshell"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    std::os::unix::fs::symlink("/etc/shadow", tree.join("upper/shadow-link")).unwrap();
    let dev = std::ffi::CString::new(tree.join("upper/hostdisk").to_str().unwrap()).unwrap();
    // SAFETY: a valid path; makes a block device node in the test's own tree.
    let rc = unsafe { libc::mknod(dev.as_ptr(), libc::S_IFBLK | 0o666, libc::makedev(254, 0)) };
    assert_eq!(rc, 0);
    std::fs::set_permissions(
        tree.join("upper/hostdisk"),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    let img = rw_img(&s, "crafted");
    let _ = std::fs::remove_file(&img);
    let mkfs = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&tree)
        .arg(&img)
        .arg("64M")
        .output()
        .unwrap();
    assert!(mkfs.status.success(), "{}", text(&mkfs.stderr));
    let (out, mounts) = commit_traced(&s, &["crafted", "crafted:1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(mounts.is_empty(), "the host mounted: {mounts:?}");
    let got = s.ok(&[
        "run",
        "--rm",
        "crafted:1",
        "sh",
        "-c",
        "stat -c '%a %F' /bin/rootshell /hostdisk; readlink /shadow-link",
    ]);
    assert_eq!(
        got,
        "4755 regular file\n666 block special file\n/etc/shadow\n"
    );

    // Garbage instead of a filesystem: one clear error, nothing mounted, no image.
    s.ok(&["create", "--name", "garbage", "busybox", "true"]);
    let img = rw_img(&s, "garbage");
    std::fs::write(&img, vec![0xa5u8; 8 << 20]).unwrap();
    let images_before = s.ok(&["images", "-q"]);
    let (out, mounts) = commit_traced(&s, &["garbage", "garbage:1"]);
    assert!(!out.status.success());
    assert!(mounts.is_empty(), "the host mounted: {mounts:?}");
    assert_eq!(
        text(&out.stderr).trim().lines().count(),
        1,
        "{}",
        text(&out.stderr)
    );
    assert_eq!(s.ok(&["images", "-q"]), images_before);
}

fn which(tool: &str) -> Result<(), String> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    if found {
        Ok(())
    } else {
        Err(format!("{tool} missing (scripts/setup.sh installs it)"))
    }
}
