//! Building host specs and reading event lists.

use std::path::Path;

use kagent_proto::v1::event::Payload;
use kagent_proto::v1::resource::Kind;
use kagent_proto::v1::{
    Action, Alphabet, Event, File, HostSpec, OperationFinished, OperationStarted, OperationState,
    Resource, ResourceDone, ResourceFailed, ResourcePlanned, Secret,
};

/// A spec of these resources, in order.
pub fn host_spec(resources: Vec<Resource>) -> HostSpec {
    HostSpec { resources }
}

/// A file resource with default mode/owner.
pub fn file(name: &str, path: &Path, content: impl Into<Vec<u8>>) -> Resource {
    file_res(
        name,
        File {
            path: path.to_string_lossy().into_owned(),
            content: content.into(),
            ..File::default()
        },
    )
}

/// A file resource at a raw (possibly invalid) path string.
pub fn file_at(name: &str, path: &str, content: impl Into<Vec<u8>>) -> Resource {
    file_res(
        name,
        File {
            path: path.to_string(),
            content: content.into(),
            ..File::default()
        },
    )
}

pub fn file_res(name: &str, f: File) -> Resource {
    Resource {
        name: name.to_string(),
        kind: Some(Kind::File(f)),
    }
}

/// A generated secret with default mode/owner (0 length = the agent's default, 32).
pub fn secret(name: &str, path: &Path, length: u32, alphabet: Alphabet) -> Resource {
    Resource {
        name: name.to_string(),
        kind: Some(Kind::Secret(Secret {
            path: path.to_string_lossy().into_owned(),
            length,
            alphabet: alphabet as i32,
            ..Secret::default()
        })),
    }
}

/// The operation id (all events must carry the same one).
pub fn op_id(events: &[Event]) -> String {
    let first = events.first().expect("no events");
    for e in events {
        assert_eq!(
            e.operation_id, first.operation_id,
            "events of one stream carry one id"
        );
    }
    assert!(!first.operation_id.is_empty(), "empty operation id");
    first.operation_id.clone()
}

pub fn started(events: &[Event]) -> OperationStarted {
    match events.first().and_then(|e| e.payload.clone()) {
        Some(Payload::Started(s)) => s,
        other => panic!("first event is not OperationStarted: {other:?}\nall: {events:#?}"),
    }
}

/// The final `OperationFinished`; panics unless the stream ends with one.
pub fn finished(events: &[Event]) -> OperationFinished {
    match events.last().and_then(|e| e.payload.clone()) {
        Some(Payload::Finished(f)) => f,
        other => panic!("last event is not OperationFinished: {other:?}\nall: {events:#?}"),
    }
}

pub fn state(f: &OperationFinished) -> OperationState {
    OperationState::try_from(f.state).unwrap_or(OperationState::Unspecified)
}

pub fn planned(events: &[Event]) -> Vec<ResourcePlanned> {
    events
        .iter()
        .filter_map(|e| match &e.payload {
            Some(Payload::Planned(p)) => Some(p.clone()),
            _ => None,
        })
        .collect()
}

pub fn done(events: &[Event]) -> Vec<ResourceDone> {
    events
        .iter()
        .filter_map(|e| match &e.payload {
            Some(Payload::Done(d)) => Some(d.clone()),
            _ => None,
        })
        .collect()
}

pub fn failed(events: &[Event]) -> Vec<ResourceFailed> {
    events
        .iter()
        .filter_map(|e| match &e.payload {
            Some(Payload::Failed(d)) => Some(d.clone()),
            _ => None,
        })
        .collect()
}

fn action(a: i32) -> Action {
    Action::try_from(a).unwrap_or(Action::Unspecified)
}

/// (resource name, planned action) in order.
pub fn planned_actions(events: &[Event]) -> Vec<(String, Action)> {
    planned(events)
        .iter()
        .map(|p| {
            (
                p.resource.clone().unwrap_or_default().name,
                action(p.action),
            )
        })
        .collect()
}

/// (resource name, done action) in order.
pub fn done_actions(events: &[Event]) -> Vec<(String, Action)> {
    done(events)
        .iter()
        .map(|d| {
            (
                d.resource.clone().unwrap_or_default().name,
                action(d.action),
            )
        })
        .collect()
}

/// Asserts the events' indices are `from, from+1, ...` without gaps.
pub fn assert_contiguous(events: &[Event], from: u64) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e.index,
            from + i as u64,
            "event indices must count without gaps: {events:#?}"
        );
    }
}
