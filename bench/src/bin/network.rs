//! TCP throughput and latency through skiff's networking, side by side in one run with
//! the same traffic between two plain network namespaces joined by a veth pair:
//!
//! - host -> container through a published port on 127.0.0.1 (DNAT, bridge, TAP,
//!   virtio-net, guest stack), against host -> a namespace over veth;
//! - container -> container on one skiff network (guest, TAP, bridge, TAP, guest),
//!   against namespace -> namespace over veth, with the same busybox commands;
//! - host -> container through a port published by passt (`--network passt`: host
//!   socket, passt, UNIX stream socket, QEMU, virtio-net, guest stack), against the
//!   same namespace baseline.
//!
//!   cargo build --release -p skiff-cli -p skiff-vmm && sudo cargo run --release -p skiff-bench --bin network [-- MIB]
//!
//! Needs root, nft and iproute2. Throughput is one TCP stream of MIB MiB (default 32)
//! into busybox `nc -l > /dev/null` (4x as much between the namespaces, timed with
//! /proc/uptime's centiseconds); host latency is the round trip of 1 byte through
//! `nc -ll -e cat` (200 samples), container latency is busybox ping's average. busybox
//! nc copies in small buffers, so the namespace baseline is bounded by the tool too:
//! the ratio compares the same tools on both paths, not the paths' limits.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use skiff_bench::{percentile, print_table};

const SINK_PORT: u16 = 5001;
const ECHO_PORT: u16 = 5002;
const ECHO_SAMPLES: usize = 200;

/// Milliseconds with microsecond resolution (loopback-class round trips are tiny).
fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

fn skiff_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SKIFF_BIN") {
        return PathBuf::from(p);
    }
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("skiff")))
        .unwrap_or_else(|| PathBuf::from("skiff"))
}

struct Skiff {
    root: tempfile::TempDir,
    network: String,
}

impl Skiff {
    fn cmd(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(skiff_bin())
            .arg("--root")
            .arg(self.root.path())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("run skiff")?;
        if !out.status.success() {
            bail!(
                "skiff {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Skiff {
    fn drop(&mut self) {
        if let Ok(ids) = self.cmd(&["ps", "-aq"]) {
            for id in ids.lines() {
                let _ = self.cmd(&["rm", "-f", id]);
            }
        }
        let _ = self.cmd(&["network", "rm", &self.network]);
    }
}

/// Two namespaces, `skb-a-PID` (10.199.0.1) and `skb-b-PID` (10.199.0.2), on a veth pair.
struct Namespaces {
    a: String,
    b: String,
}

impl Namespaces {
    fn new() -> Result<Self> {
        let pid = std::process::id();
        let ns = Self {
            a: format!("skb-a-{pid}"),
            b: format!("skb-b-{pid}"),
        };
        let va = format!("vba{pid}");
        let vb = format!("vbb{pid}");
        for args in [
            vec!["netns", "add", &ns.a],
            vec!["netns", "add", &ns.b],
            vec!["link", "add", &va, "type", "veth", "peer", "name", &vb],
            vec!["link", "set", &va, "netns", &ns.a],
            vec!["link", "set", &vb, "netns", &ns.b],
            vec!["-n", &ns.a, "addr", "add", "10.199.0.1/24", "dev", &va],
            vec!["-n", &ns.b, "addr", "add", "10.199.0.2/24", "dev", &vb],
            vec!["-n", &ns.a, "link", "set", &va, "up"],
            vec!["-n", &ns.b, "link", "set", &vb, "up"],
            vec!["-n", &ns.a, "link", "set", "lo", "up"],
            vec!["-n", &ns.b, "link", "set", "lo", "up"],
        ] {
            let st = Command::new("ip").args(&args).status()?;
            if !st.success() {
                bail!("ip {args:?} failed");
            }
        }
        Ok(ns)
    }

    fn exec(&self, ns: &str, script: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, "busybox", "sh", "-c", script]);
        c
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// Kills a child's whole process group on drop.
struct KillGroup(Child);

impl Drop for KillGroup {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            // SAFETY: kill(2) on the process group we created for this child.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        let _ = self.0.wait();
    }
}

/// Sends `bytes` into a sink that closes when its input ends: MiB/s to that close.
fn push(addr: SocketAddrV4, bytes: usize) -> Result<f64> {
    let mut s = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(5))?;
    let chunk = vec![0u8; 64 * 1024];
    let t0 = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len());
        s.write_all(&chunk[..n])?;
        left -= n;
    }
    s.shutdown(Shutdown::Write)?;
    let mut rest = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let _ = s.read_to_end(&mut rest);
    Ok(bytes as f64 / (1 << 20) as f64 / t0.elapsed().as_secs_f64())
}

/// 1-byte round trips through an echo server.
fn round_trips(addr: SocketAddrV4) -> Result<Vec<Duration>> {
    let mut s = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(5))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut out = Vec::with_capacity(ECHO_SAMPLES);
    let mut b = [0u8; 1];
    for i in 0..ECHO_SAMPLES + 5 {
        let t = Instant::now();
        s.write_all(b"x")?;
        s.read_exact(&mut b)?;
        if i >= 5 {
            out.push(t.elapsed());
        }
    }
    Ok(out)
}

