//! A real Keycloak for the realm suites: the Quarkus distribution from Maven Central
//! (`org.keycloak:keycloak-quarkus-dist:VERSION:zip`, fetched once by `tests/run` into
//! `target/keycloak-dist/`, or here with `mvn` if it is missing), unpacked once under a file
//! lock, copied per instance (Keycloak writes its build and H2 data into its own tree), run with
//! `start-dev` (dev-file H2) on free loopback ports under `/auth`, over HTTPS only, with a
//! certificate for `127.0.0.1`/`localhost` from a throwaway CA made by `kctl::ca` (rcgen):
//! clients trust [`Keycloak::ca_file`]. The legacy 16.1.1 (WildFly) serves the same kind of
//! certificate from a PKCS#12 file put where its key store expects `application.keystore`.
//!
//! `Keycloak::shared()` is one instance per test binary (each test uses its own realm); a small
//! watchdog kills it when the test process exits. `Keycloak::start()` is an owned instance,
//! killed on drop.
//!
//! Env: `KAGENT_KEYCLOAK_VERSION` (default [`VERSION`]), `KAGENT_KEYCLOAK_JAVA_HOME` (a JDK >= 21;
//! default: the first of /usr/lib/jvm/{temurin-25,temurin-21,java-21-openjdk}-…).

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kctl::ca::{BundlePaths, Ca, Validity};
use nix::fcntl::{Flock, FlockArg};

pub const VERSION: &str = "26.5.6";
/// The seed's Keycloak (`jboss/keycloak:16.1.1`): WildFly, runs on Java 17.
pub const LEGACY_VERSION: &str = "16.1.1";
pub const ADMIN_USER: &str = "admin";
pub const ADMIN_PASSWORD: &str = "kagent-test-admin";
const START_TIMEOUT: Duration = Duration::from_secs(240);

pub fn version() -> String {
    std::env::var("KAGENT_KEYCLOAK_VERSION").unwrap_or_else(|_| VERSION.to_string())
}

fn dist_root() -> PathBuf {
    crate::workspace_root().join("target/keycloak-dist")
}

/// A JDK that runs Keycloak 26 (Java 21+).
pub fn java_home() -> PathBuf {
    if let Ok(p) = std::env::var("KAGENT_KEYCLOAK_JAVA_HOME") {
        return PathBuf::from(p);
    }
    let candidates = [
        "/usr/lib/jvm/temurin-25-jdk-amd64",
        "/usr/lib/jvm/temurin-21-jdk-amd64",
        "/usr/lib/jvm/java-25-openjdk-amd64",
        "/usr/lib/jvm/java-21-openjdk-amd64",
    ];
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("bin/java").is_file())
        .unwrap_or_else(|| {
            panic!(
                "no JDK >= 21 found (tried {candidates:?}); Keycloak 26 needs one: set \
                 KAGENT_KEYCLOAK_JAVA_HOME"
            )
        })
}

/// The unpacked distribution, fetched and unpacked at most once (under a lock shared by every
/// test process).
pub fn dist() -> PathBuf {
    dist_of("keycloak-quarkus-dist", &version())
}

/// The legacy 16.1.1 distribution (`org.keycloak:keycloak-server-dist`), unpacked once.
pub fn legacy_dist() -> PathBuf {
    dist_of("keycloak-server-dist", LEGACY_VERSION)
}

