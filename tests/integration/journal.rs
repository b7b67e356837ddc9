//! The journal: a SIGKILLed operation is reported interrupted after restart, its events replay,
//! and a re-apply converges.

use std::time::Duration;

use kagent_proto::v1::event::Payload;
use kagent_proto::v1::{Action, ApplyRequest, Event, OperationState};
use kagent_tests::*;
use tonic::Code;

const DELAY: &str = "KAGENT_DEBUG_STEP_DELAY_MS";

#[tokio::test]
async fn sigkill_mid_apply_is_interrupted_and_reapply_converges() {
    let pki = Pki::new();
    let mut agent = Agent::builder(&pki).env(DELAY, "300").start();
    let mut c = admin(&pki, &agent).await;
    let paths: Vec<_> = (0..10)
        .map(|i| agent.root.join(format!("j/f{i}.txt")))
        .collect();
    let spec = host_spec(
        paths
            .iter()
            .enumerate()
            .map(|(i, p)| file(&format!("f{i}"), p, format!("content {i}\n")))
            .collect(),
    );

    // Follow the live stream until two resources are done, then SIGKILL.
    let mut stream = c
        .apply(ApplyRequest {
            spec: Some(spec.clone()),
            dry_run: false,
        })
        .await
        .unwrap_or_else(|s| panic!("Apply refused: {s:?}"))
        .into_inner();
    let mut live: Vec<Event> = Vec::new();
    let read = async {
        while let Some(ev) = stream
            .message()
            .await
            .expect("stream error before the kill")
        {
            let is_done = matches!(ev.payload, Some(Payload::Done(_)));
            let finished = matches!(ev.payload, Some(Payload::Finished(_)));
            live.push(ev);
            assert!(
                !finished,
                "the operation finished before the kill: {live:#?}"
            );
            if is_done && done(&live).len() >= 2 {
                return;
            }
        }
        panic!("stream ended before two resources were done: {live:#?}");
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("two ResourceDone in 30 s");
    agent.kill9();
    drop(stream);
    drop(c);
    let op = op_id(&live);

    // Which files made it to disk before the kill (at least the two reported done).
    let written: Vec<bool> = paths.iter().map(|p| p.exists()).collect();
    let n_written = written.iter().filter(|w| **w).count();
    assert!(n_written >= 2, "files on disk after the kill: {written:?}");
    assert!(
        n_written < 10,
        "all files were written before the kill: {written:?}"
    );
    for (i, p) in paths.iter().enumerate() {
        if written[i] {
            assert_eq!(
                std::fs::read_to_string(p).unwrap(),
                format!("content {i}\n")
            );
        }
    }

    agent.remove_env(DELAY);
    agent.start();
    let mut c = admin(&pki, &agent).await;
    let ops = list_operations(&mut c).await;
    let summary = ops
        .iter()
        .find(|o| o.operation_id == op)
        .unwrap_or_else(|| panic!("operation {op} not listed after restart: {ops:#?}"));
    assert_eq!(
        OperationState::try_from(summary.state).ok(),
        Some(OperationState::Interrupted),
        "{summary:#?}"
    );
    assert!(
        summary.finished.is_some(),
        "an interrupted operation has a finish time"
    );

    // Replay from 0: every event seen live was journaled first, then the interruption.
    let replay = watch_events(&mut c, &op, 0).await;
    assert_contiguous(&replay, 0);
    assert!(
        replay.len() > live.len(),
        "replay {replay:#?}\nlive {live:#?}"
    );
    for (l, r) in live.iter().zip(&replay) {
        assert_eq!(l, r, "a replayed event differs from the live one");
    }
    assert!(done(&replay).len() >= 2);
    let fin = finished(&replay);
    assert_eq!(state(&fin), OperationState::Interrupted, "{fin:?}");
    assert_eq!(
        replay
            .iter()
            .filter(|e| matches!(e.payload, Some(Payload::Finished(_))))
            .count(),
        1,
        "one OperationFinished"
    );
    assert_eq!(
        summary.events,
        replay.len() as u64,
        "summary.events = journaled events"
    );

    // Re-apply the same spec without the delay: converges.
    let events = apply_events(&mut c, spec).await;
    assert_eq!(state(&finished(&events)), OperationState::Succeeded);
    let plan = planned_actions(&events);
    for (i, (name, action)) in plan.iter().enumerate() {
        let want = if written[i] {
            Action::Unchanged
        } else {
            Action::Create
        };
        assert_eq!(*action, want, "{name} (on disk before: {})", written[i]);
    }
    assert_eq!(plan.len(), 10);
    for (i, p) in paths.iter().enumerate() {
        assert_eq!(
            std::fs::read_to_string(p).unwrap(),
            format!("content {i}\n")
        );
    }
}

#[tokio::test]
async fn watch_from_index_and_unknown_operation() {
    let pki = Pki::new();
    let agent = Agent::start_new(&pki);
    let mut c = admin(&pki, &agent).await;
    let spec = host_spec(
        (0..3)
            .map(|i| file(&format!("w{i}"), &agent.root.join(format!("w{i}")), "w\n"))
            .collect(),
    );
    let events = apply_events(&mut c, spec).await;
    assert_contiguous(&events, 0);
    let op = op_id(&events);
    assert!(
        events.len() >= 8,
        "started + 3 planned + 3 done + finished: {events:#?}"
    );

    let all = watch_events(&mut c, &op, 0).await;
    assert_eq!(all, events, "a replay from 0 equals the live stream");
    for k in [1u64, 3, events.len() as u64 - 1] {
        let part = watch_events(&mut c, &op, k).await;
        assert_eq!(part.as_slice(), &events[k as usize..], "from_index {k}");
    }

    let r = watch(&mut c, "no-such-operation", 0).await;
    match r {
        Err(s) => assert_eq!(s.code(), Code::NotFound, "{s:?}"),
        Ok(ev) => panic!("an unknown operation id was accepted: {ev:#?}"),
    }
}
