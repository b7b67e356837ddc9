//! `kagent`: parse arguments, load the configuration, run the daemon. Exit codes: 0 after a
//! clean shutdown, 1 when the daemon failed while running, 2 for a bad configuration.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use kagent::{config, daemon, logging};

/// The kctl host agent: applies declared resources (files, secrets, ...) on this host,
/// over gRPC with mutual TLS only.
#[derive(Parser)]
#[command(
    version,
    after_help = "\
Configuration: /etc/kagent/kagent.toml (see --config), every key overridable with KAGENT_*
environment variables (KAGENT_LISTEN, KAGENT_STATE_DIR, KAGENT_MANAGED_ROOTS=/a,/b,
KAGENT_TLS__CERT, ...). Log level: KAGENT_LOG (e.g. debug).

The agent needs a certificate signed by the fleet CA; on the operator's machine:
  kctl ca issue agent HOST --ip ADDRESS
then copy agent.crt, agent.key and ca.crt to /etc/kagent/tls/."
)]
struct Args {
    /// Configuration file; when given, it must exist.
    #[arg(long, value_name = "PATH", global = true)]
    config: Option<PathBuf>,
    /// Log format; default: human on a terminal, plain otherwise (systemd).
    #[arg(long, value_enum, value_name = "FORMAT")]
    log_format: Option<logging::Format>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Print a fresh enrollment token (run as root on the VM when the first one was lost or
    /// expired). The previous token stops working at once; a running agent uses the new one
    /// without a restart.
    #[command(after_help = "Then, on the operator's machine: kctl enroll HOST --token TOKEN")]
    EnrollToken,
}

fn main() -> ExitCode {
    let args = Args::parse();
    logging::init(args.log_format.unwrap_or_else(logging::Format::detect));
    let source = match &args.config {
        Some(p) => config::Source::Explicit(p),
        None => config::Source::Default,
    };
    let cfg = match config::Config::load(source) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kagent: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::EnrollToken) = args.command {
        return enroll_token(&cfg);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kagent: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(daemon::run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(daemon::Error::Config(e)) => {
            eprintln!("kagent: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("kagent: {e}");
            ExitCode::FAILURE
        }
    }
}

fn enroll_token(cfg: &config::Config) -> ExitCode {
    if cfg.tls.cert.exists() {
        eprintln!(
            "kagent: already enrolled ({} exists); use `kctl ca rotate-agent HOST` to renew its \
             certificate, or remove the three TLS files to enroll again",
            cfg.tls.cert.display()
        );
        return ExitCode::from(2);
    }
    let ttl = std::time::Duration::from_secs(cfg.enrollment.token_ttl_secs);
    let enrollment = kagent::enroll::Enrollment::new(&cfg.state_dir, ttl);
    match enrollment.new_token() {
        Ok(t) => {
            println!("{}", t.token);
            eprintln!(
                "fingerprint {} (in the token); valid for {} s; on the operator's machine:\n  \
                 kctl enroll HOST --token {}",
                t.fingerprint, cfg.enrollment.token_ttl_secs, t.token
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kagent: {e}");
            ExitCode::FAILURE
        }
    }
}
