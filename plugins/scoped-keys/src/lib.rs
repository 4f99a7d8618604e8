//! `scoped-keys`: the default auth scoper.
//!
//! Policy: the admin credential may do anything. An API key may do an action
//! when one of its scopes is exactly that `resource:action` or `resource:*`.
//! A key restricted to a project gets `conceal` (404) for anything in another
//! project, so it cannot even learn that the target exists. Key management
//! (`keys:*`) is never grantable to an API key: keys can't mint keys.

mod scopes;

wit_bindgen::generate!({
    path: "../../wit/auth-scoper",
    world: "crownest:auth-scoper/auth-scoper",
    generate_all,
});

use crownest::host::types::Error;
use exports::crownest::auth_scoper::scoper::{Decision, Guest, PrincipalKind, Request};

struct ScopedKeys;

export!(ScopedKeys);

impl Guest for ScopedKeys {
    fn check() -> Result<(), Error> {
        config_keys::check(&crate::crownest::host::config::get_json(), "scoped-keys", &[]).map_err(Error::Invalid)
    }

    fn authorize(request: Request) -> Result<Decision, Error> {
        let (resource, _) = scopes::split(&request.action)?;
        let p = &request.principal;
        if p.kind == PrincipalKind::Admin {
            return Ok(Decision::Allow);
        }
        if resource == "keys" {
            return Ok(Decision::Deny("API keys cannot manage keys; use the admin credential".into()));
        }
        if let (Some(restricted), Some(target)) = (&p.project_id, &request.project_id) {
            if restricted != target {
                return Ok(Decision::Conceal(format!("project {target} not found")));
            }
        }
        if scopes::grants(&p.scopes, &request.action) {
            Ok(Decision::Allow)
        } else {
            Ok(Decision::Deny(format!("this API key lacks the `{}` scope", request.action)))
        }
    }

    fn validate_scope(scope: String) -> Result<(), Error> {
        scopes::validate(&scope)
    }
}
