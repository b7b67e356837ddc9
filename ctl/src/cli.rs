//! The command line: clap definitions only, with `--help` texts that teach by example.
//! What each command does lives in `commands/`.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::host::Target;
use crate::output::Format;

const TOP_EXAMPLES: &str = "\
Getting started:
  kctl ca init                                  # fleet CA + your admin identity
  kctl ca issue agent vm1.example --ip 10.0.0.2 # certificate for the agent on vm1
  # copy agent.crt, agent.key, ca.crt to /etc/kagent/tls/ on vm1, start kagent
  kctl facts vm1.example                        # what the host is
  kctl apply vm1.example -f spec.toml --dry-run # what would change
  kctl apply vm1.example -f spec.toml           # change it
  kctl ops vm1.example                          # what happened

HOST is NAME[:PORT] (default port 7443), e.g. vm1.example, 10.0.0.2:7444, [fd00::2]:7443.
The agent's certificate must name HOST exactly as you type it.

Files live in the config directory (--config-dir, $KCTL_CONFIG_DIR, else
$XDG_CONFIG_HOME/kctl, else ~/.config/kctl): ca/ (the fleet CA), identity/ (your client
certificate), agents/HOST/ and clients/NAME/ (issued bundles).

Exit codes: 0 success, 1 the operation or a call failed, 2 usage, configuration or spec
error, 130 interrupted by Ctrl-C (an operation goes on in the agent).";

/// kctl drives kagent, the host agent: declarative applies over mutual TLS, a fleet CA, and
/// the operation history of each host.
#[derive(Debug, Parser)]
#[command(name = "kctl", version, after_help = TOP_EXAMPLES, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// How to print results: human (tables, one line per event) or json (one JSON object per
    /// line for event streams, one document for facts and ops).
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Format::Human)]
    pub output: Format,
    /// Directory holding the fleet CA, your identity and issued bundles.
    #[arg(long, global = true, env = "KCTL_CONFIG_DIR", value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
    /// Directory of the identity kctl presents to agents (client.crt, client.key, ca.crt).
    /// Default: <config dir>/identity.
    #[arg(long, global = true, env = "KCTL_IDENTITY", value_name = "DIR")]
    pub identity: Option<PathBuf>,
    /// CA certificate that agent certificates must chain to, instead of the identity's ca.crt.
    #[arg(long, global = true, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// The inventory of installs (`kctl fleet --help` shows the format). Default:
    /// <config dir>/inventory.toml.
    #[arg(long, global = true, value_name = "FILE")]
    pub inventory: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage the fleet CA and issue agent and client certificates.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Show what a host is: OS, kernel, memory, Docker, clock, agent version.
    #[command(
        after_help = "Examples:\n  kctl facts vm1.example\n  kctl facts 10.0.0.2:7444 --output json | jq .docker"
    )]
    Facts {
        /// The agent: NAME[:PORT].
        host: Target,
    },
    /// Plan and apply a host spec, following the operation's events live.
    #[command(after_help = APPLY_EXAMPLES)]
    Apply {
        /// The agent: NAME[:PORT].
        host: Target,
        /// The spec file (TOML, `[[resource]]` tables).
        #[arg(short = 'f', long = "file", value_name = "SPEC")]
        file: PathBuf,
        /// Show the plan only; nothing on the host changes.
        #[arg(long)]
        dry_run: bool,
    },
    /// List a host's operations, newest first.
    #[command(
        after_help = "Examples:\n  kctl ops vm1.example\n  kctl ops vm1.example --limit 5 --output json"
    )]
    Ops {
        /// The agent: NAME[:PORT].
        host: Target,
        /// How many operations to show (default: the agent's, 50).
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
    },
    /// Enroll a new agent: pin its certificate, prove its one-time token, sign its CSR.
    #[command(after_help = "\
Examples:
  kctl enroll vm1.example --token ket1.Xy...9f
  kctl enroll 10.0.0.2 --token \"$(ssh root@10.0.0.2 kagent enroll-token)\" --dns vm1.example

A kagent started without a certificate prints a token in its log (journalctl -u kagent) and
in /var/lib/kagent/enroll/token.json. The token carries the SHA-256 fingerprint of the agent's
self-signed certificate: kctl refuses any other certificate (a man in the middle). The new
certificate names HOST, every --dns and --ip, and the host name and addresses the agent
reports. The agent switches to mutual TLS at once; the token cannot be used again.")]
    Enroll {
        /// The agent: NAME[:PORT], as you will dial it from now on.
        host: Target,
        /// The enrollment token printed by the agent (or `kagent enroll-token`).
        #[arg(
            long,
            value_name = "TOKEN",
            env = "KCTL_ENROLL_TOKEN",
            hide_env_values = true
        )]
        token: String,
        /// Another DNS name for the certificate (repeatable).
        #[arg(long = "dns", value_name = "NAME")]
        dns: Vec<String>,
        /// Another IP address for the certificate (repeatable).
        #[arg(long = "ip", value_name = "IP")]
        ip: Vec<IpAddr>,
        /// Lifetime of the agent's certificate in days.
        #[arg(long, default_value_t = crate::ca::AGENT_DAYS, value_name = "N")]
        days: i64,
    },
    /// Show who called what on a host, and how it ended (operator role).
    #[command(after_help = "\
