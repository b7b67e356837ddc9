//! Following an operation to its end. The operation runs in the agent, not in our stream: when
//! the stream breaks (agent restarted, network), kctl re-attaches with `WatchOperation` from
//! the next event index, with backoff, and only then gives up, printing the command that
//! resumes where it stopped.
//!
//! Events are handed to a [`Sink`] (the output layer); this module decides nothing about how
//! they look.

use std::time::Duration;

use anyhow::anyhow;
use kagent_proto::v1::{self, event::Payload};
use tonic::Streaming;

use crate::agent_client::{AgentClient, is_retryable, status_text};
use crate::error::{Error, Result};

/// Receives the events of an operation, in order, each once.
pub trait Sink {
    fn event(&mut self, event: &v1::Event) -> std::io::Result<()>;
    /// Something the operator should know that is not an event (re-attaching, ...).
    fn note(&mut self, message: &str);
}

/// How hard to try re-attaching after the stream broke.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts in a row without receiving an event.
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// 0.5 s, 1 s, 2 s, 4 s, 8 s: about 15 s, enough for systemd to restart an agent.
    fn default() -> RetryPolicy {
        RetryPolicy {
            attempts: 5,
            first_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
        }
    }
}

impl RetryPolicy {
    fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.first_delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// Where following got to: readable after a Ctrl-C dropped the follow future.
#[derive(Clone, Debug, Default)]
pub struct Position {
    /// Known once the first event arrived (or given, for `kctl watch`).
    pub operation_id: Option<String>,
    /// The index of the next event to ask for.
    pub next_index: u64,
}

impl Position {
    /// The command that resumes following, if the operation is known.
    pub fn resume_command(&self, client: &AgentClient) -> Option<String> {
        let id = self.operation_id.as_ref()?;
        Some(format!(
            "kctl watch {} {id} --from {}",
            client.target(),
            self.next_index
        ))
    }
}

/// Follows `stream` until the operation's `OperationFinished`, re-attaching when it breaks.
pub async fn follow(
    client: &mut AgentClient,
    stream: Streaming<v1::Event>,
    position: &mut Position,
    sink: &mut dyn Sink,
    policy: &RetryPolicy,
) -> Result<v1::OperationFinished> {
    let mut stream = stream;
    let mut attempt = 0u32;
    loop {
        let mut received = false;
        let broke = loop {
            match stream.message().await {
                Ok(Some(event)) => {
                    if position.operation_id.is_none() {
                        position.operation_id = Some(event.operation_id.clone());
                    }
                    // A re-attached stream may repeat what we already showed.
                    if event.index < position.next_index {
                        continue;
                    }
                    position.next_index = event.index + 1;
                    received = true;
                    attempt = 0;
                    sink.event(&event)
                        .map_err(|e| Error::failed(anyhow!("cannot write the output: {e}")))?;
                    if let Some(Payload::Finished(finished)) = event.payload {
                        return Ok(finished);
                    }
                }
                Ok(None) => {
                    break "the agent ended the stream before the operation finished".to_string();
                }
                Err(status) if !is_retryable(&status) => {
                    return Err(client.explain("the event stream", &status));
                }
                Err(status) => break status_text(&status),
            }
        };
        let Some(id) = position.operation_id.clone() else {
            return Err(Error::failed(anyhow!(
                "the event stream broke before the agent named the operation: {broke}"
            ))
            .hint(format!(
                "the operation may have started anyway; look for it with `kctl ops {}`",
                client.target()
            )));
        };
        // A stream that ends cleanly without news may mean the operation is over without a
        // final event (the agent stopped mid-way): ask the history before retrying.
        if !received
            && attempt > 0
            && let Some(finished) = finished_from_history(client, &id).await
        {
            sink.note(&format!(
                "the agent reports operation {id} as {}",
                state_word(finished.state)
            ));
            return Ok(finished);
        }
        stream = reattach(client, &id, position, sink, policy, &mut attempt, broke).await?;
    }
}

/// Tries `WatchOperation(id, next_index)` with backoff until it answers or attempts run out.
async fn reattach(
    client: &mut AgentClient,
    id: &str,
    position: &Position,
    sink: &mut dyn Sink,
    policy: &RetryPolicy,
    attempt: &mut u32,
    mut broke: String,
) -> Result<Streaming<v1::Event>> {
    loop {
        *attempt += 1;
        if *attempt > policy.attempts {
            let resume = position.resume_command(client).unwrap_or_default();
            return Err(Error::failed(anyhow!(
                "lost the event stream of operation {id} after {} attempts to re-attach: {broke}",
                policy.attempts
            ))
            .hint(format!(
                "the operation goes on in the agent; follow it with `{resume}` once the agent \
                 answers again"
            )));
        }
        let delay = policy.delay(*attempt);
        sink.note(&format!(
            "event stream lost ({broke}); re-attaching to operation {id} from event {} in {} \
             (attempt {}/{})",
            position.next_index,
            crate::output::duration_ms(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)),
            attempt,
            policy.attempts
        ));
        tokio::time::sleep(delay).await;
        match client.watch(id, position.next_index).await {
            Ok(stream) => return Ok(stream),
            Err(status) if !is_retryable(&status) => {
                return Err(client.explain("WatchOperation", &status));
            }
            Err(status) => broke = status_text(&status),
        }
    }
}