fn dist_of(artifact: &str, v: &str) -> PathBuf {
    let root = dist_root();
    std::fs::create_dir_all(&root).expect("create target/keycloak-dist");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(root.join(".lock"))
        .expect("open the dist lock");
    let _guard = Flock::lock(lock, FlockArg::LockExclusive).expect("lock target/keycloak-dist");
    let zip = root.join(format!("{artifact}-{v}.zip"));
    if !zip.is_file() {
        let out = Command::new("mvn")
            .args([
                "-q",
                "dependency:copy",
                &format!("-Dartifact=org.keycloak:{artifact}:{v}:zip"),
                &format!("-DoutputDirectory={}", root.display()),
            ])
            .output()
            .expect("run mvn (tests/run fetches the Keycloak zip beforehand)");
        assert!(
            out.status.success() && zip.is_file(),
            "mvn could not fetch {artifact} {v}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let unpacked = root.join(format!("keycloak-{v}"));
    let done = root.join(format!(".unpacked-{v}"));
    if !done.is_file() {
        let _ = std::fs::remove_dir_all(&unpacked);
        let st = Command::new("unzip")
            .args(["-q", "-o"])
            .arg(&zip)
            .arg("-d")
            .arg(&root)
            .status()
            .expect("run unzip");
        assert!(st.success(), "unzip {} failed", zip.display());
        std::fs::write(&done, b"").expect("mark unpacked");
    }
    unpacked
}

/// One running Keycloak.
pub struct Keycloak {
    /// `https://127.0.0.1:PORT/auth`
    pub url: String,
    pub port: u16,
    /// The PEM CA certificate that signed Keycloak's server certificate.
    pub ca_file: PathBuf,
    /// The version running (26.x or 16.1.1).
    pub version: String,
    pub log: PathBuf,
    pub started_in: Duration,
    child: Child,
    _dir: tempfile::TempDir,
}

static SHARED: OnceLock<Keycloak> = OnceLock::new();
/// One boot at a time: on a 2-CPU runner, JVMs booting together take three times as long each.
static BOOTING: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Keycloak {
    /// The binary's shared instance (started on first use, killed when the process exits).
    pub fn shared() -> &'static Keycloak {
        SHARED.get_or_init(|| {
            let kc = Keycloak::start();
            // The statics are never dropped: a watchdog ends Keycloak after this process.
            let script = format!(
                "while kill -0 {} 2>/dev/null; do sleep 1; done; kill -9 -{} 2>/dev/null",
                std::process::id(),
                kc.child.id()
            );
            let _ = Command::new("sh")
                .args(["-c", &script])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            kc
        })
    }

    /// A fresh instance of its own (own copy of the distribution, own H2 data, own ports).
    pub fn start() -> Keycloak {
        Keycloak::launch(false)
    }

    /// A fresh legacy 16.1.1 (WildFly, `standalone.sh`, default Java), HTTPS under `/auth`.
    pub fn start_legacy() -> Keycloak {
        Keycloak::launch(true)
    }

    fn launch(legacy: bool) -> Keycloak {
        let _booting = BOOTING.lock().unwrap_or_else(|e| e.into_inner());
        let src = if legacy { legacy_dist() } else { dist() };
        let dir = tempfile::Builder::new()
            .prefix("kagent-kc-")
            .tempdir()
            .expect("tempdir");
        let home = dir.path().join("kc");
        let st = Command::new("cp")
            .arg("-a")
            .arg(&src)
            .arg(&home)
            .status()
            .expect("cp the distribution");
        assert!(st.success(), "cp -a {} failed", src.display());
        let tls = server_tls(dir.path());
        let port = crate::free_port();
        let mgmt = crate::free_port();
        let http = crate::free_port();
        let log = dir.path().join("keycloak.log");
        let out = std::fs::File::create(&log).expect("create the Keycloak log");
        let err = out.try_clone().expect("clone log handle");
        let t0 = Instant::now();
        let child = if legacy {
            // All WildFly ports move by one offset: HTTPS on the free port, the others (8080,
            // 9990, 8009, 4712, 4713) by the same amount.
            let offset = port.saturating_sub(8443);
            legacy_keystore(&home, &tls);
            let st = Command::new(home.join("bin/add-user-keycloak.sh"))
                .args(["-u", ADMIN_USER, "-p", ADMIN_PASSWORD])
                .stdout(Stdio::null())
                .status()
                .expect("run add-user-keycloak.sh");
            assert!(st.success(), "add-user-keycloak.sh failed");
            Command::new(home.join("bin/standalone.sh"))
                .args([
                    "-b",
                    "127.0.0.1",
                    &format!("-Djboss.socket.binding.port-offset={offset}"),
                ])
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .process_group(0)
                .spawn()
                .expect("start standalone.sh")
        } else {
            Keycloak::spawn_quarkus(&home, [port, http, mgmt], &tls, out, err)
        };
        let mut kc = Keycloak {
            url: format!("https://127.0.0.1:{port}/auth"),
            port,
            ca_file: tls.ca.clone(),
            version: if legacy {
                LEGACY_VERSION.to_string()
            } else {
                version()
            },
            log,
            started_in: Duration::ZERO,
            child,
            _dir: dir,
        };
        loop {
            if https_status(&kc.url, "/realms/master", &kc.ca_file) == Some(200) {
                break;
            }
            if let Ok(Some(status)) = kc.child.try_wait() {
                panic!(
                    "Keycloak exited ({status}) before answering:\n{}",
                    kc.log_tail(60)
                );
            }
            if t0.elapsed() > START_TIMEOUT {
                panic!(
                    "Keycloak did not answer /auth/realms/master within {START_TIMEOUT:?}:\n{}",
                    kc.log_tail(60)
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        kc.started_in = t0.elapsed();
        eprintln!(
            "keycloak {} up at {} in {:.1}s",
            kc.version,
            kc.url,
            kc.started_in.as_secs_f64()
        );
        kc
    }

    fn spawn_quarkus(
        home: &Path,
        [port, http, mgmt]: [u16; 3],
        tls: &BundlePaths,
        out: std::fs::File,
        err: std::fs::File,
    ) -> Child {
        let java = java_home();
        Command::new(home.join("bin/kc.sh"))
            .args([
                "start-dev",
                // start-dev keeps plain HTTP on whatever `--http-enabled` says: give it a free
                // port of its own (the tests only use https).
                &format!("--http-port={http}"),
                &format!("--https-port={port}"),
                &format!("--https-certificate-file={}", tls.cert.display()),
                &format!("--https-certificate-key-file={}", tls.key.display()),
                "--http-host=127.0.0.1",
                "--http-relative-path=/auth",
                &format!("--http-management-port={mgmt}"),
            ])
            .env("JAVA_HOME", &java)
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    java.join("bin").display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .env("KC_BOOTSTRAP_ADMIN_USERNAME", ADMIN_USER)
            .env("KC_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own process group: kc.sh runs a first java for the build step.
            .process_group(0)
            .spawn()
            .expect("start kc.sh")
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Writes the admin password into `path` (the agent's managed credential file).
    pub fn write_admin_credential(path: &Path) {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create credential dir");
        }
        std::fs::write(path, format!("{ADMIN_PASSWORD}\n")).expect("write credential");
    }
}

impl Drop for Keycloak {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Status of an HTTPS GET (curl, trusting `ca`), `None` if nothing answers yet.
fn https_status(base: &str, path: &str, ca: &Path) -> Option<u16> {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
        ])
        .arg("--cacert")
        .arg(ca)
        .arg(format!("{base}{path}"))
        .stdin(Stdio::null())
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .ok()
        .filter(|c| *c != 0)
}

/// A CA and a server certificate for `localhost` / `127.0.0.1` under `dir/tls`.
fn server_tls(dir: &Path) -> BundlePaths {
    let ca = Ca::generate("kagent test keycloak CA", Validity::days(2)).expect("generate CA");
    ca.issue_agent(
        "localhost",
        &[],
        &["127.0.0.1".parse().expect("ip")],
        Validity::days(2),
    )
    .expect("issue the Keycloak certificate")
    .write(&dir.join("tls"), "keycloak")
    .expect("write the Keycloak certificate")
}

/// Keycloak 16's https listener uses Elytron's `applicationKS` key store,
/// `standalone/configuration/application.keystore` (password `password`), and generates a
/// self-signed `localhost` certificate only when the file is missing: put ours there, as
/// PKCS#12 (Java 17 reads PKCS#12 through the JKS type).
fn legacy_keystore(home: &Path, tls: &BundlePaths) {
    let out = Command::new("openssl")
        .args([
            "pkcs12",
            "-export",
            "-name",
            "server",
            "-passout",
            "pass:password",
        ])
        .arg("-in")
        .arg(&tls.cert)
        .arg("-inkey")
        .arg(&tls.key)
        .arg("-out")
        .arg(home.join("standalone/configuration/application.keystore"))
        .output()
        .expect("run openssl pkcs12");
    assert!(
        out.status.success(),
        "openssl pkcs12 -export failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
