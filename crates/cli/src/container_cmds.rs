//! The container commands of `skiff`: run, create, start, stop, kill, restart, rm, ps,
//! logs, exec, wait, inspect, top, commit, rename, stats, `container ...`. They parse
//! and print; `skiff_runtime::container` keeps the records and runs the supervisor.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use skiff_image::{busybox, commit::ConfigChange, registry, Reference, Store};
use skiff_plugins::EventKind;
use skiff_proto::ProcessSpec;
use skiff_runtime::container::{
    self, control_request, read_log, BootSettings, ContainerSpec, ContainerState, Containers,
    ControlRequest, LogStream, Status, Supervisor, MAIN_STREAM,
};
use skiff_runtime::network::{Egress, NetworkMode, Networks, PortMapping};
use skiff_runtime::{writable, AgentConn, Event, StartOutcome};

use crate::{attach, signals, template, terminal, GlobalOpts};
use skiff_engine::run_config::{self, ImageDefaults};

#[derive(Subcommand)]
pub enum ContainerCommand {
    /// Create and run a new container from an image
    Run(RunArgs),
    /// Create a new container
    Create(CreateArgs),
    /// Start one or more stopped containers
    Start(StartArgs),
    /// Stop one or more running containers
    Stop(StopArgs),
    /// Kill one or more running containers
    Kill(KillArgs),
    /// Restart one or more containers
    Restart(StopArgs),
    /// Remove one or more containers
    Rm(RmArgs),
    /// List containers
    Ps(PsArgs),
    /// Fetch the logs of a container
    Logs(LogsArgs),
    /// Execute a command in a running container
    Exec(ExecArgs),
    /// Block until one or more containers stop, then print their exit codes
    Wait(NamesArgs),
    /// Display detailed information on one or more containers
    Inspect(InspectArgs),
    /// Display the running processes of a container
    Top(TopArgs),
    /// Create a new image from a container's changes
    Commit(CommitArgs),
    /// Copy files between a running container and the host (CONTAINER:PATH either side)
    Cp(CpArgs),
    /// Rename a container
    Rename(RenameArgs),
    /// List a container's published ports
    Port(PortArgs),
    /// Display CPU and memory use of the containers' microVMs
    Stats(StatsArgs),
    /// Manage containers
    #[command(subcommand)]
    Container(ContainerSubcommand),
    /// Run a container's supervisor (used by `run -d` and `start`)
    #[command(hide = true)]
    Supervise { id: String },
}

#[derive(Subcommand)]
pub enum ContainerSubcommand {
    /// List containers
    #[command(alias = "list", alias = "ls")]
    Ps(PsArgs),
    /// Remove all stopped containers
    Prune(PruneArgs),
    /// Display detailed information on one or more containers
    Inspect(InspectArgs),
    /// Remove one or more containers
    #[command(alias = "remove")]
    Rm(RmArgs),
}

#[derive(Args, Clone)]
pub struct CreateArgs {
    /// Assign a name to the container
    #[arg(long)]
    name: Option<String>,
    /// Set environment variables
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Read environment variables from a file
    #[arg(long = "env-file", value_name = "FILE")]
    env_file: Vec<String>,
    /// Working directory inside the container
    #[arg(short, long)]
    workdir: Option<String>,
    /// User: NAME|UID[:GROUP|GID]
    #[arg(short, long)]
    user: Option<String>,
    /// Overwrite the default ENTRYPOINT of the image
    #[arg(long)]
    entrypoint: Option<String>,
    /// Container host name
    #[arg(long)]
    hostname: Option<String>,
    /// Memory of the container's microVM (e.g. 512M)
    #[arg(short, long)]
    memory: Option<String>,
    /// Virtual CPUs of the microVM (rounded up to a whole CPU)
    #[arg(long)]
    cpus: Option<f64>,
    /// Mount the container's root filesystem as read only
    #[arg(long)]
    read_only: bool,
    /// Set metadata on a container
    #[arg(short, long = "label", value_name = "KEY=VALUE")]
    label: Vec<String>,
    /// Keep STDIN open
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short, long)]
    tty: bool,
    /// Signal to stop the container
    #[arg(long)]
    stop_signal: Option<String>,
    /// Seconds to wait before killing the container on stop
    #[arg(long)]
    stop_timeout: Option<u64>,
    /// Size of the container's writable layer
    #[arg(long, default_value = "1G")]
    storage_size: String,
    /// Bind mount a host directory (virtio-fs)
    #[arg(short, long, value_name = "HOST:CONTAINER[:ro]")]
    volume: Vec<String>,
    /// Network: none (only lo), bridge (the default network), a network's name, or
    /// passt (user-mode networking, no root needed)
    #[arg(long, alias = "net", default_value = "none")]
    network: String,
    /// deny: the container reaches only its network's peers (and is reached through
    /// its published ports); nothing beyond its bridge, enforced on the host
    #[arg(long, value_name = "allow|deny", default_value = "allow")]
    egress: String,
    /// Publish a container's port to the host
    #[arg(short, long, value_name = "[HOSTIP:][HOSTPORT:]PORT[/tcp|/udp]")]
    publish: Vec<String>,
    /// Publish every port the image exposes to a free host port
    #[arg(short = 'P', long)]
    publish_all: bool,
    /// Image to run
    image: String,
    /// Command and arguments
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

#[derive(Args, Clone)]
pub struct RunArgs {
    /// Run the container in the background and print its ID
    #[arg(short, long)]
    detach: bool,
    /// Remove the container when it exits
    #[arg(long)]
    rm: bool,
    #[command(flatten)]
    create: CreateArgs,
}

#[derive(Args)]
pub struct StartArgs {
    /// Attach stdout/stderr and wait for the container
    #[arg(short, long)]
    attach: bool,
    /// Attach the container's stdin
    #[arg(short, long)]
    interactive: bool,
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args)]
pub struct StopArgs {
    /// Seconds to wait before killing it
    #[arg(short = 't', long = "time")]
    time: Option<u64>,
    /// Signal to send (default: the image's StopSignal or SIGTERM)
    #[arg(short, long)]
    signal: Option<String>,
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args)]
pub struct KillArgs {
    /// Signal to send
    #[arg(short, long, default_value = "KILL")]
    signal: String,
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args)]
pub struct RmArgs {
    /// Force the removal of a running container
    #[arg(short, long)]
    force: bool,
    /// Remove anonymous volumes (there are none; accepted for compatibility)
    #[arg(short, long)]
    volumes: bool,
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args)]
pub struct PsArgs {
    /// Show all containers (default shows just running)
    #[arg(short, long)]
    all: bool,
    /// Only display container IDs
    #[arg(short, long)]
    quiet: bool,
    /// Don't truncate output
    #[arg(long)]
    no_trunc: bool,
    /// Format: table, json or a Go-style template ({{.ID}} {{.Names}} ...)
    #[arg(long)]
    format: Option<String>,
}

