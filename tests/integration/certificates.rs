//! The `certificate` resource against Let's Encrypt's test CA: pebble + challtestsrv, one pair
//! per test (harness `pebble`), the real agent binary, and real TLS consumers the agent signals
//! or restarts and then probes: a Python server that reloads on SIGHUP, and an `openssl
//! s_server` container (`local/openssl:test`) that reads its files at start. HTTP-01 through
//! the agent's responder, a webroot served by the port's owner (a busybox httpd container), and
//! pausing that owner.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kagent_proto::v1::event::Payload;
use kagent_proto::v1::{
    self, AcmeIssuer, Certificate, CertificateConsumer, CertificateContent, CertificateFormat,
    CertificateTarget, ListCertificatesRequest, OperationState, RenewCertificateRequest, Resource,
    certificate::Issuer, resource::Kind,
};
use kagent_tests::docker;
use kagent_tests::pebble::Pebble;
use kagent_tests::{Agent, Pki, admin, apply, apply_events, collect, host_spec};

const NAMES: [&str; 2] = ["web.kagent.test", "www.kagent.test"];

/// An agent whose HTTP-01 port is pebble's and whose self-check resolves the test names to
/// loopback (as challtestsrv does for pebble).
fn agent_for(
    pki: &Pki,
    pebble: &Pebble,
    extra: &[(&str, toml::Value)],
    env: &[(&str, &str)],
) -> Agent {
    let mut b = Agent::builder(pki);
    for (k, v) in env {
        b = b.env(k, v);
    }
    let mut a = b.build();
    let mut t = a.config_table();
    let mut acme = toml::Table::new();
    acme.insert("http01_port".into(), i64::from(pebble.http01).into());
    acme.insert("poll_delay_ms".into(), 50.into());
    acme.insert("start_delay_max_secs".into(), 0.into());
    let mut resolve = toml::Table::new();
    for n in NAMES
        .iter()
        .chain(["a1.kagent.test", "a2.kagent.test", "a3.kagent.test"].iter())
    {
        resolve.insert(n.to_string(), "127.0.0.1".into());
    }
    for i in 0..6 {
        resolve.insert(format!("loop{i}.kagent.test"), "127.0.0.1".into());
    }
    acme.insert("resolve".into(), resolve.into());
    for (k, v) in extra {
        acme.insert(k.to_string(), v.clone());
    }
    t.insert("acme".into(), acme.into());
    a.write_config(&t);
    a.start();
    a
}

fn acme_issuer(pebble: &Pebble) -> Option<Issuer> {
    Some(Issuer::Acme(AcmeIssuer {
        directory_url: pebble.directory_url(),
        contact: vec!["ops@kagent.test".into()],
        ca_bundle: pebble.tls_ca.to_string_lossy().into_owned(),
        ..Default::default()
    }))
}

fn target(
    path: &Path,
    content: CertificateContent,
    format: CertificateFormat,
    uid: Option<u32>,
) -> CertificateTarget {
    CertificateTarget {
        path: path.to_string_lossy().into_owned(),
        content: content as i32,
        format: format as i32,
        uid,
        ..Default::default()
    }
}

fn cert_resource(
    name: &str,
    domains: &[&str],
    pebble: &Pebble,
    targets: Vec<CertificateTarget>,
    consumers: Vec<CertificateConsumer>,
) -> Resource {
    Resource {
        name: name.into(),
        kind: Some(Kind::Certificate(Certificate {
            domains: domains.iter().map(|d| d.to_string()).collect(),
            issuer: acme_issuer(pebble),
            targets,
            consumers,
            ..Default::default()
        })),
    }
}

