//! Black-box checks of a KHEOPS realm, each mapped to a known failure mode with a hint naming
//! the likely cause and the fix (research/keycloak.md §5, §7). The library behind a later
//! `kctl doctor`; runs from any host (the KHEOPS VM's agent), trusting the CA given.
//!
//! Checks that need an admin token (the example access token) only run when one is given,
//! i.e. on the Keycloak host.

use std::path::{Path, PathBuf};

use http::StatusCode;
use kagent_proto::v1;
use serde_json::Value;

use crate::host::fs::Roots;
use crate::host::http::{Client, encode};
use crate::resource::FieldError;

#[derive(Debug, Clone)]
pub struct Target {
    /// Base URL as KHEOPS reaches Keycloak, with the context path (`https://kc.example/auth`).
    pub base_url: String,
    pub realm: String,
    /// `https://KHEOPS-HOME`.
    pub kheops_origin: String,
    /// The issuer KHEOPS will expect (`KHEOPS_OIDC_PROVIDER`); default `BASE/realms/REALM`.
    pub expected_issuer: Option<String>,
    pub login_client: String,
    pub auth_client: String,
    pub auth_secret: String,
}

/// `CheckKeycloak`'s request, checked field by field.
pub struct CheckRequest {
    pub target: Target,
    /// The CA file to trust for https.
    pub ca_file: Option<PathBuf>,
    /// The checks to run, in order.
    pub checks: Vec<CheckId>,
}

/// `CheckKeycloak`'s request as a [`CheckRequest`]: every field checked, the client secret
/// (when the service-account check runs) read from a one-word file under the managed roots.
pub fn target_from_request(
    r: &v1::CheckKeycloakRequest,
    roots: &Roots,
) -> Result<CheckRequest, FieldError> {
    let url = |f: &'static str, v: &str, example: &str| -> Result<String, FieldError> {
        let v = v.trim_end_matches('/');
        if (v.starts_with("https://") || v.starts_with("http://"))
            && v.len() > "https://".len()
            && !v.contains(char::is_whitespace)
        {
            Ok(v.to_string())
        } else {
            Err(FieldError::new(
                f,
                format!("{v:?}: give an http(s) URL, e.g. {example}"),
            ))
        }
    };
    let or = |v: &str, default: &str| {
        if v.is_empty() {
            default.to_string()
        } else {
            v.to_string()
        }
    };
    let base_url = url("base_url", &r.base_url, "https://keycloak.example/auth")?;
    let kheops_origin = url("kheops_origin", &r.kheops_origin, "https://kheops.example")?;
    let expected_issuer = match r.expected_issuer.as_str() {
        "" => None,
        v => Some(url(
            "expected_issuer",
            v,
            "https://keycloak.example/auth/realms/demo",
        )?),
    };
    let realm = or(&r.realm, "demo");
    if !realm
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(FieldError::new(
            "realm",
            format!("{realm:?}: use letters, digits, '-', '_' or '.'"),
        ));
    }
    let checks = if r.only.is_empty() {
        CheckId::REMOTE.to_vec()
    } else {
        let mut ids = Vec::new();
        for name in &r.only {
            let id = CheckId::from_name(name).ok_or_else(|| {
                let known: Vec<&str> = CheckId::REMOTE.iter().map(|c| c.name()).collect();
                FieldError::new(
                    "only",
                    format!("unknown check {name:?}; known: {}", known.join(", ")),
                )
            })?;
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids
    };
    let auth_secret = if checks.contains(&CheckId::ServiceAccount) {
        crate::resource::keycloak_realm::reveal(roots, &r.auth_secret_file)
            .map_err(|e| FieldError::new("auth_secret_file", e.problem))?
    } else {
        String::new()
    };
    let ca_file = match r.ca_file.as_str() {
        "" => None,
        p if p.starts_with('/') => Some(PathBuf::from(p)),
        p => {
            return Err(FieldError::new(
                "ca_file",
                format!("{p:?} is not an absolute path"),
            ));
        }
    };
    Ok(CheckRequest {
        target: Target {
            base_url,
            realm,
            kheops_origin,
            expected_issuer,
            login_client: or(&r.login_client, "loginConnect"),
            auth_client: or(&r.auth_client, "kheopsAuthorization"),
            auth_secret,
        },
        ca_file,
        checks,
    })
}

