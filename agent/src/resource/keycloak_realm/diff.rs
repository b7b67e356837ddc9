//! Desired model + what Keycloak has -> the steps that make them equal, one per Keycloak object
//! and change. Pure: the plan prints these steps, apply runs them in order.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::model::{Client, ClientScope, Desired, Mapper, RoleGrant};
use super::render::{client_json, mapper_json, realm_json, scope_json};
use super::{Observed, ObservedClient};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    Scope(String),
    Client(String),
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Owner::Scope(n) => write!(f, "client-scope {n}"),
            Owner::Client(n) => write!(f, "client {n}"),
        }
    }
}

/// One Admin API call. Never holds a secret value: it is added when the step runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    CreateRealm {
        body: Value,
    },
    UpdateRealm {
        changes: Vec<String>,
        body: Value,
    },
    CreateScope {
        name: String,
        body: Value,
    },
    UpdateScope {
        name: String,
        changes: Vec<String>,
        body: Value,
    },
    CreateMapper {
        owner: Owner,
        name: String,
        body: Value,
    },
    UpdateMapper {
        owner: Owner,
        name: String,
        changes: Vec<String>,
        body: Value,
    },
    CreateClient {
        client_id: String,
        body: Value,
        secret_from_file: bool,
    },
    UpdateClient {
        client_id: String,
        changes: Vec<String>,
        body: Value,
    },
    SetSecret {
        client_id: String,
    },
    /// Attach (`add`) or detach a default/optional client scope.
    Scope {
        client_id: String,
        optional: bool,
        add: bool,
        scope: String,
    },
    GrantRole {
        grant: RoleGrant,
    },
    AddScopeMapping {
        grant: RoleGrant,
    },
}

impl Step {
    pub fn is_create(&self) -> bool {
        matches!(self, Step::CreateRealm { .. })
    }

    /// The plan's line(s) for this step.
    pub fn describe(&self, realm: &str) -> String {
        let lines = |head: String, changes: &[String]| {
            let mut s = head;
            for c in changes {
                s.push_str("\n    ");
                s.push_str(c);
            }
            s
        };
        match self {
            Step::CreateRealm { .. } => format!("+ realm {realm}"),
            Step::UpdateRealm { changes, .. } => lines(format!("~ realm {realm}"), changes),
            Step::CreateScope { name, .. } => format!("+ client-scope {name}"),
            Step::UpdateScope { name, changes, .. } => {
                lines(format!("~ client-scope {name}"), changes)
            }
            Step::CreateMapper { owner, name, .. } => format!("+ mapper {name:?} of {owner}"),
            Step::UpdateMapper {
                owner,
                name,
                changes,
                ..
            } => lines(format!("~ mapper {name:?} of {owner}"), changes),
            Step::CreateClient {
                client_id,
                secret_from_file,
                ..
            } => {
                if *secret_from_file {
                    format!("+ client {client_id} (secret from file <redacted>)")
                } else {
                    format!("+ client {client_id}")
                }
            }
            Step::UpdateClient {
                client_id, changes, ..
            } => lines(format!("~ client {client_id}"), changes),
            Step::SetSecret { client_id } => {
                format!(
                    "~ client {client_id}\n    secret: differs from the managed file <redacted>"
                )
            }
            Step::Scope {
                client_id,
                optional,
                add,
                scope,
            } => format!(
                "{} client {client_id} {} scope {scope}",
                if *add { "+" } else { "-" },
                if *optional { "optional" } else { "default" }
            ),
            Step::GrantRole { grant } => format!(
                "+ service-account role {}/{} for client {}",
                grant.role_client, grant.role, grant.client
            ),
            Step::AddScopeMapping { grant } => format!(
                "+ scope mapping {}/{} for client {}",
                grant.role_client, grant.role, grant.client
            ),
        }
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::Null => "(unset)".into(),
        v => v.to_string(),
    }
}

/// `field: old -> new` for every managed top-level field of `want` that `have` lacks or
/// differs in. Arrays compare as sets.
fn field_changes(have: &Value, want: &Value, skip: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let Some(w) = want.as_object() else {
        return out;
    };
    for (k, wv) in w {
        if skip.contains(&k.as_str()) {
            continue;
        }
        let hv = &have[k.as_str()];
        let same = match (hv, wv) {
            (Value::Array(a), Value::Array(b)) => {
                let a: BTreeSet<String> = a.iter().map(Value::to_string).collect();
                let b: BTreeSet<String> = b.iter().map(Value::to_string).collect();
                a == b
            }
            (Value::Object(_), Value::Object(b)) => b.iter().all(|(bk, bv)| &hv[bk] == bv),
            _ => hv == wv,
        };
        if !same {
            out.push(format!("{k}: {} -> {}", show(hv), show(wv)));
        }
    }
    out
}