/// Waits until something accepts connections at `addr`.
fn wait_listening(addr: SocketAddrV4) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr.into(), Duration::from_millis(500)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("nothing listens at {addr}")
}

/// Waits until the echo server at `addr` answers (a listening proxy is not enough).
fn wait_echo(addr: SocketAddrV4) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let echoed = (|| -> std::io::Result<()> {
            let mut s = TcpStream::connect_timeout(&addr.into(), Duration::from_millis(500))?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(b"x")?;
            s.read_exact(&mut [0u8; 1])
        })();
        if echoed.is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    bail!("no echo from {addr}")
}

/// Runs `f` on a thread that has entered network namespace `ns`.
fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let file = File::open(Path::new("/run/netns").join(ns))?;
    std::thread::spawn(move || {
        // SAFETY: setns on this thread only, with a namespace descriptor we own.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns: {}", std::io::Error::last_os_error());
        }
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("namespace thread panicked"))?
}

/// The sink/echo servers every measurement talks to (the sink looped so each test
/// reconnects). busybox nc quits when its stdin ends, so the sink's stdin is a FIFO
/// opened read-write at `fifo`: never any data, never an end.
fn servers(fifo: &str) -> String {
    format!(
        "rm -f {fifo}; mkfifo {fifo}; while :; do nc -l -p {SINK_PORT} <> {fifo} > /dev/null; done & \
         exec nc -ll -p {ECHO_PORT} -e cat"
    )
}

/// Client-side script for peer -> peer: MIB MiB into the sink, timed with
/// /proc/uptime (centiseconds: busybox's date has no %N), then busybox ping's summary.
fn peer_script(ip: &str, mib: usize) -> String {
    format!(
        "for try in 1 2 3 4 5 6 7 8 9 10; do \
           a=$(cut -d' ' -f1 /proc/uptime); \
           if dd if=/dev/zero bs=65536 count={count} 2>/dev/null | nc {ip} {SINK_PORT}; then \
             b=$(cut -d' ' -f1 /proc/uptime); a=${{a/./}}; b=${{b/./}}; echo cs $((b - a)); break; \
           fi; sleep 0.5; \
         done; \
         ping -c 20 -i 0.2 {ip} | grep round-trip",
        count = mib * 16
    )
}

