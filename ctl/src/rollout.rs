//! `kctl fleet upgrade`'s rollout record and loop. A rollout provisions the selected installs
//! in inventory order with the same stack-variable overrides, at most `max_parallel` at once,
//! and stops starting installs after the first failure. Its record,
//! `<config dir>/rollouts/<id>.json` (written atomically after every change of state), lists
//! the installs with their state (pending, running, succeeded, failed) and the overrides, so
//! `--resume` picks up the newest unfinished rollout with the same overrides and runs what did
//! not succeed.
//!
//! The loop ([`drive`]) takes the install runner as a closure and the record writer as another,
//! so the rules (transitions, stop on failure, the cap) are unit-tested without agents.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::Poll;

use anyhow::{Context as _, anyhow, bail};
use serde::{Deserialize, Serialize};

/// The record directory's name under the config directory.
pub const DIR_NAME: &str = "rollouts";
/// The record format's version (refused when different).
pub const FORMAT_VERSION: u32 = 1;

/// The stack variables given on the command line, over every install's own.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overrides {
    pub keycloak_vars: BTreeMap<String, String>,
    pub kheops_vars: BTreeMap<String, String>,
}

impl Overrides {
    /// From `--keycloak-var`/`--kheops-var` lists (a later value of a name wins, as in
    /// `kctl provision`).
    pub fn new(keycloak: &[(String, String)], kheops: &[(String, String)]) -> Overrides {
        Overrides {
            keycloak_vars: keycloak.iter().cloned().collect(),
            kheops_vars: kheops.iter().cloned().collect(),
        }
    }

    /// The options that give these overrides again, e.g. ` --keycloak-var keycloak_version=26.5.6`.
    pub fn options(&self) -> String {
        let mut out = String::new();
        for (k, v) in &self.keycloak_vars {
            out.push_str(&format!(" --keycloak-var {k}={v}"));
        }
        for (k, v) in &self.kheops_vars {
            out.push_str(&format!(" --kheops-var {k}={v}"));
        }
        out
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl State {
    pub fn word(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Running => "running",
            State::Succeeded => "succeeded",
            State::Failed => "failed",
        }
    }
}

/// One install of a rollout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallState {
    pub name: String,
    pub state: State,
    /// How many times it was started (a resume retries a failed or interrupted one).
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub started: Option<String>,
    #[serde(default)]
    pub finished: Option<String>,
    /// Why the last attempt failed.
    #[serde(default)]
    pub error: Option<String>,
}

/// A rollout record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    pub version: u32,
    /// `YYYYMMDDTHHMMSSZ-xxxxxxxx`: sortable by creation time, the file's stem.
    pub id: String,
    pub created: String,
    pub updated: String,
    pub overrides: Overrides,
    /// In the order they run (the inventory's).
    pub installs: Vec<InstallState>,
}

impl Rollout {
    /// A new rollout of `installs`, all pending.
    pub fn new(id: String, now: &str, overrides: Overrides, installs: &[String]) -> Rollout {
        Rollout {
            version: FORMAT_VERSION,
            id,
            created: now.to_string(),
            updated: now.to_string(),
            overrides,
            installs: installs
                .iter()
                .map(|name| InstallState {
                    name: name.clone(),
                    state: State::Pending,
                    attempts: 0,
                    started: None,
                    finished: None,
                    error: None,
                })
                .collect(),
        }
    }

    /// Every install succeeded.
    pub fn finished(&self) -> bool {
        self.installs.iter().all(|i| i.state == State::Succeeded)
    }

    /// The installs a run starts, in order: every one that has not succeeded (a `running` one
    /// was interrupted: kctl stopped before it ended).
    pub fn to_run(&self) -> Vec<String> {
        self.installs
            .iter()
            .filter(|i| i.state != State::Succeeded)
            .map(|i| i.name.clone())
            .collect()
    }

    pub fn install_names(&self) -> Vec<String> {
        self.installs.iter().map(|i| i.name.clone()).collect()
    }

    fn entry(&mut self, name: &str) -> anyhow::Result<&mut InstallState> {
        let id = self.id.clone();
        self.installs
            .iter_mut()
            .find(|i| i.name == name)
            .ok_or_else(|| anyhow!("rollout {id} has no install `{name}`"))
    }

