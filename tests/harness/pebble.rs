//! Let's Encrypt's test CA for the certificate suites: `pebble` with `pebble-challtestsrv` as
//! its DNS (Debian package `pebble`), on free loopback ports, one pair per test.
//!
//! - Pebble's own HTTPS listener gets a certificate from a throwaway CA made with `kctl::ca`
//!   (the package ships none); agents trust it through the spec's `acme.ca_bundle`.
//! - challtestsrv answers every A query with 127.0.0.1 and no AAAA (`-defaultIPv6 ""`: its
//!   default `::1` would send pebble to an address the test does not expect) and runs none of
//!   its own challenge servers, so the HTTP-01 port is the agent's.
//! - `PEBBLE_VA_NOSLEEP=1` drops validation delays; nonce rejection stays at pebble's default
//!   5% unless the test changes it. Pebble makes a new root on every start: `root_pem()`
//!   fetches the current one from the management port.
//! - Orders and issued certificates are counted from pebble's log.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kctl::ca::{Ca, Validity};
use tempfile::TempDir;

pub struct Pebble {
    dir: TempDir,
    /// The address pebble's ACME and management listeners bind (127.0.0.1 unless
    /// [`Pebble::on_address`] set another, e.g. the simulated VMs' bridge).
    pub address: std::net::IpAddr,
    pub listen: u16,
    pub management: u16,
    /// The HTTP-01 port pebble's VA connects to: the agent's `acme.http01_port`.
    pub http01: u16,
    dns: u16,
    cts_management: u16,
    /// PEM of the CA that signed pebble's listener certificate.
    pub tls_ca: PathBuf,
    env: Vec<(String, String)>,
    /// Certificate validity in seconds (`certificateValidityPeriod`); 0: pebble's default.
    pub validity_secs: u64,
    pebble: Option<Child>,
    challtestsrv: Option<Child>,
    log: PathBuf,
}

/// Whether the pebble binaries are installed (tests/run installs them).
pub fn available() -> bool {
    which("pebble") && which("pebble-challtestsrv")
}

fn which(bin: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false)
}

impl Pebble {
    /// A pebble with default settings, started.
    pub fn start() -> Pebble {
        Pebble::builder().started()
    }

    pub fn builder() -> Pebble {
        assert!(
            available(),
            "pebble and pebble-challtestsrv are not installed (apt-get install pebble; tests/run \
             does it)"
        );
        let dir = tempfile::Builder::new()
            .prefix("kagent-pebble-")
            .tempdir()
            .expect("tempdir");
        let ca = Ca::generate("pebble listener CA", Validity::days(2)).expect("CA");
        let bundle = ca
            .issue_agent(
                "localhost",
                &[],
                &["127.0.0.1".parse().expect("ip")],
                Validity::days(2),
            )
            .expect("pebble cert");
        std::fs::write(dir.path().join("cert.pem"), &bundle.cert_pem).expect("write cert");
        std::fs::write(dir.path().join("key.pem"), &bundle.key_pem).expect("write key");
        let tls_ca = dir.path().join("tls-ca.pem");
        std::fs::write(&tls_ca, ca.cert_pem()).expect("write ca");
        let log = dir.path().join("pebble.log");
        Pebble {
            address: std::net::IpAddr::from([127, 0, 0, 1]),
            listen: crate::free_port(),
            management: crate::free_port(),
            http01: crate::free_port(),
            dns: crate::free_port(),
            cts_management: crate::free_port(),
            tls_ca,
            env: Vec::new(),
            validity_secs: 0,
            pebble: None,
            challtestsrv: None,
            log,
            dir,
        }
    }