#[derive(Args)]
pub struct LogsArgs {
    /// Follow log output
    #[arg(short, long)]
    follow: bool,
    /// Number of lines to show from the end of the logs
    #[arg(short = 'n', long, default_value = "all")]
    tail: String,
    /// Show timestamps
    #[arg(short, long)]
    timestamps: bool,
    container: String,
}

#[derive(Args)]
pub struct ExecArgs {
    /// Detached mode: run the command in the background
    #[arg(short, long)]
    detach: bool,
    /// Keep STDIN open
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short, long)]
    tty: bool,
    /// Set environment variables
    #[arg(short, long = "env")]
    env: Vec<String>,
    /// Working directory inside the container
    #[arg(short, long)]
    workdir: Option<String>,
    /// User: NAME|UID[:GROUP|GID]
    #[arg(short, long)]
    user: Option<String>,
    container: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    command: Vec<String>,
}

#[derive(Args)]
pub struct NamesArgs {
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args)]
pub struct InspectArgs {
    /// Format the output using a Go-style template
    #[arg(short, long)]
    format: Option<String>,
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args)]
pub struct TopArgs {
    container: String,
    /// ps options
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    ps_args: Vec<String>,
}

#[derive(Args)]
pub struct CommitArgs {
    /// Commit message
    #[arg(short, long)]
    message: Option<String>,
    /// Author
    #[arg(short, long)]
    author: Option<String>,
    /// Apply Dockerfile instructions (CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL, EXPOSE, STOPSIGNAL)
    #[arg(short, long)]
    change: Vec<String>,
    container: String,
    /// REPOSITORY[:TAG]
    repository: Option<String>,
}

#[derive(Args)]
pub struct CpArgs {
    /// Archive mode: keep the owners (uid/gid) the container's files have
    #[arg(short = 'a', long)]
    archive: bool,
    /// SRC: CONTAINER:PATH or a host path
    src: String,
    /// DEST: CONTAINER:PATH or a host path
    dest: String,
}

#[derive(Args)]
pub struct PortArgs {
    container: String,
    /// Only this container port: PORT[/PROTO]
    private_port: Option<String>,
}

#[derive(Args)]
pub struct RenameArgs {
    container: String,
    new_name: String,
}

#[derive(Args)]
pub struct StatsArgs {
    /// Print one sample and exit
    #[arg(long)]
    no_stream: bool,
    /// Show all containers (default shows just running)
    #[arg(short, long)]
    all: bool,
    containers: Vec<String>,
}

#[derive(Args)]
pub struct PruneArgs {
    /// Do not prompt for confirmation (there is no prompt; accepted for compatibility)
    #[arg(short, long)]
    force: bool,
}

struct Ctx {
    root: PathBuf,
    global: GlobalOpts,
}

impl Ctx {
    fn containers(&self) -> Result<Containers> {
        Containers::open(&self.root)
            .with_context(|| format!("open the container store {}", self.root.display()))
    }

    fn store(&self) -> Result<Store> {
        Store::open(&self.root)
            .with_context(|| format!("open the image store {}", self.root.display()))
    }
}

pub fn run(cmd: ContainerCommand, global: &GlobalOpts) -> Result<u8> {
    container::trace::mark("cli_main");
    // Listing commands end quietly when their reader goes away (`skiff ps | head`);
    // commands that run a container keep writing errors as errors.
    if matches!(
        cmd,
        ContainerCommand::Ps(_)
            | ContainerCommand::Inspect(_)
            | ContainerCommand::Logs(_)
            | ContainerCommand::Stats(_)
            | ContainerCommand::Top(_)
            | ContainerCommand::Container(
                ContainerSubcommand::Ps(_) | ContainerSubcommand::Inspect(_)
            )
    ) {
        // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let ctx = Ctx {
        root: global.root.clone().unwrap_or_else(Store::default_root),
        global: global.clone(),
    };
    match cmd {
        ContainerCommand::Run(a) => run_container(&ctx, a),
        ContainerCommand::Create(a) => {
            let spec = create(&ctx, &a, false)?;
            println!("{}", spec.id);
            Ok(0)
        }
        ContainerCommand::Start(a) => start(&ctx, &a),
        ContainerCommand::Stop(a) => each(&ctx, &a.containers, |c, id| {
            stop(c, id, a.time, a.signal.as_deref())
        }),
        ContainerCommand::Kill(a) => {
            let sig = run_config::parse_signal(&a.signal)?;
            each(&ctx, &a.containers, |c, id| kill(c, id, sig))
        }
        ContainerCommand::Restart(a) => each(&ctx, &a.containers, |c, id| {
            stop(c, id, a.time, a.signal.as_deref())?;
            start_detached(&ctx, c, id)
        }),
        ContainerCommand::Rm(a) | ContainerCommand::Container(ContainerSubcommand::Rm(a)) => {
            let store = ctx.store()?;
            each(&ctx, &a.containers, |c, id| remove(c, &store, id, a.force))
        }
        ContainerCommand::Ps(a) | ContainerCommand::Container(ContainerSubcommand::Ps(a)) => {
            ps(&ctx, &a)
        }
        ContainerCommand::Logs(a) => logs(&ctx, &a),
        ContainerCommand::Exec(a) => exec(&ctx, &a),
        ContainerCommand::Wait(a) => {
            let c = ctx.containers()?;
            for name in &a.containers {
                let id = c.resolve(name)?.id;
                let st = wait_exited(&c, &id, None)?;
                println!("{}", st.exit_code.unwrap_or(0));
            }
            Ok(0)
        }
        ContainerCommand::Inspect(a)
        | ContainerCommand::Container(ContainerSubcommand::Inspect(a)) => inspect(&ctx, &a),
        ContainerCommand::Top(a) => top(&ctx, &a),
        ContainerCommand::Commit(a) => commit(&ctx, &a),
        ContainerCommand::Cp(a) => crate::copy::run(&ctx.containers()?, &a.src, &a.dest, a.archive),
        ContainerCommand::Rename(a) => {
            let c = ctx.containers()?;
            let id = c.resolve(&a.container)?.id;
            c.rename(&id, &a.new_name)?;
            Ok(0)
        }
        ContainerCommand::Stats(a) => stats(&ctx, &a),
        ContainerCommand::Port(a) => {
            crate::network_cmds::port(&ctx.containers()?, &a.container, a.private_port.as_deref())
        }
        ContainerCommand::Container(ContainerSubcommand::Prune(_)) => prune(&ctx),
        ContainerCommand::Supervise { id } => supervise(&ctx, &id),
    }
}

