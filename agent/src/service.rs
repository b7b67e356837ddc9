//! The gRPC layer: translates requests to engine calls and engine results to replies. It
//! decides nothing: identity comes from `caller`, rules from `engine`, records from `audit`.
//! This is the only module that maps errors to `tonic::Status`.

use std::pin::Pin;
use std::sync::Arc;

use kagent_proto::v1::{self, agent_server::Agent, enrollment_server::Enrollment};
use prost::Message;
use sha2::{Digest, Sha256};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::authz;
use crate::caller::Caller;
use crate::engine::{Engine, EngineError, Operation, Watch};
use crate::enroll::{self, EnrollError};
use crate::trust::Trust;

const DEFAULT_LIST_LIMIT: usize = 50;
const MAX_LIST_LIMIT: usize = 1000;

pub struct AgentService {
    engine: Arc<Engine>,
    state_dir: std::path::PathBuf,
    trust: Arc<Trust>,
}

impl AgentService {
    pub fn new(
        engine: Arc<Engine>,
        state_dir: std::path::PathBuf,
        trust: Arc<Trust>,
    ) -> AgentService {
        AgentService {
            engine,
            state_dir,
            trust,
        }
    }

    /// Identity, `begin` audit record, then authorization, for a mutating call: a refused
    /// attempt is recorded (`end: denied`) like any other.
    fn begin_mutation<T: Message>(
        &self,
        req: &Request<T>,
        rpc: &'static str,
        operation_id: Option<&str>,
    ) -> Result<(Caller, crate::audit::Begun), Status> {
        let who = identity(req)?;
        let begun = self.audit_begin(&who, rpc, req.get_ref(), operation_id)?;
        if let Err(denied) = authorize(&who, rpc) {
            self.engine
                .audit()
                .end(&begun, &format!("denied: {}", denied.message()));
            return Err(denied);
        }
        Ok((who, begun))
    }

    /// The `begin` audit record of a mutating call.
    fn audit_begin<T: Message>(
        &self,
        who: &Caller,
        rpc: &'static str,
        req: &T,
        operation_id: Option<&str>,
    ) -> Result<crate::audit::Begun, Status> {
        let digest = hex::encode(Sha256::digest(req.encode_to_vec()));
        self.engine
            .audit()
            .begin(who, rpc, digest, operation_id.map(str::to_owned))
            .map_err(|e| {
                tracing::error!(error = %e, rpc, "refusing call: audit log not writable");
                Status::unavailable(format!(
                    "{e}; the call was refused because it could not be audited"
                ))
            })
    }
}

