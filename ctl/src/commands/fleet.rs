//! `kctl fleet status`: every host of the inventory's installs asked in parallel (at most
//! `--concurrency` at once), one [`HostStatus`] each, rendered by [`crate::output`]; the rules
//! are [`crate::fleet`]'s. A host that does not answer is a row with its error, never the end
//! of the run.
//!
//! `kctl fleet renew`: RenewCertificate on every host (each once), at most `--concurrency` at
//! once, a failed host a row. `kctl fleet upgrade`: `kctl provision --install NAME` for each
//! install with the rollout's variables, through [`crate::rollout`]'s loop and record.

use std::collections::HashMap;
use std::sync::Arc;

use std::path::Path;

use anyhow::anyhow;
use serde_json::json;

use super::operation::HostSink;
use super::{Context, print, print_json, provision, provision_inventory};
use crate::agent_client::AgentClient;
use crate::cli::ProvisionArgs;
use crate::config::Credentials;
use crate::error::{Error, Result};
use crate::fleet::{self, CallError, HostStatus, HostTarget, RenewOutcome, RenewRow, RenewTarget};
use crate::follow::{self, Position, RetryPolicy};
use crate::inventory::Inventory;
use crate::output::{self, Format, Style};
use crate::rollout::{self, Overrides};

pub async fn status(ctx: &Context, only: &[String], concurrency: u16) -> Result<u8> {
    let inventory = Inventory::load(&ctx.inventory, true)?;
    let targets = fleet::targets(&inventory, only)?;
    let creds = Credentials::load(&ctx.paths)?;
    if let Some(warning) = creds.expiry_warning(time::OffsetDateTime::now_utc()) {
        eprintln!("warning: {warning}");
    }
    let hosts = gather(targets, creds, usize::from(concurrency)).await;
    let now = time::OffsetDateTime::now_utc();
    match ctx.format {
        Format::Human => print(&output::fleet_human(&hosts, now))?,
        Format::Json => print_json(&output::fleet_json(&hosts, now))?,
    }
    let ok = hosts.iter().all(|h| fleet::problems(h).is_empty());
    Ok(if ok { 0 } else { crate::error::EXIT_FAILED })
}

/// Asks every target, at most `concurrency` at once; the statuses in the targets' order.
async fn gather(
    targets: Vec<HostTarget>,
    creds: Credentials,
    concurrency: usize,
) -> Vec<HostStatus> {
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let creds = Arc::new(creds);
    let mut tasks = tokio::task::JoinSet::new();
    let mut index = HashMap::new();
    for (i, target) in targets.iter().cloned().enumerate() {
        let (permits, creds) = (permits.clone(), creds.clone());
        let handle = tasks.spawn(async move {
            // The semaphore is never closed: acquiring only waits.
            let _permit = permits.acquire_owned().await;
            query(target, &creds).await
        });
        index.insert(handle.id(), i);
    }
    let mut out: Vec<Option<HostStatus>> = vec![None; targets.len()];
    while let Some(done) = tasks.join_next_with_id().await {
        match done {
            Ok((id, status)) => {
                if let Some(&i) = index.get(&id) {
                    out[i] = Some(status);
                }
            }
            Err(e) => {
                if let Some(&i) = index.get(&e.id()) {
                    let error = CallError {
                        call: "connect".into(),
                        message: format!("kctl's query of this host failed: {e}"),
                        hint: None,
                    };
                    out[i] = Some(HostStatus::failed(targets[i].clone(), error));
                }
            }
        }
    }
    out.into_iter()
        .zip(targets)
        .map(|(s, t)| {
            s.unwrap_or_else(|| {
                let error = CallError {
                    call: "connect".into(),
                    message: "not asked".into(),
                    hint: None,
                };
                HostStatus::failed(t, error)
            })
        })
        .collect()
}