fn map_changes(have: &Value, want: &Value, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(w) = want.as_object() {
        for (k, wv) in w {
            let hv = &have[k.as_str()];
            if hv != wv {
                out.push(format!("{prefix}.{k}: {} -> {}", show(hv), show(wv)));
            }
        }
    }
    out
}

fn mapper_steps(owner: Owner, want: &[Mapper], have: &Value, steps: &mut Vec<Step>) {
    let empty = Vec::new();
    let have = have.as_array().unwrap_or(&empty);
    for m in want {
        let body = mapper_json(m);
        match have.iter().find(|h| h["name"] == m.name.as_str()) {
            None => steps.push(Step::CreateMapper {
                owner: owner.clone(),
                name: m.name.clone(),
                body,
            }),
            Some(h) => {
                let mut changes = Vec::new();
                if h["protocolMapper"] != body["protocolMapper"] {
                    changes.push(format!(
                        "protocolMapper: {} -> {}",
                        show(&h["protocolMapper"]),
                        show(&body["protocolMapper"])
                    ));
                }
                changes.extend(map_changes(&h["config"], &body["config"], "config"));
                if !changes.is_empty() {
                    // Keep Keycloak's own extra config keys.
                    let mut body = body;
                    if let (Some(hc), Some(bc)) =
                        (h["config"].as_object(), body["config"].as_object_mut())
                    {
                        for (k, v) in hc {
                            bc.entry(k.clone()).or_insert(v.clone());
                        }
                    }
                    steps.push(Step::UpdateMapper {
                        owner: owner.clone(),
                        name: m.name.clone(),
                        changes,
                        body,
                    });
                }
            }
        }
    }
}

fn scope_steps(s: &ClientScope, have: Option<&Value>, steps: &mut Vec<Step>) {
    let body = scope_json(s);
    match have {
        None => {
            let mut body = body;
            body["protocolMappers"] = Value::Array(s.mappers.iter().map(mapper_json).collect());
            steps.push(Step::CreateScope {
                name: s.name.clone(),
                body,
            });
        }
        Some(h) => {
            let mut changes = field_changes(h, &body, &["attributes"]);
            changes.extend(map_changes(
                &h["attributes"],
                &body["attributes"],
                "attributes",
            ));
            if !changes.is_empty() {
                let mut body = body;
                if let (Some(ha), Some(ba)) = (
                    h["attributes"].as_object(),
                    body["attributes"].as_object_mut(),
                ) {
                    for (k, v) in ha {
                        ba.entry(k.clone()).or_insert(v.clone());
                    }
                }
                steps.push(Step::UpdateScope {
                    name: s.name.clone(),
                    changes,
                    body,
                });
            }
            mapper_steps(
                Owner::Scope(s.name.clone()),
                &s.mappers,
                &h["protocolMappers"],
                steps,
            );
        }
    }
}

