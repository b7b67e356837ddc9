//! `kctl enroll`, `kctl ca rotate-agent` and `kctl audit`: the agent's identity over its life,
//! and who did what. Signing happens here with the local fleet CA; keys stay on the agents.

use std::net::IpAddr;

use anyhow::anyhow;
use serde_json::json;

use super::{Context, connect, print, print_json};
use crate::agent_client::{EnrollClient, served_fingerprint};
use crate::ca::{self, Ca, Validity};
use crate::error::{Error, Result, ResultExt};
use crate::host::Target;
use crate::output::{self, Format, table::Table};

/// The fingerprint a token pins: its last `.`-separated part, 64 hex digits.
pub fn token_fingerprint(token: &str) -> Result<String> {
    let token = token.trim();
    let parts: Vec<&str> = token.split('.').collect();
    match parts.as_slice() {
        ["ket1", secret, fp]
            if !secret.is_empty()
                && fp.len() == 64
                && fp.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            Ok(fp.to_lowercase())
        }
        _ => Err(Error::usage(anyhow!(
            "--token: this is not a kagent enrollment token (expected ket1.SECRET.FINGERPRINT)"
        ))
        .hint("copy the whole token from the agent's log, or run `kagent enroll-token` on the VM")),
    }
}

/// Names for the agent's certificate: what the operator dials and adds, then what the agent
/// reports (its host name and addresses), without duplicates or unusable entries.
fn agent_names(
    host: &Target,
    dns: &[String],
    reported_host: &str,
    reported: &[String],
    keep: &[String],
) -> (Vec<String>, Vec<IpAddr>) {
    let mut names: Vec<String> = Vec::new();
    let mut ips: Vec<IpAddr> = Vec::new();
    let candidates = dns
        .iter()
        .map(String::as_str)
        .chain(std::iter::once(reported_host))
        .chain(reported.iter().map(String::as_str))
        .chain(keep.iter().map(String::as_str));
    for c in candidates {
        if c.is_empty() || c == host.host {
            continue;
        }
        match c.parse::<IpAddr>() {
            Ok(ip) if !ips.contains(&ip) => ips.push(ip),
            Ok(_) => {}
            Err(_) => {
                if is_dns_name(c) && !names.iter().any(|n| n == c) {
                    names.push(c.to_string());
                }
            }
        }
    }
    (names, ips)
}

/// Letters, digits and hyphens in dot-separated labels of 1 to 63 characters.
fn is_dns_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

pub async fn enroll(
    ctx: &Context,
    host: &Target,
    token: &str,
    dns: &[String],
    ip: &[IpAddr],
    days: i64,
) -> Result<u8> {
    let fingerprint = token_fingerprint(token)?;
    let ca = Ca::load(&ctx.paths.ca_dir()).usage()?;
    let mut client = EnrollClient::connect(host, &fingerprint).await?;
    let begun = client
        .begin(token)
        .await
        .map_err(|s| client.explain("BeginEnrollment", &s))?;
    let (mut names, mut ips) = agent_names(host, dns, &begun.hostname, &begun.addresses, &[]);
    for extra in ip {
        if !ips.contains(extra) {
            ips.push(*extra);
        }
    }
    names.dedup();
    let cert_pem = ca
        .sign_agent_csr(
            &begun.csr_pem,
            &host.host,
            &names,
            &ips,
            Validity::days(days),
        )
        .usage()?;
    let done = client
        .complete(token, cert_pem.clone(), ca.cert_pem().to_string())
        .await
        .map_err(|s| client.explain("CompleteEnrollment", &s))?;
    // Prove it: a normal mTLS call with the operator's identity.
    let mut fleet = connect(ctx, host).await?;
    let facts = fleet
        .facts()
        .await
        .map_err(|s| fleet.explain("Facts", &s))?;
    let not_after = output::timestamp(ca::not_after_pem(&cert_pem)?);
    let all_names: Vec<String> = std::iter::once(host.host.clone())
        .chain(names.iter().cloned())
        .chain(ips.iter().map(|i| i.to_string()))
        .collect();
    match ctx.format {
        Format::Json => print_json(&json!({
            "host": host.to_string(),
            "fingerprint": done.fingerprint,
            "names": all_names,
            "not_after": not_after,
            "agent_version": facts.agent_version,
        }))?,
        Format::Human => print(&format!(
            "enrolled {host}: the agent now serves mutual TLS only\n\
             \x20 certificate SHA-256 {}\n\
             \x20 names       {}\n\
             \x20 valid until {not_after}\n\
             \x20 agent       kagent {} on {}\n",
            done.fingerprint,
            all_names.join(", "),
            facts.agent_version,
            facts.hostname,
        ))?,
    }
    Ok(0)
}

pub async fn rotate_agent(
    ctx: &Context,
    host: &Target,
    dns: &[String],
    ip: &[IpAddr],
    days: i64,
) -> Result<u8> {
    let ca = Ca::load(&ctx.paths.ca_dir()).usage()?;
    let mut client = connect(ctx, host).await?;
    let prepared = client
        .prepare_rotation()
        .await
        .map_err(|s| client.explain("PrepareRotation", &s))?;
    // Keep every name of the current certificate, so nobody who reaches it today is cut off.
    let (names, mut ips) = agent_names(host, dns, "", &[], &prepared.current_names);
    for extra in ip {
        if !ips.contains(extra) {
            ips.push(*extra);
        }
    }
    let cert_pem = ca
        .sign_agent_csr(
            &prepared.csr_pem,
            &host.host,
            &names,
            &ips,
            Validity::days(days),
        )
        .usage()?;
    let done = client
        .complete_rotation(cert_pem.clone())
        .await
        .map_err(|s| client.explain("CompleteRotation", &s))?;
    let served = served_fingerprint(host).await?;
    if served != done.fingerprint {
        return Err(Error::failed(anyhow!(
            "the agent installed certificate {} but {host} serves {served}",
            done.fingerprint
        ))
        .hint("is another process answering on that address?"));
    }
    let not_after = output::timestamp(ca::not_after_pem(&cert_pem)?);
    match ctx.format {
        Format::Json => print_json(&json!({
            "host": host.to_string(),
            "fingerprint": done.fingerprint,
            "not_after": not_after,
        }))?,
        Format::Human => print(&format!(
            "rotated the certificate of {host}; it now serves SHA-256 {} (valid until {not_after})\n",
            done.fingerprint
        ))?,
    }
    Ok(0)
}

