//! The connection to one agent: gRPC over mutual TLS. Only this module opens connections.
//!
//! kctl presents the operator's client certificate and accepts the agent only if its
//! certificate chains to the fleet CA *and* names the host exactly as the operator typed it
//! (`ClientTlsConfig::domain_name`), so a certificate issued for another VM is refused.
//!
//! Failures are explained here, once, for every command: connection refused, the agent's
//! certificate not naming the host, the agent refusing our certificate (which under TLS 1.3
//! only shows up as a failed first call), and the API's own status codes.

use std::time::Duration;

use anyhow::anyhow;
use kagent_proto::v1::{self, agent_client::AgentClient as Grpc};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status, Streaming};

use crate::config::Credentials;
use crate::error::{Error, Result};
use crate::host::Target;
use crate::pinned;

/// How long to wait for TCP and the TLS handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a unary call (facts, ops) may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// HTTP/2 pings on a quiet stream, so a vanished agent is noticed during a long apply.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connected agent.
pub struct AgentClient {
    target: Target,
    grpc: Grpc<Channel>,
    /// Whether a call has succeeded on this connection. Until one has, a transport failure
    /// most likely means the agent refused our certificate (TLS 1.3 reports that late).
    answered: bool,
}

impl AgentClient {
    /// Dials `target` with `creds`. Fails with a hint naming the likely cause.
    pub async fn connect(target: &Target, creds: &Credentials) -> Result<AgentClient> {
        check_pem(creds)?;
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&creds.ca_pem))
            .identity(Identity::from_pem(&creds.cert_pem, &creds.key_pem))
            .domain_name(target.tls_name())
            .timeout(CONNECT_TIMEOUT);
        let endpoint = Endpoint::from_shared(target.uri())
            .map_err(|e| Error::usage(anyhow!("{target}: not a valid address: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .tls_config(tls)
            .map_err(|e| {
                Error::usage(anyhow!("cannot set up TLS for {target}: {}", chain(&e)))
                    .hint("check your identity files (client.crt, client.key, ca.crt)")
            })?;
        // Belt and braces: connect_timeout covers the connector, this covers everything.
        let channel = match tokio::time::timeout(2 * CONNECT_TIMEOUT, endpoint.connect()).await {
            Ok(Ok(channel)) => channel,
            Ok(Err(e)) => return Err(connect_error(target, &chain(&e))),
            Err(_) => return Err(connect_error(target, "timed out")),
        };
        Ok(AgentClient {
            target: target.clone(),
            grpc: Grpc::new(channel),
            answered: false,
        })
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    pub async fn facts(&mut self) -> Result<v1::FactsReply, Status> {
        let call = self.grpc.facts(v1::FactsRequest {});
        let reply = with_timeout(call).await?.into_inner();
        self.answered = true;
        Ok(reply)
    }

    pub async fn list_certificates(&mut self) -> Result<Vec<v1::CertificateStatus>, Status> {
        let call = self.grpc.list_certificates(v1::ListCertificatesRequest {});
        let reply = with_timeout(call).await?.into_inner();
        self.answered = true;
        Ok(reply.certificates)
    }

    /// The value of a managed secret file (admin; audited by the agent).
    pub async fn reveal_secret(&mut self, path: &str) -> Result<String, Status> {
        let call = self.grpc.reveal_secret(v1::RevealSecretRequest {
            path: path.to_string(),
        });
        let reply = with_timeout(call).await?.into_inner();
        self.answered = true;
        Ok(reply.value)
    }

    /// A realm of the host's Keycloak as JSON (admin; audited by the agent).
    pub async fn export_keycloak_realm(
        &mut self,
        request: v1::ExportKeycloakRealmRequest,
    ) -> Result<String, Status> {
        let call = self.grpc.export_keycloak_realm(request);
        let reply = with_timeout(call).await?.into_inner();
        self.answered = true;
        Ok(reply.json)
    }

    /// The realm's verification checks, run by the agent from its host (admin; audited).
    pub async fn check_keycloak(
        &mut self,
        request: v1::CheckKeycloakRequest,
    ) -> Result<Vec<v1::KeycloakCheck>, Status> {
        let call = self.grpc.check_keycloak(request);
        let reply = with_timeout(call).await?.into_inner();
        self.answered = true;
        Ok(reply.checks)
    }

    /// Stops managing a certificate; its deployed files (left in place).
    pub async fn retire_certificate(&mut self, name: &str) -> Result<Vec<String>, Status> {
        let call = self.grpc.retire_certificate(v1::RetireCertificateRequest {
            name: name.to_string(),
        });
        let reply = with_timeout(call).await?.into_inner();
        self.answered = true;
        Ok(reply.files)
    }

    /// Starts a renewal operation (one certificate, or all when `name` is empty).
    pub async fn renew_certificate(
        &mut self,
        name: &str,
        force: bool,
    ) -> Result<Streaming<v1::Event>, Status> {
        let request = v1::RenewCertificateRequest {
            name: name.to_string(),
            force,
        };
        let stream = self.grpc.renew_certificate(request).await?.into_inner();
        self.answered = true;
        Ok(stream)
    }

    pub async fn list_operations(
        &mut self,
        limit: u32,
    ) -> Result<Vec<v1::OperationSummary>, Status> {
        let call = self
            .grpc
            .list_operations(v1::ListOperationsRequest { limit });
        let reply = with_timeout(call).await?.into_inner();
        self.answered = true;
        Ok(reply.operations)
    }

    /// Starts an operation. The stream is not bounded in time: the operation takes as long as
    /// it takes, and keepalives detect a dead peer.
    pub async fn apply(
        &mut self,
        spec: v1::HostSpec,
        dry_run: bool,
    ) -> Result<Streaming<v1::Event>, Status> {
        let stream = self
            .grpc
            .apply(v1::ApplyRequest {
                spec: Some(spec),
                dry_run,
            })
            .await?
            .into_inner();
        self.answered = true;
        Ok(stream)
    }

    pub async fn watch(
        &mut self,
        operation_id: &str,
        from_index: u64,
    ) -> Result<Streaming<v1::Event>, Status> {
        let request = v1::WatchOperationRequest {
            operation_id: operation_id.to_string(),
            from_index,
        };
        let stream = self.grpc.watch_operation(request).await?.into_inner();
        self.answered = true;
        Ok(stream)
    }

    /// Audit records, oldest first.
    pub async fn list_audit(
        &mut self,
        request: v1::ListAuditRequest,
    ) -> Result<Vec<v1::AuditRecord>, Status> {
        let reply = with_timeout(self.grpc.list_audit(request))
            .await?
            .into_inner();
        self.answered = true;
        Ok(reply.records)
    }

    /// Managed containers: one by `name`, or all (of `stack`, when given).
    pub async fn container_status(
        &mut self,
        name: &str,
        stack: &str,
    ) -> Result<Vec<v1::ContainerInfo>, Status> {
        let call = self.grpc.container_status(v1::ContainerStatusRequest {
            name: name.to_string(),
            stack: stack.to_string(),
        });
        let reply = with_timeout(call).await?.into_inner();
        self.answered = true;
        Ok(reply.containers)
    }

    /// A container's logs; with `follow` the stream lasts as long as the container runs.
    pub async fn container_logs(
        &mut self,
        request: v1::ContainerLogsRequest,
    ) -> Result<Streaming<v1::LogChunk>, Status> {
        let stream = with_timeout(self.grpc.container_logs(request))
            .await?
            .into_inner();
        self.answered = true;
        Ok(stream)
    }

    pub async fn restart_container(
        &mut self,
        name: &str,
        timeout_s: u32,
    ) -> Result<v1::ContainerInfo, Status> {
        let call = self.grpc.restart_container(v1::RestartContainerRequest {
            name: name.to_string(),
            timeout_s,
        });
        let reply = with_timeout(call).await?.into_inner();
        self.answered = true;
        reply
            .container
            .ok_or_else(|| Status::internal("the agent sent no container status"))
    }

    pub async fn prepare_rotation(&mut self) -> Result<v1::PrepareRotationReply, Status> {
        let call = self.grpc.prepare_rotation(v1::PrepareRotationRequest {});
        let reply = with_timeout(call).await?.into_inner();
        self.answered = true;
        Ok(reply)
    }

    pub async fn complete_rotation(
        &mut self,
        cert_pem: String,
    ) -> Result<v1::CompleteRotationReply, Status> {
        let call = self
            .grpc
            .complete_rotation(v1::CompleteRotationRequest { cert_pem });
        let reply = with_timeout(call).await?.into_inner();
        self.answered = true;
        Ok(reply)
    }

    /// The operator-facing error for a failed call `what` ("Facts", "Apply", ...).
    pub fn explain(&self, what: &str, status: &Status) -> Error {
        explain(&self.target, what, status, self.answered)
    }
}

/// A connection to an agent in enrollment mode, pinned by fingerprint (see [`pinned`]).
pub struct EnrollClient {
    target: Target,
    grpc: kagent_proto::v1::enrollment_client::EnrollmentClient<Channel>,
}

impl EnrollClient {
    /// Dials `target` and accepts only the certificate whose SHA-256 is `fingerprint`.
    pub async fn connect(target: &Target, fingerprint: &str) -> Result<EnrollClient> {
        let verifier = pinned::PinnedVerifier::new(fingerprint);
        let channel = pinned::channel(&target.host, target.port, verifier.clone(), CONNECT_TIMEOUT);
        let channel = match tokio::time::timeout(2 * CONNECT_TIMEOUT, channel).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                if let Some(seen) = verifier.seen().filter(|s| s != fingerprint) {
                    return Err(Error::failed(anyhow!(
                        "the agent at {target} presented the certificate {seen}, but the token \
                         pins {fingerprint}: refusing to enroll (possible man in the middle)"
                    ))
                    .hint(
                        "check that you dialled the right host and copied the whole token; if \
                         the agent is already enrolled, `kctl facts HOST` works and there is \
                         nothing to do",
                    ));
                }
                return Err(connect_error(target, &chain(e.as_ref())));
            }
            Err(_) => return Err(connect_error(target, "timed out")),
        };
        Ok(EnrollClient {
            target: target.clone(),
            grpc: kagent_proto::v1::enrollment_client::EnrollmentClient::new(channel),
        })
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    pub async fn begin(&mut self, token: &str) -> Result<v1::BeginEnrollmentReply, Status> {
        let request = v1::BeginEnrollmentRequest {
            token: token.to_string(),
        };
        Ok(with_timeout(self.grpc.begin_enrollment(request))
            .await?
            .into_inner())
    }

    pub async fn complete(
        &mut self,
        token: &str,
        cert_pem: String,
        ca_pem: String,
    ) -> Result<v1::CompleteEnrollmentReply, Status> {
        let request = v1::CompleteEnrollmentRequest {
            token: token.to_string(),
            cert_pem,
            ca_pem,
        };
        Ok(with_timeout(self.grpc.complete_enrollment(request))
            .await?
            .into_inner())
    }

    /// Enrollment refusals carry their own remedy in the agent's message (new token, wait
    /// for the lockout); only the hint differs from other calls.
    pub fn explain(&self, what: &str, status: &Status) -> Error {
        let hint = match status.code() {
            Code::Unauthenticated | Code::FailedPrecondition => {
                "get a fresh token with `kagent enroll-token` (as root on the VM)"
            }
            Code::ResourceExhausted => "wait for the lockout to pass; the agent logs each refusal",
            Code::InvalidArgument => "the agent refused the certificate kctl signed; see above",
            _ => return explain(&self.target, what, status, true),
        };
        Error::failed(anyhow!("{what} on {}: {}", self.target, status.message())).hint(hint)
    }
}

/// The SHA-256 fingerprint of the certificate `target` presents, without trusting it (used
/// after a rotation to check that the new certificate is the one served).
pub async fn served_fingerprint(target: &Target) -> Result<String> {
    let verifier = pinned::PinnedVerifier::new("");
    let _ = tokio::time::timeout(
        2 * CONNECT_TIMEOUT,
        pinned::channel(&target.host, target.port, verifier.clone(), CONNECT_TIMEOUT),
    )
    .await;
    verifier
        .seen()
        .ok_or_else(|| Error::failed(anyhow!("{target} presented no certificate")))
}

async fn with_timeout<T>(call: impl Future<Output = Result<T, Status>>) -> Result<T, Status> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(result) => result,
        Err(_) => Err(Status::deadline_exceeded(format!(
            "no answer within {} s",
            CALL_TIMEOUT.as_secs()
        ))),
    }
}

