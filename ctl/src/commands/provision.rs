//! `kctl provision KEYCLOAK_HOST KHEOPS_HOST`: one install, in the order the seed needs and
//! verified the way KHEOPS will use it:
//!
//! 1. preflight: facts of both hosts in parallel (agent API, clock skew, memory, Docker);
//! 2. the Keycloak host's spec (prerequisites, certificate, secrets, Keycloak, the realm);
//! 3. wait until Keycloak is usable *from the KHEOPS host* (its agent runs the discovery and
//!    JWKS checks, trusting what KHEOPS will trust), with a deadline;
//! 4. the `kheopsAuthorization` secret read on the Keycloak host (`RevealSecret`, audited);
//! 5. the KHEOPS host's spec, rendered with that secret;
//! 6. every verification check from the KHEOPS host.
//!
//! It stops at the first failed step, says which and why, and a re-run converges (every step
//! is an idempotent apply or a read). `--dry-run` plans both hosts and changes nothing.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use kagent_proto::v1;
use serde_json::json;

use super::operation::HostSink;
use super::provision_inventory::{self, ProvisionSettings};
use super::{Context, connect};
use crate::agent_client::AgentClient;
use crate::cli::ProvisionArgs;
use crate::error::{EXIT_FAILED, Error, Result};
use crate::follow::{self, Position, RetryPolicy};
use crate::host::Target;
use crate::output::{self, Format};
use crate::stack::{Role, Stack};

/// The stack variable that carries the client secret into the KHEOPS stack.
const SECRET_VAR: &str = "keycloak_client_secret";

/// `kctl provision`: the stacks rendered from the command line, then [`provision`].
pub async fn run(ctx: &Context, args: ProvisionArgs) -> Result<u8> {
    // --install / --save-install: the settings over the inventory entry (provision_inventory.rs).
    let (args, save) = provision_inventory::resolve(ctx, args)?;
    let install = install_from_args(&args).map_err(|e| {
        Error::usage(e).hint("fix the option or the stack; nothing was sent to the agents")
    })?;
    let code = provision(ctx, install, args.dry_run).await?;
    provision_inventory::save_after(ctx, save, &args, code)
}

/// A built-in stack by name, or a stack file.
fn load_stack(what: &str, role: Role) -> anyhow::Result<Stack> {
    let stack = if what.ends_with(".toml") || what.contains('/') {
        let text = std::fs::read_to_string(what)
            .map_err(|e| anyhow!("cannot read the stack file {what}: {e}"))?;
        Stack::parse(what, &text)?
    } else {
        crate::stack::find(what)?
    };
    if stack.role != role {
        bail!(
            "stack {} is a {} stack, expected a {} stack here",
            stack.name,
            stack.role.name(),
            role.name()
        );
    }
    Ok(stack)
}

/// The settings common to both stacks, given to each stack that declares them, then the
/// stack's own `--*-var`s (which win).
fn variables(
    stack: &Stack,
    common: &[(&str, Option<&str>)],
    own: &[(String, String)],
) -> BTreeMap<String, String> {
    let declared: Vec<&str> = stack.variables().iter().map(|v| v.name.as_str()).collect();
    let mut vars: BTreeMap<String, String> = common
        .iter()
        .filter(|(k, _)| declared.contains(k))
        .filter_map(|(k, v)| v.map(|v| (k.to_string(), v.to_string())))
        .collect();
    vars.extend(own.iter().cloned());
    vars
}

