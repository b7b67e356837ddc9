//! mTLS gRPC clients to an agent and helpers around its streams.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use kagent_proto::v1::agent_client::AgentClient;
use kagent_proto::v1::{
    ApplyRequest, Event, FactsReply, FactsRequest, HostSpec, ListOperationsRequest,
    OperationSummary, WatchOperationRequest,
};
use kctl::ca::BundlePaths;
use tonic::Streaming;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::agent::Agent;
use crate::pki::Pki;

/// How long a whole stream may take before a test gives up on it.
pub const STREAM_TIMEOUT: Duration = Duration::from_secs(90);

/// Why a client could not talk to the agent: the connection (TLS handshake) failed, or the
/// call did. Under TLS 1.3 a refused client certificate shows on the first call, not on connect.
#[derive(Debug)]
pub enum Refused {
    Connect(String),
    Call(tonic::Status),
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Connect(e) => write!(f, "connect failed: {e}"),
            Refused::Call(s) => write!(f, "call failed: {:?}: {}", s.code(), s.message()),
        }
    }
}

/// A client to `addr` that trusts `ca`, presents `identity` (if any) and checks the server
/// certificate against `domain`.
pub async fn client_for(
    ca: &Path,
    identity: Option<&BundlePaths>,
    addr: SocketAddr,
    domain: &str,
) -> Result<AgentClient<Channel>, Refused> {
    let ca_pem = std::fs::read_to_string(ca).expect("read CA cert");
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name(domain);
    if let Some(id) = identity {
        let cert = std::fs::read_to_string(&id.cert).expect("read client cert");
        let key = std::fs::read_to_string(&id.key).expect("read client key");
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let endpoint = Channel::from_shared(format!("https://{addr}"))
        .expect("endpoint uri")
        .connect_timeout(Duration::from_secs(5))
        .tls_config(tls)
        .map_err(|e| Refused::Connect(format!("{e:?}")))?;
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| Refused::Connect(format!("{e:?}")))?;
    Ok(AgentClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20))
}

/// A client to `agent` with `identity` (None: no client certificate), checking the server
/// certificate against the agent's [`Agent::tls_name`] ("localhost" unless the builder set one).
pub async fn client(
    pki: &Pki,
    agent: &Agent,
    identity: Option<&BundlePaths>,
) -> Result<AgentClient<Channel>, Refused> {
    client_for(&pki.ca_cert, identity, agent.addr, agent.tls_name()).await
}

/// The admin client to `agent`; panics if it cannot connect.
pub async fn admin(pki: &Pki, agent: &Agent) -> AgentClient<Channel> {
    client(pki, agent, Some(&pki.admin))
        .await
        .unwrap_or_else(|e| panic!("admin client cannot connect to {}: {e}", agent.addr))
}

/// Connects and calls Facts: the whole path a refused client would take.
pub async fn facts_with(
    ca: &Path,
    identity: Option<&BundlePaths>,
    addr: SocketAddr,
    domain: &str,
) -> Result<FactsReply, Refused> {
    let mut c = client_for(ca, identity, addr, domain).await?;
    let reply = tokio::time::timeout(Duration::from_secs(10), c.facts(FactsRequest {}))
        .await
        .map_err(|_| Refused::Connect("Facts timed out".into()))?
        .map_err(Refused::Call)?;
    Ok(reply.into_inner())
}

/// Reads a stream to its end. A status received mid-stream is returned as the error.
pub async fn collect(mut stream: Streaming<Event>) -> Result<Vec<Event>, tonic::Status> {
    let mut events = Vec::new();
    let fut = async {
        while let Some(ev) = stream.message().await? {
            events.push(ev);
        }
        Ok::<(), tonic::Status>(())
    };
    match tokio::time::timeout(STREAM_TIMEOUT, fut).await {
        Ok(Ok(())) => Ok(events),
        Ok(Err(status)) => Err(status),
        Err(_) => panic!(
            "stream did not end within {STREAM_TIMEOUT:?}; events so far: {:#?}",
            events
        ),
    }
}

/// Apply (or plan) `spec` and collect the whole stream. A refusal on the call or inside the
/// stream is returned as the error.
pub async fn apply(
    client: &mut AgentClient<Channel>,
    spec: HostSpec,
    dry_run: bool,
) -> Result<Vec<Event>, tonic::Status> {
    let stream = client
        .apply(ApplyRequest {
            spec: Some(spec),
            dry_run,
        })
        .await?
        .into_inner();
    collect(stream).await
}

/// Apply `spec` for real; panics if the call fails or the stream does not end with
/// `OperationFinished`.
pub async fn apply_events(client: &mut AgentClient<Channel>, spec: HostSpec) -> Vec<Event> {
    let events = apply(client, spec, false)
        .await
        .unwrap_or_else(|s| panic!("Apply failed: {:?}: {}", s.code(), s.message()));
    crate::spec::finished(&events);
    events
}

/// WatchOperation from `from_index`, collected.
pub async fn watch(
    client: &mut AgentClient<Channel>,
    operation_id: &str,
    from_index: u64,
) -> Result<Vec<Event>, tonic::Status> {
    let stream = client
        .watch_operation(WatchOperationRequest {
            operation_id: operation_id.to_string(),
            from_index,
        })
        .await?
        .into_inner();
    collect(stream).await
}

/// WatchOperation, panicking on error.
pub async fn watch_events(
    client: &mut AgentClient<Channel>,
    operation_id: &str,
    from_index: u64,
) -> Vec<Event> {
    watch(client, operation_id, from_index)
        .await
        .unwrap_or_else(|s| panic!("WatchOperation failed: {:?}: {}", s.code(), s.message()))
}

/// ListOperations with the default limit.
pub async fn list_operations(client: &mut AgentClient<Channel>) -> Vec<OperationSummary> {
    client
        .list_operations(ListOperationsRequest { limit: 0 })
        .await
        .unwrap_or_else(|s| panic!("ListOperations failed: {:?}: {}", s.code(), s.message()))
        .into_inner()
        .operations
}
