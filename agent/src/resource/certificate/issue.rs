//! Getting a certificate: from an ACME CA over HTTP-01, self-signed with rcgen, or from files
//! the operator provides. Every result is checked before it is kept: the leaf names every
//! domain of the spec and matches the private key.
//!
//! ACME flow (instant-acme 0.8): account (kept per directory URL), then either the order in
//! flight from `pending.json` (resumed after a crash: a valid order is downloaded, a ready one
//! finalized with the stored key, a pending one validated again) or, after the self-check, a
//! new order that is recorded before anything else happens. So a restart mid-order never orders
//! twice. `badNonce` is retried by instant-acme and once more here; `rateLimited` and other
//! CA problems are reported as such.

use std::time::{Duration, Instant};

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, ExternalAccountKey,
    Identifier, NewAccount, NewOrder, Order, OrderStatus, RetryPolicy,
};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PublicKeyData};
use x509_parser::prelude::*;

use super::http01::{self, Responder};
use super::store::{self, CertDir, Material, Pending};
use super::{Acme, Challenge, Context, KeyType, Spec};
use crate::resource::{Progress, ResourceError};

/// Test hook: sleep this long after an order is finalized, before the certificate is
/// downloaded, so a test can SIGKILL the agent mid-order. Changes timing only.
pub const ACME_DELAY_ENV: &str = "KAGENT_DEBUG_ACME_DELAY_MS";

/// What a certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub serial: String,
    pub not_before: i64,
    pub not_after: i64,
    pub names: Vec<String>,
    pub issuer: String,
}

fn err(message: impl Into<String>, hint: impl Into<String>) -> ResourceError {
    ResourceError {
        message: message.into(),
        hint: hint.into(),
    }
}

/// Serial of a DER certificate, lower-case hex.
pub fn serial_of_der(der: &[u8]) -> Result<String, String> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| format!("bad certificate: {e}"))?;
    Ok(hex::encode(cert.raw_serial()))
}

/// Parses the first certificate of a PEM text.
pub fn parse_leaf(pem: &str) -> Result<Parsed, String> {
    let block = x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
        .next()
        .ok_or("no PEM certificate")?
        .map_err(|e| format!("bad PEM: {e}"))?;
    let cert = block
        .parse_x509()
        .map_err(|e| format!("bad certificate: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => names.push(d.to_ascii_lowercase()),
                GeneralName::IPAddress(b) => {
                    let ip = match b.len() {
                        4 => <[u8; 4]>::try_from(*b).ok().map(std::net::IpAddr::from),
                        16 => <[u8; 16]>::try_from(*b).ok().map(std::net::IpAddr::from),
                        _ => None,
                    };
                    if let Some(ip) = ip {
                        names.push(ip.to_string());
                    }
                }
                _ => {}
            }
        }
    }
    Ok(Parsed {
        serial: hex::encode(cert.raw_serial()),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        names,
        issuer: cert.issuer().to_string(),
    })
}

/// Checks that `m` is usable for `domains`; returns what the leaf says.
pub fn check_material(m: &Material, domains: &[String]) -> Result<Parsed, String> {
    let parsed = parse_leaf(&m.cert_pem)?;
    let missing: Vec<&String> = domains
        .iter()
        .filter(|d| !parsed.names.contains(d))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "the certificate does not name {missing:?} (it names {:?})",
            parsed.names
        ));
    }
    let key = KeyPair::from_pem(&m.key_pem).map_err(|e| {
        format!("the private key is not a PKCS#8 PEM key ({e}); convert it with `openssl pkcs8 -topk8 -nocrypt`")
    })?;
    let block = x509_parser::pem::Pem::iter_from_buffer(m.cert_pem.as_bytes())
        .next()
        .ok_or("no PEM certificate")?
        .map_err(|e| format!("bad PEM: {e}"))?;
    let cert = block
        .parse_x509()
        .map_err(|e| format!("bad certificate: {e}"))?;
    if cert.public_key().raw != key.subject_public_key_info().as_slice() {
        return Err("the private key does not belong to the certificate".into());
    }
    Ok(parsed)
}

