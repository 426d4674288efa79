//! `skiffd`: skiff's API daemon. It serves an HTTP/JSON API (crates/daemon/openapi.yaml)
//! on a UNIX socket and optionally on TCP, over the same image store and container
//! records as the `skiff` CLI: sandboxes are containers labelled with their tenant, run
//! by `skiffd supervise` processes that outlive the daemon, so a restarted daemon finds
//! them again. Warm pools of booted microVMs serve `POST /v1/invoke`.

mod admission;
mod api;
mod config;
mod error;
mod events;
mod gate;
mod http;
mod images;
mod invocations;
mod locks;
mod metrics;
mod pool;
mod requests;
mod sandbox_exec;
mod sandboxes;
mod server;
mod snapshots;
mod state;
mod tenants;

use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use skiff_image::Store;
use skiff_runtime::container::Containers;
use tokio::net::{TcpListener, UnixListener};

use crate::config::Config;
use crate::server::Transport;
use crate::snapshots::Snapshots;
use crate::state::Daemon;

#[derive(Parser)]
#[command(
    name = "skiffd",
    version,
    about = "skiff's API daemon: sandboxes in microVMs over HTTP/JSON"
)]
struct Args {
    /// Image and container store (the CLI's; default /var/lib/skiff for root).
    #[arg(long, env = "SKIFF_ROOT")]
    root: Option<PathBuf>,
    /// UNIX socket to serve (mode 0660; default <root>/skiffd.sock). The tenant of a
    /// request on it is its X-Skiff-Tenant header.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Also serve TCP on ADDR (e.g. 127.0.0.1:8080); requests need a bearer token
    /// listed in the config.
    #[arg(long)]
    listen: Option<String>,
    /// Tenants, tokens, quotas and warm pools (TOML; see crates/daemon/README.md).
    #[arg(long, env = "SKIFFD_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long, env = "SKIFF_LOG", default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// The detached host process of one sandbox (skiffd starts it; it outlives skiffd).
    #[command(hide = true)]
    Supervise { id: String },
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    if let Some(Command::Supervise { id }) = &args.command {
        return supervise(&args, id);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(256)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("skiffd: start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("skiffd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `skiffd supervise ID`: the sandbox's supervisor, the same use case as `skiff
/// supervise` (a sandbox is a skiff container).
fn supervise(args: &Args, id: &str) -> std::process::ExitCode {
    let root = args.root.clone().unwrap_or_else(Store::default_root);
    let run = || -> Result<i32> {
        let containers = Containers::open(&root)?;
        let store = Store::open(&root)?;
        Ok(skiff_engine::lifecycle::supervise(&containers, &store, id)?)
    };
    match run() {
        Ok(code) => std::process::ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(255)),
        Err(e) => {
            eprintln!("skiffd supervise: {e:#}");
            std::process::ExitCode::from(125)
        }
    }
}

/// Binds the UNIX socket, replacing a stale one a previous daemon left behind (but not
/// a live daemon's).
fn bind_unix(path: &Path) -> Result<UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            bail!("{} exists and is not a socket", path.display());
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("another daemon is serving {}", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("remove {}", path.display()))?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let l = UnixListener::bind(path).with_context(|| format!("listen on {}", path.display()))?;
    // Whoever can open the socket acts as any tenant: owner and group only.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("chmod {}", path.display()))?;
    Ok(l)
}

async fn run(args: Args) -> Result<()> {
    let root = args.root.clone().unwrap_or_else(Store::default_root);
    let config = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    let store = Store::open(&root).with_context(|| format!("open the store {}", root.display()))?;
    let containers = Containers::open(&root)?;
    // Snapshots hold guest memory; an older daemon made this directory 0755.
    let snapshots = root.join("snapshots");
    skiff_runtime::owner_only::dir(&snapshots)?;
    // Load the plugins now: a broken plugin config is a startup error, not a 500 later.
    skiff_engine::policy::get()?;
    let pools_config = config.pools.clone();
    let d = Arc::new(Daemon {
        root: root.clone(),
        containers,
        store,
        config,
        exe: std::env::current_exe().context("find skiffd's own executable")?,
        log_level: "warn".into(),
        events: Default::default(),
        metrics: Default::default(),
        rate: Default::default(),
        reservations: Default::default(),
        pools: Default::default(),
        snapshots: Snapshots::new(snapshots),
    });
    let seen = recover(&d).await?;
    tokio::spawn(watch(d.clone(), seen));

    let socket = args.socket.unwrap_or_else(|| root.join("skiffd.sock"));
    let unix = bind_unix(&socket)?;
    tracing::info!("serving {}", socket.display());
    let tcp = match &args.listen {
        Some(addr) => {
            let l = TcpListener::bind(addr)
                .await
                .with_context(|| format!("listen on {addr}"))?;
            tracing::info!("serving http://{addr} (bearer tokens)");
            Some(l)
        }
        None => None,
    };
    invocations::start(&d, &pools_config);

    let gate = gate::Gate::new(d.config.connections);
    let d_unix = d.clone();
    let gate_unix = gate.clone();
    tokio::spawn(async move {
        loop {
            match unix.accept().await {
                Ok((s, _)) => server::serve_connection(
                    d_unix.clone(),
                    s,
                    Transport::Unix,
                    gate_unix.admit(None),
                ),
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    if let Some(tcp) = tcp {
        let d_tcp = d.clone();
        tokio::spawn(async move {
            loop {
                match tcp.accept().await {
                    Ok((s, peer)) => server::serve_connection(
                        d_tcp.clone(),
                        s,
                        Transport::Tcp,
                        gate.admit(Some(peer.ip())),
                    ),
                    Err(e) => {
                        tracing::warn!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    // Sandboxes keep running under their supervisors; warm VMs are only this process's.
    tracing::info!("shutting down; sandboxes keep running");
    d.pools.drain();
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

/// Finds the sandboxes of a previous daemon: running ones are served again (their
/// supervisors never stopped); ones whose supervisor died are reported as lost.
async fn recover(d: &Arc<Daemon>) -> Result<HashMap<String, &'static str>> {
    let d = d.clone();
    tokio::task::spawn_blocking(move || {
        let all = sandboxes::all(&d).map_err(|e| anyhow::anyhow!(e.message))?;
        let mut seen = HashMap::new();
        let (mut running, mut lost) = (0, 0);
        for (spec, st) in &all {
            let s = sandboxes::state_name(st);
            match s {
                "running" => running += 1,
                "lost" => lost += 1,
                _ => {}
            }
            seen.insert(spec.id.clone(), s);
        }
        tracing::info!(
            sandboxes = all.len(),
            running,
            lost,
            "recovered the sandboxes in the store"
        );
        Ok(seen)
    })
    .await?
}

/// Publishes state changes nobody asked for through the API: a main process that
/// exited, a supervisor that died (lost).
async fn watch(d: Arc<Daemon>, mut seen: HashMap<String, &'static str>) {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let d2 = d.clone();
        let Ok(Ok(all)) = tokio::task::spawn_blocking(move || sandboxes::all(&d2)).await else {
            continue;
        };
        let mut now = HashMap::new();
        for (spec, st) in all {
            let s = sandboxes::state_name(&st);
            let before = seen.get(&spec.id).copied();
            if before != Some(s) && (s == "exited" || s == "lost") && before.is_some() {
                if let Some(t) = sandboxes::tenant_of(&spec) {
                    let kind = if s == "lost" {
                        "sandbox.lost"
                    } else {
                        "sandbox.exited"
                    };
                    d.events.publish(t, kind, Some(&spec.id), st.exit_code);
                }
            }
            now.insert(spec.id, s);
        }
        seen = now;
    }
}
