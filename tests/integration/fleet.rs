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

    let kctl = Kctl::admin(&pki);
    let (inventory, dead) = two_installs(&kctl, "fleet-inventory.toml", a, b);
    let host_a = format!("{}:{AGENT_PORT}", a.dns_name());
    let host_b = format!("{}:{AGENT_PORT}", b.dns_name());
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

/// A self-signed certificate for the VM's name: issued by the agent itself, no ACME.
fn self_signed(vm: &Vm) -> v1::HostSpec {
    host_spec(vec![v1::Resource {
        name: "fleet-tls".into(),
        kind: Some(v1::resource::Kind::Certificate(v1::Certificate {
            domains: vec![vm.dns_name().to_string()],
            issuer: Some(v1::certificate::Issuer::SelfSigned(v1::SelfSignedIssuer {
                days: 30,
            })),
            ..Default::default()
        })),
    }])
}

async fn serial(client: &mut v1::agent_client::AgentClient<tonic::transport::Channel>) -> String {
    let certs = client
        .list_certificates(v1::ListCertificatesRequest {})
        .await
        .expect("ListCertificates")
        .into_inner()
        .certificates;
    assert_eq!(certs.len(), 1, "{certs:#?}");
    assert!(!certs[0].serial.is_empty(), "{certs:#?}");
    certs[0].serial.clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn fleet_renew_renews_every_host_once_and_an_unreachable_host_is_a_failed_row() {
    let t0 = Instant::now();
    let pki = Pki::new();
    let vms = tokio::task::block_in_place(|| Vm::start_many(&pki, &["renew-a", "renew-b"]));
    let (a, b) = (&vms[0], &vms[1]);
    let mut ca = admin(&pki, &a.agent).await;
    let mut cb = admin(&pki, &b.agent).await;
    for (vm, c) in [(a, &mut ca), (b, &mut cb)] {
        let events = apply_events(c, self_signed(vm)).await;
        let f = finished(&events);
        assert_eq!(
            state(&f),
            OperationState::Succeeded,
            "{} {:?}",
            f.error,
            failed(&events)
        );
    }
    let (serial_a, serial_b) = (serial(&mut ca).await, serial(&mut cb).await);

    let kctl = Kctl::admin(&pki);
    let (inventory, dead) = two_installs(&kctl, "renew-inventory.toml", a, b);
    let host_a = format!("{}:{AGENT_PORT}", a.dns_name());
    let host_b = format!("{}:{AGENT_PORT}", b.dns_name());
    let inv = inventory.to_str().expect("utf-8");

    let t1 = Instant::now();
    let out = tokio::task::block_in_place(|| {
        kctl.run(&[
            "--inventory",
            inv,
            "fleet",
            "renew",
            "--force",
            "--concurrency",
            "2",
        ])
    });
    eprintln!("fleet renew --force took {:?}", t1.elapsed());
    let all = text(&out);
    eprintln!("{all}");
    assert_eq!(
        out.status.code(),
        Some(1),
        "the dead host fails the run: {all}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    // Events prefixed by host, while they come.
    assert!(stdout.contains(&format!("{host_a} | ")), "{all}");
    assert!(stdout.contains(&format!("{host_b} | ")), "{all}");
    let row = |host: &str| -> Vec<String> {
        stdout
            .lines()
            .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
            // Not the event lines (`HOST | ...`).
            .find(|c| c.len() >= 6 && c[0] == host && c[1] != "|")
            .unwrap_or_else(|| panic!("no row for {host}: {all}"))
    };
    // HOST INSTALLS RESULT RENEWED UNCHANGED FAILED OPERATION; B once, for both installs.
    assert_eq!(
        row(&host_a)[1..6],
        ["one", "succeeded", "1", "0", "0"],
        "{all}"
    );
    assert_eq!(
        row(&host_b)[1..6],
        ["one,two", "succeeded", "1", "0", "0"],
        "{all}"
    );
    assert_eq!(row(&dead.to_string())[1..3], ["two", "error"], "{all}");
    assert!(
        stdout.contains(&format!("{dead}: cannot connect to {dead}")),
        "the error below the table: {all}"
    );
    assert!(stdout.contains("2 of 3 hosts renewed, 1 failed"), "{all}");
    let (new_a, new_b) = (serial(&mut ca).await, serial(&mut cb).await);
    assert_ne!(new_a, serial_a, "A renewed");
    assert_ne!(new_b, serial_b, "B renewed");

    // Without --force and only install one: nothing is due, both unchanged, exit 0; JSON.
    let out = tokio::task::block_in_place(|| {
        kctl.run(&[
            "--inventory",
            inv,
            "fleet",
            "renew",
            "--install",
            "one",
            "-o",
            "json",
        ])
    });
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let last = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    let v: serde_json::Value =
        serde_json::from_str(&last).unwrap_or_else(|e| panic!("not JSON ({e}): {all}"));
    assert_eq!(v["type"], "summary", "{v:#}");
    assert_eq!(v["ok"], true, "{v:#}");
    let hosts = v["hosts"].as_array().expect("hosts");
    assert_eq!(hosts.len(), 2, "{v:#}");
    for h in hosts {
        assert_eq!(h["certificates"]["renewed"], 0, "{h:#}");
        assert_eq!(h["certificates"]["unchanged"], 1, "{h:#}");
    }
    assert_eq!(serial(&mut ca).await, new_a, "not due: not renewed");

    drop((ca, cb));
    tokio::task::block_in_place(|| drop(vms));
    eprintln!("whole test {:?}", t0.elapsed());
}

/// The rollout records of `kctl`'s config dir.
fn rollouts(kctl: &Kctl) -> Vec<serde_json::Value> {
    let dir = kctl.config_dir().join("rollouts");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    paths.sort();
    paths
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).expect("read the record");
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}: {text}", p.display()))
        })
        .collect()
}

