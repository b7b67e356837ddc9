//! kctl: the operator's side of a kagent fleet. `main.rs` only calls [`main`].
//!
//! Module map:
//! - `cli`: the command line (clap), with the help texts;
//! - `commands/`: what each command does, returning an exit code;
//! - `config`: the config directory layout and the operator identity;
//! - `host`: the `HOST` argument (`name[:port]`, IP literals);
//! - `spec`: the TOML host spec, checked and turned into the API's `HostSpec`;
//! - `stack`: stacks as data: the built-in Keycloak and KHEOPS definitions (`ctl/stacks/`),
//!   their variables, and rendering them into host specs;
//! - `agent_client`: the mTLS gRPC connection, the only module that opens one (with
//!   `pinned`, its fingerprint-pinned TLS for agents that are not enrolled yet);
//! - `follow`: following an operation's events to the end, re-attaching after breaks;
//! - `output/`: tables, event lines and JSON (formats, never decides);
//! - `inventory`: the installs file (`inventory.toml`); `fleet`: the status rules of
//!   `kctl fleet status`;
//!   `rollout`: the record and loop of `kctl fleet upgrade`;
//! - `ca`: the fleet CA and certificate bundles; `files`: atomic local writes;
//! - `error`: the error type with a hint and an exit code.

pub mod agent_client;
pub mod ca;
pub mod cli;
pub mod commands;
pub mod config;
pub mod error;
#[cfg(test)]
mod fake_agent;
pub mod files;
pub mod fleet;
pub mod follow;
pub mod host;
pub mod inventory;
pub mod output;
pub mod pinned;
pub mod rollout;
pub mod spec;
pub mod stack;

use std::process::ExitCode;

use clap::Parser;

/// Parses the command line, runs the command, prints any error with its hint, and returns
/// the exit code (see [`error`] for their meaning).
pub fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(error::EXIT_FAILED);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprint!("{}", e.render());
            ExitCode::from(e.code)
        }
    }
}
