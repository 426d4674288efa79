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
        Command::new(skiff_bin())
            .arg("--root")
            .arg(self.root.path())
            .args(args)
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
