//! `keycloak_realm` against a real Keycloak 26 (Quarkus dist from Maven Central, see
//! `harness/keycloak.rs`): fresh reconcile, idempotence, drift repair, the managed client
//! secret, the verification checks (passing, and failing with the right hint for each cause),
//! `RevealSecret`, and export -> import into a second fresh Keycloak.
//!
//! One shared Keycloak for the binary; each test uses its own realm. The export test starts a
//! second one of its own.

use std::path::PathBuf;

use http::Method;
use kagent::host::http::Client;
use kagent::keycloak_checks::{AdminAccess, CheckId, Checker, Target};
use kagent::resource::keycloak_realm::admin_api::{Admin, Login};
use kagent_proto::v1::{
    Action, Alphabet, ExportKeycloakRealmRequest, KeycloakAdmin, KeycloakFlavor, KeycloakRealm,
    OperationState, Resource, RevealSecretRequest, resource::Kind,
};
use kagent_tests::keycloak::{ADMIN_PASSWORD, ADMIN_USER, Keycloak};
use kagent_tests::*;
use serde_json::{Value, json};

const ORIGIN: &str = "https://kheops.test.example";

struct Fixture {
    pki: Pki,
    agent: Agent,
    url: String,
    realm: String,
    cred: PathBuf,
    secret: PathBuf,
    flavor: KeycloakFlavor,
}

impl Fixture {
    fn new(kc_url: &str, realm: &str) -> Fixture {
        let pki = Pki::new();
        let agent = Agent::start_new(&pki);
        let cred = agent.root.join("keycloak/admin-password");
        Keycloak::write_admin_credential(&cred);
        let secret = agent.root.join("keycloak/kheops-auth-secret");
        Fixture {
            pki,
            agent,
            url: kc_url.to_string(),
            realm: realm.to_string(),
            cred,
            secret,
            flavor: KeycloakFlavor::Unspecified,
        }
    }

    fn admin_proto(&self) -> KeycloakAdmin {
        KeycloakAdmin {
            url: self.url.clone(),
            credential_file: self.cred.to_string_lossy().into_owned(),
            ..Default::default()
        }
    }

    fn spec(&self) -> kagent_proto::v1::HostSpec {
        host_spec(vec![
            secret(
                "kheops-auth-secret",
                &self.secret,
                32,
                Alphabet::Alphanumeric,
            ),
            Resource {
                name: "realm".into(),
                kind: Some(Kind::KeycloakRealm(KeycloakRealm {
                    admin: Some(self.admin_proto()),
                    realm: self.realm.clone(),
                    kheops_origin: ORIGIN.into(),
                    registration_allowed: true,
                    client_secret_file: self.secret.to_string_lossy().into_owned(),
                    flavor: self.flavor as i32,
                    ..Default::default()
                })),
            },
        ])
    }

    async fn apply(&self, dry_run: bool) -> Vec<kagent_proto::v1::Event> {
        let mut c = admin(&self.pki, &self.agent).await;
        let events = kagent_tests::apply(&mut c, self.spec(), dry_run)
            .await
            .unwrap_or_else(|s| panic!("Apply: {:?} {}", s.code(), s.message()));
        let f = finished(&events);
        assert_eq!(
            state(&f),
            OperationState::Succeeded,
            "operation failed: {:#?}\nagent stderr:\n{}",
            failed(&events),
            self.agent.stderr()
        );
        events
    }

    /// The realm resource's planned action and diff.
    async fn plan(&self) -> (Action, String) {
        let events = self.apply(true).await;
        realm_plan(&events)
    }

    fn secret_value(&self) -> String {
        std::fs::read_to_string(&self.secret)
            .expect("read the client secret file")
            .trim()
            .to_string()
    }

    fn target(&self, base: &str) -> Target {
        Target {
            base_url: base.to_string(),
            realm: self.realm.clone(),
            kheops_origin: ORIGIN.into(),
            expected_issuer: None,
            login_client: "loginConnect".into(),
            auth_client: "kheopsAuthorization".into(),
            auth_secret: self.secret_value(),
        }
    }
}

fn realm_plan(events: &[kagent_proto::v1::Event]) -> (Action, String) {
    let p = planned(events)
        .into_iter()
        .find(|p| p.resource.as_ref().is_some_and(|r| r.name == "realm"))
        .expect("the realm resource was planned");
    (
        Action::try_from(p.action).unwrap_or(Action::Unspecified),
        p.diff,
    )
}

