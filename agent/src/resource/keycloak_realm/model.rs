//! The desired state of a realm as a typed model: only what kagent manages. Every field here is
//! compared with Keycloak's representation and set when it differs; what the model does not
//! name (other clients, scopes, mappers, roles, attributes) is left as Keycloak has it.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Realm {
    pub name: String,
    pub enabled: bool,
    pub registration_allowed: bool,
    pub ssl_required: String,
    /// The realm attribute `frontendUrl`; `None` leaves it as it is.
    pub frontend_url: Option<String>,
}

/// A protocol mapper, matched by name within its client or client scope. Only the config keys
/// listed are compared (Keycloak adds keys of its own, e.g. `introspection.token.claim`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapper {
    pub name: String,
    pub protocol_mapper: String,
    pub config: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientScope {
    pub name: String,
    pub description: String,
    pub protocol: String,
    pub attributes: BTreeMap<String, String>,
    pub mappers: Vec<Mapper>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub client_id: String,
    pub enabled: bool,
    pub public_client: bool,
    pub standard_flow: bool,
    pub implicit_flow: bool,
    pub direct_access_grants: bool,
    pub service_accounts: bool,
    pub full_scope_allowed: bool,
    /// Compared as sets; `None` leaves the field as Keycloak has it.
    pub redirect_uris: Option<Vec<String>>,
    pub web_origins: Option<Vec<String>>,
    /// The client's default and optional scope assignments are exactly these: the seed removes
    /// every other assignment (the scopes themselves are never deleted). `None`: not managed.
    pub default_scopes: Option<Vec<String>>,
    pub optional_scopes: Option<Vec<String>>,
    pub mappers: Vec<Mapper>,
    /// Confidential clients: the secret is the content of this managed file.
    pub secret_from_file: bool,
}

/// A client role granted to a client's service account, or allowed in its tokens (scope
/// mapping): `client` gets `role_client`/`role`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleGrant {
    pub client: String,
    pub role_client: String,
    pub role: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub realm: Realm,
    /// Created before the clients that refer to them.
    pub client_scopes: Vec<ClientScope>,
    pub clients: Vec<Client>,
    pub service_account_roles: Vec<RoleGrant>,
    pub scope_mappings: Vec<RoleGrant>,
}

impl Desired {
    pub fn client(&self, client_id: &str) -> Option<&Client> {
        self.clients.iter().find(|c| c.client_id == client_id)
    }
}
