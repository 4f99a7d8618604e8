//! Port for auth scopers: may this caller do this action on this project?

use async_trait::async_trait;

use crate::error::PluginError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    Admin,
    ApiKey,
}

/// An authenticated caller (the host verified the credential).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub kind: PrincipalKind,
    pub id: String,
    pub org_id: String,
    pub project_id: Option<String>,
    pub scopes: Vec<String>,
}

/// One authorization question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRequest {
    pub principal: Principal,
    /// `resource:action`.
    pub action: String,
    pub project_id: Option<String>,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// 403 with this message.
    Deny(String),
    /// 404: the target's existence is hidden.
    Conceal(String),
}

#[async_trait]
pub trait AuthScoper: Send + Sync {
    async fn check(&self) -> Result<(), PluginError>;
    async fn authorize(&self, request: &AuthRequest) -> Result<Decision, PluginError>;
    async fn validate_scope(&self, scope: &str) -> Result<(), PluginError>;
}
