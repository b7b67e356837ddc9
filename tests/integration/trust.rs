//! Enrollment, roles, rotation and the audit query, against the real `kagent` and `kctl`
//! binaries. Every "no" is tested: wrong token, lockout, expiry, replay, a pinned fingerprint
//! that does not match (a man in the middle), enrollment of an enrolled agent, a role too low.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use kagent_proto::v1::{
    self, BeginEnrollmentRequest, FactsRequest, ListAuditRequest,
    enrollment_client::EnrollmentClient,
};
use kagent_tests::*;
use kctl::ca::BundlePaths;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// kctl with its own config dir (fleet CA and admin identity from `kctl ca init`).
struct Kctl {
    bin: PathBuf,
    dir: tempfile::TempDir,
}

impl Kctl {
    fn init() -> Kctl {
        let bin = kctl_bin().expect("kctl binary: build it (cargo build) or set KCTL_BIN");
        let k = Kctl {
            bin,
            dir: tempfile::tempdir().expect("tempdir"),
        };
        k.ok(&[
            "ca",
            "init",
            "--name",
            "trust test fleet",
            "--client-name",
            "op-alice",
        ]);
        k
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .arg("--config-dir")
            .arg(self.dir.path())
            .args(args)
            .env_remove("KCTL_CONFIG_DIR")
            .env_remove("KCTL_IDENTITY")
            .env("NO_COLOR", "1")
            .output()
            .expect("run kctl")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kctl {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs, asserts failure, returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "kctl {args:?} should have failed:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn ca_cert(&self) -> PathBuf {
        self.dir.path().join("ca/ca.crt")
    }

    fn identity(&self) -> BundlePaths {
        BundlePaths::new(&self.dir.path().join("identity"), "client")
    }
}

/// An agent started without TLS files: it must come up in enrollment mode.
fn unenrolled_agent(ttl_secs: Option<u64>) -> (Agent, tempfile::TempDir) {
    let pki = Pki::new();
    let tls = tempfile::tempdir().expect("tempdir");
    let missing = BundlePaths::new(tls.path(), "agent");
    let mut agent = Agent::builder(&pki)
        .server_cert(&missing)
        .client_ca(&tls.path().join("ca.crt"))
        .build();
    if let Some(ttl) = ttl_secs {
        let mut t = agent.config_table();
        let mut e = toml::Table::new();
        e.insert("token_ttl_secs".into(), toml::Value::Integer(ttl as i64));
        t.insert("enrollment".into(), toml::Value::Table(e));
        agent.write_config(&t);
    }
    agent.start();
    (agent, tls)
}

fn token_file(agent: &Agent) -> PathBuf {
    agent.state_dir.join("enroll/token.json")
}

fn token(agent: &Agent) -> String {
    let text = std::fs::read_to_string(token_file(agent)).expect("token.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("token json");
    v["token"].as_str().expect("token field").to_string()
}

fn host(agent: &Agent) -> String {
    format!("localhost:{}", agent.addr.port())
}

/// An mTLS channel with the given identity and CA, dialling "localhost".
async fn mtls_channel(ca: &Path, id: &BundlePaths, agent: &Agent) -> Channel {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read_to_string(ca).unwrap()))
        .identity(Identity::from_pem(
            std::fs::read_to_string(&id.cert).unwrap(),
            std::fs::read_to_string(&id.key).unwrap(),
        ))
        .domain_name("localhost");
    Channel::from_shared(format!("https://{}", agent.addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("mTLS connect")
}

#[test]
fn a_new_agent_enrolls_and_switches_to_mtls_without_restarting() {
    let (mut agent, _tls) = unenrolled_agent(None);
    let kctl = Kctl::init();
    let pid = agent.pid();
    let t = token(&agent);
    let fingerprint = t.rsplit('.').next().unwrap().to_string();
    // The token and fingerprint are in the log and in a 0600 file.
    let log = agent.stderr();
    assert!(
        log.contains(&t) && log.contains(&fingerprint),
        "token not logged:\n{log}"
    );
    let mode = std::fs::metadata(token_file(&agent))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    // Before enrollment, the fleet API is not reachable.
    let before = kctl.fails(&["facts", &host(&agent)]);
    assert!(before.contains("enroll"), "{before}");

    let out = kctl.ok(&["enroll", &host(&agent), "--token", &t]);
    assert!(out.contains("enrolled"), "{out}");
    assert_eq!(agent.pid(), pid, "the agent restarted");
    assert!(agent.is_running());
    let facts = kctl.ok(&["--output", "json", "facts", &host(&agent)]);
    assert!(facts.contains("kagent.v1"), "{facts}");
    // Replaying the token fails: the agent now presents its fleet certificate.
    let replay = kctl.fails(&["enroll", &host(&agent), "--token", &t]);
    assert!(replay.contains("refusing to enroll"), "{replay}");
    let burnt = std::fs::read_to_string(token_file(&agent)).unwrap();
    assert!(burnt.contains("\"used\": true"), "{burnt}");
    // And after a restart it stays enrolled.
    agent.restart();
    kctl.ok(&["facts", &host(&agent)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn enrollment_rpcs_on_an_enrolled_agent_are_refused() {
    let (agent, _tls) = unenrolled_agent(None);
    let kctl = Kctl::init();
    let t = token(&agent);
    kctl.ok(&["enroll", &host(&agent), "--token", &t]);
    let channel = mtls_channel(&kctl.ca_cert(), &kctl.identity(), &agent).await;
    let mut enroll = EnrollmentClient::new(channel);
    let err = enroll
        .begin_enrollment(BeginEnrollmentRequest { token: t.clone() })
        .await
        .expect_err("enrolled agent accepted an enrollment");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("already enrolled"), "{err:?}");
}

#[test]
fn wrong_tokens_are_refused_then_locked_out() {
    let (agent, _tls) = unenrolled_agent(None);
    let kctl = Kctl::init();
    let t = token(&agent);
    let fp = t.rsplit('.').next().unwrap();
    let wrong = format!("ket1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.{fp}");
    let first = kctl.fails(&["enroll", &host(&agent), "--token", &wrong]);
    assert!(
        first.contains("wrong enrollment token") && first.contains("4 tries left"),
        "{first}"
    );
    for _ in 0..4 {
        kctl.fails(&["enroll", &host(&agent), "--token", &wrong]);
    }
    // Locked: even the right token is refused now, and nothing was installed.
    let locked = kctl.fails(&["enroll", &host(&agent), "--token", &t]);
    assert!(locked.contains("locked"), "{locked}");
    assert!(!agent.dir().join("tls").exists());
    let facts = kctl.fails(&["facts", &host(&agent)]);
    assert!(!facts.is_empty());
}

#[test]
fn a_fingerprint_mismatch_aborts_before_the_token_is_sent() {
    let (agent, _tls) = unenrolled_agent(None);
    let kctl = Kctl::init();
    let t = token(&agent);
    let secret = t.split('.').nth(1).unwrap();
    let forged = format!("ket1.{secret}.{}", "ab".repeat(32));
    let err = kctl.fails(&["enroll", &host(&agent), "--token", &forged]);
    assert!(err.contains("man in the middle"), "{err}");
    // The agent never saw the token: it counts no failure and the real token still works.
    assert!(
        !agent.stderr().contains("wrong enrollment token"),
        "{}",
        agent.stderr()
    );
    kctl.ok(&["enroll", &host(&agent), "--token", &t]);
}

#[test]
fn an_expired_token_is_refused_and_enroll_token_makes_a_new_one() {
    let (agent, _tls) = unenrolled_agent(Some(2));
    let kctl = Kctl::init();
    let old = token(&agent);
    std::thread::sleep(Duration::from_millis(2500));
    let err = kctl.fails(&["enroll", &host(&agent), "--token", &old]);
    assert!(err.contains("expired"), "{err}");
    // `kagent enroll-token` (root on the VM) prints a fresh token; the running agent uses it.
    let out = enroll_token_cmd(&agent)
        .output()
        .expect("kagent enroll-token");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fresh = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_ne!(fresh, old);
    let again = kctl.fails(&["enroll", &host(&agent), "--token", &old]);
    assert!(again.contains("wrong enrollment token"), "{again}");
    kctl.ok(&["enroll", &host(&agent), "--token", &fresh]);
    // Once enrolled, enroll-token refuses.
    let out = enroll_token_cmd(&agent).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already enrolled"));
}

/// `kagent enroll-token` for `agent`, without the test runner's KAGENT_* variables (they
/// would be taken as configuration overrides).
fn enroll_token_cmd(agent: &Agent) -> Command {
    let mut cmd = Command::new(kagent_bin());
    cmd.arg("--config").arg(&agent.config).arg("enroll-token");
    for (k, _) in std::env::vars() {
        if k.starts_with("KAGENT_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// kctl pointed at the harness PKI: its CA signs, the admin bundle is the identity.
fn kctl_for(pki: &Pki) -> (PathBuf, PathBuf) {
    (
        pki.path().to_path_buf(),
        pki.admin.cert.parent().unwrap().to_path_buf(),
    )
}

fn run_kctl(config: &Path, identity: &Path, args: &[&str]) -> Output {
    Command::new(kctl_bin().expect("kctl binary"))
        .arg("--config-dir")
        .arg(config)
        .arg("--identity")
        .arg(identity)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run kctl")
}

#[tokio::test(flavor = "multi_thread")]
async fn rotation_serves_a_new_certificate_without_dropping_connections() {
    let pki = Pki::new();
    let agent = Agent::start_new(&pki);
    let (config, identity) = kctl_for(&pki);
    let before = kctl::ca::fingerprint_pem(&pki.agent_bundle.cert_pem).unwrap();
    // A connection opened before the rotation, used during and after it.
    let mut open = grpc::admin(&pki, &agent).await;
    open.facts(FactsRequest {}).await.expect("facts before");
    let addr = agent.addr;
    let ca = pki.ca_cert.clone();
    let admin = pki.admin.clone();
    let hammer = tokio::spawn(async move {
        let mut failures = Vec::new();
        for _ in 0..40 {
            if let Err(e) = grpc::facts_with(&ca, Some(&admin), addr, "localhost").await {
                failures.push(e.to_string());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        failures
    });
    let out = tokio::task::spawn_blocking(move || {
        run_kctl(
            &config,
            &identity,
            &["ca", "rotate-agent", &format!("localhost:{}", addr.port())],
        )
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains(&before), "{stdout}");
    assert_eq!(
        hammer.await.unwrap(),
        Vec::<String>::new(),
        "calls failed during rotation"
    );
    open.facts(FactsRequest {})
        .await
        .expect("the old connection still works");
    // The new certificate replaced the file the agent's config names.
    let installed = std::fs::read_to_string(&pki.agent.cert).unwrap();
    let now = kctl::ca::fingerprint_pem(&installed).unwrap();
    assert_ne!(now, before);
    assert!(stdout.contains(&now), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn roles_decide_and_refusals_are_audited() {
    let pki = Pki::new();
    let agent = Agent::start_new(&pki);
    let viewer = pki.client("vic-viewer", "viewer");
    let operator = pki.client("olga-operator", "operator");
    let mut as_viewer = grpc::client(&pki, &agent, Some(&viewer)).await.unwrap();
    as_viewer
        .facts(FactsRequest {})
        .await
        .expect("viewer may read facts");
    let target = agent.root.join("denied.txt");
    let spec = spec::host_spec(vec![spec::file("denied", &target, b"x".to_vec())]);
    let err = as_viewer
        .apply(v1::ApplyRequest {
            spec: Some(spec),
            dry_run: false,
        })
        .await
        .expect_err("viewer applied a spec");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(
        err.message().contains("`admin`") && err.message().contains("vic-viewer"),
        "{err:?}"
    );
    assert!(!target.exists());
    let audit = as_viewer
        .list_audit(ListAuditRequest::default())
        .await
        .expect_err("viewer read the audit log");
    assert_eq!(audit.code(), tonic::Code::PermissionDenied);

    let mut as_operator = grpc::client(&pki, &agent, Some(&operator)).await.unwrap();
    let records = as_operator
        .list_audit(ListAuditRequest {
            caller: "vic-viewer".into(),
            ..Default::default()
        })
        .await
        .expect("operator reads the audit log")
        .into_inner()
        .records;
    let phases: Vec<(&str, &str)> = records
        .iter()
        .map(|r| (r.phase.as_str(), r.result.as_str()))
        .collect();
    assert_eq!(phases.len(), 2, "{records:?}");
    assert_eq!(phases[0].0, "begin");
    assert!(phases[1].1.starts_with("denied"), "{records:?}");
    assert!(
        records
            .iter()
            .all(|r| r.caller.contains("vic-viewer") && r.rpc.ends_with("/Apply"))
    );

    // The same through kctl, with a filter that matches nobody.
    let (config, identity) = kctl_for(&pki);
    let port = agent.addr.port().to_string();
    let out = run_kctl(
        &config,
        &identity,
        &[
            "audit",
            &format!("localhost:{port}"),
            "--caller",
            "nobody-at-all",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("no audit records"));
    let out = run_kctl(
        &config,
        &identity,
        &[
            "--output",
            "json",
            "audit",
            &format!("localhost:{port}"),
            "--since",
            "1h",
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(
        v["records"]
            .as_array()
            .map(|a| a.len() >= 2)
            .unwrap_or(false),
        "{v}"
    );
}
