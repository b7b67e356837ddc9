//! Keycloak's Admin REST API: an admin token, the reads the diff needs, and one call per step.
//! Paths are the same on 16.x and 26.x under the base URL (`…/auth` where used).

use std::collections::BTreeMap;

use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::diff::{Owner, Step};
use super::model::{Desired, RoleGrant};
use crate::host::http::{Client, HttpError, Reply, encode};
use crate::resource::ResourceError;

/// How to log in as an administrator. `secret` is the password or client secret.
#[derive(Clone)]
pub struct Login {
    pub base: String,
    pub realm: String,
    pub username: String,
    pub client_id: Option<String>,
    pub secret: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("base", &self.base)
            .field("realm", &self.realm)
            .field("username", &self.username)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// An authenticated admin session (master-realm tokens live 60 s by default: one per read or
/// apply, which take a few seconds).
pub struct Admin {
    http: Client,
    base: String,
    token: String,
}

fn err(message: impl Into<String>, hint: impl Into<String>) -> ResourceError {
    ResourceError {
        message: message.into(),
        hint: hint.into(),
    }
}

fn transport(e: HttpError) -> ResourceError {
    let text = e.to_string();
    let hint = if text.contains("onnection refused") {
        "is Keycloak running and listening on that address? (check `url`)"
    } else if text.contains("certificate") || text.contains("UnknownIssuer") {
        "the server's certificate is not trusted: set `ca_file` to the CA that issued it"
    } else {
        "check `url` and that Keycloak is up"
    };
    err(text, hint)
}

/// A non-2xx answer to an admin call, with the likely cause.
fn refused(what: &str, r: &Reply) -> ResourceError {
    let hint = match r.status {
        StatusCode::UNAUTHORIZED => "the admin token was refused: check the admin credential",
        StatusCode::FORBIDDEN => {
            "the admin account lacks rights on this realm (use a master-realm admin)"
        }
        StatusCode::CONFLICT => "the object appeared meanwhile; apply again",
        StatusCode::BAD_REQUEST => {
            "Keycloak refused the representation (an unknown field? see the message)"
        }
        _ => "",
    };
    err(format!("{what}: HTTP {} {}", r.status, r.snippet()), hint)
}

impl Admin {
    pub async fn login(http: Client, login: &Login) -> Result<Admin, ResourceError> {
        let base = login.base.trim_end_matches('/').to_string();
        let url = format!(
            "{base}/realms/{}/protocol/openid-connect/token",
            encode(&login.realm)
        );
        let r = match &login.client_id {
            Some(id) => {
                http.form(
                    &url,
                    &[
                        ("grant_type", "client_credentials"),
                        ("client_id", id),
                        ("client_secret", &login.secret),
                    ],
                )
                .await
            }
            None => {
                http.form(
                    &url,
                    &[
                        ("grant_type", "password"),
                        ("client_id", "admin-cli"),
                        ("username", &login.username),
                        ("password", &login.secret),
                    ],
                )
                .await
            }
        }
        .map_err(transport)?;
        if r.status == StatusCode::NOT_FOUND {
            return Err(err(
                format!("{url}: 404"),
                "wrong base URL: Keycloak 26 serves at / unless started with \
                 --http-relative-path=/auth; 16.x always under /auth",
            ));
        }
        if !r.status.is_success() {
            return Err(err(
                format!("admin login at {url}: HTTP {} {}", r.status, r.snippet()),
                "check the admin credential file, `username`/`client_id` and the admin realm",
            ));
        }
        let token = r
            .json()
            .ok()
            .and_then(|v| v["access_token"].as_str().map(str::to_string))
            .ok_or_else(|| err(format!("admin login at {url}: no access_token"), ""))?;
        Ok(Admin { http, base, token })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/admin/realms{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> Result<Option<Value>, ResourceError> {
        let url = self.url(path);
        let r = self
            .http
            .get(&url, Some(&self.token))
            .await
            .map_err(transport)?;
        if r.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !r.status.is_success() {
            return Err(refused(&format!("GET {url}"), &r));
        }
        r.json()
            .map(Some)
            .map_err(|e| err(format!("GET {url}: {e}"), ""))
    }

    async fn get_list(&self, path: &str) -> Result<Vec<Value>, ResourceError> {
        Ok(match self.get(path).await? {
            Some(Value::Array(a)) => a,
            _ => Vec::new(),
        })
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: &Value,
    ) -> Result<Reply, ResourceError> {
        let url = self.url(path);
        let r = self
            .http
            .json(method.clone(), &url, Some(&self.token), body)
            .await
            .map_err(transport)?;
        if !r.status.is_success() {
            return Err(refused(&format!("{method} {url}"), &r));
        }
        Ok(r)
    }

    async fn delete(&self, path: &str) -> Result<(), ResourceError> {
        let url = self.url(path);
        let r = self
            .http
            .send(Method::DELETE, &url, Some(&self.token), None)
            .await
            .map_err(transport)?;
        if !r.status.is_success() && r.status != StatusCode::NOT_FOUND {
            return Err(refused(&format!("DELETE {url}"), &r));
        }
        Ok(())
    }

    /// The internal id of a client, by `clientId`.
    pub async fn client_uuid(
        &self,
        realm: &str,
        client_id: &str,
    ) -> Result<Option<String>, ResourceError> {
        let list = self
            .get_list(&format!(
                "/{}/clients?clientId={}",
                encode(realm),
                encode(client_id)
            ))
            .await?;
        Ok(list
            .iter()
            .find(|c| c["clientId"] == client_id)
            .and_then(|c| c["id"].as_str().map(str::to_string)))
    }

    async fn need_client(&self, realm: &str, client_id: &str) -> Result<String, ResourceError> {
        self.client_uuid(realm, client_id).await?.ok_or_else(|| {
            err(
                format!("client {client_id:?} is not in realm {realm:?}"),
                "it should have been created by an earlier step; apply again",
            )
        })
    }

    async fn scope_uuid(&self, realm: &str, name: &str) -> Result<String, ResourceError> {
        let list = self
            .get_list(&format!("/{}/client-scopes", encode(realm)))
            .await?;
        list.iter()
            .find(|s| s["name"] == name)
            .and_then(|s| s["id"].as_str().map(str::to_string))
            .ok_or_else(|| {
                err(
                    format!("client scope {name:?} does not exist in realm {realm:?}"),
                    if name == "basic" {
                        "Keycloak >= 25 creates `basic` with a new realm; a realm imported with a \
                         `clientScopes` list lacks it: create it, or use flavor legacy-16 for 16.x"
                    } else {
                        "create the scope first"
                    },
                )
            })
    }

    /// What a role grant looks like now: names of `role_client` roles the service account
    /// holds and that the client may carry (scope mappings).
    async fn grants(
        &self,
        realm: &str,
        client_uuid: &str,
        role_client: &str,
    ) -> Result<(Vec<String>, Vec<String>), ResourceError> {
        let r = encode(realm);
        let Some(rc) = self.client_uuid(realm, role_client).await? else {
            return Ok((Vec::new(), Vec::new()));
        };
        let names = |list: Vec<Value>| -> Vec<String> {
            list.iter()
                .filter_map(|v| v["name"].as_str().map(str::to_string))
                .collect()
        };
        let sa = self
            .get(&format!("/{r}/clients/{client_uuid}/service-account-user"))
            .await?;
        let roles = match sa.as_ref().and_then(|u| u["id"].as_str()) {
            Some(uid) => names(
                self.get_list(&format!("/{r}/users/{uid}/role-mappings/clients/{rc}"))
                    .await?,
            ),
            None => Vec::new(),
        };
        let scope = names(
            self.get_list(&format!(
                "/{r}/clients/{client_uuid}/scope-mappings/clients/{rc}"
            ))
            .await?,
        );
        Ok((roles, scope))
    }

    /// Reads what the desired model names, and nothing else.
    pub async fn read(
        &self,
        d: &Desired,
        desired_secret: Option<&str>,
    ) -> Result<super::Observed, ResourceError> {
        let realm = &d.realm.name;
        let r = encode(realm);
        let Some(rep) = self.get(&format!("/{r}")).await? else {
            return Ok(super::Observed {
                realm: None,
                unreachable: None,
            });
        };
        let all_scopes = self.get_list(&format!("/{r}/client-scopes")).await?;
        let mut scopes = BTreeMap::new();
        for s in &d.client_scopes {
            if let Some(v) = all_scopes.iter().find(|v| v["name"] == s.name.as_str()) {
                scopes.insert(s.name.clone(), v.clone());
            }
        }
        let scope_names = all_scopes
            .iter()
            .filter_map(|v| v["name"].as_str().map(str::to_string))
            .collect();
        let mut clients = BTreeMap::new();
        for c in &d.clients {
            let Some(id) = self.client_uuid(realm, &c.client_id).await? else {
                continue;
            };
            let Some(rep) = self.get(&format!("/{r}/clients/{id}")).await? else {
                continue;
            };
            let secret_matches = if c.secret_from_file {
                let s = self
                    .get(&format!("/{r}/clients/{id}/client-secret"))
                    .await?;
                Some(
                    desired_secret.is_some()
                        && s.as_ref().and_then(|v| v["value"].as_str()) == desired_secret,
                )
            } else {
                None
            };
            let mut grants = BTreeMap::new();
            let role_clients: std::collections::BTreeSet<&str> = d
                .service_account_roles
                .iter()
                .chain(&d.scope_mappings)
                .filter(|g| g.client == c.client_id)
                .map(|g| g.role_client.as_str())
                .collect();
            for rc in role_clients {
                grants.insert(rc.to_string(), self.grants(realm, &id, rc).await?);
            }
            clients.insert(
                c.client_id.clone(),
                super::ObservedClient {
                    rep,
                    secret_matches,
                    grants,
                },
            );
        }
        Ok(super::Observed {
            unreachable: None,
            realm: Some(super::ObservedRealm {
                rep,
                scopes,
                scope_names,
                clients,
            }),
        })
    }

    async fn mapper_path(&self, realm: &str, owner: &Owner) -> Result<String, ResourceError> {
        let r = encode(realm);
        Ok(match owner {
            Owner::Scope(name) => {
                let id = self.scope_uuid(realm, name).await?;
                format!("/{r}/client-scopes/{id}/protocol-mappers/models")
            }
            Owner::Client(client_id) => {
                let id = self.need_client(realm, client_id).await?;
                format!("/{r}/clients/{id}/protocol-mappers/models")
            }
        })
    }

    async fn role(&self, realm: &str, g: &RoleGrant) -> Result<(String, Value), ResourceError> {
        let rc = self.need_client(realm, &g.role_client).await?;
        let role = self
            .get(&format!(
                "/{}/clients/{rc}/roles/{}",
                encode(realm),
                encode(&g.role)
            ))
            .await?
            .ok_or_else(|| {
                err(
                    format!(
                        "role {}/{} does not exist in realm {realm:?}",
                        g.role_client, g.role
                    ),
                    "use a role of the realm's own realm-management client, not master's",
                )
            })?;
        Ok((rc, role))
    }

    /// Runs one step. `secret` is the value of the client secret file.
    pub async fn run(&self, realm: &str, step: &Step, secret: &str) -> Result<(), ResourceError> {
        let r = encode(realm);
        match step {
            Step::CreateRealm { body } => {
                self.send(Method::POST, "", body).await?;
            }
            Step::UpdateRealm { body, .. } => {
                self.send(Method::PUT, &format!("/{r}"), body).await?;
            }
            Step::CreateScope { body, .. } => {
                self.send(Method::POST, &format!("/{r}/client-scopes"), body)
                    .await?;
            }
            Step::UpdateScope { name, body, .. } => {
                let id = self.scope_uuid(realm, name).await?;
                let mut body = body.clone();
                body["id"] = json!(id);
                self.send(Method::PUT, &format!("/{r}/client-scopes/{id}"), &body)
                    .await?;
            }
            Step::CreateMapper { owner, body, .. } => {
                let path = self.mapper_path(realm, owner).await?;
                self.send(Method::POST, &path, body).await?;
            }
            Step::UpdateMapper {
                owner, name, body, ..
            } => {
                let path = self.mapper_path(realm, owner).await?;
                let list = self.get_list(&path).await?;
                let id = list
                    .iter()
                    .find(|m| m["name"] == name.as_str())
                    .and_then(|m| m["id"].as_str())
                    .ok_or_else(|| err(format!("mapper {name:?} disappeared"), "apply again"))?
                    .to_string();
                let mut body = body.clone();
                body["id"] = json!(id);
                self.send(Method::PUT, &format!("{path}/{id}"), &body)
                    .await?;
            }
            Step::CreateClient {
                body,
                secret_from_file,
                ..
            } => {
                let mut body = body.clone();
                if *secret_from_file {
                    body["secret"] = json!(secret);
                }
                self.send(Method::POST, &format!("/{r}/clients"), &body)
                    .await?;
            }
            Step::UpdateClient {
                client_id, body, ..
            } => {
                let id = self.need_client(realm, client_id).await?;
                self.send(Method::PUT, &format!("/{r}/clients/{id}"), body)
                    .await?;
            }
            Step::SetSecret { client_id } => {
                let id = self.need_client(realm, client_id).await?;
                let body = json!({ "clientId": client_id, "secret": secret });
                self.send(Method::PUT, &format!("/{r}/clients/{id}"), &body)
                    .await?;
            }
            Step::Scope {
                client_id,
                optional,
                add,
                scope,
            } => {
                let id = self.need_client(realm, client_id).await?;
                let sid = self.scope_uuid(realm, scope).await?;
                let kind = if *optional {
                    "optional-client-scopes"
                } else {
                    "default-client-scopes"
                };
                let path = format!("/{r}/clients/{id}/{kind}/{sid}");
                if *add {
                    self.send(Method::PUT, &path, &json!({})).await?;
                } else {
                    self.delete(&path).await?;
                }
            }
            Step::GrantRole { grant } => {
                let id = self.need_client(realm, &grant.client).await?;
                let sa = self
                    .get(&format!("/{r}/clients/{id}/service-account-user"))
                    .await?;
                let uid = sa
                    .as_ref()
                    .and_then(|u| u["id"].as_str())
                    .ok_or_else(|| {
                        err(
                            format!("client {:?} has no service account", grant.client),
                            "enable serviceAccountsEnabled on the client",
                        )
                    })?
                    .to_string();
                let (rc, role) = self.role(realm, grant).await?;
                self.send(
                    Method::POST,
                    &format!("/{r}/users/{uid}/role-mappings/clients/{rc}"),
                    &json!([role]),
                )
                .await?;
            }
            Step::AddScopeMapping { grant } => {
                let id = self.need_client(realm, &grant.client).await?;
                let (rc, role) = self.role(realm, grant).await?;
                self.send(
                    Method::POST,
                    &format!("/{r}/clients/{id}/scope-mappings/clients/{rc}"),
                    &json!([role]),
                )
                .await?;
            }
        }
        Ok(())
    }

    /// The realm as JSON that `POST /admin/realms` imports: Keycloak's partial export (clients,
    /// groups and roles) plus the client scopes; client secrets (masked by Keycloak) filled in
    /// only when asked.
    pub async fn export(&self, realm: &str, include_secrets: bool) -> Result<Value, ResourceError> {
        let r = encode(realm);
        let url = self.url(&format!(
            "/{r}/partial-export?exportClients=true&exportGroupsAndRoles=true"
        ));
        let reply = self
            .http
            .send(Method::POST, &url, Some(&self.token), None)
            .await
            .map_err(transport)?;
        if reply.status == StatusCode::NOT_FOUND {
            return Err(err(
                format!("realm {realm:?} does not exist"),
                "check --realm",
            ));
        }
        if !reply.status.is_success() {
            return Err(refused(&format!("POST {url}"), &reply));
        }
        let mut v = reply
            .json()
            .map_err(|e| err(format!("POST {url}: {e}"), ""))?;
        // Service-account users are not in a partial export, and their role mappings are what
        // `kheopsAuthorization` needs: add them the way a full export writes them.
        let mut users = Vec::new();
        for c in v["clients"].as_array().into_iter().flatten() {
            if c["serviceAccountsEnabled"] != true {
                continue;
            }
            let (Some(id), Some(client_id)) = (c["id"].as_str(), c["clientId"].as_str()) else {
                continue;
            };
            let Some(sa) = self
                .get(&format!("/{r}/clients/{id}/service-account-user"))
                .await?
            else {
                continue;
            };
            let Some(uid) = sa["id"].as_str() else {
                continue;
            };
            let maps = self
                .get(&format!("/{r}/users/{uid}/role-mappings"))
                .await?
                .unwrap_or(Value::Null);
            let names = |v: &Value| -> Vec<Value> {
                v.as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|m| m["name"].as_str().map(|n| json!(n)))
                    .collect()
            };
            let mut client_roles = serde_json::Map::new();
            if let Some(cm) = maps["clientMappings"].as_object() {
                for (k, m) in cm {
                    client_roles.insert(k.clone(), Value::Array(names(&m["mappings"])));
                }
            }
            users.push(json!({
                "username": sa["username"],
                "enabled": true,
                "serviceAccountClientId": client_id,
                "realmRoles": names(&maps["realmMappings"]),
                "clientRoles": client_roles,
            }));
        }
        v["users"] = Value::Array(users);
        if let Some(clients) = v["clients"].as_array_mut() {
            for c in clients {
                let confidential = c["publicClient"] == false && c["bearerOnly"] != true;
                if include_secrets && confidential {
                    if let Some(id) = c["id"].as_str() {
                        let s = self
                            .get(&format!("/{r}/clients/{id}/client-secret"))
                            .await?;
                        if let Some(value) = s.as_ref().and_then(|s| s["value"].as_str()) {
                            c["secret"] = json!(value);
                        }
                    }
                } else if let Some(o) = c.as_object_mut() {
                    o.remove("secret");
                }
            }
        }
        Ok(v)
    }
}
