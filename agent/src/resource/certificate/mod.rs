//! `certificate`: a TLS certificate for some domains, from an ACME CA (HTTP-01 through the
//! agent's own responder or a webroot), self-signed, or provided as files; kept in the state
//! dir, deployed to targets with the owner and mode consumers need, consumers restarted or
//! signalled, and the served certificate checked.
//!
//! Same verbs as every kind: `from_proto` (validate), `read` (store + targets -> observed),
//! `plan` (pure: issue, renew, redeploy or nothing), `apply`. A re-apply of an unchanged spec is
//! `unchanged` until the renewal time (see `scheduler::renewal`), which the scheduler also uses.
//!
//! The kind needs the agent's state dir and ACME settings: the daemon installs them once
//! (`install`), as it is process-wide state like the journal.

pub mod deploy;
pub mod http01;
pub mod issue;
pub mod probe;
pub mod reload;
pub mod store;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use kagent_proto::v1::{
    self, Action, CertificateContent, CertificateFormat, certificate::Issuer as ProtoIssuer,
};
use prost::Message;

use super::{Change, FieldError, Progress, ResourceError, check_mode};
use crate::host::fs::{self, FileState, Perms, Roots};
use crate::scheduler::renewal::{self, Basis, Lifetime};
use store::{CertDir, Material, Meta};

pub const LETSENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
pub const LETSENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";
pub const DEFAULT_SELF_SIGNED_DAYS: u32 = 90;
const MAX_DOMAINS: usize = 100;

/// What the certificate kind needs from the agent.
#[derive(Debug, Clone)]
pub struct Context {
    pub state_dir: PathBuf,
    pub roots: Roots,
    pub acme: AcmeSettings,
}

#[derive(Debug, Clone)]
pub struct AcmeSettings {
    /// The port the CA connects to for HTTP-01 (80; a test CA such as pebble uses 5002), which
    /// the responder binds and the self-check dials.
    pub http01_port: u16,
    /// Names the self-check resolves here instead of through the system resolver (like
    /// `curl --resolve`), for test names that only the CA's DNS knows.
    pub resolve: HashMap<String, IpAddr>,
    /// First delay when polling an order.
    pub poll_delay: Duration,
    pub retry_base_secs: i64,
    pub retry_max_secs: i64,
}

static CONTEXT: OnceLock<Arc<Context>> = OnceLock::new();

/// Installs the process-wide context; the first call wins.
pub fn install(ctx: Context) -> Arc<Context> {
    CONTEXT.get_or_init(|| Arc::new(ctx)).clone()
}

