//! Rendering a run's events: command output byte-exact to stdout and
//! stderr (that is the point of streaming it), CrowNest's own notes about
//! the run escaped (they carry text the server chose), or one
//! `{ "data": event }` line per event with `--json`. And what the CLI's
//! exit code says about the run.

use std::borrow::Cow;
use std::process::ExitCode;

use base64::Engine as _;
use crownest_client::types::CollectedArtifact;
use serde_json::Value;

use crate::display::safe;
use crate::{errln, exit, stdio};

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

/// Prints the events of one run as they arrive.
pub struct Renderer {
    run_id: String,
    json: bool,
    /// What the run kept, from its `artifact_collected` events.
    pub artifacts: Vec<CollectedArtifact>,
    /// The `terminal` event's data, once it came.
    pub terminal: Option<Value>,
}

impl Renderer {
    pub fn new(run_id: &str, json: bool) -> Renderer {
        widen_stdout_pipe();
        Renderer { run_id: run_id.to_string(), json, artifacts: Vec::new(), terminal: None }
    }

    pub fn event(&mut self, e: &Value) {
        let kind = e["type"].as_str().unwrap_or("");
        if self.json {
            let mut line = Vec::with_capacity(256);
            line.extend_from_slice(b"{\"data\":");
            if serde_json::to_writer(&mut line, e).is_ok() {
                line.extend_from_slice(b"}\n");
                stdio::out_bytes(&mut std::io::stdout().lock(), &line);
            }
        } else {
            self.human(kind, &e["data"]);
        }
        match kind {
            "artifact_collected" => {
                if let Ok(a) = serde_json::from_value::<CollectedArtifact>(e["data"].clone()) {
                    self.artifacts.push(a);
                }
            }
            "terminal" => self.terminal = Some(e["data"].clone()),
            _ => {}
        }
    }

    fn human(&self, kind: &str, data: &Value) {
        let s = |k: &str| safe(data[k].as_str().unwrap_or("")).into_owned();
        match kind {
            "stdout" => stdio::out_bytes(&mut std::io::stdout().lock(), &content(data)),
            "stderr" => stdio::err_bytes(&content(data)),
            "error" => errln!("crownest: error {}: {}", s("code"), s("message")),
            "artifact_error" => errln!("crownest: artifact {} not kept: {}", s("name"), s("message")),
            "terminal" => {
                let run = safe(&self.run_id);
                match data["failureReason"].as_str() {
                    Some(reason) => {
                        errln!("crownest: run {run} {} ({}): {}", s("status"), safe(reason), s("failureMessage"))
                    }
                    None => errln!("crownest: run {run} {}", s("status")),
                }
            }
            _ => {}
        }
        if (kind == "stdout" || kind == "stderr") && data["truncated"] == true {
            let message = data["message"].as_str().unwrap_or("output truncated");
            errln!("crownest: {}", safe(message));
        }
    }

    /// Say on stderr which artifacts the run kept (stdout stays the
    /// command's output): their ids are what `crownest artifacts get`
    /// takes.
    pub fn print_artifacts(&self) {
        if self.json || self.artifacts.is_empty() {
            return;
        }
        for a in &self.artifacts {
            let size = a.size_bytes.map(|n| format!(", {n} bytes")).unwrap_or_default();
            errln!("crownest: artifact {} ({}{size})", safe(&a.artifact_id), safe(&a.name));
        }
        errln!("crownest: download one with `crownest artifacts get <artifact-id> --output FILE`");
    }
}

/// The exit code `run-archive` ends with, from the terminal event.
pub fn exit_code(terminal: &Value) -> ExitCode {
    let status = terminal["status"].as_str().unwrap_or("");
    let reason = terminal["failureReason"].as_str().unwrap_or("");
    match (status, reason) {
        ("succeeded", _) => ExitCode::SUCCESS,
        ("canceled", _) => ExitCode::from(exit::CANCELED),
        ("failed", "timeout") => ExitCode::from(exit::TIMED_OUT),
        ("failed", "exit_code" | "signal" | "out_of_memory") => {
            ExitCode::from(terminal["exitCode"].as_i64().unwrap_or(1).clamp(1, 255) as u8)
        }
        _ => ExitCode::from(exit::NOT_RUN),
    }
}
