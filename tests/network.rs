//! Container networking end to end, on real microVMs: containers on one user network
//! reach each other by name, `-p` reaches a server in a container from the host,
//! containers on different networks cannot talk and cannot reach host services,
//! `--network none` has only lo, and bad input is one line with exit 125.
//!
//! Traffic stays on skiff's bridges and the host's loopback. Needs root (TAPs, bridges),
//! nft and /dev/net/tun; networks are host-wide, so every name here carries the test
//! process's pid and is removed at the end.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use skiff_tests::{prerequisite, skiff_bin, vm_ready};

struct Skiff {
    root: tempfile::TempDir,
    networks: Vec<String>,
}

fn network_ready() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root (bridges, TAPs, nftables)".into());
    }
    if !Path::new("/dev/net/tun").exists() {
        return Err("/dev/net/tun is missing".into());
    }
    match Command::new("nft").arg("--version").output() {
        Ok(o) if o.status.success() => Ok(()),
        _ => Err("nft not found (apt-get install nftables)".into()),
    }
}

impl Skiff {
    fn new(test: &str) -> Option<Self> {
        if !prerequisite(test, vm_ready()) || !prerequisite(test, network_ready()) {
            return None;
        }
        let busybox = if Path::new("/bin/busybox").is_file() {
            Ok(())
        } else {
            Err("/bin/busybox missing (apt-get install busybox-static)".to_owned())
        };
        if !prerequisite(test, busybox) {
            return None;
        }
        Some(Self {
            root: tempfile::Builder::new()
                .prefix("skiff-net")
                .tempdir_in("/tmp")
                .unwrap(),
            networks: Vec::new(),
        })
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_env(args, &[])
    }

    fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(skiff_bin())
            .arg("--root")
            .arg(self.root.path())
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn expect(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "skiff {args:?}\nstdout: {}\nstderr: {}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    fn ok(&self, args: &[&str]) -> String {
        self.expect(args, 0)
    }

    /// Exit 125 and exactly one line on stderr; returns it.
    fn refused(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "skiff {args:?}: {err}");
        let lines: Vec<&str> = err
            .lines()
            .filter(|l| !l.starts_with("Unable to find image"))
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "skiff {args:?}: one error line expected: {err}"
        );
        err
    }

    /// A network named after this process, removed when the test ends.
    fn network(&mut self, stem: &str) -> String {
        let name = format!("{stem}-{}", std::process::id());
        self.ok(&["network", "create", &name]);
        self.networks.push(name.clone());
        name
    }

    fn ip_of(&self, container: &str) -> Ipv4Addr {
        self.ok(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", container])
            .trim()
            .parse()
            .unwrap()
    }

    /// A detached busybox httpd serving `body` on port 80.
    fn web_server(&self, name: &str, network: &str, extra: &[&str], body: &str) {
        let script = format!(
            "mkdir -p /www && echo {body} > /www/index.html && exec httpd -f -p 80 -h /www"
        );
        let mut args = vec!["run", "-d", "--name", name, "--network", network];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["busybox", "sh", "-c", &script]);
        self.ok(&args);
    }
}

