//! Renders an operation's event stream (`kctl apply`, `kctl watch`): one line per event for
//! people, or one JSON object per event (`{"type": "planned", "data": {...}}`).
//!
//! Human layout, one phase column then the action and the resource:
//!
//! ```text
//! operation 01J2...: 2 resources, by CN=alice@laptop,O=admin
//! plan  create     file/motd
//!         +hello
//! plan  unchanged  secret/db-password
//!   ..             file/motd: writing [50%]
//! done  create     file/motd: wrote 6 bytes
//! succeeded in 12 ms: 1 created, 1 unchanged
//! ```

use kagent_proto::v1::{self, event::Payload};
use serde_json::{Value, json};

use super::{Style, Tone, duration_ms, proto_timestamp_json};

/// Indentation of the lines under an event (diff, warnings, hints).
const INDENT: &str = "        ";

/// Turns events into human lines. Keeps only what formatting needs: whether the operation
/// is a dry run (the summary then says "to create" rather than "created").
#[derive(Debug)]
pub struct EventRenderer {
    style: Style,
    dry_run: bool,
}

impl EventRenderer {
    pub fn new(style: Style) -> EventRenderer {
        EventRenderer {
            style,
            dry_run: false,
        }
    }

    /// The lines for one event, each ending in `\n`.
    pub fn render(&mut self, event: &v1::Event) -> String {
        let s = self.style;
        match &event.payload {
            Some(Payload::Started(p)) => {
                self.dry_run = p.dry_run;
                let mut line = format!(
                    "operation {}: {} resource{}, by {}",
                    s.paint(Tone::Strong, &event.operation_id),
                    p.resources,
                    plural(p.resources),
                    if p.caller.is_empty() { "?" } else { &p.caller },
                );
                if p.dry_run {
                    line.push_str(" (dry run: nothing will change)");
                }
                line + "\n"
            }
            Some(Payload::Planned(p)) => {
                let action = action(p.action);
                let mut out = format!(
                    "plan  {}  {}\n",
                    s.paint(action_tone(action), &format!("{:<9}", action.word())),
                    resource(p.resource.as_ref())
                );
                for line in p.diff.lines() {
                    out.push_str(INDENT);
                    out.push_str(&s.paint(diff_tone(line), line));
                    out.push('\n');
                }
                for w in &p.warnings {
                    out.push_str(&format!(
                        "{INDENT}{} {w}\n",
                        s.paint(Tone::Change, "warning:")
                    ));
                }
                out
            }
            Some(Payload::Progress(p)) => {
                let mut line = format!(
                    "  ..  {:<9}  {}: {}",
                    "",
                    resource(p.resource.as_ref()),
                    p.message
                );
                if let Some(pct) = p.percent {
                    line.push_str(&format!(" [{pct}%]"));
                }
                line + "\n"
            }
            Some(Payload::Done(p)) => {
                let action = action(p.action);
                let mut line = format!(
                    "done  {}  {}",
                    s.paint(action_tone(action), &format!("{:<9}", action.word())),
                    resource(p.resource.as_ref())
                );
                if !p.message.is_empty() {
                    line.push_str(": ");
                    line.push_str(&p.message);
                }
                line + "\n"
            }
            Some(Payload::Failed(p)) => {
                let mut out = format!(
                    "{}  {:<9}  {}: {}\n",
                    s.paint(Tone::Bad, "FAIL"),
                    "failed",
                    resource(p.resource.as_ref()),
                    p.error
                );
                if !p.hint.is_empty() {
                    out.push_str(&format!("{INDENT}hint: {}\n", p.hint));
                }
                out
            }
            Some(Payload::Finished(p)) => {
                let state = v1::OperationState::try_from(p.state)
                    .unwrap_or(v1::OperationState::Unspecified);
                let word = match state {
                    v1::OperationState::Succeeded if self.dry_run => "planned",
                    other => other.word(),
                };
                let tone = match state {
                    v1::OperationState::Succeeded => Tone::Good,
                    v1::OperationState::Running => Tone::Quiet,
                    _ => Tone::Bad,
                };
                let mut out = format!(
                    "{} in {}: {}",
                    s.paint(tone, word),
                    duration_ms(p.duration_ms),
                    counts_human(p.counts.as_ref(), self.dry_run)
                );
                if self.dry_run {
                    out.push_str(" (dry run: nothing changed)");
                }
                out.push('\n');
                if !p.error.is_empty() {
                    out.push_str(&format!("{INDENT}error: {}\n", p.error));
                }
                out
            }
            None => format!(
                "  ..  (event #{} of a kind this kctl does not know)\n",
                event.index
            ),
        }
    }
}