    /// Extra environment for pebble (e.g. `PEBBLE_WFE_NONCEREJECT`).
    pub fn env(mut self, key: &str, value: &str) -> Pebble {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Listen on `address` (e.g. the VMs' bridge gateway) instead of loopback, with a listener
    /// certificate that names it, and validate HTTP-01 on `http01_port` (80 for agents in VMs).
    pub fn on_address(mut self, address: std::net::IpAddr, http01_port: u16) -> Pebble {
        let ca = Ca::generate("pebble listener CA", Validity::days(2)).expect("CA");
        let bundle = ca
            .issue_agent("localhost", &[], &[address], Validity::days(2))
            .expect("pebble cert");
        std::fs::write(self.dir.path().join("cert.pem"), &bundle.cert_pem).expect("write cert");
        std::fs::write(self.dir.path().join("key.pem"), &bundle.key_pem).expect("write key");
        std::fs::write(&self.tls_ca, ca.cert_pem()).expect("write ca");
        self.address = address;
        self.http01 = http01_port;
        self
    }

    /// Makes challtestsrv (pebble's DNS) answer `host` with `ip`, for HTTP-01 to a VM.
    pub fn add_a(&self, host: &str, ip: std::net::IpAddr) {
        let body = serde_json::json!({ "host": format!("{host}."), "addresses": [ip.to_string()] });
        let out = Command::new("curl")
            .args(["-sS", "--fail", "-X", "POST", "-d"])
            .arg(body.to_string())
            .arg(format!("http://127.0.0.1:{}/add-a", self.cts_management))
            .output()
            .expect("run curl");
        assert!(
            out.status.success(),
            "challtestsrv add-a {host}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn validity(mut self, secs: u64) -> Pebble {
        self.validity_secs = secs;
        self
    }

    pub fn started(mut self) -> Pebble {
        self.start_challtestsrv();
        self.start_pebble();
        self
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn directory_url(&self) -> String {
        format!("https://{}:{}/dir", self.address, self.listen)
    }

    fn start_challtestsrv(&mut self) {
        let child = Command::new("pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{}", self.dns)])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{}", self.cts_management)])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn pebble-challtestsrv");
        self.challtestsrv = Some(child);
        wait_port(
            [127, 0, 0, 1].into(),
            self.cts_management,
            "pebble-challtestsrv",
        );
    }

    /// (Re)starts pebble with the same ports. A restarted pebble has a new root and forgets
    /// accounts and orders.
    pub fn start_pebble(&mut self) {
        assert!(self.pebble.is_none(), "pebble already runs");
        let mut cfg = serde_json::json!({"pebble": {
            "listenAddress": format!("{}:{}", self.address, self.listen),
            "managementListenAddress": format!("{}:{}", self.address, self.management),
            "certificate": self.dir.path().join("cert.pem"),
            "privateKey": self.dir.path().join("key.pem"),
            "httpPort": self.http01,
            "tlsPort": crate::free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        if self.validity_secs > 0 {
            cfg["pebble"]["certificateValidityPeriod"] = self.validity_secs.into();
        }
        let cfg_path = self.dir.path().join("pebble-config.json");
        std::fs::write(&cfg_path, cfg.to_string()).expect("write pebble config");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("pebble log");
        let mut cmd = Command::new("pebble");
        cmd.arg("-config")
            .arg(&cfg_path)
            .args(["-dnsserver", &format!("127.0.0.1:{}", self.dns)])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log));
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn pebble");
        let deadline = Instant::now() + Duration::from_secs(30);
        for (port, what) in [
            (self.listen, "pebble"),
            (self.management, "pebble management"),
        ] {
            while std::net::TcpStream::connect((self.address, port)).is_err() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "{what} exited ({status}) before listening on {}:{port}:\n{}",
                        self.address,
                        self.log()
                    );
                }
                assert!(
                    Instant::now() < deadline,
                    "{what} did not listen on {}:{port} within 30 s:\n{}",
                    self.address,
                    self.log()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.pebble = Some(child);
    }

    /// Stops pebble (SIGKILL); challtestsrv keeps running.
    pub fn stop_pebble(&mut self) {
        if let Some(mut c) = self.pebble.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Pebble's current root certificate (PEM), from its management port.
    pub fn root_pem(&self) -> String {
        let out = Command::new("curl")
            .args(["-sS", "--fail", "--cacert"])
            .arg(&self.tls_ca)
            .arg(format!(
                "https://{}:{}/roots/0",
                self.address, self.management
            ))
            .output()
            .expect("run curl");
        assert!(
            out.status.success(),
            "fetching pebble's root failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 root")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many certificates pebble issued so far (all runs).
    pub fn issued(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("Issued certificate serial"))
            .count()
    }

    /// How many orders pebble accepted so far (all runs).
    pub fn orders(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("Added order"))
            .count()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop_pebble();
        if let Some(mut c) = self.challtestsrv.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_port(address: std::net::IpAddr, port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect((address, port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {address}:{port} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
