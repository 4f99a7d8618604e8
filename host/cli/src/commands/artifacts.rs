//! `crownest artifacts get <artifact-id> [--output FILE]` and
//! `crownest artifacts list --run <wsr_id>`: the same against any store.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use futures_util::StreamExt;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::commands::print_table;
use crate::commands::workspace_runs::fail;
use crate::context::{self, Context};

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
    let client = context::client(ctx)?;
    Ok(match cmd {
        Command::List { run, json } => match client.get(&format!("/v1/workspace-runs/{run}/artifacts")).await {
            Ok(page) => {
                let items = page["items"].as_array().cloned().unwrap_or_default();
                if json {
                    for a in &items {
                        println!("{}", json!({ "data": a }));
                    }
                } else {
                    let mut rows = vec![["ARTIFACT", "NAME", "SIZE", "SHA256", "PATH"].map(String::from).to_vec()];
                    for a in &items {
                        rows.push(vec![
                            a["id"].as_str().unwrap_or("").into(),
                            a["name"].as_str().unwrap_or("").into(),
                            a["sizeBytes"].to_string(),
                            a["sha256"].as_str().unwrap_or("").into(),
                            a["path"].as_str().unwrap_or("").into(),
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
                println!("{}", json!({ "data": meta }));
                return Ok(ExitCode::SUCCESS);
            }
            let resp = match client.download(&format!("/v1/artifacts/{artifact_id}/content")).await {
                Ok(r) => r,
                Err(e) => return Ok(fail(&e)),
            };
            let mut sink: Box<dyn Write> = match &output {
                Some(path) => Box::new(std::io::BufWriter::new(std::fs::File::create(path)?)),
                None => Box::new(std::io::stdout().lock()),
            };
            let mut sha = Sha256::new();
            let mut n = 0u64;
            let mut body = resp.bytes_stream();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| anyhow::anyhow!("the download broke off: {e}"))?;
                sha.update(&chunk);
                n += chunk.len() as u64;
                sink.write_all(&chunk)?;
            }
            sink.flush()?;
            let got = hex::encode(sha.finalize());
            if Some(got.as_str()) != meta["sha256"].as_str() || Some(n) != meta["sizeBytes"].as_u64() {
                eprintln!(
                    "error: artifact_corrupt: downloaded {n} bytes with sha256 {got}, expected {} / {}",
                    meta["sizeBytes"], meta["sha256"]
                );
                return Ok(ExitCode::FAILURE);
            }
            if let Some(p) = output {
                eprintln!("wrote {} ({n} bytes, sha256 {got}) to {}", meta["name"].as_str().unwrap_or(""), p.display());
            }
            ExitCode::SUCCESS
        }
    })
}