/// A new private key of `kind`. ring (our only crypto provider) cannot generate RSA keys, so
/// RSA keys come from `openssl genpkey`; without openssl RSA is refused with that reason.
pub fn generate_key(kind: KeyType) -> Result<KeyPair, ResourceError> {
    let bad = |e: rcgen::Error| err(format!("cannot generate a key: {e}"), "");
    match kind {
        KeyType::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(bad),
        KeyType::EcdsaP384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).map_err(bad),
        KeyType::Rsa(bits) => {
            let out = std::process::Command::new("openssl")
                .args(["genpkey", "-algorithm", "RSA", "-pkeyopt"])
                .arg(format!("rsa_keygen_bits:{bits}"))
                .output()
                .map_err(|e| {
                    err(
                        format!("RSA keys need `openssl genpkey` (ring cannot generate RSA keys), which failed to run: {e}"),
                        "install openssl, or use key_type = \"ecdsa-p256\" (the default)",
                    )
                })?;
            if !out.status.success() {
                return Err(err(
                    format!(
                        "openssl genpkey failed: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ),
                    "use key_type = \"ecdsa-p256\" (the default)",
                ));
            }
            let pem = String::from_utf8_lossy(&out.stdout).into_owned();
            KeyPair::from_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256).map_err(bad)
        }
    }
}

/// A self-signed certificate for labs.
pub fn self_signed(domains: &[String], key: KeyPair, days: u32) -> Result<Material, ResourceError> {
    let bad = |e: rcgen::Error| err(format!("cannot make the self-signed certificate: {e}"), "");
    let mut params = CertificateParams::new(domains.to_vec()).map_err(bad)?;
    let mut dn = DistinguishedName::new();
    if let Some(first) = domains.first() {
        dn.push(DnType::CommonName, first.clone());
    }
    params.distinguished_name = dn;
    let now = ::time::OffsetDateTime::now_utc();
    // An hour of slack for clocks of clients that run a little behind.
    params.not_before = now - ::time::Duration::hours(1);
    params.not_after = now + ::time::Duration::days(i64::from(days));
    let mut serial = [0u8; 16];
    serial.iter_mut().for_each(|b| *b = rand::random());
    serial[0] &= 0x7f;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let cert = params.self_signed(&key).map_err(bad)?;
    Ok(Material {
        cert_pem: cert.pem(),
        chain_pem: String::new(),
        key_pem: key.serialize_pem(),
    })
}

/// The provided files, read from the host.
pub fn provided(
    cert: &std::path::Path,
    key: &std::path::Path,
    chain: Option<&std::path::Path>,
) -> Result<Material, ResourceError> {
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p).map_err(|e| ResourceError::io("read", p, &e))
    };
    let cert_text = read(cert)?;
    // A cert file may carry its chain after the leaf: split it off.
    let blocks: Vec<String> = split_pem(&cert_text);
    let (leaf, rest) = blocks.split_first().ok_or_else(|| {
        err(
            format!("{} holds no PEM certificate", cert.display()),
            "give a PEM file",
        )
    })?;
    let mut chain_pem = rest.concat();
    if let Some(c) = chain {
        chain_pem.push_str(&read(c)?);
    }
    Ok(Material {
        cert_pem: leaf.clone(),
        chain_pem,
        key_pem: read(key)?,
    })
}

/// PEM blocks of a text, each with its END line and a newline.
pub fn split_pem(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        if line.starts_with("-----BEGIN ") {
            cur.clear();
        }
        cur.push_str(line);
        cur.push('\n');
        if line.starts_with("-----END ") {
            out.push(std::mem::take(&mut cur));
        }
    }
    out
}