/// The operation's outcome from `ListOperations`, if it is listed and no longer running.
async fn finished_from_history(
    client: &mut AgentClient,
    id: &str,
) -> Option<v1::OperationFinished> {
    let ops = client.list_operations(0).await.ok()?;
    let op = ops.into_iter().find(|op| op.operation_id == id)?;
    if op.state == v1::OperationState::Running as i32 {
        return None;
    }
    let started = crate::output::from_proto(op.started.as_ref());
    let finished = crate::output::from_proto(op.finished.as_ref());
    let duration_ms = match (started, finished) {
        (Some(s), Some(f)) => u64::try_from((f - s).whole_milliseconds()).unwrap_or(0),
        _ => 0,
    };
    Some(v1::OperationFinished {
        state: op.state,
        counts: op.counts,
        error: op.error,
        duration_ms,
    })
}

fn state_word(state: i32) -> &'static str {
    v1::OperationState::try_from(state)
        .unwrap_or(v1::OperationState::Unspecified)
        .word()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy::default();
        let delays: Vec<u128> = (1..=6).map(|a| p.delay(a).as_millis()).collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 8000, 8000]);
    }

    use crate::fake_agent::{FakeAgent, Fleet, OPERATION, Script, operation, serve};
    use crate::host::Target;

    #[derive(Default)]
    struct Collect {
        events: Vec<v1::Event>,
        notes: Vec<String>,
    }

    impl Sink for Collect {
        fn event(&mut self, event: &v1::Event) -> std::io::Result<()> {
            self.events.push(event.clone());
            Ok(())
        }
        fn note(&mut self, message: &str) {
            self.notes.push(message.to_string());
        }
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            attempts: 3,
            first_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(20),
        }
    }

    /// Starts the fake with `script`, applies, follows; returns the result and what arrived.
    async fn apply_and_follow(
        script: Script,
    ) -> anyhow::Result<(
        Result<v1::OperationFinished>,
        Collect,
        FakeAgent,
        Position,
        Target,
    )> {
        let fleet = Fleet::new("127.0.0.1")?;
        let agent = FakeAgent::new(script);
        let addr = serve(agent.clone(), &fleet.agent, fleet.ca.cert_pem()).await?;
        let target = Target {
            host: "127.0.0.1".into(),
            port: addr.port(),
        };
        let mut client = AgentClient::connect(&target, &fleet.credentials()).await?;
        let spec = v1::HostSpec {
            resources: vec![v1::Resource::default()],
        };
        let stream = client.apply(spec, false).await?;
        let mut sink = Collect::default();
        let mut position = Position::default();
        let result = follow(&mut client, stream, &mut position, &mut sink, &fast()).await;
        Ok((result, sink, agent, position, target))
    }

    fn indices(c: &Collect) -> Vec<u64> {
        c.events.iter().map(|e| e.index).collect()
    }

    #[tokio::test]
    async fn an_unbroken_stream_is_followed_to_the_end() -> anyhow::Result<()> {
        let script = Script {
            events: operation(),
            ..Default::default()
        };
        let (result, sink, agent, _, _) = apply_and_follow(script).await?;
        assert_eq!(
            result.map(|f| f.state).ok(),
            Some(v1::OperationState::Succeeded as i32)
        );
        assert_eq!(indices(&sink), [0, 1, 2, 3, 4]);
        assert!(sink.notes.is_empty());
        assert!(agent.watches.lock().map(|w| w.is_empty()).unwrap_or(false));
        Ok(())
    }

    #[tokio::test]
    async fn a_broken_stream_is_resumed_from_the_next_index() -> anyhow::Result<()> {
        let script = Script {
            events: operation(),
            apply_breaks_after: Some(2),
            watch_failures: 1,
            ..Default::default()
        };
        let (result, sink, agent, _, _) = apply_and_follow(script).await?;
        assert_eq!(
            result.map(|f| f.state).ok(),
            Some(v1::OperationState::Succeeded as i32)
        );
        // Every event once, in order, across the break.
        assert_eq!(indices(&sink), [0, 1, 2, 3, 4]);
        let watches = agent.watches.lock().map(|w| w.clone()).unwrap_or_default();
        assert_eq!(
            watches,
            [(OPERATION.to_string(), 2), (OPERATION.to_string(), 2)]
        );
        assert_eq!(sink.notes.len(), 2, "{:?}", sink.notes);
        assert!(sink.notes[0].contains("re-attaching to operation op-1 from event 2"));
        Ok(())
    }

    #[tokio::test]
    async fn giving_up_prints_the_resume_command() -> anyhow::Result<()> {
        let script = Script {
            events: operation(),
            apply_breaks_after: Some(3),
            watch_failures: 100,
            ..Default::default()
        };
        let (result, sink, _, position, target) = apply_and_follow(script).await?;
        let e = result
            .err()
            .map(|e| (e.to_string(), e.hint.unwrap_or_default()));
        let (text, hint) = e.unwrap_or_default();
        assert!(text.contains("after 3 attempts to re-attach"), "{text}");
        let resume = format!("kctl watch {target} op-1 --from 3");
        assert!(hint.contains(&resume), "{hint}");
        assert_eq!(position.next_index, 3);
        assert_eq!(indices(&sink), [0, 1, 2]);
        Ok(())
    }

    #[tokio::test]
    async fn a_stream_that_ends_early_is_settled_from_the_history() -> anyhow::Result<()> {
        // The agent died mid-apply: on restart it lists the operation as interrupted and
        // its watch stream ends without a final event.
        let script = Script {
            events: operation(),
            apply_breaks_after: Some(2),
            watch_ends_after: Some(0),
            listed_state: Some(v1::OperationState::Interrupted),
            ..Default::default()
        };
        let (result, sink, _, _, _) = apply_and_follow(script).await?;
        assert_eq!(
            result.map(|f| f.state).ok(),
            Some(v1::OperationState::Interrupted as i32)
        );
        assert!(
            sink.notes
                .iter()
                .any(|n| n.contains("reports operation op-1 as interrupted"))
        );
        Ok(())
    }

    #[tokio::test]
    async fn watching_an_unknown_operation_is_not_retried() -> anyhow::Result<()> {
        let fleet = Fleet::new("127.0.0.1")?;
        let agent = FakeAgent::new(Script {
            events: operation(),
            ..Default::default()
        });
        let addr = serve(agent.clone(), &fleet.agent, fleet.ca.cert_pem()).await?;
        let target = Target {
            host: "127.0.0.1".into(),
            port: addr.port(),
        };
        let mut client = AgentClient::connect(&target, &fleet.credentials()).await?;
        let status = client.watch("nope", 0).await.err();
        let e = status.map(|s| client.explain("WatchOperation", &s));
        assert!(
            e.map(|e| e.to_string())
                .unwrap_or_default()
                .contains("not found")
        );
        Ok(())
    }
}
