//! `kctl provision` for real across two simulated VMs (tests/harness/vm.rs): a real Keycloak
//! 26 in a container on the Keycloak VM (the image stand-in of `quay.io/keycloak/keycloak`, built
//! from the Maven Central distribution), its certificate from pebble by HTTP-01 answered by the
//! VM's agent, the seed's realm reconciled through the published https port; then, from the
//! KHEOPS VM, the wait for Keycloak, the client secret handed over, the KHEOPS side (the test
//! stand-in stack `tests/stacks/kheops-standin.toml`: KHEOPS images cannot be pulled here) and
//! every verification check run by the KHEOPS VM's agent. A second run converges.

use std::net::IpAddr;

use kagent_tests::kctl_cli::Kctl;
use kagent_tests::pebble::Pebble;
use kagent_tests::*;

fn out_text(o: &std::process::Output) -> String {
    format!(
        "{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_brings_up_keycloak_then_kheops_across_two_vms_and_verifies_from_kheops() {
    let keycloak_image = tokio::task::spawn_blocking(images::keycloak_image)
        .await
        .expect("keycloak image");
    let openssl_image = docker::openssl_image();
    let pki = Pki::new();
    let vms = Vm::start_many(&pki, &["kc", "kh"]);
    let (kc, kh) = (&vms[0], &vms[1]);
    let gateway = IpAddr::V4(kagent_tests::vm::GATEWAY);
    let pebble = Pebble::builder().on_address(gateway, 80).started();
    for vm in [kc, kh] {
        pebble.add_a(vm.dns_name(), IpAddr::V4(vm.ip()));
    }
    let t0 = std::time::Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| kc.load_image(keycloak_image));
        s.spawn(|| kh.load_image(openssl_image));
    });
    eprintln!(
        "images loaded into the VMs in {:.1}s",
        t0.elapsed().as_secs_f64()
    );

    // What trusts what: the agents trust pebble's listener CA for ACME; the Keycloak VM's
    // agent (Admin API) and the KHEOPS VM's agent (checks) trust pebble's root, which signed
    // Keycloak's certificate.
    let root = pebble.root_pem();
    let kc_root = kc.agent.root.join("pebble-root.pem");
    let kh_root = kh.agent.root.join("pebble-root.pem");
    std::fs::write(&kc_root, &root).expect("write root");
    std::fs::write(&kh_root, &root).expect("write root");
    let stand_in = workspace_root().join("tests/stacks/kheops-standin.toml");
    let kc_host = format!("{}:{}", kc.dns_name(), kagent_tests::vm::AGENT_PORT);
    let kh_host = format!("{}:{}", kh.dns_name(), kagent_tests::vm::AGENT_PORT);
    let dir_url = pebble.directory_url();
    let tls_ca = pebble.tls_ca.display().to_string();
    let args: Vec<String> = [
        "provision",
        &kc_host,
        &kh_host,
        "--keycloak-domain",
        kc.dns_name(),
        "--kheops-domain",
        kh.dns_name(),
        "--acme-contact",
        "ops@example.org",
        "--acme-directory",
        &dir_url,
        "--keycloak-var",
        &format!("root={}", kc.agent.root.display()),
        "--keycloak-var",
        &format!("keycloak_version={}", keycloak::version()),
        "--keycloak-var",
        &format!("acme_ca_bundle={tls_ca}"),
        "--keycloak-var",
        &format!("keycloak_ca_file={}", kc_root.display()),
        "--kheops-stack",
        stand_in.to_str().expect("utf-8"),
        "--kheops-var",
        &format!("root={}", kh.agent.root.display()),
        "--kheops-var",
        &format!("acme_ca_bundle={tls_ca}"),
        "--keycloak-ca-file",
        kh_root.to_str().expect("utf-8"),
        "--wait",
        "420",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let kctl = Kctl::admin(&pki);

    // The plan first: nothing changes on either VM.
    let plan = tokio::task::block_in_place(|| kctl.run(&[&argv[..], &["--dry-run"]].concat()));
    let text = out_text(&plan);
    assert!(plan.status.success(), "dry run: {text}");
    assert!(text.contains("placeholder"), "{text}");
    assert!(
        kc.docker_ok(&["ps", "-aq"]).is_empty(),
        "a dry run started containers"
    );

    let t0 = std::time::Instant::now();
    let run = tokio::task::block_in_place(|| kctl.run(&argv));
    let text = out_text(&run);
    eprintln!("provision took {:.1}s", t0.elapsed().as_secs_f64());
    assert!(
        run.status.success(),
        "provision failed: {text}\n--- Keycloak log ---\n{}",
        kc.docker(&["logs", "--tail", "60", "keycloak"])
            .stdout
            .iter()
            .map(|b| *b as char)
            .collect::<String>()
    );
    for step in [
        "[1/6] preflight",
        "[2/6] Keycloak host",
        "[3/6] wait until Keycloak is usable from",
        "[4/6] client secret from",
        "[5/6] KHEOPS host",
        "[6/6] verify from",
        "7 checks passed",
        "provisioned: Keycloak on",
    ] {
        assert!(text.contains(step), "missing {step:?} in:\n{text}");
    }
    // The secret never shows, and the KHEOPS VM holds exactly Keycloak's value.
    let kc_secret = std::fs::read_to_string(kc.agent.root.join("keycloak/kheops-auth-secret"))
        .expect("Keycloak side secret");
    let kh_secret = std::fs::read_to_string(
        kh.agent
            .root
            .join("kheops/secrets/kheops_keycloak_clientsecret"),
    )
    .expect("KHEOPS side secret");
    assert_eq!(kc_secret.trim(), kh_secret.trim());
    assert!(!text.contains(kc_secret.trim()), "the secret was printed");
    // KHEOPS' 443 serves the certificate pebble issued for its domain.
    let served = kh.exec(&[
        "curl",
        "-sS",
        "--cacert",
        kh_root.to_str().expect("utf-8"),
        &format!("https://{}/", kh.dns_name()),
    ]);
    assert!(served.status.success(), "{}", out_text(&served));

    // Re-running converges: every resource unchanged, the checks pass again; this run also
    // records the install in the inventory.
    let inventory = kctl.config_dir().join("inventory.toml");
    let inv = inventory.to_str().expect("utf-8");
    let again = tokio::task::block_in_place(|| {
        kctl.run(&[&argv[..], &["--save-install", "lab", "--inventory", inv]].concat())
    });
    let text = out_text(&again);
    assert!(again.status.success(), "second provision: {text}");
    assert!(text.contains("7 checks passed"), "{text}");
    assert!(
        !text.contains("plan  create") && !text.contains("plan  update"),
        "a second run changed something:\n{text}"
    );
    let saved = std::fs::read_to_string(&inventory).expect("the inventory was written");
    assert!(saved.contains("[install.lab]"), "{saved}");
    assert!(
        saved.contains(kc.dns_name()) && saved.contains(kh.dns_name()),
        "{saved}"
    );
    assert!(
        !saved.contains(kc_secret.trim()),
        "the inventory holds the secret"
    );

    // The fleet view of the new install: both hosts answer, certificates far from expiry,
    // containers healthy, last operations succeeded.
    let status = tokio::task::block_in_place(|| {
        kctl.run(&["fleet", "status", "--inventory", inv, "-o", "json"])
    });
    let text = out_text(&status);
    assert!(status.status.success(), "fleet status: {text}");
    let doc: serde_json::Value =
        serde_json::from_slice(&status.stdout).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(doc["ok"], true, "{doc:#}");
    assert_eq!(doc["hosts"].as_array().map(Vec::len), Some(2), "{doc:#}");

    // And the inventory alone is enough to plan it again.
    let from_inventory = tokio::task::block_in_place(|| {
        kctl.run(&[
            "provision",
            "--install",
            "lab",
            "--inventory",
            inv,
            "--dry-run",
        ])
    });
    let text = out_text(&from_inventory);
    assert!(
        from_inventory.status.success(),
        "provision --install: {text}"
    );
    assert!(
        !text.contains("plan  create") && !text.contains("plan  update"),
        "the inventory's install differs from what was provisioned:\n{text}"
    );
}
