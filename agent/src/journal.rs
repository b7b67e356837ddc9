//! The journal: every operation's events, on disk, before anyone sees them.
//!
//! One append-only file per operation, `STATE/journal/<operation_id>.log`. A record is
//! `len: u32 LE | crc32: u32 LE | prost-encoded Event`. The file is written before an event is
//! streamed, and fsynced before each step that changes the host and at the end of the
//! operation, so after a crash the journal shows at least every step that may have taken
//! effect. A torn or corrupt last record (a crash mid-write) is cut off at start-up with a
//! warning; it never stops the agent from starting.
//!
//! The journal is history, not truth: the engine reads the host to plan, never this file.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use kagent_proto::v1::{self, event::Payload};
use prost::Message;

/// Records larger than this are treated as corruption (an event is a few KiB at most).
const MAX_RECORD: u32 = 16 << 20;
/// How many operations are kept; older journal files are removed at start-up.
pub const KEEP_OPERATIONS: usize = 1000;

pub struct Journal {
    dir: PathBuf,
}

/// An operation's journal file, open for appending.
pub struct Writer {
    file: File,
}

/// What start-up found in one journal file.
pub struct Recovered {
    pub operation_id: String,
    pub events: Vec<v1::Event>,
    /// Bytes cut off the end because the last record was torn or corrupt.
    pub truncated_bytes: u64,
}

impl Journal {
    pub fn open(state_dir: &Path) -> std::io::Result<Journal> {
        let dir = state_dir.join("journal");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        Ok(Journal { dir })
    }

    fn path(&self, operation_id: &str) -> PathBuf {
        self.dir.join(format!("{operation_id}.log"))
    }

    /// Creates the journal file of a new operation.
    pub fn create(&self, operation_id: &str) -> std::io::Result<Writer> {
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(self.path(operation_id))?;
        File::open(&self.dir)?.sync_all()?;
        Ok(Writer { file })
    }

    /// Opens an existing operation's file to append (used to close interrupted operations).
    pub fn reopen(&self, operation_id: &str) -> std::io::Result<Writer> {
        let file = OpenOptions::new()
            .append(true)
            .open(self.path(operation_id))?;
        Ok(Writer { file })
    }

    /// Every event of one operation, in order. `None` when the operation is unknown.
    pub fn read(&self, operation_id: &str) -> std::io::Result<Option<Vec<v1::Event>>> {
        if !is_operation_id(operation_id) {
            return Ok(None);
        }
        match File::open(self.path(operation_id)) {
            Ok(f) => Ok(Some(read_records(f)?.0)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads every journal file, cutting torn tails, and drops the oldest beyond
    /// `KEEP_OPERATIONS`. Returns operations oldest first (ids sort by time).
    pub fn recover(&self) -> std::io::Result<Vec<Recovered>> {
        let mut files = BTreeMap::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".log")
                && is_operation_id(id)
            {
                files.insert(id.to_string(), entry.path());
            }
        }
        while files.len() > KEEP_OPERATIONS {
            if let Some((_, path)) = files.pop_first() {
                std::fs::remove_file(path)?;
            }
        }
        let mut out = Vec::with_capacity(files.len());
        for (id, path) in files {
            let mut f = OpenOptions::new().read(true).write(true).open(&path)?;
            let len = f.metadata()?.len();
            let (events, good) = read_records(&mut f)?;
            if good < len {
                // Cut the torn record so later appends follow a valid one.
                f.set_len(good)?;
                f.sync_all()?;
            }
            out.push(Recovered {
                operation_id: id,
                events,
                truncated_bytes: len - good,
            });
        }
        Ok(out)
    }
}

impl Writer {
    /// Appends one event. `durable` adds an fsync: used before a step that changes the host
    /// and for the last event, where losing the record would hide an effect.
    pub fn append(&mut self, event: &v1::Event, durable: bool) -> std::io::Result<()> {
        let body = event.encode_to_vec();
        let mut record = Vec::with_capacity(body.len() + 8);
        record.extend_from_slice(&(body.len() as u32).to_le_bytes());
        record.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        record.extend_from_slice(&body);
        // One write of the whole record: a SIGKILL leaves it whole or absent, never torn
        // (a power loss can still tear it; recovery handles that).
        self.file.write_all(&record)?;
        if durable {
            self.file.sync_data()?;
        }
        Ok(())
    }
}

/// Reads valid records; returns them and the byte offset after the last valid one.
fn read_records(mut f: impl Read) -> std::io::Result<(Vec<v1::Event>, u64)> {
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)?;
    let mut events = Vec::new();
    let mut at = 0usize;
    while bytes.len() - at >= 8 {
        let len = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        let crc = u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]]);
        let end = at + 8 + len as usize;
        if len > MAX_RECORD || end > bytes.len() {
            break;
        }
        let body = &bytes[at + 8..end];
        if crc32fast::hash(body) != crc {
            break;
        }
        match v1::Event::decode(body) {
            Ok(e) => events.push(e),
            Err(_) => break,
        }
        at = end;
    }
    Ok((events, at as u64))
}

