//! The built-in stacks (`kctl::stack`, `ctl/stacks/*.toml`) against a real agent: every
//! rendered host spec passes the agent's validation and plans on a fresh host in a dry run
//! (nothing pulled, nothing written, no Docker object made); and the parts that can run here
//! for real do: the KHEOPS and Keycloak secrets, the client-secret file and the certificate,
//! issued by pebble before the containers that read it exist.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use kagent_proto::v1::event::Payload;
use kagent_proto::v1::{self, Action, OperationState, resource::Kind};
use kagent_tests::docker::{docker, require_docker};
use kagent_tests::pebble::Pebble;
use kagent_tests::*;
use kctl::stack;

const KC: &str = "kc.kagent.test";
const KH: &str = "kheops.kagent.test";
const CLIENT_SECRET: &str = "Zx81kQ0pLmN3vB7tYc2Wd9Hs";

fn vars(root: &Path, stack_name: &str) -> BTreeMap<String, String> {
    let mut v: BTreeMap<String, String> = [
        ("root", root.to_str().expect("utf-8 root")),
        ("keycloak_domain", KC),
        ("kheops_domain", KH),
        ("acme_contact", "ops@kagent.test"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    match stack_name {
        "kheops-0.9" => {
            v.insert("keycloak_client_secret".into(), CLIENT_SECRET.into());
        }
        "kheops-1.x" => {
            v.insert("kheops_version".into(), "v1.1.2".into());
        }
        _ => {}
    }
    v
}

fn render(stack_name: &str, root: &Path) -> v1::HostSpec {
    stack::find(stack_name)
        .and_then(|s| s.render(&vars(root, stack_name)))
        .unwrap_or_else(|e| panic!("{stack_name}: {e:#}"))
}

fn present(image: &str) -> bool {
    docker(&["image", "inspect", image]).status.success()
}

/// The spec's images that exist locally before the dry run.
fn local_images(spec: &v1::HostSpec) -> BTreeSet<String> {
    images(spec)
        .into_iter()
        .map(|(_, i)| i)
        .filter(|i| present(i))
        .collect()
}

fn images(spec: &v1::HostSpec) -> Vec<(String, String)> {
    spec.resources
        .iter()
        .filter_map(|r| match &r.kind {
            Some(Kind::Container(c)) => Some((r.name.clone(), c.image.clone())),
            _ => None,
        })
        .collect()
}

fn messages(events: &[v1::Event]) -> String {
    events
        .iter()
        .filter_map(|e| match &e.payload {
            Some(Payload::Progress(p)) => Some(p.message.clone()),
            Some(Payload::Done(d)) => Some(d.message.clone()),
            Some(Payload::Failed(f)) => Some(format!("{} (hint: {})", f.error, f.hint)),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The plan of a fresh host: every resource planned, each a create; every container's image
/// to be pulled (no registry is reached in a dry run); nothing on the host changed.
fn assert_fresh_plan(
    stack_name: &str,
    spec: &v1::HostSpec,
    local_images: &BTreeSet<String>,
    events: &[v1::Event],
    root: &Path,
) {
    let planned = planned(events);
    let names: Vec<String> = planned
        .iter()
        .map(|p| p.resource.clone().unwrap_or_default().name)
        .collect();
    let want: Vec<String> = spec.resources.iter().map(|r| r.name.clone()).collect();
    assert_eq!(
        names, want,
        "{stack_name}: every resource is planned, in order"
    );
    for p in &planned {
        let r = p.resource.clone().unwrap_or_default();
        // A `stack` resource with nothing left over is unchanged; everything else is new.
        let want = if r.kind == "stack" {
            Action::Unchanged
        } else {
            Action::Create
        };
        assert_eq!(p.action, want as i32, "{stack_name}: {} {}", r.kind, r.name);
    }
    for (name, image) in images(spec) {
        let plan = planned
            .iter()
            .find(|p| p.resource.as_ref().is_some_and(|r| r.name == name))
            .map(|p| p.diff.clone())
            .unwrap_or_default();
        let pull = format!("image {image} is not present: pull it");
        if local_images.contains(&image) {
            // A stand-in another suite built under the real name (tests/harness/images.rs).
            assert!(!plan.contains(&pull), "{stack_name}: {name}: {plan}");
        } else {
            assert!(plan.contains(&pull), "{stack_name}: {name}: {plan}");
            assert!(!present(&image), "{image} was pulled by a dry run");
        }
        assert!(
            !docker(&["container", "inspect", &name]).status.success(),
            "{name} was created"
        );
    }
    assert_eq!(
        files_under(root),
        Vec::<std::path::PathBuf>::new(),
        "{stack_name}: a dry run writes nothing"
    );
}

/// The stack rendered for a fresh agent and planned there: the dry run succeeds and plans
/// what [`assert_fresh_plan`] says. The agent is returned to keep it alive.
async fn dry_run_fresh(
    stack_name: &str,
) -> (Agent, v1::HostSpec, Vec<v1::Event>, v1::OperationFinished) {
    require_docker();
    let pki = Pki::new();
    let agent = Agent::start_new(&pki);
    let mut client = admin(&pki, &agent).await;
    let spec = render(stack_name, &agent.root);
    let local = local_images(&spec);
    let events = apply(&mut client, spec.clone(), true)
        .await
        .unwrap_or_else(|s| panic!("{stack_name}: the agent refused the spec: {}", s.message()));
    let f = finished(&events);
    assert_eq!(
        state(&f),
        OperationState::Succeeded,
        "{stack_name}: {}\n{}",
        f.error,
        messages(&events)
    );
    assert_fresh_plan(stack_name, &spec, &local, &events, &agent.root);
    (agent, spec, events, f)
}

async fn dry_run_kheops(stack_name: &str) {
    let (_agent, spec, _events, f) = dry_run_fresh(stack_name).await;
    let counts = f.counts.unwrap_or_default();
    assert_eq!(
        (counts.create as usize, counts.failed),
        (spec.resources.len() - 1, 0)
    );
    for net in ["kheops_network", "pacs_network", "frontend_network"] {
        assert!(
            !docker(&["network", "inspect", net]).status.success(),
            "{net} was created"
        );
    }
}

/// A Keycloak stack on a fresh host: everything plans as a create, the realm included, whose
/// plan says Keycloak cannot be read yet because the admin password (an earlier `secret` of
/// the stack) does not exist; apply reads Keycloak when it gets there.
async fn dry_run_keycloak(stack_name: &str) {
    let (agent, spec, events, f) = dry_run_fresh(stack_name).await;
    let realm = planned(&events)
        .into_iter()
        .find(|p| {
            p.resource
                .as_ref()
                .is_some_and(|r| r.kind == "keycloak_realm")
        })
        .expect("the realm is planned");
    let credential = agent.root.join("keycloak/admin-password");
    for want in [
        "+ realm demo (Keycloak cannot be read yet: ".to_string(),
        format!(
            "the admin credential {} does not exist yet",
            credential.display()
        ),
    ] {
        assert!(realm.diff.contains(&want), "{stack_name}: {}", realm.diff);
    }
    assert_eq!(
        f.counts.map(|c| (c.create as usize, c.failed)),
        Some((spec.resources.len() - 1, 0))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kheops_0_9_plans_on_a_fresh_host() {
    dry_run_kheops("kheops-0.9").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kheops_1x_plans_on_a_fresh_host() {
    dry_run_kheops("kheops-1.x").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn keycloak_26_plans_on_a_fresh_host() {
    dry_run_keycloak("keycloak-26").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn keycloak_16_plans_on_a_fresh_host() {
    dry_run_keycloak("keycloak-16").await;
}

/// An agent that answers pebble's HTTP-01 on pebble's port and resolves the stacks' names to
/// loopback for its self-check (as challtestsrv does for pebble).
fn acme_agent(pki: &Pki, pebble: &Pebble) -> Agent {
    let mut a = Agent::builder(pki).build();
    let mut t = a.config_table();
    let mut acme = toml::Table::new();
    acme.insert("http01_port".into(), i64::from(pebble.http01).into());
    acme.insert("poll_delay_ms".into(), 50.into());
    acme.insert("start_delay_max_secs".into(), 0.into());
    let mut resolve = toml::Table::new();
    for n in [KC, KH] {
        resolve.insert(n.into(), "127.0.0.1".into());
    }
    acme.insert("resolve".into(), resolve.into());
    t.insert("acme".into(), acme.into());
    a.write_config(&t);
    a.start();
    a
}

/// The host-side part of a stack, for real: its secrets, files and certificate (the resources
/// before the first network, volume or container).
fn host_part(stack_name: &str, agent: &Agent, pebble: &Pebble) -> v1::HostSpec {
    let mut v = vars(&agent.root, stack_name);
    v.insert("acme_directory".into(), pebble.directory_url());
    v.insert(
        "acme_ca_bundle".into(),
        pebble.tls_ca.to_str().expect("utf-8").into(),
    );
    let spec = stack::find(stack_name)
        .and_then(|s| s.render(&v))
        .unwrap_or_else(|e| panic!("{stack_name}: {e:#}"));
    let resources = spec
        .resources
        .into_iter()
        .take_while(|r| {
            matches!(
                r.kind,
                Some(Kind::Secret(_) | Kind::File(_) | Kind::Certificate(_))
            )
        })
        .collect();
    host_spec(resources)
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn assert_converges(events: &[v1::Event]) {
    let f = finished(events);
    assert_eq!(
        state(&f),
        OperationState::Succeeded,
        "{}\n{}",
        f.error,
        messages(events)
    );
}

/// kheops-0.9 on a real agent: 8 generated secrets and the Keycloak client secret file, one
/// word and a newline each, 0644 in a 0700 directory; fullchain1.pem/privkey1.pem issued by
/// pebble while the reverse proxy (its consumer) does not exist yet; a re-apply changes
/// nothing.
#[tokio::test(flavor = "multi_thread")]
async fn kheops_0_9_secrets_and_certificate_apply_before_the_proxy_exists() {
    require_docker();
    let pebble = Pebble::start();
    let pki = Pki::new();
    let agent = acme_agent(&pki, &pebble);
    let mut client = admin(&pki, &agent).await;
    let spec = host_part("kheops-0.9", &agent, &pebble);
    assert_eq!(spec.resources.len(), 10, "8 secrets, 1 file, 1 certificate");
    let events = apply_events(&mut client, spec.clone()).await;
    assert_converges(&events);
    let msgs = messages(&events);
    assert!(
        msgs.contains(
            "container kheopsreverseproxy does not exist yet: it reads the files when it is \
             created"
        ),
        "{msgs}"
    );
    let secrets = agent.root.join("kheops/secrets");
    assert_eq!(mode(&secrets), 0o700);
    let files = files_under(&secrets);
    assert_eq!(files.len(), 9, "{files:?}");
    for f in &files {
        let text = std::fs::read_to_string(f).expect("secret");
        assert_eq!(text.lines().count(), 1, "{}: one line", f.display());
        assert!(text.ends_with('\n'), "{}: a trailing newline", f.display());
        assert_eq!(text.split_whitespace().count(), 1, "{}", f.display());
        assert_eq!(mode(f), 0o644, "{}", f.display());
    }
    assert_eq!(
        std::fs::read_to_string(secrets.join("kheops_keycloak_clientsecret")).expect("file"),
        format!("{CLIENT_SECRET}\n")
    );
    let tls = agent.root.join("kheops/tls");
    let chain = std::fs::read_to_string(tls.join("fullchain1.pem")).expect("fullchain1.pem");
    assert!(
        chain.matches("BEGIN CERTIFICATE").count() >= 2,
        "leaf + chain"
    );
    assert!(
        std::fs::read_to_string(tls.join("privkey1.pem"))
            .expect("privkey1.pem")
            .contains("BEGIN PRIVATE KEY")
    );
    assert_eq!(
        (mode(&tls), mode(&tls.join("privkey1.pem"))),
        (0o700, 0o600)
    );
    // Idempotent: nothing is regenerated or reissued.
    let before: Vec<(std::path::PathBuf, Vec<u8>)> = files_under(&agent.root)
        .into_iter()
        .map(|p| {
            let c = std::fs::read(&p).expect("read");
            (p, c)
        })
        .collect();
    let events = apply_events(&mut client, spec).await;
    assert_converges(&events);
    assert!(
        planned_actions(&events)
            .iter()
            .all(|(_, a)| *a == Action::Unchanged),
        "{:?}",
        planned_actions(&events)
    );
    for (p, c) in before {
        assert_eq!(std::fs::read(&p).expect("read"), c, "{}", p.display());
    }
    assert_eq!(pebble.issued(), 1);
}

/// keycloak-26 on a real agent: the admin password and the TLS key belong to uid 1000 (the
/// Keycloak container's user), the key 0600: readable by Keycloak, by nobody else.
#[tokio::test(flavor = "multi_thread")]
async fn keycloak_26_tls_key_and_admin_password_belong_to_uid_1000() {
    require_docker();
    let pebble = Pebble::start();
    let pki = Pki::new();
    let agent = acme_agent(&pki, &pebble);
    let mut client = admin(&pki, &agent).await;
    let spec = host_part("keycloak-26", &agent, &pebble);
    assert_eq!(spec.resources.len(), 3, "2 secrets, 1 certificate");
    let events = apply_events(&mut client, spec).await;
    assert_converges(&events);
    let kc = agent.root.join("keycloak");
    for (file, uid, want_mode) in [
        ("admin-password", 1000, 0o600),
        ("kheops-auth-secret", 0, 0o600),
        ("tls/privkey.pem", 1000, 0o600),
        ("tls/fullchain.pem", 1000, 0o644),
    ] {
        let meta = std::fs::metadata(kc.join(file)).expect(file);
        assert_eq!(
            (meta.uid(), meta.mode() & 0o7777),
            (uid, want_mode),
            "{file}"
        );
    }
    assert_eq!(mode(&kc.join("tls")), 0o755, "uid 1000 can reach the files");
}
