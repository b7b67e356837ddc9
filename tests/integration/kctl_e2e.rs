//! kctl end to end: the real CLI makes the fleet CA and the agent's certificate, then applies a
//! spec file, lists operations and reads facts from the real agent over mTLS.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use kagent_tests::kctl_cli::Kctl;
use kagent_tests::*;
use kctl::ca::BundlePaths;
use serde_json::Value;

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line: {l:?}: {e}")))
        .collect()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().mode() & 0o7777
}

#[tokio::test]
async fn kctl_ca_apply_ops_facts() {
    let tmp = tempfile::tempdir().unwrap();
    let k = Kctl::fresh();

    // The fleet CA and the operator's identity.
    k.ok(&["ca", "init", "--client-name", "e2e-admin"]);
    let ca_cert = k.config_dir().join("ca/ca.crt");
    assert!(ca_cert.is_file(), "kctl ca init wrote no ca/ca.crt");
    assert_eq!(mode(&k.config_dir().join("ca/ca.key")), 0o600);
    let identity = BundlePaths::new(&k.config_dir().join("identity"), "client");
    assert!(identity.cert.is_file() && identity.key.is_file());
    assert_eq!(mode(&identity.key), 0o600);
    let again = k.run(&["ca", "init"]);
    assert!(
        !again.status.success(),
        "a second `ca init` must refuse to replace the CA"
    );

    // The agent's certificate, and the agent started with it.
    k.ok(&["ca", "issue", "agent", "localhost", "--ip", "127.0.0.1"]);
    let server = BundlePaths::new(&k.config_dir().join("agents/localhost"), "agent");
    assert!(server.cert.is_file() && server.key.is_file());
    let unused = Pki::new();
    let agent = Agent::builder(&unused)
        .server_cert(&server)
        .client_ca(&ca_cert)
        .start();
    let host = format!("localhost:{}", agent.addr.port());

    let motd = agent.root.join("etc/motd");
    let secret = agent.root.join("secrets/db");
    let spec_path = tmp.path().join("spec.toml");
    std::fs::write(
        &spec_path,
        format!(
            "[[resource]]\nkind = \"file\"\nname = \"motd\"\npath = \"{}\"\n\
             content = \"hello from kctl\\n\"\nmode = \"0640\"\n\n\
             [[resource]]\nkind = \"secret\"\nname = \"db\"\npath = \"{}\"\nlength = 20\n\
             alphabet = \"hex\"\n",
            motd.display(),
            secret.display()
        ),
    )
    .unwrap();
    let spec = spec_path.to_str().unwrap();

    // Dry run: a plan, nothing on disk.
    let plan = k.ok(&["apply", &host, "-f", spec, "--dry-run"]);
    assert!(
        plan.contains("motd"),
        "the plan names the resource:\n{plan}"
    );
    assert!(
        !motd.exists() && !secret.exists(),
        "a dry run changed the host"
    );

    // Apply, as JSON lines.
    let out = k.ok(&["--output", "json", "apply", &host, "-f", spec]);
    let lines = json_lines(&out);
    let types: Vec<&str> = lines.iter().filter_map(|l| l["type"].as_str()).collect();
    assert_eq!(types.first(), Some(&"started"), "{out}");
    assert_eq!(types.last(), Some(&"finished"), "{out}");
    let fin = &lines.last().unwrap()["data"];
    assert_eq!(fin["state"], "succeeded", "{out}");
    assert_eq!(fin["counts"]["create"], 2, "{out}");
    let op = fin["operation_id"].as_str().unwrap().to_string();
    assert_eq!(std::fs::read(&motd).unwrap(), b"hello from kctl\n");
    assert_eq!(mode(&motd), 0o640);
    let value = std::fs::read_to_string(&secret).unwrap();
    assert_eq!(value.trim_end().len(), 20);
    assert!(
        !out.contains(value.trim_end()),
        "the secret value was printed by kctl"
    );

    // Again, human output: nothing changes.
    let ino = std::fs::metadata(&motd).unwrap().ino();
    let human = k.ok(&["apply", &host, "-f", spec]);
    assert!(
        human.contains("unchanged"),
        "a re-apply reports unchanged:\n{human}"
    );
    assert_eq!(std::fs::metadata(&motd).unwrap().ino(), ino);

    // The history.
    let ops = k.ok(&["ops", &host]);
    assert!(
        ops.contains(&op),
        "kctl ops lists the operation {op}:\n{ops}"
    );
    let ops_json: Value = serde_json::from_str(&k.ok(&["--output", "json", "ops", &host]))
        .expect("kctl ops --output json is one JSON document");
    let list = ops_json["operations"].as_array().expect("operations array");
    assert_eq!(list.len(), 3, "dry run + 2 applies: {ops_json}");
    let ours = list
        .iter()
        .find(|o| o["operation_id"] == op.as_str())
        .expect("the JSON history has the operation");
    assert_eq!(ours["state"], "succeeded");
    assert!(
        ours["caller"].as_str().unwrap_or("").contains("e2e-admin"),
        "caller: {ours}"
    );

    // Facts as JSON.
    let facts: Value = serde_json::from_str(&k.ok(&["--output", "json", "facts", &host]))
        .expect("kctl facts --output json is one JSON document");
    let hostname = nix::unistd::gethostname().unwrap();
    assert_eq!(facts["hostname"], hostname.to_string_lossy().as_ref());
    assert_eq!(facts["api_version"], kagent_proto::API_VERSION);

    // A spec the agent refuses: non-zero exit naming the field, nothing applied.
    let bad_path = tmp.path().join("bad.toml");
    std::fs::write(
        &bad_path,
        "[[resource]]\nkind = \"file\"\nname = \"pw\"\npath = \"/etc/passwd\"\ncontent = \"x\"\n",
    )
    .unwrap();
    let bad = k.run(&["apply", &host, "-f", bad_path.to_str().unwrap()]);
    assert!(
        !bad.status.success(),
        "kctl accepted a path outside the roots"
    );
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("path"), "the error names `path`:\n{stderr}");
}
