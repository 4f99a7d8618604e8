//! `crownest doctor`: what works on this host and what does not.

use std::process::ExitCode;

use anyhow::Result;
use crownest_core::ports::{ArtifactStore, AuthScoper, Meter, PutRequest, RuntimeProvider};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::context::Context;

#[derive(clap::Args)]
pub struct Args {}

fn line(ok: bool, what: &str, detail: impl std::fmt::Display) -> bool {
    println!("{}  {what:<22} {detail}", if ok { "ok  " } else { "FAIL" });
    ok
}

pub async fn run(ctx: &Context, _args: Args) -> Result<ExitCode> {
    let config = ctx.config()?;
    let (host, set) = ctx.load_plugins(&config)?;
    let mut healthy = true;
    line(true, "data directory", config.data_dir().display());
    let pooling = match &host.engine.pooling_note {
        Some(note) => note.clone(),
        None if host.engine.pooling => "pooling allocator".into(),
        None => "on-demand allocation (pooling disabled in config)".into(),
    };
    line(true, "wasm engine", pooling);
    line(true, "compile cache", config.cache_dir().display());
    if let Some(sbx) = host.sandbox() {
        let r = sbx.report();
        line(
            true,
            "sandbox",
            format!(
                "cgroups {}, bubblewrap {}, workspaces in {}",
                r.cgroup_mode,
                r.bwrap_version,
                sbx.config().root.display()
            ),
        );
        for e in &r.enforcement {
            if e.enforced {
                line(true, &format!("  {}", e.name), &e.detail);
            } else {
                println!("warn  {:<22} NOT ENFORCED: {}", format!("  {}", e.name), e.detail);
            }
        }
        line(true, "  scheduling", sbx.config().scheduling_note());
        healthy &= r.bwrap_version != "none";
    }

    match &set.artifact_store {
        Some(store) => {
            let name = &store.plugin().info.name;
            healthy &= match store.check().await {
                Ok(()) => line(true, "artifact store", format!("{name}: ready")),
                Err(e) => line(false, "artifact store", format!("{name}: {e}")),
            };
            healthy &= match round_trip(store).await {
                Ok(locator) => line(true, "artifact round trip", format!("wrote, read back and deleted `{locator}`")),
                Err(e) => line(false, "artifact round trip", e),
            };
        }
        None => healthy &= line(false, "artifact store", "none configured"),
    }
    if let Some(s) = &set.auth_scoper {
        let name = &s.plugin().info.name;
        healthy &= match s.check().await {
            Ok(()) => line(true, "auth scoper", format!("{name}: ready")),
            Err(e) => line(false, "auth scoper", format!("{name}: {e}")),
        };
    }
    if let Some(m) = &set.meter {
        let name = &m.plugin().info.name;
        healthy &= match m.check().await {
            Ok(()) => line(true, "meter", format!("{name}: ready")),
            Err(e) => line(false, "meter", format!("{name}: {e}")),
        };
    }
    match &set.runtime_provider {
        Some(r) => {
            let name = &r.plugin().info.name;
            healthy &= match r.check().await {
                Ok(()) => line(true, "runtime provider", format!("{name}: ready")),
                Err(e) => line(false, "runtime provider", format!("{name}: {e}")),
            };
        }
        None => {
            line(false, "runtime provider", "none configured: workspace runs cannot execute");
            healthy = false;
        }
    }
    Ok(if healthy { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn round_trip(store: &crownest_plugins::kinds::WasmArtifactStore) -> Result<String, String> {
    let body: &'static [u8] = b"crownest doctor probe\n";
    let sha256 = hex::encode(Sha256::digest(body));
    let req = PutRequest {
        key: "doctor/probe.txt".into(),
        size: body.len() as u64,
        sha256,
        content_type: Some("text/plain".into()),
        metadata: vec![],
    };
    let info = store.put(req, Box::new(body)).await.map_err(|e| format!("put: {e}"))?;
    let mut back = Vec::new();
    store
        .get(&info.locator)
        .await
        .map_err(|e| format!("get: {e}"))?
        .read_to_end(&mut back)
        .await
        .map_err(|e| format!("get: {e}"))?;
    if back != body {
        return Err(format!("read back {} bytes that differ from the probe", back.len()));
    }
    store.delete(&info.locator).await.map_err(|e| format!("delete: {e}"))?;
    Ok(info.locator)
}