/// (MiB/s, ping average ms) from the peer script's output.
fn parse_peer(out: &str, mib: usize) -> Result<(f64, f64)> {
    let cs = out
        .lines()
        .find_map(|l| l.strip_prefix("cs "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .with_context(|| format!("no timing in {out:?}"))?;
    // round-trip min/avg/max = 0.051/0.066/0.101 ms
    let avg = out
        .lines()
        .find(|l| l.contains("round-trip"))
        .and_then(|l| l.split('=').nth(1))
        .and_then(|v| v.trim().split('/').nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .with_context(|| format!("no ping summary in {out:?}"))?;
    Ok((mib as f64 / (cs.max(1.0) / 100.0), avg))
}

fn main() -> Result<()> {
    let mib: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()
        .context("MIB must be a number")?
        .unwrap_or(32);
    let bytes = mib << 20;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the network benchmark needs root (bridges, TAPs, namespaces)");
    }

    // Baseline: two namespaces.
    let ns = Namespaces::new()?;
    // Its own process group, so the loop and every nc it started die together.
    let server: Child = ns
        .exec(
            &ns.b,
            &servers(&format!("/tmp/skiff-bench-sink-{}", std::process::id())),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()?;
    let server = KillGroup(server);
    let peer_b = SocketAddrV4::new(Ipv4Addr::new(10, 199, 0, 2), 0);
    let (ns_tput, ns_rtt) = in_netns(&ns.a, move || {
        wait_listening(SocketAddrV4::new(*peer_b.ip(), ECHO_PORT))?;
        std::thread::sleep(Duration::from_millis(200));
        let t = push(SocketAddrV4::new(*peer_b.ip(), SINK_PORT), bytes)?;
        Ok((t, round_trips(SocketAddrV4::new(*peer_b.ip(), ECHO_PORT))?))
    })?;
    std::thread::sleep(Duration::from_millis(300));
    // The namespaces are far faster: more bytes, so the centisecond timer still resolves.
    let ns_mib = mib * 4;
    let out = ns
        .exec(&ns.a, &peer_script("10.199.0.2", ns_mib))
        .output()?;
    let (ns_peer_tput, ns_ping) = parse_peer(&String::from_utf8_lossy(&out.stdout), ns_mib)?;

    // skiff: a server container with published ports, a client container beside it.
    let skiff = Skiff {
        root: tempfile::Builder::new()
            .prefix("skiff-bench-net")
            .tempdir_in("/tmp")?,
        network: format!("bench-{}", std::process::id()),
    };
    // The backend skiff chooses by itself: skiff-vmm where KVM is hardware-backed,
    // QEMU (TCG under PVM) otherwise; the table says which one it measured.
    let info: serde_json::Value =
        serde_json::from_str(&skiff.cmd(&["info", "--json"])?).context("skiff info --json")?;
    let backend = format!(
        "backend {} ({})",
        info["hypervisor"].as_str().unwrap_or("none"),
        info["accel"].as_str().unwrap_or("-")
    );
    skiff.cmd(&["network", "create", &skiff.network])?;
    skiff.cmd(&[
        "run",
        "-d",
        "--name",
        "server",
        "--network",
        &skiff.network,
        "-p",
        "127.0.0.1::5001",
        "-p",
        "127.0.0.1::5002",
        "busybox",
        "sh",
        "-c",
        &servers("/sink.fifo"),
    ])?;
    let host_port = |p: &str| -> Result<u16> {
        let line = skiff.cmd(&["port", "server", p])?;
        line.trim()
            .rsplit(':')
            .next()
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("skiff port printed {line:?}"))
    };
    let sink = SocketAddrV4::new(Ipv4Addr::LOCALHOST, host_port("5001")?);
    let echo = SocketAddrV4::new(Ipv4Addr::LOCALHOST, host_port("5002")?);
    wait_listening(echo)?;
    std::thread::sleep(Duration::from_millis(500));
    let vm_tput = push(sink, bytes)?;
    let vm_rtt = round_trips(echo)?;
    let server_ip = skiff
        .cmd(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "server"])?
        .trim()
        .to_owned();
    std::thread::sleep(Duration::from_millis(500));
    let out = skiff.cmd(&[
        "run",
        "--rm",
        "--network",
        &skiff.network,
        "busybox",
        "sh",
        "-c",
        &peer_script(&server_ip, mib),
    ])?;
    let (vm_peer_tput, vm_ping) = parse_peer(&out, mib)?;
    drop(server);

    // The same server behind passt (no bridge, no nftables). skiff-vmm refuses passt,
    // so where skiff chose the VMM (hardware KVM) this row runs on QEMU.
    skiff.cmd(&["rm", "-f", "server"])?;
    skiff.cmd(&[
        "--hypervisor",
        "qemu",
        "run",
        "-d",
        "--name",
        "server",
        "--network",
        "passt",
        "-p",
        "127.0.0.1::5001",
        "-p",
        "127.0.0.1::5002",
        "busybox",
        "sh",
        "-c",
        &servers("/sink.fifo"),
    ])?;
    let sink = SocketAddrV4::new(Ipv4Addr::LOCALHOST, host_port("5001")?);
    let echo = SocketAddrV4::new(Ipv4Addr::LOCALHOST, host_port("5002")?);
    // passt accepts on the host before the guest listens: wait for a real echo.
    wait_echo(echo)?;
    std::thread::sleep(Duration::from_millis(500));
    let passt_tput = push(sink, bytes)?;
    let passt_rtt = round_trips(echo)?;

    let ratio = |a: f64, b: f64| format!("{:.2}x", a / b);
    println!(
        "TCP through skiff's network ({backend}; the passt row always on QEMU) vs two network namespaces on veth; {mib} MiB per stream\n"
    );
    print_table(
        &[
            "path",
            "skiff MiB/s",
            "netns MiB/s",
            "ratio",
            "skiff RTT p50 ms",
            "p95",
            "netns RTT p50 ms",
            "p95",
            "ratio",
        ],
        &[
            vec![
                "host -> container, -p 127.0.0.1 (TCP echo RTT)".into(),
                format!("{vm_tput:.1}"),
                format!("{ns_tput:.1}"),
                ratio(ns_tput, vm_tput),
                ms(percentile(&vm_rtt, 50.0)),
                ms(percentile(&vm_rtt, 95.0)),
                ms(percentile(&ns_rtt, 50.0)),
                ms(percentile(&ns_rtt, 95.0)),
                ratio(
                    percentile(&vm_rtt, 50.0).as_secs_f64(),
                    percentile(&ns_rtt, 50.0).as_secs_f64(),
                ),
            ],
            vec![
                "host -> container, passt -p 127.0.0.1 (TCP echo RTT)".into(),
                format!("{passt_tput:.1}"),
                format!("{ns_tput:.1}"),
                ratio(ns_tput, passt_tput),
                ms(percentile(&passt_rtt, 50.0)),
                ms(percentile(&passt_rtt, 95.0)),
                ms(percentile(&ns_rtt, 50.0)),
                ms(percentile(&ns_rtt, 95.0)),
                ratio(
                    percentile(&passt_rtt, 50.0).as_secs_f64(),
                    percentile(&ns_rtt, 50.0).as_secs_f64(),
                ),
            ],
            vec![
                "container -> container (busybox nc; ping avg)".into(),
                format!("{vm_peer_tput:.1}"),
                format!("{ns_peer_tput:.1}"),
                ratio(ns_peer_tput, vm_peer_tput),
                format!("{vm_ping:.3}"),
                "-".into(),
                format!("{ns_ping:.3}"),
                "-".into(),
                ratio(vm_ping, ns_ping),
            ],
        ],
    );
    println!("\nratio: how many times slower skiff's path is than the namespaces'");
    Ok(())
}