/// Gets a certificate from the ACME CA of `acme` for `spec`, resuming an order in flight.
pub async fn acme(
    spec: &Spec,
    acme: &Acme,
    ctx: &Context,
    dir: &CertDir,
    progress: &(dyn Progress + '_),
) -> Result<Material, ResourceError> {
    let mut last = None;
    // instant-acme retries badNonce itself; one more round here covers a burst of them.
    for _ in 0..3 {
        match acme_once(spec, acme, ctx, dir, progress).await {
            Ok(m) => return Ok(m),
            Err(Failure::BadNonce(e)) => {
                progress.report("the CA rejected a nonce (badNonce); retrying", None);
                last = Some(e);
            }
            Err(Failure::UnknownAccount(e)) => {
                // The CA forgot the account (e.g. a reset test CA): make a new one.
                let path = store::account_path(&ctx.state_dir, &acme.directory_url);
                let _ = std::fs::remove_file(&path);
                progress.report(
                    "the CA does not know the stored account; creating a new one",
                    None,
                );
                last = Some(e);
            }
            Err(Failure::Other(e)) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| err("badNonce", "")))
}

enum Failure {
    BadNonce(ResourceError),
    UnknownAccount(ResourceError),
    Other(ResourceError),
}

impl From<ResourceError> for Failure {
    fn from(e: ResourceError) -> Failure {
        Failure::Other(e)
    }
}

/// Turns a library error into the operator's terms.
fn acme_error(what: &str, e: instant_acme::Error) -> Failure {
    if let instant_acme::Error::Api(p) = &e {
        let kind = p
            .r#type
            .as_deref()
            .unwrap_or("")
            .rsplit(':')
            .next()
            .unwrap_or("");
        let detail = p.detail.clone().unwrap_or_default();
        let sub: Vec<String> = p
            .subproblems
            .iter()
            .filter_map(|s| s.detail.clone())
            .collect();
        let detail = if sub.is_empty() {
            detail
        } else {
            format!("{detail} ({})", sub.join("; "))
        };
        return match kind {
            "badNonce" => Failure::BadNonce(err(format!("{what}: badNonce: {detail}"), "")),
            "accountDoesNotExist" => Failure::UnknownAccount(err(
                format!("{what}: the CA does not know the account: {detail}"),
                "",
            )),
            _ if detail.contains("does not correspond to an account") => {
                Failure::UnknownAccount(err(
                    format!("{what}: the CA does not know the account: {detail}"),
                    "",
                ))
            }
            "rateLimited" => Failure::Other(err(
                format!("{what}: rate limited by the CA (rateLimited): {detail}"),
                "the renewal backs off and tries again later; do not re-order by hand, it only \
                 extends the limit",
            )),
            "connection" | "unauthorized" | "incorrectResponse" | "dns" => Failure::Other(err(
                format!(
                    "{what}: the CA could not validate the HTTP-01 challenge ({kind}): {detail}"
                ),
                "check that the name resolves to this host and that port 80 reaches the agent's \
                 responder (or the webroot)",
            )),
            _ => Failure::Other(err(
                format!("{what}: the CA refused ({kind}): {detail}"),
                "",
            )),
        };
    }
    let text = e.to_string();
    let hint = if text.contains("UnknownIssuer") || text.contains("invalid peer certificate") {
        "the CA's TLS certificate is not trusted; for a test CA give `ca_bundle` (its PEM)"
    } else if matches!(e, instant_acme::Error::Timeout(_)) {
        "the CA did not finish in time; the order is kept and resumed on the next attempt"
    } else {
        "is the CA reachable from this host? the renewal retries with backoff"
    };
    Failure::Other(err(format!("{what}: {text}"), hint))
}

async fn account(acme: &Acme, ctx: &Context) -> Result<Account, Failure> {
    let builder = || match &acme.ca_bundle {
        Some(path) => Account::builder_with_root(path),
        None => Account::builder(),
    };
    let path = store::account_path(&ctx.state_dir, &acme.directory_url);
    let stored = store::load_account(&path)
        .map_err(|e| ResourceError::io("read the ACME account", &path, &e))?;
    if let Some(json) = stored {
        let creds: AccountCredentials = serde_json::from_slice(&json).map_err(|e| {
            err(
                format!("the ACME account file {} is damaged: {e}", path.display()),
                "move it away; a new account is then created",
            )
        })?;
        let b = builder().map_err(|e| acme_error("trusting the CA", e))?;
        return b
            .from_credentials(creds)
            .await
            .map_err(|e| acme_error("restoring the ACME account", e));
    }
    let contact: Vec<String> = acme.contact.iter().map(|c| format!("mailto:{c}")).collect();
    let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
    let eab = match &acme.eab {
        Some(eab) => {
            let raw = std::fs::read_to_string(&eab.hmac_key_file)
                .map_err(|e| ResourceError::io("read the EAB key", &eab.hmac_key_file, &e))?;
            let key = base64url_decode(raw.trim()).ok_or_else(|| {
                err(
                    format!(
                        "{} is not a base64url HMAC key",
                        eab.hmac_key_file.display()
                    ),
                    "store the key exactly as the CA gave it",
                )
            })?;
            Some(ExternalAccountKey::new(eab.kid.clone(), &key))
        }
        None => None,
    };
    let b = builder().map_err(|e| acme_error("trusting the CA", e))?;
    let (account, creds) = b
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            acme.directory_url.clone(),
            eab.as_ref(),
        )
        .await
        .map_err(|e| acme_error("creating the ACME account", e))?;
    let json = serde_json::to_vec(&creds).map_err(|e| err(format!("account: {e}"), ""))?;
    store::save_account(&path, &json)
        .map_err(|e| ResourceError::io("write the ACME account", &path, &e))?;
    Ok(account)
}