Examples:
  kctl audit vm1.example
  kctl audit vm1.example --since 2h --caller alice
  kctl audit vm1.example --since 2026-12-01T08:00:00Z --output json

Every mutating call writes a `begin` record before it runs and an `end` record with its
result; refused and invalid calls are recorded too.")]
    Audit {
        /// The agent: NAME[:PORT].
        host: Target,
        /// Only records since then: a duration back from now (30m, 2h, 7d) or an RFC 3339 time.
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// Only callers whose certificate subject contains this text.
        #[arg(long, value_name = "TEXT", default_value = "")]
        caller: String,
        /// At most this many records (the newest).
        #[arg(long, default_value_t = 200, value_name = "N")]
        limit: u32,
    },
    /// List the containers the agent manages: state, health, restarts, uptime, image, ports.
    #[command(
        after_help = "Examples:\n  kctl ps vm1.example\n  kctl ps vm1.example --stack kheops -o json | jq '.containers[] | select(.health != \"healthy\")'"
    )]
    Ps {
        /// The agent: NAME[:PORT].
        host: Target,
        /// Only the containers of this stack.
        #[arg(long, value_name = "STACK")]
        stack: Option<String>,
    },
    /// Show a managed container's output (stdout and stderr), optionally following it.
    #[command(
        after_help = "Examples:\n  kctl logs vm1.example web --tail 50\n  kctl logs vm1.example web -f --since 10m\n\nStdout goes to stdout and stderr to stderr; with -o json, one object per chunk."
    )]
    Logs {
        /// The agent: NAME[:PORT].
        host: Target,
        /// The container (its resource name).
        name: String,
        /// Keep streaming new output until Ctrl-C or the container stops.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(long, value_name = "N")]
        tail: Option<u32>,
        /// Only output since then: a duration back from now (30m, 2h) or an RFC 3339 time.
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
    },
    /// Restart a managed container (stop with its timeout, start). Needs the operator role.
    #[command(
        after_help = "Examples:\n  kctl restart vm1.example web\n  kctl restart vm1.example db --timeout 60"
    )]
    Restart {
        /// The agent: NAME[:PORT].
        host: Target,
        /// The container (its resource name).
        name: String,
        /// Seconds to wait after SIGTERM before SIGKILL (default: the container's own).
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u32>,
    },
    /// Bring up one install: Keycloak on one host, KHEOPS on another, verified end to end.
    #[command(after_help = PROVISION_EXAMPLES)]
    Provision(ProvisionArgs),
    /// The installs of the inventory: the status of every host.
    #[command(subcommand)]
    Fleet(FleetCommand),
    /// The Keycloak and KHEOPS deployments as data: list the stacks, show one's variables,
    /// render one into the host spec `kctl apply -f` reads.
    #[command(subcommand)]
    Stacks(StacksCommand),
    /// Keycloak on a host, through its agent (the admin credential never leaves the host).
    #[command(subcommand)]
    Keycloak(KeycloakCommand),
    /// Print the value of a managed secret file on the host (e.g. the kheopsAuthorization
    /// client secret the KHEOPS host needs). Needs the admin role; audited by the agent.
    #[command(
        after_help = "Examples:\n  kctl reveal kc.example /srv/kctl/keycloak/kheops-auth-secret\n\nOnly one-word secret files under the agent's managed roots can be read."
    )]
    Reveal {
        /// The agent: NAME[:PORT].
        host: Target,
        /// Absolute path of the secret file on the host.
        path: String,
    },
    /// List the host's certificates: names, issuer, expiry, next renewal, last error.
    #[command(
        after_help = "Examples:\n  kctl certs vm1.example\n  kctl certs vm1.example -o json | jq '.certificates[] | select(.days_left < 20)'\n  kctl certs vm1.example --retire old-name   # no longer renewed; its files stay\n\nA certificate dropped from a spec is still renewed from its stored definition (one spec\nneed not name everything on a host): --retire stops that. Needs the operator role; audited.\nApplying the certificate again manages it again."
    )]
    Certs {
        /// The agent: NAME[:PORT].
        host: Target,
        /// Stop managing this certificate (its deployed files are left in place).
        #[arg(long, value_name = "NAME")]
        retire: Option<String>,
    },
    /// Renew certificates now: those due, or with --force every one named. Needs the operator
    /// role; runs as an operation (see `kctl ops`).
    #[command(
        after_help = "Examples:\n  kctl renew vm1.example              # every certificate that is due\n  kctl renew vm1.example keycloak --force\n\nThe agent renews by itself in the CA's renewal window (or with 1/3 of the lifetime\nleft); this is for \"now\", e.g. after a key compromise."
    )]
    Renew {
        /// The agent: NAME[:PORT].
        host: Target,
        /// The certificate resource's name (default: all).
        name: Option<String>,
        /// Renew even if not due.
        #[arg(long)]
        force: bool,
    },
    /// Replay an operation's events, then follow it until it finishes.
    #[command(
        after_help = "Examples:\n  kctl watch vm1.example 0193c1d2-...          # from the start\n  kctl watch vm1.example 0193c1d2-... --from 12 # resume after event 11"
    )]
    Watch {
        /// The agent: NAME[:PORT].
        host: Target,
        /// The operation id (see `kctl ops HOST`).
        operation_id: String,
        /// Index of the first event to show (last seen index + 1 to resume).
        #[arg(long, default_value_t = 0, value_name = "N")]
        from: u64,
    },
}

