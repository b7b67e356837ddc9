//! Containers, networks and volumes against the real dockerd (the one `tests/run` starts),
//! with images built locally from busybox-static. Each test names its objects with its own
//! prefix and removes them when it ends, so the tests run in parallel.

use std::time::{Duration, Instant};

use kagent_proto::v1::{
    self, Action, ContainerLogsRequest, ContainerStatusRequest, OperationState,
    RestartContainerRequest, mount::Source,
};
use kagent_tests::docker::*;
use kagent_tests::*;

/// A started agent, its PKI and an admin client.
async fn agent() -> (
    Pki,
    Agent,
    kagent_proto::v1::agent_client::AgentClient<tonic::transport::Channel>,
) {
    require_docker();
    busybox_image();
    let pki = Pki::new();
    let agent = Agent::start_new(&pki);
    let client = admin(&pki, &agent).await;
    (pki, agent, client)
}

fn error_of(events: &[v1::Event]) -> String {
    let f = finished(events);
    let failed: Vec<String> = failed(events)
        .into_iter()
        .map(|f| format!("{} (hint: {})", f.error, f.hint))
        .collect();
    format!("{} | {}", f.error, failed.join(" | "))
}

fn assert_succeeded(events: &[v1::Event]) {
    let f = finished(events);
    assert_eq!(
        state(&f),
        OperationState::Succeeded,
        "operation failed: {}\nevents: {events:#?}",
        error_of(events)
    );
}