/// An EAB HMAC key: base64url as RFC 8555 says, tolerating padding and the standard alphabet
/// (CAs print both).
fn base64url_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let normalized = s.trim_end_matches('=').replace('+', "-").replace('/', "_");
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(normalized)
        .ok()
}

/// How the CA reaches the token, set up before the order.
enum Answer {
    Responder(Responder),
    Webroot(std::path::PathBuf),
}

impl Answer {
    fn put(&self, ctx: &Context, token: &str, key_auth: &str) -> Result<(), ResourceError> {
        match self {
            Answer::Responder(r) => {
                r.insert(token, key_auth);
                Ok(())
            }
            Answer::Webroot(dir) => {
                let path = format!("{}/{token}", dir.display());
                let p = ctx.roots.check(&path).map_err(|e| err(e.to_string(), ""))?;
                let perms = crate::host::fs::Perms {
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                    dir_mode: 0o755,
                };
                crate::host::fs::write_atomic(&p, key_auth.as_bytes(), perms)
                    .map_err(|e| ResourceError::io("write the challenge file", p.path(), &e))
            }
        }
    }

    /// Releases the port (the responder) before a paused owner is started again.
    async fn close(self) {
        if let Answer::Responder(r) = self {
            r.close().await;
        }
    }

    fn cleanup(&self, tokens: &[String]) {
        if let Answer::Webroot(dir) = self {
            for t in tokens {
                let _ = std::fs::remove_file(dir.join(t));
            }
        }
    }
}

/// A paused container, started again by `finish_pause`.
struct Paused {
    name: String,
    since: Instant,
}

