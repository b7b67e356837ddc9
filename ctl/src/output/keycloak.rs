//! `kctl keycloak check HOST`: one line per check, the hint under each failure, a summary.

use kagent_proto::v1;
use serde_json::{Value, json};

use super::Table;

pub fn keycloak_checks_human(checks: &[v1::KeycloakCheck]) -> String {
    let mut t = Table::new(["CHECK", "RESULT", "DETAIL"]);
    for c in checks {
        t.row([
            c.name.clone(),
            if c.pass { "pass" } else { "FAIL" }.to_string(),
            c.detail.clone(),
        ]);
    }
    let mut out = t.render();
    let failed: Vec<&v1::KeycloakCheck> = checks.iter().filter(|c| !c.pass).collect();
    for c in &failed {
        if !c.hint.is_empty() {
            out.push_str(&format!("hint ({}): {}\n", c.name, c.hint));
        }
    }
    out.push_str(&match failed.len() {
        0 => format!("{} checks passed\n", checks.len()),
        n => format!("{n} of {} checks failed\n", checks.len()),
    });
    out
}

pub fn keycloak_checks_json(checks: &[v1::KeycloakCheck]) -> Value {
    let list: Vec<Value> = checks
        .iter()
        .map(|c| json!({ "name": c.name, "pass": c.pass, "detail": c.detail, "hint": c.hint }))
        .collect();
    json!({ "pass": checks.iter().all(|c| c.pass), "checks": list })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, pass: bool, hint: &str) -> v1::KeycloakCheck {
        v1::KeycloakCheck {
            name: name.into(),
            pass,
            detail: format!("{name} detail"),
            hint: hint.into(),
        }
    }

    #[test]
    fn failures_carry_their_hint_and_the_summary_counts() {
        let checks = [
            check("discovery", true, ""),
            check(
                "iframe-origin",
                false,
                "add https://KHEOPS-HOME to web origins",
            ),
        ];
        let text = keycloak_checks_human(&checks);
        assert!(text.starts_with("CHECK"), "{text}");
        assert!(text.contains("iframe-origin  FAIL"), "{text}");
        assert!(
            text.contains("hint (iframe-origin): add https://KHEOPS-HOME to web origins"),
            "{text}"
        );
        assert!(text.ends_with("1 of 2 checks failed\n"), "{text}");
        assert!(keycloak_checks_human(&checks[..1]).ends_with("1 checks passed\n"));
        let j = keycloak_checks_json(&checks);
        assert_eq!(j["pass"], false);
        assert_eq!(
            j["checks"][1]["hint"],
            "add https://KHEOPS-HOME to web origins"
        );
    }
}
