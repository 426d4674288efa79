//! The command line of the container commands (clap), apart from what they do.

use clap::{Args, Subcommand};

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
    pub name: Option<String>,
    /// Set environment variables
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Read environment variables from a file
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_file: Vec<String>,
    /// Working directory inside the container
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// User: NAME|UID[:GROUP|GID]
    #[arg(short, long)]
    pub user: Option<String>,
    /// Overwrite the default ENTRYPOINT of the image
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Container host name
    #[arg(long)]
    pub hostname: Option<String>,
    /// Memory of the container's microVM (e.g. 512M)
    #[arg(short, long)]
    pub memory: Option<String>,
    /// Virtual CPUs of the microVM (rounded up to a whole CPU)
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Mount the container's root filesystem as read only
    #[arg(long)]
    pub read_only: bool,
    /// Set metadata on a container
    #[arg(short, long = "label", value_name = "KEY=VALUE")]
    pub label: Vec<String>,
    /// Keep STDIN open
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short, long)]
    pub tty: bool,
    /// Signal to stop the container
    #[arg(long)]
    pub stop_signal: Option<String>,
    /// Seconds to wait before killing the container on stop
    #[arg(long)]
    pub stop_timeout: Option<u64>,
    /// Size of the container's writable layer
    #[arg(long, default_value = "1G")]
    pub storage_size: String,
    /// Bind mount a host directory (virtio-fs)
    #[arg(short, long, value_name = "HOST:CONTAINER[:ro]")]
    pub volume: Vec<String>,
    /// Network: none (only lo), bridge (the default network), a network's name, or
    /// passt (user-mode networking, no root needed)
    #[arg(long, alias = "net", default_value = "none")]
    pub network: String,
    /// deny: the container reaches only its network's peers (and is reached through
    /// its published ports); nothing beyond its bridge, enforced on the host
    #[arg(long, value_name = "allow|deny", default_value = "allow")]
    pub egress: String,
    /// Publish a container's port to the host
    #[arg(short, long, value_name = "[HOSTIP:][HOSTPORT:]PORT[/tcp|/udp]")]
    pub publish: Vec<String>,
    /// Publish every port the image exposes to a free host port
    #[arg(short = 'P', long)]
    pub publish_all: bool,
    /// Image to run
    pub image: String,
    /// Command and arguments
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Args, Clone)]
pub struct RunArgs {
    /// Run the container in the background and print its ID
    #[arg(short, long)]
    pub detach: bool,
    /// Remove the container when it exits
    #[arg(long)]
    pub rm: bool,
    #[command(flatten)]
    pub create: CreateArgs,
}

#[derive(Args)]
pub struct StartArgs {
    /// Attach stdout/stderr and wait for the container
    #[arg(short, long)]
    pub attach: bool,
    /// Attach the container's stdin
    #[arg(short, long)]
    pub interactive: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args)]
pub struct StopArgs {
    /// Seconds to wait before killing it
    #[arg(short = 't', long = "time")]
    pub time: Option<u64>,
    /// Signal to send (default: the image's StopSignal or SIGTERM)
    #[arg(short, long)]
    pub signal: Option<String>,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args)]
pub struct KillArgs {
    /// Signal to send
    #[arg(short, long, default_value = "KILL")]
    pub signal: String,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args)]
pub struct RmArgs {
    /// Force the removal of a running container
    #[arg(short, long)]
    pub force: bool,
    /// Remove anonymous volumes (there are none; accepted for compatibility)
    #[arg(short, long)]
    pub volumes: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args)]
pub struct PsArgs {
    /// Show all containers (default shows just running)
    #[arg(short, long)]
    pub all: bool,
    /// Only display container IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Don't truncate output
    #[arg(long)]
    pub no_trunc: bool,
    /// Format: table, json or a Go-style template ({{.ID}} {{.Names}} ...)
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Args)]
pub struct LogsArgs {
    /// Follow log output
    #[arg(short, long)]
    pub follow: bool,
    /// Number of lines to show from the end of the logs
    #[arg(short = 'n', long, default_value = "all")]
    pub tail: String,
    /// Show timestamps
    #[arg(short, long)]
    pub timestamps: bool,
    pub container: String,
}

#[derive(Args)]
pub struct ExecArgs {
    /// Detached mode: run the command in the background
    #[arg(short, long)]
    pub detach: bool,
    /// Keep STDIN open
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short, long)]
    pub tty: bool,
    /// Set environment variables
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// Working directory inside the container
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// User: NAME|UID[:GROUP|GID]
    #[arg(short, long)]
    pub user: Option<String>,
    pub container: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Args)]
pub struct NamesArgs {
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args)]
pub struct InspectArgs {
    /// Format the output using a Go-style template
    #[arg(short, long)]
    pub format: Option<String>,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args)]
pub struct TopArgs {
    pub container: String,
    /// ps options
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

#[derive(Args)]
pub struct CommitArgs {
    /// Commit message
    #[arg(short, long)]
    pub message: Option<String>,
    /// Author
    #[arg(short, long)]
    pub author: Option<String>,
    /// Apply Dockerfile instructions (CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL, EXPOSE, STOPSIGNAL)
    #[arg(short, long)]
    pub change: Vec<String>,
    pub container: String,
    /// REPOSITORY[:TAG]
    pub repository: Option<String>,
}

#[derive(Args)]
pub struct CpArgs {
    /// Archive mode: keep the owners (uid/gid) the container's files have
    #[arg(short = 'a', long)]
    pub archive: bool,
    /// SRC: CONTAINER:PATH or a host path
    pub src: String,
    /// DEST: CONTAINER:PATH or a host path
    pub dest: String,
}

#[derive(Args)]
pub struct PortArgs {
    pub container: String,
    /// Only this container port: PORT[/PROTO]
    pub private_port: Option<String>,
}

#[derive(Args)]
pub struct RenameArgs {
    pub container: String,
    pub new_name: String,
}

#[derive(Args)]
pub struct StatsArgs {
    /// Print one sample and exit
    #[arg(long)]
    pub no_stream: bool,
    /// Show all containers (default shows just running)
    #[arg(short, long)]
    pub all: bool,
    pub containers: Vec<String>,
}

#[derive(Args)]
pub struct PruneArgs {
    /// Do not prompt for confirmation (there is no prompt; accepted for compatibility)
    #[arg(short, long)]
    pub force: bool,
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
}