/// Applies `f` to each named container, printing the name as given on success (as
/// Docker); the first failure is the command's error after the others were tried.
fn each(ctx: &Ctx, names: &[String], f: impl Fn(&Containers, &str) -> Result<()>) -> Result<u8> {
    let c = ctx.containers()?;
    let mut first_err = None;
    for name in names {
        match c
            .resolve(name)
            .map_err(anyhow::Error::from)
            .and_then(|s| f(&c, &s.id))
        {
            Ok(()) => println!("{name}"),
            Err(e) => {
                if first_err.is_some() {
                    eprintln!("skiff: {e:#}");
                } else {
                    first_err = Some(e);
                }
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(0),
    }
}

// ---- create / run ----------------------------------------------------------------

/// Finds the image locally; otherwise pulls it. `busybox` with no registry reachable
/// becomes the offline starter image built from the host's static busybox.
fn image_for_run(store: &Store, name: &str) -> Result<()> {
    if store.image(name).is_ok() {
        return Ok(());
    }
    let r = Reference::parse(name).with_context(|| format!("invalid image reference {name:?}"))?;
    let is_busybox = r.familiar_name() == "busybox"
        && r.tag.as_deref().is_none_or(|t| t == "latest")
        && r.digest.is_none();
    let starter = Path::new(busybox::DEFAULT_BUSYBOX);
    if is_busybox && starter.is_file() {
        // Offline first: the starter image is deterministic and needs no network.
        eprintln!(
            "Unable to find image '{name}' locally; building the offline starter image from {}",
            starter.display()
        );
        busybox::build(store, starter, busybox::DEFAULT_NAME)
            .context("build the busybox starter image")?;
        return Ok(());
    }
    eprintln!("Unable to find image '{name}' locally");
    let opts = registry::RegistryOptions {
        progress: false,
        ..Default::default()
    };
    registry::pull(store, &r, &opts)
        .with_context(|| format!("unable to find or pull image {name:?}"))?;
    Ok(())
}

fn create(ctx: &Ctx, a: &CreateArgs, auto_remove: bool) -> Result<ContainerSpec> {
    let binds = a
        .volume
        .iter()
        .map(|v| parse_bind(v))
        .collect::<Result<Vec<_>>>()?;
    // Everything that can be refused is checked before anything is recorded.
    let memory_mib = match &a.memory {
        Some(m) => {
            let bytes = writable::parse_size(m)?;
            u32::try_from(bytes >> 20)
                .ok()
                .filter(|m| (64..=65_536).contains(m))
                .context("--memory must be between 64M and 64G")?
        }
        None => 256,
    };
    let vcpus = match a.cpus {
        Some(c) if c.is_finite() && c > 0.0 && c <= 64.0 => c.ceil() as u32,
        Some(c) => bail!("--cpus {c} must be between 0 and 64"),
        None => 1,
    };
    let writable_bytes = writable::parse_size(&a.storage_size)?;
    if writable_bytes < 64 << 20 {
        bail!("--storage-size must be at least 64M");
    }
    let network = NetworkMode::parse(&a.network)?;
    let egress = Egress::parse(&a.egress)?;
    if egress == Egress::Deny && network == NetworkMode::Passt {
        bail!("--egress deny needs a bridge network: passt's traffic leaves through the host's own sockets, with no firewall of skiff's in the way");
    }
    let mut ports = a
        .publish
        .iter()
        .map(|p| PortMapping::parse(p).map_err(anyhow::Error::msg))
        .collect::<Result<Vec<_>>>()?;
    let networks = match &network {
        NetworkMode::None if !ports.is_empty() || a.publish_all => {
            bail!("publishing ports needs a network (--network bridge or a network's name)")
        }
        NetworkMode::None | NetworkMode::Passt => None,
        NetworkMode::Network(name) => {
            let n = Networks::open()?;
            n.get(name)?;
            Some(n)
        }
    };
    let mut overrides = Vec::new();
    for f in &a.env_file {
        overrides.extend(run_config::read_env_file(f)?);
    }
    overrides.extend(a.env.iter().cloned());

    let store = ctx.store()?;
    image_for_run(&store, &a.image)?;
    let image = store.image(&a.image)?;
    let defaults = ImageDefaults::from_config_json(&image.config_json);
    let (entrypoint, cmd) =
        run_config::entrypoint_and_cmd(&defaults, a.entrypoint.as_deref(), &a.command)?;
    let hostname = a.hostname.clone().unwrap_or_default();
    let env = run_config::process_env(&defaults, &hostname, &overrides, a.tty)?;
    let cwd = run_config::working_dir(&defaults, a.workdir.as_deref())?;
    let user = a.user.clone().unwrap_or_else(|| defaults.user.clone());
    let (parsed_user, user_name) = run_config::parse_user(&user)?;
    let stop_signal = match a.stop_signal.as_deref().or(defaults.stop_signal.as_deref()) {
        Some(s) => run_config::parse_signal(s)?,
        None => libc::SIGTERM,
    };
    let labels = run_config::labels(&defaults, &a.label)?;
    if a.publish_all {
        ports.extend(crate::network_cmds::exposed_ports(&image.config_json)?);
    }
    // passt binds the host ports itself; pick the free ones now, as leases do.
    let passt_ports = if network == NetworkMode::Passt {
        crate::network_cmds::passt_ports(std::mem::take(&mut ports))?
    } else {
        Vec::new()
    };
    let layers = store.layer_disks(&image)?;
    container::trace::mark("image_ready");

    let mut process = ProcessSpec::new([entrypoint.clone(), cmd.clone()].concat());
    process.env = env;
    process.cwd = cwd;
    process.user = parsed_user;
    process.user_name = user_name;
    process.terminal = a.tty;
    process.stdin = a.interactive;
    process.console_size = if a.tty {
        terminal::window_size(1)
    } else {
        None
    };

    let spec = ContainerSpec {
        id: String::new(),
        name: a.name.clone().unwrap_or_default(),
        image: a.image.clone(),
        image_id: image.id.to_string(),
        created_ms: 0,
        process,
        entrypoint,
        cmd,
        user,
        hostname,
        readonly_rootfs: a.read_only,
        memory_mib,
        vcpus,
        labels,
        stop_signal,
        stop_timeout_s: a.stop_timeout.unwrap_or(10),
        auto_remove,
        layers,
        writable_bytes,
        boot: BootSettings {
            kernel: ctx.global.kernel.clone(),
            initramfs: ctx.global.initramfs.clone(),
            hypervisor: ctx.global.hypervisor.map(|h| h.to_string()),
            snapshot: None,
        },
        binds,
        plugin_decision: None,
        network,
        egress,
        passt_ports,
        hooks: None,
    };
    let containers = ctx.containers()?;
    let policy = skiff_engine::policy::get()?;
    let image_config = image.config_json.clone();
    let spec = containers.create_admitted(spec, |spec| {
        policy
            .admit_container(spec, &image_config)
            .map_err(|e| format!("{e:#}"))
    })?;
    // The image store keeps the image while the container exists.
    if let Err(e) = store.use_image(&spec.id, &spec.image_id) {
        let _ = containers.remove(&spec.id);
        return Err(e.into());
    }
    if let (Some(networks), NetworkMode::Network(name)) = (&networks, &spec.network) {
        let leased = networks.attach(
            name,
            &spec.id,
            &spec.name,
            &containers.dir_of(&spec.id),
            ports,
            spec.egress,
        );
        if let Err(e) = leased {
            let _ = containers.remove(&spec.id);
            let _ = store.release_image(&spec.id);
            return Err(e.into());
        }
    }
    policy.event(&containers, &spec, EventKind::Created);
    Ok(spec)
}

/// `-v HOST:CONTAINER[:ro|rw]`: an absolute host directory (created if missing, as
/// Docker does) and an absolute container path.
fn parse_bind(v: &str) -> Result<container::Bind> {
    let parts: Vec<&str> = v.split(':').collect();
    let (host, target, readonly) = match parts.as_slice() {
        [h, t] => (*h, *t, false),
        [h, t, "ro"] => (*h, *t, true),
        [h, t, "rw"] => (*h, *t, false),
        _ => bail!("invalid volume {v:?}: expected HOST:CONTAINER[:ro]"),
    };
    if !host.starts_with('/') {
        bail!(
            "invalid volume {v:?}: named volumes are not supported; the host path must be absolute"
        );
    }
    if !target.starts_with('/') || target == "/" || target.split('/').any(|c| c == "..") {
        bail!("invalid volume {v:?}: the container path must be absolute, not / and without ..");
    }
    let host = Path::new(host);
    if !host.exists() {
        std::fs::create_dir_all(host).with_context(|| format!("create {}", host.display()))?;
    }
    if !host.is_dir() {
        bail!("invalid volume {v:?}: only directories can be bound");
    }
    Ok(container::Bind {
        host: host.canonicalize()?,
        target: target.to_owned(),
        readonly,
    })
}

fn run_container(ctx: &Ctx, a: RunArgs) -> Result<u8> {
    if a.detach {
        let spec = create(ctx, &a.create, a.rm)?;
        let c = ctx.containers()?;
        return match start_detached(ctx, &c, &spec.id) {
            Ok(()) => {
                println!("{}", spec.id);
                Ok(0)
            }
            Err(e) => {
                if a.rm {
                    let _ = remove(&c, &ctx.store()?, &spec.id, true);
                }
                Err(e)
            }
        };
    }
    signals::block().context("block signals")?;
    let spec = create(ctx, &a.create, a.rm)?;
    let c = ctx.containers()?;
    let code = attach_foreground(&c, &spec, a.create.interactive);
    if a.rm {
        if let Err(e) = remove(&c, &ctx.store()?, &spec.id, true) {
            eprintln!("skiff: remove {}: {e:#}", &spec.id[..12]);
        }
    }
    container::trace::mark("removed");
    code
}

/// Runs the container's supervisor in this process with our terminal attached.
fn attach_foreground(c: &Containers, spec: &ContainerSpec, stdin: bool) -> Result<u8> {
    let tty = spec.process.terminal;
    let target = attach::SignalTarget::spawn(MAIN_STREAM, tty);
    let sup = Supervisor::start(c, &spec.id)?;
    let sender = sup.sender();
    target.set(sender.clone(), MAIN_STREAM);
    let _raw = if tty && terminal::is_tty(0) {
        Some(terminal::RawMode::enable().context("put the terminal in raw mode")?)
    } else {
        None
    };
    if stdin && sup.start_failure().is_none() {
        attach::spawn_stdin_pump(sender.clone(), MAIN_STREAM);
    }
    let policy = skiff_engine::policy::get()?;
    if sup.start_failure().is_none() {
        policy.event(c, spec, EventKind::Started);
    }
    let code = sup.wait(Some(&mut attach::Stdio::new(Some(sender), MAIN_STREAM)))?;
    policy.event(c, spec, EventKind::Exited(code));
    Ok(u8::try_from(code.clamp(0, 255)).unwrap_or(255))
}

fn start(ctx: &Ctx, a: &StartArgs) -> Result<u8> {
    let c = ctx.containers()?;
    if a.attach || a.interactive {
        if a.containers.len() != 1 {
            bail!("you cannot start and attach multiple containers at once");
        }
        signals::block().context("block signals")?;
        let spec = c.resolve(&a.containers[0])?;
        let code = attach_foreground(&c, &spec, a.interactive)?;
        if spec.auto_remove {
            let _ = remove(&c, &ctx.store()?, &spec.id, true);
        }
        return Ok(code);
    }
    each(ctx, &a.containers, |c, id| {
        if c.state(id)?.is_running() {
            return Ok(());
        }
        start_detached(ctx, c, id)
    })
}

/// Starts `skiff supervise ID` in its own session and waits until the container runs
/// (or fails to).
fn start_detached(ctx: &Ctx, c: &Containers, id: &str) -> Result<()> {
    let st = c.state(id)?;
    if st.is_running() || (st.status == Status::Created && st.pid.is_some()) {
        bail!("container {} is already running", &id[..12]);
    }
    let exe = std::env::current_exe().context("find the skiff executable")?;
    let log = skiff_runtime::owner_only::create(&c.dir_of(id).join("supervisor.log"))
        .context("create the supervisor log")?;
    let mut cmd = Command::new(exe);
    cmd.arg("--root")
        .arg(&ctx.root)
        .args(["--log-level", &ctx.global.log_level])
        .args(["supervise", id])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; it detaches the supervisor from our
    // session so it outlives this command and our terminal.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("start the container's supervisor")?;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let st = c.state(id)?;
        // Until the supervisor claims the record, the state is the previous run's.
        let claimed = st.pid == Some(child.id());
        match st.status {
            _ if !claimed => {}
            Status::Running if st.guest_pid.is_some() => break,
            // The command could not be executed: report it as `run` would.
            Status::Running | Status::Exited
                if st.started_ms.is_some() || st.status == Status::Exited =>
            {
                if st.status == Status::Exited
                    || wait_exited(c, id, Some(Duration::from_secs(30))).is_ok()
                {
                    let st = c.state(id)?;
                    if st.error.is_some() || matches!(st.exit_code, Some(126 | 127)) {
                        let (entries, _) = read_log(&c.log_path(id)).unwrap_or_default();
                        let msg: String = entries
                            .iter()
                            .filter(|e| e.stream == LogStream::Stderr)
                            .map(|e| e.log.trim_end().to_owned())
                            .collect::<Vec<_>>()
                            .join("; ");
                        let why = st.error.clone().unwrap_or(msg);
                        bail!("container {} failed to start: {why}", &id[..12]);
                    }
                }
                break;
            }
            _ => {}
        }
        if let Ok(Some(status)) = child.try_wait() {
            let st = c.state(id)?;
            if st.status == Status::Exited && st.pid == Some(child.id()) {
                if let Some(e) = st.error {
                    bail!("{e}");
                }
                break;
            }
            bail!(
                "the container's supervisor exited ({status}) before the container started; see {}",
                c.dir_of(id).join("supervisor.log").display()
            );
        }
        if Instant::now() >= deadline {
            bail!("container {} did not start within 180 s", &id[..12]);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Reap it if it is already done; otherwise init adopts it when we exit.
    let _ = child.try_wait();
    Ok(())
}

/// The hidden `supervise` command: the detached host process of one container.
fn supervise(ctx: &Ctx, id: &str) -> Result<u8> {
    signals::block().context("block signals")?;
    let c = ctx.containers()?;
    let target = attach::SignalTarget::spawn(MAIN_STREAM, false);
    let sup = Supervisor::start(&c, id)?;
    target.set(sup.sender(), MAIN_STREAM);
    let spec = sup.spec().clone();
    let auto_remove = spec.auto_remove;
    let policy = skiff_engine::policy::get()?;
    if sup.start_failure().is_none() {
        policy.event(&c, &spec, EventKind::Started);
    }
    let code = sup.wait(None)?;
    policy.event(&c, &spec, EventKind::Exited(code));
    if auto_remove {
        remove(&c, &ctx.store()?, id, true)?;
    }
    Ok(u8::try_from(code.clamp(0, 255)).unwrap_or(255))
}

// ---- stop / kill / rm / wait -------------------------------------------------------

fn control(c: &Containers, id: &str, req: ControlRequest) -> Result<()> {
    let st = c.state(id)?;
    let running = st.is_running();
    let Some(sock) = st.control_socket.filter(|_| running) else {
        bail!("container {} is not running", &id[..12]);
    };
    {
        let lock = c.lock(id)?;
        let mut st = lock.state()?;
        st.stop_requested = true;
        lock.save(&st)?;
    }
    control_request(&sock, req)?;
    Ok(())
}

fn stop(c: &Containers, id: &str, time: Option<u64>, signal: Option<&str>) -> Result<()> {
    let spec = c.spec(id)?;
    if !c.state(id)?.is_running() {
        return Ok(()); // as Docker: stopping a stopped container is fine
    }
    let grace = time.unwrap_or(spec.stop_timeout_s);
    let signal = match signal {
        Some(s) => run_config::parse_signal(s)?,
        None => spec.stop_signal,
    };
    control(
        c,
        id,
        ControlRequest::Stop {
            signal,
            grace_ms: grace.saturating_mul(1000),
        },
    )?;
    let limit = Duration::from_secs(grace.saturating_add(30));
    if wait_exited(c, id, Some(limit)).is_err() {
        kill_supervisor(c, id)?;
    }
    Ok(())
}

fn kill(c: &Containers, id: &str, sig: i32) -> Result<()> {
    control(c, id, ControlRequest::Signal(sig))
}

/// Last resort for a supervisor that does not answer: its VM dies with it.
fn kill_supervisor(c: &Containers, id: &str) -> Result<()> {
    let st = c.state(id)?;
    if let (Some(pid), true) = (st.pid, st.status != Status::Exited) {
        let pid = i32::try_from(pid).context("pid")?;
        // SAFETY: plain kill(2) of the recorded supervisor.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        wait_exited(c, id, Some(Duration::from_secs(10)))?;
    }
    Ok(())
}

fn remove(c: &Containers, store: &Store, id: &str, force: bool) -> Result<()> {
    let st = c.state(id)?;
    let busy = st.is_running() || (st.status == Status::Created && st.pid.is_some());
    if busy && !force {
        bail!(
            "cannot remove container {}: it is running; stop it first or use rm -f",
            &id[..12]
        );
    }
    if busy {
        if st.is_running() {
            let _ = control(
                c,
                id,
                ControlRequest::Stop {
                    signal: libc::SIGKILL,
                    grace_ms: 0,
                },
            );
        }
        if wait_exited(c, id, Some(Duration::from_secs(20))).is_err() {
            kill_supervisor(c, id)?;
        }
    }
    let spec = c.spec(id).ok();
    c.remove(id)?;
    store.release_image(id)?;
    if spec
        .as_ref()
        .is_some_and(|s| matches!(s.network, NetworkMode::Network(_)))
    {
        Networks::open()?.detach(id)?;
    }
    if let Some(spec) = spec {
        skiff_engine::policy::get()?.event(c, &spec, EventKind::Removed);
    }
    Ok(())
}

/// Polls until the container has exited (`None` = forever).
fn wait_exited(c: &Containers, id: &str, timeout: Option<Duration>) -> Result<ContainerState> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let st = c.state(id)?;
        if st.status == Status::Exited || (st.status == Status::Created && st.pid.is_none()) {
            return Ok(st);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            bail!("container {} did not stop in time", &id[..12]);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn prune(ctx: &Ctx) -> Result<u8> {
    let c = ctx.containers()?;
    let store = ctx.store()?;
    let mut freed = 0u64;
    let mut deleted = Vec::new();
    for (spec, st) in c.list()? {
        if st.status == Status::Exited || (st.status == Status::Created && st.pid.is_none()) {
            freed += disk_usage(&c.dir_of(&spec.id));
            remove(&c, &store, &spec.id, false)?;
            deleted.push(spec.id);
        }
    }
    if !deleted.is_empty() {
        println!("Deleted Containers:");
        for d in deleted {
            println!("{d}");
        }
        println!();
    }
    println!(
        "Total reclaimed space: {}",
        skiff_image::fsutil::human_size(freed)
    );
    Ok(0)
}

fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.blocks() * 512)
                .sum()
        })
        .unwrap_or(0)
}