    /// pending, failed or (interrupted) running → running.
    pub fn start(&mut self, name: &str, now: &str) -> anyhow::Result<()> {
        let e = self.entry(name)?;
        if e.state == State::Succeeded {
            bail!("install `{name}` already succeeded in this rollout");
        }
        e.state = State::Running;
        e.attempts += 1;
        e.started = Some(now.to_string());
        e.finished = None;
        e.error = None;
        self.updated = now.to_string();
        Ok(())
    }

    /// running → succeeded (`error` None) or failed.
    pub fn finish(&mut self, name: &str, now: &str, error: Option<String>) -> anyhow::Result<()> {
        let e = self.entry(name)?;
        if e.state != State::Running {
            bail!(
                "install `{name}` is {}, not running: it cannot finish",
                e.state.word()
            );
        }
        e.state = if error.is_some() {
            State::Failed
        } else {
            State::Succeeded
        };
        e.finished = Some(now.to_string());
        e.error = error;
        self.updated = now.to_string();
        Ok(())
    }
}

/// A new rollout id at `now`.
pub fn new_id(now: time::OffsetDateTime) -> String {
    let t = now.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z-{:08x}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        rand::random::<u32>()
    )
}

/// The newest unfinished rollout (ids sort by creation time) with exactly these overrides;
/// when `only` is not empty, also with exactly these installs.
pub fn resumable<'a>(
    records: &'a [Rollout],
    overrides: &Overrides,
    only: &[String],
) -> Option<&'a Rollout> {
    let mut wanted: Vec<&String> = only.iter().collect();
    wanted.sort();
    wanted.dedup();
    records
        .iter()
        .filter(|r| !r.finished() && &r.overrides == overrides)
        .filter(|r| {
            if only.is_empty() {
                return true;
            }
            let mut have: Vec<&String> = r.installs.iter().map(|i| &i.name).collect();
            have.sort();
            have == wanted
        })
        .max_by(|a, b| a.id.cmp(&b.id))
}

// ---------------------------------------------------------------------------------------------
// Records on disk

/// `<config dir>/rollouts`.
pub fn dir(config_dir: &Path) -> PathBuf {
    config_dir.join(DIR_NAME)
}

pub fn path_of(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.json"))
}

/// Writes the record atomically (0600 in a 0700 directory); its path.
pub fn save(dir: &Path, r: &Rollout) -> anyhow::Result<PathBuf> {
    crate::files::create_private_dir(dir)?;
    let path = path_of(dir, &r.id);
    let mut text = serde_json::to_string_pretty(r).context("cannot encode the rollout record")?;
    text.push('\n');
    crate::files::write_atomic(&path, text.as_bytes(), 0o600)?;
    Ok(path)
}

/// Reads one record; a record that does not parse, has another format version or does not
/// match its file name is an error naming the file.
pub fn load(path: &Path) -> anyhow::Result<Rollout> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the rollout record {}", path.display()))?;
    let corrupt = |why: String| {
        anyhow!(
            "the rollout record {} is corrupt: {why}; move it aside (or delete it) to go on",
            path.display()
        )
    };
    let r: Rollout = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
    if r.version != FORMAT_VERSION {
        return Err(corrupt(format!(
            "format version {}, this kctl writes {FORMAT_VERSION}",
            r.version
        )));
    }
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
    if stem.as_deref() != Some(r.id.as_str()) {
        return Err(corrupt(format!("its id {:?} is not its file name", r.id)));
    }
    Ok(r)
}

/// Every record of `dir` (none when it does not exist), oldest first. Stops at a corrupt one:
/// it may be the rollout to resume.
pub fn load_all(dir: &Path) -> anyhow::Result<Vec<Rollout>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(anyhow!("cannot read {}: {e}", dir.display())),
    };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            // Temporary files of an interrupted write start with a dot.
            name.is_some_and(|n| !n.starts_with('.') && n.ends_with(".json"))
        })
        .collect();
    paths.sort();
    paths.iter().map(|p| load(p)).collect()
}

// ---------------------------------------------------------------------------------------------
// The loop

/// How a run of [`drive`] ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Succeeded in this run, in the order they finished.
    pub succeeded: Vec<String>,
    /// Failed in this run, with why.
    pub failed: Vec<(String, String)>,
    /// Not started because an install failed, in order.
    pub not_started: Vec<String>,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.failed.is_empty() && self.not_started.is_empty()
    }
}

