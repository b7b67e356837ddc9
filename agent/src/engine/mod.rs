//! The engine: validates a host spec, plans every resource against the host, and applies the
//! changes in order, journaling each event before it is published.
//!
//! Operations run in tasks owned by the engine, not by the RPC that started them: a caller that
//! drops its stream cancels nothing and can re-attach with `watch`. One applying operation runs
//! at a time (dry runs do not wait). On shutdown an operation stops at the next resource
//! boundary, the only points where stopping is safe, and is journaled `interrupted`.

pub mod operation;
pub mod spec;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kagent_proto::v1::{self, Action, OperationState, event::Payload};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audit::{Audit, Begun};
use crate::host::fs::Roots;
use crate::journal::{self, Journal};
use crate::resource;
pub use operation::Operation;
pub use spec::{HostSpec, SpecError};

/// Test hook: sleep this long before each apply step, so a test can kill the agent mid-apply.
pub const STEP_DELAY_ENV: &str = "KAGENT_DEBUG_STEP_DELAY_MS";

pub struct Engine {
    roots: Roots,
    journal: Journal,
    audit: Audit,
    /// Summaries of every journaled operation, by id (ids sort by start time).
    history: Mutex<BTreeMap<String, v1::OperationSummary>>,
    /// Operations still running, with their in-memory event log.
    live: Mutex<HashMap<String, Arc<Operation>>>,
    /// Serializes operations that change the host.
    apply_lock: tokio::sync::Mutex<()>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    step_delay: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("cannot start the operation: {0}")]
    Journal(std::io::Error),
    #[error("the agent is shutting down; retry when it is back")]
    ShuttingDown,
    #[error("no operation {0:?} on this agent")]
    UnknownOperation(String),
}

/// Where watching an operation starts from.
pub enum Watch {
    /// Running: follow the live log.
    Live(Arc<Operation>),
    /// Finished (possibly before a restart): its journaled events.
    Done(Vec<v1::Event>),
}

impl Engine {
    /// Opens the journal and audit log in `state_dir` and closes operations that a previous
    /// run left unfinished as `interrupted`.
    pub fn open(state_dir: PathBuf, roots: Roots) -> std::io::Result<Engine> {
        let journal = Journal::open(&state_dir)?;
        let mut history = BTreeMap::new();
        for rec in journal.recover()? {
            if rec.truncated_bytes > 0 {
                tracing::warn!(
                    operation = %rec.operation_id,
                    bytes = rec.truncated_bytes,
                    "cut a torn record off the end of the journal (crash while writing)"
                );
            }
            let mut events = rec.events;
            if !journal::is_finished(&events) {
                let event = interrupted_event(&rec.operation_id, &events);
                journal.reopen(&rec.operation_id)?.append(&event, true)?;
                tracing::warn!(operation = %rec.operation_id, "operation was interrupted by a stop of the agent");
                events.push(event);
            }
            history.insert(
                rec.operation_id.clone(),
                operation::summarize(&rec.operation_id, &events),
            );
        }
        let step_delay = std::env::var(STEP_DELAY_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis)
            .unwrap_or_default();
        Ok(Engine {
            roots,
            audit: Audit::open(&state_dir),
            journal,
            history: Mutex::new(history),
            live: Mutex::new(HashMap::new()),
            apply_lock: tokio::sync::Mutex::new(()),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            step_delay,
        })
    }

    /// The managed roots specs and explicit secret reads are confined to.
    pub fn roots(&self) -> &Roots {
        &self.roots
    }

    pub fn audit(&self) -> &Audit {
        &self.audit
    }

    /// A fresh operation id: start time plus 32 random bits.
    pub fn new_operation_id() -> String {
        format!(
            "{}-{:08x}",
            crate::time::compact_now(),
            rand::random::<u32>()
        )
    }

    /// Checks the whole spec against the managed roots; nothing runs when this fails.
    pub fn validate(&self, spec: &v1::HostSpec) -> Result<HostSpec, SpecError> {
        spec::validate(spec, &self.roots)
    }