pub(super) fn install_from_args(a: &ProvisionSettings) -> anyhow::Result<Install> {
    let kc_stack = load_stack(&a.keycloak_stack, Role::Keycloak)?;
    let kh_stack = load_stack(&a.kheops_stack, Role::Kheops)?;
    // KHEOPS 0.9 calls Keycloak's Admin API with the kheopsAuthorization service account and
    // takes its secret; 1.x has no service account (research/kheops.md §2.4).
    let takes_secret = kh_stack.variables().iter().any(|v| v.name == SECRET_VAR);
    let common = [
        ("keycloak_domain", Some(a.keycloak_domain.as_str())),
        ("kheops_domain", Some(a.kheops_domain.as_str())),
        ("realm", Some(a.realm.as_str())),
        ("acme_contact", a.acme_contact.as_deref()),
        ("acme_directory", a.acme_directory.as_deref()),
    ];
    let keycloak_spec = kc_stack.render(&variables(&kc_stack, &common, &a.keycloak_var))?;
    let realm = keycloak_spec
        .resources
        .iter()
        .find_map(|r| match &r.kind {
            Some(v1::resource::Kind::KeycloakRealm(k)) => Some(k.clone()),
            _ => None,
        })
        .ok_or_else(|| {
            anyhow!(
                "stack {} has no keycloak_realm resource: nothing says where the client secret is",
                kc_stack.name
            )
        })?;
    let kh_vars = variables(&kh_stack, &common, &a.kheops_var);
    // Render once with a stand-in secret: the KHEOPS stack's own errors show before anything
    // is sent, and the file that carries the secret is found.
    let probe = "kctl-provision-secret-probe";
    let mut with_probe = kh_vars.clone();
    if takes_secret {
        with_probe.insert(SECRET_VAR.into(), probe.into());
    }
    let probe_spec = kh_stack.render(&with_probe)?;
    let secret_file = if takes_secret {
        secret_file_of(&probe_spec, probe).ok_or_else(|| {
            anyhow!(
                "stack {}: no `file` resource holds `${{{SECRET_VAR}}}` alone: the checks need \
                 the client secret as a file on the KHEOPS host",
                kh_stack.name
            )
        })?
    } else {
        String::new()
    };
    // Without the service account there is nothing for its check to use.
    let only: Vec<String> = if takes_secret {
        Vec::new()
    } else {
        [
            "discovery",
            "jwks",
            "password-grant-refused",
            "redirect-uri",
            "implicit-flow",
            "iframe-origin",
        ]
        .map(String::from)
        .to_vec()
    };
    let base_url = format!("https://{}/auth", a.keycloak_domain);
    let checks = v1::CheckKeycloakRequest {
        base_url,
        realm: realm.realm.clone(),
        kheops_origin: realm.kheops_origin.clone(),
        auth_secret_file: secret_file,
        ca_file: a.keycloak_ca_file.clone().unwrap_or_default(),
        only,
        ..Default::default()
    };
    Ok(Install {
        keycloak_host: a.keycloak_host.clone(),
        kheops_host: a.kheops_host.clone(),
        keycloak_spec,
        render_kheops: Box::new(move |secret| {
            let mut vars = kh_vars.clone();
            if let Some(secret) = secret {
                vars.insert(SECRET_VAR.into(), secret.to_string());
            }
            kh_stack.render(&vars)
        }),
        client_secret_file: takes_secret.then(|| realm.client_secret_file.clone()),
        checks,
        ready_timeout: Duration::from_secs(a.wait),
    })
}

/// The path of the `file` resource whose content is `value` (with or without a newline).
fn secret_file_of(spec: &v1::HostSpec, value: &str) -> Option<String> {
    spec.resources.iter().find_map(|r| match &r.kind {
        Some(v1::resource::Kind::File(f))
            if f.content.strip_suffix(b"\n").unwrap_or(&f.content) == value.as_bytes() =>
        {
            Some(f.path.clone())
        }
        _ => None,
    })
}

/// Larger skew breaks token lifetimes (Keycloak's `iat`/`exp`) and certificate validity.
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(30);
/// Keycloak needs about 1 GiB of its own; less is said, not refused.
const KEYCLOAK_MEMORY_HINT: u64 = 1 << 30;
/// How often the KHEOPS host retries the reachability checks while Keycloak starts.
const READY_POLL: Duration = Duration::from_secs(2);

/// Renders the KHEOPS host's spec, with the `kheopsAuthorization` client secret when its stack
/// takes one.
pub type RenderKheops = Box<dyn Fn(Option<&str>) -> anyhow::Result<v1::HostSpec> + Send + Sync>;

/// What to provision: both hosts' specs (the KHEOPS one rendered once the client secret is
/// known) and how the KHEOPS host reaches Keycloak.
pub struct Install {
    pub keycloak_host: Target,
    pub kheops_host: Target,
    pub keycloak_spec: v1::HostSpec,
    pub render_kheops: RenderKheops,
    /// The client secret file on the Keycloak host (a `secret` resource of its spec), when the
    /// KHEOPS stack needs the secret (0.9's service account; 1.x has none).
    pub client_secret_file: Option<String>,
    /// The checks as the KHEOPS host runs them (URL, realm, origin, CA, its secret file).
    pub checks: v1::CheckKeycloakRequest,
    /// How long Keycloak may take to become usable from the KHEOPS host.
    pub ready_timeout: Duration,
}