impl Drop for Skiff {
    fn drop(&mut self) {
        if let Ok(o) = Command::new(skiff_bin())
            .arg("--root")
            .arg(self.root.path())
            .args(["ps", "-aq"])
            .output()
        {
            let ids: Vec<String> = text(&o.stdout).lines().map(str::to_owned).collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids.iter().map(String::as_str));
                let _ = self.run(&args);
            }
        }
        for n in &self.networks {
            let _ = self.run(&["network", "rm", n]);
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// One HTTP GET from the host; `None` if nothing answered.
fn http_get(addr: SocketAddrV4) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

/// Polls `f` until it returns Some (servers in TCG microVMs take a while to come up).
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn containers_on_one_network_reach_each_other_by_name() {
    let Some(mut s) = Skiff::new("containers_on_one_network_reach_each_other_by_name") else {
        return;
    };
    let net = s.network("samenet");
    let server = format!("web-{}", std::process::id());
    s.web_server(&server, &net, &[], "hello-by-name");
    let ip = s.ip_of(&server);
    // The host reaches the server on the bridge (so it is up before the client asks).
    let page = eventually("the server", || http_get(SocketAddrV4::new(ip, 80)));
    assert!(page.contains("hello-by-name"), "{page}");

    let url = format!("http://{server}/");
    let out = s.ok(&[
        "run",
        "--rm",
        "--network",
        &net,
        "busybox",
        "wget",
        "-qO-",
        &url,
    ]);
    assert_eq!(out.trim(), "hello-by-name");
    let out = s.ok(&[
        "run",
        "--rm",
        "--network",
        &net,
        "busybox",
        "ping",
        "-c",
        "1",
        &server,
    ]);
    assert!(out.contains(&format!("({ip})")), "{out}");
    // The container's own name and the resolvers are in place too.
    let out = s.ok(&[
        "run",
        "--rm",
        "--network",
        &net,
        "--name",
        "self-check",
        "busybox",
        "sh",
        "-c",
        "cat /etc/hosts /etc/resolv.conf",
    ]);
    assert!(out.contains("self-check"), "{out}");
    assert!(out.contains("nameserver "), "{out}");
}

#[test]
fn published_port_reaches_the_container_from_the_host() {
    let Some(s) = Skiff::new("published_port_reaches_the_container_from_the_host") else {
        return;
    };
    let name = format!("pub-{}", std::process::id());
    s.web_server(&name, "bridge", &["-p", "127.0.0.1::80"], "hello-published");
    // skiff picked the host port; `port` and `ps` show it.
    let port_line = s.ok(&["port", &name, "80"]);
    let host_port: u16 = port_line
        .trim()
        .strip_prefix("127.0.0.1:")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("skiff port printed {port_line:?}"));
    let ps = s.ok(&["ps", "--format", "{{.Names}} {{.Ports}}"]);
    assert!(
        ps.contains(&format!("{name} 127.0.0.1:{host_port}->80/tcp")),
        "{ps}"
    );
    let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, host_port);
    let page = eventually("the published port", || http_get(addr));
    assert!(page.contains("hello-published"), "{page}");
    // Removing the container withdraws the port.
    s.ok(&["rm", "-f", &name]);
    assert!(http_get(addr).is_none(), "port {host_port} still answers");
    let rules = Command::new("nft")
        .args(["list", "table", "ip", "skiff"])
        .output()
        .unwrap();
    assert!(
        !text(&rules.stdout).contains(&format!("dport {host_port} ")),
        "{}",
        text(&rules.stdout)
    );
}

