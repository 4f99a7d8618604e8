//! `crownest artifacts get <artifact-id> [--output FILE]` and
//! `crownest artifacts list --run <wsr_id>`: the same against any store.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Subcommand;
use futures_util::StreamExt;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::commands::print_table;
use crate::commands::workspace_runs::{fail, print_json};
use crate::context::Context;
use crate::credentials::{self, Need};
use crate::display::safe;
use crate::{errln, exit, stdio};

#[derive(Subcommand)]
pub enum Command {
    /// Download an artifact (to stdout, or to --output), verifying its sha256.
    Get {
        artifact_id: String,
        #[arg(long)]
        output: Option<PathBuf>,
        /// Print its metadata as `{ "data": ... }` instead of downloading.
        #[arg(long)]
        json: bool,
    },
    /// List a run's artifacts.
    List {
        #[arg(long)]
        run: String,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(ctx: &Context, cmd: Command) -> Result<ExitCode> {
    let client = credentials::client(ctx, Need::ApiKey)?;
    Ok(match cmd {
        Command::List { run, json } => match client.get(&format!("/v1/workspace-runs/{run}/artifacts")).await {
            Ok(page) => {
                let items = page["items"].as_array().cloned().unwrap_or_default();
                if json {
                    for a in &items {
                        print_json(a);
                    }
                } else {
                    let s = |a: &Value, k: &str| a[k].as_str().unwrap_or("-").to_string();
                    let mut rows =
                        vec![["ARTIFACT", "NAME", "SIZE", "SHA256", "STORE", "PATH"].map(String::from).to_vec()];
                    for a in &items {
                        rows.push(vec![
                            s(a, "id"),
                            s(a, "name"),
                            a["sizeBytes"].to_string(),
                            s(a, "sha256"),
                            s(a, "store"),
                            s(a, "path"),
                        ]);
                    }
                    print_table(&rows);
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        Command::Get { artifact_id, output, json } => {
            let meta = match client.get(&format!("/v1/artifacts/{artifact_id}")).await {
                Ok(m) => m,
                Err(e) => return Ok(fail(&e)),
            };
            if json {
                print_json(&meta);
                return Ok(ExitCode::SUCCESS);
            }
            let resp = match client.download(&format!("/v1/artifacts/{artifact_id}/content")).await {
                Ok(r) => r,
                Err(e) => return Ok(fail(&e)),
            };
            let to_stdout = output.is_none();
            let mut sink: Box<dyn Write> = match &output {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
                )),
                None => Box::new(std::io::stdout().lock()),
            };
            let mut sha = Sha256::new();
            let mut n = 0u64;
            let mut body = resp.bytes_stream();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| anyhow::anyhow!("the download broke off: {e}"))?;
                sha.update(&chunk);
                n += chunk.len() as u64;
                if to_stdout {
                    stdio::out_bytes(&mut sink, &chunk);
                } else {
                    sink.write_all(&chunk)?;
                }
            }
            sink.flush()?;
            let got = hex::encode(sha.finalize());
            if Some(got.as_str()) != meta["sha256"].as_str() || Some(n) != meta["sizeBytes"].as_u64() {
                errln!(
                    "error: artifact_corrupt: downloaded {n} bytes with sha256 {got}, expected {} / {}",
                    meta["sizeBytes"],
                    safe(&meta["sha256"].to_string())
                );
                return Ok(ExitCode::from(exit::FAILURE));
            }
            if let Some(p) = output {
                errln!(
                    "wrote {} ({n} bytes, sha256 {got}) to {}",
                    safe(meta["name"].as_str().unwrap_or("")),
                    p.display()
                );
            }
            ExitCode::SUCCESS
        }
    })
}
