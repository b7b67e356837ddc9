//! Background work of the agent. `renewal` holds the pure timing rules; this module runs them.
//!
//! The renewal task wakes after a random start delay, then every `acme.check_interval_secs`
//! (with ±10% jitter). For each certificate the agent manages (one with a recorded spec) it
//! refreshes the CA's renewal window (ARI) when the CA offers one and the last answer's
//! Retry-After has passed, then decides: not due, in backoff after a failure, or renew. A renewal
//! is an ordinary engine operation with the recorded spec, started by the agent itself
//! (`Caller::agent()`, audited as `kagent/renewal`), so it is journaled, listed by `kctl ops`,
//! and watchable. Failures are counted by the resource; the next attempt waits a capped
//! exponential backoff, and the deployed certificate stays in place meanwhile.

pub mod renewal;

use std::sync::Arc;
use std::time::Duration;

use kagent_proto::v1;
use prost::Message;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::caller::Caller;
use crate::engine::Engine;
use crate::resource::certificate::{self, Context, Issuer, store::CertDir};

/// The audit "RPC" of renewals the agent starts by itself.
pub const RENEWAL_ACTION: &str = "kagent/renewal";

#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub check_interval: Duration,
    pub start_delay_max: Duration,
}

/// Runs the renewal loop until `stop` is cancelled.
pub fn spawn(
    engine: Arc<Engine>,
    ctx: Arc<Context>,
    timing: Timing,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let start = jittered(timing.start_delay_max, 1.0);
        tokio::select! {
            _ = tokio::time::sleep(start) => {}
            _ = stop.cancelled() => return,
        }
        loop {
            // A renewal in flight belongs to the engine: stopping here drops only the wait.
            tokio::select! {
                _ = check_all(&engine, &ctx) => {}
                _ = stop.cancelled() => return,
            }
            let wait = jittered(timing.check_interval, 0.1).max(Duration::from_millis(200));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.cancelled() => return,
            }
        }
    })
}

/// `base` ± `fraction` (or 0..=base when fraction is 1).
fn jittered(base: Duration, fraction: f64) -> Duration {
    let b = base.as_secs_f64();
    if b <= 0.0 {
        return Duration::ZERO;
    }
    let x: f64 = rand::random::<f64>();
    let secs = if fraction >= 1.0 {
        b * x
    } else {
        b * (1.0 - fraction + 2.0 * fraction * x)
    };
    Duration::from_secs_f64(secs.max(0.0))
}

async fn check_all(engine: &Arc<Engine>, ctx: &Arc<Context>) {
    for name in certificate::store::managed_names(&ctx.state_dir) {
        if let Err(e) = check_one(engine, ctx, &name).await {
            tracing::warn!(certificate = %name, error = %e, "renewal check failed");
        }
    }
}

/// The stored spec of `name`, validated as the engine would.
fn stored(engine: &Engine, name: &str, bytes: &[u8]) -> Result<crate::engine::HostSpec, String> {
    let cert = v1::Certificate::decode(bytes).map_err(|e| format!("spec.pb: {e}"))?;
    let spec = v1::HostSpec {
        resources: vec![v1::Resource {
            name: name.to_string(),
            kind: Some(v1::resource::Kind::Certificate(cert)),
        }],
    };
    engine.validate(&spec).map_err(|e| e.to_string())
}