pub fn context() -> Result<Arc<Context>, ResourceError> {
    CONTEXT.get().cloned().ok_or_else(|| ResourceError {
        message: "the certificate store is not set up (bug: the daemon installs it)".into(),
        hint: "please file a bug".into(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    EcdsaP256,
    EcdsaP384,
    Rsa(u32),
}

impl KeyType {
    pub fn name(self) -> String {
        match self {
            KeyType::EcdsaP256 => "ecdsa-p256".into(),
            KeyType::EcdsaP384 => "ecdsa-p384".into(),
            KeyType::Rsa(bits) => format!("rsa{bits}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eab {
    pub kid: String,
    pub hmac_key_file: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acme {
    pub directory_url: String,
    pub contact: Vec<String>,
    pub eab: Option<Eab>,
    pub profile: Option<String>,
    pub ca_bundle: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Issuer {
    Acme(Acme),
    SelfSigned {
        days: u32,
    },
    Provided {
        cert: PathBuf,
        key: PathBuf,
        chain: Option<PathBuf>,
    },
}

impl Issuer {
    /// Identifies the issuer in `meta.json`: a change means a new certificate.
    pub fn id(&self) -> String {
        match self {
            Issuer::Acme(a) => format!("acme {}", a.directory_url),
            Issuer::SelfSigned { .. } => "self_signed".into(),
            Issuer::Provided { cert, .. } => format!("provided {}", cert.display()),
        }
    }
}

/// How the CA's HTTP-01 request reaches the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// Bind the port (it must be free).
    Standalone,
    /// Write tokens into this directory (`WEBROOT/.well-known/acme-challenge`), which the
    /// port's owner serves.
    Webroot(PathBuf),
    /// Stop this container while the CA validates, then start it again.
    Pause(String),
}

#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub domains: Vec<String>,
    pub issuer: Issuer,
    pub key_type: KeyType,
    pub challenge: Challenge,
    pub targets: Vec<deploy::Target>,
    pub consumers: Vec<reload::Consumer>,
    /// The resource as given, encoded: kept as `spec.pb` for renewals.
    pub encoded: Vec<u8>,
    /// Renew even if not due, when the current certificate has this serial (`RenewCertificate`
    /// with `force`). Set by the agent, never by a spec.
    pub force_serial: Option<String>,
}

fn field(f: &'static str, p: impl Into<String>) -> FieldError {
    FieldError::new(f, p)
}

/// A DNS name as HTTP-01 can validate it: lower case, LDH labels, no wildcard.
fn check_domain(d: &str, allow_ip: bool) -> Result<String, FieldError> {
    let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
    if allow_ip && d.parse::<IpAddr>().is_ok() {
        return Ok(d);
    }
    if d.starts_with("*.") {
        return Err(field(
            "domains",
            format!(
                "{d:?}: wildcards need the DNS-01 challenge, which kagent does not do; list the names"
            ),
        ));
    }
    let ok_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if d.len() > 253 || !d.contains('.') && d != "localhost" || !d.split('.').all(ok_label) {
        return Err(field(
            "domains",
            format!("{d:?} is not a DNS name (e.g. keycloak.example.org)"),
        ));
    }
    Ok(d)
}

pub fn from_proto(name: &str, p: &v1::Certificate, roots: &Roots) -> Result<Spec, FieldError> {
    let issuer = match &p.issuer {
        None => {
            return Err(field(
                "issuer",
                "no issuer; set one of acme, self_signed, provided",
            ));
        }
        Some(ProtoIssuer::Acme(a)) => {
            let directory_url = match a.directory_url.as_str() {
                "" | "letsencrypt" => LETSENCRYPT.to_string(),
                "letsencrypt-staging" => LETSENCRYPT_STAGING.to_string(),
                u if u.starts_with("https://") => u.to_string(),
                u => {
                    return Err(field(
                        "acme.directory_url",
                        format!(
                            "{u:?}: use an https:// URL, \"letsencrypt\" or \"letsencrypt-staging\""
                        ),
                    ));
                }
            };
            for c in &a.contact {
                if !c.contains('@') || c.contains(char::is_whitespace) || c.starts_with("mailto:") {
                    return Err(field(
                        "acme.contact",
                        format!("{c:?} is not an e-mail address (write it without mailto:)"),
                    ));
                }
            }
            let abs = |f: &'static str, s: &str| -> Result<Option<PathBuf>, FieldError> {
                if s.is_empty() {
                    return Ok(None);
                }
                if !s.starts_with('/') {
                    return Err(field(f, format!("{s:?} is not an absolute path")));
                }
                Ok(Some(PathBuf::from(s)))
            };
            let eab = match (
                a.eab_kid.is_empty(),
                abs("acme.eab_hmac_key_file", &a.eab_hmac_key_file)?,
            ) {
                (true, None) => None,
                (false, Some(f)) => Some(Eab {
                    kid: a.eab_kid.clone(),
                    hmac_key_file: f,
                }),
                _ => {
                    return Err(field(
                        "acme.eab_kid",
                        "external account binding needs both eab_kid and eab_hmac_key_file",
                    ));
                }
            };
            Issuer::Acme(Acme {
                directory_url,
                contact: a.contact.clone(),
                eab,
                profile: (!a.profile.is_empty()).then(|| a.profile.clone()),
                ca_bundle: abs("acme.ca_bundle", &a.ca_bundle)?,
            })
        }
        Some(ProtoIssuer::SelfSigned(s)) => {
            let days = if s.days == 0 {
                DEFAULT_SELF_SIGNED_DAYS
            } else {
                s.days
            };
            if days > 3650 {
                return Err(field(
                    "self_signed.days",
                    format!("{days} is more than 3650"),
                ));
            }
            Issuer::SelfSigned { days }
        }
        Some(ProtoIssuer::Provided(pr)) => {
            let path = |f: &'static str, s: &str| -> Result<PathBuf, FieldError> {
                if !s.starts_with('/') {
                    return Err(field(
                        f,
                        format!("{s:?}: give the absolute path of a PEM file"),
                    ));
                }
                Ok(PathBuf::from(s))
            };
            Issuer::Provided {
                cert: path("provided.cert", &pr.cert)?,
                key: path("provided.key", &pr.key)?,
                chain: if pr.chain.is_empty() {
                    None
                } else {
                    Some(path("provided.chain", &pr.chain)?)
                },
            }
        }
    };
    let allow_ip = matches!(issuer, Issuer::SelfSigned { .. });
    let mut domains = Vec::new();
    for d in &p.domains {
        let d = check_domain(d, allow_ip)?;
        if !domains.contains(&d) {
            domains.push(d);
        }
    }
    if domains.is_empty() && !matches!(issuer, Issuer::Provided { .. }) {
        return Err(field(
            "domains",
            "no domains; list the names the certificate is for",
        ));
    }
    if domains.len() > MAX_DOMAINS {
        return Err(field(
            "domains",
            format!("{} names; at most {MAX_DOMAINS}", domains.len()),
        ));
    }
    let key_type = match v1::CertificateKeyType::try_from(p.key_type) {
        Ok(v1::CertificateKeyType::Unspecified | v1::CertificateKeyType::EcdsaP256) => {
            KeyType::EcdsaP256
        }
        Ok(v1::CertificateKeyType::EcdsaP384) => KeyType::EcdsaP384,
        Ok(v1::CertificateKeyType::Rsa2048) => KeyType::Rsa(2048),
        Ok(v1::CertificateKeyType::Rsa3072) => KeyType::Rsa(3072),
        Err(_) => {
            return Err(field(
                "key_type",
                format!(
                    "{} is not a key type; use ecdsa-p256, ecdsa-p384, rsa2048 or rsa3072",
                    p.key_type
                ),
            ));
        }
    };
    let h = p.http01.clone().unwrap_or_default();
    let challenge = match (h.webroot.is_empty(), h.pause_container.is_empty()) {
        (true, true) => Challenge::Standalone,
        (false, true) => {
            let dir = format!(
                "{}/.well-known/acme-challenge",
                h.webroot.trim_end_matches('/')
            );
            roots
                .check(&format!("{dir}/kagent-check"))
                .map_err(|e| field("http01.webroot", e.to_string()))?;
            Challenge::Webroot(PathBuf::from(dir))
        }
        (true, false) => Challenge::Pause(h.pause_container.clone()),
        (false, false) => {
            return Err(field("http01", "give webroot or pause_container, not both"));
        }
    };
    if !matches!(issuer, Issuer::Acme(_)) && challenge != Challenge::Standalone {
        return Err(field("http01", "only an acme issuer uses HTTP-01"));
    }
    let mut targets = Vec::new();
    for t in &p.targets {
        let path = roots
            .check(&t.path)
            .map_err(|e| field("targets.path", e.to_string()))?;
        if targets.iter().any(|x: &deploy::Target| x.path == path) {
            return Err(field("targets.path", format!("{path} is listed twice")));
        }
        let content = CertificateContent::try_from(t.content)
            .map_err(|_| field("targets.content", "use fullchain, cert, chain or key"))?;
        let format = CertificateFormat::try_from(t.format)
            .map_err(|_| field("targets.format", "use pem or der"))?;
        if format == CertificateFormat::Der
            && matches!(
                content,
                CertificateContent::Fullchain
                    | CertificateContent::Chain
                    | CertificateContent::Unspecified
            )
        {
            return Err(field(
                "targets.format",
                format!(
                    "{path}: DER holds one object; use content = cert or key with format der, or PEM for a chain"
                ),
            ));
        }
        let is_key = content == CertificateContent::Key;
        targets.push(deploy::Target {
            path,
            content,
            format,
            perms: Perms {
                mode: check_mode(
                    "targets.mode",
                    t.mode.unwrap_or(if is_key { 0o600 } else { 0o644 }),
                )?,
                uid: t.uid.unwrap_or(0),
                gid: t.gid.unwrap_or(0),
                dir_mode: check_mode("targets.dir_mode", t.dir_mode.unwrap_or(0o755))?,
            },
        });
    }
    let mut consumers = Vec::new();
    for c in &p.consumers {
        let target = match (c.container.is_empty(), c.pid_file.is_empty()) {
            (false, true) => reload::Target::Container(c.container.clone()),
            (true, false) if c.pid_file.starts_with('/') => {
                reload::Target::PidFile(PathBuf::from(&c.pid_file))
            }
            (true, false) => return Err(field("consumers.pid_file", "give an absolute path")),
            _ => {
                return Err(field(
                    "consumers",
                    "name exactly one of container or pid_file",
                ));
            }
        };
        let signal = if c.signal.is_empty() {
            None
        } else {
            Some(reload::parse_signal(&c.signal).map_err(|e| field("consumers.signal", e))?)
        };
        let probe = if c.probe.is_empty() {
            None
        } else if c
            .probe
            .rsplit_once(':')
            .is_some_and(|(_, port)| port.parse::<u16>().is_ok())
        {
            Some(c.probe.clone())
        } else {
            return Err(field(
                "consumers.probe",
                format!("{:?}: give host:port, e.g. 127.0.0.1:443", c.probe),
            ));
        };
        consumers.push(reload::Consumer {
            target,
            signal,
            probe,
        });
    }
    Ok(Spec {
        name: name.to_string(),
        domains,
        issuer,
        key_type,
        challenge,
        targets,
        consumers,
        encoded: p.encode_to_vec(),
        force_serial: None,
    })
}

/// The current certificate and when it is due.
#[derive(Debug, Clone)]
pub struct Current {
    pub material: Material,
    pub meta: Meta,
    pub renew_at: i64,
    pub basis: Basis,
}

#[derive(Debug, Clone)]
pub struct Observed {
    /// Unix seconds when read: the plan's clock.
    pub now: i64,
    pub current: Option<Current>,
    pub stored_spec: Option<Vec<u8>>,
    pub targets: Vec<Option<FileState>>,
    /// Provided issuer: the source files as they are now.
    pub provided: Option<Material>,
}

/// Renewal time of a stored certificate.
pub fn due(meta: &Meta, renewal: &store::Renewal, provided: bool) -> (i64, Basis) {
    if provided {
        return (i64::MAX, Basis::ThirdLeft);
    }
    let ari = renewal.ari.filter(|_| renewal.ari_serial == meta.serial);
    renewal::renew_at(
        Lifetime {
            not_before: meta.not_before,
            not_after: meta.not_after,
        },
        ari,
        renewal::seed(meta.serial.as_bytes()),
    )
}

pub fn read(spec: &Spec) -> Result<Observed, ResourceError> {
    let ctx = context()?;
    read_in(
        spec,
        &ctx.state_dir,
        time::OffsetDateTime::now_utc().unix_timestamp(),
    )
}

fn read_in(spec: &Spec, state_dir: &std::path::Path, now: i64) -> Result<Observed, ResourceError> {
    let dir = CertDir::new(state_dir, &spec.name);
    let provided_issuer = matches!(spec.issuer, Issuer::Provided { .. });
    let current = dir
        .load()
        .map_err(|e| ResourceError::io("read the stored certificate in", &dir.dir, &e))?
        .map(|(material, meta)| {
            let (renew_at, basis) = due(&meta, &dir.load_renewal(), provided_issuer);
            Current {
                material,
                meta,
                renew_at,
                basis,
            }
        });
    let mut targets = Vec::with_capacity(spec.targets.len());
    for t in &spec.targets {
        targets.push(fs::read(&t.path).map_err(|e| ResourceError::io("read", t.path.path(), &e))?);
    }
    let provided = match &spec.issuer {
        Issuer::Provided { cert, key, chain } => {
            Some(issue::provided(cert, key, chain.as_deref())?)
        }
        _ => None,
    };
    Ok(Observed {
        now,
        current,
        stored_spec: dir.load_spec(),
        targets,
        provided,
    })
}

fn rfc3339(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

/// Why a new certificate is needed, if it is. Pure.
pub fn reissue_reason(spec: &Spec, o: &Observed) -> Option<String> {
    let Some(cur) = &o.current else {
        return Some(format!(
            "+ certificate for {} from {} (key {})",
            spec.domains.join(", "),
            spec.issuer.id(),
            spec.key_type.name()
        ));
    };
    let mut want = spec.domains.clone();
    let mut have = cur.meta.domains.clone();
    want.sort();
    have.sort();
    if want != have {
        return Some(format!(
            "~ domains: {} -> {} (new certificate)",
            have.join(", "),
            want.join(", ")
        ));
    }
    if cur.meta.issuer != spec.issuer.id() {
        return Some(format!(
            "~ issuer: {} -> {} (new certificate)",
            cur.meta.issuer,
            spec.issuer.id()
        ));
    }
    if let Some(p) = &o.provided {
        if p.cert_pem != cur.material.cert_pem
            || p.key_pem != cur.material.key_pem
            || p.chain_pem != cur.material.chain_pem
        {
            return Some("~ the provided files changed".into());
        }
        return None;
    }
    if cur.meta.key_type != spec.key_type.name() {
        return Some(format!(
            "~ key type: {} -> {} (new certificate)",
            cur.meta.key_type,
            spec.key_type.name()
        ));
    }
    if spec.force_serial.as_deref() == Some(cur.meta.serial.as_str()) {
        return Some(format!(
            "~ renew now (forced; replaces serial {})",
            cur.meta.serial
        ));
    }
    if o.now >= cur.meta.not_after {
        return Some(format!(
            "~ renew: expired at {}",
            rfc3339(cur.meta.not_after)
        ));
    }
    if o.now >= cur.renew_at {
        return Some(format!(
            "~ renew: due since {} ({}; not after {})",
            rfc3339(cur.renew_at),
            cur.basis.word(),
            rfc3339(cur.meta.not_after)
        ));
    }
    None
}

pub fn plan(spec: &Spec, o: &Observed) -> Change {
    let mut lines = Vec::new();
    let reason = reissue_reason(spec, o);
    let reissue = reason.is_some();
    if let Some(r) = reason {
        lines.push(r);
        for t in &spec.targets {
            lines.push(format!(
                "~ deploy {} to {} (mode {:04o}, owner {}:{})",
                deploy::content_name(t.content),
                t.path,
                t.perms.mode,
                t.perms.uid,
                t.perms.gid
            ));
        }
    } else if let Some(cur) = &o.current {
        for (t, now) in spec.targets.iter().zip(&o.targets) {
            match t.render(&cur.material) {
                Ok(want) => lines.extend(t.diff(&want, now)),
                Err(e) => lines.push(format!("~ deploy {}: {e}", t.path)),
            }
        }
    }
    let settings_changed = o.stored_spec.as_deref() != Some(spec.encoded.as_slice());
    if !reissue && lines.is_empty() && !settings_changed {
        return Change::unchanged();
    }
    let deploys = !lines.is_empty();
    if !reissue && !deploys {
        lines.push("~ settings (challenge, consumers) recorded for renewals".into());
    }
    if deploys {
        for c in &spec.consumers {
            let probe = c
                .probe
                .as_ref()
                .map(|p| format!(", then check {p} serves the new certificate"))
                .unwrap_or_default();
            lines.push(format!("~ then {}{probe}", c.describe()));
        }
    }
    Change {
        action: if o.current.is_none() {
            Action::Create
        } else {
            Action::Update
        },
        diff: lines.join("\n"),
        warnings: Vec::new(),
    }
}

pub async fn apply(
    spec: &Spec,
    o: &Observed,
    progress: &(dyn Progress + '_),
) -> Result<String, ResourceError> {
    let ctx = context()?;
    let dir = CertDir::new(&ctx.state_dir, &spec.name);
    let reissue = reissue_reason(spec, o).is_some();
    let result = apply_in(spec, o, &ctx, &dir, progress).await;
    // The renewal bookkeeping is the resource's own state: failures back the scheduler off.
    let mut r = dir.load_renewal();
    match &result {
        Ok(_) if reissue => {
            r.failures = 0;
            r.last_error.clear();
        }
        Ok(_) => {}
        Err(e) => {
            r.failures = r.failures.saturating_add(1);
            r.last_failure = time::OffsetDateTime::now_utc().unix_timestamp();
            r.last_error = e.message.clone();
        }
    }
    if r != dir.load_renewal() {
        let _ = dir.save_renewal(&r);
    }
    result
}

async fn apply_in(
    spec: &Spec,
    o: &Observed,
    ctx: &Context,
    dir: &CertDir,
    progress: &(dyn Progress + '_),
) -> Result<String, ResourceError> {
    let mut parts = Vec::new();
    let (material, serial) = if reissue_reason(spec, o).is_some() {
        let m = match &spec.issuer {
            Issuer::Acme(a) => issue::acme(spec, a, ctx, dir, progress).await?,
            Issuer::SelfSigned { days } => {
                issue::self_signed(&spec.domains, issue::generate_key(spec.key_type)?, *days)?
            }
            Issuer::Provided { .. } => o.provided.clone().ok_or_else(|| ResourceError {
                message: "the provided files were not read (bug)".into(),
                hint: String::new(),
            })?,
        };
        let parsed = issue::check_material(&m, &spec.domains).map_err(|e| ResourceError {
            message: format!("the new certificate is not usable: {e}"),
            hint: "nothing was deployed; the current certificate stays in place".into(),
        })?;
        let meta = Meta {
            serial: parsed.serial.clone(),
            domains: if spec.domains.is_empty() {
                parsed.names.clone()
            } else {
                spec.domains.clone()
            },
            issuer: spec.issuer.id(),
            key_type: match spec.issuer {
                Issuer::Provided { .. } => "provided".into(),
                _ => spec.key_type.name(),
            },
            not_before: parsed.not_before,
            not_after: parsed.not_after,
            issued_at: time::OffsetDateTime::now_utc().unix_timestamp(),
        };
        tokio::task::block_in_place(|| dir.commit(&m, &meta))
            .map_err(|e| ResourceError::io("store the certificate in", &dir.dir, &e))?;
        dir.clear_pending()
            .map_err(|e| ResourceError::io("remove", &dir.pending(), &e))?;
        parts.push(format!(
            "issued serial {} (not after {})",
            parsed.serial,
            rfc3339(parsed.not_after)
        ));
        progress.report(&parts[0], None);
        (m, parsed.serial)
    } else {
        let cur = o.current.as_ref().ok_or_else(|| ResourceError {
            message: "no stored certificate (bug)".into(),
            hint: String::new(),
        })?;
        (cur.material.clone(), cur.meta.serial.clone())
    };

    let mut files = Vec::new();
    let mut content_changed = false;
    for (t, now) in spec.targets.iter().zip(&o.targets) {
        let want = t.render(&material).map_err(|e| ResourceError {
            message: e,
            hint: String::new(),
        })?;
        if t.diff(&want, now).is_some() {
            content_changed |= now.as_ref().map(|n| n.content != want).unwrap_or(true);
            files.push((t, want));
        }
    }
    if !files.is_empty() {
        let n = files.len();
        tokio::task::block_in_place(|| deploy::write_set(&files)).map_err(|e| ResourceError {
            message: e,
            hint: "the previous files are unchanged".into(),
        })?;
        parts.push(format!("deployed {n} file(s)"));
    }
    tokio::task::block_in_place(|| dir.save_spec(&spec.encoded))
        .map_err(|e| ResourceError::io("record the spec in", &dir.dir, &e))?;
    if content_changed {
        let sni = spec
            .domains
            .first()
            .cloned()
            .unwrap_or_else(|| "localhost".into());
        for c in &spec.consumers {
            if let reload::Target::Container(name) = &c.target {
                let exists = reload::container_exists(name)
                    .await
                    .map_err(|e| ResourceError {
                        message: e,
                        hint: "the new files are in place; restart the consumer by hand".into(),
                    })?;
                if !exists {
                    progress.report(
                        &format!(
                            "container {name} does not exist yet: it reads the files when it is \
                             created"
                        ),
                        None,
                    );
                    continue;
                }
            }
            reload::notify(c).await.map_err(|e| ResourceError {
                message: e,
                hint: "the new files are in place; restart the consumer by hand".into(),
            })?;
            progress.report(&format!("{} done", c.describe()), None);
            if let Some(addr) = &c.probe {
                probe::expect_serial(addr, &sni, &serial, probe::PROBE_TIMEOUT)
                    .await
                    .map_err(|e| ResourceError {
                        message: format!("{} did not take the new certificate: {e}", c.describe()),
                        hint: "check the consumer reads the deployed files and reloads on this \
                               signal or restart"
                            .into(),
                    })?;
                parts.push(format!("{addr} serves serial {serial}"));
            }
        }
    }
    if parts.is_empty() {
        parts.push("recorded the settings".into());
    }
    Ok(parts.join("; "))
}

/// `RetireCertificate`: stops managing `name`; the paths of its deployed files (left in place).
/// `Ok(None)` when no such certificate is managed.
pub fn retire(ctx: &Context, name: &str) -> std::io::Result<Option<Vec<String>>> {
    let dir = CertDir::new(&ctx.state_dir, name);
    Ok(dir.retire()?.map(|bytes| {
        v1::Certificate::decode(bytes.as_slice())
            .map(|c| c.targets.into_iter().map(|t| t.path).collect())
            .unwrap_or_default()
    }))
}

/// What `ListCertificates` shows for every certificate the agent manages.
pub fn statuses(ctx: &Context) -> Vec<v1::CertificateStatus> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut out = Vec::new();
    for name in store::managed_names(&ctx.state_dir) {
        let dir = CertDir::new(&ctx.state_dir, &name);
        let spec = dir
            .load_spec()
            .and_then(|b| v1::Certificate::decode(b.as_slice()).ok())
            .unwrap_or_default();
        let renewal = dir.load_renewal();
        let mut s = v1::CertificateStatus {
            name: name.clone(),
            domains: spec.domains.clone(),
            issuer: issuer_label(&spec),
            last_error: renewal.last_error.clone(),
            failures: renewal.failures,
            ..Default::default()
        };
        if let Ok(Some((_, meta))) = dir.load() {
            let provided = matches!(spec.issuer, Some(ProtoIssuer::Provided(_)));
            let (at, basis) = due(&meta, &renewal, provided);
            s.serial = meta.serial.clone();
            s.domains = meta.domains.clone();
            s.not_before = Some(ts(meta.not_before));
            s.not_after = Some(ts(meta.not_after));
            s.days_left = (meta.not_after - now) as f64 / 86_400.0;
            if !provided {
                let backoff = renewal::backoff_secs(
                    renewal.failures,
                    ctx.acme.retry_base_secs,
                    ctx.acme.retry_max_secs,
                    Lifetime {
                        not_before: meta.not_before,
                        not_after: meta.not_after,
                    },
                );
                let next = match renewal::decide(now, at, attempts(&renewal), backoff) {
                    renewal::Decision::WaitUntil(t) => t,
                    renewal::Decision::Renew => now,
                };
                s.next_renewal = Some(ts(next));
                s.renewal_basis = basis.word().into();
            }
        }
        out.push(s);
    }
    out
}

pub fn attempts(r: &store::Renewal) -> renewal::Attempts {
    renewal::Attempts {
        failures: r.failures,
        last_failure: r.last_failure,
    }
}

fn ts(secs: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: secs,
        nanos: 0,
    }
}

fn issuer_label(spec: &v1::Certificate) -> String {
    match &spec.issuer {
        Some(ProtoIssuer::Acme(a)) => match a.directory_url.as_str() {
            "" | "letsencrypt" => "letsencrypt".into(),
            u => format!("acme {u}"),
        },
        Some(ProtoIssuer::SelfSigned(_)) => "self_signed".into(),
        Some(ProtoIssuer::Provided(_)) => "provided".into(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    trait OrS<T> {
        fn or_s(self) -> Result<T, String>;
    }
    impl<T, E: std::fmt::Debug> OrS<T> for Result<T, E> {
        fn or_s(self) -> Result<T, String> {
            self.map_err(|e| format!("{e:?}"))
        }
    }

    fn roots(dir: &std::path::Path) -> Roots {
        Roots::new(&[dir.to_path_buf()])
    }

    fn proto(root: &std::path::Path) -> v1::Certificate {
        v1::Certificate {
            domains: vec!["Web.Example.org".into()],
            issuer: Some(ProtoIssuer::SelfSigned(v1::SelfSignedIssuer { days: 30 })),
            targets: vec![
                v1::CertificateTarget {
                    path: format!("{}/tls/fullchain.pem", root.display()),
                    ..Default::default()
                },
                v1::CertificateTarget {
                    path: format!("{}/tls/key.pem", root.display()),
                    content: CertificateContent::Key as i32,
                    uid: Some(1000),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn validation_names_the_field() -> Result<(), String> {
        let tmp = tempfile::tempdir().or_s()?;
        let r = roots(tmp.path());
        let s = from_proto("web", &proto(tmp.path()), &r).or_s()?;
        assert_eq!(s.domains, ["web.example.org"]);
        assert_eq!(s.targets[1].perms.mode, 0o600);
        assert_eq!(s.key_type, KeyType::EcdsaP256);
        type Edit = Box<dyn Fn(&mut v1::Certificate)>;
        let cases: Vec<(Edit, &str)> = vec![
            (
                Box::new(|p| p.domains = vec!["*.example.org".into()]),
                "domains",
            ),
            (Box::new(|p| p.domains = vec!["bad name".into()]), "domains"),
            (Box::new(|p| p.domains.clear()), "domains"),
            (Box::new(|p| p.issuer = None), "issuer"),
            (
                Box::new(|p| p.targets[0].path = "/etc/passwd".into()),
                "targets.path",
            ),
            (
                Box::new(|p| p.targets[0].format = CertificateFormat::Der as i32),
                "targets.format",
            ),
            (
                Box::new(|p| p.targets[0].mode = Some(0o4755)),
                "targets.mode",
            ),
            (Box::new(|p| p.key_type = 99), "key_type"),
            (
                Box::new(|p| {
                    p.issuer = Some(ProtoIssuer::Acme(v1::AcmeIssuer {
                        directory_url: "http://insecure/dir".into(),
                        ..Default::default()
                    }))
                }),
                "acme.directory_url",
            ),
            (
                Box::new(|p| {
                    p.consumers = vec![v1::CertificateConsumer {
                        container: "web".into(),
                        probe: "nope".into(),
                        ..Default::default()
                    }]
                }),
                "consumers.probe",
            ),
            (
                Box::new(|p| p.consumers = vec![v1::CertificateConsumer::default()]),
                "consumers",
            ),
        ];
        for (change, want) in cases {
            let mut p = proto(tmp.path());
            change(&mut p);
            let got = from_proto("web", &p, &r).err().map(|e| e.field);
            assert_eq!(got, Some(want));
        }
        Ok(())
    }

    fn current(spec: &Spec, now: i64, days: i64) -> Result<Current, String> {
        let key = issue::generate_key(KeyType::EcdsaP256).or_s()?;
        let material = issue::self_signed(&spec.domains, key, 30).or_s()?;
        let meta = Meta {
            serial: "0a".into(),
            domains: spec.domains.clone(),
            issuer: spec.issuer.id(),
            key_type: spec.key_type.name(),
            not_before: now,
            not_after: now + days * 86_400,
            issued_at: now,
        };
        let (renew_at, basis) = due(&meta, &store::Renewal::default(), false);
        Ok(Current {
            material,
            meta,
            renew_at,
            basis,
        })
    }

    #[test]
    fn plans_issue_unchanged_redeploy_and_renew() -> Result<(), String> {
        let tmp = tempfile::tempdir().or_s()?;
        let r = roots(tmp.path());
        let spec = from_proto("web", &proto(tmp.path()), &r).or_s()?;
        let now = 1_780_272_000;
        let empty = Observed {
            now,
            current: None,
            stored_spec: None,
            targets: vec![None, None],
            provided: None,
        };
        assert_eq!(plan(&spec, &empty).action, Action::Create);

        let cur = current(&spec, now, 90).or_s()?;
        let deployed: Vec<Option<FileState>> = spec
            .targets
            .iter()
            .map(|t| {
                t.render(&cur.material).ok().map(|content| FileState {
                    content,
                    mode: t.perms.mode,
                    uid: t.perms.uid,
                    gid: t.perms.gid,
                })
            })
            .collect();
        let o = Observed {
            now,
            current: Some(cur.clone()),
            stored_spec: Some(spec.encoded.clone()),
            targets: deployed.clone(),
            provided: None,
        };
        assert_eq!(plan(&spec, &o), Change::unchanged());

        // A target with another owner: redeploy only.
        let mut moved = o.clone();
        if let Some(Some(f)) = moved.targets.get_mut(1) {
            f.uid = 0;
        }
        let c = plan(&spec, &moved);
        assert_eq!(c.action, Action::Update);
        assert!(c.diff.contains("owner 0:0 -> 1000:0"), "{}", c.diff);
        assert!(!c.diff.contains("renew"), "{}", c.diff);

        // 61 days later a 90-day certificate is due (1/3 left, jitter only moves it earlier).
        let later = Observed {
            now: now + 61 * 86_400,
            ..o.clone()
        };
        let c = plan(&spec, &later);
        assert!(c.diff.contains("~ renew: due since"), "{}", c.diff);
        // 50 days later it is not.
        let before = Observed {
            now: now + 50 * 86_400,
            ..o.clone()
        };
        assert_eq!(plan(&spec, &before), Change::unchanged());

        // Forced renewal of exactly this serial; after it, the new serial plans unchanged.
        let mut forced = spec.clone();
        forced.force_serial = Some("0a".into());
        assert!(plan(&forced, &o).diff.contains("forced"));
        forced.force_serial = Some("0b".into());
        assert_eq!(plan(&forced, &o), Change::unchanged());

        // Another domain list: a new certificate.
        let mut more = spec.clone();
        more.domains.push("b.example.org".into());
        assert!(plan(&more, &o).diff.contains("~ domains"));
        // Key material never appears in a plan.
        assert!(!plan(&spec, &moved).diff.contains("PRIVATE KEY"));
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn self_signed_apply_stores_deploys_and_converges() -> Result<(), String> {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().or_s()?;
        let root = tmp.path().join("root");
        std::fs::create_dir_all(&root).or_s()?;
        let state = tmp.path().join("state");
        let r = roots(&root);
        install(Context {
            state_dir: state.clone(),
            roots: r.clone(),
            acme: AcmeSettings {
                http01_port: 0,
                resolve: HashMap::new(),
                poll_delay: Duration::from_millis(100),
                retry_base_secs: 60,
                retry_max_secs: 600,
            },
        });
        let mut p = proto(&root);
        p.targets[1].uid = None;
        let spec = from_proto("web", &p, &r).or_s()?;
        struct Quiet;
        impl Progress for Quiet {
            fn report(&self, _: &str, _: Option<u32>) {}
        }
        let ctx = context().or_s()?;
        let o = read_in(
            &spec,
            &ctx.state_dir,
            time::OffsetDateTime::now_utc().unix_timestamp(),
        )
        .or_s()?;
        let msg = apply(&spec, &o, &Quiet).await.or_s()?;
        assert!(msg.contains("issued serial"), "{msg}");
        let o = read_in(
            &spec,
            &ctx.state_dir,
            time::OffsetDateTime::now_utc().unix_timestamp(),
        )
        .or_s()?;
        assert_eq!(plan(&spec, &o), Change::unchanged());
        let key = std::fs::metadata(root.join("tls/key.pem")).or_s()?;
        assert_eq!(key.mode() & 0o777, 0o600);
        let chain = std::fs::read_to_string(root.join("tls/fullchain.pem")).or_s()?;
        assert!(chain.contains("BEGIN CERTIFICATE"));
        assert_eq!(statuses(&ctx).len(), 1);
        Ok(())
    }
}