    /// Starts an operation. It needs the proof that its audit record is written (`Begun`),
    /// and its id must be the one in that record.
    pub fn start(
        self: &Arc<Self>,
        id: String,
        spec: HostSpec,
        dry_run: bool,
        begun: Begun,
    ) -> Result<Arc<Operation>, EngineError> {
        if self.shutdown.is_cancelled() {
            return Err(EngineError::ShuttingDown);
        }
        let writer = self.journal.create(&id).map_err(EngineError::Journal)?;
        let op = Arc::new(Operation::new(id.clone(), writer));
        let started = Payload::Started(v1::OperationStarted {
            dry_run,
            caller: begun.caller().subject.clone(),
            resources: spec.resources.len() as u32,
        });
        if let Err(e) = op.emit(started, true) {
            return Err(EngineError::Journal(std::io::Error::other(e)));
        }
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), op.clone());
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, op.summary());
        let engine = self.clone();
        let task_op = op.clone();
        self.tasks.spawn(async move {
            let outcome = engine.run(&task_op, spec, dry_run).await;
            // The audit record first, then the final event: a caller that has seen the end
            // of the stream can rely on the audit log saying how it ended.
            engine.audit.end(&begun, &outcome.result);
            let _ = task_op.emit(outcome.finished, true);
            let summary = task_op.summary();
            engine
                .history
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(task_op.id.clone(), summary);
            engine
                .live
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&task_op.id);
        });
        Ok(op)
    }

    /// Where to read an operation's events from.
    pub fn watch(&self, id: &str) -> Result<Watch, EngineError> {
        if let Some(op) = self.live.lock().unwrap_or_else(|p| p.into_inner()).get(id) {
            return Ok(Watch::Live(op.clone()));
        }
        // Not live: finished, so every event is in the journal.
        match self.journal.read(id) {
            Ok(Some(events)) => Ok(Watch::Done(events)),
            Ok(None) => Err(EngineError::UnknownOperation(id.into())),
            Err(e) => Err(EngineError::Journal(e)),
        }
    }

    /// Operation summaries, newest first.
    pub fn list(&self, limit: usize) -> Vec<v1::OperationSummary> {
        let live: Vec<Arc<Operation>> = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        for op in live {
            history.insert(op.id.clone(), op.summary());
        }
        // Newest first by start time; ids of one second would otherwise sort by their suffix.
        let key =
            |s: &v1::OperationSummary| s.started.map(|t| (t.seconds, t.nanos)).unwrap_or_default();
        let mut all: Vec<&v1::OperationSummary> = history.values().collect();
        all.sort_by(|a, b| {
            key(b)
                .cmp(&key(a))
                .then_with(|| b.operation_id.cmp(&a.operation_id))
        });
        all.into_iter().take(limit).cloned().collect()
    }

    /// Asks running operations to stop at their next safe point and waits for them.
    /// Waits until no applying operation runs and keeps others from starting while the guard
    /// lives: for changes outside operations (retiring a certificate the scheduler might be
    /// renewing).
    pub async fn exclusive(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.apply_lock.lock().await
    }

    pub async fn shutdown(&self) {
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Runs one operation to its end; returns the result for the audit record.
    async fn run(&self, op: &Operation, spec: HostSpec, dry_run: bool) -> Outcome {
        let started = Instant::now();
        let _guard = if dry_run {
            None
        } else {
            if self.apply_lock.try_lock().is_err() {
                let _ = op.emit(
                    progress(None, "waiting for the running operation to finish"),
                    false,
                );
            }
            tokio::select! {
                g = self.apply_lock.lock() => Some(g),
                _ = self.shutdown.cancelled() => {
                    let counts = v1::Counts { skipped: spec.resources.len() as u32, ..Default::default() };
                    return finish(OperationState::Interrupted, counts, SHUTDOWN, started);
                }
            }
        };

        // Plan every resource before changing anything.
        let mut counts = v1::Counts::default();
        let mut plans = Vec::with_capacity(spec.resources.len());
        let mut first_error = String::new();
        for r in spec.resources.iter() {
            let observed = match r.kind.read().await {
                Ok(o) => o,
                Err(e) => {
                    counts.failed += 1;
                    first_error.get_or_insert_with_msg(|| {
                        format!("{} {:?}: {}", r.kind.name(), r.name, e.message)
                    });
                    let _ = op.emit(failed(r, &e.message, &e.hint), false);
                    continue;
                }
            };
            let change = r.kind.plan(&observed);
            match change.action {
                Action::Create => counts.create += 1,
                Action::Update => counts.update += 1,
                Action::Unchanged => counts.unchanged += 1,
                Action::Delete => counts.delete += 1,
                Action::Unspecified => {}
            }
            let planned = Payload::Planned(v1::ResourcePlanned {
                resource: Some(reference(r)),
                action: change.action as i32,
                diff: change.diff.clone(),
                warnings: change.warnings.clone(),
            });
            if let Err(e) = op.emit(planned, false) {
                return finish(OperationState::Failed, counts, &e, started);
            }
            plans.push((r, observed, change));
        }
        if counts.failed > 0 {
            counts.skipped = plans.len() as u32;
            let msg = format!("could not read the host, nothing was changed: {first_error}");
            return finish(OperationState::Failed, counts, &msg, started);
        }
        if dry_run {
            return finish(OperationState::Succeeded, counts, "", started);
        }

        // Apply, in spec order, only what differs.
        let pending: Vec<_> = plans
            .into_iter()
            .filter(|(_, _, c)| c.action != Action::Unchanged)
            .collect();
        let total = pending.len();
        for (n, (r, observed, change)) in pending.into_iter().enumerate() {
            if !self.step_delay.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(self.step_delay) => {}
                    _ = self.shutdown.cancelled() => {}
                }
            }
            if self.shutdown.is_cancelled() {
                counts.skipped = (total - n) as u32;
                return finish(OperationState::Interrupted, counts, SHUTDOWN, started);
            }
            // Durable before the change: after a crash the journal shows this step may have run.
            let msg = format!("applying {} ({}/{total})", change.action.word(), n + 1);
            if let Err(e) = op.emit(progress(Some(r), &msg), true) {
                counts.skipped = (total - n) as u32;
                return finish(OperationState::Failed, counts, &e, started);
            }
            let reporter = EventProgress {
                op,
                resource: reference(r),
            };
            let outcome = apply_and_verify(r, &observed, &reporter).await;
            match outcome {
                Ok(message) => {
                    let done = Payload::Done(v1::ResourceDone {
                        resource: Some(reference(r)),
                        action: change.action as i32,
                        message,
                    });
                    let _ = op.emit(done, false);
                }
                Err(e) => {
                    counts.failed += 1;
                    counts.skipped = (total - n - 1) as u32;
                    let _ = op.emit(failed(r, &e.message, &e.hint), false);
                    let msg = format!("{} {:?}: {}", r.kind.name(), r.name, e.message);
                    return finish(OperationState::Failed, counts, &msg, started);
                }
            }
        }
        finish(OperationState::Succeeded, counts, "", started)
    }
}