fn enroll_status(e: EnrollError) -> Status {
    let msg = e.to_string();
    match e {
        EnrollError::WrongToken { .. } | EnrollError::Expired { .. } => {
            Status::unauthenticated(msg)
        }
        EnrollError::LockedOut { .. } => Status::resource_exhausted(msg),
        EnrollError::Used
        | EnrollError::AlreadyEnrolled
        | EnrollError::NoToken
        | EnrollError::NoRotation => Status::failed_precondition(msg),
        EnrollError::BadCertificate(_) => Status::invalid_argument(msg),
        EnrollError::Io(_) => Status::internal(msg),
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<v1::Event, Status>> + Send>>;

/// The caller of a request, from its verified client certificate.
fn identity<T>(req: &Request<T>) -> Result<Caller, Status> {
    let certs = req
        .peer_certs()
        .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
    let leaf = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("empty client certificate chain"))?;
    Caller::from_der(leaf.as_ref()).map_err(Status::unauthenticated)
}

fn authorize(who: &Caller, rpc: &str) -> Result<(), Status> {
    authz::check(who, rpc).map_err(|e| {
        tracing::warn!(caller = %who.subject, rpc, "permission denied");
        Status::permission_denied(e.to_string())
    })
}

/// Identity and authorization of a read-only call.
fn caller<T>(req: &Request<T>, rpc: &str) -> Result<Caller, Status> {
    let who = identity(req)?;
    authorize(&who, rpc)?;
    Ok(who)
}

fn status(e: EngineError) -> Status {
    match e {
        EngineError::Spec(e) => Status::invalid_argument(e.to_string()),
        EngineError::UnknownOperation(_) => Status::not_found(e.to_string()),
        EngineError::ShuttingDown => Status::unavailable(e.to_string()),
        EngineError::Journal(_) => Status::internal(e.to_string()),
    }
}

#[tonic::async_trait]
impl Agent for AgentService {
    async fn container_status(
        &self,
        req: Request<v1::ContainerStatusRequest>,
    ) -> Result<Response<v1::ContainerStatusReply>, Status> {
        caller(&req, "/kagent.v1.Agent/ContainerStatus")?;
        let req = req.into_inner();
        let containers = crate::containers::status(&req.name, &req.stack)
            .await
            .map_err(container_status)?;
        Ok(Response::new(v1::ContainerStatusReply { containers }))
    }

    type ContainerLogsStream = Pin<Box<dyn Stream<Item = Result<v1::LogChunk, Status>> + Send>>;

    async fn container_logs(
        &self,
        req: Request<v1::ContainerLogsRequest>,
    ) -> Result<Response<Self::ContainerLogsStream>, Status> {
        caller(&req, "/kagent.v1.Agent/ContainerLogs")?;
        let req = req.into_inner();
        let since = req.since.map(|t| t.seconds).unwrap_or(0);
        let logs = crate::containers::logs(&req.name, req.follow, req.tail, since)
            .await
            .map_err(container_status)?;
        use tokio_stream::StreamExt;
        Ok(Response::new(Box::pin(
            logs.map(|chunk| chunk.map_err(container_status)),
        )))
    }

    async fn restart_container(
        &self,
        req: Request<v1::RestartContainerRequest>,
    ) -> Result<Response<v1::RestartContainerReply>, Status> {
        const RPC: &str = "/kagent.v1.Agent/RestartContainer";
        let (who, begun) = self.begin_mutation(&req, RPC, None)?;
        let req = req.into_inner();
        tracing::info!(caller = %who.subject, container = %req.name, "restart container");
        match crate::containers::restart(&req.name, req.timeout_s).await {
            Ok(info) => {
                self.engine.audit().end(&begun, "ok");
                Ok(Response::new(v1::RestartContainerReply {
                    container: Some(info),
                }))
            }
            Err(e) => {
                self.engine.audit().end(&begun, &format!("error: {e}"));
                Err(container_status(e))
            }
        }
    }

    async fn facts(
        &self,
        req: Request<v1::FactsRequest>,
    ) -> Result<Response<v1::FactsReply>, Status> {
        caller(&req, "/kagent.v1.Agent/Facts")?;
        Ok(Response::new(crate::facts::gather(&self.state_dir).await))
    }

    type ApplyStream = EventStream;

    async fn apply(&self, req: Request<v1::ApplyRequest>) -> Result<Response<EventStream>, Status> {
        const RPC: &str = "/kagent.v1.Agent/Apply";
        let id = Engine::new_operation_id();
        // The audit record comes first, even for a spec that turns out invalid or a caller
        // without the role: the log answers "who asked for what", not only "what changed".
        let (who, begun) = self.begin_mutation(&req, RPC, Some(&id))?;
        let req = req.into_inner();
        let spec = req.spec.unwrap_or_default();
        let valid = match self.engine.validate(&spec) {
            Ok(v) => v,
            Err(e) => {
                self.engine.audit().end(&begun, &format!("invalid: {e}"));
                return Err(status(EngineError::Spec(e)));
            }
        };
        tracing::info!(operation = %id, caller = %who.subject, dry_run = req.dry_run,
            resources = valid.resources.len(), "apply");
        let op = self
            .engine
            .start(id, valid, req.dry_run, begun)
            .map_err(status)?;
        Ok(Response::new(follow(op, 0)))
    }

    type WatchOperationStream = EventStream;

    async fn watch_operation(
        &self,
        req: Request<v1::WatchOperationRequest>,
    ) -> Result<Response<EventStream>, Status> {
        caller(&req, "/kagent.v1.Agent/WatchOperation")?;
        let req = req.into_inner();
        let from = usize::try_from(req.from_index).unwrap_or(usize::MAX);
        match self.engine.watch(&req.operation_id).map_err(status)? {
            Watch::Live(op) => Ok(Response::new(follow(op, from))),
            Watch::Done(events) => {
                let rest: Vec<Result<v1::Event, Status>> =
                    events.into_iter().skip(from).map(Ok).collect();
                Ok(Response::new(Box::pin(tokio_stream::iter(rest))))
            }
        }
    }

    async fn list_operations(
        &self,
        req: Request<v1::ListOperationsRequest>,
    ) -> Result<Response<v1::ListOperationsReply>, Status> {
        caller(&req, "/kagent.v1.Agent/ListOperations")?;
        let limit = match req.get_ref().limit as usize {
            0 => DEFAULT_LIST_LIMIT,
            n => n.min(MAX_LIST_LIMIT),
        };
        Ok(Response::new(v1::ListOperationsReply {
            operations: self.engine.list(limit),
        }))
    }

    async fn list_audit(
        &self,
        req: Request<v1::ListAuditRequest>,
    ) -> Result<Response<v1::ListAuditReply>, Status> {
        caller(&req, "/kagent.v1.Agent/ListAudit")?;
        let req = req.into_inner();
        let since = req.since.map(|t| crate::time::rfc3339(t.seconds, 0));
        let limit = match req.limit as usize {
            0 => 200,
            n => n.min(10_000),
        };
        let entries = self
            .engine
            .audit()
            .read(since.as_deref(), &req.caller, limit)
            .map_err(|e| Status::internal(format!("cannot read the audit log: {e}")))?;
        let records = entries
            .into_iter()
            .map(|e| v1::AuditRecord {
                time: crate::time::parse_rfc3339(&e.time),
                seq: e.seq,
                phase: e.phase,
                caller: e.caller,
                fingerprint: e.fingerprint,
                rpc: e.rpc,
                request_sha256: e.request_sha256,
                operation_id: e.operation_id.unwrap_or_default(),
                result: e.result.unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(v1::ListAuditReply { records }))
    }

    async fn prepare_rotation(
        &self,
        req: Request<v1::PrepareRotationRequest>,
    ) -> Result<Response<v1::PrepareRotationReply>, Status> {
        const RPC: &str = "/kagent.v1.Agent/PrepareRotation";
        let (_who, begun) = self.begin_mutation(&req, RPC, None)?;
        let result = self.trust.prepare_rotation().await;
        self.engine.audit().end(
            &begun,
            &result
                .as_ref()
                .map_or_else(|e| e.to_string(), |_| "ok".into()),
        );
        let (csr_pem, current_names) = result.map_err(enroll_status)?;
        Ok(Response::new(v1::PrepareRotationReply {
            csr_pem,
            hostname: enroll::hostname(),
            addresses: enroll::addresses(),
            current_names,
        }))
    }

    async fn complete_rotation(
        &self,
        req: Request<v1::CompleteRotationRequest>,
    ) -> Result<Response<v1::CompleteRotationReply>, Status> {
        const RPC: &str = "/kagent.v1.Agent/CompleteRotation";
        let (_who, begun) = self.begin_mutation(&req, RPC, None)?;
        let result = self.trust.complete_rotation(&req.get_ref().cert_pem).await;
        self.engine.audit().end(
            &begun,
            &result
                .as_ref()
                .map_or_else(|e| e.to_string(), |_| "ok".into()),
        );
        let installed = result.map_err(enroll_status)?;
        Ok(Response::new(v1::CompleteRotationReply {
            fingerprint: installed.fingerprint,
            not_after: installed.not_after,
        }))
    }

    async fn list_certificates(
        &self,
        req: Request<v1::ListCertificatesRequest>,
    ) -> Result<Response<v1::ListCertificatesReply>, Status> {
        caller(&req, "/kagent.v1.Agent/ListCertificates")?;
        let certificates = crate::resource::certificate::context()
            .map(|ctx| crate::resource::certificate::statuses(&ctx))
            .unwrap_or_default();
        Ok(Response::new(v1::ListCertificatesReply { certificates }))
    }

    type RenewCertificateStream = EventStream;

    async fn renew_certificate(
        &self,
        req: Request<v1::RenewCertificateRequest>,
    ) -> Result<Response<EventStream>, Status> {
        const RPC: &str = "/kagent.v1.Agent/RenewCertificate";
        let id = Engine::new_operation_id();
        let (who, begun) = self.begin_mutation(&req, RPC, Some(&id))?;
        let req = req.into_inner();
        let spec = match crate::scheduler::renewal_spec(
            &self.engine,
            &self.state_dir,
            &req.name,
            req.force,
        ) {
            Ok(s) => s,
            Err(e) => {
                self.engine.audit().end(&begun, &format!("refused: {e}"));
                return Err(match e {
                    crate::scheduler::RenewError::Invalid { .. } => {
                        Status::failed_precondition(e.to_string())
                    }
                    _ => Status::not_found(e.to_string()),
                });
            }
        };
        tracing::info!(operation = %id, caller = %who.subject, name = %req.name, force = req.force, "renew certificate");
        let op = self.engine.start(id, spec, false, begun).map_err(status)?;
        Ok(Response::new(follow(op, 0)))
    }

    async fn retire_certificate(
        &self,
        req: Request<v1::RetireCertificateRequest>,
    ) -> Result<Response<v1::RetireCertificateReply>, Status> {
        const RPC: &str = "/kagent.v1.Agent/RetireCertificate";
        let (who, begun) = self.begin_mutation(&req, RPC, None)?;
        let name = req.into_inner().name;
        let Ok(ctx) = crate::resource::certificate::context() else {
            self.engine
                .audit()
                .end(&begun, "error: no certificate store");
            return Err(Status::failed_precondition(
                "this agent manages no certificates",
            ));
        };
        tracing::info!(caller = %who.subject, name = %name, "retire certificate");
        let _exclusive = self.engine.exclusive().await;
        let result =
            tokio::task::block_in_place(|| crate::resource::certificate::retire(&ctx, &name));
        match result {
            Ok(Some(files)) => {
                self.engine.audit().end(&begun, "ok");
                Ok(Response::new(v1::RetireCertificateReply { files }))
            }
            Ok(None) => {
                self.engine.audit().end(&begun, "error: not managed");
                Err(Status::not_found(format!(
                    "no certificate named {name:?} is managed here (see `kctl certs HOST`)"
                )))
            }
            Err(e) => {
                self.engine.audit().end(&begun, &format!("error: {e}"));
                Err(Status::internal(format!("retiring {name:?}: {e}")))
            }
        }
    }

    async fn reveal_secret(
        &self,
        req: Request<v1::RevealSecretRequest>,
    ) -> Result<Response<v1::RevealSecretReply>, Status> {
        const RPC: &str = "/kagent.v1.Agent/RevealSecret";
        let (who, begun) = self.begin_mutation(&req, RPC, None)?;
        let req = req.into_inner();
        tracing::info!(caller = %who.subject, path = %req.path, "reveal secret");
        let roots = self.engine.roots().clone();
        let path = req.path.clone();
        let result = tokio::task::spawn_blocking(move || {
            crate::resource::keycloak_realm::reveal(&roots, &path)
        })
        .await
        .map_err(|e| Status::internal(format!("secret read task: {e}")))?;
        match result {
            Ok(value) => {
                self.engine.audit().end(&begun, "ok");
                Ok(Response::new(v1::RevealSecretReply { value }))
            }
            Err(e) => {
                self.engine
                    .audit()
                    .end(&begun, &format!("error: {}", e.problem));
                Err(Status::invalid_argument(format!(
                    "field `{}`: {}",
                    e.field, e.problem
                )))
            }
        }
    }

    async fn export_keycloak_realm(
        &self,
        req: Request<v1::ExportKeycloakRealmRequest>,
    ) -> Result<Response<v1::ExportKeycloakRealmReply>, Status> {
        const RPC: &str = "/kagent.v1.Agent/ExportKeycloakRealm";
        let (who, begun) = self.begin_mutation(&req, RPC, None)?;
        let req = req.into_inner();
        use crate::resource::keycloak_realm;
        let admin = match keycloak_realm::admin_from_proto(req.admin.as_ref(), self.engine.roots())
        {
            Ok(a) => a,
            Err(e) => {
                self.engine
                    .audit()
                    .end(&begun, &format!("invalid: {}", e.problem));
                return Err(Status::invalid_argument(format!(
                    "field `{}`: {}",
                    e.field, e.problem
                )));
            }
        };
        tracing::info!(caller = %who.subject, realm = %req.realm, secrets = req.include_secrets, "export keycloak realm");
        match keycloak_realm::export(&admin, &req.realm, req.include_secrets).await {
            Ok(v) => {
                self.engine.audit().end(&begun, "ok");
                let json = serde_json::to_string_pretty(&v)
                    .map_err(|e| Status::internal(e.to_string()))?;
                Ok(Response::new(v1::ExportKeycloakRealmReply { json }))
            }
            Err(e) => {
                self.engine
                    .audit()
                    .end(&begun, &format!("error: {}", e.message));
                Err(Status::failed_precondition(if e.hint.is_empty() {
                    e.message
                } else {
                    format!("{} (hint: {})", e.message, e.hint)
                }))
            }
        }
    }

    async fn check_keycloak(
        &self,
        req: Request<v1::CheckKeycloakRequest>,
    ) -> Result<Response<v1::CheckKeycloakReply>, Status> {
        const RPC: &str = "/kagent.v1.Agent/CheckKeycloak";
        let (who, begun) = self.begin_mutation(&req, RPC, None)?;
        let req = req.into_inner();
        use crate::keycloak_checks::{Checker, target_from_request};
        let roots = self.engine.roots().clone();
        let prepared = target_from_request(&req, &roots)
            .map_err(|e| format!("field `{}`: {}", e.field, e.problem))
            .and_then(|r| {
                let checker = Checker::new(r.target, r.ca_file.as_deref())
                    .map_err(|e| format!("field `ca_file`: {e}"))?;
                Ok((checker, r.checks))
            });
        let (checker, ids) = match prepared {
            Ok(p) => p,
            Err(e) => {
                self.engine.audit().end(&begun, &format!("invalid: {e}"));
                return Err(Status::invalid_argument(e));
            }
        };
        tracing::info!(caller = %who.subject, url = %req.base_url, realm = %req.realm, "check keycloak");
        let checks = checker.run(&ids).await;
        let failed = checks.iter().filter(|c| !c.pass).count();
        self.engine.audit().end(
            &begun,
            &format!("ok: {} checks, {failed} failed", checks.len()),
        );
        Ok(Response::new(v1::CheckKeycloakReply {
            checks: checks.into_iter().map(Into::into).collect(),
        }))
    }
}

/// The enrollment service: token-authenticated, served while the agent has no fleet
/// certificate (and refusing politely afterwards).
pub struct EnrollmentService {
    engine: Arc<Engine>,
    trust: Arc<Trust>,
}

impl EnrollmentService {
    pub fn new(engine: Arc<Engine>, trust: Arc<Trust>) -> EnrollmentService {
        EnrollmentService { engine, trust }
    }
}

/// The audit identity of a token holder: there is no certificate yet.
fn token_caller<T>(req: &Request<T>) -> Caller {
    let peer = req
        .remote_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|| "unknown".into());
    Caller {
        subject: format!("enrollment token holder from {peer}"),
        name: "enrollment".into(),
        role: None,
        fingerprint: String::new(),
    }
}

#[tonic::async_trait]
impl Enrollment for EnrollmentService {
    async fn begin_enrollment(
        &self,
        req: Request<v1::BeginEnrollmentRequest>,
    ) -> Result<Response<v1::BeginEnrollmentReply>, Status> {
        let csr_pem = self
            .trust
            .begin_enrollment(&req.get_ref().token)
            .await
            .map_err(|e| {
                tracing::warn!(peer = ?req.remote_addr(), error = %e, "enrollment refused");
                enroll_status(e)
            })?;
        Ok(Response::new(v1::BeginEnrollmentReply {
            csr_pem,
            hostname: enroll::hostname(),
            addresses: enroll::addresses(),
        }))
    }

    async fn complete_enrollment(
        &self,
        req: Request<v1::CompleteEnrollmentRequest>,
    ) -> Result<Response<v1::CompleteEnrollmentReply>, Status> {
        const RPC: &str = "/kagent.v1.Enrollment/CompleteEnrollment";
        let who = token_caller(&req);
        // The token itself never reaches the audit log: the digest is of the certificate only.
        let digest = hex::encode(Sha256::digest(req.get_ref().cert_pem.as_bytes()));
        let begun = self
            .engine
            .audit()
            .begin(&who, RPC, digest, None)
            .map_err(|e| {
                Status::unavailable(format!(
                    "{e}; the call was refused because it could not be audited"
                ))
            })?;
        let r = req.get_ref();
        let result = self
            .trust
            .complete_enrollment(&r.token, &r.cert_pem, &r.ca_pem)
            .await;
        self.engine.audit().end(
            &begun,
            &result
                .as_ref()
                .map_or_else(|e| e.to_string(), |_| "ok".into()),
        );
        let installed = result.map_err(enroll_status)?;
        Ok(Response::new(v1::CompleteEnrollmentReply {
            fingerprint: installed.fingerprint,
        }))
    }
}

/// Streams a live operation's events from `from`, following it until it finishes. The
/// forwarding task ends when the operation ends or the client goes away; the operation itself
/// goes on either way.
fn follow(op: Arc<Operation>, from: usize) -> EventStream {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let mut changed = op.subscribe();
    tokio::spawn(async move {
        let mut next = from;
        loop {
            let (events, finished) = op.events_from(next);
            next += events.len();
            for e in events {
                if tx.send(Ok(e)).await.is_err() {
                    return;
                }
            }
            if finished {
                return;
            }
            if changed.changed().await.is_err() {
                return;
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

fn container_status(e: crate::containers::CallError) -> Status {
    use crate::containers::CallError;
    match e {
        CallError::NotFound(_) => Status::not_found(e.to_string()),
        CallError::Invalid(_) => Status::invalid_argument(e.to_string()),
        CallError::Docker(_) => Status::unavailable(e.to_string()),
    }
}