fn plural(n: u32) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn action(a: i32) -> v1::Action {
    v1::Action::try_from(a).unwrap_or(v1::Action::Unspecified)
}

fn action_tone(a: v1::Action) -> Tone {
    match a {
        v1::Action::Create => Tone::Good,
        v1::Action::Update => Tone::Change,
        v1::Action::Delete => Tone::Bad,
        v1::Action::Unchanged | v1::Action::Unspecified => Tone::Quiet,
    }
}

fn diff_tone(line: &str) -> Tone {
    if line.starts_with("+++") || line.starts_with("---") {
        Tone::Strong
    } else if line.starts_with('+') {
        Tone::Good
    } else if line.starts_with('-') {
        Tone::Bad
    } else {
        Tone::Quiet
    }
}

fn resource(r: Option<&v1::ResourceRef>) -> String {
    match r {
        Some(r) => format!("{}/{}", r.kind, r.name),
        None => "(operation)".to_string(),
    }
}

/// `2 created, 1 unchanged` (or `2 to create, ...` for a dry run); zero buckets are left out.
/// The agent counts planned actions; `failed` and `skipped` are subsets of the planned
/// changes, so when some did not go through the line says how many of them were applied.
pub fn counts_human(c: Option<&v1::Counts>, dry_run: bool) -> String {
    let Some(c) = c else {
        return "no counts".to_string();
    };
    let join = |words: &[(u32, &str)]| -> Vec<String> {
        words
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, w)| format!("{n} {w}"))
            .collect()
    };
    let changes = c.create + c.update + c.delete;
    let parts = if dry_run {
        join(&[
            (c.create, "to create"),
            (c.update, "to update"),
            (c.unchanged, "unchanged"),
            (c.delete, "to delete"),
        ])
    } else if c.failed + c.skipped == 0 {
        join(&[
            (c.create, "created"),
            (c.update, "updated"),
            (c.unchanged, "unchanged"),
            (c.delete, "deleted"),
        ])
    } else {
        let applied = changes.saturating_sub(c.failed + c.skipped);
        let mut parts = vec![format!("{applied} of {changes} planned changes applied")];
        parts.extend(join(&[
            (c.failed, "failed"),
            (c.skipped, "skipped"),
            (c.unchanged, "unchanged"),
        ]));
        parts
    };
    if parts.is_empty() {
        "no resources".to_string()
    } else {
        parts.join(", ")
    }
}

/// Counts as a JSON object with every bucket.
pub fn counts_json(c: Option<&v1::Counts>) -> Value {
    let c = c.cloned().unwrap_or_default();
    json!({
        "create": c.create,
        "update": c.update,
        "unchanged": c.unchanged,
        "delete": c.delete,
        "failed": c.failed,
        "skipped": c.skipped,
    })
}

fn resource_json(r: Option<&v1::ResourceRef>) -> Value {
    match r {
        Some(r) => json!({"kind": r.kind, "name": r.name}),
        None => Value::Null,
    }
}

/// One event as a JSON Lines record, `type` first: `{"type":"planned","data":{...}}`.
pub fn event_json_line(event: &v1::Event) -> String {
    let value = event_json(event);
    format!("{{\"type\":{},\"data\":{}}}", value["type"], value["data"])
}

