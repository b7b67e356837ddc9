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
    /// The CA of Keycloak's https certificate.
    kc_ca: PathBuf,
    realm: String,
    cred: PathBuf,
    secret: PathBuf,
    flavor: KeycloakFlavor,
    /// Log in as this service client of `master` (secret in `cred`) instead of the admin user.
    admin_client: Option<String>,
}

impl Fixture {
    fn new(kc: &Keycloak, realm: &str) -> Fixture {
        let pki = Pki::new();
        let agent = Agent::start_new(&pki);
        let cred = agent.root.join("keycloak/admin-password");
        Keycloak::write_admin_credential(&cred);
        let secret = agent.root.join("keycloak/kheops-auth-secret");
        Fixture {
            pki,
            agent,
            url: kc.url.clone(),
            kc_ca: kc.ca_file.clone(),
            realm: realm.to_string(),
            cred,
            secret,
            flavor: KeycloakFlavor::Unspecified,
            admin_client: None,
        }
    }

    fn admin_proto(&self) -> KeycloakAdmin {
        KeycloakAdmin {
            url: self.url.clone(),
            credential_file: self.cred.to_string_lossy().into_owned(),
            ca_file: self.kc_ca.to_string_lossy().into_owned(),
            client_id: self.admin_client.clone().unwrap_or_default(),
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
async fn kc_admin(kc: &Keycloak) -> Admin {
    // Two tests updating the master realm at once get a 409 from Keycloak: one at a time.
    static MASTER_UPDATE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one = MASTER_UPDATE.lock().await;
    let first = login_master(kc).await;
    send(
        &first,
        Method::PUT,
        "/master",
        json!({ "realm": "master", "accessTokenLifespan": 3600 }),
    )
    .await;
    login_master(kc).await
}

async fn login_master(kc: &Keycloak) -> Admin {
    Admin::login(
        Client::new(Some(&kc.ca_file)).expect("http client"),
        &Login {
            base: kc.url.clone(),
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
    let fx = Fixture::new(kc, "drift");
    let a = kc_admin(kc).await;

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
    let fx = Fixture::new(kc, "checks");
    let a = kc_admin(kc).await;
    fx.apply(false).await;
    let user = make_user(&a, "checks").await;
    let access = AdminAccess {
        admin: &a,
        user_id: Some(user),
    };
    let checker = Checker::new(fx.target(&kc.url), Some(&kc.ca_file)).expect("checker");
    let all = checker.run_all(Some(&access)).await;
    assert_eq!(all.len(), 8);
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

    // Implicit flow turned off: the seed's KHEOPS 0.9 can no longer log in.
    send(
        &a,
        Method::PUT,
        &format!("/checks/clients/{lc}"),
        json!({ "clientId": "loginConnect", "implicitFlowEnabled": false }),
    )
    .await;
    let implicit = checker.implicit_flow().await;
    assert!(
        implicit.detail.contains("unauthorized_client"),
        "Keycloak's reason is shown: {}",
        implicit.detail
    );
    expect_fail(implicit, CheckId::ImplicitFlow, "implicitFlowEnabled");
    assert!(
        checker.redirect_uri().await.pass,
        "the code flow still works"
    );
    fx.apply(false).await;
    assert!(checker.implicit_flow().await.pass);

    // KHEOPS expecting another issuer (public URL vs internal URL).
    let mut t = fx.target(&kc.url);
    t.expected_issuer = Some(format!("{ORIGIN}/auth/realms/checks"));
    let other = Checker::new(t, Some(&kc.ca_file)).expect("checker");
    expect_fail(other.discovery().await, CheckId::Discovery, "frontendUrl");
    // ... and the service-account token's `iss` is named too (what KHEOPS checks first).
    let sa = other.service_account().await;
    assert!(sa.detail.contains("iss"), "{}", sa.detail);
    expect_fail(sa, CheckId::ServiceAccount, "frontendUrl");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_import_into_a_fresh_keycloak_passes_the_checks() {
    // The second Keycloak starts once the shared one is up (on a 2-CPU runner two JVMs booting
    // at once take three times as long), and boots while the first realm is reconciled.
    let kc = tokio::task::spawn_blocking(Keycloak::shared)
        .await
        .expect("keycloak");
    let fresh = tokio::task::spawn_blocking(Keycloak::start);
    let fx = Fixture::new(kc, "exported");
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
    let b = kc_admin(&fresh).await;
    let doc: Value = serde_json::from_str(&full).expect("export is JSON");
    send(&b, Method::POST, "", doc).await;
    let user = make_user(&b, "exported").await;
    let checker = Checker::new(fx.target(&fresh.url), Some(&fresh.ca_file)).expect("checker");
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
    let mut fx = Fixture::new(&kc, "demo");
    fx.flavor = KeycloakFlavor::Legacy16;
    let events = fx.apply(false).await;
    let (action, diff) = realm_plan(&events);
    assert_eq!(action, Action::Create, "{diff}");
    assert_unchanged(&fx.plan().await);
    let a = kc_admin(&kc).await;
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
    let checker = Checker::new(fx.target(&kc.url), Some(&kc.ca_file)).expect("checker");
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

/// The admin credential as the issue prefers it: a service client in `master` (client
/// credentials, realm role `admin`) instead of the bootstrap user. The agent reconciles with it;
/// then the real kctl exports the realm (`kctl keycloak export HOST --realm R > file`, secrets
/// only with `--include-secrets`) and reveals the managed client secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_service_client_reconciles_and_kctl_exports_and_reveals() {
    let kc = tokio::task::spawn_blocking(Keycloak::shared)
        .await
        .expect("keycloak");
    let a = kc_admin(kc).await;
    let mut fx = Fixture::new(kc, "svc");
    let client_id = "kagent-admin-svc";
    let admin_secret = "kagent-admin-svc-secret-0123456789";
    send(
        &a,
        Method::POST,
        "/master/clients",
        json!({
            "clientId": client_id, "publicClient": false, "serviceAccountsEnabled": true,
            "standardFlowEnabled": false, "directAccessGrantsEnabled": false,
            "clientAuthenticatorType": "client-secret", "secret": admin_secret
        }),
    )
    .await;
    let uuid = client_uuid(&a, "master", client_id).await;
    let sa = get(&a, &format!("/master/clients/{uuid}/service-account-user")).await;
    let admin_role = get(&a, "/master/roles/admin").await;
    send(
        &a,
        Method::POST,
        &format!(
            "/master/users/{}/role-mappings/realm",
            sa["id"].as_str().expect("sa id")
        ),
        json!([admin_role]),
    )
    .await;
    fx.cred = fx.agent.root.join("keycloak/admin-client-secret");
    std::fs::write(&fx.cred, format!("{admin_secret}\n")).expect("write the client secret");
    fx.admin_client = Some(client_id.into());

    let (action, diff) = realm_plan(&fx.apply(false).await);
    assert_eq!(action, Action::Create, "{diff}");
    assert_unchanged(&fx.plan().await);

    // A wrong service-client secret: the apply fails with a hint, nothing half-done.
    std::fs::write(&fx.cred, "not-the-secret\n").expect("write");
    let mut c = admin(&fx.pki, &fx.agent).await;
    let events = kagent_tests::apply(&mut c, fx.spec(), true)
        .await
        .expect("the dry run runs");
    let f = failed(&events);
    assert!(!f.is_empty(), "a wrong admin secret must fail the plan");
    std::fs::write(&fx.cred, format!("{admin_secret}\n")).expect("write");

    // The real kctl, as in the seed's backup step.
    let kctl = kagent_tests::kctl_cli::Kctl::admin(&fx.pki);
    let host = format!("localhost:{}", fx.agent.addr.port());
    let cred = fx.cred.to_string_lossy().into_owned();
    let ca = kc.ca_file.to_string_lossy().into_owned();
    let base = [
        "keycloak",
        "export",
        host.as_str(),
        "--realm",
        "svc",
        "--url",
        kc.url.as_str(),
        "--admin-credential-file",
        cred.as_str(),
        "--admin-client-id",
        client_id,
        "--keycloak-ca-file",
        ca.as_str(),
    ];
    let masked = kctl.ok(&base);
    let doc: Value = serde_json::from_str(&masked).expect("kctl prints the realm as JSON");
    assert_eq!(doc["realm"], "svc");
    let managed = fx.secret_value();
    assert!(
        !masked.contains(&managed),
        "secret exported without the flag"
    );
    let full = kctl.ok(&[&base[..], &["--include-secrets"]].concat());
    assert!(
        full.contains(&managed),
        "--include-secrets keeps the secret"
    );
    let err = kctl.fails(&[&base[..4], &["nope"], &base[5..]].concat());
    assert!(err.contains("nope"), "an unknown realm is named: {err}");

    // kctl reveal: the value for the KHEOPS host, and nothing else on stdout.
    let secret_path = fx.secret.to_string_lossy().into_owned();
    assert_eq!(kctl.ok(&["reveal", &host, &secret_path]).trim(), managed);
    let viewer = fx.pki.client("viewer-kctl", "viewer");
    let as_viewer = kagent_tests::kctl_cli::Kctl::with_identity(&fx.pki, &viewer);
    let denied = as_viewer.fails(&["reveal", &host, &secret_path]);
    assert!(
        denied.to_lowercase().contains("permission") || denied.contains("admin"),
        "{denied}"
    );
    assert!(!denied.contains(&managed));

    // kctl keycloak check: the verification checks run by the agent from its host (in an
    // install, the KHEOPS host's agent), exit code 1 and the hint when one fails.
    let check = [
        "keycloak",
        "check",
        host.as_str(),
        "--url",
        kc.url.as_str(),
        "--realm",
        "svc",
        "--kheops-origin",
        ORIGIN,
        "--secret-file",
        secret_path.as_str(),
        "--keycloak-ca-file",
        ca.as_str(),
    ];
    let table = kctl.ok(&check);
    assert!(table.ends_with("7 checks passed\n"), "{table}");
    // What kctl provision waits for before the KHEOPS host has the secret: no secret needed.
    let reachable = kctl.ok(&[&check[..9], &check[11..], &["--only", "discovery,jwks"]].concat());
    assert!(reachable.ends_with("2 checks passed\n"), "{reachable}");
    let doc: Value =
        serde_json::from_str(&kctl.ok(&[&check[..], &["-o", "json"]].concat())).expect("json");
    assert_eq!(doc["pass"], true, "{doc}");
    assert_eq!(doc["checks"].as_array().map(Vec::len), Some(7));
    set_web_origins(&a, "svc", json!([])).await;
    let out = kctl.run(&check);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed check exits 1:\n{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("iframe-origin ") && l.contains(" FAIL ")),
        "{stdout}"
    );
    assert!(
        stdout.contains("hint (iframe-origin):") && stdout.contains("web origins"),
        "{stdout}"
    );
    assert!(stdout.ends_with("1 of 7 checks failed\n"), "{stdout}");
    fx.apply(false).await;
    assert!(kctl.ok(&check).ends_with("7 checks passed\n"));
    // The secret must be a managed one-word file: anything else is refused, naming the field.
    let outside = kctl.run(
        &[
            &check[..9],
            &["--secret-file", "/etc/hostname"],
            &check[11..],
        ]
        .concat(),
    );
    assert_eq!(outside.status.code(), Some(2));
    let err = String::from_utf8_lossy(&outside.stderr);
    assert!(err.contains("auth_secret_file"), "{err}");
    let denied = as_viewer.fails(&check);
    assert!(!denied.contains(&managed));
    let audit = std::fs::read_to_string(fx.agent.audit_log()).expect("audit log");
    assert!(
        audit.contains("/kagent.v1.Agent/CheckKeycloak") && audit.contains("1 failed"),
        "{audit}"
    );
    assert!(!audit.contains(&managed), "the audit log holds the secret");
}

/// The Keycloak image stand-in (`quay.io/keycloak/keycloak:VERSION`, built locally from the
/// same distribution): its entrypoint runs the real kc.sh on the bundled JDK as uid 1000.
#[test]
fn keycloak_image_stand_in_runs_kc_sh_as_uid_1000() {
    let image = kagent_tests::images::keycloak_image();
    let version = kagent_tests::docker::docker_ok(&["run", "--rm", image, "--version"]);
    assert!(
        version.contains(&format!("Keycloak {}", kagent_tests::keycloak::version())),
        "{version}"
    );
    let id = kagent_tests::docker::docker_ok(&["run", "--rm", "--entrypoint", "id", image, "-u"]);
    assert_eq!(id, "1000");
}