const APPLY_EXAMPLES: &str = "\
Examples:
  kctl apply vm1.example -f spec.toml --dry-run   # the plan, with diffs
  kctl apply vm1.example -f spec.toml             # apply; re-running changes nothing
  kctl apply vm1.example -f spec.toml -o json | jq -c 'select(.type == \"failed\")'

A spec lists resources, applied in order:

  [[resource]]
  kind = \"file\"                 # or \"secret\"
  name = \"motd\"                 # a-z 0-9 . _ -, unique per kind
  path = \"/srv/kctl/motd\"       # under one of the agent's managed roots
  content = \"hello\\n\"           # or content_file = \"motd.txt\" (next to the spec)
  mode = \"0644\"                 # optional; also uid, gid, dir_mode, sensitive

  [[resource]]
  kind = \"secret\"               # generated on the host, never sent back
  name = \"db-password\"
  path = \"/srv/kctl/secrets/db\"
  length = 32                   # optional, 16 to 256
  alphabet = \"alphanumeric\"     # or hex, base64url

  [[resource]]
  kind = \"docker\"               # Docker Engine per Docker's install docs
  name = \"engine\"
  source = \"distro\"             # or docker (default), repository, directory
  log_max_size = \"10m\"          # optional json-file rotation (defaults 10m, 3)
  log_max_file = 3

  [[resource]]
  kind = \"group_member\"         # adds only: other groups are kept
  name = \"centos-docker\"
  user = \"centos\"
  group = \"docker\"              # default docker (root-equivalent); also create_user

The operation runs in the agent: if the connection breaks, kctl re-attaches to it; if that
fails, it prints the `kctl watch` command that picks up where it stopped.";

const PROVISION_EXAMPLES: &str = "\
Examples:
  kctl provision kc.example kheops.example --dry-run \\
      --keycloak-domain kc.example --kheops-domain kheops.example --acme-contact ops@example.org
  kctl provision kc.example kheops.example \\
      --keycloak-domain kc.example --kheops-domain kheops.example --acme-contact ops@example.org
  kctl provision kc.example kheops.example --keycloak-stack keycloak-16 --kheops-stack kheops-0.9 \\
      --keycloak-domain kc.example --kheops-domain kheops.example --acme-contact ops@example.org
  kctl provision kc.example kheops.example --save-install prod \\
      --keycloak-domain kc.example --kheops-domain kheops.example --acme-contact ops@example.org
  kctl provision --install prod                  # the settings of install prod (inventory)
  kctl provision --install prod --dry-run --keycloak-var keycloak_version=26.1.0

Steps: preflight (facts of both hosts), the Keycloak host (certificate, secrets, Keycloak,
realm), wait until Keycloak is usable from the KHEOPS host (its agent checks discovery and
JWKS), the client secret read on the Keycloak host (audited), the KHEOPS host, then every
verification check from the KHEOPS host. A failed step stops the run with its reason; running
it again converges. Stacks are data: `--keycloak-stack`/`--kheops-stack` take a built-in name
or a stack file; the common settings (domains, realm, ACME) go to each stack that declares
them, `--keycloak-var`/`--kheops-var NAME=VALUE` set the rest. `--install NAME` takes every
setting from the inventory (`kctl fleet --help`), options on the command line win;
`--save-install NAME` records the settings of a successful run there.";

