//! Test only: an in-process `kagent.v1.Agent` server on a real mTLS listener, so the client's
//! TLS refusals and the follow/re-attach logic are tested over the wire, without a kagent
//! process. It serves canned events; it is not a model of the agent.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use kagent_proto::v1::{self, agent_server::Agent, event::Payload};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

use crate::ca::{Bundle, Ca, Validity};
use crate::config::Credentials;

type EventStream =
    Pin<Box<dyn tonic::codegen::tokio_stream::Stream<Item = Result<v1::Event, Status>> + Send>>;

pub const OPERATION: &str = "op-1";

/// What the fake serves.
#[derive(Clone, Default)]
pub struct Script {
    /// The events of operation `op-1`.
    pub events: Vec<v1::Event>,
    /// Apply's stream fails with UNAVAILABLE after this many events.
    pub apply_breaks_after: Option<usize>,
    /// WatchOperation fails with UNAVAILABLE this many times before it serves.
    pub watch_failures: usize,
    /// WatchOperation's stream ends (cleanly, no error) after this many events.
    pub watch_ends_after: Option<usize>,
    /// The state ListOperations reports for `op-1`.
    pub listed_state: Option<v1::OperationState>,
}

#[derive(Clone, Default)]
pub struct FakeAgent {
    script: Script,
    /// `(operation_id, from_index)` of every WatchOperation call.
    pub watches: Arc<Mutex<Vec<(String, u64)>>>,
}

impl FakeAgent {
    pub fn new(script: Script) -> FakeAgent {
        FakeAgent {
            script,
            watches: Arc::default(),
        }
    }
}

fn stream(items: Vec<Result<v1::Event, Status>>) -> EventStream {
    Box::pin(tonic::codegen::tokio_stream::iter(items))
}

#[tonic::async_trait]
impl Agent for FakeAgent {
    async fn facts(
        &self,
        _: Request<v1::FactsRequest>,
    ) -> Result<Response<v1::FactsReply>, Status> {
        Ok(Response::new(v1::FactsReply {
            hostname: "fake".into(),
            api_version: kagent_proto::API_VERSION.into(),
            ..Default::default()
        }))
    }

    type ApplyStream = EventStream;

    async fn apply(
        &self,
        request: Request<v1::ApplyRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let spec = request.into_inner().spec.unwrap_or_default();
        if spec.resources.is_empty() {
            return Err(Status::invalid_argument("spec: no resources"));
        }
        let mut items: Vec<Result<v1::Event, Status>> =
            self.script.events.iter().cloned().map(Ok).collect();
        if let Some(n) = self.script.apply_breaks_after {
            items.truncate(n);
            items.push(Err(Status::unavailable("agent shutting down")));
        }
        Ok(Response::new(stream(items)))
    }

    type WatchOperationStream = EventStream;

    async fn watch_operation(
        &self,
        request: Request<v1::WatchOperationRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let r = request.into_inner();
        let calls = {
            let mut watches = self
                .watches
                .lock()
                .map_err(|_| Status::internal("poisoned"))?;
            watches.push((r.operation_id.clone(), r.from_index));
            watches.len()
        };
        if r.operation_id != OPERATION {
            return Err(Status::not_found(format!(
                "no operation {:?}",
                r.operation_id
            )));
        }
        if calls <= self.script.watch_failures {
            return Err(Status::unavailable("agent starting"));
        }
        let from = usize::try_from(r.from_index).unwrap_or(usize::MAX);
        let mut items: Vec<Result<v1::Event, Status>> = self
            .script
            .events
            .iter()
            .skip(from)
            .cloned()
            .map(Ok)
            .collect();
        if let Some(n) = self.script.watch_ends_after {
            items.truncate(n);
        }
        Ok(Response::new(stream(items)))
    }

    async fn list_operations(
        &self,
        _: Request<v1::ListOperationsRequest>,
    ) -> Result<Response<v1::ListOperationsReply>, Status> {
        let operations = self
            .script
            .listed_state
            .map(|state| v1::OperationSummary {
                operation_id: OPERATION.into(),
                state: state as i32,
                ..Default::default()
            })
            .into_iter()
            .collect();
        Ok(Response::new(v1::ListOperationsReply { operations }))
    }

    // RPCs the tests here do not exercise: a fake must still implement the whole trait.
    async fn list_audit(
        &self,
        _: Request<v1::ListAuditRequest>,
    ) -> Result<Response<v1::ListAuditReply>, Status> {
        Err(Status::unimplemented("fake agent"))
    }

    async fn prepare_rotation(
        &self,
        _: Request<v1::PrepareRotationRequest>,
    ) -> Result<Response<v1::PrepareRotationReply>, Status> {
        Err(Status::unimplemented("fake agent"))
    }

    async fn complete_rotation(
        &self,
        _: Request<v1::CompleteRotationRequest>,
    ) -> Result<Response<v1::CompleteRotationReply>, Status> {
        Err(Status::unimplemented("fake agent"))
    }

