//! Streaming a run's events to the terminal, and what the CLI's exit code
//! says about the run.

use std::io::Write;
use std::process::ExitCode;

use base64::Engine as _;
use crownest_client::{Client, Result};
use serde_json::{Value, json};

fn content(data: &Value) -> Vec<u8> {
    if let Some(t) = data["text"].as_str() {
        return t.as_bytes().to_vec();
    }
    data["base64"].as_str().and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok()).unwrap_or_default()
}

/// Stream events until `terminal`; returns the terminal event.
pub async fn stream(client: &Client, run_id: &str, after: u64, json: bool) -> Result<Value> {
    let mut events = client.events(run_id, after);
    let mut terminal = Value::Null;
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr());
    while let Some(e) = events.next().await? {
        let kind = e["type"].as_str().unwrap_or("");
        if json {
            let _ = writeln!(out, "{}", json!({ "data": e }));
        } else {
            match kind {
                "stdout" => {
                    let _ = out.write_all(&content(&e["data"]));
                    let _ = out.flush();
                }
                "stderr" => {
                    let _ = err.write_all(&content(&e["data"]));
                }
                "error" => eprintln!(
                    "crownest: error {}: {}",
                    e["data"]["code"].as_str().unwrap_or(""),
                    e["data"]["message"].as_str().unwrap_or("")
                ),
                "artifact_error" => eprintln!(
                    "crownest: artifact {} not kept: {}",
                    e["data"]["name"].as_str().unwrap_or(""),
                    e["data"]["message"].as_str().unwrap_or("")
                ),
                _ => {}
            }
            if (kind == "stdout" || kind == "stderr") && e["data"]["truncated"] == true {
                eprintln!("crownest: {}", e["data"]["message"].as_str().unwrap_or("output truncated"));
            }
        }
        if kind == "terminal" {
            terminal = e["data"].clone();
            if !json {
                let status = terminal["status"].as_str().unwrap_or("");
                match terminal["failureReason"].as_str() {
                    Some(reason) => eprintln!(
                        "crownest: run {run_id} {status} ({reason}): {}",
                        terminal["failureMessage"].as_str().unwrap_or("")
                    ),
                    None => eprintln!("crownest: run {run_id} {status}"),
                }
            }
        }
    }
    Ok(terminal)
}

/// The exit code `run-archive` ends with.
pub fn exit_code(terminal: &Value) -> ExitCode {
    let status = terminal["status"].as_str().unwrap_or("");
    let reason = terminal["failureReason"].as_str().unwrap_or("");
    match (status, reason) {
        ("succeeded", _) => ExitCode::SUCCESS,
        ("canceled", _) => ExitCode::from(130),
        ("failed", "timeout") => ExitCode::from(124),
        ("failed", "exit_code" | "signal" | "out_of_memory") => {
            ExitCode::from(terminal["exitCode"].as_i64().unwrap_or(1).clamp(1, 255) as u8)
        }
        _ => ExitCode::from(125),
    }
}
