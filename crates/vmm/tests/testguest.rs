//! Boots the project's test guest under this machine's KVM (PVM is enough) and checks
//! block and vsock end to end: the host writes a pattern the guest must read, the guest
//! writes a block the host must find, and the host talks to the guest over the vsock
//! UNIX socket in both directions.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const DEADLINE: Duration = Duration::from_secs(60);

fn run_vmm(args: &[&str]) -> std::process::Output {
    let child = Command::new(vmm_binary())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn skiff-vmm");
    wait_with_deadline(child, DEADLINE)
}

#[test]
fn boots_without_devices_and_exits_with_guest_status() {
    let Some(guest) = prerequisites() else { return };
    let out = run_vmm(&[
        "run",
        "--kernel",
        guest.to_str().unwrap(),
        "--report-boot-time",
    ]);
    let console = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "console:\n{console}\nstderr:\n{stderr}"
    );
    assert!(console.contains("testguest: PASS (0 disks"), "{console}");
    assert!(stderr.contains("skiff-vmm: boot-timer "), "{stderr}");
}

#[test]
fn boots_with_several_vcpus() {
    let Some(guest) = prerequisites() else { return };
    let out = run_vmm(&[
        "run",
        "--kernel",
        guest.to_str().unwrap(),
        "--cpus",
        "2",
        "--memory-mib",
        "64",
    ]);
    let console = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{console}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(console.contains("testguest: PASS"), "{console}");
}

#[test]
fn block_and_vsock_end_to_end() {
    let Some(guest) = prerequisites() else { return };
    let dir = tempfile::tempdir().unwrap();
    let rw = dir.path().join("rw.img");
    let ro = dir.path().join("ro.img");
    pattern_disk(&rw, 1 << 20);
    pattern_disk(&ro, 1 << 20);
    let ro_before = std::fs::read(&ro).unwrap();
    let uds = dir.path().join("vsock.sock");
    let console = dir.path().join("console.log");

    // Guest-initiated connection lands here (port 1234).
    let listener = UnixListener::bind(format!("{}_1234", uds.display())).unwrap();
    let uds_for_host = uds.clone();
    let host = std::thread::spawn(move || -> Result<(Vec<u8>, String, Vec<u8>), String> {
        let (mut a, _) = listener.accept().map_err(|e| e.to_string())?;
        a.set_read_timeout(Some(DEADLINE)).unwrap();
        a.write_all(b"hello from host").map_err(|e| e.to_string())?;
        let mut echo_a = vec![0u8; 15];
        a.read_exact(&mut echo_a)
            .map_err(|e| format!("echo A: {e}"))?;
        drop(a);
        // Host-initiated: CONNECT to the guest's port 5000.
        let mut b = UnixStream::connect(&uds_for_host).map_err(|e| e.to_string())?;
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

    let rw_spec = format!("{},id=rwdisk", rw.display());
    let ro_spec = format!("{},ro,id=rodisk", ro.display());
    let out = run_vmm(&[
        "run",
        "--kernel",
        guest.to_str().unwrap(),
        "--disk",
        &rw_spec,
        "--disk",
        &ro_spec,
        "--vsock",
        uds.to_str().unwrap(),
        "--guest-cid",
        "7",
        "--console",
        console.to_str().unwrap(),
    ]);
    let log = std::fs::read_to_string(&console).unwrap_or_default();
    assert_eq!(
        out.status.code(),
        Some(0),
        "console:\n{log}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "testguest: blk0 serial=rwdisk sectors=2048 ro=false",
        "testguest: blk0 write ok",
        "testguest: blk1 serial=rodisk sectors=2048 ro=true",
        "testguest: blk1 ro write refused ok",
        "testguest: vsock cid=7",
        "testguest: vsock echo ok (15 and 15 bytes)",
        "testguest: PASS (2 disks, vsock true, net false)",
    ] {
        assert!(log.contains(line), "missing `{line}` in console:\n{log}");
    }
    let (echo_a, ok_line, echo_b) = host.join().unwrap().unwrap();
    assert_eq!(echo_a, b"hello from host");
    assert!(
        ok_line.starts_with("OK ") && ok_line.ends_with('\n'),
        "{ok_line:?}"
    );
    assert_eq!(echo_b, b"ping over vsock");
    let rw_after = std::fs::read(&rw).unwrap();
    assert_eq!(&rw_after[4096..8192], guest_written_block().as_slice());
    assert_eq!(
        std::fs::read(&ro).unwrap(),
        ro_before,
        "read-only disk changed"
    );
}

#[test]
fn guest_failure_becomes_exit_status() {
    let Some(guest) = prerequisites() else { return };
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("wrong.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap(); // no pattern: the guest must notice
    let out = run_vmm(&[
        "run",
        "--kernel",
        guest.to_str().unwrap(),
        "--disk",
        disk.to_str().unwrap(),
    ]);
    let console = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{console}");
    assert!(
        console.contains("testguest: FAIL blk0: byte 0"),
        "{console}"
    );
}

#[test]
fn bad_input_gives_one_line_and_status_125() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk");
    std::fs::write(&junk, b"this is not a kernel").unwrap();
    let junk = junk.to_str().unwrap();
    let cases: Vec<Vec<&str>> = vec![
        vec!["run", "--kernel", "/nonexistent/vmlinux"],
        vec!["run", "--kernel", junk],
        vec!["run", "--kernel", junk, "--disk", "/nonexistent.img"],
        vec!["run", "--kernel", junk, "--disk", "x.img,bogus"],
        vec!["run", "--kernel", junk, "--cpus", "0"],
        vec!["run", "--kernel", junk, "--memory-mib", "0"],
        vec![
            "run",
            "--kernel",
            junk,
            "--vsock",
            "/tmp/x.sock",
            "--guest-cid",
            "2",
        ],
    ];
    for args in cases {
        let out = run_vmm(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {stderr}");
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("skiff-vmm: "))
            .collect();
        assert_eq!(lines.len(), 1, "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    let out = run_vmm(&["run", "--bogus-flag"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn guest_crash_is_reported_as_124() {
    let Some(guest) = prerequisites() else { return };
    let out = run_vmm(&[
        "run",
        "--kernel",
        guest.to_str().unwrap(),
        "--cmdline",
        "testguest.crash",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(124), "{stderr}");
    assert!(stderr.contains("guest crashed"), "{stderr}");
}

/// A persistent TAP for the test, removed on drop.
struct TestTap(String);

impl TestTap {
    fn create() -> Option<Self> {
        let name = format!("sktg{}", std::process::id() % 100_000);
        let ok = |args: &[&str]| {
            Command::new("ip")
                .args(args)
                .status()
                .is_ok_and(|s| s.success())
        };
        if !ok(&["tuntap", "add", "dev", &name, "mode", "tap", "vnet_hdr"]) {
            skip("cannot create a TAP device (needs root, /dev/net/tun and iproute2)");
            return None;
        }
        let tap = TestTap(name);
        assert!(ok(&["link", "set", "dev", &tap.0, "up"]));
        Some(tap)
    }
}

impl Drop for TestTap {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["tuntap", "del", "dev", &self.0, "mode", "tap"])
            .status();
    }
}

/// A raw packet socket on `ifname` (receives every frame the interface carries).
fn packet_socket(ifname: &str) -> (std::os::fd::OwnedFd, i32) {
    use std::os::fd::FromRawFd;
    let all = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2), checked below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(all)) };
    assert!(
        fd >= 0,
        "packet socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: fd is fresh and owned from here on.
    let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    let name = std::ffi::CString::new(ifname).expect("interface name");
    // SAFETY: valid NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) } as i32;
    // SAFETY: all-zero sockaddr_ll is valid.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = all;
    addr.sll_ifindex = ifindex;
    let len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
    // SAFETY: addr is a valid sockaddr_ll of `len` bytes.
    let bound = unsafe { libc::bind(fd, (&addr as *const libc::sockaddr_ll).cast(), len) };
    assert_eq!(bound, 0, "bind: {}", std::io::Error::last_os_error());
    let tv = libc::timeval {
        tv_sec: 1,
        tv_usec: 0,
    };
    // SAFETY: valid timeval option.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            16,
        )
    };
    (owned, ifindex)
}

