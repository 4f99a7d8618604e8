//! Conformance checks for the `auth-scoper` world.

use crownest_core::ErrorKind;
use crownest_core::ports::{AuthRequest, AuthScoper, Decision, Principal, PrincipalKind};

use super::{Suite, describe, expect_error};
use crate::kinds::WasmAuthScoper;

fn key(project: Option<&str>, scopes: &[&str]) -> Principal {
    Principal {
        kind: PrincipalKind::ApiKey,
        id: "key_conformance".into(),
        org_id: "org_conformance".into(),
        project_id: project.map(Into::into),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
    }
}

pub(crate) async fn run(suite: &mut Suite, p: &WasmAuthScoper) {
    suite.check("check", async || p.check().await.map(|_| "ready".into()).map_err(|e| describe(&e))).await;

    suite
        .check("authorize", async || {
            let req = AuthRequest {
                principal: key(Some("prj_a"), &["workspace_runs:create"]),
                action: "workspace_runs:create".into(),
                project_id: Some("prj_a".into()),
            };
            let d = p.authorize(&req).await.map_err(|e| describe(&e))?;
            Ok(format!("answered {d:?} for a well-formed request"))
        })
        .await;

    suite
        .check("project-isolation", async || {
            let req = AuthRequest {
                principal: key(Some("prj_a"), &["workspace_runs:read"]),
                action: "workspace_runs:read".into(),
                project_id: Some("prj_b".into()),
            };
            match p.authorize(&req).await.map_err(|e| describe(&e))? {
                Decision::Allow => Err("a key restricted to project A was allowed into project B".into()),
                d => Ok(format!("refused with {d:?}")),
            }
        })
        .await;

    suite
        .check("malformed-action", async || {
            let req = AuthRequest { principal: key(None, &[]), action: "not an action".into(), project_id: None };
            match p.authorize(&req).await {
                Ok(Decision::Allow) => Err("a malformed action was allowed".into()),
                Ok(d) => Ok(format!("refused with {d:?}")),
                Err(e) if e.kind == ErrorKind::Invalid => Ok(format!("returned the error variant: {e}")),
                Err(e) => Err(describe(&e)),
            }
        })
        .await;

    suite
        .check("validate-scope-invalid", async || expect_error(p.validate_scope("::").await, &[ErrorKind::Invalid]))
        .await;
}