/// An admin session for the test's own changes. Master-realm tokens live 60 s by default, which
/// a slow runner exceeds within one test: the first session raises that lifespan for the test
/// Keycloak (the agent logs in per read and per apply and does not need it).
async fn kc_admin(url: &str) -> Admin {
    let first = login_master(url).await;
    send(
        &first,
        Method::PUT,
        "/master",
        json!({ "realm": "master", "accessTokenLifespan": 3600 }),
    )
    .await;
    login_master(url).await
}

async fn login_master(url: &str) -> Admin {
    Admin::login(
        Client::new(None).expect("http client"),
        &Login {
            base: url.to_string(),
            realm: "master".into(),
            username: ADMIN_USER.into(),
            client_id: None,
            secret: ADMIN_PASSWORD.into(),
        },
    )
    .await
    .unwrap_or_else(|e| panic!("admin login: {e:?}"))
}

async fn client_uuid(a: &Admin, realm: &str, client_id: &str) -> String {
    a.client_uuid(realm, client_id)
        .await
        .expect("list clients")
        .unwrap_or_else(|| panic!("client {client_id} missing"))
}

async fn get(a: &Admin, path: &str) -> Value {
    a.get(path)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e:?}"))
        .unwrap_or_else(|| panic!("GET {path}: 404"))
}

async fn send(a: &Admin, m: Method, path: &str, body: Value) {
    a.send(m.clone(), path, &body)
        .await
        .unwrap_or_else(|e| panic!("{m} {path}: {e:?}"));
}

/// (realm-management client uuid, view-users role, service-account user id, kheopsAuthorization uuid)
async fn grant_ids(a: &Admin, realm: &str) -> (String, Value, String, String) {
    let rm = client_uuid(a, realm, "realm-management").await;
    let role = get(a, &format!("/{realm}/clients/{rm}/roles/view-users")).await;
    let ka = client_uuid(a, realm, "kheopsAuthorization").await;
    let sa = get(a, &format!("/{realm}/clients/{ka}/service-account-user")).await;
    (rm, role, sa["id"].as_str().expect("sa id").to_string(), ka)
}

async fn remove_sa_role(a: &Admin, realm: &str) {
    let (rm, role, uid, _) = grant_ids(a, realm).await;
    send(
        a,
        Method::DELETE,
        &format!("/{realm}/users/{uid}/role-mappings/clients/{rm}"),
        json!([role]),
    )
    .await;
}

async fn remove_scope_mapping(a: &Admin, realm: &str) {
    let (rm, role, _, ka) = grant_ids(a, realm).await;
    send(
        a,
        Method::DELETE,
        &format!("/{realm}/clients/{ka}/scope-mappings/clients/{rm}"),
        json!([role]),
    )
    .await;
}

async fn set_web_origins(a: &Admin, realm: &str, origins: Value) {
    let lc = client_uuid(a, realm, "loginConnect").await;
    send(
        a,
        Method::PUT,
        &format!("/{realm}/clients/{lc}"),
        json!({ "clientId": "loginConnect", "webOrigins": origins }),
    )
    .await;
}

async fn regenerate_secret(a: &Admin, realm: &str) {
    let ka = client_uuid(a, realm, "kheopsAuthorization").await;
    send(
        a,
        Method::POST,
        &format!("/{realm}/clients/{ka}/client-secret"),
        json!({}),
    )
    .await;
}

async fn keycloak_secret(a: &Admin, realm: &str) -> String {
    let ka = client_uuid(a, realm, "kheopsAuthorization").await;
    get(a, &format!("/{realm}/clients/{ka}/client-secret")).await["value"]
        .as_str()
        .expect("secret value")
        .to_string()
}

async fn detach_default_scope(a: &Admin, realm: &str, scope: &str) {
    let lc = client_uuid(a, realm, "loginConnect").await;
    let scopes = get(a, &format!("/{realm}/client-scopes")).await;
    let sid = scopes
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == scope)
        .and_then(|s| s["id"].as_str())
        .unwrap_or_else(|| panic!("scope {scope} missing"))
        .to_string();
    a.send(
        Method::DELETE,
        &format!("/{realm}/clients/{lc}/default-client-scopes/{sid}"),
        &Value::Null,
    )
    .await
    .unwrap_or_else(|e| panic!("detach {scope}: {e:?}"));
}