#[test]
fn networks_are_isolated_from_each_other_and_from_the_host() {
    let Some(mut s) = Skiff::new("networks_are_isolated_from_each_other_and_from_the_host") else {
        return;
    };
    let net_a = s.network("iso-a");
    let net_b = s.network("iso-b");
    let server = format!("iso-web-{}", std::process::id());
    s.web_server(&server, &net_a, &[], "hello-a");
    let ip = s.ip_of(&server);
    eventually("the server", || http_get(SocketAddrV4::new(ip, 80)));
    let url = format!("http://{ip}/");
    // Same network: reachable (the control for the refusals below).
    let out = s.ok(&[
        "run",
        "--rm",
        "--network",
        &net_a,
        "busybox",
        "timeout",
        "10",
        "wget",
        "-qO-",
        &url,
    ]);
    assert_eq!(out.trim(), "hello-a");
    // Another network: not.
    let out = s.run(&[
        "run",
        "--rm",
        "--network",
        &net_b,
        "busybox",
        "timeout",
        "10",
        "wget",
        "-qO-",
        &url,
    ]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(!text(&out.stdout).contains("hello-a"));

    // A service on the host, listening everywhere: the host reaches it, containers don't.
    let listener = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let (gateway_b, _) = {
        let inspect = s.ok(&["network", "inspect", &net_b]);
        let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
        let gw = v[0]["IPAM"]["Config"][0]["Gateway"]
            .as_str()
            .unwrap()
            .to_owned();
        (gw, ())
    };
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
    let target = format!("echo hi | nc -w 3 {gateway_b} {port}; echo done");
    s.expect(
        &[
            "run",
            "--rm",
            "--network",
            &net_b,
            "busybox",
            "sh",
            "-c",
            &target,
        ],
        0,
    );
    let mut reached = false;
    while let Ok((_, peer)) = listener.accept() {
        // The host's own connection above came from 127.0.0.1.
        reached |= !peer.ip().is_loopback();
    }
    assert!(!reached, "a container connected to a host service");
}

#[test]
fn network_none_has_only_lo() {
    let Some(s) = Skiff::new("network_none_has_only_lo") else {
        return;
    };
    let script = "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '";
    for args in [
        vec!["run", "--rm", "busybox", "sh", "-c", script],
        vec![
            "run",
            "--rm",
            "--network",
            "none",
            "busybox",
            "sh",
            "-c",
            script,
        ],
    ] {
        assert_eq!(s.ok(&args).trim(), "lo", "{args:?}");
    }
    // With a network, the same listing has eth0 beside lo (so the check above can fail).
    let out = s.ok(&[
        "run",
        "--rm",
        "--network",
        "bridge",
        "busybox",
        "sh",
        "-c",
        script,
    ]);
    let mut names: Vec<&str> = out.split_whitespace().collect();
    names.sort_unstable();
    assert_eq!(names, ["eth0", "lo"]);
}

#[test]
fn bad_network_input_is_one_line_exit_125() {
    let Some(mut s) = Skiff::new("bad_network_input_is_one_line_exit_125") else {
        return;
    };
    let e = s.refused(&[
        "run",
        "--rm",
        "--network",
        "bridge",
        "-p",
        "garbage",
        "busybox",
        "true",
    ]);
    assert!(e.contains("garbage"), "{e}");
    let e = s.refused(&[
        "run",
        "--rm",
        "--network",
        "nosuch-net-xyz",
        "busybox",
        "true",
    ]);
    assert!(e.contains("nosuch-net-xyz"), "{e}");
    s.refused(&["run", "--rm", "-p", "8080:80", "busybox", "true"]);
    s.refused(&["run", "--rm", "--network", "host", "busybox", "true"]);
    s.refused(&["network", "create", "bad name"]);
    s.refused(&["network", "create", "--subnet", "10.89.0.0/33", "x"]);
    s.refused(&["network", "rm", "bridge"]);
    let net = s.network("busy");
    s.refused(&["network", "create", &net]);
    s.ok(&[
        "create",
        "--name",
        "holder",
        "--network",
        &net,
        "busybox",
        "true",
    ]);
    let e = s.refused(&["network", "rm", &net]);
    assert!(e.contains("holder"), "{e}");
    // Nothing was recorded by the refused runs: only the holder exists.
    assert_eq!(s.ok(&["ps", "-aq"]).lines().count(), 1);
    s.ok(&["rm", "holder"]);
    s.ok(&["network", "rm", &net]);
    s.networks.clear();
    assert!(!s.ok(&["network", "ls", "-q"]).lines().any(|l| l == net));
}

#[test]
fn stopped_containers_connect_and_disconnect() {
    let Some(mut s) = Skiff::new("stopped_containers_connect_and_disconnect") else {
        return;
    };
    let net = s.network("conn");
    s.ok(&["create", "--name", "loner", "busybox", "true"]);
    assert_eq!(
        s.ok(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "loner"])
            .trim(),
        ""
    );
    s.ok(&["network", "connect", &net, "loner"]);
    let ip = s.ip_of("loner");
    let inspect: serde_json::Value =
        serde_json::from_str(&s.ok(&["network", "inspect", &net])).unwrap();
    let members = inspect[0]["Containers"].as_object().unwrap();
    assert_eq!(members.len(), 1);
    let member = members.values().next().unwrap();
    assert_eq!(member["Name"], "loner");
    assert!(member["IPv4Address"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{ip}/")));
    // One network per container.
    s.refused(&["network", "connect", "bridge", "loner"]);
    s.ok(&["network", "disconnect", &net, "loner"]);
    s.refused(&["network", "disconnect", &net, "loner"]);
    let inspect: serde_json::Value =
        serde_json::from_str(&s.ok(&["network", "inspect", &net])).unwrap();
    assert!(inspect[0]["Containers"].as_object().unwrap().is_empty());
}

/// Runs `script` in the running container `ctr` (`sh -c`), returning (exit code, stdout).
fn exec_sh(s: &Skiff, ctr: &str, script: &str) -> (Option<i32>, String) {
    let out = s.run(&["exec", ctr, "sh", "-c", script]);
    (out.status.code(), text(&out.stdout))
}

#[test]
fn names_resolve_live_through_the_network_dns() {
    let Some(mut s) = Skiff::new("names_resolve_live_through_the_network_dns") else {
        return;
    };
    let net = s.network("dnsnet");
    let pid = std::process::id();
    // The client starts first: the server does not exist yet when it boots.
    let client = format!("early-{pid}");
    s.ok(&[
        "run",
        "-d",
        "--name",
        &client,
        "--network",
        &net,
        "busybox",
        "sleep",
        "600",
    ]);
    let (_, conf) = exec_sh(&s, &client, "cat /etc/resolv.conf /etc/hosts");
    let inspect: serde_json::Value =
        serde_json::from_str(&s.ok(&["network", "inspect", &net])).unwrap();
    let gateway = inspect[0]["IPAM"]["Config"][0]["Gateway"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(conf.contains(&format!("nameserver {gateway}\n")), "{conf}");

    let server = format!("late-{pid}");
    s.web_server(&server, &net, &[], "hello-late");
    let ip = s.ip_of(&server);
    eventually("the server", || http_get(SocketAddrV4::new(ip, 80)));
    // Not in /etc/hosts (written before the server existed): answered by DNS.
    let (_, hosts) = exec_sh(&s, &client, "cat /etc/hosts");
    assert!(!hosts.contains(&server), "{hosts}");
    let (code, out) = exec_sh(&s, &client, &format!("nslookup {server}"));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&ip.to_string()), "{out}");
    let (code, page) = exec_sh(&s, &client, &format!("wget -qO- http://{server}/"));
    assert_eq!(code, Some(0), "{page}");
    assert_eq!(page.trim(), "hello-late");

    // Removed: the name is gone.
    s.ok(&["rm", "-f", &server]);
    let (code, out) = exec_sh(&s, &client, &format!("nslookup {server}"));
    assert_ne!(code, Some(0), "{out}");
    assert!(!out.contains(&ip.to_string()), "{out}");
}

/// A network namespace standing for "the world beyond the bridge": a veth pair routed
/// from the host, and a busybox httpd inside it. Removed on drop.
struct Outside {
    ns: String,
    server: std::process::Child,
    addr: SocketAddrV4,
    _www: tempfile::TempDir,
}

impl Outside {
    fn new() -> Self {
        let pid = std::process::id();
        let ns = format!("skiffout{pid}");
        let host_if = format!("sko{}", pid % 100_000);
        let third = u8::try_from(pid % 200 + 20).unwrap();
        let host_ip = format!("10.201.{third}.1/30");
        let ns_ip = Ipv4Addr::new(10, 201, third, 2);
        let sh = |args: &[&str]| {
            let o = Command::new("ip").args(args).output().unwrap();
            assert!(o.status.success(), "ip {args:?}: {}", text(&o.stderr));
        };
        sh(&["netns", "add", &ns]);
        sh(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        sh(&["addr", "add", &host_ip, "dev", &host_if]);
        sh(&["link", "set", &host_if, "up"]);
        let ns_cidr = format!("{ns_ip}/30");
        sh(&["-n", &ns, "addr", "add", &ns_cidr, "dev", "eth0"]);
        sh(&["-n", &ns, "link", "set", "eth0", "up"]);
        sh(&["-n", &ns, "link", "set", "lo", "up"]);
        let www = tempfile::tempdir().unwrap();
        std::fs::write(www.path().join("index.html"), "hello-outside\n").unwrap();
        let server = Command::new("ip")
            .args([
                "netns", "exec", &ns, "busybox", "httpd", "-f", "-p", "8080", "-h",
            ])
            .arg(www.path())
            .spawn()
            .unwrap();
        let addr = SocketAddrV4::new(ns_ip, 8080);
        eventually("the outside server", || http_get(addr));
        Self {
            ns,
            server,
            addr,
            _www: www,
        }
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        // Deleting the namespace deletes its veth end and so the pair.
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

#[test]
fn egress_deny_keeps_peers_and_published_ports_only() {
    let Some(mut s) = Skiff::new("egress_deny_keeps_peers_and_published_ports_only") else {
        return;
    };
    let outside = Outside::new();
    let net = s.network("egress");
    let pid = std::process::id();
    // A denied server: its published port still answers the host.
    let server = format!("jailweb-{pid}");
    s.web_server(
        &server,
        &net,
        &["--egress", "deny", "-p", "127.0.0.1::80"],
        "hello-jailed",
    );
    let port: u16 = s
        .ok(&["port", &server, "80"])
        .trim()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let page = eventually("the published port", || {
        http_get(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
    });
    assert!(page.contains("hello-jailed"), "{page}");

    let world = format!("http://{}/", outside.addr);
    let fetch = |extra: &[&str], script: &str| {
        let mut args = vec!["run", "--rm", "--network", net.as_str()];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["busybox", "sh", "-c", script]);
        s.run(&args)
    };
    // Control: an ordinary container on the same network reaches the outside.
    let out = fetch(&[], &format!("timeout 10 wget -qO- {world}"));
    assert!(
        text(&out.stdout).contains("hello-outside"),
        "{}",
        text(&out.stderr)
    );
    // Denied: the peer by name, yes; the outside, no — not even after taking another
    // address of the subnet (the host ties the TAP to the lease's address).
    let inspect: serde_json::Value =
        serde_json::from_str(&s.ok(&["network", "inspect", &net])).unwrap();
    let gateway: Ipv4Addr = inspect[0]["IPAM"]["Config"][0]["Gateway"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let [a, b, c, _] = gateway.octets();
    let script = format!(
        "timeout 10 wget -qO- http://{server}/; echo; \
         timeout 10 wget -qO- {world} && echo REACHED; \
         ifconfig eth0 {a}.{b}.{c}.250 netmask 255.255.255.0 && route add default gw {gateway}; \
         timeout 10 wget -qO- {world} && echo REACHED; echo end"
    );
    let out = fetch(&["--egress", "deny"], &script);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("hello-jailed"),
        "{stdout} {}",
        text(&out.stderr)
    );
    assert!(stdout.contains("end"), "{stdout}");
    assert!(!stdout.contains("hello-outside"), "{stdout}");
    assert!(!stdout.contains("REACHED"), "{stdout}");
    // The egress flag is recorded and shown.
    let rules = Command::new("nft")
        .args(["list", "table", "ip", "skiff"])
        .output()
        .unwrap();
    let ip = s.ip_of(&server);
    assert!(
        text(&rules.stdout).contains(&format!("ip saddr {ip} oifname != ")),
        "{}",
        text(&rules.stdout)
    );
    s.refused(&["run", "--rm", "--egress", "maybe", "busybox", "true"]);
    s.refused(&[
        "run",
        "--rm",
        "--network",
        "passt",
        "--egress",
        "deny",
        "busybox",
        "true",
    ]);
}

fn passt_ready() -> Result<(), String> {
    match Command::new("passt").arg("--version").output() {
        Ok(_) => Ok(()),
        Err(_) => Err("passt not found (apt-get install passt)".into()),
    }
}

/// The host's address on its default route (no packet is sent).
fn host_uplink_ip() -> Option<Ipv4Addr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("203.0.113.1:9").ok()?;
    match s.local_addr().ok()?.ip() {
        std::net::IpAddr::V4(ip) if !ip.is_unspecified() => Some(ip),
        _ => None,
    }
}

#[test]
fn passt_publishes_ports_and_keeps_host_loopback_out() {
    let test = "passt_publishes_ports_and_keeps_host_loopback_out";
    let Some(s) = Skiff::new(test) else {
        return;
    };
    if !prerequisite(test, passt_ready()) {
        return;
    }
    let uplink = host_uplink_ip();
    if !prerequisite(
        test,
        uplink
            .map(|_| ())
            .ok_or_else(|| "no default route (passt needs one)".to_owned()),
    ) {
        return;
    }
    let uplink = uplink.unwrap();
    let name = format!("passt-{}", std::process::id());
    s.web_server(&name, "passt", &["-p", "127.0.0.1::80"], "hello-passt");
    let port_line = s.ok(&["port", &name, "80"]);
    let host_port: u16 = port_line
        .trim()
        .strip_prefix("127.0.0.1:")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("skiff port printed {port_line:?}"));
    let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, host_port);
    let page = eventually("passt's published port", || http_get(addr));
    assert!(page.contains("hello-passt"), "{page}");
    let ps = s.ok(&["ps", "--format", "{{.Names}} {{.Ports}}"]);
    assert!(
        ps.contains(&format!("{name} 127.0.0.1:{host_port}->80/tcp")),
        "{ps}"
    );

    // Host services: one on every address (reached through passt's sockets, as any
    // process of the user's reaches it), one on loopback only (not reachable: the
    // gateway is not mapped to the host's loopback).
    let open = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
    let local = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    open.set_nonblocking(true).unwrap();
    local.set_nonblocking(true).unwrap();
    // The control is retried: under TCG on a loaded host a first connect may time out.
    let script = format!(
        "for i in 1 2 3; do echo hi | nc -w 10 {uplink} {p1} && break; done; \
         echo hi | nc -w 10 10.0.2.2 {p2}; echo hi | nc -w 10 {uplink} {p2}; echo done",
        p1 = open.local_addr().unwrap().port(),
        p2 = local.local_addr().unwrap().port()
    );
    let out = s.ok(&[
        "run",
        "--rm",
        "--network",
        "passt",
        "busybox",
        "sh",
        "-c",
        &script,
    ]);
    assert!(out.contains("done"), "{out}");
    let accepted = |l: &TcpListener| {
        let mut n = 0;
        while l.accept().is_ok() {
            n += 1;
        }
        n
    };
    assert!(
        accepted(&open) >= 1,
        "the control connection did not arrive"
    );
    assert_eq!(
        accepted(&local),
        0,
        "a passt container reached a loopback-only service"
    );
    s.ok(&["rm", "-f", &name]);
    assert!(http_get(addr).is_none(), "port {host_port} still answers");
}

/// A stand-in for the host's resolver on 127.0.0.1: answers every A query with
/// 192.0.2.77 and counts the queries it saw.
struct FakeUpstream {
    addr: std::net::SocketAddr,
    seen: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl FakeUpstream {
    const ANSWER: [u8; 4] = [192, 0, 2, 77];

    fn start() -> Self {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                let q = &buf[..n];
                // The question ends after the name's zero byte and type and class.
                let Some(end) = q.iter().skip(12).position(|&b| b == 0).map(|p| 12 + p + 5) else {
                    continue;
                };
                if end > n {
                    continue;
                }
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut a = q[..2].to_vec();
                a.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]);
                a.extend_from_slice(&q[12..end]);
                a.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
                a.extend_from_slice(&Self::ANSWER);
                let _ = sock.send_to(&a, from);
            }
        });
        Self { addr, seen }
    }

    fn seen(&self) -> usize {
        self.seen.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[test]
fn other_names_are_forwarded_except_for_egress_denied_containers() {
    let Some(mut s) = Skiff::new("other_names_are_forwarded_except_for_egress_denied_containers")
    else {
        return;
    };
    let upstream = FakeUpstream::start();
    let upstream_addr = upstream.addr.to_string();
    let env = [("SKIFF_DNS_UPSTREAMS", upstream_addr.as_str())];
    let net = s.network("fwd");
    let lookup = |extra: &[&str]| {
        let mut args = vec!["run", "--rm", "--network", net.as_str()];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["busybox", "nslookup", "forwarded.example"]);
        s.run_env(&args, &env)
    };
    let out = lookup(&[]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("192.0.2.77"),
        "{stdout} {}",
        text(&out.stderr)
    );
    let before = upstream.seen();
    assert!(before >= 1);
    // Egress off: DNS is no way out either; the upstream hears nothing.
    let out = lookup(&["--egress", "deny"]);
    let stdout = text(&out.stdout);
    assert!(!stdout.contains("192.0.2.77"), "{stdout}");
    assert_eq!(
        upstream.seen(),
        before,
        "a denied container's query was forwarded"
    );
    let name = format!("jail-{}", std::process::id());
    s.ok(&[
        "create",
        "--name",
        &name,
        "--network",
        &net,
        "--egress",
        "deny",
        "busybox",
        "true",
    ]);
    let shown = s.ok(&["inspect", "-f", "{{.HostConfig.Egress}}", &name]);
    assert_eq!(shown.trim(), "deny");
}