// ---- ps / inspect -----------------------------------------------------------------

fn human_duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        2..=59 => format!("{s} seconds"),
        60..=119 => "About a minute".into(),
        120..=3599 => format!("{} minutes", s / 60),
        3600..=7199 => "About an hour".into(),
        7200..=172_799 => format!("{} hours", s / 3600),
        _ => format!("{} days", s / 86_400),
    }
}

fn status_text(st: &ContainerState) -> String {
    let now = container::now_ms();
    match st.status {
        Status::Created if st.pid.is_some() => "Starting".into(),
        Status::Created => "Created".into(),
        Status::Running => format!(
            "Up {}",
            human_duration(now.saturating_sub(st.started_ms.unwrap_or(now)))
        ),
        Status::Exited => format!(
            "Exited ({}) {} ago",
            st.exit_code.unwrap_or(0),
            human_duration(now.saturating_sub(st.finished_ms.unwrap_or(now)))
        ),
    }
}

fn command_text(spec: &ContainerSpec) -> String {
    spec.process.args.join(" ")
}

fn ps_row(spec: &ContainerSpec, st: &ContainerState, no_trunc: bool, ports: &str) -> Value {
    let id = if no_trunc {
        spec.id.clone()
    } else {
        spec.id[..12].to_owned()
    };
    let mut command = command_text(spec);
    if !no_trunc && command.chars().count() > 20 {
        command = command.chars().take(19).collect::<String>() + "…";
    }
    let now = container::now_ms();
    json!({
        "ID": id,
        "Image": spec.image,
        "Command": format!("\"{command}\""),
        "CreatedAt": container::rfc3339_ms(spec.created_ms),
        "RunningFor": format!("{} ago", human_duration(now.saturating_sub(spec.created_ms))),
        "Status": status_text(st),
        "State": st.status.as_str(),
        "Names": spec.name,
        "Labels": spec.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
        "Ports": ports,
    })
}

