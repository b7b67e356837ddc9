//! `kctl ops HOST`: the agent's operation history as a table or one JSON document.

use kagent_proto::v1;
use serde_json::{Value, json};

use super::events::counts_human;
use super::{
    Table, counts_json, duration_ms, from_proto, proto_timestamp, proto_timestamp_json, truncate,
};

/// Longest error shown in the table; `--output json` has the whole text.
const ERROR_WIDTH: usize = 60;

fn state(op: &v1::OperationSummary) -> v1::OperationState {
    v1::OperationState::try_from(op.state).unwrap_or(v1::OperationState::Unspecified)
}

/// Milliseconds from start to finish, when both are known.
fn duration(op: &v1::OperationSummary) -> Option<u64> {
    let started = from_proto(op.started.as_ref())?;
    let finished = from_proto(op.finished.as_ref())?;
    u64::try_from((finished - started).whole_milliseconds()).ok()
}

/// The history as a table, newest first (the agent's order).
pub fn operations_human(ops: &[v1::OperationSummary]) -> String {
    if ops.is_empty() {
        return "no operations yet\n".to_string();
    }
    let mut t = Table::new([
        "ID", "STATE", "DRY-RUN", "CALLER", "STARTED", "DURATION", "COUNTS", "ERROR",
    ]);
    for op in ops {
        let duration = match (duration(op), state(op)) {
            (Some(ms), _) => duration_ms(ms),
            (None, v1::OperationState::Running) => "running".to_string(),
            (None, _) => "-".to_string(),
        };
        t.row([
            op.operation_id.clone(),
            state(op).word().to_string(),
            if op.dry_run { "yes" } else { "no" }.to_string(),
            op.caller.clone(),
            proto_timestamp(op.started.as_ref()),
            duration,
            counts_human(op.counts.as_ref(), op.dry_run),
            truncate(&op.error, ERROR_WIDTH),
        ]);
    }
    t.render()
}

/// The history as `{"operations": [...]}`.
pub fn operations_json(ops: &[v1::OperationSummary]) -> Value {
    let list: Vec<Value> = ops
        .iter()
        .map(|op| {
            json!({
                "operation_id": op.operation_id,
                "state": state(op).word(),
                "dry_run": op.dry_run,
                "caller": op.caller,
                "started": proto_timestamp_json(op.started.as_ref()),
                "finished": proto_timestamp_json(op.finished.as_ref()),
                "duration_ms": duration(op),
                "counts": counts_json(op.counts.as_ref()),
                "error": op.error,
                "events": op.events,
            })
        })
        .collect();
    json!({ "operations": list })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(seconds: i64, nanos: i32) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos })
    }

    fn sample() -> Vec<v1::OperationSummary> {
        vec![
            v1::OperationSummary {
                operation_id: "op-3".into(),
                state: v1::OperationState::Running as i32,
                dry_run: false,
                caller: "CN=alice,O=admin".into(),
                started: ts(1_777_627_800, 0),
                finished: None,
                counts: Some(v1::Counts::default()),
                error: String::new(),
                events: 2,
            },
            v1::OperationSummary {
                operation_id: "op-2".into(),
                state: v1::OperationState::Failed as i32,
                dry_run: false,
                caller: "CN=alice,O=admin".into(),
                started: ts(1_777_627_700, 0),
                finished: ts(1_777_627_703, 400_000_000),
                counts: Some(v1::Counts {
                    create: 3,
                    failed: 1,
                    skipped: 1,
                    ..Default::default()
                }),
                error: "file/conf: permission denied\nmore".into(),
                events: 9,
            },
            v1::OperationSummary {
                operation_id: "op-1".into(),
                state: v1::OperationState::Succeeded as i32,
                dry_run: true,
                caller: "CN=bob,O=viewer".into(),
                started: ts(1_777_627_600, 0),
                finished: ts(1_777_627_600, 12_000_000),
                counts: Some(v1::Counts {
                    create: 2,
                    ..Default::default()
                }),
                error: String::new(),
                events: 4,
            },
        ]
    }

    #[test]
    fn history_table() {
        assert_eq!(
            operations_human(&sample()),
            "\
ID    STATE      DRY-RUN  CALLER            STARTED               DURATION  COUNTS                                               ERROR
op-3  running    no       CN=alice,O=admin  2026-05-01T09:30:00Z  running   no resources
op-2  failed     no       CN=alice,O=admin  2026-05-01T09:28:20Z  3.4 s     1 of 3 planned changes applied, 1 failed, 1 skipped  file/conf: permission denied more
op-1  succeeded  yes      CN=bob,O=viewer   2026-05-01T09:26:40Z  12 ms     2 to create
"
        );
        assert_eq!(operations_human(&[]), "no operations yet\n");
    }

    #[test]
    fn history_json() {
        let v = operations_json(&sample());
        assert_eq!(v["operations"][0]["state"], "running");
        assert_eq!(v["operations"][0]["finished"], Value::Null);
        assert_eq!(v["operations"][0]["duration_ms"], Value::Null);
        assert_eq!(v["operations"][1]["duration_ms"], 3400);
        assert_eq!(
            v["operations"][1]["error"],
            "file/conf: permission denied\nmore"
        );
        assert_eq!(v["operations"][2]["dry_run"], true);
    }
}