/// Where skiff itself would find helper program `name` (beside skiff, the tools cache, PATH).
fn helper_program(name: &str) -> Option<std::path::PathBuf> {
    let mut dirs: Vec<std::path::PathBuf> = skiff_bin()
        .parent()
        .map(Path::to_path_buf)
        .into_iter()
        .collect();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".cache/skiff/tools/bin"));
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// `--network passt` is the option for users who may not create TAPs, bridges or
/// nftables rules: the whole container runs as an unprivileged user (nobody, with no
/// access to /dev/kvm, so QEMU TCG), reaches out through passt, and publishes a port.
#[test]
fn passt_runs_a_container_for_an_unprivileged_user() {
    let test = "passt_runs_a_container_for_an_unprivileged_user";
    let Some(s) = Skiff::new(test) else {
        return;
    };
    if !prerequisite(test, passt_ready()) {
        return;
    }
    // The user gets its own copies of skiff, its helpers and the guest: the build and the
    // installed guest live under root's home, which nobody cannot read.
    let home = tempfile::Builder::new()
        .prefix("skiff-nobody")
        .tempdir_in("/tmp")
        .unwrap();
    let bin = home.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for name in ["skiff", "skiff-vmm", "vhost-device-vsock", "virtiofsd"] {
        let from = helper_program(name).unwrap_or_else(|| panic!("{name} not found"));
        std::fs::copy(&from, bin.join(name)).unwrap();
    }
    let guest = skiff_runtime::GuestArtifacts::locate(None, None).unwrap();
    std::fs::copy(&guest.kernel, bin.join("kernel")).unwrap();
    std::fs::copy(&guest.initramfs, bin.join("initramfs")).unwrap();
    let chown = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(home.path())
        .status()
        .unwrap();
    assert!(chown.success());
    let as_nobody = |args: &[&str]| -> Output {
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(bin.join("skiff"))
            .arg("--kernel")
            .arg(bin.join("kernel"))
            .arg("--initramfs")
            .arg(bin.join("initramfs"))
            .args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
            .env("HOME", home.path())
            .env("XDG_DATA_HOME", home.path().join("data"))
            .env("XDG_RUNTIME_DIR", home.path().join("run"))
            .current_dir(home.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        eprintln!(
            "skiff (as nobody) {args:?} -> {:?}\n{}",
            out.status.code(),
            text(&out.stderr)
        );
        out
    };
    let out = as_nobody(&[
        "run",
        "--rm",
        "--network",
        "passt",
        "busybox",
        "sh",
        "-c",
        "ip -4 addr show eth0 | grep -c 'inet ' ; ip route | grep -c default",
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout),
        "1\n1\n",
        "eth0 with an address and a route"
    );

    let name = format!("nobody-{}", std::process::id());
    let script =
        "mkdir -p /www && echo hello-nobody > /www/index.html && exec httpd -f -p 80 -h /www";
    let out = as_nobody(&[
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        "passt",
        "-p",
        "127.0.0.1::80",
        "busybox",
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(out.status.code(), Some(0));
    let out = as_nobody(&["port", &name, "80"]);
    let line = text(&out.stdout);
    let port: u16 = line
        .trim()
        .strip_prefix("127.0.0.1:")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("skiff port printed {line:?}"));
    let page = eventually("the unprivileged container's published port", || {
        http_get(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
    });
    // Every process of the container (VMM, helpers, passt) belongs to nobody.
    let ps = Command::new("ps")
        .args(["-o", "user=", "-u", "65534"])
        .output()
        .unwrap();
    let procs = text(&ps.stdout).lines().count();
    let rm = as_nobody(&["rm", "-f", &name]);
    assert!(page.contains("hello-nobody"), "{page}");
    assert!(procs >= 2, "the VM's processes run as nobody: {procs}");
    assert_eq!(rm.status.code(), Some(0));
    drop(s);
}