/// Obtains port 80 (or the configured port) as the spec says, before anything is ordered.
async fn prepare(spec: &Spec, ctx: &Context) -> Result<(Answer, Option<Paused>), ResourceError> {
    let port = ctx.acme.http01_port;
    if let Challenge::Webroot(dir) = &spec.challenge {
        return Ok((Answer::Webroot(dir.clone()), None));
    }
    match Responder::bind(port).await {
        Ok(r) => return Ok((Answer::Responder(r), None)),
        Err(e) if e.kind() != std::io::ErrorKind::AddrInUse => {
            return Err(err(
                format!("cannot listen on port {port} for HTTP-01: {e}"),
                "the agent needs CAP_NET_BIND_SERVICE (or root) to bind port 80",
            ));
        }
        Err(_) => {}
    }
    let owner = super::reload::container_publishing(port).await;
    if let Challenge::Pause(name) = &spec.challenge {
        let since = super::reload::stop_container(name)
            .await
            .map_err(|e| err(e, ""))?;
        let paused = Paused {
            name: name.clone(),
            since,
        };
        // The container may need a moment to release the port.
        for _ in 0..20 {
            if let Ok(r) = Responder::bind(port).await {
                return Ok((Answer::Responder(r), Some(paused)));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = super::reload::start_container(name).await;
        return Err(err(
            format!("port {port} is still in use after stopping container {name}"),
            "name the container that publishes the port in `http01.pause_container`",
        ));
    }
    let who = match owner {
        Some(c) => format!("container {c:?}"),
        None => "another process".to_string(),
    };
    Err(err(
        format!(
            "port {port} is in use by {who}, so the agent cannot answer the CA's HTTP-01 \
             challenge; nothing was ordered"
        ),
        "choose one: `http01.webroot` = a directory the port's owner serves at \
         /.well-known/acme-challenge/ (e.g. mounted into the reverse proxy), or \
         `http01.pause_container` = the container to stop while the CA validates (downtime is \
         measured and reported), or free the port",
    ))
}

async fn resume(
    dir: &CertDir,
    account: &Account,
    spec: &Spec,
    acme: &Acme,
) -> Option<(Order, Pending)> {
    let pending = dir.load_pending()?;
    if pending.directory_url != acme.directory_url || pending.domains != spec.domains {
        let _ = dir.clear_pending();
        return None;
    }
    match account.order(pending.order_url.clone()).await {
        Ok(mut order) => match order.state().status {
            OrderStatus::Invalid => {
                let _ = dir.clear_pending();
                None
            }
            _ => Some((order, pending)),
        },
        // Expired or unknown to the CA (e.g. a test CA restarted): abandon it.
        Err(_) => {
            let _ = dir.clear_pending();
            None
        }
    }
}

async fn acme_once(
    spec: &Spec,
    acme: &Acme,
    ctx: &Context,
    dir: &CertDir,
    progress: &(dyn Progress + '_),
) -> Result<Material, Failure> {
    let account = account(acme, ctx).await?;
    let retry = RetryPolicy::new()
        .initial_delay(ctx.acme.poll_delay)
        .backoff(1.5)
        .timeout(Duration::from_secs(90));
    let mut held = None;
    let (mut order, pending) = match resume(dir, &account, spec, acme).await {
        Some(found) => {
            progress.report("resuming the order recorded before the agent stopped", None);
            found
        }
        None => {
            // Prove the path works before the CA spends a validation (and a rate limit) on it.
            // A paused owner stays stopped from the self-check through the validation: one
            // downtime, not two.
            let (answer, paused) = prepare(spec, ctx).await?;
            let placed = async {
                self_check_all(spec, ctx, &answer).await?;
                place_order(spec, acme, &account, dir, progress).await
            }
            .await;
            match placed {
                Ok(placed) => {
                    held = Some((answer, paused));
                    placed
                }
                Err(e) => {
                    finish_pause(answer, paused, progress).await?;
                    return Err(e);
                }
            }
        }
    };

    let status = order.state().status;
    if status == OrderStatus::Pending {
        let (answer, paused) = match held.take() {
            Some(h) => h,
            None => prepare(spec, ctx).await?,
        };
        let validated = validate(&mut order, ctx, &answer, &retry, progress).await;
        finish_pause(answer, paused, progress).await?;
        validated?;
    } else if let Some((answer, paused)) = held.take() {
        finish_pause(answer, paused, progress).await?;
    }
    let key = KeyPair::from_pem(&pending.key_pem)
        .map_err(|e| err(format!("the recorded order key is unusable: {e}"), ""))?;
    if order.state().status == OrderStatus::Ready {
        let mut params = CertificateParams::new(spec.domains.clone())
            .map_err(|e| err(format!("CSR: {e}"), ""))?;
        params.distinguished_name = DistinguishedName::new();
        let csr = params
            .serialize_request(&key)
            .map_err(|e| err(format!("CSR: {e}"), ""))?;
        order
            .finalize_csr(csr.der())
            .await
            .map_err(|e| acme_error("finalizing the order", e))?;
        progress.report("order finalized; downloading the certificate", None);
        debug_delay().await;
    }
    let chain = order
        .poll_certificate(&retry)
        .await
        .map_err(|e| acme_error("downloading the certificate", e))?;
    let mut blocks = split_pem(&chain).into_iter();
    let cert_pem = blocks
        .next()
        .ok_or_else(|| err("the CA sent no certificate", ""))?;
    Ok(Material {
        cert_pem,
        chain_pem: blocks.collect(),
        key_pem: pending.key_pem,
    })
}

/// Places a new order and records it (`pending.json`) so a restart resumes it.
async fn place_order(
    spec: &Spec,
    acme: &Acme,
    account: &Account,
    dir: &CertDir,
    progress: &(dyn Progress + '_),
) -> Result<(Order, Pending), Failure> {
    let ids: Vec<Identifier> = spec
        .domains
        .iter()
        .map(|d| Identifier::Dns(d.clone()))
        .collect();
    let mut new = NewOrder::new(&ids);
    if let Some(p) = &acme.profile {
        new = new.profile(p);
    }
    let key = generate_key(spec.key_type)?;
    let order = account
        .new_order(&new)
        .await
        .map_err(|e| acme_error("placing the order", e))?;
    let pending = Pending {
        directory_url: acme.directory_url.clone(),
        order_url: order.url().to_string(),
        domains: spec.domains.clone(),
        key_pem: key.serialize_pem(),
        created: ::time::OffsetDateTime::now_utc().unix_timestamp(),
    };
    dir.save_pending(&pending)
        .map_err(|e| ResourceError::io("record the order", &dir.pending(), &e))?;
    progress.report(
        &format!("ordered a certificate for {}", spec.domains.join(", ")),
        None,
    );
    Ok((order, pending))
}

async fn debug_delay() {
    let ms: u64 = std::env::var(ACME_DELAY_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// Releases the port, then starts a paused owner again and reports how long it was down.
async fn finish_pause(
    answer: Answer,
    paused: Option<Paused>,
    progress: &(dyn Progress + '_),
) -> Result<(), ResourceError> {
    answer.close().await;
    if let Some(p) = paused {
        let started = super::reload::start_container(&p.name).await;
        let down = p.since.elapsed();
        progress.report(
            &format!(
                "container {} was stopped for {} ms for the challenge",
                p.name,
                down.as_millis()
            ),
            None,
        );
        started.map_err(|e| err(e, "start it by hand: docker start NAME"))?;
    }
    Ok(())
}

async fn self_check_all(spec: &Spec, ctx: &Context, answer: &Answer) -> Result<(), ResourceError> {
    let token = http01::random_token();
    let value = http01::random_token();
    answer.put(ctx, &token, &value)?;
    let mut result = Ok(());
    for d in &spec.domains {
        if let Err(e) =
            http01::self_check(d, ctx.acme.http01_port, &token, &value, &ctx.acme.resolve).await
        {
            result = Err(err(
                format!("self-check failed, so nothing was ordered (no rate limit spent): {e}"),
                format!(
                    "the CA fetches this URL the same way: make {d} resolve to this host and port \
                     {} reach it{}",
                    ctx.acme.http01_port,
                    if matches!(answer, Answer::Webroot(_)) {
                        ", served from the webroot directory"
                    } else {
                        ""
                    }
                ),
            ));
            break;
        }
    }
    answer.cleanup(&[token]);
    result
}

async fn validate(
    order: &mut Order,
    ctx: &Context,
    answer: &Answer,
    retry: &RetryPolicy,
    progress: &(dyn Progress + '_),
) -> Result<(), Failure> {
    let mut tokens = Vec::new();
    let mut authzs = order.authorizations();
    while let Some(authz) = authzs.next().await {
        let mut authz = authz.map_err(|e| acme_error("reading the authorizations", e))?;
        match authz.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            s => {
                return Err(Failure::Other(err(
                    format!("an authorization of the order is {s:?}"),
                    "the order is abandoned; the next attempt places a new one",
                )));
            }
        }
        let mut ch = authz.challenge(ChallengeType::Http01).ok_or_else(|| {
            err(
                "the CA offers no HTTP-01 challenge for this name",
                "use a CA that supports HTTP-01",
            )
        })?;
        let name = ch.identifier().to_string();
        answer.put(ctx, &ch.token, ch.key_authorization().as_str())?;
        tokens.push(ch.token.clone());
        ch.set_ready()
            .await
            .map_err(|e| acme_error("answering the challenge", e))?;
        progress.report(&format!("HTTP-01 challenge for {name} ready"), None);
    }
    let status = order.poll_ready(retry).await;
    answer.cleanup(&tokens);
    let status = status.map_err(|e| acme_error("waiting for validation", e))?;
    if status != OrderStatus::Ready {
        let detail = order
            .state()
            .error
            .as_ref()
            .and_then(|p| p.detail.clone())
            .unwrap_or_default();
        return Err(Failure::Other(err(
            format!("the CA did not validate the order ({status:?}) {detail}"),
            "check that the name resolves to this host and port 80 reaches the agent",
        )));
    }
    Ok(())
}

/// The CA's renewal window for `cert_pem` (RFC 9773), when it offers one: (window, seconds
/// until it may be asked again).
pub async fn renewal_window(
    acme: &Acme,
    ctx: &Context,
    cert_pem: &str,
) -> Result<Option<(crate::scheduler::renewal::Window, u64)>, String> {
    let account = match account(acme, ctx).await {
        Ok(a) => a,
        Err(Failure::BadNonce(e) | Failure::UnknownAccount(e) | Failure::Other(e)) => {
            return Err(e.message);
        }
    };
    let der = x509_parser::pem::Pem::iter_from_buffer(cert_pem.as_bytes())
        .next()
        .ok_or("no certificate")?
        .map_err(|e| e.to_string())?
        .contents;
    let der = rustls::pki_types::CertificateDer::from(der);
    let id = instant_acme::CertificateIdentifier::try_from(&der).map_err(|e| e.to_string())?;
    match account.renewal_info(&id).await {
        Ok((info, retry)) => Ok(Some((
            crate::scheduler::renewal::Window {
                start: info.suggested_window.start.unix_timestamp(),
                end: info.suggested_window.end.unix_timestamp(),
            },
            retry.as_secs(),
        ))),
        Err(instant_acme::Error::Unsupported(_)) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_material_checks_out() -> Result<(), ResourceError> {
        let domains = vec!["a.test".to_string(), "b.test".to_string()];
        let m = self_signed(&domains, generate_key(KeyType::EcdsaP256)?, 30)?;
        let parsed = check_material(&m, &domains).map_err(|e| err(e, ""))?;
        assert_eq!(parsed.names, domains);
        let days = (parsed.not_after - parsed.not_before) / 86_400;
        assert_eq!(days, 30);
        // Another key does not match.
        let other = generate_key(KeyType::EcdsaP256)?;
        let wrong = Material {
            key_pem: other.serialize_pem(),
            ..m.clone()
        };
        assert!(check_material(&wrong, &domains).is_err());
        // A name the certificate lacks.
        assert!(check_material(&m, &["c.test".to_string()]).is_err());
        Ok(())
    }

    #[test]
    fn pem_split_and_base64url() {
        let text = "-----BEGIN A-----\nx\n-----END A-----\n-----BEGIN B-----\ny\n-----END B-----\n";
        assert_eq!(split_pem(text).len(), 2);
        assert_eq!(base64url_decode("aGVsbG8"), Some(b"hello".to_vec()));
        assert_eq!(base64url_decode("a b"), None);
    }
}
