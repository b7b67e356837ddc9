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

use serde::Serialize;

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