/// The stack of the issue: a network, a volume, a bind-mounted secret, a port on 127.0.0.1 and
/// a health-gated dependency. Then: re-apply is unchanged with the same ids; one env change
/// recreates exactly that container; volume data survives the recreate and a prune without
/// purge; purge deletes it.
#[tokio::test(flavor = "multi_thread")]
async fn a_stack_comes_up_converges_and_keeps_its_data() {
    let (_pki, agent, mut client) = agent().await;
    let n = Names::new("stack");
    let _cleanup = n.cleanup();
    let stack = n.name("s");
    let (net, vol, db, web) = (n.name("net"), n.name("data"), n.name("db"), n.name("web"));
    let (db_port, web_port) = (free_port(), free_port());
    let secret_path = agent.root.join("secrets/web-token");

    let spec = |web_env: &str, with_web: bool, stack_res_: Option<v1::Resource>| {
        let mut db_c = sh_container(&stack, "exec httpd -f -p 80 -h /www");
        db_c.ports = vec![port(db_port, 80)];
        db_c.networks = vec![v1::NetworkAttachment {
            name: net.clone(),
            aliases: vec!["database".into()],
        }];
        db_c.mounts = vec![mount(Source::Volume(vol.clone()), "/data")];
        db_c.health = Some(v1::HealthCheck {
            http: format!("http://127.0.0.1:{db_port}/"),
            interval_ms: 200,
            timeout_s: 20,
            ..Default::default()
        });
        // web waits for db, reads the secret, and reaches db by its alias on the network.
        let mut web_c = sh_container(
            &stack,
            "echo \"token: $(wc -c < /run/secrets/token) bytes, MODE=$MODE\"; \
             exec httpd -f -p 8080 -h /www",
        );
        web_c.env = vec![env("MODE", web_env)];
        web_c.ports = vec![port(web_port, 8080)];
        web_c.networks = vec![v1::NetworkAttachment {
            name: net.clone(),
            aliases: vec![],
        }];
        web_c.mounts = vec![
            mount(Source::Secret("web-token".into()), "/run/secrets/token"),
            mount(Source::Volume(vol.clone()), "/data"),
        ];
        web_c.after = vec![db.clone()];
        web_c.health = Some(v1::HealthCheck {
            command: vec![
                "wget".into(),
                "-q".into(),
                "-O-".into(),
                "http://database/".into(),
            ],
            interval_ms: 300,
            timeout_s: 30,
            ..Default::default()
        });
        let mut r = vec![
            secret("web-token", &secret_path, 32, v1::Alphabet::Alphanumeric),
            network_res(&net, &stack),
            volume_res(&vol, &stack),
            container_res(&db, db_c),
        ];
        if with_web {
            r.push(container_res(&web, web_c));
        }
        r.extend(stack_res_);
        host_spec(r)
    };

    // Cold apply: everything is created, in order, and healthy.
    let events = apply_events(&mut client, spec("one", true, None)).await;
    assert_succeeded(&events);
    let created: Vec<_> = planned_actions(&events)
        .into_iter()
        .map(|(_, a)| a)
        .collect();
    assert_eq!(created, vec![Action::Create; 5], "{events:#?}");
    assert_eq!(
        inspect(&web, "{{.State.Health.Status}}").as_deref(),
        Some("healthy")
    );
    let page = http_get(db_port, "/").unwrap_or_default();
    assert!(
        page.contains("hello from busybox"),
        "db on 127.0.0.1:{db_port}: {page:?}"
    );
    assert_eq!(
        inspect(
            &db,
            "{{(index (index .HostConfig.PortBindings \"80/tcp\") 0).HostIp}}"
        )
        .as_deref(),
        Some("127.0.0.1"),
        "the port is published on the chosen address only"
    );
    // The secret is mounted read-only and holds the host file's bytes.
    let host_secret = std::fs::read_to_string(&secret_path).expect("secret on the host");
    assert_eq!(
        docker_ok(&["exec", &web, "cat", "/run/secrets/token"]),
        host_secret.trim()
    );
    let write = docker(&["exec", &web, "sh", "-c", "echo x > /run/secrets/token"]);
    assert!(
        !write.status.success(),
        "the secret mount must be read-only"
    );
    // Labels on everything.
    for obj in [&db, &web, &net, &vol] {
        assert_eq!(
            inspect(obj, "{{index .Labels \"io.kctl.managed-by\"}}")
                .or_else(|| inspect(obj, "{{index .Config.Labels \"io.kctl.managed-by\"}}"))
                .as_deref(),
            Some("kagent"),
            "{obj}"
        );
    }
    assert_eq!(
        inspect(&web, "{{index .Config.Labels \"io.kctl.stack\"}}").as_deref(),
        Some(stack.as_str())
    );
    let ids = (container_id(&db), container_id(&web));

    // Re-apply: unchanged, same ids.
    let events = apply_events(&mut client, spec("one", true, None)).await;
    assert_succeeded(&events);
    assert!(
        planned_actions(&events)
            .iter()
            .all(|(_, a)| *a == Action::Unchanged),
        "{:?}",
        planned_actions(&events)
    );
    assert_eq!((container_id(&db), container_id(&web)), ids);

    // Data written to the volume, then one env change: only web is recreated.
    docker_ok(&["exec", &web, "sh", "-c", "echo keep-me > /data/f"]);
    let events = apply_events(&mut client, spec("two", true, None)).await;
    assert_succeeded(&events);
    let changed: Vec<_> = planned_actions(&events)
        .into_iter()
        .filter(|(_, a)| *a != Action::Unchanged)
        .collect();
    assert_eq!(changed, vec![(web.clone(), Action::Update)]);
    let plan = planned(&events)
        .into_iter()
        .find(|p| p.resource.as_ref().is_some_and(|r| r.name == web))
        .map(|p| p.diff)
        .unwrap_or_default();
    assert!(plan.contains("~ env MODE: one -> two"), "{plan}");
    assert_eq!(container_id(&db), ids.0, "db is left alone");
    assert_ne!(container_id(&web), ids.1, "web is recreated");
    assert_eq!(docker_ok(&["exec", &web, "cat", "/data/f"]), "keep-me");

    // web leaves the spec; without prune it is only reported.
    let events = apply_events(
        &mut client,
        spec("two", false, Some(stack_res(&stack, false, &[]))),
    )
    .await;
    assert_succeeded(&events);
    let warnings: Vec<String> = planned(&events)
        .into_iter()
        .flat_map(|p| p.warnings)
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains(&web) && w.contains("prune")),
        "{warnings:?}"
    );
    assert!(container_id(&web).is_some(), "not removed without prune");

    // With prune (no purge): web is removed, the volume and its data stay.
    let events = apply_events(
        &mut client,
        spec("two", false, Some(stack_res(&stack, true, &[]))),
    )
    .await;
    assert_succeeded(&events);
    assert_eq!(
        planned_actions(&events).last().map(|(_, a)| *a),
        Some(Action::Delete)
    );
    assert!(container_id(&web).is_none(), "pruned");
    assert_eq!(docker_ok(&["exec", &db, "cat", "/data/f"]), "keep-me");

    // Purge: only when the volume is named and no longer declared.
    let mut only_net = spec("two", false, None);
    only_net.resources.retain(|r| r.name != vol && r.name != db);
    only_net.resources.push(stack_res(&stack, true, &[&vol]));
    let events = apply_events(&mut client, only_net).await;
    assert_succeeded(&events);
    assert!(container_id(&db).is_none());
    assert!(
        inspect(&vol, "{{.Name}}").is_none(),
        "purged volume is gone"
    );
    drop(agent);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_killed_by_hand_is_started_by_the_next_apply() {
    let (_pki, _agent, mut client) = agent().await;
    let n = Names::new("kill");
    let _cleanup = n.cleanup();
    let name = n.name("sleeper");
    let spec = host_spec(vec![container_res(
        &name,
        sh_container(&n.name("s"), "exec sleep 600"),
    )]);
    assert_succeeded(&apply_events(&mut client, spec.clone()).await);
    let id = container_id(&name);
    docker_ok(&["kill", &name]);
    assert_eq!(
        inspect(&name, "{{.State.Running}}").as_deref(),
        Some("false")
    );

    let plan = apply(&mut client, spec.clone(), true)
        .await
        .expect("dry run");
    let p = planned(&plan);
    assert_eq!(p.len(), 1);
    assert_eq!(
        p[0].action,
        Action::Update as i32,
        "drift shows in the plan"
    );
    assert!(p[0].diff.contains("exited"), "{}", p[0].diff);

    assert_succeeded(&apply_events(&mut client, spec.clone()).await);
    assert_eq!(
        inspect(&name, "{{.State.Running}}").as_deref(),
        Some("true")
    );
    assert_eq!(container_id(&name), id, "started again, not recreated");

    // Removed by hand: created again.
    docker_ok(&["rm", "-f", &name]);
    assert_succeeded(&apply_events(&mut client, spec).await);
    assert_eq!(
        inspect(&name, "{{.State.Running}}").as_deref(),
        Some("true")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hand_made_container_of_the_same_name_is_refused_and_left_alone() {
    let (_pki, _agent, mut client) = agent().await;
    let n = Names::new("foreign");
    let _cleanup = n.cleanup();
    let name = n.name("app");
    docker_ok(&[
        "run",
        "-d",
        "--init",
        "--name",
        &name,
        busybox_image(),
        "sleep",
        "600",
    ]);
    let id = container_id(&name);
    let spec = host_spec(vec![container_res(
        &name,
        sh_container("default", "exec sleep 600"),
    )]);
    let events = apply(&mut client, spec, false).await.expect("apply call");
    assert_eq!(state(&finished(&events)), OperationState::Failed);
    let err = error_of(&events);
    assert!(
        err.contains("not created by kagent") && err.contains(&name),
        "{err}"
    );
    assert!(
        err.contains("docker rm -f"),
        "the hint says what to do: {err}"
    );
    assert_eq!(container_id(&name), id, "never touched");
    assert_eq!(
        inspect(&name, "{{.State.Running}}").as_deref(),
        Some("true")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dependency_that_never_becomes_healthy_fails_after_its_timeout() {
    let (_pki, _agent, mut client) = agent().await;
    let n = Names::new("unhealthy");
    let _cleanup = n.cleanup();
    let (db, web) = (n.name("db"), n.name("web"));
    let mut db_c = sh_container("default", "exec sleep 600");
    db_c.health = Some(v1::HealthCheck {
        command: vec![
            "sh".into(),
            "-c".into(),
            "echo still-initialising; exit 1".into(),
        ],
        interval_ms: 200,
        timeout_s: 3,
        ..Default::default()
    });
    let mut web_c = sh_container("default", "exec sleep 600");
    web_c.after = vec![db.clone()];
    let t0 = Instant::now();
    let events = apply(
        &mut client,
        host_spec(vec![container_res(&db, db_c), container_res(&web, web_c)]),
        false,
    )
    .await
    .expect("apply call");
    let took = t0.elapsed();
    assert_eq!(state(&finished(&events)), OperationState::Failed);
    let err = error_of(&events);
    assert!(err.contains("did not become healthy within 3 s"), "{err}");
    assert!(
        err.contains("still-initialising"),
        "the last health output: {err}"
    );
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(30),
        "{took:?}"
    );
    assert!(
        container_id(&web).is_none(),
        "the dependent container is not started"
    );
    assert_eq!(finished(&events).counts.map(|c| c.skipped), Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_unpullable_image_fails_naming_the_image() {
    let (_pki, _agent, mut client) = agent().await;
    let n = Names::new("noimage");
    let _cleanup = n.cleanup();
    let image = format!("local/{}:1", n.name("absent"));
    let mut c = sh_container("default", "true");
    c.image = image.clone();
    let events = apply(
        &mut client,
        host_spec(vec![container_res(&n.name("c"), c)]),
        false,
    )
    .await
    .expect("apply call");
    assert_eq!(state(&finished(&events)), OperationState::Failed);
    let err = error_of(&events);
    assert!(
        err.contains(&format!(
            "image {image} is not present and cannot be pulled"
        )),
        "{err}"
    );
    assert!(
        err.contains("image_archive"),
        "the hint names the air-gapped way: {err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_archive_is_loaded_when_the_image_is_absent() {
    let (_pki, agent, mut client) = agent().await;
    let n = Names::new("archive");
    let _cleanup = n.cleanup();
    let tag = format!("local/{}:1", n.name("img"));
    docker_ok(&["tag", busybox_image(), &tag]);
    let _untag = scopeguard(|| {
        let _ = docker(&["rmi", "-f", &tag]);
    });
    let archive = agent.dir().join("image.tar");
    docker_ok(&["save", "-o", archive.to_str().expect("utf-8 path"), &tag]);
    docker_ok(&["rmi", &tag]);
    let mut c = sh_container("default", "exec sleep 600");
    c.image = tag.clone();
    c.image_archive = archive.to_string_lossy().into_owned();
    let events = apply_events(&mut client, host_spec(vec![container_res(&n.name("c"), c)])).await;
    assert_succeeded(&events);
    assert!(docker(&["image", "inspect", &tag]).status.success());
}

/// Runs `f` on drop.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct G<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for G<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    G(Some(f))
}

#[tokio::test(flavor = "multi_thread")]
async fn status_logs_and_restart_of_managed_containers() {
    let (pki, agent, mut client) = agent().await;
    let n = Names::new("logs");
    let _cleanup = n.cleanup();
    let name = n.name("talker");
    let stack = n.name("s");
    let c = sh_container(
        &stack,
        "i=0; while true; do echo line-$i; echo err-$i >&2; i=$((i+1)); sleep 0.2; done",
    );
    assert_succeeded(&apply_events(&mut client, host_spec(vec![container_res(&name, c)])).await);

    // Status: by stack and by name.
    let all = client
        .container_status(ContainerStatusRequest {
            name: String::new(),
            stack: stack.clone(),
        })
        .await
        .expect("ContainerStatus")
        .into_inner()
        .containers;
    assert_eq!(all.len(), 1, "{all:?}");
    let info = &all[0];
    assert_eq!(
        (info.name.as_str(), info.state.as_str()),
        (name.as_str(), "running")
    );
    assert_eq!(info.stack, stack);
    assert_eq!(info.resource, name);
    assert_eq!(info.spec_hash.len(), 64);
    assert!(info.started_at.is_some());
    assert_eq!(info.image, busybox_image());

    // Logs stream while the container writes: lines keep arriving after the call started.
    let mut stream = client
        .container_logs(ContainerLogsRequest {
            name: name.clone(),
            follow: true,
            tail: Some(1),
            since: None,
        })
        .await
        .expect("ContainerLogs")
        .into_inner();
    let t0 = Instant::now();
    let mut out = String::new();
    let mut err = String::new();
    while !(out.matches("line-").count() >= 4 && err.contains("err-")) {
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("a log chunk within 5 s")
            .expect("stream ok")
            .expect("stream still open");
        if chunk.stream == v1::LogStream::Stderr as i32 {
            err.push_str(&String::from_utf8_lossy(&chunk.data));
        } else {
            out.push_str(&String::from_utf8_lossy(&chunk.data));
        }
    }
    assert!(
        t0.elapsed() >= Duration::from_millis(400),
        "followed live: {out}"
    );
    drop(stream);

    // Restart: operator may, viewer may not (and both are audited).
    let viewer = pki.client("viewer-test", "viewer");
    let mut as_viewer = kagent_tests::client(&pki, &agent, Some(&viewer))
        .await
        .expect("viewer");
    let denied = as_viewer
        .restart_container(RestartContainerRequest {
            name: name.clone(),
            timeout_s: 1,
        })
        .await
        .expect_err("viewer cannot restart");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    let operator = pki.client("operator-test", "operator");
    let mut as_operator = kagent_tests::client(&pki, &agent, Some(&operator))
        .await
        .expect("op");
    let before = container_id(&name);
    let started_before = inspect(&name, "{{.State.StartedAt}}");
    let reply = as_operator
        .restart_container(RestartContainerRequest {
            name: name.clone(),
            timeout_s: 1,
        })
        .await
        .expect("operator restarts")
        .into_inner();
    assert_eq!(reply.container.map(|c| c.state).as_deref(), Some("running"));
    assert_eq!(container_id(&name), before, "same container");
    assert_ne!(
        inspect(&name, "{{.State.StartedAt}}"),
        started_before,
        "started again"
    );
    let audit = std::fs::read_to_string(agent.audit_log()).expect("audit log");
    let restarts: Vec<&str> = audit
        .lines()
        .filter(|l| l.contains("RestartContainer"))
        .collect();
    assert!(
        restarts
            .iter()
            .any(|l| l.contains("\"phase\":\"end\"") && l.contains("denied")),
        "{audit}"
    );
    assert!(
        restarts
            .iter()
            .any(|l| l.contains("\"phase\":\"end\"") && l.contains("\"result\":\"ok\"")),
        "{audit}"
    );

    // Someone else's container is not shown, streamed or restarted.
    let foreign = n.name("foreign");
    docker_ok(&[
        "run",
        "-d",
        "--init",
        "--name",
        &foreign,
        busybox_image(),
        "sleep",
        "600",
    ]);
    for status in [
        client
            .container_logs(ContainerLogsRequest {
                name: foreign.clone(),
                ..Default::default()
            })
            .await
            .err(),
        as_operator
            .restart_container(RestartContainerRequest {
                name: foreign.clone(),
                timeout_s: 1,
            })
            .await
            .err(),
    ] {
        assert_eq!(status.map(|s| s.code()), Some(tonic::Code::NotFound));
    }
    assert_eq!(inspect(&foreign, "{{.RestartCount}}").as_deref(), Some("0"));
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_container_specs_are_refused_before_anything_runs() {
    let (_pki, _agent, mut client) = agent().await;
    let n = Names::new("invalid");
    let _cleanup = n.cleanup();
    let mut c = sh_container("default", "true");
    c.mounts = vec![mount(Source::Volume(n.name("undeclared")), "/data")];
    let status = apply(
        &mut client,
        host_spec(vec![container_res(&n.name("c"), c)]),
        false,
    )
    .await
    .expect_err("invalid");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("field `mounts`") && status.message().contains("add a `volume`"),
        "{}",
        status.message()
    );
    assert!(container_id(&n.name("c")).is_none());
}

/// The real kctl: a TOML spec with a container, then `ps`, `logs` and `restart`.
#[tokio::test(flavor = "multi_thread")]
async fn kctl_applies_a_container_spec_and_shows_ps_logs_restart() {
    let (pki, agent, _client) = agent().await;
    let kctl = kagent_tests::kctl_cli::Kctl::admin(&pki);
    let n = Names::new("kctl");
    let _cleanup = n.cleanup();
    let name = n.name("hello");
    let port = free_port();
    let spec = kctl.config_dir().join("spec.toml");
    std::fs::write(
        &spec,
        format!(
            r#"
[[resource]]
kind = "container"
name = "{name}"
stack = "{stack}"
image = "{image}"
command = ["sh", "-c", "echo hello-from-kctl; exec httpd -f -p 80 -h /www"]
ports = ["127.0.0.1:{port}:80"]
health = {{ http = "http://127.0.0.1:{port}/", timeout_s = 20, interval_ms = 200 }}
stop_timeout_s = 2
"#,
            stack = n.name("s"),
            image = busybox_image(),
        ),
    )
    .expect("spec");
    let host = format!("localhost:{}", agent.addr.port());
    let run = |args: &[&str]| kctl.ok(args);
    run(&["apply", &host, "-f", spec.to_str().expect("utf-8")]);
    let ps: serde_json::Value =
        serde_json::from_str(&run(&["ps", &host, "-o", "json"])).expect("ps json");
    let row = ps["containers"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name.as_str()))
        .cloned()
        .unwrap_or_default();
    assert_eq!(row["state"], "running", "{ps}");
    assert_eq!(row["ports"][0], format!("127.0.0.1:{port}->80/tcp"));
    let table = run(&["ps", &host, "--stack", &n.name("s")]);
    assert!(
        table.starts_with("NAME") && table.contains(&name),
        "{table}"
    );
    assert!(run(&["logs", &host, &name, "--tail", "5"]).contains("hello-from-kctl"));
    assert!(run(&["restart", &host, &name]).contains(&format!("restarted {name}")));
}

/// Agent probes over TLS against a real TLS server: `openssl s_server -www` in a container
/// (image from the host's openssl), certificate for `tls.lab` from the test CA. An https status
/// probe and a handshake probe verified against `ca_file` gate the containers; a probe against
/// another CA fails the operation with the handshake error.
#[tokio::test(flavor = "multi_thread")]
async fn tls_and_https_probes_gate_on_a_real_tls_server() {
    let (pki, agent, mut client) = agent().await;
    let image = openssl_image();
    let n = Names::new("tlsprobe");
    let _cleanup = n.cleanup();
    let server = pki.agent_for("tls.lab");
    let certs = agent.dir().join("tls-certs");
    std::fs::create_dir_all(&certs).expect("mkdir");
    std::fs::copy(&server.cert, certs.join("cert.pem")).expect("copy cert");
    std::fs::copy(&server.key, certs.join("key.pem")).expect("copy key");
    let tls_port = free_port();
    let addr = format!("127.0.0.1:{tls_port}");
    let ca_file = pki.ca_cert.to_str().expect("utf-8").to_string();

    let mut tls_c = v1::Container {
        image: image.to_string(),
        command: [
            "s_server",
            "-accept",
            "8443",
            "-cert",
            "/certs/cert.pem",
            "-key",
            "/certs/key.pem",
            "-www",
        ]
        .map(String::from)
        .to_vec(),
        ports: vec![port(tls_port, 8443)],
        mounts: vec![v1::Mount {
            source: Some(Source::Bind(certs.to_str().expect("utf-8").into())),
            target: "/certs".into(),
            read_only: true,
        }],
        stop_timeout_s: 2,
        ..Default::default()
    };
    tls_c.health = Some(v1::HealthCheck {
        http: format!("https://{addr}/"),
        server_name: "tls.lab".into(),
        ca_file: ca_file.clone(),
        interval_ms: 200,
        timeout_s: 20,
        ..Default::default()
    });
    let (srv, web) = (n.name("srv"), n.name("web"));
    let mut web_c = sh_container("default", "exec sleep 600");
    web_c.after = vec![srv.clone()];
    web_c.health = Some(v1::HealthCheck {
        tls: addr.clone(),
        server_name: "tls.lab".into(),
        ca_file: ca_file.clone(),
        interval_ms: 200,
        timeout_s: 10,
        ..Default::default()
    });
    let events = apply(
        &mut client,
        host_spec(vec![
            container_res(&srv, tls_c.clone()),
            container_res(&web, web_c.clone()),
        ]),
        false,
    )
    .await
    .expect("apply call");
    assert_succeeded(&events);
    assert_eq!(inspect(&web, "{{.State.Running}}").as_deref(), Some("true"));

    // The same server checked against another CA: the handshake fails, the operation says so.
    let other = kctl::ca::Ca::generate("other", kctl::ca::Validity::days(1)).expect("CA");
    let other_ca = agent.dir().join("other-ca.pem");
    std::fs::write(&other_ca, other.cert_pem()).expect("write CA");
    let mut bad_c = sh_container("default", "exec sleep 600");
    bad_c.health = Some(v1::HealthCheck {
        tls: addr.clone(),
        server_name: "tls.lab".into(),
        ca_file: other_ca.to_str().expect("utf-8").into(),
        interval_ms: 200,
        timeout_s: 2,
        ..Default::default()
    });
    let events = apply(
        &mut client,
        host_spec(vec![
            container_res(&srv, tls_c),
            container_res(&web, web_c),
            container_res(&n.name("bad"), bad_c),
        ]),
        false,
    )
    .await
    .expect("apply call");
    assert_eq!(state(&finished(&events)), OperationState::Failed);
    let err = error_of(&events);
    assert!(
        err.contains("did not become healthy") && err.contains("invalid peer certificate"),
        "{err}"
    );
}