fn ps(ctx: &Ctx, a: &PsArgs) -> Result<u8> {
    let c = ctx.containers()?;
    let listed: Vec<(ContainerSpec, ContainerState)> = c
        .list()?
        .into_iter()
        .filter(|(_, st)| a.all || st.is_running())
        .collect();
    let ports = crate::network_cmds::ports_by_container(&listed);
    let rows: Vec<Value> = listed
        .iter()
        .map(|(spec, st)| {
            let p = ports.get(&spec.id).map(String::as_str).unwrap_or_default();
            ps_row(spec, st, a.no_trunc, p)
        })
        .collect();
    let mut out = std::io::stdout().lock();
    if a.quiet {
        for r in &rows {
            writeln!(out, "{}", r["ID"].as_str().unwrap_or_default())?;
        }
        return Ok(0);
    }
    match a.format.as_deref() {
        None | Some("table") => {
            let cols = [
                "ID",
                "Image",
                "Command",
                "RunningFor",
                "Status",
                "Ports",
                "Names",
            ];
            let heads = [
                "CONTAINER ID",
                "IMAGE",
                "COMMAND",
                "CREATED",
                "STATUS",
                "PORTS",
                "NAMES",
            ];
            let cell = |r: &Value, k: &str| r[k].as_str().unwrap_or_default().to_owned();
            let widths: Vec<usize> = cols
                .iter()
                .zip(heads)
                .map(|(k, h)| {
                    rows.iter()
                        .map(|r| cell(r, k).chars().count())
                        .chain([h.len()])
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            let line = |cells: Vec<String>| {
                let mut s = String::new();
                for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
                    if i + 1 == cells.len() {
                        s.push_str(c);
                    } else {
                        s.push_str(&format!("{c:<w$}   ", w = *w));
                    }
                }
                s
            };
            writeln!(
                out,
                "{}",
                line(heads.iter().map(|h| (*h).to_owned()).collect())
            )?;
            for r in &rows {
                writeln!(out, "{}", line(cols.iter().map(|k| cell(r, k)).collect()))?;
            }
        }
        Some("json") => {
            for r in &rows {
                writeln!(out, "{r}")?;
            }
        }
        Some(t) => {
            let (t, table) = match t.strip_prefix("table") {
                Some(rest) => (rest.trim_start(), true),
                None => (t, false),
            };
            if table {
                writeln!(out, "{}", template::header(t))?;
            }
            for r in &rows {
                writeln!(out, "{}", template::render(t, r))?;
            }
        }
    }
    Ok(0)
}

fn inspect_value(c: &Containers, spec: &ContainerSpec) -> Result<Value> {
    let st = c.state(&spec.id)?;
    let time = |ms: Option<u64>| {
        ms.map_or_else(|| "0001-01-01T00:00:00Z".to_owned(), container::rfc3339_ms)
    };
    Ok(json!({
        "Id": spec.id,
        "Created": container::rfc3339_ms(spec.created_ms),
        "Path": spec.process.args.first(),
        "Args": spec.process.args.get(1..).unwrap_or_default(),
        "State": {
            "Status": st.status.as_str(),
            "Running": st.is_running(),
            "Pid": st.pid.filter(|_| st.status != Status::Exited).unwrap_or(0),
            "ExitCode": st.exit_code.unwrap_or(0),
            "Error": st.error.clone().unwrap_or_default(),
            "StartedAt": time(st.started_ms),
            "FinishedAt": time(st.finished_ms),
        },
        "Image": spec.image_id,
        "Name": format!("/{}", spec.name),
        "LogPath": c.log_path(&spec.id),
        "HostConfig": {
            "Memory": u64::from(spec.memory_mib) << 20,
            "NanoCpus": u64::from(spec.vcpus) * 1_000_000_000,
            "ReadonlyRootfs": spec.readonly_rootfs,
            "AutoRemove": spec.auto_remove,
            "NetworkMode": spec.network.name(),
            "Egress": spec.egress.to_string(),
        },
        "Config": {
            "Hostname": spec.hostname,
            "User": spec.user,
            "Tty": spec.process.terminal,
            "OpenStdin": spec.process.stdin,
            "Env": spec.process.env,
            "Cmd": spec.cmd,
            "Entrypoint": spec.entrypoint,
            "Image": spec.image,
            "WorkingDir": spec.process.cwd,
            "Labels": spec.labels,
            "StopSignal": spec.stop_signal,
            "StopTimeout": spec.stop_timeout_s,
        },
        "MicroVM": {
            "Pid": st.vm_pid.filter(|_| st.is_running()).unwrap_or(0),
            "Memory": format!("{}M", spec.memory_mib),
            "Vcpus": spec.vcpus,
            "BootMs": st.boot_ms,
            "Layers": spec.layers,
            "WritableDisk": c.writable_disk(&spec.id),
            "VsockSocket": st.vsock_uds,
            "ControlSocket": st.control_socket,
            "GuestPid": st.guest_pid,
        },
        "NetworkSettings": crate::network_cmds::inspect_settings(spec)?,
        "Plugins": {
            "Admission": spec.plugin_decision,
            "Audit": skiff_engine::policy::audit_records(&c.dir_of(&spec.id)),
        },
    }))
}

fn inspect(ctx: &Ctx, a: &InspectArgs) -> Result<u8> {
    let c = ctx.containers()?;
    let mut values = Vec::new();
    for name in &a.containers {
        let spec = c.resolve(name)?;
        values.push(inspect_value(&c, &spec)?);
    }
    match &a.format {
        Some(t) => {
            for v in &values {
                println!("{}", template::render(t, v));
            }
        }
        None => println!("{}", serde_json::to_string_pretty(&values)?),
    }
    Ok(0)
}

// ---- logs ---------------------------------------------------------------------------

fn logs(ctx: &Ctx, a: &LogsArgs) -> Result<u8> {
    let c = ctx.containers()?;
    let id = c.resolve(&a.container)?.id;
    let path = c.log_path(&id);
    let tail: Option<usize> = match a.tail.as_str() {
        "all" | "-1" => None,
        n => Some(n.parse().with_context(|| format!("invalid --tail {n:?}"))?),
    };
    let (entries, mut offset) = read_log(&path)?;
    let skip = tail.map_or(0, |n| entries.len().saturating_sub(n));
    let print = |e: &container::LogEntry| {
        let text = if a.timestamps {
            format!("{} {}", e.time, e.log)
        } else {
            e.log.clone()
        };
        let _ = match e.stream {
            LogStream::Stdout => {
                let mut o = std::io::stdout();
                o.write_all(text.as_bytes()).and_then(|()| o.flush())
            }
            LogStream::Stderr => {
                let mut o = std::io::stderr();
                o.write_all(text.as_bytes()).and_then(|()| o.flush())
            }
        };
    };
    for e in &entries[skip..] {
        print(e);
    }
    if !a.follow {
        return Ok(0);
    }
    loop {
        let done = {
            let st = c.state(&id)?;
            st.status == Status::Exited || (st.status == Status::Created && st.pid.is_none())
        };
        let mut more = Vec::new();
        offset = container::read_log_from(&path, offset, &mut more)?;
        for e in &more {
            print(e);
        }
        if done {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---- exec / top -------------------------------------------------------------------------

pub(crate) fn agent_of(c: &Containers, id: &str) -> Result<AgentConn> {
    let st = c.state(id)?;
    let running = st.is_running();
    let Some(uds) = st.vsock_uds.filter(|_| running) else {
        bail!("container {} is not running", &id[..12]);
    };
    AgentConn::connect(&uds, skiff_proto::AGENT_PORT, Duration::from_secs(10))
        .with_context(|| format!("connect to the agent of container {}", &id[..12]))
}

fn exec(ctx: &Ctx, a: &ExecArgs) -> Result<u8> {
    signals::block().context("block signals")?;
    let c = ctx.containers()?;
    let spec = c.resolve(&a.container)?;
    let mut p = spec.process.clone();
    p.args = a.command.clone();
    p.env = run_config::merge_env(&p.env, &a.env)?;
    if a.tty && !p.env.iter().any(|e| e.starts_with("TERM=")) {
        p.env.push("TERM=xterm".into());
    }
    if let Some(w) = &a.workdir {
        if !w.starts_with('/') {
            bail!("the working directory {w:?} is invalid: it needs to be an absolute path");
        }
        p.cwd = w.clone();
    }
    if let Some(u) = &a.user {
        (p.user, p.user_name) = run_config::parse_user(u)?;
    }
    p.terminal = a.tty;
    p.stdin = a.interactive;
    p.console_size = if a.tty {
        terminal::window_size(1)
    } else {
        None
    };
    let mut agent = agent_of(&c, &spec.id)?;
    let target = attach::SignalTarget::spawn(MAIN_STREAM, a.tty);
    let _raw = if a.tty && terminal::is_tty(0) {
        Some(terminal::RawMode::enable().context("put the terminal in raw mode")?)
    } else {
        None
    };
    let outcome = agent
        .start(MAIN_STREAM, false, &p)
        .context("start the process")?;
    let sender = agent.sender();
    if a.detach {
        sender.hang_up();
        return Ok(0);
    }
    target.set(sender.clone(), MAIN_STREAM);
    let mut status = match outcome {
        StartOutcome::Failed { status } => Some(status),
        StartOutcome::Running { .. } => {
            if a.interactive {
                attach::spawn_stdin_pump(sender.clone(), MAIN_STREAM);
            }
            None
        }
    };
    let mut out = attach::Stdio::new(Some(sender.clone()), MAIN_STREAM);
    use skiff_runtime::container::Attach;
    loop {
        match agent.next_event() {
            Ok(Some(Event::Stdout { bytes, .. })) => out.stdout(&bytes),
            Ok(Some(Event::Stderr { bytes, .. })) => out.stderr(&bytes),
            Ok(Some(Event::Exited { stream, status: s })) if stream == MAIN_STREAM => {
                status = Some(s);
                break;
            }
            Ok(Some(Event::Error { message, .. })) => eprintln!("skiff: guest agent: {message}"),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
        if status.is_some() {
            break;
        }
    }
    sender.hang_up();
    drop(_raw);
    match status {
        Some(s) => Ok(attach::exit_code(s)),
        None => bail!("the container stopped before the exec'd process reported its exit status"),
    }
}

/// Runs `args` in the container and returns its stdout (for top).
fn exec_capture(c: &Containers, id: &str, args: Vec<String>) -> Result<(i32, Vec<u8>)> {
    let mut agent = agent_of(c, id)?;
    let mut p = c.spec(id)?.process;
    p.args = args;
    p.terminal = false;
    p.stdin = false;
    let mut status = match agent.start(MAIN_STREAM, false, &p)? {
        StartOutcome::Failed { status } => Some(status),
        StartOutcome::Running { .. } => None,
    };
    let mut out = Vec::new();
    while status.is_none() {
        match agent.next_event()? {
            Some(Event::Stdout { bytes, .. }) if out.len() < (4 << 20) => {
                out.extend_from_slice(&bytes)
            }
            Some(Event::Exited { status: s, .. }) => status = Some(s),
            None => break,
            _ => {}
        }
    }
    agent.sender().hang_up();
    Ok((status.map_or(137, |s| s.code()), out))
}

fn top(ctx: &Ctx, a: &TopArgs) -> Result<u8> {
    let c = ctx.containers()?;
    let id = c.resolve(&a.container)?.id;
    let mut args = vec!["ps".to_owned()];
    args.extend(a.ps_args.iter().cloned());
    let (code, out) = exec_capture(&c, &id, args)?;
    if code != 0 {
        bail!("ps in the container failed with status {code} (does the image have ps?)");
    }
    // The guest's own PID 1 (the agent), kernel threads and our ps are not the
    // container's processes.
    let text = String::from_utf8_lossy(&out);
    let mut lines = text.lines();
    let mut stdout = std::io::stdout().lock();
    if let Some(header) = lines.next() {
        writeln!(stdout, "{header}")?;
    }
    let cmd_col = text
        .lines()
        .next()
        .and_then(|h| h.find("COMMAND").or_else(|| h.find("CMD")));
    for line in lines {
        let command = cmd_col.and_then(|c| line.get(c..)).unwrap_or(line).trim();
        let hidden = command.starts_with('[') || command == "/init" || command.starts_with("ps");
        if !hidden {
            writeln!(stdout, "{line}")?;
        }
    }
    Ok(0)
}

// ---- commit -----------------------------------------------------------------------------

fn parse_change(change: &str, out: &mut ConfigChange) -> Result<()> {
    let (instr, rest) = change
        .trim()
        .split_once(char::is_whitespace)
        .unwrap_or((change.trim(), ""));
    let rest = rest.trim();
    let list = |s: &str| -> Vec<String> {
        match serde_json::from_str::<Vec<String>>(s) {
            Ok(v) => v,
            // Shell form, as Docker runs it.
            Err(_) => vec!["/bin/sh".into(), "-c".into(), s.to_owned()],
        }
    };
    match instr.to_ascii_uppercase().as_str() {
        "CMD" => out.cmd = Some(list(rest)),
        "ENTRYPOINT" => out.entrypoint = Some(list(rest)),
        "ENV" => {
            let kv = match rest.split_once('=') {
                Some(_) => rest.to_owned(),
                None => match rest.split_once(char::is_whitespace) {
                    Some((k, v)) => format!("{k}={}", v.trim()),
                    None => bail!("invalid ENV change {change:?}"),
                },
            };
            out.env.push(kv);
        }
        "WORKDIR" => out.working_dir = Some(rest.to_owned()),
        "USER" => out.user = Some(rest.to_owned()),
        "STOPSIGNAL" => out.stop_signal = Some(rest.to_owned()),
        "LABEL" => {
            let (k, v) = rest.split_once('=').context("LABEL needs KEY=VALUE")?;
            out.labels.push((k.to_owned(), v.trim_matches('"').to_owned()));
        }
        "EXPOSE" => out.exposed_ports.extend(rest.split_whitespace().map(|p| {
            if p.contains('/') { p.to_owned() } else { format!("{p}/tcp") }
        })),
        other => bail!("unsupported --change instruction {other:?} (CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL, EXPOSE, STOPSIGNAL)"),
    }
    Ok(())
}

fn commit(ctx: &Ctx, a: &CommitArgs) -> Result<u8> {
    let c = ctx.containers()?;
    let spec = c.resolve(&a.container)?;
    let mut change = ConfigChange {
        created_by: format!("skiff commit {}", command_text(&spec)),
        comment: a.message.clone(),
        author: a.author.clone(),
        ..Default::default()
    };
    for ch in &a.change {
        parse_change(ch, &mut change)?;
    }
    let store = ctx.store()?;
    let lock = c.lock(&spec.id)?;
    let st = lock.refreshed_state()?;
    if st.is_running() || (st.status == Status::Created && st.pid.is_some()) {
        bail!(
            "container {} is running; stop it before commit",
            &spec.id[..12]
        );
    }
    // The guest streams its own changes; the host never mounts the disk it wrote.
    let image = if c.writable_disk(&spec.id).exists() {
        let mut changes = skiff_runtime::container::export_changes(&c, &spec)?;
        let image = skiff_image::commit::commit(
            &store,
            &spec.image_id,
            &mut changes,
            &change,
            a.repository.as_deref(),
        )?;
        changes.finish()?;
        image
    } else {
        skiff_image::commit::commit(
            &store,
            &spec.image_id,
            &mut &skiff_image::commit::empty_layer()[..],
            &change,
            a.repository.as_deref(),
        )?
    };
    println!("{}", image.id);
    Ok(0)
}

// ---- stats ------------------------------------------------------------------------------

fn stats(ctx: &Ctx, a: &StatsArgs) -> Result<u8> {
    let c = ctx.containers()?;
    let pick = || -> Result<Vec<(ContainerSpec, ContainerState)>> {
        let all = c.list()?;
        if a.containers.is_empty() {
            return Ok(all
                .into_iter()
                .filter(|(_, st)| a.all || st.is_running())
                .collect());
        }
        let mut out = Vec::new();
        for n in &a.containers {
            let id = c.resolve(n)?.id;
            out.push((c.spec(&id)?, c.state(&id)?));
        }
        Ok(out)
    };
    let hz = skiff_sys::procfs::clock_ticks();
    loop {
        let list = pick()?;
        let before: Vec<u64> = list
            .iter()
            .map(|(_, st)| {
                st.pid
                    .filter(|_| st.is_running())
                    .map_or(0, |p| skiff_sys::procfs::tree_usage(p).0)
            })
            .collect();
        let interval = Duration::from_millis(500);
        std::thread::sleep(interval);
        println!(
            "{:<14}{:<24}{:<10}{:<24}{:<8}",
            "CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %"
        );
        for ((spec, st), b) in list.iter().zip(before) {
            let (ticks, pss) = st
                .pid
                .filter(|_| st.is_running())
                .map_or((0, 0), skiff_sys::procfs::tree_usage);
            let cpu = (ticks.saturating_sub(b)) as f64 / hz as f64 / interval.as_secs_f64() * 100.0;
            let limit = u64::from(spec.memory_mib) << 20;
            let mem_pct = pss as f64 / limit as f64 * 100.0;
            println!(
                "{:<14}{:<24}{:<10}{:<24}{:<8}",
                &spec.id[..12],
                spec.name,
                format!("{cpu:.2}%"),
                format!(
                    "{} / {}",
                    skiff_image::fsutil::human_size(pss),
                    skiff_image::fsutil::human_size(limit)
                ),
                format!("{mem_pct:.2}%")
            );
        }
        if a.no_stream {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(subcommand)]
            command: ContainerCommand,
        }
        <Cli as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn changes_parse() {
        let mut c = ConfigChange::default();
        parse_change(r#"CMD ["sh", "-c", "x"]"#, &mut c).unwrap();
        parse_change("ENTRYPOINT echo hi", &mut c).unwrap();
        parse_change("ENV A=1", &mut c).unwrap();
        parse_change("ENV B 2", &mut c).unwrap();
        parse_change("WORKDIR /w", &mut c).unwrap();
        parse_change("LABEL a=b", &mut c).unwrap();
        parse_change("EXPOSE 80", &mut c).unwrap();
        assert_eq!(c.cmd.unwrap(), ["sh", "-c", "x"]);
        assert_eq!(c.entrypoint.unwrap(), ["/bin/sh", "-c", "echo hi"]);
        assert_eq!(c.env, ["A=1", "B=2"]);
        assert_eq!(c.exposed_ports, ["80/tcp"]);
        assert!(parse_change("RUN x", &mut ConfigChange::default()).is_err());
    }

    #[test]
    fn durations_read_like_docker() {
        assert_eq!(human_duration(500), "Less than a second");
        assert_eq!(human_duration(5_000), "5 seconds");
        assert_eq!(human_duration(90_000), "About a minute");
        assert_eq!(human_duration(600_000), "10 minutes");
    }
}
