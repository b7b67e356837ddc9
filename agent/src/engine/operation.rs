//! One operation's event log as it happens: journal first, then memory, then watchers.
//!
//! The log lives in an `Operation` shared by the task that runs it and by every stream that
//! follows it. Watchers wait on a `watch` channel holding the event count, so a slow watcher
//! never holds up the operation (it reads the events it missed from the shared log).

use std::sync::Mutex;

use kagent_proto::v1::{self, OperationState, event::Payload};
use tokio::sync::watch;

use crate::journal;

pub struct Operation {
    pub id: String,
    log: Mutex<Log>,
    count: watch::Sender<usize>,
}

struct Log {
    events: Vec<v1::Event>,
    writer: Option<journal::Writer>,
    /// Set when the journal could not be written: the operation must not change anything more.
    journal_error: Option<String>,
}

impl Operation {
    pub fn new(id: String, writer: journal::Writer) -> Operation {
        Operation {
            id,
            log: Mutex::new(Log {
                events: Vec::new(),
                writer: Some(writer),
                journal_error: None,
            }),
            count: watch::channel(0).0,
        }
    }

    /// Journals the event, then publishes it. `durable` fsyncs the journal first (before a
    /// change to the host, and for the final event). Returns an error when the journal failed:
    /// the caller must stop changing the host.
    pub fn emit(&self, payload: Payload, durable: bool) -> Result<(), String> {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let event = v1::Event {
            operation_id: self.id.clone(),
            index: log.events.len() as u64,
            time: Some(crate::time::now()),
            payload: Some(payload),
        };
        let finished = matches!(event.payload, Some(Payload::Finished(_)));
        if let Some(w) = log.writer.as_mut()
            && let Err(e) = w.append(&event, durable || finished)
        {
            let msg = format!("cannot write the journal: {e}");
            tracing::error!(operation = %self.id, error = %e, "journal write failed");
            log.journal_error.get_or_insert(msg);
        }
        if finished {
            log.writer = None;
        }
        log.events.push(event);
        let n = log.events.len();
        drop(log);
        self.count.send_replace(n);
        match &self
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .journal_error
        {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Events from `from` on, and whether the operation has finished.
    pub fn events_from(&self, from: usize) -> (Vec<v1::Event>, bool) {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let finished = journal::is_finished(&log.events);
        (
            log.events
                .get(from..)
                .map(<[_]>::to_vec)
                .unwrap_or_default(),
            finished,
        )
    }

    pub fn subscribe(&self) -> watch::Receiver<usize> {
        self.count.subscribe()
    }

    pub fn summary(&self) -> v1::OperationSummary {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        summarize(&self.id, &log.events)
    }
}

/// The summary of an operation, from its events alone.
pub fn summarize(id: &str, events: &[v1::Event]) -> v1::OperationSummary {
    let mut s = v1::OperationSummary {
        operation_id: id.to_string(),
        state: OperationState::Running as i32,
        events: events.len() as u64,
        ..Default::default()
    };
    let mut counts = v1::Counts::default();
    for e in events {
        match &e.payload {
            Some(Payload::Started(st)) => {
                s.dry_run = st.dry_run;
                s.caller = st.caller.clone();
                s.started = e.time;
            }
            Some(Payload::Planned(p)) => match v1::Action::try_from(p.action) {
                Ok(v1::Action::Create) => counts.create += 1,
                Ok(v1::Action::Update) => counts.update += 1,
                Ok(v1::Action::Unchanged) => counts.unchanged += 1,
                Ok(v1::Action::Delete) => counts.delete += 1,
                _ => {}
            },
            Some(Payload::Failed(f)) => {
                counts.failed += 1;
                if s.error.is_empty() {
                    s.error = f.error.clone();
                }
            }
            Some(Payload::Finished(f)) => {
                s.state = f.state;
                s.finished = e.time;
                if let Some(c) = &f.counts {
                    counts = *c;
                }
                if s.error.is_empty() {
                    s.error = f.error.clone();
                }
            }
            _ => {}
        }
    }
    s.counts = Some(counts);
    s
}