pub async fn provision(ctx: &Context, install: Install, dry_run: bool) -> Result<u8> {
    let mut say = Steps::new(ctx.format, if dry_run { 4 } else { 6 });
    let kc_name = install.keycloak_host.to_string();
    let kh_name = install.kheops_host.to_string();

    say.step("preflight: facts of both hosts");
    let (kc, kh) = tokio::join!(
        connect(ctx, &install.keycloak_host),
        connect(ctx, &install.kheops_host)
    );
    let (mut kc, mut kh) = (kc?, kh?);
    let (kc_facts, kh_facts) = tokio::join!(kc.facts(), kh.facts());
    let kc_facts = kc_facts.map_err(|s| kc.explain("Facts", &s))?;
    let kh_facts = kh_facts.map_err(|s| kh.explain("Facts", &s))?;
    let now = time::OffsetDateTime::now_utc();
    let mut problems = preflight(&kc_name, &kc_facts, now, true);
    problems.extend(preflight(&kh_name, &kh_facts, now, false));
    for p in &problems {
        say.note(&p.text);
    }
    if let Some(p) = problems.iter().find(|p| p.fatal) {
        return Err(Error::usage(anyhow!("preflight failed on {}", p.host)).hint(p.text.clone()));
    }

    say.step(&format!(
        "{}Keycloak host {kc_name}",
        if dry_run { "plan " } else { "" }
    ));
    if !apply(
        ctx,
        &mut kc,
        &kc_name,
        install.keycloak_spec.clone(),
        dry_run,
    )
    .await?
    {
        return Ok(say.stop(&format!(
            "the Keycloak host's operation failed; fix what it says and run provision again \
             (it converges): `kctl ops {kc_name}` lists it"
        )));
    }

    if dry_run {
        say.step(&format!("plan KHEOPS host {kh_name}"));
        // The secret exists only once the Keycloak host was provisioned: plan with a
        // placeholder otherwise (the KHEOPS secret file then shows as changing).
        let secret = match &install.client_secret_file {
            Some(path) => Some(match kc.reveal_secret(path).await {
                Ok(v) => v,
                Err(_) => {
                    say.note("the client secret does not exist yet: planned with a placeholder");
                    "placeholder-until-keycloak-is-provisioned".into()
                }
            }),
            None => None,
        };
        let spec = (install.render_kheops)(secret.as_deref()).map_err(Error::usage)?;
        let ok = apply(ctx, &mut kh, &kh_name, spec, true).await?;
        say.step("done: nothing was changed (dry run)");
        return Ok(if ok { 0 } else { EXIT_FAILED });
    }

    say.step(&format!(
        "wait until Keycloak is usable from {kh_name} (at most {}s)",
        install.ready_timeout.as_secs()
    ));
    let mut reach = install.checks.clone();
    reach.only = vec!["discovery".into(), "jwks".into()];
    reach.auth_secret_file.clear();
    let started = Instant::now();
    loop {
        let checks = kh
            .check_keycloak(reach.clone())
            .await
            .map_err(|s| kh.explain("CheckKeycloak", &s))?;
        if checks.iter().all(|c| c.pass) {
            say.note(&format!(
                "reachable and trusted from {kh_name} after {:.0}s",
                started.elapsed().as_secs_f64()
            ));
            break;
        }
        if started.elapsed() >= install.ready_timeout {
            say.checks(&checks);
            return Ok(say.stop(&format!(
                "Keycloak is not usable from {kh_name} after {}s: see the hints above",
                install.ready_timeout.as_secs()
            )));
        }
        tokio::time::sleep(READY_POLL).await;
    }

    say.step(&format!("client secret from {kc_name}"));
    let secret = match &install.client_secret_file {
        Some(path) => Some(
            kc.reveal_secret(path)
                .await
                .map_err(|s| kc.explain("RevealSecret", &s))?,
        ),
        None => {
            say.note("the KHEOPS stack takes no client secret (no service account): skipped");
            None
        }
    };

    say.step(&format!("KHEOPS host {kh_name}"));
    let spec = (install.render_kheops)(secret.as_deref()).map_err(Error::usage)?;
    drop(secret);
    if !apply(ctx, &mut kh, &kh_name, spec, false).await? {
        return Ok(say.stop(&format!(
            "the KHEOPS host's operation failed; fix what it says and run provision again: \
             `kctl ops {kh_name}` lists it"
        )));
    }

    say.step(&format!("verify from {kh_name}"));
    let checks = kh
        .check_keycloak(install.checks.clone())
        .await
        .map_err(|s| kh.explain("CheckKeycloak", &s))?;
    say.checks(&checks);
    if checks.iter().all(|c| c.pass) {
        say.done(&format!(
            "provisioned: Keycloak on {kc_name}, KHEOPS on {kh_name}"
        ));
        Ok(0)
    } else {
        Ok(say.stop("the install is up but a verification check failed: see the hints above"))
    }
}