#[derive(Debug, Args)]
pub struct ProvisionArgs {
    /// The agent on the Keycloak host: NAME[:PORT] (from the inventory with --install).
    #[arg(required_unless_present = "install")]
    pub keycloak_host: Option<Target>,
    /// The agent on the KHEOPS host: NAME[:PORT] (from the inventory with --install).
    #[arg(required_unless_present = "install")]
    pub kheops_host: Option<Target>,
    /// The Keycloak host's public DNS name (certificate, issuer).
    #[arg(long, value_name = "NAME", required_unless_present = "install")]
    pub keycloak_domain: Option<String>,
    /// The KHEOPS host's public DNS name (KHEOPS-HOME).
    #[arg(long, value_name = "NAME", required_unless_present = "install")]
    pub kheops_domain: Option<String>,
    /// The realm. Default: demo.
    #[arg(long)]
    pub realm: Option<String>,
    /// The e-mail address given to the ACME CA.
    #[arg(long, value_name = "EMAIL")]
    pub acme_contact: Option<String>,
    /// The ACME CA: letsencrypt, letsencrypt-staging or a directory URL.
    #[arg(long, value_name = "URL")]
    pub acme_directory: Option<String>,
    /// Keycloak stack: a built-in name (`kctl stacks list`) or a stack file. Default:
    /// keycloak-26.
    #[arg(long, value_name = "NAME|FILE")]
    pub keycloak_stack: Option<String>,
    /// KHEOPS stack: a built-in name or a stack file. Default: kheops-0.9.
    #[arg(long, value_name = "NAME|FILE")]
    pub kheops_stack: Option<String>,
    /// A variable of the Keycloak stack (repeatable; wins over the inventory's).
    #[arg(long, value_name = "NAME=VALUE", value_parser = crate::stack::parse_assignment)]
    pub keycloak_var: Vec<(String, String)>,
    /// A variable of the KHEOPS stack (repeatable; wins over the inventory's).
    #[arg(long, value_name = "NAME=VALUE", value_parser = crate::stack::parse_assignment)]
    pub kheops_var: Vec<(String, String)>,
    /// PEM bundle on the KHEOPS host trusted for Keycloak's https (default: its system roots).
    #[arg(long, value_name = "PATH")]
    pub keycloak_ca_file: Option<String>,
    /// Seconds Keycloak may take to become usable from the KHEOPS host.
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    pub wait: u64,
    /// Plan both hosts; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Take the hosts and settings from this install of the inventory (--inventory); options
    /// given on the command line win.
    #[arg(long, value_name = "NAME")]
    pub install: Option<String>,
    /// After a successful run, write these settings to the inventory as install NAME (added,
    /// or replacing that entry; the rest of the file is kept).
    #[arg(long, value_name = "NAME")]
    pub save_install: Option<String>,
}

const FLEET_STATUS_EXAMPLES: &str = "\
Examples:
  kctl fleet status                              # every install of the inventory
  kctl fleet status --install prod --install lab # only these
  kctl fleet status -o json | jq '.hosts[] | select(.ok | not) | .problems'
  kctl --inventory ./inventory.toml fleet status --concurrency 16

Both hosts of every install are asked at once (at most --concurrency hosts at a time): Facts,
ListCertificates, ContainerStatus and ListOperations (the viewer role is enough). One row per
host; an unreachable host is a row with its error, explained below the table.

A host is failing when a call fails, the agent speaks another API, Docker is not running, a
certificate has fewer than 14 days left (or was never issued), a managed container is not
running, unhealthy or still starting, or the newest operation that was not a dry run failed or
was interrupted. Exit code 0 when every host answered and none is failing, else 1.

The inventory (default <config dir>/inventory.toml, --inventory FILE):

  [install.prod]                      # install name: a-z 0-9 -
  keycloak_host = \"kc.example.org\"    # the agents: NAME[:PORT]
  kheops_host = \"kheops.example.org\"
  keycloak_domain = \"kc.example.org\"
  kheops_domain = \"kheops.example.org\"
  realm = \"demo\"                      # optional, default demo
  acme_contact = \"ops@example.org\"
  acme_directory = \"letsencrypt\"      # optional
  keycloak_stack = \"keycloak-26\"      # optional, as kctl provision
  kheops_stack = \"kheops-0.9\"         # optional
  keycloak_ca_file = \"/etc/pki/kc.pem\"  # optional, as kctl provision --keycloak-ca-file
  [install.prod.keycloak_vars]        # optional stack variables
  keycloak_version = \"26.0.7\"
  [install.prod.kheops_vars]

Unknown keys are refused. KCTL_INVENTORY__INSTALL__PROD__REALM=x (levels separated by __)
overrides a field. `kctl provision --install prod` provisions an entry; `kctl provision ...
--save-install prod` writes one.";