fn install_states(record: &serde_json::Value) -> Vec<(String, String, u64)> {
    record["installs"]
        .as_array()
        .expect("installs")
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap_or_default().to_string(),
                i["state"].as_str().unwrap_or_default().to_string(),
                i["attempts"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn fleet_upgrade_stops_at_the_first_failed_install_records_it_and_resumes_it() {
    let t0 = Instant::now();
    let pki = Pki::new();
    let kctl = Kctl::admin(&pki);
    // Nothing listens on these ports: every install fails at preflight.
    let dead: Vec<std::net::SocketAddr> = (0..2)
        .map(|_| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        })
        .collect();
    let inventory = kctl.config_dir().join("upgrade-inventory.toml");
    let original = format!(
        "[install.alpha]\nkeycloak_host = \"{}\"\nkheops_host = \"{}\"\n\
         keycloak_domain = \"kc.alpha.test\"\nkheops_domain = \"kh.alpha.test\"\n\
         acme_contact = \"ops@alpha.test\"\n\n\
         [install.beta]\nkeycloak_host = \"{}\"\nkheops_host = \"{}\"\n\
         keycloak_domain = \"kc.beta.test\"\nkheops_domain = \"kh.beta.test\"\n\
         acme_contact = \"ops@beta.test\"\n",
        dead[0], dead[1], dead[1], dead[0]
    );
    std::fs::write(&inventory, &original).expect("write the inventory");
    let inv = inventory.to_str().expect("utf-8");
    let upgrade = |extra: &[&str]| {
        let mut args = vec!["--inventory", inv, "fleet", "upgrade"];
        args.extend_from_slice(extra);
        kctl.run(&args)
    };
    let var = ["--keycloak-var", "keycloak_version=26.5.6"];

    // An unknown variable: refused before anything is sent or recorded.
    let out = upgrade(&["--keycloak-var", "no_such_var=1"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("no_such_var"), "{}", text(&out));
    assert!(rollouts(&kctl).is_empty());

    // A dry run plans both (both fail to connect), records nothing.
    let out = upgrade(&[&var[..], &["--dry-run"]].concat());
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("=== install alpha (dry run)"), "{all}");
    assert!(all.contains("=== install beta (dry run)"), "{all}");
    assert!(all.contains("2 failed to plan: alpha, beta"), "{all}");
    assert!(rollouts(&kctl).is_empty(), "a dry run records nothing");

    // The rollout: alpha fails at preflight, beta is not started.
    let out = upgrade(&var);
    let all = text(&out);
    eprintln!("{all}");
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("=== install alpha ==="), "{all}");
    assert!(
        !all.contains("=== install beta"),
        "beta must not start: {all}"
    );
    assert!(
        all.contains(&format!("cannot connect to {}", dead[0])),
        "{all}"
    );
    assert!(
        all.contains("stopped: alpha failed; not started: beta"),
        "{all}"
    );
    assert!(
        all.contains("kctl fleet upgrade --keycloak-var keycloak_version=26.5.6 --resume"),
        "{all}"
    );
    let records = rollouts(&kctl);
    assert_eq!(records.len(), 1, "{records:#?}");
    let r = &records[0];
    assert_eq!(
        install_states(r),
        [
            ("alpha".into(), "failed".into(), 1),
            ("beta".into(), "pending".into(), 0)
        ]
    );
    assert_eq!(
        r["overrides"]["keycloak_vars"]["keycloak_version"],
        "26.5.6"
    );
    assert!(
        r["installs"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot connect")),
        "{r:#}"
    );
    let id = r["id"].as_str().expect("id").to_string();
    assert_eq!(
        std::fs::read_to_string(&inventory).expect("inventory"),
        original,
        "nothing succeeded: the inventory is unchanged"
    );

    // --resume with other variables finds nothing to resume.
    let out = upgrade(&["--keycloak-var", "keycloak_version=26.0.0", "--resume"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("no unfinished rollout"),
        "{}",
        text(&out)
    );

    // --resume with the same variables retries alpha in the same record.
    let out = upgrade(&[&var[..], &["--resume"]].concat());
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains(&format!("resuming rollout {id}")), "{all}");
    let records = rollouts(&kctl);
    assert_eq!(records.len(), 1, "the same record: {records:#?}");
    assert_eq!(records[0]["id"], id.as_str());
    assert_eq!(
        install_states(&records[0]),
        [
            ("alpha".into(), "failed".into(), 2),
            ("beta".into(), "pending".into(), 0)
        ]
    );

    // A corrupt record is named, not skipped.
    let path = kctl
        .config_dir()
        .join("rollouts")
        .join(format!("{id}.json"));
    std::fs::write(&path, "{ not json").expect("corrupt the record");
    let out = upgrade(&[&var[..], &["--resume"]].concat());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("{} is corrupt", path.display())),
        "{}",
        text(&out)
    );
    eprintln!("whole test {:?}", t0.elapsed());
}

/// An inventory of two installs: `one` = (a, b), `two` = (b, a port where nothing listens).
/// Returns its path and that dead address.
fn two_installs(
    kctl: &Kctl,
    file: &str,
    a: &Vm,
    b: &Vm,
) -> (std::path::PathBuf, std::net::SocketAddr) {
    // Nothing listens on this port (bound, then closed).
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let host_a = format!("{}:{AGENT_PORT}", a.dns_name());
    let host_b = format!("{}:{AGENT_PORT}", b.dns_name());
    let inventory = kctl.config_dir().join(file);
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
    (inventory, dead)
}