/// Refuses unreadable PEM early, as a configuration error rather than a handshake failure.
fn check_pem(creds: &Credentials) -> Result<()> {
    let bad = |what: &str, e: anyhow::Error| {
        Error::usage(e.context(format!("{what} is not usable")))
            .hint("check your identity directory (--identity) and --ca-file")
    };
    crate::ca::fingerprint_pem(&creds.cert_pem).map_err(|e| {
        bad(
            &format!("the client certificate {}", creds.cert_path.display()),
            e,
        )
    })?;
    crate::ca::fingerprint_pem(&creds.ca_pem).map_err(|e| bad("the fleet CA certificate", e))?;
    if !creds.key_pem.contains("PRIVATE KEY-----") {
        return Err(bad("the client key", anyhow!("no PEM private key found")));
    }
    Ok(())
}

/// An error and its sources, `: `-joined (tonic's transport errors nest the real cause).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    dedupe(&parts.join(": "))
}

/// Drops `: `-separated segments that repeat the one before (hyper and h2 often wrap an error
/// in one that quotes it).
fn dedupe(text: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for segment in text.split(": ") {
        if out.last() != Some(&segment) {
            out.push(segment);
        }
    }
    out.join(": ")
}

/// Classifies a failed `connect()` by its cause.
fn connect_error(target: &Target, cause: &str) -> Error {
    let host = target.tls_name();
    let lower = cause.to_lowercase();
    let (error, hint) = if lower.contains("notvalidforname") || lower.contains("not valid for name")
    {
        (
            format!("the agent at {target} presented a certificate that does not name {host:?}"),
            format!(
                "dial the agent by a name its certificate carries, or issue it one that names \
                 {host}: `kctl ca issue agent {host}`"
            ),
        )
    } else if lower.contains("unknownissuer")
        || lower.contains("unknown issuer")
        // Two fleets whose CAs share a name (the default one): the issuer matches by name
        // and the signature check fails.
        || lower.contains("badsignature")
    {
        (
            format!("the agent at {target} presented a certificate not signed by your fleet CA"),
            "check that the agent and your identity come from the same `kctl ca init`, or pass \
             the agent's CA with --ca-file; a new agent that is not enrolled yet presents a \
             self-signed certificate: enroll it with `kctl enroll HOST --token TOKEN`"
                .to_string(),
        )
    } else if lower.contains("expired") {
        (
            format!("the agent at {target} presented an expired certificate"),
            format!("issue it a new one: `kctl ca issue agent {host}`"),
        )
    } else if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake")
    {
        (
            format!(
                "the agent refused the connection or the TLS handshake failed: check that the \
                 agent's certificate names {host} and that both sides use the same fleet CA"
            ),
            format!("is the service on {target} really kagent?"),
        )
    } else if lower.contains("lookup")
        || lower.contains("resolve")
        || lower.contains("name or service")
    {
        (
            format!("cannot resolve {host:?}"),
            "check the host name, or use its IP address (the certificate must name it)".to_string(),
        )
    } else {
        (
            format!("cannot connect to {target}"),
            format!("is kagent running and listening on {target}?"),
        )
    };
    Error::failed(anyhow!("{cause}").context(error)).hint(hint)
}

