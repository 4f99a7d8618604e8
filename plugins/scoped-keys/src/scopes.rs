//! The scope vocabulary: singular `resource:action` pairs.

use crate::crownest::host::types::Error;

/// Every resource an API key can be scoped to, with its actions.
pub const RESOURCES: &[(&str, &[&str])] = &[
    ("workspace_runs", &["create", "read", "cancel"]),
    ("artifacts", &["read"]),
    ("sandboxes", &["create", "read", "exec", "kill"]),
    ("usage", &["read"]),
    ("audit", &["read"]),
    ("projects", &["read"]),
];

/// Split `resource:action`, refusing anything else.
pub fn split(action: &str) -> Result<(&str, &str), Error> {
    match action.split_once(':') {
        Some((r, a)) if !r.is_empty() && !a.is_empty() && !a.contains(':') => Ok((r, a)),
        _ => Err(Error::Invalid(format!("`{action}` is not of the form resource:action"))),
    }
}

/// Whether `scopes` allow `action` (exact match or `resource:*`).
pub fn grants(scopes: &[String], action: &str) -> bool {
    let Ok((resource, _)) = split(action) else { return false };
    scopes.iter().any(|s| s == action || s.strip_suffix(":*") == Some(resource))
}

/// Refuse scopes outside the vocabulary, listing the valid ones.
pub fn validate(scope: &str) -> Result<(), Error> {
    let (resource, action) = split(scope)?;
    let known = RESOURCES.iter().find(|(r, _)| *r == resource);
    match known {
        Some((_, actions)) if action == "*" || actions.contains(&action) => Ok(()),
        _ => {
            let valid: Vec<String> =
                RESOURCES.iter().flat_map(|(r, acts)| acts.iter().map(move |a| format!("{r}:{a}"))).collect();
            Err(Error::Invalid(format!(
                "unknown scope `{scope}`; valid scopes are {} (or `<resource>:*`)",
                valid.join(", ")
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_covers_only_its_resource() {
        let scopes = vec!["sandboxes:*".to_string(), "usage:read".to_string()];
        assert!(grants(&scopes, "sandboxes:kill"));
        assert!(grants(&scopes, "usage:read"));
        assert!(!grants(&scopes, "workspace_runs:create"));
    }

    #[test]
    fn key_scopes_cannot_be_granted() {
        assert!(validate("keys:create").is_err());
        assert!(validate("workspace_runs:create").is_ok());
        assert!(validate("nonsense").is_err());
    }
}