/// `kctl fleet ...`: the installs of the inventory.
#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// One row per host of every install: agent, OS, Docker, the certificate with the fewest
    /// days left, healthy containers, the last operation. Exit code 1 when a host fails.
    #[command(after_help = FLEET_STATUS_EXAMPLES)]
    Status {
        /// Only this install (repeatable). Default: every install.
        #[arg(long = "install", value_name = "NAME")]
        installs: Vec<String>,
        /// How many hosts are asked at once.
        #[arg(long, default_value_t = crate::fleet::DEFAULT_CONCURRENCY, value_name = "N",
              value_parser = clap::value_parser!(u16).range(1..))]
        concurrency: u16,
    },
    /// Renew the certificates of every host of the installs now (as `kctl renew HOST` on each),
    /// then one row per host. Exit code 1 when a host failed.
    #[command(after_help = FLEET_RENEW_EXAMPLES)]
    Renew {
        /// Only this install (repeatable). Default: every install.
        #[arg(long = "install", value_name = "NAME")]
        installs: Vec<String>,
        /// Renew every certificate, not only those due.
        #[arg(long)]
        force: bool,
        /// How many hosts renew at once.
        #[arg(long, default_value_t = crate::fleet::DEFAULT_RENEW_CONCURRENCY, value_name = "N",
              value_parser = clap::value_parser!(u16).range(1..))]
        concurrency: u16,
    },
    /// Provision the installs again with changed stack variables (e.g. a new Keycloak version),
    /// one install after the other, stopping at the first that fails; resumable.
    #[command(after_help = FLEET_UPGRADE_EXAMPLES)]
    Upgrade {
        /// Only this install (repeatable). Default: every install.
        #[arg(long = "install", value_name = "NAME")]
        installs: Vec<String>,
        /// A variable of the Keycloak stack for every install (repeatable; wins over the
        /// inventory's).
        #[arg(long, value_name = "NAME=VALUE", value_parser = crate::stack::parse_assignment)]
        keycloak_var: Vec<(String, String)>,
        /// A variable of the KHEOPS stack for every install (repeatable).
        #[arg(long, value_name = "NAME=VALUE", value_parser = crate::stack::parse_assignment)]
        kheops_var: Vec<(String, String)>,
        /// How many installs are provisioned at once.
        #[arg(long, default_value_t = 1, value_name = "N",
              value_parser = clap::value_parser!(u16).range(1..))]
        max_parallel: u16,
        /// Seconds Keycloak may take to become usable from the KHEOPS host (per install).
        #[arg(long, default_value_t = 600, value_name = "SECONDS")]
        wait: u64,
        /// Plan every install (as `kctl provision --dry-run`); change and record nothing.
        #[arg(long, conflicts_with = "resume")]
        dry_run: bool,
        /// Go on with the newest unfinished rollout with the same variables: its installs
        /// that did not succeed run again, the others are skipped.
        #[arg(long)]
        resume: bool,
    },
}

const FLEET_RENEW_EXAMPLES: &str = "\
Examples:
  kctl fleet renew                               # what is due, on every host of the inventory
  kctl fleet renew --install prod --force        # every certificate of install prod, now
  kctl fleet renew --force --concurrency 1 -o json | jq -c 'select(.type == \"summary\")'

Each host (once, even when it is in several installs) gets RenewCertificate for all its
certificates (the operator role is enough), at most --concurrency hosts at a time. Their events
print as they come, prefixed by the host (a `host` field in JSON), then one row per host:
result, certificates renewed, unchanged and failed, the operation (`kctl watch HOST ID`). A host
that cannot be reached or whose renewal fails is a failed row; the others go on. A host with
no certificates is `no certificates`, not a failure. Exit code 0 when no host failed, else 1.";

const FLEET_UPGRADE_EXAMPLES: &str = "\
Examples:
  kctl fleet upgrade --keycloak-var keycloak_version=26.5.6 --dry-run
  kctl fleet upgrade --keycloak-var keycloak_version=26.5.6
  kctl fleet upgrade --keycloak-var keycloak_version=26.5.6 --resume
  kctl fleet upgrade --install lab --install prod --kheops-var kheops_version=v1.1.2 --max-parallel 2