/// Whether the status came from the transport (connection, TLS, HTTP/2) rather than from the
/// agent's code. tonic attaches the underlying error as the source in that case.
fn is_transport(status: &Status) -> bool {
    std::error::Error::source(status).is_some()
}

/// The status as text: its message plus the transport cause, if any.
pub fn status_text(status: &Status) -> String {
    let message = status.message();
    match std::error::Error::source(status) {
        Some(source) => {
            let cause = chain(source);
            if message.is_empty() || cause.contains(message) {
                cause
            } else {
                dedupe(&format!("{message}: {cause}"))
            }
        }
        None if message.is_empty() => format!("{:?}", status.code()),
        None => message.to_string(),
    }
}

fn explain(target: &Target, what: &str, status: &Status, answered: bool) -> Error {
    let host = target.tls_name();
    let text = status_text(status);
    let cause = anyhow!("{text}");
    let on = format!("{what} on {target}");
    if is_transport(status) {
        return if answered {
            Error::failed(cause.context(format!("{on}: lost the connection to the agent"))).hint(
                format!("is kagent still running and listening on {target}?"),
            )
        } else {
            Error::failed(cause.context(format!(
                "{on}: the agent refused the connection or the TLS handshake failed: check that \
                 the agent's certificate names {host} and that both sides use the same fleet CA"
            )))
            .hint(
                "if the fleet CA matches, your client certificate may be expired or revoked: \
                 `kctl ca issue client NAME`",
            )
        };
    }
    match status.code() {
        Code::InvalidArgument => Error::usage(anyhow!("the agent refused the request: {text}"))
            .hint("nothing was applied; fix the spec and run the command again"),
        Code::PermissionDenied => Error::failed(cause.context(format!("{on}: permission denied")))
            .hint(
                "your certificate's role does not allow this call; use an identity with a \
                 stronger role (`kctl ca issue client NAME --role admin`)",
            ),
        Code::Unauthenticated => Error::failed(cause.context(format!("{on}: not authenticated")))
            .hint("the agent does not accept your client certificate; check --identity"),
        Code::NotFound => Error::failed(cause.context(format!("{on}: not found"))).hint(format!(
            "list the host's operations with `kctl ops {target}`"
        )),
        Code::Unimplemented => {
            Error::failed(cause.context(format!("{on}: not implemented"))).hint(format!(
                "the agent does not offer this call; compare versions with `kctl facts {target}`"
            ))
        }
        Code::DeadlineExceeded => Error::failed(cause.context(format!("{on}: timed out"))).hint(
            format!("is the host {target} overloaded or the network slow?"),
        ),
        Code::Unavailable => {
            Error::failed(cause.context(format!("{on}: the agent is unavailable")))
                .hint("nothing was changed; the agent's journal says why (`journalctl -u kagent`)")
        }
        Code::FailedPrecondition | Code::Aborted => {
            Error::failed(cause.context(format!("{on}: refused")))
        }
        _ => Error::failed(cause.context(format!("{on} failed ({:?})", status.code()))),
    }
}