    async fn list_certificates(
        &self,
        _: Request<v1::ListCertificatesRequest>,
    ) -> Result<Response<v1::ListCertificatesReply>, Status> {
        Err(Status::unimplemented("fake agent"))
    }

    async fn retire_certificate(
        &self,
        _: Request<v1::RetireCertificateRequest>,
    ) -> Result<Response<v1::RetireCertificateReply>, Status> {
        Err(Status::unimplemented("fake agent"))
    }

    async fn reveal_secret(
        &self,
        _: Request<v1::RevealSecretRequest>,
    ) -> Result<Response<v1::RevealSecretReply>, Status> {
        Err(Status::unimplemented("fake agent"))
    }

    async fn export_keycloak_realm(
        &self,
        _: Request<v1::ExportKeycloakRealmRequest>,
    ) -> Result<Response<v1::ExportKeycloakRealmReply>, Status> {
        Err(Status::unimplemented("fake agent"))
    }

    async fn check_keycloak(
        &self,
        _: Request<v1::CheckKeycloakRequest>,
    ) -> Result<Response<v1::CheckKeycloakReply>, Status> {
        Err(Status::unimplemented("fake agent"))
    }

    async fn container_status(
        &self,
        _: Request<v1::ContainerStatusRequest>,
    ) -> Result<Response<v1::ContainerStatusReply>, Status> {
        Err(Status::unimplemented("fake agent"))
    }

    type ContainerLogsStream = Pin<
        Box<dyn tonic::codegen::tokio_stream::Stream<Item = Result<v1::LogChunk, Status>> + Send>,
    >;

    async fn container_logs(
        &self,
        _: Request<v1::ContainerLogsRequest>,
    ) -> Result<Response<Self::ContainerLogsStream>, Status> {
        Err(Status::unimplemented("fake agent"))
    }

    async fn restart_container(
        &self,
        _: Request<v1::RestartContainerRequest>,
    ) -> Result<Response<v1::RestartContainerReply>, Status> {
        Err(Status::unimplemented("fake agent"))
    }

    type RenewCertificateStream = EventStream;

    async fn renew_certificate(
        &self,
        _: Request<v1::RenewCertificateRequest>,
    ) -> Result<Response<EventStream>, Status> {
        Err(Status::unimplemented("fake agent"))
    }
}

/// Serves `agent` on 127.0.0.1 with `server` as its certificate, requiring client
/// certificates that chain to `client_ca_pem`. Returns the address.
pub async fn serve(
    agent: FakeAgent,
    server: &Bundle,
    client_ca_pem: &str,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(&server.cert_pem, &server.key_pem))
        .client_ca_root(Certificate::from_pem(client_ca_pem));
    let router = Server::builder()
        .tls_config(tls)?
        .add_service(v1::agent_server::AgentServer::new(agent));
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(router.serve_with_incoming(incoming));
    Ok(addr)
}

/// A fleet: its CA, an agent certificate for `agent_name`, a client identity.
pub struct Fleet {
    pub ca: Ca,
    pub agent: Bundle,
    pub client: Bundle,
}

impl Fleet {
    pub fn new(agent_name: &str) -> anyhow::Result<Fleet> {
        let ca = Ca::generate("test fleet", Validity::days(1))?;
        let agent = ca.issue_agent(agent_name, &[], &[], Validity::days(1))?;
        let client = ca.issue_client("tester", "admin", Validity::days(1))?;
        Ok(Fleet { ca, agent, client })
    }

    pub fn credentials(&self) -> Credentials {
        Credentials {
            cert_pem: self.client.cert_pem.clone(),
            key_pem: self.client.key_pem.clone(),
            ca_pem: self.ca.cert_pem().to_string(),
            cert_path: "test/client.crt".into(),
        }
    }
}

/// A successful operation: started, one planned, one done, finished.
pub fn operation() -> Vec<v1::Event> {
    let r = Some(v1::ResourceRef {
        kind: "file".into(),
        name: "motd".into(),
    });
    let payloads = [
        Payload::Started(v1::OperationStarted {
            dry_run: false,
            caller: "CN=tester".into(),
            resources: 1,
        }),
        Payload::Planned(v1::ResourcePlanned {
            resource: r.clone(),
            action: v1::Action::Create as i32,
            diff: "+hello".into(),
            warnings: vec![],
        }),
        Payload::Progress(v1::Progress {
            resource: r.clone(),
            message: "writing".into(),
            percent: None,
        }),
        Payload::Done(v1::ResourceDone {
            resource: r,
            action: v1::Action::Create as i32,
            message: String::new(),
        }),
        Payload::Finished(v1::OperationFinished {
            state: v1::OperationState::Succeeded as i32,
            counts: Some(v1::Counts {
                create: 1,
                ..Default::default()
            }),
            error: String::new(),
            duration_ms: 5,
        }),
    ];
    payloads
        .into_iter()
        .enumerate()
        .map(|(i, p)| v1::Event {
            operation_id: OPERATION.into(),
            index: i as u64,
            time: None,
            payload: Some(p),
        })
        .collect()
}
