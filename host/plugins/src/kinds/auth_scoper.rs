//! [`AuthScoper`] on an `auth-scoper` component.

use std::sync::Arc;

use async_trait::async_trait;
use crownest_core::PluginError;
use crownest_core::ports::{AuthRequest, AuthScoper, Decision, PrincipalKind};
use wasmtime::Store;

use super::{instantiate, typed_pre};
use crate::bindings::auth_scoper::exports::crownest::auth_scoper::scoper as wit;
use crate::bindings::auth_scoper::{AuthScoper as Bindings, AuthScoperPre};
use crate::guard::{self, from_wit};
use crate::loader::LoadedPlugin;
use crate::state::PluginState;

/// An auth scoper backed by a plugin.
pub struct WasmAuthScoper {
    plugin: Arc<LoadedPlugin>,
    pre: AuthScoperPre<PluginState>,
}

impl WasmAuthScoper {
    pub fn new(plugin: Arc<LoadedPlugin>) -> Result<Self, PluginError> {
        let pre = typed_pre(&plugin, AuthScoperPre::new)?;
        Ok(WasmAuthScoper { plugin, pre })
    }

    pub fn plugin(&self) -> &LoadedPlugin {
        &self.plugin
    }

    async fn instance(&self) -> Result<(Store<PluginState>, Bindings), PluginError> {
        instantiate(&self.plugin, async |s| self.pre.instantiate_async(s).await).await
    }
}

fn to_wit(r: &AuthRequest) -> wit::Request {
    wit::Request {
        principal: wit::Principal {
            kind: match r.principal.kind {
                PrincipalKind::Admin => wit::PrincipalKind::Admin,
                PrincipalKind::ApiKey => wit::PrincipalKind::ApiKey,
            },
            id: r.principal.id.clone(),
            org_id: r.principal.org_id.clone(),
            project_id: r.principal.project_id.clone(),
            scopes: r.principal.scopes.clone(),
        },
        action: r.action.clone(),
        project_id: r.project_id.clone(),
    }
}

#[async_trait]
impl AuthScoper for WasmAuthScoper {
    async fn check(&self) -> Result<(), PluginError> {
        let (mut store, b) = self.instance().await?;
        let g = b.crownest_auth_scoper_scoper();
        guard::call(&mut store, "check", async |s| g.call_check(s).await).await?.map_err(from_wit)
    }

    async fn authorize(&self, request: &AuthRequest) -> Result<Decision, PluginError> {
        let (mut store, b) = self.instance().await?;
        let g = b.crownest_auth_scoper_scoper();
        let req = to_wit(request);
        let decision =
            guard::call(&mut store, "authorize", async |s| g.call_authorize(s, &req).await).await?.map_err(from_wit)?;
        Ok(match decision {
            wit::Decision::Allow => Decision::Allow,
            wit::Decision::Deny(m) => Decision::Deny(m),
            wit::Decision::Conceal(m) => Decision::Conceal(m),
        })
    }

    async fn validate_scope(&self, scope: &str) -> Result<(), PluginError> {
        let (mut store, b) = self.instance().await?;
        let g = b.crownest_auth_scoper_scoper();
        guard::call(&mut store, "validate-scope", async |s| g.call_validate_scope(s, scope).await)
            .await?
            .map_err(from_wit)
    }
}