/// Connects and makes the four read-only calls. When Facts fails the host is not asked more:
/// the other calls would fail the same way.
async fn query(target: HostTarget, creds: &Credentials) -> HostStatus {
    let mut client = match AgentClient::connect(&target.host, creds).await {
        Ok(c) => c,
        Err(e) => return HostStatus::failed(target, CallError::new("connect", &e)),
    };
    let facts = match client.facts().await {
        Ok(f) => f,
        Err(s) => {
            let e = client.explain("Facts", &s);
            return HostStatus::failed(target, CallError::new("Facts", &e));
        }
    };
    let mut errors = Vec::new();
    let mut keep = |call: &str, e: crate::error::Error| errors.push(CallError::new(call, &e));
    let certificates = match client.list_certificates().await {
        Ok(c) => Some(c),
        Err(s) => {
            keep("ListCertificates", client.explain("ListCertificates", &s));
            None
        }
    };
    let containers = match client.container_status("", "").await {
        Ok(c) => Some(c),
        Err(s) => {
            keep("ContainerStatus", client.explain("ContainerStatus", &s));
            None
        }
    };
    let operations = match client.list_operations(fleet::OPERATIONS_LIMIT).await {
        Ok(o) => Some(o),
        Err(s) => {
            keep("ListOperations", client.explain("ListOperations", &s));
            None
        }
    };
    HostStatus {
        target,
        facts: Some(facts),
        certificates,
        containers,
        operations,
        errors,
    }
}

// ---------------------------------------------------------------------------------------------
// fleet renew

/// `kctl fleet renew`: RenewCertificate on every host of the installs (each host once), at
/// most `concurrency` at once, events prefixed by host, then one row per host.
pub async fn renew(ctx: &Context, only: &[String], force: bool, concurrency: u16) -> Result<u8> {
    let inventory = Inventory::load(&ctx.inventory, true)?;
    let targets = fleet::renew_targets(&fleet::targets(&inventory, only)?);
    let creds = Credentials::load(&ctx.paths)?;
    if let Some(warning) = creds.expiry_warning(time::OffsetDateTime::now_utc()) {
        eprintln!("warning: {warning}");
    }
    let (format, style) = (ctx.format, ctx.style);
    let creds = &creds;
    let rows = fleet::bounded(targets, usize::from(concurrency), |target| {
        renew_one(target, creds, format, style, force)
    })
    .await;
    match ctx.format {
        Format::Human => print(&format!("\n{}", output::fleet_renew_human(&rows)))?,
        Format::Json => print_json(&output::fleet_renew_json(&rows))?,
    }
    Ok(if rows.iter().all(RenewRow::ok) {
        0
    } else {
        crate::error::EXIT_FAILED
    })
}

