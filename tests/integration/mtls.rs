//! Only mTLS clients with a certificate of the fleet CA get in; the client checks the agent's
//! name.

use kagent_tests::{Agent, Pki, facts_with};

#[tokio::test]
async fn admin_client_gets_facts() {
    let pki = Pki::new();
    let agent = Agent::start_new(&pki);
    let facts = facts_with(&pki.ca_cert, Some(&pki.admin), agent.addr, "localhost")
        .await
        .unwrap_or_else(|e| panic!("admin client refused: {e}"));
    assert_eq!(facts.api_version, kagent_proto::API_VERSION);
    assert!(
        !facts.agent_version.is_empty(),
        "agent_version is empty: {facts:?}"
    );
    assert!(!facts.kernel.is_empty(), "kernel is empty: {facts:?}");
    assert!(facts.cpus >= 1, "cpus: {facts:?}");
    assert!(
        facts.memory_total_bytes > 0,
        "memory_total_bytes: {facts:?}"
    );
    let host = nix::unistd::gethostname()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert_eq!(facts.hostname, host);
}

#[tokio::test]
async fn client_without_certificate_is_refused() {
    let pki = Pki::new();
    let agent = Agent::start_new(&pki);
    let r = facts_with(&pki.ca_cert, None, agent.addr, "localhost").await;
    assert!(
        r.is_err(),
        "a client without a certificate got Facts: {r:?}"
    );
}

#[tokio::test]
async fn client_of_another_ca_is_refused() {
    let pki = Pki::new();
    let agent = Agent::start_new(&pki);
    let foreign = pki.foreign_client();
    let r = facts_with(&pki.ca_cert, Some(&foreign), agent.addr, "localhost").await;
    assert!(r.is_err(), "a client of a foreign CA got Facts: {r:?}");
    // Control: the agent still serves good clients.
    facts_with(&pki.ca_cert, Some(&pki.admin), agent.addr, "localhost")
        .await
        .unwrap_or_else(|e| panic!("admin refused after a foreign client: {e}"));
}

#[tokio::test]
async fn expired_client_certificate_is_refused() {
    let pki = Pki::new();
    let agent = Agent::start_new(&pki);
    let expired = pki.expired_client();
    let r = facts_with(&pki.ca_cert, Some(&expired), agent.addr, "localhost").await;
    assert!(r.is_err(), "an expired client certificate got Facts: {r:?}");
}

#[tokio::test]
async fn agent_with_another_name_is_refused_by_the_client() {
    let pki = Pki::new();
    let other = pki.agent_for("other.test");
    let agent = Agent::builder(&pki).server_cert(&other).start();
    let r = facts_with(&pki.ca_cert, Some(&pki.admin), agent.addr, "localhost").await;
    assert!(
        r.is_err(),
        "dialling localhost accepted a certificate for other.test: {r:?}"
    );
    // Control: the same agent, dialled by the name its certificate carries, answers.
    facts_with(&pki.ca_cert, Some(&pki.admin), agent.addr, "other.test")
        .await
        .unwrap_or_else(|e| panic!("dialling other.test by its name failed: {e}"));
}
