//! Who is calling: the identity carried by the client certificate of an mTLS connection.
//!
//! The TLS layer has already checked that the certificate chains to the fleet CA and is within
//! its validity; here it is only read. The role travels in the subject's Organization (as in
//! Talos); authorization by role is a later step, the name is used for journal and audit.

use sha2::{Digest, Sha256};
use x509_parser::prelude::*;

/// The caller of one RPC, or the agent itself for background work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The full subject, e.g. `CN=alice@laptop, O=admin`.
    pub subject: String,
    /// The subject's common name.
    pub name: String,
    /// The subject's organization (the role), when present.
    pub role: Option<String>,
    /// SHA-256 of the certificate, lower-case hex.
    pub fingerprint: String,
}

impl Caller {
    /// Reads the first (leaf) certificate of the peer chain.
    pub fn from_der(der: &[u8]) -> Result<Caller, String> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| format!("bad certificate: {e}"))?;
        let subject = cert.subject();
        let first = |it: &mut dyn Iterator<Item = &AttributeTypeAndValue>| {
            it.next().and_then(|a| a.as_str().ok()).map(str::to_owned)
        };
        Ok(Caller {
            subject: subject.to_string(),
            name: first(&mut subject.iter_common_name()).unwrap_or_default(),
            role: first(&mut subject.iter_organization()),
            fingerprint: hex::encode(Sha256::digest(der)),
        })
    }

    /// The agent acting on its own (e.g. the renewal scheduler).
    pub fn agent() -> Caller {
        Caller {
            subject: "kagent".into(),
            name: "kagent".into(),
            role: None,
            fingerprint: String::new(),
        }
    }
}
