//! The network commands of `skiff`: `network create|ls|rm|inspect|connect|disconnect`,
//! one file per verb, and `skiff port`; the clap structs are in `args`. Also what the
//! container commands show or publish of a container's network (`ports`, `settings`).
//! They parse and print; the host side lives in `skiff_runtime::network`.

use anyhow::Result;
use skiff_runtime::container::Containers;
use skiff_runtime::network::Networks;

mod args;
mod connect;
mod create;
mod disconnect;
mod inspect;
mod ls;
mod port;
mod ports;
mod rm;
mod settings;

pub use args::NetworkCommand;
pub use port::port;
pub use ports::{exposed_ports, passt_ports};
pub use settings::{inspect_settings, ports_by_container};

pub fn run(cmd: NetworkCommand, containers: &Containers) -> Result<u8> {
    let networks = Networks::open()?;
    match cmd {
        NetworkCommand::Create(a) => create::create(&networks, a),
        NetworkCommand::Ls(a) => ls::ls(&networks, a),
        NetworkCommand::Rm(a) => rm::rm(&networks, a),
        NetworkCommand::Inspect(a) => inspect::inspect(&networks, a),
        NetworkCommand::Connect(a) => connect::connect(&networks, containers, a),
        NetworkCommand::Disconnect(a) => disconnect::disconnect(&networks, containers, a),
    }
}
