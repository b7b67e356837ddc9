//! An independent gRPC implementation (Python grpcio) lists the agent's services through
//! server reflection and checks its health, over mTLS.

use std::process::Command;

use kagent_tests::*;

#[test]
fn grpcio_reflection_and_health() {
    let python = python_bin();
    let pki = Pki::new();
    let agent = Agent::start_new(&pki);
    let script = workspace_root().join("tests/python/reflect.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg("--addr")
        .arg(agent.addr.to_string())
        .arg("--ca")
        .arg(&pki.ca_cert)
        .arg("--cert")
        .arg(&pki.admin.cert)
        .arg("--key")
        .arg(&pki.admin.key)
        .arg("--server-name")
        .arg("localhost")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "reflect.py failed:\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("kagent.v1.Agent") && stdout.contains("grpc.health.v1.Health"));
    assert!(stdout.contains("health: SERVING"), "{stdout}");
}

#[test]
fn grpcio_without_client_certificate_is_refused() {
    // The same script with a client certificate of another CA: grpcio's calls must fail too
    // (a control that the script does report failures).
    let python = python_bin();
    let pki = Pki::new();
    let agent = Agent::start_new(&pki);
    let foreign = pki.foreign_client();
    let out = Command::new(&python)
        .arg(workspace_root().join("tests/python/reflect.py"))
        .args(["--addr", &agent.addr.to_string()])
        .arg("--ca")
        .arg(&pki.ca_cert)
        .arg("--cert")
        .arg(&foreign.cert)
        .arg("--key")
        .arg(&foreign.key)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "grpcio with a foreign client certificate got through"
    );
}