/// A user with email and name, for the example access token.
async fn make_user(a: &Admin, realm: &str) -> String {
    send(
        a,
        Method::POST,
        &format!("/{realm}/users"),
        json!({
            "username": "alice", "enabled": true, "email": "alice@example.org",
            "emailVerified": true, "firstName": "Alice", "lastName": "Liddell"
        }),
    )
    .await;
    let users = get(a, &format!("/{realm}/users?username=alice&exact=true")).await;
    users[0]["id"].as_str().expect("user id").to_string()
}

fn assert_unchanged(plan: &(Action, String)) {
    assert_eq!(
        plan.0,
        Action::Unchanged,
        "expected no change, got:\n{}",
        plan.1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realm_is_created_then_unchanged_then_drift_is_repaired() {
    let kc = tokio::task::spawn_blocking(Keycloak::shared)
        .await
        .expect("keycloak");
    let fx = Fixture::new(&kc.url, "drift");
    let a = kc_admin(&kc.url).await;

    let events = fx.apply(false).await;
    let (action, diff) = realm_plan(&events);
    assert_eq!(action, Action::Create, "{diff}");
    for line in [
        "+ realm drift",
        "+ client-scope kheops",
        "+ client loginConnect",
        "+ client kheopsAuthorization (secret from file <redacted>)",
        "+ service-account role realm-management/view-users for client kheopsAuthorization",
        "+ scope mapping realm-management/view-users for client kheopsAuthorization",
    ] {
        assert!(diff.contains(line), "missing {line:?} in:\n{diff}");
    }
    assert!(
        !diff.contains(&fx.secret_value()),
        "the plan shows the secret"
    );
    assert_eq!(keycloak_secret(&a, "drift").await, fx.secret_value());

    // Second run: nothing to do, and the secret is the same.
    let before = fx.secret_value();
    let again = fx.apply(false).await;
    assert_unchanged(&realm_plan(&again));
    assert_eq!(fx.secret_value(), before);
    assert_eq!(keycloak_secret(&a, "drift").await, before);

    // Drift by hand: view-users removed, web origin removed, secret regenerated.
    remove_sa_role(&a, "drift").await;
    set_web_origins(&a, "drift", json!([])).await;
    regenerate_secret(&a, "drift").await;
    let (action, diff) = fx.plan().await;
    assert_eq!(action, Action::Update, "{diff}");
    assert!(
        diff.contains(
            "+ service-account role realm-management/view-users for client kheopsAuthorization"
        ),
        "{diff}"
    );
    assert!(
        !diff.contains("+ scope mapping"),
        "scope mapping was kept: {diff}"
    );
    assert!(
        diff.contains(
            "~ client loginConnect\n    webOrigins: [] -> [\"https://kheops.test.example\"]"
        ),
        "{diff}"
    );
    assert!(
        diff.contains("secret: differs from the managed file <redacted>"),
        "{diff}"
    );
    fx.apply(false).await;
    assert_unchanged(&fx.plan().await);
    assert_eq!(keycloak_secret(&a, "drift").await, before);

    // Objects the spec does not name are left alone: another client survives every apply.
    send(
        &a,
        Method::POST,
        "/drift/clients",
        json!({ "clientId": "someone-elses", "publicClient": true }),
    )
    .await;
    assert_unchanged(&fx.plan().await);
    fx.apply(false).await;
    assert!(
        a.client_uuid("drift", "someone-elses")
            .await
            .expect("list")
            .is_some()
    );

    // RevealSecret: the admin gets the value, audited; a viewer is refused.
    let mut c = admin(&fx.pki, &fx.agent).await;
    let v = c
        .reveal_secret(RevealSecretRequest {
            path: fx.secret.to_string_lossy().into_owned(),
        })
        .await
        .expect("reveal")
        .into_inner()
        .value;
    assert_eq!(v, before);
    let refused = c
        .reveal_secret(RevealSecretRequest {
            path: "/etc/passwd".into(),
        })
        .await
        .expect_err("a path outside the rules");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    let viewer_id = fx.pki.client("viewer-test", "viewer");
    let mut viewer = client(&fx.pki, &fx.agent, Some(&viewer_id))
        .await
        .expect("viewer connects");
    let denied = viewer
        .reveal_secret(RevealSecretRequest {
            path: fx.secret.to_string_lossy().into_owned(),
        })
        .await
        .expect_err("viewer");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    let audit = std::fs::read_to_string(fx.agent.audit_log()).expect("audit log");
    let reveals: Vec<&str> = audit
        .lines()
        .filter(|l| l.contains("/kagent.v1.Agent/RevealSecret"))
        .collect();
    assert_eq!(reveals.len(), 6, "begin+end for each of 3 calls:\n{audit}");
    assert!(!audit.contains(&before), "the audit log holds the secret");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_pass_and_each_cause_fails_with_its_hint() {
    let kc = tokio::task::spawn_blocking(Keycloak::shared)
        .await
        .expect("keycloak");
    let fx = Fixture::new(&kc.url, "checks");
    let a = kc_admin(&kc.url).await;
    fx.apply(false).await;
    let user = make_user(&a, "checks").await;
    let access = AdminAccess {
        admin: &a,
        user_id: Some(user),
    };
    let checker = Checker::new(fx.target(&kc.url), None).expect("checker");
    let all = checker.run_all(Some(&access)).await;
    assert_eq!(all.len(), 7);
    for c in &all {
        assert!(
            c.pass,
            "{} failed: {} (hint: {})",
            c.id.name(),
            c.detail,
            c.hint
        );
    }

    let expect_fail = |c: kagent::keycloak_checks::Check, id: CheckId, hint: &str| {
        assert_eq!(c.id, id);
        assert!(
            !c.pass,
            "{} passed but should fail: {}",
            id.name(),
            c.detail
        );
        assert!(
            c.hint.contains(hint),
            "{}: hint {:?} lacks {hint:?}",
            id.name(),
            c.hint
        );
    };

    // Web origin removed -> the seed's 403 on login-status-iframe.html.
    set_web_origins(&a, "checks", json!([])).await;
    expect_fail(
        checker.iframe_origin().await,
        CheckId::IframeOrigin,
        "web origins",
    );
    fx.apply(false).await;
    assert!(checker.iframe_origin().await.pass);

    // view-users removed from the service account -> 403 with the role hint.
    remove_sa_role(&a, "checks").await;
    expect_fail(
        checker.service_account().await,
        CheckId::ServiceAccount,
        "view-users",
    );
    fx.apply(false).await;
    assert!(checker.service_account().await.pass);

    // Only the scope mapping removed -> 403 too (fullScopeAllowed is off).
    remove_scope_mapping(&a, "checks").await;
    expect_fail(
        checker.service_account().await,
        CheckId::ServiceAccount,
        "scope mapping",
    );
    fx.apply(false).await;
    assert!(checker.service_account().await.pass);

    // Secret changed in Keycloak -> 401 with the secret hint.
    regenerate_secret(&a, "checks").await;
    expect_fail(
        checker.service_account().await,
        CheckId::ServiceAccount,
        "secret differs",
    );
    fx.apply(false).await;
    assert!(checker.service_account().await.pass);

    // `kheops` scope dropped from loginConnect -> no email/name/scope in the token.
    detach_default_scope(&a, "checks", "kheops").await;
    expect_fail(
        checker.token_claims(&access).await,
        CheckId::TokenClaims,
        "kheops",
    );
    // `basic` dropped -> no `sub` (Keycloak >= 25).
    fx.apply(false).await;
    detach_default_scope(&a, "checks", "basic").await;
    expect_fail(
        checker.token_claims(&access).await,
        CheckId::TokenClaims,
        "basic",
    );
    fx.apply(false).await;
    assert!(checker.token_claims(&access).await.pass);

    // Direct access grants turned on by hand.
    let lc = client_uuid(&a, "checks", "loginConnect").await;
    send(
        &a,
        Method::PUT,
        &format!("/checks/clients/{lc}"),
        json!({ "clientId": "loginConnect", "directAccessGrantsEnabled": true }),
    )
    .await;
    expect_fail(
        checker.password_grant_refused().await,
        CheckId::PasswordGrantRefused,
        "directAccessGrantsEnabled",
    );
    // Redirect URIs cleared.
    send(
        &a,
        Method::PUT,
        &format!("/checks/clients/{lc}"),
        json!({ "clientId": "loginConnect", "redirectUris": [] }),
    )
    .await;
    expect_fail(
        checker.redirect_uri().await,
        CheckId::RedirectUri,
        "redirect URIs",
    );
    fx.apply(false).await;
    assert!(checker.password_grant_refused().await.pass);
    assert!(checker.redirect_uri().await.pass);

    // KHEOPS expecting another issuer (public URL vs internal URL).
    let mut t = fx.target(&kc.url);
    t.expected_issuer = Some(format!("{ORIGIN}/auth/realms/checks"));
    let other = Checker::new(t, None).expect("checker");
    expect_fail(other.discovery().await, CheckId::Discovery, "frontendUrl");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_import_into_a_fresh_keycloak_passes_the_checks() {
    // The second Keycloak starts once the shared one is up (on a 2-CPU runner two JVMs booting
    // at once take three times as long), and boots while the first realm is reconciled.
    let kc = tokio::task::spawn_blocking(Keycloak::shared)
        .await
        .expect("keycloak");
    let fresh = tokio::task::spawn_blocking(Keycloak::start);
    let fx = Fixture::new(&kc.url, "exported");
    fx.apply(false).await;

    let mut c = admin(&fx.pki, &fx.agent).await;
    let export = |include_secrets| ExportKeycloakRealmRequest {
        admin: Some(fx.admin_proto()),
        realm: "exported".into(),
        include_secrets,
    };
    let masked = c
        .export_keycloak_realm(export(false))
        .await
        .expect("export")
        .into_inner()
        .json;
    assert!(
        !masked.contains(&fx.secret_value()),
        "secret exported without the flag"
    );
    let full = c
        .export_keycloak_realm(export(true))
        .await
        .expect("export")
        .into_inner()
        .json;
    assert!(
        full.contains(&fx.secret_value()),
        "secret missing with include_secrets"
    );
    let missing = c
        .export_keycloak_realm(ExportKeycloakRealmRequest {
            realm: "no-such-realm".into(),
            ..export(false)
        })
        .await
        .expect_err("unknown realm");
    assert_eq!(
        missing.code(),
        tonic::Code::FailedPrecondition,
        "{missing:?}"
    );

    let fresh = fresh.await.expect("second keycloak");
    let b = kc_admin(&fresh.url).await;
    let doc: Value = serde_json::from_str(&full).expect("export is JSON");
    send(&b, Method::POST, "", doc).await;
    let user = make_user(&b, "exported").await;
    let checker = Checker::new(fx.target(&fresh.url), None).expect("checker");
    let access = AdminAccess {
        admin: &b,
        user_id: Some(user),
    };
    for check in checker.run_all(Some(&access)).await {
        assert!(
            check.pass,
            "on the imported realm {} failed: {} (hint: {})",
            check.id.name(),
            check.detail,
            check.hint
        );
    }
    eprintln!(
        "keycloak starts: shared {:.1}s, fresh {:.1}s",
        kc.started_in.as_secs_f64(),
        fresh.started_in.as_secs_f64()
    );
}

/// The seed's Keycloak 16.1.1 (WildFly distribution from Maven Central, Java 17): the legacy
/// renderer (no `basic` scope, 16.x mapper keys) creates the realm, a second run changes
/// nothing, drift is repaired, and every check passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_16_realm_is_reconciled_and_passes_the_checks() {
    let kc = tokio::task::spawn_blocking(Keycloak::start_legacy)
        .await
        .expect("keycloak 16");
    let mut fx = Fixture::new(&kc.url, "demo");
    fx.flavor = KeycloakFlavor::Legacy16;
    let events = fx.apply(false).await;
    let (action, diff) = realm_plan(&events);
    assert_eq!(action, Action::Create, "{diff}");
    assert_unchanged(&fx.plan().await);
    let a = kc_admin(&kc.url).await;
    remove_scope_mapping(&a, "demo").await;
    let (_, diff) = fx.plan().await;
    assert!(
        diff.contains("+ scope mapping realm-management/view-users"),
        "{diff}"
    );
    fx.apply(false).await;
    assert_unchanged(&fx.plan().await);
    let user = make_user(&a, "demo").await;
    let access = AdminAccess {
        admin: &a,
        user_id: Some(user),
    };
    let checker = Checker::new(fx.target(&kc.url), None).expect("checker");
    for c in checker.run_all(Some(&access)).await {
        assert!(
            c.pass,
            "16.1.1: {} failed: {} (hint: {})",
            c.id.name(),
            c.detail,
            c.hint
        );
    }
    eprintln!(
        "keycloak 16.1.1 started in {:.1}s",
        kc.started_in.as_secs_f64()
    );
}