fn names(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn client_steps(c: &Client, have: Option<&ObservedClient>, d: &Desired, steps: &mut Vec<Step>) {
    let body = client_json(c);
    let Some(h) = have else {
        let mut body = body;
        // Listing scopes on create replaces the realm's default assignments.
        if let Some(s) = &c.default_scopes {
            body["defaultClientScopes"] = json!(s);
        }
        if let Some(s) = &c.optional_scopes {
            body["optionalClientScopes"] = json!(s);
        }
        body["protocolMappers"] = Value::Array(c.mappers.iter().map(mapper_json).collect());
        steps.push(Step::CreateClient {
            client_id: c.client_id.clone(),
            body,
            secret_from_file: c.secret_from_file,
        });
        grant_steps(c, None, d, steps);
        return;
    };
    let changes = field_changes(&h.rep, &body, &["protocol"]);
    if !changes.is_empty() {
        steps.push(Step::UpdateClient {
            client_id: c.client_id.clone(),
            changes,
            body,
        });
    }
    if h.secret_matches == Some(false) {
        steps.push(Step::SetSecret {
            client_id: c.client_id.clone(),
        });
    }
    for (optional, want) in [(false, &c.default_scopes), (true, &c.optional_scopes)] {
        let Some(want) = want else { continue };
        let key = if optional {
            "optionalClientScopes"
        } else {
            "defaultClientScopes"
        };
        let now = names(&h.rep[key]);
        for s in want {
            if !now.contains(s) {
                steps.push(Step::Scope {
                    client_id: c.client_id.clone(),
                    optional,
                    add: true,
                    scope: s.clone(),
                });
            }
        }
        for s in &now {
            if !want.contains(s) {
                steps.push(Step::Scope {
                    client_id: c.client_id.clone(),
                    optional,
                    add: false,
                    scope: s.clone(),
                });
            }
        }
    }
    mapper_steps(
        Owner::Client(c.client_id.clone()),
        &c.mappers,
        &h.rep["protocolMappers"],
        steps,
    );
    grant_steps(c, Some(h), d, steps);
}

fn grant_steps(c: &Client, have: Option<&ObservedClient>, d: &Desired, steps: &mut Vec<Step>) {
    for g in d
        .service_account_roles
        .iter()
        .filter(|g| g.client == c.client_id)
    {
        let held = have
            .and_then(|h| h.grants.get(&g.role_client))
            .is_some_and(|(roles, _)| roles.contains(&g.role));
        if !held {
            steps.push(Step::GrantRole { grant: g.clone() });
        }
    }
    for g in d.scope_mappings.iter().filter(|g| g.client == c.client_id) {
        let held = have
            .and_then(|h| h.grants.get(&g.role_client))
            .is_some_and(|(_, scope)| scope.contains(&g.role));
        if !held {
            steps.push(Step::AddScopeMapping { grant: g.clone() });
        }
    }
}

/// Everything that differs, in the order it must be applied: realm, scopes (and their
/// mappers), clients (fields, secret, scope assignments, mappers), role grants.
pub fn steps(d: &Desired, o: &Observed) -> Vec<Step> {
    let mut steps = Vec::new();
    let realm_body = realm_json(&d.realm);
    let Some(have) = &o.realm else {
        steps.push(Step::CreateRealm { body: realm_body });
        for s in &d.client_scopes {
            scope_steps(s, None, &mut steps);
        }
        for c in &d.clients {
            client_steps(c, None, d, &mut steps);
        }
        return steps;
    };
    let mut changes = field_changes(&have.rep, &realm_body, &["attributes", "realm"]);
    changes.extend(map_changes(
        &have.rep["attributes"],
        &realm_body["attributes"],
        "attributes",
    ));
    if !changes.is_empty() {
        let mut body = realm_body;
        // A PUT with `attributes` replaces the map: send Keycloak's own attributes back.
        if let (Some(ha), Some(ba)) = (
            have.rep["attributes"].as_object(),
            body["attributes"].as_object_mut(),
        ) {
            for (k, v) in ha {
                ba.entry(k.clone()).or_insert(v.clone());
            }
        }
        steps.push(Step::UpdateRealm { changes, body });
    }
    for s in &d.client_scopes {
        scope_steps(s, have.scopes.get(&s.name), &mut steps);
    }
    for c in &d.clients {
        client_steps(c, have.clients.get(&c.client_id), d, &mut steps);
    }
    steps
}

/// Scopes the desired clients attach that the realm does not have and the plan does not create.
pub fn missing_scopes(d: &Desired, o: &Observed) -> Vec<String> {
    let Some(have) = &o.realm else {
        return Vec::new();
    };
    let created: BTreeSet<&str> = d.client_scopes.iter().map(|s| s.name.as_str()).collect();
    let mut out = BTreeSet::new();
    for c in &d.clients {
        for s in c
            .default_scopes
            .iter()
            .flatten()
            .chain(c.optional_scopes.iter().flatten())
        {
            if !created.contains(s.as_str()) && !have.scope_names.contains(s) {
                out.insert(s.clone());
            }
        }
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::resource::keycloak_realm::ObservedRealm;
    use crate::resource::keycloak_realm::render::{self, Flavor, Settings};

    fn desired() -> Desired {
        render::render(&Settings {
            flavor: Flavor::Keycloak26,
            realm: "demo".into(),
            kheops_origin: "https://kh.example".into(),
            registration_allowed: false,
            ssl_required: "external".into(),
            frontend_url: Some("https://kh.example/auth".into()),
        })
    }

    /// What Keycloak would answer once everything is applied, plus fields of its own.
    fn converged(d: &Desired) -> Observed {
        let mut rep = realm_json(&d.realm);
        rep["attributes"]["cibaInterval"] = json!("5");
        rep["id"] = json!("r-1");
        let mut scopes = BTreeMap::new();
        for s in &d.client_scopes {
            let mut v = scope_json(s);
            v["protocolMappers"] = Value::Array(
                s.mappers
                    .iter()
                    .map(|m| {
                        let mut j = mapper_json(m);
                        j["config"]["lightweight.claim"] = json!("false");
                        j
                    })
                    .collect(),
            );
            scopes.insert(s.name.clone(), v);
        }
        let mut clients = BTreeMap::new();
        for c in &d.clients {
            let mut v = client_json(c);
            v["defaultClientScopes"] = json!(c.default_scopes.clone().unwrap_or_default());
            v["optionalClientScopes"] = json!(c.optional_scopes.clone().unwrap_or_default());
            v["protocolMappers"] = Value::Array(c.mappers.iter().map(mapper_json).collect());
            if let Some(r) = &c.redirect_uris {
                // Order is not significant.
                let mut r = r.clone();
                r.reverse();
                v["redirectUris"] = json!(r);
            }
            let mut grants = BTreeMap::new();
            if c.service_accounts {
                grants.insert(
                    "realm-management".to_string(),
                    (
                        vec!["view-users".to_string()],
                        vec!["view-users".to_string()],
                    ),
                );
            }
            clients.insert(
                c.client_id.clone(),
                ObservedClient {
                    rep: v,
                    secret_matches: c.secret_from_file.then_some(true),
                    grants,
                },
            );
        }
        Observed {
            realm: Some(ObservedRealm {
                rep,
                scopes,
                scope_names: ["kheops", "basic", "profile"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                clients,
            }),
            unreachable: None,
        }
    }

    #[test]
    fn a_converged_realm_needs_nothing() {
        let d = desired();
        assert_eq!(steps(&d, &converged(&d)), Vec::new());
        assert!(missing_scopes(&d, &converged(&d)).is_empty());
    }

    #[test]
    fn a_missing_realm_is_created_whole() {
        let d = desired();
        let s = steps(
            &d,
            &Observed {
                realm: None,
                unreachable: None,
            },
        );
        assert!(matches!(s.first(), Some(Step::CreateRealm { .. })));
        let text: Vec<String> = s.iter().map(|s| s.describe("demo")).collect();
        assert!(
            text.contains(&"+ client-scope kheops".to_string()),
            "{text:?}"
        );
        assert_eq!(
            s.iter()
                .filter(|s| matches!(s, Step::GrantRole { .. } | Step::AddScopeMapping { .. }))
                .count(),
            2
        );
    }

    #[test]
    fn each_drift_is_one_step_and_nothing_is_deleted() {
        let d = desired();
        let mut o = converged(&d);
        let Some(r) = o.realm.as_mut() else {
            panic!("converged has a realm")
        };
        // By hand: view-users removed, origin changed, extra default scope, mapper flag flipped,
        // secret rotated, an unrelated client added.
        if let Some(ka) = r.clients.get_mut("kheopsAuthorization") {
            ka.grants.insert(
                "realm-management".into(),
                (vec![], vec!["view-users".into()]),
            );
            ka.secret_matches = Some(false);
        }
        if let Some(lc) = r.clients.get_mut("loginConnect") {
            lc.rep["webOrigins"] = json!(["*"]);
            lc.rep["defaultClientScopes"] = json!(["kheops", "basic", "profile"]);
            lc.rep["protocolMappers"][0]["config"]["id.token.claim"] = json!("true");
        }
        let s = steps(&d, &o);
        let text = s
            .iter()
            .map(|s| s.describe("demo"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            text.contains("webOrigins: [\"*\"] -> [\"https://kh.example\"]"),
            "{text}"
        );
        assert!(
            text.contains("- client loginConnect default scope profile"),
            "{text}"
        );
        assert!(
            text.contains("config.id.token.claim: \"true\" -> \"false\""),
            "{text}"
        );
        assert!(
            text.contains("+ service-account role realm-management/view-users"),
            "{text}"
        );
        assert!(
            text.contains("secret: differs from the managed file <redacted>"),
            "{text}"
        );
        assert!(!text.contains("scope mapping"), "{text}");
        assert_eq!(s.len(), 5, "{text}");
        // Mapper updates keep Keycloak's own config keys.
        let upd = s.iter().find_map(|s| match s {
            Step::UpdateMapper { body, .. } => Some(body.clone()),
            _ => None,
        });
        assert!(upd.is_some());
    }
}
