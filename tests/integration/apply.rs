//! Plan, apply, idempotence and updates of file and secret resources.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use kagent_proto::v1::{Action, Alphabet, File, HostSpec, OperationState, Resource};
use kagent_tests::*;

/// 3 files + 1 secret under the agent's root, with a variety of modes and owners.
pub struct Fixture {
    pub one: PathBuf,
    pub two: PathBuf,
    pub three: PathBuf,
    pub secret: PathBuf,
}

impl Fixture {
    pub fn new(root: &Path) -> Fixture {
        Fixture {
            one: root.join("app/one.conf"),
            two: root.join("app/two.conf"),
            three: root.join("other/deep/three.env"),
            secret: root.join("secrets/db.secret"),
        }
    }

    pub fn resources(&self, two_content: &str) -> Vec<Resource> {
        vec![
            file_res(
                "one",
                File {
                    path: self.one.to_string_lossy().into_owned(),
                    content: b"one\n".to_vec(),
                    mode: Some(0o640),
                    uid: Some(1234),
                    gid: Some(4321),
                    ..File::default()
                },
            ),
            file("two", &self.two, two_content),
            file_res(
                "three",
                File {
                    path: self.three.to_string_lossy().into_owned(),
                    content: b"X=3\n".to_vec(),
                    mode: Some(0o600),
                    dir_mode: Some(0o750),
                    ..File::default()
                },
            ),
            secret("db", &self.secret, 24, Alphabet::Hex),
        ]
    }

    pub fn spec(&self, two_content: &str) -> HostSpec {
        host_spec(self.resources(two_content))
    }

    pub fn paths(&self) -> [&PathBuf; 4] {
        [&self.one, &self.two, &self.three, &self.secret]
    }
}

pub const TWO: &str = "line one\nline two\n";
const NAMES: [&str; 4] = ["one", "two", "three", "db"];

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
        .mode()
        & 0o7777
}

