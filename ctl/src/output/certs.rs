//! `kctl certs HOST`: the agent's certificates as a table or one JSON document.

use kagent_proto::v1;
use serde_json::{Value, json};

use super::{Table, proto_timestamp, proto_timestamp_json, truncate};

const ERROR_WIDTH: usize = 50;

pub fn certificates_human(certs: &[v1::CertificateStatus]) -> String {
    if certs.is_empty() {
        return "no certificates managed by this agent\n".to_string();
    }
    let mut t = Table::new([
        "NAME",
        "DOMAINS",
        "ISSUER",
        "NOT-AFTER",
        "DAYS",
        "NEXT-RENEWAL",
        "BASIS",
        "ERROR",
    ]);
    for c in certs {
        let days = if c.not_after.is_some() {
            format!("{:.1}", c.days_left)
        } else {
            "-".into()
        };
        let error = match (c.failures, c.last_error.is_empty()) {
            (0, true) => String::new(),
            (n, _) => format!("{n}x: {}", c.last_error),
        };
        t.row([
            c.name.clone(),
            c.domains.join(","),
            c.issuer.clone(),
            proto_timestamp(c.not_after.as_ref()),
            days,
            proto_timestamp(c.next_renewal.as_ref()),
            c.renewal_basis.clone(),
            truncate(&error, ERROR_WIDTH),
        ]);
    }
    t.render()
}

pub fn certificates_json(certs: &[v1::CertificateStatus]) -> Value {
    let list: Vec<Value> = certs
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "domains": c.domains,
                "issuer": c.issuer,
                "serial": c.serial,
                "not_before": proto_timestamp_json(c.not_before.as_ref()),
                "not_after": proto_timestamp_json(c.not_after.as_ref()),
                "days_left": c.not_after.map(|_| c.days_left),
                "next_renewal": proto_timestamp_json(c.next_renewal.as_ref()),
                "renewal_basis": c.renewal_basis,
                "failures": c.failures,
                "last_error": c.last_error,
            })
        })
        .collect();
    json!({ "certificates": list })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos: 0 })
    }

    #[test]
    fn table_and_json() {
        let certs = vec![
            v1::CertificateStatus {
                name: "keycloak".into(),
                domains: vec!["kc.example.org".into()],
                issuer: "letsencrypt".into(),
                serial: "0a".into(),
                not_before: ts(1_777_627_800),
                not_after: ts(1_785_403_800),
                days_left: 89.96,
                next_renewal: ts(1_782_811_800),
                renewal_basis: "1/3 of lifetime left".into(),
                ..Default::default()
            },
            v1::CertificateStatus {
                name: "lab".into(),
                domains: vec!["lab.test".into()],
                issuer: "acme https://ca/dir".into(),
                failures: 2,
                last_error: "rate limited".into(),
                ..Default::default()
            },
        ];
        assert_eq!(
            certificates_human(&certs),
            "\
NAME      DOMAINS         ISSUER               NOT-AFTER             DAYS  NEXT-RENEWAL          BASIS                 ERROR
keycloak  kc.example.org  letsencrypt          2026-07-30T09:30:00Z  90.0  2026-06-30T09:30:00Z  1/3 of lifetime left
lab       lab.test        acme https://ca/dir  -                     -     -                                           2x: rate limited
"
        );
        let v = certificates_json(&certs);
        assert_eq!(v["certificates"][0]["days_left"], 89.96);
        assert_eq!(v["certificates"][1]["days_left"], Value::Null);
        assert_eq!(v["certificates"][1]["failures"], 2);
        assert_eq!(
            certificates_human(&[]),
            "no certificates managed by this agent\n"
        );
    }
}
