//! Bad configs stop the agent with exit code 2 and a message naming the key.

use std::time::Duration;

use kagent_tests::*;

fn refuses(agent: &mut Agent, key: &str) {
    let (status, stderr) = agent.run_to_exit(Duration::from_secs(10));
    assert_eq!(
        status.code(),
        Some(2),
        "exit code for a bad {key:?}; stderr:\n{stderr}"
    );
    assert!(stderr.contains(key), "stderr must name {key:?}:\n{stderr}");
}

#[test]
fn unknown_key_is_refused() {
    let pki = Pki::new();
    let mut agent = Agent::builder(&pki).build();
    let mut t = agent.config_table();
    t.insert("bogus_key".into(), toml::Value::Integer(1));
    agent.write_config(&t);
    refuses(&mut agent, "bogus_key");
}

#[test]
fn unknown_nested_key_is_refused() {
    let pki = Pki::new();
    let mut agent = Agent::builder(&pki).build();
    let mut t = agent.config_table();
    if let Some(toml::Value::Table(tls)) = t.get_mut("tls") {
        tls.insert("kee".into(), toml::Value::String("/nonexistent".into()));
    }
    agent.write_config(&t);
    refuses(&mut agent, "kee");
}

#[test]
fn bad_listen_is_refused() {
    let pki = Pki::new();
    let mut agent = Agent::builder(&pki).build();
    let mut t = agent.config_table();
    t.insert("listen".into(), toml::Value::String("nonsense".into()));
    agent.write_config(&t);
    refuses(&mut agent, "listen");
}

#[test]
fn missing_config_file_is_refused() {
    let pki = Pki::new();
    let mut agent = Agent::builder(&pki).build();
    std::fs::remove_file(&agent.config).unwrap();
    let (status, stderr) = agent.run_to_exit(Duration::from_secs(10));
    assert!(
        !status.success(),
        "kagent started without its --config file"
    );
    assert!(
        stderr.contains("kagent.toml"),
        "stderr must name the missing file:\n{stderr}"
    );
}

#[test]
fn good_config_starts() {
    // The control for the refusals above: the harness' own config is accepted.
    let pki = Pki::new();
    let mut agent = Agent::builder(&pki).build();
    agent.start();
    assert!(agent.is_running());
}