/// Runs the installs of `rollout` that have not succeeded, in order, at most `max_parallel`
/// at once: marks each running, awaits `run(name)` (`Err(why)` is a failure), marks it
/// succeeded or failed, and hands the record to `save` after every change (an error there
/// ends the run: a rollout that cannot be recorded must not go on). After the first failure
/// no further install starts; those already running are awaited.
pub async fn drive<F, Fut>(
    rollout: &mut Rollout,
    max_parallel: usize,
    now: &dyn Fn() -> String,
    save: &mut dyn FnMut(&Rollout) -> anyhow::Result<()>,
    mut run: F,
) -> anyhow::Result<Outcome>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let max_parallel = max_parallel.max(1);
    let mut queue = rollout.to_run().into_iter();
    let mut running: Vec<(String, Pin<Box<Fut>>)> = Vec::new();
    let mut outcome = Outcome::default();
    let mut stopped = false;
    loop {
        while !stopped && running.len() < max_parallel {
            let Some(name) = queue.next() else { break };
            rollout.start(&name, &now())?;
            save(rollout)?;
            let fut = Box::pin(run(name.clone()));
            running.push((name, fut));
        }
        if running.is_empty() {
            break;
        }
        let (name, result) = std::future::poll_fn(|cx| {
            for i in 0..running.len() {
                if let Poll::Ready(r) = running[i].1.as_mut().poll(cx) {
                    let (name, _) = running.swap_remove(i);
                    return Poll::Ready((name, r));
                }
            }
            Poll::Pending
        })
        .await;
        match result {
            Ok(()) => {
                rollout.finish(&name, &now(), None)?;
                outcome.succeeded.push(name);
            }
            Err(why) => {
                rollout.finish(&name, &now(), Some(why.clone()))?;
                outcome.failed.push((name, why));
                stopped = true;
            }
        }
        save(rollout)?;
    }
    outcome.not_started = queue.collect();
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    fn ov(version: &str) -> Overrides {
        Overrides::new(&[("keycloak_version".into(), version.into())], &[])
    }

    fn states(r: &Rollout) -> Vec<(&str, State)> {
        r.installs
            .iter()
            .map(|i| (i.name.as_str(), i.state))
            .collect()
    }

    fn clock() -> impl Fn() -> String {
        let t = Cell::new(0u32);
        move || {
            t.set(t.get() + 1);
            format!("t{}", t.get())
        }
    }

    #[test]
    fn transitions_are_pending_running_then_succeeded_or_failed() -> anyhow::Result<()> {
        let mut r = Rollout::new("id".into(), "t0", ov("26.5.6"), &names(&["a", "b"]));
        assert_eq!(states(&r), [("a", State::Pending), ("b", State::Pending)]);
        // Finishing what did not start is refused.
        assert!(r.finish("a", "t1", None).is_err());
        r.start("a", "t1")?;
        r.finish("a", "t2", None)?;
        assert!(
            r.start("a", "t3").is_err(),
            "a succeeded install is not re-run"
        );
        r.start("b", "t3")?;
        r.finish("b", "t4", Some("boom".into()))?;
        assert_eq!(states(&r), [("a", State::Succeeded), ("b", State::Failed)]);
        assert_eq!(r.installs[1].error.as_deref(), Some("boom"));
        assert!(!r.finished());
        assert_eq!(r.to_run(), ["b"]);
        // Retried: running again, the error cleared, a second attempt.
        r.start("b", "t5")?;
        assert_eq!(r.installs[1].attempts, 2);
        assert_eq!(r.installs[1].error, None);
        r.finish("b", "t6", None)?;
        assert!(r.finished());
        assert_eq!(r.updated, "t6");
        assert!(r.start("nope", "t7").is_err());
        Ok(())
    }

    #[test]
    fn resume_picks_the_newest_unfinished_rollout_with_the_same_overrides() -> anyhow::Result<()> {
        let all = names(&["a", "b"]);
        let mut done = Rollout::new("20260101T000000Z-00000003".into(), "t", ov("26.5.6"), &all);
        for n in &all {
            done.start(n, "t")?;
            done.finish(n, "t", None)?;
        }
        let mut old = Rollout::new("20260101T000000Z-00000001".into(), "t", ov("26.5.6"), &all);
        old.start("a", "t")?;
        old.finish("a", "t", Some("x".into()))?;
        let mut newer = Rollout::new("20260101T000000Z-00000002".into(), "t", ov("26.5.6"), &all);
        newer.start("a", "t")?;
        newer.finish("a", "t", None)?;
        newer.start("b", "t")?;
        newer.finish("b", "t", Some("x".into()))?;
        let other = Rollout::new("20260101T000000Z-00000004".into(), "t", ov("26.0.0"), &all);
        let records = vec![done.clone(), old.clone(), newer.clone(), other.clone()];

        let r = resumable(&records, &ov("26.5.6"), &[]);
        assert_eq!(r.map(|r| r.id.as_str()), Some(newer.id.as_str()));
        assert_eq!(r.map(Rollout::to_run), Some(names(&["b"])), "a is skipped");
        assert_eq!(
            resumable(&records, &ov("26.0.0"), &[]).map(|r| r.to_run()),
            Some(all.clone())
        );
        // A finished rollout is never resumed.
        assert_eq!(resumable(&[done], &ov("26.5.6"), &[]), None);
        assert_eq!(resumable(&records, &ov("99"), &[]), None);
        assert_eq!(resumable(&records, &Overrides::default(), &[]), None);
        // With --install, only a rollout of exactly those installs.
        assert_eq!(resumable(&records, &ov("26.5.6"), &names(&["a"])), None);
        assert_eq!(
            resumable(&records, &ov("26.5.6"), &names(&["b", "a", "a"])).map(|r| r.id.as_str()),
            Some(newer.id.as_str())
        );
        Ok(())
    }

    #[test]
    fn records_round_trip_and_a_corrupt_one_is_named() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let d = dir.path().join(DIR_NAME);
        assert!(load_all(&d)?.is_empty(), "no directory: no records");
        let id = new_id(time::OffsetDateTime::now_utc());
        assert_eq!(id.len(), "20260101T000000Z-00000000".len(), "{id}");
        let mut r = Rollout::new(id.clone(), "t0", ov("26.5.6"), &names(&["a", "b"]));
        r.start("a", "t1")?;
        let path = save(&d, &r)?;
        assert_eq!(path, d.join(format!("{id}.json")));
        assert_eq!(load_all(&d)?, vec![r.clone()]);
        let text = std::fs::read_to_string(&path)?;
        assert!(text.contains("\"state\": \"running\""), "{text}");
        assert!(text.contains("\"keycloak_version\": \"26.5.6\""), "{text}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path)?.permissions().mode() & 0o777,
            0o600
        );
        // A leftover temporary file is not a record.
        std::fs::write(d.join(".x.json.tmp1"), "garbage")?;
        assert_eq!(load_all(&d)?.len(), 1);

        let bad = d.join("20250101T000000Z-deadbeef.json");
        std::fs::write(&bad, "{\"version\": 1, \"id\": ")?;
        let err = format!("{:#}", load_all(&d).err().unwrap_or_else(|| anyhow!("")));
        assert!(
            err.contains(&bad.display().to_string()) && err.contains("corrupt"),
            "{err}"
        );
        // Valid JSON under the wrong name is corrupt too.
        std::fs::write(&bad, &text)?;
        let err = format!("{:#}", load(&bad).err().unwrap_or_else(|| anyhow!("")));
        assert!(err.contains("not its file name"), "{err}");
        Ok(())
    }

    /// Runs `drive` over a scripted runner: `fails` fail, the others succeed; records every
    /// saved state and the order the runner was called in.
    async fn scripted(
        r: &mut Rollout,
        max: usize,
        fails: &[&str],
    ) -> anyhow::Result<(Outcome, Vec<String>, Vec<Vec<(String, State)>>)> {
        let called = Rc::new(RefCell::new(Vec::new()));
        let mut saved = Vec::new();
        let fails: Vec<String> = names(fails);
        let now = clock();
        let c = called.clone();
        let outcome = drive(
            r,
            max,
            &now,
            &mut |r| {
                saved.push(
                    r.installs
                        .iter()
                        .map(|i| (i.name.clone(), i.state))
                        .collect(),
                );
                Ok(())
            },
            |name| {
                c.borrow_mut().push(name.clone());
                let fail = fails.contains(&name);
                async move {
                    tokio::task::yield_now().await;
                    if fail {
                        Err(format!("{name} broke"))
                    } else {
                        Ok(())
                    }
                }
            },
        )
        .await?;
        let called = called.borrow().clone();
        Ok((outcome, called, saved))
    }

    #[tokio::test]
    async fn the_loop_stops_at_the_first_failure_and_a_resume_runs_only_what_did_not_succeed()
    -> anyhow::Result<()> {
        let all = names(&["a", "b", "c"]);
        let mut r = Rollout::new("id".into(), "t0", ov("26.5.6"), &all);
        let (o, called, saved) = scripted(&mut r, 1, &["b"]).await?;
        assert_eq!(called, ["a", "b"], "c is not started after b failed");
        assert_eq!(o.succeeded, ["a"]);
        assert_eq!(o.failed, [("b".to_string(), "b broke".to_string())]);
        assert_eq!(o.not_started, ["c"]);
        assert!(!o.ok());
        assert_eq!(
            states(&r),
            [
                ("a", State::Succeeded),
                ("b", State::Failed),
                ("c", State::Pending)
            ]
        );
        // Every change was recorded, the running state before the install ran.
        let s = |a: State, b: State, c: State| {
            vec![
                ("a".to_string(), a),
                ("b".to_string(), b),
                ("c".to_string(), c),
            ]
        };
        use State::*;
        assert_eq!(
            saved,
            [
                s(Running, Pending, Pending),
                s(Succeeded, Pending, Pending),
                s(Succeeded, Running, Pending),
                s(Succeeded, Failed, Pending),
            ]
        );

        // Resumed (b fixed): a is skipped, b and c run.
        let (o, called, _) = scripted(&mut r, 1, &[]).await?;
        assert_eq!(called, ["b", "c"]);
        assert!(o.ok(), "{o:?}");
        assert!(r.finished());
        assert_eq!(r.installs[1].attempts, 2);
        assert_eq!(r.installs[0].attempts, 1);
        // A finished rollout runs nothing.
        let (o, called, saved) = scripted(&mut r, 1, &[]).await?;
        assert!(called.is_empty() && saved.is_empty() && o.ok());
        Ok(())
    }

    #[tokio::test]
    async fn the_loop_runs_at_most_max_parallel_and_lets_running_installs_end() -> anyhow::Result<()>
    {
        let all = names(&["a", "b", "c", "d", "e"]);
        let mut r = Rollout::new("id".into(), "t0", Overrides::default(), &all);
        let in_flight = Rc::new(Cell::new(0usize));
        let peak = Rc::new(Cell::new(0usize));
        let now = clock();
        let (f, p) = (in_flight.clone(), peak.clone());
        let o = drive(&mut r, 2, &now, &mut |_| Ok(()), |name| {
            let (f, p) = (f.clone(), p.clone());
            async move {
                f.set(f.get() + 1);
                p.set(p.get().max(f.get()));
                // b takes longer than a and c: a ends, c starts next to b and fails.
                let rounds = if name == "b" { 5 } else { 1 };
                for _ in 0..rounds {
                    tokio::task::yield_now().await;
                }
                f.set(f.get() - 1);
                if name == "c" {
                    Err("c broke".to_string())
                } else {
                    Ok(())
                }
            }
        })
        .await?;
        assert_eq!(peak.get(), 2, "never more than two at once");
        // c failed while b ran: b is awaited and succeeds, d and e never start.
        assert_eq!(o.failed, [("c".to_string(), "c broke".to_string())]);
        assert!(o.succeeded.contains(&"b".to_string()), "{o:?}");
        assert_eq!(o.not_started, ["d", "e"]);
        assert_eq!(
            states(&r),
            [
                ("a", State::Succeeded),
                ("b", State::Succeeded),
                ("c", State::Failed),
                ("d", State::Pending),
                ("e", State::Pending)
            ]
        );

        // A record that cannot be written ends the run before the install starts.
        let mut r = Rollout::new("id2".into(), "t0", Overrides::default(), &all);
        let ran = Cell::new(false);
        let err = drive(&mut r, 1, &now, &mut |_| Err(anyhow!("disk full")), |_| {
            ran.set(true);
            async { Ok(()) }
        })
        .await;
        assert!(err.is_err() && !ran.get());
        Ok(())
    }
}
