//! `evidence`: the Evidence Bundle as stored. The server keeps the bundle's
//! exact bytes and sends their sha256 (`x-evidence-sha256`); what we write
//! to a file or a pipe is those bytes, checked against that digest, so
//! `sha256sum` of the file, a signature over it, or `events.chainDigest`
//! checked from it all refer to what the server vouches for. Pretty JSON is
//! a display: on a terminal, or asked for with `--pretty`.

use std::borrow::Cow;
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use crownest_client::Client;
use sha2::{Digest, Sha256};

use super::fail;
use crate::display::{safe, safe_json};
use crate::{errln, exit, stdio};

fn pretty(bytes: &[u8]) -> Result<String, String> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("the Evidence Bundle is not valid JSON: {e}"))?;
    serde_json::to_string_pretty(&v).map(|s| s + "\n").map_err(|e| e.to_string())
}

pub async fn run(client: &Client, run_id: &str, output: Option<&Path>, want_pretty: bool, json: bool) -> ExitCode {
    let ev = match client.evidence(run_id).await {
        Ok(ev) => ev,
        Err(e) => return fail(&e),
    };
    let got = hex::encode(Sha256::digest(&ev.bytes));
    if let Some(want) = ev.sha256.as_deref().filter(|w| !w.eq_ignore_ascii_case(&got)) {
        errln!("error: evidence_corrupt: the bundle received has sha256 {got}, the server says {}", safe(want));
        return ExitCode::from(exit::FAILURE);
    }
    let on_terminal = output.is_none() && std::io::stdout().is_terminal();
    let bytes: Cow<'_, [u8]> = if want_pretty || (on_terminal && !json) {
        match pretty(&ev.bytes) {
            // On a terminal, text from the run (its command, metadata,
            // messages) must not reach it as control characters.
            Ok(text) if on_terminal => Cow::Owned(safe_json(&text).into_owned().into_bytes()),
            Ok(text) => Cow::Owned(text.into_bytes()),
            Err(e) => {
                errln!("error: {e}");
                return ExitCode::from(exit::FAILURE);
            }
        }
    } else if json && output.is_none() {
        let mut env = Vec::with_capacity(ev.bytes.len() + 10);
        env.extend_from_slice(b"{\"data\":");
        env.extend_from_slice(&ev.bytes);
        env.extend_from_slice(b"}\n");
        Cow::Owned(env)
    } else {
        Cow::Borrowed(&ev.bytes)
    };
    match output {
        Some(path) => {
            if let Err(e) = std::fs::write(path, &bytes) {
                errln!("error: cannot write {}: {e}", path.display());
                return ExitCode::from(exit::FAILURE);
            }
            let what = if want_pretty { "pretty-printed".to_string() } else { format!("sha256 {got}") };
            errln!(
                "wrote the Evidence Bundle of {} to {} ({} bytes, {what})",
                safe(run_id),
                path.display(),
                bytes.len()
            );
        }
        None => stdio::out_bytes(&mut std::io::stdout().lock(), &bytes),
    }
    ExitCode::SUCCESS
}
