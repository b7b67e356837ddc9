//! A damaged journal (garbage appended, last record cut, a file of noise) does not keep the
//! agent from starting, and the operation is still listed.

use std::io::Write;

use kagent_proto::v1::OperationState;
use kagent_tests::*;

/// Applies 3 files, stops the agent and returns the operation id and its journal file.
async fn one_operation(pki: &Pki, agent: &mut Agent) -> (String, std::path::PathBuf) {
    let mut c = admin(pki, agent).await;
    let spec = host_spec(
        (0..3)
            .map(|i| file(&format!("c{i}"), &agent.root.join(format!("c{i}")), "c\n"))
            .collect(),
    );
    let events = apply_events(&mut c, spec).await;
    drop(c);
    let op = op_id(&events);
    agent.stop();
    let journals = agent.journal_files();
    let path = journals
        .iter()
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().contains(&op))
        })
        .unwrap_or_else(|| panic!("no journal file names operation {op}: {journals:?}"))
        .clone();
    assert!(
        path.extension().is_some_and(|e| e == "log"),
        "journal/<operation_id>.log: {}",
        path.display()
    );
    (op, path)
}

async fn still_listed_and_working(pki: &Pki, agent: &mut Agent, op: &str) -> OperationState {
    agent.start();
    let mut c = admin(pki, agent).await;
    let ops = list_operations(&mut c).await;
    let s = ops
        .iter()
        .find(|o| o.operation_id == op)
        .unwrap_or_else(|| panic!("operation {op} not listed after journal damage: {ops:#?}"));
    let st = OperationState::try_from(s.state).unwrap_or(OperationState::Unspecified);
    assert!(
        matches!(st, OperationState::Succeeded | OperationState::Interrupted),
        "a damaged finished operation reads succeeded or interrupted, not {st:?}"
    );
    // Its events still replay (the readable prefix), ending with an OperationFinished.
    let replay = watch_events(&mut c, op, 0).await;
    assert_contiguous(&replay, 0);
    started(&replay);
    finished(&replay);
    // And the agent still works.
    let p = agent.root.join("after.txt");
    let events = apply_events(&mut c, host_spec(vec![file("after", &p, "ok\n")])).await;
    assert_eq!(state(&finished(&events)), OperationState::Succeeded);
    assert_eq!(std::fs::read(&p).unwrap(), b"ok\n");
    st
}

#[tokio::test]
async fn garbage_appended_to_a_journal() {
    let pki = Pki::new();
    let mut agent = Agent::start_new(&pki);
    let (op, path) = one_operation(&pki, &mut agent).await;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(b"\x00\xff\x13garbage\x7f\x00\x00\x00\x01not a record at all\n\xde\xad\xbe\xef")
        .unwrap();
    drop(f);
    // And a journal file that is noise from its first byte.
    std::fs::write(
        agent.state_dir.join("journal/garbage.log"),
        b"\xde\xad\xbe\xef noise",
    )
    .unwrap();
    let st = still_listed_and_working(&pki, &mut agent, &op).await;
    assert_eq!(
        st,
        OperationState::Succeeded,
        "the whole journal before the garbage is intact"
    );
}

#[tokio::test]
async fn last_record_truncated() {
    let pki = Pki::new();
    let mut agent = Agent::start_new(&pki);
    let (op, path) = one_operation(&pki, &mut agent).await;
    let len = std::fs::metadata(&path).unwrap().len();
    assert!(len > 16, "journal too short to truncate: {len}");
    // Cut the last record (OperationFinished) in its middle.
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len - 5).unwrap();
    drop(f);
    still_listed_and_working(&pki, &mut agent, &op).await;
}
