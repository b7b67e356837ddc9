//! The audit log: who asked for what, and how it ended. One JSON object per line in
//! `STATE/audit.log` (mode 0600, append-only).
//!
//! A mutating call first writes and fsyncs a `begin` record; only with the `Begun` proof that
//! this returns can the engine start an operation, so "no audit record, no mutation" holds by
//! construction. The `end` record carries the result. The file is opened per record
//! (O_APPEND): a rotated or replaced file is picked up, and a file that cannot be written
//! refuses the call instead of silently losing the record.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::caller::Caller;

pub struct Audit {
    path: PathBuf,
    seq: AtomicU64,
}

/// Proof that a `begin` record is on disk. Only `Audit::begin` makes one.
#[derive(Debug)]
pub struct Begun {
    seq: u64,
    caller: Caller,
    rpc: &'static str,
    request_sha256: String,
    operation_id: Option<String>,
}

impl Begun {
    pub fn caller(&self) -> &Caller {
        &self.caller
    }
}

#[derive(Serialize)]
struct Record<'a> {
    time: String,
    seq: u64,
    phase: &'static str,
    caller: &'a str,
    fingerprint: &'a str,
    rpc: &'a str,
    request_sha256: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    operation_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a str>,
}

/// A record as read back from the log.
#[derive(Debug, Clone, Deserialize)]
pub struct Entry {
    pub time: String,
    pub seq: u64,
    pub phase: String,
    pub caller: String,
    #[serde(default)]
    pub fingerprint: String,
    pub rpc: String,
    #[serde(default)]
    pub request_sha256: String,
    #[serde(default)]
    pub operation_id: Option<String>,
    #[serde(default)]
    pub result: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot write the audit record to {path}: {source}")]
pub struct AuditError {
    path: PathBuf,
    source: std::io::Error,
}

impl Audit {
    pub fn open(state_dir: &Path) -> Audit {
        let path = state_dir.join("audit.log");
        // Sequence numbers continue across restarts so records stay ordered by `seq`.
        let seq = std::fs::read(&path)
            .map(|b| b.iter().filter(|c| **c == b'\n').count())
            .unwrap_or(0);
        Audit {
            path,
            seq: AtomicU64::new(seq as u64),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records at or after `since` (RFC 3339, compared as text: the log writes one fixed
    /// format) whose caller contains `caller`, the newest `limit` of them, oldest first.
    /// A line that does not parse (a torn write after a crash) is skipped.
    pub fn read(
        &self,
        since: Option<&str>,
        caller: &str,
        limit: usize,
    ) -> std::io::Result<Vec<Entry>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let mut out: Vec<Entry> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Entry>(l).ok())
            .filter(|e| since.is_none_or(|s| e.time.as_str() >= s))
            .filter(|e| e.caller.contains(caller))
            .collect();
        if out.len() > limit {
            out.drain(..out.len() - limit);
        }
        Ok(out)
    }

    /// Writes the `begin` record of a mutating call, fsynced, and returns the proof.
    pub fn begin(
        &self,
        caller: &Caller,
        rpc: &'static str,
        request_sha256: String,
        operation_id: Option<String>,
    ) -> Result<Begun, AuditError> {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let begun = Begun {
            seq,
            caller: caller.clone(),
            rpc,
            request_sha256,
            operation_id,
        };
        self.write(&begun, "begin", None)?;
        Ok(begun)
    }

    /// Writes the `end` record. A failure here cannot undo the call; it is logged.
    pub fn end(&self, begun: &Begun, result: &str) {
        if let Err(e) = self.write(begun, "end", Some(result)) {
            tracing::error!(error = %e, rpc = begun.rpc, seq = begun.seq, "audit end record lost");
        }
    }

    fn write(
        &self,
        b: &Begun,
        phase: &'static str,
        result: Option<&str>,
    ) -> Result<(), AuditError> {
        let record = Record {
            time: crate::time::rfc3339_now(),
            seq: b.seq,
            phase,
            caller: &b.caller.subject,
            fingerprint: &b.caller.fingerprint,
            rpc: b.rpc,
            request_sha256: &b.request_sha256,
            operation_id: b.operation_id.as_deref(),
            result,
        };
        let err = |source| AuditError {
            path: self.path.clone(),
            source,
        };
        let mut line = serde_json::to_vec(&record).map_err(|e| err(std::io::Error::other(e)))?;
        line.push(b'\n');
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(err)?;
        f.write_all(&line).map_err(err)?;
        f.sync_data().map_err(err)
    }
}