impl From<Check> for v1::KeycloakCheck {
    fn from(c: Check) -> v1::KeycloakCheck {
        v1::KeycloakCheck {
            name: c.id.name().to_string(),
            pass: c.pass,
            detail: c.detail,
            hint: c.hint,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CheckId {
    Discovery,
    Jwks,
    ServiceAccount,
    PasswordGrantRefused,
    RedirectUri,
    ImplicitFlow,
    IframeOrigin,
    TokenClaims,
}

impl CheckId {
    /// Every check that runs from any host, without admin access, in the order they run.
    pub const REMOTE: &'static [CheckId] = &[
        CheckId::Discovery,
        CheckId::Jwks,
        CheckId::ServiceAccount,
        CheckId::PasswordGrantRefused,
        CheckId::RedirectUri,
        CheckId::ImplicitFlow,
        CheckId::IframeOrigin,
    ];

    pub fn from_name(name: &str) -> Option<CheckId> {
        CheckId::REMOTE.iter().copied().find(|c| c.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            CheckId::Discovery => "discovery",
            CheckId::Jwks => "jwks",
            CheckId::ServiceAccount => "service-account",
            CheckId::PasswordGrantRefused => "password-grant-refused",
            CheckId::RedirectUri => "redirect-uri",
            CheckId::ImplicitFlow => "implicit-flow",
            CheckId::IframeOrigin => "iframe-origin",
            CheckId::TokenClaims => "token-claims",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub id: CheckId,
    pub pass: bool,
    /// What was seen.
    pub detail: String,
    /// Empty on pass; otherwise the likely cause and the fix.
    pub hint: String,
}

fn pass(id: CheckId, detail: impl Into<String>) -> Check {
    Check {
        id,
        pass: true,
        detail: detail.into(),
        hint: String::new(),
    }
}

fn fail(id: CheckId, detail: impl Into<String>, hint: impl Into<String>) -> Check {
    Check {
        id,
        pass: false,
        detail: detail.into(),
        hint: hint.into(),
    }
}

/// Admin access for the checks that need it (Keycloak host only).
pub struct AdminAccess<'a> {
    pub admin: &'a crate::resource::keycloak_realm::admin_api::Admin,
    /// A user of the realm with email and name set, for the example token.
    pub user_id: Option<String>,
}

pub struct Checker {
    http: Client,
    t: Target,
    realm_url: String,
}

impl Checker {
    pub fn new(t: Target, ca_file: Option<&Path>) -> Result<Checker, String> {
        let http = Client::new(ca_file).map_err(|e| e.to_string())?;
        let realm_url = format!(
            "{}/realms/{}",
            t.base_url.trim_end_matches('/'),
            encode(&t.realm)
        );
        Ok(Checker { http, t, realm_url })
    }

    fn expected_issuer(&self) -> String {
        self.t
            .expected_issuer
            .clone()
            .unwrap_or_else(|| self.realm_url.clone())
    }

    pub async fn run_all(&self, admin: Option<&AdminAccess<'_>>) -> Vec<Check> {
        let mut out = self.run(CheckId::REMOTE).await;
        if let Some(a) = admin {
            out.push(self.token_claims(a).await);
        }
        out
    }

    /// The checks named, in order (those that need no admin access).
    pub async fn run(&self, ids: &[CheckId]) -> Vec<Check> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(match id {
                CheckId::Discovery => self.discovery().await,
                CheckId::Jwks => self.jwks().await,
                CheckId::ServiceAccount => self.service_account().await,
                CheckId::PasswordGrantRefused => self.password_grant_refused().await,
                CheckId::RedirectUri => self.redirect_uri().await,
                CheckId::ImplicitFlow => self.implicit_flow().await,
                CheckId::IframeOrigin => self.iframe_origin().await,
                CheckId::TokenClaims => fail(
                    CheckId::TokenClaims,
                    "needs admin access to Keycloak",
                    "run it on the Keycloak host",
                ),
            });
        }
        out
    }

    pub async fn discovery(&self) -> Check {
        let id = CheckId::Discovery;
        let url = format!("{}/.well-known/openid-configuration", self.realm_url);
        let r = match self.http.get(&url, None).await {
            Ok(r) => r,
            Err(e) => {
                return fail(
                    id,
                    e.to_string(),
                    "Keycloak is not reachable from here: check DNS, the port, the proxy and the CA \
                     (a leaf-only certificate chain fails in Java and Rust clients)",
                );
            }
        };
        if r.status != StatusCode::OK {
            return fail(
                id,
                format!("{url}: HTTP {}", r.status),
                "404: wrong realm name or context path (Keycloak 17+ serves at / unless \
                 --http-relative-path=/auth)",
            );
        }
        let issuer = r
            .json()
            .ok()
            .and_then(|v| v["issuer"].as_str().map(str::to_string))
            .unwrap_or_default();
        let want = self.expected_issuer();
        if issuer != want {
            return fail(
                id,
                format!("issuer {issuer:?}, KHEOPS expects {want:?}"),
                "token `iss` will not match KHEOPS_OIDC_PROVIDER (\"Verification of the token \
                 failed\"): fix the public base URL (realm frontendUrl, or --hostname=<full URL> on \
                 26, KEYCLOAK_FRONTEND_URL on 16)",
            );
        }
        pass(id, format!("issuer {issuer}"))
    }

    pub async fn jwks(&self) -> Check {
        let id = CheckId::Jwks;
        let url = format!("{}/protocol/openid-connect/certs", self.realm_url);
        let keys = match self.http.get(&url, None).await {
            Ok(r) if r.status == StatusCode::OK => r.json().ok(),
            Ok(r) => {
                return fail(
                    id,
                    format!("{url}: HTTP {}", r.status),
                    "is the realm enabled?",
                );
            }
            Err(e) => return fail(id, e.to_string(), "Keycloak is not reachable from here"),
        };
        let ok = keys
            .as_ref()
            .and_then(|k| k["keys"].as_array())
            .is_some_and(|ks| {
                ks.iter()
                    .any(|k| k["kty"] == "RSA" && k["alg"] == "RS256" && k["use"] == "sig")
            });
        if ok {
            pass(id, "RS256 signing key present")
        } else {
            fail(
                id,
                "no RSA RS256 signing key in the JWKS",
                "KHEOPS verifies RS256 only: add or enable an rsa-generated key provider in the \
                 realm's keys",
            )
        }
    }

    async fn token(&self, client_id: &str, secret: &str) -> Result<(StatusCode, Value), String> {
        let url = format!("{}/protocol/openid-connect/token", self.realm_url);
        let r = self
            .http
            .form(
                &url,
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id),
                    ("client_secret", secret),
                ],
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok((r.status, r.json().unwrap_or(Value::Null)))
    }

