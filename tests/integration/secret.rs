//! Generated secrets: format, stability, and never leaked through the API or the state dir.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use kagent_proto::v1::{Action, Alphabet, File, ListOperationsRequest};
use kagent_tests::*;

fn check_format(path: &Path, len: usize, alphabet: &str) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let text = String::from_utf8(bytes).expect("secret is UTF-8");
    assert!(
        text.ends_with('\n'),
        "secret must end with a newline: {:?}",
        text.len()
    );
    assert_eq!(text.matches('\n').count(), 1, "exactly one line");
    let word = &text[..text.len() - 1];
    assert_eq!(word.split_whitespace().count(), 1, "exactly one word");
    assert_eq!(word.chars().count(), len, "length of {}", path.display());
    assert!(
        word.chars().all(|c| alphabet.contains(c)),
        "{} has characters outside {alphabet:?}",
        path.display()
    );
    assert_eq!(
        std::fs::metadata(path).unwrap().mode() & 0o7777,
        0o600,
        "secret mode"
    );
    word.to_string()
}

const ALNUM: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const HEX: &str = "0123456789abcdef";
const B64URL: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

#[tokio::test]
async fn secrets_are_generated_once_and_never_leak() {
    let pki = Pki::new();
    let agent = Agent::start_new(&pki);
    let mut c = admin(&pki, &agent).await;
    let p_default = agent.root.join("s/default.secret");
    let p_hex = agent.root.join("s/hex.secret");
    let p_b64 = agent.root.join("s/b64.secret");
    let p_env = agent.root.join("s/app.env");
    let sensitive = "DB_PASSWORD=sensitive-file-content-7f3a9\n";
    let spec = host_spec(vec![
        secret("default", &p_default, 0, Alphabet::Unspecified),
        secret("hex", &p_hex, 64, Alphabet::Hex),
        secret("b64", &p_b64, 16, Alphabet::Base64url),
        file_res(
            "env",
            File {
                path: p_env.to_string_lossy().into_owned(),
                content: sensitive.as_bytes().to_vec(),
                sensitive: true,
                ..File::default()
            },
        ),
    ]);
    let first = apply_events(&mut c, spec.clone()).await;
    let plan = planned(&first);
    let values = [
        check_format(&p_default, 32, ALNUM),
        check_format(&p_hex, 64, HEX),
        check_format(&p_b64, 16, B64URL),
    ];
    assert_eq!(std::fs::read(&p_env).unwrap(), sensitive.as_bytes());
    let raw: Vec<Vec<u8>> = [&p_default, &p_hex, &p_b64]
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();

    let second = apply_events(&mut c, spec).await;
    for (name, a) in planned_actions(&second) {
        assert_eq!(a, Action::Unchanged, "{name} on the second apply");
    }
    for (p, before) in [&p_default, &p_hex, &p_b64].iter().zip(&raw) {
        assert_eq!(
            &std::fs::read(p).unwrap(),
            before,
            "{} changed",
            p.display()
        );
    }

    let op = op_id(&first);
    let watched = watch_events(&mut c, &op, 0).await;
    let ops = c
        .list_operations(ListOperationsRequest { limit: 0 })
        .await
        .unwrap()
        .into_inner();
    let api_text = format!("{first:?}\n{second:?}\n{watched:?}\n{ops:?}\n{plan:?}");
    let sensitive_value = "sensitive-file-content-7f3a9";
    for v in values.iter().map(String::as_str).chain([sensitive_value]) {
        assert!(
            !api_text.contains(v),
            "a secret value appears in an API response"
        );
    }

    // Nothing under the state dir (journal, audit log) holds a value either, nor the log.
    let files = files_under(&agent.state_dir);
    assert!(!files.is_empty(), "the state dir holds no files at all");
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        for v in values.iter().map(String::as_str).chain([sensitive_value]) {
            assert!(
                !contains_bytes(&bytes, v.as_bytes()),
                "a secret value is stored in {}",
                f.display()
            );
        }
    }
    let log = agent.stderr_all() + &std::fs::read_to_string(&agent.stdout_path).unwrap_or_default();
    for v in values.iter().map(String::as_str).chain([sensitive_value]) {
        assert!(
            !log.contains(v),
            "a secret value appears in the agent's log"
        );
    }
}
