//! SIGTERM during an apply: STOPPING=1, the operation stops at a resource boundary, is
//! journaled interrupted, and the agent exits 0.

use std::time::{Duration, Instant};

use kagent_proto::v1::event::Payload;
use kagent_proto::v1::{ApplyRequest, OperationState};
use kagent_tests::*;

// Multi-threaded: while the test thread waits for the process to exit, the client task keeps
// reading its stream, as a real caller (kctl) does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_apply_exits_zero_and_interrupts() {
    let pki = Pki::new();
    let mut agent = Agent::builder(&pki)
        .env("KAGENT_DEBUG_STEP_DELAY_MS", "300")
        .start();
    let mut c = admin(&pki, &agent).await;
    // 30 resources x 300 ms = 9 s: far longer than the time to the SIGTERM.
    let paths: Vec<_> = (0..30)
        .map(|i| agent.root.join(format!("t/f{i}")))
        .collect();
    let spec = host_spec(
        paths
            .iter()
            .enumerate()
            .map(|(i, p)| file(&format!("f{i}"), p, "t\n"))
            .collect(),
    );
    let mut stream = c
        .apply(ApplyRequest {
            spec: Some(spec),
            dry_run: false,
        })
        .await
        .unwrap_or_else(|s| panic!("Apply refused: {s:?}"))
        .into_inner();
    let mut live = Vec::new();
    let first_done = async {
        while let Some(ev) = stream.message().await.expect("stream error before SIGTERM") {
            let is_done = matches!(ev.payload, Some(Payload::Done(_)));
            live.push(ev);
            if is_done {
                return;
            }
        }
        panic!("stream ended before the first ResourceDone");
    };
    tokio::time::timeout(Duration::from_secs(20), first_done)
        .await
        .expect("first ResourceDone");
    let op = op_id(&live);
    // Keep reading the live stream in the background until it ends.
    let reader = tokio::spawn(async move {
        let mut rest = Vec::new();
        while let Ok(Some(ev)) = stream.message().await {
            rest.push(ev);
        }
        rest
    });

    let t0 = Instant::now();
    let status = agent.sigterm(Duration::from_secs(5));
    let took = t0.elapsed();
    let status = status.unwrap_or_else(|| {
        panic!(
            "kagent still runs 5 s after SIGTERM (its client reads the stream); stderr:\n{}",
            agent.stderr()
        )
    });
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM; stderr:\n{}",
        agent.stderr()
    );
    assert!(
        agent.notifications().iter().any(|m| m == "STOPPING=1"),
        "no STOPPING=1 on the notify socket: {:?}",
        agent.notifications()
    );
    // The live stream ends, with OperationFinished(interrupted) as its last event.
    let rest = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the stream did not end after the agent exited")
        .expect("reader task");
    live.extend(rest);
    match live.last().and_then(|e| e.payload.clone()) {
        Some(Payload::Finished(f)) => {
            assert_eq!(
                state(&f),
                OperationState::Interrupted,
                "live finish after SIGTERM"
            )
        }
        other => panic!("the live stream did not end with OperationFinished: {other:?}"),
    }
    let written = paths.iter().filter(|p| p.exists()).count();
    assert!(
        written < 30,
        "all files were written although the agent stopped ({took:?})"
    );

    drop(c);
    agent.remove_env("KAGENT_DEBUG_STEP_DELAY_MS");
    agent.start();
    let mut c = admin(&pki, &agent).await;
    let ops = list_operations(&mut c).await;
    let s = ops
        .iter()
        .find(|o| o.operation_id == op)
        .unwrap_or_else(|| panic!("operation {op} not listed: {ops:#?}"));
    assert_eq!(
        OperationState::try_from(s.state).ok(),
        Some(OperationState::Interrupted),
        "{s:#?}"
    );
    let replay = watch_events(&mut c, &op, 0).await;
    assert_eq!(state(&finished(&replay)), OperationState::Interrupted);
    // Stopped at a resource boundary: every resource reported done is on disk, whole.
    for d in done(&replay) {
        let name = d.resource.unwrap_or_default().name;
        let i: usize = name.trim_start_matches('f').parse().unwrap();
        assert_eq!(std::fs::read(&paths[i]).unwrap(), b"t\n", "{name}");
    }
    let counts = finished(&replay).counts.unwrap_or_default();
    assert!(
        counts.skipped > 0,
        "the resources not reached count as skipped: {counts:?}"
    );
}

#[tokio::test]
async fn sigterm_with_a_stalled_client_still_exits() {
    // A caller that stops reading its stream (a hung kctl) must not keep the agent from
    // stopping: it exits 0 after a bounded drain, well inside systemd's TimeoutStopSec.
    let pki = Pki::new();
    let mut agent = Agent::builder(&pki)
        .env("KAGENT_DEBUG_STEP_DELAY_MS", "300")
        .start();
    let mut c = admin(&pki, &agent).await;
    let spec = host_spec(
        (0..30)
            .map(|i| file(&format!("s{i}"), &agent.root.join(format!("s/{i}")), "s\n"))
            .collect(),
    );
    let mut stream = c
        .apply(ApplyRequest {
            spec: Some(spec),
            dry_run: false,
        })
        .await
        .unwrap_or_else(|s| panic!("Apply refused: {s:?}"))
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("first event")
        .expect("stream");
    assert!(first.is_some());
    // This (current-thread) runtime now blocks in sigterm(): nobody reads the stream.
    let t0 = Instant::now();
    let status = agent.sigterm(Duration::from_secs(15));
    let status = status.unwrap_or_else(|| {
        panic!(
            "kagent still runs 15 s after SIGTERM with a stalled client; stderr:\n{}",
            agent.stderr()
        )
    });
    assert_eq!(status.code(), Some(0), "stderr:\n{}", agent.stderr());
    assert!(t0.elapsed() < Duration::from_secs(15));
}
