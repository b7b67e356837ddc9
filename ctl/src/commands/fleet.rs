//! `kctl fleet status`: every host of the inventory's installs asked in parallel (at most
//! `--concurrency` at once), one [`HostStatus`] each, rendered by [`crate::output`]; the rules
//! are [`crate::fleet`]'s. A host that does not answer is a row with its error, never the end
//! of the run.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Context, print, print_json};
use crate::agent_client::AgentClient;
use crate::config::Credentials;
use crate::error::Result;
use crate::fleet::{self, CallError, HostStatus, HostTarget};
use crate::inventory::Inventory;
use crate::output::{self, Format};

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
