//! `status` and `list` for people: a summary and a table, with everything
//! the server said escaped for the terminal (a run's command line and
//! metadata are whatever its creator chose).

use std::process::ExitCode;

use crownest_client::Client;
use serde_json::Value;

use super::{fail, print_json};
use crate::commands::{prefix, print_table};

/// A JSON value as a table cell: strings as they are, `-` for null.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `status`: one labelled row per field (print_table escapes them).
pub fn summary(r: &Value) {
    let s = |k: &str| cell(&r[k]);
    let mut rows = vec![
        vec!["run".into(), s("id")],
        vec!["status".into(), s("status")],
        vec!["command".into(), s("command")],
        vec![
            "template".into(),
            format!(
                "{} {}",
                s("template"),
                r["templateDigest"].as_str().map(|d| format!("({})", prefix(d, 12))).unwrap_or_default()
            ),
        ],
        vec!["project".into(), s("projectId")],
        vec!["created".into(), s("createdAt")],
    ];
    if let Some(m) = r["metadata"].as_object().filter(|m| !m.is_empty()) {
        let pairs: Vec<String> = m.iter().map(|(k, v)| format!("{k}={}", cell(v))).collect();
        rows.push(vec!["metadata".into(), pairs.join(" ")]);
    }
    if let Some(a) = r["archive"].as_object() {
        rows.push(vec!["archive".into(), format!("{} bytes, sha256 {}", a["sizeBytes"], cell(&a["sha256"]))]);
    }
    for (label, key) in [("started", "startedAt"), ("finished", "finishedAt")] {
        if let Some(t) = r[key].as_str() {
            rows.push(vec![label.into(), t.into()]);
        }
    }
    if !r["exitCode"].is_null() {
        rows.push(vec!["exit code".into(), r["exitCode"].to_string()]);
    }
    if let Some(reason) = r["failureReason"].as_str() {
        rows.push(vec!["failure".into(), format!("{reason}: {}", r["failureMessage"].as_str().unwrap_or(""))]);
    }
    if let Some(ids) = r["artifactIds"].as_array().filter(|a| !a.is_empty()) {
        rows.push(vec!["artifacts".into(), ids.iter().map(cell).collect::<Vec<_>>().join(", ")]);
    }
    print_table(&rows);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `list`: a table, or one `{ "data": run }` line per run.
pub async fn list(
    client: &Client,
    project: Option<String>,
    status: Option<String>,
    limit: u32,
    json: bool,
) -> ExitCode {
    let mut q = vec![format!("limit={limit}")];
    if let Some(p) = project {
        q.push(format!("projectId={}", urlencode(&p)));
    }
    if let Some(s) = status {
        q.push(format!("status={}", urlencode(&s)));
    }
    let page = match client.get(&format!("/v1/workspace-runs?{}", q.join("&"))).await {
        Ok(page) => page,
        Err(e) => return fail(&e),
    };
    let items = page["items"].as_array().map(Vec::as_slice).unwrap_or_default();
    if json {
        for r in items {
            print_json(r);
        }
        return ExitCode::SUCCESS;
    }
    let mut rows = vec![["RUN", "STATUS", "TEMPLATE", "EXIT", "CREATED", "COMMAND"].map(String::from).to_vec()];
    for r in items {
        // One line per run: newlines are shown as spaces here (the
        // summary of `status` shows them escaped).
        let mut command = cell(&r["command"]).replace('\n', " ");
        if command.chars().count() > 48 {
            command = format!("{}…", command.chars().take(47).collect::<String>());
        }
        rows.push(vec![
            cell(&r["id"]),
            cell(&r["status"]),
            cell(&r["template"]),
            cell(&r["exitCode"]),
            cell(&r["createdAt"]),
            command,
        ]);
    }
    print_table(&rows);
    ExitCode::SUCCESS
}