/// One event as `{"type": ..., "data": {...}}`. `type` is one of `started`, `planned`,
/// `progress`, `done`, `failed`, `finished` (`unknown` for a payload newer than this kctl).
pub fn event_json(event: &v1::Event) -> Value {
    let (kind, mut data) = match &event.payload {
        Some(Payload::Started(p)) => (
            "started",
            json!({"dry_run": p.dry_run, "caller": p.caller, "resources": p.resources}),
        ),
        Some(Payload::Planned(p)) => (
            "planned",
            json!({
                "resource": resource_json(p.resource.as_ref()),
                "action": action(p.action).word(),
                "diff": p.diff,
                "warnings": p.warnings,
            }),
        ),
        Some(Payload::Progress(p)) => (
            "progress",
            json!({
                "resource": resource_json(p.resource.as_ref()),
                "message": p.message,
                "percent": p.percent,
            }),
        ),
        Some(Payload::Done(p)) => (
            "done",
            json!({
                "resource": resource_json(p.resource.as_ref()),
                "action": action(p.action).word(),
                "message": p.message,
            }),
        ),
        Some(Payload::Failed(p)) => (
            "failed",
            json!({
                "resource": resource_json(p.resource.as_ref()),
                "error": p.error,
                "hint": p.hint,
            }),
        ),
        Some(Payload::Finished(p)) => (
            "finished",
            json!({
                "state": v1::OperationState::try_from(p.state)
                    .unwrap_or(v1::OperationState::Unspecified)
                    .word(),
                "counts": counts_json(p.counts.as_ref()),
                "error": p.error,
                "duration_ms": p.duration_ms,
            }),
        ),
        None => ("unknown", json!({})),
    };
    if let Some(obj) = data.as_object_mut() {
        obj.insert(
            "operation_id".into(),
            Value::String(event.operation_id.clone()),
        );
        obj.insert("index".into(), Value::from(event.index));
        obj.insert("time".into(), proto_timestamp_json(event.time.as_ref()));
    }
    json!({"type": kind, "data": data})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(kind: &str, name: &str) -> Option<v1::ResourceRef> {
        Some(v1::ResourceRef {
            kind: kind.into(),
            name: name.into(),
        })
    }

    fn ev(index: u64, payload: Payload) -> v1::Event {
        v1::Event {
            operation_id: "op-1".into(),
            index,
            time: Some(prost_types::Timestamp {
                seconds: 1_777_627_800,
                nanos: 0,
            }),
            payload: Some(payload),
        }
    }

    /// A failed, real (not dry-run) apply of three resources.
    pub(crate) fn stream() -> Vec<v1::Event> {
        vec![
            ev(
                0,
                Payload::Started(v1::OperationStarted {
                    dry_run: false,
                    caller: "CN=alice,O=admin".into(),
                    resources: 3,
                }),
            ),
            ev(
                1,
                Payload::Planned(v1::ResourcePlanned {
                    resource: r("file", "motd"),
                    action: v1::Action::Create as i32,
                    diff: "--- /srv/kctl/motd (absent)\n+++ /srv/kctl/motd\n+hello".into(),
                    warnings: vec![],
                }),
            ),
            ev(
                2,
                Payload::Planned(v1::ResourcePlanned {
                    resource: r("secret", "db"),
                    action: v1::Action::Unchanged as i32,
                    diff: String::new(),
                    warnings: vec!["mode differs".into()],
                }),
            ),
            ev(
                3,
                Payload::Planned(v1::ResourcePlanned {
                    resource: r("file", "conf"),
                    action: v1::Action::Update as i32,
                    diff: "-a\n+b".into(),
                    warnings: vec![],
                }),
            ),
            ev(
                4,
                Payload::Progress(v1::Progress {
                    resource: r("file", "motd"),
                    message: "writing".into(),
                    percent: Some(50),
                }),
            ),
            ev(
                5,
                Payload::Done(v1::ResourceDone {
                    resource: r("file", "motd"),
                    action: v1::Action::Create as i32,
                    message: "wrote 6 bytes".into(),
                }),
            ),
            ev(
                6,
                Payload::Done(v1::ResourceDone {
                    resource: r("secret", "db"),
                    action: v1::Action::Unchanged as i32,
                    message: String::new(),
                }),
            ),
            ev(
                7,
                Payload::Failed(v1::ResourceFailed {
                    resource: r("file", "conf"),
                    error: "permission denied".into(),
                    hint: "check the agent's managed roots".into(),
                }),
            ),
            ev(
                8,
                Payload::Finished(v1::OperationFinished {
                    state: v1::OperationState::Failed as i32,
                    counts: Some(v1::Counts {
                        create: 1,
                        update: 1,
                        unchanged: 1,
                        failed: 1,
                        ..Default::default()
                    }),
                    error: "file/conf: permission denied".into(),
                    duration_ms: 3_400,
                }),
            ),
        ]
    }

    #[test]
    fn a_stream_renders_one_line_per_event_with_indented_details() {
        let mut renderer = EventRenderer::new(Style::default());
        let text: String = stream().iter().map(|e| renderer.render(e)).collect();
        assert_eq!(
            text,
            "\
operation op-1: 3 resources, by CN=alice,O=admin
plan  create     file/motd
        --- /srv/kctl/motd (absent)
        +++ /srv/kctl/motd
        +hello
plan  unchanged  secret/db
        warning: mode differs
plan  update     file/conf
        -a
        +b
  ..             file/motd: writing [50%]
done  create     file/motd: wrote 6 bytes
done  unchanged  secret/db
FAIL  failed     file/conf: permission denied
        hint: check the agent's managed roots
failed in 3.4 s: 1 of 2 planned changes applied, 1 failed, 1 unchanged
        error: file/conf: permission denied
"
        );
    }

    #[test]
    fn a_dry_run_says_what_would_happen() {
        let mut renderer = EventRenderer::new(Style::default());
        let started = ev(
            0,
            Payload::Started(v1::OperationStarted {
                dry_run: true,
                caller: "CN=bob,O=viewer".into(),
                resources: 1,
            }),
        );
        let finished = ev(
            2,
            Payload::Finished(v1::OperationFinished {
                state: v1::OperationState::Succeeded as i32,
                counts: Some(v1::Counts {
                    create: 1,
                    ..Default::default()
                }),
                error: String::new(),
                duration_ms: 4,
            }),
        );
        assert_eq!(
            renderer.render(&started),
            "operation op-1: 1 resource, by CN=bob,O=viewer (dry run: nothing will change)\n"
        );
        assert_eq!(
            renderer.render(&finished),
            "planned in 4 ms: 1 to create (dry run: nothing changed)\n"
        );
    }

    #[test]
    fn colour_marks_actions_and_failures() {
        let mut renderer = EventRenderer::new(Style { colour: true });
        let text: String = stream().iter().map(|e| renderer.render(e)).collect();
        assert!(text.contains("\x1b[32mcreate   \x1b[0m"));
        assert!(text.contains("\x1b[31;1mFAIL\x1b[0m"));
    }

    #[test]
    fn json_events_carry_a_type_and_the_data() {
        let lines: Vec<Value> = stream().iter().map(event_json).collect();
        let types: Vec<&str> = lines.iter().filter_map(|l| l["type"].as_str()).collect();
        assert_eq!(
            types,
            [
                "started", "planned", "planned", "planned", "progress", "done", "done", "failed",
                "finished"
            ]
        );
        assert_eq!(
            lines[1],
            json!({"type": "planned", "data": {
                "operation_id": "op-1", "index": 1, "time": "2026-05-01T09:30:00Z",
                "resource": {"kind": "file", "name": "motd"}, "action": "create",
                "diff": "--- /srv/kctl/motd (absent)\n+++ /srv/kctl/motd\n+hello", "warnings": [],
            }})
        );
        assert_eq!(lines[4]["data"]["percent"], 50);
        assert_eq!(lines[8]["data"]["state"], "failed");
        assert_eq!(lines[8]["data"]["counts"]["failed"], 1);
        assert_eq!(lines[8]["data"]["counts"]["delete"], 0);
        // One line each, `type` first, and the same object as `event_json`.
        for e in stream() {
            let line = event_json_line(&e);
            assert!(
                !line.contains('\n') && line.starts_with("{\"type\":\""),
                "{line}"
            );
            let parsed: Value = serde_json::from_str(&line).unwrap_or_default();
            assert_eq!(parsed, event_json(&e));
        }
    }

    #[test]
    fn counts_leave_out_empty_buckets() {
        assert_eq!(counts_human(None, false), "no counts");
        assert_eq!(
            counts_human(Some(&v1::Counts::default()), false),
            "no resources"
        );
        let c = v1::Counts {
            update: 2,
            delete: 1,
            unchanged: 4,
            ..Default::default()
        };
        assert_eq!(
            counts_human(Some(&c), false),
            "2 updated, 4 unchanged, 1 deleted"
        );
        assert_eq!(
            counts_human(Some(&c), true),
            "2 to update, 4 unchanged, 1 to delete"
        );
        let c = v1::Counts {
            update: 2,
            delete: 1,
            skipped: 2,
            unchanged: 1,
            ..Default::default()
        };
        assert_eq!(
            counts_human(Some(&c), false),
            "1 of 3 planned changes applied, 2 skipped, 1 unchanged"
        );
    }
}