/// Whether a stream that broke with `status` is worth re-attaching to.
pub fn is_retryable(status: &Status) -> bool {
    is_transport(status)
        || matches!(
            status.code(),
            Code::Unavailable
                | Code::Unknown
                | Code::Internal
                | Code::Cancelled
                | Code::DeadlineExceeded
                | Code::Aborted
                | Code::ResourceExhausted
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            host: "vm1.example".into(),
            port: 7443,
        }
    }

    #[test]
    fn connect_failures_are_classified() {
        let e = connect_error(
            &target(),
            "transport error: invalid peer certificate: NotValidForName",
        );
        assert!(
            e.to_string().contains("does not name \"vm1.example\""),
            "{e}"
        );
        let e = connect_error(&target(), "invalid peer certificate: UnknownIssuer");
        assert!(e.to_string().contains("not signed by your fleet CA"), "{e}");
        let e = connect_error(
            &target(),
            "tcp connect error: Connection refused (os error 111)",
        );
        assert!(
            e.to_string().contains("cannot connect to vm1.example:7443"),
            "{e}"
        );
        assert_eq!(
            e.hint.as_deref(),
            Some("is kagent running and listening on vm1.example:7443?")
        );
        assert_eq!(e.code, crate::error::EXIT_FAILED);
    }

    #[test]
    fn statuses_are_explained() {
        let e = explain(
            &target(),
            "Apply",
            &Status::invalid_argument("resource file \"a\": field `path`: outside"),
            true,
        );
        assert_eq!(e.code, crate::error::EXIT_USAGE);
        assert!(e.to_string().contains("field `path`: outside"), "{e}");
        let e = explain(
            &target(),
            "Facts",
            &Status::permission_denied("viewer"),
            true,
        );
        assert!(
            e.to_string()
                .contains("Facts on vm1.example:7443: permission denied: viewer"),
            "{e}"
        );
        let e = explain(
            &target(),
            "WatchOperation",
            &Status::not_found("no such op"),
            true,
        );
        assert!(
            e.hint
                .unwrap_or_default()
                .contains("kctl ops vm1.example:7443")
        );
    }

    #[test]
    fn repeated_causes_are_said_once() {
        assert_eq!(
            dedupe("h2 protocol error: error reading a body: error reading a body: peer closed"),
            "h2 protocol error: error reading a body: peer closed"
        );
        assert_eq!(dedupe("a: b: a"), "a: b: a");
    }

    #[test]
    fn retryable_statuses() {
        assert!(is_retryable(&Status::unavailable("restarting")));
        assert!(is_retryable(&Status::internal("h2 reset")));
        assert!(!is_retryable(&Status::not_found("x")));
        assert!(!is_retryable(&Status::invalid_argument("x")));
        assert!(!is_retryable(&Status::permission_denied("x")));
    }

    /// Over the wire, against the in-process fake agent.
    mod wire {
        use super::*;
        use crate::ca::{Ca, Validity};
        use crate::fake_agent::{FakeAgent, Fleet, Script, serve};

        fn local(addr: std::net::SocketAddr) -> Target {
            Target {
                host: "127.0.0.1".into(),
                port: addr.port(),
            }
        }

        /// Connects and makes one call; the error text, or "ok".
        async fn facts_via(target: &Target, creds: &Credentials) -> String {
            let mut client = match AgentClient::connect(target, creds).await {
                Ok(c) => c,
                Err(e) => return format!("{e}\nhint: {}", e.hint.clone().unwrap_or_default()),
            };
            match client.facts().await {
                Ok(f) => format!("ok {}", f.hostname),
                Err(s) => {
                    let e = client.explain("Facts", &s);
                    format!("{e}\nhint: {}", e.hint.clone().unwrap_or_default())
                }
            }
        }

        #[tokio::test]
        async fn facts_over_mutual_tls() -> anyhow::Result<()> {
            let fleet = Fleet::new("127.0.0.1")?;
            let addr = serve(FakeAgent::default(), &fleet.agent, fleet.ca.cert_pem()).await?;
            assert_eq!(
                facts_via(&local(addr), &fleet.credentials()).await,
                "ok fake"
            );
            Ok(())
        }

        #[tokio::test]
        async fn an_agent_whose_certificate_names_another_host_is_refused() -> anyhow::Result<()> {
            let fleet = Fleet::new("vm9.example")?;
            let addr = serve(FakeAgent::default(), &fleet.agent, fleet.ca.cert_pem()).await?;
            let got = facts_via(&local(addr), &fleet.credentials()).await;
            assert!(
                got.contains("presented a certificate that does not name \"127.0.0.1\""),
                "{got}"
            );
            assert!(got.contains("kctl ca issue agent 127.0.0.1"), "{got}");
            Ok(())
        }

        #[tokio::test]
        async fn an_agent_of_another_fleet_is_refused() -> anyhow::Result<()> {
            let ours = Fleet::new("127.0.0.1")?;
            let theirs = Fleet::new("127.0.0.1")?;
            let addr = serve(FakeAgent::default(), &theirs.agent, ours.ca.cert_pem()).await?;
            let got = facts_via(&local(addr), &ours.credentials()).await;
            assert!(got.contains("not signed by your fleet CA"), "{got}");
            Ok(())
        }

        #[tokio::test]
        async fn a_client_of_another_fleet_is_refused_by_the_agent() -> anyhow::Result<()> {
            let fleet = Fleet::new("127.0.0.1")?;
            let stranger = Ca::generate("other fleet", Validity::days(1))?;
            let addr = serve(FakeAgent::default(), &fleet.agent, stranger.cert_pem()).await?;
            let got = facts_via(&local(addr), &fleet.credentials()).await;
            // TLS 1.3: the refusal surfaces at connect or at the first call, with varying
            // causes; either way the operator reads the same explanation.
            assert!(
                got.contains(
                    "the agent refused the connection or the TLS handshake failed: check that \
                     the agent's certificate names 127.0.0.1 and that both sides use the same \
                     fleet CA"
                ),
                "{got}"
            );
            Ok(())
        }

        #[tokio::test]
        async fn nothing_listening_suggests_kagent_is_not_running() -> anyhow::Result<()> {
            let fleet = Fleet::new("127.0.0.1")?;
            let port = {
                let l = std::net::TcpListener::bind("127.0.0.1:0")?;
                l.local_addr()?.port()
            };
            let target = Target {
                host: "127.0.0.1".into(),
                port,
            };
            let got = facts_via(&target, &fleet.credentials()).await;
            assert!(
                got.contains(&format!("cannot connect to 127.0.0.1:{port}")),
                "{got}"
            );
            assert!(
                got.contains(&format!(
                    "is kagent running and listening on 127.0.0.1:{port}?"
                )),
                "{got}"
            );
            Ok(())
        }

        #[tokio::test]
        async fn a_refused_spec_is_a_usage_error() -> anyhow::Result<()> {
            let fleet = Fleet::new("127.0.0.1")?;
            let addr = serve(
                FakeAgent::new(Script::default()),
                &fleet.agent,
                fleet.ca.cert_pem(),
            )
            .await?;
            let mut client = AgentClient::connect(&local(addr), &fleet.credentials()).await?;
            let status = client.apply(v1::HostSpec::default(), false).await.err();
            let e = status.map(|s| client.explain("Apply", &s));
            let (code, text) = e.map(|e| (e.code, e.to_string())).unwrap_or_default();
            assert_eq!(code, crate::error::EXIT_USAGE);
            assert_eq!(text, "the agent refused the request: spec: no resources");
            Ok(())
        }

        #[tokio::test]
        async fn garbage_identity_is_a_configuration_error() -> anyhow::Result<()> {
            let fleet = Fleet::new("127.0.0.1")?;
            let mut creds = fleet.credentials();
            creds.ca_pem = "not a certificate".into();
            let target = Target {
                host: "127.0.0.1".into(),
                port: 1,
            };
            let e = AgentClient::connect(&target, &creds).await.err();
            let (code, text) = e.map(|e| (e.code, e.to_string())).unwrap_or_default();
            assert_eq!(code, crate::error::EXIT_USAGE);
            assert!(
                text.contains("the fleet CA certificate is not usable"),
                "{text}"
            );
            Ok(())
        }
    }
}