/// `--since`: `30m`, `2h`, `7d`, `90s`, or an RFC 3339 time.
pub fn parse_since(text: &str, now: time::OffsetDateTime) -> Result<time::OffsetDateTime> {
    let bad = || {
        Error::usage(anyhow!(
            "--since {text:?}: expected a duration (30m, 2h, 7d) or an RFC 3339 time"
        ))
    };
    if let Ok(t) = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
    {
        return Ok(t);
    }
    let (num, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?);
    let n: i64 = num.parse().map_err(|_| bad())?;
    let d = match unit {
        "s" => time::Duration::seconds(n),
        "m" | "min" => time::Duration::minutes(n),
        "h" => time::Duration::hours(n),
        "d" => time::Duration::days(n),
        _ => return Err(bad()),
    };
    Ok(now - d)
}

pub async fn audit(
    ctx: &Context,
    host: &Target,
    since: Option<&str>,
    caller: &str,
    limit: u32,
) -> Result<u8> {
    let since = since
        .map(|s| parse_since(s, time::OffsetDateTime::now_utc()))
        .transpose()?
        .map(|t| prost_types::Timestamp {
            seconds: t.unix_timestamp(),
            nanos: 0,
        });
    let mut client = connect(ctx, host).await?;
    let records = client
        .list_audit(kagent_proto::v1::ListAuditRequest {
            since,
            caller: caller.to_string(),
            limit,
        })
        .await
        .map_err(|s| client.explain("ListAudit", &s))?;
    match ctx.format {
        Format::Json => {
            let rows: Vec<serde_json::Value> = records
                .iter()
                .map(|r| {
                    json!({
                        "time": output::proto_timestamp_json(r.time.as_ref()),
                        "seq": r.seq,
                        "phase": r.phase,
                        "caller": r.caller,
                        "fingerprint": r.fingerprint,
                        "rpc": r.rpc,
                        "request_sha256": r.request_sha256,
                        "operation_id": r.operation_id,
                        "result": r.result,
                    })
                })
                .collect();
            print_json(&json!({ "records": rows }))?
        }
        Format::Human => {
            let mut table = Table::new([
                "TIME",
                "SEQ",
                "PHASE",
                "CALLER",
                "RPC",
                "OPERATION",
                "RESULT",
            ]);
            for r in &records {
                let rpc = r.rpc.rsplit('/').next().unwrap_or(&r.rpc).to_string();
                table.row([
                    output::proto_timestamp(r.time.as_ref()),
                    r.seq.to_string(),
                    r.phase.clone(),
                    r.caller.clone(),
                    rpc,
                    if r.operation_id.is_empty() {
                        "-".into()
                    } else {
                        r.operation_id.clone()
                    },
                    if r.result.is_empty() {
                        "-".into()
                    } else {
                        r.result.clone()
                    },
                ]);
            }
            if records.is_empty() {
                print("no audit records match\n")?;
            } else {
                print(&table.render())?;
            }
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_parsed_or_refused_with_a_hint() {
        let fp = "ab".repeat(32);
        assert_eq!(
            token_fingerprint(&format!("ket1.s3cr3t.{fp}")).ok(),
            Some(fp.clone())
        );
        for bad in [
            "",
            "ket1..x",
            &format!("ket2.s.{fp}"),
            &format!("ket1.s.{}", &fp[..60]),
        ] {
            let err = token_fingerprint(bad)
                .err()
                .map(|e| e.render())
                .unwrap_or_default();
            assert!(err.contains("--token"), "{bad}: {err}");
        }
    }

    #[test]
    fn since_takes_durations_and_times() -> Result<()> {
        let now = time::OffsetDateTime::from_unix_timestamp(1_800_000_000)
            .map_err(|e| Error::usage(anyhow!(e)))?;
        assert_eq!(
            parse_since("2h", now)?.unix_timestamp(),
            1_800_000_000 - 7200
        );
        assert_eq!(
            parse_since("7d", now)?.unix_timestamp(),
            1_800_000_000 - 7 * 86_400
        );
        assert_eq!(
            parse_since("2027-01-15T08:00:00Z", now)?.unix_timestamp(),
            1_800_000_000
        );
        assert!(parse_since("yesterday", now).is_err());
        assert!(parse_since("5w", now).is_err());
        Ok(())
    }

    #[test]
    fn certificate_names_skip_duplicates_and_junk() {
        let host = Target {
            host: "vm1.example".into(),
            port: 7443,
        };
        let (names, ips) = agent_names(
            &host,
            &["vm1".into(), "vm1.example".into()],
            "vm1",
            &["10.0.0.2".into(), "10.0.0.2".into(), "not a name!".into()],
            &[],
        );
        assert_eq!(names, vec!["vm1".to_string()]);
        assert_eq!(
            ips,
            vec![
                "10.0.0.2"
                    .parse::<IpAddr>()
                    .unwrap_or(IpAddr::from([0, 0, 0, 0]))
            ]
        );
    }
}