/// (inode, mtime seconds, mtime nanoseconds)
fn stamp(p: &Path) -> (u64, i64, i64) {
    let m = std::fs::metadata(p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
    (m.ino(), m.mtime(), m.mtime_nsec())
}

fn names_with(actions: &[(String, Action)], want: Action) -> Vec<String> {
    actions
        .iter()
        .filter(|(_, a)| *a == want)
        .map(|(n, _)| n.clone())
        .collect()
}

#[tokio::test]
async fn dry_run_plans_creates_and_changes_nothing() {
    let pki = Pki::new();
    let agent = Agent::start_new(&pki);
    let mut c = admin(&pki, &agent).await;
    let fx = Fixture::new(&agent.root);
    let events = apply(&mut c, fx.spec(TWO), true)
        .await
        .unwrap_or_else(|s| panic!("dry-run failed: {s:?}"));
    assert_contiguous(&events, 0);
    let st = started(&events);
    assert!(st.dry_run, "OperationStarted.dry_run must be true: {st:?}");
    assert_eq!(st.resources, 4);
    let plan = planned_actions(&events);
    let want: Vec<(String, Action)> = NAMES
        .iter()
        .map(|n| (n.to_string(), Action::Create))
        .collect();
    assert_eq!(plan, want, "dry-run plan");
    assert!(
        done(&events).is_empty(),
        "a dry run must not report ResourceDone: {events:#?}"
    );
    assert_eq!(
        events.len(),
        6,
        "dry run = started + 4 planned + finished: {events:#?}"
    );
    assert_eq!(state(&finished(&events)), OperationState::Succeeded);
    for p in fx.paths() {
        assert!(!p.exists(), "dry run created {}", p.display());
    }
    let left: Vec<_> = std::fs::read_dir(&agent.root)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(
        left.is_empty(),
        "dry run created entries under the root: {left:?}"
    );
}

#[tokio::test]
async fn apply_creates_then_second_apply_changes_nothing() {
    let pki = Pki::new();
    let agent = Agent::start_new(&pki);
    let mut c = admin(&pki, &agent).await;
    let fx = Fixture::new(&agent.root);

    let events = apply_events(&mut c, fx.spec(TWO)).await;
    assert_contiguous(&events, 0);
    assert!(!started(&events).dry_run);
    let fin = finished(&events);
    assert_eq!(state(&fin), OperationState::Succeeded, "{fin:?}");
    let counts = fin.counts.unwrap_or_default();
    assert_eq!(
        (
            counts.create,
            counts.update,
            counts.unchanged,
            counts.failed
        ),
        (4, 0, 0, 0)
    );
    let want: Vec<(String, Action)> = NAMES
        .iter()
        .map(|n| (n.to_string(), Action::Create))
        .collect();
    assert_eq!(planned_actions(&events), want);
    assert_eq!(done_actions(&events), want);

    // Content, mode, owner, parent directories.
    assert_eq!(std::fs::read(&fx.one).unwrap(), b"one\n");
    assert_eq!(std::fs::read(&fx.two).unwrap(), TWO.as_bytes());
    assert_eq!(std::fs::read(&fx.three).unwrap(), b"X=3\n");
    assert_eq!(mode(&fx.one), 0o640);
    assert_eq!(mode(&fx.two), 0o644, "default file mode");
    assert_eq!(mode(&fx.three), 0o600);
    assert_eq!(mode(&fx.secret), 0o600, "default secret mode");
    let m1 = std::fs::metadata(&fx.one).unwrap();
    assert_eq!((m1.uid(), m1.gid()), (1234, 4321), "owner of one.conf");
    let m2 = std::fs::metadata(&fx.two).unwrap();
    assert_eq!((m2.uid(), m2.gid()), (0, 0), "default owner");
    assert_eq!(mode(&agent.root.join("app")), 0o755, "default dir mode");
    assert_eq!(
        mode(&agent.root.join("other")),
        0o750,
        "dir_mode applies to every new parent"
    );
    assert_eq!(mode(&agent.root.join("other/deep")), 0o750);
    assert_eq!(
        mode(&agent.root.join("secrets")),
        0o700,
        "default secret dir mode"
    );

    let before: Vec<_> = fx.paths().iter().map(|p| stamp(p)).collect();
    let secret_before = std::fs::read(&fx.secret).unwrap();

    let again = apply_events(&mut c, fx.spec(TWO)).await;
    let fin = finished(&again);
    assert_eq!(state(&fin), OperationState::Succeeded, "{fin:?}");
    let counts = fin.counts.unwrap_or_default();
    assert_eq!(
        (counts.create, counts.update, counts.unchanged),
        (0, 0, 4),
        "{counts:?}"
    );
    let want: Vec<(String, Action)> = NAMES
        .iter()
        .map(|n| (n.to_string(), Action::Unchanged))
        .collect();
    assert_eq!(planned_actions(&again), want, "second apply plan");
    for (name, a) in done_actions(&again) {
        assert_eq!(a, Action::Unchanged, "second apply did something to {name}");
    }
    let after: Vec<_> = fx.paths().iter().map(|p| stamp(p)).collect();
    assert_eq!(
        before, after,
        "an unchanged apply must not rewrite files (inode, mtime s, ns)"
    );
    assert_eq!(std::fs::read(&fx.secret).unwrap(), secret_before);
}

#[tokio::test]
async fn changing_one_file_updates_exactly_that_file() {
    let pki = Pki::new();
    let agent = Agent::start_new(&pki);
    let mut c = admin(&pki, &agent).await;
    let fx = Fixture::new(&agent.root);
    apply_events(&mut c, fx.spec(TWO)).await;
    let untouched = [&fx.one, &fx.three, &fx.secret];
    let before: Vec<_> = untouched.iter().map(|p| stamp(p)).collect();

    let new_two = "line one\nline 2\n";
    let events = apply_events(&mut c, fx.spec(new_two)).await;
    let plan = planned_actions(&events);
    assert_eq!(
        names_with(&plan, Action::Update),
        vec!["two".to_string()],
        "plan: {plan:?}"
    );
    assert_eq!(
        names_with(&plan, Action::Unchanged).len(),
        3,
        "plan: {plan:?}"
    );
    let p = planned(&events)
        .into_iter()
        .find(|p| p.resource.as_ref().is_some_and(|r| r.name == "two"))
        .unwrap();
    assert!(
        p.diff.contains("line 2") && p.diff.contains("line two"),
        "the diff must show the old and the new line: {:?}",
        p.diff
    );
    assert!(!p.diff.contains("line one\nline one"), "diff: {:?}", p.diff);
    assert_eq!(
        names_with(&done_actions(&events), Action::Update),
        vec!["two".to_string()]
    );
    let counts = finished(&events).counts.unwrap_or_default();
    assert_eq!(
        (counts.create, counts.update, counts.unchanged),
        (0, 1, 3),
        "{counts:?}"
    );
    assert_eq!(std::fs::read(&fx.two).unwrap(), new_two.as_bytes());
    let after: Vec<_> = untouched.iter().map(|p| stamp(p)).collect();
    assert_eq!(before, after, "only two.conf may be rewritten");
}

#[tokio::test]
async fn mode_change_and_drift_on_disk_are_updated() {
    let pki = Pki::new();
    let agent = Agent::start_new(&pki);
    let mut c = admin(&pki, &agent).await;
    let fx = Fixture::new(&agent.root);
    apply_events(&mut c, fx.spec(TWO)).await;

    // Someone edits a file and chmods another behind the agent's back: the agent reads the
    // host, not its journal, so the next apply repairs both.
    std::fs::write(&fx.two, "tampered\n").unwrap();
    std::fs::set_permissions(
        &fx.three,
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    let events = apply_events(&mut c, fx.spec(TWO)).await;
    let plan = planned_actions(&events);
    let mut updated = names_with(&plan, Action::Update);
    updated.sort();
    assert_eq!(
        updated,
        vec!["three".to_string(), "two".to_string()],
        "plan: {plan:?}"
    );
    let three = planned(&events)
        .into_iter()
        .find(|p| p.resource.as_ref().is_some_and(|r| r.name == "three"))
        .unwrap();
    assert!(
        three.diff.contains("mode") || three.diff.contains("600"),
        "a mode change must show in the diff: {three:?}"
    );
    assert_eq!(std::fs::read(&fx.two).unwrap(), TWO.as_bytes());
    assert_eq!(mode(&fx.three), 0o600);
}
