//! The `kagent.v1` API: code generated from `proto/kagent/v1/*.proto`, shared by the agent and
//! kctl. Nothing else lives here but small conveniences on the generated types.

pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("kagent.v1");
}

/// The API version the agent reports in `Facts` and kctl expects.
pub const API_VERSION: &str = "kagent.v1";

/// The encoded `FileDescriptorSet` of the API, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/kagent_v1_descriptor.bin"));

/// Default TCP port of the agent.
pub const DEFAULT_PORT: u16 = 7443;

impl v1::Action {
    /// Lower-case word for output: "create", "update", "unchanged", "delete".
    pub fn word(self) -> &'static str {
        match self {
            v1::Action::Unspecified => "unknown",
            v1::Action::Create => "create",
            v1::Action::Update => "update",
            v1::Action::Unchanged => "unchanged",
            v1::Action::Delete => "delete",
        }
    }
}

impl v1::OperationState {
    /// Lower-case word for output: "running", "succeeded", "failed", "interrupted".
    pub fn word(self) -> &'static str {
        match self {
            v1::OperationState::Unspecified => "unknown",
            v1::OperationState::Running => "running",
            v1::OperationState::Succeeded => "succeeded",
            v1::OperationState::Failed => "failed",
            v1::OperationState::Interrupted => "interrupted",
        }
    }
}
