//! `kctl fleet status` for real: two simulated VMs (tests/harness/vm.rs), an inventory with two
//! installs (`one` = VM a + VM b; `two` = VM b + an address where nothing listens), containers
//! applied on VM a through its agent, and the real kctl binary reading the inventory. Rows,
//! values (agent and Docker versions from the VMs, container counts, the last operation), the
//! unreachable host as a row with its error and hint, and the exit codes.

use std::process::Output;
use std::time::Instant;

use kagent_proto::v1::{self, FactsRequest, OperationState};
use kagent_tests::docker::*;
use kagent_tests::kctl_cli::Kctl;
use kagent_tests::vm::AGENT_PORT;
use kagent_tests::*;

fn text(o: &Output) -> String {
    format!(
        "{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A healthy busybox httpd (HTTP health check on the VM's address) and a sleeper without a
/// health check.
fn two_containers(vm: &Vm) -> v1::HostSpec {
    let ip = vm.ip().to_string();
    let mut web = sh_container(
        "fleet",
        "mkdir -p /tmp/www && echo ok > /tmp/www/index.html && exec httpd -f -p 80 -h /tmp/www",
    );
    web.ports = vec![v1::PortBinding {
        host_ip: ip.clone(),
        host_port: 8080,
        container_port: 80,
        protocol: String::new(),
    }];
    web.health = Some(v1::HealthCheck {
        http: format!("http://{ip}:8080/"),
        interval_ms: 200,
        timeout_s: 30,
        ..Default::default()
    });
    let sleeper = sh_container("fleet", "exec sleep 600");
    host_spec(vec![
        container_res("kt-fleet-web", web),
        container_res("kt-fleet-sleep", sleeper),
    ])
}

/// The row of `install`/`role` in the human table, split on blanks.
fn row<'a>(table: &'a str, install: &str, role: &str) -> Vec<&'a str> {
    table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.len() > 2 && cells[0] == install && cells[1] == role)
        .unwrap_or_else(|| panic!("no row {install} {role} in:\n{table}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn fleet_status_shows_every_host_and_an_unreachable_one_is_a_row_that_fails_the_run() {
    let t0 = Instant::now();
    let pki = Pki::new();
    let vms = tokio::task::block_in_place(|| Vm::start_many(&pki, &["fleet-a", "fleet-b"]));
    let (a, b) = (&vms[0], &vms[1]);
    eprintln!("VMs up in {:?}", t0.elapsed());

    // Containers on A, through its agent's Apply.
    let mut client = admin(&pki, &a.agent).await;
    let events = apply_events(&mut client, two_containers(a)).await;
    let f = finished(&events);
    assert_eq!(
        state(&f),
        OperationState::Succeeded,
        "apply on A: {} {:?}",
        f.error,
        failed(&events)
    );
    let agent_version = client
        .facts(FactsRequest {})
        .await
        .expect("Facts")
        .into_inner()
        .agent_version;
    assert!(!agent_version.is_empty());
    let docker_a = a.docker_ok(&["version", "--format", "{{.Server.Version}}"]);
    let docker_b = b.docker_ok(&["version", "--format", "{{.Server.Version}}"]);

    // Nothing listens on this port (bound, then closed).
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let host_a = format!("{}:{AGENT_PORT}", a.dns_name());
    let host_b = format!("{}:{AGENT_PORT}", b.dns_name());
    let kctl = Kctl::admin(&pki);
    let inventory = kctl.config_dir().join("fleet-inventory.toml");
    std::fs::write(
        &inventory,
        format!(
            "# two installs\n\
             [install.one]\n\
             keycloak_host = \"{host_a}\"\n\
             kheops_host = \"{host_b}\"\n\
             keycloak_domain = \"kc.one.test\"\n\
             kheops_domain = \"kh.one.test\"\n\
             \n\
             [install.two]\n\
             keycloak_host = \"{host_b}\"\n\
             kheops_host = \"{dead}\"\n\
             keycloak_domain = \"kc.two.test\"\n\
             kheops_domain = \"kh.two.test\"\n"
        ),
    )
    .expect("write the inventory");
    let inv = inventory.to_str().expect("utf-8");

    // Every install: four rows, exit code 1 because of the unreachable host.
    let t1 = Instant::now();
    let all = tokio::task::block_in_place(|| kctl.run(&["--inventory", inv, "fleet", "status"]));
    eprintln!("fleet status took {:?}", t1.elapsed());
    let out = text(&all);
    assert_eq!(all.status.code(), Some(1), "{out}");
    let table = String::from_utf8_lossy(&all.stdout).into_owned();
    eprintln!("{table}");
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "INSTALL",
            "ROLE",
            "HOST",
            "AGENT",
            "OS",
            "DOCKER",
            "CERT",
            "CONTAINERS",
            "LAST-OP",
            "PROBLEMS"
        ],
        "{out}"
    );
    let one_kc = row(&table, "one", "keycloak");
    assert_eq!(
        &one_kc[2..4],
        [host_a.as_str(), agent_version.as_str()],
        "{out}"
    );
    assert!(one_kc.contains(&docker_a.as_str()), "{out}");
    assert!(
        one_kc.contains(&"2/2"),
        "two healthy containers on A: {out}"
    );
    assert!(
        one_kc.contains(&"succeeded"),
        "A's apply is its last operation: {out}"
    );
    let one_kh = row(&table, "one", "kheops");
    assert_eq!(
        &one_kh[2..4],
        [host_b.as_str(), agent_version.as_str()],
        "{out}"
    );
    assert!(one_kh.contains(&docker_b.as_str()), "{out}");
    let two_kc = row(&table, "two", "keycloak");
    assert_eq!(two_kc[2], host_b, "{out}");
    let two_kh = row(&table, "two", "kheops");
    assert_eq!(&two_kh[2..4], [dead.to_string().as_str(), "error"], "{out}");
    let two_kh_line = table
        .lines()
        .find(|l| l.starts_with("two ") && l.contains(&dead.to_string()))
        .unwrap_or_default();
    assert!(two_kh_line.contains("cannot connect to"), "{out}");
    // Explained below the table, as kctl explains errors elsewhere.
    assert!(
        table.contains(&format!("two kheops {dead}: cannot connect to {dead}")),
        "{out}"
    );
    assert!(
        table.contains(&format!(
            "  hint: is kagent running and listening on {dead}?"
        )),
        "{out}"
    );
    assert!(table.contains("3 of 4 hosts ok, 1 failing"), "{out}");

    // The same as JSON.
    let json = tokio::task::block_in_place(|| {
        kctl.run(&["--inventory", inv, "fleet", "status", "-o", "json"])
    });
    assert_eq!(json.status.code(), Some(1), "{}", text(&json));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&json)));
    assert_eq!(v["ok"], false);
    let hosts = v["hosts"].as_array().expect("hosts");
    assert_eq!(hosts.len(), 4, "{v:#}");
    let host = |install: &str, role: &str| {
        hosts
            .iter()
            .find(|h| h["install"] == install && h["role"] == role)
            .unwrap_or_else(|| panic!("no {install}/{role} in {v:#}"))
    };
    let h = host("one", "keycloak");
    assert_eq!(h["ok"], true, "{h:#}");
    assert_eq!(h["host"], host_a);
    assert_eq!(h["facts"]["agent_version"], agent_version.as_str());
    assert_eq!(h["facts"]["docker"]["version"], docker_a.as_str());
    assert_eq!(h["containers"]["healthy"], 2, "{h:#}");
    assert_eq!(h["containers"]["total"], 2, "{h:#}");
    assert_eq!(h["last_operation"]["state"], "succeeded", "{h:#}");
    assert_eq!(h["certificates"]["count"], 0, "{h:#}");
    let h = host("one", "kheops");
    assert_eq!(h["ok"], true, "{h:#}");
    assert_eq!(h["containers"]["total"], 0, "{h:#}");
    assert_eq!(h["last_operation"], serde_json::Value::Null, "{h:#}");
    assert_eq!(h["facts"]["docker"]["version"], docker_b.as_str());
    let h = host("two", "kheops");
    assert_eq!(h["ok"], false, "{h:#}");
    assert_eq!(h["facts"], serde_json::Value::Null);
    assert_eq!(h["errors"][0]["call"], "connect", "{h:#}");
    let message = h["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("cannot connect to {dead}")),
        "{h:#}"
    );
    assert!(
        h["errors"][0]["hint"]
            .as_str()
            .is_some_and(|s| s.contains("is kagent running")),
        "{h:#}"
    );

    // Only install one: every host answers, nothing fails.
    let one = tokio::task::block_in_place(|| {
        kctl.run(&["--inventory", inv, "fleet", "status", "--install", "one"])
    });
    let out = text(&one);
    assert_eq!(one.status.code(), Some(0), "{out}");
    assert!(!out.contains("\ntwo "), "{out}");
    assert!(out.contains("2 of 2 hosts ok\n"), "{out}");

    // An install the inventory does not have: a usage error naming the known ones.
    let nope = tokio::task::block_in_place(|| {
        kctl.run(&["--inventory", inv, "fleet", "status", "--install", "nope"])
    });
    let out = text(&nope);
    assert_eq!(nope.status.code(), Some(2), "{out}");
    assert!(
        out.contains("no install `nope`") && out.contains("known installs: one, two"),
        "{out}"
    );
    // So does provision --install, before anything is sent.
    let prov = tokio::task::block_in_place(|| {
        kctl.run(&["--inventory", inv, "provision", "--install", "nope"])
    });
    assert_eq!(prov.status.code(), Some(2), "{}", text(&prov));

    drop(client);
    tokio::task::block_in_place(|| drop(vms));
    eprintln!("whole test {:?}", t0.elapsed());
}
