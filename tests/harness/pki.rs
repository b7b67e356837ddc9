//! A throwaway fleet PKI made with `kctl::ca`, the same code operators use.

use std::path::{Path, PathBuf};

use kctl::ca::{Bundle, BundlePaths, Ca, Validity};
use tempfile::TempDir;
use time::{Duration, OffsetDateTime};

/// Name of the admin client certificate's CN.
pub const ADMIN_CN: &str = "admin-test";

/// A fleet CA in a temporary directory, an agent bundle for `localhost` + `127.0.0.1`, and an
/// admin client bundle. Each bundle lives in its own subdirectory (a bundle's `ca.crt` is the
/// CA that signed it, which differs for the foreign-CA bundle).
pub struct Pki {
    pub dir: TempDir,
    pub ca: Ca,
    /// The fleet CA certificate (what clients and the agent trust).
    pub ca_cert: PathBuf,
    /// Server bundle for `localhost` / `127.0.0.1`.
    pub agent: BundlePaths,
    pub agent_bundle: Bundle,
    /// Client bundle with CN `admin-test`, role `admin`.
    pub admin: BundlePaths,
    pub admin_bundle: Bundle,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("kagent-pki-")
            .tempdir()
            .expect("tempdir");
        let ca = Ca::generate("kagent test fleet", Validity::days(2)).expect("generate CA");
        ca.save(&dir.path().join("ca")).expect("save CA");
        let ca_cert = dir.path().join("ca").join(kctl::ca::CA_CERT);
        let agent_bundle = ca
            .issue_agent(
                "localhost",
                &[],
                &["127.0.0.1".parse().expect("ip")],
                Validity::days(2),
            )
            .expect("issue agent cert");
        let agent = agent_bundle
            .write(&dir.path().join("agent"), "agent")
            .expect("write agent");
        let admin_bundle = ca
            .issue_client(ADMIN_CN, "admin", Validity::days(2))
            .expect("issue admin cert");
        let admin = admin_bundle
            .write(&dir.path().join("admin"), "client")
            .expect("write admin");
        Pki {
            dir,
            ca,
            ca_cert,
            agent,
            agent_bundle,
            admin,
            admin_bundle,
        }
    }

    fn sub(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A client certificate of the fleet CA with another name and role.
    pub fn client(&self, name: &str, role: &str) -> BundlePaths {
        let b = self
            .ca
            .issue_client(name, role, Validity::days(2))
            .expect("issue client cert");
        b.write(&self.sub(&format!("client-{name}")), "client")
            .expect("write client")
    }

    /// A client certificate (CN `admin-test`, role admin) signed by a CA the agent does not
    /// trust.
    pub fn foreign_client(&self) -> BundlePaths {
        let other = Ca::generate("foreign fleet", Validity::days(2)).expect("foreign CA");
        let b = other
            .issue_client(ADMIN_CN, "admin", Validity::days(2))
            .expect("foreign client");
        b.write(&self.sub("foreign"), "client")
            .expect("write foreign client")
    }

    /// A client certificate of the fleet CA that expired yesterday.
    pub fn expired_client(&self) -> BundlePaths {
        let now = OffsetDateTime::now_utc();
        let v = Validity {
            not_before: now - Duration::days(2),
            not_after: now - Duration::days(1),
        };
        let b = self
            .ca
            .issue_client(ADMIN_CN, "admin", v)
            .expect("expired client");
        b.write(&self.sub("expired"), "client")
            .expect("write expired client")
    }

    /// An agent (server) certificate of the fleet CA for `name` only (no IP SAN).
    pub fn agent_for(&self, name: &str) -> BundlePaths {
        let b = self
            .ca
            .issue_agent(name, &[], &[], Validity::days(2))
            .expect("issue agent cert");
        b.write(&self.sub(&format!("agent-{name}")), "agent")
            .expect("write agent cert")
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Default for Pki {
    fn default() -> Self {
        Pki::new()
    }
}
