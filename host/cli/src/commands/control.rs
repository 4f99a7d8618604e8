//! The control plane from the command line: `keys`, `projects` (admin
//! credential), `usage` and `audit` (an API key with `usage:read` /
//! `audit:read`).

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use crate::commands::print_table;
use crate::commands::workspace_runs::{fail, print_json, report};
use crate::context::Context;
use crate::credentials::{self, Need};
use crate::display::safe;
use crate::{errln, outln};

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create an API key (shown once). Needs the admin credential.
    Create {
        /// Restrict the key to this project (id or name).
        #[arg(long)]
        project: Option<String>,
        /// A `resource:action` scope (repeatable), e.g. `workspace_runs:create`, `sandboxes:*`.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// Lifetime: seconds, or a number with s, m, h or d (`30d`).
        #[arg(long, value_parser = duration_secs)]
        expires_in: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// List keys (never their secrets), revoked ones included.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key; it stops working at once.
    Revoke {
        key_id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum ProjectsCommand {
    /// Create a project. Needs the admin credential.
    Create {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// List projects.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Audit events, newest first.
    List {
        #[arg(long)]
        project: Option<String>,
        /// `resource:action`, e.g. `keys:create`.
        #[arg(long)]
        action: Option<String>,
        /// `admin`, `key_…`, `system` or `anonymous`.
        #[arg(long)]
        actor: Option<String>,
        /// `success`, `denied` or `failed`.
        #[arg(long)]
        outcome: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Read with the admin credential (everything) instead of the API key.
        #[arg(long)]
        admin: bool,
        #[arg(long)]
        json: bool,
    },
}

/// `90`, `90s`, `15m`, `12h`, `30d` → seconds (a clap value parser: a
/// malformed duration is wrong usage, exit 2).
fn duration_secs(s: &str) -> Result<u64, String> {
    let bad = || format!("`{s}` is not a duration like 3600, 90m, 12h or 30d");
    let t = s.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

fn print_json_lines(items: &[Value]) {
    for i in items {
        print_json(i);
    }
}

/// A value as table text (escaped when printed by print_table).
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// A value as text for a line of our own: escaped.
fn text(v: &Value) -> String {
    safe(&cell(v)).into_owned()
}

fn table(items: &[Value], columns: &[(&str, &str)]) {
    let mut rows = vec![columns.iter().map(|(h, _)| h.to_string()).collect::<Vec<_>>()];
    for i in items {
        rows.push(columns.iter().map(|(_, f)| cell(&i[*f])).collect());
    }
    print_table(&rows);
}

const KEY_COLUMNS: &[(&str, &str)] =
    &[("KEY", "id"), ("PROJECT", "projectId"), ("SCOPES", "scopes"), ("STATUS", "status"), ("EXPIRES", "expiresAt")];

pub async fn keys(ctx: &Context, cmd: KeysCommand) -> Result<ExitCode> {
    let client = credentials::client(ctx, Need::Admin)?;
    Ok(match cmd {
        KeysCommand::Create { project, scopes, expires_in, json } => {
            let body = json!({"projectId": project, "scopes": scopes, "expiresInSecs": expires_in});
            report(client.call(Method::POST, "/v1/keys", Some(&body), None).await, json, |k| {
                errln!("created {} ({}); the key is shown once:", text(&k["id"]), text(&k["scopes"]).replace(',', " "));
                outln!("{}", text(&k["key"]));
            })
        }
        KeysCommand::List { json } => match client.get("/v1/keys").await {
            Ok(page) => {
                let items = page["items"].as_array().cloned().unwrap_or_default();
                if json {
                    print_json_lines(&items)
                } else {
                    table(&items, KEY_COLUMNS)
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        KeysCommand::Revoke { key_id, json } => {
            report(client.call(Method::POST, &format!("/v1/keys/{key_id}/revoke"), None, None).await, json, |k| {
                outln!("revoked {} at {}", text(&k["id"]), text(&k["revokedAt"]));
            })
        }
    })
}

pub async fn projects(ctx: &Context, cmd: ProjectsCommand) -> Result<ExitCode> {
    Ok(match cmd {
        ProjectsCommand::Create { name, json } => {
            let client = credentials::client(ctx, Need::Admin)?;
            report(client.call(Method::POST, "/v1/projects", Some(&json!({"name": name})), None).await, json, |p| {
                outln!("created project {} ({})", text(&p["name"]), text(&p["id"]));
            })
        }
        ProjectsCommand::List { json } => {
            // An explicit credential first (the admin token, else the API
            // key), then the local server's admin token.
            let client = credentials::client(ctx, Need::Either)?;
            match client.get("/v1/projects").await {
                Ok(page) => {
                    let items = page["items"].as_array().cloned().unwrap_or_default();
                    if json {
                        print_json_lines(&items)
                    } else {
                        table(&items, &[("PROJECT", "id"), ("NAME", "name"), ("CREATED", "createdAt")])
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
    })
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> =
        pairs.iter().filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", urlencode(v)))).collect();
    if parts.is_empty() { String::new() } else { format!("?{}", parts.join("&")) }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `crownest usage [--project P] [--from YYYY-MM] [--to YYYY-MM] [--json]`
pub async fn usage(
    ctx: &Context,
    project: Option<String>,
    from: Option<String>,
    to: Option<String>,
    json: bool,
) -> Result<ExitCode> {
    let client = credentials::client(ctx, Need::ApiKey)?;
    let path = format!("/v1/usage{}", query(&[("projectId", project), ("from", from), ("to", to)]));
    Ok(report(client.get(&path).await, json, |u| {
        let items = u["items"].as_array().cloned().unwrap_or_default();
        table(
            &items,
            &[
                ("BUCKET", "bucket"),
                ("PROJECT", "projectId"),
                ("PRICING", "pricingVersion"),
                ("COMPUTE_UNIT_SECONDS", "computeUnitSeconds"),
                ("USD", "amountUsd"),
            ],
        );
        outln!(
            "total: {} compute_unit_seconds, ${}",
            text(&u["totals"]["computeUnitSeconds"]),
            text(&u["totals"]["amountUsd"])
        );
    }))
}

pub async fn audit(ctx: &Context, cmd: AuditCommand) -> Result<ExitCode> {
    let AuditCommand::List { project, action, actor, outcome, limit, admin, json } = cmd;
    let client = credentials::client(ctx, if admin { Need::Admin } else { Need::ApiKey })?;
    let path = format!(
        "/v1/audit-events{}",
        query(&[
            ("projectId", project),
            ("action", action),
            ("actor", actor),
            ("outcome", outcome),
            ("limit", Some(limit.to_string())),
        ])
    );
    Ok(match client.get(&path).await {
        Ok(page) => {
            let items = page["items"].as_array().cloned().unwrap_or_default();
            if json {
                print_json_lines(&items)
            } else {
                table(
                    &items,
                    &[
                        ("AT", "at"),
                        ("ACTOR", "actor"),
                        ("ACTION", "action"),
                        ("TARGET", "target"),
                        ("PROJECT", "projectId"),
                        ("OUTCOME", "outcome"),
                        ("REQUEST", "requestId"),
                    ],
                )
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    })
}

#[cfg(test)]
mod tests {
    use super::duration_secs;

    #[test]
    fn durations_take_units() {
        assert_eq!(duration_secs("90").unwrap(), 90);
        assert_eq!(duration_secs("15m").unwrap(), 900);
        assert_eq!(duration_secs("30d").unwrap(), 2_592_000);
        assert!(duration_secs("soon").is_err());
        assert!(duration_secs("5w").is_err());
    }
}
