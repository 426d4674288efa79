//! The command line of `skiff network ...` (clap), apart from what it does.

use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum NetworkCommand {
    /// Create a network
    Create(CreateArgs),
    /// List networks
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Remove one or more networks
    #[command(alias = "remove")]
    Rm(NamesArgs),
    /// Display detailed information on one or more networks
    Inspect(NamesArgs),
    /// Connect a stopped container to a network (one network per container)
    Connect(ConnectArgs),
    /// Disconnect a stopped container from a network
    Disconnect(ConnectArgs),
}

#[derive(Args)]
pub struct CreateArgs {
    /// Subnet in CIDR form (default: the next free 10.89.N.0/24)
    #[arg(long)]
    pub subnet: Option<String>,
    /// No route to the outside (containers reach only each other)
    #[arg(long)]
    pub internal: bool,
    /// Only the bridge driver exists; accepted for compatibility
    #[arg(short, long, default_value = "bridge")]
    pub driver: String,
    pub name: String,
}

#[derive(Args)]
pub struct LsArgs {
    /// Only display network names
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args)]
pub struct NamesArgs {
    #[arg(required = true)]
    pub networks: Vec<String>,
}

#[derive(Args)]
pub struct ConnectArgs {
    pub network: String,
    pub container: String,
}
