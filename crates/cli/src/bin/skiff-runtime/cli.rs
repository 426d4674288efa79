//! The command line, as runc's callers use it.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Parser)]
#[command(
    name = "skiff-runtime",
    disable_version_flag = true,
    about = "A runc-compatible OCI runtime running each container in a microVM"
)]
pub struct Cli {
    /// Where container state lives.
    #[arg(long, global = true, default_value = "/run/skiff-runtime")]
    pub root: PathBuf,
    /// Where errors (and with --debug, diagnostics) are written.
    #[arg(long, global = true)]
    pub log: Option<PathBuf>,
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Accepted for compatibility; the microVM is the container's boundary.
    #[arg(long, global = true)]
    pub systemd_cgroup: bool,
    #[arg(long, global = true)]
    pub debug: bool,
    /// Accepted for compatibility (`--rootless[=true|false|auto]`).
    #[arg(long, global = true, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub rootless: Option<String>,
    #[arg(long, short = 'v')]
    pub version: bool,
    #[command(subcommand)]
    pub cmd: Option<Cmd>,
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    #[arg(long, short = 'b', default_value = ".")]
    pub bundle: PathBuf,
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    #[arg(long)]
    pub no_pivot: bool,
    #[arg(long)]
    pub no_new_keyring: bool,
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
    pub id: String,
}

#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// A JSON runtime-spec `process`; otherwise the command follows the ID.
    #[arg(long, short = 'p')]
    pub process: Option<PathBuf>,
    #[arg(long, short = 'd')]
    pub detach: bool,
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    #[arg(long, short = 't')]
    pub tty: bool,
    #[arg(long)]
    pub cwd: Option<String>,
    #[arg(long = "env", short = 'e')]
    pub env: Vec<String>,
    /// UID[:GID]
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    #[arg(long)]
    pub no_new_privs: bool,
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
    pub id: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct UpdateArgs {
    /// A JSON `linux.resources` file, or `-` for stdin.
    #[arg(long, short = 'r')]
    pub resources: Option<PathBuf>,
    /// Memory limit (bytes, or with a k/m/g suffix); -1 for the boot maximum.
    #[arg(long, allow_hyphen_values = true)]
    pub memory: Option<String>,
    /// CPU time per period in microseconds; -1 for no limit.
    #[arg(long, allow_hyphen_values = true)]
    pub cpu_quota: Option<i64>,
    /// CFS period in microseconds.
    #[arg(long)]
    pub cpu_period: Option<u64>,
    pub id: String,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Boot the container's VM and prepare its process without starting it.
    Create(CreateArgs),
    /// create + start (+ wait and delete unless --detach).
    Run {
        #[command(flatten)]
        create: CreateArgs,
        #[arg(long, short = 'd')]
        detach: bool,
    },
    Start {
        id: String,
    },
    State {
        id: String,
    },
    Kill {
        #[arg(long, short = 'a')]
        all: bool,
        id: String,
        signal: Option<String>,
    },
    Delete {
        #[arg(long, short = 'f')]
        force: bool,
        id: String,
    },
    Exec(ExecArgs),
    Ps {
        #[arg(long, short = 'f', default_value = "table")]
        format: String,
        id: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    List {
        #[arg(long, short = 'f', default_value = "table")]
        format: String,
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// Pause the container's vCPUs.
    Pause {
        id: String,
    },
    Resume {
        id: String,
    },
    /// Resource usage of the container's host processes (the supervisor and its VM), as
    /// runc's `{"type":"stats"}` lines: once with --stats, else every --interval until
    /// the container stops.
    Events {
        #[arg(long)]
        stats: bool,
        /// Seconds between samples.
        #[arg(long, default_value_t = 5)]
        interval: u64,
        id: String,
    },
    /// Change a running container's resources: the CPU quota of the microVM's host
    /// cgroup, and its memory through the balloon (never beyond what it booted with).
    Update(UpdateArgs),
    Features,
    /// Write a template config.json (`--rootless` is the global flag, accepted).
    Spec {
        #[arg(long, short = 'b')]
        bundle: Option<PathBuf>,
    },
    #[command(name = "_supervise", hide = true)]
    Supervise {
        id: String,
    },
    #[command(name = "_exec-proxy", hide = true)]
    ExecProxy {
        id: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn callers_command_lines_parse() {
        let c = Cli::try_parse_from([
            "r",
            "--root",
            "/r",
            "--log",
            "/l",
            "--log-format",
            "json",
            "create",
            "--bundle",
            "/b",
            "--pid-file",
            "/p",
            "id1",
        ])
        .unwrap();
        assert_eq!(c.log_format, LogFormat::Json);
        assert!(matches!(c.cmd, Some(Cmd::Create(ref a)) if a.id == "id1"));
        let c = Cli::try_parse_from([
            "r",
            "--log-format=json",
            "--log",
            "/l",
            "exec",
            "--pid-file",
            "/p",
            "--process",
            "/f",
            "--detach",
            "--tty",
            "--console-socket",
            "/s",
            "id",
        ])
        .unwrap();
        assert!(matches!(c.cmd, Some(Cmd::Exec(ref a)) if a.tty && a.detach));
        let c = Cli::try_parse_from(["r", "exec", "id", "sh", "-c", "echo hi"]).unwrap();
        assert!(matches!(c.cmd, Some(Cmd::Exec(ref a)) if a.command == ["sh", "-c", "echo hi"]));
        let c = Cli::try_parse_from(["r", "kill", "--all", "id", "9"]).unwrap();
        assert!(matches!(c.cmd, Some(Cmd::Kill { all: true, .. })));
        assert!(Cli::try_parse_from(["r", "--rootless", "delete", "--force", "x"]).is_ok());
        assert!(Cli::try_parse_from(["r", "spec", "--rootless", "--bundle", "/b"]).is_ok());
        assert!(Cli::try_parse_from(["r", "--systemd-cgroup", "--debug", "state", "x"]).is_ok());
    }
}