Each install, in inventory order, is provisioned exactly as `kctl provision --install NAME
--save-install NAME` with the variables given (they win over the entry's). Its health gate is
the provision's own end: every verification check from the KHEOPS host passes. The first
install that fails stops the rollout: no further install starts (with --max-parallel, those
already running finish), and kctl says which failed and how to resume. An install that succeeds
is saved to the inventory with the new variables, so the inventory says what runs.

Every variable is checked against every install's stacks before anything is sent. The rollout
is recorded in <config dir>/rollouts/ID.json (installs: pending, running, succeeded, failed;
the variables); --resume takes the newest unfinished record with the same variables (and, with
--install, the same installs) and skips its succeeded installs. --dry-run plans every install,
does not stop at a failed plan, and records nothing. Exit code 0 when every install succeeded,
1 when one failed, 2 when a variable, an install or a record is wrong.";

#[derive(Debug, Subcommand)]
pub enum KeycloakCommand {
    /// Export a realm as JSON that `POST /admin/realms` (or a fresh import) takes back.
    #[command(after_help = "\
Examples:
  kctl keycloak export kc.example --realm demo > demo-realm.json
  kctl keycloak export kc.example --realm demo --include-secrets > demo-backup.json
  kctl keycloak export kc.example --url https://127.0.0.1:8443/auth --keycloak-ca-file /srv/kctl/keycloak/ca.pem

The agent on HOST reads the realm over Keycloak's Admin REST API with the credential file on
that host. Client secrets are left out unless --include-secrets is given; the service-account
users and their roles are included so that an import works as is.")]
    Export {
        /// The agent on the Keycloak host: NAME[:PORT].
        host: Target,
        /// The realm to export.
        #[arg(long, default_value = "demo")]
        realm: String,
        /// Keycloak's base URL as the agent reaches it (with /auth where used).
        #[arg(long, default_value = "https://127.0.0.1:8443/auth")]
        url: String,
        /// The admin password (or client secret) file on the host.
        #[arg(
            long,
            default_value = "/srv/kctl/keycloak/admin-password",
            value_name = "PATH"
        )]
        admin_credential_file: String,
        /// The admin user (password grant through admin-cli). Default: admin.
        #[arg(long, value_name = "NAME")]
        admin_user: Option<String>,
        /// The realm of the admin account. Default: master.
        #[arg(long, value_name = "REALM")]
        admin_realm: Option<String>,
        /// Log in as this service client (client credentials) instead of a user.
        #[arg(long, value_name = "CLIENT_ID")]
        admin_client_id: Option<String>,
        /// PEM CA bundle on the host trusted for Keycloak's https (default: the host's system
        /// roots). Not `--ca-file`, which is the fleet CA kctl trusts for agents.
        #[arg(long, value_name = "PATH")]
        keycloak_ca_file: Option<String>,
        /// Include client secrets (a full backup; keep the file private).
        #[arg(long)]
        include_secrets: bool,
    },
    /// Check from HOST that Keycloak is usable by the KHEOPS there: run on the KHEOPS host's
    /// agent, it reaches Keycloak as KHEOPS will. Exit code 1 when a check fails.
    #[command(after_help = "\
Examples:
  kctl keycloak check kheops.example --url https://keycloak.example/auth --kheops-origin https://kheops.example --secret-file /srv/kctl/kheops/secrets/kheops_auth_client_secret
  kctl keycloak check kheops.example --url https://keycloak.example/auth --kheops-origin https://kheops.example --secret-file /srv/kctl/kheops/auth-secret -o json
  kctl keycloak check kheops.example --url https://keycloak.example/auth --kheops-origin https://kheops.example --only discovery,jwks

Checks: discovery (reachable, issuer as KHEOPS expects), jwks (an RS256 key), service-account
(client-credentials token: its iss and azp, then GET /admin/realms/REALM/users?max=1 as KHEOPS
does), password-grant-refused, redirect-uri, implicit-flow, iframe-origin (the KHEOPS origin
204, a foreign one 403). Each failure prints the likely cause and the fix. The client secret is
read from a file on HOST (kctl reveal on the Keycloak host gives its value); it is sent only to
Keycloak's token endpoint. Needs the admin role; audited.")]
    Check {
        /// The agent to check from (the KHEOPS host): NAME[:PORT].
        host: Target,
        /// Keycloak's base URL as KHEOPS reaches it (with /auth where used).
        #[arg(long, value_name = "URL")]
        url: String,
        /// The realm.
        #[arg(long, default_value = "demo")]
        realm: String,
        /// KHEOPS' origin: https://KHEOPS-HOME.
        #[arg(long, value_name = "URL")]
        kheops_origin: String,
        /// The kheopsAuthorization client secret: a one-word file on HOST under its managed
        /// roots. Needed by the service-account check.
        #[arg(long, value_name = "PATH")]
        secret_file: Option<String>,
        /// Run only these checks (comma-separated names, e.g. discovery,jwks).
        #[arg(long, value_delimiter = ',', value_name = "CHECKS")]
        only: Vec<String>,
        /// The issuer KHEOPS expects (KHEOPS_OIDC_PROVIDER). Default: URL/realms/REALM.
        #[arg(long, value_name = "URL")]
        expected_issuer: Option<String>,
        /// The public login client.
        #[arg(long, default_value = "loginConnect", value_name = "CLIENT_ID")]
        login_client: String,
        /// The confidential service-account client.
        #[arg(long, default_value = "kheopsAuthorization", value_name = "CLIENT_ID")]
        auth_client: String,
        /// PEM CA bundle on HOST trusted for Keycloak's https (default: HOST's system roots).
        #[arg(long, value_name = "PATH")]
        keycloak_ca_file: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create the fleet CA and your own admin client identity.
    #[command(after_help = "\
Examples:
  kctl ca init
  kctl ca init --name \"acme prod fleet\" --client-name alice@laptop

Writes <config dir>/ca/ca.crt and ca.key (keep ca.key safe: it can mint admin certificates),
and <config dir>/identity/ (client.crt, client.key, ca.crt), which kctl presents to agents.
Refuses to run when a CA already exists.")]
    Init {
        /// The CA's name (its certificate's common name).
        #[arg(long, default_value = "kctl fleet CA")]
        name: String,
        /// Common name of your client certificate. Default: $USER@hostname.
        #[arg(long, value_name = "NAME")]
        client_name: Option<String>,
        /// Lifetime of your client certificate, in days.
        #[arg(long, default_value_t = crate::ca::CLIENT_DAYS, value_name = "N")]
        client_days: i64,
    },
    /// Issue a certificate signed by the fleet CA.
    #[command(subcommand)]
    Issue(IssueCommand),
    /// Renew an enrolled agent's certificate over its mTLS connection, without downtime.
    #[command(after_help = "\
Examples:
  kctl ca rotate-agent vm1.example
  kctl ca rotate-agent vm1.example --dns vm1.new-domain.example --days 365

The agent makes a new key (it never leaves the host) and sends a CSR; kctl signs it with the
fleet CA, keeping the names of the current certificate plus any --dns/--ip; the agent checks
and installs it and serves it to new connections. Open connections are not interrupted.")]
    RotateAgent {
        /// The agent: NAME[:PORT].
        host: Target,
        /// Another DNS name for the new certificate (repeatable).
        #[arg(long = "dns", value_name = "NAME")]
        dns: Vec<String>,
        /// Another IP address for the new certificate (repeatable).
        #[arg(long = "ip", value_name = "IP")]
        ip: Vec<IpAddr>,
        /// Lifetime in days.
        #[arg(long, default_value_t = crate::ca::AGENT_DAYS, value_name = "N")]
        days: i64,
    },
}