/// A preflight finding about one host.
#[derive(Debug, PartialEq, Eq)]
pub struct Finding {
    pub host: String,
    pub fatal: bool,
    pub text: String,
}

/// What the facts say against provisioning (pure, for tests).
pub fn preflight(
    host: &str,
    facts: &v1::FactsReply,
    now: time::OffsetDateTime,
    runs_keycloak: bool,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut find = |fatal: bool, text: String| {
        out.push(Finding {
            host: host.to_string(),
            fatal,
            text,
        })
    };
    if facts.api_version != "kagent.v1" {
        find(
            true,
            format!(
                "{host}: agent API {:?}, this kctl speaks kagent.v1: upgrade the agent or kctl",
                facts.api_version
            ),
        );
    }
    match facts.clock.as_ref() {
        Some(c) => {
            let skew = (c.seconds - now.unix_timestamp()).unsigned_abs();
            if skew > MAX_CLOCK_SKEW.as_secs() {
                find(
                    true,
                    format!(
                        "{host}: clock differs from this machine's by {skew}s (at most {}s): \
                         tokens and certificates would be refused; enable NTP (chronyd or \
                         systemd-timesyncd) on the host",
                        MAX_CLOCK_SKEW.as_secs()
                    ),
                );
            }
        }
        None => find(false, format!("{host}: the agent did not report its clock")),
    }
    if runs_keycloak && facts.memory_available_bytes < KEYCLOAK_MEMORY_HINT {
        find(
            false,
            format!(
                "{host}: {} MiB of memory available; Keycloak wants about 1 GiB",
                facts.memory_available_bytes >> 20
            ),
        );
    }
    let os = facts
        .os
        .as_ref()
        .map(|o| o.pretty_name.clone())
        .unwrap_or_default();
    let docker = match facts.docker.as_ref() {
        Some(d) if d.running => format!("Docker {}", d.version),
        Some(d) if d.installed => "Docker installed, not running (the spec starts it)".into(),
        _ => "no Docker yet (the spec installs it)".into(),
    };
    find(
        false,
        format!("{host}: {os}, {docker}, kagent {}", facts.agent_version),
    );
    out
}

/// Applies (or plans) one host's spec, printing its events prefixed with the host; whether
/// the operation succeeded.
async fn apply(
    ctx: &Context,
    client: &mut AgentClient,
    host: &str,
    spec: v1::HostSpec,
    dry_run: bool,
) -> Result<bool> {
    let stream = client
        .apply(spec, dry_run)
        .await
        .map_err(|s| client.explain("Apply", &s))?;
    let mut sink = HostSink::new(host, ctx);
    let mut position = Position::default();
    let finished = follow::follow(
        client,
        stream,
        &mut position,
        &mut sink,
        &RetryPolicy::default(),
    )
    .await?;
    Ok(finished.state == v1::OperationState::Succeeded as i32)
}

/// The step lines: `[2/6] Keycloak host kc.example` for people, `{"type":"step",...}` in JSON.
struct Steps {
    format: Format,
    total: u32,
    current: u32,
}

impl Steps {
    fn new(format: Format, total: u32) -> Steps {
        Steps {
            format,
            total,
            current: 0,
        }
    }

    fn emit(&self, v: serde_json::Value, human: String) {
        let mut out = std::io::stdout().lock();
        let _ = match self.format {
            Format::Human => writeln!(out, "{human}"),
            Format::Json => writeln!(out, "{v}"),
        };
        let _ = out.flush();
    }

    fn step(&mut self, what: &str) {
        self.current += 1;
        self.emit(
            json!({"type": "step", "step": self.current, "of": self.total, "what": what}),
            format!("[{}/{}] {what}", self.current, self.total),
        );
    }

    fn note(&self, text: &str) {
        self.emit(
            json!({"type": "note", "step": self.current, "text": text}),
            format!("      {text}"),
        );
    }

    fn checks(&self, checks: &[v1::KeycloakCheck]) {
        match self.format {
            Format::Human => {
                let _ = std::io::stdout()
                    .lock()
                    .write_all(output::keycloak_checks_human(checks).as_bytes());
            }
            Format::Json => self.emit(
                json!({"type": "checks", "step": self.current, "result": output::keycloak_checks_json(checks)}),
                String::new(),
            ),
        }
    }

    fn done(&self, text: &str) {
        self.emit(
            json!({"type": "done", "ok": true, "text": text}),
            text.to_string(),
        );
    }

