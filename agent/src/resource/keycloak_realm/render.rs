//! The seed's realm, rendered for a Keycloak flavor: the typed desired model the reconciler
//! works from, and a realm JSON with the same content for a fresh import.
//!
//! Differences handled here (see research/keycloak.md §2-3):
//! - Keycloak >= 25 only puts `sub` into access tokens through the `basic` client scope, so
//!   `loginConnect` lists it next to `kheops`; 16.x always has `sub` and has no `basic`.
//! - Mapper config: 26.x knows `introspection.token.claim`; 16.x does not (keys inside
//!   `config` are free-form, but kagent only sets what the server understands).
//! - Top-level JSON fields are those both versions know (an unknown field is a 400).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::model::{Client, ClientScope, Desired, Mapper, Realm, RoleGrant};

pub const LOGIN_CLIENT: &str = "loginConnect";
pub const AUTH_CLIENT: &str = "kheopsAuthorization";
pub const KHEOPS_SCOPE: &str = "kheops";
pub const REALM_MANAGEMENT: &str = "realm-management";
pub const VIEW_USERS: &str = "view-users";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Quarkus Keycloak 25 and later (tested: 26.x).
    Keycloak26,
    /// WildFly Keycloak 16.1.1 (`jboss/keycloak`).
    Legacy16,
}

impl Flavor {
    pub fn name(self) -> &'static str {
        match self {
            Flavor::Keycloak26 => "keycloak-26",
            Flavor::Legacy16 => "legacy-16",
        }
    }
}

/// The knobs of the seed's realm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub flavor: Flavor,
    pub realm: String,
    /// `https://KHEOPS-HOME`: scheme, host, optional port, no path.
    pub kheops_origin: String,
    pub registration_allowed: bool,
    pub ssl_required: String,
    pub frontend_url: Option<String>,
}

