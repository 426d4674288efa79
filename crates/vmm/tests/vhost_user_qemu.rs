//! The project's block and vsock models served over vhost-user by `skiff-vmm
//! vhost-user-blk` / `vhost-user-vsock`, driven by QEMU (TCG, `-M microvm`) running the
//! project's guest kernel with a Linux test init: a real Linux virtio driver reads the
//! host's pattern, writes a block, is refused on a read-only disk, and echoes vsock
//! data in both directions.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const DEADLINE: Duration = Duration::from_secs(180);

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

fn script_output(script: &Path) -> Option<PathBuf> {
    let out = Command::new(script)
        .stderr(Stdio::inherit())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_string()))
}

fn kernel() -> Option<PathBuf> {
    let dir = match std::env::var("SKIFF_KERNEL_DIR") {
        Ok(d) => PathBuf::from(d),
        Err(_) => script_output(&repo_root().join("guest/kernel/build.sh"))?,
    };
    let bz = dir.join("bzImage");
    bz.is_file().then_some(bz)
}

/// A newc cpio archive with /dev, /sys and /init.
fn initramfs(init: &[u8], out: &Path) {
    fn entry(buf: &mut Vec<u8>, ino: u32, name: &str, mode: u32, data: &[u8]) {
        let fields = [
            ino,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        buf.extend_from_slice(b"070701");
        for f in fields {
            buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        buf.extend_from_slice(name.as_bytes());
        buf.push(0);
        while !buf.len().is_multiple_of(4) {
            buf.push(0);
        }
        buf.extend_from_slice(data);
        while !buf.len().is_multiple_of(4) {
            buf.push(0);
        }
    }
    let mut buf = Vec::new();
    entry(&mut buf, 1, "dev", 0o040755, b"");
    entry(&mut buf, 2, "sys", 0o040755, b"");
    entry(&mut buf, 3, "init", 0o100755, init);
    entry(&mut buf, 0, "TRAILER!!!", 0, b"");
    std::fs::write(out, buf).expect("write initramfs");
}

fn wait_for_socket(path: &Path, daemon: &mut Child) {
    let start = Instant::now();
    while !path.exists() {
        if let Ok(Some(status)) = daemon.try_wait() {
            panic!(
                "vhost-user daemon for {} exited early: {status}",
                path.display()
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn daemon(args: &[&str], log: &Path) -> Child {
    Command::new(vmm_binary())
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("daemon log"))
        .spawn()
        .expect("spawn vhost-user daemon")
}

#[test]
fn linux_drives_block_and_vsock_models_over_vhost_user() {
    let Some(qemu) = which("qemu-system-x86_64") else {
        skip("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)");
        return;
    };
    let Some(init) = script_output(&repo_root().join("guest/testguest/linux-init/build.sh")) else {
        skip("Linux test init did not build (rustup target add x86_64-unknown-linux-musl)");
        return;
    };
    let Some(kernel) = kernel() else {
        skip("guest kernel not available (guest/kernel/build.sh or SKIFF_KERNEL_DIR)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cpio = d.join("init.cpio");
    initramfs(&std::fs::read(&init).unwrap(), &cpio);
    let (rw, ro) = (d.join("rw.img"), d.join("ro.img"));
    pattern_disk(&rw, 1 << 20);
    pattern_disk(&ro, 1 << 20);
    let ro_before = std::fs::read(&ro).unwrap();
    let (vs_sock, b0_sock, b1_sock, uds) = (
        d.join("vs.sock"),
        d.join("b0.sock"),
        d.join("b1.sock"),
        d.join("v.sock"),
    );
    let s = |p: &Path| p.to_str().unwrap().to_string();

    let mut daemons = vec![
        daemon(
            &[
                "vhost-user-vsock",
                "--guest-cid",
                "3",
                "--socket",
                &s(&vs_sock),
                "--uds-path",
                &s(&uds),
            ],
            &d.join("vs.log"),
        ),
        daemon(
            &[
                "vhost-user-blk",
                "--socket",
                &s(&b0_sock),
                "--disk",
                &s(&rw),
                "--id",
                "rwdisk",
            ],
            &d.join("b0.log"),
        ),
        daemon(
            &[
                "vhost-user-blk",
                "--socket",
                &s(&b1_sock),
                "--disk",
                &s(&ro),
                "--readonly",
            ],
            &d.join("b1.log"),
        ),
    ];
    for (sock, child) in [&vs_sock, &b0_sock, &b1_sock]
        .into_iter()
        .zip(daemons.iter_mut())
    {
        wait_for_socket(sock, child);
    }

    let listener = UnixListener::bind(format!("{}_1234", uds.display())).unwrap();
    let uds_host = uds.clone();
    let host = std::thread::spawn(move || -> Result<(Vec<u8>, String, Vec<u8>), String> {
        let (mut a, _) = listener.accept().map_err(|e| e.to_string())?;
        a.set_read_timeout(Some(DEADLINE)).unwrap();
        a.write_all(b"hello from host").map_err(|e| e.to_string())?;
        let mut echo_a = vec![0u8; 15];
        a.read_exact(&mut echo_a)
            .map_err(|e| format!("echo A: {e}"))?;
        drop(a);
        let mut b = UnixStream::connect(&uds_host).map_err(|e| e.to_string())?;
        b.set_read_timeout(Some(DEADLINE)).unwrap();
        b.write_all(b"CONNECT 5000\n").map_err(|e| e.to_string())?;
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while byte[0] != b'\n' {
            b.read_exact(&mut byte)
                .map_err(|e| format!("OK line: {e}"))?;
            line.push(byte[0]);
        }
        b.write_all(b"ping over vsock").map_err(|e| e.to_string())?;
        let mut echo_b = vec![0u8; 15];
        b.read_exact(&mut echo_b)
            .map_err(|e| format!("echo B: {e}"))?;
        Ok((echo_a, String::from_utf8_lossy(&line).into_owned(), echo_b))
    });

    let chardev = |id: &str, p: &Path| format!("socket,id={id},path={}", p.display());
    let qemu_child = Command::new(qemu)
        .args([
            "-M",
            "microvm,x-option-roms=off,isa-serial=on,acpi=off,memory-backend=mem",
        ])
        .args([
            "-object",
            "memory-backend-memfd,id=mem,size=256M,share=on",
            "-m",
            "256M",
        ])
        .args([
            "-accel",
            "tcg",
            "-nographic",
            "-no-reboot",
            "-nodefaults",
            "-serial",
            "stdio",
        ])
        .arg("-kernel")
        .arg(&kernel)
        .arg("-initrd")
        .arg(&cpio)
        .args(["-append", "console=ttyS0 reboot=t panic=-1 quiet"])
        .args([
            "-chardev",
            &chardev("vs0", &vs_sock),
            "-device",
            "vhost-user-vsock-device,chardev=vs0",
        ])
        .args([
            "-chardev",
            &chardev("b0", &b0_sock),
            "-device",
            "vhost-user-blk,chardev=b0",
        ])
        .args([
            "-chardev",
            &chardev("b1", &b1_sock),
            "-device",
            "vhost-user-blk,chardev=b1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn qemu");
    let out = wait_with_deadline(qemu_child, DEADLINE);
    let console = String::from_utf8_lossy(&out.stdout);
    assert!(
        console.contains("linux-init: PASS"),
        "console:\n{console}\nqemu stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "vda serial=rwdisk",
        "vda write ok",
        "vdb ro write refused ok",
        "vsock echo ok (15 and 15 bytes)",
    ] {
        assert!(console.contains(line), "missing `{line}` in:\n{console}");
    }
    let (echo_a, ok_line, echo_b) = host.join().unwrap().unwrap();
    assert_eq!(echo_a, b"hello from host");
    assert!(ok_line.starts_with("OK "), "{ok_line:?}");
    assert_eq!(echo_b, b"ping over vsock");
    assert_eq!(
        &std::fs::read(&rw).unwrap()[4096..8192],
        guest_written_block().as_slice()
    );
    assert_eq!(std::fs::read(&ro).unwrap(), ro_before);

    // The daemons serve one front end and exit when it goes away.
    for child in daemons {
        let out = wait_with_deadline(child, Duration::from_secs(10));
        assert_eq!(
            out.status.code(),
            Some(0),
            "vhost-user daemon did not exit cleanly: {:?}",
            out.status
        );
    }
}
