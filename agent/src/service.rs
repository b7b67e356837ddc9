//! The gRPC layer: translates requests to engine calls and engine results to replies. It
//! decides nothing: identity comes from `caller`, rules from `engine`, records from `audit`.
//! This is the only module that maps errors to `tonic::Status`.

use std::pin::Pin;
use std::sync::Arc;

use kagent_proto::v1::{self, agent_server::Agent};
use prost::Message;
use sha2::{Digest, Sha256};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::authz;
use crate::caller::Caller;
use crate::engine::{Engine, EngineError, Operation, Watch};

const DEFAULT_LIST_LIMIT: usize = 50;
const MAX_LIST_LIMIT: usize = 1000;

pub struct AgentService {
    engine: Arc<Engine>,
    state_dir: std::path::PathBuf,
}

impl AgentService {
    pub fn new(engine: Arc<Engine>, state_dir: std::path::PathBuf) -> AgentService {
        AgentService { engine, state_dir }
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
        let who = identity(&req)?;
        let req = req.into_inner();
        let id = Engine::new_operation_id();
        // The audit record comes first, even for a spec that turns out invalid: the log answers
        // "who asked for what", not only "what changed". No record, no call.
        let digest = hex::encode(Sha256::digest(req.encode_to_vec()));
        let begun = self
            .engine
            .audit()
            .begin(&who, RPC, digest, Some(id.clone()))
            .map_err(|e| {
                tracing::error!(error = %e, "refusing Apply: audit log not writable");
                Status::unavailable(format!(
                    "{e}; the call was refused because it could not be audited"
                ))
            })?;
        // A refused attempt is recorded too: it is exactly what an audit is for.
        if let Err(denied) = authorize(&who, RPC) {
            self.engine
                .audit()
                .end(&begun, &format!("denied: {}", denied.message()));
            return Err(denied);
        }
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