    pub async fn service_account(&self) -> Check {
        let id = CheckId::ServiceAccount;
        let (status, body) = match self.token(&self.t.auth_client, &self.t.auth_secret).await {
            Ok(x) => x,
            Err(e) => return fail(id, e, "Keycloak is not reachable from here"),
        };
        if status != StatusCode::OK {
            let hint = match body["error"].as_str() {
                Some("invalid_client") | Some("unauthorized_client") => {
                    "the client secret differs from Keycloak's (401): set the KHEOPS secret to the \
                     managed value (kctl reveal), or re-apply the keycloak_realm resource; or the \
                     client lacks serviceAccountsEnabled"
                }
                _ => "the client does not exist or is not confidential",
            };
            return fail(
                id,
                format!(
                    "client_credentials for {}: HTTP {status} {body}",
                    self.t.auth_client
                ),
                hint,
            );
        }
        let Some(token) = body["access_token"].as_str() else {
            return fail(id, "no access_token in the answer", "");
        };
        // What KHEOPS checks in the token before it makes the admin call.
        let claims = jwt_claims(token).unwrap_or(Value::Null);
        let (iss, azp) = (claims["iss"].as_str(), claims["azp"].as_str());
        let want = self.expected_issuer();
        if iss != Some(want.as_str()) {
            return fail(
                id,
                format!("the service-account token's iss is {iss:?}, KHEOPS expects {want:?}"),
                "Keycloak signs tokens with the URL it is reached by or its configured hostname: \
                 set the realm's frontendUrl (or --hostname on 26, KEYCLOAK_FRONTEND_URL on 16) \
                 to the public base URL KHEOPS uses",
            );
        }
        if azp != Some(self.t.auth_client.as_str()) {
            return fail(
                id,
                format!(
                    "the service-account token's azp is {azp:?}, expected {:?}",
                    self.t.auth_client
                ),
                "the token was not issued to the KHEOPS authorization client: check the client id \
                 KHEOPS is configured with",
            );
        }
        let base = self.t.base_url.trim_end_matches('/');
        let url = format!("{base}/admin/realms/{}/users?max=1", encode(&self.t.realm));
        match self.http.get(&url, Some(token)).await {
            Ok(r) if r.status == StatusCode::OK => pass(id, "GET users?max=1 -> 200"),
            Ok(r) if r.status == StatusCode::FORBIDDEN => fail(
                id,
                format!("GET {url}: 403 {}", r.snippet()),
                "the service account lacks realm-management/view-users, or (with fullScopeAllowed \
                 off) the scope mapping for it: both are needed",
            ),
            Ok(r) if r.status == StatusCode::UNAUTHORIZED => fail(
                id,
                format!("GET {url}: 401 {}", r.snippet()),
                "the token was refused: issuer mismatch (the token's `iss` differs from this URL's \
                 realm) or a token of another realm",
            ),
            Ok(r) => fail(id, format!("GET {url}: HTTP {}", r.status), ""),
            Err(e) => fail(id, e.to_string(), "Keycloak is not reachable from here"),
        }
    }