/// Operation ids are `YYYYMMDDTHHMMSSZ-` plus 8 hex digits: they sort by start time and are
/// safe as file names. Anything else is refused before it reaches the file system.
pub fn is_operation_id(id: &str) -> bool {
    id.len() == 25
        && id.bytes().enumerate().all(|(i, b)| match i {
            8 => b == b'T',
            15 => b == b'Z',
            16 => b == b'-',
            0..=14 => b.is_ascii_digit(),
            _ => b.is_ascii_hexdigit() && !b.is_ascii_uppercase(),
        })
}

/// Whether the last event closes the operation.
pub fn is_finished(events: &[v1::Event]) -> bool {
    matches!(
        events.last().and_then(|e| e.payload.as_ref()),
        Some(Payload::Finished(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, index: u64) -> v1::Event {
        v1::Event {
            operation_id: id.into(),
            index,
            time: None,
            payload: Some(Payload::Progress(v1::Progress {
                resource: None,
                message: format!("step {index}"),
                percent: None,
            })),
        }
    }

    const ID: &str = "20261201T101500Z-0123abcd";

    #[test]
    fn ids_are_checked() {
        assert!(is_operation_id(ID));
        for bad in [
            "",
            "../../etc/passwd",
            "20261201T101500Z-0123ABCD",
            "20261201X101500Z-0123abcd",
        ] {
            assert!(!is_operation_id(bad), "{bad}");
        }
    }

    #[test]
    fn a_torn_tail_is_cut_and_the_rest_kept() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let j = Journal::open(dir.path())?;
        let mut w = j.create(ID)?;
        for i in 0..3 {
            w.append(&event(ID, i), i == 2)?;
        }
        drop(w);
        let path = dir.path().join("journal").join(format!("{ID}.log"));
        let mut f = OpenOptions::new().append(true).open(&path)?;
        f.write_all(&[7, 0, 0, 0, 1, 2])?; // half a record header
        drop(f);
        let rec = j.recover()?;
        assert_eq!(rec.len(), 1);
        assert_eq!(rec[0].events.len(), 3);
        assert_eq!(rec[0].truncated_bytes, 6);
        // Appending after recovery yields a readable file again.
        let mut w = j.reopen(ID)?;
        w.append(&event(ID, 3), true)?;
        assert_eq!(j.read(ID)?.map(|e| e.len()), Some(4));
        Ok(())
    }

    #[test]
    fn a_corrupt_record_ends_the_readable_part() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let j = Journal::open(dir.path())?;
        let mut w = j.create(ID)?;
        w.append(&event(ID, 0), false)?;
        w.append(&event(ID, 1), false)?;
        drop(w);
        let path = dir.path().join("journal").join(format!("{ID}.log"));
        let mut bytes = std::fs::read(&path)?;
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, bytes)?;
        assert_eq!(j.read(ID)?.map(|e| e.len()), Some(1));
        Ok(())
    }
}