/// Applies one change, then reads the host back and re-plans: the step succeeded only if
/// nothing differs any more.
async fn apply_and_verify(
    r: &spec::Resource,
    observed: &spec::Observed,
    progress: &EventProgress<'_>,
) -> Result<String, resource::ResourceError> {
    let message = r.kind.apply(observed, progress).await?;
    let after = r.kind.read().await?;
    let residue = r.kind.plan(&after);
    if residue.action != Action::Unchanged {
        return Err(resource::ResourceError {
            message: format!("after applying, the host still differs: {}", residue.diff),
            hint: "something else changes this resource; check the host".into(),
        });
    }
    Ok(message)
}

const SHUTDOWN: &str = "the agent is shutting down; apply again to finish";

/// How an operation ended: its final event (not yet emitted) and the audit result.
struct Outcome {
    finished: Payload,
    result: String,
}

/// The final event and audit result of an operation.
fn finish(state: OperationState, counts: v1::Counts, error: &str, started: Instant) -> Outcome {
    let finished = Payload::Finished(v1::OperationFinished {
        state: state as i32,
        counts: Some(counts),
        error: error.to_string(),
        duration_ms: started.elapsed().as_millis() as u64,
    });
    let result = match state {
        OperationState::Succeeded => "ok".into(),
        s => format!("{}: {error}", s.word()),
    };
    Outcome { finished, result }
}

fn reference(r: &spec::Resource) -> v1::ResourceRef {
    v1::ResourceRef {
        kind: r.kind.name().into(),
        name: r.name.clone(),
    }
}

fn progress(r: Option<&spec::Resource>, message: &str) -> Payload {
    Payload::Progress(v1::Progress {
        resource: r.map(reference),
        message: message.into(),
        percent: None,
    })
}

fn failed(r: &spec::Resource, error: &str, hint: &str) -> Payload {
    Payload::Failed(v1::ResourceFailed {
        resource: Some(reference(r)),
        error: error.into(),
        hint: hint.into(),
    })
}

/// The event that closes an operation found unfinished at start-up.
fn interrupted_event(id: &str, events: &[v1::Event]) -> v1::Event {
    let summary = operation::summarize(id, events);
    let mut counts = summary.counts.unwrap_or_default();
    let done = events
        .iter()
        .filter(|e| matches!(e.payload, Some(Payload::Done(_))))
        .count() as u32;
    let planned_changes = counts.create + counts.update + counts.delete;
    counts.skipped = planned_changes.saturating_sub(done + counts.failed);
    v1::Event {
        operation_id: id.into(),
        index: events.len() as u64,
        time: Some(crate::time::now()),
        payload: Some(Payload::Finished(v1::OperationFinished {
            state: OperationState::Interrupted as i32,
            counts: Some(counts),
            error: "the agent stopped before the operation finished (crash, kill or power loss); \
                    apply the spec again to converge"
                .into(),
            duration_ms: elapsed_ms(events),
        })),
    }
}

/// Time from the first to the last journaled event.
fn elapsed_ms(events: &[v1::Event]) -> u64 {
    let ms = |t: &prost_types::Timestamp| t.seconds * 1000 + i64::from(t.nanos / 1_000_000);
    match (
        events.first().and_then(|e| e.time.as_ref()),
        events.last().and_then(|e| e.time.as_ref()),
    ) {
        (Some(a), Some(b)) => u64::try_from(ms(b) - ms(a)).unwrap_or(0),
        _ => 0,
    }
}

/// Turns a resource's progress reports into events of its operation.
struct EventProgress<'a> {
    op: &'a Operation,
    resource: v1::ResourceRef,
}

impl resource::Progress for EventProgress<'_> {
    fn report(&self, message: &str, percent: Option<u32>) {
        let payload = Payload::Progress(v1::Progress {
            resource: Some(self.resource.clone()),
            message: message.into(),
            percent,
        });
        let _ = self.op.emit(payload, false);
    }
}

/// `String::get_or_insert_with` for "first error wins".
trait FirstError {
    fn get_or_insert_with_msg(&mut self, f: impl FnOnce() -> String);
}

impl FirstError for String {
    fn get_or_insert_with_msg(&mut self, f: impl FnOnce() -> String) {
        if self.is_empty() {
            *self = f();
        }
    }
}