async fn check_one(engine: &Arc<Engine>, ctx: &Arc<Context>, name: &str) -> Result<(), String> {
    let dir = CertDir::new(&ctx.state_dir, name);
    let Some(bytes) = dir.load_spec() else {
        return Ok(());
    };
    let spec = stored(engine, name, &bytes)?;
    let Some(crate::engine::spec::Kind::Certificate(cert)) =
        spec.resources.first().map(|r| &r.kind)
    else {
        return Ok(());
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let current = dir.load().map_err(|e| e.to_string())?;
    let mut state = dir.load_renewal();
    if let (Some((material, meta)), Issuer::Acme(acme)) = (&current, &cert.issuer) {
        let stale = state.ari_serial != meta.serial || now >= state.ari_next_check;
        if stale {
            match certificate::issue::renewal_window(acme, ctx, &material.cert_pem).await {
                Ok(Some((window, retry))) => {
                    state.ari = Some(window);
                    state.ari_serial = meta.serial.clone();
                    state.ari_next_check = now + retry.clamp(60, 86_400) as i64;
                }
                // The CA offers no ARI: the lifetime rule applies; ask again in a day.
                Ok(None) => {
                    state.ari = None;
                    state.ari_serial = meta.serial.clone();
                    state.ari_next_check = now + 86_400;
                }
                Err(e) => tracing::debug!(certificate = %name, error = %e, "no ARI window"),
            }
            let _ = dir.save_renewal(&state);
        }
    }
    let provided = matches!(cert.issuer, Issuer::Provided { .. });
    let Some((_, meta)) = &current else {
        // Never issued (the first apply failed): retry with backoff, as a renewal would.
        let lifetime = renewal::Lifetime {
            not_before: 0,
            not_after: i64::MAX / 2,
        };
        let backoff = renewal::backoff_secs(
            state.failures,
            ctx.acme.retry_base_secs,
            ctx.acme.retry_max_secs,
            lifetime,
        );
        if renewal::decide(now, now, certificate::attempts(&state), backoff)
            == renewal::Decision::Renew
        {
            run(engine, name, spec, "first issuance").await;
        }
        return Ok(());
    };
    if provided {
        return Ok(());
    }
    let (at, _) = certificate::due(meta, &state, false);
    let lifetime = renewal::Lifetime {
        not_before: meta.not_before,
        not_after: meta.not_after,
    };
    let backoff = renewal::backoff_secs(
        state.failures,
        ctx.acme.retry_base_secs,
        ctx.acme.retry_max_secs,
        lifetime,
    );
    if renewal::decide(now, at, certificate::attempts(&state), backoff) == renewal::Decision::Renew
    {
        run(engine, name, spec, "due").await;
    }
    Ok(())
}

/// Starts the renewal operation and waits for its end.
async fn run(engine: &Arc<Engine>, name: &str, spec: crate::engine::HostSpec, why: &str) {
    let id = Engine::new_operation_id();
    let digest = hex::encode(Sha256::digest(
        format!("{RENEWAL_ACTION} {name}").as_bytes(),
    ));
    let begun = match engine.audit().begin(
        &Caller::agent(),
        RENEWAL_ACTION,
        digest,
        Some(id.clone()),
    ) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(certificate = %name, error = %e, "renewal not started: audit log not writable");
            return;
        }
    };
    tracing::info!(certificate = %name, operation = %id, reason = why, "renewing");
    match engine.start(id, spec, false, begun) {
        Ok(op) => wait(&op).await,
        Err(e) => tracing::warn!(certificate = %name, error = %e, "renewal not started"),
    }
}

/// Waits until an operation has finished.
pub async fn wait(op: &crate::engine::Operation) {
    let mut changed = op.subscribe();
    loop {
        let (_, finished) = op.events_from(usize::MAX);
        if finished {
            return;
        }
        if changed.changed().await.is_err() {
            return;
        }
    }
}

/// Why `RenewCertificate` cannot start.
#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    #[error("no certificate named {0:?} on this agent; `kctl certs HOST` lists them")]
    Unknown(String),
    #[error("this agent manages no certificates yet; apply a spec with a certificate resource")]
    None,
    #[error("the recorded spec of certificate {name:?} is no longer valid: {error}")]
    Invalid { name: String, error: String },
}

/// The spec of a `RenewCertificate` call: the recorded spec of `name` (or of every managed
/// certificate), with `force` marking the current serial for replacement.
pub fn renewal_spec(
    engine: &Engine,
    state_dir: &std::path::Path,
    name: &str,
    force: bool,
) -> Result<crate::engine::HostSpec, RenewError> {
    let names = certificate::store::managed_names(state_dir);
    let chosen: Vec<String> = if name.is_empty() {
        if names.is_empty() {
            return Err(RenewError::None);
        }
        names
    } else if names.iter().any(|n| n == name) {
        vec![name.to_string()]
    } else {
        return Err(RenewError::Unknown(name.to_string()));
    };
    let mut resources = Vec::new();
    for n in chosen {
        let dir = CertDir::new(state_dir, &n);
        let bytes = dir.load_spec().unwrap_or_default();
        let mut spec = stored(engine, &n, &bytes).map_err(|error| RenewError::Invalid {
            name: n.clone(),
            error,
        })?;
        if force {
            let serial = dir.load().ok().flatten().map(|(_, meta)| meta.serial);
            for r in &mut spec.resources {
                if let crate::engine::spec::Kind::Certificate(c) = &mut r.kind {
                    c.force_serial = serial.clone();
                }
            }
        }
        resources.append(&mut spec.resources);
    }
    Ok(crate::engine::HostSpec { resources })
}
