//! The daemon: loads TLS material, opens the engine, serves gRPC over mutual TLS only, tells
//! systemd when it is ready, and shuts down in order on SIGTERM.
//!
//! Shutdown order matters: first STOPPING=1 and NOT_SERVING, then running operations are asked
//! to stop at their next resource boundary (and journaled `interrupted`), and only then is the
//! listener closed, so a caller streaming an operation sees its final event.

use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kagent_proto::v1::agent_server::AgentServer;
use tokio::signal::unix::{SignalKind, signal};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::config::Config;
use crate::engine::Engine;
use crate::host::fs::Roots;
use crate::service::AgentService;

/// How long the listener may take to drain after operations have stopped.
const DRAIN: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration or the files it names are wrong: exit code 2.
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Runtime(String),
}

fn read_file(key: &str, path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| {
        Error::Config(format!(
            "cannot read {} (key `{key}`): {e}; issue the agent's certificate with \
             `kctl ca issue agent HOST` and install agent.crt, agent.key and ca.crt",
            path.display()
        ))
    })
}

/// Runs until SIGTERM or SIGINT.
pub async fn run(cfg: Config) -> Result<(), Error> {
    let begin = Instant::now();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&cfg.state_dir)
        .map_err(|e| {
            Error::Config(format!(
                "cannot create state_dir {}: {e}",
                cfg.state_dir.display()
            ))
        })?;

    let cert = read_file("tls.cert", &cfg.tls.cert)?;
    let key = read_file("tls.key", &cfg.tls.key)?;
    let ca = read_file("tls.client_ca", &cfg.tls.client_ca)?;
    // Client certificates are required (tonic's default): there is no anonymous access.
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(cert, key))
        .client_ca_root(Certificate::from_pem(ca));

    let engine =
        Engine::open(cfg.state_dir.clone(), Roots::new(&cfg.managed_roots)).map_err(|e| {
            Error::Runtime(format!(
                "cannot open the journal in {}: {e}",
                cfg.state_dir.display()
            ))
        })?;
    let engine = Arc::new(engine);

    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| {
            Error::Config(format!(
                "cannot listen on {} (key `listen`): {e}",
                cfg.listen
            ))
        })?;
    let addr: SocketAddr = listener.local_addr().unwrap_or(cfg.listen);

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<AgentServer<AgentService>>().await;
    // Reflection (v1 and the older v1alpha that many tools still use) lets generic gRPC
    // clients (grpcurl, grpcio) discover the API without our .proto files.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(kagent_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .map_err(|e| Error::Runtime(format!("reflection: {e}")))?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| Error::Runtime(format!("reflection: {e}")))?;

    let service = AgentService::new(engine.clone(), cfg.state_dir.clone());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = Server::builder()
        .tls_config(tls)
        .map_err(|e| Error::Config(format!("TLS configuration (keys `tls.*`): {e}")))?
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(AgentServer::new(service))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
            let _ = stop_rx.await;
        });
    let mut server = tokio::spawn(server);

    let mut term = signal(SignalKind::terminate()).map_err(|e| Error::Runtime(e.to_string()))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| Error::Runtime(e.to_string()))?;

    let status = format!("serving on {addr}");
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&status),
    ]);
    tracing::info!(%addr, ready_ms = begin.elapsed().as_millis() as u64, "kagent ready, mTLS only");

    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        r = &mut server => {
            return Err(Error::Runtime(match r {
                Ok(Ok(())) => "the gRPC server stopped unexpectedly".into(),
                Ok(Err(e)) => format!("the gRPC server failed: {e}"),
                Err(e) => format!("the gRPC server task failed: {e}"),
            }));
        }
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    health.set_not_serving::<AgentServer<AgentService>>().await;
    engine.shutdown().await;
    let _ = stop_tx.send(());
    if tokio::time::timeout(DRAIN, &mut server).await.is_err() {
        tracing::warn!("connections still open after {DRAIN:?}; closing them");
        server.abort();
    }
    tracing::info!("stopped");
    Ok(())
}