/// One host's renewal, followed to its end; every way it can go wrong is a row.
async fn renew_one(
    target: RenewTarget,
    creds: &Credentials,
    format: Format,
    style: Style,
    force: bool,
) -> RenewRow {
    let row = |outcome| RenewRow {
        target: target.clone(),
        outcome,
    };
    let mut client = match AgentClient::connect(&target.host, creds).await {
        Ok(c) => c,
        Err(e) => return row(RenewOutcome::Error(CallError::new("connect", &e))),
    };
    let stream = match client.renew_certificate("", force).await {
        Ok(s) => s,
        // All certificates were asked for: NOT_FOUND means the agent manages none.
        Err(s) if s.code() == tonic::Code::NotFound => return row(RenewOutcome::NoCertificates),
        Err(s) => {
            let e = client.explain("RenewCertificate", &s);
            return row(RenewOutcome::Error(CallError::new("RenewCertificate", &e)));
        }
    };
    let mut sink = HostSink::with(&target.host.to_string(), format, style);
    let mut position = Position::default();
    let policy = RetryPolicy::default();
    match follow::follow(&mut client, stream, &mut position, &mut sink, &policy).await {
        Ok(finished) => row(RenewOutcome::Finished {
            operation_id: position.operation_id.unwrap_or_default(),
            finished,
        }),
        Err(mut e) => {
            if e.hint.is_none()
                && let Some(resume) = position.resume_command(&client)
            {
                e = e.hint(format!(
                    "the renewal goes on in the agent; follow it with `{resume}`"
                ));
            }
            row(RenewOutcome::Error(CallError::new("the event stream", &e)))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// fleet upgrade

/// What `kctl fleet upgrade` was given.
pub struct UpgradeArgs {
    pub installs: Vec<String>,
    pub keycloak_var: Vec<(String, String)>,
    pub kheops_var: Vec<(String, String)>,
    pub max_parallel: u16,
    pub wait: u64,
    pub dry_run: bool,
    pub resume: bool,
}

/// The `kctl provision --install NAME [--save-install NAME]` command line one install of a
/// rollout runs with: the rollout's variables over the entry's.
fn provision_args(name: &str, o: &Overrides, wait: u64, dry_run: bool) -> ProvisionArgs {
    let vars = |m: &std::collections::BTreeMap<String, String>| {
        m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    };
    ProvisionArgs {
        keycloak_host: None,
        kheops_host: None,
        keycloak_domain: None,
        kheops_domain: None,
        realm: None,
        acme_contact: None,
        acme_directory: None,
        keycloak_stack: None,
        kheops_stack: None,
        keycloak_var: vars(&o.keycloak_vars),
        kheops_var: vars(&o.kheops_vars),
        keycloak_ca_file: None,
        wait,
        dry_run,
        install: Some(name.to_string()),
        // Saved after a successful run, so the inventory says what runs.
        save_install: (!dry_run).then(|| name.to_string()),
    }
}

/// `kctl fleet upgrade`: [`provision::run`] for each install (the one provision code path),
/// driven by [`rollout::drive`] and recorded in `<config dir>/rollouts/`.
pub async fn upgrade(ctx: &Context, a: UpgradeArgs) -> Result<u8> {
    let inventory = Inventory::load(&ctx.inventory, true)?;
    for name in &a.installs {
        inventory.get(name)?;
    }
    let selected: Vec<String> = inventory
        .installs
        .keys()
        .filter(|n| a.installs.is_empty() || a.installs.contains(n))
        .cloned()
        .collect();
    let overrides = Overrides::new(&a.keycloak_var, &a.kheops_var);
    let dir = rollout::dir(&ctx.paths.config_dir);

    if a.dry_run {
        check_installs(ctx, &selected, &overrides, a.wait, true)?;
        return dry_run(ctx, &selected, &overrides, a.wait).await;
    }

    let mut record = if a.resume {
        let records = rollout::load_all(&dir).map_err(Error::usage)?;
        let Some(r) = rollout::resumable(&records, &overrides, &a.installs) else {
            return Err(Error::usage(anyhow!(
                "--resume: no unfinished rollout in {} with these variables{}",
                dir.display(),
                if a.installs.is_empty() {
                    String::new()
                } else {
                    " and installs".into()
                }
            ))
            .hint(
                "give exactly the --keycloak-var/--kheops-var of the rollout to resume, or start \
                 a new one without --resume",
            ));
        };
        r.clone()
    } else {
        rollout::Rollout::new(
            rollout::new_id(time::OffsetDateTime::now_utc()),
            &now(),
            overrides.clone(),
            &selected,
        )
    };
    // Every install that will run renders with the variables before anything is sent.
    check_installs(ctx, &record.to_run(), &overrides, a.wait, false)?;
    let path = rollout::save(&dir, &record).map_err(Error::failed)?;
    let skipped: Vec<String> = record
        .installs
        .iter()
        .filter(|i| i.state == rollout::State::Succeeded)
        .map(|i| i.name.clone())
        .collect();
    say(
        ctx,
        json!({"type": "rollout", "id": record.id, "record": path.display().to_string(),
               "resumed": a.resume, "run": record.to_run(), "skipped": skipped}),
        format!(
            "{} rollout {} ({}): {}{}",
            if a.resume { "resuming" } else { "starting" },
            record.id,
            path.display(),
            record.to_run().join(", "),
            if skipped.is_empty() {
                String::new()
            } else {
                format!(" (already succeeded: {})", skipped.join(", "))
            }
        ),
    );

    let mut save = |r: &rollout::Rollout| rollout::save(&dir, r).map(|_| ());
    let outcome = rollout::drive(
        &mut record,
        usize::from(a.max_parallel),
        &now,
        &mut save,
        |name| upgrade_one(ctx, name, &overrides, a.wait),
    )
    .await
    .map_err(|e| Error::failed(e.context(format!("rollout {}", record.id))))?;
    report(ctx, &record, &outcome, &path);
    Ok(if outcome.ok() {
        0
    } else {
        crate::error::EXIT_FAILED
    })
}

/// Each install resolves against the inventory and its stacks render with the variables
/// (unknown variables, bad values named); nothing is sent or recorded otherwise.
fn check_installs(
    ctx: &Context,
    names: &[String],
    o: &Overrides,
    wait: u64,
    dry_run: bool,
) -> Result<()> {
    for name in names {
        let (settings, _) =
            provision_inventory::resolve(ctx, provision_args(name, o, wait, dry_run))
                .map_err(|e| e.context(format!("install `{name}`")))?;
        provision::install_from_args(&settings).map_err(|e| {
            Error::usage(e.context(format!("install `{name}`")))
                .hint("fix the variable or the stack; nothing was sent and nothing was recorded")
        })?;
    }
    Ok(())
}

/// One install of a rollout: the provision, with its header line; `Err(why)` when it did not
/// end with every check passing (exit code 0).
async fn upgrade_one(
    ctx: &Context,
    name: String,
    o: &Overrides,
    wait: u64,
) -> std::result::Result<(), String> {
    say(
        ctx,
        json!({"type": "install", "install": name, "state": "running"}),
        format!("\n=== install {name} ==="),
    );
    let result = provision::run(ctx, provision_args(&name, o, wait, false)).await;
    let outcome = match result {
        Ok(0) => Ok(()),
        Ok(code) => Err(format!("provision ended with exit code {code}")),
        Err(e) => {
            eprint!("{name}: {}", e.render());
            Err(format!("{:#}", e.error))
        }
    };
    say(
        ctx,
        json!({"type": "install", "install": name,
               "state": if outcome.is_ok() { "succeeded" } else { "failed" },
               "error": outcome.as_ref().err()}),
        format!(
            "=== install {name}: {} ===",
            match &outcome {
                Ok(()) => "succeeded".to_string(),
                Err(why) => format!("failed: {why}"),
            }
        ),
    );
    outcome
}

/// `--dry-run`: every install planned, whatever the others' plans say; nothing recorded.
async fn dry_run(ctx: &Context, names: &[String], o: &Overrides, wait: u64) -> Result<u8> {
    let mut failed = Vec::new();
    for name in names {
        say(
            ctx,
            json!({"type": "install", "install": name, "state": "planning"}),
            format!("\n=== install {name} (dry run) ==="),
        );
        match provision::run(ctx, provision_args(name, o, wait, true)).await {
            Ok(0) => {}
            Ok(_) => failed.push(name.clone()),
            Err(e) => {
                eprint!("{name}: {}", e.render());
                failed.push(name.clone());
            }
        }
    }
    say(
        ctx,
        json!({"type": "done", "dry_run": true, "ok": failed.is_empty(), "failed": failed}),
        if failed.is_empty() {
            format!(
                "\nplanned {} installs; nothing was changed or recorded",
                names.len()
            )
        } else {
            format!(
                "\nplanned {} installs, {} failed to plan: {}; nothing was changed or recorded",
                names.len(),
                failed.len(),
                failed.join(", ")
            )
        },
    );
    Ok(if failed.is_empty() {
        0
    } else {
        crate::error::EXIT_FAILED
    })
}

/// The rollout's end: every install's state, and what to do when it stopped.
fn report(ctx: &Context, r: &rollout::Rollout, outcome: &rollout::Outcome, path: &Path) {
    let resume = format!("kctl fleet upgrade{} --resume", r.overrides.options());
    let installs: Vec<serde_json::Value> = r
        .installs
        .iter()
        .map(|i| json!({"install": i.name, "state": i.state.word(), "attempts": i.attempts, "error": i.error}))
        .collect();
    let mut t = output::Table::new(["INSTALL", "STATE", "ATTEMPTS", "ERROR"]);
    for i in &r.installs {
        t.row([
            i.name.clone(),
            i.state.word().to_string(),
            i.attempts.to_string(),
            i.error
                .as_deref()
                .map(|e| output::truncate(e.lines().next().unwrap_or_default(), 70))
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    let text = if outcome.ok() {
        format!(
            "rollout {}: every install succeeded ({})",
            r.id,
            path.display()
        )
    } else {
        let failed: Vec<&str> = outcome.failed.iter().map(|(n, _)| n.as_str()).collect();
        format!(
            "rollout {} stopped: {} failed{}. Fix what it says, then run `{resume}` \
             (record: {})",
            r.id,
            failed.join(", "),
            if outcome.not_started.is_empty() {
                String::new()
            } else {
                format!("; not started: {}", outcome.not_started.join(", "))
            },
            path.display()
        )
    };
    say(
        ctx,
        json!({"type": "done", "id": r.id, "ok": outcome.ok(), "record": path.display().to_string(),
               "installs": installs, "not_started": outcome.not_started,
               "resume": (!outcome.ok()).then_some(&resume)}),
        format!("\n{}\n{text}", t.render()),
    );
}

fn now() -> String {
    output::timestamp(time::OffsetDateTime::now_utc())
}

/// A line of the rollout's own output: JSON Lines or text, on stdout.
fn say(ctx: &Context, v: serde_json::Value, human: String) {
    let text = match ctx.format {
        Format::Human => format!("{human}\n"),
        Format::Json => format!("{v}\n"),
    };
    // A closed stdout must not stop a rollout between installs.
    let _ = print(&text);
}