#[derive(Debug, Subcommand)]
pub enum IssueCommand {
    /// A server certificate for the agent on HOST.
    #[command(after_help = "\
Examples:
  kctl ca issue agent vm1.example
  kctl ca issue agent vm1.example --dns vm1 --ip 10.0.0.2 --days 180
  kctl ca issue agent 10.0.0.2 --out /tmp/vm1-tls

The certificate names HOST plus every --dns and --ip: kctl only talks to the agent under one
of those names. Copy the three files to /etc/kagent/tls/ on the host (agent.key mode 0600).")]
    Agent {
        /// The host's name (or IP address) as you will type it in `kctl facts HOST`.
        host: String,
        /// Another DNS name for the host (repeatable).
        #[arg(long = "dns", value_name = "NAME")]
        dns: Vec<String>,
        /// An IP address of the host (repeatable).
        #[arg(long = "ip", value_name = "IP")]
        ip: Vec<IpAddr>,
        /// Lifetime in days.
        #[arg(long, default_value_t = crate::ca::AGENT_DAYS, value_name = "N")]
        days: i64,
        /// Output directory. Default: <config dir>/agents/HOST/.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// A client certificate for an operator or a tool.
    #[command(after_help = "\
Examples:
  kctl ca issue client bob@laptop --role operator
  kctl ca issue client ci-dashboard --role viewer --days 30 --out ./ci-identity
  kctl --identity ./ci-identity ops vm1.example

The role travels in the certificate (admin, operator, viewer); the agent decides what each
role may call.")]
    Client {
        /// The certificate's common name (shown as the caller in audit logs and `kctl ops`).
        name: String,
        #[arg(long, value_enum, default_value_t = Role::Admin)]
        role: Role,
        /// Lifetime in days.
        #[arg(long, default_value_t = crate::ca::CLIENT_DAYS, value_name = "N")]
        days: i64,
        /// Output directory. Default: <config dir>/clients/NAME/.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

/// The role a client certificate carries (its subject's Organization).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Role {
    Admin,
    Operator,
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// Every `kctl ...` line of every `Examples:` section parses (and reads back: clap checks an
    /// argument's type only when it is taken out, e.g. a subcommand flag shadowing a global one).
    #[test]
    fn every_documented_example_parses() {
        fn walk(cmd: &clap::Command, out: &mut Vec<String>) {
            if let Some(help) = cmd.get_after_help() {
                // A line ending in `\` goes on on the next one, as in a shell.
                let text = help.to_string().replace("\\\n", " ");
                for line in text.lines() {
                    let line = line.trim_start();
                    if let Some(rest) = line.strip_prefix("kctl ") {
                        // Up to a comment, a pipe or a redirection.
                        let cut = rest
                            .find(" #")
                            .into_iter()
                            .chain(rest.find(" |"))
                            .chain(rest.find(" >"))
                            .min()
                            .unwrap_or(rest.len());
                        out.push(rest[..cut].trim().to_string());
                    }
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, out);
            }
        }
        let mut examples = Vec::new();
        walk(&Cli::command(), &mut examples);
        assert!(examples.len() > 20, "found only {examples:?}");
        for ex in examples {
            let mut args = vec!["kctl".to_string()];
            let mut quoted: Option<String> = None;
            for word in ex.split_whitespace() {
                match quoted.as_mut() {
                    Some(q) => {
                        q.push(' ');
                        q.push_str(word.trim_end_matches('"'));
                        if word.ends_with('"') {
                            args.extend(quoted.take());
                        }
                    }
                    None if word.starts_with('"') && !(word.len() > 1 && word.ends_with('"')) => {
                        quoted = Some(word.trim_start_matches('"').to_string());
                    }
                    None => args.push(word.trim_matches('"').to_string()),
                }
            }
            if let Err(e) = Cli::try_parse_from(&args) {
                panic!("example `kctl {ex}` does not parse: {e}");
            }
        }
    }

    #[test]
    fn roles_match_the_ca() {
        for role in Role::value_variants() {
            assert!(crate::ca::ROLES.contains(&role.as_str()));
        }
    }

    #[test]
    fn parses_apply_with_globals_anywhere() -> anyhow::Result<()> {
        let cli = Cli::try_parse_from([
            "kctl",
            "apply",
            "[::1]:9000",
            "-f",
            "s.toml",
            "--dry-run",
            "-o",
            "json",
            "--config-dir",
            "/c",
        ])?;
        assert_eq!(cli.global.output, Format::Json);
        assert_eq!(cli.global.config_dir, Some(PathBuf::from("/c")));
        let Command::Apply {
            host,
            file,
            dry_run,
        } = cli.command
        else {
            anyhow::bail!("not apply")
        };
        assert_eq!(host.to_string(), "[::1]:9000");
        assert_eq!(file, PathBuf::from("s.toml"));
        assert!(dry_run);
        Ok(())
    }

    #[test]
    fn bad_host_is_a_usage_error() {
        let err = Cli::try_parse_from(["kctl", "facts", "vm1:http"]).err();
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains("is not a TCP port"), "{text}");
    }

    #[test]
    fn issue_defaults() -> anyhow::Result<()> {
        let cli = Cli::try_parse_from(["kctl", "ca", "issue", "client", "bob"])?;
        let Command::Ca(CaCommand::Issue(IssueCommand::Client {
            role, days, out, ..
        })) = cli.command
        else {
            anyhow::bail!("not issue client")
        };
        assert_eq!((role, days, out), (Role::Admin, 90, None));
        let cli = Cli::try_parse_from([
            "kctl", "ca", "issue", "agent", "vm1", "--dns", "a", "--dns", "b", "--ip", "::1",
        ])?;
        let Command::Ca(CaCommand::Issue(IssueCommand::Agent { dns, ip, days, .. })) = cli.command
        else {
            anyhow::bail!("not issue agent")
        };
        assert_eq!(dns, ["a", "b"]);
        assert_eq!(ip, ["::1".parse::<IpAddr>()?]);
        assert_eq!(days, 365);
        Ok(())
    }
}

const STACKS_RENDER_EXAMPLES: &str = "\
Examples:
  kctl stacks render keycloak-26 --var keycloak_domain=kc.example.org \\
      --var kheops_domain=kheops.example.org --var acme_contact=ops@example.org > kc.toml
  kctl apply kc.example.org -f kc.toml --dry-run
  kctl stacks render ./my-stack.toml --var host=web.example.org -o json

Values of secret variables print as <redacted> unless --show-secrets is given.";

/// `kctl stacks ...`: the built-in stack definitions (`ctl/stacks/`, in the binary).
#[derive(Debug, Subcommand)]
pub enum StacksCommand {
    /// List the built-in stacks: name, version, role, description.
    List,
    /// Show a stack's header and variables (kind, default, description).
    #[command(
        after_help = "Examples:\n  kctl stacks show kheops-0.9\n  kctl stacks show ./my-stack.toml -o json"
    )]
    Show {
        /// A built-in stack's name, or a stack file (a path ending in .toml).
        #[arg(value_name = "NAME|FILE")]
        stack: String,
    },
    /// Render a stack with its variables into a host spec (TOML; JSON with -o json).
    #[command(after_help = STACKS_RENDER_EXAMPLES)]
    Render {
        /// A built-in stack's name, or a stack file (a path ending in .toml).
        #[arg(value_name = "NAME|FILE")]
        stack: String,
        /// A variable of the stack (repeatable; see `kctl stacks show NAME`).
        #[arg(long = "var", value_name = "NAME=VALUE", value_parser = crate::stack::parse_assignment)]
        vars: Vec<(String, String)>,
        /// Print the values of secret variables instead of <redacted>.
        #[arg(long)]
        show_secrets: bool,
    },
}
