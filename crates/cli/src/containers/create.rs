//! `create` (and the creating half of `run`): a container record from an image and flags, admitted by the plugins.

use std::path::Path;

use anyhow::{bail, Context, Result};
use skiff_image::{busybox, registry, Reference, Store};
use skiff_proto::ProcessSpec;
use skiff_runtime::container::{self, BootSettings, ContainerSpec};
use skiff_runtime::network::{Egress, NetworkMode, Networks, PortMapping};
use skiff_runtime::vm::writable;

use crate::terminal;
use skiff_engine::lifecycle;
use skiff_engine::run_config::{self, ImageDefaults};

use super::*;

/// Finds the image locally; otherwise pulls it. `busybox` with no registry reachable
/// becomes the offline starter image built from the host's static busybox.
pub(super) fn image_for_run(store: &Store, name: &str) -> Result<()> {
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

pub(super) fn create(ctx: &Ctx, a: &CreateArgs, auto_remove: bool) -> Result<ContainerSpec> {
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
    match &network {
        NetworkMode::None if !ports.is_empty() || a.publish_all => {
            bail!("publishing ports needs a network (--network bridge or a network's name)")
        }
        NetworkMode::None | NetworkMode::Passt => {}
        // Refused before anything is recorded.
        NetworkMode::Network(name) => {
            Networks::open()?.get(name)?;
        }
    }
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
        ports.extend(crate::networks::exposed_ports(&image.config_json)?);
    }
    // passt binds the host ports itself; pick the free ones now, as leases do.
    let passt_ports = if network == NetworkMode::Passt {
        crate::networks::passt_ports(std::mem::take(&mut ports))?
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
    process.console_size = terminal::console_size(a.tty);

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
    let request = lifecycle::Create {
        spec,
        image_config: &image.config_json,
        ports,
    };
    Ok(lifecycle::create(&containers, &store, request, |_| Ok(()))?)
}

/// `-v HOST:CONTAINER[:ro|rw]`: an absolute host directory (created if missing, as
/// Docker does) and an absolute container path.
pub(super) fn parse_bind(v: &str) -> Result<container::Bind> {
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