#[test]
fn net_frames_flow_between_guest_and_tap() {
    use std::os::fd::AsRawFd;
    let Some(guest) = prerequisites() else { return };
    let Some(tap) = TestTap::create() else { return };
    let (sock, ifindex) = packet_socket(&tap.0);
    let net_spec = format!("tap={},mac=02:aa:bb:cc:dd:01", tap.0);
    let child = Command::new(vmm_binary())
        .args([
            "run",
            "--kernel",
            guest.to_str().unwrap(),
            "--net",
            &net_spec,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the guest's frame, then answer it.
    let mut got_guest_frame = false;
    for _ in 0..60 {
        let mut buf = [0u8; 2048];
        // SAFETY: buf is valid for its length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n >= 14 + 15 && buf[12..14] == [0x88, 0xb5] && &buf[14..29] == b"skiff-testguest" {
            assert_eq!(&buf[6..12], &[2, 0xaa, 0xbb, 0xcc, 0xdd, 1], "source MAC");
            got_guest_frame = true;
            break;
        }
    }
    let mut reply = [0u8; 60];
    reply[..6].copy_from_slice(&[2, 0xaa, 0xbb, 0xcc, 0xdd, 1]);
    reply[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
    reply[12..14].copy_from_slice(&[0x88, 0xb5]);
    reply[14..24].copy_from_slice(b"host-reply");
    // SAFETY: all-zero sockaddr_ll is valid.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_ifindex = ifindex;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&reply[..6]);
    // SAFETY: reply and `to` are valid for the given lengths.
    let sent = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            reply.as_ptr().cast(),
            reply.len(),
            0,
            (&to as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    let out = wait_with_deadline(child, DEADLINE);
    let console = String::from_utf8_lossy(&out.stdout);
    assert!(
        got_guest_frame,
        "guest frame never seen on {}; console:\n{console}",
        tap.0
    );
    assert_eq!(sent, 60);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{console}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "testguest: net mac=02:aa:bb:cc:dd:01",
        "testguest: net got host-reply",
        "net true)",
    ] {
        assert!(console.contains(line), "missing `{line}` in:\n{console}");
    }
}