    /// Reports the failed step; the exit code.
    fn stop(&self, text: &str) -> u8 {
        self.emit(
            json!({"type": "done", "ok": false, "step": self.current, "text": text}),
            format!("provision stopped at step {}: {text}", self.current),
        );
        EXIT_FAILED
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> ProvisionSettings {
        let base = [
            "kctl",
            "provision",
            "kc.example.org",
            "kh.example.org",
            "--keycloak-domain",
            "kc.example.org",
            "--kheops-domain",
            "kh.example.org",
            "--acme-contact",
            "ops@example.org",
        ];
        let argv: Vec<&str> = base.iter().chain(extra).copied().collect();
        match crate::cli::Cli::try_parse_from(argv).map(|c| c.command) {
            Ok(crate::cli::Command::Provision(a)) => provision_inventory::settings(&a, None)
                .unwrap_or_else(|e| panic!("settings: {e:#}")),
            other => panic!("not a provision command line: {other:?}"),
        }
    }

    #[test]
    fn the_seed_layout_hands_the_client_secret_over_and_checks_the_service_account()
    -> anyhow::Result<()> {
        let i = install_from_args(&args(&[]))?;
        assert_eq!(
            i.client_secret_file.as_deref(),
            Some("/srv/kctl/keycloak/kheops-auth-secret")
        );
        assert_eq!(i.checks.base_url, "https://kc.example.org/auth");
        assert_eq!(i.checks.kheops_origin, "https://kh.example.org");
        assert!(i.checks.only.is_empty(), "all checks");
        assert!(
            i.checks
                .auth_secret_file
                .ends_with("kheops_keycloak_clientsecret"),
            "{}",
            i.checks.auth_secret_file
        );
        // The KHEOPS spec carries exactly the value given.
        let spec = (i.render_kheops)(Some("s3cret-value-0123456789"))?;
        assert_eq!(
            secret_file_of(&spec, "s3cret-value-0123456789").as_deref(),
            Some(i.checks.auth_secret_file.as_str())
        );
        Ok(())
    }

    #[test]
    fn kheops_1_has_no_service_account_so_no_secret_and_no_service_account_check()
    -> anyhow::Result<()> {
        let i = install_from_args(&args(&[
            "--kheops-stack",
            "kheops-1.x",
            "--kheops-var",
            "kheops_version=v1.1.2",
        ]))?;
        assert_eq!(i.client_secret_file, None);
        assert!(!i.checks.only.is_empty());
        assert!(!i.checks.only.iter().any(|c| c == "service-account"));
        (i.render_kheops)(None)?;
        Ok(())
    }

    #[test]
    fn a_stack_of_the_wrong_role_or_a_bad_variable_is_named() {
        let wrong = install_from_args(&args(&["--kheops-stack", "keycloak-26"]))
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(wrong.contains("is a keycloak stack"), "{wrong}");
        let bad = install_from_args(&args(&["--keycloak-var", "no_such_var=1"]))
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(bad.contains("no_such_var"), "{bad}");
    }

    fn facts(clock: i64, mem: u64) -> v1::FactsReply {
        v1::FactsReply {
            api_version: "kagent.v1".into(),
            agent_version: "0.1.0".into(),
            clock: Some(prost_types::Timestamp {
                seconds: clock,
                nanos: 0,
            }),
            memory_available_bytes: mem,
            os: Some(v1::OsFacts {
                pretty_name: "Rocky Linux 9.4".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn preflight_refuses_skewed_clocks_and_other_apis_and_notes_the_rest() {
        let now = time::OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(1_800_000_000);
        let t = now.unix_timestamp();
        let ok = preflight("kc", &facts(t + 5, 4 << 30), now, true);
        assert_eq!(ok.len(), 1, "{ok:?}");
        assert!(!ok[0].fatal);
        assert!(ok[0].text.contains("Rocky Linux 9.4"), "{ok:?}");
        assert!(ok[0].text.contains("no Docker yet"), "{ok:?}");

        let skewed = preflight("kc", &facts(t - 120, 4 << 30), now, true);
        assert!(
            skewed
                .iter()
                .any(|f| f.fatal && f.text.contains("120s") && f.text.contains("NTP")),
            "{skewed:?}"
        );

        let mut other = facts(t, 4 << 30);
        other.api_version = "kagent.v2".into();
        assert!(preflight("kh", &other, now, false).iter().any(|f| f.fatal));

        let small = preflight("kc", &facts(t, 512 << 20), now, true);
        assert!(
            small.iter().any(|f| !f.fatal && f.text.contains("512 MiB")),
            "{small:?}"
        );
        // The KHEOPS host is not held to Keycloak's memory.
        assert_eq!(preflight("kh", &facts(t, 512 << 20), now, false).len(), 1);
    }
}
