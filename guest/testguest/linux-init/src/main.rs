//! PID 1 of a Linux guest used to test skiff's device models through QEMU (vhost-user)
//! or skiff-vmm on hardware KVM. It performs the same checks as the bare-metal test
//! guest with the kernel's own virtio drivers:
//!
//! - /dev/vda: first 4 KiB hold `SKIFFTST` + `(i*7+3) as u8`; bytes 4096..8192 are
//!   rewritten with `GUESTWRT` + `(i*13+1) as u8` and synced; serial read from sysfs.
//! - /dev/vdb (if present): read-only, so opening it for writing must fail.
//! - vsock: connects to host port 1234 and echoes until EOF, then accepts one
//!   connection on port 5000 and echoes until EOF.
//!
//! Prints `linux-init: PASS` or `linux-init: FAIL ...` and reboots (QEMU with
//! `-no-reboot` and `reboot=t` then exits).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

fn fail(msg: String) -> ! {
    println!("linux-init: FAIL {msg}");
    finish()
}

fn finish() -> ! {
    // SAFETY: sync and reboot take no pointers; as PID 1 we are allowed to reboot.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_AUTOBOOT);
    }
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

fn mount(fstype: &str, target: &str) {
    let _ = std::fs::create_dir_all(target);
    let src = std::ffi::CString::new(fstype).unwrap_or_default();
    let dst = std::ffi::CString::new(target).unwrap_or_default();
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            src.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        println!(
            "linux-init: mount {fstype} on {target} failed: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[repr(align(4096))]
struct AlignedBlock([u8; 4096]);

fn check_disks() {
    let serial = std::fs::read_to_string("/sys/block/vda/serial").unwrap_or_default();
    println!("linux-init: vda serial={}", serial.trim());
    let mut vda = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/vda")
        .unwrap_or_else(|e| fail(format!("open /dev/vda: {e}")));
    let mut first = vec![0u8; 4096];
    vda.read_exact(&mut first)
        .unwrap_or_else(|e| fail(format!("read vda: {e}")));
    for (k, b) in first.iter().enumerate() {
        let want = if k < 8 {
            b"SKIFFTST"[k]
        } else {
            (k * 7 + 3) as u8
        };
        if *b != want {
            fail(format!("vda byte {k} is {b:#x}, want {want:#x}"));
        }
    }
    println!("linux-init: vda read ok");
    let block: Vec<u8> = (0..4096usize)
        .map(|k| {
            if k < 8 {
                b"GUESTWRT"[k]
            } else {
                (k * 13 + 1) as u8
            }
        })
        .collect();
    vda.seek(SeekFrom::Start(4096))
        .unwrap_or_else(|e| fail(format!("seek vda: {e}")));
    vda.write_all(&block)
        .unwrap_or_else(|e| fail(format!("write vda: {e}")));
    vda.sync_all()
        .unwrap_or_else(|e| fail(format!("fsync vda: {e}")));
    println!("linux-init: vda write ok");
    if std::path::Path::new("/dev/vdb").exists() {
        let ro = std::fs::read_to_string("/sys/block/vdb/ro").unwrap_or_default();
        if ro.trim() != "1" {
            fail(format!("/sys/block/vdb/ro is {:?}, want 1", ro.trim()));
        }
        // Linux may allow the open; the write itself must fail.
        let refused = match OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open("/dev/vdb")
        {
            Err(e) => e.to_string(),
            Ok(mut vdb) => {
                let aligned = AlignedBlock([0u8; 4096]);
                match vdb
                    .seek(SeekFrom::Start(4096))
                    .and_then(|_| vdb.write_all(&aligned.0))
                    .and_then(|()| vdb.sync_all())
                {
                    Ok(()) => fail("write to read-only /dev/vdb succeeded".into()),
                    Err(e) => e.to_string(),
                }
            }
        };
        println!("linux-init: vdb ro write refused ok ({refused})");
    }
}

fn vsock_socket() -> OwnedFd {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        fail(format!("vsock socket: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh, owned descriptor.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn vsock_addr(cid: u32, port: u32) -> libc::sockaddr_vm {
    // SAFETY: sockaddr_vm is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_cid = cid;
    addr.svm_port = port;
    addr
}

fn echo(fd: OwnedFd, what: &str) -> usize {
    let mut stream = File::from(fd);
    let mut buf = [0u8; 4096];
    let mut total = 0;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                total += n;
                stream
                    .write_all(&buf[..n])
                    .unwrap_or_else(|e| fail(format!("{what}: echo: {e}")));
            }
            Err(e) => fail(format!("{what}: read: {e}")),
        }
    }
    total
}

fn check_vsock() {
    let addr_len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
    // Listen before anything else so a host CONNECT never races the bind.
    let listener = vsock_socket();
    let me = vsock_addr(libc::VMADDR_CID_ANY, 5000);
    let raw = std::os::fd::AsRawFd::as_raw_fd(&listener);
    // SAFETY: `me` is a valid sockaddr_vm; raw is an open socket.
    if unsafe { libc::bind(raw, (&me as *const libc::sockaddr_vm).cast(), addr_len) } != 0
        // SAFETY: raw is an open, bound socket.
        || unsafe { libc::listen(raw, 1) } != 0
    {
        fail(format!(
            "vsock listen 5000: {}",
            std::io::Error::last_os_error()
        ));
    }
    println!("linux-init: vsock listening on 5000");
    let fd = vsock_socket();
    let host = vsock_addr(2, 1234);
    let mut connected = false;
    for _ in 0..100 {
        // SAFETY: `host` is a valid sockaddr_vm of `addr_len` bytes.
        let rc = unsafe {
            libc::connect(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                (&host as *const libc::sockaddr_vm).cast(),
                addr_len,
            )
        };
        if rc == 0 {
            connected = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    if !connected {
        fail(format!(
            "vsock connect to host:1234: {}",
            std::io::Error::last_os_error()
        ));
    }
    let a = echo(fd, "vsock host:1234");

    // SAFETY: accept without peer address.
    let conn = unsafe { libc::accept(raw, std::ptr::null_mut(), std::ptr::null_mut()) };
    if conn < 0 {
        fail(format!("vsock accept: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: conn is a fresh, owned descriptor.
    let b = echo(unsafe { OwnedFd::from_raw_fd(conn) }, "vsock :5000");
    if a == 0 || b == 0 {
        fail(format!("vsock: nothing echoed ({a}, {b})"));
    }
    println!("linux-init: vsock echo ok ({a} and {b} bytes)");
}

fn main() {
    println!("linux-init: started");
    mount("devtmpfs", "/dev");
    mount("sysfs", "/sys");
    if std::path::Path::new("/dev/vda").exists() {
        check_disks();
    }
    check_vsock();
    println!("linux-init: PASS");
    finish()
}