fn config(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn with_introspection(
    flavor: Flavor,
    mut c: BTreeMap<String, String>,
    on: bool,
) -> BTreeMap<String, String> {
    if flavor == Flavor::Keycloak26 {
        c.insert(
            "introspection.token.claim".into(),
            if on { "true" } else { "false" }.into(),
        );
    }
    c
}

pub fn render(s: &Settings) -> Desired {
    let f = s.flavor;
    let email = Mapper {
        name: "email".into(),
        protocol_mapper: "oidc-usermodel-property-mapper".into(),
        config: with_introspection(
            f,
            config(&[
                ("user.attribute", "email"),
                ("claim.name", "email"),
                ("jsonType.label", "String"),
                ("id.token.claim", "true"),
                ("access.token.claim", "true"),
                ("userinfo.token.claim", "true"),
            ]),
            true,
        ),
    };
    let full_name = Mapper {
        name: "full name".into(),
        protocol_mapper: "oidc-full-name-mapper".into(),
        config: with_introspection(
            f,
            config(&[
                ("id.token.claim", "true"),
                ("access.token.claim", "true"),
                ("userinfo.token.claim", "true"),
            ]),
            true,
        ),
    };
    let impersonator = Mapper {
        name: "impersonator user id".into(),
        protocol_mapper: "oidc-usersessionmodel-note-mapper".into(),
        config: with_introspection(
            f,
            config(&[
                ("user.session.note", "IMPERSONATOR_ID"),
                ("claim.name", "act.sub"),
                ("jsonType.label", "String"),
                ("access.token.claim", "true"),
                ("id.token.claim", "false"),
                ("userinfo.token.claim", "false"),
            ]),
            true,
        ),
    };
    let mut login_scopes = vec![KHEOPS_SCOPE.to_string()];
    if f == Flavor::Keycloak26 {
        // Without `basic`, access tokens carry no `sub` and KHEOPS rejects them.
        login_scopes.push("basic".into());
    }
    let origin = s.kheops_origin.trim_end_matches('/').to_string();
    Desired {
        realm: Realm {
            name: s.realm.clone(),
            enabled: true,
            registration_allowed: s.registration_allowed,
            ssl_required: s.ssl_required.clone(),
            frontend_url: s.frontend_url.clone(),
        },
        client_scopes: vec![ClientScope {
            name: KHEOPS_SCOPE.into(),
            description: "KHEOPS access".into(),
            protocol: "openid-connect".into(),
            attributes: config(&[
                ("include.in.token.scope", "true"),
                ("display.on.consent.screen", "false"),
            ]),
            mappers: vec![email, full_name],
        }],
        clients: vec![
            Client {
                client_id: LOGIN_CLIENT.into(),
                enabled: true,
                public_client: true,
                // KHEOPS 1.x uses the code flow; the seed asks for implicit too.
                standard_flow: true,
                implicit_flow: true,
                direct_access_grants: false,
                service_accounts: false,
                full_scope_allowed: true,
                redirect_uris: Some(vec![format!("{origin}/*")]),
                web_origins: Some(vec![origin.clone()]),
                default_scopes: Some(login_scopes),
                optional_scopes: Some(Vec::new()),
                mappers: vec![impersonator],
                secret_from_file: false,
            },
            Client {
                client_id: AUTH_CLIENT.into(),
                enabled: true,
                public_client: false,
                standard_flow: false,
                implicit_flow: false,
                direct_access_grants: false,
                service_accounts: true,
                full_scope_allowed: false,
                redirect_uris: None,
                web_origins: None,
                default_scopes: None,
                optional_scopes: None,
                mappers: Vec::new(),
                secret_from_file: true,
            },
        ],
        service_account_roles: vec![RoleGrant {
            client: AUTH_CLIENT.into(),
            role_client: REALM_MANAGEMENT.into(),
            role: VIEW_USERS.into(),
        }],
        scope_mappings: vec![RoleGrant {
            client: AUTH_CLIENT.into(),
            role_client: REALM_MANAGEMENT.into(),
            role: VIEW_USERS.into(),
        }],
    }
}

pub fn mapper_json(m: &Mapper) -> Value {
    json!({
        "name": m.name,
        "protocol": "openid-connect",
        "protocolMapper": m.protocol_mapper,
        "consentRequired": false,
        "config": m.config,
    })
}

pub fn scope_json(s: &ClientScope) -> Value {
    json!({
        "name": s.name,
        "description": s.description,
        "protocol": s.protocol,
        "attributes": s.attributes,
    })
}

/// The client's managed fields (no scopes, no mappers: those are separate calls).
pub fn client_json(c: &Client) -> Value {
    let mut v = json!({
        "clientId": c.client_id,
        "enabled": c.enabled,
        "protocol": "openid-connect",
        "publicClient": c.public_client,
        "standardFlowEnabled": c.standard_flow,
        "implicitFlowEnabled": c.implicit_flow,
        "directAccessGrantsEnabled": c.direct_access_grants,
        "serviceAccountsEnabled": c.service_accounts,
        "fullScopeAllowed": c.full_scope_allowed,
    });
    if !c.public_client {
        v["clientAuthenticatorType"] = json!("client-secret");
        v["bearerOnly"] = json!(false);
    }
    if let Some(r) = &c.redirect_uris {
        v["redirectUris"] = json!(r);
    }
    if let Some(w) = &c.web_origins {
        v["webOrigins"] = json!(w);
    }
    v
}

pub fn realm_json(r: &Realm) -> Value {
    let mut v = json!({
        "realm": r.name,
        "enabled": r.enabled,
        "registrationAllowed": r.registration_allowed,
        "sslRequired": r.ssl_required,
    });
    if let Some(f) = &r.frontend_url {
        v["attributes"] = json!({ "frontendUrl": f });
    }
    v
}

/// A complete realm JSON for a fresh import (`POST /admin/realms`, legacy `KEYCLOAK_IMPORT`),
/// with the client secret rendered in. It leaves `clientScopes` out so that Keycloak still
/// creates its built-in scopes (`basic`, `profile`, ...), and adds `kheops` by reference:
/// kagent creates it over the API (research/keycloak.md §0.4).
pub fn import_json(d: &Desired, secret: Option<&str>) -> Value {
    let mut realm = realm_json(&d.realm);
    let clients: Vec<Value> = d
        .clients
        .iter()
        .map(|c| {
            let mut v = client_json(c);
            if let Some(s) = &c.default_scopes {
                v["defaultClientScopes"] = json!(s);
            }
            if let Some(s) = &c.optional_scopes {
                v["optionalClientScopes"] = json!(s);
            }
            if !c.mappers.is_empty() {
                v["protocolMappers"] = Value::Array(c.mappers.iter().map(mapper_json).collect());
            }
            if c.secret_from_file
                && let Some(s) = secret
            {
                v["secret"] = json!(s);
            }
            v
        })
        .collect();
    realm["clients"] = Value::Array(clients);
    let mut users = Vec::new();
    for g in &d.service_account_roles {
        users.push(json!({
            "username": format!("service-account-{}", g.client.to_lowercase()),
            "enabled": true,
            "serviceAccountClientId": g.client,
            "clientRoles": { g.role_client.clone(): [g.role] },
        }));
    }
    realm["users"] = Value::Array(users);
    let mut csm = serde_json::Map::new();
    for g in &d.scope_mappings {
        if let Some(a) = csm
            .entry(g.role_client.clone())
            .or_insert_with(|| Value::Array(Vec::new()))
            .as_array_mut()
        {
            a.push(json!({ "client": g.client, "roles": [g.role] }));
        }
    }
    realm["clientScopeMappings"] = Value::Object(csm);
    realm
}

/// Top-level realm fields kagent writes; all exist in 16.1.1 and 26.x (RealmRepresentation).
pub const REALM_FIELDS: &[&str] = &[
    "realm",
    "enabled",
    "registrationAllowed",
    "sslRequired",
    "attributes",
    "clients",
    "users",
    "clientScopeMappings",
];

/// Client fields kagent writes; all exist in 16.1.1 and 26.x (ClientRepresentation).
pub const CLIENT_FIELDS: &[&str] = &[
    "clientId",
    "enabled",
    "protocol",
    "publicClient",
    "standardFlowEnabled",
    "implicitFlowEnabled",
    "directAccessGrantsEnabled",
    "serviceAccountsEnabled",
    "fullScopeAllowed",
    "clientAuthenticatorType",
    "bearerOnly",
    "redirectUris",
    "webOrigins",
    "defaultClientScopes",
    "optionalClientScopes",
    "protocolMappers",
    "secret",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(flavor: Flavor) -> Settings {
        Settings {
            flavor,
            realm: "demo".into(),
            kheops_origin: "https://kheops.example.org/".into(),
            registration_allowed: true,
            ssl_required: "external".into(),
            frontend_url: None,
        }
    }

    #[test]
    fn the_seed_realm_as_asked() {
        let d = render(&settings(Flavor::Keycloak26));
        let lc = d.client(LOGIN_CLIENT).cloned();
        let lc = lc.as_ref();
        assert_eq!(lc.map(|c| c.public_client), Some(true));
        assert_eq!(
            lc.map(|c| (c.implicit_flow, c.standard_flow)),
            Some((true, true))
        );
        assert_eq!(lc.map(|c| c.direct_access_grants), Some(false));
        assert_eq!(
            lc.and_then(|c| c.redirect_uris.clone()),
            Some(vec!["https://kheops.example.org/*".to_string()])
        );
        assert_eq!(
            lc.and_then(|c| c.web_origins.clone()),
            Some(vec!["https://kheops.example.org".to_string()])
        );
        let imp = lc.and_then(|c| c.mappers.first());
        assert_eq!(
            imp.and_then(|m| m.config.get("claim.name"))
                .map(String::as_str),
            Some("act.sub")
        );
        assert_eq!(
            imp.and_then(|m| m.config.get("id.token.claim"))
                .map(String::as_str),
            Some("false")
        );
        let ka = d.client(AUTH_CLIENT);
        assert_eq!(
            ka.map(|c| (c.public_client, c.full_scope_allowed)),
            Some((false, false))
        );
        assert_eq!(
            ka.map(|c| (c.service_accounts, c.standard_flow)),
            Some((true, false))
        );
        assert_eq!(d.service_account_roles, d.scope_mappings);
        assert_eq!(d.service_account_roles[0].role, VIEW_USERS);
    }

    #[test]
    fn basic_scope_only_from_25_on() {
        let modern = render(&settings(Flavor::Keycloak26));
        let legacy = render(&settings(Flavor::Legacy16));
        let scopes = |d: &Desired| {
            d.client(LOGIN_CLIENT)
                .and_then(|c| c.default_scopes.clone())
        };
        assert_eq!(scopes(&modern), Some(vec!["kheops".into(), "basic".into()]));
        assert_eq!(scopes(&legacy), Some(vec!["kheops".into()]));
        // 16.x mappers carry only keys 16.x knows.
        for m in legacy.client_scopes.iter().flat_map(|s| &s.mappers) {
            assert!(!m.config.contains_key("introspection.token.claim"));
        }
    }

    #[test]
    fn the_import_json_uses_only_fields_both_versions_know() {
        for flavor in [Flavor::Keycloak26, Flavor::Legacy16] {
            let j = import_json(&render(&settings(flavor)), Some("s3cr3t"));
            let top = j.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>());
            for k in top.unwrap_or_default() {
                assert!(REALM_FIELDS.contains(&k.as_str()), "{k}");
            }
            for c in j["clients"].as_array().into_iter().flatten() {
                for k in c
                    .as_object()
                    .map(|o| o.keys().cloned().collect::<Vec<_>>())
                    .unwrap_or_default()
                {
                    assert!(CLIENT_FIELDS.contains(&k.as_str()), "{k}");
                }
            }
            assert!(
                j.get("clientScopes").is_none(),
                "keeps Keycloak's built-in scopes"
            );
            assert_eq!(j["clients"][1]["secret"], "s3cr3t");
            assert_eq!(
                j["clientScopeMappings"]["realm-management"][0]["roles"][0],
                "view-users"
            );
            assert_eq!(
                j["users"][0]["username"],
                "service-account-kheopsauthorization"
            );
        }
    }
}