    pub async fn password_grant_refused(&self) -> Check {
        let id = CheckId::PasswordGrantRefused;
        let url = format!("{}/protocol/openid-connect/token", self.realm_url);
        let r = self
            .http
            .form(
                &url,
                &[
                    ("grant_type", "password"),
                    ("client_id", &self.t.login_client),
                    ("username", "kagent-probe"),
                    ("password", "kagent-probe"),
                ],
            )
            .await;
        match r {
            Ok(r) => {
                let err = r
                    .json()
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_string));
                if err.as_deref() == Some("unauthorized_client") {
                    pass(id, "password grant refused: unauthorized_client")
                } else {
                    fail(
                        id,
                        format!("password grant answered HTTP {} {}", r.status, r.snippet()),
                        "direct access grants are on for the login client: turn \
                         directAccessGrantsEnabled off",
                    )
                }
            }
            Err(e) => fail(id, e.to_string(), "Keycloak is not reachable from here"),
        }
    }

    pub async fn redirect_uri(&self) -> Check {
        let id = CheckId::RedirectUri;
        let redirect = format!(
            "{}/oidc-callback",
            self.t.kheops_origin.trim_end_matches('/')
        );
        let url = format!(
            "{}/protocol/openid-connect/auth?client_id={}&response_type=code&scope=openid&state=x&redirect_uri={}",
            self.realm_url,
            encode(&self.t.login_client),
            encode(&redirect)
        );
        match self.http.get(&url, None).await {
            Ok(r) if r.status == StatusCode::OK => pass(id, format!("{redirect} accepted")),
            Ok(r) => fail(
                id,
                format!("authorization endpoint: HTTP {} {}", r.status, r.snippet()),
                "\"Invalid parameter: redirect_uri\": add https://KHEOPS-HOME/* to the login \
                 client's redirect URIs (and keep the standard flow on)",
            ),
            Err(e) => fail(id, e.to_string(), "Keycloak is not reachable from here"),
        }
    }

    /// The seed's KHEOPS (0.9) logs in with the implicit flow (`response_type=id_token token`):
    /// Keycloak answers the login page when it is allowed, and redirects back with
    /// `error=unauthorized_client` when it is not.
    pub async fn implicit_flow(&self) -> Check {
        let id = CheckId::ImplicitFlow;
        let redirect = format!(
            "{}/oidc-callback",
            self.t.kheops_origin.trim_end_matches('/')
        );
        let url = format!(
            "{}/protocol/openid-connect/auth?client_id={}&response_type={}&scope=openid&state=x&nonce=kagent-probe&redirect_uri={}",
            self.realm_url,
            encode(&self.t.login_client),
            encode("id_token token"),
            encode(&redirect)
        );
        match self.http.get(&url, None).await {
            Ok(r) if r.status == StatusCode::OK => {
                pass(id, "response_type=id_token token accepted")
            }
            Ok(r) => {
                let why = match &r.location {
                    Some(l) => location_error(l),
                    None => r.snippet(),
                };
                fail(
                    id,
                    format!(
                        "implicit-flow authorization request: HTTP {} {why}",
                        r.status
                    ),
                    "\"Implicit flow is disabled for the client\": KHEOPS 0.9 (the seed) logs in \
                     with response_type=id_token token; turn implicitFlowEnabled on for the login \
                     client (re-apply the keycloak_realm resource)",
                )
            }
            Err(e) => fail(id, e.to_string(), "Keycloak is not reachable from here"),
        }
    }

    async fn iframe(&self, origin: &str) -> Result<StatusCode, String> {
        let url = format!(
            "{}/protocol/openid-connect/login-status-iframe.html/init?client_id={}&origin={}",
            self.realm_url,
            encode(&self.t.login_client),
            encode(origin)
        );
        self.http
            .get(&url, None)
            .await
            .map(|r| r.status)
            .map_err(|e| e.to_string())
    }

    pub async fn iframe_origin(&self) -> Check {
        let id = CheckId::IframeOrigin;
        let origin = self.t.kheops_origin.trim_end_matches('/');
        let foreign = "https://foreign.invalid";
        match (self.iframe(origin).await, self.iframe(foreign).await) {
            (Ok(StatusCode::NO_CONTENT), Ok(StatusCode::FORBIDDEN)) => {
                pass(id, format!("{origin} -> 204, {foreign} -> 403"))
            }
            (Ok(StatusCode::FORBIDDEN), _) => fail(
                id,
                format!("login-status-iframe.html/init with origin {origin}: 403"),
                "the KHEOPS origin is not in the login client's web origins (the seed's 403 on \
                 login-status-iframe.html): add https://KHEOPS-HOME (scheme+host+port, no path, no \
                 trailing slash)",
            ),
            (Ok(a), Ok(b)) => fail(
                id,
                format!("{origin} -> {a}, {foreign} -> {b}"),
                "expected 204 for the KHEOPS origin and 403 for a foreign one: web origins `*` \
                 allows every site",
            ),
            (Err(e), _) | (_, Err(e)) => fail(id, e, "Keycloak is not reachable from here"),
        }
    }

    pub async fn token_claims(&self, a: &AdminAccess<'_>) -> Check {
        let id = CheckId::TokenClaims;
        let r = encode(&self.t.realm);
        let client = match a
            .admin
            .client_uuid(&self.t.realm, &self.t.login_client)
            .await
        {
            Ok(Some(c)) => c,
            Ok(None) => {
                return fail(
                    id,
                    "login client missing",
                    "apply the keycloak_realm resource",
                );
            }
            Err(e) => return fail(id, e.message, e.hint),
        };
        let user = match &a.user_id {
            Some(u) => u.clone(),
            None => {
                return fail(
                    id,
                    "no user to evaluate a token for",
                    "create a user with an email and a name in the realm",
                );
            }
        };
        let path = format!(
            "/{r}/clients/{client}/evaluate-scopes/generate-example-access-token?scope=openid&userId={}",
            encode(&user)
        );
        let tok = match a.admin.get(&path).await {
            Ok(Some(t)) => t,
            Ok(None) => return fail(id, "example token: 404", "is the user id right?"),
            Err(e) => return fail(id, e.message, e.hint),
        };
        let mut missing = Vec::new();
        for claim in ["sub", "email", "name"] {
            if tok[claim].as_str().is_none_or(str::is_empty) {
                missing.push(claim);
            }
        }
        let scope = tok["scope"].as_str().unwrap_or("");
        let has_kheops = scope.split(' ').any(|s| s == "kheops");
        if missing.is_empty() && has_kheops {
            return pass(id, format!("sub, email, name present; scope {scope:?}"));
        }
        let hint = if missing.contains(&"sub") {
            "no `sub`: on Keycloak >= 25 add the `basic` scope to the login client's default \
             scopes (KHEOPS: \"No subject present in the token\")"
        } else {
            "the `kheops` client scope (email and full name mappers) is not a default scope of \
             the login client"
        };
        fail(id, format!("missing {missing:?}; scope {scope:?}"), hint)
    }
}

