//! The daemon: decides between enrollment and fleet mode, opens the engine, serves gRPC behind
//! our own TLS acceptor, tells systemd when it is ready, and shuts down in order on SIGTERM.
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
use kagent_proto::v1::enrollment_server::EnrollmentServer;
use tokio::signal::unix::{SignalKind, signal};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;

use crate::config::Config;
use crate::engine::Engine;
use crate::enroll::Enrollment;
use crate::host::fs::Roots;
use crate::service::{AgentService, EnrollmentService};
use crate::tls::{self, Acceptor, Mode};
use crate::trust::Trust;

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
             `kctl ca issue agent HOST` (or remove all three TLS files and use `kctl enroll`)",
            path.display()
        ))
    })
}

/// Decides the mode from the TLS files: all three present → fleet (mTLS); none → enrollment
/// (self-signed, token printed to the log); some → a configuration error, never a guess.
fn tls_setup(cfg: &Config, enrollment: &Enrollment) -> Result<(Mode, rustls::ServerConfig), Error> {
    let files = [
        ("tls.cert", &cfg.tls.cert),
        ("tls.key", &cfg.tls.key),
        ("tls.client_ca", &cfg.tls.client_ca),
    ];
    let present: Vec<&str> = files
        .iter()
        .filter(|(_, p)| p.exists())
        .map(|(k, _)| *k)
        .collect();
    if present.len() == files.len() {
        let cert = read_file("tls.cert", &cfg.tls.cert)?;
        let key = read_file("tls.key", &cfg.tls.key)?;
        let ca = read_file("tls.client_ca", &cfg.tls.client_ca)?;
        let config =
            tls::fleet_config(&cert, &key, &ca).map_err(|e| Error::Config(e.to_string()))?;
        return Ok((Mode::Fleet, config));
    }
    if !present.is_empty() {
        let missing: Vec<String> = files
            .iter()
            .filter(|(_, p)| !p.exists())
            .map(|(k, p)| format!("{k} ({})", p.display()))
            .collect();
        return Err(Error::Config(format!(
            "some TLS files exist ({}) but not {}; install all three, or remove them all to \
             enroll the agent again",
            present.join(", "),
            missing.join(", ")
        )));
    }
    let ss = enrollment
        .self_signed()
        .map_err(|e| Error::Runtime(e.to_string()))?;
    let token = enrollment
        .current_or_new_token()
        .map_err(|e| Error::Runtime(e.to_string()))?;
    // Printing the token is the point of enrollment mode: whoever reads this log (root on the
    // VM, journald) hands it to `kctl enroll`. It is one-time and short-lived.
    tracing::warn!(
        token = %token.token,
        fingerprint = %token.fingerprint,
        expires_in_secs = token.expires_at.saturating_sub(crate::time::unix_now()),
        "not enrolled: serving only enrollment; run `kctl enroll HOST --token TOKEN`"
    );
    let config = tls::enrollment_config(ss.cert_pem.as_bytes(), ss.key_pem.as_bytes())
        .map_err(|e| Error::Runtime(e.to_string()))?;
    Ok((Mode::Enrollment, config))
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

    let enrollment = Enrollment::new(
        &cfg.state_dir,
        Duration::from_secs(cfg.enrollment.token_ttl_secs),
    );
    let (mode, server_config) = tls_setup(&cfg, &enrollment)?;
    let acceptor = Acceptor::new(mode, server_config);
    let trust = Arc::new(Trust::new(acceptor.clone(), enrollment, cfg.tls.clone()));

    crate::host::docker::configure(&cfg.docker_host);
    let engine =
        Engine::open(cfg.state_dir.clone(), Roots::new(&cfg.managed_roots)).map_err(|e| {
            Error::Runtime(format!(
                "cannot open the journal in {}: {e}",
                cfg.state_dir.display()
            ))
        })?;
    let engine = Arc::new(engine);
    // Certificates: the store and ACME settings, and the renewal scheduler (stopped first at
    // shutdown, so it starts no operation while the engine drains).
    let certs = crate::resource::certificate::install(crate::resource::certificate::Context {
        state_dir: cfg.state_dir.clone(),
        roots: Roots::new(&cfg.managed_roots),
        acme: crate::resource::certificate::AcmeSettings {
            http01_port: cfg.acme.http01_port,
            resolve: cfg.acme.resolve.clone(),
            poll_delay: Duration::from_millis(cfg.acme.poll_delay_ms),
            retry_base_secs: i64::try_from(cfg.acme.retry_base_secs).unwrap_or(i64::MAX),
            retry_max_secs: i64::try_from(cfg.acme.retry_max_secs).unwrap_or(i64::MAX),
        },
    });
    let scheduler_stop = tokio_util::sync::CancellationToken::new();
    let scheduler = crate::scheduler::spawn(
        engine.clone(),
        certs,
        crate::scheduler::Timing {
            check_interval: Duration::from_secs(cfg.acme.check_interval_secs),
            start_delay_max: Duration::from_secs(cfg.acme.start_delay_max_secs),
        },
        scheduler_stop.clone(),
    );

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

    let service = AgentService::new(engine.clone(), cfg.state_dir.clone(), trust.clone());
    let enroll_service = EnrollmentService::new(engine.clone(), trust.clone());
    // Until enrolled, only the enrollment service answers; everything else says why not.
    let gate = {
        let acceptor = acceptor.clone();
        move |req: tonic::Request<()>| match acceptor.mode() {
            Mode::Fleet => Ok(req),
            Mode::Enrollment => Err(tonic::Status::failed_precondition(
                "this agent is not enrolled yet: run `kctl enroll HOST --token TOKEN` (the token \
                 is in the agent's log and in STATE/enroll/token.json)",
            )),
        }
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // No `tls_config` here: TLS is terminated by our acceptor, which tonic sees as a stream
    // of `TlsStream`s (peer certificates still reach `Request::peer_certs`).
    let server = Server::builder()
        .add_service(InterceptedService::new(health_service, gate.clone()))
        .add_service(InterceptedService::new(reflection_v1, gate.clone()))
        .add_service(InterceptedService::new(reflection_v1alpha, gate.clone()))
        .add_service(AgentServer::with_interceptor(service, gate))
        .add_service(EnrollmentServer::new(enroll_service))
        .serve_with_incoming_shutdown(acceptor.clone().incoming(listener), async {
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
    let ready_ms = begin.elapsed().as_millis() as u64;
    match acceptor.mode() {
        Mode::Fleet => tracing::info!(%addr, ready_ms, "kagent ready, mTLS only"),
        Mode::Enrollment => tracing::info!(%addr, ready_ms, "kagent ready, enrollment only"),
    }

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
    scheduler_stop.cancel();
    let _ = scheduler.await;
    engine.shutdown().await;
    let _ = stop_tx.send(());
    if tokio::time::timeout(DRAIN, &mut server).await.is_err() {
        tracing::warn!("connections still open after {DRAIN:?}; closing them");
        server.abort();
    }
    tracing::info!("stopped");
    Ok(())
}