fn finished(events: &[v1::Event]) -> v1::OperationFinished {
    events
        .iter()
        .find_map(|e| match &e.payload {
            Some(Payload::Finished(f)) => Some(f.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no finished event: {events:#?}"))
}

fn failures(events: &[v1::Event]) -> String {
    events
        .iter()
        .filter_map(|e| match &e.payload {
            Some(Payload::Failed(f)) => Some(format!("{} (hint: {})", f.error, f.hint)),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_ok(events: &[v1::Event]) -> v1::OperationFinished {
    let f = finished(events);
    assert_eq!(
        f.state,
        OperationState::Succeeded as i32,
        "operation failed: {}\n{}",
        f.error,
        failures(events)
    );
    f
}

/// `openssl x509 -serial` of a PEM file or text, lower-case hex without leading zeros.
fn serial_of(pem: &str) -> String {
    let mut child = Command::new("openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(pem.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("openssl output");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    normal_serial(text.trim_start_matches("serial="))
}

fn normal_serial(s: &str) -> String {
    let s = s.to_ascii_lowercase();
    let t = s.trim_start_matches('0');
    if t.is_empty() {
        "0".into()
    } else {
        t.to_string()
    }
}

/// The serial served at 127.0.0.1:port for SNI `name`, by `openssl s_client`.
fn served_serial(port: u16, name: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} -servername {name} </dev/null 2>/dev/null | openssl x509 -noout -serial"
        ))
        .output()
        .expect("openssl s_client");
    normal_serial(
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .trim_start_matches("serial="),
    )
}

/// Writes a throwaway self-signed certificate and key (the "old" one a consumer starts with).
fn old_cert(cert: &Path, key: &Path) {
    std::fs::create_dir_all(cert.parent().expect("parent")).expect("mkdir");
    let st = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=old",
        ])
        .arg("-keyout")
        .arg(key)
        .arg("-out")
        .arg(cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl req");
    assert!(st.success());
}

/// A TLS server that reloads its certificate on SIGHUP: the consumer.
struct TlsServer {
    child: Child,
    port: u16,
    pid_file: PathBuf,
}

const TLS_SERVER: &str = r#"
import os, signal, socket, ssl, sys
cert, key, port, pid_file = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
ctx = [None]
def load(*_):
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    c.load_cert_chain(cert, key)
    ctx[0] = c
load()
signal.signal(signal.SIGHUP, load)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen(16)
with open(pid_file + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.rename(pid_file + ".tmp", pid_file)
while True:
    conn, _ = s.accept()
    try:
        t = ctx[0].wrap_socket(conn, server_side=True)
        t.sendall(b"HTTP/1.0 200 OK\r\n\r\nok")
        t.close()
    except Exception:
        conn.close()
"#;

impl TlsServer {
    /// Starts on a throwaway self-signed certificate written to `cert`/`key` (the "old" one).
    fn start(dir: &Path, cert: &Path, key: &Path) -> TlsServer {
        old_cert(cert, key);
        let port = kagent_tests::free_port();
        let pid_file = dir.join("tls-server.pid");
        let child = Command::new("python3")
            .arg("-c")
            .arg(TLS_SERVER)
            .arg(cert)
            .arg(key)
            .arg(port.to_string())
            .arg(&pid_file)
            .stdin(Stdio::null())
            .spawn()
            .expect("python3");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pid_file.exists() || std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "TLS server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        TlsServer {
            child,
            port,
            pid_file,
        }
    }

    fn consumer(&self) -> CertificateConsumer {
        CertificateConsumer {
            pid_file: self.pid_file.to_string_lossy().into_owned(),
            signal: "SIGHUP".into(),
            probe: format!("127.0.0.1:{}", self.port),
            ..Default::default()
        }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Verifies `fullchain` up to `root` with openssl and returns the leaf's SANs.
fn verify_chain(dir: &Path, fullchain: &str, root: &str) -> String {
    let blocks: Vec<&str> = fullchain
        .split_inclusive("-----END CERTIFICATE-----\n")
        .collect();
    assert!(
        blocks.len() >= 2,
        "expected leaf + intermediate, got {}",
        blocks.len()
    );
    std::fs::write(dir.join("v-leaf.pem"), blocks[0]).expect("write");
    std::fs::write(dir.join("v-chain.pem"), blocks[1..].concat()).expect("write");
    std::fs::write(dir.join("v-root.pem"), root).expect("write");
    let out = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(dir.join("v-root.pem"))
        .arg("-untrusted")
        .arg(dir.join("v-chain.pem"))
        .arg(dir.join("v-leaf.pem"))
        .output()
        .expect("openssl verify");
    assert!(
        out.status.success(),
        "chain does not verify to pebble's root: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(dir.join("v-leaf.pem"))
        .output()
        .expect("openssl x509");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn renew(
    client: &mut v1::agent_client::AgentClient<tonic::transport::Channel>,
    name: &str,
    force: bool,
) -> Vec<v1::Event> {
    let stream = client
        .renew_certificate(RenewCertificateRequest {
            name: name.into(),
            force,
        })
        .await
        .unwrap_or_else(|s| panic!("RenewCertificate: {:?} {}", s.code(), s.message()))
        .into_inner();
    collect(stream).await.expect("renew stream")
}

async fn list(
    client: &mut v1::agent_client::AgentClient<tonic::transport::Channel>,
) -> Vec<v1::CertificateStatus> {
    client
        .list_certificates(ListCertificatesRequest {})
        .await
        .expect("ListCertificates")
        .into_inner()
        .certificates
}

#[tokio::test(flavor = "multi_thread")]
async fn issue_reapply_and_forced_renewal_with_a_real_consumer() {
    let pebble = Pebble::start();
    let pki = Pki::new();
    let agent = agent_for(&pki, &pebble, &[], &[]);
    let tls = agent.root.join("tls");
    let server = TlsServer::start(
        agent.dir(),
        &tls.join("fullchain.pem"),
        &tls.join("key.pem"),
    );
    let old_serial = served_serial(server.port, NAMES[0]);
    let spec = host_spec(vec![cert_resource(
        "web",
        &NAMES,
        &pebble,
        vec![
            target(
                &tls.join("fullchain.pem"),
                CertificateContent::Fullchain,
                CertificateFormat::Pem,
                None,
            ),
            target(
                &tls.join("key.pem"),
                CertificateContent::Key,
                CertificateFormat::Pem,
                Some(1000),
            ),
            target(
                &tls.join("cert.der"),
                CertificateContent::Cert,
                CertificateFormat::Der,
                None,
            ),
        ],
        vec![server.consumer()],
    )]);
    let mut c = admin(&pki, &agent).await;
    let t0 = Instant::now();
    let events = apply_events(&mut c, spec.clone()).await;
    assert_ok(&events);
    eprintln!(
        "first issuance + deploy + reload + probe: {:?}",
        t0.elapsed()
    );

    // Chain to pebble's root, names, key file owner/mode, the consumer serves it.
    let fullchain = std::fs::read_to_string(tls.join("fullchain.pem")).expect("fullchain");
    let sans = verify_chain(agent.dir(), &fullchain, &pebble.root_pem());
    for n in NAMES {
        assert!(sans.contains(&format!("DNS:{n}")), "{sans}");
    }
    use std::os::unix::fs::MetadataExt;
    let key = std::fs::metadata(tls.join("key.pem")).expect("key");
    assert_eq!((key.mode() & 0o777, key.uid()), (0o600, 1000));
    let first = serial_of(&fullchain);
    assert_ne!(first, old_serial);
    assert_eq!(served_serial(server.port, NAMES[0]), first);
    let der = std::fs::read(tls.join("cert.der")).expect("der");
    assert_eq!(der.first(), Some(&0x30), "DER starts with a SEQUENCE");
    let state_key = agent.state_dir.join("certs/web/current/key.pem");
    assert_eq!(
        std::fs::metadata(&state_key).expect("state key").mode() & 0o777,
        0o600
    );
    let account_dir = agent.state_dir.join("acme/accounts");
    for f in std::fs::read_dir(&account_dir).expect("accounts").flatten() {
        assert_eq!(f.metadata().expect("meta").mode() & 0o777, 0o600);
    }
    assert_eq!(pebble.issued(), 1);

    // Re-apply: unchanged, no order.
    let events = apply_events(&mut c, spec.clone()).await;
    let f = assert_ok(&events);
    assert_eq!(f.counts.expect("counts").unchanged, 1);
    assert_eq!(pebble.issued(), 1);

    // Listing.
    let certs = list(&mut c).await;
    assert_eq!(certs.len(), 1);
    let s = &certs[0];
    assert_eq!(normal_serial(&s.serial), first);
    assert!(
        s.days_left > 1000.0,
        "pebble certificates live ~5 years: {}",
        s.days_left
    );
    assert_eq!(s.renewal_basis, "1/3 of lifetime left");
    assert!(s.next_renewal.is_some() && s.last_error.is_empty());

    // Not due: renew without force plans unchanged.
    let events = renew(&mut c, "web", false).await;
    assert_eq!(assert_ok(&events).counts.expect("counts").unchanged, 1);
    assert_eq!(pebble.issued(), 1);

    // Forced renewal: new serial, files replaced, the consumer signalled and serving it.
    let events = renew(&mut c, "web", true).await;
    assert_ok(&events);
    let fullchain2 = std::fs::read_to_string(tls.join("fullchain.pem")).expect("fullchain");
    let second = serial_of(&fullchain2);
    assert_ne!(second, first);
    assert_eq!(served_serial(server.port, NAMES[0]), second);
    assert_eq!(pebble.issued(), 2);
    // The previous set is kept next to the current one.
    let versions = std::fs::read_dir(agent.state_dir.join("certs/web"))
        .expect("cert dir")
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .count();
    assert_eq!(versions, 2);
    let audit = std::fs::read_to_string(agent.audit_log()).expect("audit");
    assert!(
        audit.contains("/kagent.v1.Agent/RenewCertificate"),
        "{audit}"
    );

    // Unknown names are refused.
    let err = c
        .renew_certificate(RenewCertificateRequest {
            name: "nope".into(),
            force: true,
        })
        .await
        .expect_err("refused");
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread")]
async fn default_bad_nonce_rate_survives_a_loop_of_orders() {
    let pebble = Pebble::start(); // 5% of nonces rejected
    let pki = Pki::new();
    let agent = agent_for(&pki, &pebble, &[], &[]);
    let mut c = admin(&pki, &agent).await;
    let resources: Vec<Resource> = (0..6)
        .map(|i| {
            let name = format!("loop{i}.kagent.test");
            cert_resource(
                &format!("loop{i}"),
                &[name.as_str()],
                &pebble,
                vec![],
                vec![],
            )
        })
        .collect();
    let events = apply_events(&mut c, host_spec(resources)).await;
    assert_ok(&events);
    for round in 0..2 {
        let events = renew(&mut c, "", true).await;
        let f = assert_ok(&events);
        assert_eq!(f.counts.expect("counts").update, 6, "round {round}");
    }
    assert_eq!(pebble.issued(), 18);
}

#[tokio::test(flavor = "multi_thread")]
async fn pebble_down_during_scheduled_renewal_backs_off_and_recovers() {
    // 40-second certificates renew at half their life; the scheduler checks every second.
    let pebble = Pebble::builder().validity(40).started();
    let mut pebble = pebble;
    let pki = Pki::new();
    let agent = agent_for(
        &pki,
        &pebble,
        &[
            ("check_interval_secs", 1.into()),
            ("retry_base_secs", 1.into()),
            ("retry_max_secs", 3.into()),
        ],
        &[],
    );
    let tls = agent.root.join("tls");
    let server = TlsServer::start(
        agent.dir(),
        &tls.join("fullchain.pem"),
        &tls.join("key.pem"),
    );
    let spec = host_spec(vec![cert_resource(
        "web",
        &NAMES[..1],
        &pebble,
        vec![
            target(
                &tls.join("fullchain.pem"),
                CertificateContent::Fullchain,
                CertificateFormat::Pem,
                None,
            ),
            target(
                &tls.join("key.pem"),
                CertificateContent::Key,
                CertificateFormat::Pem,
                None,
            ),
        ],
        vec![server.consumer()],
    )]);
    let mut c = admin(&pki, &agent).await;
    assert_ok(&apply_events(&mut c, spec).await);
    let first = served_serial(server.port, NAMES[0]);
    pebble.stop_pebble();

    // The renewal comes due (~18-20 s in) and fails: counted, backing off, old cert served.
    let deadline = Instant::now() + Duration::from_secs(40);
    let failed = loop {
        let certs = list(&mut c).await;
        if certs[0].failures >= 2 {
            break certs[0].clone();
        }
        assert!(
            Instant::now() < deadline,
            "no failed renewal seen: {certs:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(!failed.last_error.is_empty());
    assert_eq!(served_serial(server.port, NAMES[0]), first);
    let ops = kagent_tests::list_operations(&mut c).await;
    let by_agent: Vec<_> = ops.iter().filter(|o| o.caller == "kagent").collect();
    assert!(
        by_agent.len() >= 2,
        "renewals are operations of the agent: {ops:#?}"
    );
    assert!(
        by_agent
            .iter()
            .all(|o| o.state == OperationState::Failed as i32)
    );

    // Pebble returns (new root, no memory of the account): the next attempt succeeds.
    pebble.start_pebble();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let certs = list(&mut c).await;
        if certs[0].failures == 0 && normal_serial(&certs[0].serial) != first {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "renewal did not recover: {certs:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let now_served = served_serial(server.port, NAMES[0]);
    assert_ne!(now_served, first);
    let audit = std::fs::read_to_string(agent.audit_log()).expect("audit");
    assert!(
        audit.contains("\"caller\":\"kagent\"") && audit.contains("kagent/renewal"),
        "{audit}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_order_resumes_without_a_second_certificate() {
    let pebble = Pebble::builder()
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        .started();
    let pki = Pki::new();
    let mut agent = agent_for(
        &pki,
        &pebble,
        &[],
        &[("KAGENT_DEBUG_ACME_DELAY_MS", "30000")],
    );
    let spec = host_spec(vec![cert_resource("web", &NAMES, &pebble, vec![], vec![])]);
    let mut c = admin(&pki, &agent).await;
    let mut stream = c
        .apply(v1::ApplyRequest {
            spec: Some(spec.clone()),
            dry_run: false,
        })
        .await
        .expect("apply")
        .into_inner();
    // Wait until the order is finalized (the CA has issued), then kill the agent.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("event in time")
            .expect("stream")
            .expect("event");
        if let Some(Payload::Progress(p)) = &ev.payload
            && p.message.contains("order finalized")
        {
            break;
        }
        assert!(Instant::now() < deadline);
    }
    agent.kill9();
    assert_eq!(pebble.orders(), 1);
    assert!(agent.state_dir.join("certs/web/pending.json").exists());

    agent.remove_env("KAGENT_DEBUG_ACME_DELAY_MS");
    agent.start();
    let mut c = admin(&pki, &agent).await;
    let events = apply_events(&mut c, spec).await;
    assert_ok(&events);
    assert_eq!(pebble.orders(), 1, "no second order:\n{}", pebble.log());
    assert_eq!(pebble.issued(), 1, "no second certificate");
    assert!(!agent.state_dir.join("certs/web/pending.json").exists());
    let log_serial = pebble
        .log()
        .lines()
        .find_map(|l| {
            l.split("Issued certificate serial ")
                .nth(1)
                .map(|r| r.split(' ').next().unwrap_or("").to_string())
        })
        .expect("serial in pebble log");
    let stored =
        std::fs::read_to_string(agent.state_dir.join("certs/web/current/cert.pem")).expect("cert");
    assert_eq!(serial_of(&stored), normal_serial(&log_serial));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_owned_port_or_a_failing_self_check_fails_before_ordering() {
    let pebble = Pebble::start();
    let pki = Pki::new();
    let agent = agent_for(&pki, &pebble, &[], &[]);
    let mut c = admin(&pki, &agent).await;

    // The HTTP-01 port belongs to someone else; no webroot, no container to pause.
    let owner = std::net::TcpListener::bind(("0.0.0.0", pebble.http01)).expect("own the port");
    let events = apply(
        &mut c,
        host_spec(vec![cert_resource("web", &NAMES, &pebble, vec![], vec![])]),
        false,
    )
    .await
    .expect("apply");
    let f = finished(&events);
    assert_eq!(f.state, OperationState::Failed as i32);
    let why = failures(&events);
    assert!(
        why.contains(&format!("port {} is in use", pebble.http01)),
        "{why}"
    );
    assert!(why.contains("nothing was ordered"), "{why}");
    assert!(
        why.contains("http01.webroot") && why.contains("http01.pause_container"),
        "{why}"
    );
    drop(owner);

    // A name that does not reach this host: the self-check fails, nothing is ordered.
    let events = apply(
        &mut c,
        host_spec(vec![cert_resource(
            "lost",
            &["unreachable.invalid"],
            &pebble,
            vec![],
            vec![],
        )]),
        false,
    )
    .await
    .expect("apply");
    let why = failures(&events);
    assert!(
        why.contains("self-check failed, so nothing was ordered"),
        "{why}"
    );
    assert_eq!(pebble.orders(), 0, "{}", pebble.log());

    // A spec error names the field.
    let mut bad = cert_resource("bad", &["*.kagent.test"], &pebble, vec![], vec![]);
    if let Some(Kind::Certificate(cert)) = &mut bad.kind {
        cert.key_type = 42;
    }
    let err = apply(&mut c, host_spec(vec![bad]), false)
        .await
        .expect_err("refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("field `domains`"),
        "{}",
        err.message()
    );
}

fn messages(events: &[v1::Event]) -> String {
    events
        .iter()
        .filter_map(|e| match &e.payload {
            Some(Payload::Progress(p)) => Some(p.message.clone()),
            Some(Payload::Done(d)) => Some(d.message.clone()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn started_at(container: &str) -> String {
    docker::inspect(container, "{{.State.StartedAt}}").expect("container exists")
}

fn with_http01(mut r: Resource, http01: v1::Http01) -> Resource {
    if let Some(Kind::Certificate(c)) = &mut r.kind {
        c.http01 = Some(http01);
    }
    r
}

/// Files under `dir`, recursively (for "the challenge files are gone").
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A busybox httpd container serving `webroot` (read-only at /www) on 127.0.0.1:`host_port`:
/// the owner of the HTTP-01 port.
fn httpd_owner(names: &docker::Names, webroot: &Path, host_port: u16) -> String {
    std::fs::create_dir_all(webroot).expect("webroot");
    let name = names.name("httpd");
    docker::docker_ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "--stop-timeout",
        "1",
        "-p",
        &format!("127.0.0.1:{host_port}:80"),
        "-v",
        &format!("{}:/www:ro", webroot.display()),
        docker::busybox_image(),
        "httpd",
        "-f",
        "-vv",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    assert!(
        docker::wait_until(Duration::from_secs(10), || docker::http_get(host_port, "/")
            .is_some()),
        "httpd did not start: {}",
        String::from_utf8_lossy(&docker::docker(&["logs", &name]).stderr)
    );
    name
}

#[tokio::test(flavor = "multi_thread")]
async fn forced_renewal_restarts_a_real_consumer_container() {
    docker::require_docker();
    let image = docker::openssl_image();
    let names = docker::Names::new("certc");
    let _cleanup = names.cleanup();
    let pebble = Pebble::start();
    let pki = Pki::new();
    let agent = agent_for(&pki, &pebble, &[], &[]);
    let tls = agent.root.join("consumer-tls");
    old_cert(&tls.join("fullchain.pem"), &tls.join("key.pem"));

    // `openssl s_server` (the image's entrypoint) reads its files once, at start: a restart is
    // its reload. As PID 1 it
    // ignores SIGTERM, so the container's own stop timeout (1 s) decides how long that takes.
    let port = kagent_tests::free_port();
    let name = names.name("tls");
    docker::docker_ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "--stop-timeout",
        "1",
        "-p",
        &format!("127.0.0.1:{port}:8443"),
        "-v",
        &format!("{}:/certs:ro", tls.display()),
        image,
        "s_server",
        "-accept",
        "8443",
        "-cert",
        "/certs/fullchain.pem",
        "-key",
        "/certs/key.pem",
        "-www",
    ]);
    assert!(
        docker::wait_until(Duration::from_secs(10), || served_serial(port, NAMES[0])
            != "0"),
        "s_server did not start: {}",
        String::from_utf8_lossy(&docker::docker(&["logs", &name]).stderr)
    );
    let old_serial = served_serial(port, NAMES[0]);
    let spec = host_spec(vec![cert_resource(
        "web",
        &NAMES,
        &pebble,
        vec![
            target(
                &tls.join("fullchain.pem"),
                CertificateContent::Fullchain,
                CertificateFormat::Pem,
                None,
            ),
            target(
                &tls.join("key.pem"),
                CertificateContent::Key,
                CertificateFormat::Pem,
                None,
            ),
        ],
        vec![CertificateConsumer {
            container: name.clone(),
            probe: format!("127.0.0.1:{port}"),
            ..Default::default()
        }],
    )]);
    let mut c = admin(&pki, &agent).await;

    let before = started_at(&name);
    let t0 = Instant::now();
    let events = apply_events(&mut c, spec.clone()).await;
    assert_ok(&events);
    eprintln!(
        "issuance + deploy + container restart + probe: {:?}",
        t0.elapsed()
    );
    let msgs = messages(&events);
    assert!(
        msgs.contains(&format!("restart container {name} done")),
        "{msgs}"
    );
    let first = serial_of(&std::fs::read_to_string(tls.join("fullchain.pem")).expect("chain"));
    // The agent's own probe passed and names the serial the container serves now.
    assert!(
        msgs.contains(&format!("127.0.0.1:{port} serves serial {first}")),
        "{msgs}"
    );
    assert_ne!(first, old_serial);
    assert_ne!(
        started_at(&name),
        before,
        "the agent restarted the container"
    );
    assert_eq!(served_serial(port, NAMES[0]), first);

    // Forced renewal: new files, the container restarted again, and it serves the new serial.
    let before = started_at(&name);
    let t0 = Instant::now();
    let events = renew(&mut c, "web", true).await;
    assert_ok(&events);
    eprintln!("forced renewal with container restart: {:?}", t0.elapsed());
    let second = serial_of(&std::fs::read_to_string(tls.join("fullchain.pem")).expect("chain"));
    assert_ne!(second, first);
    let msgs = messages(&events);
    assert!(
        msgs.contains(&format!("127.0.0.1:{port} serves serial {second}")),
        "{msgs}"
    );
    assert_ne!(
        started_at(&name),
        before,
        "the agent restarted the container"
    );
    assert_eq!(served_serial(port, NAMES[0]), second);
    assert_eq!(
        docker::inspect(&name, "{{.State.Running}}").as_deref(),
        Some("true")
    );
    assert_eq!(pebble.issued(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn webroot_served_by_the_port_owner() {
    docker::require_docker();
    let names = docker::Names::new("certw");
    let _cleanup = names.cleanup();
    let pebble = Pebble::start();
    let pki = Pki::new();
    let agent = agent_for(&pki, &pebble, &[], &[]);
    // The HTTP-01 port belongs to a web server container that serves the webroot directory.
    let webroot = agent.root.join("webroot");
    let owner = httpd_owner(&names, &webroot, pebble.http01);
    let resource = with_http01(
        cert_resource("web", &NAMES, &pebble, vec![], vec![]),
        v1::Http01 {
            webroot: webroot.to_string_lossy().into_owned(),
            ..Default::default()
        },
    );
    let mut c = admin(&pki, &agent).await;
    let events = apply_events(&mut c, host_spec(vec![resource])).await;
    assert_ok(&events);
    assert_eq!(pebble.issued(), 1);
    let stored = std::fs::read_to_string(agent.state_dir.join("certs/web/current/fullchain.pem"))
        .expect("stored chain");
    let sans = verify_chain(agent.dir(), &stored, &pebble.root_pem());
    for n in NAMES {
        assert!(sans.contains(&format!("DNS:{n}")), "{sans}");
    }
    // The CA (and the self-check) fetched the tokens from the owner, which kept the port.
    let log = String::from_utf8_lossy(&docker::docker(&["logs", &owner]).stderr).into_owned();
    let fetched = log
        .lines()
        .filter(|l| l.contains("url:/.well-known/acme-challenge/"))
        .count();
    assert!(
        fetched >= 2 * NAMES.len(),
        "the self-check and the CA fetch once per name, through the owner: {log}"
    );
    assert_eq!(
        docker::inspect(&owner, "{{.State.Running}}").as_deref(),
        Some("true")
    );
    // No challenge file is left behind.
    let left = files_under(&webroot.join(".well-known/acme-challenge"));
    assert!(left.is_empty(), "challenge files left: {left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn pausing_the_port_owner_reports_the_downtime() {
    docker::require_docker();
    let names = docker::Names::new("certp");
    let _cleanup = names.cleanup();
    let pebble = Pebble::start();
    let pki = Pki::new();
    let agent = agent_for(&pki, &pebble, &[], &[]);
    // The owner serves an empty directory: it cannot answer the challenge itself.
    let owner = httpd_owner(&names, &agent.dir().join("owner-www"), pebble.http01);
    let mut c = admin(&pki, &agent).await;

    // Without a webroot and without permission to pause it: fails before ordering, naming the
    // container.
    let events = apply(
        &mut c,
        host_spec(vec![cert_resource("web", &NAMES, &pebble, vec![], vec![])]),
        false,
    )
    .await
    .expect("apply");
    assert_eq!(finished(&events).state, OperationState::Failed as i32);
    let why = failures(&events);
    assert!(
        why.contains(&format!("in use by container \"{owner}\""))
            && why.contains("nothing was ordered"),
        "{why}"
    );
    assert_eq!(pebble.orders(), 0, "{}", pebble.log());

    let resource = with_http01(
        cert_resource("web", &NAMES, &pebble, vec![], vec![]),
        v1::Http01 {
            pause_container: owner.clone(),
            ..Default::default()
        },
    );
    let events = apply_events(&mut c, host_spec(vec![resource])).await;
    assert_ok(&events);
    assert_eq!(pebble.issued(), 1);
    let msgs = messages(&events);
    let downtimes: Vec<u64> = msgs
        .lines()
        .filter_map(|l| {
            l.strip_prefix(&format!("container {owner} was stopped for "))
                .and_then(|r| r.strip_suffix(" ms for the challenge"))
                .and_then(|ms| ms.parse().ok())
        })
        .collect();
    assert_eq!(
        downtimes.len(),
        1,
        "one pause from the self-check through the validation, its downtime reported: {msgs}"
    );
    eprintln!("owner downtime per pause (ms): {downtimes:?}");
    // Started again, and serving.
    assert_eq!(
        docker::inspect(&owner, "{{.State.Running}}").as_deref(),
        Some("true")
    );
    assert!(docker::wait_until(Duration::from_secs(10), || {
        docker::http_get(pebble.http01, "/").is_some()
    }));
}

/// A certificate dropped from the specs keeps being renewed from its stored definition until
/// it is retired (`kctl certs HOST --retire NAME`): then it is neither listed nor renewable,
/// its files stay, unknown names and viewers are refused, and applying it again resumes the
/// same certificate.
#[tokio::test(flavor = "multi_thread")]
async fn a_retired_certificate_is_no_longer_managed_and_its_files_stay() {
    let pki = Pki::new();
    let agent = Agent::start_new(&pki);
    let mut client = admin(&pki, &agent).await;
    let cert = agent.root.join("tls/old.pem");
    let key = agent.root.join("tls/old.key");
    let resource = Resource {
        name: "old".into(),
        kind: Some(Kind::Certificate(Certificate {
            domains: vec!["old.kagent.test".into()],
            issuer: Some(Issuer::SelfSigned(v1::SelfSignedIssuer { days: 30 })),
            targets: vec![
                target(
                    &cert,
                    CertificateContent::Fullchain,
                    CertificateFormat::Pem,
                    None,
                ),
                target(&key, CertificateContent::Key, CertificateFormat::Pem, None),
            ],
            ..Default::default()
        })),
    };
    assert_ok(&apply_events(&mut client, host_spec(vec![resource.clone()])).await);
    let listed = list(&mut client).await;
    assert_eq!(listed.len(), 1);
    let serial = listed[0].serial.clone();

    let kctl = kagent_tests::kctl_cli::Kctl::admin(&pki);
    let host = format!("localhost:{}", agent.addr.port());
    let out = kctl.ok(&["certs", &host, "--retire", "old"]);
    assert!(out.starts_with("retired old: no longer renewed"), "{out}");
    assert!(out.contains(&cert.display().to_string()), "{out}");
    assert!(
        list(&mut client).await.is_empty(),
        "a retired certificate is listed"
    );
    assert!(cert.is_file() && key.is_file(), "its files were removed");
    let renew = client
        .renew_certificate(RenewCertificateRequest {
            name: "old".into(),
            force: true,
        })
        .await;
    assert!(renew.is_err(), "a retired certificate can be renewed");

    let again = kctl.fails(&["certs", &host, "--retire", "old"]);
    assert!(again.contains("no certificate named \"old\""), "{again}");
    let viewer = pki.client("viewer-retire", "viewer");
    let as_viewer = kagent_tests::kctl_cli::Kctl::with_identity(&pki, &viewer);
    let denied = as_viewer.fails(&["certs", &host, "--retire", "old"]);
    assert!(denied.to_lowercase().contains("permission"), "{denied}");
    let audit = std::fs::read_to_string(agent.audit_log()).expect("audit log");
    assert!(
        audit.contains("/kagent.v1.Agent/RetireCertificate"),
        "{audit}"
    );

    // Named again by an apply: managed again, the same certificate.
    assert_ok(&apply_events(&mut client, host_spec(vec![resource])).await);
    let back = list(&mut client).await;
    assert_eq!(back.len(), 1);
    assert_eq!(
        back[0].serial, serial,
        "re-managing issued a new certificate"
    );
}