/// The claims of a JWT, unverified: only to explain a refusal (KHEOPS verifies the signature).
fn jwt_claims(token: &str) -> Option<Value> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// `error` and `error_description` of a redirect back to the client, for the detail line.
fn location_error(location: &str) -> String {
    let query = location
        .split_once(['?', '#'])
        .map(|(_, q)| q)
        .unwrap_or("");
    let pairs: Vec<String> = form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == "error" || k == "error_description")
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if pairs.is_empty() {
        format!("redirected to {location}")
    } else {
        pairs.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked_field_by_field() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let root = dir.path().canonicalize()?;
        let roots = Roots::new(std::slice::from_ref(&root));
        std::fs::write(root.join("secret"), "s3cret\n")?;
        let good = v1::CheckKeycloakRequest {
            base_url: "https://kc.example/auth/".into(),
            kheops_origin: "https://kheops.example".into(),
            auth_secret_file: root.join("secret").to_string_lossy().into_owned(),
            ..Default::default()
        };
        let req = target_from_request(&good, &roots)
            .map_err(|e| std::io::Error::other(format!("{}: {}", e.field, e.problem)))?;
        let (t, ca) = (req.target, req.ca_file);
        assert_eq!(req.checks, CheckId::REMOTE);
        assert_eq!(t.base_url, "https://kc.example/auth");
        assert_eq!(
            (t.realm.as_str(), t.login_client.as_str()),
            ("demo", "loginConnect")
        );
        assert_eq!(t.auth_client, "kheopsAuthorization");
        assert_eq!(t.auth_secret, "s3cret");
        assert!(ca.is_none());
        let bad = |r: v1::CheckKeycloakRequest| {
            target_from_request(&r, &roots)
                .err()
                .map(|e| e.field)
                .unwrap_or("accepted")
        };
        let mut r = good.clone();
        r.base_url = "kc.example".into();
        assert_eq!(bad(r), "base_url");
        let mut r = good.clone();
        r.kheops_origin = String::new();
        assert_eq!(bad(r), "kheops_origin");
        let mut r = good.clone();
        r.auth_secret_file = "/etc/shadow".into();
        assert_eq!(bad(r), "auth_secret_file");
        let mut r = good.clone();
        r.realm = "a/b".into();
        assert_eq!(bad(r), "realm");
        let mut r = good.clone();
        r.ca_file = "ca.pem".into();
        assert_eq!(bad(r), "ca_file");
        let mut r = good.clone();
        r.only = vec!["discovery".into(), "nope".into()];
        assert_eq!(bad(r), "only");
        // Without the service-account check no secret is needed.
        let mut r = good;
        r.auth_secret_file = String::new();
        r.only = vec!["discovery".into(), "jwks".into(), "discovery".into()];
        let req = target_from_request(&r, &roots)
            .map_err(|e| std::io::Error::other(format!("{}: {}", e.field, e.problem)))?;
        assert_eq!(req.checks, [CheckId::Discovery, CheckId::Jwks]);
        assert!(req.target.auth_secret.is_empty());
        Ok(())
    }

    #[test]
    fn jwt_claims_reads_the_payload() {
        // {"alg":"none"} . {"iss":"https://kc/auth/realms/demo","azp":"kheopsAuthorization"}
        let t = "eyJhbGciOiJub25lIn0.eyJpc3MiOiJodHRwczovL2tjL2F1dGgvcmVhbG1zL2RlbW8iLCJhenAiOiJraGVvcHNBdXRob3JpemF0aW9uIn0.";
        let c = jwt_claims(t).expect("claims");
        assert_eq!(c["iss"], "https://kc/auth/realms/demo");
        assert_eq!(c["azp"], "kheopsAuthorization");
        assert!(jwt_claims("not-a-jwt").is_none());
    }

    #[test]
    fn location_error_names_keycloaks_reason() {
        let l = "https://kheops.example/oidc-callback#error=unauthorized_client&error_description=Implicit+flow+is+disabled&state=x";
        assert_eq!(
            location_error(l),
            "error=unauthorized_client, error_description=Implicit flow is disabled"
        );
        assert_eq!(location_error("https://x/"), "redirected to https://x/");
    }
}
