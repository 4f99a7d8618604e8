//! Streaming a run's events to the terminal, and what the CLI's exit code
//! says about the run.

use std::borrow::Cow;
use std::io::Write;
use std::process::ExitCode;

use base64::Engine as _;
use crownest_client::{Client, Result};
use serde_json::{Value, json};

/// An output event's bytes: its text as it is (output events carry up to
/// megabytes each, so no copy), or its base64 decoded.
fn content(data: &Value) -> Cow<'_, [u8]> {
    if let Some(t) = data["text"].as_str() {
        return Cow::Borrowed(t.as_bytes());
    }
    Cow::Owned(
        data["base64"]
            .as_str()
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .unwrap_or_default(),
    )
}

/// Give the pipe our stdout is (if it is one) room for 1 MiB, the most an
/// unprivileged process may ask for by default. An output event carries up
/// to 4 MiB: through the default 64 KiB pipe, writing one means some 64
/// round trips of sleeping until the reader (`grep`, `tee`, an agent)
/// makes room and being woken again, ~3 200 for 200 MiB of output.
fn widen_stdout_pipe() {
    use std::os::fd::AsRawFd;
    let fd = std::io::stdout().as_raw_fd();
    // SAFETY: fstat and fcntl on our own stdout, with a zeroed stat buffer
    // the call fills; a failure just leaves the pipe as it was.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFIFO {
            libc::fcntl(fd, libc::F_SETPIPE_SZ, 1 << 20);
        }
    }
}

/// Stream events until `terminal`; returns the terminal event.
pub async fn stream(client: &Client, run_id: &str, after: u64, json: bool) -> Result<Value> {
    widen_stdout_pipe();
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
