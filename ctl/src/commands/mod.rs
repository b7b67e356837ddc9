//! What each command does: resolve the configuration, call the agent through
//! [`crate::agent_client`], hand results to [`crate::output`]. Returns the process exit code.

mod ca;
mod certs;
mod containers;
mod facts;
mod fleet;
mod keycloak;
mod operation;
pub mod provision;
mod provision_inventory;
mod stacks;
mod trust;

use std::io::Write;

use crate::agent_client::AgentClient;
use crate::cli::{CaCommand, Cli, Command, FleetCommand, IssueCommand, KeycloakCommand};
use crate::config::{self, Credentials, Paths};
use crate::error::{Error, Result};
use crate::host::Target;
use crate::output::{Format, Style};

/// What every command gets: where the files are and how to print.
pub struct Context {
    pub paths: Paths,
    pub format: Format,
    pub style: Style,
    /// The inventory file (`--inventory`, else `<config dir>/inventory.toml`).
    pub inventory: std::path::PathBuf,
}

/// Runs the parsed command line; returns the exit code (errors are the caller's to print).
pub async fn run(cli: Cli) -> Result<u8> {
    let config_dir = config::config_dir(cli.global.config_dir.as_deref(), |k| std::env::var_os(k))?;
    let inventory =
        (cli.global.inventory).unwrap_or_else(|| config_dir.join(crate::inventory::FILE_NAME));
    let ctx = Context {
        inventory,
        paths: Paths::new(config_dir, cli.global.identity, cli.global.ca_file),
        format: cli.global.output,
        style: Style::detect(),
    };
    match cli.command {
        Command::Ca(CaCommand::Init {
            name,
            client_name,
            client_days,
        }) => ca::init(&ctx, &name, client_name, client_days),
        Command::Ca(CaCommand::Issue(IssueCommand::Agent {
            host,
            dns,
            ip,
            days,
            out,
        })) => ca::issue_agent(&ctx, &host, &dns, &ip, days, out),
        Command::Ca(CaCommand::Issue(IssueCommand::Client {
            name,
            role,
            days,
            out,
        })) => ca::issue_client(&ctx, &name, role, days, out),
        Command::Ca(CaCommand::RotateAgent {
            host,
            dns,
            ip,
            days,
        }) => trust::rotate_agent(&ctx, &host, &dns, &ip, days).await,
        Command::Enroll {
            host,
            token,
            dns,
            ip,
            days,
        } => trust::enroll(&ctx, &host, &token, &dns, &ip, days).await,
        Command::Audit {
            host,
            since,
            caller,
            limit,
        } => trust::audit(&ctx, &host, since.as_deref(), &caller, limit).await,
        Command::Facts { host } => facts::facts(&ctx, &host).await,
        Command::Ps { host, stack } => containers::ps(&ctx, &host, stack.as_deref()).await,
        Command::Logs {
            host,
            name,
            follow,
            tail,
            since,
        } => containers::logs(&ctx, &host, &name, follow, tail, since.as_deref()).await,
        Command::Restart {
            host,
            name,
            timeout,
        } => containers::restart(&ctx, &host, &name, timeout).await,
        Command::Ops { host, limit } => facts::ops(&ctx, &host, limit.unwrap_or(0)).await,
        Command::Apply {
            host,
            file,
            dry_run,
        } => operation::apply(&ctx, &host, &file, dry_run).await,
        Command::Watch {
            host,
            operation_id,
            from,
        } => operation::watch(&ctx, &host, &operation_id, from).await,
        Command::Keycloak(KeycloakCommand::Export {
            host,
            realm,
            url,
            admin_credential_file,
            admin_user,
            admin_realm,
            admin_client_id,
            keycloak_ca_file,
            include_secrets,
        }) => {
            let args = keycloak::ExportArgs {
                realm: &realm,
                url: &url,
                admin_credential_file: &admin_credential_file,
                admin_user: admin_user.as_deref(),
                admin_realm: admin_realm.as_deref(),
                admin_client_id: admin_client_id.as_deref(),
                ca_file: keycloak_ca_file.as_deref(),
                include_secrets,
            };
            keycloak::export(&ctx, &host, args).await
        }
        Command::Keycloak(KeycloakCommand::Check {
            host,
            url,
            realm,
            kheops_origin,
            secret_file,
            only,
            expected_issuer,
            login_client,
            auth_client,
            keycloak_ca_file,
        }) => {
            let request = kagent_proto::v1::CheckKeycloakRequest {
                base_url: url,
                realm,
                kheops_origin,
                expected_issuer: expected_issuer.unwrap_or_default(),
                login_client,
                auth_client,
                auth_secret_file: secret_file.unwrap_or_default(),
                ca_file: keycloak_ca_file.unwrap_or_default(),
                only,
            };
            keycloak::check(&ctx, &host, request).await
        }
        Command::Provision(args) => provision::run(&ctx, args).await,
        Command::Fleet(FleetCommand::Status {
            installs,
            concurrency,
        }) => fleet::status(&ctx, &installs, concurrency).await,
        Command::Fleet(FleetCommand::Renew {
            installs,
            force,
            concurrency,
        }) => fleet::renew(&ctx, &installs, force, concurrency).await,
        Command::Fleet(FleetCommand::Upgrade {
            installs,
            keycloak_var,
            kheops_var,
            max_parallel,
            wait,
            dry_run,
            resume,
        }) => {
            let args = fleet::UpgradeArgs {
                installs,
                keycloak_var,
                kheops_var,
                max_parallel,
                wait,
                dry_run,
                resume,
            };
            fleet::upgrade(&ctx, args).await
        }
        Command::Stacks(c) => stacks::run(&ctx, c),
        Command::Reveal { host, path } => keycloak::reveal(&ctx, &host, &path).await,
        Command::Certs {
            host,
            retire: Some(name),
        } => certs::retire(&ctx, &host, &name).await,
        Command::Certs { host, retire: None } => certs::list(&ctx, &host).await,
        Command::Renew { host, name, force } => {
            certs::renew(&ctx, &host, name.as_deref().unwrap_or(""), force).await
        }
    }
}

/// Loads the identity (warning when it expires soon) and dials `host`.
async fn connect(ctx: &Context, host: &Target) -> Result<AgentClient> {
    let creds = Credentials::load(&ctx.paths)?;
    if let Some(warning) = creds.expiry_warning(time::OffsetDateTime::now_utc()) {
        eprintln!("warning: {warning}");
    }
    AgentClient::connect(host, &creds).await
}

/// Writes `text` to stdout, turning a closed pipe into an error rather than a panic.
fn print(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::failed(anyhow::anyhow!("cannot write the output: {e}")))
}

/// Prints a JSON document (or JSON Lines record) on its own line.
fn print_json(value: &serde_json::Value) -> Result<()> {
    print(&format!("{value}\n"))
}
