//! Shared helpers for tests that boot real microVMs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Whether the test must fail instead of skipping when something is missing.
pub fn require_all() -> bool {
    std::env::var("SKIFF_REQUIRE_ALL").is_ok_and(|v| v == "1")
}

/// Skips (or fails under SKIFF_REQUIRE_ALL=1) with a loud reason.
pub fn skip(why: &str) {
    if require_all() {
        panic!("SKIFF_REQUIRE_ALL=1 but {why}");
    }
    eprintln!("SKIPPED: {why}");
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn vmm_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_skiff-vmm"))
}

/// /dev/kvm usable by this process.
pub fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// The test guest ELF: `$SKIFF_TESTGUEST`, else built by guest/testguest/build.sh.
pub fn testguest() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("SKIFF_TESTGUEST") {
        return Some(PathBuf::from(p));
    }
    let script = repo_root().join("guest/testguest/build.sh");
    let out = Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_string());
    path.is_file().then_some(path)
}

/// Test guest and KVM, or a skip message.
pub fn prerequisites() -> Option<PathBuf> {
    if !kvm_usable() {
        skip("/dev/kvm is not usable by this user");
        return None;
    }
    match testguest() {
        Some(p) => Some(p),
        None => {
            skip("test guest did not build (rustup target add x86_64-unknown-none)");
            None
        }
    }
}

/// Waits for `child` with a deadline; kills it when the deadline passes.
pub fn wait_with_deadline(mut child: Child, deadline: Duration) -> Output {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if start.elapsed() > deadline => {
                let _ = child.kill();
                break;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => break,
        }
    }
    child.wait_with_output().expect("collect VMM output")
}

/// Disk image whose first 4 KiB hold the pattern the test guest checks.
pub fn pattern_disk(path: &Path, size: usize) {
    let mut d = vec![0u8; size];
    d[..8].copy_from_slice(b"SKIFFTST");
    for (i, b) in d.iter_mut().enumerate().take(4096).skip(8) {
        *b = (i * 7 + 3) as u8;
    }
    std::fs::write(path, d).expect("write disk image");
}

/// What the test guest writes to bytes 4096..8192 of a writable disk.
pub fn guest_written_block() -> Vec<u8> {
    (0..4096usize)
        .map(|k| {
            if k < 8 {
                b"GUESTWRT"[k]
            } else {
                (k * 13 + 1) as u8
            }
        })
        .collect()
}
